//! Memcached text protocol, both directions: one request per command line (storage commands
//! carry a data block, which is skipped by its length), one response per answer (`VALUE`
//! blocks up to `END`, `STAT` lines up to `END`, or a single status line). A `noreply` command
//! is a span that ends when it is sent (if no answer is pending before it, which would pair
//! with it); quiet meta commands answer only sometimes, so they make no span. Keys and values
//! are never kept.

use super::message::{Correlation, DbCommand, DbOutcome, DbRequest, Message, Request, RequestFields, Timing, TraceContext, Writer};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

/// Command lines longer than this are not memcached.
const MAX_LINE: usize = 8 * 1024;

const COMMANDS: &[&str] = &[
    "get",
    "gets",
    "gat",
    "gats",
    "set",
    "add",
    "replace",
    "append",
    "prepend",
    "cas",
    "delete",
    "incr",
    "decr",
    "touch",
    "stats",
    "flush_all",
    "version",
    "verbosity",
    "quit",
    "mg",
    "ms",
    "md",
    "ma",
    "mn",
    "me",
    "shutdown",
    "cache_memlimit",
    "lru_crawler",
    "slabs",
    "watch",
    "misbehave",
];

pub const PROTOCOL: Protocol = Protocol {
    name: "memcached",
    // Text commands: a heuristic, after every structural check.
    detectors: &[Detector { layer: Layer::Heuristic, sender: Sender::Client, matches: looks_like_command, parser: || Box::new(Memcached::new()) }],
};

/// Does `data` start with a memcached command line?
pub fn looks_like_command(data: &[u8]) -> bool {
    let Some(eol) = data.iter().take(MAX_LINE).position(|b| *b == b'\n') else { return false };
    let line = &data[..eol];
    if !line.ends_with(b"\r") {
        return false;
    }
    let word = line.split(|b| *b == b' ' || *b == b'\r').next().unwrap_or_default();
    COMMANDS.iter().any(|c| c.as_bytes() == word)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Line,
    /// Skipping a data block (with its CRLF): bytes left, and whether the answer ends with it.
    Block {
        left: u64,
        ends_answer: bool,
    },
    Desync,
}

/// Line framing shared by both directions: lines, and data blocks skipped by count.
struct Lines {
    state: State,
    line: Vec<u8>,
}

impl Lines {
    fn new() -> Self {
        Self { state: State::Line, line: Vec::new() }
    }

    /// Calls `on_line` for each complete line; it returns the data block that follows, if any.
    fn feed(&mut self, seg: Segment<'_>, mut on_line: impl FnMut(&[u8]) -> Option<(u64, bool)>, mut on_block_end: impl FnMut(bool)) {
        let mut rest = seg.data;
        while !rest.is_empty() {
            match self.state {
                State::Desync => return,
                State::Block { left, ends_answer } => {
                    let n = (rest.len() as u64).min(left);
                    rest = &rest[n as usize..];
                    self.state = if n == left { State::Line } else { State::Block { left: left - n, ends_answer } };
                    if n == left {
                        on_block_end(ends_answer);
                    }
                }
                State::Line => {
                    let Some(eol) = rest.iter().position(|b| *b == b'\n') else {
                        if self.line.len() + rest.len() > MAX_LINE {
                            self.state = State::Desync;
                        } else {
                            self.line.extend_from_slice(rest);
                        }
                        break;
                    };
                    self.line.extend_from_slice(&rest[..eol]);
                    rest = &rest[eol + 1..];
                    let line = std::mem::take(&mut self.line);
                    let Some(text) = line.strip_suffix(b"\r") else {
                        self.state = State::Desync;
                        return;
                    };
                    if let Some((len, ends_answer)) = on_line(text) {
                        self.state = State::Block { left: len + 2, ends_answer };
                    }
                }
            }
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            match self.state {
                State::Block { left, ends_answer } if gap <= left => {
                    self.state = if gap == left { State::Line } else { State::Block { left: left - gap, ends_answer } };
                    if gap == left {
                        on_block_end(ends_answer);
                    }
                }
                _ => self.state = State::Desync,
            }
        }
    }
}

fn words(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|b| *b == b' ').filter(|w| !w.is_empty())
}

fn number(word: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(word?).ok()?.parse().ok()
}

pub struct Memcached {
    commands: Lines,
    answers: Lines,
    waiting: usize,
    last_answer: (u64, u64),
    /// The server answered with a line no memcached server sends (an HTTP server answering
    /// `get / HTTP/1.1`): nothing on this connection is memcached.
    foreign_answer: bool,
}

/// First words of the answer lines memcached servers send (classic and meta protocols);
/// a number answers incr/decr.
const ANSWERS: &[&[u8]] =
    &[b"END", b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"DELETED", b"TOUCHED", b"OK", b"VERSION", b"RESET", b"BUSY", b"HD", b"EN", b"NF", b"NS", b"EX", b"MN", b"ME"];

fn is_answer_word(word: &[u8]) -> bool {
    ANSWERS.contains(&word) || (!word.is_empty() && word.iter().all(u8::is_ascii_digit))
}

impl Default for Memcached {
    fn default() -> Self {
        Self::new()
    }
}

/// What one command line means for framing and answering.
struct CommandLine {
    name: String,
    /// Length of the data block that follows (storage commands).
    block: Option<u64>,
    reply: Reply,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reply {
    Answered,
    /// `noreply`: never answered.
    Never,
    /// Quiet meta commands, `quit`: answered only sometimes, or not at all.
    Unknown,
}

fn parse_command(line: &[u8]) -> Option<CommandLine> {
    let mut w = words(line);
    let name = std::str::from_utf8(w.next()?).ok()?;
    if !COMMANDS.contains(&name) {
        return None;
    }
    let args: Vec<&[u8]> = w.collect();
    let noreply = args.last().is_some_and(|a| *a == b"noreply");
    let classic = if noreply { Reply::Never } else { Reply::Answered };
    let meta = |flags: &[&[u8]]| if flags.iter().any(|f| *f == b"q") { Reply::Unknown } else { Reply::Answered };
    let (block, reply) = match name {
        "set" | "add" | "replace" | "append" | "prepend" | "cas" => (Some(number(args.get(3).copied())?), classic),
        // Meta set: `ms <key> <datalen> <flags>*`; the q flag suppresses the usual answer.
        "ms" => (Some(number(args.get(1).copied())?), meta(args.get(2..).unwrap_or_default())),
        "mg" | "md" | "ma" | "me" => (None, meta(args.get(1..).unwrap_or_default())),
        "quit" => (None, Reply::Unknown),
        _ => (None, classic),
    };
    Some(CommandLine { name: name.to_string(), block, reply })
}

impl Memcached {
    pub fn new() -> Self {
        Self { commands: Lines::new(), answers: Lines::new(), waiting: 0, last_answer: (0, 0), foreign_answer: false }
    }

    pub fn is_desynced(&self) -> bool {
        self.commands.state == State::Desync
    }

    pub fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Message>) {
        if from_client {
            if self.commands.state == State::Desync && looks_like_command(seg.data) {
                self.commands = Lines::new();
            }
            if self.answers.state == State::Desync {
                self.end_blind(out);
            }
            let waiting = &mut self.waiting;
            let mut desync = false;
            self.commands.feed(
                seg,
                |line| {
                    let Some(cmd) = parse_command(line) else {
                        desync = true;
                        return None;
                    };
                    let request = DbRequest { system: PROTOCOL.name, command: DbCommand::Named(cmd.name), namespace: None, prepared: false };
                    let timing = Timing::single(seg.ts_enter_ns, seg.ts_exit_ns);
                    match cmd.reply {
                        Reply::Answered => {
                            *waiting += 1;
                            out.push(Message::db_call(timing, request));
                        }
                        // `noreply`: a span of its own, whatever waits for an answer.
                        Reply::Never => out.push(Message::OneWay(Request {
                            correlation: Correlation::InOrder,
                            timing,
                            context: TraceContext::default(),
                            client_kind: SpanKind::Client,
                            writer: Writer::Caller,
                            fields: RequestFields::Db(request),
                        })),
                        Reply::Unknown => {}
                    }
                    cmd.block.map(|n| (n, false))
                },
                |_| {},
            );
            if desync {
                self.commands.state = State::Desync;
            }
        } else {
            self.last_answer = (seg.ts_enter_ns, seg.ts_exit_ns);
            let end = (seg.ts_enter_ns, seg.ts_exit_ns);
            let waiting = &mut self.waiting;
            let finished = std::cell::RefCell::new(Vec::new());
            let mut foreign = false;
            self.answers.feed(
                seg,
                |line| {
                    let mut w = words(line);
                    let first = w.next().unwrap_or_default();
                    match first {
                        // Blocks inside a multi-line answer, which ends at END.
                        b"VALUE" => Some((number(w.nth(2))?, false)),
                        b"STAT" => None,
                        // A meta get hit: the block ends the answer.
                        b"VA" => Some((number(w.next())?, true)),
                        b"ERROR" | b"CLIENT_ERROR" | b"SERVER_ERROR" => {
                            finished.borrow_mut().push(DbOutcome::Error { code: String::from_utf8_lossy(first).into_owned() });
                            None
                        }
                        word if is_answer_word(word) => {
                            finished.borrow_mut().push(DbOutcome::Ok);
                            None
                        }
                        _ => {
                            foreign = true;
                            None
                        }
                    }
                },
                |ends_answer| {
                    if ends_answer {
                        finished.borrow_mut().push(DbOutcome::Ok);
                    }
                },
            );
            if foreign {
                self.foreign_answer = true;
                self.answers.state = State::Desync;
                self.waiting = 0;
                return;
            }
            for outcome in finished.into_inner() {
                if *waiting == 0 {
                    break;
                }
                *waiting -= 1;
                out.push(Message::db_answer(end.0, end.1, outcome, None));
            }
        }
    }

    pub fn close(&mut self, out: &mut Vec<Message>) {
        if self.answers.state == State::Desync && !self.foreign_answer {
            self.end_blind(out);
        }
    }

    fn end_blind(&mut self, out: &mut Vec<Message>) {
        for _ in 0..std::mem::take(&mut self.waiting) {
            out.push(Message::db_answer(self.last_answer.0, self.last_answer.1, DbOutcome::Ok, None));
        }
        self.answers = Lines::new();
    }
}

/// The inherent methods do the work (they take precedence in `Memcached::feed`).
impl Parser for Memcached {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        Memcached::feed(self, from == Sender::Client, seg, out);
    }
    fn close(&mut self, out: &mut Vec<Message>) {
        Memcached::close(self, out);
    }
    fn health(&self) -> Health {
        Health::of(self.foreign_answer, self.is_desynced())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    fn summary(out: &[Message]) -> Vec<String> {
        out.iter()
            .map(|m| match (m, m.db_request(), m.db_response()) {
                (Message::OneWay(_), Some(DbRequest { command: DbCommand::Named(n), .. }), _) => format!("{n} (one-way)"),
                (_, Some(DbRequest { command: DbCommand::Named(n), .. }), _) => n.clone(),
                (_, Some(_), _) => "sql".into(),
                (_, None, Some(r)) => match &r.outcome {
                    DbOutcome::Error { code } => format!("err:{code}"),
                    _ => "ok".into(),
                },
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn commands_and_answers_split_anywhere() {
        let client = b"set k 0 0 5\r\nhello\r\nget k missing\r\ndelete k noreply\r\nincr n 1\r\nbogus\r\n";
        // `delete ... noreply` is never answered: a one-way message, so it cannot take the
        // answer of a command sent before it.
        let server = b"STORED\r\nVALUE k 0 5\r\nhello\r\nEND\r\nNOT_FOUND\r\nERROR\r\n";
        for split in 1..client.len() {
            let mut m = Memcached::new();
            let mut out = Vec::new();
            m.feed(true, seg(&client[..split], 1), &mut out);
            m.feed(true, seg(&client[split..], 2), &mut out);
            let s = split.min(server.len() - 1);
            m.feed(false, seg(&server[..s], 3), &mut out);
            m.feed(false, seg(&server[s..], 4), &mut out);
            let got = summary(&out);
            let requests: Vec<&String> = got.iter().filter(|s| !s.starts_with("ok") && !s.starts_with("err")).collect();
            assert_eq!(requests, ["set", "get", "delete (one-way)", "incr"], "split {split}");
            let answers: Vec<&String> = got.iter().filter(|s| s.starts_with("ok") || s.starts_with("err")).collect();
            assert_eq!(answers, ["ok", "ok", "ok"], "split {split}");
        }
    }

    #[test]
    fn meta_commands_and_errors() {
        let mut m = Memcached::new();
        let mut out = Vec::new();
        m.feed(true, seg(b"mg foo v\r\nms foo 2 T0\r\nhi\r\nmg bar v q\r\nmn\r\nstats\r\n", 1), &mut out);
        m.feed(false, seg(b"VA 2 \r\nhi\r\nHD\r\nMN\r\nSTAT pid 1\r\nSTAT uptime 2\r\nEND\r\n", 2), &mut out);
        m.feed(true, seg(b"set k 0 0 notanumber\r\n", 3), &mut out);
        m.feed(true, seg(b"get k\r\n", 4), &mut out);
        m.feed(false, seg(b"CLIENT_ERROR bad command line format\r\n", 5), &mut out);
        assert_eq!(summary(&out), ["mg", "ms", "mn", "stats", "ok", "ok", "ok", "ok", "get", "err:CLIENT_ERROR"]);
        out.clear();
        m.feed(true, seg(b"set a 0 0 1 noreply\r\nx\r\n", 6), &mut out);
        assert_eq!(summary(&out), ["set (one-way)"], "noreply: a span ending at the write");
    }

    #[test]
    fn an_answer_in_another_protocol_is_no_answer() {
        let mut m = Memcached::new();
        let mut out = Vec::new();
        m.feed(true, seg(b"get /x HTTP/1.1\r\n", 1), &mut out);
        m.feed(false, seg(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n", 2), &mut out);
        m.close(&mut out);
        assert_eq!(summary(&out), vec!["get"], "the request, and no answer made up for it");
        assert_eq!(Parser::health(&m), Health::Foreign);
    }

    #[test]
    fn detection() {
        assert!(looks_like_command(b"get foo\r\n"));
        assert!(looks_like_command(b"set foo 0 0 3\r\nbar\r\n"));
        assert!(!looks_like_command(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_command(b"get foo\n"));
        assert!(!looks_like_command(b"*1\r\n$4\r\nPING\r\n"));
    }
}
