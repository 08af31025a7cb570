//! Fleet faults under load: two replicas sharing a real redis-server and etcd, each reaching them
//! through a TCP proxy the test controls; callers spread requests over both replicas and, as a load
//! balancer does, retry a request once on the other replica when one answers UNAVAILABLE. While
//! the load runs, replica A's link to Redis is made slow, very slow, or partitioned from Redis and
//! etcd, or Redis is killed and restarted; then the fault heals. For each: requests failed, p99,
//! and nothing lost (every admitted request leaves one spend record once the fleet converges, and
//! the recorded spend of answered requests equals what their callers were told). Run with
//! `--nocapture` for the table.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Gateway, etcd::EtcdServer, fake_openai::FakeOpenAi, proxy::Proxy, redis::RedisServer};
use switchboard::proto::{
    self as pb, admin_service_client::AdminServiceClient, chat_service_client::ChatServiceClient,
};
use tonic::{Code, Request, transport::Channel};

const MASTER: &str = "sk-master-chaos-fleet";

fn with_key<T>(msg: T, key: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

enum Fault {
    /// Replica A's link to Redis adds this much per chunk.
    SlowRedis(Duration),
    /// Replica A can reach neither Redis nor etcd.
    Partition,
    /// Redis dies (SIGKILL) and comes back empty.
    RedisKilled,
}

struct Fleet {
    redis: RedisServer,
    _etcd: EtcdServer,
    /// A's links to Redis and etcd.
    a_redis: Proxy,
    a_etcd: Proxy,
    replicas: [Gateway; 2],
}

async fn fleet(fake: &FakeOpenAi) -> Fleet {
    let (redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let redis_addr: SocketAddr = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let etcd_addr: SocketAddr = etcd.endpoint().parse().unwrap();
    let (a_redis, a_etcd) = (Proxy::start(redis_addr).await, Proxy::start(etcd_addr).await);
    let yaml = |redis: SocketAddr, etcd: SocketAddr| {
        format!(
            "model_list:\n  - model_name: g\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}\n\
             router_settings: {{redis_url: \"redis://{redis}\", num_retries: 1}}\n\
             general_settings: {{master_key: {MASTER}, etcd_endpoints: \"{etcd}\"}}\n",
            fake.base()
        )
    };
    let a = Gateway::start(&yaml(a_redis.addr, a_etcd.addr)).await;
    let b = Gateway::start(&yaml(redis_addr, etcd_addr)).await;
    for g in [&a, &b] {
        common::wait_ready(&g.url()).await;
    }
    Fleet {
        redis,
        _etcd: etcd,
        a_redis,
        a_etcd,
        replicas: [a, b],
    }
}

#[derive(Debug, Default)]
struct Tally {
    requests: usize,
    ok: usize,
    failed: usize,
    retried: usize,
    told: i64,
    latencies: Vec<Duration>,
}

/// Eight callers round-robin over the replicas until `stop`; a request answered UNAVAILABLE (or,
/// cut mid-call by a dying replica, UNKNOWN) is retried once on the other replica, as a load
/// balancer does.
fn spawn_load(
    clients: &[ChatServiceClient<Channel>],
    key: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..8)
        .map(|i| {
            let (clients, key, stop) = (clients.to_vec(), key.to_string(), stop.clone());
            tokio::spawn(async move {
                let mut t = Tally::default();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    t.requests += 1;
                    let mut result = Err(tonic::Status::unavailable("not tried"));
                    for attempt in 0..2 {
                        let mut c = clients[(n + attempt) % clients.len()].clone();
                        let mut req = common::chat_request("g", "hi");
                        req.max_tokens = Some(5);
                        result =
                            tokio::time::timeout(Duration::from_secs(10), c.complete(with_key(req, &key)))
                                .await
                                .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("10 s")));
                        match &result {
                            Err(e)
                                if matches!(e.code(), Code::Unavailable | Code::Unknown) && attempt == 0 =>
                            {
                                t.retried += 1
                            }
                            _ => break,
                        }
                    }
                    match result {
                        Ok(r) => {
                            t.ok += 1;
                            t.told += r.into_inner().route.unwrap().cost_nano_usd;
                        }
                        Err(_) => t.failed += 1,
                    }
                    t.latencies.push(started.elapsed());
                    n += 1;
                }
                t
            })
        })
        .collect()
}

/// Stops the load and sums it; returns the tally and its p99.
async fn collect(stop: &AtomicBool, callers: Vec<tokio::task::JoinHandle<Tally>>) -> (Tally, Duration) {
    stop.store(true, Ordering::Relaxed);
    let mut t = Tally::default();
    for c in callers {
        let c = c.await.unwrap();
        t.requests += c.requests;
        t.ok += c.ok;
        t.failed += c.failed;
        t.retried += c.retried;
        t.told += c.told;
        t.latencies.extend(c.latencies);
    }
    t.latencies.sort();
    let p99 = t.latencies[(t.latencies.len() * 99).div_ceil(100) - 1];
    (t, p99)
}

/// One call per replica until each answers (the key reached it through etcd); their cost.
async fn warm_up(clients: &[ChatServiceClient<Channel>], key: &str) -> i64 {
    let mut warm = 0;
    for c in clients {
        let mut c = c.clone();
        for _ in 0..500 {
            if let Ok(r) = c.complete(with_key(common::chat_request("g", "warm"), key)).await {
                warm += r.into_inner().route.unwrap().cost_nano_usd;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    warm
}

/// Waits until the key's spend covers `expected` with nothing reserved (or 20 s pass); returns
/// (recorded, reserved, how long it took).
async fn settled(
    admin: &mut AdminServiceClient<Channel>,
    key_id: &str,
    expected: i64,
) -> (i64, i64, Duration) {
    let (mut recorded, mut reserved) = (0, -1);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if let Ok(r) = admin
            .get_key(with_key(
                pb::GetKeyRequest {
                    key_id: key_id.to_string(),
                },
                MASTER,
            ))
            .await
            && let Some(spend) = r.into_inner().info.and_then(|i| i.spend)
        {
            (recorded, reserved) = (spend.spend_nano_usd, spend.reserved_nano_usd);
            if recorded >= expected && reserved == 0 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (recorded, reserved, started.elapsed())
}

/// A new virtual key with these limits: (secret, id).
async fn key_with(admin: &mut AdminServiceClient<Channel>, limits: pb::Limits) -> (String, String) {
    let created = admin
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
    (created.key, created.info.unwrap().key_id)
}

/// A key with a $100 budget: every request goes through the ledger, which never binds.
async fn budget_key(admin: &mut AdminServiceClient<Channel>) -> (String, String) {
    key_with(
        admin,
        pb::Limits {
            max_budget: Some(100.0),
            ..Default::default()
        },
    )
    .await
}

async fn scenario(name: &str, fault: Fault) {
    let fake = FakeOpenAi::replying("fine").await;
    let mut f = fleet(&fake).await;
    let urls: Vec<String> = f.replicas.iter().map(Gateway::url).collect();
    let mut admin = AdminServiceClient::new(f.replicas[1].channel().await);
    // Budgets fail closed without Redis; rate limits fail open. With Redis killed the key has a
    // rate limit only, so the fleet keeps answering.
    let (key, key_id) = if matches!(fault, Fault::RedisKilled) {
        key_with(
            &mut admin,
            pb::Limits {
                rpm_limit: Some(1_000_000),
                ..Default::default()
            },
        )
        .await
    } else {
        budget_key(&mut admin).await
    };
    // Both replicas know the key (etcd watch) before the load starts.
    let mut clients = Vec::new();
    for u in &urls {
        clients.push(ChatServiceClient::new(
            Channel::from_shared(u.clone()).unwrap().connect().await.unwrap(),
        ));
    }
    let warm = warm_up(&clients, &key).await;
    let stop = Arc::new(AtomicBool::new(false));
    let callers = spawn_load(&clients, &key, &stop);

    // 1.5 s healthy, 3 s of fault, 2 s after it heals.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match &fault {
        Fault::SlowRedis(d) => f.a_redis.set_delay(*d),
        Fault::Partition => {
            f.a_redis.partition();
            f.a_etcd.partition();
        }
        Fault::RedisKilled => f.redis.kill(),
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    match &fault {
        Fault::SlowRedis(_) => f.a_redis.set_delay(Duration::ZERO),
        Fault::Partition => {
            f.a_redis.heal();
            f.a_etcd.heal();
        }
        Fault::RedisKilled => f.redis.restart().await,
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t, p99) = collect(&stop, callers).await;

    // Convergence: spend settled during the fault lands once it heals. The key's budget counter
    // is the ledger's own record of spend; with no reservation left, every request has settled.
    let (recorded, reserved, took) = if matches!(fault, Fault::RedisKilled) {
        (0, 0, Duration::ZERO)
    } else {
        settled(&mut admin, &key_id, t.told + warm).await
    };
    eprintln!(
        "| {name} | {} | {} | {} | {} | {} | {:.6} | {} | {} ms |",
        t.requests,
        t.ok,
        t.failed,
        t.retried,
        p99.as_millis(),
        t.told as f64 / 1e9,
        if matches!(fault, Fault::RedisKilled) {
            "n/a (no budget)".to_string()
        } else {
            format!("{:.6}", (recorded - warm) as f64 / 1e9)
        },
        took.as_millis()
    );
    assert!(t.requests > 50, "{name}: the load ran: {t:?}");
    assert_eq!(t.failed, 0, "{name}: callers saw failures after one retry: {t:?}");
    if !matches!(fault, Fault::RedisKilled) {
        assert_eq!(reserved, 0, "{name}: reservations left behind");
        assert_eq!(recorded - warm, t.told, "{name}: spend lost or doubled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_faults_lose_no_request_and_no_spend() {
    eprintln!(
        "| fault | requests | ok | failed | retried on the other replica | p99 ms | told USD | recorded USD | settled after the load stopped |"
    );
    eprintln!("|---|---|---|---|---|---|---|---|---|");
    scenario(
        "Redis slow for replica A (+50 ms per packet)",
        Fault::SlowRedis(Duration::from_millis(50)),
    )
    .await;
    scenario(
        "Redis very slow for replica A (+2 s per packet)",
        Fault::SlowRedis(Duration::from_secs(2)),
    )
    .await;
    scenario("replica A partitioned from Redis and etcd", Fault::Partition).await;
    scenario("Redis killed and restarted (data lost)", Fault::RedisKilled).await;
}

/// kill -9 of a replica under load (real processes): callers retry on the other replica as a load
/// balancer would; the killed replica's reservations expire with their lease (3 s here), and no
/// answered request goes unrecorded. A request whose answer died with the replica may have been
/// settled there before the caller retried it elsewhere (at most one per caller in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_no_request_and_no_spend() {
    use common::process::Process;
    let (redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let fake = FakeOpenAi::start(|_| {
        common::fake_openai::Behavior::ReplyAfter(Duration::from_millis(20), "fine".into())
    })
    .await;
    let yaml = format!(
        "model_list:\n  - model_name: g\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}\n\
         router_settings: {{redis_url: \"{}\", num_retries: 1}}\n\
         general_settings: {{master_key: {MASTER}, etcd_endpoints: \"{}\", reservation_ttl: 3}}\n",
        fake.base(),
        redis.url(),
        etcd.endpoint()
    );
    let mut a = Process::serve(&yaml, &[]).await;
    let b = Process::serve(&yaml, &[]).await;
    let lazy = |u: &str| Channel::from_shared(u.to_string()).unwrap().connect_lazy();
    let mut admin = AdminServiceClient::new(lazy(&b.url));
    let (key, key_id) = budget_key(&mut admin).await;
    let clients = [
        ChatServiceClient::new(lazy(&a.url)),
        ChatServiceClient::new(lazy(&b.url)),
    ];
    let warm = warm_up(&clients, &key).await;
    let stop = Arc::new(AtomicBool::new(false));
    let callers = spawn_load(&clients, &key, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a.sigkill();
    tokio::time::sleep(Duration::from_secs(3)).await;
    a.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t, p99) = collect(&stop, callers).await;
    // The dead replica's reservations expire with their 3 s lease; every settlement lands.
    let (recorded, reserved, took) = settled(&mut admin, &key_id, t.told + warm).await;
    let extra = recorded - warm - t.told;
    eprintln!(
        "| replica A killed (SIGKILL) under load, restarted 3 s later | {} | {} | {} | {} | {} | {:.6} | {:.6} (+{} settled by the dead replica, answer lost) | {} ms |",
        t.requests,
        t.ok,
        t.failed,
        t.retried,
        p99.as_millis(),
        t.told as f64 / 1e9,
        (recorded - warm) as f64 / 1e9,
        extra / 13_000,
        took.as_millis()
    );
    assert!(t.requests > 50, "the load ran: {t:?}");
    assert_eq!(t.failed, 0, "callers saw failures after one retry: {t:?}");
    assert_eq!(reserved, 0, "the dead replica's reservations expired");
    assert!(
        extra >= 0,
        "spend lost: recorded {recorded}, told {} + warm {warm}",
        t.told
    );
    assert!(
        extra <= 8 * 13_000,
        "more double charges than callers in flight: {extra}"
    );
}

/// The etcd member that leads the raft group dies under load: the data plane does not notice
/// (keys and config are served from memory), and admin writes work again once the two remaining
/// members have elected a leader, with the new key reaching both replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_leader_member_dying_stops_nothing() {
    let (redis, mut etcd) = (
        RedisServer::start().await,
        common::etcd::EtcdCluster::start().await,
    );
    let fake = FakeOpenAi::replying("fine").await;
    let yaml = format!(
        "model_list:\n  - model_name: g\n    litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}\n\
         router_settings: {{redis_url: \"{}\", num_retries: 1}}\n\
         general_settings: {{master_key: {MASTER}, etcd_endpoints: \"{}\"}}\n",
        fake.base(),
        redis.url(),
        etcd.endpoints()
    );
    let replicas = [Gateway::start(&yaml).await, Gateway::start(&yaml).await];
    for g in &replicas {
        common::wait_ready(&g.url()).await;
    }
    let mut admin = AdminServiceClient::new(replicas[1].channel().await);
    let (key, key_id) = budget_key(&mut admin).await;
    let clients = [
        ChatServiceClient::new(replicas[0].channel().await),
        ChatServiceClient::new(replicas[1].channel().await),
    ];
    let warm = warm_up(&clients, &key).await;
    let stop = Arc::new(AtomicBool::new(false));
    let callers = spawn_load(&clients, &key, &stop);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = etcd.leader().await.expect("a raft leader");
    etcd.kill(leader);
    let killed = Instant::now();
    // Admin writes come back once a new raft leader exists (a bound for a loaded machine).
    let (fresh, _) = loop {
        match admin
            .create_key(with_key(
                pb::CreateKeyRequest {
                    spec: Some(pb::KeySpec::default()),
                },
                MASTER,
            ))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                break (r.key, r.info.unwrap().key_id);
            }
            Err(e) => assert!(
                killed.elapsed() < Duration::from_secs(20),
                "admin writes never came back: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let writes_back = killed.elapsed();
    let fresh_warm = warm_up(&clients, &fresh).await;
    assert!(
        fresh_warm > 0,
        "the key created after the election works on both replicas"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t, p99) = collect(&stop, callers).await;
    let (recorded, reserved, took) = settled(&mut admin, &key_id, t.told + warm).await;
    eprintln!(
        "| etcd leader member killed (admin writes back after {} ms) | {} | {} | {} | {} | {} | {:.6} | {:.6} | {} ms |",
        writes_back.as_millis(),
        t.requests,
        t.ok,
        t.failed,
        t.retried,
        p99.as_millis(),
        t.told as f64 / 1e9,
        (recorded - warm) as f64 / 1e9,
        took.as_millis()
    );
    assert!(t.requests > 50, "the load ran: {t:?}");
    assert_eq!(t.failed, 0, "{t:?}");
    assert_eq!(reserved, 0);
    assert_eq!(recorded - warm, t.told, "spend lost or doubled");
}
