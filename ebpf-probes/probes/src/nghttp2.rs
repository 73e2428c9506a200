//! nghttp2 (inside node).
//!
//! Which event-loop callback asked for each client stream: node's http2 module calls
//! `nghttp2_submit_request` synchronously from JavaScript's `session.request()`, inside the
//! callback that runs the caller's code, and nghttp2 hands out the stream id there; the frames
//! are written later, from a `setImmediate`, often several streams at once. The return probe
//! names each stream's callback (a `STREAM_CALLER` record), so the agent can place every
//! stream of such a write under its own request.
//!
//! The header fields of requests, for connections opened before the agent attached (attached
//! only for processes that have such connections): the HPACK entries those name are unknown
//! to the agent, but the process's own nghttp2 knows them. A client's fields are the ones
//! handed to `nghttp2_submit_request` (saved at entry, sent at return with the stream id);
//! a server's, the ones nghttp2 decoded, as node's header callback receives them.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, generated::bpf_probe_read_user as read_user_raw},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use zerotrace_abi::{HEADER_NAME_BYTES, HEADER_VALUE_BYTES, HeaderFieldEvent, RecordHeader, kind, stat};

use crate::maps::{EVENTS, count};
use crate::{capture, filter, units};

/// A request's header list handed to `nghttp2_submit_request`, per thread, until it returns.
#[map]
static SUBMITS: LruHashMap<u32, (u64, u64)> = LruHashMap::with_max_entries(1024, 0);

/// Fields sent per request at most (node puts the pseudo-headers and gRPC's first).
const MAX_FIELDS: u64 = 16;

/// `nghttp2_nv`: name, value, their lengths, flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct Nv {
    name: u64,
    value: u64,
    name_len: u64,
    value_len: u64,
    flags: u64,
}

/// `nghttp2_rcbuf`: mem_user_data, free, base, len (a refcounted buffer).
const RCBUF_BASE: u64 = 16;
const RCBUF_LEN: u64 = 24;
/// In `nghttp2_frame`: `hd.stream_id`, and a HEADERS frame's category (request, response,
/// push response, other headers) after its hd, padlen, pri_spec, nva and nvlen.
const FRAME_STREAM_ID: u64 = 8;
const HEADERS_CATEGORY: u64 = 56;
const CATEGORY_REQUEST: u32 = 0;

/// `nghttp2_submit_request` and `nghttp2_submit_request2` return the new stream's id
/// (positive, odd) or a negative error code.
#[uretprobe]
pub fn nghttp2_submit_ret(ctx: RetProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let stream: i32 = ctx.ret();
    let tid = pid_tgid as u32;
    // SAFETY: the value is copied out at once; only this thread writes its entry.
    let submitted = unsafe { SUBMITS.get(&tid) }.copied();
    if submitted.is_some() {
        let _ = SUBMITS.remove(&tid);
    }
    if stream <= 0 {
        return 0;
    }
    let cause = units::current(tid);
    let tgid = (pid_tgid >> 32) as u32;
    capture::stream_caller(tgid, stream as u32, tid, cause);
    if let Some((nva, nvlen)) = submitted {
        let n = if nvlen > MAX_FIELDS { MAX_FIELDS } else { nvlen };
        for i in 0..MAX_FIELDS {
            if i >= n {
                break;
            }
            // SAFETY: checked read of the caller's header list.
            let Ok(nv) = (unsafe { bpf_probe_read_user((nva + i * size_of::<Nv>() as u64) as *const Nv) }) else { break };
            header_field(tgid, tid, stream as u32, cause, false, (nv.name, nv.name_len), (nv.value, nv.value_len));
        }
    }
    0
}

/// Entry of the same functions, for processes whose fields are wanted: the header list.
#[uprobe]
pub fn nghttp2_submit(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let (Some(nva), Some(nvlen)) = (ctx.arg::<u64>(2), ctx.arg::<u64>(3)) else { return 0 };
    let _ = SUBMITS.insert(&(pid_tgid as u32), &(nva, nvlen), 0);
    0
}

/// node's `Http2Session::OnHeaderCallback(session, frame, name, value, flags, user_data)`:
/// one field nghttp2 decoded. Only a request's fields are sent (a server's side).
#[uprobe]
pub fn nghttp2_header(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let (Some(frame), Some(name), Some(value)) = (ctx.arg::<u64>(1), ctx.arg::<u64>(2), ctx.arg::<u64>(3)) else { return 0 };
    // SAFETY: checked reads of nghttp2's frame and buffers.
    let read = |at: u64| unsafe { bpf_probe_read_user(at as *const u64) };
    // SAFETY: as above.
    let (Ok(stream), Ok(category)) =
        (unsafe { bpf_probe_read_user((frame + FRAME_STREAM_ID) as *const i32) }, unsafe { bpf_probe_read_user((frame + HEADERS_CATEGORY) as *const u32) })
    else {
        return 0;
    };
    if category != CATEGORY_REQUEST || stream <= 0 {
        return 0;
    }
    let (Ok(name_at), Ok(name_len), Ok(value_at), Ok(value_len)) = (read(name + RCBUF_BASE), read(name + RCBUF_LEN), read(value + RCBUF_BASE), read(value + RCBUF_LEN)) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    header_field((pid_tgid >> 32) as u32, tid, stream as u32, units::current(tid), true, (name_at, name_len), (value_at, value_len));
    0
}

/// Sends one field: the first bytes of its name and value, and their lengths; `decoded` from
/// the peer, or handed over to send.
#[inline(always)]
fn header_field(tgid: u32, tid: u32, stream: u32, cause: (u32, u64), decoded: bool, name: (u64, u64), value: (u64, u64)) {
    let Some(mut entry) = EVENTS.reserve::<HeaderFieldEvent>(0) else {
        count(stat::RINGBUF_FULL);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points at the reserved record, written here before it is submitted;
    // the copies stay inside its arrays (lengths bounded by their sizes) and the helper checks
    // the user sources.
    unsafe {
        (*event).header = RecordHeader::new(kind::HEADER_FIELD, tgid);
        (*event).tid = tid;
        (*event).stream = stream;
        (*event).cause_kind = cause.0;
        (*event).cause_id = cause.1;
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).decoded = u8::from(decoded);
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
    entry.submit(0);
}
