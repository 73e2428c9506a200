//! Connections: accept and connect (with our end from the TCP state change), and close.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use zerotrace_abi::{FdState, SockAddr, fd_key, fd_state, role};

use crate::maps::{self, FD_STATE, op};
use crate::{ARG0, ARG1, RET, Res, arg, capture, entry_point, filter, new_call, sockaddr, stash, take};

/// -EINPROGRESS: a non-blocking connect that is under way counts as connected.
const EINPROGRESS: i64 = -115;
/// -EINTR: a blocking connect interrupted by a signal goes on in the background (POSIX), and
/// the program uses the socket once it is writable (CPython waits for it, PEP 475).
const EINTR: i64 = -4;

/// A connection's generation (see `FdState::generation`): random, never 0.
#[inline(always)]
fn new_generation() -> u8 {
    // SAFETY: helper without arguments.
    (unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() } as u8) | 1
}

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
    // The kernel wrote the peer's address: an unreadable one (counted) still opens the socket.
    let remote = sockaddr::read_user_sockaddr(call.ptr).unwrap_or_default();
    let generation = new_generation();
    let tgid = (pid_tgid >> 32) as u32;
    let capture_cap = maps::opening_cap(tgid, 0);
    let _ = FD_STATE.insert(&fd_key(tgid, fd), &FdState { generation, capture_cap, ..FdState::new(fd_state::SOCKET) }, 0);
    capture::conn_open(pid_tgid, role::SERVER, fd, call.fd, SockAddr::default(), remote, generation);
    Ok(())
}

fn try_enter_connect(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let fd = arg(ctx, ARG0)? as u32;
    let mut call = new_call(pid_tgid, op::CONNECT, fd, 0);
    // Unreadable (counted): the connection is lost, but not silently.
    let Ok(remote) = sockaddr::read_user_sockaddr(arg(ctx, ARG1)?) else { return Ok(()) };
    call.remote = remote;
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
    if call.op != op::CONNECT || !matches!(ret, 0 | EINPROGRESS | EINTR) {
        return Ok(());
    }
    let generation = new_generation();
    let tgid = (pid_tgid >> 32) as u32;
    let capture_cap = maps::opening_cap(tgid, maps::setting_u32(&maps::CLIENT_FIRST_CAP) as u16);
    let _ = FD_STATE.insert(&fd_key(tgid, call.fd), &FdState { generation, capture_cap, ..FdState::new(fd_state::SOCKET) }, 0);
    capture::conn_open(pid_tgid, role::CLIENT, call.fd, zerotrace_abi::FD_UNKNOWN, call.local, call.remote, generation);
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
        if state.state != fd_state::NOT_SOCKET && state.state != fd_state::PIPE {
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

/// pipe/pipe2(int fds[2], …): the array is filled at exit.
fn try_enter_pipe(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    stash(pid_tgid, &new_call(pid_tgid, op::PIPE, 0, arg(ctx, ARG0)?));
    Ok(())
}

/// A pipe made: its read end's reads are captured (`fd_state::PIPE`); the write end is not.
fn try_exit_pipe(ctx: &TracePointContext) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let Some(call) = take(pid_tgid) else { return Ok(()) };
    if call.op != op::PIPE || arg(ctx, RET)? != 0 {
        return Ok(());
    }
    // SAFETY: checked user read of the int[2] the kernel just filled.
    let fds = unsafe { aya_ebpf::helpers::bpf_probe_read_user(call.ptr as *const [u32; 2]) }.map_err(|e| e as i64)?;
    let state = FdState { capture_cap: zerotrace_abi::PIPE_CAPTURE, ..FdState::new(fd_state::PIPE) };
    let _ = FD_STATE.insert(&fd_key((pid_tgid >> 32) as u32, fds[0]), &state, 0);
    Ok(())
}

entry_point!(sys_enter_pipe, try_enter_pipe);
entry_point!(sys_exit_pipe, try_exit_pipe);
