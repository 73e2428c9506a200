//! "Is this task traced?" — the first thing every program asks, so it must be cheap.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, generated::bpf_get_current_cgroup_id};

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::maps::{AGENT_TGID, CGROUP_FILTER, HOOKS_ONLY, TARGET_CGROUPS, TARGET_PIDS, setting_u8, setting_u32};

/// Is this pid's bit set in the target bitmap?
#[inline(always)]
pub fn pid_traced(pid: u32) -> bool {
    TARGET_PIDS.get(pid >> 6).is_some_and(|word| *word & (1u64 << (pid & 63)) != 0)
}

/// Sets or clears a pid's bit. Atomic add/sub (XADD, available on every BPF ISA version)
/// instead of or/and: the bit's state is checked first, and a pid cannot be created and
/// reaped at the same time, so only other bits of the word can change concurrently.
#[inline(always)]
pub fn mark_pid(pid: u32, traced: bool) {
    let Some(word) = TARGET_PIDS.get_ptr_mut(pid >> 6) else { return };
    let bit = 1u64 << (pid & 63);
    // SAFETY: `word` points into the array map's value memory, valid for the program's run.
    // An aligned 64-bit load is single-copy atomic on BPF; volatile keeps it a real load
    // (the generic BPF CPU has no atomic-load instruction to select).
    let set = unsafe { core::ptr::read_volatile(word) } & bit != 0;
    // The BPF target has no fetch_add in core::sync::atomic; the intrinsic with its result
    // unused lowers to the XADD instruction.
    let delta = match (traced, set) {
        (true, false) => bit,
        (false, true) => bit.wrapping_neg(),
        _ => return,
    };
    // SAFETY: as above; XADD is atomic with respect to the other CPUs' updates of this word.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(word, delta) };
}

/// Returns the current pid_tgid when the task belongs to a traced process or cgroup.
#[inline(always)]
pub fn traced_task() -> Option<u64> {
    if setting_u8(&HOOKS_ONLY) != 0 {
        return None;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if pid_traced((pid_tgid >> 32) as u32) {
        return Some(pid_tgid);
    }
    // The agent keeps its own pid out of the bitmap; a cgroup it runs in would still take it.
    if setting_u8(&CGROUP_FILTER) != 0 && (pid_tgid >> 32) as u32 != setting_u32(&AGENT_TGID) {
        // SAFETY: helper without arguments, allowed in tracepoint programs.
        let cgroup = unsafe { bpf_get_current_cgroup_id() };
        // SAFETY: as above.
        if unsafe { TARGET_CGROUPS.get(&cgroup) }.is_some() {
            return Some(pid_tgid);
        }
    }
    None
}
