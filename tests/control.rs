//! The control plane: config versions, validation, rollback and file reload on a single node; a
//! leader elected through a real etcd, config written by the leader only and applied by every
//! replica, failover after SIGKILL, fencing of a deposed leader, and etcd outages.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, chat_request, etcd::EtcdServer, process::Process, reason};
use switchboard::proto::{self as pb, admin_service_client::AdminServiceClient};
use tonic::{Code, Request, transport::Channel};

const MASTER: &str = "sk-master-control";

/// Groups `names`, each answering with its own name (no upstream needed).
fn config(names: &[&str], general: &str) -> String {
    let mut y = String::from("model_list:\n");
    for n in names {
        y += &format!(
            "  - {{model_name: {n}, litellm_params: {{model: gpt-4o, mock_response: \"{n} answers\", api_key: sk-provider-{n}}}}}\n"
        );
    }
    y + &format!("general_settings: {{master_key: {MASTER}{general}}}\n")
}

fn fleet_config(etcd: &EtcdServer, names: &[&str]) -> String {
    config(
        names,
        &format!(", etcd_endpoints: \"{}\", leader_lease_ttl: 2", etcd.endpoint()),
    )
}

fn auth<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    r
}

async fn admin(url: &str) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(
        Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

async fn serves(url: &str, group: &str) -> bool {
    let Ok(channel) = Channel::from_shared(url.to_string()).unwrap().connect().await else {
        return false;
    };
    let mut chat = pb::chat_service_client::ChatServiceClient::new(channel);
    chat.complete(auth(chat_request(group, "hi"))).await.is_ok()
}

async fn cluster(url: &str) -> pb::GetClusterResponse {
    admin(url)
        .await
        .get_cluster(auth(pb::GetClusterRequest {}))
        .await
        .unwrap()
        .into_inner()
}

async fn put(url: &str, yaml: String) -> Result<u64, tonic::Status> {
    admin(url)
        .await
        .put_config(auth(pb::PutConfigRequest { yaml }))
        .await
        .map(|r| r.into_inner().version)
}

/// Polls until `f` holds, returning how long it took (panics after `limit`).
async fn within(limit: Duration, mut f: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_single_node_versions_validates_and_rolls_back_its_config() {
    let gw = Gateway::start(&config(&["a"], "")).await;
    let url = gw.url();
    assert!(serves(&url, "a").await && !serves(&url, "b").await);

    let v1 = put(&url, config(&["a", "b"], "")).await.unwrap();
    assert_eq!(v1, 1);
    assert!(serves(&url, "b").await, "applied at once");

    // An invalid config is refused whole, with the YAML path of the problem; nothing changes.
    let bad = put(
        &url,
        "model_list:\n  - {model_name: c, litellm_params: {model: opnai/x}}\n".into(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (bad.code(), reason(&bad).as_str()),
        (Code::InvalidArgument, "INVALID_CONFIG")
    );
    assert!(
        bad.message().contains("model_list[0].litellm_params.model"),
        "{}",
        bad.message()
    );
    assert!(serves(&url, "b").await);

    let got = admin(&url)
        .await
        .get_config(auth(pb::GetConfigRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.version, 1);
    assert!(got.yaml.contains("model_name: b"), "{}", got.yaml);
    assert!(
        !got.yaml.contains("sk-provider") && !got.yaml.contains(MASTER),
        "secrets masked: {}",
        got.yaml
    );

    let revisions = admin(&url)
        .await
        .list_config_revisions(auth(pb::ListConfigRevisionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .revisions;
    assert_eq!(revisions.iter().map(|r| r.version).collect::<Vec<_>>(), [1, 0]);
    let back = admin(&url)
        .await
        .rollback_config(auth(pb::RollbackConfigRequest { version: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.version, 2);
    assert!(!serves(&url, "b").await, "rolled back to the first config");
    let missing = admin(&url)
        .await
        .rollback_config(auth(pb::RollbackConfigRequest { version: 42 }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn a_single_node_reloads_its_file_on_change_and_keeps_serving_a_bad_one() {
    let p = Process::serve(&config(&["a"], ""), &[]).await;
    let file = p.config_path();
    std::fs::write(&file, config(&["a", "b"], "")).unwrap();
    let took = within(Duration::from_secs(5), async || serves(&p.url, "b").await).await;
    println!("file change served after {} ms", took.as_millis());
    std::fs::write(&file, "model_list: [oops").unwrap();
    p.sighup();
    within(Duration::from_secs(5), async || {
        !cluster(&p.url).await.config_rejection.is_empty()
    })
    .await;
    assert!(serves(&p.url, "b").await, "the last good config keeps serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_one_leader_and_all_apply_a_config_put_through_a_follower() {
    let etcd = EtcdServer::start().await;
    let mut gws = Vec::new();
    for _ in 0..3 {
        gws.push(Gateway::start(&fleet_config(&etcd, &["a"])).await);
    }
    let urls: Vec<String> = gws.iter().map(|g| g.url()).collect();
    // Exactly one leader, and every replica names the same one.
    within(Duration::from_secs(10), async || {
        let mut ids = Vec::new();
        for u in &urls {
            ids.push(cluster(u).await.leader_id);
        }
        !ids[0].is_empty() && ids.iter().all(|i| i == &ids[0])
    })
    .await;
    let view = cluster(&urls[0]).await;
    let leaders: Vec<_> = view.replicas.iter().filter(|r| r.leader).collect();
    assert_eq!(leaders.len(), 1, "{view:?}");
    assert_eq!(view.replicas.len(), 3);
    let follower = urls
        .iter()
        .find(|u| !leaders[0].address.contains(u.trim_start_matches("http://")))
        .unwrap()
        .clone();

    // The first leader seeded etcd from the file: version 1 everywhere.
    within(Duration::from_secs(5), async || {
        let mut all = true;
        for u in &urls {
            all &= cluster(u).await.config_version == 1;
        }
        all
    })
    .await;

    let started = Instant::now();
    let v = put(&follower, fleet_config(&etcd, &["a", "b"])).await.unwrap();
    assert_eq!(v, 2);
    let mut served = Duration::ZERO;
    for u in &urls {
        served = served.max(within(Duration::from_secs(1), async || serves(u, "b").await).await);
    }
    println!(
        "a config put through a follower: served by all 3 replicas {} ms after the call",
        started.elapsed().as_millis()
    );
    let bad = put(
        &follower,
        "model_list:\n  - {model_name: c, litellm_params: {model: opnai/x}}\n".into(),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("model_list[0].litellm_params.model"),
        "{}",
        bad.message()
    );
    for u in &urls {
        let c = cluster(u).await;
        assert_eq!(
            (c.config_version, c.config_rejection.as_str()),
            (2, ""),
            "nothing changed at {u}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_the_lease_ttl() {
    let etcd = EtcdServer::start().await;
    let yaml = fleet_config(&etcd, &["a"]);
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(Process::serve(&yaml, &[]).await);
    }
    let leader_of = async |url: &str| cluster(url).await.leader_id;
    within(Duration::from_secs(10), async || {
        !leader_of(&procs[0].url).await.is_empty()
    })
    .await;
    let view = cluster(&procs[0].url).await;
    let leader = view.replicas.iter().find(|r| r.leader).unwrap().clone();
    let idx = procs
        .iter()
        .position(|p| p.url.ends_with(&leader.address))
        .expect("the leader is one of ours");
    let mut old = procs.remove(idx);
    old.sigkill();
    let killed = Instant::now();
    let survivor = procs[0].url.clone();
    within(Duration::from_secs(10), async || {
        let id = leader_of(&survivor).await;
        !id.is_empty() && id != leader.replica_id
    })
    .await;
    let failover = killed.elapsed();
    println!(
        "leader SIGKILLed: a new leader elected after {} ms (lease ttl 2 s)",
        failover.as_millis()
    );
    // The new leader takes writes.
    put(&procs[1].url, fleet_config(&etcd, &["a", "c"]))
        .await
        .unwrap();
    for p in &procs {
        within(Duration::from_secs(2), async || serves(&p.url, "c").await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_cannot_write() {
    use switchboard::control::{ControlError, ControlPlane};
    let etcd = EtcdServer::start().await;
    let settings = |ttl: u64| {
        let mut s = switchboard::config::EtcdSettings::from_endpoints(&etcd.endpoint()).unwrap();
        s.leader_lease_ttl = Duration::from_secs(ttl);
        s
    };
    let plane = |id: &str, ttl: u64| {
        ControlPlane::start(
            config(&["a"], ""),
            None,
            Some((settings(ttl), id.to_string(), format!("{id}:1"))),
            std::sync::Arc::new(|_: &str| None),
            Box::new(|_| {}),
        )
    };
    // A long lease: only our revocation (standing in for a pause past the TTL) ends it.
    let old = plane("old", 30).await;
    let old_lead = old.leadership.clone().unwrap();
    within(Duration::from_secs(10), async || old_lead.is_leader()).await;
    within(Duration::from_secs(5), async || old.current().version == 1).await;
    let new = plane("new", 30).await;

    // While "old" sleeps, its lease expires: revoke it behind its back. It still believes it leads.
    let mut client = etcd_client::Client::connect([format!("http://{}", etcd.endpoint())], None)
        .await
        .unwrap();
    let leader_keys = client
        .get(
            "switchboard/v1/leader",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    let lease = leader_keys.kvs()[0].lease();
    client.lease_revoke(lease).await.unwrap();
    let new_lead = new.leadership.clone().unwrap();
    within(Duration::from_secs(10), async || new_lead.is_leader()).await;
    assert!(
        old_lead.is_leader(),
        "the old leader has not noticed yet (its keep-alive is 10 s away)"
    );

    // Its write is fenced off: the transaction requires its election key, which is gone.
    match old.put(config(&["a", "zombie"], ""), "old".into()).await {
        Err(ControlError::Unavailable(why)) => assert!(why.contains("lost the leadership"), "{why}"),
        other => panic!("a deposed leader's write must fail, got {other:?}"),
    }
    assert!(!old_lead.is_leader(), "the failed fenced write made it step down");
    let doc = client.get("switchboard/v1/config/doc", None).await.unwrap();
    let doc: serde_json::Value = serde_json::from_slice(doc.kvs()[0].value()).unwrap();
    assert_eq!(doc["version"], 1, "nothing was written");
    assert!(!doc["yaml"].as_str().unwrap().contains("zombie"));
    // The real leader writes.
    assert_eq!(new.put(config(&["a", "b"], ""), "new".into()).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_traffic_continues_writes_fail_clearly_and_watches_resume() {
    let mut etcd = EtcdServer::start().await;
    let a = Gateway::start(&fleet_config(&etcd, &["a"])).await;
    let b = Gateway::start(&fleet_config(&etcd, &["a"])).await;
    let (ua, ub) = (a.url(), b.url());
    within(Duration::from_secs(10), async || {
        cluster(&ua).await.config_version == 1
    })
    .await;
    etcd.kill();
    assert!(
        serves(&ua, "a").await && serves(&ub, "a").await,
        "traffic continues"
    );
    let refused = put(&ua, fleet_config(&etcd, &["a", "b"])).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    // Still ready (serving what it has), and readiness says why it is degraded.
    within(Duration::from_secs(10), async || {
        let r = common::http()
            .get(format!("{ua}/health/readiness"))
            .send()
            .await
            .unwrap();
        r.status() == 200 && r.text().await.unwrap().contains("etcd unreachable")
    })
    .await;
    etcd.restart().await;
    // Watches and the election resume without restarting the replicas.
    within(Duration::from_secs(15), async || {
        put(&ub, fleet_config(&etcd, &["a", "b"])).await.is_ok()
    })
    .await;
    within(Duration::from_secs(5), async || {
        serves(&ua, "b").await && serves(&ub, "b").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_finish_on_the_config_they_started_with() {
    use common::fake_openai::{Behavior, FakeOpenAi};
    let etcd = EtcdServer::start().await;
    let old =
        FakeOpenAi::start(|_| Behavior::ReplyAfter(Duration::from_millis(800), "old upstream".into())).await;
    let new = FakeOpenAi::replying("new upstream").await;
    let yaml = |fake: &FakeOpenAi| {
        format!(
            "model_list:\n  - {{model_name: a, litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k}}}}\n\
             general_settings: {{master_key: {MASTER}, etcd_endpoints: \"{}\", leader_lease_ttl: 2}}\n",
            fake.base(),
            etcd.endpoint()
        )
    };
    let (a, b) = (
        Gateway::start(&yaml(&old)).await,
        Gateway::start(&yaml(&old)).await,
    );
    let (ua, ub) = (a.url(), b.url());
    within(Duration::from_secs(10), async || {
        cluster(&ua).await.config_version == 1 && cluster(&ub).await.config_version == 1
    })
    .await;
    let answer = |url: String| async move {
        let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut chat = pb::chat_service_client::ChatServiceClient::new(channel);
        let r = chat
            .complete(auth(chat_request("a", "hi")))
            .await
            .unwrap()
            .into_inner();
        r.choices[0].message.as_ref().unwrap().content.clone()
    };
    let in_flight = [tokio::spawn(answer(ua.clone())), tokio::spawn(answer(ub.clone()))];
    // Both requests are at the old upstream when the new config lands.
    within(Duration::from_secs(5), async || old.count() == 2).await;
    put(&ua, yaml(&new)).await.unwrap();
    within(Duration::from_secs(1), async || {
        cluster(&ua).await.config_version == 2 && cluster(&ub).await.config_version == 2
    })
    .await;
    assert_eq!(
        answer(ub.clone()).await,
        "new upstream",
        "new requests use the new config"
    );
    for r in in_flight {
        assert_eq!(
            r.await.unwrap(),
            "old upstream",
            "a request in flight finishes where it started"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let etcd = EtcdServer::start_tls().await;
    let (ca, cert, key) = etcd.tls.clone().unwrap();
    let general = format!(
        ", etcd_endpoints: \"{}\", etcd_ca_file: \"{ca}\", etcd_cert_file: \"{cert}\", etcd_key_file: \"{key}\"",
        etcd.endpoint()
    );
    let gw = Gateway::start(&config(&["a"], &general)).await;
    let url = gw.url();
    within(Duration::from_secs(10), async || {
        !cluster(&url).await.leader_id.is_empty()
    })
    .await;
    assert_eq!(put(&url, config(&["a", "b"], &general)).await.unwrap(), 2);
    assert!(serves(&url, "b").await);
    // Without the client certificate the config is refused before anything starts.
    let e = switchboard::config::Config::parse(
        &config(
            &["a"],
            &format!(
                ", etcd_endpoints: \"{}\", etcd_cert_file: \"{cert}\"",
                etcd.endpoint()
            ),
        ),
        &|_| None,
    )
    .unwrap_err();
    assert!(e.to_string().contains("etcd_key_file"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_shutting_down_hands_over_without_waiting_for_its_lease() {
    let etcd = EtcdServer::start().await;
    // A long lease: a successor within it proves the leader resigned.
    let yaml = config(
        &["a"],
        &format!(", etcd_endpoints: \"{}\", leader_lease_ttl: 10", etcd.endpoint()),
    );
    let (p1, p2) = (Process::serve(&yaml, &[]).await, Process::serve(&yaml, &[]).await);
    within(Duration::from_secs(10), async || {
        !cluster(&p2.url).await.leader_id.is_empty()
    })
    .await;
    let view = cluster(&p1.url).await;
    let leader = view.replicas.iter().find(|r| r.leader).unwrap().clone();
    let (mut going, staying) = if p1.url.ends_with(&leader.address) {
        (p1, p2)
    } else {
        (p2, p1)
    };
    going.sigterm();
    let took = within(Duration::from_secs(8), async || {
        let c = cluster(&staying.url).await;
        !c.leader_id.is_empty() && c.leader_id != leader.replica_id
    })
    .await;
    println!(
        "SIGTERMed leader replaced after {} ms (lease ttl 10 s)",
        took.as_millis()
    );
    let (_, clean) = going.exit(Duration::from_secs(10)).await;
    assert!(clean, "a clean exit");
}
