//! Fleet mode while the agent runs: every exec on the host is reported (`DISCOVER_EXECS`), and
//! the new program is checked against the selectors. A match is traced from then on (its
//! children too, by the fork hook); a traced process whose new program no longer matches is
//! released. With `--port`, a process that does not listen yet is looked at again 1 s and 5 s
//! after its exec (a server listens after it starts), and not after that: no polling loop.

use std::time::{Duration, Instant};

use crate::discovery::Discovery;
use crate::probes::Probes;
use crate::selectors::{Facts, Listening, Selectors, Verdict, all_pids};

/// When a process that did not match at exec is looked at again (`--port` only).
const RELOOK_AFTER: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];

pub struct Fleet {
    selectors: Selectors,
    discovery: Discovery,
    /// (pid, when, looks already taken).
    relook: Vec<(u32, Instant, usize)>,
}

/// One process of the host and what the selectors say of it (`--list`, and the start).
pub struct Surveyed {
    pub facts: Facts,
    pub verdict: Verdict,
}

/// Every process of the host, with its verdict.
pub fn survey(selectors: &Selectors) -> Vec<Surveyed> {
    let mut listening = Listening::default();
    all_pids()
        .into_iter()
        .map(|pid| {
            let facts = selectors.facts(pid, &mut listening);
            let verdict = selectors.verdict(&facts);
            Surveyed { facts, verdict }
        })
        .collect()
}

impl Fleet {
    pub fn new(selectors: Selectors, discovery: Discovery) -> Fleet {
        Fleet { selectors, discovery, relook: Vec::new() }
    }

    fn verdict(&self, pid: u32) -> Verdict {
        self.selectors.verdict(&self.selectors.facts(pid, &mut Listening::default()))
    }

    /// An untraced process ran exec: true when it is traced from now on.
    pub fn exec_untraced(&mut self, probes: &mut Probes, pid: u32) -> bool {
        if self.start_if_matching(probes, pid) {
            return true;
        }
        if self.selectors.by_port() {
            self.relook.retain(|(p, ..)| *p != pid);
            self.relook.push((pid, Instant::now() + RELOOK_AFTER[0], 0));
        }
        false
    }

    fn start_if_matching(&mut self, probes: &mut Probes, pid: u32) -> bool {
        let Verdict::Trace(why) = self.verdict(pid) else { return false };
        match self.discovery.add(probes, pid) {
            Ok(()) => {
                eprintln!("zerotrace: tracing pid {pid} ({}): {why}", crate::process::executable_name(pid).unwrap_or_default());
                true
            }
            Err(err) => {
                eprintln!("zerotrace: warning: pid {pid} matches ({why}) but cannot be traced: {err:#}");
                false
            }
        }
    }

    /// A traced process ran exec: released (false) when its new program no longer matches.
    pub fn exec_traced(&mut self, probes: &mut Probes, pid: u32) -> bool {
        match self.verdict(pid) {
            Verdict::Trace(_) => true,
            Verdict::Skip(why) => {
                if let Err(err) = self.discovery.remove(probes, pid) {
                    eprintln!("zerotrace: warning: pid {pid} no longer matches ({why}) but stays traced: {err:#}");
                    return true;
                }
                eprintln!("zerotrace: pid {pid} ({}) released: {why}", crate::process::executable_name(pid).unwrap_or_default());
                false
            }
        }
    }

    /// Processes looked at again now that match: traced from now on. Called on every turn of
    /// the agent's loop (every 50 ms at least): nothing to do most of the time.
    pub fn relook_due(&mut self, probes: &mut Probes) -> Vec<u32> {
        if self.relook.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.relook.drain(..).partition(|(_, at, _)| *at <= now);
        self.relook = later;
        let mut started = Vec::new();
        for (pid, _, taken) in due {
            if !crate::targets::is_alive(pid) {
                continue;
            }
            if self.start_if_matching(probes, pid) {
                started.push(pid);
            } else if let Some(after) = RELOOK_AFTER.get(taken + 1) {
                self.relook.push((pid, now + (*after - RELOOK_AFTER[taken]), taken + 1));
            }
        }
        started
    }
}
