//! The OpenAI-compatible HTTP surface at the byte level: error shapes and positions, limits, headers,
//! SSE framing, and the same pipeline as gRPC (the SDK-level proof is in tests/sdk.rs).

mod common;

use common::{
    Gateway,
    fake_openai::{Behavior, FakeOpenAi, StreamEnd, reply_stream},
};
use serde_json::{Value, json};

async fn gateway(fake: &FakeOpenAi, tail: &str) -> Gateway {
    Gateway::start(&format!(
        "model_list:\n  - model_name: smart\n    litellm_params: {{model: openai/gpt-test, api_base: \"{}\", tags: [blue]}}\n  - model_name: smart\n    litellm_params: {{model: openai/gpt-other, api_base: \"{}\", tags: [default]}}\n{tail}",
        fake.base(),
        fake.base()
    ))
    .await
}

async fn post(gw: &Gateway, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    common::http()
        .post(format!("{}{path}", gw.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error"].clone())
}

#[tokio::test]
async fn malformed_json_names_the_position_and_shape_errors_the_path() {
    let fake = FakeOpenAi::replying("x").await;
    let gw = gateway(&fake, "").await;
    let (status, err) = error_of(
        post(
            &gw,
            "/v1/chat/completions",
            "{\"model\": \"smart\",\n \"messages\": [}",
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(err["code"], "malformed_json");
    assert!(
        err["message"].as_str().unwrap().contains("line 2 column"),
        "{err}"
    );

    let body =
        json!({"model": "smart", "messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]});
    let (status, err) = error_of(post(&gw, "/v1/chat/completions", body.to_string()).await).await;
    assert_eq!(status, 422);
    assert_eq!(err["param"], "messages[0].content[0].text", "{err}");

    let body = json!({"model": "smart", "messages": [{"role": "wizard", "content": "x"}]});
    let (status, err) = error_of(post(&gw, "/v1/chat/completions", body.to_string()).await).await;
    assert_eq!(
        (status, err["param"].as_str()),
        (400, Some("messages[0].role")),
        "{err}"
    );
    assert_eq!(fake.count(), 0, "nothing invalid reaches an upstream");
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let fake = FakeOpenAi::replying("x").await;
    let gw = gateway(&fake, "").await;
    let huge = format!(
        "{{\"model\": \"smart\", \"messages\": [{{\"role\": \"user\", \"content\": \"{}\"}}]}}",
        "a".repeat(33 << 20)
    );
    let (status, err) = error_of(post(&gw, "/v1/chat/completions", huge).await).await;
    assert_eq!(status, 413);
    assert_eq!(err["code"], "request_too_large");
}

#[tokio::test]
async fn unknown_paths_are_a_404_for_http_and_unimplemented_for_grpc() {
    let fake = FakeOpenAi::replying("x").await;
    let gw = gateway(&fake, "").await;
    let (status, err) = error_of(post(&gw, "/v2/chat/completions", "{}").await).await;
    assert_eq!((status, err["code"].as_str()), (404, Some("not_found")), "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("/v2/chat/completions"),
        "{err}"
    );
    let grpc = common::http()
        .post(format!("{}/some.Service/Method", gw.url()))
        .header("content-type", "application/grpc")
        .send()
        .await
        .unwrap();
    assert_eq!(grpc.headers()["grpc-status"], "12", "UNIMPLEMENTED");
}

#[tokio::test]
async fn ignored_parameters_are_reported_not_silently_dropped() {
    let fake = FakeOpenAi::replying("x").await;
    let gw = gateway(&fake, "").await;
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"1": 2}, "service_tier": "flex"});
    let resp = post(&gw, "/chat/completions", body.to_string()).await;
    assert_eq!(resp.status(), 200, "paths without /v1 work too");
    assert_eq!(
        resp.headers()["x-switchboard-ignored-params"],
        "logit_bias,service_tier"
    );
    let overhead: f64 = resp.headers()["x-switchboard-overhead-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(overhead >= 0.0);
    assert!(fake.requests()[0].body.get("logit_bias").is_none());
}

#[tokio::test]
async fn streams_without_include_usage_have_no_usage_chunk() {
    let fake = FakeOpenAi::replying("a b").await;
    let gw = gateway(&fake, "").await;
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let resp = post(&gw, "/v1/chat/completions", body.to_string()).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(*events.last().unwrap(), "data: [DONE]");
    for e in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap();
        assert!(chunk.get("usage").is_none(), "usage only when asked: {e}");
        assert!(!chunk["choices"].as_array().unwrap().is_empty());
    }
    // The gateway still asked the upstream for usage (for accounting).
    assert_eq!(fake.requests()[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_stream_that_fails_midway_ends_with_an_error_event_and_no_done() {
    let fake = FakeOpenAi::start(|n| {
        let mut data = reply_stream(n, "gpt-test", "cut short here");
        data.truncate(2);
        Behavior::Stream {
            data,
            delay: std::time::Duration::ZERO,
            end: StreamEnd::Cut,
        }
    })
    .await;
    let gw = gateway(&fake, "").await;
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let text = post(&gw, "/v1/chat/completions", body.to_string())
        .await
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let last: Value = serde_json::from_str(events.last().unwrap().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
}

#[tokio::test]
async fn tags_in_metadata_route_like_grpc_tags() {
    let fake = FakeOpenAi::replying("x").await;
    let gw = gateway(&fake, "").await;
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "metadata": {"tags": ["blue"]}});
    for _ in 0..5 {
        let resp = post(&gw, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(
            resp.headers()["x-switchboard-deployment"],
            "smart/openai/gpt-test"
        );
    }
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..5 {
        let resp = post(&gw, "/v1/chat/completions", body.to_string()).await;
        assert_eq!(
            resp.headers()["x-switchboard-deployment"],
            "smart/openai/gpt-other",
            "untagged: default pool"
        );
    }
}

#[tokio::test]
async fn auth_applies_to_every_route() {
    let fake = FakeOpenAi::replying("x").await;
    let gw = gateway(&fake, "general_settings: {master_key: sk-http-master}\n").await;
    let client = common::http();
    let resp = client
        .get(format!("{}/v1/models", gw.url()))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(resp).await;
    assert_eq!((status, err["code"].as_str()), (401, Some("missing_api_key")));
    let resp = client
        .get(format!("{}/v1/models", gw.url()))
        .bearer_auth("sk-http-master")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(format!("{}/health/liveliness", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "probes need no key");
}

#[tokio::test]
async fn the_http_surface_can_also_listen_on_its_own_port() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeOpenAi::replying("separate").await;
    let config = switchboard::config::Config::parse(
        &format!("model_list:\n  - {{model_name: smart, litellm_params: {{model: openai/gpt-test, api_base: \"{}\"}}}}\n", fake.base()),
        &|_| None,
    )
    .unwrap();
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchboard::app::run_with(
        switchboard::app::Listeners {
            main,
            http: Some(http),
        },
        config,
        async move {
            let _ = rx.await;
        },
    ));
    let body = json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]});
    let resp = common::http()
        .post(format!("http://{http_addr}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "separate");
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
