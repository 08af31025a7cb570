//! The budget and rate-limit ledger: the same scenarios against the in-memory ledger (single node)
//! and the Redis ledger (fleet, on a real redis-server), so both keep identical rules.

mod common;

use std::{sync::Arc, time::Duration};

use common::redis::{Flavor, RedisServer};
use switchboard::{
    domain::Cost,
    limits::{Budget, Demand, FleetLedger, Ledger, LocalLedger, Refusal, Scope, SpendRecord, day_of, now_ms},
};

fn usd(x: f64) -> Cost {
    Cost::from_usd(x)
}

fn scope(id: &str) -> Scope {
    Scope {
        id: id.into(),
        budget: None,
        rpm: None,
        tpm: None,
        parallel: None,
    }
}

fn budget(id: &str, max: f64, soft: Option<f64>) -> Scope {
    Scope {
        budget: Some(Budget {
            max: Some(usd(max)),
            soft: soft.map(usd),
            window_start: 0,
            window_end: i64::MAX,
        }),
        ..scope(id)
    }
}

fn demand(id: &str, cost: f64, tokens: u64) -> Demand {
    Demand {
        request_id: id.into(),
        cost: usd(cost),
        tokens,
        lease_ms: 60_000,
    }
}

fn record(id: &str, cost: f64, key: &str, minute: i64) -> SpendRecord {
    SpendRecord {
        request_id: id.into(),
        key_id: Some(key.into()),
        team_id: None,
        user_id: None,
        end_user: None,
        model_group: "g".into(),
        deployment: Some("g/d".into()),
        prompt_tokens: 7,
        completion_tokens: 3,
        cost: usd(cost),
        latency_ms: 5,
        status: "ok".into(),
        at_ms: now_ms(),
        estimated_tokens: 10,
        minute,
        lease_id: String::new(),
    }
}

/// Waits out the end of a minute so that a test's rate windows do not roll over midway.
async fn early_in_minute(seconds_into_minute: u64) {
    if seconds_into_minute > 50 {
        tokio::time::sleep(Duration::from_secs(61 - seconds_into_minute)).await;
    }
}

async fn budgets_reserve_the_worst_case_and_settle_the_actual(l: &dyn Ledger) {
    let s = [budget("key:b", 1.0, None)];
    l.admit(&s, &demand("b1", 0.4, 0)).await.unwrap().unwrap();
    l.admit(&s, &demand("b2", 0.4, 0)).await.unwrap().unwrap();
    let refused = l.admit(&s, &demand("b3", 0.4, 0)).await.unwrap().unwrap_err();
    assert_eq!(
        refused,
        Refusal::Budget {
            scope: "key:b".into(),
            limit: usd(1.0),
            spent: Cost::ZERO,
            reserved: usd(0.8),
            needed: usd(0.4),
            resets_at_ms: None,
        }
    );
    l.settle(&s, &record("b1", 0.1, "b", 0)).await.unwrap();
    let now = l.spend(&s[0]).await.unwrap();
    assert_eq!((now.spent, now.reserved), (usd(0.1), usd(0.4)));
    l.admit(&s, &demand("b3", 0.4, 0)).await.unwrap().unwrap();
    // A settlement larger than the reservation is charged in full (never lost).
    l.settle(&s, &record("b2", 0.5, "b", 0)).await.unwrap();
    l.settle(&s, &record("b3", 0.0, "b", 0)).await.unwrap();
    let end = l.spend(&s[0]).await.unwrap();
    assert_eq!((end.spent, end.reserved), (usd(0.6), Cost::ZERO));
}

async fn a_refusal_in_one_scope_reserves_nothing_in_the_others(l: &dyn Ledger) {
    let s = [budget("key:m", 10.0, None), budget("team:m", 0.5, None)];
    let r = l.admit(&s, &demand("m1", 1.0, 0)).await.unwrap().unwrap_err();
    assert_eq!(r.scope(), "team:m");
    assert_eq!(l.spend(&s[0]).await.unwrap().reserved, Cost::ZERO);
}

async fn rpm_parallel_and_tpm_limits(l: &dyn Ledger) {
    let rpm = [Scope {
        rpm: Some(3),
        ..scope("key:rpm")
    }];
    for i in 0..3 {
        let g = l
            .admit(&rpm, &demand(&format!("r{i}"), 0.0, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(g.rpm_remaining, Some(2 - i));
    }
    match l.admit(&rpm, &demand("r3", 0.0, 1)).await.unwrap() {
        Err(Refusal::Rpm {
            limit: 3,
            retry_after_ms,
            ..
        }) => assert!(retry_after_ms <= 60_000),
        other => panic!("expected an rpm refusal, got {other:?}"),
    }

    let par = [Scope {
        parallel: Some(2),
        ..scope("key:par")
    }];
    l.admit(&par, &demand("p1", 0.0, 0)).await.unwrap().unwrap();
    l.admit(&par, &demand("p2", 0.0, 0)).await.unwrap().unwrap();
    assert!(matches!(
        l.admit(&par, &demand("p3", 0.0, 0)).await.unwrap(),
        Err(Refusal::Parallel { limit: 2, .. })
    ));
    l.settle(&par, &record("p1", 0.0, "par", 0)).await.unwrap();
    l.admit(&par, &demand("p3", 0.0, 0)).await.unwrap().unwrap();

    let tpm = [Scope {
        tpm: Some(100),
        ..scope("key:tpm")
    }];
    let g = l.admit(&tpm, &demand("t1", 0.0, 60)).await.unwrap().unwrap();
    assert_eq!(g.tpm_remaining, Some(40));
    assert!(matches!(
        l.admit(&tpm, &demand("t2", 0.0, 60)).await.unwrap(),
        Err(Refusal::Tpm { used: 60, .. })
    ));
    // The estimate (10 tokens here: `estimated_tokens`) is replaced by the actual 10 tokens.
    let mut r = record("t1", 0.0, "tpm", g.minute);
    r.estimated_tokens = 60;
    l.settle(&tpm, &r).await.unwrap();
    l.admit(&tpm, &demand("t2", 0.0, 60)).await.unwrap().unwrap();
}

async fn soft_budgets_alert_once_when_crossed(l: &dyn Ledger) {
    let s = [budget("key:soft", 100.0, Some(0.5))];
    let mut crossed = Vec::new();
    for (i, cost) in [0.3, 0.3, 0.1].into_iter().enumerate() {
        let id = format!("s{i}");
        l.admit(&s, &demand(&id, 0.3, 0)).await.unwrap().unwrap();
        crossed.push(l.settle(&s, &record(&id, cost, "soft", 0)).await.unwrap());
    }
    assert_eq!(crossed, vec![vec![], vec!["key:soft".to_string()], vec![]]);
}

async fn expired_reservations_free_their_budget_and_slot(l: &dyn Ledger) {
    let s = [Scope {
        parallel: Some(1),
        ..budget("key:lease", 1.0, None)
    }];
    let mut d = demand("l1", 0.9, 0);
    d.lease_ms = 200;
    l.admit(&s, &d).await.unwrap().unwrap();
    assert!(l.admit(&s, &demand("l2", 0.9, 0)).await.unwrap().is_err());
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The replica that held l1 never settled it (it crashed): the lease ran out.
    l.admit(&s, &demand("l2", 0.9, 0)).await.unwrap().unwrap();
    let now = l.spend(&s[0]).await.unwrap();
    assert_eq!(now.reserved, usd(0.9));
}

async fn spend_is_reported_by_day_and_logged(l: &dyn Ledger) {
    let s = [scope("key:rep")];
    for i in 0..3 {
        l.settle(&s, &record(&format!("x{i}"), 0.25, "rep", 0))
            .await
            .unwrap();
    }
    let today = day_of(now_ms());
    let rows = l.report("key:rep", &today, &today).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].cost, rows[0].requests, rows[0].tokens),
        (usd(0.75), 3, 30)
    );
    let models = l.report("model:", &today, &today).await.unwrap();
    assert!(models.iter().any(|r| r.name == "model:g" && r.requests >= 3));
    let recent = l.recent(2).await.unwrap();
    assert_eq!(
        recent.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(),
        ["x2", "x1"]
    );
}

async fn all_scenarios(l: &dyn Ledger, seconds_into_minute: u64) {
    early_in_minute(seconds_into_minute).await;
    budgets_reserve_the_worst_case_and_settle_the_actual(l).await;
    a_refusal_in_one_scope_reserves_nothing_in_the_others(l).await;
    rpm_parallel_and_tpm_limits(l).await;
    soft_budgets_alert_once_when_crossed(l).await;
    expired_reservations_free_their_budget_and_slot(l).await;
    spend_is_reported_by_day_and_logged(l).await;
}

#[tokio::test]
async fn the_local_ledger_keeps_the_rules() {
    let secs = (now_ms() / 1000 % 60) as u64;
    all_scenarios(&LocalLedger::default(), secs).await;
}

#[tokio::test]
async fn the_redis_ledger_keeps_the_same_rules() {
    redis_ledger_scenarios(RedisServer::start().await).await;
}

#[tokio::test]
async fn the_ledger_keeps_the_same_rules_on_valkey() {
    redis_ledger_scenarios(RedisServer::start_flavor(Flavor::Valkey).await).await;
}

#[tokio::test]
async fn the_ledger_keeps_the_same_rules_on_a_redis_cluster() {
    redis_ledger_scenarios(RedisServer::start_cluster(Flavor::Redis, 3).await).await;
}

async fn redis_ledger_scenarios(redis: RedisServer) {
    let ledger: Arc<FleetLedger> = FleetLedger::start(redis.url(), false);
    // Connects in the background.
    for _ in 0..100 {
        if ledger.spend(&scope("probe")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all_scenarios(&*ledger, redis.seconds_into_minute().await).await;
}

#[tokio::test]
async fn the_redis_ledger_reports_unavailable_when_redis_is_gone() {
    let mut redis = RedisServer::start().await;
    let ledger = FleetLedger::start(redis.url(), false);
    for _ in 0..100 {
        if ledger.spend(&scope("probe")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.kill();
    let started = std::time::Instant::now();
    let r = ledger
        .admit(&[budget("key:x", 1.0, None)], &demand("u1", 0.1, 0))
        .await;
    assert!(r.is_err(), "admission must fail, not hang or pass");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// The leader's spend checkpoint finds every budget window (a SCAN, which on a cluster must go to
/// the node holding the `{q}` slot) and puts them back into a cluster that restarted empty.
#[tokio::test]
async fn spend_checkpoints_round_trip_through_a_redis_cluster_that_lost_its_data() {
    let mut redis = RedisServer::start_cluster(Flavor::Redis, 3).await;
    let ledger = FleetLedger::start(redis.url(), false);
    for _ in 0..100 {
        if ledger.spend(&scope("probe")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fresh Redis is marked known-good by restoring the (empty) checkpoint, as a gateway does.
    assert!(
        ledger.checkpoint().await.is_err(),
        "no checkpoint of an unmarked redis"
    );
    ledger.restore(&Default::default()).await.unwrap();
    let scopes: Vec<Scope> = (0..5)
        .map(|i| budget(&format!("key:cp{i}"), 10.0, None))
        .collect();
    for (i, s) in scopes.iter().enumerate() {
        let s = std::slice::from_ref(s);
        ledger
            .admit(s, &demand(&format!("cp{i}"), 1.0, 0))
            .await
            .unwrap()
            .unwrap();
        ledger
            .settle(s, &record(&format!("cp{i}"), 0.5 + i as f64, "cp", 0))
            .await
            .unwrap();
    }
    let checkpoint = ledger.checkpoint().await.unwrap();
    let found: Vec<i64> = {
        let mut v: Vec<i64> = checkpoint.budgets.iter().map(|(_, spent, _)| *spent).collect();
        v.sort();
        v
    };
    assert_eq!(
        found,
        (0..5).map(|i| usd(0.5 + i as f64).nano_usd()).collect::<Vec<_>>(),
        "every budget window is in the checkpoint"
    );

    redis.restart().await;
    let started = std::time::Instant::now();
    let needs = loop {
        match ledger.needs_restore().await {
            Ok(needs) => break needs,
            Err(e) => assert!(
                started.elapsed() < Duration::from_secs(10),
                "cluster never came back: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(needs, "an emptied cluster is noticed");
    assert!(
        ledger.checkpoint().await.is_err(),
        "an emptied, unrestored redis is never checkpointed (it would overwrite the good copy)"
    );
    assert_eq!(ledger.spend(&scopes[4]).await.unwrap().spent, Cost::ZERO);
    ledger.restore(&checkpoint).await.unwrap();
    assert!(!ledger.needs_restore().await.unwrap());
    for (i, s) in scopes.iter().enumerate() {
        assert_eq!(ledger.spend(s).await.unwrap().spent, usd(0.5 + i as f64));
    }
}
