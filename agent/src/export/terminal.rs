//! The default sink: a readable tree per trace on stdout, printed once the trace has been
//! quiet for a moment (its spans arrive child-first).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use crate::pipeline::FinishedSpan;
use crate::traceparent::hex;

const SETTLE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct TerminalSink {
    traces: HashMap<Vec<u8>, (Instant, Vec<FinishedSpan>)>,
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "SERVER",
        Ok(SpanKind::Client) => "CLIENT",
        Ok(SpanKind::Internal) => "INTERNAL",
        Ok(SpanKind::Producer) => "PRODUCER",
        Ok(SpanKind::Consumer) => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

fn attr(f: &FinishedSpan, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let kv = f.span.attributes.iter().find(|a| a.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Renders one trace as an indented tree.
pub fn render(trace_id: &[u8], spans: &[FinishedSpan]) -> String {
    let mut out = format!("trace {}\n", hex(trace_id));
    let ids: std::collections::HashSet<&[u8]> = spans.iter().map(|s| s.span.span_id.as_slice()).collect();
    let mut children: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        if s.span.parent_span_id.is_empty() || !ids.contains(s.span.parent_span_id.as_slice()) {
            roots.push(i);
        } else {
            children.entry(s.span.parent_span_id.as_slice()).or_default().push(i);
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| spans[i].span.start_time_unix_nano);
    by_start(&mut roots);
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        let f = &spans[i];
        let s = &f.span;
        let ms = s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano) as f64 / 1e6;
        let status = match s.status.as_ref().map(|st| st.code) {
            Some(2) => "ERROR",
            _ => "OK",
        };
        let detail = attr(f, "url.path").or_else(|| attr(f, "url.full")).unwrap_or_default();
        let code = attr(f, "http.response.status_code").unwrap_or_default();
        let _ = writeln!(
            out,
            "{}{} {} {} {} {} {:.2}ms {}",
            "  ".repeat(depth),
            if depth == 0 { "●" } else { "└─" },
            f.resource.service_name,
            kind_name(s.kind),
            s.name,
            if code.is_empty() { detail } else { format!("{detail} → {code}") },
            ms,
            status
        );
        if let Some(kids) = children.get_mut(s.span_id.as_slice()) {
            by_start(kids);
            stack.extend(kids.iter().rev().map(|&k| (k, depth + 1)));
        }
    }
    out
}

impl TerminalSink {
    pub fn add(&mut self, batch: Vec<FinishedSpan>) {
        let now = Instant::now();
        for f in batch {
            let entry = self.traces.entry(f.span.trace_id.clone()).or_insert_with(|| (now, Vec::new()));
            entry.0 = now;
            entry.1.push(f);
        }
    }

    /// Prints traces that have been quiet for `SETTLE` (or all of them).
    pub fn print_settled(&mut self, all: bool) {
        let now = Instant::now();
        let settled: Vec<Vec<u8>> = self.traces.iter().filter(|(_, (t, _))| all || now.duration_since(*t) >= SETTLE).map(|(k, _)| k.clone()).collect();
        let mut stdout = std::io::stdout().lock();
        for id in settled {
            if let Some((_, spans)) = self.traces.remove(&id) {
                let _ = writeln!(stdout, "{}", render(&id, &spans));
            }
        }
        let _ = stdout.flush();
    }
}
