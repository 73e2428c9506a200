//! Redis RESP2/RESP3: a streaming framer for one direction of a connection. Commands are
//! arrays of bulk strings (or inline lines); replies are any RESP value. Values are framed by
//! counting, so large bulk strings cut by the capture cap cost nothing; only the command name
//! and an error reply's prefix are read — keys and values are never kept, with one exception:
//! the top-level strings of what may be messaging traffic (a PUBLISH or a list push, a reply
//! array of three or four elements, a RESP3 push, the reply to a list pop) are captured as
//! `Element`s (their first bytes, for a channel's name and a message's envelope, and a hash of
//! the whole, for a message's identity), never exported as such. Stream traffic (XADD, and the
//! replies to XREAD and XREADGROUP) is captured at every depth, each element with its depth.

use std::collections::VecDeque;
use std::hash::Hasher;

use super::parser::Segment;

/// Lines (type byte to CRLF) longer than this are not RESP we can follow.
const MAX_LINE: usize = 64 * 1024;
/// Nesting deeper than this is treated as garbage.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RespValue {
    /// A command: its name, upper-cased (`GET`, `CLIENT`), and how many arguments followed.
    Command { name: String, args: usize },
    /// A reply; `error` holds the error prefix (`ERR`, `WRONGTYPE`) of an error reply.
    /// `push`: a RESP3 out-of-band push (`>`), which answers no command.
    Reply { error: Option<String>, push: bool },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RespMessage {
    pub value: RespValue,
    pub start_enter_ns: u64,
    pub start_exit_ns: u64,
    pub end_enter_ns: u64,
    pub end_exit_ns: u64,
    /// The top-level bulk strings of what may be pub/sub traffic (after a command's name);
    /// empty for everything else.
    pub elements: Vec<Element>,
}

impl RespMessage {
    /// A command's count of arguments (after its name); 0 for a reply.
    pub fn args(&self) -> usize {
        match self.value {
            RespValue::Command { args, .. } => args,
            RespValue::Reply { .. } => 0,
        }
    }
}

/// A captured bulk string: its first bytes, its length, and a hash of all of it (`whole`
/// when every byte was captured).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub head: Vec<u8>,
    pub len: u64,
    pub hash: u64,
    pub whole: bool,
    /// Aggregates around it: 1 for a command's argument or a top-level array's element.
    pub depth: u8,
}

/// Bytes of a captured element kept: a channel's name, or a queued message's envelope (a
/// Celery task's kombu JSON, about 1 KiB).
const ELEMENT_HEAD: usize = zerotrace_abi::MAX_PAYLOAD;
/// Elements captured per message at most: the top level's few, or a stream message's fields
/// (and a read's entries).
const MAX_ELEMENTS: usize = 4;
const MAX_DEEP_ELEMENTS: usize = 512;

/// Which of a message's bulk strings are captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Capture {
    #[default]
    None,
    /// The top level's first few (a channel and a message).
    Top,
    /// All, at every depth (a stream entry's fields, a stream read's entries).
    Deep,
}

/// Commands whose elements are captured: they send a message to a channel, a list or a
/// stream, or move one from a list (whose name the reply does not repeat).
fn captures(name: &str) -> Capture {
    match name {
        "PUBLISH" | "SPUBLISH" | "LPUSH" | "RPUSH" | "LPUSHX" | "RPUSHX" | "LMOVE" | "BLMOVE" | "RPOPLPUSH" | "BRPOPLPUSH" => Capture::Top,
        "XADD" => Capture::Deep,
        _ => Capture::None,
    }
}

/// A bulk string being captured.
struct Capturing {
    element: Element,
    hasher: rustc_hash::FxHasher,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Commands,
    Replies,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a type byte and its line.
    Line,
    /// Skipping a bulk payload plus its CRLF.
    Bulk(u64),
    Desync,
}

pub struct RespStream {
    dir: Direction,
    state: State,
    line: Vec<u8>,
    /// Elements still expected at each open aggregate level.
    stack: Vec<u64>,
    /// The message being framed.
    current: Option<RespMessage>,
    /// Commands: the next bulk string is the command name.
    want_name: bool,
    /// The bulk string being skipped is the command name: keep its bytes.
    name_pending: bool,
    name_buf: Vec<u8>,
    last: (u64, u64),
    /// Which of the current message's strings are captured (`Element`).
    capture: Capture,
    capturing: Option<Capturing>,
    /// Replies: after losing the framing, resume at a read that starts with an array of bulk
    /// strings or a push (a subscribed connection, which receives nothing else).
    pub resync_on_arrays: bool,
    /// Times the framing was lost and found again.
    pub resyncs: u64,
    /// Replies: what to capture of each next reply that answers a command (a list pop's:
    /// the message it took; a stream read's: its entries), in command order; pushes take none.
    pub capture_answers: VecDeque<Capture>,
}

/// Does `data` start like a RESP command (an array of bulk strings)? Used to recognise Redis
/// connections from their first bytes, whatever the port.
pub fn looks_like_command(data: &[u8]) -> bool {
    let Some(rest) = data.strip_prefix(b"*") else { return false };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && digits < 8 && rest[digits..].starts_with(b"\r\n") && rest.get(digits + 2).is_none_or(|b| *b == b'$')
}

/// Does `data` start like a RESP3 push (`>` and a count)?
fn looks_like_push(data: &[u8]) -> bool {
    let Some(rest) = data.strip_prefix(b">") else { return false };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && digits < 8 && rest[digits..].starts_with(b"\r\n")
}

fn parse_int(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

impl RespStream {
    pub fn new(dir: Direction) -> Self {
        Self {
            dir,
            state: State::Line,
            line: Vec::new(),
            stack: Vec::new(),
            current: None,
            want_name: false,
            name_pending: false,
            name_buf: Vec::new(),
            last: (0, 0),
            capture: Capture::None,
            capturing: None,
            resync_on_arrays: false,
            resyncs: 0,
            capture_answers: VecDeque::new(),
        }
    }

    pub fn is_desynced(&self) -> bool {
        self.state == State::Desync
    }

    pub fn feed(&mut self, seg: Segment<'_>) -> Vec<RespMessage> {
        let mut out = Vec::new();
        self.last = (seg.ts_enter_ns, seg.ts_exit_ns);
        if self.state == State::Desync {
            let resync = match self.dir {
                Direction::Commands => looks_like_command(seg.data),
                Direction::Replies => self.resync_on_arrays && (looks_like_command(seg.data) || looks_like_push(seg.data)),
            };
            if !resync {
                return out;
            }
            self.reset();
            self.resyncs += 1;
        }
        let mut rest = seg.data;
        while !rest.is_empty() && self.state != State::Desync {
            match self.state {
                State::Bulk(remaining) => {
                    let n = (rest.len() as u64).min(remaining);
                    // The payload without its trailing CRLF.
                    let payload = n.min(remaining.saturating_sub(2)) as usize;
                    if self.name_pending {
                        // At most 32 bytes of it.
                        let room = 32usize.saturating_sub(self.name_buf.len());
                        self.name_buf.extend_from_slice(&rest[..payload.min(room)]);
                    }
                    if let Some(c) = self.capturing.as_mut() {
                        let room = ELEMENT_HEAD.saturating_sub(c.element.head.len());
                        c.element.head.extend_from_slice(&rest[..payload.min(room)]);
                        c.hasher.write(&rest[..payload]);
                    }
                    rest = &rest[n as usize..];
                    if remaining == n {
                        self.state = State::Line;
                        self.take_name();
                        self.take_element();
                        self.element_done(&mut out);
                    } else {
                        self.state = State::Bulk(remaining - n);
                    }
                }
                State::Line => {
                    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                        if self.line.len() + rest.len() > MAX_LINE {
                            self.desync();
                        } else {
                            self.start_if_new(seg);
                            self.line.extend_from_slice(rest);
                        }
                        break;
                    };
                    self.start_if_new(seg);
                    self.line.extend_from_slice(&rest[..=end]);
                    rest = &rest[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.on_line(&line, rest, &mut out);
                }
                State::Desync => break,
            }
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            match self.state {
                State::Bulk(remaining) if gap <= remaining => {
                    let left = remaining - gap;
                    if let Some(c) = self.capturing.as_mut() {
                        c.element.whole = false;
                    }
                    if left == 0 {
                        self.state = State::Line;
                        self.take_name();
                        self.take_element();
                        self.element_done(&mut out);
                    } else {
                        self.state = State::Bulk(left);
                    }
                }
                _ => self.desync(),
            }
        }
        out
    }

    fn take_name(&mut self) {
        if !self.name_pending {
            return;
        }
        self.name_pending = false;
        let name = String::from_utf8_lossy(&self.name_buf).to_ascii_uppercase();
        self.name_buf.clear();
        self.capture = captures(&name);
        if let Some(RespMessage { value: RespValue::Command { name: n, .. }, .. }) = self.current.as_mut() {
            *n = name;
        }
    }

    /// A captured bulk string ended: it joins its message's elements.
    fn take_element(&mut self) {
        let Some(Capturing { mut element, hasher }) = self.capturing.take() else { return };
        element.hash = hasher.finish();
        let most = if self.capture == Capture::Deep { MAX_DEEP_ELEMENTS } else { MAX_ELEMENTS };
        if let Some(m) = self.current.as_mut()
            && m.elements.len() < most
        {
            m.elements.push(element);
        }
    }

    fn reset(&mut self) {
        self.capture = Capture::None;
        self.capturing = None;
        self.name_pending = false;
        self.name_buf.clear();
        self.want_name = false;
        self.state = State::Line;
        self.line.clear();
        self.stack.clear();
        self.current = None;
    }

    fn desync(&mut self) {
        self.reset();
        self.state = State::Desync;
    }

    fn start_if_new(&mut self, seg: Segment<'_>) {
        if self.current.is_none() && self.line.is_empty() {
            let value = match self.dir {
                Direction::Commands => RespValue::Command { name: String::new(), args: 0 },
                Direction::Replies => RespValue::Reply { error: None, push: false },
            };
            self.current = Some(RespMessage { value, start_enter_ns: seg.ts_enter_ns, start_exit_ns: seg.ts_exit_ns, end_enter_ns: 0, end_exit_ns: 0, elements: Vec::new() });
            self.capture = Capture::None;
        }
    }

    /// One complete line (with its CRLF) of type byte + content.
    fn on_line(&mut self, line: &[u8], _rest: &[u8], out: &mut Vec<RespMessage>) {
        let Some(content) = line.strip_suffix(b"\r\n") else { return self.desync() };
        let Some((&kind, body)) = content.split_first() else { return self.desync() };
        let top = self.stack.is_empty();
        if top && self.dir == Direction::Replies && kind != b'>' {
            self.capture = self.capture_answers.pop_front().unwrap_or_default();
        }
        match kind {
            b'*' | b'%' | b'~' | b'>' | b'|' => {
                let Some(n) = parse_int(body) else { return self.desync() };
                if top && self.dir == Direction::Commands {
                    if kind != b'*' || n < 1 {
                        return self.desync();
                    }
                    self.want_name = true;
                    if let Some(RespMessage { value: RespValue::Command { args, .. }, .. }) = self.current.as_mut() {
                        *args = (n - 1) as usize;
                    }
                }
                if top
                    && kind == b'>'
                    && let Some(RespMessage { value: RespValue::Reply { push, .. }, .. }) = self.current.as_mut()
                {
                    *push = true;
                }
                // A reply that may be a pub/sub message: `message`, channel, payload (and a
                // pattern before the channel for `pmessage`), or any RESP3 push.
                if top && self.dir == Direction::Replies && self.capture == Capture::None && (kind == b'>' || (kind == b'*' && (3..=4).contains(&n))) {
                    self.capture = Capture::Top;
                }
                // Maps and attributes hold key/value pairs.
                let count = if matches!(kind, b'%' | b'|') { n.max(0) * 2 } else { n.max(0) };
                if n <= 0 {
                    self.element_done(out);
                } else if self.stack.len() >= MAX_DEPTH {
                    self.desync();
                } else {
                    self.stack.push(count as u64);
                }
            }
            b'$' | b'=' | b'!' => {
                let Some(n) = parse_int(body) else { return self.desync() };
                if kind == b'!' && top {
                    self.set_error("ERR");
                }
                if n < 0 {
                    self.element_done(out);
                } else {
                    self.state = State::Bulk(n as u64 + 2);
                    if self.want_name {
                        self.want_name = false;
                        // The name is read from the payload that follows, if captured.
                        self.name_pending = true;
                    } else if self.capture == Capture::Deep || (self.capture == Capture::Top && (self.stack.len() == 1 || (top && self.dir == Direction::Replies))) {
                        let element = Element { head: Vec::new(), len: n as u64, hash: 0, whole: true, depth: self.stack.len().min(255) as u8 };
                        self.capturing = Some(Capturing { element, hasher: rustc_hash::FxHasher::default() });
                    }
                }
            }
            b'+' | b':' | b',' | b'(' | b'#' | b'_' => self.element_done(out),
            b'-' => {
                if top {
                    let prefix = body.split(|b| *b == b' ').next().unwrap_or(b"ERR");
                    self.set_error(&String::from_utf8_lossy(prefix));
                }
                self.element_done(out);
            }
            _ if top && self.dir == Direction::Commands && kind.is_ascii_alphabetic() => {
                // Inline command: `PING`, `QUIT`.
                let mut words = content.split(|b| *b == b' ').filter(|w| !w.is_empty());
                let name = words.next().map(|w| String::from_utf8_lossy(w).to_ascii_uppercase()).unwrap_or_default();
                if let Some(RespMessage { value: RespValue::Command { name: n, args }, .. }) = self.current.as_mut() {
                    *n = name;
                    *args = words.count();
                }
                self.element_done(out);
            }
            _ => self.desync(),
        }
    }

    fn set_error(&mut self, prefix: &str) {
        if let Some(RespMessage { value: RespValue::Reply { error, .. }, .. }) = self.current.as_mut() {
            *error = Some(prefix.chars().take(64).collect());
        }
    }

    /// An element finished: close the aggregates it completes; a finished top level is a
    /// finished message.
    fn element_done(&mut self, out: &mut Vec<RespMessage>) {
        while let Some(top) = self.stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                return;
            }
            self.stack.pop();
        }
        if let Some(mut m) = self.current.take() {
            m.end_enter_ns = self.last.0;
            m.end_exit_ns = self.last.1;
            out.push(m);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    fn names(msgs: &[RespMessage]) -> Vec<String> {
        msgs.iter()
            .map(|m| match &m.value {
                RespValue::Command { name, args } => format!("{name}/{args}"),
                RespValue::Reply { push: true, .. } => "push".into(),
                RespValue::Reply { error: None, .. } => "ok".into(),
                RespValue::Reply { error: Some(e), .. } => format!("err:{e}"),
            })
            .collect()
    }

    #[test]
    fn pipelined_commands_split_anywhere() {
        let raw = b"*2\r\n$3\r\nget\r\n$3\r\nkey\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\nPING\r\n";
        for split in 1..raw.len() {
            let mut s = RespStream::new(Direction::Commands);
            let mut out = s.feed(seg(&raw[..split], 1));
            out.extend(s.feed(seg(&raw[split..], 2)));
            assert_eq!(names(&out), ["GET/1", "SET/2", "PING/0"], "split at {split}");
        }
    }

    #[test]
    fn replies_resp2_and_resp3() {
        let mut s = RespStream::new(Direction::Replies);
        let out = s.feed(seg(
            b"+OK\r\n$5\r\nhello\r\n$-1\r\n:42\r\n-WRONGTYPE Operation against a key\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n%1\r\n+k\r\n+v\r\n_\r\n#t\r\n,1.5\r\n!3\r\nERR\r\n*0\r\n",
            1,
        ));
        assert_eq!(names(&out), ["ok", "ok", "ok", "ok", "err:WRONGTYPE", "ok", "ok", "ok", "ok", "ok", "err:ERR", "ok"]);
        let out = s.feed(seg(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n+OK\r\n", 2));
        assert_eq!(names(&out), ["push", "ok"]);
    }

    #[test]
    fn large_bulk_reply_across_a_capture_gap() {
        let mut s = RespStream::new(Direction::Replies);
        let head = b"$100000\r\nxxxx";
        let out = s.feed(Segment { data: head, total: 9 + 100_000 + 2, ts_enter_ns: 1, ts_exit_ns: 2 });
        assert_eq!(names(&out), ["ok"]);
        assert_eq!(names(&s.feed(seg(b"+OK\r\n", 3))), ["ok"]);
    }

    #[test]
    fn multi_exec() {
        let mut c = RespStream::new(Direction::Commands);
        let out = c.feed(seg(b"*1\r\n$5\r\nMULTI\r\n*2\r\n$4\r\nINCR\r\n$1\r\nx\r\n*1\r\n$4\r\nEXEC\r\n", 1));
        assert_eq!(names(&out), ["MULTI/0", "INCR/1", "EXEC/0"]);
        let mut r = RespStream::new(Direction::Replies);
        let out = r.feed(seg(b"+OK\r\n+QUEUED\r\n*1\r\n:1\r\n", 1));
        assert_eq!(names(&out), ["ok", "ok", "ok"]);
    }

    #[test]
    fn garbage_desyncs_and_never_yields() {
        let mut c = RespStream::new(Direction::Commands);
        assert!(c.feed(seg(b"\x16\x03\x01garbage\r\n", 1)).is_empty());
        assert!(c.is_desynced());
        assert_eq!(names(&c.feed(seg(b"*1\r\n$4\r\nPING\r\n", 2))), ["PING/0"]);
        assert!(!looks_like_command(b"GET / HTTP/1.1\r\n"));
        assert!(looks_like_command(b"*2\r\n$3\r\nGET"));
        assert!(!looks_like_command(b"*x\r\n"));
    }
}
