//! Small pure helpers shared by the provider translators.

use std::time::{SystemTime, UNIX_EPOCH};

use super::ProviderError;
use crate::domain::ErrorClass;

/// The error for a request parameter a provider cannot take (without `drop_params`); it names both.
pub fn unsupported(param: &str, provider: &str) -> ProviderError {
    ProviderError::new(
        ErrorClass::Unsupported,
        format!("{provider} does not support the parameter `{param}`; set `drop_params: true` to drop it"),
    )
}

/// A request body as JSON bytes; a body that cannot be encoded is the caller's bad request.
pub fn encode(body: &impl serde::Serialize) -> Result<Vec<u8>, ProviderError> {
    serde_json::to_vec(body)
        .map_err(|e| ProviderError::new(ErrorClass::BadRequest, format!("cannot encode request: {e}")))
}

/// Splits a `data:<mime>;base64,<data>` URL.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((mime, data))
}

/// Unix seconds now, for providers that do not date their answers.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `content-type: application/json`, the header every provider's request starts with.
pub fn json_headers() -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h
}

/// Adds a credential header, marked sensitive so that it never prints.
pub fn insert_secret(headers: &mut http::HeaderMap, name: http::HeaderName, value: &str) {
    if let Ok(mut v) = http::HeaderValue::from_str(value) {
        v.set_sensitive(true);
        headers.insert(name, v);
    }
}

/// The deployment's `api_base`, else the provider's default, without a trailing slash.
pub fn base_url(dep: &crate::config::DeploymentConfig) -> String {
    dep.api_base
        .as_deref()
        .or(dep.provider.default_base())
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string()
}

/// A classified upstream error. Authentication messages are replaced (providers echo key fragments
/// in them); other details are cut to a loggable length.
pub fn provider_error(class: ErrorClass, status: Option<u16>, detail: String) -> ProviderError {
    let message = if class == ErrorClass::Authentication {
        "upstream rejected the credentials".to_string()
    } else {
        let mut m = detail;
        super::client::truncate(&mut m, 300);
        m
    };
    ProviderError {
        class,
        status,
        message,
        retry_after: None,
    }
}

/// JSON headers plus `Authorization: Bearer <api_key>` when the deployment has a key.
pub fn bearer_headers(dep: &crate::config::DeploymentConfig) -> http::HeaderMap {
    let mut headers = json_headers();
    if let Some(key) = &dep.api_key {
        insert_secret(
            &mut headers,
            http::header::AUTHORIZATION,
            &format!("Bearer {}", key.expose()),
        );
    }
    headers
}
