//! Fleet mode: which of the host's processes to trace when no `--pid` or `--cgroup` names
//! them (issue 18). Every process is traced unless selectors narrow it:
//!
//! - each kind of selector given must match (`--exe` and `--k8s-namespace`: both); several
//!   values of one kind match when any does (`--exe nginx --exe 'python*'`: either);
//! - an exclusion that matches wins over everything;
//! - the agent itself and kernel threads are never traced.
//!
//! The facts come from /proc, read when the agent starts and again when a process runs exec.

use std::collections::{HashMap, HashSet};
use std::fs;

use glob::Pattern;
use thiserror::Error;

use crate::kubernetes::PodIdentity;

#[derive(Debug, Error)]
pub enum SelectorError {
    #[error("{flag} {pattern:?} is not a valid pattern ({reason}); use shell-style globs, e.g. 'python3*' or '/usr/sbin/*'")]
    BadPattern { flag: &'static str, pattern: String, reason: String },
}

/// The selectors of `zerotrace run` in fleet mode.
#[derive(Clone, Debug, Default)]
pub struct Selectors {
    exe: Vec<Pattern>,
    exclude_exe: Vec<Pattern>,
    ports: Vec<u16>,
    container: bool,
    k8s_namespace: Vec<Pattern>,
    k8s_pod: Vec<Pattern>,
    exclude_k8s_namespace: Vec<Pattern>,
}

/// The selectors as given on the command line.
#[derive(Clone, Debug, Default)]
pub struct SelectorArgs<'a> {
    pub exe: &'a [String],
    pub exclude_exe: &'a [String],
    pub ports: &'a [u16],
    pub container: bool,
    pub k8s_namespace: &'a [String],
    pub k8s_pod: &'a [String],
    pub exclude_k8s_namespace: &'a [String],
}

fn patterns(flag: &'static str, given: &[String]) -> Result<Vec<Pattern>, SelectorError> {
    given.iter().map(|p| Pattern::new(p).map_err(|e| SelectorError::BadPattern { flag, pattern: p.clone(), reason: e.msg.to_string() })).collect()
}

/// What /proc says of a process, as far as the selectors ask.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub pid: u32,
    /// The executable's path, None for a kernel thread (or a process gone).
    pub exe: Option<String>,
    /// TCP ports it listens on (read only when `--port` is given).
    pub listening: Vec<u16>,
    pub container_id: Option<String>,
    pub pod: PodIdentity,
}

/// Traced or not, and why, in words for `--list` and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Trace(String),
    Skip(String),
}

impl Verdict {
    pub fn traced(&self) -> bool {
        matches!(self, Verdict::Trace(_))
    }
}

impl Selectors {
    pub fn new(args: &SelectorArgs<'_>) -> Result<Selectors, SelectorError> {
        Ok(Selectors {
            exe: patterns("--exe", args.exe)?,
            exclude_exe: patterns("--exclude-exe", args.exclude_exe)?,
            ports: args.ports.to_vec(),
            container: args.container,
            k8s_namespace: patterns("--k8s-namespace", args.k8s_namespace)?,
            k8s_pod: patterns("--k8s-pod", args.k8s_pod)?,
            exclude_k8s_namespace: patterns("--exclude-k8s-namespace", args.exclude_k8s_namespace)?,
        })
    }

    /// Whether any selector was given.
    pub fn narrows(&self) -> bool {
        !(self.exe.is_empty()
            && self.exclude_exe.is_empty()
            && self.ports.is_empty()
            && !self.container
            && self.k8s_namespace.is_empty()
            && self.k8s_pod.is_empty()
            && self.exclude_k8s_namespace.is_empty())
    }

    /// Whether a process that does not match now may match later without running exec: it
    /// may start listening on a selected port.
    pub fn by_port(&self) -> bool {
        !self.ports.is_empty()
    }

    /// The facts the selectors need about `pid`; `listening` keeps each network namespace's
    /// listening sockets (`Listening`) for one scan.
    pub fn facts(&self, pid: u32, listening: &mut Listening) -> Facts {
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string());
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let wants_pod = !(self.k8s_namespace.is_empty() && self.k8s_pod.is_empty() && self.exclude_k8s_namespace.is_empty());
        let pod = if wants_pod { PodIdentity::of(pid, &cgroup, hostname(pid).as_deref()) } else { PodIdentity::default() };
        let ports = if self.ports.is_empty() { Vec::new() } else { ports_of(pid, listening.of(pid)) };
        Facts { pid, exe, listening: ports, container_id: crate::process::container_id_from_cgroup(&cgroup), pod }
    }

    pub fn verdict(&self, facts: &Facts) -> Verdict {
        if facts.pid == std::process::id() {
            return Verdict::Skip("zerotrace itself".into());
        }
        let Some(exe) = facts.exe.as_deref() else { return Verdict::Skip("kernel thread, or gone".into()) };
        let name = exe.rsplit('/').next().unwrap_or(exe);
        let exe_matches = |p: &Pattern| p.matches(exe) || p.matches(name);
        if let Some(p) = self.exclude_exe.iter().find(|p| exe_matches(p)) {
            return Verdict::Skip(format!("--exclude-exe {p}"));
        }
        let namespace = facts.pod.namespace.as_deref();
        if let Some(p) = self.exclude_k8s_namespace.iter().find(|p| namespace.is_some_and(|n| p.matches(n))) {
            return Verdict::Skip(format!("--exclude-k8s-namespace {p}"));
        }
        let mut why = Vec::new();
        if !self.exe.is_empty() {
            match self.exe.iter().find(|p| exe_matches(p)) {
                Some(p) => why.push(format!("--exe {p}")),
                None => return Verdict::Skip("no --exe matches".into()),
            }
        }
        if !self.ports.is_empty() {
            match self.ports.iter().find(|p| facts.listening.contains(p)) {
                Some(p) => why.push(format!("--port {p}")),
                None => return Verdict::Skip("listens on no --port".into()),
            }
        }
        if self.container {
            match &facts.container_id {
                Some(id) => why.push(format!("--container ({})", &id[..12.min(id.len())])),
                None => return Verdict::Skip("not in a container".into()),
            }
        }
        for (flag, patterns, value) in [("--k8s-namespace", &self.k8s_namespace, namespace), ("--k8s-pod", &self.k8s_pod, facts.pod.pod_name.as_deref())] {
            if patterns.is_empty() {
                continue;
            }
            match value.and_then(|v| patterns.iter().find(|p| p.matches(v))) {
                Some(p) => why.push(format!("{flag} {p}")),
                None => return Verdict::Skip(format!("no {flag} matches")),
            }
        }
        Verdict::Trace(if why.is_empty() { "every process (no selector)".into() } else { why.join(", ") })
    }
}

fn hostname(pid: u32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(b"HOSTNAME=")).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Listening TCP sockets by network namespace (a pod has its own), read once per namespace
/// and scan.
#[derive(Default)]
pub struct Listening {
    by_netns: HashMap<String, HashMap<u64, u16>>,
}

impl Listening {
    /// Socket inode → port of the listening sockets of `pid`'s network namespace.
    fn of(&mut self, pid: u32) -> &HashMap<u64, u16> {
        let netns = fs::read_link(format!("/proc/{pid}/ns/net")).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        self.by_netns.entry(netns).or_insert_with(|| listening_sockets(pid))
    }
}

/// Socket inode → port of every listening TCP socket in `pid`'s network namespace.
fn listening_sockets(pid: u32) -> HashMap<u64, u16> {
    let mut out = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address, rem_address, st (0A: LISTEN), …, inode (the 10th).
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else { continue };
            if *state != "0A" {
                continue;
            }
            let port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), Ok(inode)) = (port, inode.parse()) {
                out.insert(inode, port);
            }
        }
    }
    out
}

/// The ports `pid` listens on: its fds that are listening sockets.
fn ports_of(pid: u32, listening: &HashMap<u64, u16>) -> Vec<u16> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return Vec::new() };
    let mut ports: HashSet<u16> = HashSet::new();
    for fd in fds.flatten() {
        let Ok(target) = fs::read_link(fd.path()) else { continue };
        let target = target.to_string_lossy();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).and_then(|n| n.parse::<u64>().ok())
            && let Some(port) = listening.get(&inode)
        {
            ports.insert(*port);
        }
    }
    let mut ports: Vec<u16> = ports.into_iter().collect();
    ports.sort_unstable();
    ports
}

/// Every process of the host.
pub fn all_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc").map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()).unwrap_or_default();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selectors(exe: &[&str], ports: &[u16], namespaces: &[&str]) -> Selectors {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (exe, ns) = (owned(exe), owned(namespaces));
        let exclude = vec!["*-exporter".to_string()];
        Selectors::new(&SelectorArgs { exe: &exe, exclude_exe: &exclude, ports, k8s_namespace: &ns, ..Default::default() }).expect("valid")
    }

    fn facts(exe: Option<&str>, listening: &[u16], namespace: Option<&str>) -> Facts {
        Facts {
            pid: 1_000_000,
            exe: exe.map(str::to_string),
            listening: listening.to_vec(),
            container_id: None,
            pod: PodIdentity { namespace: namespace.map(str::to_string), ..Default::default() },
        }
    }

    #[test]
    fn kinds_must_all_match_values_of_one_kind_any() {
        let s = selectors(&["nginx", "python3*"], &[], &[]);
        assert!(s.verdict(&facts(Some("/usr/sbin/nginx"), &[], None)).traced(), "by name");
        assert!(s.verdict(&facts(Some("/usr/bin/python3.11"), &[], None)).traced());
        assert_eq!(s.verdict(&facts(Some("/usr/bin/redis-server"), &[], None)), Verdict::Skip("no --exe matches".into()));
        let by_path = selectors(&["/usr/sbin/*"], &[8080], &[]);
        assert!(by_path.verdict(&facts(Some("/usr/sbin/nginx"), &[80, 8080], None)).traced(), "path and port");
        assert!(!by_path.verdict(&facts(Some("/usr/sbin/nginx"), &[80], None)).traced(), "the path, not the port");
        let in_pods = selectors(&[], &[], &["shop-*"]);
        assert!(in_pods.verdict(&facts(Some("/app/server"), &[], Some("shop-eu"))).traced());
        assert!(!in_pods.verdict(&facts(Some("/app/server"), &[], Some("kube-system"))).traced());
        assert!(!in_pods.verdict(&facts(Some("/app/server"), &[], None)).traced(), "not in a pod");
    }

    #[test]
    fn exclusions_win_and_some_processes_never_are_traced() {
        let all = selectors(&[], &[], &[]);
        assert_eq!(all.verdict(&facts(Some("/usr/bin/curl"), &[], None)), Verdict::Trace("every process (no selector)".into()));
        assert_eq!(all.verdict(&facts(Some("/usr/bin/node-exporter"), &[], None)), Verdict::Skip("--exclude-exe *-exporter".into()));
        assert!(!all.verdict(&facts(None, &[], None)).traced(), "a kernel thread");
        let me = Facts { pid: std::process::id(), ..facts(Some("/usr/bin/zerotrace"), &[], None) };
        assert!(!all.verdict(&me).traced());
        assert!(matches!(Selectors::new(&SelectorArgs { exe: &["[".to_string()], ..Default::default() }), Err(SelectorError::BadPattern { .. })));
    }

    /// This test process listens on a port; the scan finds it through its fd.
    #[test]
    fn listening_ports_are_found_through_the_process_fds() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let found = ports_of(std::process::id(), Listening::default().of(std::process::id()));
        assert!(found.contains(&port), "{port} in {found:?}");
    }
}
