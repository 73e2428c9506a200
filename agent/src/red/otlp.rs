//! The RED histograms as OTLP metrics, pushed every `OTEL_METRIC_EXPORT_INTERVAL` (60 s by
//! default) to the endpoint the traces go to (or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`).
//! Cumulative temporality: an export that fails loses nothing, the next one carries the
//! totals.

use std::time::Duration;

use anyhow::{Result, bail};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric};
use prost::Message;
use tonic::transport::Channel;

use super::{Instrument, RedMetrics};
use crate::cli::OtlpProtocol;
use crate::export::otlp::{self, OtlpConfig, Signal};
use crate::export::otlp_span::kv_str;
use crate::spans::record::SEMCONV_VERSION;

/// `OTEL_METRIC_EXPORT_INTERVAL` (milliseconds), 60 s when unset as the specification says.
pub fn export_interval() -> Result<Duration> {
    match std::env::var("OTEL_METRIC_EXPORT_INTERVAL").ok().filter(|v| !v.trim().is_empty()) {
        None => Ok(Duration::from_secs(60)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => bail!("OTEL_METRIC_EXPORT_INTERVAL={v} is not an interval; give milliseconds, e.g. 60000"),
        },
    }
}

/// The export request for the histograms as they stand, at `now_unix_ns`.
pub fn request(red: &RedMetrics, host_name: &str, now_unix_ns: u64) -> ExportMetricsServiceRequest {
    let schema_url = format!("https://opentelemetry.io/schemas/{SEMCONV_VERSION}");
    let mut resource_metrics = Vec::new();
    let mut pids: Vec<&u32> = red.processes.keys().collect();
    pids.sort_unstable();
    for pid in pids {
        let process = &red.processes[pid];
        let mut metrics = Vec::new();
        for instrument in Instrument::ALL {
            let mut points: Vec<HistogramDataPoint> = process
                .series
                .iter()
                .filter(|((of, _), _)| *of == instrument)
                .map(|((_, attributes), series)| HistogramDataPoint {
                    attributes: attributes.iter().map(|(k, v)| kv_str(k, v.clone())).collect(),
                    start_time_unix_nano: red.start_unix_ns,
                    time_unix_nano: now_unix_ns,
                    count: series.count,
                    sum: Some(series.sum),
                    bucket_counts: series.buckets.clone(),
                    explicit_bounds: instrument.bounds().to_vec(),
                    ..Default::default()
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| format!("{:?}", a.attributes).cmp(&format!("{:?}", b.attributes)));
            metrics.push(Metric {
                name: instrument.name().to_string(),
                description: instrument.description().to_string(),
                unit: instrument.unit().to_string(),
                data: Some(metric::Data::Histogram(Histogram { data_points: points, aggregation_temporality: AggregationTemporality::Cumulative as i32 })),
                ..Default::default()
            });
        }
        if metrics.is_empty() {
            continue;
        }
        resource_metrics.push(ResourceMetrics {
            resource: Some(crate::export::proto::resource(&process.resource, host_name)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope { name: "zerotrace".to_string(), version: env!("CARGO_PKG_VERSION").to_string(), ..Default::default() }),
                metrics,
                schema_url: schema_url.clone(),
            }],
            schema_url: schema_url.clone(),
        });
    }
    ExportMetricsServiceRequest { resource_metrics }
}

enum Transport {
    Grpc(MetricsServiceClient<Channel>),
    Http(reqwest::Client),
}

/// Pushes the histograms to an OTLP endpoint.
pub struct MetricsExporter {
    config: OtlpConfig,
    transport: Transport,
    /// True while exports fail; the warning is printed once per outage.
    failing: bool,
}

impl MetricsExporter {
    pub fn new(flag_endpoint: Option<&str>, flag_protocol: Option<OtlpProtocol>) -> Result<MetricsExporter> {
        let config = OtlpConfig::resolve_signal(Signal::Metrics, flag_endpoint, flag_protocol)?;
        let transport = match config.protocol {
            OtlpProtocol::Grpc => Transport::Grpc(MetricsServiceClient::new(otlp::grpc_channel(&config)?)),
            OtlpProtocol::HttpProtobuf => Transport::Http(otlp::http_client(&config)?),
        };
        Ok(MetricsExporter { config, transport, failing: false })
    }

    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// Sends one request; a failure is reported once per outage (the next export carries the
    /// same totals and more).
    pub async fn export(&mut self, request: ExportMetricsServiceRequest) -> bool {
        let result: Result<(), String> = match &mut self.transport {
            Transport::Grpc(client) => {
                let req = otlp::with_metadata(tonic::Request::new(request), &self.config.headers);
                client.export(req).await.map(|_| ()).map_err(|s| format!("{}: {}", s.code(), s.message()))
            }
            Transport::Http(client) => otlp::post(client, &self.config, request.encode_to_vec()).await.map_err(|(text, _)| text),
        };
        match result {
            Ok(()) => {
                if self.failing {
                    eprintln!("zerotrace: OTLP metrics export to {} works again", self.config.endpoint);
                    self.failing = false;
                }
                true
            }
            Err(why) => {
                if !self.failing {
                    eprintln!("zerotrace: OTLP metrics export to {} failed ({why}); the next export carries the same totals", self.config.endpoint);
                    self.failing = true;
                }
                false
            }
        }
    }
}
