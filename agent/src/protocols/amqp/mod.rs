//! AMQP 0-9-1 (RabbitMQ): frames on both directions of a client's connection, turned into
//! messages. What becomes a span:
//!
//! ```text
//! client → server   Basic.Publish + content header + body frames     a message sent: PRODUCER
//! server → client   Basic.Deliver (pushed to a consumer)             a delivery: CONSUMER
//!                   Basic.Get-Ok (answer to a poll)                  a delivery: CONSUMER
//! ```
//!
//! Every frame is `type, channel, size, payload, 0xCE`; a message is its method frame, then a
//! content header (body size and properties) and body frames, contiguous on their channel
//! while other channels interleave. The properties give `message-id`, `correlation-id` and the
//! headers table (`traceparent`, `tracestate`). The body is never kept: it is hashed, with the
//! exchange and routing key, into the message's identity when the properties carry no
//! message-id, so a delivery to another traced process is linked to its publish.
//!
//! Written here: the AMQP crates (lapin, amq-protocol) parse frames inside their I/O and expect
//! whole frames; this parser must count bodies across capture gaps and resume mid-stream.

mod wire;

use rustc_hash::FxHashMap as HashMap;

use self::wire::{Content, Method, frame_header, parse_content_header, parse_method};
use super::framing::{CountedBody, Progress};
use super::message::{Correlation, Message, MessagingRequest, Request, RequestFields, Timing, TraceContext, Writer};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

/// What a client sends first.
const PROTOCOL_HEADER: &[u8] = b"AMQP\x00\x00\x09\x01";
/// Frame payload bytes kept: method and content header frames are small; body bytes beyond
/// this are counted, not kept (the identity then comes from a message-id, or none).
const KEEP: usize = 8 * 1024;
/// A frame larger than this is not AMQP (RabbitMQ's `frame_max` ceiling).
const MAX_FRAME: u32 = 1024 * 1024;
/// Channels with a message in progress, per direction.
const MAX_CHANNELS: usize = 256;

pub const PROTOCOL: Protocol = Protocol {
    name: "amqp",
    detectors: &[
        Detector { layer: Layer::Magic, sender: Sender::Client, matches: |d| d.starts_with(PROTOCOL_HEADER), parser: || Box::new(Amqp::new(false)) },
        // Connection.Start, the server's first frame.
        Detector {
            layer: Layer::Structure,
            sender: Sender::Server,
            matches: |d| d.starts_with(&[1, 0, 0]) && d.get(7..11) == Some(&[0, 10, 0, 10]),
            parser: || Box::new(Amqp::new(false)),
        },
        // A connection opened before the agent attached: a Basic method frame.
        Detector { layer: Layer::Structure, sender: Sender::Client, matches: |d| wire::basic_method_frame(d, Sender::Client), parser: || Box::new(Amqp::new(true)) },
        Detector { layer: Layer::Structure, sender: Sender::Server, matches: |d| wire::basic_method_frame(d, Sender::Server), parser: || Box::new(Amqp::new(true)) },
    ],
};

/// A message whose content is being read on a channel.
struct InProgress {
    method: Method,
    first: (u64, u64),
    content: Option<Content>,
    /// Body bytes still due, and those kept so far.
    body_left: u64,
    body: Vec<u8>,
    /// Part of the body was not captured.
    cut: bool,
}

/// One direction.
struct Side {
    /// Waiting for the client's protocol header.
    preface: bool,
    header: Vec<u8>,
    /// The frame whose payload is being counted: (type, channel, first bytes' timing, size).
    frame: Option<(u8, u16, (u64, u64), u32)>,
    payload: CountedBody,
    frame_cut: bool,
    channels: HashMap<u16, InProgress>,
    lost: bool,
    resyncs: u64,
    frames: u64,
}

impl Side {
    fn new(preface: bool) -> Self {
        Self { preface, header: Vec::new(), frame: None, payload: CountedBody::default(), frame_cut: false, channels: HashMap::default(), lost: false, resyncs: 0, frames: 0 }
    }
}

pub struct Amqp {
    client: Side,
    server: Side,
    server_foreign: bool,
}

impl Amqp {
    /// `joined`: a connection opened before the agent attached (no protocol header to wait
    /// for).
    pub fn new(joined: bool) -> Self {
        Self { client: Side::new(!joined), server: Side::new(false), server_foreign: false }
    }
}

impl Parser for Amqp {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }

    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        let side = match from {
            Sender::Client => &mut self.client,
            Sender::Server => &mut self.server,
        };
        let broke = side.feed(from, seg, out);
        self.server_foreign |= broke && from == Sender::Server && self.server.frames == 0;
    }

    fn close(&mut self, _: &mut Vec<Message>) {}

    /// The most the probes copy: a consumer's read carries several deliveries' frames, and a
    /// frame header cut by the capture loses the framing until the next read.
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
    /// One syscall's bytes; true when they broke the protocol.
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) -> bool {
        let at = (seg.ts_enter_ns, seg.ts_exit_ns);
        let mut rest = seg.data;
        if self.lost {
            if !wire::plausible_frame(rest) {
                return false;
            }
            self.lost = false;
            self.header.clear();
            self.frame = None;
            self.channels.clear();
            self.resyncs += 1;
        }
        if self.preface {
            let n = (PROTOCOL_HEADER.len() - self.header.len()).min(rest.len());
            self.header.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if !PROTOCOL_HEADER.starts_with(&self.header) {
                self.lose();
                return true;
            }
            if self.header.len() < PROTOCOL_HEADER.len() {
                return false;
            }
            self.header.clear();
            self.preface = false;
        }
        while !rest.is_empty() {
            if self.frame.is_some() {
                let (tail, progress) = self.payload.take(rest);
                rest = tail;
                if progress == Progress::Complete && !self.end_frame(from, at, out) {
                    self.lose();
                    return true;
                }
                continue;
            }
            // The 7-byte frame header.
            let n = (7 - self.header.len()).min(rest.len());
            self.header.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.header.len() < 7 {
                continue;
            }
            let Some((kind, channel, size)) = frame_header(&self.header).filter(|(_, _, size)| *size <= MAX_FRAME) else {
                self.lose();
                return true;
            };
            self.header.clear();
            // The payload and the frame-end octet.
            let len = u64::from(size) + 1;
            self.payload.start(len, KEEP.min(len as usize));
            self.frame = Some((kind, channel, at, size));
            self.frame_cut = false;
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            match self.frame {
                Some(_) => match self.payload.skip_gap(gap) {
                    Progress::Inside => self.frame_cut = true,
                    Progress::Complete => {
                        // The frame-end octet was not seen: its check is skipped.
                        self.frame_cut = true;
                        if !self.end_frame(from, at, out) {
                            self.lose();
                            return true;
                        }
                    }
                    Progress::Lost => self.lose(),
                },
                None => self.lose(),
            }
        }
        false
    }

    fn lose(&mut self) {
        self.lost = true;
        self.header.clear();
        self.frame = None;
        self.channels.clear();
    }

    /// A whole frame; false when it is no AMQP.
    fn end_frame(&mut self, from: Sender, last: (u64, u64), out: &mut Vec<Message>) -> bool {
        let Some((kind, channel, first, size)) = self.frame.take() else { return true };
        let mut payload = self.payload.take_kept();
        let cut = self.frame_cut;
        if !cut {
            // The frame-end octet.
            if payload.pop() != Some(0xCE) {
                return false;
            }
        }
        self.frames += 1;
        match kind {
            wire::METHOD => {
                // A method frame ends any content its channel was waiting for.
                self.channels.remove(&channel);
                if from == Sender::Client && wire::settles(&payload) {
                    out.push(Message::Settle(Timing { first_enter_ns: first.0, first_exit_ns: first.1, last_enter_ns: last.0, last_exit_ns: last.1 }));
                }
                if let Some(method) = parse_method(&payload).filter(|m| m.carries_content(from))
                    && self.channels.len() < MAX_CHANNELS
                {
                    self.channels.insert(channel, InProgress { method, first, content: None, body_left: 0, body: Vec::new(), cut: false });
                }
            }
            wire::HEADER => {
                let Some(msg) = self.channels.get_mut(&channel) else { return true };
                match parse_content_header(&payload).filter(|_| !cut) {
                    Some(content) => {
                        msg.body_left = content.body_size;
                        msg.content = Some(content);
                        if msg.body_left == 0 {
                            self.deliver(from, channel, last, out);
                        }
                    }
                    None => {
                        self.channels.remove(&channel);
                    }
                }
            }
            wire::BODY => {
                let Some(msg) = self.channels.get_mut(&channel) else { return true };
                if msg.content.is_none() {
                    self.channels.remove(&channel);
                    return true;
                }
                // Body bytes this frame carried: the header said, whatever was kept.
                let size = u64::from(size);
                msg.cut |= cut;
                if msg.body.len() + payload.len() <= KEEP {
                    msg.body.extend_from_slice(&payload);
                } else {
                    msg.cut = true;
                }
                msg.body_left = msg.body_left.saturating_sub(size);
                if msg.body_left == 0 {
                    self.deliver(from, channel, last, out);
                }
            }
            // Heartbeats, and frame types of newer versions.
            _ => {}
        }
        true
    }

    /// The message on `channel` is whole: its span.
    fn deliver(&mut self, from: Sender, channel: u16, last: (u64, u64), out: &mut Vec<Message>) {
        let Some(msg) = self.channels.remove(&channel) else { return };
        let Some(content) = msg.content else { return };
        let (exchange, routing_key) = msg.method.destination();
        let identity = wire::identity(exchange, routing_key, content.message_id.as_deref(), (!msg.cut).then_some(msg.body.as_slice()));
        let (client_kind, operation) = match from {
            Sender::Client => (SpanKind::Producer, "publish"),
            Sender::Server => (SpanKind::Consumer, msg.method.operation()),
        };
        let request = Request {
            correlation: Correlation::InOrder,
            timing: Timing { first_enter_ns: msg.first.0, first_exit_ns: msg.first.1, last_enter_ns: last.0, last_exit_ns: last.1 },
            context: TraceContext { traceparent: content.traceparent, tracestate: content.tracestate },
            client_kind,
            fields: RequestFields::Messaging(MessagingRequest {
                system: "rabbitmq",
                // The default exchange has no name; the conventions call it `amq.default`.
                destination: Some(if exchange.is_empty() { "amq.default".to_string() } else { exchange.to_string() }),
                operation: operation.to_string(),
                message_id: content.message_id,
                conversation_id: content.correlation_id,
                body_size: Some(content.body_size),
                identity,
                routing_key: Some(routing_key.to_string()),
                redelivered: msg.method.redelivered(),
                ..Default::default()
            }),
            writer: Writer::Caller,
        };
        out.push(match from {
            Sender::Client => Message::OneWay(request),
            Sender::Server => Message::Push(request),
        });
    }
}

#[cfg(test)]
mod tests;
