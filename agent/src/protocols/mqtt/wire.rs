//! MQTT 3.1, 3.1.1 and 5.0 wire pieces (OASIS MQTT 3.1.1 section 2, MQTT 5.0 sections 2 and
//! 3): the fixed header, CONNECT's protocol level, PUBLISH's variable header with 5.0's
//! properties, and acknowledgements' reason codes. Pure functions on bytes; anything
//! malformed is None.

pub const CONNECT: u8 = 1;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const PUBREC: u8 = 5;
pub const PUBCOMP: u8 = 7;

/// A packet's fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixed {
    pub kind: u8,
    pub flags: u8,
    /// Bytes after the fixed header.
    pub remaining: u64,
    /// The fixed header's own length (2 to 5 bytes).
    pub len: usize,
}

/// What the front of some bytes says of a fixed header.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
    Fixed(Fixed),
    /// Too few bytes to tell.
    Incomplete,
    /// Not an MQTT fixed header.
    Invalid,
}

/// The fixed header at the front of `d`: packet type and flags, then the Remaining Length
/// (7 bits a byte, least significant first, at most 4 bytes).
pub fn fixed(d: &[u8]) -> Head {
    let Some(&first) = d.first() else { return Head::Incomplete };
    let (kind, flags) = (first >> 4, first & 0x0F);
    if !flags_valid(kind, flags) {
        return Head::Invalid;
    }
    let mut remaining = 0u64;
    for i in 0..4 {
        let Some(&b) = d.get(1 + i) else { return Head::Incomplete };
        remaining |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Head::Fixed(Fixed { kind, flags, remaining, len: 2 + i });
        }
    }
    Head::Invalid
}

/// The flags each packet type must carry (PUBLISH's are its own: DUP, QoS, RETAIN; QoS 3 is
/// malformed).
fn flags_valid(kind: u8, flags: u8) -> bool {
    match kind {
        PUBLISH => (flags >> 1) & 3 != 3,
        // PUBREL, SUBSCRIBE, UNSUBSCRIBE.
        6 | 8 | 10 => flags == 0b0010,
        // AUTH is 5.0's.
        1 | 2 | 4 | 5 | 7 | 9 | 11 | 12 | 13 | 14 | 15 => flags == 0,
        _ => false,
    }
}

use crate::protocols::bytes::Reader;

/// MQTT's variable-length integers and length-prefixed fields, on top of the shared reader.
trait MqttFields<'a> {
    fn varint(&mut self) -> Option<u64>;
    fn field(&mut self) -> Option<&'a [u8]>;
    fn string(&mut self) -> Option<String>;
}

impl<'a> MqttFields<'a> for Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..4 {
            let b = self.u8()?;
            value |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    /// A length-prefixed string or binary field.
    fn field(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.field()?.to_vec()).ok()
    }
}

/// The protocol level a CONNECT's variable header names (3: 3.1, 4: 3.1.1, 5: 5.0).
pub fn connect_level(body: &[u8]) -> Option<u8> {
    let mut r = Reader(body);
    let level = match (r.field()?, r.u8()?) {
        (b"MQTT", level @ (4 | 5)) | (b"MQIsdp", level @ 3) => level,
        _ => return None,
    };
    Some(level)
}

/// Whether `d` starts with a CONNECT packet's fixed header and protocol name: a client
/// opening an MQTT connection.
pub fn looks_like_connect(d: &[u8]) -> bool {
    let Head::Fixed(f) = fixed(d) else { return false };
    f.kind == CONNECT && f.remaining >= 10 && d.get(f.len..).is_some_and(|body| connect_level(body).is_some())
}

/// 5.0 properties a span uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub topic_alias: Option<u16>,
}

/// A property block (5.0): its length, then identifier and value pairs. Every identifier of
/// the specification is read (a packet's own are a subset); an unknown one is malformed.
fn properties(r: &mut Reader<'_>) -> Option<Properties> {
    let len = usize::try_from(r.varint()?).ok()?;
    let mut block = Reader(r.take(len)?);
    let mut p = Properties::default();
    while !block.0.is_empty() {
        match block.varint()? {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                block.u8()?;
            }
            0x13 | 0x21 | 0x22 => {
                block.u16()?;
            }
            0x23 => p.topic_alias = Some(block.u16()?),
            0x02 | 0x11 | 0x18 | 0x27 => {
                block.take(4)?;
            }
            0x0B => {
                block.varint()?;
            }
            0x03 | 0x08 | 0x12 | 0x15 | 0x1A | 0x1C | 0x1F | 0x09 | 0x16 => {
                block.field()?;
            }
            0x26 => {
                let (name, value) = (block.field()?, block.field()?);
                let value = || String::from_utf8(value.to_vec()).ok();
                match name {
                    b"traceparent" => p.traceparent = value(),
                    b"tracestate" => p.tracestate = value(),
                    _ => {}
                }
            }
            _ => return None,
        }
    }
    Some(p)
}

/// A PUBLISH's variable header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// Empty when 5.0's topic alias stands for it.
    pub topic: String,
    pub qos: u8,
    pub dup: bool,
    /// Present from QoS 1.
    pub packet_id: Option<u16>,
    pub properties: Properties,
    /// Where the payload starts in the packet's body.
    pub payload_at: usize,
}

/// A PUBLISH's variable header from the front of its body (`flags` from its fixed header;
/// `v5`: the connection speaks 5.0, whose header carries properties).
pub fn publish(body: &[u8], flags: u8, v5: bool) -> Option<Publish> {
    let mut r = Reader(body);
    let topic = r.string()?;
    let qos = (flags >> 1) & 3;
    let packet_id = if qos > 0 { Some(r.u16()?).filter(|id| *id != 0)? } else { 0 };
    let properties = if v5 { properties(&mut r)? } else { Properties::default() };
    if topic.is_empty() && properties.topic_alias.is_none() {
        return None;
    }
    Some(Publish { topic, qos, dup: flags & 0b1000 != 0, packet_id: (qos > 0).then_some(packet_id), properties, payload_at: body.len() - r.0.len() })
}

/// A PUBACK's or PUBREC's packet id and 5.0 reason code (absent: success).
pub fn ack(body: &[u8]) -> Option<(u16, Option<u8>)> {
    let mut r = Reader(body);
    Some((r.u16()?, r.u8()))
}

/// A failing reason code's name (5.0 section 2.4: 0x80 and up are failures), as `error.type`.
pub fn failure(reason: u8) -> Option<String> {
    if reason < 0x80 {
        return None;
    }
    Some(
        match reason {
            0x80 => "unspecified_error",
            0x83 => "implementation_specific_error",
            0x87 => "not_authorized",
            0x90 => "topic_name_invalid",
            0x91 => "packet_identifier_in_use",
            0x97 => "quota_exceeded",
            0x99 => "payload_format_invalid",
            _ => return Some(format!("reason_{reason:#04x}")),
        }
        .to_string(),
    )
}
