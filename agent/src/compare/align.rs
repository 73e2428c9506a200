//! Aligns spans from two recorders that describe the same operation.
//!
//! Two spans may describe the same operation when they share category, operation (method or
//! DB command) and target (HTTP path), their database systems and peer ports do not disagree,
//! and they overlap in time (with a little slack: the two recorders take their timestamps at
//! different layers — the kernel sees the request bytes before the framework does). Among all
//! such candidate pairs, the closest in time are paired first (greedy: calls by their ends,
//! server spans by their midpoints, see `distance`), so concurrent identical requests pair up
//! by time.
//!
//! Requests (HTTP SERVER spans) pair first. Calls then pair by time within their matched
//! request, then across requests (see `align`): a call one side put under another request
//! pairs only in that second pass, and shows as a different parent. What this cannot see is
//! two concurrent identical calls swapped between two requests within the time slack.
//!
//! Before all that, exact evidence: where an instrumented app sends `traceparent` on the wire,
//! zerotrace's CLIENT span adopts the id the agent gave its own span, so spans with the same
//! span id in the same category are the same operation, whatever the timing.

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

/// How far apart two candidate spans are. A call's span ends when its answer arrives, which
/// both recorders see within microseconds, while its start differs by however long the
/// library queued it before writing (a pool wait the agent's span includes): calls compare by
/// their ends. Server spans compare by their midpoints.
fn distance(a: &Span, b: &Span) -> u64 {
    match a.category {
        Category::HttpClient | Category::DbClient | Category::Cache => (a.end as i128 - b.end as i128).unsigned_abs() as u64,
        _ => ((a.start / 2 + a.end / 2) as i128 - (b.start / 2 + b.end / 2) as i128).unsigned_abs() as u64,
    }
}

/// For each span, the HTTP SERVER span it hangs under (itself for one), by its own ids.
fn request_of(spans: &[Span]) -> Vec<Option<usize>> {
    let by_id: HashMap<(&str, &str), usize> = spans.iter().enumerate().map(|(i, s)| ((s.trace_id.as_str(), s.span_id.as_str()), i)).collect();
    (0..spans.len())
        .map(|mut i| {
            for _ in 0..64 {
                if spans[i].category == Category::HttpServer {
                    return Some(i);
                }
                i = *by_id.get(&(spans[i].trace_id.as_str(), spans[i].parent()?))?;
            }
            None
        })
        .collect()
}

/// Pairing state: who is taken, and the pairs so far.
struct Pairing {
    ours_used: Vec<bool>,
    theirs_used: Vec<bool>,
    pairs: Vec<(usize, usize)>,
}

impl Pairing {
    fn take(&mut self, o: usize, t: usize) {
        self.ours_used[o] = true;
        self.theirs_used[t] = true;
        self.pairs.push((o, t));
    }

    /// Greedy pairing of the spans `include` selects, closest (by `cost`) first.
    fn by_time(&mut self, ours: &[Span], theirs: &[Span], include: impl Fn(&Span) -> bool, allowed: impl Fn(usize, usize) -> bool) {
        // Their spans by key, sorted by start, with the longest duration per bucket to bound
        // the window searched for each of ours.
        let mut buckets: HashMap<Key<'_>, (Vec<usize>, u64)> = HashMap::new();
        for (i, s) in theirs.iter().enumerate().filter(|(i, s)| !self.theirs_used[*i] && include(s)) {
            let entry = buckets.entry(key(s)).or_default();
            entry.0.push(i);
            entry.1 = entry.1.max(s.duration_ns());
        }
        for (indices, _) in buckets.values_mut() {
            indices.sort_by_key(|&i| theirs[i].start);
        }
        let mut candidates: Vec<(u64, usize, usize)> = Vec::new();
        for (oi, o) in ours.iter().enumerate().filter(|(i, s)| !self.ours_used[*i] && include(s)) {
            let Some((indices, longest)) = buckets.get(&key(o)) else { continue };
            let earliest = o.start.saturating_sub(longest + SLACK_NS);
            let first = indices.partition_point(|&i| theirs[i].start < earliest);
            for &ti in &indices[first..] {
                let t = &theirs[ti];
                if t.start > o.end + SLACK_NS {
                    break;
                }
                if compatible(o, t) && allowed(oi, ti) {
                    candidates.push((distance(o, t), oi, ti));
                }
            }
        }
        candidates.sort_unstable();
        for (_, oi, ti) in candidates {
            if !self.ours_used[oi] && !self.theirs_used[ti] {
                self.take(oi, ti);
            }
        }
    }
}

/// Returns pairs (index in `ours`, index in `theirs`), each index used at most once.
pub fn align(ours: &[Span], theirs: &[Span]) -> Vec<(usize, usize)> {
    let mut p = Pairing { ours_used: vec![false; ours.len()], theirs_used: vec![false; theirs.len()], pairs: Vec::new() };
    let by_id: HashMap<(&str, Category), usize> = theirs.iter().enumerate().map(|(i, s)| ((s.span_id.as_str(), s.category), i)).collect();
    for (oi, o) in ours.iter().enumerate() {
        if let Some(&ti) = by_id.get(&(o.span_id.as_str(), o.category))
            && !p.theirs_used[ti]
        {
            p.take(oi, ti);
        }
    }
    // Requests first: their paths and times rarely leave doubt, and the calls' structure
    // tie-break needs them.
    p.by_time(ours, theirs, |s| s.category == Category::HttpServer, |_, _| true);
    let mut server_match: Vec<Option<usize>> = vec![None; ours.len()];
    for &(o, t) in &p.pairs {
        server_match[o] = Some(t);
    }
    let (ours_request, theirs_request) = (request_of(ours), request_of(theirs));
    let agree = |o: usize, t: usize| ours_request[o].and_then(|r| server_match[r]).is_some_and(|r| Some(r) == theirs_request[t]);
    // Calls pair within their matched request first, then whatever is left across requests:
    // under load the two recorders' clocks for one call differ by milliseconds (the agent's
    // span ends when the event loop gets to the callback), more than concurrent identical
    // calls lie apart. A call one side put under another request stays unpaired in its own
    // and pairs in the second pass, as a different parent.
    p.by_time(ours, theirs, |s| s.category != Category::HttpServer, agree);
    p.by_time(ours, theirs, |s| s.category != Category::HttpServer, |_, _| true);
    let mut pairs = p.pairs;
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
    fn queued_calls_pair_by_their_answers() {
        let q = |start, end| span(Kind::Client, "SELECT", start, end, &[("db.system.name", "postgresql"), ("db.operation.name", "SELECT")]);
        // The agent's spans include a pool wait: the second query waited 8 ms for a client.
        let theirs = vec![q(0, 4), q(1, 13)];
        let ours = vec![q(1, 4), q(9, 13)];
        assert_eq!(align(&ours, &theirs), vec![(0, 0), (1, 1)]);
    }

    /// Two requests each make one identical query. Each pairs within its own request, even
    /// when the clocks put the other request's query closer; a query one side put under the
    /// other request pairs across requests.
    #[test]
    fn calls_pair_within_their_request_first() {
        let q = |start, end_us: u64| {
            let mut s = span(Kind::Client, "SELECT", start, 0, &[("db.system.name", "postgresql"), ("db.operation.name", "SELECT")]);
            s.end = end_us * 1000;
            s
        };
        let build = |trace: &str, first_end_us: u64, second_end_us: u64| {
            let mut spans = vec![get("/r/1", 0, 20), get("/r/2", 1, 21), q(2, first_end_us), q(3, second_end_us)];
            for s in &mut spans {
                s.trace_id = trace.repeat(32);
            }
            spans[2].parent_id = spans[0].span_id.clone();
            spans[3].parent_id = spans[1].span_id.clone();
            spans
        };
        // Theirs: request 1's query ends at 10.0 ms, request 2's at 10.3 ms. Ours, the other
        // way round in time (each recorder's own clock), but under the same requests.
        let theirs = build("b", 10_000, 10_300);
        let ours = build("a", 10_250, 10_050);
        assert_eq!(align(&ours, &theirs), vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
        // Ours puts both queries under request 1: the second pairs across requests.
        let mut ours = build("a", 10_250, 10_050);
        ours[3].parent_id = ours[0].span_id.clone();
        let r = super::super::report::compare(ours, theirs);
        let db = r.categories.iter().find(|x| x.category == Some(Category::DbClient)).expect("row");
        assert_eq!((db.same_parent, db.different_parent), (1, 1));
    }

    #[test]
    fn the_same_span_id_pairs_first_whatever_the_timing() {
        let mut ours = vec![get("/a", 0, 10), get("/a", 5, 15)];
        let mut theirs = vec![get("/a", 1, 9), get("/a", 6, 14)];
        // Our second span adopted the agent's first one's id (the traceparent on the wire).
        ours[1].span_id = theirs[0].span_id.clone();
        theirs[1].span_id = "f".repeat(16);
        assert_eq!(align(&ours, &theirs), vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn slack_covers_layer_offsets_and_unpaired_spans_stay_unpaired() {
        // The kernel sees the answer leave 3 ms after the framework ended its span.
        let ours = vec![get("/a", 0, 10), get("/a", 50, 60)];
        let theirs = vec![get("/a", 13, 20)];
        assert_eq!(align(&ours, &theirs), vec![(0, 0)]);
    }
}
