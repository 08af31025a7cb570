//! Request ids on log lines. A request's ids (its `x-request-id` and trace id) live in a task-local
//! for as long as the request's handler runs, and the JSON log format adds them to every line logged
//! inside it: no span fields are formatted per request (that doubled a request's CPU), and it works
//! with trace export off, when spans are disabled entirely.

use std::{fmt, sync::Arc};

use serde_json::{Map, Value};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer, time::FormatTime},
    registry::LookupSpan,
};

/// The ids of the request being served.
#[derive(Clone, Debug)]
pub struct RequestIds {
    pub request_id: Arc<str>,
    /// 32 hex digits: the caller's trace (or ours, when traces are exported).
    pub trace_id: Option<Arc<str>>,
}

tokio::task_local! {
    static REQUEST: RequestIds;
}

/// Runs `work` with `ids` on every line it logs.
pub async fn with_ids<F: Future>(ids: RequestIds, work: F) -> F::Output {
    REQUEST.scope(ids, work).await
}

/// The ids of the request whose handler is running on this task, if any.
pub fn current() -> Option<RequestIds> {
    REQUEST.try_with(Clone::clone).ok()
}

/// The trace id of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`), if well formed.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_version, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()) && trace != "0".repeat(32))
        .then_some(trace)
}

/// `tracing-subscriber`'s JSON shape (`timestamp`, `level`, `fields`, `target`) plus `request_id`
/// and `trace_id` inside a request.
pub struct JsonWithRequest;

struct Fields(Map<String, Value>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonWithRequest
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("fields".into(), Value::Object(fields.0));
        line.insert("target".into(), meta.target().into());
        if let Some(ids) = current() {
            line.insert("request_id".into(), ids.request_id.as_ref().into());
            if let Some(t) = &ids.trace_id {
                line.insert("trace_id".into(), t.as_ref().into());
            }
        }
        writeln!(writer, "{}", Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_trace_id_of_a_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_of(tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(
            trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(trace_id_of("garbage"), None);
        assert_eq!(trace_id_of("00-xyz-00f067aa0ba902b7-01"), None);
    }

    #[tokio::test]
    async fn ids_are_visible_inside_the_request_only() {
        assert!(current().is_none());
        let ids = RequestIds {
            request_id: "r-1".into(),
            trace_id: None,
        };
        let seen = with_ids(ids, async { current().map(|i| i.request_id.to_string()) }).await;
        assert_eq!(seen.as_deref(), Some("r-1"));
        assert!(current().is_none());
    }
}
