//! Prompt and completion text on spans: off unless opted in (`general_settings.trace_content:
//! true`), and redacted before it leaves the process: anything shaped like an API key (`sk-...`),
//! bearer tokens, e-mail addresses, and the terms listed in `general_settings.trace_content_redact`
//! become `[REDACTED]`.

/// The opt-in, with its redaction terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentCapture {
    terms: Vec<String>,
}

const MASK: &str = "[REDACTED]";

fn secretish(w: &str) -> bool {
    let key = w.starts_with("sk-") && w.len() >= 11;
    let email = w
        .split_once('@')
        .is_some_and(|(a, b)| !a.is_empty() && b.contains('.') && !b.starts_with('.'));
    key || email
}

impl ContentCapture {
    pub fn new(terms: Vec<String>) -> Self {
        Self { terms }
    }

    /// `text` with secrets and the configured terms masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut after_bearer = false;
        for piece in text.split_inclusive(char::is_whitespace) {
            let word = piece.trim_end();
            let space = &piece[word.len()..];
            // Punctuation around a masked word stays (`key: sk-...,` keeps its comma).
            let core = word.trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '_');
            if !core.is_empty() && (after_bearer || secretish(core)) {
                let start = word.find(core).unwrap_or(0);
                out.push_str(&word[..start]);
                out.push_str(MASK);
                out.push_str(&word[start + core.len()..]);
            } else {
                out.push_str(word);
            }
            out.push_str(space);
            after_bearer = word.eq_ignore_ascii_case("bearer");
        }
        for t in &self.terms {
            out = out.replace(t.as_str(), MASK);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tokens_emails_and_listed_terms_are_masked() {
        let c = ContentCapture::new(vec!["Project Falcon".into()]);
        let out = c.redact(
            "my key is sk-live-abcdef123456, auth: Bearer eyJhbGciOi, mail ana@example.com about Project Falcon today",
        );
        assert_eq!(
            out,
            "my key is [REDACTED], auth: Bearer [REDACTED], mail [REDACTED] about [REDACTED] today"
        );
        assert_eq!(
            c.redact("sk-short is fine, so is a@b"),
            "sk-short is fine, so is a@b"
        );
    }
}
