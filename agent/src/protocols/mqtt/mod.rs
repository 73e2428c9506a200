//! MQTT 3.1, 3.1.1 and 5.0 (mosquitto, EMQX, HiveMQ and their clients), on a traced client's
//! connection. What becomes a span:
//!
//! ```text
//! client → server   PUBLISH                  a message sent: PRODUCER (QoS 0: complete at once;
//!                                            QoS 1 and 2: ended by the server's PUBACK or PUBREC
//!                                            with the same packet id, failed when 5.0's reason
//!                                            code says so)
//! server → client   PUBLISH                  a delivery: CONSUMER (DUP set: a redelivery)
//! client → server   PUBACK, PUBCOMP          the consumer settled a delivery (`Message::Settle`)
//! ```
//!
//! The rest (CONNECT and its protocol level, SUBSCRIBE, PINGREQ…) is the protocol's own
//! traffic. 5.0's user properties give `traceparent` and `tracestate`; its topic aliases are
//! followed per direction. The payload is never kept: hashed with its topic into the
//! message's identity when it was captured whole, so its delivery to another traced process
//! is linked to its send. A connection is recognised by its CONNECT: one opened before the
//! agent attached gives no MQTT spans (its protocol level, which decides how a PUBLISH reads,
//! is unknown).
//!
//! Written here: the MQTT crates (mqttbytes, rumqttc's) decode whole packets from a buffer,
//! and this parser must count packets across capture gaps, where only a payload's head was
//! copied.

mod wire;

use std::hash::{Hash, Hasher};

use rustc_hash::FxHashMap as HashMap;

use self::wire::{Fixed, Head};
use super::framing::{CountedBody, Progress};
use super::message::{Correlation, Message, MessagingRequest, Request, RequestFields, Response, ResponseFields, Timing, TraceContext, Writer};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

/// Bytes of a packet kept to read its variable header and hash its payload: a message longer
/// than this has no identity.
const KEEP: usize = 8 * 1024;
/// Topic aliases remembered per direction at most (5.0 lets each side announce up to 65535).
const MAX_ALIASES: usize = 1024;

pub const PROTOCOL: Protocol =
    Protocol { name: "mqtt", detectors: &[Detector { layer: Layer::Magic, sender: Sender::Client, matches: wire::looks_like_connect, parser: || Box::new(Mqtt::default()) }] };

/// A whole packet: its fixed header, the kept head of its body, and when it moved.
struct Packet {
    fixed: Fixed,
    body: Vec<u8>,
    /// Part of its body was not captured.
    cut: bool,
    first: (u64, u64),
    last: (u64, u64),
}

impl Packet {
    fn timing(&self) -> Timing {
        Timing { first_enter_ns: self.first.0, first_exit_ns: self.first.1, last_enter_ns: self.last.0, last_exit_ns: self.last.1 }
    }
}

/// One direction's framing.
#[derive(Default)]
struct Side {
    /// The fixed header read so far.
    header: Vec<u8>,
    /// The packet whose body is being counted, and when its first byte moved.
    packet: Option<(Fixed, (u64, u64))>,
    counted: CountedBody,
    cut: bool,
    /// The framing was lost (a gap where a header was due): found again at a syscall that
    /// starts with a plausible packet.
    lost: bool,
    resyncs: u64,
    packets: u64,
    /// Topic aliases this direction announced (5.0).
    aliases: HashMap<u16, String>,
}

#[derive(Default)]
pub struct Mqtt {
    client: Side,
    server: Side,
    /// The client's CONNECT asked for 5.0: PUBLISH carries properties.
    v5: bool,
    server_foreign: bool,
    packets: Vec<Packet>,
}

impl Parser for Mqtt {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }

    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        let mut packets = std::mem::take(&mut self.packets);
        let side = match from {
            Sender::Client => &mut self.client,
            Sender::Server => &mut self.server,
        };
        let broke = side.feed(seg, &mut packets);
        self.server_foreign |= broke && from == Sender::Server && self.server.packets == 0;
        for packet in packets.drain(..) {
            self.on_packet(from, packet, out);
        }
        self.packets = packets;
    }

    fn close(&mut self, _: &mut Vec<Message>) {}

    /// The most the probes copy: a subscriber's read carries many messages, and a header cut
    /// by the capture loses the framing until the next read.
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
    /// One syscall's bytes, its whole packets into `done`; true when they broke the protocol.
    fn feed(&mut self, seg: Segment<'_>, done: &mut Vec<Packet>) -> bool {
        let at = (seg.ts_enter_ns, seg.ts_exit_ns);
        if self.lost {
            if !plausible_start(seg.data, seg.total) {
                return false;
            }
            self.lost = false;
            self.header.clear();
            self.packet = None;
            self.resyncs += 1;
        }
        let mut rest = seg.data;
        while !rest.is_empty() {
            if self.packet.is_some() {
                let (tail, progress) = self.counted.take(rest);
                rest = tail;
                if progress == Progress::Complete {
                    self.complete(at, done);
                }
                continue;
            }
            self.header.push(rest[0]);
            rest = &rest[1..];
            match wire::fixed(&self.header) {
                Head::Incomplete => {}
                Head::Invalid => {
                    self.lose();
                    return true;
                }
                Head::Fixed(fixed) => {
                    self.header.clear();
                    let progress = self.counted.start(fixed.remaining, KEEP.min(fixed.remaining as usize));
                    self.packet = Some((fixed, at));
                    self.cut = false;
                    if progress == Progress::Complete {
                        self.complete(at, done);
                    }
                }
            }
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            match self.packet {
                Some(_) => match self.counted.skip_gap(gap) {
                    Progress::Inside => self.cut = true,
                    Progress::Complete => {
                        self.cut = true;
                        self.complete(at, done);
                    }
                    Progress::Lost => self.lose(),
                },
                None => self.lose(),
            }
        }
        false
    }

    fn complete(&mut self, last: (u64, u64), done: &mut Vec<Packet>) {
        let Some((fixed, first)) = self.packet.take() else { return };
        self.packets += 1;
        done.push(Packet { fixed, body: self.counted.take_kept(), cut: self.cut, first, last });
    }

    fn lose(&mut self) {
        self.lost = true;
        self.header.clear();
        self.packet = None;
    }

    /// The topic a PUBLISH names: its own, remembered under its alias when it sets one, or the
    /// one its alias stands for.
    fn topic(&mut self, publish: &wire::Publish) -> Option<String> {
        match (publish.topic.is_empty(), publish.properties.topic_alias) {
            (false, Some(alias)) => {
                if self.aliases.len() < MAX_ALIASES || self.aliases.contains_key(&alias) {
                    self.aliases.insert(alias, publish.topic.clone());
                }
                Some(publish.topic.clone())
            }
            (false, None) => Some(publish.topic.clone()),
            (true, Some(alias)) => self.aliases.get(&alias).cloned(),
            (true, None) => None,
        }
    }
}

impl Mqtt {
    fn on_packet(&mut self, from: Sender, packet: Packet, out: &mut Vec<Message>) {
        match (from, packet.fixed.kind) {
            (Sender::Client, wire::CONNECT) => self.v5 = wire::connect_level(&packet.body) == Some(5),
            (_, wire::PUBLISH) => self.publish(from, packet, out),
            (Sender::Server, wire::PUBACK | wire::PUBREC) => {
                let Some((id, reason)) = wire::ack(&packet.body) else { return };
                let error = reason.filter(|_| self.v5).and_then(wire::failure);
                let fields = ResponseFields::Messaging { error, offset: None, message_id: None };
                out.push(Message::Response(Response { correlation: Correlation::Key(u64::from(id)), timing: packet.timing(), closes_connection: false, fields }));
            }
            // A QoS 1 delivery acknowledged, a QoS 2 one completed: the client's library does
            // so once the application's callback returned.
            (Sender::Client, wire::PUBACK | wire::PUBCOMP) => out.push(Message::Settle(packet.timing())),
            _ => {}
        }
    }

    fn publish(&mut self, from: Sender, packet: Packet, out: &mut Vec<Message>) {
        // A malformed variable header gives no span.
        let Some(publish) = wire::publish(&packet.body, packet.fixed.flags, self.v5) else { return };
        let side = match from {
            Sender::Client => &mut self.client,
            Sender::Server => &mut self.server,
        };
        let topic = side.topic(&publish);
        let payload_len = packet.fixed.remaining.saturating_sub(publish.payload_at as u64);
        let whole = !packet.cut && packet.body.len() as u64 == packet.fixed.remaining;
        let identity = topic.as_deref().filter(|_| whole).map(|topic| identity(topic, &packet.body[publish.payload_at..]));
        let (client_kind, operation) = match from {
            Sender::Client => (SpanKind::Producer, "publish"),
            Sender::Server => (SpanKind::Consumer, "deliver"),
        };
        let request = Request {
            correlation: match (from, publish.packet_id) {
                (Sender::Client, Some(id)) => Correlation::Key(u64::from(id)),
                _ => Correlation::InOrder,
            },
            timing: packet.timing(),
            context: TraceContext { traceparent: publish.properties.traceparent, tracestate: publish.properties.tracestate },
            client_kind,
            fields: RequestFields::Messaging(MessagingRequest {
                system: PROTOCOL.name,
                destination: topic,
                operation: operation.to_string(),
                body_size: Some(payload_len),
                identity,
                redelivered: from == Sender::Server && publish.dup,
                ..Default::default()
            }),
            writer: Writer::Caller,
        };
        out.push(match (from, publish.packet_id) {
            (Sender::Client, Some(_)) => Message::Request(request),
            (Sender::Client, None) => Message::OneWay(request),
            (Sender::Server, _) => Message::Push(request),
        });
    }
}

/// Whether a syscall's bytes start with a packet whose header is sane and that ends at the
/// syscall's end or is followed by another sane header (a resync point: MQTT has no marker).
fn plausible_start(data: &[u8], total: u64) -> bool {
    let Head::Fixed(first) = wire::fixed(data) else { return false };
    let end = first.len as u64 + first.remaining;
    end == total || usize::try_from(end).ok().and_then(|end| data.get(end..)).is_some_and(|next| matches!(wire::fixed(next), Head::Fixed(_)))
}

/// A message's identity: its topic and payload, hashed. The same on the publisher's PUBLISH
/// and on every subscriber's.
fn identity(topic: &str, payload: &[u8]) -> u64 {
    let mut hasher = rustc_hash::FxHasher::default();
    topic.hash(&mut hasher);
    payload.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests;
