//! Runtime discovery: which runtime a traced process runs, and the probes that let the linker
//! follow a request through it (docs/ARCHITECTURE.md "Linking", "Adding a runtime linker").
//!
//! - libuv (node, or any program with libuv linked in or loaded): `uv__stream_io`, the I/O
//!   callback of every libuv stream, gets an entry probe and a return probe, so every record
//!   says which socket's callback the thread was running (`events::Cause`). node's bundled
//!   nghttp2 also gets a return probe on its stream requests, which names the callback that
//!   asked for each client stream (`Event::StreamCaller`).
//! - CPython asyncio (3.9 and later, `_asyncio` as an extension module or built in with
//!   symbols): `task_step_impl`, one step of a task, gets an entry and a return probe, so
//!   every record says which task was running (`events::Cause::Task`).
//! - CPython's `queue.SimpleQueue` (`_queue`): `put` and `get` report the item handed over,
//!   so a `ThreadPoolExecutor` thread works for the request its submitter served.
//! - Go: recognised from its build info. Go's plain socket calls are made by whichever thread
//!   runs the goroutine, so the thread rule would mix requests up: it is turned off for the
//!   process, and the syscall probes attribute its calls to the goroutine in R14 at the
//!   syscall (`go_tls::syscall_goroutine`, kernels with BTF; elsewhere its plaintext CLIENT
//!   spans get no parent). Its TLS calls are followed per goroutine by the TLS probes.
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
use std::time::{Duration, Instant};
use zerotrace_abi::names::program;

use crate::probes::UprobeLink;
use anyhow::{Context, Result};
use zerotrace_symbols::elf::ElfSymbols;
use zerotrace_symbols::site::{self, SYSV_ARGS, Site};

use crate::probes::Probes;

/// libuv's stream I/O callback; a static function, so it needs the symbol table (node ships
/// with it).
const UV_STREAM_IO: &str = "uv__stream_io";
/// nghttp2's client stream requests, exported: both return the new stream's id, and each
/// calls a shared internal helper, not the other, so one request fires one probe.
const NGHTTP2_SUBMIT: [&str; 2] = ["nghttp2_submit_request", "nghttp2_submit_request2"];
/// node's nghttp2 header callback (`Http2Session::OnHeaderCallback`, static member, in the
/// symbol table node ships with): one decoded field at a time.
const NODE_HEADER_CALLBACK: &str = "_ZN4node5http212Http2Session16OnHeaderCallbackEP15nghttp2_sessionPK13nghttp2_frameP13nghttp2_rcbufS8_hPv";
/// Go's HTTP/2 header fields (see the probes' `go_h2.rs`): x/net's framer and net/http's
/// bundled copy of it decode through an emit closure, and check the pseudo-headers once the
/// block is decoded (the decoder's `Close` is inlined); grpc-go's loopy writer is handed each
/// stream's fields.
const GO_HEADER_FIELDS: [(&str, &str); 7] = [
    ("golang.org/x/net/http2.(*Framer).readMetaFrame", program::GO_H2_META),
    ("golang.org/x/net/http2.(*Framer).readMetaFrame.func1", program::GO_H2_FIELD),
    ("golang.org/x/net/http2.(*MetaHeadersFrame).checkPseudos", program::GO_H2_DECODED),
    ("net/http.(*http2Framer).readMetaFrame", program::GO_H2_META),
    ("net/http.(*http2Framer).readMetaFrame.func1", program::GO_H2_FIELD),
    ("net/http.(*http2MetaHeadersFrame).checkPseudos", program::GO_H2_DECODED),
    ("google.golang.org/grpc/internal/transport.(*loopyWriter).writeHeader", program::GO_GRPC_WRITE_HEADER),
];
/// node's nghttp2 frame callback (`Http2Session::OnFrameReceive`): a HEADERS frame's fields
/// were all delivered.
const NODE_FRAME_CALLBACK: &str = "_ZN4node5http212Http2Session14OnFrameReceiveEP15nghttp2_sessionPK13nghttp2_framePv";
/// One step of an asyncio task (`_asyncio` C module, static). Not `task_step`: the step
/// wrapper's call method inlines that one and calls this directly.
const TASK_STEP: &str = "task_step_impl";
/// CPython's `queue.SimpleQueue.put` and `.get` (Argument Clinic wrappers, static in the
/// `_queue` module): `ThreadPoolExecutor` hands its work items to its threads through one.
const QUEUE_PUT: &str = "_queue_SimpleQueue_put";
const QUEUE_GET: &str = "_queue_SimpleQueue_get";
/// `Task.__init__` (the Argument Clinic wrapper; `self` first in every version).
const TASK_INIT: &str = "_asyncio_Task___init__";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Libuv,
    Asyncio,
    Go,
}

/// What one object file calls for.
#[derive(Clone, Debug)]
struct Plan {
    /// The runtime the object is, or None for an object that only hands work over (CPython's
    /// `_queue`).
    runtime: Option<Runtime>,
    /// (program, file offset, attach cookie) to attach.
    uprobes: Vec<(&'static str, u64, Option<u64>)>,
    /// (program, file offset) that send the HTTP/2 library's header fields, attached only
    /// when a connection of the process needs them (`attach_library_fields`): they run on
    /// every request (node's header callback, on every field).
    library_fields: Vec<(&'static str, u64)>,
    described: String,
}

type FileId = (u64, u64);

#[derive(Default)]
pub struct RuntimeProbes {
    plans: HashMap<FileId, Option<Plan>>,
    attached: HashMap<u32, Vec<UprobeLink>>,
    /// Objects probed, per process.
    files: HashMap<u32, HashSet<FileId>>,
    seen: HashSet<u32>,
    /// Processes whose library field probes are attached, with their links.
    library_fields: HashMap<u32, Vec<UprobeLink>>,
    /// Processes recognised since the last call to `take_recognised`.
    recognised: Vec<(u32, Runtime)>,
    /// Processes with no runtime found yet, to look at again (asyncio's module is loaded on
    /// import, perhaps after we attached): (pid, when, looks left).
    recheck: Vec<(u32, Instant, u8)>,
}

/// How often, and how many times, a process without a known runtime is looked at again.
const RECHECK_EVERY: Duration = Duration::from_secs(2);
const RECHECKS: u8 = 5;

impl RuntimeProbes {
    /// Looks at a process once: recognises its runtime and attaches what that runtime needs.
    /// Never fails the run: a process that cannot be probed gets one warning line and falls
    /// back to the thread rule.
    pub fn attach_process(&mut self, probes: &mut Probes, pid: u32) {
        self.attach_or_recheck(probes, pid, RECHECKS);
    }

    fn attach_or_recheck(&mut self, probes: &mut Probes, pid: u32, looks_left: u8) {
        if !self.seen.insert(pid) {
            return;
        }
        if !self.attach_objects(probes, pid) && looks_left > 0 {
            self.recheck.push((pid, Instant::now() + RECHECK_EVERY, looks_left - 1));
        }
    }

    /// Attaches the plans of every object the process maps that has one (once per object and
    /// process). True when a runtime was recognised (whether or not its probes attached).
    fn attach_objects(&mut self, probes: &mut Probes, pid: u32) -> bool {
        let mut recognised = false;
        for path in objects(pid) {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let file = (meta.dev(), meta.ino());
            let Some(plan) = self.plan(file, &path, pid) else { continue };
            recognised |= plan.runtime.is_some();
            if !self.files.entry(pid).or_default().insert(file) {
                continue;
            }
            let links = self.attached.entry(pid).or_default();
            for &(program, offset, cookie) in &plan.uprobes {
                match probes.attach_uprobe(program, &path, offset, cookie, Some(pid)) {
                    Ok(link) => links.push(link),
                    Err(_) if !crate::targets::is_alive(pid) => return true,
                    Err(err) => {
                        eprintln!("zerotrace: warning: no runtime probes in {} (pid {pid}): {err:#}; its threads are linked by the thread rule", shown(&path));
                        break;
                    }
                }
            }
            if let Some(runtime) = plan.runtime {
                self.recognised.push((pid, runtime));
            }
        }
        recognised
    }

    /// The plan for an object, analysed once per file.
    fn plan(&mut self, file: FileId, path: &Path, pid: u32) -> Option<Plan> {
        if let Some(plan) = self.plans.get(&file) {
            return plan.clone();
        }
        let plan = match plan_object(path) {
            Ok(plan) => plan,
            Err(err) => {
                eprintln!("zerotrace: warning: no runtime probes in {} (pid {pid}): {err:#}; its threads are linked by the thread rule", shown(path));
                None
            }
        };
        if let Some(plan) = &plan {
            eprintln!("zerotrace: runtime probes on {} ({})", shown(path), plan.described);
        }
        self.plans.insert(file, plan.clone());
        plan
    }

    /// Processes recognised since the last call, with their runtime.
    pub fn take_recognised(&mut self) -> Vec<(u32, Runtime)> {
        std::mem::take(&mut self.recognised)
    }

    /// A connection of `pid` has requests whose header fields only its HTTP/2 library knows:
    /// attach the probes that send them, once per process. One line says what was attached.
    pub fn attach_library_fields(&mut self, probes: &mut Probes, pid: u32) {
        if self.library_fields.contains_key(&pid) {
            return;
        }
        let mut links = Vec::new();
        for path in objects(pid) {
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            let Some(Some(plan)) = self.plans.get(&(meta.dev(), meta.ino())) else { continue };
            for (program, offset) in plan.library_fields.clone() {
                match probes.attach_uprobe(program, &path, offset, None, Some(pid)) {
                    Ok(link) => links.push(link),
                    Err(err) => eprintln!("zerotrace: warning: pid {pid}: no HTTP/2 library field probe {program}: {err:#}"),
                }
            }
        }
        let what = if links.is_empty() { "no HTTP/2 library we can follow: those values stay unknown" } else { "its HTTP/2 library's header fields are followed" };
        eprintln!("zerotrace: pid {pid} has HTTP/2 requests naming header table entries the agent never saw (a connection opened before attach); {what}");
        self.library_fields.insert(pid, links);
    }

    /// `pid`'s connections decode whole again (or are gone): its library field probes come off.
    pub fn detach_library_fields(&mut self, probes: &mut Probes, pid: u32) {
        let Some(links) = self.library_fields.remove(&pid) else { return };
        if !links.is_empty() {
            eprintln!("zerotrace: pid {pid}: its HTTP/2 header tables are known again; its library's header fields are no longer followed");
        }
        for link in links {
            probes.detach_uprobe(link);
        }
    }

    /// A process ran exec: look at it again.
    pub fn process_started(&mut self, probes: &mut Probes, pid: u32) {
        self.seen.remove(&pid);
        self.attach_process(probes, pid);
    }

    /// Drops the probes of processes that exited.
    pub fn housekeeping(&mut self, probes: &mut Probes) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = self.recheck.drain(..).partition(|(_, at, _)| *at <= now);
        self.recheck = later;
        for (pid, _, looks_left) in due {
            self.seen.remove(&pid);
            self.attach_or_recheck(probes, pid, looks_left);
        }
        self.seen.retain(|pid| crate::targets::is_alive(*pid));
        let gone: Vec<u32> = self.library_fields.keys().copied().filter(|pid| !crate::targets::is_alive(*pid)).collect();
        for pid in gone {
            for link in self.library_fields.remove(&pid).unwrap_or_default() {
                probes.detach_uprobe(link);
            }
        }
        let gone: Vec<u32> = self.attached.keys().copied().filter(|pid| !crate::targets::is_alive(*pid)).collect();
        for pid in gone {
            self.files.remove(&pid);
            for link in self.attached.remove(&pid).unwrap_or_default() {
                probes.detach_uprobe(link);
            }
        }
    }
}

/// Names of mapped objects that may carry a runtime: libuv (a shared libnode or libuv), CPython
/// (libpython, or the `_asyncio` extension module).
fn may_carry_runtime(name: &str) -> bool {
    ["libuv", "libnode", "libpython3", "_asyncio.", "_queue."].iter().any(|prefix| name.starts_with(prefix))
}

/// The executable, and libraries that may carry a runtime.
fn objects(pid: u32) -> Vec<PathBuf> {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut paths = vec![PathBuf::from(format!("/proc/{pid}/exe"))];
    if let Ok(objects) = zerotrace_symbols::maps::process_objects(pid) {
        paths.extend(objects.into_iter().filter(|p| p.file_name().is_some_and(|n| may_carry_runtime(&n.to_string_lossy()))).map(|p| root.join(p.strip_prefix("/").unwrap_or(&p))));
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
        let mut uprobes = vec![(program::UV_STREAM_IO, offset, None), (program::UNIT_RET, offset, None)];
        let mut described = format!("libuv stream callbacks{}", single_stepped(&site));
        // node bundles nghttp2: which callback asked for each client stream (optional:
        // without it, HTTP/2 calls written outside their callback get no parent). The entry
        // probe (library fields) reads four arguments; the return probe shares its site.
        let at = |function: &str| {
            let address = symbols.address(function).ok()?;
            symbols.file_offset(site::site(&symbols, address, &SYSV_ARGS[..4], false).address())
        };
        let submits: Vec<u64> = NGHTTP2_SUBMIT.iter().filter_map(|f| at(f)).collect();
        let mut library_fields = Vec::new();
        if !submits.is_empty() {
            uprobes.extend(submits.iter().map(|&offset| (program::NGHTTP2_SUBMIT_RET, offset, None)));
            described.push_str(", nghttp2 stream requests");
            library_fields.extend(submits.iter().map(|&offset| (program::NGHTTP2_SUBMIT, offset)));
            library_fields.extend(at(NODE_HEADER_CALLBACK).map(|offset| (program::NGHTTP2_HEADER, offset)));
            library_fields.extend(at(NODE_FRAME_CALLBACK).map(|offset| (program::NGHTTP2_FRAME_END, offset)));
        }
        return Ok(Some(Plan { runtime: Some(Runtime::Libuv), uprobes, library_fields, described }));
    }
    if symbols.defines(TASK_STEP) {
        let minor = cpython_minor(&shown(path)).with_context(|| format!("{TASK_STEP} found, but no CPython version in the file name"))?;
        // 3.12 added the module state as the first argument; the task follows it.
        let task_arg = if minor >= 12 { 1 } else { 0 };
        let address = symbols.address(TASK_STEP)?;
        let site = site::site(&symbols, address, &SYSV_ARGS[..=task_arg], false);
        let offset = symbols.file_offset(site.address()).with_context(|| format!("{TASK_STEP}: probe site outside the file's segments"))?;
        let entry = if task_arg == 0 { program::ASYNCIO_TASK_STEP } else { program::ASYNCIO_TASK_STEP_STATE };
        let mut uprobes = vec![(entry, offset, None), (program::UNIT_RET, offset, None)];
        // Optional: without it, work a handler hands to a child task gets no parent.
        if let Ok(init) = symbols.address(TASK_INIT) {
            let site = site::site(&symbols, init, &SYSV_ARGS[..1], false);
            if let Some(offset) = symbols.file_offset(site.address()) {
                uprobes.push((program::ASYNCIO_TASK_INIT, offset, None));
            }
        }
        return Ok(Some(Plan {
            runtime: Some(Runtime::Asyncio),
            uprobes,
            library_fields: Vec::new(),
            described: format!("CPython 3.{minor} asyncio task steps{}", single_stepped(&site)),
        }));
    }
    if symbols.defines(QUEUE_PUT) && symbols.defines(QUEUE_GET) {
        let mut uprobes = Vec::new();
        for (function, program, args) in [(QUEUE_PUT, program::PY_QUEUE_PUT, 2), (QUEUE_GET, program::PY_QUEUE_GET_RET, 0)] {
            let address = symbols.address(function)?;
            let site = site::site(&symbols, address, &SYSV_ARGS[..args], false);
            let offset = symbols.file_offset(site.address()).with_context(|| format!("{function}: probe site outside the file's segments"))?;
            uprobes.push((program, offset, None));
        }
        return Ok(Some(Plan { runtime: None, uprobes, library_fields: Vec::new(), described: "queue.SimpleQueue hand-offs (ThreadPoolExecutor)".to_string() }));
    }
    if let Some(binary) = zerotrace_symbols::go::read(&symbols, &GO_HEADER_FIELDS.map(|(f, _)| f))? {
        // Kept for when a connection needs them; a function the binary lacks (no HTTP/2, no
        // grpc-go, or another version's names) is simply not probed.
        let library_fields = GO_HEADER_FIELDS
            .iter()
            .filter_map(|&(function, program)| {
                let &(start, _) = binary.functions.get(function)?;
                Some((program, crate::tls::go::entry(&symbols, function, start).ok()?))
            })
            .collect();
        return Ok(Some(Plan { runtime: Some(Runtime::Go), uprobes: Vec::new(), library_fields, described: "Go: plain socket calls linked by goroutine".to_string() }));
    }
    Ok(None)
}

/// A path for messages, as the process sees it (/proc/PID/exe resolved, /proc/PID/root cut).
fn shown(path: &Path) -> String {
    crate::tls::shown(&std::fs::read_link(path).unwrap_or_else(|_| path.to_path_buf()))
}

fn single_stepped(site: &Site) -> &'static str {
    match site {
        Site::Entry { .. } => " (single-stepped)",
        _ => "",
    }
}

/// The CPython minor version from an object's name: `_asyncio.cpython-311-…`,
/// `libpython3.11.so`, `python3.11`.
fn cpython_minor(name: &str) -> Option<u32> {
    let file = name.rsplit('/').next()?;
    let digits = if let Some(at) = file.find("cpython-3") {
        &file[at + 9..]
    } else {
        let at = file.find("python3.")?;
        &file[at + 8..]
    };
    let minor: String = digits.chars().take_while(char::is_ascii_digit).collect();
    minor.parse().ok().filter(|m| (9..=13).contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpython_versions_come_from_file_names() {
        assert_eq!(cpython_minor("/x/lib-dynload/_asyncio.cpython-311-x86_64-linux-gnu.so"), Some(11));
        assert_eq!(cpython_minor("/usr/lib/x86_64-linux-gnu/libpython3.12.so.1.0"), Some(12));
        assert_eq!(cpython_minor("/usr/bin/python3.9"), Some(9));
        assert_eq!(cpython_minor("/usr/bin/python3"), None);
        assert_eq!(cpython_minor("_asyncio.cpython-314-x86_64-linux-gnu.so"), None, "untested versions are not guessed");
    }

    /// Every CPython this machine has: the asyncio task step is found and probed without a
    /// single-step trap.
    #[test]
    fn cpython_asyncio_is_recognised() {
        let out = std::process::Command::new("python3").args(["-c", "import _asyncio; print(_asyncio.__file__)"]).output().expect("python3 runs");
        let file = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(out.status.success() && !file.is_empty(), "python3 has no _asyncio module file: {}", String::from_utf8_lossy(&out.stderr));
        let plan = plan_object(Path::new(&file)).unwrap_or_else(|e| panic!("{e:#}")).expect("_asyncio carries task_step_impl");
        assert_eq!(plan.runtime, Some(Runtime::Asyncio));
        assert!(!plan.described.contains("single-stepped"), "{}", plan.described);
    }

    /// The node this machine runs has libuv's stream callback, probed where the kernel need not
    /// single-step, and its bundled nghttp2: the stream request return probes (two functions),
    /// and the library field probes kept for when a connection needs them.
    #[test]
    fn node_is_recognised_as_libuv() {
        let node = std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("node")).find(|p| p.exists()))
            .expect("node is not on PATH: install Node.js 20 (cargo xtask setup)");
        let plan = plan_object(&node).unwrap_or_else(|e| panic!("{e:#}")).expect("node carries libuv");
        assert_eq!(plan.runtime, Some(Runtime::Libuv));
        assert_eq!(plan.uprobes.len(), 4, "{:?}", plan.uprobes);
        assert_eq!(
            plan.library_fields.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            [program::NGHTTP2_SUBMIT, program::NGHTTP2_SUBMIT, program::NGHTTP2_HEADER, program::NGHTTP2_FRAME_END]
        );
        assert!(!plan.described.contains("single-stepped"), "{}", plan.described);
    }
}
