//! Messages handed to worker processes. A consumer that takes a message from a broker and
//! hands it to a worker process over a pipe (Celery's prefork pool: the parent takes the task
//! from the broker, a child runs it) moves the message's work away from its CONSUMER span: the
//! calls the task makes come from another process. The hand-off carries the message's id
//! (Celery's task id) in the bytes the worker reads from its pipe, so:
//!
//! - a thread that reads, from a pipe, the id of exactly one message delivered lately works
//!   for that message, and its calls are children of the message's CONSUMER span;
//! - until it reads from that pipe again (a worker goes back to its inbox for the next job);
//! - ids of several delivered messages in one read name candidates, not a parent.
//!
//! Ids are matched when they are UUIDs (Celery's task ids are): a UUID in a pipe's bytes that
//! was a delivered message's id is that message, never a coincidence.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use crate::traceparent::SpanId;

/// How long a delivered message's id is looked for in hand-offs: a task prefetched by the
/// worker waits for a free child, behind the tasks before it.
const REMEMBER_NS: u64 = 60_000_000_000;
/// Delivered messages remembered at most.
const MAX_DELIVERED: usize = 65536;
/// The canonical text form of a UUID: 8-4-4-4-12 hex digits.
const UUID_LEN: usize = 36;

/// What a thread is working for, by the last message handed to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Work {
    /// The CONSUMER span of the one message it was handed.
    One(SpanId),
    /// Its read named several delivered messages.
    Several(Vec<SpanId>),
}

/// Hand-off counts (exit report).
#[derive(Default, Debug, Clone, Copy)]
pub struct HandOffStats {
    /// Pipe reads that named one delivered message.
    pub one: u64,
    /// Pipe reads that named several.
    pub several: u64,
}

#[derive(Default)]
pub struct HandedMessages {
    /// Delivered message ids → (delivered at, CONSUMER span).
    delivered: HashMap<[u8; UUID_LEN], Vec<(u64, SpanId)>>,
    /// (delivered at, id), oldest first, for expiry.
    order: VecDeque<(u64, [u8; UUID_LEN])>,
    /// (tgid, tid) → (the pipe it was handed the message on, what it works for).
    working: HashMap<(u32, u32), (u32, Work)>,
    /// CONSUMER spans that a delivered id or a working thread names, with how many do: the
    /// linker holds them (`Linker::hold`) while any does, since a task may start long after
    /// its delivery finished.
    named: HashMap<SpanId, u32>,
    /// Spans that became named (to hold) and that no longer are (to release), since the
    /// caller last took them (`take_holds`).
    to_hold: Vec<SpanId>,
    released: Vec<SpanId>,
    pub stats: HandOffStats,
}

impl Work {
    fn spans(&self) -> &[SpanId] {
        match self {
            Work::One(span) => std::slice::from_ref(span),
            Work::Several(spans) => spans,
        }
    }
}

impl HandedMessages {
    /// A CONSUMER span took the message with these ids (its message id, its conversation id).
    pub fn delivered<'a>(&mut self, ids: impl IntoIterator<Item = &'a str>, span: SpanId, ts_ns: u64) {
        for id in ids {
            let Some(key) = uuid_key(id.as_bytes()) else { continue };
            self.expire(ts_ns);
            let spans = self.delivered.entry(key).or_default();
            if !spans.iter().any(|(_, s)| *s == span) {
                spans.push((ts_ns, span));
                self.order.push_back((ts_ns, key));
                self.name(span);
            }
        }
    }

    fn expire(&mut self, now_ns: u64) {
        while self.order.len() >= MAX_DELIVERED || self.order.front().is_some_and(|(t, _)| now_ns.saturating_sub(*t) > REMEMBER_NS) {
            let Some((t, key)) = self.order.pop_front() else { break };
            if let Some(spans) = self.delivered.get_mut(&key) {
                let (gone, kept): (Vec<_>, Vec<_>) = spans.drain(..).partition(|(at, _)| *at <= t);
                *spans = kept;
                if spans.is_empty() {
                    self.delivered.remove(&key);
                }
                for (_, span) in gone {
                    self.unname(span);
                }
            }
        }
    }

    /// Thread `tid` of `tgid` read `data` from pipe `fd` at `ts_ns`.
    pub fn pipe_read(&mut self, tgid: u32, tid: u32, fd: u32, data: &[u8], ts_ns: u64) {
        if self.delivered.is_empty() && self.working.is_empty() {
            return;
        }
        let mut spans: Vec<SpanId> = Vec::new();
        for key in uuids(data) {
            let Some(delivered) = self.delivered.get(&key) else { continue };
            for (at, span) in delivered {
                if *at <= ts_ns && ts_ns - *at <= REMEMBER_NS && !spans.contains(span) {
                    spans.push(*span);
                }
            }
        }
        let work = match spans.len() {
            0 => {
                // Back at the pipe it was handed its message on: that message is done.
                if self.working.get(&(tgid, tid)).is_some_and(|(on, _)| *on == fd)
                    && let Some((_, done)) = self.working.remove(&(tgid, tid))
                {
                    self.unname_all(&done);
                }
                return;
            }
            1 => {
                self.stats.one += 1;
                Work::One(spans[0])
            }
            _ => {
                self.stats.several += 1;
                Work::Several(spans)
            }
        };
        for span in work.spans() {
            self.name(*span);
        }
        if let Some((_, done)) = self.working.insert((tgid, tid), (fd, work)) {
            self.unname_all(&done);
        }
    }

    fn name(&mut self, span: SpanId) {
        let count = self.named.entry(span).or_default();
        *count += 1;
        if *count == 1 {
            self.to_hold.push(span);
        }
    }

    fn unname(&mut self, span: SpanId) {
        let Some(count) = self.named.get_mut(&span) else { return };
        *count -= 1;
        if *count == 0 {
            self.named.remove(&span);
            self.released.push(span);
        }
    }

    fn unname_all(&mut self, work: &Work) {
        for span in work.spans() {
            self.unname(*span);
        }
    }

    /// The spans to hold and to release since the last call.
    pub fn take_holds(&mut self) -> (Vec<SpanId>, Vec<SpanId>) {
        (std::mem::take(&mut self.to_hold), std::mem::take(&mut self.released))
    }

    /// What thread `tid` of `tgid` works for, if it was handed a message.
    pub fn working_for(&self, tgid: u32, tid: u32) -> Option<&Work> {
        self.working.get(&(tgid, tid)).map(|(_, work)| work)
    }

    /// A process ended: its threads work for nothing more.
    pub fn process_exited(&mut self, tgid: u32) {
        let done: Vec<Work> = self.working.extract_if(|(t, _), _| *t == tgid).map(|(_, (_, work))| work).collect();
        for work in done {
            self.unname_all(&work);
        }
    }
}

/// `id` as a UUID key (lower-cased), when it is one.
fn uuid_key(id: &[u8]) -> Option<[u8; UUID_LEN]> {
    let key: [u8; UUID_LEN] = id.try_into().ok()?;
    is_uuid(&key).then(|| key.map(|b| b.to_ascii_lowercase()))
}

fn is_uuid(b: &[u8; UUID_LEN]) -> bool {
    b.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() })
}

/// The UUIDs in `data` (as keys), in order.
fn uuids(data: &[u8]) -> impl Iterator<Item = [u8; UUID_LEN]> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while at + UUID_LEN <= data.len() {
            // A UUID's first dash is at 8: look only where one stands.
            if data[at + 8] != b'-' {
                at += 1;
                continue;
            }
            if let Some(key) = uuid_key(&data[at..at + UUID_LEN]) {
                at += UUID_LEN;
                return Some(key);
            }
            at += 1;
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK: &str = "4ceddcbb-3425-4b88-891f-d9a6e8b34e8f";
    const OTHER: &str = "98d20b90-0964-4c4f-b612-0480db5b651a";

    /// The job billiard writes to a prefork child (pickled), as read from its pipe.
    fn job(id: &str) -> Vec<u8> {
        let mut b = b"\x80\x05\x95\xc8\x03\0\0\0\0\0\0K\x02(K\0N\x8c\x10celery.app.trace\x94\x8c\x0ffast_trace_task\x94\x93\x94(\x8c\ntasks.work\x94\x8c$".to_vec();
        b.extend_from_slice(id.as_bytes());
        b.extend_from_slice(b"\x94}\x94(\x8c\x04lang\x94");
        b
    }

    #[test]
    fn a_worker_works_for_the_message_its_pipe_named_until_it_reads_again() {
        let mut h = HandedMessages::default();
        h.delivered([TASK, TASK], [1; 8], 100);
        h.delivered(["not-a-uuid"], [2; 8], 100);
        h.pipe_read(7, 8, 11, b"\0\0\x03\xd3", 200);
        assert_eq!(h.working_for(7, 8), None, "a length header names nothing");
        h.pipe_read(7, 8, 11, &job(&TASK.to_uppercase()), 210);
        assert_eq!(h.working_for(7, 8), Some(&Work::One([1; 8])));
        assert_eq!(h.working_for(7, 9), None, "another thread");
        h.pipe_read(7, 8, 12, b"unrelated", 220);
        assert_eq!(h.working_for(7, 8), Some(&Work::One([1; 8])), "another pipe");
        h.pipe_read(7, 8, 11, b"\0\0\x03\xd3", 300);
        assert_eq!(h.working_for(7, 8), None, "back at its inbox");
    }

    #[test]
    fn several_messages_or_a_message_not_delivered_yet_name_no_parent() {
        let mut h = HandedMessages::default();
        h.delivered([TASK], [1; 8], 100);
        h.delivered([OTHER], [2; 8], 100);
        let mut both = job(TASK);
        both.extend_from_slice(OTHER.as_bytes());
        h.pipe_read(7, 8, 11, &both, 200);
        assert_eq!(h.working_for(7, 8), Some(&Work::Several(vec![[1; 8], [2; 8]])));
        h.delivered([TASK], [3; 8], 300);
        h.pipe_read(7, 9, 11, &job(TASK), 250);
        assert_eq!(h.working_for(7, 9), Some(&Work::One([1; 8])), "the redelivery came after the read");
        h.pipe_read(7, 9, 11, &job(TASK), 400);
        assert_eq!(h.working_for(7, 9), Some(&Work::Several(vec![[1; 8], [3; 8]])), "delivered twice");
        h.pipe_read(7, 10, 11, &job(TASK), 100 + REMEMBER_NS * 2);
        assert_eq!(h.working_for(7, 10), None, "too old");
    }

    /// A delivered message's span is held while its id may still be handed on or a worker
    /// works for it, and released once neither is so.
    #[test]
    fn spans_are_held_while_named_and_released_once_not() {
        let mut h = HandedMessages::default();
        h.delivered([TASK], [1; 8], 100);
        assert_eq!(h.take_holds(), (vec![[1; 8]], vec![]));
        h.pipe_read(7, 8, 11, &job(TASK), 200);
        assert_eq!(h.take_holds(), (vec![], vec![]), "already held");
        h.delivered([OTHER], [2; 8], 100 + REMEMBER_NS * 2);
        assert_eq!(h.take_holds(), (vec![[2; 8]], vec![]), "its id expired, but a worker still works for it");
        h.pipe_read(7, 8, 11, b"\0\0\x03\xd3", 100 + REMEMBER_NS * 2);
        assert_eq!(h.take_holds(), (vec![], vec![[1; 8]]), "back at its inbox: done with it");
        h.pipe_read(7, 9, 11, &job(OTHER), 200 + REMEMBER_NS * 2);
        h.process_exited(7);
        h.delivered([TASK], [3; 8], 100 + REMEMBER_NS * 4);
        assert_eq!(h.take_holds(), (vec![[3; 8]], vec![[2; 8]]), "the worker exited and the id expired");
    }

    #[test]
    fn uuids_are_found_anywhere_and_nothing_else_is() {
        let data = format!("x{TASK}-{OTHER}{}", &TASK[..30]);
        let found: Vec<_> = uuids(data.as_bytes()).collect();
        assert_eq!(found, [uuid_key(TASK.as_bytes()).expect("uuid"), uuid_key(OTHER.as_bytes()).expect("uuid")]);
        assert_eq!(uuids(b"").count(), 0);
        assert_eq!(uuids(b"4ceddcbb-3425-4b88-891f-d9a6e8b34e8").count(), 0);
        assert_eq!(uuid_key(b"4ceddcbb-3425-4b88-891f-d9a6e8b34e8g"), None);
    }
}
