//! Resolution of LiteLLM's `os.environ/NAME` references, anywhere in the document.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ConfigError;

const PREFIX: &str = "os.environ/";

/// Replaces every string `os.environ/NAME` in `value` by the variable's value, looking in
/// `overrides` (the config's own `environment_variables`) first, then in `lookup`.
pub fn resolve(
    value: &mut Value,
    overrides: &BTreeMap<String, String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    walk(value, &mut String::new(), overrides, lookup)
}

fn walk(
    value: &mut Value,
    path: &mut String,
    overrides: &BTreeMap<String, String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => {
            if let Some(name) = s.strip_prefix(PREFIX) {
                let name = name.trim();
                let resolved = overrides
                    .get(name)
                    .cloned()
                    .or_else(|| lookup(name))
                    .ok_or_else(|| {
                        ConfigError::at(path.as_str(), format!("environment variable {name} is not set"))
                    })?;
                *s = resolved;
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, overrides, lookup)?;
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                walk(v, path, overrides, lookup)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}
