//! NATS, the text protocol between nats-server and its clients (core NATS; JetStream rides on
//! it). What becomes a span, on a traced client:
//!
//! ```text
//! client → server   PUB <subject> [reply-to] <#bytes>␍␊<payload>␍␊                a message sent: PRODUCER
//!                   HPUB <subject> [reply-to] <#headers> <#total>␍␊<headers><payload>␍␊
//! server → client   MSG <subject> <sid> [reply-to] <#bytes>␍␊<payload>␍␊          a delivery: CONSUMER
//!                   HMSG <subject> <sid> [reply-to] <#headers> <#total>␍␊<headers><payload>␍␊
//! ```
//!
//! The rest (CONNECT, INFO, SUB, UNSUB, PING, PONG, +OK, -ERR) is the protocol's own chatter.
//! Headers (`NATS/1.0` and MIME-style lines) give `traceparent`, `tracestate` and `Nats-Msg-Id`.
//! The payload is never kept: it is hashed with its subject into the message's identity
//! (`MessagingRequest::identity`), when it was captured whole, so that its delivery to another
//! traced process can be linked to its send.
//!
//! Written here: the NATS client libraries parse the protocol inside their I/O loops, and no
//! crate offers it as a pure function on bytes.

use std::hash::{Hash, Hasher};

use super::framing::{CountedBody, Progress};
use super::message::{Correlation, Message, MessagingRequest, Request, RequestFields, Timing, TraceContext, Writer};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

/// Control lines longer than this are not NATS (the server's default `max_control_line`).
const MAX_LINE: usize = 4096;
/// Payloads larger than this are not NATS (the server's largest `max_payload`).
const MAX_PAYLOAD: u64 = 64 * 1024 * 1024;
/// Bytes of a message kept to read its headers and hash its payload: a message longer than
/// this has no identity.
const KEEP: usize = 8 * 1024;

pub const PROTOCOL: Protocol = Protocol {
    name: "nats",
    detectors: &[
        // The server speaks first, with its INFO; a client answers with CONNECT.
        Detector { layer: Layer::Magic, sender: Sender::Server, matches: |d| d.starts_with(b"INFO {"), parser: || Box::new(Nats::default()) },
        Detector { layer: Layer::Magic, sender: Sender::Client, matches: |d| d.starts_with(b"CONNECT {"), parser: || Box::new(Nats::default()) },
        // A connection opened before the agent attached: a whole PUB or MSG line.
        Detector { layer: Layer::Structure, sender: Sender::Client, matches: |d| starts_with_message(d, Sender::Client), parser: || Box::new(Nats::default()) },
        Detector { layer: Layer::Structure, sender: Sender::Server, matches: |d| starts_with_message(d, Sender::Server), parser: || Box::new(Nats::default()) },
    ],
};

/// Whether `data` starts with a whole, well-formed PUB/HPUB (from a client) or MSG/HMSG (from
/// the server) line.
fn starts_with_message(data: &[u8], from: Sender) -> bool {
    let Some(end) = data.iter().take(MAX_LINE).position(|&b| b == b'\n') else { return false };
    matches!(control(&data[..end], from), Ok(Some(_)))
}

/// A message line: what it says of the message that follows.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Head {
    subject: String,
    headers: u64,
    total: u64,
}

/// Why a line is not this protocol.
#[derive(Debug, PartialEq, Eq)]
struct NotNats;

/// One control line (without its line end): a message's head, None for the protocol's other
/// lines, or `NotNats`.
fn control(line: &[u8], from: Sender) -> Result<Option<Head>, NotNats> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|_| NotNats)?;
    let mut words = text.split_ascii_whitespace();
    let verb = words.next().ok_or(NotNats)?.to_ascii_uppercase();
    let args: Vec<&str> = words.collect();
    let number = |s: &str| s.parse::<u64>().ok().filter(|n| *n <= MAX_PAYLOAD).ok_or(NotNats);
    let head = |subject: &str, headers: u64, total: u64| {
        if headers > total || subject.is_empty() {
            return Err(NotNats);
        }
        Ok(Some(Head { subject: subject.to_string(), headers, total }))
    };
    match (from, verb.as_str(), args.as_slice()) {
        // PUB <subject> [reply-to] <#bytes>
        (Sender::Client, "PUB", [subject, .., n]) if args.len() <= 3 => head(subject, 0, number(n)?),
        (Sender::Client, "HPUB", [subject, .., h, n]) if args.len() <= 4 && args.len() >= 3 => head(subject, number(h)?, number(n)?),
        // MSG <subject> <sid> [reply-to] <#bytes>
        (Sender::Server, "MSG", [subject, _sid, .., n]) if args.len() <= 4 => head(subject, 0, number(n)?),
        (Sender::Server, "HMSG", [subject, _sid, .., h, n]) if args.len() <= 5 && args.len() >= 4 => head(subject, number(h)?, number(n)?),
        (Sender::Client, "CONNECT" | "SUB" | "UNSUB" | "PING" | "PONG", _) => Ok(None),
        (Sender::Server, "INFO" | "PING" | "PONG" | "+OK" | "-ERR", _) => Ok(None),
        _ => Err(NotNats),
    }
}

/// A message whose payload is being counted.
struct Body {
    head: Head,
    first: (u64, u64),
    /// Part of it was not captured.
    cut: bool,
}

/// One direction: the line being read, or the message whose payload is being counted.
#[derive(Default)]
struct Side {
    line: Vec<u8>,
    line_first: (u64, u64),
    body: Option<Body>,
    counted: CountedBody,
    /// The framing was lost (a gap where a line was due, or a line that is no NATS): found
    /// again at a syscall that starts with a control line.
    lost: bool,
    resyncs: u64,
    /// Control lines that were NATS.
    lines: u64,
}

#[derive(Default)]
pub struct Nats {
    client: Side,
    server: Side,
    /// The server side sent something that is not NATS.
    server_foreign: bool,
}

impl Parser for Nats {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }

    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        let side = match from {
            Sender::Client => &mut self.client,
            Sender::Server => &mut self.server,
        };
        let broke = side.feed(from, seg, out);
        // The server's first words were no NATS: whatever the client sent, this is not NATS.
        self.server_foreign |= broke && from == Sender::Server && self.server.lines == 0;
    }

    fn close(&mut self, _: &mut Vec<Message>) {}

    /// The most the probes copy: a subscriber's read carries many messages, and a line cut by
    /// the capture loses the framing until the next read.
    fn capture_bytes(&self) -> Option<u16> {
        Some(zerotrace_abi::MAX_PAYLOAD as u16)
    }

    fn health(&self) -> Health {
        Health::of(self.server_foreign, self.client.lost)
    }

    fn resyncs(&self) -> u64 {
        self.client.resyncs + self.server.resyncs
    }
}

impl Side {
    /// Parses one syscall's bytes; true when they broke the protocol.
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) -> bool {
        let at = (seg.ts_enter_ns, seg.ts_exit_ns);
        let mut broke = false;
        if self.lost {
            if control_line_start(seg.data, from).is_none() {
                return false;
            }
            self.lost = false;
            self.line.clear();
            self.resyncs += 1;
        }
        let mut rest = seg.data;
        while !rest.is_empty() {
            if self.body.is_some() {
                let (tail, progress) = self.counted.take(rest);
                rest = tail;
                if progress == Progress::Complete {
                    self.finish(from, at, out);
                }
                continue;
            }
            if self.line.is_empty() {
                self.line_first = at;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&rest[..end]);
                    rest = &rest[end + 1..];
                    if !self.on_line(from) {
                        broke = true;
                        self.lose();
                        return broke;
                    }
                }
                None => {
                    self.line.extend_from_slice(rest);
                    rest = &[];
                    if self.line.len() > MAX_LINE {
                        self.lose();
                        return true;
                    }
                }
            }
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            match self.body.as_mut() {
                Some(body) => match self.counted.skip_gap(gap) {
                    Progress::Inside => body.cut = true,
                    Progress::Complete => {
                        body.cut = true;
                        self.finish(from, at, out);
                    }
                    Progress::Lost => self.lose(),
                },
                None => self.lose(),
            }
        }
        broke
    }

    fn lose(&mut self) {
        self.lost = true;
        self.line.clear();
        self.body = None;
    }

    /// A whole control line; false when it is no NATS.
    fn on_line(&mut self, from: Sender) -> bool {
        let line = std::mem::take(&mut self.line);
        let parsed = control(&line, from);
        self.line = line;
        self.line.clear();
        self.lines += u64::from(parsed.is_ok());
        match parsed {
            Ok(Some(head)) => {
                // The payload and its line end.
                let len = head.total + 2;
                self.counted.start(len, KEEP.min(len as usize));
                self.body = Some(Body { head, first: self.line_first, cut: false });
                true
            }
            Ok(None) => true,
            Err(NotNats) => false,
        }
    }

    /// The message's payload is complete: its span.
    fn finish(&mut self, from: Sender, last: (u64, u64), out: &mut Vec<Message>) {
        let Some(body) = self.body.take() else { return };
        let kept = self.counted.take_kept();
        let (headers_len, total) = (body.head.headers as usize, body.head.total as usize);
        let whole = !body.cut && kept.len() == total + 2;
        let headers = kept.get(..headers_len).filter(|_| headers_len > 0).map(parse_headers).unwrap_or_default();
        let identity = whole.then(|| identity(&body.head.subject, &kept[headers_len..total]));
        let (client_kind, operation) = match from {
            Sender::Client => (SpanKind::Producer, "publish"),
            Sender::Server => (SpanKind::Consumer, "deliver"),
        };
        let request = Request {
            correlation: Correlation::InOrder,
            timing: Timing { first_enter_ns: body.first.0, first_exit_ns: body.first.1, last_enter_ns: last.0, last_exit_ns: last.1 },
            context: TraceContext { traceparent: headers.traceparent, tracestate: headers.tracestate },
            client_kind,
            fields: RequestFields::Messaging(MessagingRequest {
                system: "nats",
                destination: Some(body.head.subject),
                operation: operation.to_string(),
                message_id: headers.message_id,
                body_size: Some(body.head.total - body.head.headers),
                identity,
                routing_key: None,
                partition: None,
                offset: None,
                redelivered: false,
                conversation_id: None,
            }),
            writer: Writer::Caller,
        };
        out.push(match from {
            Sender::Client => Message::OneWay(request),
            Sender::Server => Message::Push(request),
        });
    }
}

/// Whether a syscall's bytes start with one of the protocol's own control lines (a resync
/// point).
fn control_line_start(data: &[u8], from: Sender) -> Option<()> {
    let end = data.iter().take(MAX_LINE).position(|&b| b == b'\n')?;
    control(&data[..end], from).ok().map(|_| ())
}

/// The header fields a span uses.
#[derive(Default)]
struct Headers {
    traceparent: Option<String>,
    tracestate: Option<String>,
    message_id: Option<String>,
}

/// `NATS/1.0[ status]` then `Name: value` lines (names case-insensitive).
fn parse_headers(block: &[u8]) -> Headers {
    let mut h = Headers::default();
    let text = String::from_utf8_lossy(block);
    let mut lines = text.split("\r\n");
    if !lines.next().is_some_and(|l| l.starts_with("NATS/")) {
        return h;
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim().to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "traceparent" => h.traceparent = Some(value),
            "tracestate" => h.tracestate = Some(value),
            "nats-msg-id" => h.message_id = Some(value),
            _ => {}
        }
    }
    h
}

/// A message's identity: its subject and payload, hashed. The same on the publisher's PUB and
/// every subscriber's MSG.
fn identity(subject: &str, payload: &[u8]) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    subject.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
