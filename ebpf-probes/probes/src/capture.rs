//! Building and submitting ring-buffer records.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_loop, bpf_probe_read_user as read_user_raw},
    },
};
use zerotrace_abi::{
    CloseEvent, ConnOpenEvent, DataHeader, ExitEvent, HEADER_NAME_BYTES, HEADER_VALUE_BYTES, HandOffEvent, HeaderFieldEvent, InheritEvent, MAX_PAYLOAD, ProcessEvent, RecordHeader,
    SockAddr, StreamCallerEvent, TlsSocketEvent, UnitSpawnEvent, direction, header_flags, kind, stat,
};

use aya_ebpf::maps::ring_buf::RingBufEntry;

use crate::maps::{DataCall, EVENTS, LOOP_GATHER, PAYLOAD_CAP, SCRATCH, WAKEUP_BYTES, count, op, setting_u8, setting_u32, setting_u64};

/// Wakes the reader when a record of `len` bytes takes the unread bytes across a multiple of
/// WAKEUP_BYTES; it drains on a timer otherwise. Waking on every record past the threshold
/// would send a wakeup per record until the reader ran: each is an irq_work
/// self-interrupt, an APIC write that exits to the hypervisor on a VM (0.8% of nginx's time
/// under wrk). Two CPUs submitting at once may both miss a crossing; the next multiple, or
/// the reader's timer, catches up.
#[inline(always)]
fn wakeup_flag(len: u64) -> u64 {
    let step = setting_u64(&WAKEUP_BYTES);
    if step == 0 {
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    let unread = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    if (unread + len) / step != unread / step { BPF_RB_FORCE_WAKEUP as u64 } else { BPF_RB_NO_WAKEUP as u64 }
}

#[inline(always)]
fn submit_bytes(bytes: &[u8], flags: u64) {
    if EVENTS.output::<[u8]>(bytes, flags).is_err() {
        count(stat::RINGBUF_FULL);
    }
}

/// Submits a fixed-size record, waking the reader as `flags` say.
#[inline(always)]
fn submit_with<T>(record: &T, flags: u64) {
    // SAFETY: T is a #[repr(C)] record without padding holes that matter to the reader; viewing
    // it as bytes for the duration of the copy into the ring buffer is sound.
    let bytes = unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) };
    submit_bytes(bytes, flags);
}

#[inline(always)]
fn submit<T>(record: &T) {
    submit_with(record, wakeup_flag(size_of::<T>() as u64));
}

// Six arguments: BPF passes at most five in registers, so this must be inlined.
#[inline(always)]
pub fn conn_open(pid_tgid: u64, role: u32, fd: u32, listen_fd: u32, local: SockAddr, remote: SockAddr, generation: u8) {
    let (cause_kind, cause_id) = crate::units::current(pid_tgid as u32);
    let event = ConnOpenEvent {
        header: RecordHeader::new(kind::CONN_OPEN, (pid_tgid >> 32) as u32),
        role,
        tid: pid_tgid as u32,
        fd,
        listen_fd,
        cause_kind,
        generation: u32::from(generation),
        cause_id,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        local,
        remote,
        comm: aya_ebpf::helpers::bpf_get_current_comm().unwrap_or([0; 16]),
    };
    submit(&event);
}

pub fn close(pid_tgid: u64, fd: u32) {
    let event = CloseEvent {
        header: RecordHeader::new(kind::CLOSE, (pid_tgid >> 32) as u32),
        tid: pid_tgid as u32,
        fd,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    };
    submit(&event);
}

pub fn inherit(parent_tgid: u32, child: u32, fd: u32) {
    submit(&InheritEvent { header: RecordHeader::new(kind::INHERIT, parent_tgid), child, fd });
}

pub fn tls_socket(pid_tgid: u64, fd: u32) {
    submit(&TlsSocketEvent { header: RecordHeader::new(kind::TLS_SOCKET, (pid_tgid >> 32) as u32), tid: pid_tgid as u32, fd });
}

/// A unit of work (an asyncio task) was created by thread `pid_tgid`, inside `parent`.
pub fn unit_spawn(pid_tgid: u64, parent: (u32, u64), child_id: u64) {
    submit(&UnitSpawnEvent {
        header: RecordHeader::new(kind::UNIT_SPAWN, (pid_tgid >> 32) as u32),
        tid: pid_tgid as u32,
        parent_kind: parent.0,
        parent_id: parent.1,
        child_id,
        // SAFETY: helper without arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    });
}

/// Thread `pid_tgid` put `item` on a watched queue (`take` false, inside `cause`) or took it.
pub fn hand_off(pid_tgid: u64, take: bool, item: u64, cause: (u32, u64)) {
    submit(&HandOffEvent {
        header: RecordHeader::new(kind::HAND_OFF, (pid_tgid >> 32) as u32),
        tid: pid_tgid as u32,
        take: u32::from(take),
        item,
        cause_kind: cause.0,
        _pad: 0,
        cause_id: cause.1,
    });
}

/// Stream `stream` is written for `caller` (a record tid) running `cause`, see
/// `StreamCallerEvent`.
pub fn stream_caller(tgid: u32, stream: u32, caller: u32, cause: (u32, u64)) {
    // SAFETY: helper without arguments.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    submit(&StreamCallerEvent { header: RecordHeader::new(kind::STREAM_CALLER, tgid), stream, caller, cause_kind: cause.0, _pad: 0, cause_id: cause.1, ts_ns });
}

/// Reserves a header field record and writes its fixed part, texts empty.
#[inline(always)]
fn header_record(tgid: u32, tid: u32, stream: u32, cause: (u32, u64), flags: u8) -> Option<RingBufEntry<HeaderFieldEvent>> {
    let Some(mut entry) = EVENTS.reserve::<HeaderFieldEvent>(0) else {
        count(stat::RINGBUF_FULL);
        return None;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved record, written here before it is submitted.
    unsafe {
        (*event).header = RecordHeader::new(kind::HEADER_FIELD, tgid);
        (*event).tid = tid;
        (*event).stream = stream;
        (*event).cause_kind = cause.0;
        (*event).cause_id = cause.1;
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).flags = flags;
        (*event).name_len = 0;
        (*event).value_len = 0;
    }
    Some(entry)
}

/// Sends one field: the first bytes of its name and value, and their lengths; `decoded` from
/// the peer, or handed over to send.
#[inline(always)]
pub fn header_field(tgid: u32, tid: u32, stream: u32, cause: (u32, u64), decoded: bool, name: (u64, u64), value: (u64, u64)) {
    let flags = if decoded { header_flags::DECODED } else { 0 };
    let Some(mut entry) = header_record(tgid, tid, stream, cause, flags) else { return };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved record; the copies stay inside its arrays
    // (lengths bounded by their sizes) and the helper checks the user sources.
    unsafe {
        (*event).name_len = if name.1 > u8::MAX as u64 { u8::MAX } else { name.1 as u8 };
        (*event).value_len = if value.1 > u16::MAX as u64 { u16::MAX } else { value.1 as u16 };
        let n = if name.1 > HEADER_NAME_BYTES as u64 { HEADER_NAME_BYTES as u32 } else { name.1 as u32 };
        if read_user_raw((*event).name.as_mut_ptr().cast(), n, name.0 as *const core::ffi::c_void) != 0 {
            (*event).name_len = 0;
        }
        let v = if value.1 > HEADER_VALUE_BYTES as u64 { HEADER_VALUE_BYTES as u32 } else { value.1 as u32 };
        if read_user_raw((*event).value.as_mut_ptr().cast(), v, value.0 as *const core::ffi::c_void) != 0 {
            (*event).value_len = u16::MAX;
        }
    }
    entry.submit(wakeup_flag(size_of::<HeaderFieldEvent>() as u64));
}

/// Thread `tid`'s field list for `stream` is whole (see `header_flags::END`).
#[inline(always)]
pub fn header_fields_end(tgid: u32, tid: u32, stream: u32, decoded: bool) {
    let flags = header_flags::END | if decoded { header_flags::DECODED } else { 0 };
    if let Some(entry) = header_record(tgid, tid, stream, (0, 0), flags) {
        entry.submit(wakeup_flag(size_of::<HeaderFieldEvent>() as u64));
    }
}

/// A new traced process (or thread) or an exec. Wakes the agent at once: it has uprobes to
/// attach for the process, and forks and execs are rare next to data.
pub fn process(pid: u32, parent_tgid: u32, traced: bool) {
    submit_with(&ProcessEvent { header: RecordHeader::new(kind::PROCESS, pid), parent_tgid, traced: u32::from(traced) }, BPF_RB_FORCE_WAKEUP as u64);
}

/// A traced process ended; its cut-off requests can wait for the next drain (no wakeup).
pub fn process_exit(tgid: u32, code: Option<i32>) {
    // SAFETY: helper without arguments.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    submit(&ExitEvent { header: RecordHeader::new(kind::EXIT, tgid), ts_ns, voluntary: u32::from(code.is_some()), code: code.unwrap_or(0) });
}

/// One `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Iovec {
    base: u64,
    len: u64,
}

/// iovecs gathered per readv/writev/recvmsg/sendmsg without bpf_loop: drivers build a request
/// from several buffers (node's pg sends Parse, Bind, Describe, Execute and Sync as five
/// iovecs). Unrolled; 32 exceeds what the verifier accepts.
const MAX_IOVECS: u64 = 16;
/// iovecs gathered with bpf_loop (Linux ≥ 5.17), whose body the verifier checks once: HTTP/2
/// stacks write each frame's header and payload as buffers of their own, dozens per write
/// (grpc-core, node's nghttp2). UIO_MAXIOV is 1024; the capture cap ends it sooner.
const MAX_IOVECS_LOOP: u32 = 256;

/// Copies `n` user bytes from `src` to `payload + off`; None when the read faulted.
#[inline(always)]
fn copy_user(payload: *mut u8, off: u64, src: u64, n: u64) -> Option<u64> {
    // Bounds the verifier can see: off < MAX_PAYLOAD and n ≤ MAX_PAYLOAD, so the copy stays
    // inside the payload and the slack after it.
    let off = off & (MAX_PAYLOAD as u64 - 1);
    // Read back through a volatile load: where a caller's bounds let LLVM prove n ≤ MAX_PAYLOAD
    // it drops the clamp below, but the verifier, tracking `want - off` as signed, cannot.
    // SAFETY: a read of a local.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = if n > MAX_PAYLOAD as u64 { MAX_PAYLOAD as u64 } else { n };
    if n == 0 {
        return Some(0);
    }
    // SAFETY: payload points at the scratch record's payload, which is followed by
    // MAX_PAYLOAD bytes of slack, so off + n < 2 * MAX_PAYLOAD stays inside the map value; the
    // helper checks the user source and returns an error instead of faulting.
    let ret = unsafe { read_user_raw(payload.add(off as usize).cast(), n as u32, src as *const core::ffi::c_void) };
    if ret != 0 {
        count(stat::READ_FAULT);
        return None;
    }
    Some(n)
}

/// Copies what `want` still needs of one iovec to `payload + off`: the bytes copied, or None
/// when the read faulted.
#[inline(always)]
fn copy_iovec(payload: *mut u8, off: u64, iov: &Iovec, want: u64) -> Option<u64> {
    let n = if iov.len < want - off { iov.len } else { want - off };
    copy_user(payload, off, iov.base, n)
}

/// Copies the first `want` bytes moved by a vectored call, iovec after iovec, into `payload`.
/// Returns how many were copied (fewer when the call used more buffers than are gathered or a
/// read faulted; the rest counts as a gap).
#[inline(always)]
fn gather(payload: *mut u8, iovecs: u64, want: u64) -> u64 {
    // The first two iovecs in one read: most vectored calls use one or two (a head and a body),
    // and a checked user read costs about the same at 16 bytes as at 32. Reading past a
    // one-buffer array is harmless: the copy ends at `want`, within the buffers the call used
    // (it moved at least `want` bytes). Only an array ending at an unmapped page fails the
    // pair; then the first is read alone.
    // SAFETY: reading the user's iovec array through the checked helper.
    let (pair, next) = match unsafe { bpf_probe_read_user(iovecs as *const [Iovec; 2]) } {
        Ok(pair) => (pair, 2),
        // SAFETY: as above.
        Err(_) => match unsafe { bpf_probe_read_user(iovecs as *const Iovec) } {
            Ok(first) => ([first, Iovec { base: 0, len: 0 }], 1),
            Err(_) => return 0,
        },
    };
    let mut off: u64 = 0;
    for iov in pair {
        if off >= want {
            return off;
        }
        match copy_iovec(payload, off, &iov, want) {
            Some(copied) => off += copied,
            None => return off,
        }
    }
    if off >= want || next < 2 {
        return off;
    }
    // Load-time switch (`.rodata` is frozen): on older kernels the verifier prunes this
    // branch and never sees the helper it does not know.
    if setting_u8(&LOOP_GATHER) != 0 {
        let mut state = Gather { iovecs: iovecs + 2 * size_of::<Iovec>() as u64, want, off };
        // SAFETY: the callback is a BPF subprogram taking (index, ctx); ctx points at `state`
        // on this stack, which outlives the call.
        unsafe { bpf_loop(MAX_IOVECS_LOOP - 2, gather_step as *mut core::ffi::c_void, (&raw mut state).cast(), 0) };
        return state.off;
    }
    for i in 2..MAX_IOVECS {
        if off >= want {
            break;
        }
        // SAFETY: reading the user's iovec array through the checked helper.
        let Ok(iov) = (unsafe { bpf_probe_read_user((iovecs + i * size_of::<Iovec>() as u64) as *const Iovec) }) else {
            break;
        };
        match copy_iovec(payload, off, &iov, want) {
            Some(copied) => off += copied,
            None => break,
        }
    }
    off
}

/// `gather`'s progress across bpf_loop iterations.
#[repr(C)]
struct Gather {
    /// The iovecs still to gather (past the two read first).
    iovecs: u64,
    want: u64,
    off: u64,
}

/// One iovec of a bpf_loop gather: 0 to go on, 1 to stop. The payload is this CPU's scratch
/// record's, looked up again (a map value pointer does not travel through the loop's context).
#[inline(never)]
extern "C" fn gather_step(i: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes `gather`'s `Gather` as ctx.
    let state = unsafe { &mut *ctx.cast::<Gather>() };
    // `off` never passes MAX_PAYLOAD (`want` is at most that), but the verifier cannot know:
    // said here, the range of `off` at the callback's entry stops growing after two rounds,
    // and the verifier's states converge (without it, 6.18 walked all 256 rounds and gave up).
    if state.off >= state.want || state.off >= MAX_PAYLOAD as u64 {
        return 1;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    // SAFETY: this CPU's scratch record, as in `data`, which is running the loop.
    let payload: *mut u8 = unsafe { (*scratch).event.payload.as_mut_ptr() };
    // SAFETY: reading the user's iovec array through the checked helper.
    let Ok(iov) = (unsafe { bpf_probe_read_user((state.iovecs + u64::from(i) * size_of::<Iovec>() as u64) as *const Iovec) }) else {
        return 1;
    };
    match copy_iovec(payload, state.off, &iov, state.want) {
        Some(copied) => {
            state.off += copied;
            0
        }
        None => 1,
    }
}

/// Emits a data record for a completed read/write-family call (or TLS call, with
/// `data_flags::TLS`) that moved `transferred` bytes.
pub fn data(pid_tgid: u64, call: &DataCall, transferred: u64, flags: u32) {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: SCRATCH slot 0 is this CPU's private buffer; programs on one CPU do not nest
    // for tracepoints, so nothing else uses it while we fill it.
    let scratch = unsafe { &mut *scratch };

    let (dir, vectored) = match call.op {
        op::READ | op::PIPE_READ => (direction::INGRESS, false),
        op::WRITE => (direction::EGRESS, false),
        op::READV => (direction::INGRESS, true),
        op::WRITEV => (direction::EGRESS, true),
        // sendfile: the bytes come from a file; only the count matters.
        op::SENDFILE => (direction::EGRESS, false),
        _ => return,
    };
    // The connection's own cap, when the agent set one (a parser that needs less, or more:
    // HTTP/2 multiplexes many frames into one write), else the global one.
    let cap = if call.capture_cap != 0 { call.capture_cap as u64 } else { setting_u32(&PAYLOAD_CAP) as u64 };
    let mut want = if transferred < cap { transferred } else { cap };
    if want > MAX_PAYLOAD as u64 {
        want = MAX_PAYLOAD as u64;
    }
    let payload: *mut u8 = scratch.event.payload.as_mut_ptr();
    let n = if call.op == op::SENDFILE || call.ptr == 0 {
        0
    } else if vectored {
        gather(payload, call.ptr, want)
    } else {
        copy_user(payload, 0, call.ptr, want).unwrap_or(0)
    };
    // One clock read per call. Spans start and end at a write's entry (a client's request, a
    // server's answer) and at a read's return (a server's request, a client's answer), so
    // the record carries that moment as both its ends. Each read is a rdtsc, which this VM
    // samples at ~10% of the probes' time.
    let ts_ns = if dir == direction::EGRESS && call.ts_enter_ns != 0 {
        call.ts_enter_ns
    } else {
        // SAFETY: helper without arguments.
        unsafe { bpf_ktime_get_ns() }
    };
    let event = &mut scratch.event;
    let (cause_kind, cause_id) = crate::units::current(pid_tgid as u32);
    event.fixed = DataHeader {
        header: RecordHeader::new(kind::DATA, (pid_tgid >> 32) as u32),
        direction: dir,
        tid: pid_tgid as u32,
        fd: call.fd,
        captured: n as u32,
        flags: if call.op == op::PIPE_READ { flags | zerotrace_abi::data_flags::PIPE } else { flags },
        cause_kind,
        ts_enter_ns: ts_ns,
        ts_exit_ns: ts_ns,
        total_len: transferred,
        cause_id,
    };
    let len = size_of::<DataHeader>() + n as usize;
    if len > size_of::<zerotrace_abi::DataEvent>() {
        return;
    }
    // SAFETY: len ≤ size_of::<DataEvent>(), checked just above, so the slice stays inside the
    // scratch record.
    let bytes = unsafe { core::slice::from_raw_parts((event as *const zerotrace_abi::DataEvent).cast::<u8>(), len) };
    submit_bytes(bytes, wakeup_flag(len as u64));
}
