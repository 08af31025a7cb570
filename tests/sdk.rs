//! The OpenAI-compatible HTTP surface driven by the official `openai` SDKs (Python and Node), and the
//! gRPC API by a Python client generated with grpcio-tools: proof that other stacks work unchanged.
//!
//! The SDKs are installed once, pinned, under cargo's test temp dir (`target/tmp`), from PyPI and npm.
//! If that fails the tests fail with the command to run by hand; they never skip.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

use common::{
    Gateway,
    fake_openai::{Behavior, FakeOpenAi, error_body},
};

const PY_PACKAGES: &[&str] = &["openai==3.54.0", "grpcio-tools==1.85.1"];
const NPM_PACKAGE: &str = "openai@6.49.0";
const MASTER_KEY: &str = "sk-master-sdk-test";

fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A virtualenv with the pinned Python packages; created on first use.
fn python() -> &'static Path {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PY.get_or_init(|| {
        let venv = tmp().join("sdk-venv");
        let py = venv.join("bin/python");
        let ready = || {
            Command::new(&py)
                .args(["-c", "import openai, grpc_tools"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ready() {
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .args(PY_PACKAGES))?;
        }
        Ok(py)
    });
    match result {
        Ok(p) => p,
        Err(e) => panic!(
            "the OpenAI Python SDK could not be installed from PyPI; install it by hand with\n  \
             python3 -m venv {dir} && {dir}/bin/pip install {pkgs}\n(needs python3 with venv: \
             apt-get install python3-venv)\n{e}",
            dir = tmp().join("sdk-venv").display(),
            pkgs = PY_PACKAGES.join(" ")
        ),
    }
}

/// A folder with the pinned `openai` npm package; the Node script runs from it so that ESM resolves it.
fn node_dir() -> &'static Path {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = NODE.get_or_init(|| {
        let dir = tmp().join("sdk-node");
        if !dir.join("node_modules/openai/package.json").exists() {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            run(Command::new("npm")
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg(NPM_PACKAGE))?;
        }
        Ok(dir)
    });
    match result {
        Ok(p) => p,
        Err(e) => panic!(
            "the OpenAI Node SDK could not be installed from npm; install it by hand with\n  \
             npm install --prefix {} {NPM_PACKAGE}\n(needs Node.js and npm: apt-get install nodejs npm)\n{e}",
            tmp().join("sdk-node").display()
        ),
    }
}

async fn gateway() -> (Gateway, FakeOpenAi, FakeOpenAi) {
    let upstream = FakeOpenAi::replying("Hello from upstream").await;
    let limited = FakeOpenAi::start(|_| Behavior::Error {
        status: 429,
        body: error_body("Rate limit reached", "requests", Some("rate_limit_exceeded")),
        headers: vec![("retry-after".into(), "2".into())],
    })
    .await;
    let yaml = format!(
        r#"
model_list:
  - model_name: smart
    litellm_params: {{model: openai/gpt-test, api_base: "{up}", api_key: sk-provider-sdk-secret, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
  - model_name: limited
    litellm_params: {{model: openai/gpt-test, api_base: "{lim}"}}
  - model_name: embed
    litellm_params: {{model: openai/text-embedding-test, api_base: "{up}"}}
router_settings: {{num_retries: 0}}
general_settings: {{master_key: {MASTER_KEY}}}
"#,
        up = upstream.base(),
        lim = limited.base()
    );
    (Gateway::start(&yaml).await, upstream, limited)
}

/// Runs a blocking command without stalling the runtime that serves the gateway.
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn"))
        .await
        .unwrap()
}

/// The script exited 0 and printed `marker` (its last line on success).
fn check(out: &Output, what: &str, marker: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains(marker),
        "{what} failed:\n{text}"
    );
    println!("{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk() {
    let py = tokio::task::spawn_blocking(|| python().to_path_buf())
        .await
        .unwrap();
    let (gw, upstream, limited) = gateway().await;
    let mut cmd = Command::new(py);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.py"))
        .arg(format!("{}/v1", gw.url()))
        .arg(MASTER_KEY);
    check(&output(cmd).await, "openai python sdk", "ALL OK");
    assert!(upstream.count() >= 6);
    assert_eq!(limited.count(), 1);
    // The tool result turn reached the provider in OpenAI's shape.
    let turn = upstream
        .requests()
        .into_iter()
        .find(|r| r.body["messages"].as_array().is_some_and(|m| m.len() == 3))
        .unwrap();
    assert_eq!(
        turn.body["messages"][2],
        serde_json::json!({"role": "tool", "content": "sunny", "tool_call_id": "call_fake_1"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_node_sdk_streams() {
    let dir = tokio::task::spawn_blocking(|| node_dir().to_path_buf())
        .await
        .unwrap();
    let script = dir.join("openai_sdk.mjs");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk.mjs"),
        &script,
    )
    .unwrap();
    let (gw, _upstream, _limited) = gateway().await;
    let mut cmd = Command::new("node");
    cmd.arg(&script).arg(format!("{}/v1", gw.url())).arg(MASTER_KEY);
    check(&output(cmd).await, "openai node sdk", "node stream ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_client_generated_by_grpcio_tools() {
    let py = tokio::task::spawn_blocking(|| python().to_path_buf())
        .await
        .unwrap();
    let (gw, _upstream, _limited) = gateway().await;
    let out_dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/grpc_client.py"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/proto"))
        .arg(out_dir.path())
        .arg(gw.addr.to_string())
        .arg(MASTER_KEY);
    check(&output(cmd).await, "python grpc client", "ALL OK");
}
