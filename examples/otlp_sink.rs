//! A minimal OTLP/gRPC trace sink for benchmarks: accepts spans, counts them, drops them.
//! `cargo run --release --example otlp_sink -- 127.0.0.1:4317`

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let total = self.0.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total / 100_000 != (total - n as u64) / 100_000 {
            eprintln!("otlp_sink: {total} spans received");
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4317".into())
        .parse()?;
    let sink = Sink::default();
    let count = sink.0.clone();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve(addr);
    tokio::select! {
        r = server => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "otlp_sink: {} spans received in total",
        count.load(Ordering::Relaxed)
    );
    Ok(())
}
