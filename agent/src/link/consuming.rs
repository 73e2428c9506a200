//! Deliveries a consumer thread works on. A blocking consumer loop (pika's
//! `BlockingConnection`, a redis-py `BRPOP` loop) reads a delivery, does the work for it on the
//! same thread (its HTTP and database calls), then goes back to its broker: it acks the
//! delivery, or asks for the next message. Parsers say when a client goes back
//! (`Message::Settle`), so:
//!
//! - deliveries a thread reads on a connection are open until that thread settles on that
//!   connection (sends are no settling: a consumer that publishes a result is still at work);
//! - deliveries read while earlier ones are still open add to them: a library that reads
//!   ahead while a callback runs (pika reading during a publish's flush) or a consumer that
//!   never acks (auto-ack) leaves no way to tell which one the thread works for;
//! - a connection is trusted once its consumer was seen settling: before that (the first
//!   delivery, or a consumer that never acks), an idle loop's timer may run anything, and the
//!   delivery is a candidate, not a parent;
//! - one open delivery on a trusted connection, across the thread's connections, is the
//!   parent of the thread's calls; several are candidates (span links), never a parent.
//!
//! Open deliveries are held in the linker (`Linker::hold`): a job may take longer than a
//! finished span is remembered.
//!
//! The pipeline applies it only to threads that serve no request (a thread serving one keeps
//! the thread rule: a reply it reads is that request's work) and only where a thread is a
//! unit of work (not Go's threads, not gevent's: their many tasks share one thread).

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use crate::traceparent::SpanId;

/// Open deliveries kept per thread at most: a consumer that never settles reads without end,
/// and the oldest candidates go first (any two already make it ambiguous).
const MAX_OPEN: usize = 8;

/// What a thread's open deliveries say of its calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Working {
    /// One delivery, on a connection whose consumer settles its deliveries.
    One(SpanId),
    /// One delivery, on a connection not seen settling yet: a candidate.
    Unsettled(SpanId),
    /// Several open deliveries: candidates.
    Several(Vec<SpanId>),
}

#[derive(Default)]
pub struct OpenDeliveries {
    /// (tgid, tid) → (connection fd, CONSUMER span) of each open delivery, oldest first.
    open: HashMap<(u32, u32), Vec<(u32, SpanId)>>,
    /// (tgid, fd) of connections whose consumer settled a delivery it read.
    settling: HashSet<(u32, u32)>,
}

impl OpenDeliveries {
    /// Thread `tid` of `tgid` read the delivery that is CONSUMER span `span` on `fd`. Returns
    /// the delivery no longer open for it, if the thread had too many.
    pub fn read(&mut self, tgid: u32, tid: u32, fd: u32, span: SpanId) -> Option<SpanId> {
        let open = self.open.entry((tgid, tid)).or_default();
        let dropped = (open.len() >= MAX_OPEN).then(|| open.remove(0).1);
        open.push((fd, span));
        dropped
    }

    /// Thread `tid` of `tgid` went back to its broker on `fd`: what it read there is done.
    /// Returns those deliveries.
    pub fn settled(&mut self, tgid: u32, tid: u32, fd: u32) -> Vec<SpanId> {
        let Some(open) = self.open.get_mut(&(tgid, tid)) else { return Vec::new() };
        let done: Vec<SpanId> = open.iter().filter(|(on, _)| *on == fd).map(|(_, span)| *span).collect();
        open.retain(|(on, _)| *on != fd);
        if !done.is_empty() {
            self.settling.insert((tgid, fd));
        }
        if open.is_empty() {
            self.open.remove(&(tgid, tid));
        }
        done
    }

    /// What thread `tid` of `tgid` works for, when it has open deliveries.
    pub fn working(&self, tgid: u32, tid: u32) -> Option<Working> {
        match self.open.get(&(tgid, tid))?.as_slice() {
            [] => None,
            [(fd, span)] if self.settling.contains(&(tgid, *fd)) => Some(Working::One(*span)),
            [(_, span)] => Some(Working::Unsettled(*span)),
            several => Some(Working::Several(several.iter().map(|(_, span)| *span).collect())),
        }
    }

    /// `fd` of `tgid` closed: its deliveries are done (returned), and a new connection on the
    /// same fd earns trust of its own.
    pub fn closed(&mut self, tgid: u32, fd: u32) -> Vec<SpanId> {
        self.settling.remove(&(tgid, fd));
        let mut done = Vec::new();
        self.open.retain(|(t, _), open| {
            if *t == tgid {
                done.extend(open.iter().filter(|(on, _)| *on == fd).map(|(_, span)| *span));
                open.retain(|(on, _)| *on != fd);
            }
            !open.is_empty()
        });
        done
    }

    /// `tgid` exited: its open deliveries (returned) are done.
    pub fn process_exited(&mut self, tgid: u32) -> Vec<SpanId> {
        self.settling.retain(|(t, _)| *t != tgid);
        let mut done = Vec::new();
        self.open.retain(|(t, _), open| {
            if *t == tgid {
                done.extend(open.iter().map(|(_, span)| *span));
            }
            *t != tgid
        });
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blocking loop: the first delivery is a candidate (the consumer was not seen settling
    /// yet); once it acked, each delivery is its thread's one until the next settle.
    #[test]
    fn a_settling_consumer_works_for_its_one_delivery_until_it_settles() {
        let mut d = OpenDeliveries::default();
        assert_eq!(d.working(1, 2), None);
        d.read(1, 2, 5, [1; 8]);
        assert_eq!(d.working(1, 2), Some(Working::Unsettled([1; 8])));
        assert_eq!(d.working(1, 3), None, "another thread read nothing");
        assert_eq!(d.settled(1, 2, 5), vec![[1; 8]]);
        assert_eq!(d.working(1, 2), None, "settled: back at the broker");
        d.read(1, 2, 5, [2; 8]);
        assert_eq!(d.working(1, 2), Some(Working::One([2; 8])));
        assert!(d.settled(1, 2, 6).is_empty());
        assert_eq!(d.working(1, 2), Some(Working::One([2; 8])), "settling elsewhere settles nothing here");
        d.settled(1, 2, 5);
        assert_eq!(d.working(1, 2), None);
    }

    /// Reading ahead (a second delivery before the first was settled), or deliveries open on
    /// two connections: candidates, never a parent.
    #[test]
    fn deliveries_read_before_the_last_was_settled_are_all_candidates() {
        let mut d = OpenDeliveries::default();
        d.read(1, 2, 5, [1; 8]);
        d.settled(1, 2, 5);
        d.read(1, 2, 5, [2; 8]);
        d.read(1, 2, 5, [3; 8]);
        assert_eq!(d.working(1, 2), Some(Working::Several(vec![[2; 8], [3; 8]])));
        d.settled(1, 2, 5);
        d.read(1, 2, 5, [4; 8]);
        d.read(1, 2, 7, [5; 8]);
        assert_eq!(d.working(1, 2), Some(Working::Several(vec![[4; 8], [5; 8]])));
        let dropped: Vec<Option<SpanId>> = (0..20).map(|i| d.read(1, 2, 7, [i; 8])).collect();
        assert_eq!(dropped.iter().flatten().count(), 20 + 2 - MAX_OPEN, "each delivery let go is returned once");
        assert!(matches!(d.working(1, 2), Some(Working::Several(c)) if c.len() == MAX_OPEN), "bounded");
    }

    /// A closed connection ends its deliveries and its trust; an exited process, all of it.
    #[test]
    fn closing_and_exiting_forget() {
        let mut d = OpenDeliveries::default();
        d.read(1, 2, 5, [1; 8]);
        d.settled(1, 2, 5);
        d.read(1, 2, 5, [2; 8]);
        assert_eq!(d.closed(1, 5), vec![[2; 8]]);
        assert_eq!(d.working(1, 2), None);
        d.read(1, 2, 5, [3; 8]);
        assert_eq!(d.working(1, 2), Some(Working::Unsettled([3; 8])), "a new connection on the fd is not trusted yet");
        assert_eq!(d.process_exited(1), vec![[3; 8]]);
        assert_eq!(d.working(1, 2), None);
    }
}
