//! TLS on the serving port (the real binary, `--tls-cert`/`--tls-key`, and `--tls-client-ca` for
//! mutual TLS): gRPC and HTTP over TLS on one port, plaintext refused, a client without a
//! certificate refused under mTLS, and a client that connects and never handshakes holding up
//! nobody.

mod common;

use std::{path::Path, time::Duration};

use common::{chat_request, fake_openai::FakeOpenAi, process::Process};
use switchboard::proto::chat_service_client::ChatServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn pem(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn https(dir: &Path, client_cert: bool) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem(dir, "ca.pem")).unwrap()]);
    if client_cert {
        let mut both = pem(dir, "client.pem");
        both.extend(pem(dir, "client-key.pem"));
        b = b.identity(reqwest::Identity::from_pem(&both).unwrap());
    }
    b.build().unwrap()
}

async fn grpc(
    url: &str,
    dir: &Path,
    client_cert: bool,
) -> Result<ChatServiceClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem(dir, "ca.pem")))
        .domain_name("127.0.0.1");
    if client_cert {
        tls = tls.identity(Identity::from_pem(
            pem(dir, "client.pem"),
            pem(dir, "client-key.pem"),
        ));
    }
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await?;
    Ok(ChatServiceClient::new(channel))
}

/// `switchboard chat` against `url`, trusting the test CA (and presenting the client certificate).
async fn cli(url: &str, dir: &Path, client_cert: bool) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["chat", "--url", url, "--model", "m", "hi"])
        .env("SWITCHBOARD_CA_CERT", dir.join("ca.pem"));
    if client_cert {
        cmd.env("SWITCHBOARD_CLIENT_CERT", dir.join("client.pem"))
            .env("SWITCHBOARD_CLIENT_KEY", dir.join("client-key.pem"));
    }
    // Off the runtime's threads: the fake upstream this test serves runs on them.
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// Waits (up to 30 s: a bound for a loaded machine) until the gateway answers its readiness probe
/// over TLS.
async fn ready(client: &reqwest::Client, url: &str) {
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{url}/health/readiness")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the TLS gateway at {url} never became ready");
}

fn gateway(fake: &FakeOpenAi, dir: &Path, mtls: bool) -> (Process, String) {
    let file = |n: &str| dir.join(n).display().to_string();
    let (cert, key, ca) = (file("server.pem"), file("server-key.pem"), file("ca.pem"));
    let mut args = vec!["--tls-cert", &cert, "--tls-key", &key];
    if mtls {
        args.extend(["--tls-client-ca", &ca]);
    }
    let yaml = format!(
        "model_list:\n  - {{model_name: m, litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k}}}}\n",
        fake.base()
    );
    let p = Process::start(&yaml, &args, &[]);
    let url = p.url.replace("http://", "https://");
    (p, url)
}

#[tokio::test]
async fn grpc_and_http_are_served_over_tls_and_plaintext_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    common::etcd::make_certs(certs.path());
    let fake = FakeOpenAi::replying("secure").await;
    let (p, url) = gateway(&fake, certs.path(), false);
    let client = https(certs.path(), false);
    ready(&client, &url).await;

    // A client that opens a connection and never speaks TLS delays no one.
    let _silent = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .unwrap();

    // (A hang bound below the 10 s handshake deadline: were handshakes done one at a time on the
    // accept loop, this request would wait behind the silent one.)
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .timeout(Duration::from_secs(5))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "HTTP/2 by ALPN");
    assert!(r.text().await.unwrap().contains("secure"));
    let h1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem(certs.path(), "ca.pem")).unwrap()])
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(format!("{url}/v1/models")).send().await.unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );

    let mut chat = grpc(&url, certs.path(), false).await.unwrap();
    let answer = chat.complete(chat_request("m", "hi")).await.unwrap().into_inner();
    assert_eq!(answer.choices[0].message.as_ref().unwrap().content, "secure");

    // The CLI speaks TLS too, trusting the CA named in SWITCHBOARD_CA_CERT.
    let out = cli(&url, certs.path(), false).await;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("secure"),
        "{out:?}"
    );

    // Plaintext on the TLS port gets nothing.
    let plain = common::http()
        .get(format!("{}/health/readiness", p.url))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.unwrap().status() != 200,
        "plaintext was served"
    );
    assert!(p.output().contains("switchboard listening"), "{}", p.output());
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let certs = tempfile::tempdir().unwrap();
    common::etcd::make_certs(certs.path());
    let fake = FakeOpenAi::replying("mutual").await;
    let (_p, url) = gateway(&fake, certs.path(), true);
    let with_cert = https(certs.path(), true);
    ready(&with_cert, &url).await;

    let without = https(certs.path(), false)
        .get(format!("{url}/v1/models"))
        .send()
        .await;
    assert!(
        without.is_err(),
        "a client without a certificate was served: {without:?}"
    );
    let refused = match grpc(&url, certs.path(), false).await {
        Err(_) => true,
        Ok(mut c) => c.complete(chat_request("m", "hi")).await.is_err(),
    };
    assert!(refused, "a gRPC client without a certificate was served");

    assert!(
        !cli(&url, certs.path(), false).await.status.success(),
        "the CLI without a certificate"
    );
    let out = cli(&url, certs.path(), true).await;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("mutual"),
        "{out:?}"
    );

    let r = with_cert
        .post(format!("{url}/v1/chat/completions"))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut chat = grpc(&url, certs.path(), true).await.unwrap();
    let answer = chat.complete(chat_request("m", "hi")).await.unwrap().into_inner();
    assert_eq!(answer.choices[0].message.as_ref().unwrap().content, "mutual");
}

#[test]
fn a_bad_certificate_or_key_fails_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    common::etcd::make_certs(dir.path());
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "model_list:\n  - {model_name: m, litellm_params: {model: openai/gpt-4o, api_key: k}}\n",
    )
    .unwrap();
    let file = |n: &str| dir.path().join(n).display().to_string();
    for (cert, key, named) in [
        (file("server.pem"), file("missing.pem"), "missing.pem"),
        (file("ca-key.pem"), file("server-key.pem"), "ca-key.pem"),
        (
            file("server.pem"),
            file("client-key.pem"),
            "do not make a usable pair",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .args(["--tls-cert", &cert, "--tls-key", &key])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {cert} / {key}");
        assert!(err.contains(named), "{named}: {err}");
    }
}

#[tokio::test]
async fn replicas_share_state_through_a_redis_that_only_speaks_tls() {
    let certs = tempfile::tempdir().unwrap();
    common::etcd::make_certs(certs.path());
    let redis = common::redis::RedisServer::start_tls(certs.path()).await;
    let fake = FakeOpenAi::replying("shared").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: m, litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k}}}}\nrouter_settings: {{redis_url: \"{}\"}}\n",
        fake.base(),
        redis.url()
    );
    assert!(redis.url().starts_with("rediss://"));
    // The test CA is trusted the way an operator's would be: through the system roots' override.
    let ca = certs.path().join("ca.pem").display().to_string();
    let p = Process::serve_with_env(&yaml, &[], &[("SSL_CERT_FILE", &ca)]).await;
    let r = common::http()
        .post(format!("{}/v1/chat/completions", p.url))
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The replica's heartbeat and the deployment's state are in that Redis.
    let out = std::process::Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &ca,
            "-p",
            &redis.port.to_string(),
            "--scan",
            "--pattern",
            "sb:v1:*",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&out.stdout);
    assert!(
        keys.lines().count() > 0,
        "no switchboard key in the TLS Redis: {keys}"
    );
}
