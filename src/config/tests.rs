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
    assert!(!format!("{c:?}").contains("secret"), "Debug leaks a secret");
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
fn unimplemented_keys_are_collected_with_paths() {
    let c = Config::parse(
        r#"
model_list:
  - model_name: a
    litellm_params: {model: gpt-4o, top_k: 3}
    model_info: {base_model: azure/gpt-4}
router_settings: {redis_host: localhost, routing_strategy: least-busy}
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
            "model_list[0].model_info.base_model",
            "router_settings.redis_host",
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
