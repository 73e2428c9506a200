//! The HTML report: one self-contained page (inline CSS, no scripts, no external assets) with
//! the summary tables and, for chosen requests, the two waterfalls side by side.

use std::collections::HashSet;
use std::fmt::Write;

use super::model::{Category, Span};
use super::report::{Report, Request, ancestors, is_under};

/// Requests drawn as waterfalls: the split ones first, then the others in time order.
const WATERFALLS: usize = 12;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}\
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,th:first-child,td.l{text-align:left}\
th{background:#f3f3f3}.pair{display:flex;gap:16px}.side{flex:1;border:1px solid #ddd;padding:6px;min-width:0}\
.row{display:flex;align-items:center;height:20px;font-size:12px}.label{width:45%;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}\
.track{position:relative;flex:1;height:12px;background:#fafafa}.bar{position:absolute;height:12px;min-width:2px}\
.http_server{background:#4a7bd0}.http_client{background:#49a36b}.db_client{background:#c98a2b}.cache{background:#a05bc4}.other{background:#999}\
.unmatched{outline:2px dashed #d33;outline-offset:-2px}.split .label{color:#d33}.err{color:#d33}small{color:#666}";

fn category_class(c: Category) -> &'static str {
    match c {
        Category::HttpServer => "http_server",
        Category::HttpClient => "http_client",
        Category::DbClient => "db_client",
        Category::Cache => "cache",
        Category::Other => "other",
    }
}

pub fn render(report: &Report) -> String {
    let mut h = String::new();
    let _ = write!(h, "<!doctype html><html><head><meta charset=\"utf-8\"><title>zerotrace compare</title><style>{STYLE}</style></head><body>");
    let _ = write!(
        h,
        "<h1>zerotrace vs the language agent</h1><p><small>The language agent is the reference: coverage is the share of its spans that zerotrace also produced.</small></p>"
    );
    summary(&mut h, report);
    connectivity(&mut h, report);
    parity(&mut h, report);
    examples(&mut h, report);
    waterfalls(&mut h, report);
    h.push_str("</body></html>\n");
    h
}

fn summary(h: &mut String, r: &Report) {
    h.push_str("<h2>Coverage</h2><table><tr><th>category</th><th>agent</th><th>zerotrace</th><th>matched</th><th>coverage</th><th>missing</th><th>extra</th><th>same parent</th><th>different parent</th><th>no parent</th></tr>");
    for row in r.categories.iter().chain(std::iter::once(&r.total)) {
        let label = row.category.map_or("all", |c| c.label());
        let _ = write!(
            h,
            "<tr><td>{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}</td><td>{}</td></tr>",
            row.agent,
            row.zerotrace,
            row.matched,
            row.coverage_pct,
            row.agent - row.matched,
            row.zerotrace - row.matched,
            row.same_parent,
            row.matched,
            row.different_parent,
            row.no_parent
        );
    }
    h.push_str("</table>");
}

fn connectivity(h: &mut String, r: &Report) {
    let c = &r.connectivity;
    let _ = write!(
        h,
        "<h2>Trace connectivity</h2><table><tr><th>side</th><th>requests as one tree</th></tr><tr><td>zerotrace</td><td>{} / {}</td></tr><tr><td>agent</td><td>{} / {}</td></tr></table>",
        c.zerotrace_one_tree, c.requests, c.agent_one_tree, c.requests
    );
}

fn parity(h: &mut String, r: &Report) {
    h.push_str("<h2>Attribute parity on matched spans</h2><table><tr><th>category</th><th>key</th><th>same</th><th>different</th><th>zerotrace only</th><th>agent only</th><th>example (zerotrace | agent)</th></tr>");
    for (cat, keys) in &r.attributes {
        for (key, p) in keys {
            let example = p.example.as_ref().map(|(a, b)| format!("{} | {}", esc(a), esc(b))).unwrap_or_default();
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=l>{example}</td></tr>",
                esc(cat),
                esc(key),
                p.same,
                p.different,
                p.only_zerotrace,
                p.only_agent
            );
        }
    }
    h.push_str("</table>");
}

fn examples(h: &mut String, r: &Report) {
    h.push_str(
        "<h2>Missing and extra spans (examples)</h2><table><tr><th>category</th><th>side</th><th>service</th><th>kind</th><th>name</th><th>operation</th><th>duration</th></tr>",
    );
    for row in &r.categories {
        let label = row.category.map_or("", |c| c.label());
        for (side, list) in [("agent only", &row.missing_examples), ("zerotrace only", &row.extra_examples)] {
            for e in list {
                let _ = write!(
                    h,
                    "<tr><td>{label}</td><td class=l>{side}</td><td class=l>{}</td><td class=l>{:?}</td><td class=l>{}</td><td class=l>{} {}</td><td>{:.2} ms</td></tr>",
                    esc(&e.service),
                    e.kind,
                    esc(&e.name),
                    esc(&e.operation),
                    esc(&e.target),
                    e.duration_ms
                );
            }
        }
    }
    h.push_str("</table>");
}

/// The spans one side shows for a request: its root's tree plus its spans of aligned pairs
/// the other side put under the request (which, if outside the tree, are drawn as split).
fn side_spans(spans: &[Span], parent: &[Option<usize>], root: usize, extra: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut chosen: HashSet<usize> = (0..spans.len()).filter(|&i| is_under(parent, i, root)).collect();
    chosen.extend(extra);
    let mut list: Vec<usize> = chosen.into_iter().collect();
    list.sort_by_key(|&i| spans[i].start);
    list
}

fn waterfalls(h: &mut String, r: &Report) {
    let mut chosen: Vec<&Request> = r.requests.iter().filter(|q| !q.zerotrace_one_tree || !q.agent_one_tree).take(WATERFALLS / 2).collect();
    chosen.extend(r.requests.iter().filter(|q| q.zerotrace_one_tree && q.agent_one_tree).take(WATERFALLS - chosen.len()));
    if chosen.is_empty() {
        return;
    }
    h.push_str("<h2>Requests side by side</h2><p><small>Dashed: no counterpart on the other side. Red label: outside the request's tree (a split trace).</small></p>");
    let matched_ours: HashSet<usize> = r.pairs.iter().map(|p| p.0).collect();
    let matched_theirs: HashSet<usize> = r.pairs.iter().map(|p| p.1).collect();
    for q in chosen {
        let ours = side_spans(&r.ours, &r.ours_parent, q.ours_root, q.members.iter().map(|m| m.0));
        let theirs = side_spans(&r.theirs, &r.theirs_parent, q.theirs_root, q.members.iter().map(|m| m.1));
        let all = ours.iter().map(|&i| &r.ours[i]).chain(theirs.iter().map(|&i| &r.theirs[i]));
        let (lo, hi) = all.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.start), hi.max(s.end)));
        let width = (hi.saturating_sub(lo)).max(1) as f64;
        let root = &r.theirs[q.theirs_root];
        let _ = write!(h, "<h3>{} {} <small>{:.2} ms</small></h3><div class=pair>", esc(&root.operation), esc(&root.target), root.duration_ns() as f64 / 1e6);
        for (title, spans, parent, list, root, matched) in
            [("zerotrace", &r.ours, &r.ours_parent, &ours, q.ours_root, &matched_ours), ("agent", &r.theirs, &r.theirs_parent, &theirs, q.theirs_root, &matched_theirs)]
        {
            let _ = write!(h, "<div class=side><b>{title}</b>");
            for &i in list {
                let s = &spans[i];
                let in_tree = is_under(parent, i, root);
                let depth = if in_tree { ancestors(parent, i).take_while(|&a| a != root).count() + usize::from(i != root) } else { 0 };
                let left = (s.start.saturating_sub(lo)) as f64 * 100.0 / width;
                let w = (s.duration_ns() as f64 * 100.0 / width).max(0.3);
                let _ = write!(
                    h,
                    "<div class=\"row{}\"><div class=label style=\"padding-left:{}px\" title=\"{}\">{}{} <small>{:?}</small></div><div class=track><div class=\"bar {}{}\" style=\"left:{left:.2}%;width:{w:.2}%\"></div></div></div>",
                    if in_tree { "" } else { " split" },
                    depth * 12,
                    esc(&s.service),
                    if s.error { "<span class=err>✗</span> " } else { "" },
                    esc(&s.name),
                    s.kind,
                    category_class(s.category),
                    if matched.contains(&i) { "" } else { " unmatched" },
                );
            }
            h.push_str("</div>");
        }
        h.push_str("</div>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_from_traced_processes() {
        assert_eq!(esc("<script>\"x\"&'"), "&lt;script&gt;&quot;x&quot;&amp;&#39;");
    }
}
