//! Several gateway replicas sharing deployment state through one real `redis-server`.

mod common;

use std::time::{Duration, Instant};

use common::{
    Gateway, chat_request,
    fake_openai::{Behavior, FakeOpenAi, error_body},
    process::Process,
    reason,
    redis::{Flavor, RedisServer},
};
use tonic::Code;

/// Group `g` of `(id, upstream, extra litellm_params)` deployments, sharing `redis`, with extra
/// `router_settings`.
fn fleet_config(redis: &RedisServer, deps: &[(&str, &FakeOpenAi, &str)], settings: &str) -> String {
    let mut yaml = String::from("model_list:\n");
    for (id, fake, extra) in deps {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        yaml += &format!(
            "  - {{model_name: g, litellm_params: {{model: openai/m, api_base: \"{}\"{extra}}}, model_info: {{id: {id}}}}}\n",
            fake.base()
        );
    }
    let settings = if settings.is_empty() {
        String::new()
    } else {
        format!(", {settings}")
    };
    yaml + &format!("router_settings: {{redis_url: \"{}\"{settings}}}\n", redis.url())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_on_one_replica_is_honoured_by_all() {
    a_cooldown_on_one_replica_is_honoured_by_all_on(RedisServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_on_one_replica_is_honoured_by_all_on_a_redis_cluster() {
    a_cooldown_on_one_replica_is_honoured_by_all_on(RedisServer::start_cluster(Flavor::Redis, 3).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooldown_on_one_replica_is_honoured_by_all_on_valkey() {
    a_cooldown_on_one_replica_is_honoured_by_all_on(RedisServer::start_flavor(Flavor::Valkey).await).await;
}

async fn a_cooldown_on_one_replica_is_honoured_by_all_on(redis: RedisServer) {
    let a = FakeOpenAi::start(|_| Behavior::Error {
        status: 429,
        body: error_body("Rate limit reached", "requests", Some("rate_limit_exceeded")),
        headers: vec![],
    })
    .await;
    let b = FakeOpenAi::replying("b").await;
    let yaml = fleet_config(&redis, &[("a", &a, ""), ("b", &b, "")], "cooldown_time: 30");
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
    rpm_holds_exactly_across_three_replicas_under_a_burst_on(RedisServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_holds_exactly_across_three_replicas_under_a_burst_on_a_redis_cluster() {
    rpm_holds_exactly_across_three_replicas_under_a_burst_on(
        RedisServer::start_cluster(Flavor::Redis, 3).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpm_holds_exactly_across_three_replicas_under_a_burst_on_valkey() {
    rpm_holds_exactly_across_three_replicas_under_a_burst_on(RedisServer::start_flavor(Flavor::Valkey).await)
        .await;
}

type ChatClient = switchboard::proto::chat_service_client::ChatServiceClient<tonic::transport::Channel>;

/// Three replicas in front of one deployment capped at `rpm: 60`, and a client of each.
async fn rpm_fleet(redis: &RedisServer) -> (FakeOpenAi, Vec<Gateway>, Vec<ChatClient>) {
    let up = FakeOpenAi::replying("ok").await;
    let yaml = fleet_config(redis, &[("only", &up, "rpm: 60")], "num_retries: 0");
    let gws = fleet(3, &yaml).await;
    let mut clients = Vec::new();
    for gw in &gws {
        clients.push(gw.chat().await);
    }
    (up, gws, clients)
}

/// `per_client` concurrent calls through each client: (answered, refused by the deployment's rate
/// limit); any other outcome fails the test.
async fn rpm_burst(clients: &[ChatClient], per_client: usize) -> (usize, usize) {
    let mut calls = Vec::new();
    for client in clients {
        for _ in 0..per_client {
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
    (ok, limited)
}

async fn rpm_holds_exactly_across_three_replicas_under_a_burst_on(redis: RedisServer) {
    let (up, _gws, clients) = rpm_fleet(&redis).await;
    // The window is the server's minute: do not start a burst that could straddle two (checked
    // last, right before the burst, with room for a slow machine).
    if redis.seconds_into_minute().await > 40 {
        tokio::time::sleep(Duration::from_secs(61 - redis.seconds_into_minute().await)).await;
    }
    let (ok, limited) = rpm_burst(&clients, 50).await;
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
    let yaml = fleet_config(&redis, &[("only", &up, "rpm: 100000")], "");
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
    common::wait_ready(&gw.url()).await;
    gw.chat().await.complete(chat_request("g", "hi")).await.unwrap();
}

/// The fleet's in-flight count for one deployment, read as replicas read it.
async fn fleet_in_flight(redis: &RedisServer, deployment: &str) -> i64 {
    let mut conn = redis.connection().await;
    let v: Vec<i64> = switchboard::cluster::redis::SNAPSHOT
        .key(switchboard::cluster::redis::deployment_base(deployment))
        .invoke_async(&mut conn)
        .await
        .unwrap();
    v[3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_in_flight_requests_stop_counting_within_the_ttl() {
    a_killed_replicas_in_flight_requests_stop_counting_within_the_ttl_on(RedisServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_in_flight_requests_stop_counting_within_the_ttl_on_a_redis_cluster() {
    a_killed_replicas_in_flight_requests_stop_counting_within_the_ttl_on(
        RedisServer::start_cluster(Flavor::Redis, 3).await,
    )
    .await;
}

async fn a_killed_replicas_in_flight_requests_stop_counting_within_the_ttl_on(redis: RedisServer) {
    let hung = FakeOpenAi::start(|_| Behavior::Hang).await;
    let yaml = fleet_config(&redis, &[("slow", &hung, "")], "");
    let mut replica = Process::serve(&yaml, &["--replica-id", "doomed"]).await;
    let channel = tonic::transport::Channel::from_shared(replica.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = switchboard::proto::chat_service_client::ChatServiceClient::new(channel);
    let _calls: Vec<_> = (0..50)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.complete(chat_request("g", "hi")).await })
        })
        .collect();
    let started = Instant::now();
    while fleet_in_flight(&redis, "slow").await != 50 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "50 in-flight requests never showed in redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replica.sigkill();
    let killed = Instant::now();
    while fleet_in_flight(&redis, "slow").await != 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(6),
            "a dead replica's in-flight count must expire"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "in-flight of a SIGKILLed replica gone from the fleet after {:?} (TTL 3 s)",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() <= Duration::from_millis(3200),
        "{:?}",
        killed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_balances_the_fleets_load_not_each_replicas() {
    least_busy_balances_the_fleets_load_not_each_replicas_on(RedisServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_balances_the_fleets_load_not_each_replicas_on_a_redis_cluster() {
    least_busy_balances_the_fleets_load_not_each_replicas_on(
        RedisServer::start_cluster(Flavor::Redis, 3).await,
    )
    .await;
}

async fn least_busy_balances_the_fleets_load_not_each_replicas_on(redis: RedisServer) {
    let a = FakeOpenAi::start(|_| Behavior::ReplyAfter(Duration::from_millis(1500), "a".into())).await;
    let b = FakeOpenAi::start(|_| Behavior::ReplyAfter(Duration::from_millis(1500), "b".into())).await;
    let yaml = fleet_config(
        &redis,
        &[("a", &a, "tags: [pinned, default]"), ("b", &b, "tags: [default]")],
        "routing_strategy: least-busy",
    );
    let gws = fleet(2, &yaml).await;
    // Replica 0 keeps four requests busy on `a` (tag-pinned).
    let pinned = switchboard::proto::ChatRequest {
        routing: Some(switchboard::proto::RoutingOptions {
            tags: vec!["pinned".into()],
            ..Default::default()
        }),
        ..chat_request("g", "hi")
    };
    let client0 = gws[0].chat().await;
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let (mut c, r) = (client0.clone(), pinned.clone());
            tokio::spawn(async move { c.complete(r).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await; // a few sync periods
    // Replica 1 has nothing in flight itself; the fleet has four on `a`.
    let client1 = gws[1].chat().await;
    let mut mine = Vec::new();
    for _ in 0..4 {
        let mut c = client1.clone();
        mine.push(tokio::spawn(
            async move { c.complete(chat_request("g", "hi")).await },
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut to_b = 0;
    for c in mine {
        to_b += usize::from(
            c.await
                .unwrap()
                .unwrap()
                .into_inner()
                .route
                .unwrap()
                .deployment_id
                == "b",
        );
    }
    for c in busy {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        to_b, 4,
        "replica 1 saw the fleet's four requests on `a` and sent all of its own to `b`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_measured_by_one_replica_guides_the_others() {
    let redis = RedisServer::start().await;
    let fast = FakeOpenAi::start(|_| Behavior::ReplyAfter(Duration::from_millis(5), "fast".into())).await;
    let slow = FakeOpenAi::start(|_| Behavior::ReplyAfter(Duration::from_millis(150), "slow".into())).await;
    let yaml = fleet_config(
        &redis,
        &[("fast", &fast, ""), ("slow", &slow, "")],
        "routing_strategy: latency-based-routing",
    );
    let gws = fleet(2, &yaml).await;
    for _ in 0..6 {
        gws[0]
            .chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .unwrap();
    }
    assert_eq!(slow.count(), 1, "replica 0 measured the slow deployment once");
    tokio::time::sleep(Duration::from_millis(300)).await; // a few sync periods
    // Replica 1 has measured nothing itself; alone it would explore `slow` within two requests.
    for _ in 0..6 {
        let r = gws[1]
            .chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.route.unwrap().deployment_id, "fast");
    }
    assert_eq!(slow.count(), 1, "replica 1 used the fleet's measurements");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_cluster_shows_every_replica_and_the_fleets_deployment_state() {
    get_cluster_shows_every_replica_and_the_fleets_deployment_state_on(RedisServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_cluster_shows_every_replica_and_the_fleets_deployment_state_on_a_redis_cluster() {
    get_cluster_shows_every_replica_and_the_fleets_deployment_state_on(
        RedisServer::start_cluster(Flavor::Redis, 3).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_cluster_shows_every_replica_and_the_fleets_deployment_state_on_valkey() {
    get_cluster_shows_every_replica_and_the_fleets_deployment_state_on(
        RedisServer::start_flavor(Flavor::Valkey).await,
    )
    .await;
}

async fn get_cluster_shows_every_replica_and_the_fleets_deployment_state_on(redis: RedisServer) {
    use switchboard::proto::{DeploymentHealth, GetClusterRequest, admin_service_client::AdminServiceClient};
    let a = FakeOpenAi::start(|_| Behavior::Error {
        status: 429,
        body: error_body("Rate limit reached", "requests", Some("rate_limit_exceeded")),
        headers: vec![],
    })
    .await;
    let b = FakeOpenAi::replying("b").await;
    let yaml = fleet_config(&redis, &[("a", &a, ""), ("b", &b, "")], "cooldown_time: 30");
    let gws = fleet(2, &yaml).await;
    while a.count() == 0 {
        gws[0]
            .chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .unwrap();
    }
    let mut admin = AdminServiceClient::new(gws[1].channel().await);
    let started = Instant::now();
    let cluster = loop {
        let c = admin
            .get_cluster(GetClusterRequest {})
            .await
            .unwrap()
            .into_inner();
        // Both replicas registered, and the cooldown pushed from replica 0 arrived here (on a
        // loaded machine that can take a few milliseconds more than the request that caused it).
        let cooled = c
            .deployments
            .iter()
            .any(|d| d.deployment_id == "a" && d.health == DeploymentHealth::CoolingDown as i32);
        if c.replicas.len() == 2 && cooled {
            break c;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "replicas never registered or the cooldown never arrived: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(cluster.shared_state);
    let mut addresses: Vec<String> = cluster.replicas.iter().map(|r| r.address.clone()).collect();
    addresses.sort();
    let mut expected: Vec<String> = gws.iter().map(|g| g.addr.to_string()).collect();
    expected.sort();
    assert_eq!(addresses, expected);
    assert!(
        cluster
            .replicas
            .iter()
            .all(|r| r.version == env!("CARGO_PKG_VERSION") && r.last_heartbeat.is_some())
    );
    let dep = |id: &str| {
        cluster
            .deployments
            .iter()
            .find(|d| d.deployment_id == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        dep("a").health,
        DeploymentHealth::CoolingDown as i32,
        "cooled down by the other replica"
    );
    assert!(dep("a").cooldown_remaining_ms > 25_000, "{:?}", dep("a"));
    assert_eq!(dep("b").health, DeploymentHealth::Healthy as i32);
    assert_eq!(dep("b").model_group, "g");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_load_fails_nothing_and_the_fleet_converges_after() {
    redis_stopped_mid_load(RedisServer::start().await, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_redis_cluster_stopped_mid_load_fails_nothing() {
    redis_stopped_mid_load(RedisServer::start_cluster(Flavor::Redis, 3).await, None).await;
}

/// One primary of three dies (its slots are unserved, and once the others notice, the cluster
/// refuses everything: no replica to fail over to); it comes back with its slots and no data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_redis_cluster_node_killed_mid_load_fails_nothing() {
    redis_stopped_mid_load(RedisServer::start_cluster(Flavor::Redis, 3).await, Some(1)).await;
}

/// Kills Redis (or only cluster node `node`) for a second under load, then restarts it.
async fn redis_stopped_mid_load(mut redis: RedisServer, node: Option<usize>) {
    let a = FakeOpenAi::replying("a").await;
    let b = FakeOpenAi::replying("b").await;
    let yaml = fleet_config(
        &redis,
        &[("a", &a, "rpm: 1000000"), ("b", &b, "rpm: 1000000")],
        "cooldown_time: 30",
    );
    let gws = fleet(3, &yaml).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for i in 0..12 {
        let client = gws[i % 3].chat().await;
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut worst) = (0usize, 0usize, Duration::ZERO);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                match client.clone().complete(chat_request("g", "hi")).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
                worst = worst.max(t.elapsed());
            }
            (ok, failed, worst)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    match node {
        None => {
            redis.kill();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            redis.restart().await;
        }
        Some(n) => {
            redis.kill_node(n);
            // Past the cluster's node timeout (2 s): the survivors mark the cluster failed.
            tokio::time::sleep(Duration::from_millis(3000)).await;
            redis.restart_node(n).await;
        }
    }
    for gw in &gws {
        common::wait_ready(&gw.url()).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed, mut worst) = (0, 0, Duration::ZERO);
    for w in workers {
        let (o, f, wst) = w.await.unwrap();
        ok += o;
        failed += f;
        worst = worst.max(wst);
    }
    println!(
        "redis {} stopped mid-load: {ok} ok, {failed} failed, slowest {worst:?}",
        node.map_or("(all of it)".to_string(), |n| format!("cluster node {n}"))
    );
    assert_eq!(failed, 0);
    assert!(ok > 100, "load kept flowing: {ok}");
    assert!(worst < Duration::from_millis(500), "slowest request {worst:?}");

    // Converged: a cooldown set by one replica after the restart is honoured by the others again.
    a.set(|_| Behavior::Error {
        status: 429,
        body: error_body("slow down", "requests", Some("rate_limit_exceeded")),
        headers: vec![],
    });
    let before = a.count();
    while a.count() == before {
        gws[0]
            .chat()
            .await
            .complete(chat_request("g", "hi"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hit = a.count();
    for gw in &gws[1..] {
        for _ in 0..10 {
            gw.chat().await.complete(chat_request("g", "hi")).await.unwrap();
        }
    }
    assert_eq!(a.count(), hit, "after the restart, cooldowns are shared again");
}

/// With Redis gone, replicas cannot coordinate an `rpm` cap; each admits its share (the cap over
/// the live replicas it last saw), so the fleet stays within the cap instead of reaching N times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_replica_admits_only_its_share_of_an_rpm_cap() {
    let mut redis = RedisServer::start().await;
    let (up, _gws, clients) = rpm_fleet(&redis).await;
    // Heartbeats (every second) tell each replica that the fleet has three members; the burst
    // must not straddle a minute.
    let secs = redis.seconds_into_minute().await;
    if secs > 40 {
        tokio::time::sleep(Duration::from_secs(61 - secs)).await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, limited) = rpm_burst(&clients, 50).await;
    println!("rpm 60 without redis: {ok} admitted by three replicas, {limited} refused");
    assert_eq!(
        ok, 60,
        "three shares of 20 (each replica alone would have admitted 50)"
    );
    assert_eq!(up.count(), 60);
}
