//! Secrets out of a config before it is shown: provider keys, the master key, passwords and
//! credentials become `***`. `os.environ/NAME` references stay: they name a secret, not reveal it.

use serde_json::Value;

fn secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("key") && !n.ends_with("_keys") && n != "key_alias"
        || n.contains("password")
        || n.contains("secret")
        || n.contains("token")
        || n.contains("credentials")
        // Redis URLs carry passwords; webhook URLs often carry tokens.
        || n == "url"
        || n.ends_with("_url")
}

fn mask(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if secret_field(k) {
                    if let Value::String(s) = v
                        && !s.starts_with("os.environ/")
                    {
                        *s = "***".into();
                    } else if !v.is_string() && !v.is_null() {
                        *v = Value::String("***".into());
                    }
                } else {
                    mask(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        _ => {}
    }
}

/// The config as YAML with its secrets masked (comments and key order are not kept).
pub fn mask_secrets(yaml: &str) -> String {
    let Ok(mut doc) = serde_saphyr::from_str::<Value>(yaml) else {
        return "# (unparseable config not shown)\n".into();
    };
    mask(&mut doc);
    serde_saphyr::to_string(&doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_and_environment_references_kept() {
        let out = mask_secrets(
            "model_list:\n  - model_name: a\n    litellm_params: {model: gpt-4o, api_key: sk-live-123, rpm: 5}\n  - model_name: b\n    litellm_params: {model: gpt-4o, api_key: os.environ/OPENAI_API_KEY, aws_secret_access_key: abc, vertex_credentials: '{\"private_key\": \"x\"}'}\ngeneral_settings: {master_key: sk-master, etcd_password: pw, alert_webhook_url: 'https://hooks.example/T0/XYZ'}\nrouter_settings: {redis_url: 'redis://:pw@h:6379', redis_startup_nodes: [{host: n1, port: 7000}], redis_password: rpw}\nlitellm_settings: {cache_params: {type: redis, url: 'redis://:cpw@c:6379'}}\n",
        );
        for secret in [
            "sk-live-123",
            "sk-master",
            "abc",
            "private_key",
            "pw@",
            "rpw",
            "cpw@",
            "XYZ",
        ] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("os.environ/OPENAI_API_KEY"), "{out}");
        assert!(out.contains("rpm: 5"), "{out}");
        assert!(
            out.contains("n1") && out.contains("7000"),
            "seed addresses are not secrets: {out}"
        );
    }
}
