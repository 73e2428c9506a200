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
    helpers::bpf_probe_read_user,
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};

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
const FRAME_TYPE: u64 = 12;
const HEADERS: u8 = 1;
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
            capture::header_field(tgid, tid, stream as u32, cause, false, (nv.name, nv.name_len), (nv.value, nv.value_len));
        }
        capture::header_fields_end(tgid, tid, stream as u32, false);
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
    capture::header_field((pid_tgid >> 32) as u32, tid, stream as u32, units::current(tid), true, (name_at, name_len), (value_at, value_len));
    0
}

/// node's `Http2Session::OnFrameReceive(session, frame, user_data)`: nghttp2 received a whole
/// frame, a HEADERS frame once every field of its block was delivered: a request's list ends.
#[uprobe]
pub fn nghttp2_frame_end(ctx: ProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let Some(frame) = ctx.arg::<u64>(1) else { return 0 };
    // SAFETY: checked reads of nghttp2's frame.
    let (Ok(kind), Ok(stream), Ok(category)) = (unsafe {
        (
            bpf_probe_read_user((frame + FRAME_TYPE) as *const u8),
            bpf_probe_read_user((frame + FRAME_STREAM_ID) as *const i32),
            bpf_probe_read_user((frame + HEADERS_CATEGORY) as *const u32),
        )
    }) else {
        return 0;
    };
    if kind == HEADERS && category == CATEGORY_REQUEST && stream > 0 {
        capture::header_fields_end((pid_tgid >> 32) as u32, pid_tgid as u32, stream as u32, true);
    }
    0
}
