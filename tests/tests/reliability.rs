//! Issue 20: no request a server answered goes without its span, and no span gets a parent
//! from a connection it did not come from.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use zerotrace_integration_tests::procs::{JsonlAgent, Proc, python_service};
use zerotrace_integration_tests::spans::{assert_child_of, find};
use zerotrace_integration_tests::{free_port, python_app, require_root};

/// tests/apps/bound_client.py: sends each request from the local port it is told.
struct BoundClient {
    proc: Proc,
    answers: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl BoundClient {
    fn start() -> BoundClient {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("python3");
        cmd.arg(python_app("bound_client.py")).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0);
        let mut child = cmd.spawn().expect("starting bound_client.py");
        let mut answers = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(answers.next().unwrap().unwrap(), "ready");
        BoundClient { proc: Proc { child, name: "bound client".into() }, answers }
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// GET `path` from 127.0.0.1:`local_port`; returns the status.
    fn get(&mut self, local_port: u16, server_port: u16, path: &str) -> String {
        let stdin = self.proc.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{local_port} {server_port} {path}").unwrap();
        stdin.flush().unwrap();
        let line = self.answers.next().expect("bound client answered").unwrap();
        line.split(' ').next().unwrap().to_string()
    }
}

/// A traced client and an untraced one take turns on the same local port towards a traced
/// service. The traced client's requests are stitched to its CLIENT spans; the untraced
/// client's get their SERVER span, as roots: never the traced client's children, and never
/// held back waiting for a caller that is not coming.
#[test]
fn a_reused_client_port_neither_loses_nor_misparents_spans() {
    require_root();
    const ROUNDS: usize = 20;
    let back_port = free_port();
    let back = python_service(back_port, None, "back");
    let mut traced = BoundClient::start();
    let mut untraced = BoundClient::start();
    let agent = JsonlAgent::start(&[back.pid(), traced.pid()]);
    let local_port = free_port();
    for i in 0..ROUNDS {
        assert_eq!(traced.get(local_port, back_port, &format!("/item/traced-{i}")), "200");
        assert_eq!(untraced.get(local_port, back_port, &format!("/item/untraced-{i}")), "200");
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    for i in 0..ROUNDS {
        let path = format!("/item/traced-{i}");
        let calls = find(&spans, "CLIENT", |s| s.attr("url.full").is_some_and(|u| u.ends_with(&path)));
        assert_eq!(calls.len(), 1, "{path}: one CLIENT span from the traced client");
        let served = find(&spans, "SERVER", |s| s.attr("url.path") == Some(path.as_str()));
        assert_eq!(served.len(), 1, "{path}: one SERVER span");
        assert_child_of(served[0], calls[0]);

        let path = format!("/item/untraced-{i}");
        let served = find(&spans, "SERVER", |s| s.attr("url.path") == Some(path.as_str()));
        assert_eq!(served.len(), 1, "{path}: the untraced client's request has its SERVER span");
        assert_eq!(served[0].parent_id, "", "{path}: no parent (the traced client did not send it): {:?}", served[0]);
    }
    let report = exit.stderr.iter().find(|l| l.contains("same-host callees")).expect("the exit report counts stitching");
    assert!(report.contains(&format!("{ROUNDS} stitched")), "{report}");
}
