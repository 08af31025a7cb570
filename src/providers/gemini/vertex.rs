//! Vertex AI credentials: a static access token, or a service account's key exchanged for one through
//! Google's OAuth JWT-bearer flow (RS256 with `ring`), cached until shortly before it expires and
//! refreshed by one request at a time.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use http::HeaderValue;
use serde_json::{Value, json};
use tokio::{sync::Mutex, time::Instant};

use crate::{
    domain::{ErrorClass, Secret},
    providers::{HttpClient, ProviderError, client},
};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Refresh this long before the token expires.
const EARLY: Duration = Duration::from_secs(60);

pub enum TokenSource {
    Static(Secret),
    ServiceAccount(ServiceAccount),
}

pub struct ServiceAccount {
    client_email: String,
    token_uri: String,
    key: Result<Arc<ring::signature::RsaKeyPair>, String>,
    cached: Mutex<Option<(Secret, Instant)>>,
}

fn auth_error(message: impl Into<String>) -> ProviderError {
    ProviderError::new(ErrorClass::Authentication, message)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl ServiceAccount {
    /// From the service-account JSON (already validated for shape by the config layer).
    pub fn from_json(v: &Value) -> Self {
        let pem = v["private_key"].as_str().unwrap_or_default();
        let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let key = base64::engine::general_purpose::STANDARD
            .decode(der.trim())
            .map_err(|e| format!("private_key is not base64 PEM: {e}"))
            .and_then(|der| {
                ring::signature::RsaKeyPair::from_pkcs8(&der)
                    .map_err(|e| format!("private_key is not a PKCS#8 RSA key: {e}"))
            })
            .map(Arc::new);
        Self {
            client_email: v["client_email"].as_str().unwrap_or_default().to_string(),
            token_uri: v["token_uri"]
                .as_str()
                .unwrap_or("https://oauth2.googleapis.com/token")
                .to_string(),
            key,
            cached: Mutex::new(None),
        }
    }

    /// A signed JWT asking for a cloud-platform token.
    fn assertion(&self, now_unix: u64) -> Result<String, ProviderError> {
        let key = self
            .key
            .as_ref()
            .map_err(|e| auth_error(format!("invalid vertex_credentials: {e}")))?;
        let header = b64(json!({"alg": "RS256", "typ": "JWT"}).to_string().as_bytes());
        let claims = b64(json!({
            "iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
            "iat": now_unix, "exp": now_unix + 3600,
        })
        .to_string()
        .as_bytes());
        let signing_input = format!("{header}.{claims}");
        let mut sig = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| auth_error("cannot sign the service-account JWT"))?;
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }

    async fn token(&self, http: &HttpClient) -> Result<Secret, ProviderError> {
        // One refresh at a time; everyone else waits for it and reuses the result.
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            self.assertion(now_unix)?
        );
        let req = http
            .request(http::Method::POST, &self.token_uri)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        let resp = client::send(req)
            .await
            .map_err(|e| auth_error(format!("token endpoint unreachable: {}", e.message)))?;
        let status = resp.status();
        let bytes = client::read_body(resp).await?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (Some(token), true) = (v["access_token"].as_str(), status.is_success()) else {
            return Err(auth_error(format!(
                "the token endpoint refused the service account (HTTP {status})"
            )));
        };
        let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
        let token = Secret::new(token);
        *cached = Some((token.clone(), Instant::now() + lifetime.saturating_sub(EARLY)));
        Ok(token)
    }
}

impl TokenSource {
    /// The `Authorization` header value for the next request.
    pub async fn header(&self, http: &HttpClient) -> Result<HeaderValue, ProviderError> {
        let token = match self {
            TokenSource::Static(t) => t.clone(),
            TokenSource::ServiceAccount(sa) => sa.token(http).await?,
        };
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| auth_error("the access token is not a valid header value"))?;
        v.set_sensitive(true);
        Ok(v)
    }
}
