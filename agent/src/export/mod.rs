//! Span sinks behind one trait (`SpanSink`): a terminal tree, a jsonl file (OTLP JSON), OTLP
//! over gRPC or HTTP, and memory (for `compare`).
//! The pipeline hands batches to `run` over a bounded channel; a full channel drops spans and
//! counts them instead of slowing the pipeline down.

pub mod jsonl;
pub mod otlp;
pub mod otlp_span;
pub mod otlp_wire;
pub mod proto;
pub mod terminal;

use std::future::Future;
use std::pin::Pin;
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
    /// Spans of traces the sampler dropped (`OTEL_TRACES_SAMPLER`), never queued.
    pub not_sampled: AtomicU64,
}

impl ExportStats {
    /// The sink stopped short (shutdown deadline, second signal): what it still held is lost.
    pub fn abandon_pending(&self) {
        let done = self.exported.load(Ordering::Relaxed) + self.dropped_export_failed.load(Ordering::Relaxed);
        self.dropped_shutdown.store(self.queued.load(Ordering::Relaxed).saturating_sub(done), Ordering::Relaxed);
    }
}

/// Where finished spans go. The export task calls a sink from one task, never concurrently,
/// one batch at a time; retries and their backoff are the sink's own business. A sink that
/// writes OTLP converts records with `otlp_wire` (bytes) or `otlp_span` (messages); the
/// others read the records themselves.
pub trait SpanSink: Send {
    /// Takes one batch; true when it was delivered (a false counts the batch as failed).
    fn write(&mut self, batch: Vec<FinishedSpan>) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// Called on the batch timer, also when nothing arrived.
    fn tick(&mut self) {}
    /// No more spans will come.
    fn finish(&mut self) {}
}

/// A sink that keeps nothing (`--exporter none`).
pub struct NoSink;

impl SpanSink for NoSink {
    fn write(&mut self, _: Vec<FinishedSpan>) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(std::future::ready(true))
    }
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

    pub fn take(&self) -> Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans> {
        std::mem::take(&mut *self.store.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl SpanSink for MemorySink {
    fn write(&mut self, batch: Vec<FinishedSpan>) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        let spans = proto::resource_spans(&batch, &self.host_name);
        self.store.lock().unwrap_or_else(|e| e.into_inner()).extend(spans);
        Box::pin(std::future::ready(true))
    }
}

async fn write(sink: &mut dyn SpanSink, batch: Vec<FinishedSpan>, stats: &ExportStats) {
    let n = batch.len() as u64;
    let ok = sink.write(batch).await;
    let counter = if ok { &stats.exported } else { &stats.dropped_export_failed };
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Batching: spans are sent when this many are queued or after `BATCH_DELAY`.
const BATCH_SIZE: usize = 512;
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

/// Drains the channel into the sink until the sender is dropped, then flushes.
pub async fn run(mut rx: mpsc::Receiver<Vec<FinishedSpan>>, mut sink: Box<dyn SpanSink>, stats: Arc<ExportStats>) {
    let mut batch: Vec<FinishedSpan> = Vec::new();
    let mut timer = tokio::time::interval(BATCH_DELAY);
    loop {
        tokio::select! {
            received = rx.recv() => match received {
                Some(spans) => {
                    // Taken whole when nothing is queued: moving each span again cost as
                    // much as the reallocations of a batch grown afresh.
                    if batch.is_empty() {
                        batch = spans;
                    } else {
                        batch.extend(spans);
                    }
                    if batch.len() >= BATCH_SIZE {
                        write(sink.as_mut(), std::mem::take(&mut batch), &stats).await;
                    }
                }
                None => break,
            },
            _ = timer.tick() => {
                if !batch.is_empty() {
                    write(sink.as_mut(), std::mem::take(&mut batch), &stats).await;
                }
                sink.tick();
            }
        }
    }
    if !batch.is_empty() {
        write(sink.as_mut(), batch, &stats).await;
    }
    sink.finish();
}
