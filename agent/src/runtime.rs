//! Runtime discovery: which runtime a traced process runs, and the probes that let the linker
//! follow a request through it (docs/ARCHITECTURE.md "Linking", "Adding a runtime linker").
//!
//! - libuv (node, or any program with libuv linked in or loaded): `uv__stream_io`, the I/O
//!   callback of every libuv stream, gets an entry probe and a return probe, so every record
//!   says which socket's callback the thread was running (`events::Cause`).
//! - Go: recognised from its build info. Go's plain socket calls are made by whichever thread
//!   runs the goroutine, so the thread rule would mix requests up: it is turned off for the
//!   process and its plaintext CLIENT spans get no parent (its TLS calls are followed per
//!   goroutine by the TLS probes).
//! - Anything else: the thread rule (thread-per-request servers; an event loop without probes
//!   gets a parent only while it serves a single request).
//!
//! Runtime probes are attached per process, whatever `--tls-scope` says: every node process
//! on the host would otherwise trap on every callback.
//!
//! To add a runtime: recognise it in `plan_object`, give its probes in the plan, and teach
//! `callbacks.rs` (or a sibling) what its records mean.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use aya::programs::uprobe::UProbeLinkId;
use zerotrace_symbols::elf::ElfSymbols;
use zerotrace_symbols::site::{self, SYSV_ARGS, Site};

use crate::probes::Probes;

/// libuv's stream I/O callback; a static function, so it needs the symbol table (node ships
/// with it).
const UV_STREAM_IO: &str = "uv__stream_io";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Libuv,
    Go,
}

/// What one object file calls for.
#[derive(Clone, Debug)]
struct Plan {
    runtime: Runtime,
    /// (program, file offset) pairs to attach.
    uprobes: Vec<(&'static str, u64)>,
    described: String,
}

type FileId = (u64, u64);

#[derive(Default)]
pub struct RuntimeProbes {
    plans: HashMap<FileId, Option<Plan>>,
    attached: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    seen: HashSet<u32>,
    /// Processes recognised since the last call to `take_recognised`.
    recognised: Vec<(u32, Runtime)>,
}

impl RuntimeProbes {
    /// Looks at a process once: recognises its runtime and attaches what that runtime needs.
    /// Never fails the run: a process that cannot be probed gets one warning line and falls
    /// back to the thread rule.
    pub fn attach_process(&mut self, probes: &mut Probes, pid: u32) {
        if !self.seen.insert(pid) {
            return;
        }
        for path in objects(pid) {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let file = (meta.dev(), meta.ino());
            let plan = match self.plans.get(&file) {
                Some(plan) => plan.clone(),
                None => {
                    let plan = match plan_object(&path) {
                        Ok(plan) => plan,
                        Err(err) => {
                            eprintln!("zerotrace: warning: no runtime probes in {} (pid {pid}): {err:#}; its threads are linked by the thread rule", path.display());
                            None
                        }
                    };
                    if let Some(plan) = &plan {
                        let shown = std::fs::read_link(&path).unwrap_or_else(|_| path.clone());
                        eprintln!("zerotrace: runtime probes on {} ({})", shown.display(), plan.described);
                    }
                    self.plans.insert(file, plan.clone());
                    plan
                }
            };
            let Some(plan) = plan else { continue };
            let links = self.attached.entry(pid).or_default();
            for &(program, offset) in &plan.uprobes {
                match probes.attach_uprobe(program, &path, offset, None, Some(pid)) {
                    Ok(link) => links.push((program, link)),
                    Err(_) if !crate::targets::is_alive(pid) => return,
                    Err(err) => {
                        eprintln!("zerotrace: warning: no runtime probes in {} (pid {pid}): {err:#}; its threads are linked by the thread rule", path.display());
                        break;
                    }
                }
            }
            self.recognised.push((pid, plan.runtime));
            return;
        }
    }

    /// Processes recognised since the last call, with their runtime.
    pub fn take_recognised(&mut self) -> Vec<(u32, Runtime)> {
        std::mem::take(&mut self.recognised)
    }

    /// A process ran exec: look at it again.
    pub fn process_started(&mut self, probes: &mut Probes, pid: u32) {
        self.seen.remove(&pid);
        self.attach_process(probes, pid);
    }

    /// Drops the probes of processes that exited.
    pub fn housekeeping(&mut self, probes: &mut Probes) {
        self.seen.retain(|pid| crate::targets::is_alive(*pid));
        let gone: Vec<u32> = self.attached.keys().copied().filter(|pid| !crate::targets::is_alive(*pid)).collect();
        for pid in gone {
            for (program, link) in self.attached.remove(&pid).unwrap_or_default() {
                probes.detach_uprobe(program, link);
            }
        }
    }
}

/// The executable, and libraries that may carry libuv (a shared libnode or libuv).
fn objects(pid: u32) -> Vec<PathBuf> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut paths = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
    if let Ok(objects) = zerotrace_symbols::maps::process_objects(pid) {
        paths.extend(
            objects
                .into_iter()
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("libuv") || n.to_string_lossy().starts_with("libnode")))
                .map(|p| root.join(p.strip_prefix("/").unwrap_or(&p))),
        );
    }
    paths
}

/// The runtime one object carries, and its probes; `Ok(None)` for none we follow.
fn plan_object(path: &Path) -> Result<Option<Plan>> {
    let symbols = ElfSymbols::read(path)?;
    if symbols.defines(UV_STREAM_IO) {
        let address = symbols.address(UV_STREAM_IO)?;
        // The entry probe reads the second argument; the return probe needs [rsp] as at entry.
        let site = site::site(&symbols, address, &SYSV_ARGS[..2], false);
        let offset = symbols.file_offset(site.address()).with_context(|| format!("{UV_STREAM_IO}: probe site outside the file's segments"))?;
        let how = match site {
            Site::Entry { .. } => " (single-stepped)",
            _ => "",
        };
        return Ok(Some(Plan {
            runtime: Runtime::Libuv,
            uprobes: vec![("uv_stream_io", offset), ("uv_stream_io_ret", offset)],
            described: format!("libuv stream callbacks{how}"),
        }));
    }
    if zerotrace_symbols::go::read(&symbols, &[])?.is_some() {
        return Ok(Some(Plan { runtime: Runtime::Go, uprobes: Vec::new(), described: "Go: plaintext calls are not linked by thread".to_string() }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node this machine runs has libuv's stream callback, probed where the kernel need not
    /// single-step.
    #[test]
    fn node_is_recognised_as_libuv() {
        let node = std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("node")).find(|p| p.exists()))
            .expect("node is not on PATH: install Node.js 20 (cargo xtask setup)");
        let plan = plan_object(&node).unwrap_or_else(|e| panic!("{e:#}")).expect("node carries libuv");
        assert_eq!(plan.runtime, Runtime::Libuv);
        assert_eq!(plan.uprobes.len(), 2);
        assert!(!plan.described.contains("single-stepped"), "{}", plan.described);
    }
}
