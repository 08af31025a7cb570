//! No secret in anything the gateway emits. The real binary runs a full session (admin calls,
//! answered, retried, failed and streamed requests on both surfaces, wrong and rotated keys) with
//! debug logs and OTLP export to a real collector, against upstreams that echo the provider keys
//! in their error texts; then every log line, every exported span and resource, the `/metrics`
//! page and every admin and error response is searched for every provider key, the master key
//! and every virtual key used.

mod common;

use std::time::Duration;

use common::{
    fake_openai::{Behavior, FakeOpenAi, StreamEnd, error_body, reply_stream},
    otlp::Collector,
    process::Process,
};
use switchboard::proto::{
    self as pb, admin_service_client::AdminServiceClient, chat_service_client::ChatServiceClient,
};
use tonic::{Request, transport::Channel};

const LITERAL_KEY: &str = "sk-provider-literal-SECRET-0001";
const ENV_KEY: &str = "sk-provider-env-SECRET-0002";
const MASTER: &str = "sk-master-SECRET-0003";
const WRONG: &str = "sk-wrong-SECRET-0004";

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// An upstream error whose text quotes the credentials it was sent (as a misconfigured proxy or
/// a chatty provider does).
fn echoing(status: u16, key: &str) -> Behavior {
    Behavior::Error {
        status,
        body: error_body(
            &format!("upstream failed; request carried Authorization: Bearer {key}"),
            "server_error",
            None,
        ),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_the_gateway_emits_holds_a_secret() {
    let (collector, otlp) = Collector::start().await;
    let failing = FakeOpenAi::start(|_| echoing(500, LITERAL_KEY)).await;
    let rejecting = FakeOpenAi::start(|_| echoing(401, ENV_KEY)).await;
    let good = FakeOpenAi::replying("fine").await;
    // A stream whose second event is an error quoting the key.
    let streaming = FakeOpenAi::start(|_| {
        let mut data = reply_stream(2, "gpt-s", "w");
        data.truncate(1);
        data.push(format!(
            r#"{{"error": {{"message": "stream broke; key was {ENV_KEY}", "type": "server_error"}}}}"#
        ));
        Behavior::Stream {
            data,
            delay: Duration::ZERO,
            end: StreamEnd::Done,
        }
    })
    .await;
    let dep = |group: &str, fake: &FakeOpenAi, key: &str, order: u32| {
        format!(
            "  - {{model_name: {group}, litellm_params: {{model: openai/gpt-{group}, api_base: \"{}\", api_key: {key}, order: {order}}}}}\n",
            fake.base()
        )
    };
    let yaml = format!(
        "model_list:\n{}{}{}{}{}general_settings: {{master_key: {MASTER}}}\nrouter_settings: {{num_retries: 1}}\n",
        dep("g", &failing, LITERAL_KEY, 1),
        dep("g", &good, "os.environ/UPSTREAM_KEY", 2),
        dep("f", &failing, LITERAL_KEY, 1),
        dep("a", &rejecting, "os.environ/UPSTREAM_KEY", 1),
        dep("s", &streaming, "os.environ/UPSTREAM_KEY", 1),
    );
    let endpoint = format!("http://{otlp}");
    let mut gw = Process::serve_with_env(
        &yaml,
        &[],
        &[
            ("UPSTREAM_KEY", ENV_KEY),
            ("RUST_LOG", "debug"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ],
    )
    .await;
    let channel = Channel::from_shared(gw.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut chat = ChatServiceClient::new(channel);
    let http = common::http();
    // Everything the gateway answered, except the two responses that hand out a new key.
    let mut answers: Vec<String> = Vec::new();

    // Admin over gRPC.
    let created = admin
        .create_key(with_key(
            pb::CreateKeyRequest {
                spec: Some(pb::KeySpec {
                    key_alias: "leak-test".into(),
                    ..Default::default()
                }),
            },
            MASTER,
        ))
        .await
        .unwrap()
        .into_inner();
    let first_key = created.key.clone();
    let id = created.info.as_ref().unwrap().key_id.clone();
    answers.push(format!("{:?}", created.info));
    answers.push(format!(
        "{:?}",
        admin
            .get_key(with_key(pb::GetKeyRequest { key_id: id.clone() }, MASTER))
            .await
            .unwrap()
    ));
    answers.push(format!(
        "{:?}",
        admin
            .list_keys(with_key(pb::ListKeysRequest::default(), MASTER))
            .await
            .unwrap()
    ));
    let config = admin
        .get_config(with_key(pb::GetConfigRequest {}, MASTER))
        .await
        .unwrap()
        .into_inner();
    assert!(config.yaml.contains("api_base"), "the config dump is the config");
    answers.push(config.yaml);
    answers.push(format!(
        "{:?}",
        admin
            .get_cluster(with_key(pb::GetClusterRequest {}, MASTER))
            .await
            .unwrap()
    ));

    // The data plane: retried, failed (500 and 401 quoting the keys), streamed with an error.
    let answered = chat
        .complete(with_key(common::chat_request("g", "hi"), &first_key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answered.route.as_ref().unwrap().attempts,
        2,
        "the first attempt failed"
    );
    answers.push(format!("{answered:?}"));
    for group in ["f", "a"] {
        let e = chat
            .complete(with_key(common::chat_request(group, "hi"), &first_key))
            .await
            .unwrap_err();
        answers.push(format!("{e:?}"));
    }
    let mut stream = chat
        .stream_complete(with_key(common::chat_request("s", "hi"), &first_key))
        .await
        .unwrap()
        .into_inner();
    let mut ended_with_error = false;
    loop {
        match stream.message().await {
            Ok(Some(c)) => answers.push(format!("{c:?}")),
            Ok(None) => break,
            Err(e) => {
                answers.push(format!("{e:?}"));
                ended_with_error = true;
                break;
            }
        }
    }
    assert!(
        ended_with_error,
        "the upstream's error event ends the stream with an error"
    );
    for key in [WRONG, MASTER] {
        let e = chat
            .complete(with_key(common::chat_request("nope", "hi"), key))
            .await;
        answers.push(format!("{e:?}"));
    }

    // The HTTP surface and its admin routes.
    for (path, key) in [
        ("/v1/models", first_key.as_str()),
        ("/v1/models", WRONG),
        ("/spend/logs", MASTER),
        (&*format!("/key/info?key={first_key}"), MASTER),
    ] {
        let r = http
            .get(format!("{}{path}", gw.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        answers.push(r.text().await.unwrap());
    }
    for (group, key) in [("g", first_key.as_str()), ("f", first_key.as_str()), ("g", WRONG)] {
        let r = http
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(key)
            .json(&serde_json::json!({"model": group, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        answers.push(r.text().await.unwrap());
    }

    // Rotation: the old key is refused, the new one works.
    let rotated = admin
        .regenerate_key(with_key(pb::RegenerateKeyRequest { key_id: id.clone() }, MASTER))
        .await
        .unwrap()
        .into_inner();
    let second_key = rotated.key.clone();
    answers.push(format!("{:?}", rotated.info));
    let refused = chat
        .complete(with_key(common::chat_request("g", "hi"), &first_key))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    answers.push(format!("{refused:?}"));
    chat.complete(with_key(common::chat_request("g", "hi"), &second_key))
        .await
        .unwrap();
    answers.push(format!(
        "{:?}",
        admin
            .list_spend_logs(with_key(pb::ListSpendLogsRequest { limit: 100 }, MASTER))
            .await
            .unwrap()
    ));
    answers.push(format!(
        "{:?}",
        admin
            .get_spend(with_key(pb::GetSpendRequest::default(), MASTER))
            .await
            .unwrap()
    ));
    let metrics = http
        .get(format!("{}/metrics", gw.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("switchboard_requests_total"), "{metrics}");

    // A clean shutdown flushes the span exporter.
    gw.sigterm();
    let (_, clean) = gw.exit(Duration::from_secs(15)).await;
    assert!(clean, "the gateway exits cleanly on SIGTERM");
    let logs = gw.output();
    let spans = collector.raw();

    // What was searched is the real thing: these hold what the session did.
    assert!(logs.lines().count() > 20, "debug logs were captured:\n{logs}");
    assert!(logs.contains("upstream attempt failed"), "{logs}");
    assert!(
        spans.contains("switchboard.v1.ChatService/Complete"),
        "spans were exported"
    );
    assert!(spans.contains("chat gpt-g"), "attempt spans were exported");
    assert!(
        logs.contains("[REDACTED]") && spans.contains("[REDACTED]"),
        "the upstream texts quoting a key were logged and exported, masked:\n{logs}"
    );

    for (what, text) in [
        ("logs", logs.as_str()),
        ("exported spans", spans.as_str()),
        ("/metrics", metrics.as_str()),
        ("responses", &answers.join("\n")),
    ] {
        for secret in [LITERAL_KEY, ENV_KEY, MASTER, WRONG, &first_key, &second_key] {
            if let Some(at) = text.find(secret) {
                let from = text[..at].char_indices().rev().nth(200).map_or(0, |(i, _)| i);
                panic!(
                    "{what} hold a secret ({}...): ...{}",
                    &secret[..12],
                    &text[from..at]
                );
            }
        }
        // Nor a recognisable fragment of the provider keys (a key cut to fit a message).
        for fragment in ["literal-SECRET", "env-SECRET", "master-SECRET"] {
            assert!(!text.contains(fragment), "{what} hold a fragment {fragment}");
        }
    }
}

#[tokio::test]
async fn a_data_plane_only_replica_refuses_the_master_key_and_admin_calls() {
    let good = FakeOpenAi::replying("fine").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/gpt-g, api_base: \"{}\", api_key: k}}}}\ngeneral_settings: {{master_key: {MASTER}}}\n",
        good.base()
    );
    let gw = Process::serve(&yaml, &["--data-plane-only"]).await;
    let channel = Channel::from_shared(gw.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = AdminServiceClient::new(channel.clone())
        .list_keys(with_key(pb::ListKeysRequest::default(), MASTER))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert_eq!(common::reason(&refused), "MASTER_KEY_NOT_ACCEPTED");
    let chat = ChatServiceClient::new(channel)
        .complete(with_key(common::chat_request("g", "hi"), MASTER))
        .await
        .unwrap_err();
    assert_eq!(chat.code(), tonic::Code::PermissionDenied);
    let r = common::http()
        .get(format!("{}/team/list", gw.url))
        .bearer_auth(MASTER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(good.count(), 0, "nothing reached the upstream");
}
