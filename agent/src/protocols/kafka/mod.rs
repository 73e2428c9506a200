//! Kafka: size-prefixed requests and responses on a client's connection to a broker, paired by
//! correlation id. What becomes a span, on a traced client:
//!
//! ```text
//! client → server   Produce (v3+), a record of a partition's batch      a message sent: PRODUCER
//! server → client   Produce response, that partition's error code      ends it
//!                   Fetch response (v4+), a record of a partition       a delivery: CONSUMER
//! ```
//!
//! Every other API (ApiVersions, Metadata, the group protocol, offsets) is the protocol's own
//! chatter; Metadata responses teach the connection topic names for the ids newer Fetch and
//! Produce versions carry. Record headers give `traceparent` and `tracestate`. Keys and values
//! are never kept: a record's partition, key and value are hashed into its identity, the same
//! on its send and on its fetch, so a consumer in another traced process is linked to its
//! producer. Compressed batches give no records (counted, not decoded).
//!
//! Written here: the Kafka crates (kafka-protocol, tansu-sans-io) decode whole frames only;
//! this parser must count frames across capture gaps, decode a response cut by the capture
//! as far as it goes, and know each response's API from its request.

mod wire;

use std::hash::{Hash, Hasher};

use rustc_hash::FxHashMap as HashMap;

use self::wire::{FETCH, METADATA, PRODUCE, Record, Topic};
use super::message::{Correlation, Message, MessagingRequest, Request, RequestFields, Response, ResponseFields, Timing, TraceContext, Writer};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

pub const PROTOCOL: Protocol =
    Protocol { name: "kafka", detectors: &[Detector { layer: Layer::Structure, sender: Sender::Client, matches: looks_like_request, parser: || Box::new(Kafka::default()) }] };

/// Frames larger than this are not Kafka (the broker's `socket.request.max.bytes` default).
const MAX_FRAME: u32 = 100 * 1024 * 1024;
/// Bytes of a frame kept for decoding; the capture rarely gives more per read.
const KEEP: usize = 64 * 1024;
/// Requests remembered while their answers are due.
const MAX_WAITING: usize = 1024;
/// Spans one Produce request or Fetch response gives at most (one per record).
const MAX_RECORD_SPANS: usize = 128;
/// Topic names learned per connection.
const MAX_TOPICS: usize = 4096;

/// Whether `data` starts with a request: a plausible size, an API key and a version Kafka
/// defines, and a client id of printable text inside the frame. A response can look like a
/// request header (a correlation id below 65536 reads as Produce and a version), so the
/// client id must be there: every client sends one, and what follows a response's
/// correlation id (a throttle time of 0, a count) does not make one.
fn looks_like_request(data: &[u8]) -> bool {
    let Some(size) = data.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]])) else { return false };
    let client_id_len = data.get(12..14).map_or(0, |b| i16::from_be_bytes([b[0], b[1]]));
    if !(10..=MAX_FRAME).contains(&size) || client_id_len <= 0 || 10 + client_id_len as u32 > size || data.len() < 14 + (client_id_len as usize).min(8) {
        return false;
    }
    let msg = &data[4..data.len().min(4 + size as usize)];
    let Some((header, at)) = wire::request_header(msg) else { return false };
    header.api_key != PRODUCE || produce_plausible(msg.get(at..).unwrap_or_default(), header.api_version)
}

/// A Produce request's body: acks −1, 0 or 1, and a first partition whose records start with
/// a v2 batch header (a non-flexible Produce answer can pass the header checks).
fn produce_plausible(body: &[u8], version: i16) -> bool {
    wire::produce_request(body, version).is_some_and(|p| (-1..=1).contains(&p.acks) && p.partitions.first().is_some_and(|first| first.records.batches > 0))
}

/// A request whose answer is due: which API, and the keys of the spans it opened.
struct Sent {
    api_key: i16,
    version: i16,
    /// Produce: each partition's span keys (partition, topic, keys).
    produced: Vec<(i32, TopicKey, Vec<u64>)>,
}

/// A topic as a hashable owned key (a name or an id).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TopicKey {
    Name(Vec<u8>),
    Id([u8; 16]),
}

impl From<Topic<'_>> for TopicKey {
    fn from(t: Topic<'_>) -> Self {
        match t {
            Topic::Name(n) => TopicKey::Name(n.to_vec()),
            Topic::Id(id) => TopicKey::Id(id),
        }
    }
}

/// One direction's framing: the 4-byte size, then the frame counted across segments.
#[derive(Default)]
struct Side {
    /// A frame starts here: set at the first segment that starts with one. Until then the
    /// bytes may be the middle of a frame (a connection opened before the agent attached: a
    /// client that read a response's size before, and reads its body now).
    aligned: bool,
    size: Vec<u8>,
    frame: Option<Frame>,
    lost: bool,
    resyncs: u64,
}

struct Frame {
    remaining: u64,
    kept: Vec<u8>,
    /// A gap inside the frame: nothing after it is kept.
    cut: bool,
    first: (u64, u64),
}

/// What a side's bytes completed.
struct Completed {
    bytes: Vec<u8>,
    timing: Timing,
}

impl Side {
    /// Frames completed by this segment, in order.
    fn feed(&mut self, seg: Segment<'_>, resync: impl Fn(&[u8]) -> bool) -> Vec<Completed> {
        let mut done = Vec::new();
        if self.lost || !self.aligned {
            if !resync(seg.data) {
                return done;
            }
            self.resyncs += u64::from(self.lost);
            (self.lost, self.aligned, self.size, self.frame) = (false, true, Vec::new(), None);
        }
        let mut data = seg.data;
        while !data.is_empty() {
            let Some(frame) = &mut self.frame else {
                let n = (4 - self.size.len()).min(data.len());
                self.size.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.size.len() == 4 {
                    let size = u32::from_be_bytes([self.size[0], self.size[1], self.size[2], self.size[3]]);
                    self.size.clear();
                    if size > MAX_FRAME {
                        self.lost = true;
                        return done;
                    }
                    self.frame = Some(Frame { remaining: u64::from(size), kept: Vec::new(), cut: false, first: (seg.ts_enter_ns, seg.ts_exit_ns) });
                    self.finish_if_done(seg, &mut done);
                }
                continue;
            };
            let n = (data.len() as u64).min(frame.remaining) as usize;
            if !frame.cut {
                let room = KEEP.saturating_sub(frame.kept.len());
                frame.kept.extend_from_slice(&data[..n.min(room)]);
            }
            frame.remaining -= n as u64;
            data = &data[n..];
            self.finish_if_done(seg, &mut done);
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            match &mut self.frame {
                Some(frame) if gap <= frame.remaining => {
                    frame.remaining -= gap;
                    frame.cut = true;
                    self.finish_if_done(seg, &mut done);
                }
                // Where the next frame starts was not captured.
                _ => self.lost = true,
            }
        }
        done
    }

    fn finish_if_done(&mut self, seg: Segment<'_>, done: &mut Vec<Completed>) {
        if self.frame.as_ref().is_some_and(|f| f.remaining == 0)
            && let Some(frame) = self.frame.take()
        {
            let timing = Timing { first_enter_ns: frame.first.0, first_exit_ns: frame.first.1, last_enter_ns: seg.ts_enter_ns, last_exit_ns: seg.ts_exit_ns };
            done.push(Completed { bytes: frame.kept, timing });
        }
    }
}

#[derive(Default)]
pub struct Kafka {
    client: Side,
    server: Side,
    waiting: HashMap<i32, Sent>,
    /// Topic names by id, from Metadata responses on this connection.
    topics: HashMap<[u8; 16], String>,
}

impl Parser for Kafka {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }

    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        match from {
            Sender::Client => {
                for frame in self.client.feed(seg, looks_like_request) {
                    self.request(&frame, out);
                }
            }
            Sender::Server => {
                let waiting = &self.waiting;
                // A response resumes the framing when it answers a request still due.
                let resync = |d: &[u8]| d.get(4..8).is_some_and(|c| waiting.contains_key(&i32::from_be_bytes([c[0], c[1], c[2], c[3]])));
                for frame in self.server.feed(seg, resync) {
                    self.response(&frame, out);
                }
            }
        }
    }

    fn close(&mut self, _: &mut Vec<Message>) {}

    fn health(&self) -> Health {
        Health::of(false, self.client.lost)
    }

    fn resyncs(&self) -> u64 {
        self.client.resyncs + self.server.resyncs
    }

    /// Records ride in Produce requests and Fetch responses: the most the probes copy.
    fn capture_bytes(&self) -> Option<u16> {
        Some(zerotrace_abi::MAX_PAYLOAD as u16)
    }
}

impl Kafka {
    fn request(&mut self, frame: &Completed, out: &mut Vec<Message>) {
        let Some((header, body_at)) = wire::request_header(&frame.bytes) else { return };
        let mut sent = Sent { api_key: header.api_key, version: header.api_version, produced: Vec::new() };
        if header.api_key == PRODUCE && header.api_version >= 3 {
            let body = frame.bytes.get(body_at..).unwrap_or_default();
            let Some(produce) = wire::produce_request(body, header.api_version) else { return };
            let mut index = 0u64;
            for p in &produce.partitions {
                let destination = self.topic_name(p.topic);
                let mut keys = Vec::new();
                let records = p.records.records.iter().map(Some).chain((0..p.records.undecoded).map(|_| None));
                for record in records.take(MAX_RECORD_SPANS.saturating_sub(index as usize)) {
                    // The correlation id and the record's place in the request.
                    let key = (u64::from(header.correlation_id as u32) << 16) | index;
                    index += 1;
                    let (fields, context) = record_fields("send", destination.clone(), p.partition, record);
                    let request = Request { correlation: Correlation::Key(key), timing: frame.timing, context, client_kind: SpanKind::Producer, fields, writer: Writer::Caller };
                    // acks=0: the broker never answers.
                    out.push(if produce.acks == 0 { Message::OneWay(request) } else { Message::Request(request) });
                    keys.push(key);
                }
                sent.produced.push((p.partition, p.topic.into(), keys));
            }
            if produce.acks == 0 {
                return;
            }
        }
        if self.waiting.len() < MAX_WAITING {
            self.waiting.insert(header.correlation_id, sent);
        }
    }

    fn response(&mut self, frame: &Completed, out: &mut Vec<Message>) {
        let mut r = wire::Reader::new(&frame.bytes);
        let Some(correlation_id) = r.i32() else { return };
        let Some(sent) = self.waiting.remove(&correlation_id) else { return };
        // ApiVersions answers with header v0 whatever its version (so an old broker can).
        if sent.api_key != wire::API_VERSIONS && wire::flexible(sent.api_key, sent.version) && r.tagged_fields().is_none() {
            return;
        }
        let body = r.rest();
        match sent.api_key {
            PRODUCE => {
                let outcomes = wire::produce_response(body, sent.version);
                for (partition, topic, keys) in &sent.produced {
                    let outcome = outcomes.iter().find(|o| o.partition == *partition && TopicKey::from(o.topic) == *topic);
                    let error = outcome.and_then(|o| error_name(o.error_code));
                    for (i, &key) in keys.iter().enumerate() {
                        // The partition's records got offsets from its base, in order.
                        let offset = outcome.filter(|o| o.error_code == 0 && o.base_offset >= 0).map(|o| o.base_offset + i as i64);
                        let fields = ResponseFields::Messaging { error: error.clone(), offset, message_id: None };
                        out.push(Message::Response(Response { correlation: Correlation::Key(key), timing: frame.timing, closes_connection: false, fields }));
                    }
                }
            }
            FETCH if sent.version >= 4 => {
                let mut spans = 0;
                for fetched in wire::fetch_response(body, sent.version) {
                    let destination = self.topic_name(fetched.topic);
                    for record in &fetched.records.records {
                        if spans == MAX_RECORD_SPANS {
                            return;
                        }
                        spans += 1;
                        let (fields, context) = record_fields("fetch", destination.clone(), fetched.partition, Some(record));
                        out.push(Message::Push(Request {
                            correlation: Correlation::InOrder,
                            timing: frame.timing,
                            context,
                            client_kind: SpanKind::Consumer,
                            fields,
                            writer: Writer::Caller,
                        }));
                    }
                }
            }
            METADATA => {
                for (id, name) in wire::metadata_topic_ids(body, sent.version) {
                    if self.topics.len() < MAX_TOPICS || self.topics.contains_key(&id) {
                        self.topics.insert(id, name);
                    }
                }
            }
            _ => {}
        }
    }

    /// A topic's name: on the wire, or learned for its id.
    fn topic_name(&self, topic: Topic<'_>) -> Option<String> {
        match topic {
            Topic::Name(n) => std::str::from_utf8(n).ok().map(str::to_string),
            Topic::Id(id) => self.topics.get(&id).cloned(),
        }
    }
}

/// A record's span fields and context. `None`: a record announced but not decoded (no
/// identity, no headers).
fn record_fields(operation: &str, destination: Option<String>, partition: i32, record: Option<&Record<'_>>) -> (RequestFields, TraceContext) {
    let mut context = TraceContext::default();
    let identity = record.map(|r| {
        let mut h = rustc_hash::FxHasher::default();
        (partition, r.key, r.value).hash(&mut h);
        h.finish()
    });
    for (name, value) in record.map(|r| r.headers.as_slice()).unwrap_or_default() {
        let value = value.and_then(|v| std::str::from_utf8(v).ok()).map(str::to_string);
        match *name {
            b"traceparent" => context.traceparent = value,
            b"tracestate" => context.tracestate = value,
            _ => {}
        }
    }
    let fields = RequestFields::Messaging(MessagingRequest {
        system: PROTOCOL.name,
        destination,
        operation: operation.to_string(),
        body_size: record.and_then(|r| r.value).map(|v| v.len() as u64),
        identity,
        partition: Some(partition).filter(|p| *p >= 0).map(|p| p as u32),
        offset: record.filter(|_| operation == "fetch").map(|r| r.offset),
        ..Default::default()
    });
    (fields, context)
}

/// `error.type` for a partition's error code (Kafka's own names for the common ones).
fn error_name(code: i16) -> Option<String> {
    let name = match code {
        0 => return None,
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        10 => "MESSAGE_TOO_LARGE",
        19 => "NOT_ENOUGH_REPLICAS",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        87 => "INVALID_RECORD",
        100 => "UNKNOWN_TOPIC_ID",
        _ => return Some(code.to_string()),
    };
    Some(name.to_string())
}

#[cfg(test)]
mod tests;
