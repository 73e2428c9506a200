//! Our spans to OTLP protobuf messages, grouped by resource.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

use super::otlp_span::{kv_int, kv_str, span};
use crate::pipeline::FinishedSpan;
use crate::process::ProcessResource;
use crate::spans::record::SEMCONV_VERSION;

pub fn resource(r: &ProcessResource, host_name: &str) -> Resource {
    let mut attributes = vec![
        kv_str("service.name", r.service_name.clone()),
        kv_int("process.pid", r.pid as i64),
        kv_str("host.name", host_name),
        kv_str("telemetry.distro.name", "zerotrace"),
        kv_str("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
    ];
    if !r.executable_name.is_empty() {
        attributes.push(kv_str("process.executable.name", r.executable_name.clone()));
    }
    if let Some(id) = &r.container_id {
        attributes.push(kv_str("container.id", id.clone()));
    }
    if r.service_name_inferred {
        attributes.push(crate::export::otlp_span::kv_bool("zerotrace.service.name.inferred", true));
    }
    for (k, v) in &r.extra {
        if !attributes.iter().any(|a| &a.key == k) {
            attributes.push(kv_str(k, v.clone()));
        }
    }
    Resource { attributes, ..Default::default() }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "zerotrace".to_string(), version: env!("CARGO_PKG_VERSION").to_string(), ..Default::default() }
}

/// Groups spans by process into OTLP ResourceSpans.
pub fn resource_spans(batch: &[FinishedSpan], host_name: &str) -> Vec<ResourceSpans> {
    let mut by_pid: BTreeMap<u32, (Resource, Vec<_>)> = BTreeMap::new();
    for f in batch {
        by_pid.entry(f.resource.pid).or_insert_with(|| (resource(&f.resource, host_name), Vec::new())).1.push(span(&f.span));
    }
    let schema_url = format!("https://opentelemetry.io/schemas/{SEMCONV_VERSION}");
    by_pid
        .into_values()
        .map(|(resource, spans)| ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans { scope: Some(scope()), spans, schema_url: schema_url.clone() }],
            schema_url: schema_url.clone(),
        })
        .collect()
}
