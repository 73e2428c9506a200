//! HTTP spans with the stable HTTP semantic conventions: method, path or URL (query values
//! never kept), server and client ends, status.

use smol_str::{SmolStr, format_smolstr};

use super::record::{Domain, HttpFields, SpanKind, SpanRecord, Status, Url};
use super::{network, record};
use crate::conn::ConnInfo;
use crate::protocols::message::HttpRequest;

/// Methods the semantic conventions know; anything else becomes `_OTHER`.
const KNOWN_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"];

/// Splits a request target into path and (dropped-by-default) query.
pub fn path_of(target: &str) -> &str {
    // The query starts at the first `?`; a fragment at the first `#` (it cannot hold a `?`
    // that counts): whichever comes first ends the path.
    let path = target.find(['?', '#']).map_or(target, |end| &target[..end]);
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

/// The path of a request target as exported (see `path_of`, `redact_path_params`). Most
/// targets are their own path (no query, no parameters): then the target's text is shared,
/// not copied.
fn exported_path(target: &SmolStr) -> SmolStr {
    match redact_path_params(path_of(target)) {
        std::borrow::Cow::Borrowed(path) if path.len() == target.len() => target.clone(),
        path => SmolStr::new(path),
    }
}

/// `host[:port]` from a Host header.
fn split_host(host: &str) -> (&str, Option<u16>) {
    if let Some(rest) = host.strip_prefix('[')
        && let Some((ip, tail)) = rest.split_once(']')
    {
        return (ip, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// The span of an HTTP request, and of its answer's status when it has one.
pub(super) fn span(conn: &ConnInfo, kind: SpanKind, req: &HttpRequest, status: Option<u16>) -> SpanRecord {
    let (method, method_original, name) = match &req.method {
        Some(m) if KNOWN_METHODS.contains(&m.as_str()) => (Some(m.clone()), None, m.clone()),
        Some(m) => (Some(SmolStr::new_static("_OTHER")), Some(m.clone()), SmolStr::new_static("HTTP")),
        // Not known (HTTP/2 on a connection whose header table the agent joined late): left
        // out, never guessed.
        None => (None, None, SmolStr::new_static("HTTP")),
    };
    let path = req.target.as_ref().map(exported_path);
    let server = kind == SpanKind::Server;
    let (host, host_port) = req.host.as_deref().map(split_host).unwrap_or_default();
    let host = match &req.host {
        // The header is the host alone (no port): its text is shared, not copied.
        Some(whole) if whole.len() == host.len() => whole.clone(),
        _ => SmolStr::new(host),
    };
    let mut net = network(conn);
    let url = if server {
        let port = host_port.or(conn.local.map(|a| a.port()));
        net.server_address = (!host.is_empty()).then_some(host);
        net.server_port = port;
        net.client_address = conn.remote_ip.clone();
        Url::Server { path, scheme: if conn.tls { "https" } else { "http" } }
    } else {
        let address = if host.is_empty() { conn.remote_ip.clone().unwrap_or_default() } else { host };
        let (scheme, default_port) = if conn.tls { ("https", 443) } else { ("http", 80) };
        let port = host_port.or(conn.remote.map(|a| a.port())).unwrap_or(default_port);
        let full = path.map(|path| {
            if port == default_port {
                format_smolstr!("{scheme}://{address}{path}")
            } else if address.contains(':') {
                format_smolstr!("{scheme}://[{address}]:{port}{path}")
            } else {
                format_smolstr!("{scheme}://{address}:{port}{path}")
            }
        });
        net.server_address = (!address.is_empty()).then_some(address);
        net.server_port = Some(port);
        Url::Client { full }
    };
    let fields = HttpFields { method, method_original, protocol_version: req.version, url, user_agent: req.user_agent.clone(), status_code: status, template: None };
    let mut record = record(name, kind, net, Domain::Http(fields));
    // The head was longer than the capture: what is missing (headers, the end of a long
    // target) is not on the span.
    record.capture_truncated = !req.complete;
    if let Some(status) = status {
        let error = if server { status >= 500 } else { status >= 400 };
        if error {
            record.error_type = Some(status.to_string());
            record.status = Status::Error { message: None };
        }
    }
    record
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
        assert_eq!(split_host("h:8080"), ("h", Some(8080)));
        assert_eq!(split_host("[::1]:80"), ("::1", Some(80)));
        assert_eq!(split_host("example.com"), ("example.com", None));
        for (target, exported) in [("/a/b", "/a/b"), ("/a/b?q=1", "/a/b"), ("/x;k=12345678", "/x;k=REDACTED"), ("http://h/y", "/y")] {
            assert_eq!(exported_path(&SmolStr::new(target)), exported, "{target}");
        }
    }
}
