//! HTTP/2 framing (RFC 9113 §4) for one direction of a connection: frames out of captured
//! segments, across reads, with capture gaps. A frame's payload is counted, and kept only
//! for the frame types whose contents matter (headers, resets, settings, goaway); a gap
//! inside a DATA payload costs nothing. A gap across a frame boundary loses the framing; it
//! is found again at a later segment that starts with a plausible frame header (writes put
//! whole frames in one call).

use crate::protocols::framing::{CountedBody, Progress};
use crate::protocols::parser::Segment;

/// The client connection preface (§3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame payloads kept at most (a header block fragment longer than this is cut, and the
/// HPACK state is then lost).
const KEEP: usize = 16 * 1024;

pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    /// SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    /// The payload's first bytes (all of it for the kinds that are kept, up to `KEEP`).
    pub payload: Vec<u8>,
    /// The payload was longer than what was kept, or part of it was not captured.
    pub cut: bool,
    /// The syscalls that carried the frame's first and last bytes.
    pub first: (u64, u64),
    pub last: (u64, u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The client's preface, this many bytes of it seen.
    Preface(usize),
    /// The server's preface: its first frame must be a SETTINGS frame (§3.4).
    ServerSettings,
    Header,
    Payload,
    Lost,
}

pub struct Framer {
    state: State,
    header: Vec<u8>,
    body: CountedBody,
    current: Option<Frame>,
    /// Framing was lost and found again this many times.
    pub resyncs: u64,
    /// Every frame header must be plausible (a connection recognised mid-stream, where a
    /// wrong guess must not go on parsing garbage as frames).
    strict: bool,
}

/// Whether `data` starts with a frame header a peer could send: a known type, a length a
/// default peer accepts, and flags that type defines.
pub fn plausible_header(data: &[u8]) -> bool {
    let Some(h) = data.get(..9) else { return false };
    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    let (kind, flags) = (h[3], h[4]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
    let allowed = match kind {
        kind::DATA => flag::END_STREAM | flag::PADDED,
        kind::HEADERS => flag::END_STREAM | flag::END_HEADERS | flag::PADDED | flag::PRIORITY,
        kind::PRIORITY | kind::RST_STREAM | kind::WINDOW_UPDATE => 0,
        kind::SETTINGS | kind::PING => flag::ACK,
        kind::PUSH_PROMISE => flag::END_HEADERS | flag::PADDED,
        kind::GOAWAY => 0,
        kind::CONTINUATION => flag::END_HEADERS,
        _ => return false,
    };
    let on_connection = matches!(kind, kind::SETTINGS | kind::PING | kind::GOAWAY);
    len <= 16_384 && flags & !allowed == 0 && (on_connection == (stream == 0) || kind == kind::WINDOW_UPDATE)
}

impl Framer {
    /// `client`: this direction starts with the connection preface.
    pub fn new(client: bool) -> Self {
        Self {
            state: if client { State::Preface(0) } else { State::ServerSettings },
            header: Vec::with_capacity(9),
            body: CountedBody::default(),
            current: None,
            resyncs: 0,
            strict: false,
        }
    }

    /// A framer for a connection joined in the middle, at a frame boundary (the detector saw a
    /// frame header at the start of the first bytes).
    pub fn joined() -> Self {
        Self { state: State::Header, strict: true, ..Self::new(false) }
    }

    pub fn is_lost(&self) -> bool {
        self.state == State::Lost
    }

    /// Frames completed by `seg`, in order. Returns whether the framing was lost on the way
    /// (frames were missed: the HPACK state is then unknown).
    pub fn feed(&mut self, seg: Segment<'_>, out: &mut Vec<Frame>) -> bool {
        let at = (seg.ts_enter_ns, seg.ts_exit_ns);
        let mut lost = false;
        if self.state == State::Lost {
            if !plausible_header(seg.data) {
                return false;
            }
            self.state = State::Header;
            self.header.clear();
            self.resyncs += 1;
        }
        let mut rest = seg.data;
        while !rest.is_empty() {
            match self.state {
                State::Preface(seen) => {
                    let n = (PREFACE.len() - seen).min(rest.len());
                    if rest[..n] != PREFACE[seen..seen + n] {
                        self.state = State::Lost;
                        return true;
                    }
                    rest = &rest[n..];
                    self.state = if seen + n == PREFACE.len() { State::Header } else { State::Preface(seen + n) };
                }
                State::ServerSettings => {
                    let n = (9 - self.header.len()).min(rest.len());
                    let mut head = self.header.clone();
                    head.extend_from_slice(&rest[..n]);
                    let settings = head.len() < 4 || head[3] == kind::SETTINGS;
                    if !settings || (head.len() == 9 && !plausible_header(&head)) {
                        self.state = State::Lost;
                        return true;
                    }
                    if head.len() == 9 {
                        self.state = State::Header;
                    } else {
                        self.header = head;
                        rest = &rest[n..];
                    }
                }
                State::Header => {
                    let n = (9 - self.header.len()).min(rest.len());
                    self.header.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    if self.header.len() < 9 {
                        continue;
                    }
                    if self.strict && !plausible_header(&self.header) {
                        self.header.clear();
                        self.state = State::Lost;
                        return true;
                    }
                    let h = &self.header;
                    let len = u32::from_be_bytes([0, h[0], h[1], h[2]]);
                    let kind = h[3];
                    // Unknown (extension) frame types are skipped, as §5.5 says.
                    let keep = if matches!(kind, kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE | kind::RST_STREAM | kind::SETTINGS | kind::GOAWAY) { KEEP } else { 0 };
                    let frame = Frame {
                        kind,
                        flags: h[4],
                        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                        payload: Vec::new(),
                        cut: len as usize > keep && keep > 0,
                        first: at,
                        last: at,
                    };
                    self.header.clear();
                    match self.body.start(u64::from(len), keep) {
                        Progress::Complete => out.push(frame),
                        _ => {
                            self.current = Some(frame);
                            self.state = State::Payload;
                        }
                    }
                }
                State::Payload => {
                    let (tail, progress) = self.body.take(rest);
                    rest = tail;
                    if progress == Progress::Complete {
                        self.finish(at, out);
                    }
                }
                State::Lost => return true,
            }
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            match self.state {
                State::Payload => match self.body.skip_gap(gap) {
                    Progress::Inside => {
                        if let Some(f) = self.current.as_mut() {
                            f.cut |= f.kind != kind::DATA;
                        }
                    }
                    Progress::Complete => {
                        if let Some(f) = self.current.as_mut() {
                            f.cut |= f.kind != kind::DATA;
                        }
                        self.finish(at, out);
                    }
                    Progress::Lost => {
                        self.current = None;
                        self.state = State::Lost;
                        lost = true;
                    }
                },
                _ => {
                    self.state = State::Lost;
                    lost = true;
                }
            }
        }
        lost
    }

    fn finish(&mut self, at: (u64, u64), out: &mut Vec<Frame>) {
        if let Some(mut f) = self.current.take() {
            f.payload = self.body.take_kept();
            f.last = at;
            out.push(f);
        }
        self.state = State::Header;
    }
}

#[cfg(test)]
pub(crate) fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    #[test]
    fn frames_across_reads_and_gaps_inside_data() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(encode(kind::SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
        bytes.extend(encode(kind::HEADERS, flag::END_HEADERS, 1, b"\x82\x84"));
        for split in 1..bytes.len() {
            let mut f = Framer::new(true);
            let mut out = Vec::new();
            f.feed(seg(&bytes[..split], 1), &mut out);
            f.feed(seg(&bytes[split..], 2), &mut out);
            let kinds: Vec<(u8, u32, Vec<u8>)> = out.iter().map(|f| (f.kind, f.stream, f.payload.clone())).collect();
            assert_eq!(kinds, [(kind::SETTINGS, 0, vec![0, 1, 0, 0, 0x10, 0]), (kind::HEADERS, 1, b"\x82\x84".to_vec())], "split {split}");
        }
        // A DATA frame of 100 000 bytes of which 10 were captured, then a HEADERS frame.
        let mut f = Framer::new(false);
        let mut out = Vec::new();
        f.feed(seg(&encode(kind::SETTINGS, 0, 0, &[]), 0), &mut out);
        out.clear();
        let mut data = encode(kind::DATA, flag::END_STREAM, 3, &[7; 10]);
        data[0..3].copy_from_slice(&[0x01, 0x86, 0xa0]);
        assert!(!f.feed(Segment { data: &data, total: 9 + 100_000, ts_enter_ns: 1, ts_exit_ns: 2 }, &mut out));
        f.feed(seg(&encode(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 5, b"\x88"), 3), &mut out);
        assert_eq!(out.iter().map(|f| (f.kind, f.stream)).collect::<Vec<_>>(), [(kind::DATA, 3), (kind::HEADERS, 5)]);
    }

    #[test]
    fn a_gap_across_frames_loses_the_framing_until_a_frame_starts_a_read() {
        let mut f = Framer::new(false);
        let mut out = Vec::new();
        f.feed(seg(&encode(kind::SETTINGS, 0, 0, &[]), 0), &mut out);
        out.clear();
        let frame = encode(kind::HEADERS, flag::END_HEADERS, 1, b"\x88");
        assert!(f.feed(Segment { data: &frame[..4], total: 500, ts_enter_ns: 1, ts_exit_ns: 2 }, &mut out));
        assert!(f.is_lost());
        f.feed(seg(b"garbage that is no frame", 3), &mut out);
        assert!(out.is_empty());
        f.feed(seg(&frame, 4), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(f.resyncs, 1);
    }

    #[test]
    fn a_server_must_open_with_settings() {
        let mut f = Framer::new(false);
        let mut out = Vec::new();
        assert!(f.feed(seg(b"HTTP/1.1 400 Bad Request\r\n", 1), &mut out));
        let mut f = Framer::new(false);
        assert!(!f.feed(seg(&encode(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]), 1), &mut out));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_bad_preface_is_no_http2() {
        let mut f = Framer::new(true);
        let mut out = Vec::new();
        assert!(f.feed(seg(b"PRI * HTTP/1.1\r\n", 1), &mut out));
        assert!(out.is_empty());
    }
}
