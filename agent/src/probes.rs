//! Loading the embedded kernel programs, attaching them, and the agent's handles on their maps.

use std::num::NonZeroU32;

use anyhow::{Context, Result, anyhow};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{
    TracePoint, UProbe,
    trace_point::TracePointLinkId,
    uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
};
use aya::{Ebpf, EbpfLoader};
use zerotrace_abi::names::{map, program, setting};
use zerotrace_abi::{FdState, PID_WORDS, fd_key, fd_state, stat};

/// The probe object built by `cargo xtask build-ebpf` (checked by build.rs).
static PROBES: &[u8] = aya::include_bytes_aligned!(env!("ZEROTRACE_PROBES_OBJECT"));

/// (program, tracepoint category, tracepoint name). One program may serve several hooks.
const ATTACH: &[(&str, &str, &str)] = &[
    (program::SYS_ENTER_READ, "syscalls", "sys_enter_read"),
    (program::SYS_ENTER_RECVFROM, "syscalls", "sys_enter_recvfrom"),
    (program::SYS_ENTER_WRITE, "syscalls", "sys_enter_write"),
    (program::SYS_ENTER_SENDTO, "syscalls", "sys_enter_sendto"),
    (program::SYS_ENTER_READV, "syscalls", "sys_enter_readv"),
    (program::SYS_ENTER_WRITEV, "syscalls", "sys_enter_writev"),
    (program::SYS_ENTER_RECVMSG, "syscalls", "sys_enter_recvmsg"),
    (program::SYS_ENTER_SENDMSG, "syscalls", "sys_enter_sendmsg"),
    (program::SYS_ENTER_SENDFILE64, "syscalls", "sys_enter_sendfile64"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_read"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_recvfrom"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_write"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_sendto"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_readv"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_writev"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_recvmsg"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_sendmsg"),
    (program::SYS_EXIT_DATA, "syscalls", "sys_exit_sendfile64"),
    (program::SYS_ENTER_ACCEPT, "syscalls", "sys_enter_accept"),
    (program::SYS_ENTER_ACCEPT, "syscalls", "sys_enter_accept4"),
    (program::SYS_EXIT_ACCEPT, "syscalls", "sys_exit_accept"),
    (program::SYS_EXIT_ACCEPT, "syscalls", "sys_exit_accept4"),
    (program::SYS_ENTER_CONNECT, "syscalls", "sys_enter_connect"),
    (program::SYS_EXIT_CONNECT, "syscalls", "sys_exit_connect"),
    (program::INET_SOCK_SET_STATE, "sock", "inet_sock_set_state"),
    (program::SYS_ENTER_CLOSE, "syscalls", "sys_enter_close"),
    (program::SYS_ENTER_PIPE, "syscalls", "sys_enter_pipe"),
    (program::SYS_ENTER_PIPE, "syscalls", "sys_enter_pipe2"),
    (program::SYS_EXIT_PIPE, "syscalls", "sys_exit_pipe"),
    (program::SYS_EXIT_PIPE, "syscalls", "sys_exit_pipe2"),
    (program::TASK_NEWTASK, "task", "task_newtask"),
    (program::SCHED_PROCESS_EXEC, "sched", "sched_process_exec"),
    (program::SCHED_PROCESS_EXIT, "sched", "sched_process_exit"),
    (program::SYS_ENTER_EXIT_GROUP, "syscalls", "sys_enter_exit_group"),
];

pub struct Settings {
    pub payload_cap: u32,
    /// A connected socket's capture until its protocol is recognised (0: `payload_cap`).
    pub client_first_cap: u32,
    pub cgroup_filter: bool,
    pub wakeup_bytes: u64,
    pub hooks_only: bool,
    /// Attribute Go processes' plain socket calls to goroutines (needs kernel BTF).
    pub go_goroutines: bool,
    /// Gather vectored calls with bpf_loop, over many more buffers (needs Linux ≥ 5.17).
    pub loop_gather: bool,
    /// Report every process's exec, traced or not (discovery by selectors).
    pub discover_execs: bool,
}

/// Whether the running kernel is at least `major.minor` (from its release, `uname -r`).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// bpf_loop, for gathering vectored calls, came with Linux 5.17.
pub fn kernel_has_bpf_loop() -> bool {
    kernel_at_least(5, 17)
}

/// Whether the kernel describes itself in BTF, which the helpers that read a task's saved
/// user registers need (Go goroutines at syscalls). Optional: without it, Go's plaintext
/// calls are not linked.
pub fn kernel_has_btf() -> bool {
    std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// Loaded and attached probes. Dropping it detaches everything.
/// One attached uprobe, for `Probes::detach_uprobe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UprobeLink(u64);

pub struct Probes {
    pub ebpf: Ebpf,
    targets: Array<MapData, u64>,
    go_pids: Array<MapData, u64>,
    head_only_pids: Array<MapData, u64>,
    attached: bool,
    uprobes_loaded: std::collections::HashSet<&'static str>,
    /// Every attachment, so that shutdown can detach them all at once (`detach_all`).
    tracepoint_links: Vec<(&'static str, TracePointLinkId)>,
    uprobe_links: std::collections::HashMap<u64, (&'static str, UProbeLinkId)>,
    next_uprobe_link: u64,
    cgroups: BpfHashMap<MapData, u64, u8>,
    /// `FdState` entries as words (see `FdState::to_word`).
    fd_states: BpfHashMap<MapData, u64, u32>,
    stats: PerCpuArray<MapData, u64>,
}

fn explain_load_error(err: &aya::EbpfError) -> String {
    let text = format!("{err:#}");
    if text.contains("RINGBUF") || text.contains("ringbuf") || text.contains("map type") {
        format!("the kernel refused the BPF ring buffer; zerotrace needs Linux ≥ 5.8 with BPF ring buffer support ({text})")
    } else if text.contains("Operation not permitted") || text.contains("EPERM") {
        format!("the kernel refused to load eBPF programs (permission); run as root or with CAP_BPF+CAP_PERFMON, and check kernel.unprivileged_bpf_disabled/lockdown ({text})")
    } else {
        format!("loading the eBPF programs failed: {text}")
    }
}

impl Probes {
    pub fn load(settings: &Settings) -> Result<(Self, RingBuf<MapData>)> {
        let cgroup_filter = u8::from(settings.cgroup_filter);
        let hooks_only = u8::from(settings.hooks_only);
        let go_goroutines = u8::from(settings.go_goroutines);
        let loop_gather = u8::from(settings.loop_gather);
        let discover_execs = u8::from(settings.discover_execs);
        let mut ebpf = EbpfLoader::new()
            // The probes use no CO-RE relocations: skipping the kernel's BTF saves parsing
            // /sys/kernel/btf/vmlinux (tens of MiB resident) and works on kernels without it.
            .btf(None)
            .override_global(setting::PAYLOAD_CAP, &settings.payload_cap, true)
            .override_global(setting::CLIENT_FIRST_CAP, &settings.client_first_cap, true)
            .override_global(setting::CGROUP_FILTER, &cgroup_filter, true)
            .override_global(setting::HOOKS_ONLY, &hooks_only, true)
            .override_global(setting::GO_GOROUTINES, &go_goroutines, true)
            .override_global(setting::LOOP_GATHER, &loop_gather, true)
            .override_global(setting::WAKEUP_BYTES, &settings.wakeup_bytes, true)
            .override_global(setting::AGENT_TGID, &std::process::id(), true)
            .override_global(setting::DISCOVER_EXECS, &discover_execs, true)
            .load(PROBES)
            .map_err(|e| anyhow!(explain_load_error(&e)))?;
        let take = |ebpf: &mut Ebpf, name: &str| ebpf.take_map(name).with_context(|| format!("map {name} missing from the probe object"));
        let events = RingBuf::try_from(take(&mut ebpf, map::EVENTS)?)?;
        let targets = Array::try_from(take(&mut ebpf, map::TARGET_PIDS)?)?;
        let go_pids = Array::try_from(take(&mut ebpf, map::GO_PIDS)?)?;
        let head_only_pids = Array::try_from(take(&mut ebpf, map::HEAD_ONLY_PIDS)?)?;
        let cgroups = BpfHashMap::try_from(take(&mut ebpf, map::TARGET_CGROUPS)?)?;
        let fd_states = BpfHashMap::try_from(take(&mut ebpf, map::FD_STATE)?)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, map::STATS)?)?;
        Ok((
            Self {
                ebpf,
                targets,
                go_pids,
                head_only_pids,
                attached: false,
                uprobes_loaded: Default::default(),
                tracepoint_links: Vec::new(),
                uprobe_links: Default::default(),
                next_uprobe_link: 0,
                cgroups,
                fd_states,
                stats,
            },
            events,
        ))
    }

    /// Verifies and attaches every program. Call after the initial targets are set: from then
    /// on only the probes' fork/exit hooks write the pid bitmap, so it never sees two writers.
    pub fn attach(&mut self) -> Result<()> {
        let mut loaded = std::collections::HashSet::new();
        for (program, category, name) in ATTACH {
            let prog: &mut TracePoint =
                self.ebpf.program_mut(program).with_context(|| format!("program {program} missing from the probe object; rebuild with cargo xtask build-ebpf"))?.try_into()?;
            if loaded.insert(*program) {
                prog.load().map_err(|e| anyhow!("the kernel verifier rejected {program}: {e:#}"))?;
            }
            let link = prog.attach(category, name).with_context(|| format!("attaching to tracepoint {category}:{name}"))?;
            self.tracepoint_links.push((program, link));
        }
        self.attached = true;
        Ok(())
    }

    /// Attaches uprobe program `program` at file offset `offset` of `path`, for every process
    /// that maps the file, or for process `pid` only: the kernel then plants its breakpoint in
    /// that process alone, so other processes using the same library never trap.
    /// `cookie` is what the program reads with `bpf_get_attach_cookie`.
    pub fn attach_uprobe(&mut self, program: &'static str, path: &std::path::Path, offset: u64, cookie: Option<u64>, pid: Option<u32>) -> Result<UprobeLink> {
        let prog: &mut UProbe =
            self.ebpf.program_mut(program).with_context(|| format!("program {program} missing from the probe object; rebuild with cargo xtask build-ebpf"))?.try_into()?;
        if !self.uprobes_loaded.contains(program) {
            prog.load().map_err(|e| anyhow!("the kernel verifier rejected {program}: {e:#}"))?;
            self.uprobes_loaded.insert(program);
        }
        let scope = match pid {
            Some(pid) => UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?),
            None => UProbeScope::AllProcesses,
        };
        let link = prog.attach(UProbeAttachPoint { location: UProbeAttachLocation::AbsoluteOffset(offset), cookie }, path, scope)?;
        self.next_uprobe_link += 1;
        self.uprobe_links.insert(self.next_uprobe_link, (program, link));
        Ok(UprobeLink(self.next_uprobe_link))
    }

    /// Detaches what `attach_uprobe` attached (the process exited).
    pub fn detach_uprobe(&mut self, link: UprobeLink) {
        let Some((program, link)) = self.uprobe_links.remove(&link.0) else { return };
        if let Some(prog) = self.ebpf.program_mut(program).and_then(|p| <&mut UProbe>::try_from(p).ok()) {
            let _ = prog.detach(link);
        }
    }

    /// Marks a pid as traced. Only before `attach` (see there); afterwards `Discovery` adds
    /// and removes pids through the kernel.
    pub fn trace_pid(&mut self, pid: u32) -> Result<()> {
        if self.attached {
            anyhow::bail!("internal: after attach, pids are added by discovery::Discovery");
        }
        let index = pid >> 6;
        if index >= PID_WORDS {
            anyhow::bail!("pid {pid} is above the kernel's PID_MAX_LIMIT");
        }
        let word = self.targets.get(&index, 0).with_context(|| format!("reading the target bitmap for pid {pid}"))?;
        self.targets.set(index, word | (1u64 << (pid & 63)), 0).with_context(|| format!("adding pid {pid} to the target bitmap"))
    }

    /// Marks a traced process as a Go program: its plain socket calls are attributed to the
    /// goroutine that made them (when the kernel has BTF, see `Settings::go_goroutines`).
    pub fn mark_go(&mut self, pid: u32) -> Result<()> {
        let index = pid >> 6;
        let word = self.go_pids.get(&index, 0).with_context(|| format!("reading the Go bitmap for pid {pid}"))?;
        self.go_pids.set(index, word | (1u64 << (pid & 63)), 0).with_context(|| format!("marking pid {pid} as Go"))
    }

    /// Sockets `pid` opens from now on copy heads only (`--overhead-budget`), or the usual
    /// capture again. Only the agent writes this bitmap.
    pub fn set_head_only(&mut self, pid: u32, on: bool) -> Result<()> {
        let index = pid >> 6;
        let word = self.head_only_pids.get(&index, 0).with_context(|| format!("reading the head-only bitmap for pid {pid}"))?;
        let bit = 1u64 << (pid & 63);
        self.head_only_pids.set(index, if on { word | bit } else { word & !bit }, 0).with_context(|| format!("setting pid {pid}'s capture"))
    }

    pub fn trace_cgroup(&mut self, id: u64) -> Result<()> {
        self.cgroups.insert(id, 1, 0).with_context(|| format!("adding cgroup id {id} to the target map"))
    }

    /// Tells the probes to stop copying data for an fd that is not a socket (or not a protocol
    /// we parse). The entry disappears when the fd is closed.
    /// Marks the sockets (and pipes' read ends) a process already has open, so their traffic
    /// is captured: the probes only capture fds known as sockets or pipes, and these were
    /// opened before we attached. Called
    /// after attaching; an fd the probes have seen since keeps their verdict (BPF_NOEXIST).
    /// `first_cap`: what their reads and writes copy until the agent knows their protocol
    /// (a subscriber's first burst of messages, read the moment it arrives; 0: the global
    /// cap).
    pub fn adopt_open_sockets(&mut self, tgid: u32, first_cap: u16) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{tgid}/fd")) else { return };
        for entry in dir.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if matches!(crate::process::fd_kind(tgid, fd), crate::process::FdKind::Socket(_)) {
                let socket = FdState { capture_cap: first_cap, ..FdState::new(fd_state::SOCKET) };
                let _ = self.fd_states.insert(fd_key(tgid, fd), socket.to_word(), 1);
            } else if crate::process::is_pipe_read_end(tgid, fd) {
                let pipe = FdState { capture_cap: zerotrace_abi::PIPE_CAPTURE, ..FdState::new(fd_state::PIPE) };
                let _ = self.fd_states.insert(fd_key(tgid, fd), pipe.to_word(), 1);
            }
        }
    }

    /// Copies at most `cap` bytes per syscall on socket `fd` of `tgid` from now on (0: the
    /// global cap again; at most `MAX_PAYLOAD`), for a parser that needs less than the global
    /// cap, or more. Only a socket the probes
    /// capture takes it (BPF_EXIST on an entry the agent then overwrites as a plain socket:
    /// a socket found foreign or TLS since keeps that verdict only if it came later).
    pub fn set_capture_cap(&mut self, tgid: u32, fd: u32, cap: u16) -> Result<()> {
        let key = fd_key(tgid, fd);
        let current = self.fd_states.get(&key, 0).map(FdState::from_word).with_context(|| format!("fd {fd} of pid {tgid} is not a socket the probes know"))?;
        if current.state != fd_state::SOCKET {
            anyhow::bail!("fd {fd} of pid {tgid} is not captured (state {})", current.state);
        }
        let entry = FdState { capture_cap: cap, ..current };
        // BPF_EXIST (2): never creates an entry for an fd closed meanwhile.
        self.fd_states.insert(key, entry.to_word(), 2).with_context(|| format!("setting the capture cap of fd {fd} of pid {tgid}"))
    }

    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Stops capturing an fd the agent judged. Returns false when the verdict was dropped: the
    /// fd now holds another connection than the one judged.
    pub fn ignore_fd(&mut self, ignore: crate::pipeline::IgnoreFd) -> bool {
        if !ignore.socket {
            // A file's verdict arrives late: meanwhile the process may have closed it and got a
            // socket with the same number, whose state connect/accept has set. It only fills
            // an empty slot (BPF_NOEXIST).
            let _ = self.fd_states.insert(fd_key(ignore.tgid, ignore.fd), FdState::new(fd_state::NOT_SOCKET).to_word(), 1);
            return true;
        }
        let state = if ignore.tls { fd_state::TLS_SKIPPED } else { fd_state::FOREIGN };
        self.replace_on_connection(ignore.tgid, ignore.fd, ignore.generation, |_| Some(FdState { generation: ignore.generation, ..FdState::new(state) }))
    }

    /// Captures a socket again that `ignore_fd` took out of its process's sampled share, on
    /// the connection it was meant for only (same generation, still not captured). False when
    /// it was closed or reused meanwhile.
    pub fn recapture_fd(&mut self, r: crate::pipeline::Recapture) -> bool {
        self.replace_on_connection(r.tgid, r.fd, r.generation, |current| {
            let state = match current.state {
                fd_state::FOREIGN => fd_state::SOCKET,
                fd_state::TLS_SKIPPED => fd_state::TLS,
                _ => return None,
            };
            Some(FdState { state, generation: current.generation, capture_cap: r.cap })
        })
    }

    /// The agent's word on a socket arrives late: it lands only on the connection it was made
    /// for. The entry's generation is checked (0 for a socket the agent found open: a
    /// connection opened since on that fd has the kernel's, never 0), then the entry is
    /// replaced by what `new` makes of it, if it still exists (BPF_EXIST); a new connection
    /// could come between the two, a window of microseconds instead of the agent's lag.
    fn replace_on_connection(&mut self, tgid: u32, fd: u32, generation: u8, new: impl FnOnce(FdState) -> Option<FdState>) -> bool {
        let key = fd_key(tgid, fd);
        let Ok(current) = self.fd_states.get(&key, 0).map(FdState::from_word) else { return false };
        if current.generation != generation {
            return false;
        }
        let Some(entry) = new(current) else { return false };
        self.fd_states.insert(key, entry.to_word(), 2).is_ok()
    }

    /// Records the probes could not deliver, by reason, summed over CPUs.
    pub fn loss_counters(&self) -> [(&'static str, u64); 3] {
        let sum = |i: u32| self.stats.get(&i, 0).map(|v| v.iter().sum::<u64>()).unwrap_or(0);
        [("ring buffer full", sum(stat::RINGBUF_FULL)), ("user memory not readable", sum(stat::READ_FAULT)), ("in-flight slot taken by another thread", sum(stat::INFLIGHT_FULL))]
    }

    /// Per-program run counts and average run time, when the kernel collects them
    /// (sysctl kernel.bpf_stats_enabled=1); empty otherwise.
    pub fn program_costs(&self) -> Vec<(String, u64, u64)> {
        let mut out: Vec<(String, u64, u64)> = self.program_runs().into_iter().map(|(name, runs, ns)| (name, runs, ns / runs)).collect();
        out.sort_by_key(|c| std::cmp::Reverse(c.1 * c.2));
        out
    }

    /// Per program that ran: (name, runs, total nanoseconds), when the kernel counts them
    /// (`kernel.bpf_stats_enabled`, or `enable_run_stats`).
    pub fn program_runs(&self) -> Vec<(String, u64, u64)> {
        let mut out = Vec::new();
        for (name, prog) in self.ebpf.programs() {
            if let Ok(info) = prog.info() {
                let runs = info.run_count();
                if runs > 0 {
                    out.push((name.to_string(), runs, info.run_time().as_nanos() as u64));
                }
            }
        }
        out
    }

    /// Detaches every hook, all at once. Each detach waits for an RCU grace period in the
    /// kernel (~70 ms here); one after the other, as dropping the programs does, they held the
    /// exit up by 2-3 s. In parallel the grace periods overlap.
    pub fn detach_all(&mut self) {
        let mut tracepoints = Vec::new();
        for (program, id) in std::mem::take(&mut self.tracepoint_links) {
            if let Some(prog) = self.ebpf.program_mut(program).and_then(|p| <&mut TracePoint>::try_from(p).ok())
                && let Ok(link) = prog.take_link(id)
            {
                tracepoints.push(link);
            }
        }
        let mut uprobes = Vec::new();
        for (_, (program, id)) in std::mem::take(&mut self.uprobe_links) {
            if let Some(prog) = self.ebpf.program_mut(program).and_then(|p| <&mut UProbe>::try_from(p).ok())
                && let Ok(link) = prog.take_link(id)
            {
                uprobes.push(link);
            }
        }
        std::thread::scope(|scope| {
            for link in tracepoints {
                scope.spawn(move || drop(link));
            }
            for link in uprobes {
                scope.spawn(move || drop(link));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent names maps, settings and programs by `zerotrace_abi::names`; the kernel side
    /// by its identifiers. The built object must define every name.
    #[test]
    fn probe_object_defines_every_name() {
        let elf = zerotrace_symbols::elf::ElfSymbols::parse(std::path::Path::new("zerotrace-probes.o"), PROBES.to_vec()).expect("the probe object parses");
        for name in map::ALL.iter().chain(setting::ALL).chain(program::ALL) {
            assert!(elf.has_symbol(name), "the probe object has no {name}; rename it in ebpf-probes/abi/src/names.rs or in the probes");
        }
        for (program, _, _) in ATTACH {
            assert!(program::ALL.contains(program), "{program} is attached but not listed in names::program::ALL");
        }
    }
}
