//! Virtual keys and budgets across a fleet: replicas share keys through a real etcd and budgets
//! through a real redis-server. The overspend test of the issue lives here.

mod common;

use std::time::{Duration, Instant};

use common::{
    Gateway, chat_request,
    etcd::EtcdServer,
    fake_openai::{Behavior, FakeOpenAi},
    process::Process,
    reason,
    redis::{Flavor, RedisServer},
};
use switchboard::proto::{self as pb, admin_service_client::AdminServiceClient};
use tonic::{Code, Request, transport::Channel};

const MASTER: &str = "sk-master-fleet-keys";

/// Group `g` priced at $0.005 per output token and nothing for input: "one two" costs $0.01.
fn config(redis: &RedisServer, etcd: &EtcdServer, fake: &FakeOpenAi, extra_general: &str) -> String {
    format!(
        "model_list:\n  - model_name: g\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k, input_cost_per_token: 0, output_cost_per_token: 0.005}}\n\
         router_settings: {{redis_url: \"{}\", num_retries: 0}}\n\
         general_settings: {{master_key: {MASTER}, etcd_endpoints: \"{}\"{extra_general}}}\n",
        fake.base(),
        redis.url(),
        etcd.endpoint()
    )
}

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

async fn admin_at(url: &str) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(
        Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

async fn fleet(n: usize, yaml: &str) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for _ in 0..n {
        let gw = Gateway::start(yaml).await;
        common::wait_ready(&gw.url()).await;
        gws.push(gw);
    }
    gws
}

async fn call(url: &str, key: &str, max_tokens: u32) -> Result<pb::ChatResponse, tonic::Status> {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut chat = pb::chat_service_client::ChatServiceClient::new(channel);
    let mut req = chat_request("g", "hi");
    req.max_tokens = Some(max_tokens);
    chat.complete(with_key(req, key)).await.map(|r| r.into_inner())
}

/// Polls until `check` holds on every URL, returning how long it took (panics after 5 s).
async fn until_all(
    urls: &[String],
    key: &str,
    check: impl Fn(&Result<pb::ChatResponse, tonic::Status>) -> bool,
) -> Duration {
    let started = Instant::now();
    'outer: loop {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not converged after 5 s"
        );
        for u in urls {
            if !check(&call(u, key, 2).await) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue 'outer;
            }
        }
        return started.elapsed();
    }
}

async fn key_spend(admin: &mut AdminServiceClient<Channel>, key_id: &str) -> pb::Spend {
    admin
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

/// Waits until nothing is reserved any more (every settlement landed or every lease expired).
async fn quiesced(admin: &mut AdminServiceClient<Channel>, key_id: &str, within: Duration) -> pb::Spend {
    let started = Instant::now();
    loop {
        let s = key_spend(admin, key_id).await;
        if s.reserved_nano_usd == 0 {
            return s;
        }
        assert!(
            started.elapsed() < within,
            "still reserved after {within:?}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_shared_and_a_revoked_key_stops_everywhere_within_a_second() {
    let (redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let fake = FakeOpenAi::replying("one two").await;
    let gws = fleet(3, &config(&redis, &etcd, &fake, "")).await;
    let urls: Vec<String> = gws.iter().map(|g| g.url()).collect();
    let created = admin_at(&urls[0])
        .await
        .create_key(with_key(pb::CreateKeyRequest::default(), MASTER))
        .await
        .unwrap()
        .into_inner();
    let key = created.key.clone();
    let key_id = created.info.unwrap().key_id;
    let seen = until_all(&urls, &key, |r| r.is_ok()).await;
    println!("a new key served by all 3 replicas after {} ms", seen.as_millis());

    admin_at(&urls[1])
        .await
        .block_key(with_key(
            pb::BlockKeyRequest {
                key_id: key_id.clone(),
                blocked: true,
            },
            MASTER,
        ))
        .await
        .unwrap();
    let revoked = until_all(
        &urls,
        &key,
        |r| matches!(r, Err(s) if s.code() == Code::Unauthenticated),
    )
    .await;
    println!(
        "a blocked key refused by all 3 replicas after {} ms",
        revoked.as_millis()
    );
    assert!(revoked < Duration::from_secs(1), "{revoked:?}");

    admin_at(&urls[2])
        .await
        .block_key(with_key(
            pb::BlockKeyRequest {
                key_id: key_id.clone(),
                blocked: false,
            },
            MASTER,
        ))
        .await
        .unwrap();
    until_all(&urls, &key, |r| r.is_ok()).await;

    // Regeneration: the old secret stops working everywhere within a second, the new one works.
    let fresh = admin_at(&urls[2])
        .await
        .regenerate_key(with_key(pb::RegenerateKeyRequest { key_id }, MASTER))
        .await
        .unwrap()
        .into_inner();
    let invalidated = until_all(
        &urls,
        &key,
        |r| matches!(r, Err(s) if s.code() == Code::Unauthenticated),
    )
    .await;
    println!(
        "a regenerated key's old secret refused by all 3 replicas after {} ms",
        invalidated.as_millis()
    );
    assert!(invalidated < Duration::from_secs(1), "{invalidated:?}");
    until_all(&urls, &fresh.key, |r| r.is_ok()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_overspend_a_one_dollar_key() {
    three_replicas_never_overspend_a_one_dollar_key_on(RedisServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_overspend_a_one_dollar_key_on_a_redis_cluster() {
    three_replicas_never_overspend_a_one_dollar_key_on(RedisServer::start_cluster(Flavor::Redis, 3).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_never_overspend_a_one_dollar_key_on_valkey() {
    three_replicas_never_overspend_a_one_dollar_key_on(RedisServer::start_flavor(Flavor::Valkey).await).await;
}

async fn three_replicas_never_overspend_a_one_dollar_key_on(redis: RedisServer) {
    let etcd = EtcdServer::start().await;
    // Random upstream latency (0-60 ms), the same answer: 2 output tokens, $0.01.
    let fake = FakeOpenAi::start(|n| {
        Behavior::ReplyAfter(Duration::from_millis((n as u64 * 7919) % 61), "one two".into())
    })
    .await;
    let gws = fleet(3, &config(&redis, &etcd, &fake, "")).await;
    let urls: Vec<String> = gws.iter().map(|g| g.url()).collect();
    let mut admin = admin_at(&urls[0]).await;
    let created = admin
        .create_key(with_key(
            pb::CreateKeyRequest {
                spec: Some(pb::KeySpec {
                    limits: Some(pb::Limits {
                        max_budget: Some(1.0),
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
    until_all(
        &urls,
        &key,
        |r| !matches!(r, Err(s) if s.code() == Code::Unauthenticated),
    )
    .await;
    // until_all spent a few cents; count from what is recorded now.
    let before = quiesced(&mut admin, &key_id, Duration::from_secs(5))
        .await
        .spend_nano_usd;

    // 300 concurrent requests, 100 per replica; max_tokens 4 makes each worst case $0.02.
    let mut calls = Vec::new();
    for i in 0..300 {
        let (url, key) = (urls[i % 3].clone(), key.clone());
        calls.push(tokio::spawn(async move { call(&url, &key, 4).await }));
    }
    let (mut ok, mut refused, mut answered_cost) = (0, 0, 0i64);
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                ok += 1;
                answered_cost += r.route.unwrap().cost_nano_usd;
            }
            Err(e) => {
                assert_eq!(
                    (e.code(), reason(&e).as_str()),
                    (Code::ResourceExhausted, "BUDGET_EXCEEDED"),
                    "{e:?}"
                );
                refused += 1;
            }
        }
    }
    let recorded = quiesced(&mut admin, &key_id, Duration::from_secs(10))
        .await
        .spend_nano_usd;
    println!(
        "overspend test: {ok} admitted, {refused} refused; recorded spend ${:.6} (limit $1.000000), \
         of which this burst ${:.6}; answered requests cost ${:.6}",
        recorded as f64 / 1e9,
        (recorded - before) as f64 / 1e9,
        answered_cost as f64 / 1e9
    );
    assert!(recorded <= 1_000_000_000, "overspent: {recorded} nano-USD");
    assert_eq!(
        recorded - before,
        answered_cost,
        "every answered request's cost is recorded, nothing else"
    );
    // Worst case $0.02 against an actual $0.01: the last admissions may leave up to $0.02 unused.
    assert!(recorded >= 980_000_000, "admitted too little: {recorded}");
    assert!(refused > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_request_leaks_no_reservation() {
    let (redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let fake = FakeOpenAi::start(|_| Behavior::ReplyAfter(Duration::from_secs(3), "one two".into())).await;
    // Reservations outlive a crashed replica by 2 s at most.
    let yaml = config(&redis, &etcd, &fake, ", reservation_ttl: 2");
    let survivor = Gateway::start(&yaml).await;
    common::wait_ready(&survivor.url()).await;
    let mut doomed = Process::serve(&yaml, &[]).await;
    let mut admin = admin_at(&survivor.url()).await;
    let created = admin
        .create_key(with_key(
            pb::CreateKeyRequest {
                spec: Some(pb::KeySpec {
                    limits: Some(pb::Limits {
                        max_budget: Some(1.0),
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
    let mut calls = Vec::new();
    for _ in 0..10 {
        let (url, key) = (doomed.url.clone(), key.clone());
        calls.push(tokio::spawn(async move { call(&url, &key, 4).await }));
    }
    // Wait until the doomed replica's reservations are visible, then kill it mid-request.
    let started = Instant::now();
    loop {
        let s = key_spend(&mut admin, &key_id).await;
        if s.reserved_nano_usd >= 200_000_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "reservations never appeared: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    doomed.sigkill();
    for c in calls {
        assert!(c.await.unwrap().is_err(), "the killed replica answered nothing");
    }
    let freed = Instant::now();
    let s = quiesced(&mut admin, &key_id, Duration::from_secs(10)).await;
    println!(
        "reservations of a SIGKILLed replica freed {} ms after the kill (ttl 2 s)",
        freed.elapsed().as_millis()
    );
    assert_eq!(s.spend_nano_usd, 0, "nothing was answered, so nothing is spent");
}

async fn create(admin: &mut AdminServiceClient<Channel>, limits: pb::Limits) -> (String, String) {
    let r = admin
        .create_key(with_key(
            pb::CreateKeyRequest {
                spec: Some(pb::KeySpec {
                    limits: Some(limits),
                    ..Default::default()
                }),
            },
            MASTER,
        ))
        .await
        .unwrap()
        .into_inner();
    (r.key, r.info.unwrap().key_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rpm_limit_holds_exactly_across_three_replicas() {
    let (redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let fake = FakeOpenAi::replying("one two").await;
    let gws = fleet(3, &config(&redis, &etcd, &fake, "")).await;
    let urls: Vec<String> = gws.iter().map(|g| g.url()).collect();
    let (key, _) = create(
        &mut admin_at(&urls[0]).await,
        pb::Limits {
            rpm_limit: Some(100),
            ..Default::default()
        },
    )
    .await;
    // Every replica knows the key before the burst (the watch takes milliseconds).
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The window is Redis' minute: do not start a burst that could straddle two.
    let secs = redis.seconds_into_minute().await;
    if secs > 50 {
        tokio::time::sleep(Duration::from_secs(61 - secs)).await;
    }
    let mut calls = Vec::new();
    for i in 0..150 {
        let (url, key) = (urls[i % 3].clone(), key.clone());
        calls.push(tokio::spawn(async move { call(&url, &key, 2).await }));
    }
    let (mut ok, mut limited) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(
                    (e.code(), reason(&e).as_str()),
                    (Code::ResourceExhausted, "RATE_LIMITED"),
                    "{e:?}"
                );
                limited += 1;
            }
        }
    }
    println!("key rpm_limit 100 across 3 replicas: {ok} admitted, {limited} refused");
    assert_eq!((ok, limited), (100, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_budgets_fail_closed_and_rate_limits_fail_open() {
    let (mut redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let fake = FakeOpenAi::replying("one two").await;
    let gw = Gateway::start(&config(&redis, &etcd, &fake, "")).await;
    common::wait_ready(&gw.url()).await;
    let mut admin = admin_at(&gw.url()).await;
    let (budgeted, _) = create(
        &mut admin,
        pb::Limits {
            max_budget: Some(1.0),
            ..Default::default()
        },
    )
    .await;
    let (limited, _) = create(
        &mut admin,
        pb::Limits {
            rpm_limit: Some(1000),
            ..Default::default()
        },
    )
    .await;
    call(&gw.url(), &budgeted, 2).await.unwrap();
    redis.kill();
    let refused = call(&gw.url(), &budgeted, 2).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::Unavailable, "LEDGER_UNAVAILABLE")
    );
    call(&gw.url(), &limited, 2).await.expect("rate limits fail open");
    redis.restart().await;
    let started = Instant::now();
    while call(&gw.url(), &budgeted, 2).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "budgets never recovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "budgets admitted again {} ms after redis came back",
        started.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_does_not_reset_a_budget() {
    a_redis_that_lost_its_data_does_not_reset_a_budget_on(RedisServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_does_not_reset_a_budget_on_a_redis_cluster() {
    a_redis_that_lost_its_data_does_not_reset_a_budget_on(RedisServer::start_cluster(Flavor::Redis, 3).await)
        .await;
}

async fn a_redis_that_lost_its_data_does_not_reset_a_budget_on(mut redis: RedisServer) {
    let etcd = EtcdServer::start().await;
    let fake = FakeOpenAi::replying("one two").await;
    let gw = Gateway::start(&config(&redis, &etcd, &fake, ", spend_checkpoint_interval: 0.5")).await;
    common::wait_ready(&gw.url()).await;
    let mut admin = admin_at(&gw.url()).await;
    let (key, key_id) = create(
        &mut admin,
        pb::Limits {
            max_budget: Some(0.05),
            ..Default::default()
        },
    )
    .await;
    // Spend $0.03 of $0.05, and let the leader checkpoint it.
    for _ in 0..3 {
        call(&gw.url(), &key, 2).await.unwrap();
    }
    assert_eq!(
        quiesced(&mut admin, &key_id, Duration::from_secs(5))
            .await
            .spend_nano_usd,
        30_000_000
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Redis restarts empty (no persistence).
    redis.restart().await;
    let started = Instant::now();
    let spent = loop {
        if let Ok(mut a) = tokio::time::timeout(Duration::from_secs(1), admin_at(&gw.url())).await
            && let Ok(Ok(r)) = tokio::time::timeout(
                Duration::from_secs(1),
                a.get_key(with_key(
                    pb::GetKeyRequest {
                        key_id: key_id.clone(),
                    },
                    MASTER,
                )),
            )
            .await
            && let Some(s) = r.into_inner().info.and_then(|i| i.spend)
            && s.spend_nano_usd > 0
        {
            break s.spend_nano_usd;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never restored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "spend restored into an empty redis {} ms after it came back",
        started.elapsed().as_millis()
    );
    assert_eq!(spent, 30_000_000, "the budget did not restart from zero");
    // Two more calls fit ($0.05), the third would not.
    call(&gw.url(), &key, 2).await.unwrap();
    quiesced(&mut admin, &key_id, Duration::from_secs(5)).await;
    call(&gw.url(), &key, 2).await.unwrap();
    quiesced(&mut admin, &key_id, Duration::from_secs(5)).await;
    let refused = call(&gw.url(), &key, 2).await.unwrap_err();
    assert_eq!(reason(&refused), "BUDGET_EXCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_request_id_is_admitted_and_charged_each_time() {
    let (redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let fake = FakeOpenAi::replying("one two").await;
    let gws = fleet(1, &config(&redis, &etcd, &fake, "")).await;
    let url = gws[0].url();
    let created = admin_at(&url)
        .await
        .create_key(with_key(
            pb::CreateKeyRequest {
                spec: Some(pb::KeySpec {
                    limits: Some(pb::Limits {
                        max_budget: Some(1.0),
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
    let key_id = created.info.unwrap().key_id;
    until_all(std::slice::from_ref(&url), &created.key, |r| r.is_ok()).await;
    // Clients often send the same request id again on a retry: each is its own admission, not
    // a repeat of the first one's settlement.
    for _ in 0..2 {
        let r = common::http()
            .post(format!("{url}/v1/chat/completions"))
            .bearer_auth(&created.key)
            .header("x-request-id", "the-same-id")
            .json(&serde_json::json!({"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let mut admin = admin_at(&url).await;
    let spend = key_spend(&mut admin, &key_id).await;
    // The probe call of until_all and the two requests: $0.01 each.
    assert_eq!(spend.spend_nano_usd, 30_000_000, "{spend:?}");
    assert_eq!(spend.reserved_nano_usd, 0, "{spend:?}");
}
