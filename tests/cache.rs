//! The response cache through the gateway: exact-match hits whatever the encoding, per-request
//! controls, isolation, streamed replay, single-flight (in one replica and across replicas through
//! a real Redis), a hit costing nothing, and a Redis that dies mid-test.

mod common;

use std::time::Duration;

use common::{
    Gateway, chat_request,
    fake_openai::{Behavior, FakeOpenAi},
    http,
    redis::{Flavor, RedisServer},
};
use futures_util::StreamExt;
use serde_json::{Value, json};
use switchboard::proto as pb;

const MASTER: &str = "sk-master-cache-test";

/// `smart` (priced at $1/M in, $2/M out) and `embed`, both on `fake`, with the given cache params.
async fn gateway(fake: &FakeOpenAi, cache_params: &str) -> Gateway {
    let yaml = format!(
        "model_list:
  - model_name: smart
    litellm_params: {{model: openai/gpt-4o, api_base: \"{base}\", api_key: k, input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}}
  - model_name: solo
    litellm_params: {{model: openai/gpt-4o, api_base: \"{base}\", api_key: k}}
  - model_name: embed
    litellm_params: {{model: openai/text-embedding-3-small, api_base: \"{base}\", api_key: k}}
litellm_settings:
  cache: true
  cache_params: {{{cache_params}}}
general_settings: {{master_key: {MASTER}}}
",
        base = fake.base()
    );
    Gateway::start(&yaml).await
}

/// The n-th upstream request answers "answer n" (after `delay`).
async fn numbered(delay: Duration) -> FakeOpenAi {
    FakeOpenAi::start(move |n| Behavior::ReplyAfter(delay, format!("answer {n}"))).await
}

/// POSTs a raw body to the chat endpoint: (cache-hit header, content, whole JSON).
async fn post_raw(gw: &Gateway, path: &str, key: &str, body: &str) -> (bool, Value) {
    let resp = http()
        .post(format!("{}{path}", gw.url()))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path} {body}");
    let hit = resp.headers()["x-switchboard-cache-hit"] == "true";
    (hit, resp.json().await.unwrap())
}

async fn ask(gw: &Gateway, body: Value) -> (bool, String) {
    let (hit, v) = post_raw(gw, "/v1/chat/completions", MASTER, &body.to_string()).await;
    (
        hit,
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

fn hello(extra: Value) -> Value {
    let mut body = json!({"model": "smart", "messages": [{"role": "user", "content": "hello"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test]
async fn reordered_json_and_the_grpc_encoding_hit_the_same_entry() {
    let fake = numbered(Duration::ZERO).await;
    let gw = gateway(&fake, "type: local").await;

    let a = r#"{"model":"solo","temperature":0.2,"messages":[{"role":"user","content":"hi"}]}"#;
    let b = "{ \"messages\" : [ { \"content\":\"hi\", \"role\":\"user\" } ],\n  \"temperature\": 0.2, \"model\": \"solo\" }";
    let (hit_a, first) = post_raw(&gw, "/v1/chat/completions", MASTER, a).await;
    let (hit_b, second) = post_raw(&gw, "/v1/chat/completions", MASTER, b).await;
    assert!(!hit_a && hit_b, "the reordered body is a hit");
    assert_eq!(first["choices"], second["choices"]);
    assert_eq!(
        first["id"], second["id"],
        "the cached answer is returned as it was"
    );
    assert_eq!(fake.count(), 1);

    // The same request as a protobuf message.
    let mut req = chat_request("solo", "hi");
    req.temperature = Some(0.2);
    let mut with_key = tonic::Request::new(req);
    with_key
        .metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    let resp = gw.chat().await.complete(with_key).await.unwrap();
    assert_eq!(resp.metadata().get("x-switchboard-cache-hit").unwrap(), "true");
    let resp = resp.into_inner();
    let route = resp.route.unwrap();
    assert!(route.cache_hit);
    assert_eq!(
        (route.attempts, route.cost_nano_usd),
        (0, 0),
        "a hit makes no attempt and costs nothing"
    );
    assert_eq!(
        route.deployment_id, "solo/openai/gpt-4o",
        "the route names the deployment that produced the answer"
    );
    assert_eq!(resp.choices[0].message.as_ref().unwrap().content, "answer 0");
    assert_eq!(fake.count(), 1);

    // A different parameter is a different request.
    let (hit, text) = ask(
        &gw,
        json!({"model": "solo", "temperature": 0.3, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!((hit, text.as_str()), (false, "answer 1"));

    // Embeddings are cached too.
    let e1 = r#"{"model": "embed", "input": ["a", "bb"]}"#;
    let (hit1, v1) = post_raw(&gw, "/v1/embeddings", MASTER, e1).await;
    let (hit2, v2) = post_raw(
        &gw,
        "/v1/embeddings",
        MASTER,
        r#"{"input":["a","bb"],"model":"embed"}"#,
    )
    .await;
    assert!(!hit1 && hit2);
    assert_eq!(v1["data"], v2["data"]);
    assert_eq!(fake.count(), 3);

    let metrics = http()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = |kind: &str, result: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("switchboard_cache_lookups_total")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && (l.contains("model_group=\"solo\"") || l.contains("model_group=\"embed\""))
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(line("chat", "hit").as_deref(), Some("2"), "{metrics}");
    assert_eq!(line("chat", "miss").as_deref(), Some("2"));
    assert_eq!(line("embeddings", "hit").as_deref(), Some("1"));
}

#[tokio::test]
async fn per_request_controls_and_ttl() {
    let fake = numbered(Duration::ZERO).await;
    let gw = gateway(&fake, "type: local, ttl: 60").await;

    assert_eq!(ask(&gw, hello(json!({}))).await, (false, "answer 0".into()));
    assert_eq!(ask(&gw, hello(json!({}))).await, (true, "answer 0".into()));
    // no-cache: skip the lookup, but store the fresh answer.
    assert_eq!(
        ask(&gw, hello(json!({"cache": {"no-cache": true}}))).await,
        (false, "answer 1".into())
    );
    assert_eq!(ask(&gw, hello(json!({}))).await, (true, "answer 1".into()));
    // A namespace is a separate cache; no-store leaves nothing behind in it.
    let ns = |extra: Value| {
        let mut c = json!({"namespace": "tenant-a"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        hello(json!({"cache": c}))
    };
    assert_eq!(
        ask(&gw, ns(json!({"no-store": true}))).await,
        (false, "answer 2".into())
    );
    assert_eq!(ask(&gw, ns(json!({"ttl": 1}))).await, (false, "answer 3".into()));
    assert_eq!(ask(&gw, ns(json!({}))).await, (true, "answer 3".into()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // s-maxage: the default-namespace entry is over a second old now.
    assert_eq!(
        ask(&gw, hello(json!({"cache": {"s-maxage": 60}}))).await,
        (true, "answer 1".into())
    );
    assert_eq!(
        ask(&gw, hello(json!({"cache": {"s-maxage": 1}}))).await,
        (false, "answer 4".into())
    );
    // The namespaced entry had a 1 s TTL of its own.
    assert_eq!(ask(&gw, ns(json!({}))).await, (false, "answer 5".into()));
    // use-cache: false opts out entirely.
    assert_eq!(
        ask(&gw, hello(json!({"cache": {"use-cache": false}}))).await,
        (false, "answer 6".into())
    );
    assert_eq!(fake.count(), 7);

    // A bad control is a clear error naming the field.
    let resp = http()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(MASTER)
        .json(&hello(json!({"cache": {"ttl": -5}})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("cache.ttl"));
}

#[tokio::test]
async fn default_off_caches_only_requests_that_opt_in() {
    let fake = numbered(Duration::ZERO).await;
    let gw = gateway(&fake, "type: local, mode: default_off").await;
    assert_eq!(ask(&gw, hello(json!({}))).await, (false, "answer 0".into()));
    assert_eq!(ask(&gw, hello(json!({}))).await, (false, "answer 1".into()));
    let opted = hello(json!({"cache": {"use-cache": true}}));
    assert_eq!(ask(&gw, opted.clone()).await, (false, "answer 2".into()));
    assert_eq!(ask(&gw, opted).await, (true, "answer 2".into()));
}

/// Creates a virtual key (optionally in a team) over LiteLLM's `/key/generate`.
async fn new_key(gw: &Gateway, body: Value) -> String {
    let v: Value = http()
        .post(format!("{}/key/generate", gw.url()))
        .bearer_auth(MASTER)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["key"].as_str().unwrap_or_else(|| panic!("{v}")).to_string()
}

#[tokio::test]
async fn isolated_keys_do_not_share_answers() {
    let fake = numbered(Duration::ZERO).await;
    let gw = gateway(&fake, "type: local, isolation: key").await;
    let (a, b) = (new_key(&gw, json!({})).await, new_key(&gw, json!({})).await);
    let body = hello(json!({})).to_string();
    let ask_as = async |key: &str| {
        let (hit, v) = post_raw(&gw, "/v1/chat/completions", key, &body).await;
        (
            hit,
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    };
    assert_eq!(ask_as(&a).await, (false, "answer 0".into()));
    assert_eq!(
        ask_as(&b).await,
        (false, "answer 1".into()),
        "key b never sees key a's answer"
    );
    assert_eq!(ask_as(&a).await, (true, "answer 0".into()));
    assert_eq!(ask_as(&b).await, (true, "answer 1".into()));
}

#[tokio::test]
async fn a_hit_costs_nothing_and_is_logged_as_a_hit() {
    let fake = numbered(Duration::ZERO).await;
    let gw = gateway(&fake, "type: local").await;
    let key = new_key(&gw, json!({"max_budget": 1.0})).await;
    let body = hello(json!({})).to_string();
    let (hit1, _) = post_raw(&gw, "/v1/chat/completions", &key, &body).await;
    let (hit2, _) = post_raw(&gw, "/v1/chat/completions", &key, &body).await;
    assert!(!hit1 && hit2);
    let mut logs = Value::Null;
    let started = std::time::Instant::now();
    while logs.as_array().is_none_or(|l| l.len() < 2) {
        assert!(started.elapsed() < Duration::from_secs(5), "spend logs: {logs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        logs = http()
            .get(format!("{}/spend/logs?api_key={key}", gw.url()))
            .bearer_auth(MASTER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    }
    let logs = logs.as_array().unwrap();
    let miss = logs
        .iter()
        .find(|l| l["cache_hit"] == "False")
        .expect("the miss is logged");
    let hit = logs
        .iter()
        .find(|l| l["cache_hit"] == "True")
        .expect("the hit is logged");
    assert!(miss["spend"].as_f64().unwrap() > 0.0);
    assert_eq!(hit["spend"].as_f64(), Some(0.0));
    assert_eq!(hit["status"], "cache_hit");
    assert_eq!(
        hit["total_tokens"], miss["total_tokens"],
        "a hit reports the tokens it saved"
    );
}

/// Every chunk of a gRPC stream, with the route taken off the last (it differs: cache_hit).
async fn grpc_chunks(gw: &Gateway, text: &str) -> (Vec<pb::ChatChunk>, pb::Route) {
    let mut req = tonic::Request::new(chat_request("smart", text));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {MASTER}").parse().unwrap());
    let mut s = gw.chat().await.stream_complete(req).await.unwrap().into_inner();
    let (mut chunks, mut route) = (Vec::new(), None);
    while let Some(c) = s.next().await {
        let mut c = c.unwrap();
        route = route.or(c.route.take());
        chunks.push(c);
    }
    (chunks, route.expect("the last chunk carries the route"))
}

#[tokio::test]
async fn a_completed_stream_is_replayed_chunk_for_chunk() {
    let fake = FakeOpenAi::start(|n| Behavior::Reply(format!("streamed answer number {n}"))).await;
    let gw = gateway(&fake, "type: local").await;
    let (first, route1) = grpc_chunks(&gw, "tell me").await;
    let (second, route2) = grpc_chunks(&gw, "tell me").await;
    assert!(!route1.cache_hit && route2.cache_hit);
    assert!(first.len() >= 5, "a real stream: {first:?}");
    assert_eq!(first, second, "the replay is identical to the original chunks");
    assert_eq!(fake.count(), 1);
    // A unary request is cached apart from the stream.
    let (hit, _) = ask(
        &gw,
        json!({"model": "smart", "messages": [{"role": "user", "content": "tell me"}]}),
    )
    .await;
    assert!(!hit);

    // Over HTTP: the same SSE events again (the stream key is shared with gRPC).
    let sse = async || {
        let resp = http()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(MASTER)
            .json(&json!({"model": "smart", "stream": true, "messages": [{"role": "user", "content": "tell me"}]}))
            .send()
            .await
            .unwrap();
        let hit = resp.headers()["x-switchboard-cache-hit"] == "true";
        (hit, resp.text().await.unwrap())
    };
    let (hit, replay) = sse().await;
    assert!(hit);
    let events: Vec<Value> = replay
        .lines()
        .filter_map(|l| l.strip_prefix("data: {"))
        .map(|rest| serde_json::from_str(&format!("{{{rest}")).unwrap())
        .collect();
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "streamed answer number 0", "{replay}");
    assert!(
        events.iter().all(|e| e["id"] == first[0].id.as_str()),
        "the original chunks' id"
    );
    assert!(replay.ends_with("data: [DONE]\n\n"));
    let (_, again) = sse().await;
    assert_eq!(replay, again);
    assert_eq!(fake.count(), 2, "only the unary request went upstream");
}

#[tokio::test]
async fn a_hundred_identical_requests_make_one_upstream_call() {
    let fake = numbered(Duration::from_millis(300)).await;
    let gw = gateway(&fake, "type: local").await;
    let body = hello(json!({})).to_string();
    let answers = futures_util::future::join_all(
        (0..100).map(|_| post_raw(&gw, "/v1/chat/completions", MASTER, &body)),
    )
    .await;
    assert_eq!(fake.count(), 1, "single-flight: one upstream call");
    let hits = answers.iter().filter(|(hit, _)| *hit).count();
    assert_eq!(hits, 99);
    assert!(
        answers
            .iter()
            .all(|(_, v)| v["choices"][0]["message"]["content"] == "answer 0")
    );
}

#[tokio::test]
async fn replicas_share_the_cache_and_single_flight_through_redis_and_survive_its_death() {
    let redis = RedisServer::start().await;
    let params = format!("type: redis, url: \"{}\"", redis.url());
    shared_cache_scenario(redis, &params).await;
}

/// The same on a Redis Cluster named as LiteLLM does, by one seed node (the port a string): the
/// client discovers the other nodes, and entries and their locks spread over their slots.
#[tokio::test]
async fn replicas_share_the_cache_through_a_redis_cluster() {
    let redis = RedisServer::start_cluster(Flavor::Redis, 3).await;
    let params = format!(
        "type: redis, redis_startup_nodes: [{{host: 127.0.0.1, port: \"{}\"}}]",
        redis.port
    );
    shared_cache_scenario(redis, &params).await;
}

async fn shared_cache_scenario(mut redis: RedisServer, params: &str) {
    let fake = numbered(Duration::from_millis(300)).await;
    let params = params.to_string();
    let (gw1, gw2) = (gateway(&fake, &params).await, gateway(&fake, &params).await);
    // Both replicas connected to Redis (the store connects in the background).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let body = hello(json!({})).to_string();
    let answers = futures_util::future::join_all((0..100).map(|i| {
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        post_raw(gw, "/v1/chat/completions", MASTER, &body)
    }))
    .await;
    assert_eq!(fake.count(), 1, "one upstream call for the whole fleet");
    assert!(
        answers
            .iter()
            .all(|(_, v)| v["choices"][0]["message"]["content"] == "answer 0")
    );
    assert_eq!(answers.iter().filter(|(hit, _)| *hit).count(), 99);
    // A request to the other replica later is a hit too.
    assert_eq!(ask(&gw2, hello(json!({}))).await, (true, "answer 0".into()));

    // Redis dies: the cache is bypassed, every request is answered from upstream.
    redis.kill();
    fake.set(|n| Behavior::Reply(format!("answer {n}")));
    let before = fake.count();
    for i in 0..10 {
        let gw = if i % 2 == 0 { &gw1 } else { &gw2 };
        let started = std::time::Instant::now();
        let (hit, _) = ask(gw, hello(json!({}))).await;
        assert!(!hit);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a dead Redis must not stall requests: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(fake.count(), before + 10);

    // Redis is back (empty): the cache fills and serves again.
    redis.restart().await;
    let started = std::time::Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the cache never came back"
        );
        if ask(&gw1, hello(json!({}))).await.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
