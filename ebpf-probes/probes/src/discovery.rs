//! How the agent adds and removes traced processes after the programs are attached. The fork
//! and exit hooks change the pid bitmap with atomic adds; a read-modify-write of a bitmap word
//! from user space could undo one of theirs. So the agent calls its own marker function,
//! `zerotrace_discovery_mark(pid, traced)`, and this uprobe, attached to the agent's process
//! alone, makes the change with the same atomic add.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::uprobe, programs::ProbeContext};

use crate::filter;
use crate::maps::{AGENT_TGID, setting_u32};

#[uprobe]
pub fn discovery_mark(ctx: ProbeContext) -> u32 {
    // Only the agent's own calls count (the probe is attached to its process anyway).
    if (bpf_get_current_pid_tgid() >> 32) as u32 != setting_u32(&AGENT_TGID) {
        return 0;
    }
    let (Some(pid), Some(traced)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else { return 0 };
    filter::mark_pid(pid as u32, traced != 0);
    0
}
