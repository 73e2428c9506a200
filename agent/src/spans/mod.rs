//! Requests and their answers to span records, per domain (HTTP, database, messaging) with
//! the stable semantic conventions. Protocols do not appear here: a protocol emits messages
//! with domain fields (`protocols::message`), and this stage knows domains.

mod db;
mod http;
mod messaging;
pub mod record;
pub mod routes;
mod rpc;
pub use db::DbSpanOptions;
pub use http::{path_of, redact_path_params};

use crate::conn::{ConnInfo, Role};
use crate::protocols::message::{Request, RequestFields, Response, ResponseFields};
use record::{Domain, Ids, Network, SpanKind, SpanRecord, Status};
use smol_str::SmolStr;

/// What became of a request.
#[derive(Clone, Copy, Debug)]
pub enum Answer<'a> {
    Answered(&'a Response),
    /// The connection ended first: an error.
    Unanswered,
    /// None was expected (a one-way message or a push): the span ends with the request.
    NoneExpected,
}

/// The span of `request` on `conn` (ids are filled in by the linker later). None when the
/// answer says the request never ran, or belongs to another domain (a protocol change in the
/// middle of a connection cannot pair across).
pub fn build(conn: &ConnInfo, request: &Request, answer: Answer<'_>, options: DbSpanOptions, clock: &Clock) -> Option<SpanRecord> {
    let kind = if conn.role == Role::Server { SpanKind::Server } else { request.client_kind };
    let answered = match answer {
        Answer::Answered(r) => Some(r),
        _ => None,
    };
    // A failure below the domain (a stream reset) builds the span as if unanswered, then marks it.
    let (fields, failed) = match answered.map(|r| &r.fields) {
        Some(ResponseFields::Failed { error }) => (None, Some(error.clone())),
        fields => (fields, None),
    };
    let mut record = match (&request.fields, fields) {
        (RequestFields::Http(req), None) => http::span(conn, kind, req, None),
        (RequestFields::Http(req), Some(ResponseFields::Http(h))) => http::span(conn, kind, req, h.status),
        (RequestFields::Db(req), None) => db::span(conn, kind, req, None, options)?,
        (RequestFields::Db(req), Some(ResponseFields::Db(d))) => db::span(conn, kind, req, Some(d), options)?,
        (RequestFields::Rpc(req), None) => rpc::span(conn, kind, req, None, None, false),
        (RequestFields::Rpc(req), Some(ResponseFields::Rpc { status_code, error })) => rpc::span(conn, kind, req, *status_code, error.clone(), true),
        (RequestFields::Messaging(req), None) => messaging::span(conn, kind, req, None, None, None),
        (RequestFields::Messaging(req), Some(ResponseFields::Messaging { error, offset, message_id })) => {
            messaging::span(conn, kind, req, error.clone(), *offset, message_id.clone())
        }
        // A send the server refused (a Redis push onto a key that holds no list) sent no
        // message: it is the failed command, and names no destination.
        (RequestFields::Messaging(req), Some(ResponseFields::Db(d))) => {
            let command = crate::protocols::message::DbCommand::Named(req.operation.to_ascii_uppercase());
            let request = crate::protocols::message::DbRequest { system: req.system, command, namespace: None, prepared: false };
            let kind = if kind == SpanKind::Server { kind } else { SpanKind::Client };
            db::span(conn, kind, &request, Some(d), options)?
        }
        _ => return None,
    };
    time(&mut record, request, answered, clock);
    if let Some(error) = failed {
        record.error_type = Some(error);
        record.status = Status::Error { message: None };
    }
    if let (Some(state), Some(_)) = (&request.context.tracestate, request.context.traceparent.as_deref().and_then(crate::traceparent::parse)) {
        // Vendor trace state travels with the context it came with.
        record.ids.trace_state = state.chars().take(512).collect();
    }
    if let Answer::Unanswered = answer {
        record.error_type = Some("no_response".to_string());
        record.status = Status::Error { message: Some("connection closed before a response") };
    }
    Some(record)
}

/// Converts kernel monotonic timestamps to Unix time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime − monotonic, in ns, taken once at start.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let read = |id| {
            let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            // SAFETY: clock_gettime writes into the timespec we own; the clock ids are valid.
            unsafe { libc::clock_gettime(id, &mut ts) };
            ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
        };
        let mono = read(libc::CLOCK_MONOTONIC);
        let real = read(libc::CLOCK_REALTIME);
        Self { offset_ns: real - mono }
    }

    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

/// Both ends of a span by the connection's addresses: the server's port and the client's
/// address on the server's side, the server's address and port on the client's.
pub(crate) fn ends(conn: &ConnInfo, kind: SpanKind) -> Network {
    let mut net = network(conn);
    if kind == SpanKind::Server {
        net.client_address = conn.remote_ip.clone();
        net.server_port = conn.local.map(|l| l.port());
    } else if let (Some(ip), Some(remote)) = (&conn.remote_ip, conn.remote) {
        net.server_address = Some(ip.clone());
        net.server_port = Some(remote.port());
    }
    net
}

pub(crate) fn network(conn: &ConnInfo) -> Network {
    let mut network = Network::default();
    if let (Some(a), Some(ip)) = (conn.remote, &conn.remote_ip) {
        network.peer_address = Some(ip.clone());
        network.peer_port = Some(a.port());
    }
    network
}

/// An exchange cut off because its process ended (killed, crashed) at `at_ns`: it lasted until
/// then, and its error says why it has no answer.
pub fn cut_off_by_exit(record: &mut SpanRecord, at_ns: u64, clock: &Clock) {
    record.end_unix_ns = clock.unix_ns(at_ns).max(record.start_unix_ns);
    if record.error_type.is_some() {
        record.error_type = Some("process_exited".to_string());
    }
    record.status = Status::Error { message: Some("the process ended before the answer") };
}

/// Times a span by one rule for every protocol, from the syscalls that carried the request's
/// first and last bytes and the answer's last byte.
///
/// SERVER: from the read that delivered the request to the start of the write that sent the
/// last answer byte (the peer can have the bytes before that write returns; ending at its
/// return would put a preempted server's end after its caller's). Every other kind: from the
/// start of the request's write (or read, for a push) to the return of the read that completed
/// the answer. Without an answer, the span ends with the request.
fn time(record: &mut SpanRecord, request: &Request, response: Option<&Response>, clock: &Clock) {
    let t = &request.timing;
    let server = record.kind == SpanKind::Server;
    let (start, end) = if server {
        (t.first_exit_ns, response.map_or(t.last_exit_ns, |r| r.timing.last_enter_ns))
    } else {
        (t.first_enter_ns, response.map_or(t.last_exit_ns, |r| r.timing.last_exit_ns))
    };
    record.start_unix_ns = clock.unix_ns(start);
    record.end_unix_ns = clock.unix_ns(end.max(start));
}

/// A record with its name, kind, ends and domain; timing and status are filled in by `build`.
pub(crate) fn record(name: impl Into<SmolStr>, kind: SpanKind, network: Network, domain: Domain) -> SpanRecord {
    SpanRecord {
        name: name.into(),
        kind,
        start_unix_ns: 0,
        end_unix_ns: 0,
        status: Status::Unset,
        error_type: None,
        network,
        domain,
        capture_truncated: false,
        capture_head_only: false,
        capture_one_in: 0,
        ids: Ids::default(),
    }
}
