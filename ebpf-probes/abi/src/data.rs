//! Data records: the bytes one syscall (or TLS call) moved, with who moved them and in which
//! unit of work.

use crate::{RecordHeader, SockAddr};

/// Largest payload prefix a data record can carry. Must be a power of two: the probes mask
/// lengths with `MAX_PAYLOAD - 1` so the verifier can bound them.
pub const MAX_PAYLOAD: usize = 4096;
/// Default payload capture cap when the user does not set one.
pub const DEFAULT_PAYLOAD_CAP: u32 = 1024;

/// Data direction, from the traced process's point of view.
pub mod direction {
    /// Bytes the process read (recv, read, readv, recvmsg, recvfrom).
    pub const INGRESS: u32 = 1;
    /// Bytes the process wrote (send, write, writev, sendmsg, sendto).
    pub const EGRESS: u32 = 2;
}

/// Fixed part of a data record; `captured` payload bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataHeader {
    pub header: RecordHeader,
    pub direction: u32,
    pub tid: u32,
    pub fd: u32,
    /// How many payload bytes follow this header (≤ the capture cap).
    pub captured: u32,
    /// `data_flags::*`.
    pub flags: u32,
    /// The unit of work the thread was running (see [`cause`]).
    pub cause_kind: u32,
    /// The call's moment, CLOCK_MONOTONIC (bpf_ktime_get_ns): a write's entry, a read's
    /// return, the two ends spans are timed by. Both fields hold it (the probes read the clock
    /// once per call); they stay two so that the agent's segments keep their shape.
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    /// Bytes the syscall actually transferred (≥ `captured`).
    pub total_len: u64,
    /// Which unit (see [`cause`]).
    pub cause_id: u64,
}

/// A datagram's record (`kind::DATAGRAM`): a data record's fixed part, then the peer the
/// datagram came from or went to (recvfrom/sendto on an unconnected UDP socket, as DNS
/// clients and servers use), then `captured` payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DatagramHeader {
    pub data: DataHeader,
    pub peer: SockAddr,
}

/// A full data record as the probes fill it in per-CPU scratch space before output.
#[repr(C)]
pub struct DataEvent {
    pub fixed: DataHeader,
    pub payload: [u8; MAX_PAYLOAD],
}

/// Flags of a data record.
pub mod data_flags {
    /// Plaintext read at the TLS library boundary (SSL_read/SSL_write), not from a syscall.
    pub const TLS: u32 = 1;
    /// The record's `tid` names a goroutine (`GOROUTINE_ACTOR` set), not a thread: Go moves
    /// goroutines between threads, and a request's work is the goroutine's.
    pub const GOROUTINE: u32 = 2;
    /// Read from a pipe (`fd_state::PIPE`), not a socket.
    pub const PIPE: u32 = 4;
}

/// Set in a data record's `tid` when it names a goroutine: above any thread id (the kernel's
/// PID_MAX_LIMIT is 2^22), so the agent's per-"thread" linking works per goroutine unchanged.
pub const GOROUTINE_ACTOR: u32 = 1 << 31;

/// `fd` of a TLS record whose socket is not known yet (no syscall seen inside the SSL call).
pub const FD_UNKNOWN: u32 = u32::MAX;

/// What unit of work a thread was running at a syscall, from the runtime probes. The syscall
/// alone cannot say which of the requests an event loop interleaves caused a write; the unit
/// of work can.
pub mod cause {
    /// No runtime probe on this thread: a thread (or goroutine) serves one request at a time.
    pub const NONE: u32 = 0;
    /// A thread with runtime probes outside any unit of work (libuv: timers, immediates,
    /// thread-pool completions; asyncio: loop callbacks outside a task).
    pub const OUTSIDE: u32 = 1;
    /// Inside libuv's callback for a socket: `id` is the fd in the low half and the thread's
    /// callback count in the high half (two callbacks of one socket are told apart). libuv
    /// runs a socket's callback right after polling it, and node runs the JavaScript the bytes
    /// trigger (promise continuations included) before the callback returns.
    pub const LIBUV_CALLBACK: u32 = 2;
    /// Inside a step of an asyncio task: `id` is the task object's address.
    pub const ASYNCIO_TASK: u32 = 3;
}

/// Per-thread unit-of-work state the runtime probes keep and the capture code reads. One
/// level of nesting is remembered (an eager asyncio task's first step runs inside its
/// creator's step).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unit {
    /// The thread the entry belongs to (an entry is indexed by thread id modulo its size).
    pub owner: u32,
    /// `cause::*`.
    pub kind: u32,
    pub id: u64,
    pub prev_kind: u32,
    /// Callbacks entered so far (libuv).
    pub seq: u32,
    pub prev_id: u64,
}

/// The field offsets from a Go `*crypto/tls.Conn` to its socket fd, packed into a uprobe's
/// attach cookie, 16 bits each: `tls.Conn.conn` (an interface; its data word follows the type
/// word), `net.conn.fd`, `net.netFD.pfd`, `poll.FD.Sysfd`. Per probe, because each Go
/// executable may have its own layout.
pub mod go_cookie {
    pub const fn pack(conn: u16, fd: u16, pfd: u16, sysfd: u16) -> u64 {
        (conn as u64) | ((fd as u64) << 16) | ((pfd as u64) << 32) | ((sysfd as u64) << 48)
    }

    /// (conn, fd, pfd, sysfd).
    pub const fn unpack(cookie: u64) -> (u64, u64, u64, u64) {
        (cookie & 0xffff, (cookie >> 16) & 0xffff, (cookie >> 32) & 0xffff, cookie >> 48)
    }
}
