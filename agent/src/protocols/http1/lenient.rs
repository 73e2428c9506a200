//! Request heads that `httparse` refuses but servers still answer: control characters or raw
//! bytes in the target, several spaces or tabs in the request line, folded headers, a space
//! before a header's colon, conflicting Content-Length headers. A client must not be able to
//! hide its requests behind such bytes, so when httparse says no, this parser reads what it
//! can, sanitises it, and the server's answer decides whether an exchange happened.
//!
//! Hand-written because the point is to accept what the HTTP grammar (and so every HTTP
//! library) rejects; it reads only the request line and the few headers a span needs.

use super::head::{Framing, HeadParse, RequestHead};

/// The longest head this parser looks through for its end.
const MAX_HEAD: usize = 16 * 1024;

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The target as exported: raw bytes a URL cannot hold (controls, spaces, non-ASCII, invalid
/// UTF-8) percent-encoded, so the value is always printable and says what was sent.
pub fn sanitize_target(raw: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b > 0x20 && b < 0x7f {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// A header value as exported: control characters replaced, invalid UTF-8 replaced.
pub fn sanitize_value(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).trim().chars().map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
}

/// Parses a request head leniently. `method` was already checked against the known methods.
pub fn parse_request_head(buf: &[u8], method: &str) -> HeadParse<RequestHead> {
    let after_method = &buf[method.len()..];
    let line_end = after_method.iter().position(|&b| b == b'\n');
    let line = &after_method[..line_end.unwrap_or(after_method.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = line.iter().position(|&b| !is_blank(b)).unwrap_or(line.len());
    let target_end = line[start..].iter().position(|&b| is_blank(b)).map_or(line.len(), |p| start + p);
    let mut head = RequestHead { method: method.into(), target: sanitize_target(&line[start..target_end]).into(), minor_version: 1, ..Default::default() };
    let Some(line_end) = line_end else {
        // The request line goes on past what we have (a target longer than the capture).
        return HeadParse::Partial((target_end > start).then_some(head));
    };
    let version = line[target_end..].trim_ascii();
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return HeadParse::Invalid,
    };
    if target_end == start {
        return HeadParse::Invalid;
    }
    head.minor_version = minor;
    let headers_start = method.len() + line_end + 1;
    let Some((headers, len)) = split_headers(&buf[headers_start..]) else {
        return match buf.len() > MAX_HEAD {
            true => HeadParse::Invalid,
            false => HeadParse::Partial(Some(head)),
        };
    };
    head.complete = true;
    let mut lengths: Vec<u64> = Vec::new();
    let mut invalid_length = false;
    let mut chunked = false;
    let mut traceparents = 0;
    for (name, value) in unfold(headers) {
        let name = name.trim_ascii();
        if name.eq_ignore_ascii_case(b"host") {
            head.host = Some(sanitize_value(&value).into());
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            head.user_agent = Some(sanitize_value(&value).into());
        } else if name.eq_ignore_ascii_case(b"traceparent") {
            traceparents += 1;
            head.traceparent = Some(sanitize_value(&value));
        } else if name.eq_ignore_ascii_case(b"tracestate") {
            head.tracestate = Some(sanitize_value(&value));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            match std::str::from_utf8(&value).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(n) => lengths.push(n),
                None => invalid_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = String::from_utf8_lossy(&value).to_ascii_lowercase().split(',').next_back().is_some_and(|last| last.trim() == "chunked");
        }
    }
    if traceparents > 1 {
        head.traceparent = None;
        head.tracestate = None;
    }
    lengths.dedup();
    let framing = if head.method == "CONNECT" {
        Framing::Upgrade
    } else if chunked {
        Framing::Chunked
    } else {
        match (lengths.as_slice(), invalid_length) {
            ([n], false) if *n > 0 => Framing::Length(*n),
            // Conflicting or unreadable lengths: a server must refuse the request (and close),
            // so no body follows that we could frame.
            _ => Framing::None,
        }
    };
    HeadParse::Complete(head, headers_start + len, framing)
}

/// The header block up to its empty line (CRLF or bare LF), and the block's length with it.
fn split_headers(buf: &[u8]) -> Option<(&[u8], usize)> {
    if buf.starts_with(b"\r\n") {
        return Some((&[], 2));
    }
    if buf.starts_with(b"\n") {
        return Some((&[], 1));
    }
    let end = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p + 1, p + 2));
    let end_crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p + 2, p + 4));
    let (body_end, len) = match (end, end_crlf) {
        (Some(a), Some(b)) => {
            if a.1 < b.1 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    Some((&buf[..body_end], len))
}

/// Header lines as (name, value), continuation lines (obsolete folding) joined to the value
/// before them; lines without a colon are skipped.
fn unfold(block: &[u8]) -> Vec<(&[u8], Vec<u8>)> {
    let mut out: Vec<(&[u8], Vec<u8>)> = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if is_blank(line[0]) {
            if let Some((_, value)) = out.last_mut() {
                value.push(b' ');
                value.extend_from_slice(line.trim_ascii());
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            out.push((&line[..colon], line[colon + 1..].to_vec()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(raw: &[u8]) -> (RequestHead, usize, Framing) {
        let method = ["GET", "POST"].into_iter().find(|m| raw.starts_with(m.as_bytes())).expect("a test method");
        match parse_request_head(raw, method) {
            HeadParse::Complete(h, n, f) => (h, n, f),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }

    #[test]
    fn hostile_heads_are_read_and_sanitised() {
        let (h, n, _) = complete(b"GET /caf\xc3\xa9/\xff\x00x HTTP/1.1\r\nHost: a\r\n\r\nNEXT");
        assert_eq!(h.target, "/caf%C3%A9/%FF%00x");
        assert_eq!(n, b"GET /caf\xc3\xa9/\xff\x00x HTTP/1.1\r\nHost: a\r\n\r\n".len());
        let (h, _, _) = complete(b"GET\t/a  HTTP/1.1\r\nHost : example\r\nX-Long: one\r\n two\r\nUser-Agent: ua\x01\r\n\r\n");
        assert_eq!((h.target.as_str(), h.host.as_deref(), h.user_agent.as_deref()), ("/a", Some("example"), Some("ua\u{FFFD}")));
        let (_, _, f) = complete(b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(f, Framing::None, "conflicting lengths frame no body");
        let (_, _, f) = complete(b"POST /p HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(f, Framing::Length(5));
        let (h, _, _) = complete(b"GET / HTTP/1.1\ntraceparent: a\ntraceparent: b\n\n");
        assert_eq!(h.traceparent, None, "two traceparents: a new trace");
    }

    #[test]
    fn a_cut_request_line_keeps_what_was_seen() {
        let HeadParse::Partial(Some(h)) = parse_request_head(b"GET /very/long/path/cut-her", "GET") else { panic!() };
        assert_eq!(h.target, "/very/long/path/cut-her");
        assert!(!h.complete);
        assert_eq!(parse_request_head(b"GET ", "GET"), HeadParse::Partial(None));
    }

    #[test]
    fn what_is_not_http_stays_out() {
        assert_eq!(parse_request_head(b"GET / SPDY/3\r\n\r\n", "GET"), HeadParse::Invalid);
        assert_eq!(parse_request_head(b"GET  HTTP/1.1\r\n\r\n", "GET"), HeadParse::Invalid);
    }
}
