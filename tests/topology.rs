//! The deploy/compose topology as processes: three replicas of the real binary sharing Redis and
//! etcd, a fake upstream, and a client that keeps calling (round-robin, retrying the next replica on
//! UNAVAILABLE or a refused connection, as a gRPC client behind a load balancer does) while the
//! test SIGKILLs the config leader and starts it again. No call may fail.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{chat_request, etcd::EtcdServer, fake_openai::FakeOpenAi, process::Process, redis::RedisServer};
use switchboard::proto::{admin_service_client::AdminServiceClient, chat_service_client::ChatServiceClient};
use tonic::{Code, Request, transport::Channel};

const MASTER: &str = "sk-master-topology";

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    r
}

fn transport_failure(s: &tonic::Status) -> bool {
    std::error::Error::source(s).is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some())
}

/// One call, trying each replica in turn (starting at `first`) while the answer is UNAVAILABLE or
/// the replica cannot be reached.
async fn call(urls: &[String], first: usize) -> Result<(), tonic::Status> {
    let mut last = None;
    for i in 0..urls.len() * 2 {
        let url = &urls[(first + i) % urls.len()];
        let channel = match Channel::from_shared(url.clone())
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .connect()
            .await
        {
            Ok(c) => c,
            Err(e) => {
                last = Some(tonic::Status::unavailable(e.to_string()));
                continue;
            }
        };
        let mut chat = ChatServiceClient::new(channel);
        match chat.complete(authed(chat_request("g", "hi"))).await {
            Ok(_) => return Ok(()),
            // A connection reset by a killed replica: gRPC calls that UNAVAILABLE (tonic reports
            // the transport error as UNKNOWN with the transport error as its source).
            Err(s) if s.code() == Code::Unavailable || transport_failure(&s) => last = Some(s),
            Err(s) => return Err(s),
        }
    }
    Err(last.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_leader_fails_no_call() {
    let (redis, etcd) = (RedisServer::start().await, EtcdServer::start().await);
    let fake = FakeOpenAi::replying("ok").await;
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: openai/gpt-4o, api_base: \"{}\", api_key: k}}}}\n\
         router_settings: {{redis_url: \"{}\"}}\n\
         general_settings: {{master_key: {MASTER}, etcd_endpoints: \"{}\", leader_lease_ttl: 2}}\n",
        fake.base(),
        redis.url(),
        etcd.endpoint()
    );
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(Process::serve(&yaml, &["--replica-id", &format!("replica-{i}")]).await);
    }
    let urls: Vec<String> = replicas.iter().map(|p| p.url.clone()).collect();

    // The client: a steady stream of calls, round-robin over the replicas.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (urls, stop, ok, failed) = (urls.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let mut n = c;
            while !stop.load(Ordering::Relaxed) {
                match call(&urls, n).await {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("call failed: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    // Find the leader, SIGKILL it, then start it again on the same address.
    let admin = async |url: &str| {
        let channel = Channel::from_shared(url.to_string())
            .unwrap()
            .connect()
            .await
            .ok()?;
        AdminServiceClient::new(channel)
            .get_cluster(authed(switchboard::proto::GetClusterRequest {}))
            .await
            .ok()
            .map(|r| r.into_inner())
    };
    let started = Instant::now();
    let leader = loop {
        if let Some(c) = admin(&urls[0]).await
            && !c.leader_id.is_empty()
        {
            break c.leader_id;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idx: usize = leader.trim_start_matches("replica-").parse().unwrap();
    replicas[idx].sigkill();
    let killed = Instant::now();
    let other = urls[(idx + 1) % 3].clone();
    loop {
        if let Some(c) = admin(&other).await
            && !c.leader_id.is_empty()
            && c.leader_id != leader
        {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(15), "no new leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failover = killed.elapsed();
    replicas[idx].restart().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "topology: {ok} calls ok, {failed} failed; leader {leader} SIGKILLed, new leader after {} ms, restarted",
        failover.as_millis()
    );
    assert_eq!(failed, 0);
    assert!(ok > 100, "the client kept calling throughout: {ok}");
    // The restarted replica serves again.
    call(&urls[idx..=idx], 0)
        .await
        .expect("the restarted replica answers");
}
