//! Aligns spans from two recorders that describe the same operation.
//!
//! Two spans may describe the same operation when they share category, operation (method or
//! DB command) and target (HTTP path), their database systems and peer ports do not disagree,
//! and they overlap in time (with a little slack: the two recorders take their timestamps at
//! different layers — the kernel sees the request bytes before the framework does). Among all
//! such candidate pairs, the closest in time are paired first (greedy on the distance between
//! midpoints), so concurrent identical requests pair up by time.

use std::collections::HashMap;

use super::model::{Category, Span};

/// How far apart two spans may lie and still be the same operation. The language agent's and
/// the kernel's clocks are both CLOCK_REALTIME; the rest is where each takes its timestamps.
const SLACK_NS: u64 = 5_000_000;

type Key<'a> = (Category, &'a str, &'a str);

fn key(s: &Span) -> Key<'_> {
    (s.category, s.operation.as_str(), s.target.as_str())
}

fn compatible(a: &Span, b: &Span) -> bool {
    let systems_agree = a.system.is_empty() || b.system.is_empty() || a.system == b.system;
    let ports_agree = a.port.is_none() || b.port.is_none() || a.port == b.port;
    systems_agree && ports_agree && a.start <= b.end + SLACK_NS && b.start <= a.end + SLACK_NS
}

fn midpoint_distance(a: &Span, b: &Span) -> u64 {
    ((a.start / 2 + a.end / 2) as i128 - (b.start / 2 + b.end / 2) as i128).unsigned_abs() as u64
}

/// Returns pairs (index in `ours`, index in `theirs`), each index used at most once.
pub fn align(ours: &[Span], theirs: &[Span]) -> Vec<(usize, usize)> {
    // Their spans by key, sorted by start, with the longest duration per bucket to bound the
    // window searched for each of ours.
    let mut buckets: HashMap<Key<'_>, (Vec<usize>, u64)> = HashMap::new();
    for (i, s) in theirs.iter().enumerate() {
        let entry = buckets.entry(key(s)).or_default();
        entry.0.push(i);
        entry.1 = entry.1.max(s.duration_ns());
    }
    for (indices, _) in buckets.values_mut() {
        indices.sort_by_key(|&i| theirs[i].start);
    }
    let mut candidates: Vec<(u64, usize, usize)> = Vec::new();
    for (oi, o) in ours.iter().enumerate() {
        let Some((indices, longest)) = buckets.get(&key(o)) else { continue };
        let earliest = o.start.saturating_sub(longest + SLACK_NS);
        let first = indices.partition_point(|&i| theirs[i].start < earliest);
        for &ti in &indices[first..] {
            let t = &theirs[ti];
            if t.start > o.end + SLACK_NS {
                break;
            }
            if compatible(o, t) {
                candidates.push((midpoint_distance(o, t), oi, ti));
            }
        }
    }
    candidates.sort_unstable();
    let mut ours_used = vec![false; ours.len()];
    let mut theirs_used = vec![false; theirs.len()];
    let mut pairs = Vec::new();
    for (_, oi, ti) in candidates {
        if !ours_used[oi] && !theirs_used[ti] {
            ours_used[oi] = true;
            theirs_used[ti] = true;
            pairs.push((oi, ti));
        }
    }
    pairs.sort_unstable();
    pairs
}

#[cfg(test)]
mod tests {
    use super::super::model::Kind;
    use super::super::model::tests::span;
    use super::*;

    fn get(path: &str, start: u64, end: u64) -> Span {
        span(Kind::Server, "GET", start, end, &[("http.request.method", "GET"), ("url.path", path)])
    }

    #[test]
    fn concurrent_identical_requests_pair_by_time() {
        let ours = vec![get("/a", 0, 10), get("/a", 5, 15), get("/a", 100, 110)];
        let theirs = vec![get("/a", 101, 109), get("/a", 1, 9), get("/a", 6, 14)];
        assert_eq!(align(&ours, &theirs), vec![(0, 1), (1, 2), (2, 0)]);
    }

    #[test]
    fn different_paths_ports_systems_or_times_never_pair() {
        let ours = vec![get("/a", 0, 10), get("/b", 1000, 1010)];
        let theirs = vec![get("/b", 0, 10), get("/b", 2000, 2010)];
        assert!(align(&ours, &theirs).is_empty());
        let p1 = span(Kind::Client, "GET", 0, 10, &[("http.request.method", "GET"), ("url.full", "http://h:1/x")]);
        let p2 = span(Kind::Client, "GET", 0, 10, &[("http.request.method", "GET"), ("url.full", "http://h:2/x")]);
        assert!(align(&[p1], &[p2]).is_empty());
        let pg = span(Kind::Client, "SELECT", 0, 10, &[("db.system", "postgresql"), ("db.operation", "SELECT")]);
        let my = span(Kind::Client, "SELECT", 0, 10, &[("db.system", "mysql"), ("db.operation", "SELECT")]);
        assert!(align(&[pg], &[my]).is_empty());
    }

    #[test]
    fn slack_covers_layer_offsets_and_unpaired_spans_stay_unpaired() {
        // The kernel sees the answer leave 3 ms after the framework ended its span.
        let ours = vec![get("/a", 0, 10), get("/a", 50, 60)];
        let theirs = vec![get("/a", 13, 20)];
        assert_eq!(align(&ours, &theirs), vec![(0, 0)]);
    }
}
