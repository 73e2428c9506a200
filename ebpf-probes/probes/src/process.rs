//! Process lifecycle: children of traced processes are traced, execs reported, exits recorded
//! with their code, and the pid bitmap kept true.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use zerotrace_abi::{fd_key, fd_state};

use crate::maps::{self, FD_STATE, Inflight};
use crate::{Res, capture, entry_point, filter, units};

/// CLONE_THREAD in clone flags (include/uapi/linux/sched.h).
const CLONE_THREAD: u64 = 0x0001_0000;

/// Children forked by a traced process are traced too. `task:task_newtask` rather than
/// `sched:sched_process_fork`: it carries the clone flags, so a new thread (one per request in
/// a thread-per-request server) costs one check here. A thread is covered by its process's
/// bit (the filter looks at the tgid) and shares its fds, so there is nothing to do for it;
/// before, each new thread had 64 fd states looked up and copied, a record per socket and a
/// forced wakeup sent, and the agent asked /proc whether it was a thread.
fn try_new_task(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    // SAFETY: clone_flags@32 and pid@8 in events/task/task_newtask/format.
    let (flags, child) = unsafe { (ctx.read_at::<u64>(32), ctx.read_at::<i32>(8)) };
    let (flags, child) = (flags.map_err(|e| e as i64)?, child.map_err(|e| e as i64)? as u32);
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let tgid = (pid_tgid >> 32) as u32;
    if filter::pid_traced(tgid) {
        // (A traced cgroup's children are in that cgroup: no bit needed.)
        filter::mark_pid(child, true);
        inherit_sockets(tgid, child);
    }
    capture::process(child, tgid, true);
    Ok(())
}

/// A traced task ran exec: the new program may bring its own TLS library. When the agent
/// discovers processes by selectors, any task's exec (but the agent's): the new program may
/// match them.
fn try_exec(_ctx: &TracePointContext) -> Res {
    if let Some(pid_tgid) = filter::traced_task() {
        capture::process((pid_tgid >> 32) as u32, 0, true);
    } else if maps::setting_u8(&maps::DISCOVER_EXECS) != 0 && maps::setting_u8(&maps::HOOKS_ONLY) == 0 {
        let tgid = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32;
        if tgid != maps::setting_u32(&maps::AGENT_TGID) {
            capture::process(tgid, 0, false);
        }
    }
    Ok(())
}

/// Lowest fds a forked child inherits the socket (and pipe) state of. A pre-forking server (PostgreSQL's
/// postmaster) accepts, forks, and closes its copy: the child's reads only count as socket
/// reads if it inherits the state now, and the agent learns which connection the child holds
/// from an inherit record.
const INHERITED_FDS: u32 = 64;

#[inline(always)]
fn inherit_sockets(parent: u32, child: u32) {
    for fd in 0..INHERITED_FDS {
        // SAFETY: lookup; the value is copied.
        if let Some(state) = unsafe { FD_STATE.get(&fd_key(parent, fd)) }.copied()
            && (state.state == fd_state::SOCKET || state.state == fd_state::TLS || state.state == fd_state::PIPE)
        {
            let _ = FD_STATE.insert(&fd_key(child, fd), &state, 0);
            // The agent follows sockets, not pipes.
            if state.state != fd_state::PIPE {
                capture::inherit(parent, child, fd);
            }
        }
    }
}

/// Forget a traced process when it exits, so a recycled pid is not traced by accident.
fn try_exit(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    // SAFETY: group_dead@32 in events/sched/sched_process_exit/format.
    let group_dead = unsafe { ctx.read_at::<u8>(32) }.unwrap_or(0);
    if let Some(slot) = maps::own_slot(tid) {
        *slot = Inflight::IDLE;
    }
    units::forget(tid);
    if tid != tgid {
        filter::mark_pid(tid, false);
    }
    if group_dead != 0 {
        filter::mark_pid(tgid, false);
        // SAFETY: lookup; the value is copied.
        let code = unsafe { maps::EXIT_CODES.get(&tgid) }.copied();
        let _ = maps::EXIT_CODES.remove(&tgid);
        capture::process_exit(tgid, code);
    }
    Ok(())
}

/// A traced process ends by itself: remember its code for its exit record (a killed process
/// never gets here).
fn try_exit_group(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    // SAFETY: error_code@16 in events/syscalls/sys_enter_exit_group/format.
    let code = unsafe { ctx.read_at::<u64>(16) }.unwrap_or(0) as i32;
    let _ = maps::EXIT_CODES.insert(&((pid_tgid >> 32) as u32), &code, 0);
    Ok(())
}

entry_point!(task_newtask, try_new_task);
entry_point!(sched_process_exec, try_exec);
entry_point!(sched_process_exit, try_exit);
entry_point!(sys_enter_exit_group, try_exit_group);
