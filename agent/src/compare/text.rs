//! The terminal summary of a comparison: one table per question a user asks (what is covered,
//! what is missing or added, do the attributes agree, are requests whole traces).

use std::fmt::Write;

use super::report::{CategoryRow, Example, Report};

/// Attribute keys listed in the parity table, busiest first.
const PARITY_ROWS: usize = 40;

fn row_line(out: &mut String, label: &str, r: &CategoryRow) {
    let _ = writeln!(
        out,
        "  {label:<12} {:>8} {:>10} {:>8} {:>9.1}% {:>8} {:>6} {:>12} {:>10} {:>9}",
        r.agent,
        r.zerotrace,
        r.matched,
        r.coverage_pct,
        r.agent - r.matched,
        r.zerotrace - r.matched,
        format!("{}/{}", r.same_parent, r.matched),
        r.different_parent,
        r.no_parent
    );
}

fn example_line(out: &mut String, e: &Example) {
    let what = if e.target.is_empty() { e.operation.clone() } else { format!("{} {}", e.operation, e.target) };
    let _ = writeln!(out, "      {} {:?} {:?} ({what}) {:.2}ms", e.service, e.kind, e.name, e.duration_ms);
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "coverage (agent = the language agent, the reference)");
    let _ = writeln!(
        out,
        "  {:<12} {:>8} {:>10} {:>8} {:>10} {:>8} {:>6} {:>12} {:>10} {:>9}",
        "category", "agent", "zerotrace", "matched", "coverage", "missing", "extra", "same parent", "different", "no parent"
    );
    for r in &report.categories {
        row_line(&mut out, r.category.map_or("", |c| c.label()), r);
    }
    row_line(&mut out, "all", &report.total);

    let c = &report.connectivity;
    let share = |n: usize| if c.requests == 0 { 0.0 } else { n as f64 * 100.0 / c.requests as f64 };
    let _ = writeln!(out, "\ntrace connectivity ({} requests seen by both)", c.requests);
    let _ = writeln!(out, "  zerotrace: {} one tree ({:.1}%)", c.zerotrace_one_tree, share(c.zerotrace_one_tree));
    let _ = writeln!(out, "  agent:     {} one tree ({:.1}%)", c.agent_one_tree, share(c.agent_one_tree));

    for r in &report.categories {
        if r.missing_examples.is_empty() && r.extra_examples.is_empty() {
            continue;
        }
        let label = r.category.map_or("", |c| c.label());
        let _ = writeln!(out, "\n{label}: {} missing, {} extra", r.agent - r.matched, r.zerotrace - r.matched);
        if !r.missing_examples.is_empty() {
            let _ = writeln!(out, "    missing (agent only), e.g.:");
            r.missing_examples.iter().for_each(|e| example_line(&mut out, e));
        }
        if !r.extra_examples.is_empty() {
            let _ = writeln!(out, "    extra (zerotrace only), e.g.:");
            r.extra_examples.iter().for_each(|e| example_line(&mut out, e));
        }
    }

    let _ = writeln!(out, "\nattribute parity on matched spans");
    let _ = writeln!(out, "  {:<12} {:<34} {:>6} {:>9} {:>10} {:>10}  example (zerotrace | agent)", "category", "key", "same", "different", "zerotrace", "agent only");
    let mut rows: Vec<_> = report.attributes.iter().flat_map(|(cat, keys)| keys.iter().map(move |(k, p)| (cat, k, p))).collect();
    rows.sort_by_key(|(cat, k, p)| (std::cmp::Reverse(p.same + p.different + p.only_zerotrace + p.only_agent), *cat, *k));
    for (cat, key, p) in rows.iter().take(PARITY_ROWS) {
        let example = p.example.as_ref().map(|(a, b)| format!("{} | {}", clip(a), clip(b))).unwrap_or_default();
        let _ = writeln!(out, "  {cat:<12} {key:<34} {:>6} {:>9} {:>10} {:>10}  {example}", p.same, p.different, p.only_zerotrace, p.only_agent);
    }
    if rows.len() > PARITY_ROWS {
        let _ = writeln!(out, "  … {} more keys (see --json or --html)", rows.len() - PARITY_ROWS);
    }
    out
}

fn clip(s: &str) -> String {
    if s.chars().count() > 32 { format!("{}…", s.chars().take(31).collect::<String>()) } else { s.to_string() }
}
