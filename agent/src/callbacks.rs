//! Event-loop evidence: which request a write belongs to, from the socket callback that the
//! thread was running when it wrote (`events::Cause`, from the runtime probes in libuv).
//!
//! - A callback of a SERVER connection runs for that connection's unanswered request (the
//!   handler, and whatever it writes before it first waits).
//! - A callback of a CLIENT connection that read answers continues the requests that made
//!   those calls (the code after an `await`).
//! - A connection's first request, written in its connect callback, belongs to the request
//!   whose callback opened the connection.
//! - A call written on the connection whose answer the callback read may be the same request's
//!   next call or another request's queued call that a pool handed the connection (node-postgres
//!   does this): it starts a callback chain, and the request whose answer a callback of that
//!   chain writes is its parent (`Linker::chain_answered`).
//!
//! - A thread that took work from a watched queue (`ThreadPoolExecutor`) works for the
//!   request the thread that put it there served at that moment.
//! - A write inside an asyncio task step belongs to the request that task answers next (the
//!   linker waits for that answer: `Linker::unit_answered`).
//!
//! Everything else (no request on the socket, answers of several requests, a write outside
//! any callback or task) is left undecided, with a reason: see `link::Why`.

use rustc_hash::FxHashMap as HashMap;

use crate::conn::{ConnTable, Role};
use crate::events::Cause;
use crate::link::{Evidence, Why};
use crate::traceparent::SpanId;

/// Threads remembered at most (one entry per event-loop thread; a bound against pid churn).
const MAX_THREADS: usize = 65_536;

/// The answers the current callback of one thread has read.
struct Answers {
    fd: u32,
    seq: u32,
    clients: Vec<SpanId>,
}

#[derive(Default)]
pub struct Callbacks {
    by_thread: HashMap<(u32, u32), Answers>,
    /// Items put on a watched queue, by (tgid, item): the evidence of the putting thread.
    handed: HashMap<(u32, u64), Evidence>,
    /// Threads working on an item they took: (tgid, tid) → the putter's evidence.
    delegated: HashMap<(u32, u32), Evidence>,
}

impl Callbacks {
    /// An answer to CLIENT span `client` was read on `fd` by a thread inside callback `cause`.
    /// Only the callback's own socket counts: that read is what triggered the callback.
    pub fn answered(&mut self, tgid: u32, tid: u32, fd: u32, cause: Cause, client: SpanId) {
        let Cause::Callback { fd: cb_fd, seq } = cause else { return };
        if cb_fd != fd {
            return;
        }
        if self.by_thread.len() >= MAX_THREADS {
            self.by_thread.clear();
        }
        let entry = self.by_thread.entry((tgid, tid)).or_insert(Answers { fd, seq, clients: Vec::new() });
        if (entry.fd, entry.seq) != (fd, seq) {
            *entry = Answers { fd, seq, clients: Vec::new() };
        }
        if entry.clients.len() < 64 {
            entry.clients.push(client);
        }
    }

    /// The CLIENT spans whose answers the thread's callback (fd, seq) read.
    pub fn answers(&self, tgid: u32, tid: u32, fd: u32, seq: u32) -> &[SpanId] {
        self.by_thread.get(&(tgid, tid)).filter(|a| (a.fd, a.seq) == (fd, seq)).map_or(&[], |a| a.clients.as_slice())
    }

    /// The evidence for a request written on `written_fd` by thread `tid` inside `cause`.
    pub fn evidence(&self, conns: &ConnTable, tgid: u32, tid: u32, written_fd: u32, cause: Cause) -> Evidence {
        let (fd, seq) = match cause {
            Cause::Thread => return Evidence::Thread,
            Cause::Outside => return Evidence::Undecided(Why::OutsideCallback, Vec::new()),
            Cause::Task(task) => return Evidence::Unit((tgid, task)),
            Cause::Callback { fd, seq } => (fd, seq),
        };
        let Some(conn) = conns.get(tgid, fd) else {
            // A pipe, a unix socket, a socket we do not parse.
            return Evidence::Undecided(Why::CallbackWithoutRequest, Vec::new());
        };
        match conn.info.role {
            Role::Server => {
                let spans = conn.pending.spans();
                match spans.as_slice() {
                    [] => Evidence::Undecided(Why::CallbackWithoutRequest, spans),
                    [one] => Evidence::Serving(*one, Why::Callback),
                    _ => Evidence::Undecided(Why::Pipelined, spans),
                }
            }
            Role::Client | Role::Unknown => {
                let answers = self.by_thread.get(&(tgid, tid)).filter(|a| (a.fd, a.seq) == (fd, seq));
                match answers {
                    Some(a) => Evidence::Continues { clients: a.clients.clone(), same_connection: written_fd == fd },
                    // The connect callback of a fresh connection writing its first request.
                    None if written_fd == fd && conn.requests == 0 => match conn.opened_by {
                        Some(server) => Evidence::Serving(server, Why::OpenedBy),
                        None => Evidence::Undecided(Why::CallbackWithoutRequest, Vec::new()),
                    },
                    None => Evidence::Undecided(Why::CallbackWithoutRequest, Vec::new()),
                }
            }
        }
    }

    /// Work was put on a watched queue by a thread whose evidence (made portable by the
    /// linker) is `evidence`.
    pub fn handed(&mut self, tgid: u32, item: u64, evidence: Evidence) {
        if self.handed.len() >= MAX_THREADS {
            self.handed.clear();
        }
        self.handed.insert((tgid, item), evidence);
    }

    /// Thread `tid` took `item`: until it takes the next one, it works for the putter's
    /// request (an item nobody traced put, such as a shutdown sentinel, ends that).
    pub fn taken(&mut self, tgid: u32, tid: u32, item: u64) {
        match self.handed.remove(&(tgid, item)) {
            Some(evidence) => {
                if self.delegated.len() >= MAX_THREADS {
                    self.delegated.clear();
                }
                self.delegated.insert((tgid, tid), evidence);
            }
            None => {
                self.delegated.remove(&(tgid, tid));
            }
        }
    }

    /// What the thread works for, if it took work from a watched queue.
    pub fn delegated(&self, tgid: u32, tid: u32) -> Option<&Evidence> {
        self.delegated.get(&(tgid, tid))
    }

    /// Forgets the threads of a process that exited.
    pub fn forget_process(&mut self, tgid: u32) {
        self.by_thread.retain(|(t, _), _| *t != tgid);
        self.handed.retain(|(t, _), _| *t != tgid);
        self.delegated.retain(|(t, _), _| *t != tgid);
    }
}
