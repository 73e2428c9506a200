//! The read/write family: entry stashes the call's buffer, exit copies what moved into a data
//! record. recvfrom/sendto share read/write's programs; the iovec calls gather buffers.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use zerotrace_abi::{fd_key, fd_state};

use crate::maps::{self, FD_STATE, Inflight, op};
use crate::{ARG0, ARG1, ARG2, ARG3, RET, Res, arg, capture, entry_point, filter, go_tls, take_data, tls};

/// The slot a data call's arguments go to (the fd's capture cap, whether it is a pipe), or `None` when this fd's bytes are not captured
/// here: not a known socket (or not a protocol the agent parses), TLS whose plaintext the TLS
/// probes capture, or the thread's slot is taken. A socket call made inside an SSL call is
/// that SSL's ciphertext: it ties the SSL to its socket and is skipped; so is the write that
/// follows an SSL write over a memory BIO (see `Inflight::pending_ssl`). Files read inside an
/// SSL call (a certificate check reads /etc/localtime) tie nothing.
#[inline(always)]
fn data_slot(pid_tgid: u64, fd: u32, call_op: u32) -> Option<(&'static mut Inflight, u16, bool)> {
    let slot = maps::slot(pid_tgid as u32)?;
    // Only fds known as sockets are captured: from accept/connect, or found open when the
    // agent attached (it fills those in). Files, pipes and ttys cost nothing more here, and the
    // agent never has to judge an fd late, after its number may have been reused.
    let key = fd_key((pid_tgid >> 32) as u32, fd);
    // SAFETY: lookup; the value is copied.
    let fd_entry = unsafe { FD_STATE.get(&key) }.copied();
    let state = fd_entry.map(|e| e.state);
    let socket = matches!(state, Some(fd_state::SOCKET | fd_state::TLS | fd_state::FOREIGN | fd_state::TLS_SKIPPED));
    if !socket {
        // Files, pipes, eventfds: never a TLS socket, so not the thread's last data call. A
        // pipe's reads are captured, unless an SSL call holds the slot.
        return match fd_entry {
            Some(e) if e.state == fd_state::PIPE && call_op == op::READ && slot.tls.op == op::NONE && slot.pending_ssl == 0 => Some((slot, e.capture_cap, true)),
            _ => None,
        };
    }
    (slot.last_fd, slot.last_op) = (fd, call_op);
    if slot.tls.op != op::NONE {
        // Noted once per SSL call (a read may take two syscalls), and kept for its return.
        if slot.tls.fd != fd {
            slot.tls.fd = fd;
            tls::note_ciphertext_fd(pid_tgid, slot.tls.ssl, fd, fd_entry);
        }
        return None;
    }
    if slot.pending_ssl != 0 {
        let ssl = slot.pending_ssl;
        slot.pending_ssl = 0;
        if op::is_write(call_op) {
            tls::note_ciphertext_fd(pid_tgid, ssl, fd, fd_entry);
            capture::tls_socket(pid_tgid, fd);
            return None;
        }
    }
    // TLS and foreign sockets' bytes (ciphertext, unknown protocols) are not captured.
    match fd_entry {
        Some(e) if e.state == fd_state::SOCKET => Some((slot, e.capture_cap, false)),
        _ => None,
    }
}

/// recv flag: look at the queued bytes without taking them. The next read returns them
/// again, so capturing a peek showed the parser the same bytes twice (curl peeks one byte to
/// check that a connection is alive before reusing it: an HTTP/2 parser lost its framing).
const MSG_PEEK: u64 = 2;

/// Which argument of the call holds its recv flags, when it has them.
#[derive(Clone, Copy)]
enum Flags {
    None,
    At(usize),
}

/// Whether the call only peeks (see `MSG_PEEK`).
#[inline(always)]
fn peeks(ctx: &TracePointContext, flags: Flags) -> Result<bool, i64> {
    Ok(match flags {
        Flags::None => false,
        Flags::At(at) => arg(ctx, at)? & MSG_PEEK != 0,
    })
}

/// Stash a data call unless the fd's bytes are not captured here.
#[inline(always)]
fn enter_data(ctx: &TracePointContext, call_op: u32, flags: Flags) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    if peeks(ctx, flags)? {
        return Ok(());
    }
    let fd = arg(ctx, ARG0)? as u32;
    let Some((slot, cap, pipe)) = data_slot(pid_tgid, fd, call_op) else { return Ok(()) };
    let ptr = match call_op {
        op::SENDFILE => 0,
        _ => arg(ctx, ARG1)?,
    };
    // A pipe's read is recorded as such (`data_flags::PIPE`).
    let call_op = if pipe { op::PIPE_READ } else { call_op };
    slot.begin_data(call_op, fd, ptr, cap);
    Ok(())
}

/// recvmsg/sendmsg: the iovec array pointer is at offset 16 of `struct msghdr`.
#[inline(always)]
fn enter_msg(ctx: &TracePointContext, call_op: u32, flags: Flags) -> Res {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    if peeks(ctx, flags)? {
        return Ok(());
    }
    let fd = arg(ctx, ARG0)? as u32;
    let Some((slot, cap, _)) = data_slot(pid_tgid, fd, call_op) else { return Ok(()) };
    let msghdr = arg(ctx, ARG1)?;
    // SAFETY: checked user read of msghdr.msg_iov.
    let iov = unsafe { aya_ebpf::helpers::bpf_probe_read_user((msghdr + 16) as *const u64) }.map_err(|e| e as i64)?;
    slot.begin_data(call_op, fd, iov, cap);
    Ok(())
}

#[inline(always)]
fn exit_data(ctx: &TracePointContext) -> Res {
    // The cheap bitmap check first: untraced threads never have an in-flight slot.
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let Some(call) = take_data(pid_tgid) else { return Ok(()) };
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
    enter_data(ctx, op::READ, Flags::None)
}
/// recvfrom(fd, buf, len, flags, ...).
fn try_enter_recvfrom(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::READ, Flags::At(ARG3))
}
fn try_enter_write(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::WRITE, Flags::None)
}
fn try_enter_readv(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::READV, Flags::None)
}
fn try_enter_writev(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::WRITEV, Flags::None)
}
/// recvmsg(fd, msg, flags).
fn try_enter_recvmsg(ctx: &TracePointContext) -> Res {
    enter_msg(ctx, op::READV, Flags::At(ARG2))
}
fn try_enter_sendmsg(ctx: &TracePointContext) -> Res {
    enter_msg(ctx, op::WRITEV, Flags::None)
}
fn try_enter_sendfile(ctx: &TracePointContext) -> Res {
    enter_data(ctx, op::SENDFILE, Flags::None)
}

entry_point!(sys_enter_read, try_enter_read);
entry_point!(sys_enter_recvfrom, try_enter_recvfrom);
entry_point!(sys_enter_write, try_enter_write);
entry_point!(sys_enter_sendto, try_enter_write);
entry_point!(sys_enter_readv, try_enter_readv);
entry_point!(sys_enter_writev, try_enter_writev);
entry_point!(sys_enter_recvmsg, try_enter_recvmsg);
entry_point!(sys_enter_sendmsg, try_enter_sendmsg);
entry_point!(sys_enter_sendfile64, try_enter_sendfile);
entry_point!(sys_exit_data, exit_data);
