//! asyncio tasks in CPython: which task a thread is running. A uprobe on `_asyncio`'s
//! `task_step_impl` (one step of a task's coroutine, up to its next `await` that suspends)
//! enters the unit with the task's address, `units::unit_ret` leaves it. The task argument's position
//! depends on the CPython version (3.12 added a module-state first argument): the agent
//! attaches the program for the version it finds.

use aya_ebpf::{macros::uprobe, programs::ProbeContext};
use zerotrace_abi::cause;

use crate::{filter, units};

#[inline(always)]
fn enter(task: Option<u64>) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    if let Some(task) = task {
        units::enter(pid_tgid as u32, cause::ASYNCIO_TASK, |_| task);
    }
    0
}

/// CPython 3.9–3.11: `task_step_impl(TaskObj *task, PyObject *exc)`. (One program per
/// argument position: a position chosen at run time becomes a variable offset into the
/// context, which the verifier refuses.)
#[uprobe]
pub fn asyncio_task_step(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(0))
}

/// CPython 3.12 and later: `task_step_impl(asyncio_state *state, TaskObj *task, PyObject *exc)`.
#[uprobe]
pub fn asyncio_task_step_state(ctx: ProbeContext) -> u32 {
    enter(ctx.arg::<u64>(1))
}

/// `Task.__init__(self, …)`: a task is created (by `create_task`, `ensure_future`,
/// `wait_for`, `shield`, `gather`…), inside whatever unit the thread runs.
#[uprobe]
pub fn asyncio_task_init(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    if let Some(task) = ctx.arg::<u64>(0) {
        crate::capture::unit_spawn(pid_tgid, units::current(pid_tgid as u32), task);
    }
    0
}
