//! One span per line, each line an OTLP JSON `TracesData` holding that span and its resource.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::trace::v1::TracesData;

use super::SpanSink;
use crate::pipeline::FinishedSpan;

pub struct JsonlSink {
    out: BufWriter<File>,
    host_name: String,
    path: String,
    failed: bool,
}

impl JsonlSink {
    pub fn create(path: &Path, host_name: String) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot write the output file {}; choose a writable path with --output", path.display()))?;
        Ok(Self { out: BufWriter::new(file), host_name, path: path.display().to_string(), failed: false })
    }

    pub fn write(&mut self, batch: &[FinishedSpan]) -> bool {
        for span in batch {
            let data = TracesData { resource_spans: super::proto::resource_spans(std::slice::from_ref(span), &self.host_name) };
            let line = match serde_json::to_string(&data) {
                Ok(l) => l,
                Err(_) => continue,
            };
            if let Err(e) = writeln!(self.out, "{line}") {
                if !self.failed {
                    eprintln!("zerotrace: writing {} failed: {e}; spans are being dropped", self.path);
                    self.failed = true;
                }
                return false;
            }
        }
        self.flush();
        true
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

impl SpanSink for JsonlSink {
    fn write(&mut self, batch: Vec<FinishedSpan>) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(std::future::ready(JsonlSink::write(self, &batch)))
    }

    fn finish(&mut self) {
        self.flush();
    }
}
