//! Stream parsing properties for every wire format, through the same `Wire` trait the gateway uses:
//! the meaning of a stream does not depend on where the network split it, and garbage never panics.

use bytes::Bytes;
use futures_util::StreamExt;

use super::{
    ProviderError,
    http::{Wire, decode_stream},
};
use crate::{config::Config, domain::*};

fn wire(model: &str) -> Box<dyn Wire> {
    let yaml = format!(
        "model_list:\n  - {{model_name: g, litellm_params: {{model: {model}, api_base: 'http://x'}}}}\n"
    );
    let c = Config::parse(&yaml, &|_| None).unwrap();
    let d = &c.deployments[0];
    match d.provider.wire {
        crate::config::WireFormat::OpenAi => Box::new(super::openai::OpenAi::new(d)),
        crate::config::WireFormat::Azure => Box::new(super::openai::OpenAi::azure(d, "v")),
        crate::config::WireFormat::Anthropic => Box::new(super::anthropic::Anthropic::new(d)),
        crate::config::WireFormat::Gemini => Box::new(super::gemini::Gemini::new(d)),
        crate::config::WireFormat::Ollama => Box::new(super::ollama::Ollama::new(d)),
        crate::config::WireFormat::Cohere => Box::new(super::cohere::Cohere::new(d)),
        crate::config::WireFormat::Bedrock => Box::new(super::bedrock::Bedrock::new(d)),
        crate::config::WireFormat::Vertex => Box::new(super::gemini::Gemini::vertex(d)),
    }
}

fn req() -> ChatRequest {
    ChatRequest::new(ModelGroup::new("g"), vec![Message::text(Role::User, "hi")])
}

const OPENAI: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Héllo \"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"wörld\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n",
    "data: [DONE]\n\n",
);

const ANTHROPIC: &str = concat!(
    "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\r\n\r\n",
    "event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n",
    "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Héllo \"}}\r\n\r\n",
    "event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"wörld\"}}\r\n\r\n",
    "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\r\n\r\n",
    "event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n",
);

const GEMINI: &str = concat!(
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Héllo \"}],\"role\":\"model\"},\"index\":0}]}\n\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"wörld\"}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],",
    "\"usageMetadata\":{\"promptTokenCount\":3,\"candidatesTokenCount\":2,\"totalTokenCount\":5}}\n\n",
);

const COHERE: &str = concat!(
    "event: message-start\ndata: {\"id\":\"c\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n",
    "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"Héllo \"}}}}\n\n",
    "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"wörld\"}}}}\n\n",
    "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"tokens\":{\"input_tokens\":3,\"output_tokens\":2}}}}\n\n",
);

const OLLAMA: &str = concat!(
    "{\"model\":\"l\",\"message\":{\"role\":\"assistant\",\"content\":\"Héllo \"},\"done\":false}\n",
    "{\"model\":\"l\",\"message\":{\"role\":\"assistant\",\"content\":\"wörld\"},\"done\":false}\n",
    "{\"model\":\"l\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":3,\"eval_count\":2}\n",
);

/// Bedrock's ConverseStream: binary AWS event-stream frames.
fn bedrock() -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let frame = |event: &str, payload: &str| {
        let msg = Message::new(payload.as_bytes().to_vec())
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event.to_string().into()),
            ))
            .add_header(Header::new(":message-type", HeaderValue::String("event".into())));
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&msg, &mut out).unwrap();
        out
    };
    [
        frame("messageStart", r#"{"role":"assistant"}"#),
        frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Héllo "}}"#,
        ),
        frame(
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"wörld"}}"#,
        ),
        frame("contentBlockStop", r#"{"contentBlockIndex":0}"#),
        frame("messageStop", r#"{"stopReason":"end_turn"}"#),
        frame(
            "metadata",
            r#"{"usage":{"inputTokens":3,"outputTokens":2,"totalTokens":5}}"#,
        ),
    ]
    .concat()
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("openai/gpt-4o", OPENAI.as_bytes().to_vec()),
        ("anthropic/claude", ANTHROPIC.as_bytes().to_vec()),
        ("gemini/gemini-2.5-flash", GEMINI.as_bytes().to_vec()),
        ("ollama/llama3.1", OLLAMA.as_bytes().to_vec()),
        ("cohere/command-a", COHERE.as_bytes().to_vec()),
        ("bedrock/anthropic.claude-v2", bedrock()),
    ]
}

async fn run(w: &dyn Wire, parts: Vec<Vec<u8>>) -> Vec<Result<ChatChunk, ProviderError>> {
    let body = futures_util::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p)))).boxed();
    decode_stream(body, w.framing(), w.stream_decoder(&req()))
        .collect()
        .await
}

/// Text, finish reason and usage: what the caller gets from a stream.
fn meaning(
    items: &[Result<ChatChunk, ProviderError>],
) -> Result<(String, Option<FinishReason>, Option<Usage>), ErrorClass> {
    let (mut text, mut finish, mut usage) = (String::new(), None, None);
    for item in items {
        let c = item.as_ref().map_err(|e| e.class)?;
        for ch in &c.choices {
            text.push_str(ch.delta.content.as_deref().unwrap_or_default());
            finish = ch.finish_reason.or(finish);
        }
        usage = c.usage.or(usage);
    }
    Ok((text, finish, usage))
}

#[tokio::test]
async fn every_split_point_gives_the_same_stream() {
    for (model, stream) in cases() {
        let w = wire(model);
        let bytes = stream.as_slice();
        let whole = meaning(&run(&*w, vec![bytes.to_vec()]).await).unwrap();
        assert_eq!(whole.0, "Héllo wörld", "{model}");
        assert_eq!(whole.1, Some(FinishReason::Stop), "{model}");
        assert_eq!(whole.2.map(|u| u.total_tokens), Some(5), "{model}");
        // Every split point, including inside the multi-byte characters.
        for split in 1..bytes.len() {
            let got = meaning(&run(&*w, vec![bytes[..split].to_vec(), bytes[split..].to_vec()]).await);
            assert_eq!(got.as_ref(), Ok(&whole), "{model} split at {split}");
        }
        // One byte at a time.
        let got = meaning(&run(&*w, bytes.iter().map(|b| vec![*b]).collect()).await);
        assert_eq!(got, Ok(whole), "{model} byte by byte");
        // Cut anywhere before the end: an error, never a silent success.
        for cut in [bytes.len() / 3, bytes.len() / 2] {
            let got = meaning(&run(&*w, vec![bytes[..cut].to_vec()]).await);
            assert!(got.is_err(), "{model} truncated at {cut} must fail, got {got:?}");
        }
    }
}

#[tokio::test]
async fn garbage_never_panics() {
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"data: {}[]\"\n\r:,event0123456789abcdefDONE\\\xff\xc3";
    for (model, stream) in cases() {
        let w = wire(model);
        for round in 0..300 {
            let len = (next() % 400) as usize;
            let mut junk: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if round % 3 == 0 {
                // Valid prefix, garbage after.
                let valid = stream.as_slice();
                let cut = (next() as usize) % valid.len();
                junk.splice(0..0, valid[..cut].iter().copied());
            }
            let split = if junk.is_empty() {
                0
            } else {
                (next() as usize) % junk.len()
            };
            let _ = run(&*w, vec![junk[..split].to_vec(), junk[split..].to_vec()]).await;
        }
    }
}

#[test]
fn unary_parsers_never_panic_on_garbage() {
    use crate::domain::arbitrary::{Rng, body};
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let embed = EmbedRequest {
        model: ModelGroup::new("g"),
        input: vec!["a".into(), "b".into()],
        dimensions: None,
        user: None,
        metadata: Default::default(),
        routing: Default::default(),
        cache: Default::default(),
    };
    let mut headers = http::HeaderMap::new();
    headers.insert("retry-after", "7".parse().unwrap());
    for (model, _) in cases() {
        let w = wire(model);
        for _ in 0..1500 {
            let b = body(&mut rng);
            let _ = w.parse_chat(&req(), &b);
            let _ = w.parse_embed(&embed, &b);
            let status = [400, 401, 404, 408, 413, 429, 500, 503, 529][rng.below(9)];
            let e = w.parse_error(status, &headers, &b);
            // Whatever the body says, the status decides the class of a throttle.
            if status == 429 {
                assert_eq!(
                    e.class,
                    ErrorClass::RateLimited,
                    "{model}: {}",
                    String::from_utf8_lossy(&b)
                );
            }
        }
    }
}
