//! A private `redis-server` on a free port for each test, killed when dropped. Never a mock.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// TLS only, with the certificates in this directory (`server.pem`, `server-key.pem`, `ca.pem`).
    tls: Option<std::path::PathBuf>,
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
            tls: None,
        };
        s.spawn().await;
        s
    }

    /// A Redis that speaks only TLS, with the server certificate in `certs`
    /// ([`super::etcd::make_certs`]); clients need not present certificates.
    pub async fn start_tls(certs: &std::path::Path) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            tls: Some(certs.to_path_buf()),
        };
        s.spawn().await;
        s
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// PING answered (over TLS through `redis-cli`, which trusts the test CA).
    async fn answers(&self) -> bool {
        if let Some(certs) = &self.tls {
            let out = Command::new("redis-cli")
                .args(["--tls", "--cacert"])
                .arg(certs.join("ca.pem"))
                .args(["-p", &self.port.to_string(), "ping"])
                .output()
                .expect("redis-cli is not installed: apt-get install redis-tools");
            return String::from_utf8_lossy(&out.stdout).trim() == "PONG";
        }
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(Ok(mut c)) = tokio::time::timeout(
                Duration::from_millis(500),
                client.get_multiplexed_async_connection(),
            )
            .await
        {
            return redis::cmd("PING").query_async::<String>(&mut c).await.is_ok();
        }
        false
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let listen: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(certs) => {
                let file = |n: &str| certs.join(n).display().to_string();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    file("server.pem"),
                    "--tls-key-file".into(),
                    file("server-key.pem"),
                    "--tls-ca-cert-file".into(),
                    file("ca.pem"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            }
        };
        let child = Command::new("redis-server")
            .args(&listen)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
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
            if self.answers().await {
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
