//! Issue 20's soak: three minutes at a fixed rate through a two-service chain, with a traced
//! client and an untraced one taking turns on the same local ports, and keep-alive traffic
//! besides. Every request must have all its spans, with the right parents, and the agent's
//! memory and CPU must stay flat.
//!
//! `ZEROTRACE_SOAK_SECONDS` shortens it while developing; CI runs the full three minutes.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zerotrace_integration_tests::procs::{JsonlAgent, Proc, python_service};
use zerotrace_integration_tests::spans::TestSpan;
use zerotrace_integration_tests::{free_port, python_app, require_root};

struct Driver {
    proc: Proc,
    out: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

fn driver(role: &str, front_port: u16, seconds: u64, rate: u32, ports: &str) -> Driver {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("python3");
    cmd.arg(python_app("soak_load.py")).args(["--port", &front_port.to_string(), "--seconds", &seconds.to_string(), "--rate", &rate.to_string(), "--role", role, "--ports", ports]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).process_group(0);
    let mut child = cmd.spawn().expect("starting soak_load.py");
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(out.next().unwrap().unwrap(), "ready");
    Driver { proc: Proc { child, name: format!("{role} driver") }, out }
}

/// (resident KiB, CPU ticks) of a process.
fn usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let cpu = fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    (rss, cpu)
}

#[test]
fn a_soak_through_a_chain_loses_nothing_and_stays_flat() {
    require_root();
    let seconds: u64 = std::env::var("ZEROTRACE_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(180);
    let (front_port, back_port) = (free_port(), free_port());
    let back = python_service(back_port, None, "soak-back");
    let front = python_service(front_port, Some(back_port), "soak-front");
    let ports: Vec<String> = (0..12).map(|_| free_port().to_string()).collect();
    let ports = ports.join(",");
    let mut traced = driver("traced", front_port, seconds, 15, &ports);
    let mut untraced = driver("untraced", front_port, seconds, 30, &ports);
    let agent = JsonlAgent::start(&[front.pid(), back.pid(), traced.proc.pid()]);
    let agent_pid = agent.agent.pid();
    for d in [&mut traced, &mut untraced] {
        writeln!(d.proc.child.stdin.as_mut().unwrap(), "go").unwrap();
    }
    // Usage about 18 times over the run (every 10 s for three minutes).
    let every = Duration::from_secs((seconds / 18).clamp(2, 10));
    let started = Instant::now();
    let mut samples: Vec<(Duration, u64, u64)> = Vec::new();
    while traced.proc.child.try_wait().unwrap().is_none() || untraced.proc.child.try_wait().unwrap().is_none() {
        std::thread::sleep(every);
        let (rss, cpu) = usage(agent_pid);
        samples.push((started.elapsed(), rss, cpu));
        assert!(started.elapsed() < Duration::from_secs(seconds + 120), "the drivers did not finish");
    }
    for d in [&mut traced, &mut untraced] {
        let done = d.out.next().unwrap().unwrap();
        assert!(done.ends_with("failed 0"), "{}: {done}", d.proc.name);
    }
    let (exit, spans) = agent.finish();
    assert_eq!(exit.code, Some(0), "{:?}", exit.stderr);
    eprintln!("agent usage (elapsed, RSS KiB, CPU ticks): {samples:?}");

    let by_id: HashMap<&str, &TestSpan> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut front_servers: HashMap<String, Vec<&TestSpan>> = HashMap::new();
    let mut children: HashMap<&str, Vec<&TestSpan>> = HashMap::new();
    for s in &spans {
        if s.kind == "SERVER"
            && s.service() == "soak-front"
            && let Some(p) = s.attr("url.path")
        {
            front_servers.entry(p.to_string()).or_default().push(s);
        }
        if !s.parent_id.is_empty() {
            children.entry(s.parent_id.as_str()).or_default().push(s);
        }
    }
    let mut checked = 0;
    let mut problems: Vec<String> = Vec::new();
    for (path, servers) in &front_servers {
        let Some(id) = path.strip_prefix("/work/") else { continue };
        checked += 1;
        let [server] = servers.as_slice() else {
            problems.push(format!("{path}: {} front SERVER spans", servers.len()));
            continue;
        };
        match (id.starts_with("t-"), by_id.get(server.parent_id.as_str())) {
            (true, Some(caller)) if caller.kind == "CLIENT" && caller.attr("url.full").is_some_and(|u| u.ends_with(path.as_str())) => {}
            (true, other) => problems.push(format!("{path}: traced caller's request not under its CLIENT span (parent {other:?})")),
            (false, None) if server.parent_id.is_empty() => {}
            (false, _) => problems.push(format!("{path}: an untraced client's request has a parent: {server:?}")),
        }
        let calls = children.get(server.span_id.as_str()).map(Vec::as_slice).unwrap_or_default();
        let want = format!("/item/{id}");
        match calls {
            [call] if call.kind == "CLIENT" && call.attr("url.full").is_some_and(|u| u.ends_with(&want)) => {
                let backs = children.get(call.span_id.as_str()).map(Vec::as_slice).unwrap_or_default();
                if !matches!(backs, [b] if b.attr("url.path") == Some(want.as_str())) {
                    problems.push(format!("{path}: the back SERVER span is not the call's only child: {backs:?}"));
                }
            }
            other => problems.push(format!("{path}: front calls {other:?}")),
        }
    }
    let expected = seconds as usize * (15 + 30);
    assert!(checked + 20 >= expected, "{checked} requests have front SERVER spans, {expected} were sent; report: {:?}", exit.stderr);
    assert!(problems.is_empty(), "{} of {checked} requests lack spans or parents, e.g. {:#?}", problems.len(), &problems[..problems.len().min(10)]);

    // Flat: the last third of the run against its second sixth (after warm-up).
    let n = samples.len();
    assert!(n >= 6, "{samples:?}");
    let early = &samples[n / 6..n / 3];
    let late = &samples[2 * n / 3..];
    let max_rss = |s: &[(Duration, u64, u64)]| s.iter().map(|x| x.1).max().unwrap_or(0);
    assert!(max_rss(late) <= max_rss(early) * 12 / 10 + 4096, "RSS grew: {samples:?}");
    let rate = |s: &[(Duration, u64, u64)]| (s.last().unwrap().2 - s.first().unwrap().2) as f64 / (s.last().unwrap().0 - s.first().unwrap().0).as_secs_f64().max(1.0);
    if late.len() >= 2 && early.len() >= 2 {
        assert!(rate(late) <= rate(early) * 1.5 + 2.0, "CPU grew: {samples:?}");
    }
}
