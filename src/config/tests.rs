//! Config parsing and validation: paths in errors, env references, ignored keys, no secrets in output.

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-openai-secret".into()),
        "SWITCHBOARD_MASTER_KEY" => Some("sk-master-secret".into()),
        _ => None,
    }
}

const ISSUE_EXAMPLE: &str = r#"
model_list:
  - model_name: smart
    litellm_params: {model: openai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}
  - model_name: smart
    litellm_params: {model: openai/llama3, api_base: http://vllm:8000/v1, api_key: none, weight: 3}
general_settings: {master_key: os.environ/SWITCHBOARD_MASTER_KEY}
"#;

#[test]
fn parses_the_litellm_example() {
    let c = Config::parse(ISSUE_EXAMPLE, &env).unwrap();
    assert_eq!(c.deployments.len(), 2);
    let d = &c.deployments[0];
    assert_eq!(d.id.as_str(), "smart/openai/gpt-4o");
    assert_eq!(d.group.as_str(), "smart");
    assert_eq!(d.provider.name, "openai");
    assert_eq!(d.model, "gpt-4o");
    assert_eq!(d.api_key.as_ref().unwrap().expose(), "sk-openai-secret");
    let d = &c.deployments[1];
    assert_eq!(d.api_base.as_deref(), Some("http://vllm:8000/v1"));
    assert_eq!(d.weight, Some(3.0));
    assert_eq!(c.master_key.as_ref().unwrap().expose(), "sk-master-secret");
    assert_eq!(c.router.num_retries, 2);
    assert!(c.ignored_keys.is_empty(), "{:?}", c.ignored_keys);
}

#[test]
fn describe_never_prints_secrets() {
    let c = Config::parse(ISSUE_EXAMPLE, &env).unwrap();
    let text = c.describe();
    assert!(text.contains("smart/openai/llama3"), "{text}");
    assert!(
        !text.contains("sk-openai-secret") && !text.contains("sk-master-secret"),
        "{text}"
    );
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("sk-openai-secret") && !debug.contains("sk-master-secret"),
        "Debug leaks a secret: {debug}"
    );
}

fn err(yaml: &str) -> String {
    Config::parse(yaml, &env).unwrap_err().to_string()
}

#[test]
fn unknown_provider_names_the_yaml_path() {
    let e = err(r#"
model_list:
  - {model_name: a, litellm_params: {model: openai/gpt-4o}}
  - {model_name: b, litellm_params: {model: openai/gpt-4o}}
  - {model_name: c, litellm_params: {model: opnai/gpt-4o}}
"#);
    assert!(
        e.starts_with("model_list[2].litellm_params.model: unknown provider \"opnai\""),
        "{e}"
    );
}

#[test]
fn unset_env_reference_names_the_variable_and_path() {
    let e = err(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, api_key: os.environ/NOPE_KEY}}\n",
    );
    assert_eq!(
        e,
        "model_list[0].litellm_params.api_key: environment variable NOPE_KEY is not set"
    );
}

#[test]
fn environment_variables_section_resolves_references() {
    let c = Config::parse(
        "environment_variables: {MY_KEY: from-config}\nmodel_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, api_key: os.environ/MY_KEY}}\n",
        &env,
    )
    .unwrap();
    assert_eq!(c.deployments[0].api_key.as_ref().unwrap().expose(), "from-config");
}

#[test]
fn type_errors_name_the_yaml_path() {
    let e = err("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, weight: heavy}}\n");
    assert!(
        e.starts_with("model_list[0].litellm_params.weight: invalid type"),
        "{e}"
    );
    let e = err("model_list:\n  - {model_name: a}\n");
    assert!(e.contains("missing field `litellm_params`"), "{e}");
}

#[test]
fn semantic_errors_name_the_yaml_path() {
    let e = err("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, weight: 0}}\n");
    assert_eq!(
        e,
        "model_list[0].litellm_params.weight: must be a positive number"
    );
    let e = err("model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o, api_base: 'ftp://x'}}\n");
    assert!(
        e.starts_with("model_list[0].litellm_params.api_base: must be an http"),
        "{e}"
    );
    let e = err("model_list:\n  - {model_name: a, litellm_params: {model: hosted_vllm/llama}}\n");
    assert!(
        e.starts_with("model_list[0].litellm_params.api_base: is required"),
        "{e}"
    );
    let e = err("router_settings: {routing_strategy: fastest}\n");
    assert!(
        e.starts_with("router_settings.routing_strategy: unknown routing strategy"),
        "{e}"
    );
    let e = err("model_list: [1, 2");
    assert!(e.starts_with("config is not valid YAML"), "{e}");
}

#[test]
fn request_limits_parse_and_are_validated_with_paths() {
    let m = "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o}}\n";
    let c = Config::parse(m, &env).unwrap();
    assert_eq!(c.limits, RequestLimits::default());
    assert_eq!(c.quotas.max_streams_per_key, None);
    let c = Config::parse(
        &format!(
            "{m}general_settings: {{max_request_size_mb: 1.5, max_messages: 50, max_streams_per_key: 4}}\n"
        ),
        &env,
    )
    .unwrap();
    assert_eq!(c.limits.max_request_bytes, 1_572_864);
    assert_eq!(c.limits.max_messages, 50);
    assert_eq!(c.quotas.max_streams_per_key, Some(4));
    for (bad, path) in [
        ("max_request_size_mb: 0", "general_settings.max_request_size_mb"),
        (
            "max_request_size_mb: 5000",
            "general_settings.max_request_size_mb",
        ),
        ("max_messages: 0", "general_settings.max_messages"),
        ("max_streams_per_key: 0", "general_settings.max_streams_per_key"),
    ] {
        let e = err(&format!("{m}general_settings: {{{bad}}}\n"));
        assert!(e.starts_with(&format!("{path}: ")), "{bad}: {e}");
    }
}

#[test]
fn unimplemented_keys_are_collected_with_paths() {
    let c = Config::parse(
        r#"
model_list:
  - model_name: a
    litellm_params: {model: gpt-4o, top_k: 3}
    model_info: {supports_vision: true}
router_settings: {enable_pre_call_checks: true, routing_strategy: least-busy}
litellm_settings: {success_callback: [langfuse]}
"#,
        &env,
    )
    .unwrap();
    assert_eq!(
        c.ignored_keys,
        vec![
            "litellm_settings.success_callback",
            "model_list[0].litellm_params.top_k",
            "model_list[0].model_info.supports_vision",
            "router_settings.enable_pre_call_checks",
        ]
    );
    assert!(
        c.warnings.is_empty(),
        "least-busy is implemented: {:?}",
        c.warnings
    );
}

#[test]
fn deployment_ids_are_stable_and_unique() {
    let c = Config::parse(
        r#"
model_list:
  - {model_name: a, litellm_params: {model: gpt-4o}}
  - {model_name: a, litellm_params: {model: gpt-4o, api_base: "http://other/v1"}}
  - {model_name: a, litellm_params: {model: gpt-4o}, model_info: {id: mine}}
"#,
        &env,
    )
    .unwrap();
    let ids: Vec<_> = c.deployments.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a/gpt-4o", "a/gpt-4o#2", "mine"]);
    let e = err(
        "model_list:\n  - {model_name: a, litellm_params: {model: gpt-4o}, model_info: {id: x}}\n  - {model_name: b, litellm_params: {model: gpt-4o}, model_info: {id: x}}\n",
    );
    assert_eq!(e, "model_list[1].model_info.id: duplicate deployment id \"x\"");
}

#[test]
fn provider_key_falls_back_to_the_vendor_env_var() {
    let c = Config::parse(
        "model_list:\n  - {model_name: a, litellm_params: {model: openai/gpt-4o}}\n",
        &env,
    )
    .unwrap();
    assert_eq!(
        c.deployments[0].api_key.as_ref().unwrap().expose(),
        "sk-openai-secret"
    );
}

#[test]
fn router_settings_are_validated_with_paths() {
    let base = "model_list:\n  - {model_name: smart, litellm_params: {model: gpt-4o}}\n  - {model_name: cheap, litellm_params: {model: gpt-4o-mini}}\n";
    let e = err(&format!(
        "{base}router_settings: {{fallbacks: [{{smart: [cheap, cheep]}}]}}\n"
    ));
    assert_eq!(
        e,
        "router_settings.fallbacks[0].smart[1]: unknown model group \"cheep\""
    );
    let e = err(&format!(
        "{base}litellm_settings: {{fallbacks: [{{smrt: [cheap]}}]}}\n"
    ));
    assert_eq!(
        e,
        "litellm_settings.fallbacks[0].smrt: unknown model group \"smrt\""
    );
    let e = err(&format!(
        "{base}router_settings: {{retry_policy: {{RateLimitErrorRetrys: 3}}}}\n"
    ));
    assert!(
        e.starts_with("router_settings.retry_policy.RateLimitErrorRetrys: unknown key"),
        "{e}"
    );
    let e = err(&format!(
        "{base}router_settings: {{model_group_settings: {{smart: {{hedge_after_ms: soon}}}}}}\n"
    ));
    assert!(
        e.starts_with("router_settings.model_group_settings.smart.hedge_after_ms: expected"),
        "{e}"
    );
    let e = err(&format!(
        "{base}router_settings: {{model_group_settings: {{smarty: {{}}}}}}\n"
    ));
    assert!(
        e.starts_with("router_settings.model_group_settings.smarty: unknown model group"),
        "{e}"
    );
    let e = err(&format!("{base}router_settings: {{cooldown_time: -1}}\n"));
    assert!(
        e.starts_with("router_settings.cooldown_time: must be a positive number"),
        "{e}"
    );
}

#[test]
fn router_settings_resolve_litellm_names_and_per_group_overrides() {
    let c = Config::parse(
        r#"
model_list:
  - {model_name: smart, litellm_params: {model: gpt-4o, order: 2, tags: [eu], cooldown_time: 9, max_parallel_requests: 4}}
  - {model_name: cheap, litellm_params: {model: gpt-4o-mini}, model_info: {max_input_tokens: 128000}}
router_settings:
  routing_strategy: usage-based-routing
  num_retries: 4
  retry_policy: {RateLimitErrorRetries: 7, InternalServerErrorRetries: 1}
  allowed_fails_policy: {TimeoutErrorAllowedFails: 2}
  default_fallbacks: [cheap]
  model_group_settings: {cheap: {routing_strategy: least-busy, num_retries: 0, hedge_after_ms: 250}}
"#,
        &env,
    )
    .unwrap();
    let r = &c.router;
    use crate::{config::RoutingStrategy, domain::ErrorClass};
    let (smart, cheap) = (ModelGroup::new("smart"), ModelGroup::new("cheap"));
    assert_eq!(r.strategy_for(&smart), RoutingStrategy::UsageBased);
    assert_eq!(r.strategy_for(&cheap), RoutingStrategy::LeastBusy);
    assert_eq!((r.num_retries_for(&smart), r.num_retries_for(&cheap)), (4, 0));
    assert_eq!(
        r.hedge_for(&cheap),
        Some(crate::config::Hedge::After(Duration::from_millis(250)))
    );
    assert_eq!(r.retry_policy.get(ErrorClass::RateLimited), Some(7));
    assert_eq!(
        r.retry_policy.get(ErrorClass::Overloaded),
        Some(1),
        "InternalServerError covers 503/529"
    );
    assert_eq!(r.retry_policy.get(ErrorClass::Timeout), None);
    assert_eq!(r.allowed_fails_policy.get(ErrorClass::Timeout), Some(2));
    assert_eq!(r.fallbacks.for_group(&smart), std::slice::from_ref(&cheap));
    let d = &c.deployments[0];
    assert_eq!(
        (d.order, d.tags.clone(), d.cooldown_time, d.max_parallel_requests),
        (2, vec!["eu".to_string()], Some(Duration::from_secs(9)), Some(4))
    );
    assert_eq!(c.deployments[1].max_input_tokens, Some(128000));
}

#[test]
fn cloud_provider_settings_are_validated_with_paths() {
    let e = err("model_list:\n  - {model_name: b, litellm_params: {model: 'bedrock/anthropic.claude-v2'}}\n");
    assert_eq!(
        e,
        "model_list[0].litellm_params.aws_region_name: is required for bedrock (or set AWS_REGION)"
    );
    let e = err("model_list:\n  - {model_name: v, litellm_params: {model: vertex_ai/gemini-2.5-flash}}\n");
    assert!(
        e.starts_with("model_list[0].litellm_params.vertex_project: is required"),
        "{e}"
    );
    let e = err(
        "model_list:\n  - {model_name: v, litellm_params: {model: vertex_ai/gemini-2.5-flash, vertex_project: p}}\n",
    );
    assert!(
        e.starts_with("model_list[0].litellm_params.vertex_credentials: vertex_ai needs a service account"),
        "{e}"
    );
    let e = err(
        "model_list:\n  - {model_name: v, litellm_params: {model: vertex_ai/g, vertex_project: p, vertex_credentials: /nonexistent/sa.json}}\n",
    );
    assert!(
        e.starts_with("model_list[0].litellm_params.vertex_credentials: cannot read"),
        "{e}"
    );
    let e = err(
        "model_list:\n  - {model_name: v, litellm_params: {model: vertex_ai/g, vertex_project: p, vertex_credentials: '{\"client_email\": \"x\"}'}}\n",
    );
    assert_eq!(
        e,
        "model_list[0].litellm_params.vertex_credentials: the service account has no private_key"
    );
    let c = Config::parse(
        "model_list:\n  - {model_name: v, litellm_params: {model: vertex_ai/g, vertex_project: p, vertex_credentials: '{\"client_email\": \"x\", \"private_key\": \"PRIVATE-KEY-MATERIAL\"}'}}\n",
        &env,
    )
    .unwrap();
    assert!(
        !format!("{c:?}").contains("PRIVATE-KEY-MATERIAL"),
        "the service account never prints"
    );
    assert!(!c.describe().contains("PRIVATE-KEY-MATERIAL"));
}

#[test]
fn costs_match_the_price_file_entries_computed_by_hand() {
    use crate::domain::{Cost, Usage};
    let c = Config::parse(
        r#"
model_list:
  - {model_name: a, litellm_params: {model: gpt-4o-mini}}
  - {model_name: b, litellm_params: {model: anthropic/claude-sonnet-4-20250514}}
  - {model_name: c, litellm_params: {model: gemini/gemini-2.5-flash}}
  - {model_name: d, litellm_params: {model: bedrock/us.amazon.nova-pro-v1:0, aws_region_name: us-east-1}}
  - {model_name: e, litellm_params: {model: azure/my-deployment, api_base: "https://x.openai.azure.com"}, model_info: {base_model: azure/gpt-4o}}
  - {model_name: f, litellm_params: {model: text-embedding-3-small}}
  - {model_name: g, litellm_params: {model: gpt-4o, input_cost_per_token: 0.000004}}
"#,
        &env,
    )
    .unwrap();
    let usage = |p: u32, c: u32, cached: u32, written: u32| Usage {
        cached_prompt_tokens: cached,
        cache_creation_prompt_tokens: written,
        ..Usage::new(p, c)
    };
    // Each expectation is the file's USD-per-token figures times the tokens, worked by hand.
    let cases = [
        // gpt-4o-mini: 0.15/M in, 0.6/M out, 0.075/M cached: 800*0.15 + 200*0.075 + 300*0.6 = 315 micro-USD
        (0, usage(1000, 300, 200, 0), 315_000),
        // claude-sonnet-4: 3/M in, 15/M out, 0.3/M read, 3.75/M write:
        // 900*3 + 200*0.3 + 100*3.75 + 500*15 = 2700 + 60 + 375 + 7500 = 10635 micro-USD
        (1, usage(1200, 500, 200, 100), 10_635_000),
        // gemini-2.5-flash: 0.3/M in, 2.5/M out: 10000*0.3 + 1000*2.5 = 5500 micro-USD
        (2, usage(10_000, 1000, 0, 0), 5_500_000),
        // nova-pro: 0.8/M in, 3.2/M out: 1000*0.8 + 1000*3.2 = 4000 micro-USD
        (3, usage(1000, 1000, 0, 0), 4_000_000),
        // azure gpt-4o via base_model: 2.5/M in, 10/M out: 1000*2.5 + 100*10 = 3500 micro-USD
        (4, usage(1000, 100, 0, 0), 3_500_000),
        // text-embedding-3-small: 0.02/M: 12345 * 0.02 = 246.9 micro-USD
        (5, usage(12_345, 0, 0, 0), 246_900),
        // gpt-4o with input overridden to 4/M (output from the file, 10/M): 1000*4 + 10*10 = 4100
        (6, usage(1000, 10, 0, 0), 4_100_000),
    ];
    for (i, u, nano) in cases {
        let d = &c.deployments[i];
        let price = d.price.unwrap_or_else(|| panic!("{} has a price", d.id));
        assert_eq!(price.cost(&u), Cost::from_nano_usd(nano), "{}", d.id);
    }
    assert_eq!(c.deployments[1].max_output_tokens, Some(64_000));
    assert_eq!(
        c.deployments[0].max_input_tokens,
        Some(128_000),
        "context windows come from the table too"
    );
}

#[test]
fn an_unpriced_hosted_model_warns_and_a_self_hosted_one_does_not() {
    let c = Config::parse(
        "model_list:\n  - {model_name: a, litellm_params: {model: groq/some-new-model}}\n  - {model_name: b, litellm_params: {model: ollama/llama3}}\n",
        &env,
    )
    .unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("no price known"), "{:?}", c.warnings);
    assert!(c.deployments[1].price.is_none());
}

#[test]
fn cache_settings_follow_litellm_and_reject_what_is_not_supported() {
    let with = |settings: &str| format!("{ISSUE_EXAMPLE}litellm_settings: {settings}\n");
    let c = Config::parse(&with("{cache: false, cache_params: {type: redis}}"), &env).unwrap();
    assert!(c.cache.is_none(), "cache: false turns it off");
    let c = Config::parse(&with("{cache: true}"), &env).unwrap();
    let cache = c.cache.unwrap();
    assert!(matches!(cache.backend, CacheBackend::Local { max_size: 10_000 }));
    assert_eq!(cache.ttl, Duration::from_secs(600));
    assert!(cache.chat && cache.embeddings && !cache.default_off);
    let c = Config::parse(
        &with(
            "{cache: true, cache_params: {type: redis, host: cache.internal, port: 6380, password: pw, ttl: 30, \
             supported_call_types: [acompletion, atext_completion], mode: default_off, namespace: prod, isolation: team}}",
        ),
        &env,
    )
    .unwrap();
    let cache = c.cache.unwrap();
    match &cache.backend {
        CacheBackend::Redis(a) => {
            assert_eq!(
                (a.url.expose(), a.cluster),
                ("redis://:pw@cache.internal:6380", false)
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(cache.ttl, Duration::from_secs(30));
    assert!(cache.chat && !cache.embeddings && cache.default_off);
    assert_eq!(
        (cache.namespace.as_deref(), cache.isolation),
        (Some("prod"), Isolation::Team)
    );

    let e = err(&with("{cache: true, cache_params: {type: redis-semantic}}"));
    assert!(
        e.contains("litellm_settings.cache_params.type") && e.contains("not supported"),
        "{e}"
    );
    let e = err(&with("{cache: true, cache_params: {type: redis}}"));
    assert!(
        e.contains("router_settings.redis_url"),
        "redis needs an address: {e}"
    );
    let e = err(&with(
        "{cache: true, cache_params: {supported_call_types: [completion, speech]}}",
    ));
    assert!(e.contains("supported_call_types[1]"), "{e}");
    let e = err(&with("{cache: true, cache_params: {ttl: -1}}"));
    assert!(e.contains("cache_params.ttl"), "{e}");
}

#[test]
fn random_configs_never_panic() {
    use crate::domain::arbitrary::{Rng, json};
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..3000 {
        // JSON is YAML: random documents built from the config's own key names.
        let doc = json(&mut rng, 5).to_string();
        let _ = Config::parse(&doc, &env);
    }
    // The example with one byte changed at every position.
    let base = ISSUE_EXAMPLE.as_bytes();
    for i in 0..base.len() {
        for b in [b':', b'-', b'{', b' ', b'\n', b'"', b'\''] {
            let mut text = base.to_vec();
            text[i] = b;
            if let Ok(text) = String::from_utf8(text) {
                let _ = Config::parse(&text, &env);
            }
        }
    }
}

#[test]
fn redis_is_one_server_or_a_cluster_however_the_config_names_it() {
    let router = |settings: &str, env: &dyn Fn(&str) -> Option<String>| {
        let c = Config::parse(&format!("{ISSUE_EXAMPLE}router_settings: {settings}\n"), env)?;
        Ok::<_, ConfigError>(
            c.router
                .redis
                .map_or((None, false), |a| (Some(a.url.expose().to_string()), a.cluster)),
        )
    };
    let one = |url: &str| (Some(url.to_string()), false);
    let cluster = |url: &str| (Some(url.to_string()), true);
    assert_eq!(router("{}", &env).unwrap(), (None, false));
    assert_eq!(
        router("{redis_url: 'redis://r:6379'}", &env).unwrap(),
        one("redis://r:6379")
    );
    assert_eq!(
        router("{redis_url: 'redis://a:7000, redis://b:7001'}", &env).unwrap(),
        cluster("redis://a:7000, redis://b:7001"),
        "several URLs are a cluster's seeds"
    );
    assert_eq!(
        router("{redis_url: 'rediss://a:7000', redis_cluster: true}", &env).unwrap(),
        cluster("rediss://a:7000"),
        "one seed, cluster said explicitly"
    );
    // LiteLLM's shape: startup nodes, ports as numbers or strings, the password applied to each.
    assert_eq!(
        router(
            "{redis_startup_nodes: [{host: a, port: 7000}, {host: b, port: '7001'}], redis_password: pw}",
            &env
        )
        .unwrap(),
        cluster("redis://:pw@a:7000,redis://:pw@b:7001")
    );
    let from_env = |name: &str| match name {
        "SWITCHBOARD_REDIS_URL" => Some("redis://seed:7000".to_string()),
        "SWITCHBOARD_REDIS_CLUSTER" => Some("true".to_string()),
        other => env(other),
    };
    assert_eq!(router("{}", &from_env).unwrap(), cluster("redis://seed:7000"));
    assert_eq!(
        router("{redis_host: h}", &from_env).unwrap(),
        cluster("redis://h:6379"),
        "the config's address wins over the environment's; the cluster switch still applies"
    );

    let e = router("{redis_url: 'redis://a:1,unix:///tmp/r.sock'}", &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("router_settings.redis_url") && e.contains("unix://"),
        "{e}"
    );
    let e = router("{redis_url: 'redis://a:1,http://b:2'}", &env)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("router_settings.redis_url") && e.contains("redis://"),
        "{e}"
    );
    let e = router("{redis_startup_nodes: []}", &env).unwrap_err().to_string();
    assert!(e.contains("router_settings.redis_startup_nodes"), "{e}");
    let e = router("{redis_startup_nodes: [{host: a, port: seven}]}", &env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("redis_startup_nodes"), "{e}");

    // The cache inherits the router's Redis (cluster or not) unless it names its own.
    let cache = |yaml: &str| {
        Config::parse(&format!("{ISSUE_EXAMPLE}{yaml}\n"), &env)
            .unwrap()
            .cache
            .unwrap()
            .backend
    };
    match cache(
        "router_settings: {redis_url: 'redis://a:1,redis://b:2'}\nlitellm_settings: {cache: true, cache_params: {type: redis}}",
    ) {
        CacheBackend::Redis(a) => assert_eq!((a.url.expose(), a.cluster), ("redis://a:1,redis://b:2", true)),
        other => panic!("{other:?}"),
    }
    match cache(
        "litellm_settings: {cache: true, cache_params: {type: redis, redis_startup_nodes: [{host: c, port: 7000}]}}",
    ) {
        CacheBackend::Redis(a) => assert_eq!((a.url.expose(), a.cluster), ("redis://c:7000", true)),
        other => panic!("{other:?}"),
    }
}
