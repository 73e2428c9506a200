//! RED metrics (rate, errors, duration) from every span the pipeline builds, exported or not:
//! the stable semantic conventions' duration histograms, with only low-cardinality attributes.
//!
//! | histogram | spans | attributes |
//! |---|---|---|
//! | `http.server.request.duration` (s) | SERVER, HTTP | `http.request.method`, `http.response.status_code`, `url.scheme`, `network.protocol.version`, `url.template`, `error.type` |
//! | `http.client.request.duration` (s) | CLIENT, HTTP | `http.request.method`, `http.response.status_code`, `server.address`, `server.port`, `network.protocol.version`, `url.template`, `error.type` |
//! | `db.client.operation.duration` (s) | CLIENT, database | `db.system.name`, `db.operation.name`, `db.namespace`, `server.address`, `server.port`, `error.type` |
//! | `rpc.server.duration`, `rpc.client.duration` (ms) | gRPC | `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code` |
//!
//! Never a path, a URL, a query or a statement: the path's template (`spans::routes`, capped
//! per service) instead; `http.route` is for a framework's own route, unknown here. Each
//! process's series are capped (`MAX_SERIES` per histogram): past it, a span is counted in one
//! series marked `otel.metric.overflow`, as the OpenTelemetry SDKs do. Histograms are
//! cumulative from the agent's start. Served in the Prometheus format next to the agent's own
//! metrics (`prometheus.rs`) and pushed as OTLP metrics (`otlp.rs`).

pub mod otlp;
pub mod prometheus;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;
use smol_str::SmolStr;

use crate::pipeline::FinishedSpan;
use crate::process::ProcessResource;
use crate::spans::record::{Domain, SpanKind, SpanRecord, Status};

/// The conventions' advisory bucket boundaries for durations in seconds.
pub const SECONDS_BOUNDS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// The same in milliseconds (the RPC histograms' unit), from 0 as the conventions list them.
pub const MILLIS_BOUNDS: [f64; 15] = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0];
/// Series per histogram and process at most.
pub const MAX_SERIES: usize = 2000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Instrument {
    HttpServer,
    HttpClient,
    DbClient,
    RpcServer,
    RpcClient,
}

impl Instrument {
    pub const ALL: [Instrument; 5] = [Instrument::HttpServer, Instrument::HttpClient, Instrument::DbClient, Instrument::RpcServer, Instrument::RpcClient];

    /// The conventions' name.
    pub fn name(self) -> &'static str {
        match self {
            Instrument::HttpServer => "http.server.request.duration",
            Instrument::HttpClient => "http.client.request.duration",
            Instrument::DbClient => "db.client.operation.duration",
            Instrument::RpcServer => "rpc.server.duration",
            Instrument::RpcClient => "rpc.client.duration",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Instrument::HttpServer => "Duration of HTTP server requests.",
            Instrument::HttpClient => "Duration of HTTP client requests.",
            Instrument::DbClient => "Duration of database client operations.",
            Instrument::RpcServer => "Measures the duration of inbound RPC.",
            Instrument::RpcClient => "Measures the duration of outbound RPC.",
        }
    }

    /// Seconds, or milliseconds for the RPC histograms.
    pub fn in_millis(self) -> bool {
        matches!(self, Instrument::RpcServer | Instrument::RpcClient)
    }

    pub fn unit(self) -> &'static str {
        if self.in_millis() { "ms" } else { "s" }
    }

    pub fn bounds(self) -> &'static [f64] {
        if self.in_millis() { &MILLIS_BOUNDS } else { &SECONDS_BOUNDS }
    }
}

/// A series' attributes, in a fixed order per instrument.
pub type Attributes = Vec<(&'static str, SmolStr)>;

/// One histogram series.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub count: u64,
    pub sum: f64,
    /// Per bucket (not cumulative); one more than the bounds: the last is (last bound, +∞).
    pub buckets: Vec<u64>,
}

impl Series {
    fn new(instrument: Instrument) -> Series {
        Series { count: 0, sum: 0.0, buckets: vec![0; instrument.bounds().len() + 1] }
    }

    /// Counts a request `weight` times: a span of a process sampled one connection in N
    /// stands for N requests.
    fn observe(&mut self, instrument: Instrument, value: f64, weight: u64) {
        self.count += weight;
        self.sum += value * weight as f64;
        // A value on a bound counts in that bound's bucket (upper bounds are inclusive).
        let i = instrument.bounds().iter().position(|b| value <= *b).unwrap_or(instrument.bounds().len());
        self.buckets[i] += weight;
    }
}

/// The histograms of one process.
pub struct ProcessSeries {
    pub resource: Arc<ProcessResource>,
    pub series: HashMap<(Instrument, Attributes), Series>,
    counts: HashMap<Instrument, usize>,
    last_observed: Instant,
}

impl ProcessSeries {
    fn new(resource: &Arc<ProcessResource>) -> ProcessSeries {
        ProcessSeries { resource: resource.clone(), series: HashMap::default(), counts: HashMap::default(), last_observed: Instant::now() }
    }
}

/// Every process's histograms, cumulative since `start_unix_ns`.
pub struct RedMetrics {
    pub start_unix_ns: u64,
    pub processes: HashMap<u32, ProcessSeries>,
}

impl RedMetrics {
    pub fn new(start_unix_ns: u64) -> RedMetrics {
        RedMetrics { start_unix_ns, processes: HashMap::default() }
    }

    /// Counts every span of a batch.
    pub fn observe_all(&mut self, batch: &[FinishedSpan]) {
        for finished in batch {
            self.observe(&finished.resource, &finished.span);
        }
    }

    pub fn observe(&mut self, resource: &Arc<ProcessResource>, span: &SpanRecord) {
        let Some((instrument, attributes)) = measure(span) else { return };
        let seconds = span.end_unix_ns.saturating_sub(span.start_unix_ns) as f64 / 1e9;
        let value = if instrument.in_millis() { seconds * 1e3 } else { seconds };
        let weight = u64::from(span.capture_one_in.max(1));
        let process = self.processes.entry(resource.pid).or_insert_with(|| ProcessSeries::new(resource));
        if !Arc::ptr_eq(&process.resource, resource) && process.resource.service_name != resource.service_name {
            // The pid now runs another program (exec, or a recycled pid): a new process.
            *process = ProcessSeries::new(resource);
        }
        process.last_observed = Instant::now();
        let key = (instrument, attributes);
        if !process.series.contains_key(&key) {
            let count = process.counts.entry(instrument).or_default();
            if *count >= MAX_SERIES {
                let overflow = (instrument, vec![("otel.metric.overflow", SmolStr::new_static("true"))]);
                process.series.entry(overflow).or_insert_with(|| Series::new(instrument)).observe(instrument, value, weight);
                return;
            }
            *count += 1;
        }
        process.series.entry(key).or_insert_with(|| Series::new(instrument)).observe(instrument, value, weight);
    }

    /// Forgets processes that are gone and were last counted more than `keep` ago: long
    /// enough for a push and a scrape to have their last totals.
    pub fn forget_gone(&mut self, alive: impl Fn(u32) -> bool, keep: Duration) {
        self.processes.retain(|pid, p| p.last_observed.elapsed() < keep || alive(*pid));
    }
}

/// The histogram a span counts in, and its attributes.
pub fn measure(span: &SpanRecord) -> Option<(Instrument, Attributes)> {
    let error = span.error_type.as_deref().map(SmolStr::new).filter(|_| matches!(span.status, Status::Error { .. }));
    let mut attributes: Attributes = Vec::with_capacity(6);
    let mut put = |key: &'static str, value: Option<SmolStr>| {
        if let Some(value) = value {
            attributes.push((key, value));
        }
    };
    let server = (span.network.server_address.clone(), span.network.server_port.map(|p| smol_str::format_smolstr!("{p}")));
    let instrument = match (&span.domain, span.kind) {
        (Domain::Http(h), SpanKind::Server) => {
            put("http.request.method", h.method.clone());
            put("http.response.status_code", h.status_code.map(|c| smol_str::format_smolstr!("{c}")));
            if let crate::spans::record::Url::Server { scheme, .. } = &h.url {
                put("url.scheme", Some(SmolStr::new_static(scheme)));
            }
            put("network.protocol.version", Some(SmolStr::new_static(h.protocol_version)).filter(|v| !v.is_empty()));
            put("url.template", h.template.clone());
            put("error.type", error);
            Instrument::HttpServer
        }
        (Domain::Http(h), SpanKind::Client) => {
            put("http.request.method", h.method.clone());
            put("http.response.status_code", h.status_code.map(|c| smol_str::format_smolstr!("{c}")));
            put("server.address", server.0);
            put("server.port", server.1);
            put("network.protocol.version", Some(SmolStr::new_static(h.protocol_version)).filter(|v| !v.is_empty()));
            put("url.template", h.template.clone());
            put("error.type", error);
            Instrument::HttpClient
        }
        (Domain::Db(d), SpanKind::Client) => {
            put("db.system.name", Some(SmolStr::new_static(d.system)));
            put("db.operation.name", d.operation.clone());
            put("db.namespace", d.namespace.clone());
            put("server.address", server.0);
            put("server.port", server.1);
            put("error.type", error);
            Instrument::DbClient
        }
        (Domain::Rpc(r), kind @ (SpanKind::Server | SpanKind::Client)) => {
            put("rpc.system", Some(SmolStr::new_static(r.system)));
            put("rpc.service", r.service.as_deref().map(SmolStr::new));
            put("rpc.method", r.method.as_deref().map(SmolStr::new));
            put("rpc.grpc.status_code", r.grpc_status_code.map(|c| smol_str::format_smolstr!("{c}")));
            if kind == SpanKind::Server { Instrument::RpcServer } else { Instrument::RpcClient }
        }
        _ => return None,
    };
    Some((instrument, attributes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spans::record::{DbFields, HttpFields, Ids, Network, Url};

    fn span(kind: SpanKind, domain: Domain, millis: u64, error: Option<&str>) -> SpanRecord {
        SpanRecord {
            kind,
            name: "GET".into(),
            start_unix_ns: 1_000_000_000,
            end_unix_ns: 1_000_000_000 + millis * 1_000_000,
            status: if error.is_some() { Status::Error { message: None } } else { Status::Unset },
            error_type: error.map(str::to_string),
            network: Network { server_address: Some("db.local".into()), server_port: Some(5432), ..Default::default() },
            domain,
            capture_truncated: false,
            capture_head_only: false,
            capture_one_in: 0,
            ids: Ids::default(),
        }
    }

    fn http(status: u16, path: &str) -> Domain {
        Domain::Http(HttpFields {
            method: Some("GET".into()),
            protocol_version: "1.1",
            url: Url::Server { path: Some(path.into()), scheme: "http" },
            status_code: Some(status),
            ..Default::default()
        })
    }

    /// Requests of different paths share a series; the status code and the error split them;
    /// a duration on a bound counts in that bound's bucket; the path is never an attribute.
    #[test]
    fn series_by_low_cardinality_attributes_only() {
        let resource = Arc::new(ProcessResource { pid: 7, service_name: "shop".into(), ..Default::default() });
        let mut red = RedMetrics::new(0);
        red.observe(&resource, &span(SpanKind::Server, http(200, "/item/1"), 5, None));
        red.observe(&resource, &span(SpanKind::Server, http(200, "/item/2"), 30, None));
        red.observe(&resource, &span(SpanKind::Server, http(500, "/item/3"), 1, Some("500")));
        let db = Domain::Db(DbFields {
            system: "postgresql",
            operation: Some("SELECT".into()),
            namespace: Some("shop".into()),
            query_text: Some("SELECT * FROM t WHERE id = ?".into()),
            ..Default::default()
        });
        red.observe(&resource, &span(SpanKind::Client, db, 2, None));
        let series = &red.processes[&7].series;
        assert_eq!(series.len(), 3, "{:?}", series.keys().collect::<Vec<_>>());
        let ok = series.iter().find(|((i, a), _)| *i == Instrument::HttpServer && a.contains(&("http.response.status_code", "200".into()))).map(|(_, s)| s).expect("200s");
        assert_eq!((ok.count, ok.buckets[0], ok.buckets[3]), (2, 1, 1), "5 ms on the 0.005 bound, 30 ms in (0.025, 0.05]");
        assert!((ok.sum - 0.035).abs() < 1e-9);
        assert!(series.keys().all(|(_, a)| a.iter().all(|(_, v)| !v.contains("/item") && !v.contains("WHERE"))));
        let failed = series.keys().find(|(_, a)| a.contains(&("http.response.status_code", "500".into()))).expect("500s");
        assert!(failed.1.contains(&("error.type", "500".into())));
        let db = series.keys().find(|(i, _)| *i == Instrument::DbClient).expect("db");
        assert_eq!(
            db.1,
            vec![
                ("db.system.name", "postgresql".into()),
                ("db.operation.name", "SELECT".into()),
                ("db.namespace", "shop".into()),
                ("server.address", "db.local".into()),
                ("server.port", "5432".into())
            ]
        );
    }

    /// Past `MAX_SERIES` distinct attribute sets, spans go to one overflow series.
    #[test]
    fn series_are_capped_per_process_and_histogram() {
        let resource = Arc::new(ProcessResource { pid: 8, service_name: "api".into(), ..Default::default() });
        let mut red = RedMetrics::new(0);
        for i in 0..MAX_SERIES + 10 {
            let mut s = span(SpanKind::Server, http(200, "/"), 1, None);
            if let Domain::Http(h) = &mut s.domain {
                h.method = Some(format!("M{i}").into());
            }
            red.observe(&resource, &s);
        }
        let series = &red.processes[&8].series;
        assert_eq!(series.len(), MAX_SERIES + 1);
        let overflow = &series[&(Instrument::HttpServer, vec![("otel.metric.overflow", SmolStr::new_static("true"))])];
        assert_eq!(overflow.count, 10);
    }

    /// A span of a process captured one connection in N counts N times: in the count, the
    /// sum and its bucket.
    #[test]
    fn a_sampled_span_counts_for_its_share() {
        let resource = Arc::new(ProcessResource { pid: 9, service_name: "web".into(), ..Default::default() });
        let mut red = RedMetrics::new(0);
        red.observe(&resource, &span(SpanKind::Server, http(200, "/"), 5, None));
        red.observe(&resource, &SpanRecord { capture_one_in: 8, ..span(SpanKind::Server, http(200, "/"), 30, None) });
        let series = red.processes[&9].series.values().next().expect("one series");
        assert_eq!((series.count, series.buckets[0], series.buckets[3]), (9, 1, 8));
        assert!((series.sum - (0.005 + 8.0 * 0.030)).abs() < 1e-9);
    }
}
