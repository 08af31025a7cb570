//! The `switchboard` binary: check-config output and errors, and the `chat` client against a gateway.

mod common;

use std::process::Command;

fn switchboard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
}

#[test]
fn check_config_prints_groups_and_never_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "model_list:\n  - {model_name: smart, litellm_params: {model: openai/gpt-4o, api_key: os.environ/TEST_PROVIDER_KEY}}\n  - {model_name: smart, litellm_params: {model: openai/llama3, api_base: 'http://vllm:8000/v1', weight: 3}}\nrouter_settings: {enable_pre_call_checks: true}\n",
    )
    .unwrap();
    let out = switchboard()
        .arg("check-config")
        .arg(&path)
        .env("TEST_PROVIDER_KEY", "sk-cli-provider-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("smart:"), "{stdout}");
    assert!(
        stdout.contains("smart/openai/llama3") && stdout.contains("target=http://vllm:8000/v1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("not implemented yet (ignored): router_settings.enable_pre_call_checks"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("sk-cli-provider-secret"),
        "secret printed: {stdout}"
    );
}

#[test]
fn check_config_rejects_a_bad_config_with_its_yaml_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "model_list:\n  - {model_name: a, litellm_params: {model: opnai/gpt-4o}}\n",
    )
    .unwrap();
    let out = switchboard().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("model_list[0].litellm_params.model: unknown provider \"opnai\""),
        "{stderr}"
    );
}

#[test]
fn the_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/config.example.yaml");
    let out = switchboard().arg("check-config").arg(path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for group in ["smart:", "cheap:", "embed-default:"] {
        assert!(stdout.contains(group), "{group} missing: {stdout}");
    }
    assert!(
        !stdout.contains("not implemented yet"),
        "the example uses only implemented keys: {stdout}"
    );
}

#[tokio::test]
async fn chat_command_streams_an_answer_from_a_gateway() {
    let gw = common::Gateway::start(
        "model_list:\n  - {model_name: smart, litellm_params: {model: gpt-4o, mock_response: 'streamed to the terminal'}}\n",
    )
    .await;
    let url = gw.url();
    let out = tokio::task::spawn_blocking(move || {
        switchboard()
            .args(["chat", "--model", "smart", "--url", &url, "say something"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(stdout.trim(), "streamed to the terminal");
    assert!(stderr.contains("smart via smart/gpt-4o"), "{stderr}");

    let url = gw.url();
    let out = tokio::task::spawn_blocking(move || {
        switchboard()
            .args(["chat", "--model", "nope", "--url", &url, "x"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
}

#[tokio::test]
async fn admin_commands_create_list_and_revoke_keys() {
    let gw = common::Gateway::start(
        "model_list:\n  - {model_name: smart, litellm_params: {model: gpt-4o, mock_response: 'hi'}}\ngeneral_settings: {master_key: sk-cli-master}\n",
    )
    .await;
    let url = gw.url();
    let run = move |args: Vec<String>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                switchboard()
                    .args(&args[..1])
                    .args(["--url", &url, "--key", "sk-cli-master"])
                    .args(&args[1..])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let out = run(args(
        "keys create --alias ci --models smart --max-budget 2.5 --budget-duration 30d",
    ))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key:    "))
        .unwrap()
        .to_string();
    let key_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key_id: "))
        .unwrap()
        .to_string();
    assert!(key.starts_with("sk-"));

    let listed = run(args("keys list")).await;
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains(&key_id) && listed.contains("ci"), "{listed}");
    assert!(!listed.contains(&key[3..]), "the secret is never listed");

    let blocked = run(vec!["keys".into(), "block".into(), key_id.clone()]).await;
    assert!(blocked.status.success());
    let mut chat = gw.chat().await;
    let mut req = tonic::Request::new(common::chat_request("smart", "x"));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    assert_eq!(
        chat.complete(req).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    let bad = run(args("keys create --budget-duration 1y")).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("budget_duration"));
    let spend = run(args("spend --group-by model")).await;
    assert!(
        spend.status.success(),
        "{}",
        String::from_utf8_lossy(&spend.stderr)
    );
}

/// The `fake-upstream` binary (benchmarks, the compose stack) speaks OpenAI's format well enough for
/// the gateway: JSON, SSE with the requested number of chunks, and injected errors.
#[tokio::test]
async fn fake_upstream_binary_serves_the_gateway() {
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _up = Kill(
        Command::new(env!("CARGO_BIN_EXE_fake-upstream"))
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--chunks",
                "5",
                "--text",
                "one two three",
            ])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if common::http().get(format!("{base}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let gw = common::Gateway::start(&format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/gpt-4o, api_base: \"{base}/v1\", api_key: k}}}}\n"
    ))
    .await;
    let mut chat = gw.chat().await;
    let r = chat
        .complete(common::chat_request("g", "hi"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.choices[0].message.as_ref().unwrap().content, "one two three");
    let stream = chat
        .stream_complete(common::chat_request("g", "hi"))
        .await
        .unwrap()
        .into_inner();
    let (text, route) = common::read_stream(stream).await;
    assert_eq!(text, "one two three one two");
    assert!(route.is_some(), "the usage chunk carried the route");
}

/// `switchboard-load` drives each surface, closed and open loop, and reads the server's CPU time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_tool_reports_latency_throughput_and_server_cpu() {
    let gw = common::Gateway::start(
        "model_list:\n  - {model_name: m, litellm_params: {model: gpt-4o, mock_response: 'fast answer'}}\n",
    )
    .await;
    let pid = std::process::id().to_string();
    for extra in [
        vec!["--mode", "http"],
        vec!["--mode", "grpc"],
        vec!["--mode", "grpc-stream"],
        vec!["--mode", "grpc", "--rate", "200"],
    ] {
        let (url, pid, extra2) = (gw.url(), pid.clone(), extra.clone());
        let out = tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_switchboard-load"))
                .args(["--target", &url, "--model", "m", "--connections", "4"])
                .args(["--duration", "0.5", "--warmup", "0.2", "--pid", &pid])
                .args(&extra2)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{extra:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ok: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("requests "))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{extra:?}: no request count in {text}"));
        assert!(ok > 10, "{extra:?}: {text}");
        assert!(text.contains(" 0 errors"), "{extra:?}: {text}");
        assert!(text.contains("latency us: p50 "), "{text}");
        assert!(text.contains("server cpu_us_per_request "), "{text}");
    }
}

/// A warning logged inside a request (a failed upstream attempt) carries the request's id and the
/// caller's trace id, in the JSON log format, with no key in the line.
#[tokio::test]
async fn log_lines_inside_a_request_carry_its_request_and_trace_ids() {
    use common::fake_openai::{Behavior, FakeOpenAi, error_body};
    let bad = FakeOpenAi::start(|_| Behavior::Error {
        status: 500,
        body: error_body("boom", "server_error", None),
        headers: vec![],
    })
    .await;
    let good = FakeOpenAi::replying("fine").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/a, api_base: \"{}\", api_key: sk-log-provider-secret, order: 1}}}}\n  - {{model_name: g, litellm_params: {{model: openai/b, api_base: \"{}\", api_key: sk-log-provider-secret, order: 2}}}}\n",
            bad.base(),
            good.base()
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("log.jsonl");
    let mut child = switchboard()
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    common::wait_ready(&url).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = common::http()
        .post(format!("{url}/v1/chat/completions"))
        .header("x-request-id", "req-logs-1")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"model": "g", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut line = None;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&log).unwrap();
        line = text
            .lines()
            .find(|l| l.contains("upstream attempt failed"))
            .map(str::to_string);
        if line.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("the failed attempt is logged");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["request_id"], "req-logs-1", "{line}");
    assert_eq!(v["trace_id"], trace, "{line}");
    assert_eq!(v["level"], "WARN");
    assert!(!line.contains("sk-log-provider-secret"), "{line}");
    let all = std::fs::read_to_string(&log).unwrap();
    assert!(
        !all.contains("sk-log-provider-secret"),
        "no log line holds the provider key"
    );
    let startup = all.lines().next().unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(startup)
            .unwrap()
            .get("request_id")
            .is_none(),
        "lines outside a request have no request id: {startup}"
    );
}
