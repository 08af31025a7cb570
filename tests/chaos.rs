//! Upstream faults under load: each scenario drives concurrent requests through a group whose
//! first deployment misbehaves in one way (5xx, 429 storms with Retry-After, connection resets,
//! hangs before headers, garbage, errors inside a 200, a slow-loris body, streams that stall or
//! never end) and whose second one is healthy. For each it reports requests failed, p99 latency
//! and spend, and asserts that nothing is lost: every request leaves exactly one spend record, the
//! recorded spend of the answered requests equals the cost their callers were told, and a budget
//! is never exceeded. Run with `--nocapture` to see the table.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    Gateway,
    fake_openai::{Behavior, FakeOpenAi, StreamEnd, error_body, reply_stream},
};
use switchboard::proto::{self as pb, admin_service_client::AdminServiceClient};
use tonic::{Code, Request};

const MASTER: &str = "sk-master-chaos";

/// Accepts connections and resets them at once (RST, no response).
async fn resetting_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    addr
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// What one scenario did.
#[derive(Debug, Default)]
struct Outcome {
    requests: usize,
    ok: usize,
    failed: usize,
    refused: usize,
    p99: Duration,
    /// Sum of the costs the answered callers were told (route.cost_nano_usd).
    told: i64,
    /// Spend records of the key, and the spend they hold (all, and of the answered requests).
    records: usize,
    recorded: i64,
    recorded_ok: i64,
}

struct Scenario {
    name: &'static str,
    /// The first deployment's `api_base`.
    faulty: String,
    stream: bool,
    requests: usize,
    /// The key's budget in USD.
    budget: f64,
}

async fn run(s: Scenario, healthy: &FakeOpenAi) -> Outcome {
    let dep = |base: &str, order: u32| {
        format!(
            "  - {{model_name: g, litellm_params: {{model: openai/gpt-4o, api_base: \"{base}\", api_key: k, order: {order}, timeout: 1, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}}}\n"
        )
    };
    let yaml = format!(
        "model_list:\n{}{}router_settings: {{num_retries: 2, stream_idle_timeout: 1, max_stream_duration: 2}}\ngeneral_settings: {{master_key: {MASTER}}}\n",
        dep(&s.faulty, 1),
        dep(&healthy.base(), 2)
    );
    let gw = Gateway::start(&yaml).await;
    let mut admin = AdminServiceClient::new(gw.channel().await);
    let created = admin
        .create_key(with_key(
            pb::CreateKeyRequest {
                spec: Some(pb::KeySpec {
                    limits: Some(pb::Limits {
                        max_budget: Some(s.budget),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            MASTER,
        ))
        .await
        .unwrap()
        .into_inner();
    let (key, key_id) = (created.key, created.info.unwrap().key_id);
    let chat = gw.chat().await;

    // 16 callers share the requests.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..16 {
        let (mut chat, key, next) = (chat.clone(), key.clone(), next.clone());
        let (n, stream) = (s.requests, s.stream);
        callers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let mut req = common::chat_request("g", "hi");
                req.max_tokens = Some(5);
                let started = Instant::now();
                let result: Result<i64, tonic::Status> = if stream {
                    async {
                        let mut st = chat.stream_complete(with_key(req, &key)).await?.into_inner();
                        let mut cost = 0;
                        while let Some(c) = st.message().await? {
                            if let Some(r) = c.route {
                                cost = r.cost_nano_usd;
                            }
                        }
                        Ok(cost)
                    }
                    .await
                } else {
                    chat.complete(with_key(req, &key))
                        .await
                        .map(|r| r.into_inner().route.unwrap().cost_nano_usd)
                };
                seen.push((started.elapsed(), result));
            }
            seen
        }));
    }
    let mut out = Outcome {
        requests: s.requests,
        ..Outcome::default()
    };
    let mut latencies = Vec::new();
    for c in callers {
        for (took, r) in c.await.unwrap() {
            latencies.push(took);
            match r {
                Ok(cost) => {
                    out.ok += 1;
                    out.told += cost;
                }
                Err(e) if e.code() == Code::ResourceExhausted => out.refused += 1,
                Err(_) => out.failed += 1,
            }
        }
    }
    latencies.sort();
    out.p99 = latencies[(latencies.len() * 99).div_ceil(100) - 1];

    // Settlement runs just after each answer: wait until every admitted request has its record.
    let admitted = out.requests - out.refused;
    let mut logs = Vec::new();
    for _ in 0..500 {
        logs = admin
            .list_spend_logs(with_key(pb::ListSpendLogsRequest { limit: 1000 }, MASTER))
            .await
            .unwrap()
            .into_inner()
            .logs
            .into_iter()
            .filter(|l| l.key_id == key_id)
            .collect();
        if logs.len() >= admitted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.records = logs.len();
    out.recorded = logs.iter().map(|l| l.spend_nano_usd).sum();
    out.recorded_ok = logs
        .iter()
        .filter(|l| l.status == "ok")
        .map(|l| l.spend_nano_usd)
        .sum();
    eprintln!(
        "| {} | {} | {} | {} | {} | {} | {:.6} | {:.6} | {:.6} |",
        s.name,
        out.requests,
        out.ok,
        out.failed,
        out.refused,
        out.p99.as_millis(),
        out.told as f64 / 1e9,
        out.recorded as f64 / 1e9,
        s.budget
    );
    // Nothing lost, nothing doubled: one record per admitted request; what answered callers were
    // told is what was recorded for them; the budget holds.
    assert_eq!(out.records, admitted, "{}: spend records {out:?}", s.name);
    assert_eq!(out.recorded_ok, out.told, "{}: {out:?}", s.name);
    assert!(
        out.recorded <= (s.budget * 1e9) as i64,
        "{}: budget exceeded {out:?}",
        s.name
    );
    out
}

fn always(b: Behavior) -> impl Fn(usize) -> Behavior + Send + Sync + 'static {
    move |_| b.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_upstream_faults_never_reach_the_caller() {
    eprintln!(
        "| scenario | requests | ok | failed | refused | p99 ms | told USD | recorded USD | budget USD |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    let healthy = FakeOpenAi::replying("fine").await;
    let server_error = |status: u16, headers: Vec<(String, String)>| Behavior::Error {
        status,
        body: error_body("boom", "server_error", None),
        headers,
    };
    let thirty_percent = FakeOpenAi::start(move |n| {
        if n % 10 < 3 {
            server_error(500, vec![])
        } else {
            Behavior::Reply("fine".into())
        }
    })
    .await;
    let storm = FakeOpenAi::start(always(Behavior::Error {
        status: 429,
        body: error_body("slow down", "rate_limit_exceeded", Some("rate_limit_exceeded")),
        headers: vec![("retry-after".into(), "30".into())],
    }))
    .await;
    let hang = FakeOpenAi::start(always(Behavior::Hang)).await;
    let garbage = FakeOpenAi::start(always(Behavior::Error {
        status: 200,
        body: "<html>502 Bad Gateway from a proxy</html>".into(),
        headers: vec![],
    }))
    .await;
    let error_in_200 = FakeOpenAi::start(always(Behavior::Error {
        status: 200,
        body: error_body("overloaded", "server_error", None),
        headers: vec![],
    }))
    .await;
    // Headers at once, then a body that trickles: a byte of SSE every 2 s.
    let slow_loris = FakeOpenAi::start(always(Behavior::Stream {
        data: vec!["{}".into(); 100],
        delay: Duration::from_secs(2),
        end: StreamEnd::Stall,
    }))
    .await;
    let reset = format!("http://{}/v1", resetting_upstream().await);
    for (name, faulty) in [
        ("30% 5xx", thirty_percent.base()),
        ("429 storm, Retry-After 30", storm.base()),
        ("connection reset", reset),
        ("hang before headers", hang.base()),
        ("garbage body", garbage.base()),
        ("200 with an error body", error_in_200.base()),
        ("slow-loris body", slow_loris.base()),
    ] {
        let o = run(
            Scenario {
                name,
                faulty,
                stream: false,
                requests: 200,
                budget: 100.0,
            },
            &healthy,
        )
        .await;
        assert_eq!(o.failed + o.refused, 0, "{name}: callers saw failures: {o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_faults_end_in_errors_and_lose_no_spend() {
    eprintln!(
        "| scenario | requests | ok | failed | refused | p99 ms | told USD | recorded USD | budget USD |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    let healthy = FakeOpenAi::replying("fine and well").await;
    // A first chunk, then nothing (the idle timeout ends it); one that never ends (the maximum
    // duration ends it); one cut. A stream is never replayed elsewhere after its first chunk was
    // forwarded, so these end in an error for the callers who got that chunk.
    let stall = FakeOpenAi::start(always(Behavior::Stream {
        data: reply_stream(1, "gpt-4o", "w").into_iter().take(2).collect(),
        delay: Duration::ZERO,
        end: StreamEnd::Stall,
    }))
    .await;
    let endless = FakeOpenAi::start(always(Behavior::Stream {
        data: std::iter::repeat_n(reply_stream(1, "gpt-4o", "w")[1].clone(), 10_000).collect(),
        delay: Duration::from_millis(100),
        end: StreamEnd::Done,
    }))
    .await;
    let cut = FakeOpenAi::start(always(Behavior::Stream {
        data: reply_stream(1, "gpt-4o", "w").into_iter().take(2).collect(),
        delay: Duration::ZERO,
        end: StreamEnd::Cut,
    }))
    .await;
    let before_first = FakeOpenAi::start(always(Behavior::Hang)).await;
    // How many callers may see an error: none (failed over before the first chunk), the first
    // wave (the 16 callers already streaming from the deployment when it first broke, before it
    // cooled down), or all (a stream longer than `max_stream_duration` is ended by the gateway;
    // that is the caller's limit, not the deployment's fault, so it does not cool down).
    for (name, faulty, at_most_failed) in [
        ("stream: hang before the first chunk", before_first.base(), 0),
        ("stream: stalls mid-stream", stall.base(), 16),
        ("stream: connection cut mid-stream", cut.base(), 16),
        ("stream: never ends (max_stream_duration 2 s)", endless.base(), 60),
    ] {
        let o = run(
            Scenario {
                name,
                faulty,
                stream: true,
                requests: 60,
                budget: 100.0,
            },
            &healthy,
        )
        .await;
        assert!(o.failed <= at_most_failed, "{name}: {o:?}");
        assert_eq!(o.ok + o.failed, o.requests, "{name}: {o:?}");
        // A stream that failed midway is still charged (its tokens were produced).
        assert!(o.recorded >= o.recorded_ok, "{name}: {o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_holds_under_upstream_faults() {
    eprintln!(
        "| scenario | requests | ok | failed | refused | p99 ms | told USD | recorded USD | budget USD |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    let healthy = FakeOpenAi::replying("fine").await;
    let flaky = FakeOpenAi::start(|n| {
        if n % 10 < 3 {
            Behavior::Error {
                status: 503,
                body: error_body("unavailable", "server_error", None),
                headers: vec![],
            }
        } else {
            Behavior::Reply("fine".into())
        }
    })
    .await;
    // $0.001 buys about 58 answers of $0.000017; 150 are asked for.
    let o = run(
        Scenario {
            name: "budget $0.001 under 30% 503",
            faulty: flaky.base(),
            stream: false,
            requests: 150,
            budget: 0.001,
        },
        &healthy,
    )
    .await;
    assert!(o.refused > 0, "the budget refused the excess: {o:?}");
    assert_eq!(o.failed, 0, "{o:?}");
    assert!(o.ok >= 50, "most of the budget was usable: {o:?}");
}
