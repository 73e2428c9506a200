//! `zerotrace compare` live against real language agents (issue 5): the Flask reference app
//! under the OpenTelemetry Python agent and the Express app under the Node agent, each traced
//! by zerotrace while compare's built-in OTLP receiver takes the agent's spans. Then an
//! offline comparison of the spans the live run saved, and compare's bad-input errors.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use zerotrace_integration_tests::fidelity;
use zerotrace_integration_tests::procs::{Agent, Proc, TempDir, curl, run_agent_to_exit};
use zerotrace_integration_tests::reference::{self, Backends};
use zerotrace_integration_tests::{free_port, require_root};

const REQUESTS: usize = 40;

struct Outcome {
    report: Value,
    dir: TempDir,
}

/// Runs `zerotrace compare` on the app while `REQUESTS` requests go through it, then stops
/// the app with SIGINT (the language agent flushes at exit) and reads compare's JSON report.
fn compare_live(start_app: impl FnOnce(u16, &Backends, Option<u16>) -> Proc, backends: &Backends) -> Outcome {
    compare_live_at(start_app, backends, REQUESTS, 1)
}

/// `compare_live` with `requests` requests from `concurrency` concurrent keep-alive clients
/// (1: one curl after the other).
fn compare_live_at(start_app: impl FnOnce(u16, &Backends, Option<u16>) -> Proc, backends: &Backends, requests: usize, concurrency: usize) -> Outcome {
    // One live comparison at a time: spans pair by time, and another test's load on the two
    // cores delays one recorder's timestamps against the other's by more than the slack.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let (port, grpc, http) = (free_port(), free_port(), free_port());
    let app = start_app(port, backends, Some(grpc));
    let dir = TempDir::new("compare");
    let args: Vec<String> = [
        "--pid",
        &app.pid().to_string(),
        "--otlp-grpc-port",
        &grpc.to_string(),
        "--otlp-http-port",
        &http.to_string(),
        "--settle",
        "2",
        "--json",
        &dir.path().join("report.json").display().to_string(),
        "--html",
        &dir.path().join("report.html").display().to_string(),
        "--save-spans",
        &dir.path().display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let agent = Agent::start_command("compare", &args, &[]);
    if concurrency == 1 {
        for i in 0..requests {
            assert_eq!(curl(&format!("http://127.0.0.1:{port}/merchant/{i}/status"), &[]), 200, "request {i}");
        }
    } else {
        fidelity::drive(&format!("http://127.0.0.1:{port}/merchant/{{id}}/status"), requests, concurrency);
    }
    // Let the language agent's batch go out while tracing, then stop the app: compare stops
    // tracing when its only target exits, keeps receiving for --settle, and reports.
    std::thread::sleep(Duration::from_millis(500));
    app.signal(libc::SIGINT);
    let exit = agent.wait(Duration::from_secs(60));
    drop(app);
    assert_eq!(exit.code, Some(0), "compare failed: {:?}", exit.stderr);
    let text = std::fs::read_to_string(dir.path().join("report.json")).expect("compare wrote no --json report");
    Outcome { report: serde_json::from_str(&text).unwrap(), dir }
}

fn row<'a>(report: &'a Value, category: &str) -> &'a Value {
    report["categories"].as_array().unwrap().iter().find(|r| r["category"] == category).unwrap_or_else(|| panic!("no {category} row in {report}"))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

fn check_html(dir: &TempDir) {
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("Requests side by side") && html.contains("class=\"bar http_server"), "the HTML report has no waterfalls");
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "the HTML report must be self-contained");
}

#[test]
fn flask_under_the_python_agent() {
    require_root();
    let backends = reference::backends();
    let out = compare_live(reference::flask, &backends);
    let r = &out.report;
    // Every HTTP SERVER and CLIENT span, query and Redis GET the Python agent emits is matched,
    // with the same parent structure.
    for category in ["http_server", "http_client", "db_client", "cache"] {
        let c = row(r, category);
        assert_eq!(n(c, "agent"), REQUESTS as u64, "{category}: one span per request from the Python agent: {c}");
        assert_eq!(n(c, "matched"), REQUESTS as u64, "{category}: every agent span matched: {c}");
        assert_eq!(n(c, "same_parent"), REQUESTS as u64, "{category}: same parent structure: {c}");
    }
    let conn = &r["connectivity"];
    assert_eq!((n(conn, "requests"), n(conn, "zerotrace_one_tree"), n(conn, "agent_one_tree")), (REQUESTS as u64, REQUESTS as u64, REQUESTS as u64), "{conn}");
    // Attribute parity where both follow the stable conventions.
    let parity = &r["attributes"];
    for (category, key) in [
        ("HTTP server", "http.request.method"),
        ("HTTP server", "url.path"),
        ("HTTP server", "http.response.status_code"),
        ("HTTP client", "url.full"),
        ("DB client", "db.system.name"),
    ] {
        assert_eq!(n(&parity[category][key], "same"), REQUESTS as u64, "{category} {key}: {}", parity[category][key]);
    }
    check_html(&out.dir);
    offline_recompare(&out);
}

#[test]
fn express_under_the_node_agent() {
    require_root();
    let backends = reference::backends();
    let out = compare_live(reference::express, &backends);
    let r = &out.report;
    let requests = REQUESTS as u64;
    // Every HTTP SERVER/CLIENT span and Redis GET the Node agent emits is matched, under the
    // same parents.
    for category in ["http_server", "http_client", "cache"] {
        let c = row(r, category);
        assert_eq!((n(c, "agent"), n(c, "matched"), n(c, "same_parent")), (requests, requests, requests), "{category}: {c}");
    }
    // DB client: every query is matched. The Node agent also reports a `pg-pool.connect` span
    // per checkout and one `pg.connect`: a pool checkout never reaches the wire, so today's
    // honest coverage is 40 of 81. A span for the connection's startup exchange would add the
    // `pg.connect` one.
    let db = row(r, "db_client");
    assert_eq!((n(db, "agent"), n(db, "matched"), n(db, "same_parent")), (2 * requests + 1, requests, requests), "{db}");
    // Other: Express middleware, dns.lookup and tcp.connect spans are in-process work that
    // no syscall shows as a request; zerotrace makes none of them.
    let other = row(r, "other");
    assert!(n(other, "agent") >= 3 * requests && n(other, "matched") == 0, "{other}");
    let conn = &r["connectivity"];
    assert_eq!((n(conn, "requests"), n(conn, "zerotrace_one_tree"), n(conn, "agent_one_tree")), (requests, requests, requests), "{conn}");
    check_html(&out.dir);
}

/// Issue 14: at concurrency 8 the comparison tells right parents from wrong ones. The agent's
/// trees come from its own ids (it shows every request as one tree); zerotrace puts no span
/// under another parent than the agent, and ≥ 98% of HTTP, DB and cache calls under the same
/// one, with the app's pg pool at node-postgres's default size (10, larger than the
/// concurrency).
#[test]
fn express_under_the_node_agent_at_concurrency_8() {
    require_root();
    let backends = reference::backends();
    let requests = 200;
    let out = compare_live_at(reference::express, &backends, requests, 8);
    let r = &out.report;
    for category in ["http_server", "http_client", "db_client", "cache"] {
        let c = row(r, category);
        assert_eq!(n(c, "different_parent"), 0, "{category}: spans under another parent than the agent's: {c}");
        // Nearly every call pairs (a few may fall outside the time slack under load).
        assert!(n(c, "matched") as f64 >= 0.98 * requests as f64 && n(c, "same_parent") as f64 >= 0.98 * n(c, "matched") as f64, "{category}: {c}");
    }
    let conn = &r["connectivity"];
    let share = |key: &str| n(conn, key) as f64 / requests as f64;
    assert_eq!(n(conn, "requests"), requests as u64, "{conn}");
    assert!(share("agent_one_tree") >= 0.98 && share("zerotrace_one_tree") >= 0.98, "{conn}");
}

/// The limit, measured: with a pg pool (4) smaller than the concurrency (8), node-postgres
/// hands a freed client to a queued query inside the callback that read the previous query's
/// answer, and on the wire that looks exactly like the answered request's own next query.
/// zerotrace follows such a chain to the request it answers when the answers in that callback
/// leave one choice, and otherwise leaves the query (and the Redis GET after it) without a
/// parent, linked to the candidate: never under another parent than the agent's. Measured
/// 73–90% of DB and cache spans under the agent's parent.
#[test]
fn express_with_an_undersized_pool_never_misparents() {
    require_root();
    let backends = reference::backends();
    let requests = 200;
    let out = compare_live_at(|port, b, agent| reference::express_with_pool(port, b, agent, Some(4)), &backends, requests, 8);
    let r = &out.report;
    for category in ["http_server", "http_client", "db_client", "cache"] {
        let c = row(r, category);
        assert_eq!(n(c, "different_parent"), 0, "{category}: spans under another parent than the agent's: {c}");
        let floor = if category.starts_with("http") { 0.98 } else { 0.6 };
        assert!(n(c, "matched") as f64 >= 0.98 * requests as f64 && n(c, "same_parent") as f64 >= floor * n(c, "matched") as f64, "{category}: {c}");
    }
}

/// The spans a live run saved compare offline to the same figures.
fn offline_recompare(live: &Outcome) {
    let json = live.dir.path().join("offline.json");
    let (code, stderr) = run_agent_to_exit(
        &[
            "compare",
            "--zerotrace-spans",
            &live.dir.path().join("zerotrace.jsonl").display().to_string(),
            "--agent-spans",
            &live.dir.path().join("agent.jsonl").display().to_string(),
            "--json",
            &json.display().to_string(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let offline: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(offline["total"], live.report["total"]);
    assert_eq!(offline["connectivity"], live.report["connectivity"]);
}

#[test]
fn compare_bad_input_is_one_clear_line() {
    let dir = TempDir::new("compare-bad");
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "{\"resourceSpans\":[]}\nthis is not json\n").unwrap();
    let g = garbage.display().to_string();
    let (code, stderr) = run_agent_to_exit(&["compare", "--zerotrace-spans", &g, "--agent-spans", &g], &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("line 2 is not OTLP JSON"), "{stderr}");
    let (code, stderr) = run_agent_to_exit(&["compare", "--zerotrace-spans", "/nonexistent.jsonl", "--agent-spans", &g], &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot read /nonexistent.jsonl"), "{stderr}");
    let (code, stderr) = run_agent_to_exit(&["compare", "--zerotrace-spans", &g], &[]);
    assert_eq!(code, Some(2), "clap: --agent-spans is required with --zerotrace-spans: {stderr}");
    let (code, stderr) = run_agent_to_exit(&["compare", "--pid", "1", "--zerotrace-spans", &g, "--agent-spans", &g], &[]);
    assert_eq!(code, Some(2), "live and offline together: {stderr}");
}
