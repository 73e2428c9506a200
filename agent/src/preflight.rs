//! Start-up checks: privileges, tracefs, kernel features. Each failure is one line that says
//! what is wrong and how to fix it.

use std::fs;
use std::path::Path;

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing privileges: zerotrace needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run it as root or grant them: sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep $(which zerotrace)"
    )]
    Capabilities,
    #[error("tracefs is not mounted and could not be mounted ({0}); mount it: mount -t tracefs nodev /sys/kernel/tracing")]
    Tracefs(String),
    #[error(
        "tracefs is mounted at {0} but this process cannot read it: it needs CAP_DAC_READ_SEARCH (tracefs is root-only); grant it: sudo setcap cap_bpf,cap_perfmon,cap_dac_read_search+ep $(which zerotrace)"
    )]
    TracefsUnreadable(String),
    #[error("this kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS); zerotrace needs them")]
    NoSyscallTracepoints,
}

fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status").ok().and_then(|s| s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok())).unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// What a missing capability costs, for the warning at start (the least-privilege table in
/// the README, tested as a non-root user in tests/tests/privileges.rs).
fn degraded(caps: u64) -> Vec<String> {
    let mut warnings = Vec::new();
    if !has(caps, CAP_SYS_ADMIN) {
        if !has(caps, CAP_SYS_PTRACE) {
            warnings.push("without CAP_SYS_PTRACE, other users' /proc/PID/maps, environ and exe cannot be read: no HTTPS plaintext, no runtime linking, and fallback service names for their processes".to_string());
        }
        if !has(caps, CAP_DAC_READ_SEARCH) {
            warnings.push("without CAP_DAC_READ_SEARCH, other users' /proc entries cannot be searched: fallback service names and no socket addresses for their connections opened before the agent".to_string());
        }
        // Measured on kernel 6.18: perf_event_open refuses uprobes (EACCES) to CAP_BPF +
        // CAP_PERFMON + CAP_SYS_PTRACE + CAP_DAC_READ_SEARCH.
        warnings.push(
            "without CAP_SYS_ADMIN the kernel refuses uprobes: no HTTPS plaintext (TLS probes) and no event-loop/runtime linking; plain HTTP and databases are traced".to_string(),
        );
    }
    warnings
}

/// Returns warnings (things that degrade but do not stop tracing).
pub fn check() -> Result<Vec<String>, PreflightError> {
    let caps = effective_caps();
    let bpf_ok = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
    if !bpf_ok {
        return Err(PreflightError::Capabilities);
    }
    let mut warnings = degraded(caps);
    let tracefs = Path::new("/sys/kernel/tracing");
    let debugfs = Path::new("/sys/kernel/debug/tracing");
    if !tracefs.join("events").exists() && !debugfs.join("events").exists() {
        // Mounted but unreadable (root-only) is another problem than not mounted.
        if let Some(at) = tracefs_mount() {
            return Err(PreflightError::TracefsUnreadable(at));
        }
        mount_tracefs(tracefs).map_err(PreflightError::Tracefs)?;
    }
    let events = if tracefs.join("events").exists() { tracefs.join("events") } else { debugfs.join("events") };
    if !events.join("syscalls/sys_enter_read").exists() {
        return Err(PreflightError::NoSyscallTracepoints);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        warnings.push("the kernel has no BTF (/sys/kernel/btf/vmlinux); zerotrace does not need it and continues".to_string());
    }
    Ok(warnings)
}

/// Where tracefs is mounted, from /proc/self/mounts.
fn tracefs_mount() -> Option<String> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        let (_, at, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "tracefs").then(|| at.to_string())
    })
}

fn mount_tracefs(at: &Path) -> Result<(), String> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is null.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_capability_is_named_with_what_it_costs() {
        let all = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH);
        let w = degraded(all);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("CAP_SYS_ADMIN") && w[0].contains("HTTPS"));
        let w = degraded(all & !(1 << CAP_SYS_PTRACE));
        assert!(w.iter().any(|l| l.contains("CAP_SYS_PTRACE")), "{w:?}");
        assert!(degraded(1 << CAP_SYS_ADMIN).is_empty(), "root-equivalent: nothing degraded");
    }
}
