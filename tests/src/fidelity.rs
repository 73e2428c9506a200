//! Concurrency fidelity: does every outgoing call hang under the request that made it?
//!
//! The apps (tests/apps/express/chain.js, …) serve `/chain/<id>` and put the id into each
//! call they make (`/item/<id>`, `… WHERE id = <id>`), so a span's parent can be judged right
//! or wrong. Calls that cannot carry an id (a Redis GET exports only its command; a pool's
//! reset query) are judged by count and time: at most one of each kind per request, inside
//! its parent.

use std::collections::HashMap;
use std::fmt;
use std::process::Command;

use crate::spans::TestSpan;

/// Runs tests/apps/load.py: `requests` GETs of `url` (with `{id}` replaced by 0..requests) over
/// `concurrency` keep-alive connections. Panics with the output when a request failed.
pub fn drive(url: &str, requests: usize, concurrency: usize) {
    let out = Command::new("python3")
        .arg(crate::python_app("load.py"))
        .args(["--url", url, "--requests", &requests.to_string(), "--concurrency", &concurrency.to_string()])
        .output()
        .expect("running tests/apps/load.py");
    assert!(out.status.success(), "load.py: {} {}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The id a span carries: `/chain/<id>` or `/item/<id>` in a path or URL, `id = <id>` in SQL.
pub fn id_of(span: &TestSpan) -> Option<u64> {
    let text = span.attr("url.full").or(span.attr("url.path")).or(span.attr("db.query.text"))?;
    let tail = if let Some(at) = text.find("id = ") {
        &text[at + 5..]
    } else {
        let path = text.split('?').next()?;
        let at = path.find("/chain/").map(|a| a + 7).or(path.find("/item/").map(|a| a + 6))?;
        &path[at..]
    };
    tail.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Calls without an id that each request makes exactly once (the Redis GET).
const ONE_PER_REQUEST: &[&str] = &["GET"];

/// What the children of one traced front process looked like.
#[derive(Default, Debug)]
pub struct Fidelity {
    pub requests: usize,
    /// Children expected at least: calls per request × requests.
    pub expected: usize,
    /// CLIENT spans of the front process.
    pub children: usize,
    pub right: usize,
    pub wrong: Vec<String>,
    /// CLIENT spans with no parent (the evidence did not decide).
    pub orphans: usize,
    /// Orphans that carry span links to candidate parents.
    pub linked: usize,
    /// Orphans by span name.
    pub orphan_names: std::collections::BTreeMap<String, usize>,
    /// HTTP children whose callee SERVER span (traced too) is stitched under them.
    pub stitched: usize,
    pub http_children: usize,
}

impl Fidelity {
    /// Right children over the children expected (or seen, when a driver splits a call in
    /// two requests, as asyncpg's prepare-then-execute does).
    pub fn right_share(&self) -> f64 {
        let of = self.expected.max(self.children);
        if of == 0 { 0.0 } else { self.right as f64 / of as f64 }
    }
}

impl fmt::Display for Fidelity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests: {}/{} children right ({:.1}%), {} wrong, {} without parent ({} with span links); {}/{} HTTP calls reach their callee",
            self.requests,
            self.right,
            self.expected.max(self.children),
            100.0 * self.right_share(),
            self.wrong.len(),
            self.orphans,
            self.linked,
            self.stitched,
            self.http_children
        )?;
        if !self.orphan_names.is_empty() {
            write!(f, "; without parent by name: {:?}", self.orphan_names)?;
        }
        for w in self.wrong.iter().take(5) {
            write!(f, "\n  wrong: {w}")?;
        }
        Ok(())
    }
}

/// Judges the CLIENT spans of process `front_pid`: `calls` children are expected per
/// `/chain/<id>` SERVER span.
pub fn measure(spans: &[TestSpan], front_pid: u32, calls: usize) -> Fidelity {
    let pid = front_pid.to_string();
    let ours = |s: &&TestSpan| s.resource.get("process.pid") == Some(&pid);
    let fronts: HashMap<&str, &TestSpan> =
        spans.iter().filter(ours).filter(|s| s.kind == "SERVER" && s.attr("url.path").is_some_and(|p| p.starts_with("/chain/"))).map(|s| (s.span_id.as_str(), s)).collect();
    let mut out = Fidelity { requests: fronts.len(), expected: fronts.len() * calls, ..Default::default() };
    // Calls without an id, per (request, kind of call): one each at most.
    let mut unlabelled_per_front: HashMap<(&str, String), usize> = HashMap::new();
    for child in spans.iter().filter(ours).filter(|s| s.kind == "CLIENT") {
        out.children += 1;
        let is_http = child.attr("url.full").is_some();
        if is_http {
            out.http_children += 1;
            for callee in spans.iter().filter(|s| s.kind == "SERVER" && s.parent_id == child.span_id) {
                // A callee stitched under another request's call is as wrong as a child
                // under another request.
                if id_of(callee) == id_of(child) && callee.trace_id == child.trace_id {
                    out.stitched += 1;
                } else {
                    out.wrong.push(format!("callee {:?} under the call {} {:?}", callee.attr("url.path"), child.name, id_of(child)));
                }
            }
        }
        if child.parent_id.is_empty() {
            out.orphans += 1;
            *out.orphan_names.entry(format!("{} ({})", child.name, child.attr("db.system.name").unwrap_or("http"))).or_default() += 1;
            if !child.links.is_empty() {
                out.linked += 1;
            }
            continue;
        }
        let describe = || format!("{} {:?} under {:?}", child.name, id_of(child), fronts.get(child.parent_id.as_str()).map(|p| p.attr("url.path")));
        let Some(parent) = fronts.get(child.parent_id.as_str()) else {
            out.wrong.push(format!("{} (parent is no /chain request)", describe()));
            continue;
        };
        const SLACK: u64 = 2_000_000;
        let inside = child.start + SLACK >= parent.start && child.end <= parent.end + SLACK && child.trace_id == parent.trace_id;
        let verdict = match id_of(child) {
            Some(id) => Some(id) == id_of(parent) && inside,
            // Connection set-up (Redis HELLO, CLIENT SETINFO) and pool housekeeping can only
            // be judged by time; the request's own Redis GET by count too.
            None if !ONE_PER_REQUEST.contains(&child.name.as_str()) => inside,
            None => {
                let n = unlabelled_per_front.entry((parent.span_id.as_str(), format!("{} {:?}", child.name, child.attr("db.system.name")))).or_default();
                *n += 1;
                *n == 1 && inside
            }
        };
        if verdict {
            out.right += 1;
        } else {
            out.wrong.push(describe());
        }
    }
    out
}
