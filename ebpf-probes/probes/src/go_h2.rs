//! Go's HTTP/2 header fields, for connections opened before the agent attached (attached only
//! for processes that have such connections; see `nghttp2.rs` for why they are wanted).
//!
//! - A server's: x/net's `(*Framer).readMetaFrame` (and net/http's bundled copy) decodes a
//!   header block through an emit closure, `readMetaFrame.func1(hf hpack.HeaderField)`, called
//!   once per field on the goroutine that reads the connection. The entry of readMetaFrame
//!   notes the block's stream id for the goroutine; the closure's entry sends the field, and
//!   `(*MetaHeadersFrame).checkPseudos`, called once the block is decoded and valid, ends the
//!   list (the decoder's `Close` would say it too, but is inlined).
//! - A client's (grpc-go): `(*loopyWriter).writeHeader(l, streamID, endStream, hf, onWrite)`
//!   is handed a stream's whole field list before it encodes it.
//!
//! Entry probes only, on each function's stack-check `jbe`, as in `go_tls.rs`.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use zerotrace_abi::cause;

use crate::capture;
use crate::go_tls::{GoKey, entered, goroutine_task};

/// The stream whose header block a goroutine is decoding, by `g`.
#[map]
static GO_META_STREAMS: LruHashMap<GoKey, u32> = LruHashMap::with_max_entries(4096, 0);

/// `FrameHeader.StreamID` (after valid, Type, Flags and Length) at the start of a
/// `*HeadersFrame`.
const FRAME_STREAM_ID: u64 = 8;
/// Fields sent per request at most.
const MAX_FIELDS: u64 = 16;

/// `hpack.HeaderField`: Name and Value strings, Sensitive (padded).
#[repr(C)]
#[derive(Clone, Copy)]
struct HeaderField {
    name: u64,
    name_len: u64,
    value: u64,
    value_len: u64,
    sensitive: u64,
}

crate::go_probe!(go_h2_meta, try_go_h2_meta);

/// `(*Framer).readMetaFrame(fr, hf *HeadersFrame)`: hf in RBX.
fn try_go_h2_meta(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    // SAFETY: checked read of the frame's header.
    let stream = unsafe { bpf_probe_read_user((r.bx + FRAME_STREAM_ID) as *const u32) }?;
    GO_META_STREAMS.insert(&GoKey { ptr: r.g, tgid: u64::from(tgid) }, &(stream & 0x7fff_ffff), 0)?;
    Ok(())
}

crate::go_probe!(go_h2_field, try_go_h2_field);

/// `readMetaFrame.func1(hf hpack.HeaderField)`: Name in RAX/RBX, Value in RCX/RDI.
fn try_go_h2_field(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    // SAFETY: lookup; the value is copied.
    let stream = unsafe { GO_META_STREAMS.get(&GoKey { ptr: r.g, tgid: u64::from(tgid) }) }.copied().ok_or(1)?;
    capture::header_field(tgid, goroutine_task(tgid, r.g) as u32, stream, (cause::NONE, 0), true, (r.ax, r.bx), (r.cx, r.di));
    Ok(())
}

crate::go_probe!(go_grpc_write_header, try_go_grpc_write_header);

/// `(*loopyWriter).writeHeader(l, streamID uint32, endStream bool, hf []hpack.HeaderField,
/// onWrite func())`: the stream id in RBX, the slice's pointer and length in RDI and RSI.
fn try_go_grpc_write_header(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    let (stream, tid) = (r.bx as u32, goroutine_task(tgid, r.g) as u32);
    let n = if r.si > MAX_FIELDS { MAX_FIELDS } else { r.si };
    for i in 0..MAX_FIELDS {
        if i >= n {
            break;
        }
        // SAFETY: checked read of the caller's field list.
        let f = unsafe { bpf_probe_read_user((r.di + i * size_of::<HeaderField>() as u64) as *const HeaderField) }?;
        capture::header_field(tgid, tid, stream, (cause::NONE, 0), false, (f.name, f.name_len), (f.value, f.value_len));
    }
    capture::header_fields_end(tgid, tid, stream, false);
    Ok(())
}

crate::go_probe!(go_h2_decoded, try_go_h2_decoded);

/// `(*MetaHeadersFrame).checkPseudos(mh)`, which readMetaFrame calls once the block is
/// decoded: on a goroutine decoding one, its list ends.
fn try_go_h2_decoded(ctx: &ProbeContext) -> Result<(), i64> {
    let Some((tgid, r)) = entered(ctx) else { return Ok(()) };
    let key = GoKey { ptr: r.g, tgid: u64::from(tgid) };
    // SAFETY: lookup; the value is copied.
    let stream = unsafe { GO_META_STREAMS.get(&key) }.copied().ok_or(1)?;
    let _ = GO_META_STREAMS.remove(&key);
    capture::header_fields_end(tgid, goroutine_task(tgid, r.g) as u32, stream, true);
    Ok(())
}
