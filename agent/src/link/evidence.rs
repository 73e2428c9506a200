//! What in-process evidence says about a CLIENT request's parent, and the counters of every
//! decision (docs/ARCHITECTURE.md "Linking").
//!
//! Precision before recall: a parent is chosen only when the evidence names one request. When
//! it names several, the span keeps no parent and carries span links to the candidates; when
//! it names none, the span starts its own trace. Each outcome is counted by its reason and
//! reported at exit, so a user can see how much of the linking rests on which rule.

use crate::traceparent::SpanId;

/// What the pipeline knows about the execution that wrote a CLIENT request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// No runtime probe: a thread serves one request at a time (thread-per-request servers).
    Thread,
    /// The event-loop callback that wrote it runs for this SERVER span (its connection's
    /// request), or the connection it is written on was opened inside such a callback.
    Serving(SpanId, Why),
    /// The callback read the answers to these CLIENT spans: the write continues their
    /// request (the code after an `await`). `same_connection`: the write goes out on the
    /// connection those answers came from, where a library's queue handing the freed
    /// connection to another request's waiting call looks exactly the same.
    Continues { clients: Vec<SpanId>, same_connection: bool },
    /// Written by a unit of work (an asyncio task) whose request is not known yet: the
    /// request it answers next, if it read that request before this write, is the parent.
    Unit(UnitKey),
    /// The evidence already says there is none, or that it cannot decide.
    Undecided(Why, Vec<SpanId>),
}

/// A unit of work of one process: (tgid, the runtime's id for it, e.g. a task's address).
pub type UnitKey = (u32, u64);

/// Why a CLIENT span got its parent, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Why {
    // A parent, on evidence.
    /// The thread serves exactly one request.
    Thread,
    /// The goroutine serves exactly one request (Go: records name goroutines, not threads).
    Goroutine,
    /// The thread serves several requests, and exactly one has the path being sent on (a
    /// proxy forwarding it).
    PathForwarded,
    /// An event-loop callback of the request's own connection.
    Callback,
    /// The callback read the answer to an earlier call of the same request.
    Continuation,
    /// The first request on a connection opened inside one request's callback.
    OpenedBy,
    /// Work a thread took from a queue that a thread serving one request put it on (a
    /// `ThreadPoolExecutor`).
    Delegated,
    /// A worker process's thread read, from a pipe, the id of the one message its CONSUMER
    /// span took (a Celery prefork child running its task).
    HandedMessage,
    /// A consumer's thread read one delivery, on a connection whose consumer settles what it
    /// reads, and has not settled it yet (`consuming`).
    Delivery,
    /// The asyncio task that wrote it, or the chain of libuv callbacks its answer started,
    /// went on to answer the request (read before the write).
    TaskAnswered,
    // Ambiguous: no parent, span links to the candidates.
    /// The thread serves several requests (an event loop without runtime probes).
    ThreadServesSeveral,
    /// Several pipelined requests are unanswered on the connection whose callback runs.
    Pipelined,
    /// The callback read answers that belong to different requests.
    ContinuesSeveral,
    /// Written on the connection whose answer the callback read: the same request's next
    /// call, or a queued call of another request that was handed the connection.
    HandOff,
    /// One write carried several requests of a multiplexed connection: a transport that
    /// writes the streams every thread queued (grpc-core) wrote them, and the writing thread
    /// made one of them at most.
    BatchedWrite,
    /// Written by a client library that writes every thread's calls on whichever thread holds
    /// its transport (grpc-core).
    SharedTransport,
    /// A multiplexed connection's request that does not say which library wrote it.
    UnknownWriter,
    /// The worker's pipe read named several delivered messages.
    HandedSeveral,
    /// The thread read several deliveries it has not settled (read ahead, or never acked).
    DeliveriesSeveral,
    /// The thread read one delivery, on a connection whose consumer was not seen settling
    /// yet: between deliveries its loop may run anything.
    UnsettledDelivery,
    // No evidence: no parent.
    /// The thread serves no request (a worker thread, a background job).
    NotServing,
    /// An event loop ran it outside any socket callback (timer, immediate, thread pool).
    OutsideCallback,
    /// The asyncio task that wrote it answered no request afterwards (a background task, a
    /// `gather` child), or answered one read only after the write.
    TaskAnsweredNothing,
    /// The callback's socket carries no request we could tie it to.
    CallbackWithoutRequest,
    /// A runtime whose unit of work moves between threads, or shares them, and is not
    /// followed for this kind of traffic (Go's plaintext sockets: goroutines; gevent's
    /// greenlets).
    UnfollowedRuntime,
    /// Its process captures a sampled share of its connections (`--overhead-budget`): the
    /// thread may serve requests that were not seen, so serving one seen is no evidence.
    SampledProcess,
}

impl Why {
    pub fn name(self) -> &'static str {
        match self {
            Why::Thread => "thread",
            Why::Goroutine => "goroutine",
            Why::PathForwarded => "forwarded path",
            Why::Callback => "event-loop callback",
            Why::Continuation => "continuation after an answer",
            Why::OpenedBy => "connection opened by the request",
            Why::TaskAnswered => "task or callback chain that answered the request",
            Why::Delegated => "work handed to a pool thread",
            Why::HandedMessage => "message handed to a worker process",
            Why::HandedSeveral => "several messages handed to a worker process",
            Why::Delivery => "the delivery its consumer thread read",
            Why::DeliveriesSeveral => "several unsettled deliveries",
            Why::UnsettledDelivery => "delivery of a consumer not seen settling yet",
            Why::TaskAnsweredNothing => "task or callback chain that answered no request",
            Why::ThreadServesSeveral => "thread serves several requests",
            Why::Pipelined => "pipelined requests",
            Why::ContinuesSeveral => "answers of several requests",
            Why::HandOff => "possible queue hand-off",
            Why::BatchedWrite => "several streams in one write",
            Why::SharedTransport => "transport shared by threads (grpc-core)",
            Why::UnknownWriter => "writing library unknown (header block not decoded)",
            Why::NotServing => "thread serves no request",
            Why::OutsideCallback => "outside any socket callback",
            Why::CallbackWithoutRequest => "callback without a request",
            Why::UnfollowedRuntime => "unfollowed runtime (Go plaintext, gevent)",
            Why::SampledProcess => "process capturing a sampled share of its connections",
        }
    }

    pub fn outcome(self) -> Outcome {
        match self {
            Why::Thread
            | Why::Goroutine
            | Why::PathForwarded
            | Why::Callback
            | Why::Continuation
            | Why::OpenedBy
            | Why::TaskAnswered
            | Why::Delegated
            | Why::HandedMessage
            | Why::Delivery => Outcome::Parent,
            Why::ThreadServesSeveral
            | Why::Pipelined
            | Why::ContinuesSeveral
            | Why::HandOff
            | Why::BatchedWrite
            | Why::SharedTransport
            | Why::UnknownWriter
            | Why::HandedSeveral
            | Why::DeliveriesSeveral
            | Why::UnsettledDelivery => Outcome::Ambiguous,
            Why::NotServing | Why::OutsideCallback | Why::CallbackWithoutRequest | Why::UnfollowedRuntime | Why::SampledProcess | Why::TaskAnsweredNothing => Outcome::NoEvidence,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Parent,
    Ambiguous,
    NoEvidence,
}

/// The linker's verdict on a CLIENT request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Parent(SpanId, Why),
    /// No parent; the candidates (when ambiguous) become span links.
    NoParent(Why, Vec<SpanId>),
    /// Decided later, when the unit of work answers a request.
    AwaitUnit(UnitKey),
    /// Decided later, by the request that the chain of callbacks starting at this call
    /// answers: it may be a queued call of another request that was handed the connection
    /// (the candidates are where it would otherwise go).
    AwaitNewChain(Vec<SpanId>),
}

/// Decisions by reason, for the exit report and tests.
#[derive(Clone, Debug, Default)]
pub struct LinkStats {
    counts: rustc_hash::FxHashMap<&'static str, (Outcome, u64)>,
}

impl LinkStats {
    pub fn count(&mut self, why: Why) {
        self.counts.entry(why.name()).or_insert((why.outcome(), 0)).1 += 1;
    }

    pub fn get(&self, why: Why) -> u64 {
        self.counts.get(why.name()).map_or(0, |(_, n)| *n)
    }

    /// "by thread 120, by event-loop callback 40; ambiguous: …; no evidence: …", each part
    /// only when it has something.
    pub fn summary(&self) -> String {
        let part = |outcome: Outcome| {
            let mut items: Vec<(&str, u64)> = self.counts.iter().filter(|(_, (o, n))| *o == outcome && *n > 0).map(|(name, (_, n))| (*name, *n)).collect();
            items.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            items.iter().map(|(name, n)| format!("{n} {name}")).collect::<Vec<_>>().join(", ")
        };
        let mut parts = Vec::new();
        for (label, outcome) in [("parent by", Outcome::Parent), ("ambiguous, linked not parented", Outcome::Ambiguous), ("no evidence", Outcome::NoEvidence)] {
            let text = part(outcome);
            if !text.is_empty() {
                parts.push(format!("{label}: {text}"));
            }
        }
        if parts.is_empty() { "no client spans".to_string() } else { parts.join("; ") }
    }
}
