//! Low-cardinality routes for HTTP spans when no framework route is known (issue 18): a
//! template inferred from the path, `url.template` on the span and in its name
//! (`GET /merchant/{id}/status`, not bare `GET`), and on the RED histograms.
//!
//! - A user rule (`--route /merchant/{id}/status`; `{name}` or `*` match one segment, `**`
//!   the rest) that matches the path is the template, as written.
//! - Else each segment that looks like a value becomes a placeholder: digits `{id}`, a UUID
//!   `{uuid}`, a date `{date}`, a long hex string `{hash}`, a long mix of letters and digits
//!   `{token}`, an address with `@` `{email}`, and a word with four digits or more `{id}`.
//! - Each service keeps at most `MAX_TEMPLATES` distinct templates: past them a span keeps
//!   the bare method as its name and no template, counted.
//!
//! This is not `http.route`: the conventions reserve it for the route the server's framework
//! matched, which only the framework knows. `url.template` is the conventions' attribute for
//! a template of the path, and the client span name convention (`{method} {url.template}`)
//! is used for both sides.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use smol_str::SmolStr;

use crate::spans::record::{Domain, SpanRecord, Url};

/// Distinct templates per service at most.
pub const MAX_TEMPLATES: usize = 256;

/// A user rule: its segments, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    text: SmolStr,
    segments: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("--route {0:?} is not a path template; write it as the path with {{name}} or * for a segment and ** for the rest, e.g. /merchant/{{id}}/status")]
pub struct BadRule(String);

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, BadRule> {
        if !text.starts_with('/') || text.contains(['?', '#', ' ']) {
            return Err(BadRule(text.to_string()));
        }
        Ok(Rule { text: text.into(), segments: text.split('/').skip(1).map(str::to_string).collect() })
    }

    fn matches(&self, path: &str) -> bool {
        let mut given = path.split('/').skip(1);
        for (i, rule) in self.segments.iter().enumerate() {
            if rule == "**" {
                return i + 1 == self.segments.len();
            }
            let Some(segment) = given.next() else { return false };
            let wildcard = rule == "*" || (rule.starts_with('{') && rule.ends_with('}'));
            if !wildcard && rule != segment {
                return false;
            }
        }
        given.next().is_none()
    }
}

/// The template of a path by inference: None when it is `/` or empty.
pub fn infer(path: &str) -> Option<SmolStr> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if path.is_empty() || path == "/" || !path.starts_with('/') {
        return None;
    }
    // Most paths have no value in them: the template is the path, built without copying.
    if path.split('/').skip(1).all(|segment| placeholder(segment).is_none()) {
        return Some(SmolStr::new(path));
    }
    let mut out = smol_str::SmolStrBuilder::new();
    for segment in path.split('/').skip(1) {
        out.push('/');
        out.push_str(placeholder(segment).unwrap_or(segment));
    }
    Some(out.finish())
}

/// The placeholder a segment that looks like a value becomes.
fn placeholder(segment: &str) -> Option<&'static str> {
    let bytes = segment.as_bytes();
    let digits = bytes.iter().filter(|b| b.is_ascii_digit()).count();
    let letters = bytes.iter().filter(|b| b.is_ascii_alphabetic()).count();
    if segment.is_empty() {
        return None;
    }
    if digits == bytes.len() {
        return Some(if bytes.len() == 8 && looks_like_date(segment) { "{date}" } else { "{id}" });
    }
    if bytes.len() == 36 && bytes.iter().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() }) {
        return Some("{uuid}");
    }
    if bytes.len() == 10 && bytes[4] == b'-' && bytes[7] == b'-' && digits == 8 {
        return Some("{date}");
    }
    if bytes.len() >= 16 && bytes.iter().all(u8::is_ascii_hexdigit) && digits > 0 {
        return Some("{hash}");
    }
    if segment.contains('@') {
        return Some("{email}");
    }
    if bytes.len() >= 16 && digits > 0 && letters > 0 && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'=' | b'.')) {
        return Some("{token}");
    }
    if digits >= 4 {
        return Some("{id}");
    }
    None
}

/// `YYYYMMDD` with a plausible month and day.
fn looks_like_date(s: &str) -> bool {
    let (month, day) = (&s[4..6], &s[6..8]);
    s.starts_with(['1', '2']) && matches!(month.parse::<u8>(), Ok(1..=12)) && matches!(day.parse::<u8>(), Ok(1..=31))
}

/// Templates per service, with the user's rules.
#[derive(Default)]
pub struct Routes {
    rules: Vec<Rule>,
    /// Service (its process) → templates given out.
    seen: HashMap<u32, HashSet<SmolStr>>,
    /// Spans that got no template because their service had `MAX_TEMPLATES` already.
    pub over_cap: u64,
}

impl Routes {
    pub fn new(rules: Vec<Rule>) -> Routes {
        Routes { rules, ..Default::default() }
    }

    /// Sets `url.template` and the span name of an HTTP span of process `tgid`.
    pub fn apply(&mut self, tgid: u32, span: &mut SpanRecord) {
        let Domain::Http(http) = &mut span.domain else { return };
        let Some(method) = http.method.as_deref() else { return };
        let path = match &http.url {
            Url::Server { path, .. } => path.as_deref(),
            Url::Client { full } => full.as_deref().and_then(|f| f.split_once("://")).map(|(_, rest)| rest.find('/').map_or("/", |i| &rest[i..])),
        };
        let Some(path) = path else { return };
        let template = match self.rules.iter().find(|r| r.matches(path)) {
            Some(rule) => rule.text.clone(),
            None => match infer(path) {
                Some(t) => t,
                None => return,
            },
        };
        let seen = self.seen.entry(tgid).or_default();
        if !seen.contains(&template) {
            if seen.len() >= MAX_TEMPLATES {
                self.over_cap += 1;
                return;
            }
            seen.insert(template.clone());
        }
        if method != "_OTHER" {
            span.name = smol_str::format_smolstr!("{method} {template}");
        }
        http.template = Some(template);
    }

    pub fn process_exited(&mut self, tgid: u32) {
        self.seen.remove(&tgid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_paths_become_placeholders() {
        for (path, template) in [
            ("/merchant/42/status", "/merchant/{id}/status"),
            ("/users/5f3c2a7e-9b1d-4c8e-a2f4-0b6d8e1c3a59", "/users/{uuid}"),
            ("/reports/2026-12-07/daily", "/reports/{date}/daily"),
            ("/reports/20261207", "/reports/{date}"),
            ("/blobs/9f86d081884c7d659a2feaa0c55ad015", "/blobs/{hash}"),
            ("/confirm/eyJhbGciOiJIUzI1NiJ9x7", "/confirm/{token}"),
            ("/orders/ORD-123456/items", "/orders/{id}/items"),
            ("/u/jane@example.com", "/u/{email}"),
            ("/api/v1/health", "/api/v1/health"),
            ("/oauth2/callback", "/oauth2/callback"),
            ("/item/7?x=1", "/item/{id}"),
        ] {
            assert_eq!(infer(path).as_deref(), Some(template), "{path}");
        }
        assert_eq!(infer("/"), None);
        assert_eq!(infer(""), None);
    }

    #[test]
    fn user_rules_win_and_match_by_segment() {
        let rule = Rule::parse("/merchant/{merchant}/status").expect("rule");
        assert!(rule.matches("/merchant/acme/status"));
        assert!(!rule.matches("/merchant/acme/status/x") && !rule.matches("/merchant/status"));
        let rest = Rule::parse("/static/**").expect("rule");
        assert!(rest.matches("/static/css/site.css") && rest.matches("/static/x"));
        assert!(Rule::parse("merchant/*").is_err() && Rule::parse("/a?b").is_err());
    }

    #[test]
    fn spans_take_the_template_and_services_are_capped() {
        use crate::spans::record::{HttpFields, SpanKind, Status};
        let span = |path: &str| SpanRecord {
            kind: SpanKind::Server,
            name: "GET".into(),
            start_unix_ns: 0,
            end_unix_ns: 1,
            status: Status::Unset,
            error_type: None,
            network: Default::default(),
            domain: Domain::Http(HttpFields { method: Some("GET".into()), url: Url::Server { path: Some(path.into()), scheme: "http" }, ..Default::default() }),
            capture_truncated: false,
            capture_head_only: false,
            capture_one_in: 0,
            ids: Default::default(),
        };
        let mut routes = Routes::new(vec![Rule::parse("/merchant/{m}/status").expect("rule")]);
        let mut s = span("/merchant/acme/status");
        routes.apply(1, &mut s);
        assert_eq!(s.name, "GET /merchant/{m}/status");
        let mut s = span("/item/12");
        routes.apply(1, &mut s);
        assert_eq!(s.name, "GET /item/{id}");
        assert!(matches!(&s.domain, Domain::Http(h) if h.template.as_deref() == Some("/item/{id}")));
        for i in 0..MAX_TEMPLATES {
            routes.apply(2, &mut span(&format!("/page-{i}")));
        }
        let mut late = span("/another");
        routes.apply(2, &mut late);
        assert_eq!((late.name.as_str(), routes.over_cap), ("GET", 1), "past the cap: the bare method");
        let mut known = span("/page-3");
        routes.apply(2, &mut known);
        assert_eq!(known.name, "GET /page-3", "a template already given out stays");
        let mut client = span("");
        client.kind = SpanKind::Client;
        if let Domain::Http(h) = &mut client.domain {
            h.url = Url::Client { full: Some("http://api.local:8080/v2/users/991".into()) };
        }
        routes.apply(3, &mut client);
        assert_eq!(client.name, "GET /v2/users/{id}");
    }
}
