//! The default sink: a readable tree per trace on stdout, printed once the trace has been
//! quiet for a moment (its spans arrive child-first).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use super::SpanSink;
use crate::pipeline::FinishedSpan;
use crate::spans::record::Status;
use crate::traceparent::{SpanId, TraceId, hex};

const SETTLE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct TerminalSink {
    traces: HashMap<TraceId, (Instant, Vec<FinishedSpan>)>,
}

/// Renders one trace as an indented tree.
pub fn render(trace_id: &TraceId, spans: &[FinishedSpan]) -> String {
    let mut out = format!("trace {}\n", hex(trace_id));
    let ids: std::collections::HashSet<SpanId> = spans.iter().map(|s| s.span.ids.span_id).collect();
    let mut children: HashMap<SpanId, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        match s.span.ids.parent {
            Some(parent) if ids.contains(&parent) => children.entry(parent).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let by_start = |v: &mut Vec<usize>| v.sort_by_key(|&i| spans[i].span.start_unix_ns);
    by_start(&mut roots);
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (i, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        let f = &spans[i];
        let s = &f.span;
        let ms = s.end_unix_ns.saturating_sub(s.start_unix_ns) as f64 / 1e6;
        let status = match s.status {
            Status::Error { .. } => "ERROR",
            Status::Unset => "OK",
        };
        let _ = writeln!(
            out,
            "{}{} {} {} {} {} {:.2}ms {}",
            "  ".repeat(depth),
            if depth == 0 { "●" } else { "└─" },
            f.resource.service_name,
            s.kind.name(),
            s.name,
            s.detail(),
            ms,
            status
        );
        if let Some(kids) = children.get_mut(&s.ids.span_id) {
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
            let entry = self.traces.entry(f.span.ids.trace_id).or_insert_with(|| (now, Vec::new()));
            entry.0 = now;
            entry.1.push(f);
        }
    }

    /// Prints traces that have been quiet for `SETTLE` (or all of them).
    pub fn print_settled(&mut self, all: bool) {
        let now = Instant::now();
        let settled: Vec<TraceId> = self.traces.iter().filter(|(_, (t, _))| all || now.duration_since(*t) >= SETTLE).map(|(k, _)| *k).collect();
        let mut stdout = std::io::stdout().lock();
        for id in settled {
            if let Some((_, spans)) = self.traces.remove(&id) {
                let _ = writeln!(stdout, "{}", render(&id, &spans));
            }
        }
        let _ = stdout.flush();
    }
}

impl SpanSink for TerminalSink {
    fn write(&mut self, batch: Vec<FinishedSpan>) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        self.add(batch);
        Box::pin(std::future::ready(true))
    }

    fn tick(&mut self) {
        self.print_settled(false);
    }

    fn finish(&mut self) {
        self.print_settled(true);
    }
}
