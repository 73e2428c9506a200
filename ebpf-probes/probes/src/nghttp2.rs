//! nghttp2 (inside node): which event-loop callback asked for each client stream. node's
//! http2 module calls `nghttp2_submit_request` synchronously from JavaScript's
//! `session.request()`, inside the callback that runs the caller's code, and nghttp2 hands out
//! the stream id there; the frames are written later, from a `setImmediate`, often several
//! streams at once. The return probe names each stream's callback (a `STREAM_CALLER` record),
//! so the agent can place every stream of such a write under its own request.

use aya_ebpf::{macros::uretprobe, programs::RetProbeContext};

use crate::{capture, filter, units};

/// `nghttp2_submit_request` and `nghttp2_submit_request2` return the new stream's id
/// (positive, odd) or a negative error code.
#[uretprobe]
pub fn nghttp2_submit_ret(ctx: RetProbeContext) -> u32 {
    let Some(pid_tgid) = filter::traced_task() else { return 0 };
    let stream: i32 = ctx.ret();
    if stream > 0 {
        let tid = pid_tgid as u32;
        capture::stream_caller((pid_tgid >> 32) as u32, stream as u32, tid, units::current(tid));
    }
    0
}
