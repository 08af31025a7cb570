//! Telemetry end to end: spans exported over OTLP/gRPC to a real collector service in-process
//! (opentelemetry-proto's TraceService), W3C propagation in and out, the Prometheus endpoint, and
//! no secret or prompt text anywhere in what is exported.

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use common::{
    Gateway,
    fake_openai::{Behavior, FakeOpenAi, error_body},
    otlp::Collector,
};
use opentelemetry_proto::tonic::{common::v1::any_value::Value as Any, trace::v1::Span};
use switchboard::telemetry::{self, LogFormat, TraceSettings};

fn attrs(span: &Span) -> HashMap<String, String> {
    span.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.clone(),
                Some(Any::IntValue(i)) => i.to_string(),
                Some(Any::DoubleValue(d)) => d.to_string(),
                Some(Any::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const PROVIDER_KEY: &str = "sk-provider-telemetry-secret";
const PROMPT: &str = "PROMPT-SENTINEL-4242 please answer";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_follow_the_rpc_and_genai_conventions_and_leak_nothing() {
    let (collector, addr) = Collector::start().await;
    let settings = TraceSettings {
        endpoint: Some(format!("http://{addr}")),
        http: false,
        max_queue: 2048,
        service_name: "switchboard-test".into(),
        replica_id: "replica-1".into(),
    };
    let tel = telemetry::init(LogFormat::Text, &settings).unwrap();

    // The first deployment fails, the second answers: one server span, two attempt spans.
    let bad = FakeOpenAi::start(|_| Behavior::Error {
        status: 500,
        body: error_body("boom", "server_error", None),
        headers: vec![],
    })
    .await;
    let good = FakeOpenAi::replying("fine").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/gpt-test, api_base: \"{}\", api_key: os.environ/KEY, order: 1}}}}\n  - {{model_name: g, litellm_params: {{model: openai/gpt-test, api_base: \"{}\", api_key: os.environ/KEY, order: 2}}}}\nlitellm_settings: {{cache: true}}\n",
        bad.base(),
        good.base()
    );
    let gw = Gateway::start_with_env(&yaml, &[("KEY", PROVIDER_KEY)]).await;
    let mut req = tonic::Request::new(switchboard::proto::ChatRequest {
        max_tokens: Some(64),
        temperature: Some(0.25),
        ..common::chat_request("g", PROMPT)
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{CALLER_SPAN}-01").parse().unwrap(),
    );
    let resp = gw.chat().await.complete(req).await.unwrap();
    assert_eq!(resp.get_ref().route.as_ref().unwrap().attempts, 2);

    // The upstream saw our trace context.
    let upstream_tp = good.requests()[0].headers["traceparent"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        upstream_tp.starts_with(&format!("00-{TRACE_ID}-")),
        "{upstream_tp}"
    );

    tel.flush();
    let started = Instant::now();
    let spans = loop {
        let spans = collector.spans();
        if spans.iter().filter(|s| s.name == "chat gpt-test").count() >= 2
            && spans.iter().any(|s| s.kind == 2)
        {
            break spans;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "spans never arrived: {spans:?}"
        );
        tel.flush();
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();

    let server = spans
        .iter()
        .find(|s| s.name == "switchboard.v1.ChatService/Complete")
        .expect("a server span per RPC");
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(hex(&server.trace_id), TRACE_ID, "the caller's trace continues");
    assert_eq!(
        hex(&server.parent_span_id),
        CALLER_SPAN,
        "the caller's span is the parent"
    );
    let a = attrs(server);
    assert_eq!(
        (a["rpc.system"].as_str(), a["rpc.method"].as_str()),
        ("grpc", "Complete")
    );
    assert_eq!(a["rpc.grpc.status_code"], "0");
    assert_eq!(a["switchboard.attempts"], "2");
    assert_eq!(
        a["switchboard.cost_usd"], "0",
        "the cost rides on the server span (unpriced model)"
    );

    // Children of the server span: authentication, the cache lookup, admission (budgets and limits), and the
    // routing decision, whose children are the upstream attempts.
    let child = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.parent_span_id == server.span_id)
            .unwrap_or_else(|| panic!("a {name} span under the server span"))
    };
    child("auth");
    child("admission");
    let cache = child("cache lookup");
    assert_eq!(attrs(cache)["switchboard.cache.hit"], "false");
    assert_eq!(
        a["switchboard.cache.hit"], "false",
        "the server span says whether the cache answered"
    );
    let route = child("route g");
    assert_eq!(attrs(route)["switchboard.deployment.id"], "g/openai/gpt-test#2");
    let attempts: Vec<&Span> = spans.iter().filter(|s| s.name == "chat gpt-test").collect();
    assert_eq!(attempts.len(), 2, "a retry shows up as two attempt spans");
    for s in &attempts {
        assert_eq!(s.kind, 3, "SPAN_KIND_CLIENT");
        assert_eq!(
            s.parent_span_id, route.span_id,
            "attempts are children of the routing span"
        );
        let a = attrs(s);
        assert_eq!(a["gen_ai.operation.name"], "chat");
        assert_eq!(a["gen_ai.provider.name"], "openai");
        assert_eq!(a["gen_ai.request.model"], "gpt-test");
        assert_eq!(a["gen_ai.request.max_tokens"], "64");
        assert_eq!(a["gen_ai.request.temperature"], "0.25");
        assert_eq!(a["server.address"], "127.0.0.1");
    }
    let by_attempt: HashMap<String, HashMap<String, String>> = attempts
        .iter()
        .map(|s| {
            let a = attrs(s);
            (a["switchboard.attempt"].clone(), a)
        })
        .collect();
    assert_eq!(by_attempt["1"]["error.type"], "server_error");
    let ok = &by_attempt["2"];
    assert_eq!(ok["gen_ai.response.model"], "gpt-test");
    assert_eq!(ok["gen_ai.response.finish_reasons"], "stop");
    assert_eq!(ok["gen_ai.usage.input_tokens"], "11");
    assert!(!ok.contains_key("error.type"));

    // Nothing secret, and no prompt text, in any exported attribute.
    for s in &spans {
        let text = format!("{} {:?}", s.name, attrs(s));
        assert!(
            !text.contains("sk-provider") && !text.contains("PROMPT-SENTINEL"),
            "leak in span {text}"
        );
    }

    // Prometheus: the families, the retry as two attempts, and no secrets. Spend and tokens are
    // counted at settlement, just after the answer: wait for them.
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = common::http()
            .get(format!("{}/metrics", gw.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("switchboard_tokens_total") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for family in [
        "switchboard_requests_total",
        "switchboard_request_duration_seconds_bucket",
        "switchboard_overhead_seconds_bucket",
        "switchboard_upstream_attempts_total",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_token_usage_bucket",
        "switchboard_deployment_in_flight",
        "switchboard_deployment_cooling_down",
        "switchboard_spend_nano_usd_total",
        "switchboard_tokens_total",
    ] {
        assert!(
            metrics.contains(family),
            "{family} missing from /metrics:\n{metrics}"
        );
    }
    assert!(metrics.contains(r#"switchboard_upstream_attempts_total{deployment="g/openai/gpt-test",provider="openai",outcome="server_error"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"outcome="ok"} 1"#), "{metrics}");
    assert!(!metrics.contains("sk-provider") && !metrics.contains("PROMPT-SENTINEL"));

    // Opted in: prompt and completion text on the attempt span, with keys, e-mails and the
    // listed terms redacted.
    let capture = FakeOpenAi::replying("reply for ana@example.com").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: c, litellm_params: {{model: openai/gpt-capture, api_base: \"{}\", api_key: k}}}}\n\
         general_settings: {{trace_content: true, trace_content_redact: [Project Falcon]}}\n",
        capture.base()
    );
    let gw2 = Gateway::start(&yaml).await;
    gw2.chat()
        .await
        .complete(common::chat_request(
            "c",
            "CAPTURE-ME key sk-live-abcdefghijk on Project Falcon",
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let captured = loop {
        tel.flush();
        let spans = collector.spans();
        if let Some(s) = spans.iter().find(|s| s.name == "chat gpt-capture") {
            break attrs(s);
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the capture span never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let input = &captured["gen_ai.input.messages"];
    assert!(
        input.contains("CAPTURE-ME key [REDACTED] on [REDACTED]"),
        "{input}"
    );
    assert!(!input.contains("sk-live") && !input.contains("Falcon"), "{input}");
    assert_eq!(
        captured["gen_ai.output.messages"],
        r#"[{"content":"reply for [REDACTED]","role":"assistant"}]"#
    );
}
