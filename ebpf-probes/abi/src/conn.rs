//! Connection records: opened, closed, inherited by a child; and the per-fd state the probes
//! and the agent share.

use crate::RecordHeader;

/// Which side of the connection the traced process is on.
pub mod role {
    pub const UNKNOWN: u32 = 0;
    /// The process accepted the connection: it serves requests on it.
    pub const SERVER: u32 = 1;
    /// The process connected: it sends requests on it.
    pub const CLIENT: u32 = 2;
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
    pub header: RecordHeader,
    pub role: u32,
    pub tid: u32,
    pub fd: u32,
    /// accept: the listening socket the connection came from (its address is our end);
    /// `FD_UNKNOWN` otherwise.
    pub listen_fd: u32,
    /// The unit of work the task was running (see [`crate::cause`]).
    pub cause_kind: u32,
    /// The connection's `FdState::generation`.
    pub generation: u32,
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

/// A traced process closed a socket fd the probes had seen.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CloseEvent {
    pub header: RecordHeader,
    pub tid: u32,
    pub fd: u32,
    pub ts_ns: u64,
}

/// A traced process forked (the header's tgid is the parent): the child holds a copy of the
/// parent's socket `fd` (a pre-forking server's backend serves the connection its parent
/// accepted). Also sent for new threads, which the tracepoint cannot tell apart; the agent
/// checks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InheritEvent {
    pub header: RecordHeader,
    pub child: u32,
    pub fd: u32,
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
    /// The read end of a pipe a traced process made: the first `PIPE_CAPTURE` bytes of its
    /// reads are captured, for the ids of the messages a process hands to its workers (a
    /// Celery prefork child reads its task, with the task's id, from a pipe).
    pub const PIPE: u8 = 5;
    /// A TLS socket outside its process's sampled share (`--overhead-budget`): neither its
    /// ciphertext nor its plaintext is captured (the TLS probes look it up only for a process
    /// over its budget); an SSL call's syscalls on it still tie the SSL to it.
    pub const TLS_SKIPPED: u8 = 6;
}

/// Bytes copied per read on a pipe (`fd_state::PIPE`): a Celery job names its task id within
/// its first hundred bytes.
pub const PIPE_CAPTURE: u16 = 256;

/// Bytes copied per read or write on the sockets of a process over its overhead budget
/// (`HEAD_ONLY_PIDS`): a request line, a status line and the first headers.
pub const HEAD_ONLY_CAPTURE: u16 = 256;

/// Value of the per-fd state map (`FD_STATE`): what the fd is, and how much of each syscall's
/// bytes to copy, which the agent sets per connection (a parser that needs only a prefix).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdState {
    /// `fd_state::*`.
    pub state: u8,
    /// Set (non-zero) at accept/connect, and sent with the connection's open record: the agent
    /// writes a verdict only on the connection it judged, never on a later one that got the
    /// same fd number meanwhile. 0: an entry the agent made (a socket open before attach).
    pub generation: u8,
    /// Bytes to copy per syscall on this fd (up to `MAX_PAYLOAD`); 0: the global cap
    /// (`--capture-bytes`).
    pub capture_cap: u16,
}

impl FdState {
    #[inline(always)]
    pub const fn new(state: u8) -> Self {
        Self { state, generation: 0, capture_cap: 0 }
    }

    /// The entry as the 4-byte word the map holds, in this machine's byte order (the agent
    /// writes it through a map API that takes plain integers).
    pub const fn to_word(self) -> u32 {
        let cap = self.capture_cap.to_ne_bytes();
        u32::from_ne_bytes([self.state, self.generation, cap[0], cap[1]])
    }

    pub const fn from_word(word: u32) -> Self {
        let b = word.to_ne_bytes();
        Self { state: b[0], generation: b[1], capture_cap: u16::from_ne_bytes([b[2], b[3]]) }
    }
}

/// Key of the per-fd state map: `(tgid << 32) | fd`.
#[inline(always)]
pub const fn fd_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}
