//! A flat view of exported spans for assertions, from OTLP protobuf or OTLP JSON lines.

use std::collections::HashMap;
use std::path::Path;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

#[derive(Clone, Debug)]
pub struct TestSpan {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    pub trace_state: String,
    pub name: String,
    /// "SERVER", "CLIENT", "PRODUCER" or "CONSUMER".
    pub kind: String,
    pub start: u64,
    pub end: u64,
    pub error: bool,
    pub attrs: HashMap<String, String>,
    pub resource: HashMap<String, String>,
    /// Span links (trace id, span id), hex.
    pub links: Vec<(String, String)>,
}

impl TestSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.get(key).map(String::as_str)
    }
    pub fn service(&self) -> &str {
        self.resource.get("service.name").map_or("", String::as_str)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn kv_map(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .filter_map(|kv| {
            let v = match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => s.clone(),
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), v))
        })
        .collect()
}

fn kind_name(k: i32) -> String {
    match k {
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        1 => "INTERNAL",
        _ => "OTHER",
    }
    .to_string()
}

pub fn from_proto(rs: &[ResourceSpans]) -> Vec<TestSpan> {
    let mut out = Vec::new();
    for r in rs {
        let resource = r.resource.as_ref().map(|r| kv_map(&r.attributes)).unwrap_or_default();
        // Every span zerotrace exports, in every test, is checked against the conventions.
        let zerotrace = crate::semconv::is_zerotrace(&resource);
        for ss in &r.scope_spans {
            for s in &ss.spans {
                out.push(TestSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_id: hex(&s.parent_span_id),
                    trace_state: s.trace_state.clone(),
                    name: s.name.clone(),
                    kind: kind_name(s.kind),
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    error: s.status.as_ref().is_some_and(|st| st.code == 2),
                    attrs: kv_map(&s.attributes),
                    resource: resource.clone(),
                    links: s.links.iter().map(|l| (hex(&l.trace_id), hex(&l.span_id))).collect(),
                });
                if zerotrace {
                    crate::semconv::assert_span_conforms(out.last().expect("just pushed"));
                }
            }
        }
    }
    out
}

/// Reads a jsonl file (one OTLP JSON TracesData per line).
pub fn from_jsonl(path: &Path) -> Vec<TestSpan> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let data: opentelemetry_proto::tonic::trace::v1::TracesData = serde_json::from_str(line).unwrap_or_else(|e| panic!("line is not OTLP JSON ({e}): {line}"));
        out.extend(from_proto(&data.resource_spans));
    }
    out
}

/// Checks the invariants every exported span must meet, whatever the scenario.
pub fn assert_well_formed(spans: &[TestSpan]) {
    for s in spans {
        assert_eq!(s.trace_id.len(), 32, "{s:?}");
        assert_ne!(s.trace_id, "0".repeat(32), "zero trace id: {s:?}");
        assert_eq!(s.span_id.len(), 16, "{s:?}");
        assert_ne!(s.span_id, "0".repeat(16), "zero span id: {s:?}");
        assert!(s.end >= s.start, "span ends before it starts: {s:?}");
        // RPC spans are named `service/method` by the conventions; HTTP spans `{method}
        // {url.template}`, the path's template, whose values became placeholders (no run of
        // four digits or more left); other names never carry a path.
        let templated = s.attr("url.template").is_some_and(|t| s.name.ends_with(&format!(" {t}")) && !t.as_bytes().windows(4).any(|w| w.iter().all(u8::is_ascii_digit)));
        assert!(!s.name.contains('/') || s.attr("rpc.system").is_some() || templated, "span name carries a raw path: {s:?}");
        assert!(s.resource.contains_key("service.name") && s.resource.contains_key("process.pid"), "{s:?}");
    }
}

/// Asserts that `child` is a child of `parent`, in the same trace, and lies within it in time
/// (with a little slack for the clocks of two syscalls on different CPUs).
pub fn assert_child_of(child: &TestSpan, parent: &TestSpan) {
    assert_eq!(child.trace_id, parent.trace_id, "different traces:\n child {child:?}\n parent {parent:?}");
    assert_eq!(child.parent_id, parent.span_id, "wrong parent:\n child {child:?}\n parent {parent:?}");
    const SLACK: u64 = 2_000_000;
    assert!(child.start + SLACK >= parent.start && child.end <= parent.end + SLACK, "child outside its parent in time:\n child {child:?}\n parent {parent:?}");
}

/// Finds spans by kind and a predicate.
pub fn find<'a>(spans: &'a [TestSpan], kind: &str, pred: impl Fn(&TestSpan) -> bool) -> Vec<&'a TestSpan> {
    spans.iter().filter(|s| s.kind == kind && pred(s)).collect()
}

/// Each of five front requests (`/work/N`) has one HTTPS CLIENT child to the back
/// service on `back_port` (`/item/...`), and that call one HTTPS SERVER child: the back's,
/// stitched across processes.
pub fn assert_https_call_per_request(spans: &[TestSpan], fronts: &[&TestSpan], back_port: u16) {
    assert_eq!(fronts.len(), 5, "{spans:#?}");
    for f in fronts {
        let clients = find(spans, "CLIENT", |c| c.parent_id == f.span_id);
        assert_eq!(clients.len(), 1, "the HTTPS call is a child of the request it serves: {spans:#?}");
        let client = clients[0];
        assert_child_of(client, f);
        assert!(client.attr("url.full").unwrap().starts_with(&format!("https://127.0.0.1:{back_port}/item/")), "{client:?}");
        let backs = find(spans, "SERVER", |b| b.parent_id == client.span_id);
        assert_eq!(backs.len(), 1, "the HTTPS SERVER span is stitched under the CLIENT span: {spans:#?}");
        assert_eq!(backs[0].attr("url.scheme"), Some("https"));
        assert_eq!(backs[0].attr("http.response.status_code"), Some("200"));
        assert_eq!(backs[0].attr("server.port"), Some(back_port.to_string().as_str()));
    }
}
