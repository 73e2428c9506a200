//! One direction of an HTTP/1 connection: turns a sequence of captured syscall segments into
//! whole messages with their timestamps.
//!
//! A segment is what one syscall moved: the captured prefix plus a count of bytes that were
//! transferred but not captured (a gap). Bodies are framed by counting, so gaps inside bodies
//! cost nothing; a gap where a head or chunk-size line should be makes the stream "desync"
//! until a later segment starts with a valid head again.

use std::collections::VecDeque;

pub use crate::protocols::parser::Segment;

use super::head::{Framing, HeadParse, RequestHead, ResponseHead, parse_request_head, parse_response_head};

/// Heads larger than this are treated like heads cut by the capture cap.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    Request(RequestHead),
    Response(ResponseHead),
}

/// A whole message: its head and when it started and ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub head: Head,
    /// Entry and exit of the syscall that carried the first byte of the head.
    pub start_enter_ns: u64,
    pub start_exit_ns: u64,
    /// Entry and exit of the syscall that carried the last byte of the message.
    pub end_enter_ns: u64,
    pub end_exit_ns: u64,
    pub body_len: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkPhase {
    /// Reading a chunk-size line.
    Size,
    Data(u64),
    /// The CRLF after a chunk's data: this many bytes left.
    DataEnd(u8),
    /// After the last chunk: trailers up to an empty line.
    Trailer,
}

enum HeadOutcome {
    /// A head was parsed; this many bytes of the input were its.
    Consumed(usize),
    Partial,
    Invalid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    Chunked(ChunkPhase),
    UntilClose,
    /// Lost track of framing; wait for a segment that starts with a head.
    Desync,
    /// Switched protocols; nothing more is HTTP/1.
    Upgraded,
}

pub struct HalfStream {
    side: Side,
    state: State,
    /// Unconsumed bytes of a head, chunk-size line or trailer.
    buf: Vec<u8>,
    /// The message whose body is being read.
    current: Option<Message>,
    /// Response side: methods of requests still waiting for an answer (HEAD has no body).
    awaiting: VecDeque<smol_str::SmolStr>,
    head_start: (u64, u64),
    last_enter_ns: u64,
    last_exit_ns: u64,
    /// The bytes after the head that switched protocols, in its segment: the new protocol's.
    after_upgrade: Vec<u8>,
}

impl HalfStream {
    pub fn new(side: Side) -> Self {
        Self {
            side,
            state: State::Head,
            buf: Vec::new(),
            current: None,
            awaiting: VecDeque::new(),
            head_start: (0, 0),
            last_enter_ns: 0,
            last_exit_ns: 0,
            after_upgrade: Vec::new(),
        }
    }

    /// Response side: a request with this method was sent; its response comes in order.
    pub fn expect_response(&mut self, method: &str) {
        if self.awaiting.len() < 1024 {
            self.awaiting.push_back(method.into());
        }
    }

    /// The bytes that followed a switch of protocols in its segment (taken once).
    pub fn take_after_upgrade(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.after_upgrade)
    }

    /// True when this direction has never shown anything but HTTP/1 (or nothing).
    pub fn is_desynced(&self) -> bool {
        self.state == State::Desync
    }

    /// Does `data` start something this side would parse? Used to infer roles and resync.
    pub fn looks_like_start(side: Side, data: &[u8]) -> bool {
        match side {
            Side::Request => !matches!(parse_request_head(data), HeadParse::Invalid),
            Side::Response => !matches!(parse_response_head(data, None), HeadParse::Invalid),
        }
    }

    /// The messages completed by `seg`, as a new vector (tests).
    #[cfg(test)]
    pub fn feed(&mut self, seg: Segment<'_>) -> Vec<Message> {
        let mut out = Vec::new();
        self.feed_into(seg, &mut out);
        out
    }

    /// Appends the messages `seg` completes to `out` (the caller reuses it: no allocation per
    /// segment).
    pub fn feed_into(&mut self, seg: Segment<'_>, out: &mut Vec<Message>) {
        self.last_enter_ns = seg.ts_enter_ns;
        self.last_exit_ns = seg.ts_exit_ns;
        match self.state {
            State::Upgraded => return,
            State::Desync => {
                if seg.data.is_empty() || !Self::looks_like_start(self.side, seg.data) {
                    return;
                }
                self.state = State::Head;
                self.buf.clear();
            }
            _ => {}
        }
        let mut data: Vec<u8>;
        let mut rest: &[u8] = seg.data;
        while !rest.is_empty() {
            match self.state {
                State::Head if self.buf.is_empty() => {
                    // Fast path: the head starts at a segment boundary; parse in place.
                    self.head_start = (seg.ts_enter_ns, seg.ts_exit_ns);
                    match self.parse_head(rest, seg.ts_exit_ns, out) {
                        HeadOutcome::Consumed(n) => rest = &rest[n..],
                        HeadOutcome::Partial => {
                            let take = rest.len().min(MAX_HEAD);
                            self.buf.extend_from_slice(&rest[..take]);
                            rest = &rest[take..];
                        }
                        HeadOutcome::Invalid => rest = &[],
                    }
                }
                State::Head => {
                    // A head split across segments: accumulate, then parse the buffer.
                    let room = MAX_HEAD.saturating_sub(self.buf.len());
                    let take = rest.len().min(room);
                    let added = &rest[..take];
                    self.buf.extend_from_slice(added);
                    rest = &rest[take..];
                    if take > 0 && !added.contains(&b'\n') {
                        // A head can only be complete at a line end: parsing the whole buffer
                        // again per segment made a head sent a byte at a time cost the
                        // square of its length (a hostile client could burn our CPU).
                        continue;
                    }
                    let buf = std::mem::take(&mut self.buf);
                    match self.parse_head(&buf, seg.ts_exit_ns, out) {
                        HeadOutcome::Consumed(n) => {
                            data = buf[n..].to_vec();
                            rest = &data;
                        }
                        HeadOutcome::Partial if take == 0 => {
                            // Head larger than MAX_HEAD: finish it as a cut head.
                            self.buf = buf;
                            self.cut_head(seg.ts_exit_ns, out);
                            rest = &[];
                        }
                        HeadOutcome::Partial => self.buf = buf,
                        HeadOutcome::Invalid => rest = &[],
                    }
                }
                State::Body(remaining) => {
                    let n = (rest.len() as u64).min(remaining);
                    rest = &rest[n as usize..];
                    self.body_progress(n, remaining - n, seg.ts_exit_ns, out);
                }
                State::Chunked(phase) => {
                    let consumed = self.chunk_step(phase, rest, seg.ts_exit_ns, out);
                    rest = &rest[consumed..];
                }
                State::UntilClose => {
                    if let Some(m) = self.current.as_mut() {
                        m.body_len += rest.len() as u64;
                    }
                    rest = &[];
                }
                State::Upgraded => {
                    self.after_upgrade.extend_from_slice(rest);
                    rest = &[];
                }
                State::Desync => rest = &[],
            }
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            self.skip_gap(gap, seg.ts_exit_ns, out);
        }
    }

    /// The connection closed: a message delimited by close ends here.
    pub fn close(&mut self) -> Option<Message> {
        let message = match self.state {
            State::UntilClose | State::Body(_) | State::Chunked(_) => self.current.take(),
            _ => None,
        };
        self.state = State::Desync;
        message.map(|mut m| {
            m.end_enter_ns = self.last_enter_ns;
            m.end_exit_ns = self.last_exit_ns;
            m
        })
    }

    /// Tries to parse a head at the start of `input` (the caller keeps partial heads).
    fn parse_head(&mut self, input: &[u8], ts_exit: u64, out: &mut Vec<Message>) -> HeadOutcome {
        let parsed = match self.side {
            Side::Request => match parse_request_head(input) {
                HeadParse::Complete(h, len, f) => (Head::Request(h), len, f),
                HeadParse::Partial(_) => return HeadOutcome::Partial,
                HeadParse::Invalid => {
                    self.desync();
                    return HeadOutcome::Invalid;
                }
            },
            Side::Response => {
                let method = self.awaiting.front().map(smol_str::SmolStr::as_str);
                match parse_response_head(input, method) {
                    HeadParse::Complete(h, len, f) => (Head::Response(h), len, f),
                    HeadParse::Partial(_) => return HeadOutcome::Partial,
                    HeadParse::Invalid => {
                        self.desync();
                        return HeadOutcome::Invalid;
                    }
                }
            }
        };
        let (head, len, framing) = parsed;
        if let Head::Response(r) = &head {
            if (100..200).contains(&r.status) && r.status != 101 {
                // Interim response (100 Continue): not the answer; keep waiting.
                return HeadOutcome::Consumed(len);
            }
            self.awaiting.pop_front();
        }
        let message = Message { head, start_enter_ns: self.head_start.0, start_exit_ns: self.head_start.1, end_enter_ns: self.last_enter_ns, end_exit_ns: ts_exit, body_len: 0 };
        match framing {
            Framing::None => {
                out.push(message);
                self.state = State::Head;
            }
            Framing::Upgrade => {
                out.push(message);
                self.state = State::Upgraded;
            }
            Framing::Length(n) => {
                self.current = Some(message);
                self.state = State::Body(n);
            }
            Framing::Chunked => {
                self.current = Some(message);
                self.state = State::Chunked(ChunkPhase::Size);
            }
            Framing::UntilClose => {
                self.current = Some(message);
                self.state = State::UntilClose;
            }
        }
        HeadOutcome::Consumed(len)
    }

    fn desync(&mut self) {
        self.buf.clear();
        self.state = State::Desync;
    }

    /// A head that the capture cut short: report what the start line says, then desync.
    fn cut_head(&mut self, ts_exit: u64, out: &mut Vec<Message>) {
        let head = match self.side {
            Side::Request => match parse_request_head(&self.buf) {
                HeadParse::Partial(Some(h)) => Some(Head::Request(h)),
                _ => None,
            },
            Side::Response => {
                let method = self.awaiting.front().map(smol_str::SmolStr::as_str);
                match parse_response_head(&self.buf, method) {
                    HeadParse::Partial(Some(h)) if !(100..200).contains(&h.status) => {
                        self.awaiting.pop_front();
                        Some(Head::Response(h))
                    }
                    _ => None,
                }
            }
        };
        if let Some(head) = head {
            out.push(Message { head, start_enter_ns: self.head_start.0, start_exit_ns: self.head_start.1, end_enter_ns: self.last_enter_ns, end_exit_ns: ts_exit, body_len: 0 });
        }
        self.desync();
    }

    fn body_progress(&mut self, n: u64, remaining: u64, ts_exit: u64, out: &mut Vec<Message>) {
        if let Some(m) = self.current.as_mut() {
            m.body_len += n;
        }
        if remaining == 0 {
            self.finish(ts_exit, out);
        } else {
            self.state = State::Body(remaining);
        }
    }

    fn finish(&mut self, ts_exit: u64, out: &mut Vec<Message>) {
        if let Some(mut m) = self.current.take() {
            m.end_enter_ns = self.last_enter_ns;
            m.end_exit_ns = ts_exit;
            out.push(m);
        }
        self.state = State::Head;
    }

    /// Advances the chunked decoder over `data`; returns how many bytes it consumed.
    fn chunk_step(&mut self, phase: ChunkPhase, data: &[u8], ts_exit: u64, out: &mut Vec<Message>) -> usize {
        match phase {
            ChunkPhase::Data(remaining) => {
                let n = (data.len() as u64).min(remaining);
                if let Some(m) = self.current.as_mut() {
                    m.body_len += n;
                }
                self.state = State::Chunked(if remaining == n { ChunkPhase::DataEnd(2) } else { ChunkPhase::Data(remaining - n) });
                n as usize
            }
            ChunkPhase::DataEnd(left) => {
                let n = data.len().min(left as usize);
                let left = left - n as u8;
                self.state = State::Chunked(if left == 0 { ChunkPhase::Size } else { ChunkPhase::DataEnd(left) });
                n
            }
            ChunkPhase::Size => {
                let before = self.buf.len();
                let take = data.len().min(64usize.saturating_sub(before)).max(1).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        let consumed = len.saturating_sub(before).min(take);
                        self.buf.clear();
                        self.state = State::Chunked(if size == 0 { ChunkPhase::Trailer } else { ChunkPhase::Data(size) });
                        consumed
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < 64 => take,
                    _ => {
                        // Not a chunk-size line: framing is lost. Report the message so far.
                        self.finish(ts_exit, out);
                        self.desync();
                        data.len()
                    }
                }
            }
            ChunkPhase::Trailer => {
                let before = self.buf.len();
                self.buf.extend_from_slice(data);
                let end = if self.buf.starts_with(b"\r\n") { Some(2) } else { self.buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) };
                match end {
                    Some(end) => {
                        self.buf.clear();
                        self.finish(ts_exit, out);
                        end.saturating_sub(before)
                    }
                    None if self.buf.len() > MAX_HEAD => {
                        self.finish(ts_exit, out);
                        self.desync();
                        data.len()
                    }
                    None => data.len(),
                }
            }
        }
    }

    /// `gap` bytes were transferred but not captured.
    fn skip_gap(&mut self, gap: u64, ts_exit: u64, out: &mut Vec<Message>) {
        match self.state {
            State::Body(remaining) => {
                let n = gap.min(remaining);
                self.body_progress(n, remaining - n, ts_exit, out);
                if gap > n {
                    // The next message's head fell into the gap.
                    self.desync();
                }
            }
            State::Chunked(ChunkPhase::Data(remaining)) if gap < remaining => {
                if let Some(m) = self.current.as_mut() {
                    m.body_len += gap;
                }
                self.state = State::Chunked(ChunkPhase::Data(remaining - gap));
            }
            State::Chunked(_) => {
                // A chunk-size line is somewhere in the gap: report the message as of now.
                if let Some(m) = self.current.as_mut() {
                    m.body_len += gap;
                }
                self.finish(ts_exit, out);
                self.desync();
            }
            State::Head if !self.buf.is_empty() => self.cut_head(ts_exit, out),
            State::Head => self.desync(),
            State::UntilClose => {
                if let Some(m) = self.current.as_mut() {
                    m.body_len += gap;
                }
            }
            State::Desync | State::Upgraded => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    fn requests(msgs: &[Message]) -> Vec<String> {
        msgs.iter()
            .map(|m| match &m.head {
                Head::Request(r) => format!("{} {}", r.method, r.target),
                Head::Response(r) => format!("{}", r.status),
            })
            .collect()
    }

    #[test]
    fn keepalive_and_pipelining() {
        let mut s = HalfStream::new(Side::Request);
        let out = s.feed(seg(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", 10));
        assert_eq!(requests(&out), ["GET /a", "GET /b"]);
        let out = s.feed(seg(b"cdGET /d HTTP/1.1\r\n\r\n", 20));
        assert_eq!(requests(&out), ["POST /c", "GET /d"]);
        assert_eq!(out[0].start_enter_ns, 10);
        assert_eq!(out[0].end_exit_ns, 21);
        assert_eq!(out[0].body_len, 4);
    }

    #[test]
    fn head_split_across_reads() {
        let mut s = HalfStream::new(Side::Request);
        assert!(s.feed(seg(b"GET /split HT", 1)).is_empty());
        assert!(s.feed(seg(b"TP/1.1\r\nHost: x\r\n", 2)).is_empty());
        let out = s.feed(seg(b"\r\n", 3));
        assert_eq!(requests(&out), ["GET /split"]);
        assert_eq!((out[0].start_enter_ns, out[0].end_exit_ns), (1, 4));
    }

    #[test]
    fn chunked_body_across_reads() {
        let mut s = HalfStream::new(Side::Response);
        s.expect_response("GET");
        assert!(s.feed(seg(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", 1)).is_empty());
        assert!(s.feed(seg(b"lo\r\n1", 2)).is_empty());
        assert!(s.feed(seg(b"0\r\n0123456789abcdef\r\n0", 3)).is_empty());
        let out = s.feed(seg(b"\r\n\r\n", 4));
        assert_eq!(requests(&out), ["200"]);
        assert_eq!(out[0].body_len, 21);
        assert_eq!(out[0].end_exit_ns, 5);
    }

    #[test]
    fn body_gap_is_counted_not_lost() {
        let mut s = HalfStream::new(Side::Response);
        s.expect_response("GET");
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\nxx";
        let out = s.feed(Segment { data: head, total: head.len() as u64 + 9998, ts_enter_ns: 1, ts_exit_ns: 2 });
        assert_eq!(requests(&out), ["200"]);
        assert_eq!(out[0].body_len, 10000);
    }

    #[test]
    fn head_larger_than_capture() {
        let mut s = HalfStream::new(Side::Request);
        let cut = b"GET /cookies HTTP/1.1\r\nCookie: aaaaaaaaaa";
        let out = s.feed(Segment { data: cut, total: 9000, ts_enter_ns: 1, ts_exit_ns: 2 });
        assert_eq!(requests(&out), ["GET /cookies"]);
        // The stream resyncs on the next request.
        let out = s.feed(seg(b"GET /next HTTP/1.1\r\n\r\n", 5));
        assert_eq!(requests(&out), ["GET /next"]);
    }

    #[test]
    fn head_and_no_body_responses() {
        let mut s = HalfStream::new(Side::Response);
        for m in ["HEAD", "GET", "GET"] {
            s.expect_response(m);
        }
        let out = s.feed(seg(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 1));
        assert_eq!(requests(&out), ["200", "304", "204"]);
    }

    #[test]
    fn expect_continue() {
        let mut req = HalfStream::new(Side::Request);
        let mut resp = HalfStream::new(Side::Response);
        assert!(req.feed(seg(b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1)).is_empty());
        resp.expect_response("PUT");
        assert!(resp.feed(seg(b"HTTP/1.1 100 Continue\r\n\r\n", 2)).is_empty());
        assert_eq!(requests(&req.feed(seg(b"abc", 3))), ["PUT /up"]);
        assert_eq!(requests(&resp.feed(seg(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", 4))), ["201"]);
    }

    #[test]
    fn until_close() {
        let mut s = HalfStream::new(Side::Response);
        s.expect_response("GET");
        assert!(s.feed(seg(b"HTTP/1.0 200 OK\r\n\r\nbody", 1)).is_empty());
        assert!(s.feed(seg(b"more", 3)).is_empty());
        let m = s.close().expect("message ends at close");
        assert_eq!(m.body_len, 8);
        assert_eq!(m.end_exit_ns, 4);
    }

    #[test]
    fn garbage_never_yields_messages() {
        let mut s = HalfStream::new(Side::Request);
        assert!(s.feed(seg(b"\x00\x01\x02garbage\r\n\r\n", 1)).is_empty());
        assert!(s.feed(seg(b"\xff\xfe GET / HTTP/1.1\r\n\r\n", 2)).is_empty());
        assert!(s.is_desynced());
        assert_eq!(requests(&s.feed(seg(b"GET /ok HTTP/1.1\r\n\r\n", 3))), ["GET /ok"]);
    }
}
