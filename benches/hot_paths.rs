//! Micro-benchmarks of the request hot path, each a pure function (no I/O): proto -> domain
//! conversion, provider translation and response/stream parsing, the routing decision, the cache
//! key and cost computation. `cargo bench --bench hot_paths`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use switchboard::{
    api::convert,
    cache::key::{self, Partition},
    config::Config,
    domain::{Price, Usage},
    proto as pb,
    providers::{HttpClient, bench as wire, sse::Decoder},
    router::{LocalState, Router, RoutingTable},
};

/// A typical chat call: a system prompt, two turns, sampling parameters and one tool.
fn proto_request() -> pb::ChatRequest {
    let msg = |role: pb::Role, text: &str| pb::Message {
        role: role as i32,
        content: text.into(),
        ..Default::default()
    };
    pb::ChatRequest {
        model: "smart".into(),
        messages: vec![
            msg(
                pb::Role::System,
                "You are a concise assistant for an internal support desk.",
            ),
            msg(
                pb::Role::User,
                "My build fails with a linker error about a missing symbol.",
            ),
            msg(
                pb::Role::Assistant,
                "Which target and toolchain are you building with?",
            ),
            msg(
                pb::Role::User,
                "x86_64-unknown-linux-gnu, stable, after upgrading a dependency.",
            ),
        ],
        temperature: Some(0.2),
        max_tokens: Some(256),
        tools: vec![pb::Tool {
            name: "search_tickets".into(),
            description: "Search past support tickets".into(),
            parameters: None,
            strict: None,
        }],
        ..Default::default()
    }
}

const OPENAI_RESPONSE: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Run cargo clean, then rebuild; if the symbol is still missing, check that both crates use the same version of the dependency.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":62,"completion_tokens":29,"total_tokens":91,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp_1"}"#;

const ANTHROPIC_RESPONSE: &[u8] = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Run cargo clean, then rebuild; if the symbol is still missing, check that both crates use the same version of the dependency."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":62,"output_tokens":29}}"#;

/// Twenty OpenAI stream events, as they arrive on the wire.
fn sse_stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..20 {
        out.extend_from_slice(
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"word{i} \"}},\"finish_reason\":null}}]}}\n\n"
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn router() -> Router {
    let yaml = "model_list:\n".to_string()
        + &(0..4)
            .map(|i| {
                format!(
                    "  - model_name: smart\n    litellm_params: {{model: openai/gpt-4o, api_base: \"http://10.0.0.{i}:8000/v1\", api_key: k}}\n"
                )
            })
            .collect::<String>()
        + "router_settings: {routing_strategy: least-busy}\n";
    let config = Config::parse(&yaml, &|_| None).expect("valid bench config");
    let http = HttpClient::new().expect("http client");
    Router::new(
        RoutingTable::build(&config, &http),
        std::sync::Arc::new(LocalState::default()),
    )
}

fn benches(c: &mut Criterion) {
    let req = proto_request();
    c.bench_function("proto_to_domain_chat_request", |b| {
        b.iter(|| convert::chat_request(black_box(req.clone())).unwrap())
    });
    let domain = convert::chat_request(req.clone()).unwrap();
    c.bench_function("openai_request_body", |b| {
        b.iter(|| wire::openai_body(black_box(&domain)))
    });
    c.bench_function("anthropic_request_body", |b| {
        b.iter(|| wire::anthropic_body(black_box(&domain)))
    });
    c.bench_function("openai_parse_response", |b| {
        b.iter(|| wire::openai_parse(black_box(OPENAI_RESPONSE)).unwrap())
    });
    c.bench_function("anthropic_parse_response", |b| {
        b.iter(|| wire::anthropic_parse(black_box(ANTHROPIC_RESPONSE)).unwrap())
    });
    let stream = sse_stream();
    c.bench_function("sse_frame_and_parse_20_chunks", |b| {
        b.iter(|| {
            let mut decoder = Decoder::default();
            let mut n = 0;
            for event in decoder.feed(black_box(&stream)).unwrap() {
                if event.data != "[DONE]" {
                    n += usize::from(wire::openai_chunk(&event.data).is_some());
                }
            }
            assert_eq!(n, 20);
        })
    });
    let answer = wire::openai_parse(OPENAI_RESPONSE).unwrap();
    c.bench_function("domain_to_proto_chat_response", |b| {
        let route = switchboard::router::RouteInfo {
            group: switchboard::domain::ModelGroup::new("smart"),
            deployment: switchboard::domain::DeploymentId::new("smart/openai/gpt-4o"),
            provider: "openai",
            upstream_model: "gpt-4o".into(),
            attempts: Vec::new(),
            fallbacks: Vec::new(),
            price: None,
            cache_hit: false,
        };
        b.iter(|| convert::chat_response(black_box(answer.clone()), &route, switchboard::domain::Cost::ZERO))
    });
    let r = router();
    let group = switchboard::domain::ModelGroup::new("smart");
    c.bench_function("routing_decision_least_busy_4_deployments", |b| {
        b.iter(|| r.bench_pick(black_box(&group), false).unwrap())
    });
    c.bench_function("cache_key_chat", |b| {
        b.iter(|| key::chat(black_box(&domain), false, Partition::default()))
    });
    // gpt-4o: $2.50 / $10 per million tokens, cached input $1.25.
    let price = Price {
        input: 2_500_000,
        output: 10_000_000,
        cache_read: 1_250_000,
        cache_write: 2_500_000,
    };
    let usage = Usage::new(62, 29);
    c.bench_function("cost_of_usage", |b| b.iter(|| price.cost(black_box(&usage))));
}

criterion_group!(hot_paths, benches);
criterion_main!(hot_paths);
