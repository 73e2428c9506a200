//! The typed span record: what the span stage builds and every consumer reads (the OTLP and
//! jsonl sinks, the terminal tree, later metrics). OTLP attributes exist only in
//! `export/otlp_span.rs`; nothing downstream re-reads a span by attribute name.

use smol_str::SmolStr;

use crate::traceparent::{SpanId, TraceId};

/// The version of the semantic conventions the attribute names follow (the stable database
/// conventions, `db.system.name` and `db.query.text`, date from 1.33). The OTLP schema URL
/// is derived from it.
pub const SEMCONV_VERSION: &str = "1.33.0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "SERVER",
            Self::Client => "CLIENT",
            Self::Producer => "PRODUCER",
            Self::Consumer => "CONSUMER",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Unset,
    Error { message: Option<&'static str> },
}

/// Trace context, filled in by the linker once the parent is known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// Candidates when the evidence named several parents (OTel span links).
    pub links: Vec<(TraceId, SpanId)>,
    /// Vendor trace state that came with an adopted `traceparent`.
    pub trace_state: String,
}

/// Who the span's ends are, per the general network attributes. Text fields of spans are
/// `SmolStr`s: the short ones (methods, addresses, most paths) live inline, and a clone of a
/// long one shares it, so building a span allocates little (issue 19).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    pub server_address: Option<SmolStr>,
    pub server_port: Option<u16>,
    pub client_address: Option<SmolStr>,
    pub peer_address: Option<SmolStr>,
    pub peer_port: Option<u16>,
}

/// HTTP fields (stable HTTP semantic conventions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpFields {
    /// A method the conventions know, or `_OTHER`; None when it could not be known.
    pub method: Option<SmolStr>,
    /// The method as sent, when `method` is `_OTHER`.
    pub method_original: Option<SmolStr>,
    pub protocol_version: &'static str,
    pub url: Url,
    pub user_agent: Option<SmolStr>,
    pub status_code: Option<u16>,
    /// A low-cardinality template of the path (`url.template`: inferred, or a user's rule;
    /// `spans::routes`), when one was given.
    pub template: Option<SmolStr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Url {
    /// SERVER spans: path (query dropped, path parameters redacted) and scheme. The path is
    /// None when it could not be known.
    Server { path: Option<SmolStr>, scheme: &'static str },
    /// CLIENT spans: the full URL without its query, when the path is known.
    Client { full: Option<SmolStr> },
}

impl Default for Url {
    fn default() -> Self {
        Url::Server { path: None, scheme: "http" }
    }
}

/// Database fields (stable database semantic conventions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbFields {
    pub system: &'static str,
    pub namespace: Option<SmolStr>,
    /// Literals masked unless the user opted in.
    pub query_text: Option<String>,
    pub operation: Option<SmolStr>,
    pub collection: Option<SmolStr>,
    pub returned_rows: Option<u64>,
    pub status_code: Option<SmolStr>,
}

/// RPC fields (RPC semantic conventions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcFields {
    pub system: &'static str,
    pub service: Option<String>,
    pub method: Option<String>,
    /// gRPC status code from the trailers.
    pub grpc_status_code: Option<u32>,
}

/// Messaging fields (messaging semantic conventions). Bodies are never recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MessagingFields {
    pub system: &'static str,
    pub destination: Option<String>,
    /// `send`, `receive`, `process`, `create`, `settle`.
    pub operation_type: &'static str,
    /// The protocol's own operation name (`publish`, `deliver`).
    pub operation_name: Option<String>,
    pub message_id: Option<String>,
    pub conversation_id: Option<String>,
    pub body_size: Option<u64>,
    /// AMQP's routing key.
    pub routing_key: Option<String>,
    /// Kafka's partition and a fetched record's offset.
    pub partition: Option<u32>,
    pub offset: Option<i64>,
    /// A delivery of a message delivered before.
    pub redelivered: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    Http(HttpFields),
    Db(DbFields),
    Rpc(RpcFields),
    Messaging(MessagingFields),
}

/// One finished operation, before export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanRecord {
    pub kind: SpanKind,
    /// Low-cardinality: never a raw path or a query.
    pub name: SmolStr,
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub status: Status,
    /// `error.type`: a status code, an error code, or why there is no answer.
    pub error_type: Option<String>,
    pub network: Network,
    pub domain: Domain,
    /// The request was longer than the capture: what is missing is not on the span.
    pub capture_truncated: bool,
    /// Made while its process was over its overhead budget: heads only were captured.
    pub capture_head_only: bool,
    /// Made while its process captured one connection in this many (`--overhead-budget`):
    /// the span stands for that many requests. 0: every connection was captured.
    pub capture_one_in: u32,
    pub ids: Ids,
}

impl SpanRecord {
    pub fn http(&self) -> Option<&HttpFields> {
        match &self.domain {
            Domain::Http(h) => Some(h),
            _ => None,
        }
    }

    /// A word on what the span is about, for people: the path or URL, the statement, the
    /// method or the destination.
    pub fn detail(&self) -> String {
        match &self.domain {
            Domain::Http(h) => {
                let target = match &h.url {
                    Url::Server { path, .. } => path.as_deref().unwrap_or("?"),
                    Url::Client { full } => full.as_deref().unwrap_or("?"),
                };
                match h.status_code {
                    Some(code) => format!("{target} → {code}"),
                    None => target.to_string(),
                }
            }
            Domain::Db(d) => d.namespace.as_deref().unwrap_or_default().to_string(),
            Domain::Rpc(r) => r.grpc_status_code.map(|c| format!("status {c}")).unwrap_or_default(),
            Domain::Messaging(m) => m.destination.clone().unwrap_or_default(),
        }
    }
}
