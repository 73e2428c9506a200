//! AMQP 0-9-1 wire pieces (the specification's section 4.2 and its XML): frame headers, the
//! Basic methods that carry content, content header properties and field tables. Pure
//! functions on bytes; anything malformed is None.

use std::hash::{Hash, Hasher};

use crate::protocols::bytes::Reader;
use crate::protocols::parser::Sender;

pub const METHOD: u8 = 1;
pub const HEADER: u8 = 2;
pub const BODY: u8 = 3;
pub const HEARTBEAT: u8 = 8;

/// The Basic class and the methods that carry content.
const BASIC: u16 = 60;
const PUBLISH: u16 = 40;
const DELIVER: u16 = 60;
const GET_OK: u16 = 71;
/// The client methods that settle a delivery or ask for the next message: get, ack, reject,
/// nack.
const SETTLING: [u16; 4] = [70, 80, 90, 120];
/// Other Basic methods (for recognition mid-stream): qos, consume, cancel, get, ack, reject,
/// recover, nack and their answers.
const BASIC_METHODS: [u16; 17] = [10, 11, 20, 21, 30, 31, 40, 50, 60, 70, 71, 72, 80, 90, 100, 110, 120];

/// (type, channel, payload size) of a 7-byte frame header.
pub fn frame_header(h: &[u8]) -> Option<(u8, u16, u32)> {
    let kind = *h.first()?;
    if !matches!(kind, METHOD | HEADER | BODY | HEARTBEAT) {
        return None;
    }
    let channel = u16::from_be_bytes(h.get(1..3)?.try_into().ok()?);
    let size = u32::from_be_bytes(h.get(3..7)?.try_into().ok()?);
    Some((kind, channel, size))
}

/// Whether `d` starts with a frame whose header is sane and, when the whole frame is there,
/// whose frame-end octet is in place (a resync point).
pub fn plausible_frame(d: &[u8]) -> bool {
    let Some((_, _, size)) = frame_header(d) else { return false };
    match d.get(7 + size as usize) {
        Some(end) => *end == 0xCE,
        None => size <= super::MAX_FRAME,
    }
}

/// Whether `d` starts with a whole method frame of the Basic class that `from` may send:
/// a connection joined mid-stream.
pub fn basic_method_frame(d: &[u8], from: Sender) -> bool {
    let Some((METHOD, _, size)) = frame_header(d) else { return false };
    if d.get(7 + size as usize) != Some(&0xCE) || size < 4 {
        return false;
    }
    let (class, method) = (u16::from_be_bytes([d[7], d[8]]), u16::from_be_bytes([d[9], d[10]]));
    class == BASIC
        && BASIC_METHODS.contains(&method)
        && match from {
            Sender::Client => method != DELIVER && method != GET_OK,
            Sender::Server => method != PUBLISH,
        }
}

/// A Basic method that carries content, with where the message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Publish { exchange: String, routing_key: String },
    Deliver { exchange: String, routing_key: String, redelivered: bool },
    GetOk { exchange: String, routing_key: String, redelivered: bool },
}

impl Method {
    /// Whether `from` sends this method (a publish from the client, a delivery from the
    /// server).
    pub fn carries_content(&self, from: Sender) -> bool {
        matches!((self, from), (Method::Publish { .. }, Sender::Client) | (Method::Deliver { .. } | Method::GetOk { .. }, Sender::Server))
    }

    pub fn destination(&self) -> (&str, &str) {
        match self {
            Method::Publish { exchange, routing_key } | Method::Deliver { exchange, routing_key, .. } | Method::GetOk { exchange, routing_key, .. } => (exchange, routing_key),
        }
    }

    /// The broker delivered this message before.
    pub fn redelivered(&self) -> bool {
        matches!(self, Method::Deliver { redelivered: true, .. } | Method::GetOk { redelivered: true, .. })
    }

    /// The operation's name, as the protocol calls it.
    pub fn operation(&self) -> &'static str {
        match self {
            Method::Publish { .. } => "publish",
            Method::Deliver { .. } => "deliver",
            Method::GetOk { .. } => "get",
        }
    }
}

/// AMQP's strings, on top of the shared fixed-width reader.
trait AmqpStrings<'a> {
    fn shortstr(&mut self) -> Option<String>;
    fn longstr(&mut self) -> Option<&'a [u8]>;
}

impl<'a> AmqpStrings<'a> for Reader<'a> {
    fn shortstr(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        Some(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn longstr(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// A method frame's payload: a Basic method that carries content, else None.
pub fn parse_method(payload: &[u8]) -> Option<Method> {
    let mut r = Reader(payload);
    if r.u16()? != BASIC {
        return None;
    }
    match r.u16()? {
        PUBLISH => {
            let _reserved = r.u16()?;
            Some(Method::Publish { exchange: r.shortstr()?, routing_key: r.shortstr()? })
        }
        DELIVER => {
            let _consumer_tag = r.shortstr()?;
            let _delivery_tag = r.u64()?;
            let redelivered = r.u8()? & 1 != 0;
            Some(Method::Deliver { exchange: r.shortstr()?, routing_key: r.shortstr()?, redelivered })
        }
        GET_OK => {
            let _delivery_tag = r.u64()?;
            let redelivered = r.u8()? & 1 != 0;
            Some(Method::GetOk { exchange: r.shortstr()?, routing_key: r.shortstr()?, redelivered })
        }
        _ => None,
    }
}

/// Whether a client's method frame payload settles a delivery (ack, reject, nack) or asks for
/// the next message (`Basic.Get`).
pub fn settles(payload: &[u8]) -> bool {
    let mut r = Reader(payload);
    r.u16() == Some(BASIC) && r.u16().is_some_and(|method| SETTLING.contains(&method))
}

/// What a content header says of its message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub body_size: u64,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

/// A content header frame's payload: class, weight, body size, property flags, properties
/// in flag order.
pub fn parse_content_header(payload: &[u8]) -> Option<Content> {
    let mut r = Reader(payload);
    let _class = r.u16()?;
    let _weight = r.u16()?;
    let body_size = r.u64()?;
    let flags = r.u16()?;
    let has = |bit: u16| flags & (1 << bit) != 0;
    let mut content = Content { body_size, ..Default::default() };
    if has(15) {
        let _content_type = r.shortstr()?;
    }
    if has(14) {
        let _content_encoding = r.shortstr()?;
    }
    if has(13) {
        let table = r.longstr()?;
        (content.traceparent, content.tracestate) = trace_headers(table)?;
    }
    if has(12) {
        let _delivery_mode = r.u8()?;
    }
    if has(11) {
        let _priority = r.u8()?;
    }
    if has(10) {
        content.correlation_id = Some(r.shortstr()?).filter(|id| !id.is_empty());
    }
    for bit in [9, 8] {
        // reply-to, expiration.
        if has(bit) {
            let _ = r.shortstr()?;
        }
    }
    if has(7) {
        content.message_id = Some(r.shortstr()?).filter(|id| !id.is_empty());
    }
    Some(content)
}

/// `traceparent` and `tracestate` from a field table (their values long strings); None when
/// the table is malformed.
fn trace_headers(table: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let mut r = Reader(table);
    let (mut traceparent, mut tracestate) = (None, None);
    while !r.0.is_empty() {
        let name = r.shortstr()?;
        let value = field_value(&mut r)?;
        match (name.as_str(), value) {
            ("traceparent", Some(v)) => traceparent = Some(v),
            ("tracestate", Some(v)) => tracestate = Some(v),
            _ => {}
        }
    }
    Some((traceparent, tracestate))
}

/// Skips one field value; returns a string value's text. RabbitMQ's type letters (which
/// differ from the specification's for the 16- and 64-bit integers).
fn field_value(r: &mut Reader<'_>) -> Option<Option<String>> {
    let kind = r.u8()?;
    let fixed = match kind {
        b't' | b'b' | b'B' => 1,
        b's' | b'u' => 2,
        b'I' | b'i' | b'f' => 4,
        b'l' | b'd' | b'T' => 8,
        b'D' => 5,
        b'V' => 0,
        b'S' | b'x' => return Some(Some(String::from_utf8_lossy(r.longstr()?).into_owned())),
        b'A' | b'F' => {
            r.longstr()?;
            return Some(None);
        }
        _ => return None,
    };
    r.take(fixed)?;
    Some(None)
}

/// A message's identity: its message-id where the publisher set one (it travels in the
/// properties, always captured), else its whole body; with the exchange and routing key,
/// which the publish and the delivery both carry.
pub fn identity(exchange: &str, routing_key: &str, message_id: Option<&str>, whole_body: Option<&[u8]>) -> Option<u64> {
    let mut h = rustc_hash::FxHasher::default();
    (exchange, routing_key).hash(&mut h);
    match (message_id, whole_body) {
        (Some(id), _) => ("message-id", id).hash(&mut h),
        (None, Some(body)) => ("body", body).hash(&mut h),
        (None, None) => return None,
    }
    Some(h.finish())
}
