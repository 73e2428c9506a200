//! Per-connection state: who is client and server, the addresses, which protocol the bytes
//! speak, and that protocol's parser. Turns data segments into complete requests and
//! responses, in order.
//!
//! The protocol is recognised from the first bytes, not the port, so connections opened
//! before we attached are understood too. A connection is keyed by (tgid, fd) and replaced on
//! every accept/connect, so fd reuse never mixes two connections (the replacement is the
//! "generation").

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;

use crate::protocols::message::{Correlation, Message, Request};
use crate::protocols::parser::{Health, Parser, Segment, Sender};
use crate::protocols::registry;
use crate::traceparent::SpanId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
    Unknown,
}

/// Segments seen without recognising a protocol before a connection is given up as foreign.
const MAX_UNRECOGNISED: u32 = 6;
/// First bytes per direction kept for recognising the protocol.
const RECOGNISE_BYTES: usize = 256;
/// Requests waiting for their answer per connection; past this a request's span ends at once
/// (a client pipelining without bound cannot grow us).
pub const MAX_PENDING: usize = 256;

/// What the span stage needs to know about a connection.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// Unique for the agent's lifetime: a new id per accept/connect.
    pub id: u64,
    pub tgid: u32,
    pub role: Role,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// The peer's IP as text, formatted once per connection rather than once per span.
    pub remote_ip: Option<smol_str::SmolStr>,
    /// Plaintext comes from the TLS probes (https).
    pub tls: bool,
    /// The probes' generation of this fd's connection, 0 when unknown (open before attach).
    pub generation: u8,
    /// Its number among its process's connections, from 0: `--overhead-budget`'s sampled
    /// share keeps one in N of any N in a row.
    pub ordinal: u64,
}

pub struct Conn {
    pub info: ConnInfo,
    /// The protocol's parser, once recognised.
    parser: Option<Box<dyn Parser>>,
    /// While no protocol is recognised: the first bytes of each direction (ingress, egress),
    /// since some clients read a 4-byte packet header and its body in two calls.
    first_bytes: [Vec<u8>; 2],
    unrecognised: u32,
    /// No longer parsed: no protocol we know.
    pub foreign: bool,
    /// The server answered in another protocol than the requests looked like (HTTP sent to
    /// PostgreSQL, `get / HTTP/1.1` to nginx): those were no requests of ours.
    pub answer_foreign: bool,
    /// The server side has sent bytes on this connection.
    pub server_wrote: bool,
    /// Requests waiting for their response.
    pub pending: Pending,
    /// Requests started on this connection so far.
    pub requests: u64,
    /// The SERVER span whose event-loop callback opened this connection (connect), if the
    /// evidence named one: a fresh connection's first request is written in its connect
    /// callback, where nothing else ties it to a request.
    pub opened_by: Option<SpanId>,
    /// Answers read when no request was waiting. Most are the answer to a request whose record
    /// comes next: the reading thread's record can reach us before the writing thread's
    /// (another CPU; the writer preempted between its write and the syscall's return). They
    /// wait for the next request; one that ended before that request began had no request we
    /// saw (past the capture cap, before attach) and is counted then.
    pub early: VecDeque<EarlyAnswer>,
    /// The capture the probes were last asked for on this socket (`Parser::capture_bytes`).
    pub capture_asked: Option<u16>,
    /// Outside the share its process captures (`--overhead-budget`): the probes skip it, and
    /// what they sent before they knew is dropped unparsed.
    pub sampled_out: bool,
}

/// An answer waiting for its request's record, with the thread and unit of work that read it.
#[derive(Debug)]
pub struct EarlyAnswer {
    pub response: crate::protocols::message::Response,
    pub tid: u32,
    pub cause: crate::events::Cause,
}

/// Early answers kept per connection; past this they are counted at once.
pub const MAX_EARLY: usize = 8;

/// A request whose span has been started and waits for its response.
#[derive(Debug)]
pub struct PendingRequest {
    pub request: Request,
    pub span: SpanId,
    pub tid: u32,
}

/// Requests waiting for their answers: in order (oldest first), or by key.
#[derive(Debug, Default)]
pub struct Pending {
    in_order: VecDeque<PendingRequest>,
    keyed: HashMap<u64, PendingRequest>,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.in_order.len() + self.keyed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `p`; refuses it (and gives back its span, to end) when the connection already
    /// has `MAX_PENDING` waiting, or when its key is already waiting (a reused key: the first
    /// keeps it).
    pub fn push(&mut self, p: PendingRequest) -> Result<(), SpanId> {
        if self.len() >= MAX_PENDING {
            return Err(p.span);
        }
        match p.request.correlation {
            Correlation::InOrder => self.in_order.push_back(p),
            Correlation::Key(k) => {
                if self.keyed.contains_key(&k) {
                    return Err(p.span);
                }
                self.keyed.insert(k, p);
            }
        }
        Ok(())
    }

    /// The request an answer with this correlation answers.
    pub fn answer(&mut self, correlation: Correlation) -> Option<PendingRequest> {
        match correlation {
            Correlation::InOrder => self.in_order.pop_front(),
            Correlation::Key(k) => self.keyed.remove(&k),
        }
    }

    /// The keyed request waiting with key `key`, to complete its fields.
    pub fn keyed_mut(&mut self, key: u64) -> Option<&mut PendingRequest> {
        self.keyed.get_mut(&key)
    }

    /// The spans of the requests waiting.
    pub fn spans(&self) -> Vec<SpanId> {
        self.in_order.iter().chain(self.keyed.values()).map(|p| p.span).collect()
    }

    /// Everything still waiting, oldest first for in-order requests.
    pub fn drain(&mut self) -> Vec<PendingRequest> {
        let mut all: Vec<PendingRequest> = self.in_order.drain(..).collect();
        let mut keyed: Vec<PendingRequest> = self.keyed.drain().map(|(_, p)| p).collect();
        keyed.sort_by_key(|p| p.request.timing.first_exit_ns);
        all.extend(keyed);
        all
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Conn {
    pub fn new(info: ConnInfo) -> Self {
        Self {
            info,
            parser: None,
            first_bytes: [Vec::new(), Vec::new()],
            unrecognised: 0,
            foreign: false,
            answer_foreign: false,
            server_wrote: false,
            pending: Pending::default(),
            requests: 0,
            opened_by: None,
            early: VecDeque::new(),
            capture_asked: None,
            sampled_out: false,
        }
    }

    /// Out of its process's sampled share: its parser and early answers are dropped (the
    /// caller ends its pending requests); in again, it starts over at the next bytes, as a
    /// connection found open at attach does.
    pub fn set_sampled_out(&mut self, out: bool) {
        self.sampled_out = out;
        self.parser = None;
        self.first_bytes = [Vec::new(), Vec::new()];
        self.unrecognised = 0;
        self.early.clear();
        self.capture_asked = None;
    }

    /// The capture this connection's protocol wants, if not the global one.
    pub fn capture_bytes(&self) -> Option<u16> {
        self.parser.as_ref().and_then(|p| p.capture_bytes())
    }

    /// The protocol recognised on this connection, if any.
    pub fn protocol(&self) -> Option<&'static str> {
        self.parser.as_ref().map(|p| p.protocol())
    }

    /// The parser (once recognised), for what only some protocols do
    /// (`Parser::complete_request`).
    pub fn parser_mut(&mut self) -> Option<&mut (dyn Parser + 'static)> {
        self.parser.as_deref_mut()
    }

    pub fn parser(&self) -> Option<&dyn Parser> {
        self.parser.as_deref()
    }

    /// How often the parser lost the framing and found it again.
    pub fn resyncs(&self) -> u64 {
        self.parser.as_ref().map_or(0, |p| p.resyncs())
    }

    /// Picks the protocol (and, for connections opened before we attached, the role) from
    /// the first bytes. False when nothing we know was recognised.
    fn decide(&mut self, dir: Direction, data: &[u8]) -> bool {
        let Some((sender, parser)) = registry::recognise(data) else { return false };
        let role = match (dir, sender) {
            (Direction::Ingress, Sender::Client) | (Direction::Egress, Sender::Server) => Role::Server,
            _ => Role::Client,
        };
        if self.info.role != Role::Unknown && self.info.role != role {
            return false;
        }
        self.info.role = role;
        self.parser = Some(parser);
        true
    }

    /// Parses what one syscall moved; appends whole messages to `out`.
    pub fn feed(&mut self, dir: Direction, seg: Segment<'_>, out: &mut Vec<Message>) {
        self.server_wrote |= matches!((self.info.role, dir), (Role::Server, Direction::Egress) | (Role::Client, Direction::Ingress)) && seg.total > 0;
        if self.foreign {
            return;
        }
        let mut seg = seg;
        let first_bytes;
        if self.parser.is_none() {
            // Judge this direction's first bytes so far, not only this segment's (a segment
            // with a gap starts over: what follows it is unknown).
            let mut buf = std::mem::take(&mut self.first_bytes[dir as usize]);
            let whole = seg.total == seg.data.len() as u64;
            if !whole || buf.len() + seg.data.len() > RECOGNISE_BYTES {
                buf.clear();
            }
            if whole {
                buf.extend_from_slice(seg.data);
            }
            let judged = if whole { &buf[..] } else { seg.data };
            if self.decide(dir, judged) {
                first_bytes = buf;
                if whole {
                    seg = Segment { data: &first_bytes, total: first_bytes.len() as u64, ..seg };
                }
            } else if buf.len() > seg.data.len() && self.decide(dir, seg.data) {
                // This read alone starts something (a connection joined mid-stream, whose
                // earlier reads were other frames): it is parsed from here.
            } else {
                self.first_bytes[dir as usize] = buf;
                self.note_unrecognised();
                return;
            }
            self.first_bytes = [Vec::new(), Vec::new()];
        }
        let from_client = matches!((self.info.role, dir), (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress));
        let Some(parser) = self.parser.as_mut() else { return };
        let before = out.len();
        parser.feed(if from_client { Sender::Client } else { Sender::Server }, seg, out);
        if let Some(switch) = parser.switched() {
            let mut next = switch.parser;
            if !switch.server_bytes.is_empty() {
                // The rest of the segment, and its gap if any, are the new protocol's.
                let gap = seg.total.saturating_sub(seg.data.len() as u64);
                let rest = Segment { data: &switch.server_bytes, total: switch.server_bytes.len() as u64 + gap, ..seg };
                next.feed(Sender::Server, rest, out);
            }
            *parser = next;
        }
        let health = parser.health();
        if health == Health::Foreign {
            self.answer_foreign = true;
            self.foreign = true;
        }
        if out.len() > before {
            self.unrecognised = 0;
        } else if health == Health::Resyncing && from_client {
            self.note_unrecognised();
        }
    }

    fn note_unrecognised(&mut self) {
        self.unrecognised += 1;
        if self.unrecognised >= MAX_UNRECOGNISED {
            self.foreign = true;
        }
    }

    /// The first TLS plaintext on this connection: whatever was parsed from its ciphertext
    /// (the handshake) is discarded and parsing starts over on the plaintext.
    pub fn start_tls(&mut self) {
        self.info.tls = true;
        self.parser = self.parser.as_ref().and_then(|p| p.after_tls_start());
        self.first_bytes = [Vec::new(), Vec::new()];
        self.unrecognised = 0;
        self.foreign = false;
        self.pending = Pending::default();
        self.early.clear();
    }

    /// The connection closed: a response delimited by close is complete now, and answers
    /// whose end was cut off end at the last bytes seen.
    pub fn close(&mut self, out: &mut Vec<Message>) {
        if let Some(p) = self.parser.as_mut() {
            p.close(out);
        }
    }
}

/// All connections of all traced processes.
#[derive(Default)]
pub struct ConnTable {
    conns: HashMap<(u32, u32), Conn>,
    next_id: u64,
    /// Connections seen so far, per process (`ConnInfo::ordinal`).
    opened: HashMap<u32, u64>,
}

impl ConnTable {
    pub fn open(&mut self, tgid: u32, fd: u32, role: Role, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Option<Conn> {
        self.next_id += 1;
        let remote_ip = remote.map(|r| smol_str::format_smolstr!("{}", r.ip().to_canonical()));
        let ordinal = self.next_ordinal(tgid);
        let info = ConnInfo { id: self.next_id, tgid, role, local, remote, remote_ip, tls: false, generation: 0, ordinal };
        self.conns.insert((tgid, fd), Conn::new(info))
    }

    /// A forked child's copy of a connection: same ends and role, parsed on its own.
    pub fn inherit(&mut self, parent_tgid: u32, child: u32, fd: u32) -> Option<Conn> {
        let parent = self.conns.get(&(parent_tgid, fd))?.info.clone();
        self.next_id += 1;
        let info = ConnInfo { id: self.next_id, tgid: child, ordinal: self.next_ordinal(child), ..parent };
        self.conns.insert((child, fd), Conn::new(info))
    }

    fn next_ordinal(&mut self, tgid: u32) -> u64 {
        let count = self.opened.entry(tgid).or_default();
        *count += 1;
        *count - 1
    }

    /// Removes the connections of processes `alive` says are gone (their fds closed at exit,
    /// without close calls).
    pub fn remove_exited(&mut self, mut alive: impl FnMut(u32) -> bool) -> Vec<Conn> {
        let mut tgids: Vec<u32> = self.conns.keys().map(|(t, _)| *t).collect();
        tgids.sort_unstable();
        tgids.dedup();
        let gone: Vec<u32> = tgids.into_iter().filter(|t| !alive(*t)).collect();
        self.opened.retain(|t, _| !gone.contains(t));
        let keys: Vec<(u32, u32)> = self.conns.keys().filter(|(t, _)| gone.contains(t)).copied().collect();
        keys.into_iter().filter_map(|k| self.conns.remove(&k)).collect()
    }

    /// Removes the connections of process `tgid` (it exited).
    pub fn remove_process(&mut self, tgid: u32) -> Vec<Conn> {
        self.opened.remove(&tgid);
        let keys: Vec<(u32, u32)> = self.conns.keys().filter(|(t, _)| *t == tgid).copied().collect();
        keys.into_iter().filter_map(|k| self.conns.remove(&k)).collect()
    }

    /// Every open connection.
    pub fn iter(&self) -> impl Iterator<Item = &Conn> {
        self.conns.values()
    }

    /// The fds of process `tgid`'s connections that `pick` picks.
    pub fn fds_of(&self, tgid: u32, pick: impl Fn(&Conn) -> bool) -> Vec<u32> {
        self.conns.iter().filter(|((t, _), c)| *t == tgid && pick(c)).map(|((_, fd), _)| *fd).collect()
    }

    pub fn pending_requests(&self) -> u64 {
        self.conns.values().map(|c| c.pending.len() as u64).sum()
    }

    pub fn get(&self, tgid: u32, fd: u32) -> Option<&Conn> {
        self.conns.get(&(tgid, fd))
    }

    pub fn get_mut(&mut self, tgid: u32, fd: u32) -> Option<&mut Conn> {
        self.conns.get_mut(&(tgid, fd))
    }

    pub fn remove(&mut self, tgid: u32, fd: u32) -> Option<Conn> {
        self.conns.remove(&(tgid, fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::message::{HttpResponse, RequestFields, ResponseFields, Timing, TraceContext};
    use crate::spans::record::SpanKind;

    fn pending(correlation: Correlation, span: u8) -> PendingRequest {
        let request = Request {
            correlation,
            timing: Timing::single(u64::from(span), u64::from(span)),
            context: TraceContext::default(),
            client_kind: SpanKind::Client,
            writer: crate::protocols::message::Writer::Caller,
            fields: RequestFields::Http(Default::default()),
        };
        PendingRequest { request, span: [span; 8], tid: 1 }
    }

    #[test]
    fn answers_find_their_requests_in_order_or_by_key() {
        let mut p = Pending::default();
        for (c, s) in [(Correlation::InOrder, 1), (Correlation::Key(7), 2), (Correlation::InOrder, 3), (Correlation::Key(9), 4)] {
            assert!(p.push(pending(c, s)).is_ok());
        }
        // A second request under a waiting key is refused: the first keeps it.
        assert!(p.push(pending(Correlation::Key(7), 5)).is_err());
        assert_eq!(p.answer(Correlation::Key(9)).map(|r| r.span[0]), Some(4));
        assert_eq!(p.answer(Correlation::InOrder).map(|r| r.span[0]), Some(1));
        assert_eq!(p.answer(Correlation::Key(9)).map(|r| r.span[0]), None);
        assert_eq!(p.drain().iter().map(|r| r.span[0]).collect::<Vec<_>>(), [3, 2]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_connection_holds_a_bounded_number_of_requests() {
        let mut p = Pending::default();
        for i in 0..MAX_PENDING {
            assert!(p.push(pending(Correlation::InOrder, i as u8)).is_ok());
        }
        assert!(p.push(pending(Correlation::InOrder, 0)).is_err());
    }

    fn conn(role: Role) -> Conn {
        Conn::new(ConnInfo { id: 1, tgid: 1, role, local: None, remote: None, remote_ip: None, tls: false, generation: 0, ordinal: 0 })
    }

    fn seg(data: &[u8]) -> Segment<'_> {
        Segment { data, total: data.len() as u64, ts_enter_ns: 1, ts_exit_ns: 2 }
    }

    #[test]
    fn a_protocol_is_recognised_across_reads_and_again_after_tls_starts() {
        let mut c = conn(Role::Unknown);
        let mut out = Vec::new();
        // A client that reads a packet header and its body in two calls (MySQL's greeting).
        let greeting = b"\x4a\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00abcdefgh\x00\xff\xff\x08\x02\x00\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00ijklmnopqrst\x00mysql_native_password\x00";
        c.feed(Direction::Ingress, seg(&greeting[..4]), &mut out);
        assert_eq!(c.protocol(), None);
        c.feed(Direction::Ingress, seg(&greeting[4..]), &mut out);
        assert_eq!((c.protocol(), c.info.role), (Some("mysql"), Role::Client));
        // MySQL's TLS starts inside its handshake: the parser goes on.
        c.start_tls();
        assert_eq!(c.protocol(), Some("mysql"));
        // HTTP over TLS: the ciphertext's parse is thrown away, and the plaintext recognised.
        let mut h = conn(Role::Server);
        h.feed(Direction::Ingress, seg(b"GET / HTTP/1.1\r\n\r\n"), &mut out);
        h.start_tls();
        assert_eq!(h.protocol(), None);
        h.feed(Direction::Ingress, seg(b"GET /s HTTP/1.1\r\n\r\n"), &mut out);
        assert_eq!(h.protocol(), Some("http"));
    }

    #[test]
    fn bytes_in_the_wrong_direction_for_the_role_are_not_recognised() {
        // A server that writes a request: not HTTP as far as this connection goes.
        let mut c = conn(Role::Server);
        let mut out = Vec::new();
        c.feed(Direction::Egress, seg(b"GET / HTTP/1.1\r\n\r\n"), &mut out);
        assert_eq!(c.protocol(), None);
        for _ in 0..MAX_UNRECOGNISED {
            c.feed(Direction::Egress, seg(b"GET / HTTP/1.1\r\n\r\n"), &mut out);
        }
        assert!(c.foreign);
        assert!(out.is_empty());
    }

    /// A request that asks to upgrade to h2c, and the server's yes.
    const UPGRADE_REQUEST: &[u8] = b"GET /up HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";

    #[test]
    fn an_h2c_upgrade_hands_the_connection_to_http2_and_stream_1_answers_the_upgrade_request() {
        const HEADERS: u8 = 1;
        const SETTINGS: u8 = 4;
        const END_STREAM_AND_HEADERS: u8 = 0x5;
        let mut c = conn(Role::Server);
        let mut out = Vec::new();
        c.feed(Direction::Ingress, seg(UPGRADE_REQUEST), &mut out);
        assert!(matches!(&out[..], [Message::Request(r)] if r.correlation == Correlation::InOrder));
        out.clear();
        // The 101, the server's SETTINGS and stream 1's answer (:status 200, static index 8)
        // in one write.
        let mut answer = SWITCHING.to_vec();
        answer.extend(crate::protocols::http2::frame_bytes(SETTINGS, 0, 0, &[]));
        answer.extend(crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, 1, &[0x88]));
        c.feed(Direction::Egress, seg(&answer), &mut out);
        assert_eq!(c.protocol(), Some("http2"));
        let [Message::Response(r)] = &out[..] else { panic!("one answer: {out:?}") };
        assert_eq!(r.correlation, Correlation::InOrder, "the upgrade request waits in order");
        assert!(matches!(r.fields, ResponseFields::Http(HttpResponse { status: Some(200) })), "the 101 is not the answer: {r:?}");
        out.clear();
        // Then the client's preface and a request of its own on stream 3 (GET, http, /).
        let mut next = crate::protocols::http2::client_preface();
        next.extend(crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, 3, &[0x82, 0x86, 0x84]));
        c.feed(Direction::Ingress, seg(&next), &mut out);
        assert!(matches!(&out[..], [Message::Request(r)] if r.correlation == Correlation::Key(3)), "{out:?}");
        assert!(!c.foreign);
    }

    #[test]
    fn an_h2c_upgrade_seen_from_the_client() {
        const HEADERS: u8 = 1;
        const SETTINGS: u8 = 4;
        let mut c = conn(Role::Client);
        let mut out = Vec::new();
        c.feed(Direction::Egress, seg(UPGRADE_REQUEST), &mut out);
        c.feed(Direction::Ingress, seg(SWITCHING), &mut out);
        let preface = crate::protocols::http2::client_preface();
        c.feed(Direction::Egress, seg(&preface), &mut out);
        c.feed(Direction::Ingress, seg(&crate::protocols::http2::frame_bytes(SETTINGS, 0, 0, &[])), &mut out);
        c.feed(Direction::Egress, seg(&crate::protocols::http2::frame_bytes(SETTINGS, 1, 0, &[])), &mut out);
        let mut first = crate::protocols::http2::frame_bytes(8, 0, 0, &[0, 0xf, 0, 1]);
        first.extend(crate::protocols::http2::frame_bytes(HEADERS, 4, 1, &[0x88]));
        first.extend(crate::protocols::http2::frame_bytes(0, 1, 1, b"item 1"));
        c.feed(Direction::Ingress, seg(&first), &mut out);
        c.feed(Direction::Egress, seg(&crate::protocols::http2::frame_bytes(HEADERS, 5, 3, &[0x82, 0x86, 0x84])), &mut out);
        let mut second = crate::protocols::http2::frame_bytes(HEADERS, 4, 3, &[0x88]);
        second.extend(crate::protocols::http2::frame_bytes(0, 1, 3, b"item 2"));
        c.feed(Direction::Ingress, seg(&second), &mut out);
        let kinds: Vec<String> = out
            .iter()
            .map(|m| match m {
                Message::Request(r) => format!("req {:?}", r.correlation),
                Message::Response(r) => format!("resp {:?}", r.correlation),
                _ => "other".into(),
            })
            .collect();
        assert_eq!(kinds, ["req InOrder", "resp InOrder", "req Key(3)", "resp Key(3)"]);
    }
}
