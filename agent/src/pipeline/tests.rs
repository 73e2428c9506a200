//! The pipeline on recorded event sequences: what the probes would send for a few exchanges,
//! and the spans (or counted losses) that must come out. No kernel, no /proc.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{FinishedSpan, Host, Pipeline};
use crate::conn::Role;
use crate::events::{Cause, Event};
use crate::process::{FdKind, ProcessResource};
use crate::spans::Clock;
use crate::spans::record::{Domain, SpanKind, Status};

/// A machine where every fd is a socket that is already gone from /proc.
struct Recorded;

impl Host for Recorded {
    fn fd_kind(&mut self, _: u32, _: u32) -> FdKind {
        FdKind::Gone
    }
    fn socket_ends(&mut self, _: u32, _: u32, _: u64) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
        None
    }
    fn resource(&mut self, tgid: u32) -> Option<ProcessResource> {
        Some(ProcessResource { pid: tgid, service_name: format!("svc-{tgid}"), executable_name: "svc".into(), ..Default::default() })
    }
    fn is_alive(&mut self, _: u32) -> bool {
        true
    }
}

const TGID: u32 = 100;

struct Script {
    pipeline: Pipeline<Recorded>,
    ts: u64,
}

impl Script {
    fn new() -> Self {
        Self { pipeline: Pipeline::new(Recorded, Clock::now()), ts: 1_000 }
    }

    fn open(&mut self, fd: u32, role: Role, local_port: u16, remote_port: u16) {
        self.ts += 10;
        let local = Some(SocketAddr::from(([127, 0, 0, 1], local_port)));
        let remote = Some(SocketAddr::from(([127, 0, 0, 1], remote_port)));
        self.pipeline.handle(Event::ConnOpen {
            tgid: TGID,
            tid: TGID,
            fd,
            role,
            listen_fd: None,
            local,
            remote,
            ts_ns: self.ts,
            comm: "svc".into(),
            cause: Cause::Thread,
            generation: fd as u8 | 1,
        });
    }

    /// One syscall: `ingress` bytes read by the traced process, else written.
    fn data(&mut self, fd: u32, ingress: bool, bytes: &[u8]) {
        self.data_by(TGID, fd, ingress, bytes);
    }

    /// `data` by thread `tid`.
    fn data_by(&mut self, tid: u32, fd: u32, ingress: bool, bytes: &[u8]) {
        self.data_in(Cause::Thread, tid, fd, ingress, bytes);
    }

    /// `data_by`, the thread running `cause`.
    fn data_in(&mut self, cause: Cause, tid: u32, fd: u32, ingress: bool, bytes: &[u8]) {
        self.ts += 10;
        let ts = self.ts;
        self.pipeline.handle(Event::Data { tgid: TGID, tid, fd, ingress, ts_enter_ns: ts, ts_exit_ns: ts + 5, total: bytes.len() as u64, payload: bytes, tls: false, cause });
    }

    fn close(&mut self, fd: u32) {
        self.ts += 10;
        self.pipeline.handle(Event::Close { tgid: TGID, tid: TGID, fd, ts_ns: self.ts });
    }

    fn spans(&mut self) -> Vec<FinishedSpan> {
        let mut spans = self.pipeline.tick(Instant::now() + Duration::from_secs(60));
        spans.sort_by(|a, b| (a.span.start_unix_ns, &a.span.name).cmp(&(b.span.start_unix_ns, &b.span.name)));
        spans
    }
}

fn names(spans: &[FinishedSpan]) -> Vec<String> {
    spans.iter().map(|s| format!("{} {}", s.span.kind.name(), s.span.name)).collect()
}

#[test]
fn pipelined_http_requests_pair_in_order_and_nothing_after_a_close_answer_is_a_span() {
    let mut s = Script::new();
    s.open(5, Role::Server, 8080, 40_000);
    s.data(5, true, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /c HTTP/1.1\r\n\r\n");
    s.data(5, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    s.close(5);
    let spans = s.spans();
    assert_eq!(names(&spans), ["SERVER GET /a", "SERVER POST /b"]);
    let status: Vec<Option<u16>> = spans.iter().map(|s| s.span.http().and_then(|h| h.status_code)).collect();
    assert_eq!(status, [Some(200), Some(503)]);
    assert_eq!(spans[1].span.error_type.as_deref(), Some("503"));
    // GET /c came after the answer that closed the connection: the server never read it.
    assert_eq!(s.pipeline.stats.after_close, 1);
    let http = s.pipeline.protocol_stats().get("http").copied().unwrap_or_default();
    assert_eq!((http.connections, http.requests), (1, 3));
    assert!(spans.iter().all(|s| s.resource.service_name == "svc-100"));
}

#[test]
fn a_server_that_closes_without_answering_makes_no_span_and_a_client_gets_an_error_span() {
    let mut s = Script::new();
    // HTTP sent to a server that never answers and closes: no exchange happened.
    s.open(5, Role::Server, 5432, 40_001);
    s.data(5, true, b"GET / HTTP/1.1\r\n\r\n");
    s.close(5);
    // A client whose server hung up before answering: the call failed.
    s.open(6, Role::Client, 40_002, 6379);
    s.data(6, false, b"*1\r\n$4\r\nPING\r\n");
    s.close(6);
    let spans = s.spans();
    assert_eq!(names(&spans), ["CLIENT PING"]);
    assert_eq!(spans[0].span.error_type.as_deref(), Some("no_response"));
    assert!(matches!(spans[0].span.status, Status::Error { .. }));
    assert_eq!(s.pipeline.stats.closed_unanswered, 1);
}

#[test]
fn a_process_killed_mid_request_ends_its_spans_at_the_exit() {
    let mut s = Script::new();
    s.open(5, Role::Server, 8080, 40_000);
    s.data(5, true, b"GET /slow HTTP/1.1\r\n\r\n");
    s.ts += 1_000_000;
    let exit_ns = s.ts;
    s.pipeline.handle(Event::Exit { tgid: TGID, ts_ns: exit_ns, code: None });
    let spans = s.spans();
    assert_eq!(names(&spans), ["SERVER GET /slow"]);
    assert_eq!(spans[0].span.error_type.as_deref(), Some("process_exited"));
    let lasted = spans[0].span.end_unix_ns - spans[0].span.start_unix_ns;
    assert!((999_000..=1_000_000).contains(&lasted), "lasted {lasted} ns, until the exit");
}

#[test]
fn an_adopted_connection_takes_its_role_from_the_first_bytes() {
    let mut s = Script::new();
    // No ConnOpen: a connection open before the agent attached. Its first bytes are a
    // request the process read, so the process is the server.
    s.data(7, true, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    s.data(7, false, b"$-1\r\n");
    let spans = s.spans();
    assert_eq!(names(&spans), ["SERVER GET"]);
    let Domain::Db(db) = &spans[0].span.domain else { panic!("a database span") };
    assert_eq!(db.system, "redis");
}

/// A connection the process opened, or one found open at attach, starts with the first-request
/// capture; recognised, it goes to what its parser asks (Redis: the largest, already there:
/// nothing to change) or back to the global cap (HTTP/1: 0).
#[test]
fn first_request_captures_end_at_recognition() {
    let mut s = Script::new();
    s.pipeline.client_first_cap = 4096;
    s.open(5, Role::Client, 40_000, 8080);
    s.data(5, false, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    s.data(7, true, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    let effects = s.pipeline.take_effects();
    assert_eq!(effects.capture, [(TGID, 5, 0)], "HTTP goes back to the global cap; the adopted Redis connection keeps the largest");
}

#[test]
fn a_connection_speaking_nothing_we_know_is_given_up_and_its_fd_released() {
    let mut s = Script::new();
    s.open(5, Role::Client, 40_000, 9999);
    for _ in 0..6 {
        s.data(5, false, b"\x16\x03\x01\x02\x00binary");
    }
    assert!(s.spans().is_empty());
    let effects = s.pipeline.take_effects();
    assert!(effects.ignore_fds.iter().any(|i| i.fd == 5 && i.socket), "the probes are told to stop capturing it");
}

/// The toy protocol (protocols/toy) through the whole pipeline: answers by key in any order,
/// a one-way publish and a pushed delivery, each becoming its own span of the right kind.
#[test]
fn keyed_answers_one_way_sends_and_pushes_become_spans_of_their_kinds() {
    let mut s = Script::new();
    s.open(5, Role::Client, 40_000, 7000);
    s.data(5, false, b"TOY CALL 1 calc/add\nTOY CALL 2 calc/mul\n");
    s.data(5, false, b"TOY PUB news\n");
    s.data(5, true, b"TOY DONE 2 ok\n");
    s.data(5, true, b"TOY MSG news\nTOY DONE 1 overflow\n");
    let spans = s.spans();
    assert_eq!(names(&spans), ["CLIENT calc/add", "CLIENT calc/mul", "PRODUCER publish news", "CONSUMER deliver news"]);
    // Each answer found its own call: call 2 ended at the first read, call 1 at the second.
    assert!(spans[1].span.end_unix_ns < spans[0].span.end_unix_ns);
    assert_eq!(spans[0].span.error_type.as_deref(), Some("overflow"));
    assert_eq!(spans[1].span.status, Status::Unset);
    // A one-way message is no error for want of an answer.
    assert_eq!((spans[2].span.status.clone(), spans[2].span.error_type.clone()), (Status::Unset, None));
    assert_eq!(spans[3].span.kind, SpanKind::Consumer);
    assert_eq!(s.pipeline.stats.answers_without_request, 0);
}

#[test]
fn an_answer_to_an_unknown_key_is_counted_not_paired() {
    let mut s = Script::new();
    s.open(5, Role::Client, 40_000, 7000);
    s.data(5, false, b"TOY CALL 1 a/b\n");
    s.data(5, true, b"TOY DONE 9 ok\n");
    s.close(5);
    let spans = s.spans();
    assert_eq!(names(&spans), ["CLIENT a/b"]);
    assert_eq!(spans[0].span.error_type.as_deref(), Some("no_response"));
    assert_eq!(s.pipeline.stats.answers_without_request, 1);
}

/// The reading thread's record can reach us before the writing thread's (another CPU, the
/// writer preempted before its syscall returned): the answer waits for its request instead
/// of shifting every later pairing on the connection by one.
#[test]
fn an_answer_recorded_before_its_request_still_pairs_with_it() {
    let mut s = Script::new();
    s.open(5, Role::Client, 40_000, 8080);
    s.ts += 10;
    let write_enter = s.ts;
    // The answer's read record first (it returned at write_enter + 50)...
    s.pipeline.handle(Event::Data {
        tgid: TGID,
        tid: 7,
        fd: 5,
        ingress: true,
        ts_enter_ns: write_enter + 40,
        ts_exit_ns: write_enter + 50,
        total: 38,
        payload: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        tls: false,
        cause: Cause::Thread,
    });
    // ... then the request's write record, which entered before the answer came.
    s.pipeline.handle(Event::Data {
        tgid: TGID,
        tid: 8,
        fd: 5,
        ingress: false,
        ts_enter_ns: write_enter,
        ts_exit_ns: write_enter + 60,
        total: 19,
        payload: b"GET /a HTTP/1.1\r\n\r\n",
        tls: false,
        cause: Cause::Thread,
    });
    s.data(5, false, b"GET /b HTTP/1.1\r\n\r\n");
    s.data(5, true, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let spans = s.spans();
    let got: Vec<(smol_str::SmolStr, Option<u16>)> = spans
        .iter()
        .map(|f| {
            let h = f.span.http().expect("http");
            let path = match &h.url {
                crate::spans::record::Url::Client { full } => full.clone().unwrap_or_default(),
                crate::spans::record::Url::Server { path, .. } => path.clone().unwrap_or_default(),
            };
            (path, h.status_code)
        })
        .collect();
    assert_eq!(got, [("http://127.0.0.1:8080/a".into(), Some(200)), ("http://127.0.0.1:8080/b".into(), Some(404))]);
    assert_eq!(s.pipeline.stats.answers_without_request, 0);
}

#[test]
fn an_answer_that_ended_before_the_next_request_began_is_counted_not_paired() {
    let mut s = Script::new();
    s.open(5, Role::Client, 40_000, 8080);
    // An answer to a request never captured, then a request of its own.
    s.data(5, true, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    s.data(5, false, b"GET /b HTTP/1.1\r\n\r\n");
    s.data(5, true, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let spans = s.spans();
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].span.http().and_then(|h| h.status_code), Some(404));
    assert_eq!(s.pipeline.stats.answers_without_request, 1);
}

/// A thread serving one request writes two streams' requests in one write on a multiplexed
/// connection (grpc-core's transport writes what every thread queued): it made one of them at
/// most, so neither gets a parent; both link to the request the thread serves. A stream
/// written alone by the same thread is its own call.
#[test]
fn several_streams_in_one_write_are_not_all_the_writing_threads() {
    const HEADERS: u8 = 1;
    const END_STREAM_AND_HEADERS: u8 = 0x5;
    let mut s = Script::new();
    s.open(5, Role::Server, 8080, 40_000);
    s.data(5, true, b"GET /front HTTP/1.1\r\nHost: x\r\n\r\n");
    s.open(6, Role::Client, 41_000, 50_051);
    let preface = crate::protocols::http2::client_preface();
    s.data(6, false, &preface);
    // GET, http, / on streams 1 and 3 in one write; stream 5 alone.
    let get = [0x82, 0x86, 0x84];
    let mut two = crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, 1, &get);
    two.extend(crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, 3, &get));
    s.data(6, false, &two);
    s.data(6, false, &crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, 5, &get));
    s.data(6, true, &crate::protocols::http2::frame_bytes(4, 0, 0, &[]));
    for stream in [1, 3, 5] {
        s.data(6, true, &crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, stream, &[0x88]));
    }
    s.data(5, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let spans = s.spans();
    let front = spans.iter().find(|s| s.span.kind == SpanKind::Server).expect("the front request").span.ids.span_id;
    let clients: Vec<_> = spans.iter().filter(|s| s.span.kind == SpanKind::Client).collect();
    assert_eq!(clients.len(), 3, "{:?} {:?}", names(&spans), s.pipeline.protocol_stats());
    let (batched, alone) = clients.split_at(2);
    for c in batched {
        assert_eq!(c.span.ids.parent, None, "no parent on a guess");
        assert_eq!(c.span.ids.links.iter().map(|l| l.1).collect::<Vec<_>>(), [front], "a link to the candidate");
    }
    assert_eq!(alone[0].span.ids.parent, Some(front));
}

/// A writer that carries several streams' requests in one write, and said for whom it writes
/// each (grpc-go's loopy goroutine, `Event::StreamCaller`): each stream goes under the request
/// its own caller serves. Without a hint a stream of such a write gets no parent.
#[test]
fn stream_hints_place_each_stream_of_a_batched_write() {
    const HEADERS: u8 = 1;
    const END_STREAM_AND_HEADERS: u8 = 0x5;
    let (first, second, loopy) = (11, 12, 13);
    let mut s = Script::new();
    s.open(5, Role::Server, 8080, 40_000);
    s.open(6, Role::Server, 8080, 40_001);
    s.data_by(first, 5, true, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    s.data_by(second, 6, true, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    s.open(7, Role::Client, 41_000, 50_051);
    let preface = crate::protocols::http2::client_preface();
    s.data_by(loopy, 7, false, &preface);
    for (stream, caller) in [(1, first), (3, second)] {
        s.ts += 1;
        s.pipeline.handle(Event::StreamCaller { tgid: TGID, stream, caller, cause: Cause::Thread, ts_ns: s.ts });
    }
    // GET, http, / on streams 1, 3 and 5 in one write; no hint for 5.
    let mut three = Vec::new();
    for stream in [1, 3, 5] {
        three.extend(crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, stream, &[0x82, 0x86, 0x84]));
    }
    s.data_by(loopy, 7, false, &three);
    s.data_by(loopy, 7, true, &crate::protocols::http2::frame_bytes(4, 0, 0, &[]));
    for stream in [1, 3, 5] {
        s.data_by(loopy, 7, true, &crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, stream, &[0x88]));
    }
    s.data_by(first, 5, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    s.data_by(second, 6, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let spans = s.spans();
    let server = |path: &str| {
        let of = |s: &&FinishedSpan| matches!(s.span.http().map(|h| &h.url), Some(crate::spans::record::Url::Server { path: Some(p), .. }) if p == path);
        spans.iter().find(of).expect("server span").span.ids.span_id
    };
    let clients: Vec<_> = spans.iter().filter(|s| s.span.kind == SpanKind::Client).map(|s| s.span.ids.parent).collect();
    assert_eq!(clients, [Some(server("/a")), Some(server("/b")), None], "streams 1 and 3 under their callers' requests, 5 under none");
}

/// node's shape: each request's callback asks nghttp2 for a stream (`Event::StreamCaller` with
/// the callback as cause), and the frames leave later, several streams in one write made
/// outside any callback. Each stream goes under the request of the callback that asked for
/// it; a stream id two callbacks were handed at once (two connections) goes under none.
#[test]
fn stream_hints_from_event_loop_callbacks_place_streams_written_later() {
    const HEADERS: u8 = 1;
    const END_STREAM_AND_HEADERS: u8 = 0x5;
    let callback = |fd: u32, seq: u32| Cause::Callback { fd, seq };
    let mut s = Script::new();
    s.open(5, Role::Server, 8080, 40_000);
    s.open(6, Role::Server, 8080, 40_001);
    s.open(7, Role::Client, 41_000, 50_051);
    s.data_in(Cause::Outside, TGID, 7, false, &crate::protocols::http2::client_preface());
    s.data_in(callback(5, 1), TGID, 5, true, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    for (stream, cause) in [(1, callback(5, 1)), (5, callback(5, 1))] {
        s.ts += 1;
        s.pipeline.handle(Event::StreamCaller { tgid: TGID, stream, caller: TGID, cause, ts_ns: s.ts });
    }
    s.data_in(callback(6, 2), TGID, 6, true, b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    for (stream, cause) in [(3, callback(6, 2)), (5, callback(6, 2))] {
        s.ts += 1;
        s.pipeline.handle(Event::StreamCaller { tgid: TGID, stream, caller: TGID, cause, ts_ns: s.ts });
    }
    let mut three = Vec::new();
    for stream in [1, 3, 5] {
        three.extend(crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, stream, &[0x82, 0x86, 0x84]));
    }
    s.data_in(Cause::Outside, TGID, 7, false, &three);
    s.data_in(callback(7, 3), TGID, 7, true, &crate::protocols::http2::frame_bytes(4, 0, 0, &[]));
    for stream in [1, 3, 5] {
        s.data_in(callback(7, 3), TGID, 7, true, &crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, stream, &[0x88]));
    }
    s.data_in(Cause::Outside, TGID, 5, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    s.data_in(Cause::Outside, TGID, 6, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let spans = s.spans();
    let server = |path: &str| {
        let of = |s: &&FinishedSpan| matches!(s.span.http().map(|h| &h.url), Some(crate::spans::record::Url::Server { path: Some(p), .. }) if p == path);
        spans.iter().find(of).expect("server span").span.ids.span_id
    };
    let clients: Vec<_> = spans.iter().filter(|s| s.span.kind == SpanKind::Client).map(|s| s.span.ids.parent).collect();
    assert_eq!(clients, [Some(server("/a")), Some(server("/b")), None], "streams 1 and 3 under their callbacks' requests, 5 (two callers) under none");
}

/// A request naming HPACK entries never seen (a connection joined mid-stream) asks for the
/// process's library probes once; when no request has wanted them for a while, they are let go.
#[test]
fn library_probes_are_asked_for_once_and_let_go_when_no_longer_wanted() {
    const HEADERS: u8 = 1;
    const END_STREAM_AND_HEADERS: u8 = 0x5;
    let mut s = Script::new();
    s.open(7, Role::Client, 41_000, 50_051);
    // POST, then entry 62, never seen: a connection opened before attach.
    for stream in [1, 3] {
        s.data(7, false, &crate::protocols::http2::frame_bytes(HEADERS, END_STREAM_AND_HEADERS, stream, &[0x83, 0xbe]));
    }
    let effects = s.pipeline.take_effects();
    assert_eq!(effects.library_fields, [TGID], "asked once");
    let _ = s.pipeline.tick(Instant::now() + Duration::from_secs(5));
    assert!(s.pipeline.take_effects().library_fields_done.is_empty(), "still wanted");
    let _ = s.pipeline.tick(Instant::now() + Duration::from_secs(40));
    assert_eq!(s.pipeline.take_effects().library_fields_done, [TGID]);
}

/// `--overhead-budget`'s last level: one connection in two is captured, the others are handed
/// to the probes to skip, and their in-flight requests end without a span; stepping up takes
/// them back at once, heads only, and their next requests are spans again.
#[test]
fn a_sampled_process_keeps_one_connection_in_n_and_takes_the_others_back_when_stepping_up() {
    fn exchange(s: &mut Script, fd: u32, prefix: &str) {
        s.data(fd, true, format!("GET /{prefix}/{fd} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
        s.data(fd, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
    fn details(spans: &[FinishedSpan]) -> Vec<(String, bool, u32)> {
        spans.iter().map(|f| (f.span.detail(), f.span.capture_head_only, f.span.capture_one_in)).collect()
    }
    let mut s = Script::new();
    // The process's connections 0 to 3, on fds 5 to 8.
    for fd in 5..9 {
        s.open(fd, Role::Server, 8080, 40_000 + fd as u16);
    }
    s.data(6, true, b"GET /in-flight HTTP/1.1\r\n\r\n");
    s.pipeline.set_head_only(TGID, true);
    s.pipeline.set_sampling(TGID, 2);
    for fd in 5..9 {
        exchange(&mut s, fd, "sampled");
    }
    let head = |path: &str| (format!("{path} → 200"), true, 2);
    assert_eq!(details(&s.spans()), [head("/sampled/5"), head("/sampled/7")]);
    assert_eq!(s.pipeline.stats.sampled_out, 1, "the request in flight on fd 6 when it left the share");
    let effects = s.pipeline.take_effects();
    let skipped: Vec<(u32, u8)> = effects.ignore_fds.iter().map(|i| (i.fd, i.generation)).collect();
    assert_eq!(skipped, [(6, 7), (8, 9)], "the probes skip the others, on those connections only");
    assert!(effects.recapture.is_empty());

    s.pipeline.set_sampling(TGID, 1);
    let mut back: Vec<(u32, u8, u16)> = s.pipeline.take_effects().recapture.iter().map(|r| (r.fd, r.generation, r.cap)).collect();
    back.sort_unstable();
    assert_eq!(back, [(6, 7, 256), (8, 9, 256)], "captured again at once, heads only");
    for fd in 5..9 {
        exchange(&mut s, fd, "all");
    }
    let all: Vec<(String, bool, u32)> = ["/all/5", "/all/6", "/all/7", "/all/8"].iter().map(|p| (format!("{p} → 200"), true, 0)).collect();
    assert_eq!(details(&s.spans()), all);
    assert_eq!(s.pipeline.stats.answers_without_request, 0);
}

/// A sampled process's thread may be serving requests that were never seen (connections
/// outside the share): serving one seen request is no evidence that a call it makes is for
/// that request. Here the thread also serves an unseen one, and the call is no one's child:
/// with every connection captured, the two requests on the thread would make it ambiguous.
#[test]
fn a_sampled_processs_calls_get_no_parent_from_the_thread_alone() {
    let mut s = Script::new();
    s.pipeline.set_sampling(TGID, 2);
    // Connections 0 (in the share) and 1 (out of it).
    s.open(5, Role::Server, 8080, 40_005);
    s.open(6, Role::Server, 8080, 40_006);
    s.data(5, true, b"GET /seen HTTP/1.1\r\n\r\n");
    s.data(6, true, b"GET /unseen HTTP/1.1\r\n\r\n");
    // Connection 2, a client, in the share: the thread calls Redis.
    s.open(7, Role::Client, 40_007, 6379);
    s.data(7, false, b"*1\r\n$4\r\nPING\r\n");
    s.data(7, true, b"+PONG\r\n");
    s.data(5, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    s.data(6, false, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let spans = s.spans();
    let server = spans.iter().find(|f| f.span.detail() == "/seen → 200").expect("the seen request's span");
    let call = spans.iter().find(|f| f.span.name == "PING").expect("the call's span");
    assert_eq!(spans.len(), 2, "nothing of the unseen request");
    assert_eq!(call.span.ids.parent, None, "not the seen request's child on the thread's word");
    assert_ne!(call.span.ids.trace_id, server.span.ids.trace_id);
}
