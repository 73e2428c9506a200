//! Per-connection state: who is client and server, the addresses, and the two HTTP/1 half
//! streams. Turns data segments into complete requests and responses, in order.
//!
//! A connection is keyed by (tgid, fd) and replaced on every accept/connect, so fd reuse never
//! mixes two connections (the replacement is the "generation").

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;

use crate::protocols::http1::{HalfStream, Head, Message, Segment, Side};
use crate::traceparent::SpanId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
    Unknown,
}

/// Segments seen without recognising HTTP/1 before a connection is given up as foreign.
const MAX_UNRECOGNISED: u32 = 4;

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

pub struct Conn {
    pub info: ConnInfo,
    requests: HalfStream,
    responses: HalfStream,
    unrecognised: u32,
    /// No longer parsed: not HTTP/1.
    pub foreign: bool,
    /// Requests waiting for their response, oldest first (HTTP/1 answers in order).
    pub pending: VecDeque<PendingRequest>,
}

/// A request whose span has been started and waits for its response.
#[derive(Debug)]
pub struct PendingRequest {
    pub message: Message,
    pub span: SpanId,
    pub tid: u32,
}

/// Output of feeding a connection.
#[derive(Debug)]
pub enum Parsed {
    Request { tid: u32, message: Message },
    Response { tid: u32, message: Message },
}

pub enum Direction {
    Ingress,
    Egress,
}

impl Conn {
    pub fn new(info: ConnInfo) -> Self {
        Self {
            info,
            requests: HalfStream::new(Side::Request),
            responses: HalfStream::new(Side::Response),
            unrecognised: 0,
            foreign: false,
            pending: VecDeque::new(),
        }
    }

    /// Infers the role of a connection opened before we attached from its first bytes.
    fn infer_role(&mut self, dir: &Direction, data: &[u8]) {
        let request = HalfStream::looks_like_start(Side::Request, data);
        let response = HalfStream::looks_like_start(Side::Response, data);
        self.info.role = match (dir, request, response) {
            (Direction::Ingress, true, _) | (Direction::Egress, _, true) => Role::Server,
            (Direction::Egress, true, _) | (Direction::Ingress, _, true) => Role::Client,
            _ => Role::Unknown,
        };
    }

    pub fn feed(&mut self, dir: Direction, tid: u32, seg: Segment<'_>) -> Vec<Parsed> {
        if self.foreign {
            return Vec::new();
        }
        if self.info.role == Role::Unknown {
            self.infer_role(&dir, seg.data);
            if self.info.role == Role::Unknown {
                self.note_unrecognised();
                return Vec::new();
            }
        }
        let is_request = matches!(
            (self.info.role, dir),
            (Role::Server, Direction::Ingress) | (Role::Client, Direction::Egress)
        );
        let mut out = Vec::new();
        if is_request {
            for message in self.requests.feed(seg) {
                if let Head::Request(r) = &message.head {
                    self.responses.expect_response(&r.method);
                }
                out.push(Parsed::Request { tid, message });
            }
            if self.requests.is_desynced() {
                self.note_unrecognised();
            }
        } else {
            for message in self.responses.feed(seg) {
                out.push(Parsed::Response { tid, message });
            }
        }
        if !out.is_empty() {
            self.unrecognised = 0;
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
        self.requests = HalfStream::new(Side::Request);
        self.responses = HalfStream::new(Side::Response);
        self.unrecognised = 0;
        self.foreign = false;
        self.pending.clear();
    }

    /// The connection closed: a response delimited by close is complete now.
    pub fn close(&mut self, tid: u32) -> Option<Parsed> {
        self.responses.close().map(|message| Parsed::Response { tid, message })
    }
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

    pub fn get_mut(&mut self, tgid: u32, fd: u32) -> Option<&mut Conn> {
        self.conns.get_mut(&(tgid, fd))
    }

    pub fn remove(&mut self, tgid: u32, fd: u32) -> Option<Conn> {
        self.conns.remove(&(tgid, fd))
    }



}
