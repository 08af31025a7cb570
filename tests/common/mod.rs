//! Test harness: a whole gateway in-process on port 0, gRPC clients for it, and fake upstreams.
#![allow(dead_code)]

pub mod dialects;
pub mod etcd;
pub mod fake_openai;
pub mod fake_provider;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod redis;

use std::{net::SocketAddr, time::Duration};

use switchboard::{
    config::Config,
    proto::{chat_service_client::ChatServiceClient, embeddings_service_client::EmbeddingsServiceClient},
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// A running gateway; shuts down when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Gateway {
    /// Starts a gateway from YAML text; `os.environ/` references resolve from `env`.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let config = Config::parse(yaml, &|name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
        .expect("test config is valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(switchboard::app::run(listener, config, async move {
            let _ = rx.await;
        }));
        Gateway {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub async fn start(yaml: &str) -> Gateway {
        Gateway::start_with_env(yaml, &[]).await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .expect("gateway accepts connections")
    }

    pub async fn chat(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel().await)
    }

    pub async fn embeddings(&self) -> EmbeddingsServiceClient<Channel> {
        EmbeddingsServiceClient::new(self.channel().await)
    }

    /// Signals shutdown and waits for the server to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("gateway drains within 10 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP client for tests. reqwest is built without a bundled crypto provider: install ring's first.
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// Waits until the gateway at `url` reports ready (shared state reachable), for up to 30 s (a
/// bound for a machine loaded by the whole suite, not a performance assertion).
pub async fn wait_ready(url: &str) {
    let started = std::time::Instant::now();
    while http()
        .get(format!("{url}/health/readiness"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the gateway at {url} never became ready (redis or etcd unreachable?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A user message.
pub fn user(text: &str) -> switchboard::proto::Message {
    switchboard::proto::Message {
        role: switchboard::proto::Role::User as i32,
        content: text.to_string(),
        ..Default::default()
    }
}

pub fn chat_request(model: &str, text: &str) -> switchboard::proto::ChatRequest {
    switchboard::proto::ChatRequest {
        model: model.to_string(),
        messages: vec![user(text)],
        ..Default::default()
    }
}

/// The text a chunk's deltas carry.
pub fn delta_text(c: &switchboard::proto::ChatChunk) -> impl Iterator<Item = &str> {
    c.choices
        .iter()
        .filter_map(|ch| ch.delta.as_ref())
        .map(|d| d.content.as_str())
}

/// Reads a gRPC chat stream to its end: the whole text and the route it reported. Panics on an
/// error item.
pub async fn read_stream(
    mut s: tonic::Streaming<switchboard::proto::ChatChunk>,
) -> (String, Option<switchboard::proto::Route>) {
    use futures_util::StreamExt;
    let (mut text, mut route) = (String::new(), None);
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        text.extend(delta_text(&c));
        route = route.or(c.route);
    }
    (text, route)
}

/// The `google.rpc.ErrorInfo` reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_else(|| panic!("status has no ErrorInfo: {status:?}"))
}
