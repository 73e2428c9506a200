//! Parsing one HTTP/1.x request or response head.

use smol_str::SmolStr;

/// Methods we accept as the start of a request. A closed list keeps binary or foreign
/// protocols from ever being mistaken for HTTP.
const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"];
/// Headers beyond this count make httparse fail; real heads rarely come close.
const MAX_HEADERS: usize = 96;

/// How the body that follows a head is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
    /// The body runs until the connection closes (responses only).
    UntilClose,
    /// After the head, the connection stops being HTTP/1 (101 Switching Protocols, CONNECT).
    Upgrade,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: SmolStr,
    /// The request target as sent (origin-form path and query, or absolute-form).
    pub target: SmolStr,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub host: Option<SmolStr>,
    pub user_agent: Option<SmolStr>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub expect_continue: bool,
    /// False when the head was larger than what was captured: only the request line is known.
    pub complete: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub minor_version: u8,
    pub complete: bool,
    /// `Connection: close`: the server reads nothing more on this connection.
    pub close: bool,
    /// 101 to `Upgrade: h2c`: HTTP/2 follows on this connection, the request's answer on its
    /// stream 1 (RFC 7540 §3.2).
    pub upgrade_h2c: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadParse<T> {
    /// A whole head and its length in bytes, with the framing of the body that follows.
    Complete(T, usize, Framing),
    /// A valid beginning; more bytes are needed. Carries what the start line told so far.
    Partial(Option<T>),
    /// Not an HTTP/1 head.
    Invalid,
}

fn header_str(value: &[u8]) -> SmolStr {
    SmolStr::new(String::from_utf8_lossy(value).trim())
}

struct BodyHeaders {
    content_length: Option<u64>,
    chunked: bool,
    invalid_length: bool,
}

fn body_headers(headers: &[httparse::Header<'_>]) -> BodyHeaders {
    let mut out = BodyHeaders { content_length: None, chunked: false, invalid_length: false };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                // Two different lengths: no framing can be trusted (RFC 9112, 6.3).
                Some(n) if out.content_length.is_some_and(|m| m != n) => out.invalid_length = true,
                Some(n) => out.content_length = Some(n),
                None => out.invalid_length = true,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            out.chunked = v.split(',').next_back().is_some_and(|last| last.trim() == "chunked");
        }
    }
    out
}

/// The method `buf` starts with, followed by a space or a tab (or `buf` is a prefix of one:
/// `Some("")`). Used to reject foreign bytes early.
fn method_of(buf: &[u8]) -> Option<&'static str> {
    if buf.is_empty() {
        return None;
    }
    for m in METHODS {
        let mb = m.as_bytes();
        if buf.len() > mb.len() {
            if buf.starts_with(mb) && (buf[mb.len()] == b' ' || buf[mb.len()] == b'\t') {
                return Some(m);
            }
        } else if mb.starts_with(buf) {
            return Some("");
        }
    }
    None
}

/// The headers a span needs. Two `traceparent` headers make the context invalid (W3C Trace
/// Context: the request then starts a new trace), and its `tracestate` with it.
fn read_headers<'a>(head: &mut RequestHead, headers: impl Iterator<Item = (&'a str, &'a [u8])>) {
    let mut traceparents = 0;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            head.host = Some(header_str(value));
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent = Some(header_str(value));
        } else if name.eq_ignore_ascii_case("traceparent") {
            traceparents += 1;
            head.traceparent = Some(header_str(value).into());
        } else if name.eq_ignore_ascii_case("tracestate") {
            head.tracestate = Some(header_str(value).into());
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    if traceparents > 1 {
        head.traceparent = None;
        head.tracestate = None;
    }
}

pub fn parse_request_head(buf: &[u8]) -> HeadParse<RequestHead> {
    let method = match method_of(buf) {
        None => return HeadParse::Invalid,
        Some("") => return HeadParse::Partial(None),
        Some(m) => m,
    };
    // Uninitialised header slots: initialising 96 of them cost more than parsing a small head.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let status = match httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut req, buf, &mut headers) {
        Ok(s) => s,
        // Servers answer many heads the grammar refuses; the answer decides (lenient.rs).
        Err(_) => return super::lenient::parse_request_head(buf, method),
    };
    let mut head =
        RequestHead { method: req.method.unwrap_or_default().into(), target: req.path.unwrap_or_default().into(), minor_version: req.version.unwrap_or(1), ..Default::default() };
    let len = match status {
        httparse::Status::Partial if req.path.is_some() => return HeadParse::Partial(Some(head)),
        // The request line itself is still cut: what of the target there is.
        httparse::Status::Partial => return super::lenient::parse_request_head(buf, method),
        httparse::Status::Complete(len) => len,
    };
    head.complete = true;
    read_headers(&mut head, req.headers.iter().map(|h| (h.name, h.value)));
    let body = body_headers(req.headers);
    if body.invalid_length && !body.chunked {
        // An unreadable Content-Length: the server refuses the request, and says so.
        return super::lenient::parse_request_head(buf, method);
    }
    let framing = if head.method == "CONNECT" {
        Framing::Upgrade
    } else if body.chunked {
        Framing::Chunked
    } else {
        match body.content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    };
    HeadParse::Complete(head, len, framing)
}

/// `request_method` is the method of the request this response answers, when known: a
/// response to HEAD never has a body, whatever its headers say.
pub fn parse_response_head(buf: &[u8], request_method: Option<&str>) -> HeadParse<ResponseHead> {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = buf.len().min(PREFIX.len());
    if n == 0 || buf[..n] != PREFIX[..n] {
        return HeadParse::Invalid;
    }
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let status = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut headers) {
        Ok(s) => s,
        Err(_) => return HeadParse::Invalid,
    };
    let mut head = ResponseHead { status: resp.code.unwrap_or(0), minor_version: resp.version.unwrap_or(1), ..Default::default() };
    let len = match status {
        httparse::Status::Partial => return HeadParse::Partial(resp.code.is_some().then_some(head)),
        httparse::Status::Complete(len) => len,
    };
    head.complete = true;
    let has_token = |name: &str, token: &[u8]| {
        resp.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name) && h.value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
    };
    head.close = has_token("connection", b"close");
    head.upgrade_h2c = head.status == 101 && has_token("upgrade", b"h2c");
    let body = body_headers(resp.headers);
    let framing = if head.status == 101 || (request_method == Some("CONNECT") && (200..300).contains(&head.status)) {
        Framing::Upgrade
    } else if (100..200).contains(&head.status) || head.status == 204 || head.status == 304 || request_method == Some("HEAD") {
        Framing::None
    } else if body.chunked {
        Framing::Chunked
    } else if let Some(n) = body.content_length {
        if n == 0 { Framing::None } else { Framing::Length(n) }
    } else if body.invalid_length {
        return HeadParse::Invalid;
    } else {
        Framing::UntilClose
    };
    HeadParse::Complete(head, len, framing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_with_headers() {
        let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x:8080\r\nUser-Agent: curl/8\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\nrest";
        let HeadParse::Complete(head, len, framing) = parse_request_head(raw) else { panic!() };
        assert_eq!(head.method, "GET");
        assert_eq!(head.target, "/a?b=1");
        assert_eq!(head.host.as_deref(), Some("x:8080"));
        assert_eq!(head.user_agent.as_deref(), Some("curl/8"));
        assert!(head.traceparent.is_some());
        assert_eq!(&raw[len..], b"rest");
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn request_framing() {
        let HeadParse::Complete(_, _, f) = parse_request_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n") else { panic!() };
        assert_eq!(f, Framing::Length(5));
        let HeadParse::Complete(_, _, f) = parse_request_head(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") else { panic!() };
        assert_eq!(f, Framing::Chunked);
        let HeadParse::Complete(_, _, f) = parse_request_head(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n") else { panic!() };
        assert_eq!(f, Framing::None, "an unreadable length frames no body (the server refuses it)");
    }

    #[test]
    fn partial_request_keeps_request_line() {
        let HeadParse::Partial(Some(head)) = parse_request_head(b"GET /big HTTP/1.1\r\nCookie: aaaa") else { panic!() };
        assert_eq!(head.target, "/big");
        assert!(!head.complete);
        assert_eq!(parse_request_head(b"GE"), HeadParse::Partial(None));
    }

    #[test]
    fn rejects_foreign_bytes() {
        assert_eq!(parse_request_head(b"\x16\x03\x01\x02\x00"), HeadParse::Invalid);
        assert_eq!(parse_request_head(b"GETX / HTTP/1.1\r\n\r\n"), HeadParse::Invalid);
        assert_eq!(parse_response_head(b"SSH-2.0-OpenSSH", None), HeadParse::Invalid);
        assert_eq!(parse_request_head(b""), HeadParse::Invalid);
    }

    #[test]
    fn response_framing() {
        let cases: &[(&[u8], Option<&str>, Framing)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", None, Framing::Length(3)),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", Some("HEAD"), Framing::None),
            (b"HTTP/1.1 204 No Content\r\n\r\n", None, Framing::None),
            (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", None, Framing::None),
            (b"HTTP/1.1 100 Continue\r\n\r\n", None, Framing::None),
            (b"HTTP/1.0 200 OK\r\n\r\n", None, Framing::UntilClose),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", None, Framing::Chunked),
            (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", None, Framing::Upgrade),
        ];
        for (raw, method, want) in cases {
            let HeadParse::Complete(_, _, f) = parse_response_head(raw, *method) else { panic!("{raw:?}") };
            assert_eq!(f, *want, "{}", String::from_utf8_lossy(raw));
        }
    }
}
