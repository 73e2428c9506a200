//! The agent's own metrics, in the Prometheus text format on `--metrics-listen ADDR:PORT`
//! (`GET /metrics`): what it saw, what it made, and everything it lost, by reason — the same
//! figures as the exit report, while it runs.
//!
//! The pipeline owns its counters (one thread, no atomics on the hot path); once a second the
//! agent copies them here as deltas and renders the page the HTTP handler serves.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
}

/// Counters with one label, `reason`.
type ByReason = Family<[(&'static str, &'static str); 1], Counter>;

pub struct SelfMetrics {
    registry: Registry,
    families: HashMap<Metric, ByReason>,
    /// The metrics without a reason.
    plain: HashMap<Metric, Counter>,
    last: HashMap<(Metric, &'static str), u64>,
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
        // The agent's own metrics under `zerotrace_`; the RED histograms (registered by the
        // agent, `red::prometheus`) at the top, under their conventions' names.
        let mut registry = Registry::default();
        let own = registry.sub_registry_with_prefix("zerotrace");
        let mut families = HashMap::default();
        let mut plain = HashMap::default();
        for (metric, name, help) in
            [(Metric::Events, "events", "Kernel records read"), (Metric::Spans, "spans", "Spans made"), (Metric::Exported, "spans_exported", "Spans the sink accepted")]
        {
            let counter = Counter::default();
            own.register(name, help, counter.clone());
            plain.insert(metric, counter);
        }
        for (metric, name, help) in [
            (Metric::SpansDropped, "spans_dropped", "Spans made but not exported, by reason"),
            (Metric::EventsLost, "events_lost", "Kernel records lost before the agent read them, by reason"),
            (Metric::RequestsWithoutSpan, "requests_without_span", "Requests that got no span, by reason"),
            (Metric::Stitching, "same_host_callees", "SERVER spans whose caller is traced on this host, by outcome"),
        ] {
            let family = ByReason::default();
            own.register(name, help, family.clone());
            families.insert(metric, family);
        }
        Self { registry, families, plain, last: HashMap::default(), page: Arc::default() }
    }

    /// Metrics encoded from elsewhere at each render (the RED histograms).
    pub fn register_collector(&mut self, collector: Box<dyn prometheus_client::collector::Collector>) {
        self.registry.register_collector(collector);
    }

    /// The page the HTTP handler serves (rendered by `update`).
    pub fn page(&self) -> Arc<Mutex<Page>> {
        self.page.clone()
    }

    /// Takes a reading of cumulative totals and renders the page.
    pub fn update(&mut self, reading: &Reading) {
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
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_ok() {
            *self.page.lock().unwrap_or_else(|e| e.into_inner()) = Page { text, rendered: Some(std::time::Instant::now()) };
        }
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
        m.update(&vec![(Metric::Spans, "", 5), (Metric::RequestsWithoutSpan, "request_not_captured", 2)]);
        m.update(&vec![(Metric::Spans, "", 9), (Metric::RequestsWithoutSpan, "request_not_captured", 2)]);
        let page = m.page().lock().expect("page").text.clone();
        assert!(page.contains("zerotrace_spans_total 9"), "{page}");
        assert!(page.contains("zerotrace_requests_without_span_total{reason=\"request_not_captured\"} 2"), "{page}");
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
