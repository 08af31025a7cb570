//! A TCP proxy the test controls, put between a replica and Redis or etcd: it can add delay to
//! every chunk it forwards (a slow network or a slow server) and partition (stop forwarding in both
//! directions without closing anything, as a dropped link does: the peers see silence, not a reset),
//! then heal (what was sent during the partition arrives, as TCP retransmission would deliver it).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    /// true while partitioned.
    partitioned: watch::Sender<bool>,
}

/// Waits until the link is up.
async fn link_up(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|p| !*p).await;
}

impl Proxy {
    /// Forwards 127.0.0.1:<free port> to `target`.
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            delay_ms: Arc::default(),
            partitioned: watch::channel(false).0,
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let p = p.clone();
                tokio::spawn(async move {
                    // A connection opened during a partition gets no answer until it heals.
                    link_up(&mut p.partitioned.subscribe()).await;
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = (client.set_nodelay(true), server.set_nodelay(true));
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    for (mut from, mut to) in [(cr, sw), (sr, cw)] {
                        let (delay, mut link) = (p.delay_ms.clone(), p.partitioned.subscribe());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                link_up(&mut link).await;
                                let n = match from.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                let d = delay.load(Ordering::SeqCst);
                                if d > 0 {
                                    tokio::time::sleep(Duration::from_millis(d)).await;
                                }
                                // Read just before a partition: held until it heals.
                                link_up(&mut link).await;
                                if to.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown().await;
                        });
                    }
                });
            }
        });
        proxy
    }

    /// Every chunk forwarded from now on waits this long first.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops forwarding, silently, until [`Proxy::heal`].
    pub fn partition(&self) {
        self.partitioned.send_replace(true);
    }

    pub fn heal(&self) {
        self.partitioned.send_replace(false);
    }
}
