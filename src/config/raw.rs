//! The LiteLLM `config.yaml` shape as serde structs. Only the keys Switchboard implements are
//! fields; every other key is reported by `serde_ignored` as "not implemented yet".

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub model_list: Vec<RawModel>,
    pub router_settings: RawRouterSettings,
    pub litellm_settings: RawLitellmSettings,
    pub general_settings: RawGeneralSettings,
    /// Values that `os.environ/NAME` references resolve to before the process environment.
    pub environment_variables: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct RawModel {
    pub model_name: String,
    pub litellm_params: RawLitellmParams,
    #[serde(default)]
    pub model_info: RawModelInfo,
}

#[derive(Debug, Deserialize)]
pub struct RawLitellmParams {
    pub model: String,
    pub api_base: Option<String>,
    pub api_key: Option<String>,
    pub api_version: Option<String>,
    pub weight: Option<f64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// Seconds.
    pub timeout: Option<f64>,
    /// Seconds.
    pub stream_timeout: Option<f64>,
    pub mock_response: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawModelInfo {
    pub id: Option<String>,
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRouterSettings {
    pub routing_strategy: Option<String>,
    pub num_retries: Option<u32>,
    /// Seconds.
    pub timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawLitellmSettings {
    pub num_retries: Option<u32>,
    /// Seconds.
    pub request_timeout: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawGeneralSettings {
    pub master_key: Option<String>,
}
