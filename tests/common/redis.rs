//! A private `redis-server` on a free port for each test, killed when dropped. Never a mock.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        s.spawn().await;
        s
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it with `apt-get install redis-server`")
            });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(Ok(mut c)) = tokio::time::timeout(
                    Duration::from_millis(500),
                    client.get_multiplexed_async_connection(),
                )
                .await
                && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "redis-server did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port (a restart after a crash).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub async fn seconds_into_minute(&self) -> u64 {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let (secs, _): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.unwrap();
        secs % 60
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
