//! TLS plaintext at the OpenSSL API boundary: uprobes on SSL_read/SSL_write(_ex) entry and
//! a shared uretprobe. The agent may attach them a few instructions in, or in the internal
//! function an `_ex` form hands its arguments to (where the kernel need not single-step); the
//! programs only rely on the arguments and `[rsp]` being as at entry.
//!
//! The plaintext joins the same connection state as plain sockets: the socket is learned from
//! the syscall OpenSSL makes inside the call (`note_ciphertext_fd`), or, over a memory BIO
//! (node), from the socket read just before SSL_read and the write just after SSL_write; from
//! then on that socket's ciphertext is not captured.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use zerotrace_abi::{FD_UNKNOWN, FdState, data_flags, fd_key, fd_state};

use crate::maps::{self, DataCall, FD_STATE, op};
use crate::{capture, filter};

/// A `SSL*` of a process. Pointers are per address space, hence the tgid.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    pub ssl: u64,
    pub tgid: u64,
}

/// The socket fd under each `SSL*`.
#[map]
static SSL_FDS: LruHashMap<SslKey, u32> = LruHashMap::with_max_entries(65536, 0);

/// Records the SSL call in the thread's in-flight slot, where the data syscalls made inside it
/// see it without another lookup.
#[inline(always)]
fn enter(ctx: &ProbeContext, call_op: u32, ex: u32) -> Result<(), i64> {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let ssl = ctx.arg::<u64>(0).ok_or(1)?;
    let buf = ctx.arg::<u64>(1).ok_or(1)?;
    let len_ptr = if ex == 1 { ctx.arg::<u64>(3).ok_or(1)? } else { 0 };
    if let Some(slot) = maps::slot(pid_tgid as u32) {
        // Field by field, the last one volatile: for SSL_read the last two are constant
        // zeros, which LLVM otherwise merges into a call of the byte-at-a-time `memset` (see
        // `DataCall`).
        let tls = &mut slot.tls;
        tls.op = call_op;
        tls.ex = ex;
        tls.fd = FD_UNKNOWN;
        tls.ssl = ssl;
        tls.buf = buf;
        tls.len_ptr = len_ptr;
        // SAFETY: a write to a field of this thread's slot, through a valid reference.
        unsafe { core::ptr::write_volatile(&mut tls.ts_enter_ns, maps::entry_time(call_op)) };
    }
    Ok(())
}

macro_rules! ssl_entry {
    ($name:ident, $op:expr, $ex:expr) => {
        #[uprobe]
        pub fn $name(ctx: ProbeContext) -> u32 {
            match enter(&ctx, $op, $ex) {
                Ok(()) | Err(_) => 0,
            }
        }
    };
}

ssl_entry!(ssl_write, op::WRITE, 0);
ssl_entry!(ssl_write_ex, op::WRITE, 1);
ssl_entry!(ssl_read, op::READ, 0);
ssl_entry!(ssl_read_ex, op::READ, 1);

#[uretprobe]
pub fn ssl_ret(ctx: RetProbeContext) -> u32 {
    match try_ssl_ret(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_ssl_ret(ctx: &RetProbeContext) -> Result<(), i64> {
    let Some(pid_tgid) = filter::traced_task() else { return Ok(()) };
    let Some(slot) = maps::own_slot(pid_tgid as u32) else { return Ok(()) };
    let call = slot.tls;
    if call.op == op::NONE {
        return Ok(());
    }
    slot.tls.op = op::NONE;
    // Every probed function returns a C `int`: the upper half of rax is not part of it (-1
    // comes back as 0x00000000ffffffff).
    let ret = i64::from(ctx.ret::<u64>() as u32 as i32);
    let tgid = pid_tgid >> 32;
    let mut fd = if call.fd != FD_UNKNOWN {
        call.fd
    } else {
        // SAFETY: lookup; the value is copied.
        unsafe { SSL_FDS.get(&SslKey { ssl: call.ssl, tgid }) }.copied().unwrap_or(FD_UNKNOWN)
    };
    if call.op == op::READ && op::is_read(slot.last_op) && slot.last_fd != fd {
        // No syscall inside this call, and the thread's last one read a socket: over a memory
        // BIO (node) that read was this SSL's ciphertext. (With a socket BIO the last read is
        // the one inside the call or an earlier one of the same SSL, so nothing changes.)
        // Done whatever the result: a client's first SSL_read drives the handshake.
        fd = slot.last_fd;
        note_ciphertext_fd(pid_tgid, call.ssl, fd, None);
    }
    let bytes = if call.ex == 1 {
        // The `_ex` forms return 1; the internal function they may be probed in, any positive.
        if ret <= 0 {
            return Ok(());
        }
        // SAFETY: checked user read of the size_t the _ex call wrote its count to.
        unsafe { bpf_probe_read_user(call.len_ptr as *const u64) }.map_err(|e| e as i64)?
    } else if ret > 0 {
        ret as u64
    } else {
        return Ok(());
    };
    if fd == FD_UNKNOWN && call.op == op::WRITE {
        // Over a memory BIO the ciphertext leaves right after: the thread's next write names
        // the socket, and the agent holds this record until then.
        slot.pending_ssl = call.ssl;
    }
    // A process over its overhead budget: heads only, and nothing of a connection outside its
    // sampled share. One bitmap lookup; the socket's entry only then.
    let capture_cap = if maps::head_only(tgid as u32) {
        // SAFETY: lookup; the value is copied.
        if fd != FD_UNKNOWN && unsafe { FD_STATE.get(&fd_key(tgid as u32, fd)) }.is_some_and(|e| e.state == fd_state::TLS_SKIPPED) {
            return Ok(());
        }
        u32::from(zerotrace_abi::HEAD_ONLY_CAPTURE)
    } else {
        0
    };
    let data = DataCall { op: call.op, fd, capture_cap, ptr: call.buf, ts_enter_ns: call.ts_enter_ns };
    capture::data(pid_tgid, &data, bytes, data_flags::TLS);
    Ok(())
}

/// A socket syscall made inside an SSL call (or, over a memory BIO, next to it) moves that
/// SSL's ciphertext: remember its socket and mark the socket as TLS, so its syscall bytes are
/// never captured. `entry` is the socket's FD_STATE entry, when the caller has it; its
/// generation is kept, for the agent's verdicts on this connection.
#[inline(always)]
pub fn note_ciphertext_fd(pid_tgid: u64, ssl: u64, fd: u32, entry: Option<FdState>) {
    let tgid = pid_tgid >> 32;
    let key = SslKey { ssl, tgid };
    // SAFETY: lookup; the value is copied.
    if unsafe { SSL_FDS.get(&key) }.copied() != Some(fd) {
        let _ = SSL_FDS.insert(&key, &fd, 0);
    }
    let state = entry.map(|e| e.state);
    if state != Some(fd_state::TLS) && state != Some(fd_state::TLS_SKIPPED) {
        let generation = entry.map_or(0, |e| e.generation);
        let _ = FD_STATE.insert(&fd_key(tgid as u32, fd), &FdState { generation, ..FdState::new(fd_state::TLS) }, 0);
    }
}
