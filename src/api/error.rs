//! THE mapping of every error a request can meet to a gRPC status (HTTP follows from it): the right
//! code, a message that names the problem, and `google.rpc.ErrorInfo` with a stable reason
//! (plus `RetryInfo` where a retry makes sense). Internal detail stays in logs and spans.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    auth::{AuthError, StoreError, manage::ManageError},
    config::ConfigError,
    control::ControlError,
    domain::ErrorClass,
    limits::Refusal,
    router::{AttemptRecord, RouteError},
};

/// `google.rpc.ErrorInfo.domain` of every error we produce.
pub const ERROR_DOMAIN: &str = "switchboard";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid {field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// HTTP only: the body is not JSON.
    #[error("request body is not valid JSON at line {line} column {column}: {message}")]
    MalformedJson {
        line: usize,
        column: usize,
        message: String,
    },
    /// HTTP only: JSON, but a field has the wrong shape (`field` as a JSON path when known).
    #[error("invalid {field}: {message}")]
    Unprocessable { field: String, message: String },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A budget or rate limit of the caller's key, team, user, end user or the gateway.
    #[error(transparent)]
    Quota(#[from] Refusal),
    /// The ledger cannot be reached and a fail-closed rule applies.
    #[error("{0}; budgets fail closed, so the request was not sent")]
    LedgerDown(String),
    #[error("this key may not use model {model:?}")]
    ModelNotAllowed { model: String },
    #[error("admin calls need the master key")]
    NotAdmin,
    #[error(transparent)]
    Manage(#[from] ManageError),
    #[error(transparent)]
    Control(#[from] ControlError),
}

/// The pieces of a status, shared by the gRPC and HTTP renderings.
struct Mapped {
    code: Code,
    reason: &'static str,
    message: String,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
    field: Option<String>,
}

fn attempts_summary(attempts: &[AttemptRecord]) -> String {
    attempts
        .iter()
        .map(|a| match a.error {
            Some(class) => format!("{} ({class})", a.deployment),
            None if a.cancelled => format!("{} (cancelled)", a.deployment),
            None => format!("{} (ok)", a.deployment),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl ApiError {
    fn mapped(&self) -> Mapped {
        let m = |code, reason, message: String| Mapped {
            code,
            reason,
            message,
            metadata: HashMap::new(),
            retry_after: None,
            field: None,
        };
        match self {
            ApiError::InvalidArgument { field, message } => Mapped {
                field: Some(field.clone()),
                metadata: HashMap::from([("field".into(), field.clone())]),
                ..m(
                    Code::InvalidArgument,
                    "INVALID_REQUEST",
                    format!("invalid {field}: {message}"),
                )
            },
            ApiError::Unauthenticated(e @ AuthError::MasterRefused) => {
                m(Code::PermissionDenied, e.reason(), e.to_string())
            }
            ApiError::Unauthenticated(e) => m(Code::Unauthenticated, e.reason(), e.to_string()),
            ApiError::MalformedJson { .. } => m(Code::InvalidArgument, "MALFORMED_JSON", self.to_string()),
            ApiError::Unprocessable { field, .. } => Mapped {
                field: Some(field.clone()),
                metadata: HashMap::from([("field".into(), field.clone())]),
                ..m(Code::InvalidArgument, "UNPROCESSABLE_REQUEST", self.to_string())
            },
            ApiError::BodyTooLarge { .. } => m(Code::InvalidArgument, "REQUEST_TOO_LARGE", self.to_string()),
            ApiError::Route(RouteError::UnknownGroup(g)) => Mapped {
                metadata: HashMap::from([("model".into(), g.to_string())]),
                ..m(
                    Code::NotFound,
                    "MODEL_NOT_FOUND",
                    format!("model group {:?} does not exist", g.as_str()),
                )
            },
            ApiError::Route(RouteError::UnknownFallback(g)) => Mapped {
                field: Some("routing.fallbacks".into()),
                metadata: HashMap::from([
                    ("field".into(), "routing.fallbacks".into()),
                    ("model".into(), g.to_string()),
                ]),
                ..m(
                    Code::InvalidArgument,
                    "INVALID_REQUEST",
                    format!(
                        "invalid routing.fallbacks: model group {:?} does not exist",
                        g.as_str()
                    ),
                )
            },
            ApiError::Route(RouteError::NoDeploymentForTags { group, tags }) => Mapped {
                field: Some("routing.tags".into()),
                metadata: HashMap::from([
                    ("field".into(), "routing.tags".into()),
                    ("model".into(), group.to_string()),
                ]),
                ..m(
                    Code::InvalidArgument,
                    "NO_DEPLOYMENT_FOR_TAGS",
                    format!(
                        "invalid routing.tags: no deployment of {:?} carries any of {tags:?}",
                        group.as_str()
                    ),
                )
            },
            ApiError::Route(RouteError::AllCoolingDown { retry_in, attempts }) => Mapped {
                retry_after: Some(*retry_in),
                metadata: HashMap::from([("attempts".into(), attempts_summary(attempts))]),
                ..m(
                    Code::Unavailable,
                    "ALL_DEPLOYMENTS_COOLING_DOWN",
                    format!(
                        "every deployment is cooling down after failures; the first returns in {} ms",
                        retry_in.as_millis()
                    ),
                )
            },
            ApiError::Route(RouteError::RateCapped { attempts }) => Mapped {
                retry_after: Some(Duration::from_secs(1)),
                metadata: HashMap::from([("attempts".into(), attempts_summary(attempts))]),
                ..m(
                    Code::ResourceExhausted,
                    "DEPLOYMENT_RATE_LIMIT",
                    "every deployment of the model group is at its rpm/tpm limit for this minute".to_string(),
                )
            },
            ApiError::Route(RouteError::AtCapacity { attempts }) => Mapped {
                retry_after: Some(Duration::from_secs(1)),
                metadata: HashMap::from([("attempts".into(), attempts_summary(attempts))]),
                ..m(
                    Code::ResourceExhausted,
                    "DEPLOYMENTS_AT_CAPACITY",
                    "every deployment is at max_parallel_requests and the queue is full".to_string(),
                )
            },
            ApiError::Route(RouteError::Rejected { error, attempts }) => {
                let (reason, what) = match error.class {
                    ErrorClass::ContextWindowExceeded => (
                        "CONTEXT_WINDOW_EXCEEDED",
                        "the prompt does not fit the model's context window",
                    ),
                    ErrorClass::ContentPolicy => (
                        "CONTENT_POLICY_VIOLATION",
                        "the provider's content policy refused the request",
                    ),
                    _ => (
                        "UPSTREAM_BAD_REQUEST",
                        "the provider rejected the request as invalid",
                    ),
                };
                match attempts.last() {
                    Some(a) => Mapped {
                        metadata: HashMap::from([("deployment".into(), a.deployment.to_string())]),
                        ..m(
                            Code::InvalidArgument,
                            reason,
                            format!("{what} (deployment {})", a.deployment),
                        )
                    },
                    // Refused before any call (the context-window check): our own message says why.
                    None => m(
                        Code::InvalidArgument,
                        reason,
                        format!("{what}: {}", error.message),
                    ),
                }
            }
            ApiError::Route(RouteError::Exhausted { last, attempts }) => {
                let summary = attempts_summary(attempts);
                let all_rate_limited = attempts.iter().all(|a| a.error == Some(ErrorClass::RateLimited));
                if attempts.iter().all(|a| a.error == Some(ErrorClass::Unsupported)) {
                    // Our own translator's message: it names the parameter and the provider.
                    return Mapped {
                        metadata: HashMap::from([("attempts".into(), summary)]),
                        ..m(
                            Code::InvalidArgument,
                            "UNSUPPORTED_PARAMETER",
                            last.message.clone(),
                        )
                    };
                }
                let metadata = HashMap::from([("attempts".into(), summary.clone())]);
                if all_rate_limited {
                    Mapped {
                        metadata,
                        retry_after: Some(last.retry_after.unwrap_or(Duration::from_secs(1))),
                        ..m(
                            Code::ResourceExhausted,
                            "UPSTREAM_RATE_LIMITED",
                            format!("every deployment is rate limited: {summary}"),
                        )
                    }
                } else {
                    Mapped {
                        metadata,
                        ..m(
                            Code::Unavailable,
                            "ALL_DEPLOYMENTS_FAILED",
                            format!("all {} attempts failed: {summary}", attempts.len()),
                        )
                    }
                }
            }
            ApiError::Route(RouteError::DeadlineExceeded { attempts }) => {
                let summary = attempts_summary(attempts);
                let message = if attempts.is_empty() {
                    "deadline exceeded before any upstream attempt".to_string()
                } else {
                    format!("deadline exceeded after {} attempts: {summary}", attempts.len())
                };
                Mapped {
                    metadata: HashMap::from([("attempts".into(), summary)]),
                    ..m(Code::DeadlineExceeded, "DEADLINE_EXCEEDED", message)
                }
            }
            ApiError::Quota(r) => {
                let mut metadata = HashMap::from([("scope".into(), r.scope().to_string())]);
                if let Refusal::Budget {
                    limit,
                    spent,
                    reserved,
                    resets_at_ms,
                    ..
                } = r
                {
                    metadata.insert("limit_usd".into(), format!("{:.6}", limit.usd()));
                    metadata.insert("spent_usd".into(), format!("{:.6}", spent.usd()));
                    metadata.insert("reserved_usd".into(), format!("{:.6}", reserved.usd()));
                    if let Some(at) = resets_at_ms {
                        metadata.insert("resets_at_ms".into(), at.to_string());
                    }
                }
                if let Refusal::Rpm { limit, .. } | Refusal::Tpm { limit, .. } = r {
                    metadata.insert("limit".into(), limit.to_string());
                }
                Mapped {
                    metadata,
                    retry_after: r.retry_after_ms().map(Duration::from_millis),
                    ..m(Code::ResourceExhausted, r.reason(), r.to_string())
                }
            }
            ApiError::LedgerDown(_) => m(Code::Unavailable, "LEDGER_UNAVAILABLE", self.to_string()),
            ApiError::ModelNotAllowed { model } => Mapped {
                metadata: HashMap::from([("model".into(), model.clone())]),
                ..m(Code::PermissionDenied, "MODEL_NOT_ALLOWED", self.to_string())
            },
            ApiError::NotAdmin => m(Code::PermissionDenied, "ADMIN_ONLY", self.to_string()),
            ApiError::Manage(ManageError::Invalid { field, message }) => Mapped {
                field: Some(field.clone()),
                metadata: HashMap::from([("field".into(), field.clone())]),
                ..m(
                    Code::InvalidArgument,
                    "INVALID_REQUEST",
                    format!("invalid {field}: {message}"),
                )
            },
            ApiError::Control(ControlError::Invalid(ConfigError::Invalid { path, message })) => Mapped {
                field: Some(path.clone()),
                metadata: HashMap::from([("field".into(), path.clone())]),
                ..m(
                    Code::InvalidArgument,
                    "INVALID_CONFIG",
                    format!("config rejected, nothing changed: {path}: {message}"),
                )
            },
            ApiError::Control(ControlError::Invalid(e)) => m(
                Code::InvalidArgument,
                "INVALID_CONFIG",
                format!("config rejected, nothing changed: {e}"),
            ),
            ApiError::Control(ControlError::NoSuchVersion(_)) => {
                m(Code::NotFound, "NOT_FOUND", self.to_string())
            }
            ApiError::Control(ControlError::NotLeader { .. }) => m(
                Code::Unavailable,
                "NO_CONFIG_LEADER",
                "no config leader is reachable right now; nothing changed".into(),
            ),
            ApiError::Control(ControlError::Unavailable(why)) => m(
                Code::Unavailable,
                "CONFIG_STORE_UNAVAILABLE",
                format!("config store unavailable, nothing changed: {why}"),
            ),
            ApiError::Manage(ManageError::InUse(msg)) => m(Code::FailedPrecondition, "IN_USE", msg.clone()),
            ApiError::Manage(ManageError::Store(e)) => match e {
                StoreError::AlreadyExists(..) => m(Code::AlreadyExists, "ALREADY_EXISTS", e.to_string()),
                StoreError::NotFound(..) => m(Code::NotFound, "NOT_FOUND", e.to_string()),
                StoreError::Unavailable(_) => m(Code::Unavailable, "STORE_UNAVAILABLE", e.to_string()),
            },
            ApiError::Route(RouteError::StreamInterrupted(e)) => m(
                Code::Unavailable,
                "STREAM_INTERRUPTED",
                format!("the upstream stream failed after it had started ({})", e.class),
            ),
        }
    }

    /// The stable reason (`google.rpc.ErrorInfo.reason`), also the `error.type` of spans.
    pub fn reason(&self) -> &'static str {
        self.mapped().reason
    }

    pub fn to_status(&self) -> Status {
        let m = self.mapped();
        let mut details = ErrorDetails::new();
        details.set_error_info(m.reason, ERROR_DOMAIN, m.metadata);
        if let Some(after) = m.retry_after {
            details.set_retry_info(Some(after));
        }
        if let Some(field) = m.field {
            details.add_bad_request_violation(field, m.message.clone());
        }
        Status::with_error_details(m.code, m.message, details)
    }
}

/// An error as the OpenAI HTTP API renders it: status code, headers, `{"error": {...}}` body.
pub struct HttpError {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: serde_json::Value,
}

impl ApiError {
    /// The same mapping as [`ApiError::to_status`], in OpenAI's HTTP shape and status codes.
    pub fn to_http(&self) -> HttpError {
        let m = self.mapped();
        let status = match (self, m.code) {
            (ApiError::Unprocessable { .. }, _) => 422,
            (ApiError::BodyTooLarge { .. }, _) => 413,
            (_, Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange) => 400,
            (_, Code::Unauthenticated) => 401,
            (_, Code::PermissionDenied) => 403,
            (_, Code::NotFound) => 404,
            (_, Code::AlreadyExists) => 409,
            (_, Code::DeadlineExceeded) => 408,
            (_, Code::ResourceExhausted) => 429,
            (_, Code::Unavailable) => 503,
            _ => 500,
        };
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            408 => "timeout_error",
            429 => "rate_limit_error",
            400 | 413 | 422 => "invalid_request_error",
            _ => "api_error",
        };
        // OpenAI's own codes where one exists, so that SDK users' checks keep working.
        let code = match m.reason {
            "MODEL_NOT_FOUND" => "model_not_found".to_string(),
            "INVALID_API_KEY" => "invalid_api_key".to_string(),
            "CONTEXT_WINDOW_EXCEEDED" => "context_length_exceeded".to_string(),
            "CONTENT_POLICY_VIOLATION" => "content_policy_violation".to_string(),
            "UPSTREAM_RATE_LIMITED" => "rate_limit_exceeded".to_string(),
            other => other.to_ascii_lowercase(),
        };
        HttpError {
            status,
            retry_after: m.retry_after,
            body: serde_json::json!({
                "error": {"message": m.message, "type": kind, "param": m.field, "code": code}
            }),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.to_status()
    }
}
