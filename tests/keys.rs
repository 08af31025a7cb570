//! Virtual keys, teams, budgets and spend through the gateway's admin API and data plane.

mod common;

use common::{Gateway, chat_request, fake_openai::FakeOpenAi, reason};
use switchboard::proto::{
    self as pb, admin_service_client::AdminServiceClient, chat_service_client::ChatServiceClient,
};
use tonic::{Code, Request, transport::Channel};

const MASTER: &str = "sk-master-keys-test";

/// `smart` and `cheap` at $1 per million input tokens and $2 per million output tokens.
async fn gateway(fake: &FakeOpenAi, extra: &str) -> Gateway {
    gateway_with(fake, "", extra).await
}

/// [`gateway`] with more `general_settings` (`, key: value` pairs) and more top-level YAML.
async fn gateway_with(fake: &FakeOpenAi, general: &str, extra: &str) -> Gateway {
    let dep = |name: &str| {
        format!(
            "  - model_name: {name}\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}\n",
            fake.base()
        )
    };
    let yaml = format!(
        "model_list:\n{}{}general_settings: {{master_key: {MASTER}{general}}}\n{extra}",
        dep("smart"),
        dep("cheap")
    );
    Gateway::start(&yaml).await
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

async fn admin(gw: &Gateway) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(gw.channel().await)
}

async fn create_key(gw: &Gateway, spec: pb::KeySpec) -> (String, pb::KeyInfo) {
    let r = admin(gw)
        .await
        .create_key(with_key(pb::CreateKeyRequest { spec: Some(spec) }, MASTER))
        .await
        .unwrap()
        .into_inner();
    (r.key, r.info.unwrap())
}

async fn ask(
    chat: &mut ChatServiceClient<Channel>,
    key: &str,
    model: &str,
) -> Result<pb::ChatResponse, tonic::Status> {
    let mut req = chat_request(model, "hi");
    req.max_tokens = Some(5);
    chat.complete(with_key(req, key)).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn a_virtual_key_calls_its_models_and_nothing_else() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "").await;
    let (key, info) = create_key(
        &gw,
        pb::KeySpec {
            models: vec!["cheap".into()],
            key_alias: "ci".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(key.starts_with("sk-") && info.key_preview.ends_with(&key[key.len() - 4..]));
    let mut chat = gw.chat().await;
    let ok = ask(&mut chat, &key, "cheap").await.unwrap();
    // 11 prompt tokens at $1/M and 3 completion tokens at $2/M.
    assert_eq!(ok.route.unwrap().cost_nano_usd, 17_000);

    let denied = ask(&mut chat, &key, "smart").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "MODEL_NOT_ALLOWED");
    assert!(denied.message().contains("smart"), "{}", denied.message());

    let unknown = ask(&mut chat, "sk-not-a-key", "cheap").await.unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);

    // A virtual key is not an admin credential.
    let not_admin = admin(&gw)
        .await
        .list_keys(with_key(pb::ListKeysRequest::default(), &key))
        .await
        .unwrap_err();
    assert_eq!(not_admin.code(), Code::PermissionDenied);

    // Blocking and regenerating take effect at once; the old secret never works again.
    let mut a = admin(&gw).await;
    a.block_key(with_key(
        pb::BlockKeyRequest {
            key_id: info.key_id.clone(),
            blocked: true,
        },
        MASTER,
    ))
    .await
    .unwrap();
    let blocked = ask(&mut chat, &key, "cheap").await.unwrap_err();
    assert_eq!(
        (blocked.code(), reason(&blocked).as_str()),
        (Code::Unauthenticated, "API_KEY_BLOCKED")
    );
    a.block_key(with_key(
        pb::BlockKeyRequest {
            key_id: info.key_id.clone(),
            blocked: false,
        },
        MASTER,
    ))
    .await
    .unwrap();
    let fresh = a
        .regenerate_key(with_key(
            pb::RegenerateKeyRequest {
                key_id: info.key_id.clone(),
            },
            MASTER,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ask(&mut chat, &key, "cheap").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    ask(&mut chat, &fresh.key, "cheap").await.unwrap();

    // Listing shows previews, never secrets.
    let listed = a
        .list_keys(with_key(pb::ListKeysRequest::default(), MASTER))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 1);
    assert!(!format!("{listed:?}").contains(&fresh.key[3..]));
}

#[tokio::test]
async fn aliases_and_team_allow_lists_apply() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "").await;
    let mut a = admin(&gw).await;
    a.create_team(with_key(
        pb::CreateTeamRequest {
            spec: Some(pb::TeamSpec {
                team_id: "research".into(),
                models: vec!["smart".into()],
                ..Default::default()
            }),
        },
        MASTER,
    ))
    .await
    .unwrap();
    let (key, _) = create_key(
        &gw,
        pb::KeySpec {
            team_id: "research".into(),
            aliases: [("gpt-4".to_string(), "smart".to_string())].into(),
            ..Default::default()
        },
    )
    .await;
    let mut chat = gw.chat().await;
    let r = ask(&mut chat, &key, "gpt-4").await.unwrap();
    assert_eq!(r.route.unwrap().model_group, "smart");
    let denied = ask(&mut chat, &key, "cheap").await.unwrap_err();
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "the team allows only smart"
    );
    let in_use = a
        .delete_team(with_key(
            pb::DeleteTeamRequest {
                team_id: "research".into(),
            },
            MASTER,
        ))
        .await
        .unwrap_err();
    assert_eq!(in_use.code(), Code::FailedPrecondition);
    let bad = a
        .create_key(with_key(
            pb::CreateKeyRequest {
                spec: Some(pb::KeySpec {
                    limits: Some(pb::Limits {
                        budget_duration: "1y".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            MASTER,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("budget_duration"), "{}", bad.message());
}

#[tokio::test]
async fn a_budget_refuses_the_request_that_could_exceed_it_and_spend_is_reported() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "").await;
    // Each call costs $0.000017; its worst case (8 estimated prompt tokens + max_tokens 5) $0.000018.
    let (key, info) = create_key(
        &gw,
        pb::KeySpec {
            limits: Some(pb::Limits {
                max_budget: Some(0.00005),
                budget_duration: "30d".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let mut chat = gw.chat().await;
    let mut a = admin(&gw).await;
    // Settlement runs after the answer (off the request path); until it lands the reservation
    // holds the worst case, so wait for it before the next call.
    let mut settled = async |want: i64| {
        let mut spent = 0;
        for _ in 0..200 {
            let k = a
                .get_key(with_key(
                    pb::GetKeyRequest {
                        key_id: info.key_id.clone(),
                    },
                    MASTER,
                ))
                .await
                .unwrap()
                .into_inner()
                .info
                .unwrap();
            let s = k.spend.unwrap();
            spent = s.spend_nano_usd;
            if spent == want && s.reserved_nano_usd == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("spend {spent}, expected {want}");
    };
    ask(&mut chat, &key, "cheap").await.unwrap();
    settled(17_000).await;
    ask(&mut chat, &key, "cheap").await.unwrap();
    settled(34_000).await;
    let mut a = admin(&gw).await;
    let refused = ask(&mut chat, &key, "cheap").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused), "BUDGET_EXCEEDED");
    let details = tonic_types::StatusExt::get_error_details(&refused);
    let meta = &details.error_info().unwrap().metadata;
    assert_eq!(meta["scope"], format!("key:{}", info.key_id));
    assert_eq!(meta["limit_usd"], "0.000050");
    assert_eq!(meta["spent_usd"], "0.000034");
    assert!(meta.contains_key("resets_at_ms"));
    assert_eq!(fake.count(), 2, "the refused request never reached the upstream");

    let report = a
        .get_spend(with_key(
            pb::GetSpendRequest {
                group_by: "key".into(),
                ..Default::default()
            },
            MASTER,
        ))
        .await
        .unwrap()
        .into_inner();
    let row = report
        .rows
        .iter()
        .find(|r| r.name == format!("key:{}", info.key_id))
        .expect("the key's row");
    assert_eq!((row.spend_nano_usd, row.requests, row.tokens), (34_000, 2, 28));
    let bad = a
        .get_spend(with_key(
            pb::GetSpendRequest {
                group_by: "colour".into(),
                ..Default::default()
            },
            MASTER,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_streamed_answer_costs_what_the_same_answer_costs_unary() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "").await;
    let (key, _) = create_key(&gw, pb::KeySpec::default()).await;
    let mut chat = gw.chat().await;
    let unary = ask(&mut chat, &key, "cheap")
        .await
        .unwrap()
        .route
        .unwrap()
        .cost_nano_usd;
    let mut req = chat_request("cheap", "hi");
    req.max_tokens = Some(5);
    let mut stream = chat
        .stream_complete(with_key(req, &key))
        .await
        .unwrap()
        .into_inner();
    let mut streamed = None;
    while let Some(c) = stream.message().await.unwrap() {
        if let Some(r) = c.route {
            streamed = Some(r.cost_nano_usd);
        }
    }
    assert_eq!(unary, 17_000);
    assert_eq!(streamed, Some(unary));
    // Both settle (the stream's may land a moment after its last chunk), at the same cost.
    let mut a = admin(&gw).await;
    let mut logs = Vec::new();
    for _ in 0..100 {
        logs = a
            .list_spend_logs(with_key(pb::ListSpendLogsRequest { limit: 10 }, MASTER))
            .await
            .unwrap()
            .into_inner()
            .logs;
        if logs.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert!(
        logs.iter()
            .all(|l| l.spend_nano_usd == 17_000 && l.status == "ok"),
        "{logs:?}"
    );
}

#[tokio::test]
async fn rate_limits_refuse_with_retry_info_and_http_429() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "").await;
    let (key, _) = create_key(
        &gw,
        pb::KeySpec {
            limits: Some(pb::Limits {
                rpm_limit: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let client = common::http();
    let post = || {
        client
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(&key)
            .json(&serde_json::json!({"model": "cheap", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(first.headers()["x-switchboard-cost-usd"], "0.000017000");
    let mut chat = gw.chat().await;
    ask(&mut chat, &key, "cheap").await.unwrap();
    let refused = ask(&mut chat, &key, "cheap").await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::ResourceExhausted, "RATE_LIMITED")
    );
    let details = tonic_types::StatusExt::get_error_details(&refused);
    assert!(details.retry_info().is_some());
    let http = post().await.unwrap();
    assert_eq!(http.status(), 429);
    assert!(http.headers().contains_key("retry-after"));
    let body: serde_json::Value = http.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
}

/// Polls `f` every 10 ms until it returns true (panics after 5 s).
async fn eventually(mut f: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    while !f().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "not within 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn spent(gw: &Gateway, key_id: &str) -> pb::Spend {
    admin(gw)
        .await
        .get_key(with_key(
            pb::GetKeyRequest {
                key_id: key_id.to_string(),
            },
            MASTER,
        ))
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap()
        .spend
        .unwrap()
}

#[tokio::test]
async fn a_soft_budget_alerts_its_webhook_once_per_window() {
    use std::sync::{Arc, Mutex};
    let received: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(v): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway_with(&fake, &format!(", alert_webhook_url: \"{hook}\""), "").await;
    let (key, info) = create_key(
        &gw,
        pb::KeySpec {
            limits: Some(pb::Limits {
                soft_budget: Some(0.00003),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let mut chat = gw.chat().await;
    for want in [17_000, 34_000, 51_000] {
        ask(&mut chat, &key, "cheap").await.unwrap();
        eventually(async || spent(&gw, &info.key_id).await.spend_nano_usd == want).await;
    }
    eventually(async || !received.lock().unwrap().is_empty()).await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "soft_budget_crossed");
    assert_eq!(got[0]["scope"], format!("key:{}", info.key_id));
    assert_eq!(got[0]["soft_budget_usd"], 0.00003);
    assert!(!got[0].to_string().contains(&key[3..]), "no secret in alerts");
}

#[tokio::test]
async fn a_budget_window_resets_on_schedule() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "").await;
    let (key, info) = create_key(
        &gw,
        pb::KeySpec {
            limits: Some(pb::Limits {
                max_budget: Some(0.00003),
                budget_duration: "2s".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
    let mut chat = gw.chat().await;
    ask(&mut chat, &key, "cheap").await.unwrap();
    eventually(async || spent(&gw, &info.key_id).await.spend_nano_usd == 17_000).await;
    // 17,000 spent + an 18,000 worst case > 30,000: refused until the window ends.
    let refused = ask(&mut chat, &key, "cheap").await.unwrap_err();
    assert_eq!(reason(&refused), "BUDGET_EXCEEDED");
    let details = tonic_types::StatusExt::get_error_details(&refused);
    let resets: i64 = details.error_info().unwrap().metadata["resets_at_ms"]
        .parse()
        .unwrap();
    let wait = resets - switchboard::limits::now_ms();
    assert!((0..=2000).contains(&wait), "{wait}");
    tokio::time::sleep(std::time::Duration::from_millis(wait as u64 + 50)).await;
    ask(&mut chat, &key, "cheap")
        .await
        .expect("a new window, a new budget");
}

#[tokio::test]
async fn end_users_have_their_own_budget() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "litellm_settings: {max_end_user_budget: 0.00003}\n").await;
    let mut chat = gw.chat().await;
    let as_user = |user: &str| {
        let mut r = chat_request("cheap", "hi");
        r.max_tokens = Some(5);
        r.user = user.to_string();
        with_key(r, MASTER)
    };
    chat.complete(as_user("alice")).await.unwrap();
    // $0.000017 spent + an $0.000018 worst case > $0.00003 (admission waits for the first
    // settlement if it has not landed yet, then refuses).
    let refused = chat.complete(as_user("alice")).await.unwrap_err();
    assert_eq!(reason(&refused), "BUDGET_EXCEEDED");
    assert!(
        refused.message().contains("end_user:alice"),
        "{}",
        refused.message()
    );
    chat.complete(as_user("bob"))
        .await
        .expect("bob has his own budget");
}

#[tokio::test]
async fn litellm_key_management_endpoints_map_onto_the_same_store() {
    let fake = FakeOpenAi::replying("one two three").await;
    let gw = gateway(&fake, "").await;
    let http = common::http();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", gw.url()))
            .bearer_auth(MASTER)
            .json(&body)
            .send()
    };
    let team: serde_json::Value = post(
        "/team/new",
        serde_json::json!({"team_alias": "Research", "models": ["cheap"], "max_budget": 10}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let team_id = team["team_id"].as_str().unwrap().to_string();
    let made = post(
        "/key/generate",
        serde_json::json!({"team_id": team_id, "key_alias": "etl", "max_budget": 1.5, "budget_duration": "30d",
                           "rpm_limit": 50, "duration": "1h", "metadata": {"owner": "data"}}),
    )
    .await
    .unwrap();
    assert_eq!(made.status(), 200);
    let made: serde_json::Value = made.json().await.unwrap();
    let key = made["key"].as_str().unwrap().to_string();
    assert_eq!(
        (made["max_budget"].as_f64(), made["rpm_limit"].as_u64()),
        (Some(1.5), Some(50))
    );
    assert_eq!(made["team_id"], team_id.as_str());
    assert!(made["expires"].is_string());

    // The key works on the data plane, for the team's models only, and /v1/models says so.
    let models: serde_json::Value = http
        .get(format!("{}/v1/models", gw.url()))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cheap"]);
    let mut chat = gw.chat().await;
    ask(&mut chat, &key, "cheap").await.unwrap();

    let info: serde_json::Value = http
        .get(format!("{}/key/info?key={key}", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["info"]["key_alias"], "etl");
    assert_eq!(info["info"]["metadata"]["owner"], "data");
    assert!(
        !info.to_string().contains(&key[3..]),
        "key/info never returns the secret"
    );

    let updated: serde_json::Value = post("/key/update", serde_json::json!({"key": key, "max_budget": 3.0}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (updated["max_budget"].as_f64(), updated["rpm_limit"].as_u64()),
        (Some(3.0), Some(50))
    );

    let team_info: serde_json::Value = http
        .get(format!("{}/team/info?team_id={team_id}", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(team_info["keys"].as_array().unwrap().len(), 1);

    let mut logs = serde_json::Value::Null;
    eventually(async || {
        logs = http
            .get(format!("{}/spend/logs?api_key={key}", gw.url()))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        logs.as_array().is_some_and(|l| l.len() == 1)
    })
    .await;
    assert_eq!(logs[0]["spend"].as_f64(), Some(0.000017));
    assert_eq!(logs[0]["total_tokens"], 14);

    let deleted: serde_json::Value = post("/key/delete", serde_json::json!({"keys": [key]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(deleted["deleted_keys"].as_array().unwrap().len(), 1);
    assert_eq!(
        ask(&mut chat, &key, "cheap").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Admin endpoints need the master key; bad fields are named.
    let denied = http
        .post(format!("{}/key/generate", gw.url()))
        .bearer_auth("sk-nope")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let bad = post("/key/generate", serde_json::json!({"budget_duration": "often"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["param"], "budget_duration");
    let missing = http
        .get(format!("{}/key/info?key=sk-unknown", gw.url()))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn request_limits_bound_size_messages_and_open_streams_per_key() {
    use common::fake_openai::{Behavior, StreamEnd, reply_stream};
    // Every stream sends its chunks and then stays open, as a slow generation does.
    let fake = FakeOpenAi::start(|_| Behavior::Stream {
        data: reply_stream(3, "gpt-4o", "w"),
        delay: std::time::Duration::ZERO,
        end: StreamEnd::Stall,
    })
    .await;
    let gw = gateway_with(
        &fake,
        ", max_request_size_mb: 0.01, max_messages: 3, max_streams_per_key: 2",
        "",
    )
    .await;
    let (key, info) = create_key(&gw, pb::KeySpec::default()).await;
    let (other, _) = create_key(&gw, pb::KeySpec::default()).await;
    let mut chat = gw.chat().await;

    // Size: about 10 KB is the limit, on both surfaces.
    let big = chat_request("cheap", &"x".repeat(20_000));
    let e = chat.complete(with_key(big, &key)).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("too large"), "{e:?}");
    let r = common::http()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "cheap", "messages": [{"role": "user", "content": "x".repeat(20_000)}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(
        r.text().await.unwrap().contains("10485"),
        "the error names the limit in bytes"
    );

    // Messages: four is one too many.
    let mut req = chat_request("cheap", "hi");
    req.messages = (0..4).map(|_| common::user("hi")).collect();
    let e = chat.complete(with_key(req, &key)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("general_settings.max_messages"), "{e:?}");
    assert_eq!(fake.count(), 0, "nothing refused reached the upstream");

    // Open streams: two per key, across the fleet; a third waits for one to close.
    let streams = chat.clone();
    let open = |key: String| {
        let mut chat = streams.clone();
        async move {
            let mut s = chat
                .stream_complete(with_key(chat_request("cheap", "hi"), &key))
                .await?
                .into_inner();
            s.message().await?.expect("a first chunk");
            Ok::<_, tonic::Status>(s)
        }
    };
    let first = open(key.clone()).await.unwrap();
    let _second = open(key.clone()).await.unwrap();
    let third = open(key.clone()).await.unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted);
    assert_eq!(reason(&third), "PARALLEL_LIMIT");
    assert!(
        third.message().contains(&format!("streams:key:{}", info.key_id))
            && third.message().contains("general_settings.max_streams_per_key"),
        "{third:?}"
    );
    // Other keys and this key's unary calls are not affected by its streams.
    let _other_stream = open(other).await.unwrap();
    fake.set(|_| Behavior::Reply("one".into()));
    ask(&mut chat, &key, "cheap").await.unwrap();
    fake.set(|_| Behavior::Stream {
        data: reply_stream(3, "gpt-4o", "w"),
        delay: std::time::Duration::ZERO,
        end: StreamEnd::Stall,
    });
    // A closed stream gives its slot back (the client went away: its lease is released).
    drop(first);
    let mut reopened = None;
    for _ in 0..200 {
        match open(key.clone()).await {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(e) => assert_eq!(reason(&e), "PARALLEL_LIMIT"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        reopened.is_some(),
        "the slot of a closed stream was never released"
    );
}
