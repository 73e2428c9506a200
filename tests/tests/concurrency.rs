//! Right parent under concurrency (issue 14): apps that serve many requests at once, each
//! request's calls carrying its id, traced at concurrency 1, 8 and 32. Every test asserts that
//! no call hangs under another request, and how many hang under their own.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use zerotrace_integration_tests::fidelity::{self, Fidelity};
use zerotrace_integration_tests::procs::JsonlAgent;
use zerotrace_integration_tests::reference;
use zerotrace_integration_tests::{free_port, require_root};

const REQUESTS: usize = 200;

/// The Express chain app: an http.get, a fetch, a pg query and a Redis GET per request, all
/// after an `await` on the one before.
fn express(concurrency: usize) -> Fidelity {
    require_root();
    let backends = reference::backends();
    let port = free_port();
    let app = reference::express_chain(port, &backends);
    let agent = JsonlAgent::start_with(&[app.pid(), backends.downstream.pid()], &["--keep-sql-literals"]);
    fidelity::drive(&format!("http://127.0.0.1:{port}/chain/{{id}}"), REQUESTS, concurrency);
    std::thread::sleep(Duration::from_millis(500));
    let (exit, spans) = agent.finish();
    let result = fidelity::measure(&spans, app.pid(), 4);
    eprintln!("express at concurrency {concurrency}: {result}\nagent: {}", exit.stderr.join("\n"));
    assert_eq!(result.requests, REQUESTS, "every request has its SERVER span");
    assert!(result.wrong.is_empty(), "calls under another request's span: {result}");
    result
}

#[test]
fn express_concurrency_1() {
    let r = express(1);
    assert!(r.right_share() >= 0.98, "{r}");
}

#[test]
fn express_concurrency_8() {
    let r = express(8);
    assert!(r.right_share() >= 0.98, "{r}");
}

#[test]
fn express_concurrency_32() {
    let r = express(32);
    assert!(r.right_share() >= 0.98, "{r}");
}
