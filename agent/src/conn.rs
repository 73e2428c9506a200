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

use crate::protocols::db::{DbCodec, DbMessage, DbRequest, DbResponse, DbSystem};
use crate::protocols::http1::{HalfStream, Head, Message, Segment, Side};
use crate::protocols::{memcached, mysql, postgres, redis, resp};
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
    pub remote_ip: Option<String>,
    /// Plaintext comes from the TLS probes (https).
    pub tls: bool,
}

/// The protocol a connection speaks, with its parser state. HTTP, the common case, stays
/// inline (no pointer chase per segment); database codecs are boxed behind one trait.
#[allow(clippy::large_enum_variant)]
enum Codec {
    Undecided,
    Http { requests: HalfStream, responses: HalfStream },
    Db(Box<dyn DbCodec>),
}

pub struct Conn {
    pub info: ConnInfo,
    codec: Codec,
    /// While no protocol is recognised: the first bytes of each direction (ingress, egress),
    /// since some clients read a 4-byte packet header and its body in two calls.
    first_bytes: [Vec<u8>; 2],
    unrecognised: u32,
    /// No longer parsed: no protocol we know.
    pub foreign: bool,
    /// The server answered in another protocol than the requests looked like (HTTP sent to
    /// PostgreSQL, `get / HTTP/1.1` to nginx): those were no requests of ours.
    pub answer_foreign: bool,
    /// HTTP answers parsed so far.
    http_answers: u64,
    /// The server side has sent bytes on this connection.
    pub server_wrote: bool,
    /// Requests waiting for their response, oldest first (every protocol here answers in
    /// order).
    pub pending: VecDeque<PendingRequest>,
    /// Requests started on this connection so far.
    pub requests: u64,
    /// The SERVER span whose event-loop callback opened this connection (connect), if the
    /// evidence named one: a fresh connection's first request is written in its connect
    /// callback, where nothing else ties it to a request.
    pub opened_by: Option<SpanId>,
}

/// What a pending request is.
#[derive(Debug)]
pub enum RequestKind {
    Http(Message),
    Db(DbRequest),
}

/// A request whose span has been started and waits for its response.
#[derive(Debug)]
pub struct PendingRequest {
    pub request: RequestKind,
    pub span: SpanId,
    pub tid: u32,
}

/// Output of feeding a connection.
#[derive(Debug)]
pub enum Parsed {
    Request { tid: u32, message: Message },
    Response { tid: u32, message: Message },
    DbRequest { tid: u32, request: DbRequest },
    DbResponse { tid: u32, response: DbResponse },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Who speaks first in what was recognised: the client (a request) or the server (a
/// greeting or response).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Speaker {
    Client,
    Server,
}

/// Recognises a protocol from the first bytes seen in one direction.
fn recognise(data: &[u8]) -> Option<(Codec, Speaker)> {
    if HalfStream::looks_like_start(Side::Request, data) {
        return Some((Codec::http(), Speaker::Client));
    }
    if HalfStream::looks_like_start(Side::Response, data) {
        return Some((Codec::http(), Speaker::Server));
    }
    if postgres::looks_like_frontend(data) {
        return Some((Codec::Db(Box::new(postgres::Postgres::new())), Speaker::Client));
    }
    if mysql::looks_like_greeting(data) {
        return Some((Codec::Db(Box::new(mysql::Mysql::new(false))), Speaker::Server));
    }
    if mysql::looks_like_command(data) {
        return Some((Codec::Db(Box::new(mysql::Mysql::new(true))), Speaker::Client));
    }
    if resp::looks_like_command(data) {
        return Some((Codec::Db(Box::new(redis::Redis::new())), Speaker::Client));
    }
    if memcached::looks_like_command(data) {
        return Some((Codec::Db(Box::new(memcached::Memcached::new())), Speaker::Client));
    }
    None
}

impl Codec {
    fn http() -> Self {
        Codec::Http { requests: HalfStream::new(Side::Request), responses: HalfStream::new(Side::Response) }
    }
}

impl Conn {
    pub fn new(info: ConnInfo) -> Self {
        Self {
            info,
            codec: Codec::Undecided,
            first_bytes: [Vec::new(), Vec::new()],
            unrecognised: 0,
            foreign: false,
            answer_foreign: false,
            http_answers: 0,
            server_wrote: false,
            pending: VecDeque::new(),
            requests: 0,
            opened_by: None,
        }
    }

    /// Picks the protocol (and, for connections opened before we attached, the role) from
    /// the first bytes. False when nothing we know was recognised.
    fn decide(&mut self, dir: Direction, data: &[u8]) -> bool {
        let Some((codec, speaker)) = recognise(data) else { return false };
        let role = match (dir, speaker) {
            (Direction::Ingress, Speaker::Client) | (Direction::Egress, Speaker::Server) => Role::Server,
            _ => Role::Client,
        };
        if self.info.role != Role::Unknown && self.info.role != role {
            return false;
        }
        self.info.role = role;
        self.codec = codec;
        true
    }

    pub fn feed(&mut self, dir: Direction, tid: u32, seg: Segment<'_>) -> Vec<Parsed> {
        let mut out = Vec::new();
        self.server_wrote |= matches!((self.info.role, dir), (Role::Server, Direction::Egress) | (Role::Client, Direction::Ingress)) && seg.total > 0;
        if self.foreign {
            return out;
        }
        let mut seg = seg;
        let first_bytes;
        if matches!(self.codec, Codec::Undecided) {
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
            if !self.decide(dir, judged) {
                self.first_bytes[dir as usize] = buf;
                self.note_unrecognised();
                return out;
            }
            self.first_bytes = [Vec::new(), Vec::new()];
            first_bytes = buf;
            if whole {
                seg = Segment { data: &first_bytes, total: first_bytes.len() as u64, ..seg };
            }
        }
        let from_client = matches!((self.info.role, dir), (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress));
        let desynced = match &mut self.codec {
            Codec::Undecided => true,
            Codec::Http { requests, responses } => {
                if from_client {
                    for message in requests.feed(seg) {
                        if let Head::Request(r) = &message.head {
                            responses.expect_response(&r.method);
                        }
                        out.push(Parsed::Request { tid, message });
                    }
                } else {
                    let before = out.len();
                    out.extend(responses.feed(seg).into_iter().map(|message| Parsed::Response { tid, message }));
                    self.http_answers += (out.len() - before) as u64;
                    if self.http_answers == 0 && responses.is_desynced() {
                        self.answer_foreign = true;
                    }
                }
                requests.is_desynced()
            }
            Codec::Db(c) => {
                let mut messages = Vec::new();
                c.feed(from_client, seg, &mut messages);
                wrap_db(&mut out, tid, messages);
                self.answer_foreign |= c.answered_in_another_protocol();
                c.is_desynced()
            }
        };
        if self.answer_foreign {
            self.foreign = true;
        }
        if !out.is_empty() {
            self.unrecognised = 0;
        } else if desynced && from_client {
            self.note_unrecognised();
        }
        out
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
        // MySQL negotiates TLS inside its handshake: the plaintext goes on with the rest of
        // it, which only a parser that knows it is in the handshake follows.
        self.codec = match &self.codec {
            Codec::Db(c) if matches!(c.system(), DbSystem::Mysql | DbSystem::MariaDb) => Codec::Db(Box::new(mysql::Mysql::new(false))),
            _ => Codec::Undecided,
        };
        self.first_bytes = [Vec::new(), Vec::new()];
        self.unrecognised = 0;
        self.foreign = false;
        self.pending.clear();
    }

    /// The connection closed: a response delimited by close is complete now, and database
    /// answers whose end was cut off end at the last bytes seen.
    pub fn close(&mut self, tid: u32) -> Vec<Parsed> {
        let mut out = Vec::new();
        match &mut self.codec {
            Codec::Http { responses, .. } => out.extend(responses.close().map(|message| Parsed::Response { tid, message })),
            Codec::Db(c) => {
                let mut messages = Vec::new();
                c.close(&mut messages);
                wrap_db(&mut out, tid, messages);
            }
            Codec::Undecided => {}
        };
        out
    }
}

fn wrap_db(out: &mut Vec<Parsed>, tid: u32, messages: Vec<DbMessage>) {
    out.extend(messages.into_iter().map(|m| match m {
        DbMessage::Request(request) => Parsed::DbRequest { tid, request },
        DbMessage::Response(response) => Parsed::DbResponse { tid, response },
    }));
}

/// All connections of all traced processes.
#[derive(Default)]
pub struct ConnTable {
    conns: HashMap<(u32, u32), Conn>,
    next_id: u64,
}

impl ConnTable {
    pub fn open(&mut self, tgid: u32, fd: u32, role: Role, local: Option<SocketAddr>, remote: Option<SocketAddr>) -> Option<Conn> {
        self.next_id += 1;
        let remote_ip = remote.map(|r| r.ip().to_canonical().to_string());
        let info = ConnInfo { id: self.next_id, tgid, role, local, remote, remote_ip, tls: false };
        self.conns.insert((tgid, fd), Conn::new(info))
    }

    /// A forked child's copy of a connection: same ends and role, parsed on its own.
    pub fn inherit(&mut self, parent_tgid: u32, child: u32, fd: u32) -> Option<Conn> {
        let parent = self.conns.get(&(parent_tgid, fd))?.info.clone();
        self.next_id += 1;
        let info = ConnInfo { id: self.next_id, tgid: child, ..parent };
        self.conns.insert((child, fd), Conn::new(info))
    }

    /// Removes the connections of processes `alive` says are gone (their fds closed at exit,
    /// without close calls).
    pub fn remove_exited(&mut self, mut alive: impl FnMut(u32) -> bool) -> Vec<Conn> {
        let mut tgids: Vec<u32> = self.conns.keys().map(|(t, _)| *t).collect();
        tgids.sort_unstable();
        tgids.dedup();
        let gone: Vec<u32> = tgids.into_iter().filter(|t| !alive(*t)).collect();
        let keys: Vec<(u32, u32)> = self.conns.keys().filter(|(t, _)| gone.contains(t)).copied().collect();
        keys.into_iter().filter_map(|k| self.conns.remove(&k)).collect()
    }

    /// Removes the connections of process `tgid` (it exited).
    pub fn remove_process(&mut self, tgid: u32) -> Vec<Conn> {
        let keys: Vec<(u32, u32)> = self.conns.keys().filter(|(t, _)| *t == tgid).copied().collect();
        keys.into_iter().filter_map(|k| self.conns.remove(&k)).collect()
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
