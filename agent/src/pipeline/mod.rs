//! The event pipeline: events → connections → HTTP messages → spans → linked spans.
//! No I/O of its own: /proc look-ups go through `Host`, so recorded events can be replayed.

mod library;

use crate::memory_bio::{Held, MemoryBioHold};
use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::callbacks::Callbacks;
use crate::conn::{ConnInfo, ConnTable, Direction, PendingRequest, Role};
use crate::events::{Cause, Event};
use crate::link::consuming::{OpenDeliveries, Working};
use crate::link::handed::{HandedMessages, Work};
use crate::link::{CalleeEnd, Decision, Evidence, LinkStats, Linker, PeerKey, RequestFacts, StitchStats, Why};
use crate::process::{FdKind, ProcessResource};
use crate::protocols::message::{Correlation, Message, Request, RequestFields, Response, Writer};
use crate::protocols::parser::Segment;
use crate::spans::record::{SpanKind, SpanRecord};
use crate::spans::{Answer, Clock, DbSpanOptions, path_of};
use crate::traceparent::SpanId;

/// Listening sockets whose address is remembered (a bound on a map of long-lived sockets).
const MAX_LISTENERS: usize = 4096;
/// How often a process that does not run gevent is asked again (`look_for_shared_threads`).
const SHARED_THREADS_LOOK: Duration = Duration::from_secs(1);
/// How long a process is seen dead before its connections are ended without its exit record.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Spans waiting for their trace context before the queue is considered runaway.
const MAX_WAITING: usize = 100_000;
/// Capacity of the waiting queue kept from one tick to the next (~2 MiB of records): a
/// queue built afresh each tick grew by doubling, and the reallocations copied every waiting
/// span again (~4% of the agent's time under nginx load). A spike's larger queue is given
/// back.
const KEEP_WAITING: usize = 4096;

/// What the pipeline asks of the machine.
pub trait Host {
    fn fd_kind(&mut self, tgid: u32, fd: u32) -> FdKind;
    /// (local, remote) of socket `fd` whose /proc link names `inode`; None when that fd is no
    /// longer that socket.
    fn socket_ends(&mut self, tgid: u32, fd: u32, inode: u64) -> Option<(Option<std::net::SocketAddr>, Option<std::net::SocketAddr>)>;
    fn resource(&mut self, tgid: u32) -> Option<ProcessResource>;
    fn is_alive(&mut self, tgid: u32) -> bool;
    /// Whether the process's threads each run many tasks that take turns (gevent's
    /// greenlets): then a thread is no unit of work.
    fn shares_threads(&mut self, _tgid: u32) -> bool {
        false
    }
}

/// The real host: /proc.
pub struct ProcHost;

impl Host for ProcHost {
    fn fd_kind(&mut self, tgid: u32, fd: u32) -> FdKind {
        crate::process::fd_kind(tgid, fd)
    }
    fn socket_ends(&mut self, tgid: u32, fd: u32, inode: u64) -> Option<(Option<std::net::SocketAddr>, Option<std::net::SocketAddr>)> {
        crate::process::socket_ends(tgid, fd, inode)
    }
    fn resource(&mut self, tgid: u32) -> Option<ProcessResource> {
        crate::process::resource(tgid)
    }
    fn is_alive(&mut self, tgid: u32) -> bool {
        crate::targets::is_alive(tgid)
    }
    fn shares_threads(&mut self, tgid: u32) -> bool {
        crate::process::runs_gevent(tgid)
    }
}

/// A span ready for export, with the resource of the process it came from.
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    pub resource: Arc<ProcessResource>,
    pub span: SpanRecord,
}

/// An fd the probes should stop capturing.
#[derive(Clone, Copy, Debug)]
pub struct IgnoreFd {
    pub tgid: u32,
    pub fd: u32,
    /// A socket that speaks no protocol we know; else not a socket at all (a file, a pipe).
    pub socket: bool,
    /// The socket's connection generation, 0 when unknown (see `FdState::generation`).
    pub generation: u8,
    /// Out of its process's sampled share, and carrying TLS: its plaintext is skipped too
    /// (`fd_state::TLS_SKIPPED`).
    pub tls: bool,
}

/// A socket back in its process's sampled share (`--overhead-budget`): the probes capture it
/// again, at `cap` bytes a call (0: the global cap).
#[derive(Clone, Copy, Debug)]
pub struct Recapture {
    pub tgid: u32,
    pub fd: u32,
    /// The connection's generation (see `IgnoreFd::generation`): never another's.
    pub generation: u8,
    pub cap: u16,
}

/// Whether a connection is in the share of a process captured one connection in `one_in`, by
/// its number among the process's (`ConnInfo::ordinal`): any `one_in` in a row hold one, and
/// its first connection is always in.
fn in_share(ordinal: u64, one_in: u32) -> bool {
    ordinal.is_multiple_of(u64::from(one_in.max(1)))
}

/// What the connections of one protocol amounted to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProtocolStats {
    pub connections: u64,
    pub requests: u64,
    /// Times a parser lost the framing and found it again.
    pub resyncs: u64,
}

impl ProtocolStats {
    fn add(&mut self, conn: &crate::conn::Conn) {
        self.connections += 1;
        self.requests += conn.requests;
        self.resyncs += conn.resyncs();
    }
}

/// What the pipeline asks of the agent, which owns the probes: it has no I/O of its own.
#[derive(Debug, Default)]
pub struct Effects {
    /// fds the probes should stop capturing (not sockets, no protocol we know, or out of
    /// their process's sampled share).
    pub ignore_fds: Vec<IgnoreFd>,
    /// Sockets to capture again: back in their process's sampled share.
    pub recapture: Vec<Recapture>,
    /// Processes that appeared (fork) or changed program (exec), for the agent to attach
    /// per-process probes to.
    pub started: Vec<u32>,
    /// Traced processes that ran exec (fleet mode checks the new program).
    pub execs: Vec<u32>,
    /// Processes that are not traced and ran exec (discovery by selectors): the agent decides
    /// whether the new program is to be traced.
    pub execs_untraced: Vec<u32>,
    /// Sockets whose protocol wants another capture size: (tgid, fd, bytes per syscall).
    pub capture: Vec<(u32, u32, u16)>,
    /// Processes whose connections have requests waiting for their library's header fields
    /// (`Parser::library_fields_wanted`): attach the probes that send them.
    pub library_fields: Vec<u32>,
    /// Processes whose connections have not wanted them for `LIBRARY_IDLE`: detach them.
    pub library_fields_done: Vec<u32>,
}

struct Waiting {
    id: SpanId,
    tgid: u32,
    span: SpanRecord,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct PipelineStats {
    pub events: u64,
    /// Bytes of ring-buffer records read: what the probes copied (issue 19 measures it per
    /// request).
    pub record_bytes: u64,
    pub spans: u64,
    pub malformed_records: u64,
    pub dropped_unlinked: u64,
    pub tls_without_socket: u64,
    /// Answers whose request was not captured (beyond the capture cap, or before attach).
    pub answers_without_request: u64,
    /// Requests whose server answered in another protocol: not spans.
    pub answered_in_another_protocol: u64,
    /// SERVER requests on a connection the server closed without ever writing to it (a
    /// PostgreSQL or Redis server refusing an HTTP request): not spans.
    pub closed_unanswered: u64,
    /// Requests pipelined after an answer that said `Connection: close` (the server never
    /// read them; a smuggled request nginx refused): not spans.
    pub after_close: u64,
    /// Requests and answers in flight on a connection when it left its process's sampled
    /// share (`--overhead-budget`): not spans.
    pub sampled_out: u64,
}

pub struct Pipeline<H: Host> {
    host: H,
    clock: Clock,
    pub db_options: DbSpanOptions,
    /// Path templates for HTTP span names (`url.template`).
    pub routes: crate::spans::routes::Routes,
    /// The capture the probes give a connected socket (and one found open at attach) until the
    /// agent has recognised its protocol (`Settings::client_first_cap`; 0: the global cap): once it has, the
    /// connection is set to what its parser wants.
    pub client_first_cap: u16,
    conns: ConnTable,
    linker: Linker,
    waiting: Vec<Waiting>,
    /// The queue the last tick emptied, kept for its capacity (see `KEEP_WAITING`).
    waiting_spare: Vec<Waiting>,
    resources: HashMap<u32, Arc<ProcessResource>>,
    /// Addresses of listening sockets by (tgid, fd): our end of the connections they accept.
    listeners: HashMap<(u32, u32), Option<std::net::SocketAddr>>,
    /// Command names from the kernel, for processes gone before /proc could be read.
    comms: HashMap<u32, String>,
    /// What the agent must do about what the events said, since `take_effects`.
    effects: Effects,
    memory_bio: MemoryBioHold,
    /// Event-loop callbacks: what each thread's current callback has read.
    callbacks: Callbacks,
    /// Messages handed to worker processes over pipes.
    handed: HandedMessages,
    /// Deliveries consumer threads read and have not settled.
    consuming: OpenDeliveries,
    /// The callback the record being handled was made in.
    cause: Cause,
    /// Processes whose threads are not a request's unit of work for plain sockets (Go: the
    /// goroutine is, and it moves between threads), so the thread rule does not apply.
    thread_rule_off: rustc_hash::FxHashSet<u32>,
    /// Processes over their overhead budget (`budget`): their sockets copy heads only.
    head_only: rustc_hash::FxHashSet<u32>,
    /// Processes capturing one connection in N (`--overhead-budget`), by pid.
    sampled: HashMap<u32, u32>,
    /// When each process was last asked whether its threads are shared (`Host::shares_threads`).
    threads_looked_at: HashMap<u32, Instant>,
    /// Processes seen dead by housekeeping, since when (`remove_exited`).
    dead_since: HashMap<u32, Instant>,
    pub stats: PipelineStats,
    /// ZEROTRACE_DEBUG=1: print connection events (development aid).
    debug: bool,
    /// Messages parsed from the segment being handled (kept to reuse its allocation).
    parsed: Vec<Message>,
    /// Per protocol, the connections that ended (open ones are added in `protocol_stats`).
    ended: std::collections::BTreeMap<&'static str, ProtocolStats>,
    /// The segment being handled carried several requests of a multiplexed connection.
    batched_write: bool,
    /// Per process, streams about to be written and for whom (`Event::StreamCaller`), oldest
    /// first; taken by the stream's request.
    stream_callers: HashMap<u32, std::collections::VecDeque<StreamCaller>>,
    /// Header fields from the processes' own HTTP/2 libraries (`library.rs`).
    library: library::LibraryFields,
    /// Processes whose library fields were asked for (`Effects::library_fields`), and when
    /// one of their connections last wanted them.
    library_asked: HashMap<u32, Instant>,
    /// In those processes, the socket each thread (goroutine) read last: a Go server decodes
    /// a connection's header blocks on the goroutine that reads it.
    last_read: HashMap<(u32, u32), u32>,
}

/// Stream `stream` was to be written for the request `evidence` names (taken from its caller
/// when the hint was made: the caller may have moved on by the time the stream is written).
struct StreamCaller {
    stream: u32,
    evidence: Evidence,
    ts_ns: u64,
}

/// A process's library probes come off after its connections wanted them for this long.
const LIBRARY_IDLE: std::time::Duration = std::time::Duration::from_secs(30);
/// A message's identity (`MessagingRequest::identity`), for producer → consumer links.
fn message_identity(request: &Request) -> Option<u64> {
    match &request.fields {
        RequestFields::Messaging(m) => m.identity,
        _ => None,
    }
}

/// Threads whose last read is remembered (`Pipeline::last_read`).
const MAX_LAST_READ: usize = 65536;
/// Stream hints kept per process: a write's worth and more.
const MAX_STREAM_CALLERS: usize = 256;
/// A hint names a request written this soon after it (grpc-go's writer handles the header,
/// then writes; node writes from the next `setImmediate`): an older one is a stream whose
/// request was never seen.
const STREAM_CALLER_NS: u64 = 100_000_000;

impl<H: Host> Pipeline<H> {
    pub fn new(host: H, clock: Clock) -> Self {
        Self {
            host,
            clock,
            db_options: DbSpanOptions::default(),
            routes: Default::default(),
            client_first_cap: 0,
            conns: ConnTable::default(),
            linker: Linker::default(),
            waiting: Vec::new(),
            waiting_spare: Vec::new(),
            resources: HashMap::default(),
            listeners: HashMap::default(),
            comms: HashMap::default(),
            effects: Effects::default(),
            memory_bio: MemoryBioHold::default(),
            callbacks: Callbacks::default(),
            handed: HandedMessages::default(),
            consuming: OpenDeliveries::default(),
            cause: Cause::Thread,
            thread_rule_off: Default::default(),
            head_only: Default::default(),
            sampled: Default::default(),
            threads_looked_at: Default::default(),
            dead_since: HashMap::default(),
            stats: PipelineStats::default(),
            debug: std::env::var_os("ZEROTRACE_DEBUG").is_some(),
            parsed: Vec::new(),
            ended: Default::default(),
            batched_write: false,
            stream_callers: HashMap::default(),
            library: Default::default(),
            library_asked: Default::default(),
            last_read: HashMap::default(),
        }
    }

    pub fn record(&mut self, bytes: &[u8]) {
        self.stats.record_bytes += bytes.len() as u64;
        match crate::events::from_record(bytes) {
            Ok(event) => self.handle(event),
            Err(_) => self.stats.malformed_records += 1,
        }
    }

    pub fn handle(&mut self, event: Event<'_>) {
        self.stats.events += 1;
        // Only a data record says what unit of work it came from; completions that other
        // records cause (a close ends a connection's requests) come from none.
        self.cause = Cause::Thread;
        if self.debug {
            match &event {
                Event::Data { tgid, tid, fd, ingress, total, payload, cause, .. } => {
                    eprintln!(
                        "zerotrace: debug: data {tgid}/{tid} fd {fd} {} {total} bytes ({cause:?}): {:?}",
                        if *ingress { "in" } else { "out" },
                        String::from_utf8_lossy(&payload[..payload.len().min(48)])
                    );
                }
                _ => eprintln!("zerotrace: debug: {event:?}"),
            }
        }
        if let Event::ConnOpen { tgid, comm, .. } = &event {
            let tgid = *tgid;
            // A new program behind a known pid (exec after fork, pid reuse): read it again.
            let stale = self.resources.get(&tgid).is_some_and(|r| !r.executable_name.starts_with(comm.as_str()) && !comm.is_empty());
            if stale {
                self.resources.remove(&tgid);
            }
            self.comms.insert(tgid, comm.clone());
            // Read the resource while the process is alive: short-lived clients are gone by
            // export time. Connections adopted from /proc do the same in `adopt_fd`.
            let _ = self.resource(tgid);
        }
        match event {
            Event::ConnOpen { tgid, tid, fd, role, listen_fd, mut local, mut remote, cause, ts_ns, generation, .. } => {
                if role == Role::Client && local.is_none() {
                    // The handshake finished outside connect(): ask /proc while the socket lives.
                    local = self.local_address(tgid, fd);
                }
                if role == Role::Server && remote.is_none() {
                    // accept(fd, NULL, NULL), as node does: the peer (what same-host stitching
                    // matches on) comes from /proc.
                    remote = self.peer_address(tgid, fd);
                }
                if let Some(listener) = listen_fd {
                    // Our end of an accepted connection is the listener's address: read from
                    // /proc once per listening socket, not once per connection.
                    local = match self.listeners.get(&(tgid, listener)) {
                        Some(addr) => *addr,
                        None => {
                            let addr = self.local_address(tgid, listener);
                            if self.listeners.len() >= MAX_LISTENERS {
                                self.listeners.clear();
                            }
                            self.listeners.insert((tgid, listener), addr);
                            addr
                        }
                    };
                }
                if let (Role::Client, Some(l)) = (role, local) {
                    self.linker.client_connected(l, remote, ts_ns);
                }
                let opened_by = self.opened_by(tgid, tid, fd, cause);
                if let Some(old) = self.conns.open(tgid, fd, role, local, remote) {
                    self.drop_conn(old, tid, None);
                }
                if let Some(conn) = self.conns.get_mut(tgid, fd) {
                    conn.opened_by = opened_by;
                    conn.info.generation = generation;
                }
                if role == Role::Client {
                    self.starts_with_first_cap(tgid, fd);
                }
            }
            Event::Data { tgid, tid, fd, ingress, ts_enter_ns, ts_exit_ns, total, payload, tls, cause } => {
                if self.library.is_receiving()
                    && let Some(list) = self.library.end(tgid, tid)
                {
                    self.take_library_list(list);
                }
                self.cause = cause;
                if tls && fd == zerotrace_abi::FD_UNKNOWN {
                    // TLS over a memory BIO (no syscall inside the SSL call): held until the
                    // thread's ciphertext write names the socket (`Event::TlsSocket`).
                    if !self.memory_bio.hold(tgid, tid, Held::new(ingress, ts_enter_ns, ts_exit_ns, total, payload, cause)) {
                        self.stats.tls_without_socket += 1;
                    }
                    return;
                }
                if self.conns.get_mut(tgid, fd).is_none() && !self.adopt_fd(tgid, fd) {
                    return;
                }
                if ingress && !self.library_asked.is_empty() && self.library_asked.contains_key(&tgid) {
                    if self.last_read.len() >= MAX_LAST_READ {
                        self.last_read.clear();
                    }
                    self.last_read.insert((tgid, tid), fd);
                }
                let one_in = self.one_in(tgid);
                let Some(conn) = self.conns.get_mut(tgid, fd) else { return };
                if conn.sampled_out {
                    return;
                }
                if let Some(one_in) = one_in
                    && !in_share(conn.info.ordinal, one_in)
                {
                    self.sample_out(tgid, fd);
                    return;
                }
                match (tls, conn.info.tls) {
                    (true, false) => conn.start_tls(),
                    // Ciphertext that raced the switch to TLS: not for the HTTP parser.
                    (false, true) => return,
                    _ => {}
                }
                let dir = if ingress { Direction::Ingress } else { Direction::Egress };
                let seg = Segment { data: payload, total, ts_enter_ns, ts_exit_ns };
                let mut parsed = std::mem::take(&mut self.parsed);
                conn.feed(dir, seg, &mut parsed);
                // Recognised now, switched (an h2c upgrade), or in another mode (a Redis
                // connection that subscribed): the capture it needs. A connection that started
                // with the first-request capture goes back to the global one (0) unless its
                // parser wants another.
                let mut wanted = conn.capture_bytes().or_else(|| (conn.protocol().is_some() && conn.capture_asked.is_some()).then_some(0));
                if !self.head_only.is_empty() && self.head_only.contains(&tgid) {
                    // 0 is the global cap: the head is less.
                    wanted = Some(wanted.filter(|&b| b != 0).map_or(crate::budget::HEAD_BYTES, |b| b.min(crate::budget::HEAD_BYTES)));
                }
                if !conn.info.tls
                    && let Some(bytes) = wanted
                    && conn.capture_asked != Some(bytes)
                {
                    conn.capture_asked = Some(bytes);
                    self.effects.capture.push((tgid, fd, bytes));
                }
                if conn.foreign && !conn.info.tls {
                    if self.debug {
                        eprintln!("zerotrace: debug: foreign {tgid} fd {fd} protocol {:?}", conn.protocol());
                    }
                    self.effects.ignore_fds.push(IgnoreFd { tgid, fd, socket: true, generation: conn.info.generation, tls: false });
                }
                if conn.answer_foreign {
                    self.discard_pending(tgid, fd, |stats| &mut stats.answered_in_another_protocol);
                }
                // Several requests of a multiplexed connection in one client write: whichever
                // thread wrote them made one at most (see `Why::BatchedWrite`).
                let keyed_requests = parsed.iter().filter(|m| matches!(m, Message::Request(r) if matches!(r.correlation, Correlation::Key(_)))).count();
                self.batched_write = keyed_requests > 1 && self.conns.get(tgid, fd).is_some_and(|c| c.info.role == Role::Client);
                for m in parsed.drain(..) {
                    self.on_message(tgid, fd, tid, m);
                }
                self.batched_write = false;
                self.parsed = parsed;
                if self.conns.get_mut(tgid, fd).and_then(|c| c.parser_mut()).is_some_and(|p| p.library_fields_wanted()) && self.library_asked.insert(tgid, Instant::now()).is_none()
                {
                    self.effects.library_fields.push(tgid);
                }
            }
            Event::Close { tgid, tid, fd, ts_ns } => {
                for done in self.consuming.closed(tgid, fd) {
                    self.linker.release(&done);
                }
                if let Some(conn) = self.conns.remove(tgid, fd) {
                    if let (Role::Client, Some(local)) = (conn.info.role, conn.info.local) {
                        self.linker.client_closed(local, conn.info.remote, ts_ns);
                    }
                    self.drop_conn(conn, tid, None);
                }
            }
            Event::Exit { tgid, ts_ns, code } => {
                // Its sockets closed without close calls. Killed, or ending with an error code,
                // it cut its requests off; ending cleanly (code 0), it chose not to answer them
                // (a PostgreSQL backend refusing a connection that spoke HTTP), like a close.
                let cut_off = (code != Some(0)).then_some(ts_ns);
                for conn in self.conns.remove_process(tgid) {
                    self.drop_conn(conn, tgid, cut_off);
                }
                self.callbacks.forget_process(tgid);
                self.handed.process_exited(tgid);
                self.sync_handed_holds();
                for done in self.consuming.process_exited(tgid) {
                    self.linker.release(&done);
                }
                self.thread_rule_off.remove(&tgid);
                self.threads_looked_at.remove(&tgid);
                self.routes.process_exited(tgid);
                self.library.forget_process(tgid);
                self.library_asked.remove(&tgid);
                self.last_read.retain(|(t, _), _| *t != tgid);
                self.sampled.remove(&tgid);
                self.head_only.remove(&tgid);
            }
            Event::HeaderField { tgid, tid, stream, cause, ts_ns, decoded, field } => {
                if let Some(list) = self.library.field(tgid, tid, (stream, decoded), cause, ts_ns, field) {
                    self.take_library_list(list);
                }
            }
            Event::HeaderFieldsEnd { tgid, tid, stream, decoded } => {
                if let Some(list) = self.library.end_of(tgid, tid, stream, decoded) {
                    self.take_library_list(list);
                }
            }
            Event::StreamCaller { tgid, stream, caller, cause, ts_ns } => {
                let evidence = self.stream_caller_evidence(tgid, caller, cause);
                let hints = self.stream_callers.entry(tgid).or_default();
                while hints.len() >= MAX_STREAM_CALLERS || hints.front().is_some_and(|h| ts_ns.saturating_sub(h.ts_ns) > STREAM_CALLER_NS) {
                    hints.pop_front();
                }
                hints.push_back(StreamCaller { stream, evidence, ts_ns });
            }
            Event::PipeRead { tgid, tid, fd, ts_ns, payload } => {
                self.handed.pipe_read(tgid, tid, fd, payload, ts_ns);
                self.sync_handed_holds();
            }
            Event::Process { pid, traced: true, parent_tgid } => {
                // A new process or an exec; the probes do not report new threads.
                self.effects.started.push(pid);
                if parent_tgid == 0 {
                    self.effects.execs.push(pid);
                }
            }
            Event::Process { pid, traced: false, .. } => self.effects.execs_untraced.push(pid),
            Event::TlsSocket { tgid, tid, fd } => {
                for held in self.memory_bio.release(tgid, tid) {
                    let Held { ingress, ts_enter_ns, ts_exit_ns, total, payload, cause, .. } = held;
                    self.handle(Event::Data { tgid, tid, fd, ingress, ts_enter_ns, ts_exit_ns, total, payload: &payload, tls: true, cause });
                }
            }
            Event::HandOff { tgid, tid, take: false, item, cause } => {
                self.look_for_shared_threads(tgid);
                // A thread serving nothing of its own hands on what it works for (a consumer
                // thread submitting its delivery's work to a pool).
                let evidence = match self.callbacks.evidence(&self.conns, tgid, tid, zerotrace_abi::FD_UNKNOWN, cause) {
                    // A sampled process's thread may serve requests that were not seen.
                    Evidence::Thread if self.one_in(tgid).is_some() => Evidence::Undecided(Why::SampledProcess, Vec::new()),
                    Evidence::Thread if self.threads_are_units(tgid, tid) && !self.linker.serves(tid) => self.thread_work(tgid, tid).unwrap_or(Evidence::Thread),
                    other => other,
                };
                let evidence = self.linker.portable(tid, evidence);
                self.callbacks.handed(tgid, item, evidence);
            }
            Event::HandOff { tgid, tid, take: true, item, .. } => self.callbacks.taken(tgid, tid, item),
            Event::UnitSpawn { tgid, parent, child, ts_ns } => {
                let parent = match parent {
                    Cause::Task(task) => Some((tgid, task)),
                    _ => None,
                };
                self.linker.unit_spawned((tgid, child), parent, ts_ns);
            }
            Event::Inherit { parent_tgid, child, fd } => {
                if let Some(comm) = self.comms.get(&parent_tgid).cloned() {
                    self.comms.entry(child).or_insert(comm);
                }
                let _ = self.resource(child);
                if let Some(old) = self.conns.inherit(parent_tgid, child, fd) {
                    self.drop_conn(old, child, None);
                }
            }
        }
    }

    /// What says which request a CLIENT request written on `fd` by `tid` belongs to: the unit
    /// of work it was written in; for a plain thread, the work handed to it (a pool thread
    /// serving nothing of its own), and no thread rule in processes whose threads are no unit
    /// of work (Go).
    /// What a stream hint's caller (`caller` running `cause`) says of the request it works
    /// for: a goroutine (grpc-go), the request it serves; an event-loop callback (node), the
    /// request of the connection it runs for, as for a call it wrote itself.
    fn stream_caller_evidence(&self, tgid: u32, caller: u32, cause: Cause) -> Evidence {
        match self.callbacks.evidence(&self.conns, tgid, caller, zerotrace_abi::FD_UNKNOWN, cause) {
            Evidence::Thread => match self.linker.portable(caller, Evidence::Thread) {
                Evidence::Serving(server, _) => Evidence::Serving(server, Why::Goroutine),
                other => other,
            },
            other => other,
        }
    }

    /// What the stream hints say of this keyed request: the hints of its process for its stream
    /// id made just before it was written, if they agree. Hints that disagree (two connections
    /// with the same stream id at once, for different requests) say nothing. Every hint for
    /// the stream is taken either way.
    fn stream_caller(&mut self, tgid: u32, request: &Request) -> Option<Evidence> {
        let Correlation::Key(key) = request.correlation else { return None };
        let hints = self.stream_callers.get_mut(&tgid)?;
        let written = request.timing.first_enter_ns;
        let matches = |h: &StreamCaller| u64::from(h.stream) == key && h.ts_ns <= written && written - h.ts_ns < STREAM_CALLER_NS;
        let mut found = hints.iter().filter(|h| matches(h)).map(|h| &h.evidence);
        let agreed = found.next().filter(|first| found.all(|other| other == *first)).cloned();
        hints.retain(|h| u64::from(h.stream) != key);
        agreed
    }

    /// `writer`: what the request says of who wrote it.
    fn client_evidence(&self, tgid: u32, tid: u32, fd: u32, writer: Writer) -> Evidence {
        // Before any runtime's evidence: a callback or a thread that wrote several streams'
        // requests at once made one of them at most, and a transport shared by threads writes
        // for any of them. The writer's request is a candidate, not a parent.
        let unsure = match (self.batched_write, writer) {
            (true, _) => Some(Why::BatchedWrite),
            (false, Writer::SharedTransport) => Some(Why::SharedTransport),
            (false, Writer::Unknown) => Some(Why::UnknownWriter),
            (false, Writer::Caller) => None,
        };
        if let Some(why) = unsure {
            let candidates = match self.linker.portable(tid, Evidence::Thread) {
                Evidence::Serving(server, _) => vec![server],
                _ => Vec::new(),
            };
            return Evidence::Undecided(why, candidates);
        }
        let evidence = self.callbacks.evidence(&self.conns, tgid, tid, fd, self.cause);
        if evidence != Evidence::Thread {
            return evidence;
        }
        if self.one_in(tgid).is_some() {
            return Evidence::Undecided(Why::SampledProcess, Vec::new());
        }
        if !self.threads_are_units(tgid, tid) {
            return Evidence::Undecided(Why::UnfollowedRuntime, Vec::new());
        }
        if !self.linker.serves(tid)
            && let Some(work) = self.thread_work(tgid, tid)
        {
            return work;
        }
        Evidence::Thread
    }

    /// Whether `tid` is one unit of work: not a thread of a process whose threads run many
    /// (Go's, unless followed by goroutine; gevent's).
    fn threads_are_units(&self, tgid: u32, tid: u32) -> bool {
        tid & zerotrace_abi::GOROUTINE_ACTOR != 0 || !self.thread_rule_off.contains(&tgid)
    }

    /// What a thread that serves no request of its own works for: work it took from a thread
    /// that did (a pool), the message a pipe handed it (a worker process), or the deliveries
    /// it read and has not settled (a consumer loop).
    fn thread_work(&self, tgid: u32, tid: u32) -> Option<Evidence> {
        if let Some(handed) = self.callbacks.delegated(tgid, tid) {
            return Some(handed.clone());
        }
        if let Some(work) = self.handed.working_for(tgid, tid) {
            return Some(match work {
                Work::One(consumer) => Evidence::Serving(*consumer, Why::HandedMessage),
                Work::Several(candidates) => Evidence::Undecided(Why::HandedSeveral, candidates.clone()),
            });
        }
        Some(match self.consuming.working(tgid, tid)? {
            Working::One(delivery) => Evidence::Serving(delivery, Why::Delivery),
            Working::Unsettled(delivery) => Evidence::Undecided(Why::UnsettledDelivery, vec![delivery]),
            Working::Several(candidates) => Evidence::Undecided(Why::DeliveriesSeveral, candidates),
        })
    }

    /// The SERVER span whose event-loop callback is connecting `fd`, when the evidence names
    /// exactly one.
    fn opened_by(&self, tgid: u32, tid: u32, fd: u32, cause: Cause) -> Option<crate::traceparent::SpanId> {
        if !matches!(cause, Cause::Callback { .. }) {
            return None;
        }
        let evidence = self.callbacks.evidence(&self.conns, tgid, tid, fd, cause);
        match self.linker.decide(tid, "", &evidence) {
            Decision::Parent(server, _) => Some(server),
            Decision::NoParent(..) | Decision::AwaitUnit(_) | Decision::AwaitNewChain(_) => None,
        }
    }

    /// A library's whole field list for one stream's request. A server's completes the
    /// request of the connection whose callback decoded it (waiting for its answer); a
    /// client's waits for the request written next on that stream id (`on_request`).
    fn take_library_list(&mut self, list: library::List) {
        if !list.decoded {
            self.library.keep_for_client(list);
            return;
        }
        let fd = match list.cause {
            Cause::Callback { fd, .. } => fd,
            _ => match self.last_read.get(&(list.tgid, list.tid)) {
                Some(&fd) => fd,
                None => return,
            },
        };
        let Some(conn) = self.conns.get_mut(list.tgid, fd) else { return };
        let key = u64::from(list.stream);
        if conn.info.role != Role::Server {
            return;
        }
        let Some(done) = conn.parser_mut().and_then(|p| p.complete_request(key, &list.fields)) else { return };
        match conn.pending.keyed_mut(key) {
            // Its trace context was weighed when its span started: a `traceparent` only the
            // library saw is not adopted now (the span keeps the trace it started in).
            Some(pending) => (pending.request.fields, pending.request.writer) = (done.fields, done.writer),
            None if self.debug => eprintln!("zerotrace: debug: pid {} stream {key}: completed from the library after its answer", list.tgid),
            None => {}
        }
    }

    /// What the agent must act on since the last call.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// The linker keeps the CONSUMER spans that hand-offs may still name (`HandedMessages`).
    fn sync_handed_holds(&mut self) {
        let (hold, release) = self.handed.take_holds();
        for span in hold {
            self.linker.hold(span);
        }
        for span in &release {
            self.linker.release(span);
        }
    }

    /// Whether `tgid` runs gevent, asked of the host at most once a second while it does not
    /// (it may import gevent late), never again once it does: then the thread rule is off.
    fn look_for_shared_threads(&mut self, tgid: u32) {
        if self.thread_rule_off.contains(&tgid) {
            return;
        }
        let now = Instant::now();
        if self.threads_looked_at.get(&tgid).is_some_and(|at| now.saturating_duration_since(*at) < SHARED_THREADS_LOOK) {
            return;
        }
        self.threads_looked_at.insert(tgid, now);
        if self.host.shares_threads(tgid) {
            eprintln!("zerotrace: pid {tgid} runs gevent: its greenlets take turns on its threads, so its calls get no parent from the thread that made them");
            self.thread_rule_off.insert(tgid);
        }
    }

    /// Whether some trace came in marked "not sampled" (parent-based sampling has work).
    pub fn has_unsampled_remote(&self) -> bool {
        self.linker.unsampled_remote
    }

    /// The sampled flag a trace came in with, if it did (parent-based sampling).
    pub fn remote_sampled(&self, trace: &crate::traceparent::TraceId) -> Option<bool> {
        self.linker.remote_sampled(trace)
    }

    /// The thread rule does not hold for this process's plain sockets (a Go program).
    /// Head-only capture for a process over its overhead budget (`--overhead-budget`), or
    /// full capture again. Its sockets change at their next read or write.
    pub fn set_head_only(&mut self, tgid: u32, on: bool) {
        if on {
            self.head_only.insert(tgid);
        } else {
            self.head_only.remove(&tgid);
        }
    }

    /// Captures one connection in `one_in` of process `tgid` (1: all), for
    /// `--overhead-budget`. A connection leaves the share at its next record; one back in it
    /// is captured again now, since the probes send nothing of it to wait for.
    pub fn set_sampling(&mut self, tgid: u32, one_in: u32) {
        if one_in > 1 {
            self.sampled.insert(tgid, one_in);
        } else {
            self.sampled.remove(&tgid);
        }
        let cap = if self.head_only.contains(&tgid) { crate::budget::HEAD_BYTES } else { 0 };
        for fd in self.conns.fds_of(tgid, |c| c.sampled_out && in_share(c.info.ordinal, one_in)) {
            let Some(conn) = self.conns.get_mut(tgid, fd) else { continue };
            conn.set_sampled_out(false);
            conn.capture_asked = (cap != 0 && !conn.info.tls).then_some(cap);
            self.effects.recapture.push(Recapture { tgid, fd, generation: conn.info.generation, cap });
        }
    }

    /// One connection in how many process `tgid` captures, when it samples them. Asked per
    /// record: an empty map answers without hashing.
    fn one_in(&self, tgid: u32) -> Option<u32> {
        if self.sampled.is_empty() { None } else { self.sampled.get(&tgid).copied() }
    }

    /// Takes a connection out of its process's sampled share: what is in flight on it ends
    /// without a span (counted), and the probes skip it from now on, its TLS plaintext too
    /// (OpenSSL's and Go's; over a memory BIO it still comes, and is dropped here).
    fn sample_out(&mut self, tgid: u32, fd: u32) {
        self.discard_pending(tgid, fd, |stats| &mut stats.sampled_out);
        let Some(conn) = self.conns.get_mut(tgid, fd) else { return };
        self.stats.sampled_out += conn.early.len() as u64;
        conn.set_sampled_out(true);
        self.effects.ignore_fds.push(IgnoreFd { tgid, fd, socket: true, generation: conn.info.generation, tls: conn.info.tls });
    }

    pub fn is_head_only(&self, tgid: u32) -> bool {
        self.head_only.contains(&tgid)
    }

    pub fn thread_rule_off(&mut self, tgid: u32) {
        self.thread_rule_off.insert(tgid);
    }

    pub fn link_stats(&self) -> &LinkStats {
        &self.linker.stats
    }

    pub fn stitch_stats(&self) -> StitchStats {
        self.linker.stitch
    }

    pub fn hand_off_stats(&self) -> crate::link::handed::HandOffStats {
        self.handed.stats
    }

    pub fn consumer_stats(&self) -> crate::link::ConsumerStats {
        self.linker.consumers
    }

    fn local_address(&mut self, tgid: u32, fd: u32) -> Option<std::net::SocketAddr> {
        self.socket_addresses(tgid, fd).0
    }

    fn peer_address(&mut self, tgid: u32, fd: u32) -> Option<std::net::SocketAddr> {
        self.socket_addresses(tgid, fd).1
    }

    fn socket_addresses(&mut self, tgid: u32, fd: u32) -> (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>) {
        match self.host.fd_kind(tgid, fd) {
            FdKind::Socket(inode) => self.host.socket_ends(tgid, fd, inode).unwrap_or((None, None)),
            _ => (None, None),
        }
    }

    /// A read/write on a socket we never saw opened (open when the agent attached): its ends
    /// come from /proc. The probes only send known sockets, so a process already gone still
    /// gets a connection, without addresses; an fd that is no socket now is a stale entry.
    fn adopt_fd(&mut self, tgid: u32, fd: u32) -> bool {
        let _ = self.resource(tgid);
        let (local, remote) = match self.host.fd_kind(tgid, fd) {
            FdKind::Socket(inode) => self.host.socket_ends(tgid, fd, inode).unwrap_or((None, None)),
            FdKind::Gone => (None, None),
            FdKind::Other => {
                self.effects.ignore_fds.push(IgnoreFd { tgid, fd, socket: false, generation: 0, tls: false });
                return false;
            }
        };
        self.conns.open(tgid, fd, Role::Unknown, local, remote);
        // Found open at attach with the first-request cap (`Probes::adopt_open_sockets`).
        self.starts_with_first_cap(tgid, fd);
        true
    }

    /// A connection the probes capture with the first-request cap (connected, or found open
    /// at attach): recognised, it goes to what its parser asks, or the global cap.
    fn starts_with_first_cap(&mut self, tgid: u32, fd: u32) {
        if self.client_first_cap != 0
            && let Some(conn) = self.conns.get_mut(tgid, fd)
        {
            conn.capture_asked = Some(self.client_first_cap);
        }
    }

    fn on_message(&mut self, tgid: u32, fd: u32, tid: u32, message: Message) {
        match message {
            Message::Request(request) => self.on_request(tgid, fd, tid, request, Answer::Unanswered),
            Message::OneWay(request) | Message::Push(request) => self.on_request(tgid, fd, tid, request, Answer::NoneExpected),
            Message::Response(response) => self.answer(tgid, fd, tid, response),
            Message::Settle(_) => {
                for done in self.consuming.settled(tgid, tid, fd) {
                    self.linker.release(&done);
                }
            }
        }
    }

    /// Starts the span of a request. One that expects no answer (`Answer::NoneExpected`) is
    /// complete at once; the others wait for their answer.
    fn on_request(&mut self, tgid: u32, fd: u32, tid: u32, mut request: Request, answer: Answer<'_>) {
        let Some(conn) = self.conns.get_mut(tgid, fd) else { return };
        // A client's library was handed this request's fields before it wrote them: they
        // complete what the bytes left unknown.
        if let Correlation::Key(key) = request.correlation
            && conn.info.role == Role::Client
            && self.library.has_client_lists(tgid)
            && let Some(fields) = self.library.for_client_request(tgid, key as u32, request.timing.first_enter_ns)
            && let Some(done) = conn.parser_mut().and_then(|p| p.complete_request(key, &fields))
        {
            (request.fields, request.context, request.writer) = (done.fields, done.context, done.writer);
        }
        let path = match &request.fields {
            RequestFields::Http(h) => h.target.as_deref().map_or("", path_of),
            _ => "",
        };
        let t = &request.timing;
        let facts = RequestFacts {
            tid,
            conn_id: conn.info.id,
            path,
            traceparent: request.context.traceparent.as_deref(),
            start_enter_ns: t.first_enter_ns,
            start_exit_ns: t.first_exit_ns,
            key: match request.correlation {
                Correlation::Key(k) => Some(k),
                Correlation::InOrder => None,
            },
        };
        let span = match conn.info.role {
            Role::Server => {
                let end = conn.info.remote.map(|r| CalleeEnd { client: PeerKey::new(r), server_port: conn.info.local.map(|l| l.port()) });
                if self.debug {
                    eprintln!(
                        "zerotrace: debug: server request {} end {end:?} traced caller={} exit={}",
                        facts.path,
                        end.is_some_and(|e| self.linker.is_traced_client(&e, facts.start_exit_ns)),
                        facts.start_exit_ns
                    );
                }
                self.linker.start_server(&facts, end)
            }
            // A delivery: its parent is the message's sender, not what the receiving thread
            // serves (the consumer's own calls are what it serves).
            _ if request.client_kind == SpanKind::Consumer => {
                let span = self.linker.start_consumer(&facts, message_identity(&request));
                if let RequestFields::Messaging(m) = &request.fields {
                    self.handed.delivered(m.message_id.iter().chain(&m.conversation_id).map(String::as_str), span, facts.start_enter_ns);
                    self.sync_handed_holds();
                }
                // Held while open: a job may outlast a finished span's memory.
                self.linker.hold(span);
                if let Some(done) = self.consuming.read(tgid, tid, fd, span) {
                    self.linker.release(&done);
                }
                span
            }
            _ => {
                let tuple = conn.info.local.map(|l| (l, conn.info.remote));
                self.look_for_shared_threads(tgid);
                // The library said whom it writes this stream for: that caller's request.
                let evidence = match self.stream_caller(tgid, &request) {
                    Some(evidence) => evidence,
                    None => self.client_evidence(tgid, tid, fd, request.writer),
                };
                if self.debug {
                    eprintln!("zerotrace: debug: client request {} tuple {tuple:?} enter={} cause {:?} evidence {evidence:?}", facts.path, facts.start_enter_ns, self.cause);
                }
                let span = self.linker.start_client(&facts, tuple, &evidence);
                if request.client_kind == SpanKind::Producer
                    && let Some(identity) = message_identity(&request)
                {
                    self.linker.message_sent(identity, span, facts.start_enter_ns);
                }
                span
            }
        };
        let Some(conn) = self.conns.get_mut(tgid, fd) else { return self.linker.finish(span) };
        conn.requests += 1;
        let pending = PendingRequest { request, span, tid };
        if let Answer::NoneExpected = answer {
            let info = conn.info.clone();
            return self.complete(&info, pending, tid, answer);
        }
        let (correlation, first_enter_ns) = (pending.request.correlation, pending.request.timing.first_enter_ns);
        if let Err(span) = conn.pending.push(pending) {
            self.linker.finish(span);
        }
        self.answer_early(tgid, fd, correlation, first_enter_ns);
    }

    /// A request arrived on a connection holding early answers: the one that answers it (the
    /// oldest in-order one, or the one with its key) is paired now, unless it ended before
    /// this request began: then it answered something we never saw, and is counted.
    fn answer_early(&mut self, tgid: u32, fd: u32, correlation: Correlation, first_enter_ns: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(tgid, fd) else { return };
            let Some(i) = conn.early.iter().position(|e| e.response.correlation == correlation) else { return };
            let Some(early) = conn.early.remove(i) else { return };
            if early.response.timing.last_exit_ns < first_enter_ns {
                // It ended before this request began: it answered a request never seen. An
                // in-order connection's next early answer may still be this request's.
                self.stats.answers_without_request += 1;
                if correlation == Correlation::InOrder {
                    continue;
                }
                return;
            }
            let cause = std::mem::replace(&mut self.cause, early.cause);
            self.answer(tgid, fd, early.tid, early.response);
            self.cause = cause;
            return;
        }
    }

    fn answer(&mut self, tgid: u32, fd: u32, tid: u32, response: Response) {
        let Some(conn) = self.conns.get_mut(tgid, fd) else { return };
        let Some(req) = conn.pending.answer(response.correlation) else {
            if self.debug {
                eprintln!("zerotrace: debug: answer {:?} on {tgid} fd {fd} matches no request yet", response.correlation);
            }
            // Its request's record may still come (see `Conn::early`); if not, its request was
            // not captured (past the capture cap in a large write, or sent before the agent
            // attached), and the loss is counted.
            if conn.early.len() < crate::conn::MAX_EARLY {
                conn.early.push_back(crate::conn::EarlyAnswer { response, tid, cause: self.cause });
            } else {
                self.stats.answers_without_request += 1;
            }
            return;
        };
        let info = conn.info.clone();
        if info.role != Role::Server {
            self.callbacks.answered(tgid, tid, fd, self.cause, req.span);
            self.linker.client_answered(info.local, req.span, response.timing.first_exit_ns);
        }
        self.complete(&info, req, tid, Answer::Answered(&response));
        if response.closes_connection {
            self.discard_pending(tgid, fd, |stats| &mut stats.after_close);
        }
    }

    /// A request's exchange is over: its span is built, the linker told, and the span queued
    /// for its trace context. `tid`: the thread that wrote the answer (or saw the end).
    fn complete(&mut self, info: &ConnInfo, req: PendingRequest, tid: u32, answer: Answer<'_>) {
        let mut span = crate::spans::build(info, &req.request, answer, self.db_options, &self.clock);
        if let Some(span) = span.as_mut() {
            self.routes.apply(info.tgid, span);
        }
        if info.role == Role::Server {
            self.linker.end_server(tid, info.id, req.span);
            let read_ns = req.request.timing.first_exit_ns;
            match (answer, self.cause) {
                // The asyncio task that wrote the answer served this request.
                (Answer::Answered(_), Cause::Task(task)) => self.linker.unit_answered((info.tgid, task), req.span, read_ns),
                // The libuv callback that wrote it continues the calls whose answers it read.
                (Answer::Answered(_), Cause::Callback { fd, seq }) => {
                    let answers = self.callbacks.answers(info.tgid, tid, fd, seq);
                    self.linker.chain_answered(answers, req.span, read_ns);
                }
                _ => {}
            }
        }
        self.linker.finish(req.span);
        let Some(span) = span else { return };
        if self.waiting.len() >= MAX_WAITING {
            self.stats.dropped_unlinked += 1;
            return;
        }
        self.waiting.push(Waiting { id: req.span, tgid: info.tgid, span });
    }

    /// Requests on a connection that the server never handled: they end without spans, counted.
    fn discard_pending(&mut self, tgid: u32, fd: u32, counter: impl Fn(&mut PipelineStats) -> &mut u64) {
        let Some(conn) = self.conns.get_mut(tgid, fd) else { return };
        let (info, dropped) = (conn.info.clone(), conn.pending.drain());
        *counter(&mut self.stats) += dropped.len() as u64;
        self.end_unanswered(&info, dropped);
    }

    /// Requests that end without a span: a server's no longer make its thread (or goroutine)
    /// serve them, which would give its later calls a parent that is never exported.
    fn end_unanswered(&mut self, info: &crate::conn::ConnInfo, requests: Vec<crate::conn::PendingRequest>) {
        for req in requests {
            if info.role == Role::Server {
                self.linker.end_server(req.tid, info.id, req.span);
            }
            self.linker.finish(req.span);
        }
    }

    /// A connection ended (closed, or replaced by a new one on the same fd), or its process
    /// ended at `cut_off_ns`.
    fn drop_conn(&mut self, mut conn: crate::conn::Conn, tid: u32, cut_off_ns: Option<u64>) {
        self.stats.answers_without_request += conn.early.len() as u64;
        library::report(&conn);
        if let Some(protocol) = conn.protocol() {
            self.ended.entry(protocol).or_default().add(&conn);
        }
        let info = conn.info.clone();
        if info.role == Role::Server && !conn.server_wrote && cut_off_ns.is_none() {
            // The server closed without a byte of answer: whatever the client sent, it was no
            // exchange (HTTP sent to PostgreSQL); a server killed mid-request has `cut_off_ns`.
            let unanswered = conn.pending.drain();
            self.stats.closed_unanswered += unanswered.len() as u64;
            self.end_unanswered(&info, unanswered);
        }
        let mut last = Vec::new();
        conn.close(&mut last);
        for message in last {
            if let Message::Response(response) = message
                && let Some(req) = conn.pending.answer(response.correlation)
            {
                self.complete(&info, req, tid, Answer::Answered(&response));
            }
        }
        // Requests that never got an answer still become spans, marked as errors.
        for req in conn.pending.drain() {
            let before = self.waiting.len();
            let req_tid = req.tid;
            self.complete(&info, req, req_tid, Answer::Unanswered);
            if let Some(at) = cut_off_ns
                && self.waiting.len() > before
                && let Some(last) = self.waiting.last_mut()
            {
                crate::spans::cut_off_by_exit(&mut last.span, at, &self.clock);
            }
        }
    }

    /// Ends the connections of processes that exited without the kernel's exit record reaching
    /// us (lost in a full ring buffer): their fds closed without close calls, so unanswered
    /// requests become error spans now instead of never. Only processes dead for a while: a
    /// process that just exited may still have records in the ring (a short-lived curl's
    /// answer, read after our drain began), and ending its requests now made them errors.
    pub fn remove_exited(&mut self) {
        let now = Instant::now();
        let host = &mut self.host;
        let dead_since = &mut self.dead_since;
        let gone = self.conns.remove_exited(|tgid| {
            if host.is_alive(tgid) {
                return true;
            }
            let since = *dead_since.entry(tgid).or_insert(now);
            now.saturating_duration_since(since) < EXIT_GRACE
        });
        self.dead_since.retain(|_, since| now.saturating_duration_since(*since) < EXIT_GRACE * 4);
        for conn in gone {
            let tid = conn.info.tgid;
            self.callbacks.forget_process(tid);
            self.thread_rule_off.remove(&tid);
            self.threads_looked_at.remove(&tid);
            self.stream_callers.remove(&tid);
            for done in self.consuming.process_exited(tid) {
                self.linker.release(&done);
            }
            self.drop_conn(conn, tid, None);
        }
    }

    /// Resolves trace context and returns the spans that are ready.
    pub fn tick(&mut self, now: Instant) -> Vec<FinishedSpan> {
        self.stats.tls_without_socket += self.memory_bio.expire(now);
        for list in self.library.end_all() {
            self.take_library_list(list);
        }
        // Once its tables are learned (or its old connections gone), a process decodes whole
        // again: its library probes, which run on every request, come off.
        let idle: Vec<u32> = self.library_asked.iter().filter(|(_, at)| now.saturating_duration_since(**at) > LIBRARY_IDLE).map(|(tgid, _)| *tgid).collect();
        for tgid in idle {
            self.library_asked.remove(&tgid);
            self.last_read.retain(|(t, _), _| *t != tgid);
            self.effects.library_fields_done.push(tgid);
        }
        let mut waiting = std::mem::replace(&mut self.waiting, std::mem::take(&mut self.waiting_spare));
        let mut ready = Vec::with_capacity(waiting.len());
        for mut w in waiting.drain(..) {
            match self.linker.resolve(w.id, now) {
                // Its candidates' traces come soon (a delivery waiting for its sends' records).
                Some(_) if !self.linker.links_settled(&w.id, now) => self.waiting.push(w),
                Some(ctx) => {
                    w.span.ids.trace_id = ctx.trace_id;
                    w.span.ids.span_id = w.id;
                    w.span.ids.parent = ctx.parent;
                    w.span.ids.links = self.linker.links(&w.id);
                    w.span.capture_head_only = !self.head_only.is_empty() && self.head_only.contains(&w.tgid);
                    w.span.capture_one_in = self.one_in(w.tgid).unwrap_or(0);
                    let resource = self.resource(w.tgid);
                    self.stats.spans += 1;
                    ready.push(FinishedSpan { resource, span: w.span });
                }
                None => self.waiting.push(w),
            }
        }
        waiting.shrink_to(KEEP_WAITING);
        self.waiting_spare = waiting;
        self.linker.expire(now);
        ready
    }

    /// Everything still waiting, resolved as well as it can be now (shutdown). Early answers
    /// still waiting had no request we saw.
    pub fn flush(&mut self) -> Vec<FinishedSpan> {
        self.stats.answers_without_request += self.conns.iter().map(|c| c.early.len() as u64).sum::<u64>();
        self.tick(Instant::now() + std::time::Duration::from_secs(3600))
    }

    fn resource(&mut self, tgid: u32) -> Arc<ProcessResource> {
        if let Some(r) = self.resources.get(&tgid) {
            return r.clone();
        }
        let comm = self.comms.get(&tgid).cloned().unwrap_or_default();
        let r = Arc::new(self.host.resource(tgid).unwrap_or_else(|| ProcessResource {
            pid: tgid,
            service_name: if comm.is_empty() { format!("pid-{tgid}") } else { comm.clone() },
            executable_name: comm,
            service_name_inferred: true,
            ..Default::default()
        }));
        self.resources.insert(tgid, r.clone());
        r
    }

    /// Per protocol: connections recognised, requests, resyncs, ended and open alike.
    pub fn protocol_stats(&self) -> std::collections::BTreeMap<&'static str, ProtocolStats> {
        let mut all = self.ended.clone();
        for conn in self.conns.iter() {
            if let Some(protocol) = conn.protocol() {
                all.entry(protocol).or_default().add(conn);
            }
        }
        all
    }

    /// Requests still waiting for their answer (at shutdown: they get no span).
    pub fn in_flight(&self) -> u64 {
        self.conns.pending_requests()
    }

    /// Reads a process's resource now, while it is certainly alive (targets at attach time).
    pub fn preload_resource(&mut self, tgid: u32) {
        let _ = self.resource(tgid);
    }
}

#[cfg(test)]
mod tests;
