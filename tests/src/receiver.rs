//! An OTLP receiver for tests, gRPC (tonic) and HTTP/protobuf (axum), built from the
//! opentelemetry-proto definitions. It keeps everything it receives.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{MetricsService, MetricsServiceServer};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

use crate::spans::{TestSpan, from_proto};

#[derive(Clone, Default)]
pub struct Received {
    inner: Arc<Mutex<Vec<ResourceSpans>>>,
    /// Every metrics export, in order.
    metrics: Arc<Mutex<Vec<ResourceMetrics>>>,
    /// Request headers seen by the HTTP receiver / metadata seen by gRPC (lower-case keys).
    pub headers: Arc<Mutex<Vec<(String, String)>>>,
}

impl Received {
    pub fn spans(&self) -> Vec<TestSpan> {
        from_proto(&self.inner.lock().unwrap())
    }

    /// The latest data point of each series of histogram `name`: (service.name, attributes as
    /// `k=v` sorted, count, bucket counts). Cumulative: the latest is the total.
    pub fn histogram(&self, name: &str) -> Vec<HistogramSeries> {
        crate::semconv::assert_metrics_conform(&self.metrics.lock().unwrap());
        // (service, attributes) → (time, count, buckets) of the latest point.
        type Latest = std::collections::BTreeMap<(String, Vec<String>), (u64, u64, Vec<u64>)>;
        let mut latest: Latest = Default::default();
        for rm in self.metrics.lock().unwrap().iter() {
            let service = rm.resource.as_ref().and_then(|r| crate::spans::kv_map(&r.attributes).remove("service.name")).unwrap_or_default();
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics).filter(|m| m.name == name) {
                let Some(metric::Data::Histogram(h)) = &m.data else { continue };
                for p in &h.data_points {
                    let mut attrs: Vec<String> = crate::spans::kv_map(&p.attributes).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                    attrs.sort();
                    let entry = latest.entry((service.clone(), attrs)).or_default();
                    if p.time_unix_nano >= entry.0 {
                        *entry = (p.time_unix_nano, p.count, p.bucket_counts.clone());
                    }
                }
            }
        }
        latest.into_iter().map(|((service, attrs), (_, count, buckets))| (service, attrs, count, buckets)).collect()
    }

    /// The latest value of each series of a sum or gauge named `name`: (service.name, `k=v`
    /// attributes sorted, value).
    pub fn number(&self, name: &str) -> Vec<(String, Vec<String>, f64)> {
        crate::semconv::assert_metrics_conform(&self.metrics.lock().unwrap());
        type Latest = std::collections::BTreeMap<(String, Vec<String>), (u64, f64)>;
        let mut latest: Latest = Default::default();
        for rm in self.metrics.lock().unwrap().iter() {
            let service = rm.resource.as_ref().and_then(|r| crate::spans::kv_map(&r.attributes).remove("service.name")).unwrap_or_default();
            for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics).filter(|m| m.name == name) {
                let points = match &m.data {
                    Some(metric::Data::Sum(s)) => &s.data_points,
                    Some(metric::Data::Gauge(g)) => &g.data_points,
                    _ => continue,
                };
                for p in points {
                    let mut attrs: Vec<String> = crate::spans::kv_map(&p.attributes).into_iter().map(|(k, v)| format!("{k}={v}")).collect();
                    attrs.sort();
                    let value = match p.value {
                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        None => continue,
                    };
                    let entry = latest.entry((service.clone(), attrs)).or_default();
                    if p.time_unix_nano >= entry.0 {
                        *entry = (p.time_unix_nano, value);
                    }
                }
            }
        }
        latest.into_iter().map(|((service, attrs), (_, value))| (service, attrs, value)).collect()
    }
}

/// One histogram series as last exported: (service.name, `k=v` attributes sorted, count,
/// bucket counts).
pub type HistogramSeries = (String, Vec<String>, u64, Vec<u64>);

struct GrpcMetrics(Received);

#[tonic::async_trait]
impl MetricsService for GrpcMetrics {
    async fn export(&self, request: tonic::Request<ExportMetricsServiceRequest>) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.0.metrics.lock().unwrap().extend(request.into_inner().resource_metrics);
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}

struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for kv in request.metadata().iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                self.0.headers.lock().unwrap().push((k.to_string(), v.to_str().unwrap_or("").to_string()));
            }
        }
        self.0.inner.lock().unwrap().extend(request.into_inner().resource_spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A receiver running on its own thread and runtime.
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Received,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn grpc() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let received = Received::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(Grpc(received.clone()));
        let metrics = MetricsServiceServer::new(GrpcMetrics(received.clone()));
        runtime.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder().add_service(svc).add_service(metrics).serve_with_incoming(incoming).await;
        });
        Receiver { addr, received, _runtime: runtime }
    }

    pub fn http() -> Receiver {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let received = Received::default();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = received.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    for (k, v) in headers.iter() {
                        state.headers.lock().unwrap().push((k.to_string(), v.to_str().unwrap_or("").to_string()));
                    }
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            state.inner.lock().unwrap().extend(req.resource_spans);
                            (axum::http::StatusCode::OK, ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
                        }
                        Err(_) => (axum::http::StatusCode::BAD_REQUEST, Vec::new()),
                    }
                }
            }),
        );
        runtime.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, received, _runtime: runtime }
    }
}
