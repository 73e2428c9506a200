//! The binary contract between the kernel programs and the agent, record format v2.
//!
//! Every record the probes put in the ring buffer starts with a [`RecordHeader`]: its kind, the
//! format version and the process it is about. The decoder relies on the header being first:
//! it reads the header, checks the version, then the record its kind names. Kinds have stable
//! explicit ids, grouped by family with room to grow (`kind`). Each record is a `#[repr(C)]`
//! struct with its size asserted below, so a field added without its padding fails to build.
//! This crate is `no_std` so the probes can use it; the agent decodes with [`decode`].
#![no_std]

mod conn;
mod data;
pub mod decode;
pub mod names;
mod process;

pub use conn::*;
pub use data::*;
pub use process::*;

/// The record format this crate describes. Records of another version are refused by the
/// decoder (an agent and probes from different builds), never misread.
pub const FORMAT_VERSION: u16 = 2;

/// Words of the traced-pid bitmap (`TARGET_PIDS`): one bit per pid up to the kernel's
/// PID_MAX_LIMIT (2^22). An array lookup is inlined by the verifier, unlike a hash lookup, and
/// every syscall of every process on the host asks it first.
pub const PID_WORDS: u32 = 1 << 16;

/// Record kinds: stable ids, one family per high nibble, holes left for growth. An id is
/// never reused for another layout.
pub mod kind {
    // Connections: 0x10..
    pub const CONN_OPEN: u16 = 0x10;
    pub const CLOSE: u16 = 0x11;
    pub const INHERIT: u16 = 0x12;
    // Data: 0x20..
    pub const DATA: u16 = 0x20;
    /// A datagram with its peer's address (UDP: DNS). Decoded; not emitted yet.
    pub const DATAGRAM: u16 = 0x21;
    // Processes: 0x30..
    pub const PROCESS: u16 = 0x30;
    pub const EXIT: u16 = 0x31;
    // TLS: 0x40..
    pub const TLS_SOCKET: u16 = 0x40;
    // Runtime units of work: 0x50..
    pub const UNIT_SPAWN: u16 = 0x50;
    pub const HAND_OFF: u16 = 0x51;
    pub const STREAM_CALLER: u16 = 0x52;
    pub const HEADER_FIELD: u16 = 0x53;
}

/// First in every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// `kind::*`.
    pub kind: u16,
    /// `FORMAT_VERSION`.
    pub version: u16,
    /// The process the record is about (for a fork, the parent; for a new process, itself).
    pub tgid: u32,
}

impl RecordHeader {
    #[inline(always)]
    pub const fn new(kind: u16, tgid: u32) -> Self {
        Self { kind, version: FORMAT_VERSION, tgid }
    }
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

// The decoder reads by these sizes; a field added without its padding would shift every
// record after it.
const _: () = assert!(size_of::<RecordHeader>() == 8);
const _: () = assert!(size_of::<DataHeader>() == 64);
const _: () = assert!(size_of::<DatagramHeader>() == 88);
const _: () = assert!(size_of::<ConnOpenEvent>() == 112);
const _: () = assert!(size_of::<CloseEvent>() == 24);
const _: () = assert!(size_of::<InheritEvent>() == 16);
const _: () = assert!(size_of::<ProcessEvent>() == 16);
const _: () = assert!(size_of::<ExitEvent>() == 24);
const _: () = assert!(size_of::<TlsSocketEvent>() == 16);
const _: () = assert!(size_of::<Unit>() == 32);
const _: () = assert!(size_of::<UnitSpawnEvent>() == 40);
const _: () = assert!(size_of::<HandOffEvent>() == 40);
const _: () = assert!(size_of::<StreamCallerEvent>() == 40);
const _: () = assert!(size_of::<HeaderFieldEvent>() == 40 + HEADER_NAME_BYTES + HEADER_VALUE_BYTES);
const _: () = assert!(size_of::<FdState>() == 4);
