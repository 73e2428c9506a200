//! The unit of work each thread of a probed runtime is running (an event-loop callback, an
//! asyncio task), kept by the runtime probes (`libuv`, `asyncio`) and read into every record
//! the thread emits, so the agent can tell which request a call belongs to.

use aya_ebpf::{
    macros::{map, uretprobe},
    maps::Array,
    programs::RetProbeContext,
};
use zerotrace_abi::{Unit, cause};

use crate::filter;
use crate::maps::INFLIGHT_SLOTS;

/// One entry per thread id, indexed like the in-flight slots (see `maps::slot`).
#[map]
static UNITS: Array<Unit> = Array::with_max_entries(INFLIGHT_SLOTS, 0);

#[inline(always)]
fn entry(tid: u32) -> Option<&'static mut Unit> {
    let ptr = UNITS.get_ptr_mut(tid & (INFLIGHT_SLOTS - 1))?;
    // SAFETY: the pointer is into the array map's value memory, valid while the program runs;
    // only the owning thread writes its entry (threads share an index only above pid_max
    // 65536, and then `owner` tells them apart).
    Some(unsafe { &mut *ptr })
}

/// Thread `tid` starts running a unit of work; `id` gets the thread's count of units entered
/// (libuv folds it into its id).
#[inline(always)]
pub fn enter(tid: u32, kind: u32, id: impl FnOnce(u32) -> u64) {
    let Some(unit) = entry(tid) else { return };
    if unit.owner != tid {
        *unit = Unit { owner: tid, kind: cause::OUTSIDE, id: 0, prev_kind: cause::OUTSIDE, seq: 0, prev_id: 0 };
    }
    unit.prev_kind = unit.kind;
    unit.prev_id = unit.id;
    unit.seq = unit.seq.wrapping_add(1);
    unit.kind = kind;
    unit.id = id(unit.seq);
}

/// The return probe of every runtime's unit of work (libuv's stream callback, asyncio's task
/// step): back to the unit it ran inside, if any.
#[uretprobe]
pub fn unit_ret(_ctx: RetProbeContext) -> u32 {
    if let Some(pid_tgid) = filter::traced_task() {
        leave(pid_tgid as u32);
    }
    0
}

/// The unit of work returned: back to the one it ran inside, if any.
#[inline(always)]
fn leave(tid: u32) {
    if let Some(unit) = entry(tid)
        && unit.owner == tid
    {
        unit.kind = unit.prev_kind;
        unit.id = unit.prev_id;
        unit.prev_kind = cause::OUTSIDE;
        unit.prev_id = 0;
    }
}

/// The unit thread `tid` is running: (kind, id), `cause::NONE` when no runtime probe has
/// seen the thread.
#[inline(always)]
pub fn current(tid: u32) -> (u32, u64) {
    match entry(tid) {
        Some(unit) if unit.owner == tid => (unit.kind, unit.id),
        _ => (cause::NONE, 0),
    }
}

/// The thread exited: a new thread with its id must not inherit its state.
#[inline(always)]
pub fn forget(tid: u32) {
    if let Some(unit) = entry(tid)
        && unit.owner == tid
    {
        unit.owner = 0;
    }
}
