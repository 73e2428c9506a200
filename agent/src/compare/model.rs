//! A flat, side-neutral view of a span for comparison: what it is (category), what it did
//! (operation, target) and where (peer port), read from either the stable or the older
//! OpenTelemetry semantic conventions, because language agents still emit both.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Serialize;

/// What kind of operation a span describes. Spans are only ever aligned within a category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    HttpServer,
    HttpClient,
    DbClient,
    Cache,
    Other,
}

impl Category {
    pub const ALL: [Category; 5] = [Category::HttpServer, Category::HttpClient, Category::DbClient, Category::Cache, Category::Other];

    pub fn label(self) -> &'static str {
        match self {
            Category::HttpServer => "HTTP server",
            Category::HttpClient => "HTTP client",
            Category::DbClient => "DB client",
            Category::Cache => "cache",
            Category::Other => "other",
        }
    }
}

/// OTLP span kinds we tell apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Kind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
    Unspecified,
}

impl Kind {
    fn from_otlp(k: i32) -> Kind {
        match k {
            1 => Kind::Internal,
            2 => Kind::Server,
            3 => Kind::Client,
            4 => Kind::Producer,
            5 => Kind::Consumer,
            _ => Kind::Unspecified,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: String,
    pub name: String,
    pub kind: Kind,
    pub start: u64,
    pub end: u64,
    pub error: bool,
    pub service: String,
    pub attrs: BTreeMap<String, String>,
    pub category: Category,
    /// HTTP method or database operation, upper case ("GET", "SELECT").
    pub operation: String,
    /// HTTP path without the query; empty for databases.
    pub target: String,
    /// `db.system.name` (or the older `db.system`), lower case; empty for HTTP.
    pub system: String,
    /// The server's port (`server.port`, older `net.peer.port`/`net.host.port`, or the
    /// port in `url.full`), when the span says.
    pub port: Option<u16>,
}

/// Caches whose spans form the "cache" category rather than "DB client".
const CACHE_SYSTEMS: &[&str] = &["redis", "memcached", "valkey"];

impl Span {
    fn attr(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.attrs.get(*k)).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Parent span id, or None for a root.
    pub fn parent(&self) -> Option<&str> {
        (!self.parent_id.is_empty() && self.parent_id.bytes().any(|b| b != b'0')).then_some(self.parent_id.as_str())
    }

    pub fn duration_ns(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    fn classify(&mut self) {
        let method = self.attr(&["http.request.method", "http.method"]).map(str::to_ascii_uppercase);
        let system = self.attr(&["db.system.name", "db.system"]).map(str::to_ascii_lowercase);
        let port_attr = self.attr(&["server.port", "net.peer.port", "net.host.port"]).and_then(|p| p.parse().ok());
        let url = self.attr(&["url.full", "http.url"]).map(str::to_string);
        self.port = port_attr.or_else(|| url.as_deref().and_then(url_port));
        if let Some(method) = method {
            self.category = match self.kind {
                Kind::Server => Category::HttpServer,
                Kind::Client => Category::HttpClient,
                _ => Category::Other,
            };
            let path = self.attr(&["url.path", "http.target"]).map(str::to_string).or_else(|| url.as_deref().map(url_path));
            self.target = path.map(|p| strip_query(&p).to_string()).unwrap_or_default();
            self.operation = method;
        } else if let Some(system) = system {
            self.category = match (self.kind, CACHE_SYSTEMS.contains(&system.as_str())) {
                (Kind::Client, true) => Category::Cache,
                (Kind::Client, false) => Category::DbClient,
                _ => Category::Other,
            };
            self.operation = self.db_operation();
            self.system = system;
        } else {
            self.category = Category::Other;
            self.operation = self.name.clone();
        }
    }

    /// The operation from `db.operation.name`, else the first word of the query text, else
    /// of the span name (ioredis names its spans by command, pg by "pg.query:SELECT db").
    fn db_operation(&self) -> String {
        let from_text = |t: &str| t.split_whitespace().next().map(str::to_ascii_uppercase);
        if let Some(op) = self.attr(&["db.operation.name", "db.operation"]) {
            return op.to_ascii_uppercase();
        }
        if let Some(op) = self.attr(&["db.query.text", "db.statement"]).and_then(from_text) {
            return op;
        }
        let name = self.name.rsplit_once(':').map_or(self.name.as_str(), |(_, tail)| tail);
        from_text(name).unwrap_or_default()
    }
}

fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The path of an absolute URL ("/" when it has none).
fn url_path(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    match rest.find('/') {
        Some(i) => strip_query(&rest[i..]).to_string(),
        None => "/".to_string(),
    }
}

/// The explicit or scheme-default port of an absolute URL.
fn url_port(url: &str) -> Option<u16> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let explicit = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && (host.starts_with('[') == host.ends_with(']')) => port.parse().ok(),
        _ => None,
    };
    explicit.or(match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_text(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::ArrayValue(a) => a.values.iter().filter_map(value_text).collect::<Vec<_>>().join(","),
        Value::BytesValue(b) => hex(b),
        Value::KvlistValue(_) | Value::StringValueStrindex(_) => return None,
    })
}

fn attr_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().filter_map(|kv| Some((kv.key.clone(), value_text(kv.value.as_ref()?)?))).collect()
}

/// Flattens OTLP resource spans into classified spans, earliest first.
pub fn flatten(resource_spans: &[ResourceSpans]) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in resource_spans {
        let resource = rs.resource.as_ref().map(|r| attr_map(&r.attributes)).unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let mut span = Span {
                trace_id: hex(&s.trace_id),
                span_id: hex(&s.span_id),
                parent_id: hex(&s.parent_span_id),
                name: s.name.clone(),
                kind: Kind::from_otlp(s.kind),
                start: s.start_time_unix_nano,
                end: s.end_time_unix_nano.max(s.start_time_unix_nano),
                error: s.status.as_ref().is_some_and(|st| st.code == 2),
                service: service.clone(),
                attrs: attr_map(&s.attributes),
                category: Category::Other,
                operation: String::new(),
                target: String::new(),
                system: String::new(),
                port: None,
            };
            span.classify();
            out.push(span);
        }
    }
    out.sort_by_key(|s| s.start);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A span for unit tests: kind, name, start/end in ms, attributes.
    pub fn span(kind: Kind, name: &str, start_ms: u64, end_ms: u64, attrs: &[(&str, &str)]) -> Span {
        let mut s = Span {
            trace_id: "t".repeat(32),
            span_id: format!("{:016x}", rand::random::<u64>()),
            parent_id: String::new(),
            name: name.to_string(),
            kind,
            start: start_ms * 1_000_000,
            end: end_ms * 1_000_000,
            error: false,
            service: "svc".to_string(),
            attrs: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            category: Category::Other,
            operation: String::new(),
            target: String::new(),
            system: String::new(),
            port: None,
        };
        s.classify();
        s
    }

    #[test]
    fn stable_and_old_http_conventions_classify_alike() {
        let new = span(Kind::Server, "GET /merchant/<id>/status", 0, 1, &[("http.request.method", "GET"), ("url.path", "/merchant/7/status"), ("server.port", "8001")]);
        let old = span(Kind::Server, "GET", 0, 1, &[("http.method", "GET"), ("http.target", "/merchant/7/status?x=1"), ("net.host.port", "8001")]);
        for s in [&new, &old] {
            assert_eq!((s.category, s.operation.as_str(), s.target.as_str(), s.port), (Category::HttpServer, "GET", "/merchant/7/status", Some(8001)));
        }
        let client = span(Kind::Client, "GET", 0, 1, &[("http.request.method", "get"), ("url.full", "http://127.0.0.1:8002/item/3?q=1")]);
        assert_eq!((client.category, client.operation.as_str(), client.target.as_str(), client.port), (Category::HttpClient, "GET", "/item/3", Some(8002)));
        let https = span(Kind::Client, "GET", 0, 1, &[("http.method", "GET"), ("http.url", "https://example.com")]);
        assert_eq!((https.target.as_str(), https.port), ("/", Some(443)));
    }

    #[test]
    fn database_operations_come_from_attributes_text_or_name() {
        let pg = span(Kind::Client, "pg.query:SELECT shop", 0, 1, &[("db.system", "postgresql"), ("db.statement", "select * from items where id = $1")]);
        assert_eq!((pg.category, pg.operation.as_str(), pg.system.as_str()), (Category::DbClient, "SELECT", "postgresql"));
        let redis = span(Kind::Client, "get", 0, 1, &[("db.system.name", "redis")]);
        assert_eq!((redis.category, redis.operation.as_str()), (Category::Cache, "GET"));
        let named = span(Kind::Client, "SELECT items", 0, 1, &[("db.system.name", "postgresql"), ("db.operation.name", "select")]);
        assert_eq!(named.operation, "SELECT");
        let server = span(Kind::Server, "SELECT", 0, 1, &[("db.system.name", "postgresql")]);
        assert_eq!(server.category, Category::Other);
        let internal = span(Kind::Internal, "middleware - query", 0, 1, &[]);
        assert_eq!((internal.category, internal.operation.as_str()), (Category::Other, "middleware - query"));
    }

    #[test]
    fn url_ports_handle_ipv6_and_userinfo() {
        assert_eq!(url_port("http://[::1]:8080/x"), Some(8080));
        assert_eq!(url_port("http://[::1]/x"), Some(80));
        assert_eq!(url_port("http://u:p@host:81/"), Some(81));
        assert_eq!(url_port("not a url"), None);
    }
}
