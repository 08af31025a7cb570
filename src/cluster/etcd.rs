//! etcd: connecting with bounded timeouts (a dead etcd never hangs a caller) and the key layout.
//! What the keys mean belongs to the modules that store them.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::config::EtcdSettings;

/// Bound on one etcd request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to the cluster. Requests time out after [`REQUEST_TIMEOUT`]; a stalled connection is
/// detected by HTTP/2 keep-alives within a few seconds.
pub async fn connect(s: &EtcdSettings) -> Result<Client, etcd_client::Error> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        options = options.with_user(user.clone(), password.expose().to_string());
    }
    if s.ca_pem.is_some() || s.client_pem.is_some() {
        let mut tls = etcd_client::TlsOptions::new();
        if let Some(ca) = &s.ca_pem {
            tls = tls.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &s.client_pem {
            tls = tls.identity(etcd_client::Identity::from_pem(cert, key.expose()));
        }
        options = options.with_tls(tls);
    }
    Client::connect(&s.endpoints, Some(options)).await
}

/// `<prefix>/v1/<what>/`: every key of one kind of data.
pub fn dir(s: &EtcdSettings, what: &str) -> String {
    format!("{}/v1/{what}/", s.prefix)
}

/// A lazily connected etcd client, shared by one component's tasks: connected on first use,
/// forgotten after a failure so that the next use reconnects.
pub struct Connection {
    settings: EtcdSettings,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl Connection {
    pub fn new(settings: EtcdSettings) -> Self {
        Self {
            settings,
            client: tokio::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &EtcdSettings {
        &self.settings
    }

    /// The client (a cheap clone), connecting first if needed.
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = connect(&self.settings).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops the client after a failure; the next [`Connection::client`] reconnects.
    pub async fn forget(&self) {
        *self.client.lock().await = None;
    }
}
