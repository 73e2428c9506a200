//! TLS probes per traced process: which objects provide OpenSSL (libssl, or an executable with
//! it linked in, as node) or are Go executables using crypto/tls (`go`), where in them to
//! probe, and attaching/detaching as processes come and go.
//!
//! Two scopes (`--tls-scope`):
//! - `file`: a uprobe on the library file traps in every process on the host that uses it,
//!   and the program filters. Children forked or exec'd later are covered from their first
//!   instruction; untraced processes pay the trap (~1 µs per SSL call here).
//! - `process`: a uprobe per traced process; the kernel plants breakpoints in that process
//!   alone, so untraced ones pay nothing (measured: an agent tracing an idle process cut an
//!   untraced nginx's HTTPS throughput by about a third in `file` scope, by nothing visible in
//!   this one). Processes that appear later announce themselves through the probes' fork/exec
//!   records, but each registration waits on the kernel (`dup_mmap_sem`, an RCU grace period:
//!   5–100 ms measured), so a child that does its TLS within that time (curl run from a traced
//!   shell) is missed. Hence not the default.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerotrace_abi::names::program;

use crate::probes::UprobeLink;
use anyhow::{Context, Result};
use zerotrace_symbols::elf::ElfSymbols;
use zerotrace_symbols::site::{self, SYSV_ARGS, Site};

pub(crate) mod go;

use crate::cli::TlsScope;
use crate::probes::Probes;

/// Where Debian-like and Red Hat-like systems keep libssl, inside the process's own root. A
/// process gets probes there even before it maps the library (python imports `ssl` late, a
/// forked child execs curl): the kernel plants them when the file is mapped.
const SYSTEM_LIBSSL: &[&str] = &["usr/lib/x86_64-linux-gnu/libssl.so.3", "usr/lib64/libssl.so.3", "usr/lib/libssl.so.3", "usr/lib/aarch64-linux-gnu/libssl.so.3"];

/// After a fork or exec, read the process's mappings again this much later: libraries that
/// the dynamic loader or `dlopen` maps after exec are not there yet when the record arrives.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// One OpenSSL API function and the entry program for it; all share the `ssl_ret` return
/// program.
struct TlsFunction {
    function: &'static str,
    program: &'static str,
    direction: &'static str,
    /// Reports its count through a `size_t *` 4th argument.
    ex: bool,
}

/// The `_ex` forms first: where they lead into an internal function that the plain forms
/// also call, one probe there serves both.
const TLS_FUNCTIONS: [TlsFunction; 4] = [
    TlsFunction { function: "SSL_read_ex", program: program::SSL_READ_EX, direction: "read", ex: true },
    TlsFunction { function: "SSL_write_ex", program: program::SSL_WRITE_EX, direction: "write", ex: true },
    TlsFunction { function: "SSL_read", program: program::SSL_READ, direction: "read", ex: false },
    TlsFunction { function: "SSL_write", program: program::SSL_WRITE, direction: "write", ex: false },
];

/// One uprobe to attach: a program at a file offset, with the cookie it reads, if any.
#[derive(Debug, Clone, Copy)]
struct Uprobe {
    program: &'static str,
    offset: u64,
    cookie: Option<u64>,
}

/// What to attach in one object, and a description for the log.
#[derive(Default)]
struct Plan {
    uprobes: Vec<Uprobe>,
    described: Vec<String>,
}

/// An object file, whatever path reaches it (/lib → /usr/lib, /proc/PID/root/...).
type FileId = (u64, u64);

#[derive(Default)]
struct Attached {
    objects: HashSet<FileId>,
    links: Vec<UprobeLink>,
}

/// Detaching takes the kernel a grace period per probe: dead processes' probes are dropped in
/// batches, this often.
const CLEANUP_EVERY: Duration = Duration::from_secs(10);

/// The TLS probes of every traced process.
pub struct TlsProbes {
    scope: TlsScope,
    /// Objects looked into, by file: their plan, or `None` when they have no OpenSSL or could
    /// not be analysed (said once).
    plans: HashMap<FileId, Option<Arc<Plan>>>,
    /// What is attached, by owner: the process in `process` scope, 0 (every process) in
    /// `file` scope.
    owners: HashMap<u32, Attached>,
    /// Processes looked at.
    seen: HashSet<u32>,
    recheck: Vec<(u32, Instant)>,
    last_cleanup: Instant,
}

impl TlsProbes {
    pub fn new(scope: TlsScope) -> Self {
        Self { scope, plans: HashMap::new(), owners: HashMap::new(), seen: HashSet::new(), recheck: Vec::new(), last_cleanup: Instant::now() }
    }

    /// Attaches the probes for a process in every OpenSSL object it has or will map from the
    /// usual places (in `file` scope, once per object for every process). Never fails the
    /// run: an object that cannot be probed gets one warning line and plaintext tracing goes
    /// on.
    pub fn attach_process(&mut self, probes: &mut Probes, pid: u32) {
        self.seen.insert(pid);
        let (owner, only) = match self.scope {
            TlsScope::File => (0, None),
            TlsScope::Process => (pid, Some(pid)),
        };
        for path in candidates(pid) {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let file = (meta.dev(), meta.ino());
            if self.owners.get(&owner).is_some_and(|a| a.objects.contains(&file)) {
                continue;
            }
            let Some(plan) = self.plan(file, &path, pid) else { continue };
            let attached = self.owners.entry(owner).or_default();
            attached.objects.insert(file);
            for probe in &plan.uprobes {
                match probes.attach_uprobe(probe.program, &path, probe.offset, probe.cookie, only) {
                    Ok(link) => attached.links.push(link),
                    // The process exited meanwhile: the cleanup detaches what was attached.
                    Err(_) if !crate::targets::is_alive(pid) => return,
                    Err(err) => {
                        eprintln!("zerotrace: warning: no TLS probes in {} (pid {pid}): {err:#}; plaintext tracing continues", shown(&path));
                        break;
                    }
                }
            }
        }
    }

    /// Whether the process has been looked at.
    pub fn knows(&self, pid: u32) -> bool {
        self.seen.contains(&pid)
    }

    /// A traced process forked or ran exec: probe it now, and look at its mappings again soon.
    pub fn process_started(&mut self, probes: &mut Probes, pid: u32) {
        self.attach_process(probes, pid);
        self.recheck.push((pid, Instant::now() + RECHECK_AFTER));
    }

    /// Periodic: re-reads the mappings of recently started processes; now and then forgets
    /// exited processes and drops their probes.
    pub fn housekeeping(&mut self, probes: &mut Probes) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.recheck.drain(..).partition(|(_, at)| *at <= now);
        self.recheck = later;
        for (pid, _) in due {
            self.attach_process(probes, pid);
        }
        if now.duration_since(self.last_cleanup) < CLEANUP_EVERY {
            return;
        }
        self.last_cleanup = now;
        self.seen.retain(|pid| crate::targets::is_alive(*pid));
        let gone: Vec<u32> = self.owners.keys().copied().filter(|owner| *owner != 0 && !crate::targets::is_alive(*owner)).collect();
        for owner in gone {
            if let Some(attached) = self.owners.remove(&owner) {
                for link in attached.links {
                    probes.detach_uprobe(link);
                }
            }
        }
    }

    /// The plan for an object, analysed once per file.
    fn plan(&mut self, file: FileId, path: &Path, pid: u32) -> Option<Arc<Plan>> {
        if let Some(plan) = self.plans.get(&file) {
            return plan.clone();
        }
        let plan = match plan_object(path) {
            Ok(Some(plan)) => {
                eprintln!("zerotrace: TLS probes on {} ({})", shown(path), plan.described.join(", "));
                Some(Arc::new(plan))
            }
            // An executable without a TLS library is the common case, not worth a line.
            Ok(None) => None,
            Err(err) => {
                eprintln!("zerotrace: warning: no TLS probes in {} (pid {pid}): {err:#}; plaintext tracing continues", shown(path));
                None
            }
        };
        self.plans.insert(file, plan.clone());
        plan
    }
}

/// Objects of a process worth looking into: the usual libssl paths, its executable (OpenSSL
/// may be linked in, as in node), and mapped libraries named like libssl. Paths go through
/// /proc/PID/root so a process in another mount namespace (a container) is read as it sees
/// its files.
fn candidates(pid: u32) -> Vec<PathBuf> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut paths: Vec<PathBuf> = SYSTEM_LIBSSL.iter().map(|p| root.join(p)).collect();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    if let Ok(objects) = zerotrace_symbols::maps::process_objects(pid) {
        paths.extend(
            objects
                .into_iter()
                .filter(|p| Some(p) == exe.as_ref() || p.file_name().is_some_and(|n| n.to_string_lossy().contains("libssl")))
                .map(|p| root.join(p.strip_prefix("/").unwrap_or(&p))),
        );
    }
    paths
}

/// A path for messages: /proc/PID/root/usr/lib/... shows as /usr/lib/...
pub(crate) fn shown(path: &Path) -> String {
    let text = path.display().to_string();
    match text.strip_prefix("/proc/").and_then(|rest| rest.split_once("/root")) {
        Some((pid, inside)) if pid.bytes().all(|b| b.is_ascii_digit()) && inside.starts_with('/') => inside.to_string(),
        _ => text,
    }
}

/// Where to probe TLS in one object: the OpenSSL API, or a Go executable's crypto/tls.
/// `Ok(None)` when it has neither.
fn plan_object(path: &Path) -> Result<Option<Plan>> {
    let symbols = ElfSymbols::read(path)?;
    if symbols.defines("SSL_read") && symbols.defines("SSL_write") {
        return openssl_plan(&symbols).map(Some);
    }
    go::plan(&symbols)
}

/// Where to probe the OpenSSL API in one object. The probes go where the kernel need not
/// single-step (see `zerotrace_symbols::site`): the `_ex` forms may be probed in the internal
/// function they pass their arguments to, which keeps their contract (count through the 4th
/// argument, positive return on success). `SSL_read`/`SSL_write` are then left alone if they
/// call that same function, so each call is seen once.
fn openssl_plan(symbols: &ElfSymbols) -> Result<Plan> {
    let mut plan = Plan::default();
    // Direction → the internal function its `_ex` form was probed in.
    let mut internal: Vec<(&str, u64)> = Vec::new();
    for tls in &TLS_FUNCTIONS {
        let Ok(address) = symbols.address(tls.function) else { continue };
        let site = if tls.ex {
            site::site(symbols, address, &SYSV_ARGS[..4], true)
        } else {
            let covering = internal.iter().find(|(direction, _)| *direction == tls.direction).map(|(_, callee)| *callee);
            if covering.is_some_and(|callee| site::calls(symbols, address, symbols.size(tls.function), callee)) {
                plan.described.push(format!("{} through that function", tls.function));
                continue;
            }
            site::site(symbols, address, &SYSV_ARGS[..3], false)
        };
        let offset = symbols.file_offset(site.address()).with_context(|| format!("{}: probe site {:#x} outside the file's segments", tls.function, site.address()))?;
        plan.uprobes.push(Uprobe { program: tls.program, offset, cookie: None });
        plan.uprobes.push(Uprobe { program: program::SSL_RET, offset, cookie: None });
        plan.described.push(match site {
            Site::Emulated { address: at } if at == address => tls.function.to_string(),
            Site::Emulated { address: at } => format!("{}+{:#x}", tls.function, at - address),
            Site::Callee { callee, .. } => {
                internal.push((tls.direction, callee));
                format!("{} in the internal function at {callee:#x}", tls.function)
            }
            Site::Entry { .. } => format!("{} (single-stepped)", tls.function),
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_a_process_root_show_as_the_process_sees_them() {
        assert_eq!(shown(Path::new("/proc/42/root/usr/lib/libssl.so.3")), "/usr/lib/libssl.so.3");
        assert_eq!(shown(Path::new("/usr/bin/node")), "/usr/bin/node");
        assert_eq!(shown(Path::new("/proc/self/rootfs/x")), "/proc/self/rootfs/x");
    }

    /// The system libssl: every API function is covered, each by a probe the kernel emulates
    /// (Debian's OpenSSL 3.0 starts SSL_read with `sub rsp`, its internal functions with pushes).
    #[test]
    fn system_libssl_is_probed_without_single_steps() {
        let Some(path) = SYSTEM_LIBSSL.iter().map(|p| Path::new("/").join(p)).find(|p| p.exists()) else {
            panic!("libssl.so.3 not found: install libssl3 (cargo xtask setup)");
        };
        let plan = plan_object(&path).unwrap_or_else(|e| panic!("{e:#}")).expect("libssl provides the OpenSSL API");
        assert_eq!(plan.described.len(), 4, "{:?}", plan.described);
        assert!(plan.described.iter().all(|d| !d.contains("single-stepped")), "{:?}", plan.described);
        assert!(plan.uprobes.len() >= 4 && plan.uprobes.len().is_multiple_of(2), "{:?}", plan.uprobes);
    }
}
