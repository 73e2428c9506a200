//! zerotrace kernel programs.
//!
//! Syscall tracepoints only (plus `sock:inet_sock_set_state` and `sched:*`): no kprobes or
//! fentry, which hardened kernels lack. Entry handlers stash arguments in `INFLIGHT` keyed by
//! pid_tgid; exit handlers emit one record per completed call. Every handler first asks
//! `filter::traced_task()` and returns at once for other processes.
//!
//! Entry points follow aya-template: a thin `fn x(ctx) -> u32` around `try_x(ctx) -> Result`.
#![no_std]
#![no_main]
// atomic_xadd for the pid bitmap (see filter::mark_pid); the probes build with nightly anyway.
#![allow(internal_features)]
// Map keys and values go to the kernel helpers by reference, as the helpers take them; the
// maps' `impl Borrow` signatures would also take them by value, which clippy prefers.
#![allow(clippy::needless_borrows_for_generic_args)]
#![feature(core_intrinsics)]

mod asyncio;
mod capture;
mod conn;
mod data;
mod discovery;
mod filter;
mod go_h2;
mod go_tls;
mod libuv;
mod maps;
mod nghttp2;
mod process;
mod pyqueue;
mod sockaddr;
mod tls;
mod units;

use aya_ebpf::{EbpfContext, helpers::bpf_ktime_get_ns, programs::TracePointContext};
use zerotrace_abi::SockAddr;

use crate::maps::{DataCall, Inflight, TlsCall, op};

/// Offsets in the syscall tracepoint records (see events/syscalls/*/format).
pub(crate) const ARG0: usize = 16;
pub(crate) const ARG1: usize = 24;
pub(crate) const ARG2: usize = 32;
pub(crate) const ARG3: usize = 40;
pub(crate) const RET: usize = 16;

pub(crate) type Res = Result<(), i64>;

#[inline(always)]
pub(crate) fn arg(ctx: &TracePointContext, offset: usize) -> Result<u64, i64> {
    // SAFETY: a tracepoint program may load its own record directly (the verifier checks the
    // constant offset against the record); this saves a probe-read helper call per argument
    // on every syscall we see. Offsets are those of the syscall tracepoint formats.
    Ok(unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<u64>()) })
}

#[inline(always)]
pub(crate) fn stash(pid_tgid: u64, call: &Inflight) {
    if let Some(slot) = maps::slot(pid_tgid as u32) {
        *slot = *call;
    }
}

#[inline(always)]
pub(crate) fn take(pid_tgid: u64) -> Option<Inflight> {
    let slot = maps::own_slot(pid_tgid as u32)?;
    let call = *slot;
    if call.op == op::NONE {
        return None;
    }
    slot.op = op::NONE;
    Some(call)
}

/// The data call thread `pid_tgid` has in flight, taken (see `DataCall`).
#[inline(always)]
pub(crate) fn take_data(pid_tgid: u64) -> Option<DataCall> {
    let slot = maps::own_slot(pid_tgid as u32)?;
    if slot.op == op::NONE {
        return None;
    }
    let call = DataCall { op: slot.op, fd: slot.fd, capture_cap: slot.capture_cap, ptr: slot.ptr, ts_enter_ns: slot.ts_enter_ns };
    slot.op = op::NONE;
    Some(call)
}

/// A call of thread `pid_tgid` (the slot's owner) to stash.
pub(crate) fn new_call(pid_tgid: u64, op: u32, fd: u32, ptr: u64) -> Inflight {
    Inflight {
        op,
        fd,
        owner: pid_tgid as u32,
        last_fd: fd,
        last_op: op,
        capture_cap: 0,
        ptr,
        // SAFETY: helper without arguments.
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        local: SockAddr::default(),
        remote: SockAddr::default(),
        tls: TlsCall::IDLE,
        pending_ssl: 0,
    }
}

/// A tracepoint program `$name` around `$body`, which returns a `Res` the kernel does not
/// need to see.
macro_rules! entry_point {
    ($name:ident, $body:ident) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            match $body(&ctx) {
                Ok(()) | Err(_) => 0,
            }
        }
    };
}
pub(crate) use entry_point;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
