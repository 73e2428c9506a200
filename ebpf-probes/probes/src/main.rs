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
mod filter;
mod go_tls;
mod libuv;
mod maps;
mod pyqueue;
mod sockaddr;
mod tls;
mod units;

use aya_ebpf::{EbpfContext, helpers::bpf_ktime_get_ns, macros::tracepoint, programs::TracePointContext};
use zerotrace_abi::{SockAddr, fd_key, fd_state, role};

use crate::maps::{FD_STATE, Inflight, TlsCall, op};

/// Offsets in the syscall tracepoint records (see events/syscalls/*/format).
const ARG0: usize = 16;
const ARG1: usize = 24;
const RET: usize = 16;
/// -EINPROGRESS: a non-blocking connect that is under way counts as connected.
const EINPROGRESS: i64 = -115;

type Res = Result<(), i64>;

#[inline(always)]
fn arg(ctx: &TracePointContext, offset: usize) -> Result<u64, i64> {
    // SAFETY: a tracepoint program may load its own record directly (the verifier checks the
    // constant offset against the record); this saves a probe-read helper call per argument
    // on every syscall we see. Offsets are those of the syscall tracepoint formats.
    Ok(unsafe { core::ptr::read(ctx.as_ptr().cast::<u8>().add(offset).cast::<u64>()) })
}

#[inline(always)]
fn stash(pid_tgid: u64, call: &Inflight) {
    if let Some(slot) = maps::slot(pid_tgid as u32) {
        *slot = *call;
    }
}

#[inline(always)]
fn take(pid_tgid: u64) -> Option<Inflight> {
    let slot = maps::own_slot(pid_tgid as u32)?;
    let call = *slot;
    if call.op == op::NONE {
        return None;
    }
    slot.op = op::NONE;
    Some(call)
}

/// A call of thread `pid_tgid` (the slot's owner) to stash.
fn new_call(pid_tgid: u64, op: u32, fd: u32, ptr: u64) -> Inflight {
    Inflight {
        op,
        fd,
        owner: pid_tgid as u32,
        last_fd: fd,
        last_op: op,
        _pad: 0,
        ptr,
        // SAFETY: helper without arguments.
        ts_enter_ns: unsafe { bpf_ktime_get_ns() },
        local: SockAddr::default(),
        remote: SockAddr::default(),
        tls: TlsCall::IDLE,
        pending_ssl: 0,
    }
}

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

// ---- data: read/write family -------------------------------------------------------------

/// The slot a data call's arguments go to, or `None` when this fd's bytes are not captured
/// here: not a known socket (or not a protocol the agent parses), TLS whose plaintext the TLS
/// probes capture, or the thread's slot is taken. A socket call made inside an SSL call is
/// that SSL's ciphertext: it ties the SSL to its socket and is skipped; so is the write that
/// follows an SSL write over a memory BIO (see `Inflight::pending_ssl`). Files read inside an
/// SSL call (a certificate check reads /etc/localtime) tie nothing.
#[inline(always)]
fn data_slot(pid_tgid: u64, fd: u32, call_op: u32) -> Option<&'static mut Inflight> {
    let slot = maps::slot(pid_tgid as u32)?;
    // Only fds known as sockets are captured: from accept/connect, or found open when the
    // agent attached (it fills those in). Files, pipes and ttys cost nothing more here, and the
    // agent never has to judge an fd late, after its number may have been reused.
    let key = fd_key((pid_tgid >> 32) as u32, fd);
    // SAFETY: lookup; the value is copied.
    let state = unsafe { FD_STATE.get(&key) }.copied();
    let socket = matches!(state, Some(fd_state::SOCKET | fd_state::TLS | fd_state::FOREIGN));
    if !socket {
        // Files, pipes, eventfds: never a TLS socket, so not the thread's last data call.
        return None;
    }
    (slot.last_fd, slot.last_op) = (fd, call_op);
    if slot.tls.op != op::NONE {
        tls::note_ciphertext_fd(pid_tgid, slot.tls.ssl, fd, state);
        return None;
    }
    if slot.pending_ssl != 0 {
        let ssl = slot.pending_ssl;
        slot.pending_ssl = 0;
        if op::is_write(call_op) {
            tls::note_ciphertext_fd(pid_tgid, ssl, fd, state);
            capture::tls_socket(pid_tgid, fd);
            return None;
        }
    }
    // TLS and foreign sockets' bytes (ciphertext, unknown protocols) are not captured.
    if state == Some(fd_state::SOCKET) { Some(slot) } else { None }
}

/// Stash a data call unless the fd's bytes are not captured here.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, call_op: u32) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let fd = arg(ctx, ARG0)? as u32;
    let Some(slot) = data_slot(pid_tgid, fd, call_op) else { return Ok(()) };
    let ptr = match call_op {
        op::SENDFILE => 0,
        _ => arg(ctx, ARG1)?,
    };
    // No SSL call is in progress (checked by `data_slot`), so resetting the TLS part loses
    // nothing.
    *slot = new_call(pid_tgid, call_op, fd, ptr);
    Ok(())
}

/// recvmsg/sendmsg: the iovec array pointer is at offset 16 of `struct msghdr`.
#[inline(always)]
fn enter_msg(ctx: &TracePointContext, call_op: u32) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let fd = arg(ctx, ARG0)? as u32;
    let Some(slot) = data_slot(pid_tgid, fd, call_op) else { return Ok(()) };
    let msghdr = arg(ctx, ARG1)?;
    // SAFETY: checked user read of msghdr.msg_iov.
    let iov = unsafe { aya_ebpf::helpers::bpf_probe_read_user((msghdr + 16) as *const u64) }.map_err(|e| e as i64)?;
    *slot = new_call(pid_tgid, call_op, fd, iov);
    Ok(())
}

#[inline(always)]
fn exit_data(ctx: &TracePointContext) -> Res {
    // The cheap bitmap check first: untraced threads never have an in-flight slot.
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let Some(call) = take(pid_tgid) else { return Ok(()) };
    let ret = arg(ctx, RET)? as i64;
    if ret > 0 {
        match go_tls::syscall_goroutine(pid_tgid, op::is_write(call.op)) {
            Some(goroutine) => capture::data(goroutine, &call, ret as u64, zerotrace_abi::data_flags::GOROUTINE),
            None => capture::data(pid_tgid, &call, ret as u64, 0),
        }
    }
    Ok(())
}

fn try_enter_read(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::READ)
}
fn try_enter_write(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::WRITE)
}
fn try_enter_readv(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::READV)
}
fn try_enter_writev(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::WRITEV)
}
fn try_enter_recvmsg(ctx: &TracePointContext) -> Res {
    enter_msg(ctx, op::READV)
}
fn try_enter_sendmsg(ctx: &TracePointContext) -> Res {
    enter_msg(ctx, op::WRITEV)
}
fn try_enter_sendfile(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::SENDFILE)
}

entry_point!(sys_enter_read, try_enter_read);
entry_point!(sys_enter_recvfrom, try_enter_read);
entry_point!(sys_enter_write, try_enter_write);
entry_point!(sys_enter_sendto, try_enter_write);
entry_point!(sys_enter_readv, try_enter_readv);
entry_point!(sys_enter_writev, try_enter_writev);
entry_point!(sys_enter_recvmsg, try_enter_recvmsg);
entry_point!(sys_enter_sendmsg, try_enter_sendmsg);
entry_point!(sys_enter_sendfile64, try_enter_sendfile);
entry_point!(sys_exit_data, exit_data);

// ---- connections ------------------------------------------------------------------------------

fn try_enter_accept(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let listen_fd = arg(ctx, ARG0)? as u32;
    let addr_ptr = arg(ctx, ARG1)?;
    stash(pid_tgid, &new_call(pid_tgid, op::ACCEPT, listen_fd, addr_ptr));
    Ok(())
}

fn try_exit_accept(ctx: &TracePointContext) -> Res {
    // The cheap bitmap check first: untraced threads never have an in-flight slot.
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let Some(call) = take(pid_tgid) else { return Ok(()) };
    let ret = arg(ctx, RET)? as i64;
    if call.op != op::ACCEPT || ret < 0 {
        return Ok(());
    }
    let fd = ret as u32;
    let remote = sockaddr::read_user_sockaddr(call.ptr);
    let _ = FD_STATE.insert(&fd_key((pid_tgid >> 32) as u32, fd), &fd_state::SOCKET, 0);
    capture::conn_open(pid_tgid, role::SERVER, fd, call.fd, SockAddr::default(), remote);
    Ok(())
}

fn try_enter_connect(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let fd = arg(ctx, ARG0)? as u32;
    let mut call = new_call(pid_tgid, op::CONNECT, fd, 0);
    call.remote = sockaddr::read_user_sockaddr(arg(ctx, ARG1)?);
    if call.remote.family == 0 {
        return Ok(()); // AF_UNIX and others: not traced yet.
    }
    stash(pid_tgid, &call);
    Ok(())
}

fn try_exit_connect(ctx: &TracePointContext) -> Res {
    // The cheap bitmap check first: untraced threads never have an in-flight slot.
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let Some(call) = take(pid_tgid) else { return Ok(()) };
    let ret = arg(ctx, RET)? as i64;
    if call.op != op::CONNECT || (ret != 0 && ret != EINPROGRESS) {
        return Ok(());
    }
    let _ = FD_STATE.insert(&fd_key((pid_tgid >> 32) as u32, call.fd), &fd_state::SOCKET, 0);
    capture::conn_open(pid_tgid, role::CLIENT, call.fd, zerotrace_abi::FD_UNKNOWN, call.local, call.remote);
    Ok(())
}

/// `sock:inet_sock_set_state` gives us our own end of a connect(): the ephemeral port is
/// picked just after CLOSE → SYN_SENT, so the port is usually known at SYN_SENT → ESTABLISHED,
/// which on loopback and veth runs in the softirq that the connecting task itself raises,
/// inside connect(). Same-host stitching needs this port to match the callee's accepted peer.
/// When the handshake completes later (a remote peer), the agent falls back to /proc.
fn try_sock_state(ctx: &TracePointContext) -> Res {
    const TCP_ESTABLISHED: i32 = 1;
    const TCP_SYN_SENT: i32 = 2;
    const TCP_CLOSE: i32 = 7;
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    // SAFETY: offsets from events/sock/inet_sock_set_state/format.
    let (old, new) = unsafe { (ctx.read_at::<i32>(16), ctx.read_at::<i32>(20)) };
    let (Ok(old), Ok(new)) = (old, new) else { return Ok(()) };
    let interesting = (old == TCP_CLOSE && new == TCP_SYN_SENT) || (old == TCP_SYN_SENT && new == TCP_ESTABLISHED);
    if !interesting {
        return Ok(());
    }
    // SAFETY: sport@24 in the tracepoint format.
    let sport = unsafe { ctx.read_at::<u16>(24) }.map_err(|e| e as i64)?;
    if sport == 0 {
        return Ok(());
    }
    let Some(call) = maps::own_slot(pid_tgid as u32) else { return Ok(()) };
    if call.op != op::CONNECT {
        return Ok(());
    }
    // SAFETY: offsets from the tracepoint format: sport@24 (host order), family@28,
    // saddr@32, saddr_v6@40.
    unsafe {
        call.local.port = sport;
        call.local.family = ctx.read_at::<u16>(28).map_err(|e| e as i64)?;
        if call.local.family == 2 {
            let v4 = ctx.read_at::<[u8; 4]>(32).map_err(|e| e as i64)?;
            call.local.addr[..4].copy_from_slice(&v4);
        } else {
            call.local.addr = ctx.read_at::<[u8; 16]>(40).map_err(|e| e as i64)?;
        }
    }
    Ok(())
}

fn try_enter_close(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let fd = arg(ctx, ARG0)? as u32;
    let key = fd_key((pid_tgid >> 32) as u32, fd);
    // SAFETY: lookup; the value is copied.
    let state = unsafe { FD_STATE.get(&key) }.copied();
    if let Some(state) = state {
        let _ = FD_STATE.remove(&key);
        if state != fd_state::NOT_SOCKET {
            capture::close(pid_tgid, fd);
        }
    }
    Ok(())
}

entry_point!(sys_enter_accept, try_enter_accept);
entry_point!(sys_exit_accept, try_exit_accept);
entry_point!(sys_enter_connect, try_enter_connect);
entry_point!(sys_exit_connect, try_exit_connect);
entry_point!(inet_sock_set_state, try_sock_state);
entry_point!(sys_enter_close, try_enter_close);

// ---- process lifecycle ------------------------------------------------------------------------

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
    capture::process(child, tgid);
    Ok(())
}

/// A traced task ran exec: the new program may bring its own TLS library.
fn try_exec(_ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    capture::process((pid_tgid >> 32) as u32, 0);
    Ok(())
}

/// Lowest fds a forked child inherits the socket state of. A pre-forking server (PostgreSQL's
/// postmaster) accepts, forks, and closes its copy: the child's reads only count as socket
/// reads if it inherits the state now, and the agent learns which connection the child holds
/// from an inherit record.
const INHERITED_FDS: u32 = 64;

#[inline(always)]
fn inherit_sockets(parent: u32, child: u32) {
    for fd in 0..INHERITED_FDS {
        // SAFETY: lookup; the value is copied.
        if let Some(state) = unsafe { FD_STATE.get(&fd_key(parent, fd)) }.copied()
            && (state == fd_state::SOCKET || state == fd_state::TLS)
        {
            let _ = FD_STATE.insert(&fd_key(child, fd), &state, 0);
            capture::inherit(parent, child, fd);
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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
