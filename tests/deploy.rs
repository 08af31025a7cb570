//! What can be checked of deploy/ without a container engine (scripts/check-deploy runs hadolint,
//! kubernetes-validate and yamllint): the compose file references only files that exist, its
//! replicas and load balancer agree, and every config shipped in deploy/ passes Switchboard's own
//! validation with the environment the manifests give it.

use std::path::Path;

use serde_json::Value;
use switchboard::config::Config;

fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

#[test]
fn the_compose_stack_references_only_what_exists() {
    let compose = yaml("compose.yaml");
    let services = compose["services"].as_object().expect("services");
    for name in [
        "switchboard-1",
        "switchboard-2",
        "switchboard-3",
        "envoy",
        "redis",
        "etcd",
        "fake-upstream",
        "otel-collector",
        "jaeger",
    ] {
        assert!(services.contains_key(name), "service {name}");
    }
    let mut host_ports = Vec::new();
    for (name, s) in services {
        // The `<<: *switchboard` merge is resolved by the parser: replicas carry build and volumes.
        if let Some(build) = s.get("build") {
            let context = deploy(build["context"].as_str().unwrap());
            assert!(
                context.join(build["dockerfile"].as_str().unwrap()).is_file(),
                "{name}: dockerfile"
            );
            let target = build["target"].as_str().unwrap();
            let dockerfile = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
            assert!(
                dockerfile.contains(&format!(" AS {target}")),
                "{name}: stage {target}"
            );
        } else {
            assert!(
                s["image"].as_str().is_some_and(|i| i.contains(':')),
                "{name}: a tagged image"
            );
        }
        for v in s.get("volumes").and_then(Value::as_array).into_iter().flatten() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            assert!(deploy(host).is_file(), "{name}: volume source {host} exists");
        }
        for p in s.get("ports").and_then(Value::as_array).into_iter().flatten() {
            host_ports.push(p.as_str().unwrap().split(':').next().unwrap().to_string());
        }
        for d in s.get("depends_on").into_iter().flat_map(|d| match d {
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect::<Vec<_>>(),
            Value::Object(o) => o.keys().cloned().collect(),
            _ => Vec::new(),
        }) {
            assert!(
                services.contains_key(&d),
                "{name} depends on {d}, which is not a service"
            );
        }
    }
    let unique: std::collections::HashSet<_> = host_ports.iter().collect();
    assert_eq!(
        unique.len(),
        host_ports.len(),
        "host ports are unique: {host_ports:?}"
    );
    // Each replica has its own id and advertised address, and Envoy balances over all three.
    let envoy = std::fs::read_to_string(deploy("compose/envoy.yaml")).unwrap();
    for i in 1..=3 {
        let cmd = services[&format!("switchboard-{i}")]["command"].to_string();
        assert!(cmd.contains(&format!("switchboard-{i}:4000")), "{cmd}");
        assert!(envoy.contains(&format!("address: switchboard-{i}, port_value: 4000")));
    }
}

#[test]
fn the_shipped_configs_are_valid() {
    // The compose replicas' environment (x-switchboard.environment).
    let stack = yaml("compose.yaml");
    let vars = stack["services"]["switchboard-1"]["environment"].clone();
    let env = |name: &str| vars.get(name).map(|v| v.as_str().unwrap_or("x").to_string());
    let compose = std::fs::read_to_string(deploy("compose/config.yaml")).unwrap();
    let c = Config::parse(&compose, &env).expect("deploy/compose/config.yaml");
    assert!(
        c.etcd.is_some() && c.router.redis.is_some(),
        "the compose stack is a fleet"
    );

    // The ConfigMap's config, with the environment the Deployment gives the container.
    let configmap = yaml("kubernetes/configmap.yaml");
    let text = configmap["data"]["config.yaml"].as_str().unwrap();
    let deployment = std::fs::read_to_string(deploy("kubernetes/deployment.yaml")).unwrap();
    let provided = |name: &str| deployment.contains(&format!("- name: {name}\n"));
    let env = |name: &str| -> Option<String> {
        provided(name).then(|| match name {
            "SWITCHBOARD_REDIS_URL" => "redis://redis:6379".into(),
            "SWITCHBOARD_ETCD_ENDPOINTS" => "etcd-0.etcd:2379".into(),
            _ => format!("test-value-for-{name}"),
        })
    };
    let k = Config::parse(text, &env).expect("the ConfigMap's config.yaml");
    assert_eq!(k.deployments.len(), 2);
    assert!(k.etcd.is_some() && k.router.redis.is_some() && k.master_key.is_some());
}
