//! A string that must never be printed: provider keys, virtual keys, the master key.

use std::fmt;

/// Holds a secret. `Debug` and `Display` redact it; read it with [`Secret::expose`] at the one
/// place that sends it (an HTTP header, a constant-time comparison).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(s: impl Into<Box<str>>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Masks every credential in `secrets` found in `text`: upstream error text is logged, exported on
/// spans and returned to callers, and an upstream (or a proxy in front of it) may echo the request's
/// credentials in it. Values shorter than 8 characters are not searched for (no real credential is
/// that short, and masking them would mangle ordinary words).
pub fn redact(text: &mut String, secrets: &[Secret]) {
    for s in secrets {
        let s = s.expose();
        if s.len() >= 8 && text.contains(s) {
            *text = text.replace(s, "[REDACTED]");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_masks_every_occurrence_of_every_credential() {
        let secrets = [Secret::new("sk-provider-123456"), Secret::new("short")];
        let mut t = "bad key sk-provider-123456 (Bearer sk-provider-123456) short".to_string();
        redact(&mut t, &secrets);
        assert_eq!(t, "bad key [REDACTED] (Bearer [REDACTED]) short");
    }

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("sk-very-secret");
        assert!(!format!("{s:?} {s}").contains("very-secret"));
        assert_eq!(s.expose(), "sk-very-secret");
    }
}
