//! A collector that never answers: requests are unaffected, and the spans that do not fit the
//! bounded queue are dropped and counted in `switchboard_spans_dropped_total`. (Its own test
//! binary: the tracing subscriber is process-wide.)

mod common;

use switchboard::telemetry::{self, LogFormat, TraceSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_collector_drops_and_counts_spans_without_slowing_requests() {
    // Accepts connections, never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let _held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for c in listener.incoming().flatten() {
            open.push(c);
        }
    });
    let _tel = telemetry::init(
        LogFormat::Text,
        &TraceSettings {
            endpoint: Some(format!("http://{addr}")),
            http: false,
            max_queue: 4,
            service_name: "switchboard-drops-test".into(),
            replica_id: "r1".into(),
        },
    )
    .unwrap();
    let gw = common::Gateway::start(
        "model_list:\n  - {model_name: m, litellm_params: {model: gpt-4o, mock_response: hi}}\n",
    )
    .await;
    let mut chat = gw.chat().await;
    for _ in 0..30 {
        chat.complete(common::chat_request("m", "x"))
            .await
            .expect("requests never wait for the collector");
    }
    let metrics = common::http()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_spans_dropped_total "))
        .unwrap_or_else(|| panic!("no drop counter:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    // 30 calls make at least 60 spans (server + attempt); at most 4 wait, a batch may be in flight.
    assert!(dropped >= 30.0, "dropped {dropped}");
}
