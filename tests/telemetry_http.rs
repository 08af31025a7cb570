//! OTLP over HTTP/protobuf (`OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`): spans arrive at a real
//! HTTP receiver as protobuf `ExportTraceServiceRequest`s. (Its own test binary: the tracing
//! subscriber is process-wide.)

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Bytes, http::header};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use switchboard::telemetry::{self, LogFormat, TraceSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_export_over_http_protobuf() {
    let names: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let sink = names.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let kind = headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.to_str().unwrap_or_default().to_string())
                    .unwrap_or_default();
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            sink.lock().unwrap().push((s.name, kind.clone()));
                        }
                    }
                }
                (
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    ExportTraceServiceResponse {
                        partial_success: None,
                    }
                    .encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let tel = telemetry::init(
        LogFormat::Text,
        &TraceSettings {
            endpoint: Some(format!("http://{addr}/v1/traces")),
            http: true,
            max_queue: 2048,
            service_name: "switchboard-http-test".into(),
            replica_id: "r1".into(),
        },
    )
    .unwrap();
    let gw = common::Gateway::start(
        "model_list:\n  - {model_name: m, litellm_params: {model: gpt-4o, mock_response: hi}}\n",
    )
    .await;
    gw.chat()
        .await
        .complete(common::chat_request("m", "x"))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        tel.flush();
        let got = names.lock().unwrap().clone();
        if let Some((_, kind)) = got
            .iter()
            .find(|(n, _)| n == "switchboard.v1.ChatService/Complete")
        {
            assert_eq!(kind, "application/x-protobuf");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no span over HTTP: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
