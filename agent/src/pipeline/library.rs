//! Header fields from the traced process's own HTTP/2 library (`Event::HeaderField`), which
//! complete requests whose header blocks named HPACK entries the agent never saw (connections
//! opened before it attached). The probes send them field by field, then an end mark; a
//! thread's fields for one stream are one request's list, in order.
//!
//! - A server's library decodes a request after the read that brought it, inside that
//!   socket's callback (node), or on the goroutine that reads the connection (Go): the list
//!   goes to that connection's parser, and completes the request already waiting for its
//!   answer.
//! - A client's library is handed the list before it writes the request, and no socket is
//!   known then: the list waits, per process and stream id, for the request written next with
//!   that id, as stream hints do; lists for the same id that disagree complete nothing.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use crate::events::Cause;
use crate::protocols::parser::LibraryField;

/// A client's lists are taken by a request written this soon after.
const CLIENT_LIST_NS: u64 = 100_000_000;
/// Client lists kept per process.
const MAX_CLIENT_LISTS: usize = 256;
/// Fields in one list at most (more is no request we complete).
const MAX_FIELDS: usize = 64;

/// One thread's list being received.
struct Receiving {
    stream: u32,
    decoded: bool,
    cause: Cause,
    ts_ns: u64,
    fields: Vec<LibraryField>,
}

/// A whole list: stream `stream`'s request, as the library on thread `tid` saw it.
pub struct List {
    pub tgid: u32,
    pub tid: u32,
    pub stream: u32,
    /// A server's library decoded it (else a client's was handed it).
    pub decoded: bool,
    pub cause: Cause,
    pub ts_ns: u64,
    pub fields: Vec<LibraryField>,
}

#[derive(Default)]
pub struct LibraryFields {
    receiving: HashMap<(u32, u32), Receiving>,
    /// Per process, clients' lists waiting for their requests, oldest first.
    client_lists: HashMap<u32, VecDeque<List>>,
}

impl LibraryFields {
    /// One field. A field of another stream ends the thread's list before it.
    pub fn field(&mut self, tgid: u32, tid: u32, (stream, decoded): (u32, bool), cause: Cause, ts_ns: u64, field: LibraryField) -> Option<List> {
        let ended = match self.receiving.get(&(tgid, tid)) {
            Some(r) if (r.stream, r.decoded, r.cause) != (stream, decoded, cause) => self.end(tgid, tid),
            _ => None,
        };
        let receiving = self.receiving.entry((tgid, tid)).or_insert_with(|| Receiving { stream, decoded, cause, ts_ns, fields: Vec::new() });
        if receiving.fields.len() < MAX_FIELDS {
            receiving.fields.push(field);
        }
        ended
    }

    /// Thread `tid` did something else: its list, if any, is whole.
    pub fn end(&mut self, tgid: u32, tid: u32) -> Option<List> {
        let r = self.receiving.remove(&(tgid, tid))?;
        Some(List { tgid, tid, stream: r.stream, decoded: r.decoded, cause: r.cause, ts_ns: r.ts_ns, fields: r.fields })
    }

    /// The library said thread `tid`'s list for `stream` is whole.
    pub fn end_of(&mut self, tgid: u32, tid: u32, stream: u32, decoded: bool) -> Option<List> {
        let r = self.receiving.get(&(tgid, tid))?;
        if (r.stream, r.decoded) != (stream, decoded) {
            return None;
        }
        self.end(tgid, tid)
    }

    /// Every list being received (a tick: nothing more comes for them).
    pub fn end_all(&mut self) -> Vec<List> {
        let keys: Vec<(u32, u32)> = self.receiving.keys().copied().collect();
        keys.into_iter().filter_map(|(tgid, tid)| self.end(tgid, tid)).collect()
    }

    /// A client's list, to wait for its request.
    pub fn keep_for_client(&mut self, list: List) {
        let lists = self.client_lists.entry(list.tgid).or_default();
        while lists.len() >= MAX_CLIENT_LISTS || lists.front().is_some_and(|l| list.ts_ns.saturating_sub(l.ts_ns) > CLIENT_LIST_NS) {
            lists.pop_front();
        }
        lists.push_back(list);
    }

    /// The list for process `tgid`'s request on stream `stream`, written at `written_ns`: the
    /// lists made just before it for that stream id, if they agree. Every list for the id is
    /// taken either way.
    pub fn for_client_request(&mut self, tgid: u32, stream: u32, written_ns: u64) -> Option<Vec<LibraryField>> {
        let lists = self.client_lists.get_mut(&tgid)?;
        let matches = |l: &List| l.stream == stream && l.ts_ns <= written_ns && written_ns - l.ts_ns < CLIENT_LIST_NS;
        let mut found = lists.iter().filter(|l| matches(l)).map(|l| &l.fields);
        let agreed = found.next().filter(|first| found.all(|other| other == *first)).cloned();
        lists.retain(|l| l.stream != stream);
        agreed
    }

    /// Whether any thread's list is being received.
    pub fn is_receiving(&self) -> bool {
        !self.receiving.is_empty()
    }

    /// Whether process `tgid` has client lists waiting (most requests need no lookup).
    pub fn has_client_lists(&self, tgid: u32) -> bool {
        self.client_lists.get(&tgid).is_some_and(|l| !l.is_empty())
    }

    pub fn forget_process(&mut self, tgid: u32) {
        self.client_lists.remove(&tgid);
        self.receiving.retain(|(t, _), _| *t != tgid);
    }
}

/// One line for a connection whose requests named table entries never seen: what its
/// library's fields completed, and what stayed unknown.
pub fn report(conn: &crate::conn::Conn) {
    let Some(r) = conn.parser().map(|p| p.recovery()).filter(|r| r.incomplete > 0) else { return };
    let ends = match (conn.info.local, conn.info.remote) {
        (Some(l), Some(r)) => format!(" {l} ↔ {r}"),
        _ => String::new(),
    };
    let left = r.incomplete.saturating_sub(r.completed + r.refused);
    eprintln!(
        "zerotrace: {} connection{ends} ({:?} side, header table partly unknown: opened before attach, or a block lost): {} requests named entries never seen; {} completed from the process's HTTP/2 library ({} entries learned), {} refused (the library's fields disagreed with the bytes), {} left without those values",
        conn.protocol().unwrap_or("?"),
        conn.info.role,
        r.incomplete,
        r.completed,
        r.learned,
        r.refused,
        left
    );
}
