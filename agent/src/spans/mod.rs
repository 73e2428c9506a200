//! Request/response pairs to OpenTelemetry spans with the stable HTTP and database semantic
//! conventions.

mod db;
mod http;
pub mod record;
pub use db::{DbSpanOptions, db_span};
pub use http::{Exchange, http_span, path_of, redact_path_params};

use crate::conn::ConnInfo;
use record::{Domain, Ids, Network, SpanKind, SpanRecord, Status};

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

pub(crate) fn network(conn: &ConnInfo) -> Network {
    let mut network = Network::default();
    if let (Some(a), Some(ip)) = (conn.remote, &conn.remote_ip) {
        network.peer_address = Some(ip.clone());
        network.peer_port = Some(a.port());
    }
    network
}

/// The error of an exchange whose connection closed before it was answered.
pub(crate) fn no_answer(record: &mut SpanRecord) {
    record.error_type = Some("no_response".to_string());
    record.status = Status::Error { message: Some("connection closed before a response") };
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

/// The span of one exchange, timed by one rule for every protocol. `request`: entry and exit
/// of the syscall that carried its first byte, and exit of the one that carried its last;
/// `answer`: entry and exit of the syscall that carried the answer's last byte.
///
/// SERVER: from the read that delivered the request to the start of the write that sent the
/// last answer byte (the peer can have the bytes before that write returns; ending at its
/// return would put a preempted server's end after its caller's). CLIENT: from the start of
/// the request write to the return of the read that completed the answer.
pub(crate) fn assemble(name: String, server: bool, request: (u64, u64, u64), answer: Option<(u64, u64)>, network: Network, domain: Domain, clock: &Clock) -> SpanRecord {
    let (start_enter, start_exit, request_end) = request;
    let (start, end) = if server { (start_exit, answer.map_or(request_end, |(enter, _)| enter)) } else { (start_enter, answer.map_or(request_end, |(_, exit)| exit)) };
    SpanRecord {
        name,
        kind: if server { SpanKind::Server } else { SpanKind::Client },
        start_unix_ns: clock.unix_ns(start),
        end_unix_ns: clock.unix_ns(end.max(start)),
        status: Status::Unset,
        error_type: None,
        network,
        domain,
        capture_truncated: false,
        ids: Ids::default(),
    }
}
