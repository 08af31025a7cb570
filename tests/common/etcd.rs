//! A private `etcd` on free ports for each test, killed when dropped. Never a mock.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct EtcdServer {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdServer {
    pub async fn start() -> EtcdServer {
        let mut s = EtcdServer {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        s.spawn().await;
        s
    }

    /// `host:port`, as `--etcd` and `etcd_endpoints` take it.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    async fn spawn(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            // Test-only timings: a first election in tens of milliseconds.
            .args(["--logger", "zap", "--log-level", "error"])
            .args(["--heartbeat-interval", "10", "--election-timeout", "50"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is not installed: apt-get install etcd-server (or run scripts/test, which does)");
        self.child = Some(child);
        // Ready means a read succeeds (a leader is elected), not that the port accepts.
        let started = Instant::now();
        loop {
            let ready = tokio::time::timeout(Duration::from_millis(500), async {
                let mut c = etcd_client::Client::connect([client.as_str()], None).await.ok()?;
                c.get("ready-probe", None).await.ok()
            })
            .await;
            if matches!(ready, Ok(Some(_))) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "etcd not ready after 15 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
