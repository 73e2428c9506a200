//! The comparison itself: coverage per category, missing and extra spans, attribute parity,
//! parent structure and trace connectivity, computed from two span sets and their alignment.
//! "Theirs" is the language agent: it is the reference coverage is measured against.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::align::align;
use super::model::{Category, Span};

/// Examples of missing/extra spans kept per category.
const EXAMPLES: usize = 5;
/// Parent chains longer than this are treated as broken (and cycles end).
const MAX_DEPTH: usize = 64;

#[derive(Debug, Default, Serialize)]
pub struct CategoryRow {
    pub category: Option<Category>,
    pub agent: usize,
    pub zerotrace: usize,
    pub matched: usize,
    /// matched / agent, in percent (100 when the agent has none).
    pub coverage_pct: f64,
    /// Matched pairs whose nearest matched ancestors correspond on both sides.
    pub same_parent: usize,
    /// Matched pairs that zerotrace put under another matched span than the agent did: a
    /// wrong parent (or the agent's; the agent is the reference).
    pub different_parent: usize,
    /// Matched pairs that the agent put under a matched span and zerotrace under none (no
    /// parent, or one the agent has no span for).
    pub no_parent: usize,
    pub missing_examples: Vec<Example>,
    pub extra_examples: Vec<Example>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Example {
    pub service: String,
    pub kind: super::model::Kind,
    pub name: String,
    pub operation: String,
    pub target: String,
    pub start_unix_nano: u64,
    pub duration_ms: f64,
}

impl Example {
    fn of(s: &Span) -> Example {
        Example {
            service: s.service.clone(),
            kind: s.kind,
            name: s.name.clone(),
            operation: s.operation.clone(),
            target: s.target.clone(),
            start_unix_nano: s.start,
            duration_ms: s.duration_ns() as f64 / 1e6,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Parity {
    pub same: usize,
    pub different: usize,
    pub only_zerotrace: usize,
    pub only_agent: usize,
    /// One differing pair of values, zerotrace's first.
    pub example: Option<(String, String)>,
}

#[derive(Debug, Default, Serialize)]
pub struct Connectivity {
    /// Requests: aligned HTTP SERVER pairs where either side's span is a trace root.
    pub requests: usize,
    /// Requests that zerotrace shows as one tree: every aligned span the agent put under the
    /// request, zerotrace put under it too.
    pub zerotrace_one_tree: usize,
    /// Requests the agent shows as one tree: every agent span in the request's trace is under
    /// the request's span (from the agent's own trace and parent ids).
    pub agent_one_tree: usize,
}

/// One request as both sides saw it: the root pair and every aligned pair under it.
#[derive(Debug, Serialize)]
pub struct Request {
    pub ours_root: usize,
    pub theirs_root: usize,
    pub members: Vec<(usize, usize)>,
    pub zerotrace_one_tree: bool,
    pub agent_one_tree: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub categories: Vec<CategoryRow>,
    pub total: CategoryRow,
    /// (category, attribute key) → parity over aligned pairs.
    pub attributes: BTreeMap<String, BTreeMap<String, Parity>>,
    pub connectivity: Connectivity,
    #[serde(skip)]
    pub requests: Vec<Request>,
    #[serde(skip)]
    pub ours: Vec<Span>,
    #[serde(skip)]
    pub theirs: Vec<Span>,
    #[serde(skip)]
    pub pairs: Vec<(usize, usize)>,
    /// Parent links (index → parent index when in the set) of each side.
    #[serde(skip)]
    pub ours_parent: Vec<Option<usize>>,
    #[serde(skip)]
    pub theirs_parent: Vec<Option<usize>>,
}

/// Parent links of one side: index → parent index, when the parent is in the set.
fn parents(spans: &[Span]) -> Vec<Option<usize>> {
    let by_id: HashMap<(&str, &str), usize> = spans.iter().enumerate().map(|(i, s)| ((s.trace_id.as_str(), s.span_id.as_str()), i)).collect();
    spans.iter().map(|s| s.parent().and_then(|p| by_id.get(&(s.trace_id.as_str(), p)).copied())).collect()
}

pub(super) fn ancestors(parent: &[Option<usize>], mut i: usize) -> impl Iterator<Item = usize> + '_ {
    let mut depth = 0;
    std::iter::from_fn(move || {
        let p = parent[i]?;
        depth += 1;
        if depth > MAX_DEPTH {
            return None;
        }
        i = p;
        Some(p)
    })
}

pub(super) fn is_under(parent: &[Option<usize>], i: usize, root: usize) -> bool {
    i == root || ancestors(parent, i).any(|a| a == root)
}

pub fn compare(ours: Vec<Span>, theirs: Vec<Span>) -> Report {
    let pairs = align(&ours, &theirs);
    let ours_parent = parents(&ours);
    let theirs_parent = parents(&theirs);
    let mut match_of_ours: Vec<Option<usize>> = vec![None; ours.len()];
    let mut match_of_theirs: Vec<Option<usize>> = vec![None; theirs.len()];
    for &(o, t) in &pairs {
        match_of_ours[o] = Some(t);
        match_of_theirs[t] = Some(o);
    }
    let nearest_matched = |parent: &[Option<usize>], matches: &[Option<usize>], i: usize| ancestors(parent, i).find(|&a| matches[a].is_some());

    let mut rows: BTreeMap<Category, CategoryRow> = Category::ALL.iter().map(|&c| (c, CategoryRow { category: Some(c), ..Default::default() })).collect();
    for (i, s) in theirs.iter().enumerate() {
        let row = rows.get_mut(&s.category).expect("all categories");
        row.agent += 1;
        if match_of_theirs[i].is_none() && row.missing_examples.len() < EXAMPLES {
            row.missing_examples.push(Example::of(s));
        }
    }
    for (i, s) in ours.iter().enumerate() {
        let row = rows.get_mut(&s.category).expect("all categories");
        row.zerotrace += 1;
        if match_of_ours[i].is_none() && row.extra_examples.len() < EXAMPLES {
            row.extra_examples.push(Example::of(s));
        }
    }
    let mut attributes: BTreeMap<String, BTreeMap<String, Parity>> = BTreeMap::new();
    for &(o, t) in &pairs {
        let row = rows.get_mut(&theirs[t].category).expect("all categories");
        row.matched += 1;
        let ours_up = nearest_matched(&ours_parent, &match_of_ours, o);
        let theirs_up = nearest_matched(&theirs_parent, &match_of_theirs, t);
        match (ours_up.and_then(|u| match_of_ours[u]), theirs_up) {
            (a, b) if a == b => row.same_parent += 1,
            (None, Some(_)) => row.no_parent += 1,
            _ => row.different_parent += 1,
        }
        attribute_parity(attributes.entry(theirs[t].category.label().to_string()).or_default(), &ours[o], &theirs[t]);
    }
    let mut total = CategoryRow::default();
    let mut categories = Vec::new();
    for (_, mut row) in rows {
        row.coverage_pct = pct(row.matched, row.agent);
        total.agent += row.agent;
        total.zerotrace += row.zerotrace;
        total.matched += row.matched;
        total.same_parent += row.same_parent;
        total.different_parent += row.different_parent;
        total.no_parent += row.no_parent;
        categories.push(row);
    }
    total.coverage_pct = pct(total.matched, total.agent);

    let requests = requests(&theirs, &pairs, &ours_parent, &theirs_parent);
    let connectivity = Connectivity {
        requests: requests.len(),
        zerotrace_one_tree: requests.iter().filter(|r| r.zerotrace_one_tree).count(),
        agent_one_tree: requests.iter().filter(|r| r.agent_one_tree).count(),
    };
    Report { categories, total, attributes, connectivity, requests, ours, theirs, pairs, ours_parent, theirs_parent }
}

fn pct(part: usize, whole: usize) -> f64 {
    if whole == 0 { 100.0 } else { part as f64 * 100.0 / whole as f64 }
}

fn attribute_parity(by_key: &mut BTreeMap<String, Parity>, ours: &Span, theirs: &Span) {
    let keys: HashSet<&String> = ours.attrs.keys().chain(theirs.attrs.keys()).collect();
    for key in keys {
        let p = by_key.entry(key.clone()).or_default();
        match (ours.attrs.get(key), theirs.attrs.get(key)) {
            (Some(a), Some(b)) if a == b => p.same += 1,
            (Some(a), Some(b)) => {
                p.different += 1;
                p.example.get_or_insert_with(|| (a.clone(), b.clone()));
            }
            (Some(_), None) => p.only_zerotrace += 1,
            (None, _) => p.only_agent += 1,
        }
    }
}

/// Requests are aligned HTTP SERVER pairs where the agent's span is a root (the agent, the
/// reference, says where a request starts). Its members are the aligned pairs whose agent span
/// is under the agent's root: zerotrace shows the request as one tree when each of those has
/// its span under zerotrace's root too. The agent shows it as one tree when every span of its
/// own in the request's trace hangs under its root, by its own ids.
fn requests(theirs: &[Span], pairs: &[(usize, usize)], ours_parent: &[Option<usize>], theirs_parent: &[Option<usize>]) -> Vec<Request> {
    let mut by_trace: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, s) in theirs.iter().enumerate() {
        by_trace.entry(s.trace_id.as_str()).or_default().push(i);
    }
    let mut out = Vec::new();
    for &(or, tr) in pairs {
        if theirs[tr].category != Category::HttpServer || theirs_parent[tr].is_some() {
            continue;
        }
        let members: Vec<(usize, usize)> = pairs.iter().copied().filter(|&(_, t)| is_under(theirs_parent, t, tr)).collect();
        let zerotrace_one_tree = members.iter().all(|&(o, _)| is_under(ours_parent, o, or));
        let agent_one_tree = by_trace.get(theirs[tr].trace_id.as_str()).is_some_and(|spans| spans.iter().all(|&t| is_under(theirs_parent, t, tr)));
        out.push(Request { ours_root: or, theirs_root: tr, members, zerotrace_one_tree, agent_one_tree });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::model::Kind;
    use super::super::model::tests::span;
    use super::*;

    fn tree(trace: &str, split_db: bool) -> Vec<Span> {
        let mut server = span(Kind::Server, "GET", 0, 100, &[("http.request.method", "GET"), ("url.path", "/m/1"), ("k", "v")]);
        let mut client = span(Kind::Client, "GET", 10, 30, &[("http.request.method", "GET"), ("url.full", "http://h:2/item")]);
        let mut db = span(Kind::Client, "SELECT", 40, 50, &[("db.system.name", "postgresql"), ("db.operation.name", "SELECT"), ("k", trace)]);
        for s in [&mut server, &mut client, &mut db] {
            s.trace_id = trace.repeat(32);
        }
        client.parent_id = server.span_id.clone();
        db.parent_id = server.span_id.clone();
        if split_db {
            db.trace_id = "f".repeat(32);
        }
        vec![server, client, db]
    }

    #[test]
    fn coverage_parents_parity_and_connectivity() {
        let ours = tree("a", true);
        let mut theirs = tree("b", false);
        theirs.push(span(Kind::Internal, "middleware", 1, 2, &[]));
        let r = compare(ours, theirs);
        let row = |c: Category| r.categories.iter().find(|x| x.category == Some(c)).expect("row");
        assert_eq!((row(Category::HttpServer).matched, row(Category::HttpClient).matched, row(Category::DbClient).matched), (1, 1, 1));
        assert_eq!((row(Category::Other).agent, row(Category::Other).matched, row(Category::Other).missing_examples.len()), (1, 0, 1));
        assert_eq!((r.total.agent, r.total.zerotrace, r.total.matched), (4, 3, 3));
        assert!((r.total.coverage_pct - 75.0).abs() < 1e-9);
        // The DB span sits in another trace on our side: its parent structure differs.
        assert_eq!((row(Category::HttpClient).same_parent, row(Category::DbClient).same_parent), (1, 0));
        assert_eq!((row(Category::DbClient).no_parent, row(Category::DbClient).different_parent), (1, 0));
        assert_eq!((r.connectivity.requests, r.connectivity.zerotrace_one_tree, r.connectivity.agent_one_tree), (1, 0, 1));
        let db_k = &r.attributes["DB client"]["k"];
        assert_eq!((db_k.different, db_k.example.clone()), (1, Some(("a".to_string(), "b".to_string()))));
        assert_eq!(r.attributes["HTTP server"]["k"].same, 1);
    }

    #[test]
    fn both_sides_connected_when_trees_agree() {
        let r = compare(tree("a", false), tree("b", false));
        assert_eq!((r.connectivity.requests, r.connectivity.zerotrace_one_tree, r.connectivity.agent_one_tree), (1, 1, 1));
        assert_eq!(r.total.same_parent, 3);
    }

    /// Two concurrent requests: our side hangs the first request's DB call under the second
    /// request. That is a different (wrong) parent on our side, and it does not make the
    /// agent's trees look broken.
    #[test]
    fn a_wrong_parent_is_ours_alone() {
        let shift = |mut spans: Vec<Span>, ms: u64, path: &str| {
            for s in &mut spans {
                s.start += ms * 1_000_000;
                s.end += ms * 1_000_000;
            }
            spans[0].attrs.insert("url.path".to_string(), path.to_string());
            spans[0].target = path.to_string();
            spans
        };
        let mut ours = tree("a", false);
        ours.extend(shift(tree("c", false), 5, "/m/2"));
        let mut theirs = tree("b", false);
        theirs.extend(shift(tree("d", false), 5, "/m/2"));
        // Our first DB span under our second request.
        ours[2].parent_id = ours[3].span_id.clone();
        ours[2].trace_id = ours[3].trace_id.clone();
        let r = compare(ours, theirs);
        let db = r.categories.iter().find(|x| x.category == Some(Category::DbClient)).expect("row");
        assert_eq!((db.matched, db.same_parent, db.different_parent, db.no_parent), (2, 1, 1, 0));
        assert_eq!((r.connectivity.requests, r.connectivity.zerotrace_one_tree, r.connectivity.agent_one_tree), (2, 1, 2));
    }
}
