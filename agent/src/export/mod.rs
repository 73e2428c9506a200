//! Span sinks: a terminal tree, a jsonl file (OTLP JSON), OTLP over gRPC or HTTP, and memory
//! (for `compare`).
//! The pipeline hands batches to `run` over a bounded channel; a full channel drops spans and
//! counts them instead of slowing the pipeline down.

pub mod jsonl;
pub mod otlp;
pub mod proto;
pub mod terminal;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::pipeline::FinishedSpan;

/// Counters shared between the pipeline (drops at the queue) and the sink.
#[derive(Default, Debug)]
pub struct ExportStats {
    /// Spans handed to the sink's queue.
    pub queued: AtomicU64,
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_export_failed: AtomicU64,
    /// Queued but neither exported nor failed when the shutdown deadline passed.
    pub dropped_shutdown: AtomicU64,
}

impl ExportStats {
    /// The sink stopped short (shutdown deadline, second signal): what it still held is lost.
    pub fn abandon_pending(&self) {
        let done = self.exported.load(Ordering::Relaxed) + self.dropped_export_failed.load(Ordering::Relaxed);
        self.dropped_shutdown.store(self.queued.load(Ordering::Relaxed).saturating_sub(done), Ordering::Relaxed);
    }
}

pub enum Sink {
    Terminal(terminal::TerminalSink),
    Jsonl(jsonl::JsonlSink),
    Otlp(otlp::OtlpSink),
    /// Kept in memory as OTLP, for `compare`.
    Memory(MemorySink),
    None,
}

/// Spans kept in memory as OTLP resource spans; clones share the same store.
#[derive(Clone)]
pub struct MemorySink {
    store: Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>>>,
    host_name: String,
}

impl MemorySink {
    pub fn new(host_name: String) -> Self {
        Self { store: Default::default(), host_name }
    }

    fn add(&self, batch: Vec<FinishedSpan>) {
        let spans = proto::resource_spans(batch, &self.host_name);
        self.store.lock().unwrap_or_else(|e| e.into_inner()).extend(spans);
    }

    pub fn take(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans> {
        std::mem::take(&mut *self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Sink {
    async fn write(&mut self, batch: Vec<FinishedSpan>, stats: &ExportStats) {
        let n = batch.len() as u64;
        let ok = match self {
            Sink::Terminal(t) => {
                t.add(batch);
                true
            }
            Sink::Jsonl(j) => j.write(&batch),
            Sink::Otlp(o) => o.export(batch).await,
            Sink::Memory(m) => {
                m.add(batch);
                true
            }
            Sink::None => true,
        };
        let counter = if ok { &stats.exported } else { &stats.dropped_export_failed };
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn tick(&mut self) {
        if let Sink::Terminal(t) = self {
            t.print_settled(false);
        }
    }

    fn finish(&mut self) {
        match self {
            Sink::Terminal(t) => t.print_settled(true),
            Sink::Jsonl(j) => j.flush(),
            _ => {}
        }
    }
}

/// Batching: spans are sent when this many are queued or after `BATCH_DELAY`.
const BATCH_SIZE: usize = 512;
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Drains the channel into the sink until the sender is dropped, then flushes.
pub async fn run(mut rx: mpsc::Receiver<Vec<FinishedSpan>>, mut sink: Sink, stats: Arc<ExportStats>) {
    let mut batch: Vec<FinishedSpan> = Vec::new();
    let mut timer = tokio::time::interval(BATCH_DELAY);
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Some(spans) => {
                    batch.extend(spans);
                    if batch.len() >= BATCH_SIZE {
                        sink.write(std::mem::take(&mut batch), &stats).await;
                    }
                }
                None => break,
            },
            _ = timer.tick() => {
                if !batch.is_empty() {
                    sink.write(std::mem::take(&mut batch), &stats).await;
                }
                sink.tick();
            }
        }
    }
    if !batch.is_empty() {
        sink.write(batch, &stats).await;
    }
    sink.finish();
}
