//! Process and runtime records: forks and execs, exits, TLS sockets learnt late, units of work
//! created and handed between threads.

use crate::RecordHeader;

/// A traced process forked (`pid` may also be a new thread; the agent checks) or a task
/// called exec (the header's tgid is `pid`): a traced one, or any but the agent's when the
/// agent discovers processes by selectors (`DISCOVER_EXECS`). Sent with a wakeup: the agent
/// attaches per-process uprobes (TLS) to the new process before it gets far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessEvent {
    pub header: RecordHeader,
    /// The forking process; 0 for an exec.
    pub parent_tgid: u32,
    /// 1 when the process is traced; 0 for an exec reported only for discovery.
    pub traced: u32,
}

/// A traced process ended (its last thread exited) at `ts_ns`: the requests it was serving or
/// waiting on end there, cut off. `voluntary` is 1 when it called exit_group (with `code`), 0
/// when it was killed (a signal's default action never calls it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitEvent {
    pub header: RecordHeader,
    pub ts_ns: u64,
    pub voluntary: u32,
    pub code: i32,
}

/// Thread `tid` just wrote the ciphertext of its last TLS write to socket `fd`: the TLS records
/// it sent with an unknown fd (a memory BIO, as in node) belong to that socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsSocketEvent {
    pub header: RecordHeader,
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
    pub header: RecordHeader,
    pub tid: u32,
    pub parent_kind: u32,
    pub parent_id: u64,
    pub child_id: u64,
    pub ts_ns: u64,
}

/// A multiplexing client library will write stream `stream`'s request on behalf of `caller`
/// (a record `tid`) running unit `cause_kind`/`cause_id` (`cause::*`), at `ts_ns`: grpc-go's
/// loopy goroutine handling a header its caller's goroutine queued (cause NONE), or node's
/// nghttp2 handing out a stream id inside the event-loop callback that asked for it. Lets the
/// agent place each stream of a write that carries several, or that is made later.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamCallerEvent {
    pub header: RecordHeader,
    pub stream: u32,
    pub caller: u32,
    pub cause_kind: u32,
    pub _pad: u32,
    pub cause_id: u64,
    pub ts_ns: u64,
}

/// Work handed between threads through a queue the probes watch (CPython's `SimpleQueue`,
/// which `ThreadPoolExecutor` uses): thread `tid` put `item` (`take` 0, with the unit it was
/// running), or took it (`take` 1). The agent pairs the two by `item`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandOffEvent {
    pub header: RecordHeader,
    pub tid: u32,
    pub take: u32,
    pub item: u64,
    pub cause_kind: u32,
    pub _pad: u32,
    pub cause_id: u64,
}

/// `HeaderFieldEvent::flags`.
pub mod header_flags {
    /// The library decoded the field from the peer (a server's), else it was handed the field
    /// to send (a client's).
    pub const DECODED: u8 = 1;
    /// No field: the thread's list for the stream is whole.
    pub const END: u8 = 2;
}

/// Bytes of a header field's name and value a `HeaderFieldEvent` carries.
pub const HEADER_NAME_BYTES: usize = 32;
pub const HEADER_VALUE_BYTES: usize = 224;

/// One header field of stream `stream`'s request, as the traced process's own HTTP/2 library
/// saw it: decoded from the peer (a server's) or handed to the encoder (a client's), by thread
/// `tid` running `cause_kind`/`cause_id`. Sent only for processes whose connections name HPACK
/// entries the agent never saw (opened before it attached); the agent completes those fields
/// with them. `name_len`/`value_len` are the true lengths (saturated); the arrays hold their
/// first bytes. `flags`: `header_flags::*`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderFieldEvent {
    pub header: RecordHeader,
    pub tid: u32,
    pub stream: u32,
    pub cause_kind: u32,
    pub name_len: u8,
    pub flags: u8,
    pub value_len: u16,
    pub cause_id: u64,
    pub ts_ns: u64,
    pub name: [u8; HEADER_NAME_BYTES],
    pub value: [u8; HEADER_VALUE_BYTES],
}
