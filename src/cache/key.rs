//! Cache keys: SHA-256 over a canonical encoding of everything that changes a model's answer.
//!
//! The key is computed from the decoded domain request, never from the bytes on the wire, so JSON
//! field order, whitespace, number spelling and proto encoding cannot cause a miss. Caller identity,
//! trace ids, metadata and fallbacks are left out (they do not change the answer); the isolation
//! scope and namespaces are put in, so tenants that must not share never do.

use std::fmt;

use ring::digest::{Context, SHA256};
use serde_json::Value;

use crate::domain::{ChatRequest, Content, ContentPart, EmbedRequest, ResponseFormat, ToolChoice};

/// A cache entry's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub(super) [u8; 32]);

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({self})")
    }
}

/// Who may share an entry: the configured namespace, the request's namespace and the isolation
/// scope (a team or key id under `isolation: team|key`).
#[derive(Debug, Default, Clone, Copy)]
pub struct Partition<'a> {
    pub config_namespace: Option<&'a str>,
    pub request_namespace: Option<&'a str>,
    pub scope: Option<&'a str>,
}

/// Length-prefixed, tagged writes: no two different requests encode to the same bytes.
struct Canon(Context);

impl Canon {
    fn new(kind: &str, part: Partition<'_>) -> Self {
        let mut c = Canon(Context::new(&SHA256));
        c.str("switchboard-cache-v1");
        c.str(kind);
        c.opt_str(part.config_namespace);
        c.opt_str(part.request_namespace);
        c.opt_str(part.scope);
        c
    }

    fn tag(&mut self, t: u8) {
        self.0.update(&[t]);
    }

    fn u64(&mut self, n: u64) {
        self.0.update(&n.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.update(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.tag(0),
            Some(s) => {
                self.tag(1);
                self.str(s);
            }
        }
    }

    fn opt_f64(&mut self, v: Option<f64>) {
        match v {
            None => self.tag(0),
            Some(x) => {
                self.tag(1);
                // -0.0 and 0.0 ask for the same thing.
                self.u64(if x == 0.0 { 0 } else { x.to_bits() });
            }
        }
    }

    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.tag(0),
            Some(n) => {
                self.tag(1);
                self.u64(n);
            }
        }
    }

    /// JSON with object keys sorted and integral numbers written as integers, so a schema sent as
    /// JSON and the same schema sent as a protobuf Struct (doubles) hash alike.
    fn json(&mut self, v: &Value) {
        match v {
            Value::Null => self.tag(b'n'),
            Value::Bool(b) => self.tag(if *b { b't' } else { b'f' }),
            Value::Number(n) => {
                self.tag(b'#');
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => self.str(&(f as i64).to_string()),
                    _ => self.str(&n.to_string()),
                }
            }
            Value::String(s) => {
                self.tag(b's');
                self.str(s);
            }
            Value::Array(items) => {
                self.tag(b'[');
                self.u64(items.len() as u64);
                for i in items {
                    self.json(i);
                }
            }
            Value::Object(map) => {
                self.tag(b'{');
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort_unstable();
                self.u64(keys.len() as u64);
                for k in keys {
                    self.str(k);
                    self.json(&map[k]);
                }
            }
        }
    }

    fn opt_json(&mut self, v: Option<&Value>) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                self.json(v);
            }
        }
    }

    fn strings(&mut self, list: &[String]) {
        self.u64(list.len() as u64);
        for s in list {
            self.str(s);
        }
    }

    fn finish(self) -> CacheKey {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        CacheKey(out)
    }
}

/// The key of a chat request. A streamed and a unary answer are cached apart (`stream`).
pub fn chat(req: &ChatRequest, stream: bool, part: Partition<'_>) -> CacheKey {
    let mut c = Canon::new(if stream { "chat-stream" } else { "chat" }, part);
    c.str(req.model.as_str());
    c.u64(req.messages.len() as u64);
    for m in &req.messages {
        c.str(m.role.as_str());
        // Text content and a single text part are the same prompt.
        match &m.content {
            Content::Text(t) => {
                c.u64(1);
                c.tag(b'T');
                c.str(t);
            }
            Content::Parts(parts) => {
                c.u64(parts.len() as u64);
                for p in parts {
                    match p {
                        ContentPart::Text(t) => {
                            c.tag(b'T');
                            c.str(t);
                        }
                        ContentPart::Image { url, detail } => {
                            c.tag(b'I');
                            c.str(url);
                            c.opt_str(detail.map(|d| d.as_str()));
                        }
                    }
                }
            }
        }
        c.opt_str(m.name.as_deref());
        c.u64(m.tool_calls.len() as u64);
        for t in &m.tool_calls {
            c.str(&t.id);
            c.str(&t.name);
            c.str(&t.arguments);
        }
        c.opt_str(m.tool_call_id.as_deref());
    }
    let p = &req.params;
    c.opt_f64(p.temperature);
    c.opt_f64(p.top_p);
    c.opt_u64(p.max_tokens.map(u64::from));
    c.strings(&p.stop);
    c.opt_u64(p.seed.map(|s| s as u64));
    c.opt_u64(p.n.map(u64::from));
    c.opt_f64(p.presence_penalty);
    c.opt_f64(p.frequency_penalty);
    c.u64(req.tools.len() as u64);
    for t in &req.tools {
        c.str(&t.name);
        c.opt_str(t.description.as_deref());
        c.opt_json(t.parameters.as_ref());
        c.opt_u64(t.strict.map(u64::from));
    }
    match &req.tool_choice {
        None => c.tag(0),
        Some(ToolChoice::Auto) => c.tag(1),
        Some(ToolChoice::None) => c.tag(2),
        Some(ToolChoice::Required) => c.tag(3),
        Some(ToolChoice::Function(f)) => {
            c.tag(4);
            c.str(f);
        }
    }
    match &req.response_format {
        None => c.tag(0),
        Some(ResponseFormat::Text) => c.tag(1),
        Some(ResponseFormat::JsonObject) => c.tag(2),
        Some(ResponseFormat::JsonSchema {
            name,
            description,
            schema,
            strict,
        }) => {
            c.tag(3);
            c.str(name);
            c.opt_str(description.as_deref());
            c.opt_json(schema.as_ref());
            c.opt_u64(strict.map(u64::from));
        }
    }
    tags(&mut c, &req.routing.tags);
    c.finish()
}

/// The key of an embeddings request.
pub fn embed(req: &EmbedRequest, part: Partition<'_>) -> CacheKey {
    let mut c = Canon::new("embed", part);
    c.str(req.model.as_str());
    c.strings(&req.input);
    c.opt_u64(req.dimensions.map(u64::from));
    tags(&mut c, &req.routing.tags);
    c.finish()
}

/// Tags pick deployments (possibly different models), so they count; their order does not.
fn tags(c: &mut Canon, tags: &[String]) {
    let mut sorted: Vec<&str> = tags.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    c.u64(sorted.len() as u64);
    for t in sorted {
        c.str(t);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::{Message, ModelGroup, Role, Tool};

    fn req(text: &str) -> ChatRequest {
        ChatRequest::new(ModelGroup::new("smart"), vec![Message::text(Role::User, text)])
    }

    #[test]
    fn same_request_same_key_and_every_answer_changing_field_counts() {
        let p = Partition::default();
        let base = chat(&req("hi"), false, p);
        assert_eq!(base, chat(&req("hi"), false, p));
        assert_ne!(base, chat(&req("hi!"), false, p));
        assert_ne!(base, chat(&req("hi"), true, p), "streamed answers are kept apart");
        let mut r = req("hi");
        r.params.temperature = Some(0.5);
        assert_ne!(base, chat(&r, false, p));
        let mut r = req("hi");
        r.model = ModelGroup::new("cheap");
        assert_ne!(base, chat(&r, false, p));
        let mut r = req("hi");
        r.metadata.insert("trace".into(), "x".into());
        r.user = Some("end-user".into());
        assert_eq!(
            base,
            chat(&r, false, p),
            "metadata and end user do not change the answer"
        );
        let ns = Partition {
            request_namespace: Some("tenant-a"),
            ..p
        };
        assert_ne!(base, chat(&req("hi"), false, ns));
        let scoped = Partition {
            scope: Some("team:a"),
            ..p
        };
        assert_ne!(chat(&req("hi"), false, scoped), chat(&req("hi"), false, ns));
    }

    #[test]
    fn schema_key_order_and_number_spelling_do_not_matter() {
        let tool = |params: Value| {
            let mut r = req("weather?");
            r.tools.push(Tool {
                name: "get_weather".into(),
                description: None,
                parameters: Some(params),
                strict: None,
            });
            chat(&r, false, Partition::default())
        };
        let a = tool(json!({"type": "object", "properties": {"city": {"type": "string"}}, "minItems": 1}));
        let b = tool(json!({"minItems": 1.0, "properties": {"city": {"type": "string"}}, "type": "object"}));
        assert_eq!(a, b);
        assert_ne!(a, tool(json!({"type": "object"})));
    }

    #[test]
    fn text_content_equals_one_text_part() {
        let mut parts = req("");
        parts.messages[0].content = Content::Parts(vec![ContentPart::Text("hi".into())]);
        let p = Partition::default();
        assert_eq!(chat(&req("hi"), false, p), chat(&parts, false, p));
    }
}
