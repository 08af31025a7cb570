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
