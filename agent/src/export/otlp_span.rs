//! A span record as an OTLP span: the only place attribute names are written. The jsonl and
//! memory sinks (and `compare`) build OTLP messages with `span`; the OTLP sink writes the same
//! attributes straight into protobuf bytes (`otlp_wire`).

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status as OtlpStatus, span, status::StatusCode};

use crate::spans::record::{DbFields, Domain, HttpFields, MessagingFields, Network, RpcFields, SpanKind, SpanRecord, Status, Url};

pub fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }), ..Default::default() }
}

pub fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(Value::IntValue(value)) }), ..Default::default() }
}

pub fn kv_bool(key: &str, value: bool) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(Value::BoolValue(value)) }), ..Default::default() }
}

/// Where a span's attributes go: OTLP `KeyValue`s here (JSON, memory, `compare`), protobuf
/// bytes in `otlp_wire` (the OTLP sink). `attributes` below is the one listing of the names
/// that both share.
pub trait AttributeSink {
    fn str(&mut self, key: &'static str, value: &str);
    fn int(&mut self, key: &'static str, value: i64);
    fn bool(&mut self, key: &'static str, value: bool);

    /// Optional fields read as one line each.
    fn opt_str(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.str(key, v);
        }
    }

    fn opt_int(&mut self, key: &'static str, value: Option<i64>) {
        if let Some(v) = value {
            self.int(key, v);
        }
    }
}

impl AttributeSink for Vec<KeyValue> {
    fn str(&mut self, key: &'static str, value: &str) {
        self.push(kv_str(key, value));
    }
    fn int(&mut self, key: &'static str, value: i64) {
        self.push(kv_int(key, value));
    }
    fn bool(&mut self, key: &'static str, value: bool) {
        self.push(kv_bool(key, value));
    }
}

/// Every attribute of a span, in order: the only place their names are written.
pub fn attributes(record: &SpanRecord, out: &mut impl AttributeSink) {
    match &record.domain {
        Domain::Http(h) => http(h, out),
        Domain::Db(d) => db(d, out),
        Domain::Rpc(r) => rpc(r, out),
        Domain::Messaging(m) => messaging(m, out),
    }
    network(&record.network, out);
    if record.capture_head_only {
        out.bool("zerotrace.capture.head_only", true);
    }
    if record.capture_one_in > 1 {
        out.int("zerotrace.capture.one_in", i64::from(record.capture_one_in));
    }
    if record.capture_truncated {
        out.bool("zerotrace.capture.truncated", true);
    }
    out.opt_str("error.type", record.error_type.as_deref());
}

/// The OTLP span kind of ours.
pub fn kind(kind: SpanKind) -> span::SpanKind {
    match kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Producer => span::SpanKind::Producer,
        SpanKind::Consumer => span::SpanKind::Consumer,
    }
}

pub fn span(record: &SpanRecord) -> Span {
    let mut attrs = Vec::with_capacity(14);
    attributes(record, &mut attrs);
    let status = match record.status {
        Status::Unset => OtlpStatus::default(),
        Status::Error { message } => OtlpStatus { code: StatusCode::Error as i32, message: message.unwrap_or_default().to_string() },
    };
    let ids = &record.ids;
    Span {
        trace_id: ids.trace_id.to_vec(),
        span_id: ids.span_id.to_vec(),
        parent_span_id: ids.parent.map(|p| p.to_vec()).unwrap_or_default(),
        trace_state: ids.trace_state.clone(),
        links: ids.links.iter().map(|(trace, span)| span::Link { trace_id: trace.to_vec(), span_id: span.to_vec(), ..Default::default() }).collect(),
        name: record.name.to_string(),
        kind: kind(record.kind) as i32,
        start_time_unix_nano: record.start_unix_ns,
        end_time_unix_nano: record.end_unix_ns,
        attributes: attrs,
        status: Some(status),
        ..Default::default()
    }
}

fn http(h: &HttpFields, out: &mut impl AttributeSink) {
    out.opt_str("http.request.method", h.method.as_deref());
    out.opt_str("http.request.method_original", h.method_original.as_deref());
    out.str("network.protocol.version", h.protocol_version);
    match &h.url {
        Url::Server { path, scheme } => {
            out.opt_str("url.path", path.as_deref());
            out.str("url.scheme", scheme);
        }
        Url::Client { full } => out.opt_str("url.full", full.as_deref()),
    }
    out.opt_str("url.template", h.template.as_deref());
    out.opt_str("user_agent.original", h.user_agent.as_deref());
    out.opt_int("http.response.status_code", h.status_code.map(i64::from));
}

fn db(d: &DbFields, out: &mut impl AttributeSink) {
    out.str("db.system.name", d.system);
    out.opt_str("db.namespace", d.namespace.as_deref());
    out.opt_str("db.query.text", d.query_text.as_deref());
    out.opt_str("db.operation.name", d.operation.as_deref());
    out.opt_str("db.collection.name", d.collection.as_deref());
    out.opt_int("db.response.returned_rows", d.returned_rows.map(|r| r.min(i64::MAX as u64) as i64));
    out.opt_str("db.response.status_code", d.status_code.as_deref());
}

fn rpc(r: &RpcFields, out: &mut impl AttributeSink) {
    // `rpc.system` is the name at our schema version; the RPC conventions in development
    // renamed it `rpc.system.name`. Both, so backends on either side of the rename group it.
    out.str("rpc.system", r.system);
    out.str("rpc.system.name", r.system);
    out.opt_str("rpc.service", r.service.as_deref());
    out.opt_str("rpc.method", r.method.as_deref());
    out.opt_int("rpc.grpc.status_code", r.grpc_status_code.map(i64::from));
}

fn messaging(m: &MessagingFields, out: &mut impl AttributeSink) {
    out.str("messaging.system", m.system);
    out.opt_str("messaging.destination.name", m.destination.as_deref());
    out.str("messaging.operation.type", m.operation_type);
    out.opt_str("messaging.operation.name", m.operation_name.as_deref());
    out.opt_str("messaging.message.id", m.message_id.as_deref());
    out.opt_str("messaging.message.conversation_id", m.conversation_id.as_deref());
    out.opt_int("messaging.message.body.size", m.body_size.map(|s| s.min(i64::MAX as u64) as i64));
    out.opt_str("messaging.rabbitmq.destination.routing_key", m.routing_key.as_deref());
    out.opt_str("messaging.destination.partition.id", m.partition.map(|p| p.to_string()).as_deref());
    out.opt_int("messaging.kafka.offset", m.offset);
    // No convention names a redelivery yet: ours, set only when true.
    if m.redelivered {
        out.bool("zerotrace.messaging.redelivered", true);
    }
}

fn network(n: &Network, out: &mut impl AttributeSink) {
    out.opt_str("server.address", n.server_address.as_deref());
    out.opt_int("server.port", n.server_port.map(i64::from));
    out.opt_str("client.address", n.client_address.as_deref());
    out.opt_str("network.peer.address", n.peer_address.as_deref());
    out.opt_int("network.peer.port", n.peer_port.map(i64::from));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spans::record::Ids;

    fn record(domain: Domain) -> SpanRecord {
        SpanRecord {
            kind: SpanKind::Producer,
            name: "publish orders".into(),
            start_unix_ns: 10,
            end_unix_ns: 20,
            status: Status::Error { message: Some("why") },
            error_type: Some("timeout".into()),
            network: Network { server_address: Some("broker".into()), server_port: Some(5672), ..Default::default() },
            domain,
            capture_truncated: true,
            capture_head_only: false,
            capture_one_in: 0,
            ids: Ids { trace_id: [1; 16], span_id: [2; 8], parent: Some([3; 8]), links: vec![([4; 16], [5; 8])], trace_state: "k=v".into() },
        }
    }

    fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
        span.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn every_field_lands_under_its_semconv_name() {
        let m = MessagingFields { system: "rabbitmq", destination: Some("orders".into()), operation_type: "send", message_id: Some("m1".into()), ..Default::default() };
        let s = span(&record(Domain::Messaging(m)));
        assert_eq!(s.kind, span::SpanKind::Producer as i32);
        assert_eq!((s.trace_id.as_slice(), s.span_id.as_slice(), s.parent_span_id.as_slice()), (&[1u8; 16][..], &[2u8; 8][..], &[3u8; 8][..]));
        assert_eq!(s.links.len(), 1);
        assert_eq!(s.trace_state, "k=v");
        assert_eq!(attr(&s, "messaging.destination.name"), Some(&Value::StringValue("orders".into())));
        assert_eq!(attr(&s, "messaging.operation.type"), Some(&Value::StringValue("send".into())));
        assert_eq!(attr(&s, "server.port"), Some(&Value::IntValue(5672)));
        assert_eq!(attr(&s, "error.type"), Some(&Value::StringValue("timeout".into())));
        assert_eq!(attr(&s, "zerotrace.capture.truncated"), Some(&Value::BoolValue(true)));
        assert_eq!(s.status.as_ref().map(|st| (st.code, st.message.as_str())), Some((StatusCode::Error as i32, "why")));
        // Absent fields are absent, not empty.
        assert_eq!(attr(&s, "messaging.operation.name"), None);
        assert_eq!(attr(&s, "client.address"), None);

        let rpc = RpcFields { system: "grpc", service: Some("helloworld.Greeter".into()), method: Some("SayHello".into()), grpc_status_code: Some(0) };
        let s = span(&record(Domain::Rpc(rpc)));
        assert_eq!(attr(&s, "rpc.grpc.status_code"), Some(&Value::IntValue(0)));
        assert_eq!(attr(&s, "rpc.system"), Some(&Value::StringValue("grpc".into())));
        assert_eq!(attr(&s, "rpc.system.name"), Some(&Value::StringValue("grpc".into())));
        assert_eq!(attr(&s, "rpc.service"), Some(&Value::StringValue("helloworld.Greeter".into())));
    }
}
