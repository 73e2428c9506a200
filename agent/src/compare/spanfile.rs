//! Recorded spans on disk: OTLP JSON, either one document (`TracesData` or
//! `ExportTraceServiceRequest`, which have the same shape) or one per line, as zerotrace's
//! jsonl exporter and the OpenTelemetry Collector's file exporter write them.

use std::io::Write;
use std::path::Path;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, TracesData};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SpanFileError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} line {line} is not OTLP JSON ({reason}); give a file of OTLP JSON TracesData, one document or one per line")]
    Parse { path: String, line: usize, reason: String },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Parses OTLP JSON text: a whole document, else one document per non-empty line.
pub fn parse(text: &str, path: &str) -> Result<Vec<ResourceSpans>, SpanFileError> {
    if let Ok(whole) = serde_json::from_str::<TracesData>(text) {
        return Ok(whole.resource_spans);
    }
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let data: TracesData = serde_json::from_str(line).map_err(|e| SpanFileError::Parse { path: path.to_string(), line: n + 1, reason: e.to_string() })?;
        out.extend(data.resource_spans);
    }
    Ok(out)
}

pub fn load(path: &Path) -> Result<Vec<ResourceSpans>, SpanFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SpanFileError::Read { path: shown.clone(), source })?;
    parse(&text, &shown)
}

/// Writes one `TracesData` per line (readable by `load` and by `compare` later).
pub fn save(path: &Path, resource_spans: &[ResourceSpans]) -> Result<(), SpanFileError> {
    let shown = path.display().to_string();
    let err = |source| SpanFileError::Write { path: shown.clone(), source };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(err)?);
    for rs in resource_spans {
        let line = serde_json::to_string(&TracesData { resource_spans: vec![rs.clone()] }).map_err(|e| err(e.into()))?;
        writeln!(out, "{line}").map_err(err)?;
    }
    out.flush().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
        "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET",
        "kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":"2000",
        "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}]}]}]}]}"#;

    #[test]
    fn one_document_or_one_per_line() {
        let whole = parse(DOC, "f").expect("document");
        assert_eq!(whole.len(), 1);
        let lines = format!("{}\n\n{}\n", DOC.replace('\n', ""), DOC.replace('\n', ""));
        let spans = super::super::model::flatten(&parse(&lines, "f").expect("lines"));
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].service.as_str(), spans[0].start, spans[0].attrs["http.response.status_code"].as_str()), ("shop", 1000, "200"));
    }

    #[test]
    fn garbage_names_the_line() {
        let err = parse("{\"resourceSpans\":[]}\nnot json\n", "spans.jsonl").expect_err("garbage");
        assert!(err.to_string().starts_with("spans.jsonl line 2 is not OTLP JSON"), "{err}");
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = std::env::temp_dir().join(format!("zerotrace-spanfile-{}", std::process::id()));
        let rs = parse(DOC, "f").expect("document");
        save(&dir, &rs).expect("save");
        let back = load(&dir).expect("load");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(back, rs);
    }
}
