//! The span queue, bounded and counted: at most `limit` finished spans wait for export; beyond
//! that a span is dropped and `switchboard_spans_dropped_total` counts it (a slow or absent
//! collector costs traces, never request latency). The SDK's batch processor does the batching; its
//! own queue is sized above ours so that only this gate ever drops, and the exporter wrapper tells
//! the gate when spans have left.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::Context;
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor},
};

#[derive(Debug)]
pub struct CountedQueue {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    limit: usize,
}

#[derive(Debug)]
struct Departures<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Departures<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::AcqRel);
        if result.is_err() {
            metrics::counter!("switchboard_spans_export_failed_total").increment(n as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl CountedQueue {
    /// A batch processor over `exporter` holding at most `limit` spans.
    pub fn new<E: SpanExporter + 'static>(exporter: E, limit: usize) -> Self {
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Departures {
            inner: exporter,
            queued: queued.clone(),
        };
        let config = BatchConfigBuilder::default()
            .with_max_queue_size(limit.saturating_mul(2).max(2))
            .build();
        Self {
            inner: BatchSpanProcessor::builder(exporter)
                .with_batch_config(config)
                .build(),
            queued,
            limit: limit.max(1),
        }
    }
}

impl SpanProcessor for CountedQueue {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("switchboard_spans_dropped_total").increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
