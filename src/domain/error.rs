//! The closed set of upstream failure classes the router acts on.

use std::fmt;

/// How an upstream attempt failed. Every provider maps its statuses and error bodies onto these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    RateLimited,
    Overloaded,
    ContextWindowExceeded,
    ContentPolicy,
    Authentication,
    BadRequest,
    NotFound,
    Timeout,
    ServerError,
    Connection,
    MalformedResponse,
    /// This deployment's provider cannot take a parameter of the request (without `drop_params`).
    /// Another deployment may: fail over, but never cool the deployment down for it.
    Unsupported,
}

impl ErrorClass {
    /// The request itself is at fault: another deployment of the same model would refuse it too,
    /// so the router stops instead of failing over (fallback groups may still apply).
    pub fn is_request_fault(self) -> bool {
        matches!(
            self,
            Self::BadRequest | Self::ContextWindowExceeded | Self::ContentPolicy
        )
    }

    /// Transient: the same deployment may succeed if tried again later.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Overloaded
                | Self::Timeout
                | Self::ServerError
                | Self::Connection
                | Self::MalformedResponse
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::ContextWindowExceeded => "context_window_exceeded",
            Self::ContentPolicy => "content_policy",
            Self::Authentication => "authentication",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Timeout => "timeout",
            Self::ServerError => "server_error",
            Self::Connection => "connection",
            Self::MalformedResponse => "malformed_response",
            Self::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
