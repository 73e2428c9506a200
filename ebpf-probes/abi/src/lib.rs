//! The binary contract between the kernel programs and the agent.
//!
//! Every record the probes put in the ring buffer starts with a `u32` kind tag and is one of the
//! `#[repr(C)]` structs below. This crate is `no_std` so the probes can use it; the agent decodes
//! records with [`decode`] helpers that check sizes before reading.
#![no_std]

/// Largest payload prefix a data record can carry. Must be a power of two: the probes mask
/// lengths with `MAX_PAYLOAD - 1` so the verifier can bound them.
pub const MAX_PAYLOAD: usize = 4096;
/// Default payload capture cap when the user does not set one.
pub const DEFAULT_PAYLOAD_CAP: u32 = 1024;

/// Words of the traced-pid bitmap (`TARGET_PIDS`): one bit per pid up to the kernel's
/// PID_MAX_LIMIT (2^22). An array lookup is inlined by the verifier, unlike a hash lookup, and
/// every syscall of every process on the host asks it first.
pub const PID_WORDS: u32 = 1 << 16;

/// Record kinds (the first `u32` of every record).
pub mod kind {
    pub const CONN_OPEN: u32 = 1;
    pub const DATA: u32 = 2;
    pub const CLOSE: u32 = 3;
    pub const INHERIT: u32 = 4;
    pub const PROCESS: u32 = 5;
    pub const TLS_SOCKET: u32 = 6;
    pub const UNIT_SPAWN: u32 = 7;
    pub const HAND_OFF: u32 = 8;
    pub const EXIT: u32 = 9;
}

/// Which side of the connection the traced process is on.
pub mod role {
    pub const UNKNOWN: u32 = 0;
    /// The process accepted the connection: it serves requests on it.
    pub const SERVER: u32 = 1;
    /// The process connected: it sends requests on it.
    pub const CLIENT: u32 = 2;
}

/// Data direction, from the traced process's point of view.
pub mod direction {
    /// Bytes the process read (recv, read, readv, recvmsg, recvfrom).
    pub const INGRESS: u32 = 1;
    /// Bytes the process wrote (send, write, writev, sendmsg, sendto).
    pub const EGRESS: u32 = 2;
}

/// Indexes of the per-CPU loss/statistics counters (`STATS` map).
pub mod stat {
    /// A record did not fit in the ring buffer; the reader is too slow.
    pub const RINGBUF_FULL: u32 = 0;
    /// Reading the user buffer faulted (page not present); the record went out without payload.
    pub const READ_FAULT: u32 = 1;
    /// A thread's in-flight slot was held by another traced thread with the same slot index
    /// (possible only above pid_max 65536), so a call could not be followed to its exit.
    pub const INFLIGHT_FULL: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// IPv4 or IPv6 socket address in network byte order, as the agent needs it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    /// AF_INET (2), AF_INET6 (10) or 0 when unknown.
    pub family: u16,
    /// Port in host byte order.
    pub port: u16,
    pub _pad: u32,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
}

/// A connection was accepted or connected by a traced process.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnOpenEvent {
    pub kind: u32,
    pub role: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
    /// accept: the listening socket the connection came from (its address is our end);
    /// `FD_UNKNOWN` otherwise.
    pub listen_fd: u32,
    /// The unit of work the task was running (see [`cause`]).
    pub cause_kind: u32,
    pub _pad: u32,
    pub cause_id: u64,
    pub ts_ns: u64,
    /// Our end. For connect, from the TCP state change that picked the ephemeral port.
    pub local: SockAddr,
    /// The peer: accept's returned address, or connect's target.
    pub remote: SockAddr,
    /// The task's command name: names short-lived processes that exit before the agent can
    /// read /proc.
    pub comm: [u8; 16],
}

/// Fixed part of a data record; `captured` payload bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DataHeader {
    pub kind: u32,
    pub direction: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
    /// How many payload bytes follow this header (≤ the capture cap).
    pub captured: u32,
    /// `data_flags::*`.
    pub flags: u32,
    /// The unit of work the thread was running (see [`cause`]).
    pub cause_kind: u32,
    /// Syscall entry and exit, CLOCK_MONOTONIC (bpf_ktime_get_ns).
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
    /// Bytes the syscall actually transferred (≥ `captured`).
    pub total_len: u64,
    /// Which unit (see [`cause`]).
    pub cause_id: u64,
}

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

/// Flags of a data record.
pub mod data_flags {
    /// Plaintext read at the TLS library boundary (SSL_read/SSL_write), not from a syscall.
    pub const TLS: u32 = 1;
    /// The record's `tid` names a goroutine (`GOROUTINE_ACTOR` set), not a thread: Go moves
    /// goroutines between threads, and a request's work is the goroutine's.
    pub const GOROUTINE: u32 = 2;
}

/// Set in a data record's `tid` when it names a goroutine: above any thread id (the kernel's
/// PID_MAX_LIMIT is 2^22), so the agent's per-"thread" linking works per goroutine unchanged.
pub const GOROUTINE_ACTOR: u32 = 1 << 31;

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

/// `fd` of a TLS record whose socket is not known yet (no syscall seen inside the SSL call).
pub const FD_UNKNOWN: u32 = u32::MAX;

/// A full data record as the probes fill it in per-CPU scratch space before output.
#[repr(C)]
pub struct DataEvent {
    pub header: DataHeader,
    pub payload: [u8; MAX_PAYLOAD],
}

/// A traced process closed a socket fd the probes had seen.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CloseEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
    pub ts_ns: u64,
}

/// A traced process forked: the child holds a copy of the parent's socket `fd` (a pre-forking
/// server's backend serves the connection its parent accepted). Also sent for new threads,
/// which the tracepoint cannot tell apart; the agent checks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InheritEvent {
    pub kind: u32,
    pub parent_tgid: u32,
    pub child: u32,
    pub fd: u32,
}

/// A traced process forked (`child` may also be a new thread; the agent checks) or a traced
/// task called exec. Sent with a wakeup: the agent attaches per-process uprobes (TLS) to the
/// new process before it gets far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessEvent {
    pub kind: u32,
    pub pid: u32,
    /// The forking process; 0 for an exec.
    pub parent_tgid: u32,
    pub _pad: u32,
}

/// A traced process ended (its last thread exited) at `ts_ns`: the requests it was serving or
/// waiting on end there, cut off. `voluntary` is 1 when it called exit_group (with `code`), 0
/// when it was killed (a signal's default action never calls it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub kind: u32,
    pub tgid: u32,
    pub ts_ns: u64,
    pub voluntary: u32,
    pub code: i32,
}

/// Thread `tid` just wrote the ciphertext of its last TLS write to socket `fd`: the TLS records
/// it sent with an unknown fd (a memory BIO, as in node) belong to that socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsSocketEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
}

/// A unit of work was created (an asyncio task): `parent_kind`/`parent_id` name the unit the
/// creating thread was running (`cause::*`), so work handed to a child task stays with the
/// request its creator serves. Sent for every creation, also outside any unit (`parent_kind`
/// NONE or OUTSIDE), because a new task may reuse a freed task's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnitSpawnEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub parent_kind: u32,
    pub parent_id: u64,
    pub child_id: u64,
    pub ts_ns: u64,
}

/// Work handed between threads through a queue the probes watch (CPython's `SimpleQueue`,
/// which `ThreadPoolExecutor` uses): thread `tid` put `item` (`take` 0, with the unit it was
/// running), or took it (`take` 1). The agent pairs the two by `item`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandOffEvent {
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub take: u32,
    pub item: u64,
    pub cause_kind: u32,
    pub _pad: u32,
    pub cause_id: u64,
}

/// What the probes know about a (tgid, fd): set at accept/connect, by the agent for fds it
/// classified from /proc, removed at close.
pub mod fd_state {
    /// Not a socket (file, pipe, tty): the probes ignore its reads and writes.
    pub const NOT_SOCKET: u8 = 1;
    /// A socket the process accepted or connected, or one the agent found in /proc.
    pub const SOCKET: u8 = 2;
    /// A socket carrying TLS that the TLS probes decrypt: its syscall bytes (ciphertext) are
    /// not captured.
    pub const TLS: u8 = 3;
    /// A socket whose bytes the agent does not parse (no protocol it knows, or TLS ciphertext
    /// it saw before the TLS probes tied it to an SSL): not captured, but still a socket, so
    /// an SSL call's syscalls on it tie the SSL to it.
    pub const FOREIGN: u8 = 4;
}

/// Key of the per-fd state map: `(tgid << 32) | fd`.
#[inline(always)]
pub const fn fd_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}

// The agent decodes by these sizes; a field added without its padding would shift every
// record after it.
const _: () = assert!(size_of::<DataHeader>() == 64);
const _: () = assert!(size_of::<ConnOpenEvent>() == 112);
const _: () = assert!(size_of::<Unit>() == 32);
const _: () = assert!(size_of::<UnitSpawnEvent>() == 40);
const _: () = assert!(size_of::<HandOffEvent>() == 40);
const _: () = assert!(size_of::<ExitEvent>() == 24);

/// Safe decoding of ring-buffer records on the agent side.
pub mod decode {
    use super::*;

    /// A decoded record borrowing the ring buffer bytes.
    pub enum Record<'a> {
        ConnOpen(ConnOpenEvent),
        Data(DataHeader, &'a [u8]),
        Close(CloseEvent),
        Inherit(InheritEvent),
        Process(ProcessEvent),
        TlsSocket(TlsSocketEvent),
        UnitSpawn(UnitSpawnEvent),
        HandOff(HandOffEvent),
        Exit(ExitEvent),
    }

    /// Why a record could not be decoded (a probe/agent version mismatch, never traffic).
    #[derive(Debug, PartialEq, Eq)]
    pub enum DecodeError {
        Short { kind: u32, len: usize },
        UnknownKind(u32),
    }

    fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
        if bytes.len() < size_of::<T>() {
            return None;
        }
        // SAFETY: the length was checked above; T is a plain-old-data #[repr(C)] struct with no
        // invalid bit patterns, and read_unaligned does not require alignment.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    pub fn record(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
        let kind = read::<u32>(bytes).ok_or(DecodeError::Short { kind: 0, len: bytes.len() })?;
        let short = DecodeError::Short { kind, len: bytes.len() };
        match kind {
            kind::CONN_OPEN => read(bytes).map(Record::ConnOpen).ok_or(short),
            kind::CLOSE => read(bytes).map(Record::Close).ok_or(short),
            kind::INHERIT => read(bytes).map(Record::Inherit).ok_or(short),
            kind::PROCESS => read(bytes).map(Record::Process).ok_or(short),
            kind::TLS_SOCKET => read(bytes).map(Record::TlsSocket).ok_or(short),
            kind::UNIT_SPAWN => read(bytes).map(Record::UnitSpawn).ok_or(short),
            kind::HAND_OFF => read(bytes).map(Record::HandOff).ok_or(short),
            kind::EXIT => read(bytes).map(Record::Exit).ok_or(short),
            kind::DATA => {
                let header: DataHeader = read(bytes).ok_or(short)?;
                let start = size_of::<DataHeader>();
                let end = start.saturating_add(header.captured as usize);
                let payload = bytes.get(start..end).ok_or(DecodeError::Short { kind, len: bytes.len() })?;
                Ok(Record::Data(header, payload))
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}
