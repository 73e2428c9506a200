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
    #[error("missing privileges: zerotrace needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run it as root or grant them: sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace,cap_dac_read_search+ep $(which zerotrace)")]
    Capabilities,
    #[error("tracefs is not mounted and could not be mounted ({0}); mount it: mount -t tracefs nodev /sys/kernel/tracing")]
    Tracefs(String),
    #[error("this kernel has no syscall tracepoints (CONFIG_FTRACE_SYSCALLS); zerotrace needs them")]
    NoSyscallTracepoints,
}

fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// Returns warnings (things that degrade but do not stop tracing).
pub fn check() -> Result<Vec<String>, PreflightError> {
    let mut warnings = Vec::new();
    let caps = effective_caps();
    let bpf_ok = has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON));
    if !bpf_ok {
        return Err(PreflightError::Capabilities);
    }
    if !has(caps, CAP_SYS_PTRACE) || !has(caps, CAP_DAC_READ_SEARCH) {
        warnings.push("without CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, service names and addresses of other users' processes cannot be read from /proc; spans will use fallbacks".to_string());
    }
    let tracefs = Path::new("/sys/kernel/tracing");
    if !tracefs.join("events").exists() && !Path::new("/sys/kernel/debug/tracing/events").exists() {
        mount_tracefs(tracefs).map_err(PreflightError::Tracefs)?;
    }
    let events = if tracefs.join("events").exists() { tracefs.join("events") } else { Path::new("/sys/kernel/debug/tracing/events").to_path_buf() };
    if !events.join("syscalls/sys_enter_read").exists() {
        return Err(PreflightError::NoSyscallTracepoints);
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        warnings.push("the kernel has no BTF (/sys/kernel/btf/vmlinux); zerotrace does not need it and continues".to_string());
    }
    Ok(warnings)
}

fn mount_tracefs(at: &Path) -> Result<(), String> {
    let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; data is null.
    let rc = unsafe { libc::mount(fstype.as_ptr(), target.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error().to_string()) }
}
