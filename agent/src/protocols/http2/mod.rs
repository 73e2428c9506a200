//! HTTP/2 (RFC 9113) and gRPC on it: one request and one response per stream, paired by
//! stream id. A request is emitted when its header block is complete (a streaming RPC's span
//! then lasts until its stream ends); the response when the server ends the stream (END_STREAM
//! on its last DATA or trailers), resets it, or refuses it by GOAWAY.
//!
//! Recognised by the client connection preface, so h2c with prior knowledge and h2 over TLS
//! (the TLS probes' plaintext) alike; HTTP/1 hands over a connection it upgraded to h2c. Header values that name HPACK entries the agent never
//! saw are left out, never guessed (see `hpack.rs`).

mod frame;
mod hpack;

/// A frame's bytes (RFC 9113 §4.1), for tests that build HTTP/2 connections by hand.
#[cfg(test)]
pub(crate) use frame::encode as frame_bytes;

/// A client's connection preface and empty SETTINGS, for tests that build connections by hand.
#[cfg(test)]
pub(crate) fn client_preface() -> Vec<u8> {
    let mut b = frame::PREFACE.to_vec();
    b.extend(frame_bytes(frame::kind::SETTINGS, 0, 0, &[]));
    b
}

use rustc_hash::FxHashMap as HashMap;
use smol_str::SmolStr;

use self::frame::{Frame, Framer, PREFACE, flag, kind};
use self::hpack::{Decoder, Field, Text};
use super::message::{Correlation, HttpRequest, HttpResponse, Message, Request, RequestFields, Response, ResponseFields, RpcRequest, Timing, TraceContext, Writer};
use super::parser::{Completed, Health, LibraryField, Parser, Recovery, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

pub const PROTOCOL: Protocol = Protocol {
    name: "http2",
    detectors: &[
        Detector { layer: Layer::Magic, sender: Sender::Client, matches: |d| d.starts_with(PREFACE), parser: || Box::new(Http2::new()) },
        // A connection opened before the agent attached: no preface, but a HEADERS frame
        // whose first field is a request's `:method` or an answer's `:status` by static index
        // (every HTTP/2 encoder puts pseudo-headers first) tells both the protocol and the side.
        Detector { layer: Layer::Structure, sender: Sender::Client, matches: |d| first_field(d) == Some(FirstField::Method), parser: || Box::new(Http2::joining()) },
        Detector { layer: Layer::Structure, sender: Sender::Server, matches: |d| first_field(d) == Some(FirstField::Status), parser: || Box::new(Http2::joining()) },
    ],
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstField {
    Method,
    Status,
}

/// Whether the header block of a HEADERS frame at the start of `data` is a request's (it has
/// a `:method`) or an answer's (a `:status`), decoded with a table whose entries are unknown:
/// pseudo-headers come first, but an encoder may name the first ones by table entries.
fn first_field(data: &[u8]) -> Option<FirstField> {
    if !frame::plausible_header(data) || data[3] != kind::HEADERS {
        return None;
    }
    let stream = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) & 0x7fff_ffff;
    if stream.is_multiple_of(2) {
        return None;
    }
    let (flags, len) = (data[4], u32::from_be_bytes([0, data[0], data[1], data[2]]) as usize);
    let mut at = 9 + usize::from(flags & flag::PADDED != 0);
    if flags & flag::PRIORITY != 0 {
        at += 5;
    }
    let block = data.get(at..data.len().min(9 + len))?;
    let fields = Decoder::joined().decode_only(block, wanted).fields;
    fields.iter().take(8).find_map(|f| match f.name.known()? {
        b":method" => Some(FirstField::Method),
        b":status" => Some(FirstField::Status),
        _ => None,
    })
}

/// Streams followed at once per connection; past this new streams get no span (counted as
/// resyncs would not be: they are simply not followed).
const MAX_STREAMS: usize = 1024;

/// One direction: its framer, its HPACK decoder, and a header block being assembled.
struct Side {
    framer: Framer,
    hpack: Decoder,
    block: Option<Block>,
    frames: Vec<Frame>,
}

/// A header block across HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: Vec<u8>,
    /// Part of the block was not captured: decode what was, then the table is not fully known.
    cut: bool,
    first: (u64, u64),
}

#[derive(Default)]
struct Stream {
    /// The request was emitted (its header block was seen from its start).
    requested: bool,
    grpc: bool,
    status: Option<u16>,
    grpc_status: Option<u32>,
    /// A response header block had fields naming unknown table entries: a status not seen
    /// may be among them, so its absence proves nothing.
    unknown_fields: bool,
    /// Stream 1 of an h2c upgrade: its request was HTTP/1's, which waits for the answer in
    /// order, not by stream id.
    upgraded: bool,
}

pub struct Http2 {
    client: Side,
    server: Side,
    streams: HashMap<u32, Stream>,
    /// Frames the server sent that parsed; none before its framing was lost means the server
    /// never spoke HTTP/2.
    server_frames: u64,
    /// A request on this connection came from grpc-core: its transport writes for every
    /// thread, so the connection's later requests are written by any thread too.
    shared_transport: bool,
    /// Requests whose blocks named table entries never seen, newest last, until the library's
    /// fields complete them (`complete_request`).
    incomplete: std::collections::VecDeque<Incomplete>,
    /// A request went into `incomplete` since `library_fields_wanted` was last asked.
    library_wanted: bool,
    recovery: Recovery,
}

/// A request block that named unknown table entries, as decoded.
struct Incomplete {
    stream: u32,
    fields: Vec<Field>,
    /// Fields in the block (the library lists every one; `fields` has the wanted ones).
    count: usize,
    cut: bool,
}

/// Incomplete requests kept per connection: the library's fields come within milliseconds.
const MAX_INCOMPLETE: usize = 64;

impl Default for Http2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Http2 {
    /// A parser joining a connection in the middle (opened before the agent attached): no
    /// preface to wait for, and header tables whose older entries are unknown.
    pub fn joining() -> Self {
        let mut h2 = Self::new();
        h2.client.framer = Framer::joined();
        h2.server.framer = Framer::joined();
        h2.client.hpack = Decoder::joined();
        h2.server.hpack = Decoder::joined();
        h2
    }

    /// A connection HTTP/1 upgraded to h2c: the client's preface comes next, and stream 1 is
    /// the upgrade request, already sent (RFC 7540 §3.2).
    pub fn upgraded() -> Self {
        let mut h2 = Self::new();
        h2.streams.insert(1, Stream { requested: true, upgraded: true, ..Default::default() });
        h2
    }

    pub fn new() -> Self {
        Self {
            client: Side { framer: Framer::new(true), hpack: Decoder::new(), block: None, frames: Vec::new() },
            server: Side { framer: Framer::new(false), hpack: Decoder::new(), block: None, frames: Vec::new() },
            streams: HashMap::default(),
            server_frames: 0,
            shared_transport: false,
            incomplete: Default::default(),
            library_wanted: false,
            recovery: Recovery::default(),
        }
    }
}

/// The header fields spans are built from: the only ones decoded (see `Decoder::decode_only`).
fn wanted(name: &[u8]) -> bool {
    matches!(name, b":method" | b":path" | b":authority" | b":status" | b"host" | b"user-agent" | b"content-type" | b"traceparent" | b"tracestate" | b"grpc-status")
}

/// The value of the first field named `name`, when known and UTF-8 (only `wanted` names are
/// decoded).
fn value<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields.iter().find(|f| f.name.known() == Some(name.as_bytes())).and_then(|f| std::str::from_utf8(f.value.known()?).ok())
}

/// A pseudo-header whose field could not be decoded (it named an unknown entry) is unknown;
/// one that is absent is absent. Either way, None.
fn request_fields(fields: &[Field], cut: bool) -> (RequestFields, TraceContext, bool) {
    let context = TraceContext { traceparent: value(fields, "traceparent").map(str::to_string), tracestate: value(fields, "tracestate").map(str::to_string) };
    let path = value(fields, ":path");
    let grpc = value(fields, "content-type").is_some_and(|c| c.starts_with("application/grpc"));
    if grpc {
        // `/package.Service/Method`.
        let (service, method) = path.and_then(|p| p.strip_prefix('/')?.split_once('/')).map_or((None, None), |(s, m)| (Some(s.to_string()), Some(m.to_string())));
        return (RequestFields::Rpc(RpcRequest { system: "grpc", service, method }), context, true);
    }
    let unknown_fields = fields.iter().any(|f| f.name.known().is_none() || f.value.known().is_none());
    let http = HttpRequest {
        method: value(fields, ":method").map(SmolStr::new),
        target: path.map(SmolStr::new),
        version: "2",
        host: value(fields, ":authority").or_else(|| value(fields, "host")).map(SmolStr::new),
        user_agent: value(fields, "user-agent").map(SmolStr::new),
        complete: !cut && !unknown_fields,
    };
    (RequestFields::Http(http), context, false)
}

/// RST_STREAM and GOAWAY error codes (RFC 9113 §7), for `error.type`.
fn error_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("h2_error_{code}"),
    };
    name.to_string()
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The header block fragment of a HEADERS frame: without its padding and priority fields.
fn fragment(f: &Frame) -> Option<&[u8]> {
    let mut p = &f.payload[..];
    let mut pad = 0usize;
    if f.flags & flag::PADDED != 0 {
        let (&n, rest) = p.split_first()?;
        pad = n as usize;
        p = rest;
    }
    if f.flags & flag::PRIORITY != 0 {
        p = p.get(5..)?;
    }
    // A cut payload lost its end: the padding is in what was not kept.
    if !f.cut {
        p = p.get(..p.len().checked_sub(pad)?)?;
    }
    Some(p)
}

impl Http2 {
    fn on_frames(&mut self, from: Sender, out: &mut Vec<Message>) {
        let mut frames = std::mem::take(&mut self.side(from).frames);
        for f in frames.drain(..) {
            self.on_frame(from, f, out);
        }
        self.side(from).frames = frames;
    }

    fn side(&mut self, from: Sender) -> &mut Side {
        match from {
            Sender::Client => &mut self.client,
            Sender::Server => &mut self.server,
        }
    }

    fn on_frame(&mut self, from: Sender, f: Frame, out: &mut Vec<Message>) {
        if from == Sender::Server {
            self.server_frames += 1;
        }
        match f.kind {
            kind::HEADERS => {
                let bytes = fragment(&f).map(<[u8]>::to_vec);
                let block =
                    Block { stream: f.stream, end_stream: f.flags & flag::END_STREAM != 0, cut: f.cut || bytes.is_none(), bytes: bytes.unwrap_or_default(), first: f.first };
                self.side(from).block = Some(block);
                if f.flags & flag::END_HEADERS != 0 {
                    self.end_block(from, f.last, out);
                }
            }
            kind::CONTINUATION => {
                let side = self.side(from);
                match side.block.as_mut() {
                    Some(b) if b.stream == f.stream => {
                        b.cut |= f.cut;
                        b.bytes.extend_from_slice(&f.payload);
                    }
                    // A CONTINUATION without its HEADERS (missed): the block is lost.
                    _ => side.hpack.lose(),
                }
                if f.flags & flag::END_HEADERS != 0 {
                    self.end_block(from, f.last, out);
                }
            }
            kind::PUSH_PROMISE => {
                // Its header block must be decoded for the table's sake; a promise is no span.
                let side = self.side(from);
                match f.payload.get(4..).filter(|_| !f.cut && f.flags & flag::PADDED == 0 && f.flags & flag::END_HEADERS != 0) {
                    Some(block) => {
                        side.hpack.decode_only(block, wanted);
                    }
                    None => side.hpack.lose(),
                }
            }
            kind::DATA if from == Sender::Server && f.flags & flag::END_STREAM != 0 => self.respond(f.stream, f.last, None, out),
            kind::RST_STREAM => {
                let code = be32(&f.payload).unwrap_or(0);
                self.respond(f.stream, f.last, Some(error_name(code)), out);
            }
            kind::GOAWAY if from == Sender::Server => {
                // Streams above the last one the server processed never ran.
                let last = be32(&f.payload).map_or(u32::MAX, |l| l & 0x7fff_ffff);
                let code = be32(f.payload.get(4..).unwrap_or_default()).unwrap_or(0);
                let refused: Vec<u32> = self.streams.iter().filter(|(id, s)| **id > last && s.requested).map(|(id, _)| *id).collect();
                for id in refused {
                    self.respond(id, f.last, Some(format!("GOAWAY {}", error_name(code))), out);
                }
            }
            _ => {}
        }
    }

    /// A header block is complete: decode it (always, to keep the table in step), then act on
    /// it as a request, a response head or trailers.
    fn end_block(&mut self, from: Sender, last: (u64, u64), out: &mut Vec<Message>) {
        let side = self.side(from);
        let Some(block) = side.block.take() else { return };
        let hpack::Decoded { fields, count, error } = side.hpack.decode_only(&block.bytes, wanted);
        if block.cut && error.is_none() {
            side.hpack.lose();
        }
        let cut = block.cut || error.is_some();
        let timing = Timing { first_enter_ns: block.first.0, first_exit_ns: block.first.1, last_enter_ns: last.0, last_exit_ns: last.1 };
        match from {
            Sender::Client => {
                if self.streams.contains_key(&block.stream) || self.streams.len() >= MAX_STREAMS || block.stream.is_multiple_of(2) {
                    // Trailers of a request already seen, or nothing we follow.
                    return;
                }
                if error.is_none() && fields.iter().any(|f| f.unresolved.is_some()) {
                    self.recovery.incomplete += 1;
                    if self.incomplete.len() == MAX_INCOMPLETE {
                        self.incomplete.pop_front();
                    }
                    self.incomplete.push_back(Incomplete { stream: block.stream, fields: fields.clone(), count, cut });
                    self.library_wanted = true;
                }
                let writer = self.writer(&fields, cut);
                let (fields, context, grpc) = request_fields(&fields, cut);
                self.streams.insert(block.stream, Stream { requested: true, grpc, ..Default::default() });
                out.push(Message::Request(Request { correlation: Correlation::Key(u64::from(block.stream)), timing, context, client_kind: SpanKind::Client, fields, writer }));
            }
            Sender::Server => {
                let Some(stream) = self.streams.get_mut(&block.stream) else { return };
                stream.unknown_fields |= cut || fields.iter().any(|f| f.name.known().is_none() || f.value.known().is_none());
                if let Some(status) = value(&fields, ":status").and_then(|s| s.parse::<u16>().ok()) {
                    if (100..200).contains(&status) {
                        // Informational: the real answer follows.
                        return;
                    }
                    stream.status = Some(status);
                }
                if let Some(code) = value(&fields, "grpc-status").and_then(|s| s.parse().ok()) {
                    stream.grpc_status = Some(code);
                }
                if block.end_stream {
                    self.respond(block.stream, last, None, out);
                }
            }
        }
    }

    /// Who wrote a request with these header fields. grpc-core (under Python, Ruby, C++…)
    /// names itself in its user agent, `grpc-c/<version>`, and writes every thread's calls on
    /// whichever thread holds its transport; a block whose user agent cannot be read (fields
    /// naming table entries never seen) may be grpc-core's.
    fn writer(&mut self, fields: &[Field], cut: bool) -> Writer {
        let user_agent = value(fields, "user-agent");
        self.shared_transport |= user_agent.is_some_and(|ua| ua.contains("grpc-c/"));
        let unknown = cut || fields.iter().any(|f| f.name.known().is_none() || f.value.known().is_none());
        match user_agent {
            _ if self.shared_transport => Writer::SharedTransport,
            None if unknown => Writer::Unknown,
            _ => Writer::Caller,
        }
    }

    /// The server ended stream `id` (or it was reset, with `error`): its response.
    fn respond(&mut self, id: u32, last: (u64, u64), error: Option<String>, out: &mut Vec<Message>) {
        let Some(stream) = self.streams.remove(&id) else { return };
        let fields = match (stream.grpc, error) {
            (_, Some(error)) => ResponseFields::Failed { error },
            (true, None) => match stream.grpc_status {
                Some(code) => ResponseFields::Rpc { status_code: Some(code), error: None },
                // Its field named a table entry we never saw: the status is unknown, not bad.
                None if stream.unknown_fields => ResponseFields::Rpc { status_code: None, error: None },
                None => ResponseFields::Failed { error: "missing grpc-status".to_string() },
            },
            (false, None) => match stream.status {
                Some(status) => ResponseFields::Http(HttpResponse { status: Some(status) }),
                None if stream.unknown_fields => ResponseFields::Http(HttpResponse { status: None }),
                None => ResponseFields::Failed { error: "missing :status".to_string() },
            },
        };
        let timing = Timing { first_enter_ns: last.0, first_exit_ns: last.1, last_enter_ns: last.0, last_exit_ns: last.1 };
        let correlation = if stream.upgraded { Correlation::InOrder } else { Correlation::Key(u64::from(id)) };
        out.push(Message::Response(Response { correlation, timing, closes_connection: false, fields }));
    }
}

impl Http2 {
    /// `Parser::complete_request`: the library's list must have as many fields as the block,
    /// and the same name and value wherever the block's are known; then its fields fill the
    /// unknown ones, and the entries they named are learned.
    fn complete(&mut self, stream: u32, library: &[LibraryField]) -> Option<Completed> {
        let at = self.incomplete.iter().position(|i| i.stream == stream)?;
        let incomplete = self.incomplete.remove(at)?;
        let agrees = |f: &Field| {
            library.get(usize::from(f.position)).is_some_and(|l| {
                let name_agrees = l.name.is_empty() || f.name.known().is_none_or(|n| n == l.name.as_slice());
                name_agrees && f.value.known().zip(l.value.as_deref()).is_none_or(|(v, lv)| v == lv)
            })
        };
        // A request's list: a response's or trailers' (a library decoding both ways) has no
        // `:method`, and a probe on the wrong function would not either.
        let a_request = library.iter().any(|l| l.name == b":method");
        if !a_request || library.len() != incomplete.count || !incomplete.fields.iter().all(agrees) {
            self.recovery.refused += 1;
            return None;
        }
        let mut fields = Vec::with_capacity(incomplete.fields.len());
        for f in incomplete.fields {
            let l = &library[usize::from(f.position)];
            if let Some(unresolved) = f.unresolved.filter(|_| !l.name.is_empty()) {
                self.client.hpack.learn(unresolved, &l.name, l.value.as_deref());
                self.recovery.learned += 1;
            }
            let name = match f.name.known() {
                None if !l.name.is_empty() => Text::Owned(l.name.clone()),
                _ => f.name,
            };
            let value = match (f.value.known(), &l.value) {
                (Some(_), _) => f.value,
                (None, Some(v)) => Text::Owned(v.clone()),
                (None, None) => Text::Unknown,
            };
            if name.known().is_some_and(wanted) {
                fields.push(Field { name, value, ..f });
            }
        }
        let writer = self.writer(&fields, incomplete.cut);
        let (fields, context, grpc) = request_fields(&fields, incomplete.cut);
        if let Some(s) = self.streams.get_mut(&stream) {
            s.grpc = grpc;
        }
        self.recovery.completed += 1;
        Some(Completed { fields, context, writer })
    }
}

impl Parser for Http2 {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }

    fn complete_request(&mut self, key: u64, library: &[LibraryField]) -> Option<Completed> {
        self.complete(u32::try_from(key).ok()?, library)
    }

    fn library_fields_wanted(&mut self) -> bool {
        std::mem::take(&mut self.library_wanted)
    }

    fn recovery(&self) -> Recovery {
        self.recovery
    }

    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        let side = self.side(from);
        let mut frames = std::mem::take(&mut side.frames);
        if side.framer.feed(seg, &mut frames) {
            // Frames were missed: so were their header blocks, maybe.
            side.hpack.lose();
            side.block = None;
        }
        side.frames = frames;
        self.on_frames(from, out);
    }

    fn close(&mut self, _: &mut Vec<Message>) {}

    /// The most the probes copy: one write carries the frames of many streams, and a header
    /// block cut by the capture costs the HPACK table (values then unknown until re-sent).
    fn capture_bytes(&self) -> Option<u16> {
        Some(zerotrace_abi::MAX_PAYLOAD as u16)
    }

    fn health(&self) -> Health {
        Health::of(self.server_frames == 0 && self.server.framer.is_lost(), self.client.framer.is_lost())
    }

    fn resyncs(&self) -> u64 {
        self.client.framer.resyncs + self.server.framer.resyncs + self.client.hpack.losses + self.server.hpack.losses
    }
}

/// One fuzz iteration, shared by the cargo-fuzz target `http2` and the randomized unit test:
/// the first bytes choose segment sizes, directions and gaps; the rest is traffic after a
/// preface (frames, HPACK blocks). Must never panic.
pub fn fuzz_one(data: &[u8]) {
    let (control, traffic) = data.split_at(data.len().min(8));
    let mut h2 = Http2::new();
    let mut out = Vec::new();
    h2.feed(Sender::Client, Segment { data: PREFACE, total: PREFACE.len() as u64, ts_enter_ns: 0, ts_exit_ns: 0 }, &mut out);
    let mut rest = traffic;
    let mut i = 0usize;
    while !rest.is_empty() {
        let c = control.get(i % control.len().max(1)).copied().unwrap_or(7) as usize;
        let n = (c % 61 + 1).min(rest.len());
        let gap = if c.is_multiple_of(7) { (c * 13) as u64 } else { 0 };
        let from = if c & 0x40 == 0 { Sender::Client } else { Sender::Server };
        h2.feed(from, Segment { data: &rest[..n], total: n as u64 + gap, ts_enter_ns: i as u64, ts_exit_ns: i as u64 + 1 }, &mut out);
        rest = &rest[n..];
        i += 1;
    }
    let _ = h2.health();
}

#[cfg(test)]
mod tests;
