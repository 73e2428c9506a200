//! Trace context: which trace each span belongs to and who its parent is.
//!
//! Evidence, strongest first (docs/ARCHITECTURE.md, "Linking: a parent only on evidence"):
//! 1. headers: an incoming `traceparent` makes a SERVER span join that trace; an outgoing
//!    request that already carries one (the app is instrumented) makes the CLIENT span adopt
//!    its trace and span id, so the callee's SERVER span, which sees the same header, is its
//!    child and nothing is duplicated;
//! 2. in-process causality (`evidence`): a CLIENT request is a child of the SERVER span that
//!    the evidence names: the one request its thread serves, the request whose event-loop
//!    callback wrote it, or the request whose earlier call's answer that callback read. When
//!    the evidence names several, the span gets no parent and links to the candidates;
//! 3. same-host stitching: when the caller's end of a connection is traced too, the callee's
//!    SERVER span is a child of the caller's CLIENT span (matched by socket tuple and time).
//!
//! Stitching needs the caller's CLIENT span, whose record can reach us after the callee's, so
//! spans are resolved lazily: each span records where its context comes from (`Origin`) and
//! leaves when its whole chain of parents is known, or when waiting for a peer times out.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::traceparent::{self, SpanId, TraceId, TraceParent};

pub mod consuming;
mod evidence;
pub mod handed;
mod messages;

pub use messages::ConsumerStats;
mod peers;

pub use evidence::{Decision, Evidence, LinkStats, Outcome, UnitKey, Why};
pub use peers::{CalleeEnd, PeerKey};
use peers::{Caller, ClientConns};

/// How long a finished SERVER span waits for the traced caller's CLIENT span to show up.
const PEER_WAIT: Duration = Duration::from_millis(300);
/// How long a finished span's context is remembered for children that finish after it.
const REMEMBER: Duration = Duration::from_secs(3);
/// How long a finished CLIENT span waits for the asyncio task that wrote it to answer a
/// request (handlers that take longer lose their children's parents, counted).
const UNIT_WAIT: Duration = Duration::from_secs(10);
/// The "process" of callback-chain units (`UnitKey.0`): no real tgid is 0, so they never
/// collide with a process's own units (asyncio tasks).
const CHAIN: u32 = 0;
/// Traces whose incoming sampled flag is remembered at most.
const MAX_REMOTE_FLAGS: usize = 65536;
/// How long a delivery waits for the records of the sends made before it (`AwaitSends`).
const SENDS_WAIT: Duration = Duration::from_millis(300);
/// How long a finished SERVER span waits at most for a traced caller's CLIENT span to be
/// placed itself (the caller may wait for its own unit of work): then it is a root, counted.
const PEER_GIVE_UP: Duration = Duration::from_secs(12);

#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub trace_id: TraceId,
    pub parent: Option<SpanId>,
}

#[derive(Clone, Debug)]
enum Origin {
    Known(Context),
    ChildOf(SpanId),
    /// A SERVER span whose caller is a traced local client: parent is that CLIENT span.
    AwaitPeer {
        end: CalleeEnd,
        request_exit_ns: u64,
        /// The request's key on its connection (HTTP/2 stream id), when it has one.
        key: Option<u64>,
        fallback: Context,
    },
    /// A SERVER span whose caller was found (`AwaitPeer`) and is waiting for its own context.
    /// Kept by id: the caller table keeps only the latest calls of a connection, and a caller
    /// that resolves late must not fall out of it meanwhile.
    StitchedTo {
        caller: SpanId,
        fallback: Context,
    },
    /// A CLIENT span written by a unit of work (an asyncio task, a chain of libuv callbacks)
    /// whose request is not known yet: `Linker::unit_answered` decides.
    AwaitUnit(UnitKey),
    /// A delivery found by its message's identity: decided `SENDS_WAIT` after it finished,
    /// once the records of sends written before it was read have all come in (a publisher
    /// descheduled between its write and its record: the broker can deliver the message
    /// before the agent sees it leave).
    AwaitSends {
        identity: u64,
        delivered_ns: u64,
    },
}

struct Node {
    origin: Origin,
    /// A SERVER span's incoming `traceparent`: a proxy passing it on is not an instrumented
    /// app sending its own.
    incoming: Option<TraceParent>,
    /// Candidate parents that the evidence could not decide between: exported as span links.
    links: Vec<SpanId>,
    /// A CLIENT span: the SERVER span the evidence said it was made for (also when it adopted
    /// an instrumented app's own context), so the code after its answer can be placed.
    made_for: Option<SpanId>,
    resolved: Option<Context>,
    finished: Option<Instant>,
    /// Other spans may still ask for this one after it resolved: a CLIENT span (a traced
    /// callee stitches to it) or a SERVER span that had children. A SERVER span without
    /// children leaves the table as soon as it resolves: on a busy server that is most spans,
    /// and the table's size (cache misses per insert) was the pipeline's largest cost.
    referable: bool,
}

struct ActiveServer {
    span: SpanId,
    conn_id: u64,
    path: smol_str::SmolStr,
}

/// What a request tells the linker.
pub struct RequestFacts<'a> {
    pub tid: u32,
    pub conn_id: u64,
    pub path: &'a str,
    pub traceparent: Option<&'a str>,
    pub start_enter_ns: u64,
    pub start_exit_ns: u64,
    /// What pairs the request on its connection when it is not order (an HTTP/2 stream id):
    /// both ends of a connection see the same key, so stitching matches by it.
    pub key: Option<u64>,
}

#[derive(Default)]
pub struct Linker {
    nodes: HashMap<SpanId, Node>,
    /// Per thread, the SERVER spans it serves now (an emptied list is dropped by `expire`).
    active: HashMap<u32, Vec<ActiveServer>>,
    /// Client connections of traced processes, with their CLIENT spans.
    clients: ClientConns,
    /// Finished spans in finishing order, so expiry costs only what expires.
    finished: VecDeque<(Instant, SpanId)>,
    last_unit_sweep: Option<Instant>,
    /// CLIENT spans waiting for their unit of work to answer a request: (the time its
    /// request must have been read by, span).
    unit_waiting: HashMap<UnitKey, Vec<(u64, SpanId)>>,
    /// Units created inside another unit: child → (creator, creation time).
    spawned: HashMap<UnitKey, (UnitKey, u64)>,
    pub stats: LinkStats,
    pub stitch: StitchStats,
    /// Messages sent by PRODUCER spans, by identity (`messages.rs`).
    sent: messages::SentMessages,
    pub consumers: messages::ConsumerStats,
    /// The sampled flag each trace came in with (an incoming `traceparent`, or an
    /// instrumented app's own), for parent-based sampling (`sampling.rs`).
    remote_flags: HashMap<TraceId, bool>,
    /// Whether one of `remote_flags` says "not sampled".
    pub unsampled_remote: bool,
    /// Spans kept past `REMEMBER` while work may still name them (a delivery its consumer
    /// thread has not settled, a message a worker process may still be handed), with how many
    /// holders hold each.
    held: HashMap<SpanId, u32>,
}

/// How traced callees' searches for a traced caller came out (exit report).
#[derive(Default, Debug, Clone, Copy)]
pub struct StitchStats {
    /// SERVER spans made children of their traced caller's CLIENT span.
    pub stitched: u64,
    /// A traced caller's connection was open, but its CLIENT span never showed up in time.
    pub caller_not_seen: u64,
    /// The caller's CLIENT span was found but could not be placed in time (or was forgotten).
    pub caller_unplaced: u64,
}

impl StitchStats {
    pub fn summary(&self) -> String {
        format!(
            "{} stitched to their traced caller; roots after waiting: {} (caller's span not seen), {} (caller's span not placed in time)",
            self.stitched, self.caller_not_seen, self.caller_unplaced
        )
    }
}

thread_local! {
    /// Trace and span ids need uniqueness, not secrecy: a small PRNG seeded from the OS (as
    /// the OpenTelemetry SDKs do) instead of the ChaCha generator behind `rand::random`,
    /// which cost several percent of the pipeline.
    static IDS: std::cell::RefCell<rand::rngs::SmallRng> = std::cell::RefCell::new(rand::SeedableRng::from_os_rng());
}

fn random<T>() -> T
where
    rand::distr::StandardUniform: rand::distr::Distribution<T>,
{
    IDS.with(|rng| rand::Rng::random(&mut *rng.borrow_mut()))
}

pub fn new_trace_id() -> TraceId {
    loop {
        let id: TraceId = random();
        if id != [0; 16] {
            return id;
        }
    }
}

pub fn new_span_id() -> SpanId {
    loop {
        let id: SpanId = random();
        if id != [0; 8] {
            return id;
        }
    }
}

impl Linker {
    /// A traced process connected from `local` to `remote` at kernel time `ts_ns`.
    pub fn client_connected(&mut self, local: SocketAddr, remote: Option<SocketAddr>, ts_ns: u64) {
        self.clients.connected(local, remote, ts_ns);
    }

    /// A traced process closed its connection from `local` at kernel time `ts_ns`.
    pub fn client_closed(&mut self, local: SocketAddr, remote: Option<SocketAddr>, ts_ns: u64) {
        self.clients.closed(local, remote, ts_ns);
    }

    /// A CLIENT span sent from `local` read the first bytes of its answer at `answered_ns`
    /// (a callee that read its request later cannot be this span's).
    pub fn client_answered(&mut self, local: Option<std::net::SocketAddr>, span: SpanId, answered_ns: u64) {
        if let Some(local) = local {
            self.clients.answered(local, span, answered_ns);
        }
    }

    pub fn is_traced_client(&self, end: &CalleeEnd, read_ns: u64) -> bool {
        self.clients.may_be_traced(end, read_ns)
    }

    /// A SERVER request arrived; returns the new span's id.
    pub fn start_server(&mut self, facts: &RequestFacts<'_>, end: Option<CalleeEnd>) -> SpanId {
        let span = new_span_id();
        let incoming = facts.traceparent.and_then(traceparent::parse);
        self.remember_flags(incoming.as_ref());
        let fallback = match incoming {
            Some(tp) => Context { trace_id: tp.trace_id, parent: Some(tp.parent_id) },
            None => Context { trace_id: new_trace_id(), parent: None },
        };
        let origin = match end.filter(|e| self.clients.may_be_traced(e, facts.start_exit_ns)) {
            Some(end) => Origin::AwaitPeer { end, request_exit_ns: facts.start_exit_ns, key: facts.key, fallback },
            None => Origin::Known(fallback),
        };
        self.nodes.insert(span, Node { origin, incoming, links: Vec::new(), made_for: None, resolved: None, finished: None, referable: false });
        let active = self.active.entry(facts.tid).or_default();
        if active.len() < 1024 {
            active.push(ActiveServer { span, conn_id: facts.conn_id, path: facts.path.into() });
        }
        span
    }

    /// The SERVER span's response is complete: its thread no longer serves it.
    pub fn end_server(&mut self, tid: u32, conn_id: u64, span: SpanId) {
        let mut found = false;
        if let Some(list) = self.active.get_mut(&tid) {
            let before = list.len();
            list.retain(|a| !(a.span == span && a.conn_id == conn_id));
            // An emptied list stays until `expire`: a thread serving one request after
            // another keeps its list's allocation.
            found = list.len() < before;
        }
        if !found {
            // The response was written by another thread than the one that read the request.
            self.forget_active(span);
        }
    }

    fn forget_active(&mut self, span: SpanId) {
        for list in self.active.values_mut() {
            list.retain(|a| a.span != span);
        }
        self.active.retain(|_, l| !l.is_empty());
    }

    /// The thread rule: the request this thread serves, when it serves exactly one. An event
    /// loop without runtime probes serves several at once: then only a forwarded path (a proxy
    /// sends on the path it received) names one; anything else is ambiguous.
    fn by_thread(&self, tid: u32, path: &str) -> Decision {
        let Some(list) = self.active.get(&tid).filter(|l| !l.is_empty()) else {
            return Decision::NoParent(Why::NotServing, Vec::new());
        };
        if let [only] = list.as_slice() {
            let why = if tid & zerotrace_abi::GOROUTINE_ACTOR != 0 { Why::Goroutine } else { Why::Thread };
            return Decision::Parent(only.span, why);
        }
        let mut same_path = list.iter().filter(|a| !path.is_empty() && a.path == path);
        match (same_path.next(), same_path.next()) {
            (Some(one), None) => Decision::Parent(one.span, Why::PathForwarded),
            _ => Decision::NoParent(Why::ThreadServesSeveral, list.iter().map(|a| a.span).collect()),
        }
    }

    /// Whether thread `tid` serves a request now.
    pub fn serves(&self, tid: u32) -> bool {
        self.active.get(&tid).is_some_and(|l| !l.is_empty())
    }

    /// Evidence that can travel to another thread with work handed over: a thread-rule
    /// verdict is taken now, while the handing thread still serves what it served.
    pub fn portable(&self, tid: u32, evidence: Evidence) -> Evidence {
        match evidence {
            Evidence::Thread => match self.by_thread(tid, "") {
                Decision::Parent(server, _) => Evidence::Serving(server, Why::Delegated),
                Decision::NoParent(why, candidates) => Evidence::Undecided(why, candidates),
                Decision::AwaitUnit(unit) => Evidence::Unit(unit),
                Decision::AwaitNewChain(candidates) => Evidence::Undecided(Why::HandOff, candidates),
            },
            Evidence::Serving(server, _) => Evidence::Serving(server, Why::Delegated),
            other => other,
        }
    }

    /// The SERVER span a CLIENT span was made for, if the evidence named one (directly, or
    /// later: a unit of work's answer).
    fn parent_server(&self, client: &SpanId) -> Option<SpanId> {
        let node = self.nodes.get(client)?;
        match node.origin {
            Origin::ChildOf(server) => Some(server),
            _ => node.made_for,
        }
    }

    /// Weighs the evidence for a CLIENT request's parent.
    pub fn decide(&self, tid: u32, path: &str, evidence: &Evidence) -> Decision {
        match evidence {
            Evidence::Thread => self.by_thread(tid, path),
            Evidence::Serving(span, why) => match self.nodes.contains_key(span) {
                true => Decision::Parent(*span, *why),
                false => Decision::NoParent(Why::CallbackWithoutRequest, Vec::new()),
            },
            Evidence::Continues { clients, same_connection } => {
                let mut servers: Vec<SpanId> = Vec::new();
                let mut chains: Vec<UnitKey> = Vec::new();
                for client in clients {
                    match (self.parent_server(client), self.chain_of(client)) {
                        (Some(server), _) if !servers.contains(&server) => servers.push(server),
                        (Some(_), _) => {}
                        (None, Some(chain)) if !chains.contains(&chain) => chains.push(chain),
                        (None, Some(_)) => {}
                        // An answer to a call we could not place: nothing to continue.
                        (None, None) => return Decision::NoParent(Why::CallbackWithoutRequest, servers),
                    }
                }
                match (servers.as_slice(), chains.as_slice(), same_connection) {
                    ([], [], _) => Decision::NoParent(Why::CallbackWithoutRequest, Vec::new()),
                    ([one], [], false) => Decision::Parent(*one, Why::Continuation),
                    ([], [chain], false) => Decision::AwaitUnit(*chain),
                    // The same request's next call, or a queued one of another request that was
                    // handed the connection: the request this call's chain answers decides.
                    ([_], [], true) | ([], [_], true) => Decision::AwaitNewChain(servers),
                    _ => Decision::NoParent(Why::ContinuesSeveral, servers),
                }
            }
            Evidence::Unit(unit) => Decision::AwaitUnit(*unit),
            Evidence::Undecided(why, candidates) => Decision::NoParent(*why, candidates.clone()),
        }
    }

    /// The callback chain a CLIENT span waits on, if it waits on one.
    fn chain_of(&self, client: &SpanId) -> Option<UnitKey> {
        match self.nodes.get(client)?.origin {
            Origin::AwaitUnit(unit) if unit.0 == CHAIN => Some(unit),
            _ => None,
        }
    }

    /// A request's answer was written in a callback that read `answers`. The code a callback
    /// runs continues the calls whose answers it read, and a request's answer is written by
    /// that request's own code: so when no answer made for this request was read, and the
    /// others continue exactly one pending callback chain, that chain answered it. (ioredis
    /// reads the answers of several requests' commands in one callback.)
    pub fn chain_answered(&mut self, answers: &[SpanId], server: SpanId, request_read_ns: u64) {
        let mut chains: Vec<UnitKey> = Vec::new();
        for client in answers {
            if self.parent_server(client) == Some(server) {
                return;
            }
            if let Some(chain) = self.chain_of(client)
                && !chains.contains(&chain)
            {
                chains.push(chain);
            }
        }
        if let [chain] = chains.as_slice() {
            self.unit_answered(*chain, server, request_read_ns);
        }
    }

    /// A unit of work was created, inside `parent` if any. A unit's key may be reused (a
    /// freed task's address), so a creation without a parent forgets the old one.
    pub fn unit_spawned(&mut self, child: UnitKey, parent: Option<UnitKey>, ts_ns: u64) {
        // A new unit at a freed one's key (a task at a dead task's address, which CPython's
        // allocator hands out again at once): what the dead one wrote must not wait for the new
        // one's answer. Its spans stay registered with the units that created it, which may
        // still answer for them; the others time out without a parent.
        self.unit_waiting.remove(&child);
        match parent {
            Some(parent) if parent != child => {
                if self.spawned.len() >= 1 << 17 {
                    self.spawned.clear();
                }
                self.spawned.insert(child, (parent, ts_ns));
            }
            _ => {
                self.spawned.remove(&child);
            }
        }
    }

    /// The units whose answer may decide for work done by `unit` at `written_ns`, each with
    /// the time by which its answer's request must have been read: the unit itself (the
    /// write time), then its creator (the time it created the unit: work handed to a child
    /// belongs to the request the creator was serving then), and so on up. The first of them
    /// to answer decides. (aiohttp answers from a handler task its connection's task creates;
    /// uvicorn from the request's own task, whose driver calls may run in child tasks.)
    fn answering_units(&self, unit: UnitKey, written_ns: u64) -> Vec<(UnitKey, u64)> {
        let mut chain = vec![(unit, written_ns)];
        let mut at = unit;
        for _ in 0..8 {
            let Some(&(parent, created_ns)) = self.spawned.get(&at) else { break };
            chain.push((parent, created_ns));
            at = parent;
        }
        chain
    }

    /// A unit of work (an asyncio task) answered the request of SERVER span `server`, read at
    /// `request_read_ns`: the calls it (or a unit it created meanwhile) wrote since then belong
    /// to that request; the calls before, to none we know.
    pub fn unit_answered(&mut self, unit: UnitKey, server: SpanId, request_read_ns: u64) {
        let Some(waiting) = self.unit_waiting.remove(&unit) else { return };
        let mut children = false;
        for (written_ns, client) in waiting {
            let Some(node) = self.nodes.get_mut(&client) else { continue };
            if !matches!(node.origin, Origin::AwaitUnit(_)) {
                continue;
            }
            if written_ns >= request_read_ns {
                node.origin = Origin::ChildOf(server);
                // Decided: the candidates it would have linked to no longer matter.
                node.links.clear();
                self.stats.count(Why::TaskAnswered);
                children = true;
            } else {
                node.origin = Origin::Known(Context { trace_id: new_trace_id(), parent: None });
                self.stats.count(Why::TaskAnsweredNothing);
            }
        }
        if children && let Some(node) = self.nodes.get_mut(&server) {
            node.referable = true;
        }
    }

    /// A CLIENT request was written; returns the span id (adopted from an existing
    /// `traceparent` when the app propagates its own context).
    pub fn start_client(&mut self, facts: &RequestFacts<'_>, ends: Option<(SocketAddr, Option<SocketAddr>)>, evidence: &Evidence) -> SpanId {
        let decision = self.decide(facts.tid, facts.path, evidence);
        let span = new_span_id();
        let (serving, candidates, await_unit) = match decision {
            Decision::Parent(server, why) => {
                self.stats.count(why);
                (Some((server, self.nodes.get(&server).and_then(|n| n.incoming))), Vec::new(), None)
            }
            Decision::NoParent(why, candidates) => {
                self.stats.count(why);
                (None, candidates, None)
            }
            Decision::AwaitUnit(unit) => (None, Vec::new(), Some(unit)),
            Decision::AwaitNewChain(candidates) => (None, candidates, Some((CHAIN, u64::from_le_bytes(span)))),
        };
        let outgoing = facts.traceparent.and_then(traceparent::parse);
        let pass_through = matches!((outgoing, serving.and_then(|s| s.1)), (Some(o), Some(i)) if o == i);
        let (span, origin) = match (outgoing, serving) {
            (Some(tp), serving) if !pass_through => {
                self.remember_flags(Some(&tp));
                if let Some((server, None)) = serving {
                    self.join_app_trace(server, tp.trace_id);
                }
                let parent = serving.map(|s| s.0).filter(|s| self.trace_of(s) == Some(tp.trace_id));
                (tp.parent_id, Origin::Known(Context { trace_id: tp.trace_id, parent }))
            }
            (_, Some((server, _))) => {
                if let Some(node) = self.nodes.get_mut(&server) {
                    node.referable = true;
                }
                (span, Origin::ChildOf(server))
            }
            (_, None) => match await_unit {
                Some(unit) => {
                    for (unit, bound) in self.answering_units(unit, facts.start_enter_ns) {
                        let waiting = self.unit_waiting.entry(unit).or_default();
                        if waiting.len() < 1024 {
                            waiting.push((bound, span));
                        }
                    }
                    (span, Origin::AwaitUnit(unit))
                }
                None => (span, Origin::Known(Context { trace_id: new_trace_id(), parent: None })),
            },
        };
        for candidate in &candidates {
            // Kept until the link can be written out.
            if let Some(node) = self.nodes.get_mut(candidate) {
                node.referable = true;
            }
        }
        let made_for = serving.map(|s| s.0);
        self.nodes.insert(span, Node { origin, incoming: None, links: candidates, made_for, resolved: None, finished: None, referable: true });
        if let Some((local, remote)) = ends {
            self.clients.sent(local, remote, facts.start_enter_ns, facts.key, span);
        }
        span
    }

    /// A PRODUCER span's message, by identity: its consumers find it (`start_consumer`).
    pub fn message_sent(&mut self, identity: u64, producer: SpanId, ts_ns: u64) {
        self.sent.sent(identity, producer, ts_ns);
    }

    /// A CONSUMER span: a message delivered. Its parent is the context in its headers, else
    /// the one PRODUCER span that sent the same message (`identity`); several give span links
    /// and no parent; none, a root.
    pub fn start_consumer(&mut self, facts: &RequestFacts<'_>, identity: Option<u64>) -> SpanId {
        let span = new_span_id();
        let root = || Context { trace_id: new_trace_id(), parent: None };
        let incoming = facts.traceparent.and_then(traceparent::parse);
        self.remember_flags(incoming.as_ref());
        let origin = match (incoming, identity) {
            (Some(tp), _) => {
                self.consumers.by_headers += 1;
                Origin::Known(Context { trace_id: tp.trace_id, parent: Some(tp.parent_id) })
            }
            (None, Some(identity)) => Origin::AwaitSends { identity, delivered_ns: facts.start_enter_ns },
            (None, None) => {
                self.consumers.producer_not_seen += 1;
                Origin::Known(root())
            }
        };
        self.nodes.insert(span, Node { origin, incoming, links: Vec::new(), made_for: None, resolved: None, finished: None, referable: true });
        span
    }

    /// A delivery's origin by the sends of its message seen so far: the one send, or a root
    /// linked to the several.
    fn by_identity(&mut self, identity: u64, delivered_ns: u64) -> (Origin, Vec<SpanId>) {
        let root = || Context { trace_id: new_trace_id(), parent: None };
        let (origin, links) = match self.sent.producer(identity, delivered_ns) {
            messages::Producer::One(producer) => {
                self.consumers.by_identity += 1;
                (Origin::ChildOf(producer), Vec::new())
            }
            messages::Producer::Several(candidates) => {
                self.consumers.ambiguous += 1;
                (Origin::Known(root()), candidates)
            }
            messages::Producer::None => {
                self.consumers.producer_not_seen += 1;
                (Origin::Known(root()), Vec::new())
            }
        };
        for referred in links.iter().chain(match &origin {
            Origin::ChildOf(p) => std::slice::from_ref(p),
            _ => &[],
        }) {
            if let Some(node) = self.nodes.get_mut(referred) {
                node.referable = true;
            }
        }
        (origin, links)
    }

    /// Remembers the sampled flag a trace came with (bounded: a flood of traces forgets the
    /// oldest flags all at once, and their traces fall back to the root sampler).
    fn remember_flags(&mut self, tp: Option<&TraceParent>) {
        let Some(tp) = tp else { return };
        if self.remote_flags.len() >= MAX_REMOTE_FLAGS {
            self.remote_flags.clear();
        }
        let sampled = tp.flags & 1 == 1;
        self.unsampled_remote |= !sampled;
        self.remote_flags.insert(tp.trace_id, sampled);
    }

    /// The sampled flag `trace` came in with, if it came in with one.
    pub fn remote_sampled(&self, trace: &TraceId) -> Option<bool> {
        self.remote_flags.get(trace).copied()
    }

    /// Keeps `span` known, however long ago it finished, until as many `release`s.
    pub fn hold(&mut self, span: SpanId) {
        *self.held.entry(span).or_default() += 1;
    }

    /// One holder of `span` is done with it: once none holds it, it is forgotten a
    /// `REMEMBER` after this at most.
    pub fn release(&mut self, span: &SpanId) {
        if let Some(count) = self.held.get_mut(span) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(span);
            }
        }
    }

    /// Whether a resolved span's links can be written: every candidate still known has its
    /// trace, or the span has waited `SENDS_WAIT` twice for them (a delivery waiting for its
    /// sends' records).
    pub fn links_settled(&self, span: &SpanId, now: Instant) -> bool {
        let Some(node) = self.nodes.get(span) else { return true };
        node.links.is_empty()
            || node.finished.is_some_and(|t| now.saturating_duration_since(t) >= SENDS_WAIT * 2)
            || node.links.iter().all(|c| !self.nodes.contains_key(c) || self.trace_of(c).is_some())
    }

    /// The span links of a span the evidence could not place: (trace, span) of each candidate
    /// whose trace is known.
    pub fn links(&self, span: &SpanId) -> Vec<(TraceId, SpanId)> {
        let Some(node) = self.nodes.get(span) else { return Vec::new() };
        node.links.iter().filter_map(|c| Some((self.trace_of(c)?, *c))).collect()
    }

    /// The app (instrumented by a language agent) sends its own context while our SERVER span,
    /// which had none from its caller, serves the request: the SERVER span joins the app's
    /// trace, so the request stays one tree (SERVER → the adopted CLIENT → the callee). Only
    /// while nothing has resolved against the SERVER span's own trace yet, else its earlier
    /// children would be left in the old one.
    fn join_app_trace(&mut self, server: SpanId, trace_id: TraceId) {
        if let Some(node) = self.nodes.get_mut(&server)
            && node.resolved.is_none()
            && let Origin::Known(ctx) = &mut node.origin
            && ctx.parent.is_none()
        {
            ctx.trace_id = trace_id;
        }
    }

    /// The trace id of a span if it is already known without waiting.
    fn trace_of(&self, span: &SpanId) -> Option<TraceId> {
        let mut id = *span;
        for _ in 0..64 {
            let node = self.nodes.get(&id)?;
            if let Some(ctx) = node.resolved {
                return Some(ctx.trace_id);
            }
            match &node.origin {
                Origin::Known(ctx) => return Some(ctx.trace_id),
                Origin::ChildOf(parent) | Origin::StitchedTo { caller: parent, .. } => id = *parent,
                Origin::AwaitPeer { .. } | Origin::AwaitUnit(_) | Origin::AwaitSends { .. } => return None,
            }
        }
        None
    }

    /// Marks a span finished; from now on it may time out waiting for its peer.
    pub fn finish(&mut self, span: SpanId) {
        if let Some(node) = self.nodes.get_mut(&span)
            && node.finished.is_none()
        {
            let now = Instant::now();
            node.finished = Some(now);
            self.finished.push_back((now, span));
        }
    }

    /// The span's trace and parent, or None while it still waits for evidence.
    pub fn resolve(&mut self, span: SpanId, now: Instant) -> Option<Context> {
        self.resolve_depth(span, now, 0)
    }

    /// A callee's context from its caller's, once the caller has one; the fallback when the
    /// caller was forgotten (or is a runaway chain) or has waited too long itself.
    fn resolve_caller(&mut self, caller: SpanId, fallback: Context, waited: Option<Duration>, now: Instant, depth: u32) -> Option<Context> {
        if depth > 64 || !self.nodes.contains_key(&caller) {
            self.stitch.caller_unplaced += 1;
            return Some(fallback);
        }
        match self.resolve_depth(caller, now, depth + 1) {
            Some(p) => {
                self.stitch.stitched += 1;
                Some(Context { trace_id: p.trace_id, parent: Some(caller) })
            }
            None if waited.is_some_and(|w| w >= PEER_GIVE_UP) => {
                self.stitch.caller_unplaced += 1;
                Some(fallback)
            }
            None => None,
        }
    }

    fn resolve_depth(&mut self, span: SpanId, now: Instant, depth: u32) -> Option<Context> {
        let node = self.nodes.get(&span)?;
        if let Some(ctx) = node.resolved {
            return Some(ctx);
        }
        let origin = node.origin.clone();
        let finished = node.finished;
        let ctx = match origin {
            Origin::Known(ctx) => ctx,
            Origin::ChildOf(parent) => {
                if depth > 64 {
                    return None;
                }
                match self.nodes.contains_key(&parent) {
                    true => {
                        let p = self.resolve_depth(parent, now, depth + 1)?;
                        Context { trace_id: p.trace_id, parent: Some(parent) }
                    }
                    // The parent was forgotten: keep the span, as a root of its own trace.
                    false => Context { trace_id: new_trace_id(), parent: None },
                }
            }
            Origin::AwaitUnit(_) => match finished {
                Some(t) if now.duration_since(t) >= UNIT_WAIT => {
                    self.stats.count(Why::TaskAnsweredNothing);
                    Context { trace_id: new_trace_id(), parent: None }
                }
                _ => return None,
            },
            Origin::AwaitPeer { end, request_exit_ns, key, fallback } => {
                let waited = finished.map(|t| now.saturating_duration_since(t));
                match self.clients.caller(&end, request_exit_ns, key) {
                    Caller::Span(caller) => {
                        if let Some(node) = self.nodes.get_mut(&span) {
                            node.origin = Origin::StitchedTo { caller, fallback };
                        }
                        self.resolve_caller(caller, fallback, waited, now, depth)?
                    }
                    Caller::NotYet => match waited {
                        Some(w) if w >= PEER_WAIT => {
                            self.stitch.caller_not_seen += 1;
                            fallback
                        }
                        _ => return None,
                    },
                    // The traced connection closed before this request was read: another
                    // client's, on a reused port.
                    Caller::None => fallback,
                }
            }
            Origin::StitchedTo { caller, fallback } => {
                let waited = finished.map(|t| now.saturating_duration_since(t));
                self.resolve_caller(caller, fallback, waited, now, depth)?
            }
            Origin::AwaitSends { identity, delivered_ns } => {
                if finished.is_none_or(|t| now.saturating_duration_since(t) < SENDS_WAIT) {
                    return None;
                }
                let (origin, links) = self.by_identity(identity, delivered_ns);
                if let Some(node) = self.nodes.get_mut(&span) {
                    (node.origin, node.links) = (origin, links);
                }
                return self.resolve_depth(span, now, depth);
            }
        };
        if let Some(node) = self.nodes.get_mut(&span) {
            if depth == 0 && node.finished.is_some() && !node.referable {
                self.nodes.remove(&span);
            } else {
                node.resolved = Some(ctx);
            }
        }
        Some(ctx)
    }

    /// Drops state nobody can refer to any more.
    pub fn expire(&mut self, now: Instant) {
        self.active.retain(|_, l| !l.is_empty());
        while let Some(&(t, id)) = self.finished.front() {
            if now.saturating_duration_since(t) < REMEMBER {
                break;
            }
            self.finished.pop_front();
            if self.held.contains_key(&id) {
                // Looked at again a REMEMBER later.
                self.finished.push_back((now, id));
                continue;
            }
            self.nodes.remove(&id);
        }
        self.clients.expire(now);
        // Once a second, with the client table's sweep.
        if self.last_unit_sweep.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
            self.last_unit_sweep = Some(now);
            // Units whose spans all resolved by timeout (tasks that never answered).
            let nodes = &self.nodes;
            self.unit_waiting.retain(|_, spans| {
                spans.retain(|(_, s)| nodes.get(s).is_some_and(|n| matches!(n.origin, Origin::AwaitUnit(_)) && n.resolved.is_none()));
                !spans.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests;
