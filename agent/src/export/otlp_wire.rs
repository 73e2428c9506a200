//! Span records written straight into OTLP protobuf bytes, for the OTLP sink.
//!
//! Building prost's `Span` first cost two heap strings per attribute (key and value), built
//! and dropped for every span, and the biggest share of the agent's time per span (issue 19).
//! Here the names are `&'static str`s and the values are borrowed from the record, so a span
//! costs no allocation: a batch is one buffer. The attribute names still come from the one
//! listing in `otlp_span::attributes`; `tests` check that prost decodes these bytes into the
//! same messages that `otlp_span` builds.
//!
//! Only the message layout is ours; the wire primitives (keys, varints) are prost's, the
//! functions its generated code calls.

use std::collections::BTreeMap;

use prost::Message as _;
use prost::encoding::{WireType, encode_key, encoded_len_varint};

use super::otlp_span::{AttributeSink, attributes, kind};
use crate::pipeline::FinishedSpan;
use crate::spans::record::{SEMCONV_VERSION, SpanRecord, Status};

/// Field numbers from opentelemetry/proto (trace/v1, common/v1, collector/trace/v1).
mod field {
    pub const REQUEST_RESOURCE_SPANS: u32 = 1;
    pub const RESOURCE_SPANS_RESOURCE: u32 = 1;
    pub const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
    pub const RESOURCE_SPANS_SCHEMA_URL: u32 = 3;
    pub const SCOPE_SPANS_SCOPE: u32 = 1;
    pub const SCOPE_SPANS_SPANS: u32 = 2;
    pub const SCOPE_SPANS_SCHEMA_URL: u32 = 3;
    pub const SPAN_TRACE_ID: u32 = 1;
    pub const SPAN_SPAN_ID: u32 = 2;
    pub const SPAN_TRACE_STATE: u32 = 3;
    pub const SPAN_PARENT_SPAN_ID: u32 = 4;
    pub const SPAN_NAME: u32 = 5;
    pub const SPAN_KIND: u32 = 6;
    pub const SPAN_START: u32 = 7;
    pub const SPAN_END: u32 = 8;
    pub const SPAN_ATTRIBUTES: u32 = 9;
    pub const SPAN_LINKS: u32 = 13;
    pub const SPAN_STATUS: u32 = 15;
    pub const LINK_TRACE_ID: u32 = 1;
    pub const LINK_SPAN_ID: u32 = 2;
    pub const STATUS_MESSAGE: u32 = 2;
    pub const STATUS_CODE: u32 = 3;
    pub const KEY_VALUE_KEY: u32 = 1;
    pub const KEY_VALUE_VALUE: u32 = 2;
    pub const ANY_STRING: u32 = 1;
    pub const ANY_BOOL: u32 = 2;
    pub const ANY_INT: u32 = 3;
}

/// Length of a length-delimited field's key (field numbers below 16 take one byte) and length.
fn delimited_len(field: u32, len: usize) -> usize {
    prost::encoding::key_len(field) + encoded_len_varint(len as u64) + len
}

/// Most of what a span holds is shorter than 128 bytes: its length is one byte.
fn encode_varint(value: u64, buf: &mut Vec<u8>) {
    if value < 0x80 {
        buf.push(value as u8);
    } else {
        prost::encoding::encode_varint(value, buf);
    }
}

/// A length-delimited field's key and length; its `len` bytes follow.
fn put_header(buf: &mut Vec<u8>, field: u32, len: usize) {
    encode_key(field, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_header(buf, field, bytes.len());
    buf.extend_from_slice(bytes);
}

/// Attributes as `KeyValue` fields of the message being written.
struct WireAttributes<'a> {
    buf: &'a mut Vec<u8>,
    field: u32,
}

impl WireAttributes<'_> {
    /// One KeyValue up to its AnyValue's `any_len` bytes (the value field with its key),
    /// which the caller writes.
    fn key_value(&mut self, key: &str, any_len: usize) {
        let len = delimited_len(field::KEY_VALUE_KEY, key.len()) + delimited_len(field::KEY_VALUE_VALUE, any_len);
        put_header(self.buf, self.field, len);
        put_bytes(self.buf, field::KEY_VALUE_KEY, key.as_bytes());
        put_header(self.buf, field::KEY_VALUE_VALUE, any_len);
    }
}

impl AttributeSink for WireAttributes<'_> {
    fn str(&mut self, key: &'static str, value: &str) {
        self.key_value(key, delimited_len(field::ANY_STRING, value.len()));
        put_bytes(self.buf, field::ANY_STRING, value.as_bytes());
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.key_value(key, 1 + encoded_len_varint(value as u64));
        encode_key(field::ANY_INT, WireType::Varint, self.buf);
        encode_varint(value as u64, self.buf);
    }

    fn bool(&mut self, key: &'static str, value: bool) {
        self.key_value(key, 2);
        encode_key(field::ANY_BOOL, WireType::Varint, self.buf);
        encode_varint(u64::from(value), self.buf);
    }
}

/// Appends the body of one OTLP `Span` message (without its own key and length).
pub fn span(record: &SpanRecord, buf: &mut Vec<u8>) {
    let ids = &record.ids;
    put_bytes(buf, field::SPAN_TRACE_ID, &ids.trace_id);
    put_bytes(buf, field::SPAN_SPAN_ID, &ids.span_id);
    if !ids.trace_state.is_empty() {
        put_bytes(buf, field::SPAN_TRACE_STATE, ids.trace_state.as_bytes());
    }
    if let Some(parent) = &ids.parent {
        put_bytes(buf, field::SPAN_PARENT_SPAN_ID, parent);
    }
    if !record.name.is_empty() {
        put_bytes(buf, field::SPAN_NAME, record.name.as_bytes());
    }
    encode_key(field::SPAN_KIND, WireType::Varint, buf);
    encode_varint(kind(record.kind) as u64, buf);
    for (f, ns) in [(field::SPAN_START, record.start_unix_ns), (field::SPAN_END, record.end_unix_ns)] {
        if ns != 0 {
            encode_key(f, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&ns.to_le_bytes());
        }
    }
    attributes(record, &mut WireAttributes { buf, field: field::SPAN_ATTRIBUTES });
    for (trace, span) in &ids.links {
        put_header(buf, field::SPAN_LINKS, delimited_len(field::LINK_TRACE_ID, trace.len()) + delimited_len(field::LINK_SPAN_ID, span.len()));
        put_bytes(buf, field::LINK_TRACE_ID, trace);
        put_bytes(buf, field::LINK_SPAN_ID, span);
    }
    match record.status {
        Status::Unset => put_header(buf, field::SPAN_STATUS, 0),
        Status::Error { message } => {
            let message = message.unwrap_or_default();
            let code = opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as u64;
            let message_len = if message.is_empty() { 0 } else { delimited_len(field::STATUS_MESSAGE, message.len()) };
            put_header(buf, field::SPAN_STATUS, message_len + 1 + encoded_len_varint(code));
            if !message.is_empty() {
                put_bytes(buf, field::STATUS_MESSAGE, message.as_bytes());
            }
            encode_key(field::STATUS_CODE, WireType::Varint, buf);
            encode_varint(code, buf);
        }
    }
}

/// A whole `ExportTraceServiceRequest`: spans grouped by process, each process one
/// `ResourceSpans` with its resource (`proto::resource`) and our scope.
pub fn export_request(batch: &[FinishedSpan], host_name: &str) -> Vec<u8> {
    // Per process: the first span (for its resource) and its spans' `Span` fields.
    let mut by_pid: BTreeMap<u32, (&FinishedSpan, Vec<u8>)> = BTreeMap::new();
    let mut one = Vec::with_capacity(512);
    for f in batch {
        one.clear();
        span(&f.span, &mut one);
        let spans = &mut by_pid.entry(f.resource.pid).or_insert_with(|| (f, Vec::new())).1;
        put_header(spans, field::SCOPE_SPANS_SPANS, one.len());
        spans.extend_from_slice(&one);
    }
    let schema_url = format!("https://opentelemetry.io/schemas/{SEMCONV_VERSION}");
    let scope = super::proto::scope().encode_to_vec();
    let mut out = Vec::with_capacity(by_pid.values().map(|(_, s)| s.len() + 512).sum());
    for (first, spans) in by_pid.values() {
        let resource = super::proto::resource(&first.resource, host_name).encode_to_vec();
        let scope_spans_len = delimited_len(field::SCOPE_SPANS_SCOPE, scope.len()) + spans.len() + delimited_len(field::SCOPE_SPANS_SCHEMA_URL, schema_url.len());
        let resource_spans_len = delimited_len(field::RESOURCE_SPANS_RESOURCE, resource.len())
            + delimited_len(field::RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len)
            + delimited_len(field::RESOURCE_SPANS_SCHEMA_URL, schema_url.len());
        put_header(&mut out, field::REQUEST_RESOURCE_SPANS, resource_spans_len);
        put_bytes(&mut out, field::RESOURCE_SPANS_RESOURCE, &resource);
        put_header(&mut out, field::RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
        put_bytes(&mut out, field::SCOPE_SPANS_SCOPE, &scope);
        out.extend_from_slice(spans);
        put_bytes(&mut out, field::SCOPE_SPANS_SCHEMA_URL, schema_url.as_bytes());
        put_bytes(&mut out, field::RESOURCE_SPANS_SCHEMA_URL, schema_url.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;
    use crate::process::ProcessResource;
    use crate::spans::record::*;
    use smol_str::SmolStr;

    fn records() -> Vec<SpanRecord> {
        let base = SpanRecord {
            kind: SpanKind::Server,
            name: "GET /index.html".into(),
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_000_000_500_000,
            status: Status::Unset,
            error_type: None,
            network: Network {
                server_address: Some("127.0.0.1".into()),
                server_port: Some(8080),
                client_address: Some("127.0.0.1".into()),
                peer_address: None,
                peer_port: Some(40000),
            },
            domain: Domain::Http(HttpFields {
                method: Some("GET".into()),
                protocol_version: "1.1",
                url: Url::Server { path: Some("/index.html".into()), scheme: "http" },
                user_agent: Some("wrk".into()),
                status_code: Some(200),
                template: Some("/index.html".into()),
                ..Default::default()
            }),
            capture_truncated: false,
            capture_head_only: false,
            capture_one_in: 0,
            ids: Ids { trace_id: [7; 16], span_id: [8; 8], parent: None, links: Vec::new(), trace_state: String::new() },
        };
        let mut error = base.clone();
        error.status = Status::Error { message: Some("no answer") };
        error.error_type = Some("500".into());
        error.capture_truncated = true;
        error.capture_head_only = true;
        error.ids = Ids { trace_id: [1; 16], span_id: [2; 8], parent: Some([3; 8]), links: vec![([4; 16], [5; 8]), ([6; 16], [9; 8])], trace_state: "k=v".into() };
        let mut unnamed = base.clone();
        unnamed.name = SmolStr::default();
        unnamed.status = Status::Error { message: None };
        unnamed.start_unix_ns = 0;
        let long = "x".repeat(300);
        let db = SpanRecord {
            kind: SpanKind::Client,
            name: "SELECT users".into(),
            domain: Domain::Db(DbFields { system: "postgresql", query_text: Some(long.clone()), returned_rows: Some(u64::MAX), ..Default::default() }),
            ..base.clone()
        };
        let messaging = SpanRecord {
            kind: SpanKind::Producer,
            domain: Domain::Messaging(MessagingFields { system: "kafka", partition: Some(3), offset: Some(-1), redelivered: true, operation_type: "send", ..Default::default() }),
            ..base.clone()
        };
        let rpc = SpanRecord { kind: SpanKind::Consumer, domain: Domain::Rpc(RpcFields { system: "grpc", grpc_status_code: Some(14), ..Default::default() }), ..base.clone() };
        vec![base, error, unnamed, db, messaging, rpc]
    }

    #[test]
    fn prost_reads_the_same_span_that_otlp_span_builds() {
        for record in records() {
            let mut buf = Vec::new();
            span(&record, &mut buf);
            let decoded = Span::decode(buf.as_slice()).expect("valid protobuf");
            assert_eq!(decoded, super::super::otlp_span::span(&record), "{}", record.name);
        }
    }

    #[test]
    fn a_request_groups_spans_by_process_as_proto_does() {
        let resource = |pid| ProcessResource { pid, service_name: format!("svc{pid}"), executable_name: "app".into(), ..Default::default() };
        let batch: Vec<FinishedSpan> =
            records().into_iter().enumerate().map(|(i, span)| FinishedSpan { resource: resource(if i % 2 == 0 { 10 } else { 20 }).into(), span }).collect();
        let decoded = ExportTraceServiceRequest::decode(export_request(&batch, "host").as_slice()).expect("valid protobuf");
        assert_eq!(decoded.resource_spans, super::super::proto::resource_spans(&batch, "host"));
        assert!(ExportTraceServiceRequest::decode(export_request(&[], "host").as_slice()).expect("empty").resource_spans.is_empty());
    }
}
