//! PostgreSQL protocol v3, both directions of one connection: startup (user, database),
//! SSLRequest, the simple query protocol, and the extended protocol (Parse/Bind/Execute/Sync
//! with named and unnamed statements, pipelined), answered by CommandComplete, ErrorResponse
//! (SQLSTATE) and ReadyForQuery.
//!
//! One request per simple Query (ending at its ReadyForQuery, so a multi-statement string is
//! one span) and one per Execute (ending at its CommandComplete or error). Messages are framed
//! by their length, so DataRows and capture gaps inside a message cost nothing; a gap that
//! crosses messages (a large result read in one go) loses the framing until the next request,
//! and whatever was waiting then ends at the last response bytes seen.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use super::framing::{CountedBody, Progress};
use super::message::{DbCommand, DbOutcome, DbRequest, Dialect, Message, Timing};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};

/// Body bytes kept per message (query text, error fields); the rest is counted, not kept.
const KEEP: usize = 8 * 1024;
/// Statements remembered per connection (a client that never closes them cannot grow us).
const MAX_STATEMENTS: usize = 512;
/// Messages longer than this are not PostgreSQL we can follow.
const MAX_MESSAGE: u32 = 1 << 30;

const PROTOCOL_3: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

pub const PROTOCOL: Protocol = Protocol {
    name: "postgresql",
    detectors: &[
        Detector { layer: Layer::Magic, sender: Sender::Client, matches: looks_like_startup, parser: || Box::new(Postgres::new()) },
        // A connection opened before we attached: a Query or Parse, told by a type byte and
        // printable text. A heuristic, after HTTP's grammar ('P' starts POST and PUT).
        Detector { layer: Layer::Heuristic, sender: Sender::Client, matches: looks_like_query, parser: || Box::new(Postgres::new()) },
    ],
};

fn looks_like_startup(data: &[u8]) -> bool {
    data.len() >= 8 && data[0] == 0 && looks_like_frontend(data)
}

fn looks_like_query(data: &[u8]) -> bool {
    !(data.len() >= 8 && data[0] == 0) && looks_like_frontend(data)
}

/// Does `data` start like a frontend message: a startup/SSL request, or a Query or Parse?
/// Used to recognise PostgreSQL connections from their first bytes, whatever the port.
pub fn looks_like_frontend(data: &[u8]) -> bool {
    if data.len() >= 8 && data[0] == 0 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        let code = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        return (8..=10_000).contains(&len) && matches!(code, PROTOCOL_3 | SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST);
    }
    // A Query or Parse on a connection opened before we attached: the length must be
    // plausible and the text printable.
    if data.len() >= 6 && matches!(data[0], b'Q' | b'P') {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let Some(body) = data.get(5..data.len().min(len.saturating_add(1))) else { return false };
        return len >= 5
            && len < MAX_MESSAGE as usize
            && body.iter().take(64).all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace() || *b == 0 || *b >= 0x80)
            && body.first().is_some_and(|b| *b != 0 || data[0] == b'P');
    }
    false
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameState {
    /// Collecting a header: type byte (absent for startup messages) and length.
    Header,
    /// Inside a message body.
    Body,
    /// Lost the framing.
    Desync,
}

/// A whole message, with its body as far as it was captured.
struct Frame {
    kind: u8,
    body: Vec<u8>,
    /// Entry and exit of the syscall that delivered the message's last byte.
    end: (u64, u64),
}

/// Length-prefixed framing for one direction.
struct Framer {
    frontend: bool,
    state: FrameState,
    header: Vec<u8>,
    kind: u8,
    body: CountedBody,
    /// A one-byte answer (to SSLRequest/GSSENCRequest) is due before the next message.
    single_byte_due: bool,
}

impl Framer {
    fn new(frontend: bool) -> Self {
        Self { frontend, state: FrameState::Header, header: Vec::with_capacity(8), kind: 0, body: CountedBody::default(), single_byte_due: false }
    }

    fn reset(&mut self) {
        self.state = FrameState::Header;
        self.header.clear();
        self.single_byte_due = false;
    }

    fn feed(&mut self, seg: Segment<'_>, out: &mut Vec<Frame>) {
        let end = (seg.ts_enter_ns, seg.ts_exit_ns);
        let mut rest = seg.data;
        while !rest.is_empty() {
            match self.state {
                FrameState::Desync => return,
                FrameState::Header => {
                    if self.header.is_empty() && self.single_byte_due && !self.frontend {
                        // 'S' (TLS follows) or 'N' (plaintext goes on).
                        self.single_byte_due = false;
                        out.push(Frame { kind: 0, body: vec![rest[0]], end });
                        rest = &rest[1..];
                        continue;
                    }
                    // Startup-type messages have no type byte; their length's top byte is 0,
                    // which no message type is.
                    let untyped = self.frontend && self.header.first().unwrap_or(&rest[0]) == &0;
                    let need = if untyped { 4 } else { 5 };
                    let take = (need - self.header.len()).min(rest.len());
                    self.header.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.header.len() < need {
                        break;
                    }
                    let (kind, len_bytes) = if untyped { (0, &self.header[..4]) } else { (self.header[0], &self.header[1..5]) };
                    let len = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
                    self.header.clear();
                    if !(4..MAX_MESSAGE).contains(&len) || !(kind == 0 || kind.is_ascii_alphanumeric()) {
                        self.state = FrameState::Desync;
                        return;
                    }
                    self.kind = kind;
                    let keep = if keeps_body(self.frontend, kind) { KEEP } else { 0 };
                    let progress = self.body.start(u64::from(len) - 4, keep);
                    self.advance(progress, end, out);
                }
                FrameState::Body => {
                    let (after, progress) = self.body.take(rest);
                    rest = after;
                    self.advance(progress, end, out);
                }
            }
        }
        let gap = seg.total.saturating_sub(seg.data.len() as u64);
        if gap > 0 {
            let progress = if self.state == FrameState::Body { self.body.skip_gap(gap) } else { Progress::Lost };
            self.advance(progress, end, out);
        }
    }

    fn advance(&mut self, progress: Progress, end: (u64, u64), out: &mut Vec<Frame>) {
        self.state = match progress {
            Progress::Inside => FrameState::Body,
            Progress::Lost => FrameState::Desync,
            Progress::Complete => {
                out.push(Frame { kind: self.kind, body: self.body.take_kept(), end });
                FrameState::Header
            }
        };
    }
}

/// Message bodies worth keeping; all others are only counted.
fn keeps_body(frontend: bool, kind: u8) -> bool {
    if frontend { matches!(kind, 0 | b'Q' | b'P' | b'B' | b'E' | b'C') } else { matches!(kind, b'C' | b'E') }
}

fn cstr(body: &[u8]) -> (&[u8], &[u8]) {
    match body.iter().position(|b| *b == 0) {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, &[]),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Simple,
    Execute,
    Sync,
}

/// A simple query's outcome builds up over several messages until ReadyForQuery.
#[derive(Default)]
struct SimpleOutcome {
    outcome: DbOutcome,
    rows: Option<u64>,
}

pub struct Postgres {
    frontend: Framer,
    backend: Framer,
    database: Option<String>,
    statements: HashMap<Vec<u8>, String>,
    /// Portal name → (statement text, prepared by name).
    portals: HashMap<Vec<u8>, (String, bool)>,
    expect: VecDeque<Expect>,
    simple: SimpleOutcome,
    /// An Execute failed: the server skips everything up to the next Sync.
    aborted: bool,
    /// When the last response bytes arrived (ends what waits when framing was lost).
    last_backend: (u64, u64),
}

impl Default for Postgres {
    fn default() -> Self {
        Self::new()
    }
}

impl Postgres {
    pub fn new() -> Self {
        Self {
            frontend: Framer::new(true),
            backend: Framer::new(false),
            database: None,
            statements: HashMap::default(),
            portals: HashMap::default(),
            expect: VecDeque::new(),
            simple: SimpleOutcome::default(),
            aborted: false,
            last_backend: (0, 0),
        }
    }

    /// Both directions lost: nothing here is PostgreSQL any more.
    pub fn is_desynced(&self) -> bool {
        self.frontend.state == FrameState::Desync
    }

    pub fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Message>) {
        let mut frames = Vec::new();
        if from_client {
            if self.frontend.state == FrameState::Desync && looks_like_frontend(seg.data) {
                self.frontend.reset();
            }
            self.frontend.feed(seg, &mut frames);
            for f in frames {
                self.on_frontend(f, seg, out);
            }
        } else {
            self.last_backend = (seg.ts_enter_ns, seg.ts_exit_ns);
            self.backend.feed(seg, &mut frames);
            for f in frames {
                self.on_backend(f, out);
            }
        }
    }

    /// The connection closed: what waits ends at the last response seen, if framing was lost.
    pub fn close(&mut self, out: &mut Vec<Message>) {
        if self.backend.state == FrameState::Desync {
            self.end_blind(out);
        }
    }

    fn end_blind(&mut self, out: &mut Vec<Message>) {
        let (end_enter_ns, end_exit_ns) = self.last_backend;
        for e in self.expect.drain(..) {
            if e != Expect::Sync {
                out.push(Message::db_answer(end_enter_ns, end_exit_ns, DbOutcome::Ok, None));
            }
        }
        self.simple = SimpleOutcome::default();
        self.aborted = false;
        self.backend.reset();
    }

    fn request(&self, command: DbCommand, prepared: bool, seg: Segment<'_>, end: (u64, u64)) -> Message {
        let timing = Timing { first_enter_ns: seg.ts_enter_ns, first_exit_ns: seg.ts_exit_ns, last_enter_ns: end.0, last_exit_ns: end.1 };
        Message::db_call(timing, DbRequest { system: PROTOCOL.name, command, namespace: self.database.clone(), prepared })
    }

    fn on_frontend(&mut self, f: Frame, seg: Segment<'_>, out: &mut Vec<Message>) {
        if f.kind != 0 && self.backend.state == FrameState::Desync {
            // A new request: the previous answer is over, even if we lost its end.
            self.end_blind(out);
        }
        match f.kind {
            0 => self.on_startup(&f.body),
            b'Q' => {
                let (sql, _) = cstr(&f.body);
                self.expect.push_back(Expect::Simple);
                out.push(self.request(DbCommand::Sql(text(sql), Dialect::Postgres), false, seg, f.end));
            }
            b'P' => {
                let (name, rest) = cstr(&f.body);
                let (sql, _) = cstr(rest);
                if self.statements.len() >= MAX_STATEMENTS && !self.statements.contains_key(name) {
                    self.statements.clear();
                }
                self.statements.insert(name.to_vec(), text(sql));
            }
            b'B' => {
                let (portal, rest) = cstr(&f.body);
                let (statement, _) = cstr(rest);
                let sql = self.statements.get(statement).cloned().unwrap_or_default();
                if self.portals.len() >= MAX_STATEMENTS {
                    self.portals.clear();
                }
                self.portals.insert(portal.to_vec(), (sql, !statement.is_empty()));
            }
            b'E' => {
                let (portal, _) = cstr(&f.body);
                let (sql, prepared) = self.portals.get(portal).cloned().unwrap_or_default();
                let command = if sql.is_empty() { DbCommand::Named("EXECUTE".into()) } else { DbCommand::Sql(sql, Dialect::Postgres) };
                self.expect.push_back(Expect::Execute);
                out.push(self.request(command, prepared, seg, f.end));
            }
            b'S' => self.expect.push_back(Expect::Sync),
            b'C' => {
                let (name, _) = cstr(f.body.get(1..).unwrap_or_default());
                match f.body.first() {
                    Some(b'S') => self.statements.remove(name),
                    _ => self.portals.remove(name).map(|(s, _)| s),
                };
            }
            _ => {}
        }
    }

    fn on_startup(&mut self, body: &[u8]) {
        let Some(code) = body.get(..4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])) else { return };
        match code {
            SSL_REQUEST | GSSENC_REQUEST => self.backend.single_byte_due = true,
            PROTOCOL_3 => {
                let mut rest = &body[4..];
                let mut user = None;
                while !rest.is_empty() && rest[0] != 0 {
                    let (key, r) = cstr(rest);
                    let (value, r) = cstr(r);
                    rest = r;
                    match key {
                        b"database" => self.database = Some(text(value)),
                        b"user" => user = Some(text(value)),
                        _ => {}
                    }
                }
                // The database defaults to the user name.
                if self.database.is_none() {
                    self.database = user;
                }
            }
            _ => {}
        }
    }

    fn on_backend(&mut self, f: Frame, out: &mut Vec<Message>) {
        let response = |outcome, rows| Message::db_answer(f.end.0, f.end.1, outcome, rows);
        match f.kind {
            b'C' | b'I' | b's' => {
                let rows = if f.kind == b'C' { rows_of(&f.body) } else { None };
                match self.expect.front() {
                    Some(Expect::Execute) => {
                        self.expect.pop_front();
                        out.push(response(DbOutcome::Ok, rows));
                    }
                    Some(Expect::Simple) => self.simple.rows = rows.or(self.simple.rows),
                    _ => {}
                }
            }
            b'E' => {
                let code = sqlstate(&f.body);
                match self.expect.front() {
                    Some(Expect::Execute) => {
                        self.expect.pop_front();
                        self.aborted = true;
                        out.push(response(DbOutcome::Error { code }, None));
                    }
                    Some(Expect::Simple) => self.simple.outcome = DbOutcome::Error { code },
                    _ => {}
                }
            }
            b'Z' => {
                while let Some(e) = self.expect.pop_front() {
                    match e {
                        Expect::Execute => {
                            let outcome = if self.aborted { DbOutcome::NotExecuted } else { DbOutcome::Ok };
                            out.push(response(outcome, None));
                        }
                        Expect::Simple => {
                            let s = std::mem::take(&mut self.simple);
                            out.push(response(s.outcome, s.rows));
                            break;
                        }
                        Expect::Sync => break,
                    }
                }
                self.aborted = false;
            }
            _ => {}
        }
    }
}

/// Rows from a CommandComplete tag: `SELECT 5`, `INSERT 0 1`, `UPDATE 3`.
fn rows_of(body: &[u8]) -> Option<u64> {
    let (tag, _) = cstr(body);
    std::str::from_utf8(tag).ok()?.rsplit(' ').next()?.parse().ok()
}

/// The SQLSTATE (`C` field) of an ErrorResponse.
fn sqlstate(body: &[u8]) -> String {
    let mut rest = body;
    while let Some((&field, r)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let (value, r) = cstr(r);
        if field == b'C' {
            return text(value);
        }
        rest = r;
    }
    "ERROR".to_string()
}

/// The inherent methods do the work (they take precedence in `Postgres::feed`).
impl Parser for Postgres {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        Postgres::feed(self, from == Sender::Client, seg, out);
    }
    fn close(&mut self, out: &mut Vec<Message>) {
        Postgres::close(self, out);
    }
    fn health(&self) -> Health {
        Health::of(false, self.is_desynced())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![kind];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn startup(user: &str, db: &str) -> Vec<u8> {
        let mut body = PROTOCOL_3.to_be_bytes().to_vec();
        for s in ["user", user, "database", db] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut v = (body.len() as u32 + 4).to_be_bytes().to_vec();
        v.extend_from_slice(&body);
        v
    }

    /// Requests and responses as short strings.
    fn summary(out: &[Message]) -> Vec<String> {
        out.iter()
            .map(|m| match (m.db_request(), m.db_response()) {
                (Some(r), _) => match &r.command {
                    DbCommand::Sql(s, _) => format!("{}{s}@{}", if r.prepared { "prep:" } else { "" }, r.namespace.as_deref().unwrap_or("-")),
                    DbCommand::Named(n) => n.clone(),
                    DbCommand::Unrecognised => "?".into(),
                },
                (None, Some(r)) => match &r.outcome {
                    DbOutcome::Ok => format!("ok:{}", r.rows.map_or("-".into(), |n| n.to_string())),
                    DbOutcome::Error { code } => format!("err:{code}"),
                    DbOutcome::NotExecuted => "skipped".into(),
                },
                (None, None) => "other".into(),
            })
            .collect()
    }

    fn ready() -> Vec<u8> {
        msg(b'Z', b"I")
    }

    #[test]
    fn startup_and_simple_query_split_everywhere() {
        let query = msg(b'Q', b"SELECT 1; SELECT 2\0");
        let mut login = msg(b'R', &[0, 0, 0, 0]);
        login.extend(msg(b'S', b"client_encoding\0UTF8\0"));
        login.extend(ready());
        let mut answer = msg(b'T', &[0, 1]);
        answer.extend(msg(b'D', &[0, 1, 0, 0, 0, 1, b'1']));
        answer.extend(msg(b'C', b"SELECT 1\0"));
        answer.extend(msg(b'C', b"SELECT 1\0"));
        answer.extend(ready());
        for split in 1..answer.len() {
            let mut pg = Postgres::new();
            let mut out = Vec::new();
            let s = startup("alice", "shop");
            let c = split.min(s.len() - 1);
            pg.feed(true, seg(&s[..c], 1), &mut out);
            pg.feed(true, seg(&s[c..], 1), &mut out);
            pg.feed(false, seg(&login, 2), &mut out);
            let q = split.min(query.len() - 1);
            pg.feed(true, seg(&query[..q], 3), &mut out);
            pg.feed(true, seg(&query[q..], 4), &mut out);
            pg.feed(false, seg(&answer[..split], 5), &mut out);
            pg.feed(false, seg(&answer[split..], 6), &mut out);
            assert_eq!(summary(&out), ["SELECT 1; SELECT 2@shop", "ok:1"], "split {split}");
        }
    }

    #[test]
    fn extended_protocol_named_statements_and_pipelining() {
        let mut pg = Postgres::new();
        let mut out = Vec::new();
        let mut c = msg(b'P', b"s1\0SELECT * FROM t WHERE id = $1\0\0\0");
        for _ in 0..2 {
            c.extend(msg(b'B', b"\0s1\0\0\0\0\0\0\0"));
            c.extend(msg(b'E', b"\0\0\0\0\0"));
        }
        c.extend(msg(b'P', b"\0INSERT INTO t VALUES ($1)\0\0\0"));
        c.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
        c.extend(msg(b'E', b"\0\0\0\0\0"));
        c.extend(msg(b'S', b""));
        pg.feed(true, seg(&c, 1), &mut out);
        let mut s = msg(b'1', b"");
        for _ in 0..2 {
            s.extend(msg(b'2', b""));
            s.extend(msg(b'C', b"SELECT 1\0"));
        }
        s.extend(msg(b'1', b""));
        s.extend(msg(b'2', b""));
        s.extend(msg(b'C', b"INSERT 0 1\0"));
        s.extend(ready());
        pg.feed(false, seg(&s, 2), &mut out);
        assert_eq!(summary(&out), ["prep:SELECT * FROM t WHERE id = $1@-", "prep:SELECT * FROM t WHERE id = $1@-", "INSERT INTO t VALUES ($1)@-", "ok:1", "ok:1", "ok:1"]);
    }

    #[test]
    fn error_skips_the_rest_of_the_pipeline() {
        let mut pg = Postgres::new();
        let mut out = Vec::new();
        let mut c = Vec::new();
        for q in ["SELEC bad", "SELECT 2"] {
            c.extend(msg(b'P', format!("\0{q}\0\0\0").as_bytes()));
            c.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
            c.extend(msg(b'E', b"\0\0\0\0\0"));
        }
        c.extend(msg(b'S', b""));
        pg.feed(true, seg(&c, 1), &mut out);
        let mut s = msg(b'E', b"SERROR\0C42601\0Msyntax error\0\0");
        s.extend(ready());
        pg.feed(false, seg(&s, 2), &mut out);
        assert_eq!(summary(&out)[2..], ["err:42601", "skipped"]);
        // A simple query with an error.
        out.clear();
        pg.feed(true, seg(&msg(b'Q', b"SELECT * FROM nope\0"), 3), &mut out);
        let mut s = msg(b'E', b"SERROR\0C42P01\0\0");
        s.extend(ready());
        pg.feed(false, seg(&s, 4), &mut out);
        assert_eq!(summary(&out), ["SELECT * FROM nope@-", "err:42P01"]);
    }

    #[test]
    fn large_result_across_gaps_ends_at_the_next_request() {
        let mut pg = Postgres::new();
        let mut out = Vec::new();
        pg.feed(true, seg(&msg(b'Q', b"SELECT * FROM big\0"), 1), &mut out);
        let rows = msg(b'D', &[0u8; 20]).repeat(10);
        pg.feed(false, Segment { data: &rows[..30], total: 100_000, ts_enter_ns: 5, ts_exit_ns: 6 }, &mut out);
        pg.feed(false, Segment { data: &rows[..30], total: 100_000, ts_enter_ns: 7, ts_exit_ns: 8 }, &mut out);
        assert_eq!(out.len(), 1);
        pg.feed(true, seg(&msg(b'Q', b"SELECT 1\0"), 9), &mut out);
        assert_eq!(summary(&out), ["SELECT * FROM big@-", "ok:-", "SELECT 1@-"]);
        assert!(out[1].db_response().is_some());
        assert_eq!(out[1].timing().last_exit_ns, 8);
        pg.feed(false, seg(&[msg(b'C', b"SELECT 1\0"), ready()].concat(), 10), &mut out);
        assert_eq!(summary(&out)[3..], ["ok:1"]);
    }

    #[test]
    fn ssl_request_refused_then_plaintext_startup() {
        let mut pg = Postgres::new();
        let mut out = Vec::new();
        let ssl = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        assert!(looks_like_frontend(&ssl));
        pg.feed(true, seg(&ssl, 1), &mut out);
        pg.feed(false, seg(b"N", 2), &mut out);
        pg.feed(true, seg(&startup("bob", "db1"), 3), &mut out);
        pg.feed(false, seg(&[msg(b'R', &[0, 0, 0, 0]), ready()].concat(), 4), &mut out);
        pg.feed(true, seg(&msg(b'Q', b"BEGIN\0"), 5), &mut out);
        pg.feed(false, seg(&[msg(b'C', b"BEGIN\0"), ready()].concat(), 6), &mut out);
        assert_eq!(summary(&out), ["BEGIN@db1", "ok:-"]);
    }

    #[test]
    fn detection() {
        assert!(looks_like_frontend(&startup("u", "d")));
        assert!(looks_like_frontend(&msg(b'Q', b"select 1\0")));
        assert!(!looks_like_frontend(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_frontend(b"*1\r\n$4\r\nPING\r\n"));
        assert!(!looks_like_frontend(b"Q\xff\xff\xff\xffabc"));
        // Found by cargo fuzz: a length shorter than its own field.
        assert!(!looks_like_frontend(b"Q\x00\x00\x00\x01abc"));
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 7u64;
        for _ in 0..2000 {
            let mut pg = Postgres::new();
            let mut out = Vec::new();
            let data: Vec<u8> = (0..64)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            pg.feed(state & 1 == 0, seg(&data, 1), &mut out);
            pg.feed(state & 2 == 0, Segment { data: &data[..10], total: 5000, ts_enter_ns: 1, ts_exit_ns: 2 }, &mut out);
            // Whatever the bytes, an answer is only ever emitted for a request emitted before it
            // (garbage can make requests; it must never make answers out of nothing).
            let mut outstanding = 0i64;
            for m in &out {
                outstanding += if matches!(m, Message::Request(_)) { 1 } else { -1 };
                assert!(outstanding >= 0, "an answer without a request: {:?}", summary(&out));
            }
        }
    }
}
