//! Same-host stitching's table: the client connections of traced processes, so a traced
//! callee's SERVER span can find the CLIENT span that sent its request.
//!
//! A callee knows its connection by the client's address (accept's peer) and its own port; a
//! client port is reused as soon as it is free, by any process, for any destination. So a
//! client connection is remembered per *generation*: from its connect to its close. A request
//! belongs to a traced caller only if the callee read it while one of that address's
//! generations to the callee's port was open; a request an untraced client sends from a port
//! a traced one used before finds no open generation and is a root at once.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap as HashMap;

use crate::traceparent::SpanId;

/// How long a closed client connection is remembered (its callee's records may still be
/// queued behind its close).
const REMEMBER_CLOSED: Duration = Duration::from_secs(5);
/// How long an open client connection is remembered after its last request.
const REMEMBER_IDLE: Duration = Duration::from_secs(60);
/// Generations kept per client address: one per destination in use, plus the closed ones
/// whose callees' spans may not be resolved yet (a port reused many times between two
/// pipeline ticks); a bound against runaway reuse, not a working limit.
const MAX_GENERATIONS: usize = 64;
/// CLIENT spans kept per generation: the callee's request is one of the latest.
const MAX_SPANS: usize = 64;

/// A client address as both ends see it (an IPv4-mapped IPv6 address as IPv4).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct PeerKey {
    pub client_ip: IpAddr,
    pub client_port: u16,
}

impl PeerKey {
    pub fn new(client: SocketAddr) -> Self {
        Self { client_ip: canonical(client.ip()), client_port: client.port() }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// What the callee knows of its end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CalleeEnd {
    pub client: PeerKey,
    /// The callee's own port (the listener's), when known.
    pub server_port: Option<u16>,
}

struct Generation {
    /// The caller's destination, when known (a connection adopted at attach has none).
    server: Option<SocketAddr>,
    /// Kernel time of the connect; 0 when it happened before the agent attached.
    opened_ns: u64,
    closed_ns: Option<u64>,
    last_seen: Instant,
    /// CLIENT spans in sending order.
    spans: Vec<Sent>,
}

/// A CLIENT span written on a generation.
struct Sent {
    /// Kernel time the request's write began.
    written_ns: u64,
    /// Its key on the connection (an HTTP/2 stream id).
    key: Option<u64>,
    span: SpanId,
    /// Kernel time the first read of its answer returned, once answered.
    answered_ns: Option<u64>,
}

impl Generation {
    fn serves(&self, end: &CalleeEnd, read_ns: u64) -> bool {
        let port_ok = match (self.server, end.server_port) {
            (Some(server), Some(port)) => server.port() == port,
            _ => true,
        };
        port_ok && self.opened_ns <= read_ns && self.closed_ns.is_none_or(|closed| read_ns <= closed)
    }
}

/// How a callee's search for its caller came out.
pub enum Caller {
    /// This CLIENT span sent the request.
    Span(SpanId),
    /// A traced connection matches but its CLIENT span is not known yet: wait a little.
    NotYet,
    /// No traced connection was open to the callee when it read the request.
    None,
}

#[derive(Default)]
pub struct ClientConns {
    by_client: HashMap<PeerKey, Vec<Generation>>,
    last_sweep: Option<Instant>,
}

impl ClientConns {
    /// A traced process connected from `local` to `remote` at `ts_ns`. An older connection
    /// from the same address to the same destination has ended, whether or not its close was
    /// seen (the 4-tuple is unique while a connection lives).
    pub fn connected(&mut self, local: SocketAddr, remote: Option<SocketAddr>, ts_ns: u64) {
        let generations = self.by_client.entry(PeerKey::new(local)).or_default();
        for g in generations.iter_mut().filter(|g| g.closed_ns.is_none() && (g.server.is_none() || g.server == remote)) {
            g.closed_ns = Some(ts_ns);
        }
        if generations.len() >= MAX_GENERATIONS {
            generations.remove(0);
        }
        generations.push(Generation { server: remote, opened_ns: ts_ns, closed_ns: None, last_seen: Instant::now(), spans: Vec::new() });
    }

    /// The traced process closed its connection from `local`.
    pub fn closed(&mut self, local: SocketAddr, remote: Option<SocketAddr>, ts_ns: u64) {
        if let Some(generations) = self.by_client.get_mut(&PeerKey::new(local)) {
            for g in generations.iter_mut().filter(|g| g.closed_ns.is_none() && (remote.is_none() || g.server.is_none() || g.server == remote)) {
                g.closed_ns = Some(ts_ns);
                g.last_seen = Instant::now();
            }
        }
    }

    /// A CLIENT span was written on the connection from `local` (to `remote`) at `write_ns`,
    /// with its key on the connection when it has one (an HTTP/2 stream id).
    pub fn sent(&mut self, local: SocketAddr, remote: Option<SocketAddr>, write_ns: u64, key: Option<u64>, span: SpanId) {
        let generations = self.by_client.entry(PeerKey::new(local)).or_default();
        let open = generations.iter().rposition(|g| g.closed_ns.is_none() && (g.server.is_none() || remote.is_none() || g.server == remote));
        let generation = match open {
            Some(i) => &mut generations[i],
            None => {
                // Open before the agent attached: its connect was never seen.
                if generations.len() >= MAX_GENERATIONS {
                    generations.remove(0);
                }
                generations.push(Generation { server: remote, opened_ns: 0, closed_ns: None, last_seen: Instant::now(), spans: Vec::new() });
                generations.last_mut().expect("just pushed")
            }
        };
        generation.last_seen = Instant::now();
        if generation.spans.len() >= MAX_SPANS {
            generation.spans.remove(0);
        }
        generation.spans.push(Sent { written_ns: write_ns, key, span, answered_ns: None });
    }

    /// The CLIENT span `span` sent from `local` read the first bytes of its answer at
    /// `answered_ns`.
    pub fn answered(&mut self, local: SocketAddr, span: SpanId, answered_ns: u64) {
        let Some(generations) = self.by_client.get_mut(&PeerKey::new(local)) else { return };
        if let Some(sent) = generations.iter_mut().rev().flat_map(|g| g.spans.iter_mut().rev()).find(|s| s.span == span) {
            sent.answered_ns = Some(answered_ns);
        }
    }

    /// Whether a traced process may have sent a request read at `read_ns` on this end.
    pub fn may_be_traced(&self, end: &CalleeEnd, read_ns: u64) -> bool {
        self.by_client.get(&end.client).is_some_and(|gs| gs.iter().any(|g| g.serves(end, read_ns)))
    }

    /// The CLIENT span that sent the request the callee read at `read_ns`: the one with the
    /// same key (streams multiplexed on one connection), else the latest one written before
    /// then on the generation that was open then.
    pub fn caller(&self, end: &CalleeEnd, read_ns: u64, key: Option<u64>) -> Caller {
        let Some(generations) = self.by_client.get(&end.client) else { return Caller::None };
        let mut open = generations.iter().rev().filter(|g| g.serves(end, read_ns));
        let Some(generation) = open.next() else { return Caller::None };
        if open.next().is_some() {
            // Two traced connections from one address to one port at once (explicit binds to
            // different server addresses): nothing tells them apart.
            return Caller::None;
        }
        match generation.spans.iter().rev().find(|s| s.written_ns <= read_ns && (key.is_none() || s.key == key)) {
            // Its answer was back before the callee read this request: the latest request
            // written is not this one, whose CLIENT span is not known yet (its write's record
            // is late). Taking the one before would put the call under the wrong request.
            Some(sent) if sent.answered_ns.is_some_and(|answered| answered < read_ns) => Caller::NotYet,
            Some(sent) => Caller::Span(sent.span),
            None => Caller::NotYet,
        }
    }

    /// Forgets connections closed or idle long enough (at most once a second).
    pub fn expire(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.last_sweep = Some(now);
        self.by_client.retain(|_, generations| {
            generations.retain(|g| {
                let idle = now.saturating_duration_since(g.last_seen);
                idle < if g.closed_ns.is_some() { REMEMBER_CLOSED } else { REMEMBER_IDLE }
            });
            !generations.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplexed_streams_find_their_own_caller_by_key() {
        let client: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let server: SocketAddr = "127.0.0.1:50051".parse().expect("addr");
        let mut conns = ClientConns::default();
        conns.connected(client, Some(server), 10);
        // Streams 1 and 3 written at 20 and 30 on one connection; the callee reads stream 1
        // after both were written: the latest-written rule would pick stream 3's span.
        conns.sent(client, Some(server), 20, Some(1), [1; 8]);
        conns.sent(client, Some(server), 30, Some(3), [3; 8]);
        let end = CalleeEnd { client: PeerKey::new(client), server_port: Some(server.port()) };
        assert!(matches!(conns.caller(&end, 40, Some(1)), Caller::Span(s) if s == [1; 8]));
        assert!(matches!(conns.caller(&end, 40, Some(3)), Caller::Span(s) if s == [3; 8]));
        // Stream 5's CLIENT span is not known yet: wait, do not take another stream's.
        assert!(matches!(conns.caller(&end, 40, Some(5)), Caller::NotYet));
    }

    #[test]
    fn a_request_whose_call_is_not_known_yet_waits_instead_of_taking_the_one_before() {
        let client: SocketAddr = "127.0.0.1:40001".parse().expect("addr");
        let server: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let mut conns = ClientConns::default();
        conns.connected(client, Some(server), 10);
        // Call 1 written at 20, answered at 30; call 2 written at 40, read by the callee at
        // 45, but its write's record comes after the callee's span is done.
        conns.sent(client, Some(server), 20, None, [1; 8]);
        let end = CalleeEnd { client: PeerKey::new(client), server_port: Some(server.port()) };
        assert!(matches!(conns.caller(&end, 25, None), Caller::Span(s) if s == [1; 8]), "call 1, unanswered yet, is the caller of a read at 25");
        conns.answered(client, [1; 8], 30);
        assert!(matches!(conns.caller(&end, 25, None), Caller::Span(s) if s == [1; 8]), "answered after the read: still call 1's");
        assert!(matches!(conns.caller(&end, 45, None), Caller::NotYet), "call 1 was answered before the read at 45: not its caller");
        conns.sent(client, Some(server), 40, None, [2; 8]);
        assert!(matches!(conns.caller(&end, 45, None), Caller::Span(s) if s == [2; 8]));
    }
}
