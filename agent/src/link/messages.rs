//! Producer → consumer by message identity. A message seen leaving one traced process (a
//! PRODUCER span) and arriving at another (a CONSUMER span) is the same message when the
//! protocol's parser gives both the same identity (NATS: subject and whole payload). The
//! consumer becomes the producer's child only when one producer span sent that identity
//! lately: two (the same payload sent twice, by one app or two) name none, and the consumer
//! carries span links to both instead.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use crate::traceparent::SpanId;

/// How long a sent message is remembered: core NATS delivers within milliseconds or never.
const REMEMBER_NS: u64 = 10_000_000_000;
/// Messages remembered at most.
const MAX_SENT: usize = 65536;

/// What the messages sent say of a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Producer {
    One(SpanId),
    /// Several producer spans sent this identity lately.
    Several(Vec<SpanId>),
    None,
}

#[derive(Default)]
pub struct SentMessages {
    by_identity: HashMap<u64, Vec<(u64, SpanId)>>,
    /// (sent at, identity), oldest first, for expiry.
    order: VecDeque<(u64, u64)>,
}

impl SentMessages {
    pub fn sent(&mut self, identity: u64, span: SpanId, ts_ns: u64) {
        while self.order.len() >= MAX_SENT || self.order.front().is_some_and(|(t, _)| ts_ns.saturating_sub(*t) > REMEMBER_NS) {
            let Some((t, key)) = self.order.pop_front() else { break };
            if let Some(spans) = self.by_identity.get_mut(&key) {
                spans.retain(|(sent, _)| *sent > t);
                if spans.is_empty() {
                    self.by_identity.remove(&key);
                }
            }
        }
        self.by_identity.entry(identity).or_default().push((ts_ns, span));
        self.order.push_back((ts_ns, identity));
    }

    /// The producer of a message with this identity delivered at `ts_ns`.
    pub fn producer(&self, identity: u64, ts_ns: u64) -> Producer {
        let recent = |(sent, _): &&(u64, SpanId)| *sent <= ts_ns && ts_ns - *sent <= REMEMBER_NS;
        let spans: Vec<SpanId> = self.by_identity.get(&identity).map(|s| s.iter().filter(recent).map(|(_, span)| *span).collect()).unwrap_or_default();
        match spans.as_slice() {
            [] => Producer::None,
            [one] => Producer::One(*one),
            _ => Producer::Several(spans),
        }
    }
}

/// How consumers found their producers (exit report).
#[derive(Default, Debug, Clone, Copy)]
pub struct ConsumerStats {
    /// A `traceparent` in the message's headers.
    pub by_headers: u64,
    /// The one producer span that sent the same message.
    pub by_identity: u64,
    /// Several producer spans sent the same message: linked, not parented.
    pub ambiguous: u64,
    /// No traced producer sent it (or it has no identity).
    pub producer_not_seen: u64,
}

impl ConsumerStats {
    pub fn summary(&self) -> String {
        format!(
            "under their producer by message headers: {}, by message identity: {}; roots: {} (several producers sent the same message: linked), {} (producer not traced, or the message not captured whole)",
            self.by_headers, self.by_identity, self.ambiguous, self.producer_not_seen
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sender_is_the_producer_two_are_ambiguous_and_old_ones_are_forgotten() {
        let mut sent = SentMessages::default();
        sent.sent(7, [1; 8], 1_000);
        assert_eq!(sent.producer(7, 2_000), Producer::One([1; 8]));
        assert_eq!(sent.producer(7, 500), Producer::None, "delivered before it was sent");
        assert_eq!(sent.producer(8, 2_000), Producer::None);
        sent.sent(7, [2; 8], 3_000);
        assert_eq!(sent.producer(7, 4_000), Producer::Several(vec![[1; 8], [2; 8]]));
        let later = 3_000 + REMEMBER_NS + 1;
        sent.sent(9, [3; 8], later);
        assert_eq!(sent.producer(7, later), Producer::None, "forgotten");
    }
}
