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
    /// Serving TLS with client-certificate auth: (ca, client cert, client key) file paths.
    pub tls: Option<(String, String, String)>,
}

fn openssl(args: &[&str], dir: &std::path::Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is not installed: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
pub fn make_certs(dir: &std::path::Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
        ],
        dir,
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ] {
        openssl(
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
            ],
            dir,
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
            dir,
        );
    }
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
            tls: None,
        };
        s.spawn().await;
        s
    }

    /// An etcd that only speaks TLS and requires client certificates.
    pub async fn start_tls() -> EtcdServer {
        let dir = tempfile::tempdir().unwrap();
        make_certs(dir.path());
        let file = |n: &str| dir.path().join(n).display().to_string();
        let mut s = EtcdServer {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            tls: Some((file("ca.pem"), file("client.pem"), file("client-key.pem"))),
            dir,
        };
        s.spawn().await;
        s
    }

    /// `host:port` (`https://host:port` with TLS), as `--etcd` and `etcd_endpoints` take it.
    pub fn endpoint(&self) -> String {
        match self.tls {
            Some(_) => format!("https://127.0.0.1:{}", self.client_port),
            None => format!("127.0.0.1:{}", self.client_port),
        }
    }

    async fn spawn(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        if self.tls.is_some() {
            let f = |n: &str| self.dir.path().join(n).display().to_string();
            cmd.args([
                "--cert-file",
                &f("server.pem"),
                "--key-file",
                &f("server-key.pem"),
            ])
            .args(["--trusted-ca-file", &f("ca.pem"), "--client-cert-auth"]);
        }
        let child = cmd
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
            let options = self.tls.as_ref().map(|(ca, cert, key)| {
                let pem = |p: &str| std::fs::read_to_string(p).unwrap();
                etcd_client::ConnectOptions::new().with_tls(
                    etcd_client::TlsOptions::new()
                        .ca_certificate(etcd_client::Certificate::from_pem(pem(ca)))
                        .identity(etcd_client::Identity::from_pem(pem(cert), pem(key))),
                )
            });
            let ready = tokio::time::timeout(Duration::from_millis(500), async {
                let mut c = etcd_client::Client::connect([client.as_str()], options)
                    .await
                    .ok()?;
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

/// Three etcd members on free ports forming one cluster (raft: any one may die and the other two
/// elect a leader), each killed when dropped.
pub struct EtcdCluster {
    members: Vec<(String, u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    pub async fn start() -> EtcdCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let (client, peer) = (
                format!("http://127.0.0.1:{client}"),
                format!("http://127.0.0.1:{peer}"),
            );
            let child = Command::new("etcd")
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path().join(format!("m{i}")))
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
                .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-level", "error"])
                .args(["--heartbeat-interval", "20", "--election-timeout", "200"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "etcd is not installed: apt-get install etcd-server (or run scripts/test, which does)",
                );
            members.push((format!("m{i}"), ports[i].0, Some(child)));
        }
        let cluster = EtcdCluster { members, _dir: dir };
        let started = Instant::now();
        while cluster.leader().await.is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "etcd cluster has no leader after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster
    }

    /// Every member's `host:port`, comma-separated, as `etcd_endpoints` takes them.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|(_, port, _)| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The index of the member that is the raft leader now, asked of the live members.
    pub async fn leader(&self) -> Option<usize> {
        for (_, port, child) in &self.members {
            if child.is_none() {
                continue;
            }
            let status = tokio::time::timeout(Duration::from_millis(500), async {
                let mut c = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None)
                    .await
                    .ok()?;
                c.status().await.ok()
            })
            .await;
            if let Ok(Some(s)) = status
                && s.leader() != 0
            {
                let mut c = etcd_client::Client::connect([format!("127.0.0.1:{port}")], None)
                    .await
                    .ok()?;
                let members = c.member_list().await.ok()?;
                let name = members
                    .members()
                    .iter()
                    .find(|m| m.id() == s.leader())?
                    .name()
                    .to_string();
                return self.members.iter().position(|(n, _, _)| *n == name);
            }
        }
        None
    }

    /// SIGKILL of one member.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].2.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
