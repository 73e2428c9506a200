//! The one interface every protocol parser implements, per connection, both directions.

use super::message::{Message, RequestFields, TraceContext, Writer};

/// What one syscall moved in one direction.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub data: &'a [u8],
    /// Bytes transferred (≥ data.len()); the difference is a gap after `data`.
    pub total: u64,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
}

/// Which end of the connection sent the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// How well a parser follows its connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    InSync,
    /// The client's side lost the framing (a capture gap where a header was due, or bytes
    /// that are not this protocol); it resyncs on a message start. A connection that stays
    /// here is given up as foreign.
    Resyncing,
    /// The server answered in another protocol: the requests were not this protocol's (HTTP
    /// sent to PostgreSQL). Nothing on the connection becomes a span.
    Foreign,
}

impl Health {
    /// The health of a parser that knows whether the server answered in another protocol and
    /// whether its client side lost the framing.
    pub fn of(answered_in_another_protocol: bool, client_side_lost: bool) -> Self {
        if answered_in_another_protocol {
            Health::Foreign
        } else if client_side_lost {
            Health::Resyncing
        } else {
            Health::InSync
        }
    }
}

/// A connection that changed protocol mid-stream: the parser that goes on, and the server's
/// bytes of the segment that switched, which are already the new protocol's.
pub struct Switch {
    pub parser: Box<dyn Parser>,
    pub server_bytes: Vec<u8>,
}

/// A whole syscall's bytes (no gap), entering at `ts` and returning 1 ns later: for tests.
#[cfg(test)]
pub(crate) fn seg(data: &[u8], ts: u64) -> Segment<'_> {
    Segment { data, total: data.len() as u64, ts_enter_ns: ts, ts_exit_ns: ts + 1 }
}

/// A protocol parser for both directions of one connection. Pure: bytes in, messages out, no
/// I/O and no clock, so it can be unit-tested and fuzzed. Never panics on any input.
pub trait Parser: Send {
    /// The protocol's name in the registry.
    fn protocol(&self) -> &'static str;
    /// Parses what one syscall moved; appends whole messages in wire order.
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>);
    /// The connection closed: a response delimited by the close is complete now, and answers
    /// whose end was cut off end at the last bytes seen.
    fn close(&mut self, out: &mut Vec<Message>);
    fn health(&self) -> Health;
    /// Resyncs so far: how often framing was lost and found again.
    fn resyncs(&self) -> u64 {
        0
    }
    /// Bytes per syscall this protocol needs captured on its connections, when it is not the
    /// global `--capture-bytes` (HTTP/2 multiplexes many streams' frames into one write).
    fn capture_bytes(&self) -> Option<u16> {
        None
    }
    /// The connection switched to TLS (the first plaintext from the TLS probes): the parser
    /// that goes on with the plaintext, or None to recognise the protocol again. MySQL
    /// negotiates TLS inside its handshake, which only a parser that knows it is in the
    /// handshake follows.
    fn after_tls_start(&self) -> Option<Box<dyn Parser>> {
        None
    }
    /// The segment just fed switched the connection to another protocol (HTTP/1's
    /// `Upgrade: h2c` answered by 101): taken once, right after that `feed`.
    fn switched(&mut self) -> Option<Switch> {
        None
    }
    /// Request `key` (emitted already, or being handled) had fields the parser could not
    /// decode (HTTP/2: HPACK entries it never saw); `library` is that request's whole field
    /// list as the process's own protocol library saw it. Completes the request when the two
    /// agree on every field the parser did decode, and learns what it lacked for later ones.
    fn complete_request(&mut self, _key: u64, _library: &[LibraryField]) -> Option<Completed> {
        None
    }
    /// Whether what was fed since the last call left requests only `complete_request` can
    /// complete: the process's library probes are wanted (taken: the flag clears).
    fn library_fields_wanted(&mut self) -> bool {
        false
    }
    /// What `complete_request` did on this connection, for its report.
    fn recovery(&self) -> Recovery {
        Recovery::default()
    }
}

/// A header field as the traced process's own protocol library saw it: its name, and its
/// value unless the probes could not copy it whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LibraryField {
    pub name: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A request completed from its library's fields (`Parser::complete_request`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completed {
    pub fields: RequestFields,
    pub context: TraceContext,
    pub writer: Writer,
}

/// Requests of a connection that named what the parser never saw: how many, how many the
/// library's fields completed, how many it refused (they disagreed with the bytes), and the
/// table entries learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub incomplete: u64,
    pub completed: u64,
    pub refused: u64,
    pub learned: u64,
}
