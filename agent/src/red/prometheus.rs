//! The RED histograms in the Prometheus exposition, next to the agent's own metrics: a
//! `prometheus_client` collector that encodes them at each scrape. Names follow the
//! OpenTelemetry-to-Prometheus rules: dots become underscores and the unit a suffix
//! (`http.server.request.duration` in seconds → `http_server_request_duration_seconds`,
//! `rpc.server.duration` in ms → `rpc_server_duration_milliseconds`); attributes become labels
//! the same way, with `service_name` for the process's `service.name`. The processes of one
//! service (nginx's workers) are summed into one series per label set.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use rustc_hash::FxHashMap as HashMap;

use super::{Instrument, RedMetrics, Series};

/// The histograms, shared by the agent's loop (which counts) and the scrape (which reads).
#[derive(Clone, Debug)]
pub struct RedCollector(pub Arc<Mutex<RedMetrics>>);

impl std::fmt::Debug for RedMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedMetrics").field("processes", &self.processes.len()).finish()
    }
}

/// `a.b.c` → `a_b_c`.
fn label_name(key: &str) -> String {
    key.replace('.', "_")
}

impl Collector for RedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let red = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for instrument in Instrument::ALL {
            // Label set → the sum of the processes' series.
            let mut merged: HashMap<Vec<(String, String)>, Series> = HashMap::default();
            for process in red.processes.values() {
                for ((of, attributes), series) in &process.series {
                    if *of != instrument {
                        continue;
                    }
                    let mut labels = vec![("service_name".to_string(), process.resource.service_name.clone())];
                    labels.extend(attributes.iter().map(|(k, v)| (label_name(k), v.to_string())));
                    let total = merged.entry(labels).or_insert_with(|| Series { count: 0, sum: 0.0, buckets: vec![0; series.buckets.len()] });
                    total.count += series.count;
                    total.sum += series.sum;
                    for (t, b) in total.buckets.iter_mut().zip(&series.buckets) {
                        *t += b;
                    }
                }
            }
            if merged.is_empty() {
                continue;
            }
            let unit = if instrument.in_millis() { Unit::Other("milliseconds".into()) } else { Unit::Seconds };
            let name = instrument.name().replace('.', "_");
            let mut family = encoder.encode_descriptor(&name, instrument.description(), Some(&unit), MetricType::Histogram)?;
            let mut sorted: Vec<_> = merged.into_iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0));
            for (labels, series) in sorted {
                let buckets: Vec<(f64, u64)> = instrument.bounds().iter().copied().chain([f64::MAX]).zip(series.buckets.iter().copied()).collect();
                family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(series.sum, series.count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessResource;
    use crate::spans::record::{Domain, HttpFields, SpanKind, SpanRecord, Status, Url};

    /// Two processes of one service sum into one series, named the OpenTelemetry way.
    #[test]
    fn processes_of_a_service_sum_under_prometheus_names() {
        let mut red = RedMetrics::new(0);
        let span = SpanRecord {
            kind: SpanKind::Server,
            name: "GET".into(),
            start_unix_ns: 0,
            end_unix_ns: 2_000_000,
            status: Status::Unset,
            error_type: None,
            network: Default::default(),
            domain: Domain::Http(HttpFields {
                method: Some("GET".into()),
                protocol_version: "1.1",
                url: Url::Server { path: Some("/".into()), scheme: "http" },
                status_code: Some(200),
                ..Default::default()
            }),
            capture_truncated: false,
            capture_head_only: false,
            capture_one_in: 0,
            ids: Default::default(),
        };
        for pid in [1, 2] {
            red.observe(&Arc::new(ProcessResource { pid, service_name: "nginx".into(), ..Default::default() }), &span);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(RedCollector(Arc::new(Mutex::new(red)))));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("# TYPE http_server_request_duration_seconds histogram"), "{text}");
        let labels = r#"service_name="nginx",http_request_method="GET",http_response_status_code="200",url_scheme="http",network_protocol_version="1.1""#;
        assert!(text.contains(&format!("http_server_request_duration_seconds_count{{{labels}}} 2")), "{text}");
        assert!(text.contains(&format!("http_server_request_duration_seconds_bucket{{le=\"0.005\",{labels}}} 2")), "{text}");
    }
}
