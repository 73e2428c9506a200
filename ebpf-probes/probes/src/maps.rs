//! Maps and load-time settings shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use zerotrace_abi::{DataEvent, PID_WORDS, SockAddr, stat};

/// Payload capture cap, set by the agent at load time (≤ MAX_PAYLOAD).
#[unsafe(no_mangle)]
pub static PAYLOAD_CAP: u32 = zerotrace_abi::DEFAULT_PAYLOAD_CAP;
/// Unread bytes in the ring buffer above which a record wakes the reader. Below it records are
/// submitted without a wakeup and the agent drains on its timer: a wakeup per record would cost
/// the traced thread ~1.4 µs instead of ~25 ns.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 256 * 1024;
/// 1 when at least one cgroup is targeted; saves the cgroup lookup otherwise.
#[unsafe(no_mangle)]
pub static CGROUP_FILTER: u8 = 0;

/// Processes (tgid) to trace, one bit per pid. Filled by the agent before the programs are
/// attached; afterwards only `sched_process_fork`/`exit` change it, with atomic adds.
#[map]
pub static TARGET_PIDS: Array<u64> = Array::with_max_entries(PID_WORDS, 0);
/// cgroup v2 ids to trace (a container and its sub-cgroups, listed by the agent).
#[map]
pub static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);
/// Per-(tgid, fd) state: socket / not a socket. LRU so leaked entries can never fill it.
#[map]
pub static FD_STATE: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);
/// Arguments stashed at syscall entry, keyed by pid_tgid, consumed at exit; also the SSL
/// call the thread is inside, if any. A thread's entry stays and is overwritten in place (no
/// bucket lock, no irqsave: map updates were the most expensive part of a probe); consumed
/// calls are marked `op::NONE`. Entries of exited threads are removed by
/// `sched_process_exit`; LRU keeps any leak from filling the map.
#[map]
pub static INFLIGHT: LruHashMap<u64, Inflight> = LruHashMap::with_max_entries(65536, 0);
/// Every record goes here.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);
/// Scratch space for building a data record: too big for the 512-byte BPF stack. The slack
/// after the record lets gathered iovecs be copied at a variable offset with bounds the
/// verifier can check (offset < MAX_PAYLOAD, length ≤ MAX_PAYLOAD).
#[repr(C)]
pub struct Scratch {
    pub event: DataEvent,
    pub slack: [u8; zerotrace_abi::MAX_PAYLOAD],
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
/// Loss and activity counters, indexed by `zerotrace_abi::stat`.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// What a syscall entry handler leaves for its exit handler.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Inflight {
    pub op: u32,
    pub fd: u32,
    /// User pointer: the data buffer, the iovec array, or the sockaddr.
    pub ptr: u64,
    pub ts_enter_ns: u64,
    /// connect: our end, filled in by the TCP state change that picks the port.
    pub local: SockAddr,
    /// connect: the target address, read at entry.
    pub remote: SockAddr,
    /// The SSL_read/SSL_write call this thread is inside (`op::NONE` when none). Kept in the
    /// same slot so a data syscall learns "inside an SSL call" from the one lookup it makes.
    pub tls: TlsCall,
}

/// An SSL call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    /// op::READ or op::WRITE; op::NONE when no SSL call is in progress.
    pub op: u32,
    /// 1 for the _ex variants: the byte count is written through `len_ptr`.
    pub ex: u32,
    pub ssl: u64,
    pub buf: u64,
    pub len_ptr: u64,
    pub ts_enter_ns: u64,
}

impl TlsCall {
    pub const IDLE: TlsCall = TlsCall { op: op::NONE, ex: 0, ssl: 0, buf: 0, len_ptr: 0, ts_enter_ns: 0 };
}

pub mod op {
    /// Consumed: the exit handler already took this call.
    pub const NONE: u32 = 0;
    pub const ACCEPT: u32 = 1;
    pub const CONNECT: u32 = 2;
    pub const READ: u32 = 3;
    pub const WRITE: u32 = 4;
    pub const READV: u32 = 5;
    pub const WRITEV: u32 = 6;
    pub const SENDFILE: u32 = 7;
}

#[inline(always)]
pub fn count(index: u32) {
    if let Some(counter) = STATS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a per-CPU array slot owned by this CPU, so no other
        // writer can race with this increment.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn setting_u32(value: &'static u32) -> u32 {
    // SAFETY: reading a load-time constant; volatile keeps LLVM from folding the default value.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
pub fn setting_u64(value: &'static u64) -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(value) }
}

#[inline(always)]
pub fn setting_u8(value: &'static u8) -> u8 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(value) }
}
