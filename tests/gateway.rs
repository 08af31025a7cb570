//! End-to-end: a gateway in-process, called through the generated gRPC stubs, in front of fake
//! OpenAI-compatible upstreams that speak the real wire format.

mod common;

use std::time::{Duration, Instant};

use common::{
    Gateway, chat_request, delta_text,
    fake_openai::{Behavior, FakeOpenAi, StreamEnd, error_body, reply_stream},
    read_stream, reason,
};
use futures_util::StreamExt;
use switchboard::proto::{self as pb, ErrorClass};
use tonic::Code;

fn openai(group: &str, fake: &FakeOpenAi, extra: &str) -> String {
    format!(
        "  - model_name: {group}\n    litellm_params: {{model: openai/gpt-test, api_base: \"{}\", api_key: sk-provider-secret{extra}}}\n",
        fake.base()
    )
}

fn config(deployments: &[String], tail: &str) -> String {
    format!("model_list:\n{}{tail}", deployments.concat())
}

#[tokio::test]
async fn unary_chat_is_translated_to_openai_and_back() {
    let fake = FakeOpenAi::replying("Hello there").await;
    let gw = Gateway::start(&config(&[openai("smart", &fake, "")], "")).await;
    let mut req = chat_request("smart", "hi");
    req.temperature = Some(0.2);
    req.max_tokens = Some(50);
    req.metadata.insert("team".into(), "never-forwarded".into());
    let resp = gw.chat().await.complete(req).await.unwrap().into_inner();

    let choice = &resp.choices[0];
    assert_eq!(choice.message.as_ref().unwrap().content, "Hello there");
    assert_eq!(choice.message.as_ref().unwrap().role, pb::Role::Assistant as i32);
    assert_eq!(choice.finish_reason, pb::FinishReason::Stop as i32);
    assert_eq!(resp.model, "gpt-test");
    let usage = resp.usage.unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
        (11, 2, 13)
    );
    let route = resp.route.unwrap();
    assert_eq!(route.model_group, "smart");
    assert_eq!(route.deployment_id, "smart/openai/gpt-test");
    assert_eq!(route.provider, "openai");
    assert_eq!(route.upstream_model, "gpt-test");
    assert_eq!(route.attempts, 1);

    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.headers["authorization"], "Bearer sk-provider-secret");
    assert_eq!(sent.headers["content-type"], "application/json");
    assert_eq!(
        sent.body,
        serde_json::json!({"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}],
                           "temperature": 0.2, "max_tokens": 50})
    );
}

#[tokio::test]
async fn streaming_forwards_chunks_with_usage_and_route_on_the_last() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = Gateway::start(&config(&[openai("smart", &fake, "")], "")).await;
    let resp = gw
        .chat()
        .await
        .stream_complete(chat_request("smart", "count"))
        .await
        .unwrap();
    assert_eq!(
        resp.metadata().get("x-switchboard-deployment").unwrap(),
        "smart/openai/gpt-test"
    );
    let mut stream = resp.into_inner();
    let mut chunks = Vec::new();
    while let Some(c) = stream.next().await {
        chunks.push(c.unwrap());
    }
    let text: String = chunks.iter().flat_map(delta_text).collect();
    assert_eq!(text, "one two three");
    assert_eq!(
        chunks[0].choices[0].delta.as_ref().unwrap().role,
        pb::Role::Assistant as i32
    );
    assert!(chunks.iter().any(|c| {
        c.choices
            .iter()
            .any(|ch| ch.finish_reason == pb::FinishReason::Stop as i32)
    }));
    let last = chunks.last().unwrap();
    assert_eq!(last.usage.as_ref().unwrap().total_tokens, 14);
    assert_eq!(
        last.route.as_ref().unwrap().deployment_id,
        "smart/openai/gpt-test"
    );
    assert_eq!(
        chunks.iter().filter(|c| c.route.is_some()).count(),
        1,
        "route appears once"
    );

    let body = &fake.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(
        body["stream_options"]["include_usage"], true,
        "usage is always requested"
    );
}

#[tokio::test]
async fn embeddings_are_returned_in_input_order() {
    let fake = FakeOpenAi::replying("unused").await;
    let gw = Gateway::start(&config(&[openai("embed", &fake, "")], "")).await;
    let req = pb::EmbedRequest {
        model: "embed".into(),
        input: vec!["a".into(), "bbb".into(), "cc".into()],
        dimensions: Some(3),
        ..Default::default()
    };
    let resp = gw.embeddings().await.embed(req).await.unwrap().into_inner();
    let firsts: Vec<f32> = resp.data.iter().map(|e| e.vector[0]).collect();
    assert_eq!(firsts, [1.0, 3.0, 2.0], "vector i belongs to input i");
    assert_eq!(resp.data.iter().map(|e| e.index).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(resp.usage.unwrap().prompt_tokens, 4);
    assert_eq!(resp.route.unwrap().deployment_id, "embed/openai/gpt-test");
    let sent = &fake.requests()[0];
    assert_eq!(sent.path, "/v1/embeddings");
    assert_eq!(
        sent.body,
        serde_json::json!({"model": "gpt-test", "input": ["a", "bbb", "cc"], "encoding_format": "float", "dimensions": 3})
    );
}

#[tokio::test]
async fn weighted_pick_follows_weights() {
    let yaml = r#"
model_list:
  - {model_name: w, litellm_params: {model: openai/light, mock_response: "a", weight: 1}}
  - {model_name: w, litellm_params: {model: openai/heavy, mock_response: "b", weight: 3}}
"#;
    let gw = Gateway::start(yaml).await;
    let client = gw.chat().await;
    let n = 1200;
    let mut heavy = 0;
    for _ in 0..n {
        let r = client
            .clone()
            .complete(chat_request("w", "x"))
            .await
            .unwrap()
            .into_inner();
        if r.route.unwrap().deployment_id == "w/openai/heavy" {
            heavy += 1;
        }
    }
    // Expected 900; binomial sd = sqrt(1200 * 0.75 * 0.25) = 15. Allow 5 sd.
    assert!(
        (825..=975).contains(&heavy),
        "heavy deployment got {heavy} of {n}"
    );
}

#[tokio::test]
async fn rpm_weights_apply_when_no_weight_is_set() {
    let yaml = r#"
model_list:
  - {model_name: r, litellm_params: {model: openai/small, mock_response: "a", rpm: 100}}
  - {model_name: r, litellm_params: {model: openai/big, mock_response: "b", rpm: 900}}
"#;
    let gw = Gateway::start(yaml).await;
    let client = gw.chat().await;
    let mut big = 0;
    for _ in 0..600 {
        let r = client
            .clone()
            .complete(chat_request("r", "x"))
            .await
            .unwrap()
            .into_inner();
        big += usize::from(r.route.unwrap().deployment_id == "r/openai/big");
    }
    // Expected 540; sd = sqrt(600 * 0.9 * 0.1) = 7.3.
    assert!((500..=580).contains(&big), "big deployment got {big} of 600");
}

#[tokio::test]
async fn failover_to_another_deployment_of_the_group() {
    let bad = FakeOpenAi::failing(500).await;
    let good = FakeOpenAi::replying("ok").await;
    let gw = Gateway::start(&config(
        &[openai("smart", &bad, ""), openai("smart", &good, "")],
        "",
    ))
    .await;
    let client = gw.chat().await;
    let mut failovers = 0;
    for _ in 0..20 {
        let r = client
            .clone()
            .complete(chat_request("smart", "hi"))
            .await
            .unwrap()
            .into_inner();
        let route = r.route.unwrap();
        assert_eq!(
            route.deployment_id, "smart/openai/gpt-test#2",
            "the healthy deployment answers"
        );
        if route.attempts == 2 {
            failovers += 1;
            assert_eq!(route.attempt_log[0].deployment_id, "smart/openai/gpt-test");
            assert_eq!(route.attempt_log[0].error_class, ErrorClass::ServerError as i32);
            assert_eq!(route.attempt_log[1].error_class, ErrorClass::Unspecified as i32);
        }
    }
    assert_eq!(
        bad.count(),
        failovers,
        "each failover is one call to the failing deployment"
    );
    assert!(
        failovers > 0,
        "in 20 requests the failing deployment was picked first at least once"
    );
}

#[tokio::test]
async fn unknown_model_group_is_not_found() {
    let gw = Gateway::start(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, mock_response: x}}\n",
    )
    .await;
    let err = gw
        .chat()
        .await
        .complete(chat_request("nope", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(reason(&err), "MODEL_NOT_FOUND");
    assert!(err.message().contains("\"nope\""), "{}", err.message());
}

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let gw = Gateway::start(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, mock_response: x}}\n",
    )
    .await;
    let client = gw.chat().await;
    let cases: Vec<(pb::ChatRequest, &str)> = vec![
        (
            pb::ChatRequest {
                model: "a".into(),
                ..Default::default()
            },
            "messages",
        ),
        (
            pb::ChatRequest {
                messages: vec![common::user("x")],
                ..Default::default()
            },
            "model",
        ),
        (
            pb::ChatRequest {
                model: "a".into(),
                messages: vec![
                    common::user("x"),
                    pb::Message {
                        content: "y".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            "messages[1].role",
        ),
        (
            pb::ChatRequest {
                temperature: Some(3.5),
                ..chat_request("a", "x")
            },
            "temperature",
        ),
        (
            pb::ChatRequest {
                n: Some(0),
                ..chat_request("a", "x")
            },
            "n",
        ),
        (
            pb::ChatRequest {
                tool_choice: Some(pb::ToolChoice {
                    choice: Some(pb::tool_choice::Choice::FunctionName("f".into())),
                }),
                ..chat_request("a", "x")
            },
            "tool_choice.function_name",
        ),
    ];
    for (req, field) in cases {
        let err = client.clone().complete(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(reason(&err), "INVALID_REQUEST");
        assert!(
            err.message().starts_with(&format!("invalid {field}:")),
            "{field}: {}",
            err.message()
        );
        use tonic_types::StatusExt;
        let details = err.get_error_details();
        assert_eq!(details.bad_request().unwrap().field_violations[0].field, field);
    }
    let err = gw
        .embeddings()
        .await
        .embed(pb::EmbedRequest {
            model: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("invalid input:"), "{}", err.message());
}

#[tokio::test]
async fn all_deployments_failing_is_unavailable_and_lists_attempts() {
    let a = FakeOpenAi::failing(503).await;
    let b = FakeOpenAi::failing(500).await;
    let gw = Gateway::start(&config(
        &[openai("smart", &a, ""), openai("smart", &b, "")],
        "router_settings: {num_retries: 1}\n",
    ))
    .await;
    let err = gw
        .chat()
        .await
        .complete(chat_request("smart", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(reason(&err), "ALL_DEPLOYMENTS_FAILED");
    let m = err.message();
    assert!(
        m.contains("smart/openai/gpt-test (overloaded)")
            && m.contains("smart/openai/gpt-test#2 (server_error)"),
        "{m}"
    );
    assert!(
        !m.contains("unhappy"),
        "provider error bodies are not passed through: {m}"
    );
    assert_eq!((a.count(), b.count()), (1, 1));
}

#[tokio::test]
async fn upstream_rate_limit_is_resource_exhausted_with_retry_info() {
    let fake = FakeOpenAi::start(|_| Behavior::Error {
        status: 429,
        body: error_body(
            "Rate limit reached for requests",
            "requests",
            Some("rate_limit_exceeded"),
        ),
        headers: vec![("retry-after".into(), "7".into())],
    })
    .await;
    let gw = Gateway::start(&config(
        &[openai("smart", &fake, "")],
        "router_settings: {num_retries: 0}\n",
    ))
    .await;
    let err = gw
        .chat()
        .await
        .complete(chat_request("smart", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "UPSTREAM_RATE_LIMITED");
    use tonic_types::StatusExt;
    let retry = err
        .get_error_details()
        .retry_info()
        .expect("RetryInfo")
        .retry_delay;
    assert_eq!(retry, Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn upstream_auth_failure_fails_over_and_never_leaks_the_key() {
    // OpenAI's 401 body echoes a fragment of the key it was sent.
    let rejecting = FakeOpenAi::start(|_| Behavior::Error {
        status: 401,
        body: error_body(
            "Incorrect API key provided: sk-provi**********cret.",
            "invalid_request_error",
            Some("invalid_api_key"),
        ),
        headers: vec![],
    })
    .await;
    let gw = Gateway::start(&config(
        &[openai("g", &rejecting, ""), openai("g", &rejecting, "")],
        "",
    ))
    .await;
    let err = gw
        .chat()
        .await
        .complete(chat_request("g", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(reason(&err), "ALL_DEPLOYMENTS_FAILED");
    assert!(err.message().contains("(authentication)"), "{}", err.message());
    assert!(!err.message().contains("sk-"), "{}", err.message());
    use tonic_types::StatusExt;
    let info = err.get_error_details().error_info().unwrap().clone();
    assert!(!format!("{info:?}").contains("sk-"), "{info:?}");
    // Both deployments were tried once; a credential failure is not worth a backoff round.
    assert_eq!(rejecting.count(), 2);
}

#[tokio::test]
async fn upstream_bad_request_is_not_retried_elsewhere() {
    let a = FakeOpenAi::start(|_| Behavior::Error {
        status: 400,
        body: error_body("Invalid value for 'seed'", "invalid_request_error", None),
        headers: vec![],
    })
    .await;
    let gw = Gateway::start(&config(&[openai("smart", &a, "")], "")).await;
    let err = gw
        .chat()
        .await
        .complete(chat_request("smart", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "UPSTREAM_BAD_REQUEST");
    assert_eq!(a.count(), 1, "a request fault is not retried");

    a.set(|_| Behavior::Error {
        status: 400,
        body: error_body(
            "This model's maximum context length is 8192 tokens",
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        headers: vec![],
    });
    let err = gw
        .chat()
        .await
        .complete(chat_request("smart", "hi"))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "CONTEXT_WINDOW_EXCEEDED");
}

#[tokio::test]
async fn error_inside_a_200_fails_over() {
    let weird = FakeOpenAi::start(|_| Behavior::Error {
        status: 200,
        body: error_body("The server had an error", "server_error", None),
        headers: vec![],
    })
    .await;
    let good = FakeOpenAi::replying("fine").await;
    let gw = Gateway::start(&config(&[openai("g", &weird, ""), openai("g", &good, "")], "")).await;
    for _ in 0..5 {
        let r = gw
            .chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.choices[0].message.as_ref().unwrap().content, "fine");
    }
}

fn with_timeout<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

#[tokio::test]
async fn client_deadline_is_honoured_on_a_hung_upstream() {
    let fake = FakeOpenAi::start(|_| Behavior::Hang).await;
    let gw = Gateway::start(&config(&[openai("smart", &fake, "")], "")).await;
    let started = Instant::now();
    let err = gw
        .chat()
        .await
        .complete(with_timeout(
            chat_request("smart", "hi"),
            Duration::from_millis(1000),
        ))
        .await
        .unwrap_err();
    // The gateway's own status (with ErrorInfo), not the client's local timer (which says CANCELLED).
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(reason(&err), "DEADLINE_EXCEEDED");
    assert!(
        err.message().contains("smart/openai/gpt-test (timeout)"),
        "{}",
        err.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // The first attempt got half the budget, so a retry still fit: every call is listed.
    assert_eq!(
        fake.count(),
        err.message().matches("(timeout)").count(),
        "{}",
        err.message()
    );

    let started = Instant::now();
    let mut s = gw.chat().await;
    let err = s
        .stream_complete(with_timeout(
            chat_request("smart", "hi"),
            Duration::from_millis(1000),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn deployment_timeout_fails_over_to_a_healthy_deployment() {
    let hung = FakeOpenAi::start(|_| Behavior::Hang).await;
    let good = FakeOpenAi::replying("ok").await;
    let gw = Gateway::start(&config(
        &[openai("g", &hung, ", timeout: 0.2"), openai("g", &good, "")],
        "",
    ))
    .await;
    for _ in 0..6 {
        let r = gw
            .chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .unwrap()
            .into_inner();
        let route = r.route.unwrap();
        assert_eq!(route.deployment_id, "g/openai/gpt-test#2");
        if route.attempts == 2 {
            assert_eq!(route.attempt_log[0].error_class, ErrorClass::Timeout as i32);
        }
    }
}

#[tokio::test]
async fn stream_fails_over_before_the_first_chunk() {
    let bad = FakeOpenAi::failing(502).await;
    let good = FakeOpenAi::replying("streamed fine").await;
    let gw = Gateway::start(&config(&[openai("g", &bad, ""), openai("g", &good, "")], "")).await;
    for _ in 0..6 {
        let s = gw
            .chat()
            .await
            .stream_complete(chat_request("g", "hi"))
            .await
            .unwrap()
            .into_inner();
        let (text, route) = read_stream(s).await;
        assert_eq!(text, "streamed fine");
        assert_eq!(route.unwrap().deployment_id, "g/openai/gpt-test#2");
    }
}

#[tokio::test]
async fn stream_cut_after_the_first_chunk_ends_with_an_error_not_silence() {
    let fake = FakeOpenAi::start(|n| {
        let mut data = reply_stream(n, "gpt-test", "this will be cut");
        data.truncate(3);
        Behavior::Stream {
            data,
            delay: Duration::ZERO,
            end: StreamEnd::Cut,
        }
    })
    .await;
    let gw = Gateway::start(&config(&[openai("g", &fake, "")], "")).await;
    let mut s = gw
        .chat()
        .await
        .stream_complete(chat_request("g", "hi"))
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    let err = loop {
        match s.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(e)) => break e,
            None => panic!("a truncated stream must end with an error status"),
        }
    };
    assert_eq!(got, 3);
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(reason(&err), "STREAM_INTERRUPTED");
    assert_eq!(fake.count(), 1, "no fail-over once chunks were forwarded");
}

#[tokio::test]
async fn stalled_stream_hits_the_idle_timeout() {
    let fake = FakeOpenAi::start(|n| {
        let mut data = reply_stream(n, "gpt-test", "stalls");
        data.truncate(2);
        Behavior::Stream {
            data,
            delay: Duration::ZERO,
            end: StreamEnd::Stall,
        }
    })
    .await;
    let gw = Gateway::start(&config(&[openai("g", &fake, ", stream_timeout: 0.3")], "")).await;
    let mut s = gw
        .chat()
        .await
        .stream_complete(chat_request("g", "hi"))
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let mut last = None;
    while let Some(item) = s.next().await {
        last = Some(item);
    }
    let err = last.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(reason(&err), "STREAM_INTERRUPTED");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn cancelling_a_stream_cancels_the_upstream_request() {
    let fake = FakeOpenAi::start(|n| Behavior::Stream {
        data: reply_stream(n, "gpt-test", "a very slow answer that the client abandons"),
        delay: Duration::from_millis(100),
        end: StreamEnd::Done,
    })
    .await;
    let gw = Gateway::start(&config(&[openai("g", &fake, "")], "")).await;
    let mut s = gw
        .chat()
        .await
        .stream_complete(chat_request("g", "hi"))
        .await
        .unwrap()
        .into_inner();
    s.next().await.unwrap().unwrap();
    drop(s);
    let started = Instant::now();
    while fake.abandoned_streams() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "upstream stream still open 5 s after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cancelling_a_unary_call_cancels_the_upstream_request() {
    let fake = FakeOpenAi::start(|n| Behavior::Stream {
        // A unary call whose upstream dribbles a body: the gateway is still reading it when the client leaves.
        data: reply_stream(n, "gpt-test", "slow slow slow slow slow slow slow slow"),
        delay: Duration::from_millis(100),
        end: StreamEnd::Done,
    })
    .await;
    let gw = Gateway::start(&config(&[openai("g", &fake, "")], "")).await;
    let mut client = gw.chat().await;
    let call = client.complete(chat_request("g", "hi"));
    assert!(
        tokio::time::timeout(Duration::from_millis(250), call)
            .await
            .is_err(),
        "still running"
    );
    let started = Instant::now();
    while fake.abandoned_streams() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "upstream still read 5 s after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn master_key_is_required_when_configured() {
    let yaml = "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, mock_response: x}}\ngeneral_settings: {master_key: os.environ/SWITCHBOARD_MASTER_KEY}\n";
    let gw = Gateway::start_with_env(yaml, &[("SWITCHBOARD_MASTER_KEY", "sk-master-test")]).await;
    let client = gw.chat().await;

    let err = client.clone().complete(chat_request("a", "x")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "MISSING_API_KEY");

    let mut req = tonic::Request::new(chat_request("a", "x"));
    req.metadata_mut()
        .insert("authorization", "Bearer sk-wrong".parse().unwrap());
    let err = client.clone().complete(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "INVALID_API_KEY");
    assert!(!err.message().contains("sk-"), "{}", err.message());

    let mut req = tonic::Request::new(chat_request("a", "x"));
    req.metadata_mut()
        .insert("authorization", "Bearer sk-master-test".parse().unwrap());
    assert!(client.clone().complete(req).await.is_ok());

    let mut req = tonic::Request::new(chat_request("a", "x"));
    req.metadata_mut()
        .insert("authorization", "Bearer sk-master-test".parse().unwrap());
    let mut s = client.clone().stream_complete(req).await.unwrap().into_inner();
    while let Some(c) = s.next().await {
        c.unwrap();
    }
    let err = gw
        .embeddings()
        .await
        .embed(pb::EmbedRequest {
            model: "a".into(),
            input: vec!["x".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn health_reflection_and_http_probes_share_the_port() {
    let gw = Gateway::start(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, mock_response: x}}\n",
    )
    .await;
    let channel = gw.channel().await;

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "switchboard.v1.ChatService",
        "switchboard.v1.EmbeddingsService",
    ] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = reflection
        .server_reflection_info(futures_util::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        resp.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "switchboard.v1.ChatService",
        "switchboard.v1.EmbeddingsService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }

    let http = common::http();
    let live = http
        .get(format!("{}/health/liveliness", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready = http
        .get(format!("{}/health/readiness", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_an_open_stream_finish() {
    let fake = FakeOpenAi::start(|n| Behavior::Stream {
        data: reply_stream(n, "gpt-test", "finish me please"),
        delay: Duration::from_millis(50),
        end: StreamEnd::Done,
    })
    .await;
    let gw = Gateway::start(&config(&[openai("g", &fake, "")], "")).await;
    let mut s = gw
        .chat()
        .await
        .stream_complete(chat_request("g", "hi"))
        .await
        .unwrap()
        .into_inner();
    s.next().await.unwrap().unwrap();
    let stopping = tokio::spawn(gw.stop());
    let mut text = String::new();
    while let Some(c) = s.next().await {
        let c = c.expect("the stream completes during shutdown");
        text.extend(delta_text(&c));
    }
    assert_eq!(text, "finish me please");
    stopping.await.unwrap();
}

#[tokio::test]
async fn get_cluster_on_a_single_node_needs_the_master_key() {
    use switchboard::proto::{GetClusterRequest, admin_service_client::AdminServiceClient};
    let yaml = "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, mock_response: x}}\ngeneral_settings: {master_key: sk-admin-test}\n";
    let gw = Gateway::start(yaml).await;
    let mut admin = AdminServiceClient::new(gw.channel().await);
    let err = admin.get_cluster(GetClusterRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(GetClusterRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer sk-admin-test".parse().unwrap());
    let c = admin.get_cluster(req).await.unwrap().into_inner();
    assert!(!c.shared_state);
    assert_eq!(c.replicas.len(), 1);
    assert_eq!(c.replicas[0].address, gw.addr.to_string());
    assert_eq!(c.replicas[0].replica_id, c.replica_id);
    assert_eq!(c.deployments.len(), 1);
    assert_eq!(c.deployments[0].deployment_id, "a/gpt-4o");
}
