//! A private `redis-server` on a free port for each test, killed when dropped. Never a mock.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which server: Redis (Debian's `redis-server`) or Valkey (`valkey-server`, from bookworm-backports).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    Redis,
    Valkey,
}

impl Flavor {
    fn server(self) -> &'static str {
        match self {
            Flavor::Redis => "redis-server",
            Flavor::Valkey => "valkey-server",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Flavor::Redis => "apt-get install redis-server",
            Flavor::Valkey => {
                "add bookworm-backports to apt's sources and `apt-get install valkey-server` (scripts/test does both)"
            }
        }
    }
}

/// One server process, or every node of a Redis Cluster (its own cluster bus port each).
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// TLS only, with the certificates in this directory (`server.pem`, `server-key.pem`, `ca.pem`).
    tls: Option<std::path::PathBuf>,
    flavor: Flavor,
    /// Cluster mode: this node's bus port; the other nodes follow.
    bus_port: Option<u16>,
    others: Vec<RedisServer>,
}

/// A free port below Linux's ephemeral range (32768-60999 by default): a server restarted on its
/// port must find it free, and an ephemeral port can meanwhile be taken as the local end of any
/// outgoing connection on the machine.
fn free_port() -> u16 {
    loop {
        let port = fastrand::u16(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    fn new(flavor: Flavor, tls: Option<std::path::PathBuf>, cluster: bool) -> RedisServer {
        RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            tls,
            flavor,
            bus_port: cluster.then(free_port),
            others: Vec::new(),
        }
    }

    pub async fn start() -> RedisServer {
        Self::start_flavor(Flavor::Redis).await
    }

    pub async fn start_flavor(flavor: Flavor) -> RedisServer {
        let mut s = RedisServer::new(flavor, None, false);
        s.spawn().await;
        s
    }

    /// A Redis Cluster of `masters` primaries (no replicas), every slot assigned, state ok.
    /// `url()` lists every node, comma-separated: the gateway's cluster form.
    pub async fn start_cluster(flavor: Flavor, masters: usize) -> RedisServer {
        let mut nodes: Vec<RedisServer> = (0..masters)
            .map(|_| RedisServer::new(flavor, None, true))
            .collect();
        for n in &mut nodes {
            n.spawn().await;
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new(flavor.server().replace("-server", "-cli"))
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli/valkey-cli is not installed: apt-get install redis-tools / valkey-tools");
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut first = nodes.remove(0);
        first.others = nodes;
        first.wait_cluster_ok().await;
        first
    }

    /// Every node reports `cluster_state:ok` (slots assigned and agreed on).
    async fn wait_cluster_ok(&self) {
        let started = Instant::now();
        for node in std::iter::once(self).chain(&self.others) {
            loop {
                let client = redis::Client::open(node.node_url()).unwrap();
                if let Ok(mut c) = client.get_multiplexed_async_connection().await
                    && let Ok(info) = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async::<String>(&mut c)
                        .await
                    && info.contains("cluster_state:ok")
                {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "the redis cluster never reached cluster_state:ok"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// A Redis that speaks only TLS, with the server certificate in `certs`
    /// ([`super::etcd::make_certs`]); clients need not present certificates.
    pub async fn start_tls(certs: &std::path::Path) -> RedisServer {
        let mut s = RedisServer::new(Flavor::Redis, Some(certs.to_path_buf()), false);
        s.spawn().await;
        s
    }

    /// The URL the gateway is given: this server, or every node of the cluster comma-separated.
    pub fn url(&self) -> String {
        std::iter::once(self.node_url())
            .chain(self.others.iter().map(RedisServer::node_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// A connection for assertions (on a cluster: one that follows slots).
    pub async fn connection(&self) -> switchboard::cluster::redis::Conn {
        switchboard::cluster::redis::Redis::connect(
            &switchboard::cluster::redis::RedisTarget::new(&self.url(), self.bus_port.is_some()),
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
        .await
        .unwrap()
        .conn()
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
        if let Ok(client) = redis::Client::open(self.node_url())
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
        let cluster: Vec<String> = match self.bus_port {
            None => vec![],
            Some(bus) => vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-port".into(),
                bus.to_string(),
                "--cluster-node-timeout".into(),
                "2000".into(),
            ],
        };
        let child = Command::new(self.flavor.server())
            .args(&listen)
            .args(&cluster)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("server.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install it with {}",
                    self.flavor.server(),
                    self.flavor.install_hint()
                )
            });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if self.answers().await {
                return;
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > Duration::from_secs(15) {
                let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                panic!(
                    "{} on port {} did not become ready (exit: {exited:?}); its log ends:\n{}",
                    self.flavor.server(),
                    self.port,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGKILL, as a crash would (every node of a cluster).
    pub fn kill(&mut self) {
        for node in &mut self.others {
            node.kill_process();
        }
        self.kill_process();
    }

    /// Starts again on the same port, empty (a restart after a crash without persistence); a
    /// cluster's nodes keep their identities and slots (`nodes.conf`) and become ok again.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
        for node in &mut self.others {
            node.spawn().await;
        }
        if self.bus_port.is_some() {
            self.wait_cluster_ok().await;
        }
    }

    fn node(&mut self, n: usize) -> &mut RedisServer {
        if n == 0 { self } else { &mut self.others[n - 1] }
    }

    /// SIGKILLs node `n` of a cluster (0: the first) alone.
    pub fn kill_node(&mut self, n: usize) {
        self.node(n).kill_process();
    }

    /// Restarts cluster node `n` (empty, same identity and slots) and waits for the cluster to be
    /// ok again.
    pub async fn restart_node(&mut self, n: usize) {
        let node = self.node(n);
        node.kill_process();
        node.spawn().await;
        self.wait_cluster_ok().await;
    }

    fn kill_process(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn seconds_into_minute(&self) -> u64 {
        let client = redis::Client::open(self.node_url()).unwrap();
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
