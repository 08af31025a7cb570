//! TLS for the serving ports (rustls): a server certificate, optionally required client
//! certificates signed by a given CA (mTLS), and ALPN for HTTP/2 (gRPC) and HTTP/1.1 on one port.
//!
//! [`TlsListener`] accepts TCP on its own task and runs each handshake on a task of its own with a
//! deadline, so a client that connects and says nothing (or handshakes slowly on purpose) never
//! holds up other connections; failed handshakes are counted, logged at debug, and dropped.

use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// Longest a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the serving certificate comes from, and whether clients must present one.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM: the certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: std::path::PathBuf,
    /// PEM: CAs whose client certificates are accepted; with it, a client without one is refused.
    pub client_ca: Option<std::path::PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read the TLS {what} {}: {e}", path.display()))
}

impl TlsFiles {
    /// Loads and checks the files: a mismatched key or an unreadable file fails start-up with an
    /// error naming the file.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = CertificateDer::pem_slice_iter(&read(&self.cert, "certificate")?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{}: not a PEM certificate chain: {e}", self.cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!("{}: holds no certificate", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "key")?)
            .map_err(|e| anyhow::anyhow!("{}: not a PEM private key: {e}", self.key.display()))?;
        let builder =
            ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(&read(ca, "client CA")?) {
                    let c = c.map_err(|e| anyhow::anyhow!("{}: not a PEM certificate: {e}", ca.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| anyhow::anyhow!("{}: unusable CA certificate: {e}", ca.display()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| anyhow::anyhow!("{}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            anyhow::anyhow!(
                "{} and {} do not make a usable pair: {e}",
                self.cert.display(),
                self.key.display()
            )
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A listener that yields connections once their TLS handshake is done.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = mpsc::channel(256);
        let accepting = tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => handshake_failed("error", &e, peer),
                        Err(_) => handshake_failed("timeout", &"no handshake within 10 s", peer),
                    }
                });
            }
        });
        Ok(TlsListener {
            local,
            ready,
            accepting,
        })
    }
}

fn handshake_failed(reason: &'static str, e: &dyn std::fmt::Display, peer: SocketAddr) {
    metrics::counter!("switchboard_tls_handshake_failures_total", "reason" => reason).increment(1);
    tracing::debug!(%peer, error = %e, "TLS handshake failed");
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
