//! Event-loop callbacks in libuv (node): which socket's callback a thread is running when it
//! makes a syscall. A uprobe on `uv__stream_io` (the I/O callback of every libuv stream, TCP
//! sockets included) records the socket fd at entry and a uretprobe clears it at return, so
//! every record the thread emits in between carries that fd (`zerotrace_abi::cause`).
//!
//! Why this is evidence of which request caused a write: libuv calls a socket's callback right
//! after polling it, the callback reads the socket, and node runs the JavaScript that the bytes
//! trigger — the request handler, and the promise continuations of an `await` that the bytes
//! complete — before the callback returns. Work that runs outside any socket callback (timers,
//! `setImmediate`, thread-pool completions) is marked `OUTSIDE`: nothing ties it to a request.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, uprobe, uretprobe},
    maps::Array,
    programs::{ProbeContext, RetProbeContext},
};
use zerotrace_abi::{Callback, cause};

use crate::filter;
use crate::maps::INFLIGHT_SLOTS;

/// Offset of `fd` in libuv's `uv__io_t` (cb, pending_queue[2], watcher_queue[2], pevents,
/// events, fd) on 64-bit Linux; unchanged since libuv 1.0. `uv__stream_io`'s second argument
/// is the stream's `uv__io_t`.
const IO_WATCHER_FD: u64 = 48;

/// One entry per thread id, indexed like the in-flight slots (see `maps::slot`).
#[map]
static CALLBACKS: Array<Callback> = Array::with_max_entries(INFLIGHT_SLOTS, 0);

#[inline(always)]
fn entry(tid: u32) -> Option<&'static mut Callback> {
    let ptr = CALLBACKS.get_ptr_mut(tid & (INFLIGHT_SLOTS - 1))?;
    // SAFETY: the pointer is into the array map's value memory, valid while the program runs;
    // only the owning thread writes its entry (threads share an index only above pid_max
    // 65536, and then `owner` tells them apart).
    Some(unsafe { &mut *ptr })
}

/// The callback thread `tid` is running: (fd or `cause::OUTSIDE`, seq), or `cause::NONE` when
/// no runtime probe has seen the thread.
#[inline(always)]
pub fn current(tid: u32) -> (u32, u32) {
    match entry(tid) {
        Some(cb) if cb.owner == tid => (cb.fd, cb.seq),
        _ => (cause::NONE, 0),
    }
}

/// The thread exited: a new thread with its id must not inherit its state.
#[inline(always)]
pub fn forget(tid: u32) {
    if let Some(cb) = entry(tid)
        && cb.owner == tid
    {
        cb.owner = 0;
    }
}

#[uprobe]
pub fn uv_stream_io(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let tid = pid_tgid as u32;
    let Some(watcher) = ctx.arg::<u64>(1) else { return 0 };
    // SAFETY: checked user read of the watcher's fd.
    let Ok(fd) = (unsafe { bpf_probe_read_user((watcher + IO_WATCHER_FD) as *const i32) }) else { return 0 };
    if let Some(cb) = entry(tid) {
        if cb.owner != tid {
            *cb = Callback { owner: tid, fd: cause::OUTSIDE, seq: 0, _pad: 0 };
        }
        cb.fd = fd as u32;
        cb.seq = cb.seq.wrapping_add(1);
    }
    0
}

#[uretprobe]
pub fn uv_stream_io_ret(_ctx: RetProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let tid = pid_tgid as u32;
    if let Some(cb) = entry(tid)
        && cb.owner == tid
    {
        cb.fd = cause::OUTSIDE;
    }
    0
}
