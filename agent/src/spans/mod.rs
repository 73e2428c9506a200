//! Request/response pairs to OpenTelemetry spans with the stable HTTP and database semantic
//! conventions.

mod db;
pub use db::{DbSpanOptions, db_span};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status::StatusCode};

use crate::conn::{ConnInfo, Role};
use crate::protocols::http1::{Message, RequestHead, ResponseHead};

/// Methods the semantic conventions know; anything else becomes `_OTHER`.
const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"];

pub fn kv_str(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(Value::StringValue(value.into())) }), ..Default::default() }
}

pub fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(Value::IntValue(value)) }), ..Default::default() }
}

/// Converts kernel monotonic timestamps to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime − monotonic, in ns, taken once at start.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let read = |id| {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime writes into the timespec we own; the clock ids are valid.
            unsafe { libc::clock_gettime(id, &mut ts) };
            ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
        };
        let mono = read(libc::CLOCK_MONOTONIC);
        let real = read(libc::CLOCK_REALTIME);
        Self { offset_ns: real - mono }
    }

    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

/// Splits a request target into path and (dropped-by-default) query.
pub fn path_of(target: &str) -> &str {
    let no_fragment = target.split('#').next().unwrap_or(target);
    let path = no_fragment.split('?').next().unwrap_or(no_fragment);
    // absolute-form (proxies): keep only the path.
    if let Some(rest) = path.strip_prefix("http://").or_else(|| path.strip_prefix("https://")) {
        return rest.find('/').map_or("/", |i| &rest[i..]);
    }
    path
}

/// The path as exported: path parameters' values (`;jsessionid=…`, matrix parameters) are
/// replaced by `REDACTED`, as query values are dropped: they carry session ids and tokens.
pub fn redact_path_params(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains(';') {
        return std::borrow::Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let mut parts = segment.split(';');
        out.push_str(parts.next().unwrap_or(""));
        for param in parts {
            out.push(';');
            match param.split_once('=') {
                Some((name, _)) => {
                    out.push_str(name);
                    out.push_str("=REDACTED");
                }
                None => out.push_str(param),
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `host[:port]` from a Host header.
fn split_host(host: &str) -> (String, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((ip, tail)) = rest.split_once(']')
    {
        return (ip.to_string(), tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.parse().ok()),
        _ => (host.to_string(), None),
    }
}

fn method_attrs(method: &str, attrs: &mut Vec<KeyValue>) -> String {
    if KNOWN_METHODS.contains(&method) {
        attrs.push(kv_str("http.request.method", method));
        method.to_string()
    } else {
        attrs.push(kv_str("http.request.method", "_OTHER"));
        attrs.push(kv_str("http.request.method_original", method));
        "HTTP".to_string()
    }
}

pub(crate) fn peer_attrs(conn: &ConnInfo, attrs: &mut Vec<KeyValue>) {
    if let (Some(a), Some(ip)) = (conn.remote, &conn.remote_ip) {
        attrs.push(kv_str("network.peer.address", ip.clone()));
        attrs.push(kv_int("network.peer.port", a.port() as i64));
    }
}

/// Everything a span needs from one exchange.
pub struct Exchange<'a> {
    pub conn: &'a ConnInfo,
    pub request: &'a RequestHead,
    pub request_msg: &'a Message,
    pub response: Option<(&'a ResponseHead, &'a Message)>,
}

/// Builds the span (ids are filled in by the linker later).
pub fn http_span(ex: &Exchange<'_>, clock: &Clock) -> Span {
    let mut attrs = Vec::with_capacity(12);
    let req = ex.request;
    let name = method_attrs(&req.method, &mut attrs);
    let version = if req.minor_version == 0 { "1.0" } else { "1.1" };
    attrs.push(kv_str("network.protocol.version", version));
    let path = redact_path_params(path_of(&req.target)).into_owned();
    let server = ex.conn.role == Role::Server;
    let (host, host_port) = req.host.as_deref().map(split_host).unwrap_or_default();
    if server {
        attrs.push(kv_str("url.path", path.clone()));
        attrs.push(kv_str("url.scheme", if ex.conn.tls { "https" } else { "http" }));
        let port = host_port.or(ex.conn.local.map(|a| a.port()));
        if !host.is_empty() {
            attrs.push(kv_str("server.address", host));
        }
        if let Some(p) = port {
            attrs.push(kv_int("server.port", p as i64));
        }
        if let Some(ip) = &ex.conn.remote_ip {
            attrs.push(kv_str("client.address", ip.clone()));
        }
    } else {
        let remote = ex.conn.remote;
        let address = if host.is_empty() { ex.conn.remote_ip.clone().unwrap_or_default() } else { host };
        let (scheme, default_port) = if ex.conn.tls { ("https", 443) } else { ("http", 80) };
        let port = host_port.or(remote.map(|a| a.port())).unwrap_or(default_port);
        let authority = if port == default_port {
            address.clone()
        } else if address.contains(':') {
            format!("[{address}]:{port}")
        } else {
            format!("{address}:{port}")
        };
        attrs.push(kv_str("url.full", format!("{scheme}://{authority}{path}")));
        if !address.is_empty() {
            attrs.push(kv_str("server.address", address));
        }
        attrs.push(kv_int("server.port", port as i64));
    }
    peer_attrs(ex.conn, &mut attrs);
    if let Some(ua) = &req.user_agent {
        attrs.push(kv_str("user_agent.original", ua.clone()));
    }
    if !req.complete {
        // The head was longer than the capture: what is missing (headers, the end of a long
        // target) is not on the span.
        attrs.push(KeyValue { key: "zerotrace.capture.truncated".to_string(), value: Some(AnyValue { value: Some(Value::BoolValue(true)) }), ..Default::default() });
    }
    let mut status = Status::default();
    if let Some((resp, _)) = ex.response {
        attrs.push(kv_int("http.response.status_code", resp.status as i64));
        let error = if server { resp.status >= 500 } else { resp.status >= 400 };
        if error {
            attrs.push(kv_str("error.type", resp.status.to_string()));
            status.code = StatusCode::Error as i32;
        }
    } else {
        status = no_answer(&mut attrs);
    }
    let m = ex.request_msg;
    let answer = ex.response.map(|(_, r)| (r.end_enter_ns, r.end_exit_ns));
    assemble(name, server, (m.start_enter_ns, m.start_exit_ns, m.end_exit_ns), answer, attrs, status, clock)
}

/// The error of an exchange whose connection closed before it was answered.
pub(crate) fn no_answer(attrs: &mut Vec<KeyValue>) -> Status {
    attrs.push(kv_str("error.type", "no_response"));
    Status { code: StatusCode::Error as i32, message: "connection closed before a response".to_string() }
}

/// An exchange cut off because its process ended (killed, crashed) at `at_ns`: it lasted until
/// then, and its error says why it has no answer.
pub fn cut_off_by_exit(span: &mut Span, at_ns: u64, clock: &Clock) {
    span.end_time_unix_nano = clock.unix_ns(at_ns).max(span.start_time_unix_nano);
    for kv in span.attributes.iter_mut().filter(|kv| kv.key == "error.type") {
        kv.value = Some(AnyValue { value: Some(Value::StringValue("process_exited".to_string())) });
    }
    span.status = Some(Status { code: StatusCode::Error as i32, message: "the process ended before the answer".to_string() });
}

/// The span of one exchange, timed by one rule for every protocol. `request`: entry and exit
/// of the syscall that carried its first byte, and exit of the one that carried its last;
/// `answer`: entry and exit of the syscall that carried the answer's last byte.
///
/// SERVER: from the read that delivered the request to the start of the write that sent the
/// last answer byte (the peer can have the bytes before that write returns; ending at its
/// return would put a preempted server's end after its caller's). CLIENT: from the start of
/// the request write to the return of the read that completed the answer.
pub(crate) fn assemble(name: String, server: bool, request: (u64, u64, u64), answer: Option<(u64, u64)>, attributes: Vec<KeyValue>, status: Status, clock: &Clock) -> Span {
    let (start_enter, start_exit, request_end) = request;
    let (start, end) = if server { (start_exit, answer.map_or(request_end, |(enter, _)| enter)) } else { (start_enter, answer.map_or(request_end, |(_, exit)| exit)) };
    Span {
        name,
        kind: if server { SpanKind::Server } else { SpanKind::Client } as i32,
        start_time_unix_nano: clock.unix_ns(start),
        end_time_unix_nano: clock.unix_ns(end.max(start)),
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hosts() {
        assert_eq!(path_of("/a/b?secret=1#f"), "/a/b");
        assert_eq!(path_of("http://h:1/x?y"), "/x");
        assert_eq!(path_of("http://h"), "/");
        assert_eq!(redact_path_params("/cart;jsessionid=ABC123/item;v=2;flag"), "/cart;jsessionid=REDACTED/item;v=REDACTED;flag");
        assert_eq!(redact_path_params("/plain"), "/plain");
        assert_eq!(split_host("h:8080"), ("h".to_string(), Some(8080)));
        assert_eq!(split_host("[::1]:80"), ("::1".to_string(), Some(80)));
        assert_eq!(split_host("example.com"), ("example.com".to_string(), None));
    }
}
