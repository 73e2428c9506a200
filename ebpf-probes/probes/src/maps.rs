//! Maps and load-time settings shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use zerotrace_abi::{DataEvent, FdState, PID_WORDS, SockAddr, stat};

/// Processes over their overhead budget (one bit per pid, set by the agent): the sockets they
/// open from now on copy `HEAD_ONLY_CAPTURE` bytes a call (the agent caps their open ones).
#[map]
pub static HEAD_ONLY_PIDS: Array<u64> = Array::with_max_entries(PID_WORDS, 0);

/// Whether process `tgid` is over its overhead budget (heads only). One array lookup.
#[inline(always)]
pub fn head_only(tgid: u32) -> bool {
    HEAD_ONLY_PIDS.get(tgid >> 6).is_some_and(|word| *word & (1u64 << (tgid & 63)) != 0)
}

/// The capture of a socket `tgid` just opened: heads only for a process over its overhead
/// budget, else `otherwise` (0: the payload cap). On accept and connect only.
#[inline(always)]
pub fn opening_cap(tgid: u32, otherwise: u16) -> u16 {
    if head_only(tgid) { zerotrace_abi::HEAD_ONLY_CAPTURE } else { otherwise }
}

/// Payload capture cap, set by the agent at load time (≤ MAX_PAYLOAD).
#[unsafe(no_mangle)]
pub static PAYLOAD_CAP: u32 = zerotrace_abi::DEFAULT_PAYLOAD_CAP;
/// Capture of a connected socket until the agent has recognised its protocol (0: the payload
/// cap): a client's first write is its first request or message, whole (a queued task of a
/// kilobyte and more: its identity and headers need all of it).
#[unsafe(no_mangle)]
pub static CLIENT_FIRST_CAP: u32 = 0;
/// Unread bytes in the ring buffer above which a record wakes the reader (the agent sets it;
/// see its WAKEUP_BYTES). Below it records are submitted without a wakeup and the agent drains
/// on its timer: a wakeup per record would cost the traced thread ~1.4 µs instead of ~25 ns.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 64 * 1024;
/// 1 for `--hooks-only`: every program returns as soon as it runs, so a benchmark can measure
/// what the hooks themselves cost the traced process (the floor under any real work).
#[unsafe(no_mangle)]
pub static HOOKS_ONLY: u8 = 0;
/// 1 when the kernel has BTF: Go processes' plain socket calls are then attributed to their
/// goroutine (`go_tls::syscall_goroutine`), which needs BTF-typed helpers.
#[unsafe(no_mangle)]
pub static GO_GOROUTINES: u8 = 0;
/// 1 when the kernel has bpf_loop (Linux ≥ 5.17): vectored calls are gathered over up to
/// `capture::MAX_IOVECS_LOOP` buffers instead of the unrolled 16.
#[unsafe(no_mangle)]
pub static LOOP_GATHER: u8 = 0;
/// The agent's own process: never traced, even inside a traced cgroup (its export
/// connections would become spans about spans).
#[unsafe(no_mangle)]
pub static AGENT_TGID: u32 = 0;
/// 1 when at least one cgroup is targeted; saves the cgroup lookup otherwise.
#[unsafe(no_mangle)]
pub static CGROUP_FILTER: u8 = 0;
/// 1 when the agent discovers processes by selectors: every exec is reported, traced or not
/// (execs are rare: one record each).
#[unsafe(no_mangle)]
pub static DISCOVER_EXECS: u8 = 0;

/// Processes (tgid) to trace, one bit per pid. Filled by the agent before the programs are
/// attached; afterwards only `task_newtask`/`sched_process_exit` change it, with atomic adds.
#[map]
pub static TARGET_PIDS: Array<u64> = Array::with_max_entries(PID_WORDS, 0);
/// cgroup v2 ids to trace (a container and its sub-cgroups, listed by the agent).
#[map]
pub static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);
/// Exit codes of traced processes that called exit_group, until their last thread is gone.
#[map]
pub static EXIT_CODES: LruHashMap<u32, i32> = LruHashMap::with_max_entries(4096, 0);
/// Per-(tgid, fd) state: socket / not a socket, and the fd's capture cap. LRU so leaked
/// entries can never fill it.
#[map]
pub static FD_STATE: LruHashMap<u64, FdState> = LruHashMap::with_max_entries(65536, 0);
/// In-flight slots: `INFLIGHT_SLOTS` of them, a power of two. The kernel's default pid_max
/// (32768) fits, so threads never share a slot there; above it, two traced threads whose ids
/// are equal modulo the count can, and the later one's call is counted as lost while the
/// other's is in flight.
pub const INFLIGHT_SLOTS: u32 = 1 << 16;
/// Arguments stashed at syscall entry, consumed at exit, and the SSL call a thread is inside,
/// one slot per thread id (see `slot`). An array, not a hash keyed by pid_tgid: its lookup is
/// inlined to an address computation, where the LRU hash cost a hash, a bucket walk and a
/// reference-bit write, two to three times per traced syscall.
#[map]
pub static INFLIGHT: Array<Inflight> = Array::with_max_entries(INFLIGHT_SLOTS, 0);
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
    /// The thread the slot's calls belong to. A slot with neither a syscall (`op`) nor an SSL
    /// call (`tls.op`) in flight is free for any thread to take.
    pub owner: u32,
    /// The fd and op of the thread's last data syscall, kept across calls. A TLS library
    /// that reads ciphertext into a memory BIO (node) calls SSL_read right after reading the
    /// socket: this is how its SSL learns its socket.
    pub last_fd: u32,
    pub last_op: u32,
    /// The fd's own capture cap (`FdState::capture_cap`), for the exit handler; 0: global.
    pub capture_cap: u32,
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
    /// An SSL whose write returned without a syscall inside and without a known socket (a
    /// memory BIO): the thread's next data syscall, if a write, sends its ciphertext.
    pub pending_ssl: u64,
}

/// An SSL call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsCall {
    /// op::READ or op::WRITE; op::NONE when no SSL call is in progress.
    pub op: u32,
    /// 1 for the _ex variants: the byte count is written through `len_ptr`.
    pub ex: u32,
    /// The socket a syscall inside this call moved its ciphertext on (`FD_UNKNOWN` until
    /// one does): the return probe then need not look the SSL's socket up.
    pub fd: u32,
    pub _pad: u32,
    pub ssl: u64,
    pub buf: u64,
    pub len_ptr: u64,
    pub ts_enter_ns: u64,
}

/// What `capture::data` needs of a completed data call. Kept apart from `Inflight` so that
/// building one is five stores: an `Inflight` written whole zeroes its connect and TLS parts,
/// which LLVM compiles to a call of the byte-at-a-time `memset` of compiler-builtins (~350 ns
/// on every traced syscall, measured with kernel.bpf_stats_enabled).
#[derive(Clone, Copy)]
pub struct DataCall {
    pub op: u32,
    pub fd: u32,
    /// The fd's own capture cap; 0: the global one.
    pub capture_cap: u32,
    pub ptr: u64,
    pub ts_enter_ns: u64,
}

impl Inflight {
    pub const IDLE: Inflight = Inflight {
        op: op::NONE,
        fd: 0,
        owner: 0,
        last_fd: 0,
        last_op: op::NONE,
        capture_cap: 0,
        ptr: 0,
        ts_enter_ns: 0,
        local: SockAddr { family: 0, port: 0, _pad: 0, addr: [0; 16] },
        remote: SockAddr { family: 0, port: 0, _pad: 0, addr: [0; 16] },
        tls: TlsCall::IDLE,
        pending_ssl: 0,
    };

    /// Starts a data syscall in this slot, writing only what its exit handler reads (see
    /// `DataCall`). The caller has checked that no SSL call is in flight and no SSL is
    /// pending, so the TLS part is idle already; the connect part belongs to connect alone.
    #[inline(always)]
    pub fn begin_data(&mut self, call_op: u32, fd: u32, ptr: u64, capture_cap: u16) {
        self.op = call_op;
        self.fd = fd;
        self.last_fd = fd;
        self.last_op = call_op;
        self.capture_cap = u32::from(capture_cap);
        self.ptr = ptr;
        self.ts_enter_ns = entry_time(call_op);
    }

    #[inline(always)]
    pub fn is_free(&self) -> bool {
        self.op == op::NONE && self.tls.op == op::NONE
    }
}

/// The in-flight slot of thread `tid`, if it is this thread's or free; `None` (counted as a
/// loss) when another thread with the same slot has a call in flight.
#[inline(always)]
pub fn slot(tid: u32) -> Option<&'static mut Inflight> {
    let ptr = INFLIGHT.get_ptr_mut(tid & (INFLIGHT_SLOTS - 1))?;
    // SAFETY: the pointer is into the array map's value memory, valid while the program runs.
    // Only the owning thread writes a slot between its entry and exit; two threads sharing a
    // slot index can race only for a free slot, and the loser's exit sees another owner and
    // drops its call (never reads a torn call as its own: `owner` is checked first).
    let slot = unsafe { &mut *ptr };
    if slot.owner == tid {
        return Some(slot);
    }
    if slot.is_free() {
        slot.owner = tid;
        return Some(slot);
    }
    count(stat::INFLIGHT_FULL);
    None
}

/// The slot of thread `tid` only if it already holds this thread's calls (exit handlers:
/// they never take a free slot).
#[inline(always)]
pub fn own_slot(tid: u32) -> Option<&'static mut Inflight> {
    let ptr = INFLIGHT.get_ptr_mut(tid & (INFLIGHT_SLOTS - 1))?;
    // SAFETY: as in `slot`.
    let slot = unsafe { &mut *ptr };
    if slot.owner == tid { Some(slot) } else { None }
}

/// The entry time a call keeps: a write's, since spans are timed by a write's entry and a
/// read's return (see `capture::data`); 0 for a read, which saves a clock read.
#[inline(always)]
pub fn entry_time(call_op: u32) -> u64 {
    if op::is_egress(call_op) {
        // SAFETY: helper without arguments.
        unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() }
    } else {
        0
    }
}

impl TlsCall {
    pub const IDLE: TlsCall = TlsCall { op: op::NONE, ex: 0, fd: zerotrace_abi::FD_UNKNOWN, _pad: 0, ssl: 0, buf: 0, len_ptr: 0, ts_enter_ns: 0 };
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
    /// pipe/pipe2: `ptr` is the user's `int[2]`.
    pub const PIPE: u32 = 8;
    /// read() on a pipe's read end (`fd_state::PIPE`).
    pub const PIPE_READ: u32 = 9;

    #[inline(always)]
    pub fn is_read(op: u32) -> bool {
        op == READ || op == READV
    }

    #[inline(always)]
    pub fn is_write(op: u32) -> bool {
        op == WRITE || op == WRITEV
    }

    /// Calls whose bytes leave the process (sendfile's too, though they are not copied).
    #[inline(always)]
    pub fn is_egress(op: u32) -> bool {
        is_write(op) || op == SENDFILE
    }
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
