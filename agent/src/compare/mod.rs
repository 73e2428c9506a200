//! `zerotrace compare`: how zerotrace's spans measure up against a language agent's for the
//! same workload.
//!
//! `spanfile` (recorded OTLP JSON) or `receiver` + the agent (live) → `model` (classified
//! spans) → `align` (pairs describing the same operation) → `report` (the figures) → `text`
//! and `html` (what users read), plus the report as JSON for scripts.

pub mod align;
pub mod html;
pub mod model;
pub mod receiver;
pub mod report;
pub mod spanfile;
pub mod text;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::agent::{Targets, runtime, trace};
use crate::cli::CompareArgs;
use crate::export::MemorySink;

pub fn run(args: &CompareArgs) -> Result<()> {
    let (ours, theirs) = match (&args.zerotrace_spans, &args.agent_spans) {
        (Some(z), Some(a)) => (model::flatten(&spanfile::load(z)?), model::flatten(&spanfile::load(a)?)),
        _ => {
            let (ours, theirs) = live(args)?;
            let mut ours = model::flatten(&ours);
            // The language agent's own exports to our receiver are our doing, not the app's.
            ours.retain(|s| !(s.category == model::Category::HttpClient && s.port == Some(args.otlp_http_port) && s.target == "/v1/traces"));
            (ours, model::flatten(&theirs))
        }
    };
    if theirs.is_empty() {
        eprintln!("zerotrace compare: warning: no spans from the language agent; check that it exports OTLP to this receiver");
    }
    let report = report::compare(ours, theirs);
    print!("{}", text::render(&report));
    if let Some(path) = &args.html {
        write_file(path, &html::render(&report), "--html")?;
        eprintln!("zerotrace compare: HTML report in {}", path.display());
    }
    if let Some(path) = &args.json {
        write_file(path, &serde_json::to_string_pretty(&report)?, "--json")?;
    }
    Ok(())
}

fn write_file(path: &Path, text: &str, flag: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}; choose a writable path with {flag}", path.display()))
}

/// Traces the targets while the built-in receiver takes the language agent's spans; returns
/// (zerotrace's, the agent's).
fn live(args: &CompareArgs) -> Result<(Vec<ResourceSpans>, Vec<ResourceSpans>)> {
    let targets = Targets::resolve(&args.trace, false)?;
    if let Some(dir) = &args.save_spans {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}; choose a writable directory with --save-spans", dir.display()))?;
    }
    let (ours, theirs) = runtime()?.block_on(async {
        let received = receiver::Received::default();
        let (grpc, http) =
            receiver::start(SocketAddr::new(args.otlp_listen, args.otlp_grpc_port), SocketAddr::new(args.otlp_listen, args.otlp_http_port), received.clone()).await?;
        eprintln!("zerotrace compare: OTLP receiver on {grpc} (gRPC) and {http} (HTTP); point the language agent at it, e.g. OTEL_EXPORTER_OTLP_ENDPOINT=http://{http}");
        let memory = MemorySink::new(crate::process::host_name());
        trace(&args.trace, targets, Box::new(memory.clone()), None).await?;
        eprintln!("zerotrace compare: tracing stopped; receiving for {} s more", args.settle);
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        eprintln!("zerotrace compare: {} spans from the language agent", received.span_count());
        anyhow::Ok((memory.take(), received.take()))
    })?;
    if let Some(dir) = &args.save_spans {
        spanfile::save(&dir.join("zerotrace.jsonl"), &ours)?;
        spanfile::save(&dir.join("agent.jsonl"), &theirs)?;
    }
    Ok((ours, theirs))
}
