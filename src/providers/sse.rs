//! Incremental Server-Sent Events framing (the WHATWG event-stream format), independent of any
//! provider: feed it bytes as they arrive, in chunks split anywhere, and take complete events out.

use bytes::{Buf, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field; empty means the default type, "message".
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
}

/// Error when a single line exceeds the limit (a garbage or hostile upstream).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event-stream line longer than {0} bytes")]
pub struct LineTooLong(pub usize);

#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    event: String,
    data: String,
    has_data: bool,
    max_line: usize,
    /// A `\r` ended the previous chunk: a `\n` starting the next chunk belongs to it.
    pending_cr: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(16 << 20)
    }
}

impl Decoder {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            event: String::new(),
            data: String::new(),
            has_data: false,
            max_line,
            pending_cr: false,
        }
    }

    /// Appends bytes and returns every event they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Event>, LineTooLong> {
        let mut bytes = bytes;
        if self.pending_cr && !bytes.is_empty() {
            self.pending_cr = false;
            if bytes.first() == Some(&b'\n') {
                bytes = &bytes[1..];
            }
        }
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line = self.buf.split_to(pos);
            let terminator = self.buf[0];
            self.buf.advance(1);
            if terminator == b'\r' {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    Some(_) => {}
                    None => self.pending_cr = true,
                }
            }
            self.line(&line, &mut out);
        }
        if self.buf.len() > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        Ok(out)
    }

    /// True when no partial line or undispatched event is buffered.
    pub fn is_idle(&self) -> bool {
        self.buf.is_empty() && !self.has_data && self.event.is_empty()
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            if self.has_data {
                out.push(Event {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return; // comment / keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_string(),
            _ => {} // id, retry and unknown fields do not matter to LLM streams
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str =
        "event: a\ndata: {\"x\":1}\n\n: keep-alive\r\n\r\ndata: line1\r\ndata: line2\r\n\r\ndata: [DONE]\n\n";

    fn expected() -> Vec<Event> {
        vec![
            Event {
                event: "a".into(),
                data: "{\"x\":1}".into(),
            },
            Event {
                event: String::new(),
                data: "line1\nline2".into(),
            },
            Event {
                event: String::new(),
                data: "[DONE]".into(),
            },
        ]
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for split in 0..=bytes.len() {
            for split2 in split..=bytes.len() {
                let mut d = Decoder::default();
                let mut got = d.feed(&bytes[..split]).unwrap();
                got.extend(d.feed(&bytes[split..split2]).unwrap());
                got.extend(d.feed(&bytes[split2..]).unwrap());
                assert_eq!(got, expected(), "split at {split}/{split2}");
                assert!(d.is_idle());
            }
        }
    }

    #[test]
    fn byte_at_a_time_and_lone_cr_line_endings() {
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in "data: a\rdata: b\r\rdata: c\n\n".bytes() {
            got.extend(d.feed(&[b]).unwrap());
        }
        let data: Vec<_> = got.into_iter().map(|e| e.data).collect();
        assert_eq!(data, ["a\nb", "c"]);
    }

    #[test]
    fn garbage_never_panics_and_long_lines_are_refused() {
        let mut d = Decoder::new(64);
        let mut seed = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let chunk: Vec<u8> = seed
                .to_le_bytes()
                .iter()
                .map(|b| if b % 5 == 0 { b'\n' } else { *b })
                .collect();
            let _ = d.feed(&chunk);
        }
        let mut d = Decoder::new(8);
        assert_eq!(d.feed(b"data: 0123456789"), Err(LineTooLong(8)));
    }
}
