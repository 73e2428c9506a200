//! Go `crypto/tls` plaintext: uprobes on `(*Conn).Write` (entry) and `(*Conn).Read` (entry, and
//! where it copies the plaintext out, else each of its `ret` instructions), Go's register ABI
//! (Go ≥ 1.17): receiver in RAX, the byte slice in RBX/RCX, results in RAX; R14 holds the
//! running goroutine (`g`).
//!
//! - No return probes: a uretprobe rewrites the return address on the stack, and Go moves and
//!   walks goroutine stacks. The agent finds the copy (or the `ret` instructions) instead.
//! - Per goroutine, not per thread: a Read that blocks parks its goroutine, which may resume on
//!   another thread. The records' `tid` is a goroutine id (`GOROUTINE_ACTOR`), so the agent's
//!   "calls made while serving a request" rule applies per goroutine.
//! - Every entry probe sits on the stack check's `jbe` (the agent checks the instruction). When
//!   the goroutine's stack must grow, that jump is taken, the runtime copies the stack and runs
//!   the function again from the start, so the probe fires twice for one call: the first time,
//!   with CF or ZF set by the compare just before, is ignored.
//! - net/http's client writes a request on its connection's `writeLoop` goroutine, not on the
//!   goroutine that called `Client.Do`. Two more entry probes hand the caller over:
//!   `(*persistConn).roundTrip` (on the caller) notes the `*Request`, and `(*Request).write`
//!   (on writeLoop) finds it, so writeLoop's TLS writes count as the caller's for a while.
//! - grpc-go writes every stream of a connection on its `loopyWriter` goroutine. Its calls
//!   are handed over the same way: `(*controlBuffer).executeAndPut` (on the caller) notes the
//!   `*headerFrame`, and `(*loopyWriter).headerHandler` (on loopy) finds it, so loopy's writes
//!   count as that caller's until it handles the next header.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{map, uprobe},
    maps::{Array, LruHashMap},
    programs::ProbeContext,
};
use zerotrace_abi::{FdState, GOROUTINE_ACTOR, PID_WORDS, cause, data_flags, fd_key, fd_state, go_cookie};

use crate::maps::{DataCall, FD_STATE, GO_GOROUTINES, op, setting_u8};
use crate::{capture, filter};

/// A pointer in a process (a goroutine's `g`, a `*Request`): pointers are per address space.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoKey {
    pub ptr: u64,
    pub tgid: u64,
}

/// A `(*Conn).Read` between its entry and its return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoRead {
    pub buf: u64,
    pub ts_enter_ns: u64,
    pub fd: u32,
    pub _pad: u32,
}

/// A goroutine's pending Read, by `g`.
#[map]
static GO_READS: LruHashMap<GoKey, GoRead> = LruHashMap::with_max_entries(16384, 0);
/// `*Request` → the goroutine that called roundTrip with it.
#[map]
static GO_REQUESTS: LruHashMap<GoKey, u64> = LruHashMap::with_max_entries(16384, 0);
/// writeLoop goroutine → (caller goroutine, when it took the request over).
#[map]
static GO_WRITES_FOR: LruHashMap<GoKey, (u64, u64)> = LruHashMap::with_max_entries(16384, 0);

/// Go processes (one bit per pid, set by the agent when it recognises a Go executable): their
/// plain socket calls are attributed to the goroutine that made them.
#[map]
pub static GO_PIDS: Array<u64> = Array::with_max_entries(PID_WORDS, 0);

/// Offset of `r14` in the kernel's x86-64 `struct pt_regs` (r15, r14, r13, …).
const PT_REGS_R14: usize = 8;

/// The goroutine a traced Go thread runs at a syscall, in the `pid_tgid` shape records take,
/// or None (not a Go process, or the kernel cannot give the user registers). R14 holds `g` in
/// Go's register ABI (Go ≥ 1.17) up to the `SYSCALL` instruction, and the kernel saved the
/// user registers at syscall entry. A write on net/http's writeLoop goroutine counts as the
/// goroutine that handed it the request (see `go_http_request_write`).
#[inline(always)]
pub fn syscall_goroutine(pid_tgid: u64, write: bool) -> Option<u64> {
    // Load-time switch: 0 on kernels without BTF, where the verifier would refuse the
    // helpers below (the branch is pruned, as `.rodata` is frozen).
    if setting_u8(&GO_GOROUTINES) == 0 {
        return None;
    }
    let tgid = (pid_tgid >> 32) as u32;
    if !GO_PIDS.get(tgid >> 6).is_some_and(|word| *word & (1u64 << (tgid & 63)) != 0) {
        return None;
    }
    // SAFETY: helpers without memory arguments; the task pointer is the current task's, which
    // bpf_task_pt_regs accepts, and the registers are read with the checked kernel read.
    let g = unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const u8;
        bpf_probe_read_kernel(regs.add(PT_REGS_R14).cast::<u64>()).ok()?
    };
    if g == 0 {
        return None;
    }
    let mut goroutine = g;
    if write {
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        // SAFETY: lookup; the value is copied.
        if let Some((caller, since)) = unsafe { GO_WRITES_FOR.get(&GoKey { ptr: g, tgid: u64::from(tgid) }) }.copied()
            && now.wrapping_sub(since) < WRITES_FOR_NS
        {
            goroutine = caller;
        }
    }
    Some(goroutine_task(tgid, goroutine))
}

/// How long after `(*Request).write` starts its goroutine's TLS writes count as the caller's.
/// The request head goes out at once; the bound keeps a `g` that the runtime recycled for an
/// unrelated goroutine from inheriting the mapping.
const WRITES_FOR_NS: u64 = 1_000_000_000;

/// x86 flags: the stack check's `jbe` jumps (to grow the stack) on CF or ZF.
const CF: u64 = 1;
const ZF: u64 = 1 << 6;

pub(crate) struct Regs {
    pub ax: u64,
    pub bx: u64,
    pub cx: u64,
    pub di: u64,
    pub si: u64,
    pub g: u64,
    flags: u64,
}

#[inline(always)]
fn regs(ctx: &ProbeContext) -> Regs {
    // SAFETY: `ctx.regs` is the probe context, the traced task's user registers; the verifier
    // allows reading its fields directly.
    let r = unsafe { &*ctx.regs };
    Regs { ax: r.rax, bx: r.rbx, cx: r.rcx, di: r.rdi, si: r.rsi, g: r.r14, flags: r.eflags }
}

#[inline(always)]
fn read_u64(addr: u64) -> Option<u64> {
    // SAFETY: checked read of user memory; a bad pointer gives an error, not a fault.
    unsafe { bpf_probe_read_user(addr as *const u64) }.ok()
}

/// A goroutine in the `pid_tgid` shape records take: the process, and as the "thread" the `g`
/// pointer folded into 31 bits with the process (g structs are ≥ 16-byte aligned, and Go heaps
/// start at the same address in every process), marked `GOROUTINE_ACTOR`.
#[inline(always)]
pub(crate) fn goroutine_task(tgid: u32, g: u64) -> u64 {
    let actor = GOROUTINE_ACTOR | (((g >> 4) as u32 ^ tgid.rotate_left(13)) & !GOROUTINE_ACTOR);
    (u64::from(tgid) << 32) | u64::from(actor)
}

/// Removes and returns a map entry (a call's state, consumed once).
#[inline(always)]
fn take<V: Copy>(map: &LruHashMap<GoKey, V>, key: &GoKey) -> Option<V> {
    // SAFETY: lookup; the value is copied before the entry is removed.
    let value = unsafe { map.get(key) }.copied()?;
    let _ = map.remove(key);
    Some(value)
}

/// aya-template's thin entry point around a `try_` function.
#[macro_export]
macro_rules! go_probe {
    ($name:ident, $body:ident) => {
        #[uprobe]
        pub fn $name(ctx: ProbeContext) -> u32 {
            match $body(&ctx) {
                Ok(()) | Err(_) => 0,
            }
        }
    };
}

/// The socket fd under a `*tls.Conn`, through the offsets in the attach cookie, if it is a
/// socket the probes know; it is marked TLS so its ciphertext is not captured.
#[inline(always)]
fn conn_fd(ctx: &ProbeContext, tgid: u32, conn: u64) -> Option<u32> {
    // SAFETY: helper reading this attachment's cookie from the context.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let (conn_off, fd_off, pfd_off, sysfd_off) = go_cookie::unpack(cookie);
    // tls.Conn.conn is a net.Conn interface: (type, data); data points to a *net.TCPConn.
    let inner = read_u64(conn + conn_off + 8)?;
    let net_fd = read_u64(inner + fd_off)?;
    let sysfd = read_u64(net_fd + pfd_off + sysfd_off)? as i64;
    if !(0..=i64::from(i32::MAX)).contains(&sysfd) {
        return None;
    }
    let fd = sysfd as u32;
    let key = fd_key(tgid, fd);
    // SAFETY: lookup; the value is copied.
    match unsafe { FD_STATE.get(&key) }.copied() {
        Some(FdState { state: fd_state::TLS, .. }) => {}
        // The socket keeps its generation, for the agent's verdicts on this connection.
        Some(e) if e.state == fd_state::SOCKET || e.state == fd_state::FOREIGN => {
            let _ = FD_STATE.insert(&key, &FdState { generation: e.generation, ..FdState::new(fd_state::TLS) }, 0);
        }
        // Another kind of net.Conn under the TLS one, an fd we never saw, or a connection
        // outside its process's sampled share: not ours to read.
        _ => return None,
    }
    Some(fd)
}

/// The start of every entry probe: the task's process (tgid) and registers, when the process
/// is traced and this is the pass that goes on. On the way to growing the stack (the stack
/// check's `jbe` taken) the call starts again, and the probe fires again.
#[inline(always)]
pub(crate) fn entered(ctx: &ProbeContext) -> Option<(u32, Regs)> {
    let pid_tgid = filter::traced_task()?;
    let r = regs(ctx);
    if r.flags & (CF | ZF) != 0 {
        return None;
    }
    Some(((pid_tgid >> 32) as u32, r))
}

go_probe!(go_tls_write, try_go_tls_write);

fn try_go_tls_write(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    let fd = conn_fd(ctx, tgid, r.ax).ok_or(1)?;
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let key = GoKey { ptr: r.g, tgid: u64::from(tgid) };
    // SAFETY: lookup; the value is copied.
    let g = match unsafe { GO_WRITES_FOR.get(&key) }.copied() {
        Some((caller, since)) if now.wrapping_sub(since) < WRITES_FOR_NS => caller,
        _ => r.g,
    };
    // The plaintext is complete at entry: no need to see the return.
    let call = DataCall { op: op::WRITE, fd, capture_cap: 0, ptr: r.bx, ts_enter_ns: now };
    capture::data(goroutine_task(tgid, g), &call, r.cx, data_flags::TLS | data_flags::GOROUTINE);
    Ok(())
}

go_probe!(go_tls_read, try_go_tls_read);

fn try_go_tls_read(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    let fd = conn_fd(ctx, tgid, r.ax).ok_or(1)?;
    // SAFETY: helper without arguments.
    let ts_enter_ns = unsafe { bpf_ktime_get_ns() };
    let read = GoRead { buf: r.bx, ts_enter_ns, fd, _pad: 0 };
    GO_READS.insert(&GoKey { ptr: r.g, tgid: u64::from(tgid) }, &read, 0)?;
    Ok(())
}

go_probe!(go_tls_read_copy, try_go_tls_read_copy);

/// On the one `call runtime.memmove` in `(*Conn).Read` (bytes.Reader.Read, inlined), which
/// copies the plaintext out: source in RBX, count in RCX. The kernel emulates a call, so this
/// costs one trap where a probe on each `ret` costs two (the fallback, `go_tls_read_ret`).
fn try_go_tls_read_copy(ctx: &ProbeContext) -> Result<(), i64> {
    finish_read(ctx, |r| (r.bx, r.cx))
}

go_probe!(go_tls_read_ret, try_go_tls_read_ret);

/// On each `ret` of `(*Conn).Read`: RAX holds the byte count, the buffer has the bytes.
fn try_go_tls_read_ret(ctx: &ProbeContext) -> Result<(), i64> {
    finish_read(ctx, |r| (0, r.ax))
}

/// Emits the plaintext of the goroutine's Read: `result(regs)` gives (address, count); an
/// address of 0 means the Read's own buffer.
#[inline(always)]
fn finish_read(ctx: &ProbeContext, result: impl Fn(&Regs) -> (u64, u64)) -> Result<(), i64> {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let r = regs(ctx);
    let tgid = (pid_tgid >> 32) as u32;
    let Some(read) = take(&GO_READS, &GoKey { ptr: r.g, tgid: u64::from(tgid) }) else { return Ok(()) };
    let (from, n) = result(&r);
    if n as i64 <= 0 {
        return Ok(());
    }
    let ptr = if from != 0 { from } else { read.buf };
    let call = DataCall { op: op::READ, fd: read.fd, capture_cap: 0, ptr, ts_enter_ns: read.ts_enter_ns };
    capture::data(goroutine_task(tgid, r.g), &call, n, data_flags::TLS | data_flags::GOROUTINE);
    Ok(())
}

go_probe!(go_http_round_trip, try_go_http_round_trip);

/// `net/http.(*persistConn).roundTrip(pc, req *transportRequest)`, on the calling goroutine:
/// `transportRequest` embeds the `*Request` as its first field.
fn try_go_http_round_trip(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    let request = read_u64(r.bx).ok_or(1)?;
    GO_REQUESTS.insert(&GoKey { ptr: request, tgid: u64::from(tgid) }, &r.g, 0)?;
    Ok(())
}

go_probe!(go_http_request_write, try_go_http_request_write);

/// `net/http.(*Request).write(r, ...)`, on the connection's writeLoop goroutine.
fn try_go_http_request_write(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    let tgid = u64::from(tgid);
    let request = GoKey { ptr: r.ax, tgid };
    let Some(caller) = take(&GO_REQUESTS, &request) else { return Ok(()) };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    GO_WRITES_FOR.insert(&GoKey { ptr: r.g, tgid }, &(caller, now), 0)?;
    Ok(())
}

go_probe!(go_grpc_put, try_go_grpc_put);

/// grpc-go's `(*controlBuffer).executeAndPut(c, f, it cbItem)`, on the goroutine that queues
/// an item for the connection's loopy goroutine: `it` is an interface, its itab in RCX and its
/// data in RDI. Only `*headerFrame` items are followed: the attach cookie is that itab's
/// address (a new stream's headers, queued by the goroutine making the call).
fn try_go_grpc_put(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    // SAFETY: helper reading this attachment's cookie from the context.
    let header_itab = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if r.cx != header_itab || r.di == 0 {
        return Ok(());
    }
    GO_REQUESTS.insert(&GoKey { ptr: r.di, tgid: u64::from(tgid) }, &r.g, 0)?;
    Ok(())
}

go_probe!(go_grpc_header, try_go_grpc_header);

/// `(*loopyWriter).headerHandler(l, h *headerFrame)`, on the connection's loopy goroutine,
/// before it writes `h`'s HEADERS: its writes count as the goroutine that queued `h` until it
/// handles the next header. A header whose goroutine is unknown ends the hand-over, so no
/// write ever counts as a caller it was not made for.
fn try_go_grpc_header(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    let tgid = u64::from(tgid);
    let loopy = GoKey { ptr: r.g, tgid };
    match take(&GO_REQUESTS, &GoKey { ptr: r.bx, tgid }) {
        Some(caller) => {
            // SAFETY: helper without arguments.
            let now = unsafe { bpf_ktime_get_ns() };
            GO_WRITES_FOR.insert(&loopy, &(caller, now), 0)?;
            // `streamID` is headerFrame's first field, set by the caller before it queued
            // the header. Loopy may write several streams' headers at once: this names each.
            // SAFETY: checked read of user memory.
            if let Ok(stream) = unsafe { bpf_probe_read_user(r.bx as *const u32) } {
                capture::stream_caller(tgid as u32, stream, goroutine_task(tgid as u32, caller) as u32, (cause::NONE, 0));
            }
        }
        None => {
            let _ = GO_WRITES_FOR.remove(&loopy);
        }
    }
    Ok(())
}
