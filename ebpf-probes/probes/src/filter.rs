//! "Is this task traced?" — the first thing every program asks, so it must be cheap.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id};

use crate::maps::{CGROUP_FILTER, TARGET_CGROUPS, TARGET_TGIDS, setting_u8};

/// Returns the current pid_tgid when the task belongs to a traced process or cgroup.
#[inline(always)]
pub fn traced_task() -> Option<u64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: plain lookup; the value is not dereferenced beyond the presence check.
    if unsafe { TARGET_TGIDS.get(&tgid) }.is_some() {
        return Some(pid_tgid);
    }
    if setting_u8(&CGROUP_FILTER) != 0 {
        // SAFETY: helper without arguments, allowed in tracepoint programs.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: as above.
        if unsafe { TARGET_CGROUPS.get(&cgroup) }.is_some() {
            return Some(pid_tgid);
        }
    }
    None
}
