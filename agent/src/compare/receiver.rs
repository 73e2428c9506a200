//! `compare`'s built-in OTLP trace receiver: gRPC (tonic) and HTTP with protobuf or JSON
//! bodies (axum), keeping every span it is sent, so a language agent can export straight to
//! zerotrace while zerotrace traces the same processes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ReceiverError {
    #[error("cannot listen for OTLP/{what} on {addr}: {source}; stop what uses the port or choose another with --otlp-{flag}-port")]
    Bind { what: &'static str, flag: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// Everything received so far, shared by both listeners.
#[derive(Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ResourceSpans>>>);

impl Received {
    fn add(&self, spans: Vec<ResourceSpans>) {
        // A poisoned lock only means another handler panicked mid-push; the data is still whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend(spans);
    }

    pub fn take(&self) -> Vec<ResourceSpans> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn span_count(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum()
    }
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.add(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Binds both listeners (so a busy port fails before tracing starts) and serves them on the
/// current runtime. Returns the bound addresses (port 0 picks a free one).
pub async fn start(grpc: SocketAddr, http: SocketAddr, received: Received) -> Result<(SocketAddr, SocketAddr), ReceiverError> {
    let grpc_listener = tokio::net::TcpListener::bind(grpc).await.map_err(|source| ReceiverError::Bind { what: "gRPC", flag: "grpc", addr: grpc, source })?;
    let http_listener = tokio::net::TcpListener::bind(http).await.map_err(|source| ReceiverError::Bind { what: "HTTP", flag: "http", addr: http, source })?;
    let bound = (grpc_listener.local_addr().unwrap_or(grpc), http_listener.local_addr().unwrap_or(http));
    let service = TraceServiceServer::new(Grpc(received.clone())).max_decoding_message_size(64 << 20);
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
        if let Err(e) = tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming).await {
            eprintln!("zerotrace: the OTLP/gRPC receiver stopped: {e}");
        }
    });
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| http_export(received.clone(), headers, body)))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 20));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http_listener, app).await {
            eprintln!("zerotrace: the OTLP/HTTP receiver stopped: {e}");
        }
    });
    Ok(bound)
}

type HttpAnswer = (axum::http::StatusCode, [(axum::http::HeaderName, &'static str); 1], Vec<u8>);

async fn http_export(received: Received, headers: axum::http::HeaderMap, body: axum::body::Bytes) -> HttpAnswer {
    use axum::http::{StatusCode, header::CONTENT_TYPE};
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if !matches!(header("content-encoding").as_str(), "" | "identity") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(CONTENT_TYPE, "text/plain")],
            b"compressed OTLP bodies are not supported; set OTEL_EXPORTER_OTLP_COMPRESSION=none\n".to_vec(),
        );
    }
    let json = header("content-type").starts_with("application/json");
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    match decoded {
        Ok(request) => {
            received.add(request.resource_spans);
            if json {
                (StatusCode::OK, [(CONTENT_TYPE, "application/json")], b"{}".to_vec())
            } else {
                (StatusCode::OK, [(CONTENT_TYPE, "application/x-protobuf")], ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
            }
        }
        Err(e) => (StatusCode::BAD_REQUEST, [(CONTENT_TYPE, "text/plain")], format!("not an OTLP trace export: {e}\n").into_bytes()),
    }
}
