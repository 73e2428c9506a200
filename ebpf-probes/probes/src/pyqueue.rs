//! Work handed to another thread through CPython's `queue.SimpleQueue` (the work queue of
//! `concurrent.futures.ThreadPoolExecutor`): a uprobe on `put` reports the item and the unit
//! the putting thread runs, a uretprobe on `get` reports the item the taking thread got. The
//! agent pairs them: the taker works for the request the putter served.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};

use crate::{capture, filter, units};

/// `_queue_SimpleQueue_put(self, PyObject *const *args, nargs, kwnames)`: the item is
/// `args[0]` (Argument Clinic's fast-call wrapper, the same from CPython 3.9 to 3.13).
#[uprobe]
pub fn py_queue_put(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let Some(args) = ctx.arg::<u64>(1) else { return 0 };
    // SAFETY: checked user read of args[0].
    let Ok(item) = (unsafe { bpf_probe_read_user(args as *const u64) }) else { return 0 };
    capture::hand_off(pid_tgid, false, item, units::current(pid_tgid as u32));
    0
}

/// `_queue_SimpleQueue_get(…)` returns the item (NULL on timeout or error).
#[uretprobe]
pub fn py_queue_get_ret(ctx: RetProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let item = ctx.ret::<u64>();
    if item != 0 {
        capture::hand_off(pid_tgid, true, item, (zerotrace_abi::cause::NONE, 0));
    }
    0
}
