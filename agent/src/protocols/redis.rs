//! Redis connections: the RESP framer on both directions, turned into one request per command
//! and one response per reply. Pub/sub is messaging: PUBLISH is a PRODUCER span (answered by
//! its count of receivers), and each message a subscribed connection receives a CONSUMER span;
//! both carry the message's identity (channel and payload, hashed) so a delivery is linked to
//! its publish. A subscribed connection's other traffic gives no spans.
//!
//! Lists used as queues are messaging too: a push of one message (LPUSH, RPUSH) is a PRODUCER
//! span, and a pop that took one (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, LMOVE, RPOPLPUSH) a
//! CONSUMER span, with the same identity (list and payload, hashed). A pop that took nothing
//! (a blocking pop's timeout) gives no span. LPOP and RPOP stay database calls: they serve
//! caches as often as queues. A message in a kombu envelope (Celery) gives its task id and
//! the trace context its producer put in its headers (`envelope`).
//!
//! Streams too: XADD is a PRODUCER span (its answer, the entry id, is the message id), and
//! each entry an XREAD or XREADGROUP answer holds a CONSUMER span with that id; both carry
//! the identity of the stream and the entry's fields and values, hashed. A read that took
//! nothing (a BLOCK that timed out) gives no span.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use super::message::{Correlation, DbCommand, DbOutcome, DbRequest, Message, MessagingRequest, Request, RequestFields, ResponseFields, Timing, TraceContext, Writer};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use super::resp::{Capture, Direction, Element, RespMessage, RespStream, RespValue};
use crate::spans::record::SpanKind;

pub const PROTOCOL: Protocol = Protocol {
    name: "redis",
    detectors: &[Detector { layer: Layer::Structure, sender: Sender::Client, matches: super::resp::looks_like_command, parser: || Box::new(Redis::new()) }],
};

/// What a request waiting for its reply was.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Waiting {
    Command,
    Publish,
    /// A list pop, answered by the message it took, if any. `source`: the list, for the pops
    /// whose reply does not name it (LMOVE and kin).
    Pop {
        command: String,
        source: Option<Element>,
    },
    /// A stream read, answered by the entries it took, if any.
    StreamRead {
        command: String,
    },
}

/// How a command moves messages, if it does.
enum QueueOp {
    /// Sends to a channel or a list: (destination, payload) when it sends exactly one.
    Send,
    /// Takes from a list; `source_in_command`: the reply does not name the list.
    Take { source_in_command: bool },
    /// Appends an entry to a stream.
    StreamAdd,
    /// Reads entries from streams.
    StreamRead,
}

fn queue_op(name: &str) -> Option<QueueOp> {
    Some(match name {
        "PUBLISH" | "SPUBLISH" | "LPUSH" | "RPUSH" | "LPUSHX" | "RPUSHX" => QueueOp::Send,
        "BLPOP" | "BRPOP" => QueueOp::Take { source_in_command: false },
        "BLMOVE" | "BRPOPLPUSH" | "LMOVE" | "RPOPLPUSH" => QueueOp::Take { source_in_command: true },
        "XADD" => QueueOp::StreamAdd,
        "XREAD" | "XREADGROUP" => QueueOp::StreamRead,
        _ => return None,
    })
}

pub struct Redis {
    commands: RespStream,
    replies: RespStream,
    /// Requests emitted whose reply has not been seen, oldest first.
    waiting: VecDeque<Waiting>,
    subscribed: bool,
    last_reply: (u64, u64),
}

impl Default for Redis {
    fn default() -> Self {
        Self::new()
    }
}

impl Redis {
    pub fn new() -> Self {
        Self { commands: RespStream::new(Direction::Commands), replies: RespStream::new(Direction::Replies), waiting: VecDeque::new(), subscribed: false, last_reply: (0, 0) }
    }

    pub fn is_desynced(&self) -> bool {
        self.commands.is_desynced()
    }

    pub fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Message>) {
        if from_client {
            for m in self.commands.feed(seg) {
                if self.replies.is_desynced() {
                    // A reply cut across values by the capture cap: what waited ended at the
                    // last reply bytes, and the next reply starts a segment.
                    self.end_blind(out);
                }
                let RespValue::Command { name, .. } = &m.value else { continue };
                let name = name.clone();
                if matches!(name.as_str(), "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "MONITOR") {
                    self.subscribed = true;
                    // Nothing but messages comes now: after a capture gap, the next read that
                    // starts with one is where they resume.
                    self.replies.resync_on_arrays = true;
                }
                if self.subscribed {
                    continue;
                }
                let timing = timing(&m);
                let op = queue_op(&name);
                self.replies.capture_answers.push_back(match op {
                    // The message a pop took; the entry id XADD answers; the entries a read took.
                    Some(QueueOp::Take { .. } | QueueOp::StreamAdd) => Capture::Top,
                    Some(QueueOp::StreamRead) => Capture::Deep,
                    _ => Capture::None,
                });
                match (op, m.elements.as_slice()) {
                    (Some(QueueOp::Send), [destination, rest @ ..]) => {
                        self.waiting.push_back(Waiting::Publish);
                        // The system's own name of the operation: "publish", "lpush"…
                        let operation = name.to_ascii_lowercase();
                        // Several messages pushed at once: one span, no identity to link by.
                        let (fields, context) = match (rest, m.args()) {
                            ([payload], 2) => message(&operation, destination, payload),
                            _ => (fields(&operation, destination, None, None), TraceContext::default()),
                        };
                        out.push(sent(timing, context, fields));
                        continue;
                    }
                    (Some(QueueOp::Take { source_in_command }), elements) => {
                        let source = if source_in_command { elements.first().cloned() } else { None };
                        self.waiting.push_back(Waiting::Pop { command: name, source });
                        out.push(Message::Settle(timing));
                        continue;
                    }
                    (Some(QueueOp::StreamAdd), [stream, rest @ ..]) => {
                        self.waiting.push_back(Waiting::Publish);
                        // Every argument captured, or the entry has no identity.
                        let pairs = entry_fields(rest).filter(|_| m.elements.len() == m.args());
                        let request = stream_entry("xadd", stream, None, pairs);
                        out.push(sent(timing, TraceContext::default(), request));
                        continue;
                    }
                    (Some(QueueOp::StreamRead), _) => {
                        self.waiting.push_back(Waiting::StreamRead { command: name });
                        out.push(Message::Settle(timing));
                        continue;
                    }
                    _ => {}
                }
                self.waiting.push_back(Waiting::Command);
                let acknowledges = name == "XACK";
                // A name Redis does not define may be anything the client typed.
                let command = if super::redis_commands::is_known(&name) { DbCommand::Named(name) } else { DbCommand::Unrecognised };
                out.push(Message::db_call(timing, DbRequest { system: PROTOCOL.name, command, namespace: None, prepared: false }));
                // A stream consumer acknowledging its entries is done with them (after the call,
                // which is still their work).
                if acknowledges {
                    out.push(Message::Settle(timing));
                }
            }
        } else {
            self.last_reply = (seg.ts_enter_ns, seg.ts_exit_ns);
            for m in self.replies.feed(seg) {
                let RespValue::Reply { error, push } = &m.value else { continue };
                if *push || self.subscribed || self.waiting.is_empty() {
                    // Unasked: a message of a channel this connection subscribed to, or none.
                    if let Some(delivery) = delivery(&m) {
                        out.push(delivery);
                    }
                    continue;
                }
                let fields = match (self.waiting.pop_front(), error) {
                    (Some(Waiting::Pop { command, source }), error) => {
                        self.taken(&m, command, source, error.as_deref(), out);
                        continue;
                    }
                    (Some(Waiting::StreamRead { command }), error) => {
                        read_entries(&m, command, error.as_deref(), out);
                        continue;
                    }
                    // XADD's answer is the entry's id.
                    (Some(Waiting::Publish), None) => ResponseFields::Messaging { error: None, offset: None, message_id: entry_id(&m) },
                    // Refused (a push onto a key that holds no list): no message left, and
                    // the span is the failed command, which names no key.
                    (_, Some(code)) => ResponseFields::Db(super::message::DbResponse { outcome: DbOutcome::Error { code: code.clone() }, rows: None }),
                    (_, None) => ResponseFields::Db(super::message::DbResponse { outcome: DbOutcome::Ok, rows: None }),
                };
                out.push(Message::in_order_answer(Timing::single(m.end_enter_ns, m.end_exit_ns), fields));
            }
        }
    }

    pub fn close(&mut self, out: &mut Vec<Message>) {
        if self.replies.is_desynced() {
            self.end_blind(out);
        }
    }

    /// The reply to a list pop: the message it took is a delivery; an error is a failed
    /// database call; nothing taken, nothing at all.
    fn taken(&self, m: &RespMessage, command: String, source: Option<Element>, error: Option<&str>, out: &mut Vec<Message>) {
        if let Some(code) = error {
            return failed_call(m, command, code, out);
        }
        let (list, payload) = match (source.as_ref(), m.elements.as_slice()) {
            (None, [list, payload]) => (list, payload),
            (Some(list), [payload]) => (list, payload),
            _ => return,
        };
        let (fields, context) = message(&command.to_ascii_lowercase(), list, payload);
        out.push(received(timing(m), context, fields));
    }

    fn end_blind(&mut self, out: &mut Vec<Message>) {
        for waiting in std::mem::take(&mut self.waiting) {
            let fields = match waiting {
                // Its message, if it took one, was not captured.
                Waiting::Pop { .. } | Waiting::StreamRead { .. } => continue,
                Waiting::Publish => ResponseFields::Messaging { error: None, offset: None, message_id: None },
                Waiting::Command => ResponseFields::Db(super::message::DbResponse { outcome: DbOutcome::Ok, rows: None }),
            };
            out.push(Message::in_order_answer(Timing::single(self.last_reply.0, self.last_reply.1), fields));
        }
        let (resync_on_arrays, resyncs) = (self.replies.resync_on_arrays, self.replies.resyncs);
        self.replies = RespStream::new(Direction::Replies);
        (self.replies.resync_on_arrays, self.replies.resyncs) = (resync_on_arrays, resyncs);
    }
}
/// A read the server refused: the failed command's span.
fn failed_call(m: &RespMessage, command: String, code: &str, out: &mut Vec<Message>) {
    let request = DbRequest { system: PROTOCOL.name, command: DbCommand::Named(command), namespace: None, prepared: false };
    out.push(Message::db_call(timing(m), request));
    let outcome = DbOutcome::Error { code: code.to_string() };
    out.push(Message::in_order_answer(Timing::single(m.end_enter_ns, m.end_exit_ns), ResponseFields::Db(super::message::DbResponse { outcome, rows: None })));
}

/// XADD's arguments after the stream's name: options, the entry id, then the entry's field
/// and value pairs, which this returns (None when they are not whole pairs).
fn entry_fields(args: &[Element]) -> Option<&[Element]> {
    let mut i = 0;
    loop {
        match args.get(i)?.head.to_ascii_uppercase().as_slice() {
            b"NOMKSTREAM" => i += 1,
            b"MAXLEN" | b"MINID" => {
                i += 1;
                if matches!(args.get(i)?.head.as_slice(), b"=" | b"~") {
                    i += 1;
                }
                // The threshold, then LIMIT and its count.
                i += 1;
                if args.get(i).is_some_and(|a| a.head.eq_ignore_ascii_case(b"LIMIT")) {
                    i += 2;
                }
            }
            _ => break,
        }
    }
    let pairs = args.get(i + 1..)?;
    (!pairs.is_empty() && pairs.len() % 2 == 0).then_some(pairs)
}

/// A stream entry's span fields: its identity (the stream, and every field and value
/// captured whole, hashed; the same on XADD and on every read) and its id.
fn stream_entry(operation: &str, stream: &Element, id: Option<String>, pairs: Option<&[Element]>) -> RequestFields {
    let identity = pairs.filter(|p| stream.whole && p.len() % 2 == 0 && p.iter().all(|e| e.whole)).map(|p| {
        let mut h = rustc_hash::FxHasher::default();
        stream.hash.hash(&mut h);
        for e in p {
            e.hash.hash(&mut h);
        }
        h.finish()
    });
    let mut request = fields(operation, stream, pairs.map(|p| p.iter().map(|e| e.len).sum()), identity);
    if let RequestFields::Messaging(m) = &mut request {
        m.message_id = id;
    }
    request
}

/// The entry id XADD answered.
fn entry_id(m: &RespMessage) -> Option<String> {
    let [id] = m.elements.as_slice() else { return None };
    id.whole.then(|| String::from_utf8_lossy(&id.head).into_owned())
}

/// Stream entries at most per read answer that become spans.
const MAX_ENTRIES: usize = 128;

/// The answer to XREAD or XREADGROUP: each entry it holds is a delivery. RESP2 nests
/// `[[stream, [[id, [field, value, …]], …]], …]`, RESP3 maps each stream to its entries: either
/// way the stream's name is the shallowest string, an entry's id two levels deeper, its fields
/// and values three. An error is a failed call; nothing read (a BLOCK that timed out), nothing.
fn read_entries(m: &RespMessage, command: String, error: Option<&str>, out: &mut Vec<Message>) {
    if let Some(code) = error {
        return failed_call(m, command, code, out);
    }
    let Some(top) = m.elements.iter().map(|e| e.depth).min() else { return };
    let operation = command.to_ascii_lowercase();
    let mut stream = None;
    // The entry being read: its id's index, and where its fields end.
    let mut entry: Option<(usize, usize)> = None;
    let mut emitted = 0;
    let mut flush = |stream: Option<&Element>, entry: Option<(usize, usize)>, out: &mut Vec<Message>| {
        let (Some(stream), Some((id_at, end))) = (stream, entry) else { return };
        if emitted == MAX_ENTRIES {
            return;
        }
        emitted += 1;
        let id = &m.elements[id_at];
        let id = id.whole.then(|| String::from_utf8_lossy(&id.head).into_owned());
        let fields = stream_entry(&operation, stream, id, Some(&m.elements[id_at + 1..end]));
        out.push(received(timing(m), TraceContext::default(), fields));
    };
    for (i, e) in m.elements.iter().enumerate() {
        match e.depth - top {
            0 => {
                flush(stream, entry.take(), out);
                stream = Some(e);
            }
            2 => {
                flush(stream, entry.take(), out);
                entry = Some((i, i + 1));
            }
            3 => {
                if let Some((_, end)) = entry.as_mut() {
                    *end = i + 1;
                }
            }
            _ => {}
        }
    }
    flush(stream, entry, out);
}

/// A message sent (a PRODUCER span, answered in order).
fn sent(timing: Timing, context: TraceContext, fields: RequestFields) -> Message {
    Message::Request(Request { correlation: Correlation::InOrder, timing, context, client_kind: SpanKind::Producer, fields, writer: Writer::Caller })
}

/// A message received (a CONSUMER span of its own).
fn received(timing: Timing, context: TraceContext, fields: RequestFields) -> Message {
    Message::Push(Request { correlation: Correlation::InOrder, timing, context, client_kind: SpanKind::Consumer, fields, writer: Writer::Caller })
}

fn timing(m: &RespMessage) -> Timing {
    Timing { first_enter_ns: m.start_enter_ns, first_exit_ns: m.start_exit_ns, last_enter_ns: m.end_enter_ns, last_exit_ns: m.end_exit_ns }
}

/// A message to `channel` (or a list): its span's fields, with its identity when both
/// strings were captured whole (the same on the send and on every delivery), and the task id
/// and trace context of a kombu envelope.
fn message(operation: &str, channel: &Element, payload: &Element) -> (RequestFields, TraceContext) {
    let identity = (channel.whole && payload.whole).then(|| {
        let mut h = rustc_hash::FxHasher::default();
        (channel.hash, payload.hash).hash(&mut h);
        h.finish()
    });
    let envelope = if payload.whole { super::envelope::kombu(&payload.head).unwrap_or_default() } else { Default::default() };
    let mut fields = fields(operation, channel, Some(payload.len), identity);
    if let RequestFields::Messaging(m) = &mut fields {
        (m.message_id, m.conversation_id) = (envelope.id, envelope.correlation_id);
    }
    (fields, TraceContext { traceparent: envelope.traceparent, tracestate: envelope.tracestate })
}

fn fields(operation: &str, channel: &Element, body_size: Option<u64>, identity: Option<u64>) -> RequestFields {
    RequestFields::Messaging(MessagingRequest {
        system: PROTOCOL.name,
        destination: Some(String::from_utf8_lossy(&channel.head).into_owned()).filter(|_| channel.head.len() as u64 == channel.len),
        operation: operation.to_string(),
        message_id: None,
        conversation_id: None,
        body_size,
        identity,
        routing_key: None,
        partition: None,
        offset: None,
        redelivered: false,
    })
}

/// A reply that is a pub/sub message (`message`, channel, payload; `smessage` alike;
/// `pmessage`, pattern, channel, payload): a delivery, a CONSUMER span.
fn delivery(m: &RespMessage) -> Option<Message> {
    let (channel, payload) = match m.elements.as_slice() {
        [kind, channel, payload] if matches!(kind.head.as_slice(), b"message" | b"smessage") => (channel, payload),
        [kind, _pattern, channel, payload] if kind.head == b"pmessage" => (channel, payload),
        _ => return None,
    };
    let (fields, context) = message("deliver", channel, payload);
    Some(received(timing(m), context, fields))
}

/// The inherent methods do the work (they take precedence in `Redis::feed`).
impl Parser for Redis {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        Redis::feed(self, from == Sender::Client, seg, out);
    }
    fn close(&mut self, out: &mut Vec<Message>) {
        Redis::close(self, out);
    }
    fn health(&self) -> Health {
        Health::of(false, self.is_desynced())
    }
    fn resyncs(&self) -> u64 {
        self.commands.resyncs + self.replies.resyncs
    }
    /// The most the probes copy: any command may carry a message (a list push, a publish;
    /// a Celery task is a kilobyte and more, and its identity needs every byte), and a
    /// subscribed connection reads many messages at once. The probes copy what moved, up to
    /// this: small commands and replies cost no more.
    fn capture_bytes(&self) -> Option<u16> {
        Some(zerotrace_abi::MAX_PAYLOAD as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    /// Removes the settles (a consumer going back to its broker), returning how many.
    fn without_settles(out: &mut Vec<Message>) -> usize {
        let before = out.len();
        out.retain(|m| !matches!(m, Message::Settle(_)));
        before - out.len()
    }

    fn messaging(m: &Message) -> (SpanKind, &MessagingRequest) {
        match m {
            Message::Request(r) | Message::Push(r) => match &r.fields {
                RequestFields::Messaging(f) => (r.client_kind, f),
                other => panic!("not messaging: {other:?}"),
            },
            other => panic!("not a message: {other:?}"),
        }
    }

    /// PUBLISH is a send answered by its count of receivers; the subscriber's `message` (RESP2
    /// array or RESP3 push) and `pmessage` are deliveries with the same identity; the rest of
    /// a subscribed connection gives nothing.
    #[test]
    fn a_publish_and_its_deliveries_are_one_message() {
        let mut publisher = Redis::new();
        let mut out = Vec::new();
        publisher.feed(true, seg(b"*3\r\n$7\r\nPUBLISH\r\n$8\r\norders.1\r\n$9\r\n{\"id\": 1}\r\n", 1), &mut out);
        publisher.feed(false, seg(b":1\r\n", 2), &mut out);
        let (kind, sent) = messaging(&out[0]);
        assert_eq!((kind, sent.destination.as_deref(), sent.body_size), (SpanKind::Producer, Some("orders.1"), Some(9)));
        assert!(matches!(&out[1], Message::Response(r) if r.fields == ResponseFields::Messaging { error: None, offset: None, message_id: None }), "{out:?}");
        let mut subscriber = Redis::new();
        let mut got = Vec::new();
        subscriber.feed(true, seg(b"*2\r\n$10\r\nPSUBSCRIBE\r\n$8\r\norders.*\r\n", 1), &mut got);
        subscriber.feed(false, seg(b"*3\r\n$10\r\npsubscribe\r\n$8\r\norders.*\r\n:1\r\n", 2), &mut got);
        assert!(got.is_empty(), "{got:?}");
        subscriber.feed(false, seg(b"*4\r\n$8\r\npmessage\r\n$8\r\norders.*\r\n$8\r\norders.1\r\n$9\r\n{\"id\": 1}\r\n", 3), &mut got);
        subscriber.feed(false, seg(b">3\r\n$7\r\nmessage\r\n$8\r\norders.1\r\n$9\r\n{\"id\": 2}\r\n", 4), &mut got);
        let (kind, delivered) = messaging(&got[0]);
        assert_eq!((kind, delivered.destination.as_deref()), (SpanKind::Consumer, Some("orders.1")));
        assert!(sent.identity.is_some());
        assert_eq!(delivered.identity, sent.identity);
        assert_ne!(messaging(&got[1]).1.identity, sent.identity, "another payload");
        // Ordinary commands on the publisher's connection stay database calls.
        out.clear();
        publisher.feed(true, seg(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", 5), &mut out);
        publisher.feed(false, seg(b"$-1\r\n", 6), &mut out);
        assert!(matches!(&out[..], [Message::Request(r), Message::Response(_)] if matches!(r.fields, RequestFields::Db(_))), "{out:?}");
    }

    fn bulk(b: &[u8]) -> Vec<u8> {
        let mut v = format!("${}\r\n", b.len()).into_bytes();
        v.extend_from_slice(b);
        v.extend_from_slice(b"\r\n");
        v
    }

    fn array(items: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", items.len()).into_bytes();
        for item in items {
            v.extend(bulk(item));
        }
        v
    }

    /// A list as a queue: one message pushed is a PRODUCER span, the pop that took it a
    /// CONSUMER span with the same identity (BRPOP names the list, BLMOVE's command does);
    /// a kombu envelope gives the task id and the producer's context; a pop that took
    /// nothing gives nothing; several pushed at once have no identity; a failed pop or push
    /// is a failed database call.
    #[test]
    fn a_list_pushed_and_popped_is_a_queue() {
        let envelope: &[u8] = br#"{"body": "e30=", "headers": {"id": "4ceddcbb-3425-4b88-891f-d9a6e8b34e8f", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}, "properties": {"correlation_id": "4ceddcbb-3425-4b88-891f-d9a6e8b34e8f"}}"#;
        let mut producer = Redis::new();
        let mut out = Vec::new();
        producer.feed(true, seg(&array(&[b"LPUSH", b"celery", envelope]), 1), &mut out);
        producer.feed(false, seg(b":1\r\n", 2), &mut out);
        let Message::Request(sent) = &out[0] else { panic!("{out:?}") };
        assert_eq!(sent.context.traceparent.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
        let (kind, sent) = messaging(&out[0]);
        assert_eq!((kind, sent.destination.as_deref(), sent.operation.as_str()), (SpanKind::Producer, Some("celery"), "lpush"));
        assert_eq!(sent.message_id.as_deref(), Some("4ceddcbb-3425-4b88-891f-d9a6e8b34e8f"));
        assert!(matches!(&out[1], Message::Response(_)), "{out:?}");

        let mut consumer = Redis::new();
        let mut got = Vec::new();
        // Nothing came within the timeout, then the message; then a BLMOVE.
        consumer.feed(true, seg(&array(&[b"BRPOP", b"celery", b"celery\x06\x163", b"1"]), 3), &mut got);
        consumer.feed(false, seg(b"*-1\r\n", 4), &mut got);
        assert_eq!(without_settles(&mut got), 1, "a blocking pop goes back for the next message");
        assert!(got.is_empty(), "{got:?}");
        consumer.feed(true, seg(&array(&[b"BRPOP", b"celery", b"celery\x06\x163", b"1"]), 5), &mut got);
        let mut reply = b"*2\r\n".to_vec();
        reply.extend(bulk(b"celery"));
        reply.extend(bulk(envelope));
        consumer.feed(false, seg(&reply, 6), &mut got);
        without_settles(&mut got);
        let (kind, delivered) = messaging(&got[0]);
        assert_eq!((kind, delivered.destination.as_deref(), delivered.operation.as_str()), (SpanKind::Consumer, Some("celery"), "brpop"));
        assert_eq!((delivered.identity, delivered.message_id.as_deref()), (sent.identity, sent.message_id.as_deref()));
        assert!(sent.identity.is_some());
        consumer.feed(true, seg(&array(&[b"BLMOVE", b"celery", b"work", b"RIGHT", b"LEFT", b"0"]), 7), &mut got);
        consumer.feed(false, seg(&bulk(envelope), 8), &mut got);
        without_settles(&mut got);
        assert_eq!(messaging(&got[1]).1.identity, sent.identity, "the list named by the command");

        // Several at once: one span without identity. A pop on the wrong type: a failed call.
        out.clear();
        producer.feed(true, seg(&array(&[b"RPUSH", b"jobs", b"a", b"b"]), 9), &mut out);
        producer.feed(true, seg(&array(&[b"BLPOP", b"jobs", b"0"]), 10), &mut out);
        producer.feed(false, seg(b":2\r\n-WRONGTYPE Operation against a key\r\n", 11), &mut out);
        without_settles(&mut out);
        assert_eq!(messaging(&out[0]).1.identity, None);
        assert!(matches!(&out[2], Message::Request(r) if matches!(&r.fields, RequestFields::Db(d) if d.command == DbCommand::Named("BLPOP".into()))), "{out:?}");
        assert!(
            matches!(&out[3], Message::Response(r) if matches!(&r.fields, ResponseFields::Db(d) if matches!(&d.outcome, DbOutcome::Error { code } if code == "WRONGTYPE"))),
            "{out:?}"
        );

        // A push the server refused sent nothing: its answer is a failed command's.
        out.clear();
        producer.feed(true, seg(&array(&[b"LPUSH", b"user:k", b"v"]), 12), &mut out);
        producer.feed(false, seg(b"-WRONGTYPE Operation against a key\r\n", 13), &mut out);
        assert!(matches!(&out[1], Message::Response(r) if matches!(&r.fields, ResponseFields::Db(_))), "{out:?}");
    }

    /// A stream: XADD (with options) is a PRODUCER span whose answer gives the entry id; each
    /// entry an XREADGROUP (RESP2) or XREAD (RESP3) answer holds is a CONSUMER span with that
    /// id and the same identity; a read that timed out gives nothing; a failed read is a failed
    /// call.
    #[test]
    fn stream_entries_added_and_read_are_messages() {
        let mut producer = Redis::new();
        let mut out = Vec::new();
        producer.feed(true, seg(&array(&[b"XADD", b"orders", b"MAXLEN", b"~", b"1000", b"*", b"order", b"7", b"region", b"eu"]), 1), &mut out);
        producer.feed(false, seg(&bulk(b"1700000000000-0"), 2), &mut out);
        let (kind, sent) = messaging(&out[0]);
        assert_eq!((kind, sent.destination.as_deref(), sent.operation.as_str(), sent.body_size), (SpanKind::Producer, Some("orders"), "xadd", Some(14)));
        assert!(sent.identity.is_some());
        assert!(
            matches!(&out[1], Message::Response(r) if r.fields == ResponseFields::Messaging { error: None, offset: None, message_id: Some("1700000000000-0".into()) }),
            "{out:?}"
        );

        let entry = |id: &[u8], order: &[u8]| {
            let mut e = b"*2\r\n".to_vec();
            e.extend(bulk(id));
            e.extend(array(&[b"order", order, b"region", b"eu"]));
            e
        };
        // RESP2: [[stream, [entry, entry]]].
        let mut resp2 = b"*1\r\n*2\r\n".to_vec();
        resp2.extend(bulk(b"orders"));
        resp2.extend(b"*2\r\n");
        resp2.extend(entry(b"1700000000000-0", b"7"));
        resp2.extend(entry(b"1700000000001-0", b"8"));
        // RESP3: {stream: [entry]}.
        let mut resp3 = b"%1\r\n".to_vec();
        resp3.extend(bulk(b"orders"));
        resp3.extend(b"*1\r\n");
        resp3.extend(entry(b"1700000000000-0", b"7"));
        for (reply, count) in [(resp2, 2), (resp3, 1)] {
            let mut consumer = Redis::new();
            let mut got = Vec::new();
            consumer.feed(true, seg(&array(&[b"XREADGROUP", b"GROUP", b"g", b"c", b"BLOCK", b"100", b"STREAMS", b"orders", b">"]), 3), &mut got);
            consumer.feed(false, seg(b"*-1\r\n", 4), &mut got);
            assert_eq!(without_settles(&mut got), 1, "a stream read goes back for the next entries");
            assert!(got.is_empty(), "a read that timed out: {got:?}");
            consumer.feed(true, seg(&array(&[b"XREADGROUP", b"GROUP", b"g", b"c", b"STREAMS", b"orders", b">"]), 5), &mut got);
            consumer.feed(false, seg(&reply, 6), &mut got);
            without_settles(&mut got);
            assert_eq!(got.len(), count, "{got:?}");
            let (kind, first) = messaging(&got[0]);
            assert_eq!(
                (kind, first.destination.as_deref(), first.operation.as_str(), first.message_id.as_deref()),
                (SpanKind::Consumer, Some("orders"), "xreadgroup", Some("1700000000000-0"))
            );
            assert_eq!(first.identity, sent.identity, "the same stream, fields and values");
            if count == 2 {
                assert_ne!(messaging(&got[1]).1.identity, sent.identity);
                assert_eq!(messaging(&got[1]).1.message_id.as_deref(), Some("1700000000001-0"));
            }
            consumer.feed(true, seg(&array(&[b"XREAD", b"STREAMS", b"nostream", b"0"]), 7), &mut got);
            consumer.feed(false, seg(b"-WRONGTYPE Operation against a key\r\n", 8), &mut got);
            without_settles(&mut got);
            assert!(matches!(&got[count], Message::Request(r) if matches!(&r.fields, RequestFields::Db(d) if d.command == DbCommand::Named("XREAD".into()))), "{got:?}");
        }
    }

    /// A subscribed connection, after a read cut by the capture, resumes at the next read that starts with a message.
    #[test]
    fn a_subscriber_resumes_after_a_capture_gap() {
        let mut s = Redis::new();
        let mut got = Vec::new();
        s.feed(true, seg(b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nc\r\n", 1), &mut got);
        // Two messages moved, the capture ends inside the second's header line.
        let two = b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\na\r\n*3\r\n$7\r\nmess";
        s.feed(false, Segment { data: two, total: two.len() as u64 + 30, ts_enter_ns: 2, ts_exit_ns: 3 }, &mut got);
        s.feed(false, seg(b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nb\r\n", 4), &mut got);
        assert_eq!(got.len(), 2, "the first and the third: {got:?}");
        assert_eq!(Parser::resyncs(&s), 1);
    }
}
