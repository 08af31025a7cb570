//! A small gRPC client for the `switchboard chat` command: one chat request, printed as it arrives.

use std::io::Write as _;

use futures_util::StreamExt;

use crate::proto::{self, chat_service_client::ChatServiceClient};

/// Sends one chat request to the gateway at `url` and prints the answer to stdout, then a line on
/// stderr naming the deployment that served it.
pub async fn chat(
    url: String,
    key: Option<String>,
    model: String,
    system: Option<String>,
    prompt: String,
    stream: bool,
) -> anyhow::Result<()> {
    let mut client = ChatServiceClient::connect(url.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {e}"))?;
    let text = |role: proto::Role, content: String| proto::Message {
        role: role as i32,
        content,
        ..Default::default()
    };
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(text(proto::Role::System, s));
    }
    messages.push(text(proto::Role::User, prompt));
    let mut request = tonic::Request::new(proto::ChatRequest {
        model,
        messages,
        ..Default::default()
    });
    if let Some(key) = key {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {key}").parse()?);
    }
    let status = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    let mut out = std::io::stdout();
    let route = if stream {
        let mut chunks = client
            .stream_complete(request)
            .await
            .map_err(status)?
            .into_inner();
        let mut route = None;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(status)?;
            for c in &chunk.choices {
                if let Some(d) = &c.delta {
                    write!(out, "{}", d.content)?;
                    out.flush()?;
                }
            }
            route = route.or(chunk.route);
        }
        route
    } else {
        let resp = client.complete(request).await.map_err(status)?.into_inner();
        for c in &resp.choices {
            if let Some(m) = &c.message {
                write!(out, "{}", m.content)?;
            }
        }
        resp.route
    };
    writeln!(out)?;
    if let Some(r) = route {
        eprintln!(
            "[{} via {} ({}), {} attempt(s)]",
            r.model_group, r.deployment_id, r.upstream_model, r.attempts
        );
    }
    Ok(())
}
