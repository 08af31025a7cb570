//! Provider conformance: the same cases through every provider's fake upstream (each speaking that
//! provider's wire format), asserting both our answer and the exact request the provider received.

mod common;

use std::time::Duration;

use common::{
    Gateway, chat_request, dialects,
    fake_provider::{Dialect, FakeProvider, Fault, JSON_ANSWER, Recorded, TEXT},
    reason,
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard::proto as pb;
use tonic::Code;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Simple,
    SystemMultiTurn,
    Tools,
    Json,
    Image,
    Stream,
}

struct Target {
    provider: &'static str,
    /// `litellm_params` of the one deployment of group `p`, given the fake's URL.
    params: Box<dyn Fn(&str) -> String>,
    embeds: bool,
    /// Asserts what the provider received for a case.
    check: fn(Case, &Recorded),
}

fn user(text: &str) -> pb::Message {
    common::user(text)
}

fn msg(role: pb::Role, text: &str) -> pb::Message {
    pb::Message {
        role: role as i32,
        content: text.into(),
        ..Default::default()
    }
}

fn weather_tool() -> pb::Tool {
    pb::Tool {
        name: "get_weather".into(),
        description: "Weather for a city".into(),
        parameters: Some(prost_types::Struct {
            fields: [(
                "type".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("object".into())),
                },
            )]
            .into_iter()
            .collect(),
        }),
        strict: None,
    }
}

fn request(case: Case) -> pb::ChatRequest {
    let mut r = chat_request("p", "hi");
    match case {
        Case::Simple | Case::Stream => {}
        Case::SystemMultiTurn => {
            r.messages = vec![
                msg(pb::Role::System, "be brief"),
                user("first question"),
                msg(pb::Role::Assistant, "first answer"),
                user("second question"),
            ];
            r.stop = vec!["END".into()];
            r.max_tokens = Some(77);
            r.temperature = Some(0.5);
        }
        Case::Tools => {
            r.tools = vec![weather_tool()];
            r.tool_choice = Some(pb::ToolChoice {
                choice: Some(pb::tool_choice::Choice::FunctionName("get_weather".into())),
            });
        }
        Case::Json => {
            r.response_format = Some(pb::ResponseFormat {
                r#type: pb::ResponseFormatType::JsonSchema as i32,
                json_schema: Some(pb::JsonSchema {
                    name: "answer".into(),
                    ..Default::default()
                }),
            });
        }
        Case::Image => {
            r.messages = vec![pb::Message {
                role: pb::Role::User as i32,
                parts: vec![
                    pb::ContentPart {
                        part: Some(pb::content_part::Part::Text("what is this?".into())),
                    },
                    pb::ContentPart {
                        part: Some(pb::content_part::Part::ImageUrl(pb::ImageUrl {
                            url: "data:image/png;base64,iVBORw0KGgo=".into(),
                            detail: 0,
                        })),
                    },
                ],
                ..Default::default()
            }];
        }
    }
    r
}

async fn stream_all(
    gw: &Gateway,
    req: pb::ChatRequest,
) -> Result<(String, Vec<(String, String, String)>, Option<pb::Usage>), tonic::Status> {
    let mut s = gw.chat().await.stream_complete(req).await?.into_inner();
    let (mut text, mut calls, mut usage) = (String::new(), Vec::<(String, String, String)>::new(), None);
    while let Some(c) = s.next().await {
        let c = c?;
        for ch in &c.choices {
            let d = ch.delta.as_ref().unwrap();
            text.push_str(&d.content);
            for t in &d.tool_calls {
                let i = t.index as usize;
                if calls.len() <= i {
                    calls.push(Default::default());
                }
                calls[i].0.push_str(&t.id);
                calls[i].1.push_str(&t.name);
                calls[i].2.push_str(&t.arguments);
            }
        }
        usage = c.usage.or(usage);
    }
    Ok((text, calls, usage))
}

async fn run_suite(target: Target, dialect: impl Dialect) {
    let fake = FakeProvider::start(dialect).await;
    let yaml = format!(
        "model_list:\n  - model_name: p\n    litellm_params: {{{}}}\nrouter_settings: {{num_retries: 0}}\n",
        (target.params)(&fake.url())
    );
    let gw = Gateway::start_with_env(&yaml, &[("PROVIDER_KEY", "sk-provider-conformance")]).await;
    let client = gw.chat().await;
    let name = target.provider;

    for case in [Case::Simple, Case::SystemMultiTurn, Case::Image] {
        let r = client
            .clone()
            .complete(request(case))
            .await
            .unwrap_or_else(|e| panic!("{name} {case:?}: {e:?}"))
            .into_inner();
        let m = r.choices[0].message.as_ref().unwrap();
        assert_eq!(m.content, TEXT, "{name} {case:?}");
        assert_eq!(
            r.choices[0].finish_reason,
            pb::FinishReason::Stop as i32,
            "{name} {case:?}"
        );
        let u = r.usage.unwrap();
        assert!(
            u.total_tokens > 0 && u.total_tokens == u.prompt_tokens + u.completion_tokens,
            "{name} usage {u:?}"
        );
        assert_eq!(r.route.unwrap().provider, name);
        (target.check)(case, &fake.last());
    }

    let r = client
        .clone()
        .complete(request(Case::Tools))
        .await
        .unwrap()
        .into_inner();
    let call = &r.choices[0].message.as_ref().unwrap().tool_calls[0];
    assert_eq!(call.name, "get_weather", "{name}");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"city": "Paris"}),
        "{name}"
    );
    assert!(!call.id.is_empty(), "{name}: tool call ids are always set");
    assert_eq!(
        r.choices[0].finish_reason,
        pb::FinishReason::ToolCalls as i32,
        "{name}"
    );
    (target.check)(Case::Tools, &fake.last());

    let (_, calls, _) = stream_all(&gw, request(Case::Tools)).await.unwrap();
    assert_eq!(calls.len(), 1, "{name}: {calls:?}");
    assert_eq!(calls[0].1, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&calls[0].2).unwrap(),
        json!({"city": "Paris"}),
        "{name}: {calls:?}"
    );

    let r = client
        .clone()
        .complete(request(Case::Json))
        .await
        .unwrap()
        .into_inner();
    let content = &r.choices[0].message.as_ref().unwrap().content;
    assert_eq!(
        serde_json::from_str::<Value>(content).unwrap(),
        serde_json::from_str::<Value>(JSON_ANSWER).unwrap(),
        "{name}"
    );
    (target.check)(Case::Json, &fake.last());
    let (text, _, _) = stream_all(&gw, request(Case::Json)).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"answer": 42}),
        "{name} streamed JSON: {text}"
    );

    let (text, calls, usage) = stream_all(&gw, request(Case::Stream)).await.unwrap();
    assert_eq!(text, TEXT, "{name}");
    assert!(calls.is_empty());
    assert!(
        usage.is_some_and(|u| u.total_tokens > 0),
        "{name}: streams always report usage"
    );
    (target.check)(Case::Stream, &fake.last());

    if target.embeds {
        let req = pb::EmbedRequest {
            model: "p".into(),
            input: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let r = gw.embeddings().await.embed(req).await.unwrap().into_inner();
        assert_eq!(r.data.len(), 2, "{name}");
        assert_ne!(
            r.data[0].vector, r.data[1].vector,
            "{name}: one vector per input, in order"
        );
    }

    // Every error class maps to the right status.
    let expect = [
        (
            Fault::RateLimited,
            Code::ResourceExhausted,
            "UPSTREAM_RATE_LIMITED",
        ),
        (Fault::Overloaded, Code::Unavailable, "(overloaded)"),
        (
            Fault::ContextWindow,
            Code::InvalidArgument,
            "CONTEXT_WINDOW_EXCEEDED",
        ),
        (
            Fault::ContentPolicy,
            Code::InvalidArgument,
            "CONTENT_POLICY_VIOLATION",
        ),
        (Fault::Auth, Code::Unavailable, "(authentication)"),
        (Fault::BadRequest, Code::InvalidArgument, "UPSTREAM_BAD_REQUEST"),
        (Fault::NotFound, Code::Unavailable, "(not_found)"),
        (Fault::Server, Code::Unavailable, "(server_error)"),
        (Fault::ErrorIn200, Code::Unavailable, "(server_error)"),
        (Fault::Garbage, Code::Unavailable, "(malformed_response)"),
    ];
    for (fault, code, what) in expect {
        if !fake.dialect_supports(fault) {
            continue;
        }
        fake.fail_with(fault);
        let err = client.clone().complete(request(Case::Simple)).await.unwrap_err();
        assert_eq!(err.code(), code, "{name} {fault:?}: {err:?}");
        assert!(
            reason(&err) == what || err.message().contains(what),
            "{name} {fault:?}: {} / {}",
            reason(&err),
            err.message()
        );
        assert!(
            !err.message().contains("sk-"),
            "{name} {fault:?} leaks a key: {}",
            err.message()
        );
        if fault == Fault::RateLimited {
            use tonic_types::StatusExt;
            assert_eq!(
                err.get_error_details().retry_info().unwrap().retry_delay,
                Some(Duration::from_secs(3)),
                "{name}"
            );
        }
    }

    fake.fail_with(Fault::Truncated);
    let err = stream_all(&gw, request(Case::Stream)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{name} truncated: {err:?}");
    assert_eq!(reason(&err), "STREAM_INTERRUPTED", "{name} truncated");
}

fn bearer(r: &Recorded) {
    assert_eq!(r.headers["authorization"], "Bearer sk-provider-conformance");
}

fn openai_check(case: Case, r: &Recorded) {
    bearer(r);
    assert!(r.uri.ends_with("/v1/chat/completions"), "{}", r.uri);
    openai_body_check(case, r);
}

fn openai_body_check(case: Case, r: &Recorded) {
    let b = &r.body;
    match case {
        Case::SystemMultiTurn => {
            assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
            assert_eq!(b["messages"].as_array().unwrap().len(), 4);
            assert_eq!(
                (b["stop"].clone(), b["max_tokens"].clone()),
                (json!(["END"]), json!(77))
            );
        }
        Case::Tools => assert_eq!(
            b["tool_choice"],
            json!({"type": "function", "function": {"name": "get_weather"}})
        ),
        Case::Json => assert_eq!(b["response_format"]["type"], "json_schema"),
        Case::Image => assert_eq!(
            b["messages"][0]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
        ),
        Case::Stream => assert_eq!(b["stream_options"], json!({"include_usage": true})),
        Case::Simple => assert_eq!(b["model"], "gpt-4o-mini"),
    }
}

#[tokio::test]
async fn openai_conformance() {
    let target = Target {
        provider: "openai",
        params: Box::new(|url| {
            format!("model: openai/gpt-4o-mini, api_base: \"{url}/v1\", api_key: os.environ/PROVIDER_KEY")
        }),
        embeds: true,
        check: openai_check,
    };
    run_suite(target, dialects::OpenAi).await;
}

#[tokio::test]
async fn azure_conformance() {
    let target = Target {
        provider: "azure",
        params: Box::new(|url| {
            format!(
                "model: azure/gpt-4o-mini, api_base: \"{url}\", api_key: os.environ/PROVIDER_KEY, api_version: \"2024-10-21\""
            )
        }),
        embeds: true,
        check: |case, r| {
            assert_eq!(r.headers["api-key"], "sk-provider-conformance");
            assert!(r.headers.get("authorization").is_none());
            assert_eq!(
                r.uri,
                "/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
            );
            openai_body_check(case, r);
        },
    };
    run_suite(target, dialects::OpenAi).await;
}

#[tokio::test]
async fn anthropic_conformance() {
    let target = Target {
        provider: "anthropic",
        params: Box::new(|url| {
            format!(
                "model: anthropic/claude-sonnet-4-5, api_base: \"{url}\", api_key: os.environ/PROVIDER_KEY"
            )
        }),
        embeds: false,
        check: |case, r| {
            assert_eq!(r.uri, "/v1/messages");
            assert_eq!(r.headers["x-api-key"], "sk-provider-conformance");
            assert_eq!(r.headers["anthropic-version"], "2023-06-01");
            let b = &r.body;
            assert_eq!(b["model"], "claude-sonnet-4-5");
            match case {
                Case::Simple => assert_eq!(b["max_tokens"], 4096, "max_tokens is required: defaulted"),
                Case::SystemMultiTurn => {
                    assert_eq!(b["system"], "be brief", "the system prompt is lifted out");
                    let roles: Vec<&str> = b["messages"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["role"].as_str().unwrap())
                        .collect();
                    assert_eq!(roles, ["user", "assistant", "user"]);
                    assert_eq!(
                        (b["stop_sequences"].clone(), b["max_tokens"].clone()),
                        (json!(["END"]), json!(77))
                    );
                }
                Case::Tools => {
                    assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "get_weather"}));
                    assert_eq!(b["tools"][0]["input_schema"], json!({"type": "object"}));
                }
                Case::Json => assert_eq!(b["tool_choice"], json!({"type": "tool", "name": "json_output"})),
                Case::Image => assert_eq!(
                    b["messages"][0]["content"][1],
                    json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
                ),
                Case::Stream => assert_eq!(b["stream"], true),
            }
        },
    };
    run_suite(target, dialects::Anthropic).await;
}

#[tokio::test]
async fn gemini_conformance() {
    let target = Target {
        provider: "gemini",
        params: Box::new(|url| {
            format!("model: gemini/gemini-2.5-flash, api_base: \"{url}\", api_key: os.environ/PROVIDER_KEY")
        }),
        embeds: true,
        check: |case, r| {
            assert_eq!(r.headers["x-goog-api-key"], "sk-provider-conformance");
            let b = &r.body;
            if case == Case::Stream {
                assert_eq!(
                    r.uri,
                    "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
                );
            } else {
                assert_eq!(r.uri, "/v1beta/models/gemini-2.5-flash:generateContent");
            }
            match case {
                Case::Simple => assert_eq!(
                    b["contents"],
                    json!([{"role": "user", "parts": [{"text": "hi"}]}])
                ),
                Case::SystemMultiTurn => {
                    assert_eq!(b["systemInstruction"], json!({"parts": [{"text": "be brief"}]}));
                    let roles: Vec<&str> = b["contents"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|m| m["role"].as_str().unwrap())
                        .collect();
                    assert_eq!(roles, ["user", "model", "user"]);
                    let g = &b["generationConfig"];
                    assert_eq!(
                        (
                            g["stopSequences"].clone(),
                            g["maxOutputTokens"].clone(),
                            g["temperature"].clone()
                        ),
                        (json!(["END"]), json!(77), json!(0.5))
                    );
                }
                Case::Tools => {
                    assert_eq!(
                        b["toolConfig"],
                        json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
                    );
                    assert_eq!(b["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
                }
                Case::Json => assert_eq!(b["generationConfig"]["responseMimeType"], "application/json"),
                Case::Image => assert_eq!(
                    b["contents"][0]["parts"][1],
                    json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})
                ),
                Case::Stream => {}
            }
        },
    };
    run_suite(target, dialects::Gemini).await;
}

#[tokio::test]
async fn ollama_conformance() {
    let target = Target {
        provider: "ollama",
        params: Box::new(|url| format!("model: ollama_chat/llama3.1, api_base: \"{url}\"")),
        embeds: true,
        check: |case, r| {
            assert_eq!(r.uri, "/api/chat");
            let b = &r.body;
            assert_eq!(b["model"], "llama3.1");
            match case {
                Case::Simple => assert_eq!(b["stream"], false, "Ollama streams unless told not to"),
                Case::SystemMultiTurn => {
                    assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
                    assert_eq!(
                        b["options"],
                        json!({"temperature": 0.5, "num_predict": 77, "stop": ["END"]})
                    );
                }
                Case::Tools => assert_eq!(b["tools"][0]["function"]["name"], "get_weather"),
                Case::Json => assert_eq!(b["format"], "json"),
                Case::Image => assert_eq!(b["messages"][0]["images"], json!(["iVBORw0KGgo="])),
                Case::Stream => assert_eq!(b["stream"], true),
            }
        },
    };
    run_suite(target, dialects::Ollama).await;
}

#[tokio::test]
async fn cohere_conformance() {
    let target = Target {
        provider: "cohere",
        params: Box::new(|url| {
            format!("model: cohere/command-a-03-2025, api_base: \"{url}\", api_key: os.environ/PROVIDER_KEY")
        }),
        embeds: true,
        check: |case, r| {
            assert_eq!(r.uri, "/v2/chat");
            bearer(r);
            let b = &r.body;
            assert_eq!(b["model"], "command-a-03-2025");
            match case {
                Case::Simple => assert_eq!(b["messages"], json!([{"role": "user", "content": "hi"}])),
                Case::SystemMultiTurn => {
                    assert_eq!(b["messages"][0], json!({"role": "system", "content": "be brief"}));
                    assert_eq!(
                        (b["stop_sequences"].clone(), b["max_tokens"].clone()),
                        (json!(["END"]), json!(77))
                    );
                }
                Case::Tools => {
                    assert_eq!(b["tool_choice"], "REQUIRED");
                    assert_eq!(b["tools"][0]["function"]["name"], "get_weather");
                }
                Case::Json => assert_eq!(b["response_format"]["type"], "json_object"),
                Case::Image => assert_eq!(
                    b["messages"][0]["content"][1],
                    json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}})
                ),
                Case::Stream => assert_eq!(b["stream"], true),
            }
        },
    };
    run_suite(target, dialects::Cohere).await;
}

#[tokio::test]
async fn bedrock_conformance() {
    let target = Target {
        provider: "bedrock",
        params: Box::new(|url| {
            format!(
                "model: \"bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0\", api_base: \"{url}\", aws_access_key_id: AKIDEXAMPLE, \
                 aws_secret_access_key: os.environ/PROVIDER_KEY, aws_session_token: session-token-1, aws_region_name: us-east-1"
            )
        }),
        embeds: false,
        check: |case, r| {
            let action = if case == Case::Stream {
                "converse-stream"
            } else {
                "converse"
            };
            assert_eq!(
                r.uri,
                format!("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/{action}")
            );
            let auth = r.headers["authorization"].to_str().unwrap();
            assert!(
                auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
                "{auth}"
            );
            assert!(
                auth.contains("/us-east-1/bedrock/aws4_request") && auth.contains("Signature="),
                "{auth}"
            );
            assert!(!auth.contains("sk-provider"), "the secret key is never sent");
            assert!(r.headers.contains_key("x-amz-date"));
            assert_eq!(r.headers["x-amz-security-token"], "session-token-1");
            let b = &r.body;
            match case {
                Case::Simple => assert_eq!(
                    b["messages"],
                    json!([{"role": "user", "content": [{"text": "hi"}]}])
                ),
                Case::SystemMultiTurn => {
                    assert_eq!(b["system"], json!([{"text": "be brief"}]));
                    assert_eq!(
                        b["inferenceConfig"],
                        json!({"maxTokens": 77, "temperature": 0.5, "stopSequences": ["END"]})
                    );
                }
                Case::Tools => assert_eq!(
                    b["toolConfig"]["toolChoice"],
                    json!({"tool": {"name": "get_weather"}})
                ),
                Case::Json => assert_eq!(
                    b["toolConfig"]["toolChoice"],
                    json!({"tool": {"name": "json_output"}})
                ),
                Case::Image => assert_eq!(
                    b["messages"][0]["content"][1],
                    json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})
                ),
                Case::Stream => {}
            }
        },
    };
    run_suite(target, dialects::Bedrock).await;
}

/// A Google OAuth token endpoint that checks the service-account JWT (RS256 signature with the
/// fixture's public key, issuer, audience, scope) before issuing a token.
async fn token_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use base64::Engine as _;
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = issued.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}/token", listener.local_addr().unwrap());
    let expected_aud = uri.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let counter = counter.clone();
            let expected_aud = expected_aud.clone();
            async move {
                let form: std::collections::HashMap<String, String> = body
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.replace("%3A", ":")))
                    .collect();
                assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
                let jwt = &form["assertion"];
                let (signed, sig) = jwt.rsplit_once('.').unwrap();
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let public = include_bytes!("fixtures/vertex-test-key.pub.der");
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    &public[..],
                )
                .verify(signed.as_bytes(), &b64.decode(sig).unwrap())
                .expect("the JWT is signed with the service account's key");
                let claims: Value =
                    serde_json::from_slice(&b64.decode(signed.split('.').nth(1).unwrap()).unwrap()).unwrap();
                assert_eq!(claims["iss"], "switchboard-test@my-proj.iam.gserviceaccount.com");
                assert_eq!(claims["aud"], expected_aud);
                assert_eq!(claims["scope"], "https://www.googleapis.com/auth/cloud-platform");
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::Json(
                    json!({"access_token": "ya29.test-token", "expires_in": 3599, "token_type": "Bearer"}),
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (uri, issued)
}

fn vertex_check(case: Case, r: &Recorded) {
    let action = if case == Case::Stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    assert_eq!(
        r.uri,
        format!(
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:{action}"
        )
    );
    assert_eq!(r.headers["authorization"], "Bearer ya29.test-token");
    assert!(r.headers.get("x-goog-api-key").is_none());
    if case == Case::SystemMultiTurn {
        assert_eq!(
            r.body["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
    }
}

#[tokio::test]
async fn vertex_ai_conformance_with_a_service_account() {
    let (token_uri, issued) = token_server().await;
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("sa.json");
    std::fs::write(
        &creds,
        json!({
            "type": "service_account", "project_id": "my-proj",
            "client_email": "switchboard-test@my-proj.iam.gserviceaccount.com",
            "private_key": include_str!("fixtures/vertex-test-key.pem"),
            "token_uri": token_uri,
        })
        .to_string(),
    )
    .unwrap();
    let creds = creds.display().to_string();
    let target = Target {
        provider: "vertex_ai",
        params: Box::new(move |url| {
            format!(
                "model: vertex_ai/gemini-2.5-flash, api_base: \"{url}\", vertex_project: my-proj, \
                 vertex_location: us-central1, vertex_credentials: \"{creds}\""
            )
        }),
        embeds: true,
        check: vertex_check,
    };
    run_suite(target, dialects::Vertex).await;
    assert_eq!(
        issued.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one token, cached for every request"
    );
}

#[tokio::test]
async fn vertex_ai_with_a_static_access_token() {
    let fake = FakeProvider::start(dialects::Vertex).await;
    let yaml = format!(
        "model_list:\n  - model_name: p\n    litellm_params: {{model: vertex_ai/gemini-2.5-flash, api_base: \"{}\", vertex_project: my-proj, api_key: os.environ/VERTEX_TOKEN}}\n",
        fake.url()
    );
    let gw = Gateway::start_with_env(&yaml, &[("VERTEX_TOKEN", "ya29.test-token")]).await;
    let r = gw
        .chat()
        .await
        .complete(request(Case::Simple))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.choices[0].message.as_ref().unwrap().content, TEXT);
    vertex_check(Case::Simple, &fake.last());
}

#[tokio::test]
async fn bedrock_embeddings_titan_and_cohere() {
    let fake = FakeProvider::start(dialects::Bedrock).await;
    let yaml = format!(
        "model_list:\n  - model_name: titan\n    litellm_params: {{model: \"bedrock/amazon.titan-embed-text-v2:0\", api_base: \"{u}\", aws_access_key_id: AKID, aws_secret_access_key: secret, aws_region_name: eu-west-1}}\n  - model_name: cohere\n    litellm_params: {{model: bedrock/cohere.embed-english-v3, api_base: \"{u}\", aws_access_key_id: AKID, aws_secret_access_key: secret, aws_region_name: eu-west-1}}\n",
        u = fake.url()
    );
    let gw = Gateway::start(&yaml).await;
    let mut client = gw.embeddings().await;
    let one = pb::EmbedRequest {
        model: "titan".into(),
        input: vec!["hello".into()],
        dimensions: Some(256),
        ..Default::default()
    };
    let r = client.embed(one).await.unwrap().into_inner();
    assert_eq!(r.data[0].vector, [0.25, 0.5]);
    assert_eq!(r.usage.unwrap().prompt_tokens, 2);
    let sent = fake.last();
    assert_eq!(sent.uri, "/model/amazon.titan-embed-text-v2%3A0/invoke");
    assert_eq!(sent.body, json!({"inputText": "hello", "dimensions": 256}));
    assert!(
        sent.headers["authorization"]
            .to_str()
            .unwrap()
            .contains("/eu-west-1/bedrock/aws4_request")
    );

    let two = pb::EmbedRequest {
        model: "titan".into(),
        input: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let e = client.embed(two).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("one input per request"), "{}", e.message());

    let batch = pb::EmbedRequest {
        model: "cohere".into(),
        input: vec!["a".into(), "b".into()],
        ..Default::default()
    };
    let _ = client.embed(batch).await; // the fake answers Titan-shaped; what matters is the request
    assert_eq!(
        fake.last().body,
        json!({"texts": ["a", "b"], "input_type": "search_document"})
    );
}
