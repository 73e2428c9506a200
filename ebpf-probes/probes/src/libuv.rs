//! Event-loop callbacks in libuv (node): which socket's callback a thread is running. A
//! uprobe on `uv__stream_io` (the I/O callback of every libuv stream, TCP sockets included)
//! enters the unit at entry, `units::unit_ret` leaves it at return; see `zerotrace_abi::cause`.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::uprobe, programs::ProbeContext};
use zerotrace_abi::cause;

use crate::{filter, units};

/// Offset of `fd` in libuv's `uv__io_t` (cb, pending_queue[2], watcher_queue[2], pevents,
/// events, fd) on 64-bit Linux; unchanged since libuv 1.0. `uv__stream_io`'s second argument
/// is the stream's `uv__io_t`.
const IO_WATCHER_FD: u64 = 48;

#[uprobe]
pub fn uv_stream_io(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let Some(watcher) = ctx.arg::<u64>(1) else { return 0 };
    // SAFETY: checked user read of the watcher's fd.
    let fd = unsafe { bpf_probe_read_user((watcher + IO_WATCHER_FD) as *const i32) }.unwrap_or(-1);
    // The thread's callback count goes into the id: two callbacks of one socket differ.
    units::enter(pid_tgid as u32, cause::LIBUV_CALLBACK, |seq| (fd as u32 as u64) | ((seq as u64) << 32));
    0
}
