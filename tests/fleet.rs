//! Several gateway replicas sharing deployment state through one real `redis-server`.

mod common;

use std::time::{Duration, Instant};

use common::{
    Gateway, chat_request,
    fake_openai::{Behavior, FakeOpenAi, error_body},
    reason,
    redis::RedisServer,
};
use tonic::Code;

async fn wait_ready(gw: &Gateway) {
    let started = Instant::now();
    loop {
        let r = common::http()
            .get(format!("{}/health/readiness", gw.url()))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica never became ready (redis unreachable?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn fleet(n: usize, yaml: &str) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for _ in 0..n {
        let gw = Gateway::start(yaml).await;
        wait_ready(&gw).await;
        gws.push(gw);
    }
    gws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_on_one_replica_is_honoured_by_all() {
    let redis = RedisServer::start().await;
    let a = FakeOpenAi::start(|_| Behavior::Error {
        status: 429,
        body: error_body("Rate limit reached", "requests", Some("rate_limit_exceeded")),
        headers: vec![],
    })
    .await;
    let b = FakeOpenAi::replying("b").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"{}\"}}, model_info: {{id: a}}}}\n  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"{}\"}}, model_info: {{id: b}}}}\nrouter_settings: {{redis_url: \"{}\", cooldown_time: 30}}\n",
        a.base(),
        b.base(),
        redis.url()
    );
    let gws = fleet(3, &yaml).await;
    for _ in 0..60 {
        gws[0]
            .chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .unwrap();
        if a.count() == 1 {
            break;
        }
    }
    assert_eq!(
        a.count(),
        1,
        "replica 0 hit the rate-limited deployment once and cooled it down"
    );
    let seen = Instant::now();
    // Replicas 1 and 2 learn it by pub/sub; give delivery a moment, then send them traffic.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for gw in &gws[1..] {
        for _ in 0..20 {
            let r = gw
                .chat()
                .await
                .complete(chat_request("g", "hi"))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.route.unwrap().deployment_id, "b");
        }
    }
    assert_eq!(
        a.count(),
        1,
        "no replica called the cooled-down deployment ({:?} after the cooldown)",
        seen.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_holds_exactly_across_three_replicas_under_a_burst() {
    let redis = RedisServer::start().await;
    let up = FakeOpenAi::replying("ok").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"{}\", rpm: 60}}}}\nrouter_settings: {{redis_url: \"{}\", num_retries: 0}}\n",
        up.base(),
        redis.url()
    );
    let gws = fleet(3, &yaml).await;
    // The window is the server's minute: do not start a burst that could straddle two.
    if redis.seconds_into_minute().await > 50 {
        tokio::time::sleep(Duration::from_secs(61 - redis.seconds_into_minute().await)).await;
    }
    let mut calls = Vec::new();
    for gw in &gws {
        let client = gw.chat().await;
        for _ in 0..50 {
            let mut c = client.clone();
            calls.push(tokio::spawn(
                async move { c.complete(chat_request("g", "hi")).await },
            ));
        }
    }
    let (mut ok, mut limited) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert_eq!(reason(&e), "DEPLOYMENT_RATE_LIMIT");
                limited += 1;
            }
        }
    }
    println!(
        "fleet rpm: {ok} admitted, {limited} refused, upstream saw {}",
        up.count()
    );
    assert_eq!(ok, 60, "exactly rpm requests admitted across the fleet");
    assert_eq!(up.count(), 60);
    assert_eq!(limited, 90);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_costs_no_request_and_sharing_resumes_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let up = FakeOpenAi::replying("ok").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"{}\", rpm: 100000}}}}\nrouter_settings: {{redis_url: \"{}\"}}\n",
        up.base(),
        redis.url()
    );
    let gw = fleet(1, &yaml).await.pop().unwrap();
    redis.kill();
    let mut worst = Duration::ZERO;
    for _ in 0..50 {
        let t = Instant::now();
        gw.chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .expect("requests keep flowing without redis");
        worst = worst.max(t.elapsed());
    }
    println!("redis down: 50/50 requests served, slowest {worst:?}");
    assert!(
        worst < Duration::from_millis(500),
        "a dead redis must not stall requests: {worst:?}"
    );
    let r = common::http()
        .get(format!("{}/health/readiness", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "degraded replicas say so");
    redis.restart().await;
    wait_ready(&gw).await;
    gw.chat().await.complete(chat_request("g", "hi")).await.unwrap();
}
