//! The agent's own metrics, in the Prometheus text format on `--metrics-listen ADDR:PORT`
//! (`GET /metrics`): what it saw, what it made, and everything it lost, by reason — the same
//! figures as the exit report, while it runs.
//!
//! The pipeline owns its counters (one thread, no atomics on the hot path); once a second the
//! agent copies them here as deltas and renders the page the HTTP handler serves.

use std::sync::{Arc, Mutex};

use std::sync::atomic::AtomicU64;

use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge as Gauge_, Metric as OtlpMetric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap as HashMap;

/// One reading of every counter: (metric, label value, total so far).
pub type Reading = Vec<(Metric, &'static str, u64)>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Kernel records read.
    Events,
    /// Spans made (`reason` unused).
    Spans,
    Exported,
    /// Spans dropped, by reason.
    SpansDropped,
    /// Kernel records lost, by reason.
    EventsLost,
    /// Requests that got no span, by reason.
    RequestsWithoutSpan,
    /// Same-host callees, by how they found (or did not find) their caller.
    Stitching,
    /// `--overhead-budget` steps, by the capture a process went to.
    BudgetSteps,
}

impl Metric {
    const ALL: [Metric; 8] =
        [Metric::Events, Metric::Spans, Metric::Exported, Metric::SpansDropped, Metric::EventsLost, Metric::RequestsWithoutSpan, Metric::Stitching, Metric::BudgetSteps];

    /// The Prometheus name (under `zerotrace_`, `_total` added by the encoder) and the OTLP one.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Metric::Events => ("events", "zerotrace.events"),
            Metric::Spans => ("spans", "zerotrace.spans"),
            Metric::Exported => ("spans_exported", "zerotrace.spans.exported"),
            Metric::SpansDropped => ("spans_dropped", "zerotrace.spans.dropped"),
            Metric::EventsLost => ("events_lost", "zerotrace.events.lost"),
            Metric::RequestsWithoutSpan => ("requests_without_span", "zerotrace.requests.without_span"),
            Metric::Stitching => ("same_host_callees", "zerotrace.same_host.callees"),
            Metric::BudgetSteps => ("overhead_budget_steps", "zerotrace.overhead_budget.steps"),
        }
    }

    fn help(self) -> &'static str {
        match self {
            Metric::Events => "Kernel records read",
            Metric::Spans => "Spans made",
            Metric::Exported => "Spans the sink accepted",
            Metric::SpansDropped => "Spans made but not exported, by reason",
            Metric::EventsLost => "Kernel records lost before the agent read them, by reason",
            Metric::RequestsWithoutSpan => "Requests that got no span, by reason",
            Metric::Stitching => "SERVER spans whose caller is traced on this host, by outcome",
            Metric::BudgetSteps => "Processes stepped to another capture by --overhead-budget, by the capture they went to",
        }
    }

    /// Whether the metric is counted by `reason`.
    fn by_reason(self) -> bool {
        !matches!(self, Metric::Events | Metric::Spans | Metric::Exported)
    }
}

/// What the agent holds and costs at one moment, read next to the counters.
#[derive(Clone, Debug, Default)]
pub struct Levels {
    /// Processes traced now (started, forked from a traced one, or chosen by fleet mode, and
    /// not exited or released).
    pub processes_traced: u64,
    /// Spans queued for export and not yet exported or dropped.
    pub export_queue_spans: u64,
    /// Processes capturing heads only, over their `--overhead-budget`.
    pub processes_head_only: u64,
    /// Of those, processes capturing a sampled share of their connections.
    pub processes_sampled: u64,
    /// The agent's own CPU time (user and system) since it started.
    pub cpu_seconds: f64,
    /// The agent's resident memory.
    pub resident_bytes: u64,
    /// Per kernel program: (name, runs, nanoseconds spent) since load. Empty unless the kernel
    /// counts them (`--hook-stats`, or `kernel.bpf_stats_enabled=1`).
    pub hooks: Vec<(String, u64, u64)>,
}

impl Levels {
    /// The agent's CPU time and resident memory, from the kernel (getrusage and
    /// /proc/self/statm); zero where unreadable.
    pub fn own_usage() -> (f64, u64) {
        // SAFETY: getrusage writes only into the struct it is given, which outlives the call.
        let cpu = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut usage) == 0 {
                let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
                seconds(usage.ru_utime) + seconds(usage.ru_stime)
            } else {
                0.0
            }
        };
        // SAFETY: sysconf reads a constant of the system; no memory is passed.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
        let resident_pages = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok())).unwrap_or(0);
        (cpu, resident_pages * page)
    }
}

/// Counters with one label, `reason`.
type ByReason = Family<[(&'static str, &'static str); 1], Counter>;
/// Counters by kernel program.
type ByHook = Family<[(&'static str, String); 1], Counter>;
type ByHookSeconds = Family<[(&'static str, String); 1], Counter<f64, AtomicU64>>;

pub struct SelfMetrics {
    registry: Registry,
    families: HashMap<Metric, ByReason>,
    /// The metrics without a reason.
    plain: HashMap<Metric, Counter>,
    last: HashMap<(Metric, &'static str), u64>,
    processes_traced: Gauge,
    processes_head_only: Gauge,
    processes_sampled: Gauge,
    export_queue: Gauge,
    resident: Gauge,
    cpu: Counter<f64, AtomicU64>,
    last_cpu: f64,
    hook_runs: ByHook,
    hook_seconds: ByHookSeconds,
    last_hooks: HashMap<String, (u64, u64)>,
    page: Arc<Mutex<Page>>,
}

/// What the HTTP handler serves: the metrics page, and when the agent's loop last rendered it
/// (`/healthz` says whether that loop is alive).
#[derive(Default)]
pub struct Page {
    text: String,
    rendered: Option<std::time::Instant>,
}

/// The agent's loop renders the page every second: this long without a render, it is stuck.
const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// `/healthz`: 200 while the agent's loop renders its metrics, 503 once it has not for
/// `STALLED_AFTER` (or never has), with one line saying which.
fn health(rendered: Option<std::time::Instant>) -> (u16, String) {
    match rendered.map(|at| at.elapsed()) {
        Some(age) if age < STALLED_AFTER => (200, "ok\n".to_string()),
        Some(age) => (503, format!("stalled: the agent has not read its events for {} s\n", age.as_secs())),
        None => (503, "starting: the agent has not read its events yet\n".to_string()),
    }
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfMetrics {
    pub fn new() -> Self {
        // The agent's own metrics under `zerotrace_`, its CPU and memory under the names every
        // Prometheus process collector uses; the RED histograms (registered by the agent,
        // `red::prometheus`) at the top, under their conventions' names.
        let mut registry = Registry::default();
        let (cpu, resident) = (Counter::<f64, AtomicU64>::default(), Gauge::default());
        registry.register("process_cpu_seconds", "The agent's CPU time, user and system", cpu.clone());
        registry.register("process_resident_memory_bytes", "The agent's resident memory", resident.clone());
        let own = registry.sub_registry_with_prefix("zerotrace");
        let mut families = HashMap::default();
        let mut plain = HashMap::default();
        for metric in Metric::ALL {
            let name = metric.names().0;
            if metric.by_reason() {
                let family = ByReason::default();
                own.register(name, metric.help(), family.clone());
                families.insert(metric, family);
            } else {
                let counter = Counter::default();
                own.register(name, metric.help(), counter.clone());
                plain.insert(metric, counter);
            }
        }
        let (processes_traced, processes_head_only, processes_sampled, export_queue) = (Gauge::default(), Gauge::default(), Gauge::default(), Gauge::default());
        own.register("processes_traced", "Processes traced now", processes_traced.clone());
        own.register("processes_head_only", "Processes capturing heads only, over their --overhead-budget", processes_head_only.clone());
        own.register("processes_sampled", "Processes capturing one connection in N, over their --overhead-budget even with heads only", processes_sampled.clone());
        own.register("export_queue_spans", "Spans queued for export", export_queue.clone());
        let (hook_runs, hook_seconds) = (ByHook::default(), ByHookSeconds::default());
        own.register("hook_runs", "Runs of each kernel program (with --hook-stats or kernel.bpf_stats_enabled)", hook_runs.clone());
        own.register("hook_run_seconds", "Time spent in each kernel program (with --hook-stats or kernel.bpf_stats_enabled)", hook_seconds.clone());
        Self {
            registry,
            families,
            plain,
            last: HashMap::default(),
            processes_traced,
            processes_head_only,
            processes_sampled,
            export_queue,
            resident,
            cpu,
            last_cpu: 0.0,
            hook_runs,
            hook_seconds,
            last_hooks: HashMap::default(),
            page: Arc::default(),
        }
    }

    /// Metrics encoded from elsewhere at each render (the RED histograms).
    pub fn register_collector(&mut self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.registry.register_collector(collector);
    }

    /// The page the HTTP handler serves (rendered by `update`).
    pub fn page(&self) -> Arc<Mutex<Page>> {
        self.page.clone()
    }

    /// Takes a reading of cumulative totals and levels, and renders the page.
    pub fn update(&mut self, reading: &Reading, levels: &Levels) {
        for &(metric, reason, total) in reading {
            let last = self.last.entry((metric, reason)).or_insert(0);
            if total > *last {
                if let Some(counter) = self.plain.get(&metric) {
                    counter.inc_by(total - *last);
                } else if let Some(family) = self.families.get(&metric) {
                    family.get_or_create(&[("reason", reason)]).inc_by(total - *last);
                }
            }
            *last = (*last).max(total);
        }
        self.processes_traced.set(levels.processes_traced as i64);
        self.processes_head_only.set(levels.processes_head_only as i64);
        self.processes_sampled.set(levels.processes_sampled as i64);
        self.export_queue.set(levels.export_queue_spans as i64);
        self.resident.set(levels.resident_bytes as i64);
        if levels.cpu_seconds > self.last_cpu {
            self.cpu.inc_by(levels.cpu_seconds - self.last_cpu);
            self.last_cpu = levels.cpu_seconds;
        }
        for (hook, runs, ns) in &levels.hooks {
            let last = self.last_hooks.entry(hook.clone()).or_insert((0, 0));
            let label = [("hook", hook.clone())];
            self.hook_runs.get_or_create(&label).inc_by(runs.saturating_sub(last.0));
            self.hook_seconds.get_or_create(&label).inc_by(ns.saturating_sub(last.1) as f64 / 1e9);
            *last = (*runs, *ns);
        }
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_ok() {
            *self.page.lock().unwrap_or_else(|e| e.into_inner()) = Page { text, rendered: Some(std::time::Instant::now()) };
        }
    }
}

/// The same figures as OTLP metrics, for the push next to the RED histograms: one resource,
/// the agent itself (`service.name` zerotrace), cumulative since `start_unix_ns`.
pub fn otlp(reading: &Reading, levels: &Levels, host_name: &str, start_unix_ns: u64, now_unix_ns: u64) -> ResourceMetrics {
    use crate::export::otlp_span::{kv_int, kv_str};
    let sum = |name: &str, unit: &str, description: &str, points: Vec<NumberDataPoint>| OtlpMetric {
        name: name.to_string(),
        unit: unit.to_string(),
        description: description.to_string(),
        data: Some(metric::Data::Sum(Sum { data_points: points, aggregation_temporality: AggregationTemporality::Cumulative as i32, is_monotonic: true })),
        ..Default::default()
    };
    let gauge = |name: &str, unit: &str, description: &str, value: i64| OtlpMetric {
        name: name.to_string(),
        unit: unit.to_string(),
        description: description.to_string(),
        data: Some(metric::Data::Gauge(Gauge_ {
            data_points: vec![NumberDataPoint { time_unix_nano: now_unix_ns, value: Some(number_data_point::Value::AsInt(value)), ..Default::default() }],
        })),
        ..Default::default()
    };
    let point = |attributes: Vec<KeyValue>, value: number_data_point::Value| NumberDataPoint {
        attributes,
        start_time_unix_nano: start_unix_ns,
        time_unix_nano: now_unix_ns,
        value: Some(value),
        ..Default::default()
    };
    let mut metrics = Vec::new();
    for metric in Metric::ALL {
        let points: Vec<NumberDataPoint> = reading
            .iter()
            .filter(|(m, _, _)| *m == metric)
            .map(|&(_, reason, total)| {
                let attributes = if metric.by_reason() { vec![kv_str("reason", reason)] } else { Vec::new() };
                point(attributes, number_data_point::Value::AsInt(total as i64))
            })
            .collect();
        metrics.push(sum(metric.names().1, "{count}", metric.help(), points));
    }
    metrics.push(sum("process.cpu.time", "s", "The agent's CPU time, user and system", vec![point(Vec::new(), number_data_point::Value::AsDouble(levels.cpu_seconds))]));
    metrics.push(gauge("process.memory.usage", "By", "The agent's resident memory", levels.resident_bytes as i64));
    metrics.push(gauge("zerotrace.processes.traced", "{process}", "Processes traced now", levels.processes_traced as i64));
    metrics.push(gauge("zerotrace.processes.head_only", "{process}", "Processes capturing heads only, over their --overhead-budget", levels.processes_head_only as i64));
    metrics.push(gauge(
        "zerotrace.processes.sampled",
        "{process}",
        "Processes capturing one connection in N, over their --overhead-budget even with heads only",
        levels.processes_sampled as i64,
    ));
    metrics.push(gauge("zerotrace.export.queue", "{span}", "Spans queued for export", levels.export_queue_spans as i64));
    if !levels.hooks.is_empty() {
        let hook = |h: &str| vec![kv_str("zerotrace.hook", h.to_string())];
        let runs = levels.hooks.iter().map(|(h, runs, _)| point(hook(h), number_data_point::Value::AsInt(*runs as i64))).collect();
        let time = levels.hooks.iter().map(|(h, _, ns)| point(hook(h), number_data_point::Value::AsDouble(*ns as f64 / 1e9))).collect();
        metrics.push(sum("zerotrace.hook.runs", "{run}", "Runs of each kernel program", runs));
        metrics.push(sum("zerotrace.hook.run.time", "s", "Time spent in each kernel program", time));
    }
    let schema_url = format!("https://opentelemetry.io/schemas/{}", crate::spans::record::SEMCONV_VERSION);
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![
                kv_str("service.name", "zerotrace"),
                kv_int("process.pid", i64::from(std::process::id())),
                kv_str("host.name", host_name.to_string()),
                kv_str("service.version", env!("CARGO_PKG_VERSION")),
                kv_str("telemetry.distro.name", "zerotrace"),
                kv_str("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
            ],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope { name: "zerotrace".to_string(), version: env!("CARGO_PKG_VERSION").to_string(), ..Default::default() }),
            metrics,
            schema_url: schema_url.clone(),
        }],
        schema_url,
    }
}

/// Serves the page on `addr` (`/metrics`, and `/healthz` for a liveness probe) until the
/// runtime stops. Fails at once if the address is taken.
pub async fn serve(addr: std::net::SocketAddr, page: Arc<Mutex<Page>>) -> anyhow::Result<()> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("--metrics-listen {addr}: cannot listen there; pick a free address and port"))?;
    let metrics_page = page.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let page = metrics_page.clone();
                async move {
                    let text = page.lock().unwrap_or_else(|e| e.into_inner()).text.clone();
                    ([("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get(move || {
                let page = page.clone();
                async move {
                    let (code, text) = health(page.lock().unwrap_or_else(|e| e.into_inner()).rendered);
                    (axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE), text)
                }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_become_counters_by_reason() {
        let mut m = SelfMetrics::new();
        let levels = Levels {
            processes_traced: 3,
            processes_head_only: 0,
            processes_sampled: 0,
            export_queue_spans: 7,
            cpu_seconds: 1.5,
            resident_bytes: 4096,
            hooks: vec![("sys_enter_read".to_string(), 10, 2_000_000_000)],
        };
        m.update(&vec![(Metric::Spans, "", 5), (Metric::RequestsWithoutSpan, "request_not_captured", 2)], &levels);
        let later = Levels { processes_traced: 2, cpu_seconds: 2.5, hooks: vec![("sys_enter_read".to_string(), 15, 3_000_000_000)], ..levels };
        m.update(&vec![(Metric::Spans, "", 9), (Metric::RequestsWithoutSpan, "request_not_captured", 2)], &later);
        let page = m.page().lock().expect("page").text.clone();
        assert!(page.contains("zerotrace_spans_total 9"), "{page}");
        assert!(page.contains("zerotrace_requests_without_span_total{reason=\"request_not_captured\"} 2"), "{page}");
        assert!(page.contains("zerotrace_processes_traced 2\n") && page.contains("zerotrace_export_queue_spans 7\n"), "{page}");
        assert!(page.contains("process_cpu_seconds_total 2.5") && page.contains("process_resident_memory_bytes 4096"), "{page}");
        assert!(page.contains("zerotrace_hook_runs_total{hook=\"sys_enter_read\"} 15") && page.contains("zerotrace_hook_run_seconds_total{hook=\"sys_enter_read\"} 3.0"), "{page}");
    }

    #[test]
    fn health_follows_the_loop() {
        let now = std::time::Instant::now();
        assert_eq!(health(None).0, 503);
        assert_eq!(health(Some(now)), (200, "ok\n".to_string()));
        let stuck = now.checked_sub(STALLED_AFTER + std::time::Duration::from_secs(2)).expect("an instant 12 s ago");
        let (code, text) = health(Some(stuck));
        assert!(code == 503 && text.starts_with("stalled: the agent has not read its events for 1"), "{code} {text}");
    }
}
