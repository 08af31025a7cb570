//! Does a prompt fit a deployment's context window (`max_input_tokens`)? Decided before the call,
//! and only a prompt that does not fit is refused: counted exactly with OpenAI's tokenizer for
//! OpenAI models, estimated elsewhere. The common case costs nothing: every BPE token is at least one
//! byte, so a prompt whose byte length (plus per-message overhead) is within the window fits without
//! counting. Exact counts run off the async threads, at most once per tokenizer per request.

use tokio::sync::OnceCell;

use crate::domain::{ChatRequest, Content, ContentPart, Message};

/// How a deployment's prompt tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// gpt-4o, gpt-4.1, gpt-5, o1/o3/o4 ...
    O200k,
    /// gpt-4, gpt-3.5.
    Cl100k,
    /// About four characters per token.
    Estimate,
}

impl Counter {
    pub fn for_model(model: &str) -> Counter {
        let name = model.rsplit('/').next().unwrap_or(model);
        let o200k = [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "gpt-oss",
            "o1",
            "o3",
            "o4",
            "chatgpt-4o",
        ];
        if o200k.iter().any(|p| name.starts_with(p)) {
            Counter::O200k
        } else if ["gpt-4", "gpt-3.5", "gpt-35"].iter().any(|p| name.starts_with(p)) {
            Counter::Cl100k
        } else {
            Counter::Estimate
        }
    }
}

/// OpenAI's chat format: each message costs its content plus about 3 tokens, the reply primer 3.
const PER_MESSAGE: u64 = 4;
const PRIMER: u64 = 3;

/// One request's prompt, measured lazily.
pub struct Prompt<'a> {
    req: Option<&'a ChatRequest>,
    bytes: u64,
    chars: u64,
    messages: u64,
    o200k: OnceCell<u64>,
    cl100k: OnceCell<u64>,
}

fn texts(messages: &[Message]) -> impl Iterator<Item = &str> {
    messages.iter().flat_map(|m| {
        let (text, parts) = match &m.content {
            Content::Text(t) => (Some(t.as_str()), None),
            Content::Parts(p) => (None, Some(p)),
        };
        let parts = parts.into_iter().flatten().filter_map(|p| match p {
            ContentPart::Text(t) => Some(t.as_str()),
            ContentPart::Image { .. } => None,
        });
        text.into_iter()
            .chain(parts)
            .chain(m.tool_calls.iter().map(|c| c.arguments.as_str()))
            .chain(m.name.as_deref())
    })
}

impl<'a> Prompt<'a> {
    pub fn chat(req: &'a ChatRequest) -> Self {
        let (mut bytes, mut chars) = (0u64, 0u64);
        for t in texts(&req.messages) {
            bytes += t.len() as u64;
            chars += t.chars().count() as u64;
        }
        Self {
            req: Some(req),
            bytes,
            chars,
            messages: req.messages.len() as u64,
            o200k: OnceCell::new(),
            cl100k: OnceCell::new(),
        }
    }

    /// No context check (embeddings).
    pub fn unchecked() -> Self {
        Self {
            req: None,
            bytes: 0,
            chars: 0,
            messages: 0,
            o200k: OnceCell::new(),
            cl100k: OnceCell::new(),
        }
    }

    fn overhead(&self) -> u64 {
        self.messages * PER_MESSAGE + PRIMER
    }

    /// [`Prompt::estimate`] of these messages, without building a `Prompt`.
    pub fn estimate_messages(messages: &[Message]) -> u64 {
        let chars: u64 = texts(messages).map(|t| t.chars().count() as u64).sum();
        chars.div_ceil(4) + messages.len() as u64 * PER_MESSAGE + PRIMER
    }

    /// Prompt tokens before the provider reports real numbers (about four characters per token plus
    /// per-message overhead): reserved against usage caps, and reported when a prompt is refused.
    pub fn estimate(&self) -> u64 {
        self.chars.div_ceil(4) + self.overhead()
    }

    /// True unless the prompt provably (or, without a tokenizer, by estimate) exceeds `max`.
    pub async fn fits(&self, counter: Counter, max: Option<u32>) -> bool {
        let (Some(req), Some(max)) = (self.req, max) else {
            return true;
        };
        let max = u64::from(max);
        if self.bytes + self.overhead() <= max {
            return true;
        }
        let tokens = match counter {
            Counter::Estimate => self.estimate(),
            Counter::O200k => *self.o200k.get_or_init(|| count(req, Counter::O200k)).await + self.overhead(),
            Counter::Cl100k => {
                *self.cl100k.get_or_init(|| count(req, Counter::Cl100k)).await + self.overhead()
            }
        };
        tokens <= max
    }
}

/// Exact token count of the prompt's text on a blocking thread (the first use loads the vocabulary).
async fn count(req: &ChatRequest, counter: Counter) -> u64 {
    let owned: Vec<String> = texts(&req.messages).map(str::to_string).collect();
    let counted = tokio::task::spawn_blocking(move || {
        let bpe = match counter {
            Counter::Cl100k => tiktoken_rs::cl100k_base_singleton(),
            _ => tiktoken_rs::o200k_base_singleton(),
        };
        owned
            .iter()
            .map(|t| bpe.encode_ordinary(t).len() as u64)
            .sum::<u64>()
    })
    .await;
    // A failed count proves nothing: treat the prompt as fitting and let the provider decide.
    counted.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Message, ModelGroup, Role};

    fn req(text: &str) -> ChatRequest {
        ChatRequest::new(ModelGroup::new("g"), vec![Message::text(Role::User, text)])
    }

    #[test]
    fn counters_follow_the_model_family() {
        assert_eq!(Counter::for_model("gpt-4o-mini"), Counter::O200k);
        assert_eq!(Counter::for_model("openai/gpt-5"), Counter::O200k);
        assert_eq!(Counter::for_model("o3-mini"), Counter::O200k);
        assert_eq!(Counter::for_model("gpt-4-turbo"), Counter::Cl100k);
        assert_eq!(Counter::for_model("gpt-3.5-turbo"), Counter::Cl100k);
        assert_eq!(Counter::for_model("llama3-70b"), Counter::Estimate);
    }

    #[tokio::test]
    async fn exact_counts_decide_near_the_limit() {
        // "hello " x 1000 is 1000 tokens in o200k (6000 bytes): the byte bound cannot decide.
        let text = "hello ".repeat(1000);
        let r = req(&text);
        let p = Prompt::chat(&r);
        assert!(
            p.fits(Counter::O200k, Some(1100)).await,
            "1000 tokens + overhead fit in 1100"
        );
        assert!(!p.fits(Counter::O200k, Some(900)).await);
        assert!(
            p.fits(Counter::O200k, Some(10_000)).await,
            "the byte bound decides without counting"
        );
        assert!(p.fits(Counter::O200k, None).await);
        // The estimate: 6000 chars / 4 = 1500 tokens.
        assert!(!p.fits(Counter::Estimate, Some(1100)).await);
        assert!(p.fits(Counter::Estimate, Some(1600)).await);
        assert!(Prompt::unchecked().fits(Counter::O200k, Some(1)).await);
    }
}
