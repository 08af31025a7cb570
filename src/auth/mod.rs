//! Who is calling. Today: the master key from `general_settings.master_key` (or no auth at all when
//! none is configured). Virtual keys, teams and users plug in behind the same [`Principal`].

use subtle::ConstantTimeEq;

use crate::domain::Secret;

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No master key is configured: the gateway is open (local development).
    Anonymous,
    /// The master key: every model, every admin call.
    Master,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing credentials: send `authorization: Bearer <key>`")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <key>`")]
    Malformed,
    #[error("invalid API key")]
    Invalid,
}

impl AuthError {
    /// Stable reason for `google.rpc.ErrorInfo`.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "MISSING_API_KEY",
            AuthError::Malformed => "MALFORMED_API_KEY",
            AuthError::Invalid => "INVALID_API_KEY",
        }
    }
}

pub struct Authenticator {
    master_key: Option<Secret>,
}

impl Authenticator {
    pub fn new(master_key: Option<Secret>) -> Self {
        Self { master_key }
    }

    /// Checks the value of an `authorization` header (gRPC metadata or HTTP).
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, AuthError> {
        let Some(master) = &self.master_key else {
            return Ok(Principal::Anonymous);
        };
        let token = bearer_token(authorization.ok_or(AuthError::Missing)?)?;
        // Constant time in the key's content; only the length can be learnt, as with any bearer scheme.
        if bool::from(token.ct_eq(master.expose().as_bytes())) {
            Ok(Principal::Master)
        } else {
            Err(AuthError::Invalid)
        }
    }
}

fn bearer_token(header: &[u8]) -> Result<&[u8], AuthError> {
    let (scheme, rest) = match header.iter().position(|b| *b == b' ') {
        Some(i) => (&header[..i], &header[i + 1..]),
        None => return Err(AuthError::Malformed),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthError::Malformed);
    }
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_key_is_required_when_configured() {
        let a = Authenticator::new(Some(Secret::new("sk-master")));
        assert_eq!(a.authenticate(Some(b"Bearer sk-master")), Ok(Principal::Master));
        assert_eq!(a.authenticate(Some(b"bearer  sk-master ")), Ok(Principal::Master));
        assert_eq!(a.authenticate(None), Err(AuthError::Missing));
        assert_eq!(a.authenticate(Some(b"sk-master")), Err(AuthError::Malformed));
        assert_eq!(
            a.authenticate(Some(b"Basic sk-master")),
            Err(AuthError::Malformed)
        );
        assert_eq!(a.authenticate(Some(b"Bearer sk-maste")), Err(AuthError::Invalid));
        assert_eq!(
            a.authenticate(Some(b"Bearer sk-masterx")),
            Err(AuthError::Invalid)
        );
    }

    #[test]
    fn open_when_no_master_key() {
        let a = Authenticator::new(None);
        assert_eq!(a.authenticate(None), Ok(Principal::Anonymous));
    }
}
