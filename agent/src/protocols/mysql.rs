//! MySQL/MariaDB client/server protocol, both directions of one connection: the handshake
//! (database name), COM_QUERY, COM_INIT_DB, COM_STMT_PREPARE/EXECUTE by statement id, and
//! OK/ERR/result-set answers, including multi-packet and multi-result ones.
//!
//! Whether the server sends the EOF packet after column definitions (CLIENT_DEPRECATE_EOF) is
//! told apart from the packets themselves: an EOF packet is exactly five bytes, an OK packet
//! that ends a result is at least seven, and a column definition never starts with 0xFE. So
//! connections opened before we attached, whose handshake we never saw, are framed as well.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;

use super::framing::{CountedBody, Progress};
use super::message::{DbCommand, DbOutcome, DbRequest, Dialect, Message, Timing};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};

/// Client packet bytes kept (query text); server packets keep only their first bytes.
const KEEP_CLIENT: usize = 8 * 1024;
const KEEP_SERVER: usize = 64;
const MAX_STATEMENTS: usize = 512;

const COM_QUIT: u8 = 0x01;
const COM_INIT_DB: u8 = 0x02;
const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;

const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
const CLIENT_PROTOCOL_41: u32 = 1 << 9;
const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
const CLIENT_PLUGIN_AUTH_LENENC: u32 = 1 << 21;
const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

pub const PROTOCOL: Protocol = Protocol {
    name: "mysql",
    detectors: &[
        Detector { layer: Layer::Structure, sender: Sender::Server, matches: looks_like_greeting, parser: || Box::new(Mysql::new(false)) },
        // A connection opened before we attached: a query packet.
        Detector { layer: Layer::Structure, sender: Sender::Client, matches: looks_like_command, parser: || Box::new(Mysql::new(true)) },
    ],
};

/// Does `data` start with a server greeting (protocol 10)?
pub fn looks_like_greeting(data: &[u8]) -> bool {
    data.len() >= 10 && data[3] == 0 && data[4] == 0x0a && {
        let len = u32::from_le_bytes([data[0], data[1], data[2], 0]) as usize;
        let Some(version) = data.get(5..data.len().min(4 + len)) else { return false };
        let end = version.iter().position(|b| *b == 0);
        (30..=512).contains(&len) && end.is_some_and(|e| e > 0 && version[..e].iter().all(u8::is_ascii_graphic))
    }
}

/// Does `data` start with a client command (COM_QUERY or COM_STMT_PREPARE with text)?
pub fn looks_like_command(data: &[u8]) -> bool {
    data.len() >= 6 && data[3] == 0 && matches!(data[4], COM_QUERY | COM_STMT_PREPARE) && {
        let len = u32::from_le_bytes([data[0], data[1], data[2], 0]) as usize;
        let Some(text) = data.get(5..data.len().min(4 + len)) else { return false };
        len >= 2
            && text.iter().take(32).all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace() || *b >= 0x80)
            && text.first().is_some_and(|b| !b.is_ascii_whitespace() || text.len() > 1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameState {
    Header,
    Body,
    Desync,
}

struct Packet {
    seq: u8,
    len: u32,
    body: Vec<u8>,
    end: (u64, u64),
}

/// 3-byte length + sequence id framing for one direction.
struct Framer {
    keep: usize,
    state: FrameState,
    header: Vec<u8>,
    seq: u8,
    len: u32,
    body: CountedBody,
}

impl Framer {
    fn new(keep: usize) -> Self {
        Self { keep, state: FrameState::Header, header: Vec::with_capacity(4), seq: 0, len: 0, body: CountedBody::default() }
    }

    fn feed(&mut self, seg: Segment<'_>, out: &mut Vec<Packet>) {
        let end = (seg.ts_enter_ns, seg.ts_exit_ns);
        let mut rest = seg.data;
        while !rest.is_empty() {
            match self.state {
                FrameState::Desync => return,
                FrameState::Header => {
                    let take = (4 - self.header.len()).min(rest.len());
                    self.header.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                    if self.header.len() < 4 {
                        break;
                    }
                    self.len = u32::from_le_bytes([self.header[0], self.header[1], self.header[2], 0]);
                    self.seq = self.header[3];
                    self.header.clear();
                    let progress = self.body.start(u64::from(self.len), self.keep);
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

    fn advance(&mut self, progress: Progress, end: (u64, u64), out: &mut Vec<Packet>) {
        self.state = match progress {
            Progress::Inside => FrameState::Body,
            Progress::Lost => FrameState::Desync,
            Progress::Complete => {
                out.push(Packet { seq: self.seq, len: self.len, body: self.body.take_kept(), end });
                FrameState::Header
            }
        };
    }
}

/// A length-encoded integer and the bytes after it.
fn lenenc(b: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = b.split_first()?;
    let n = match first {
        0..=0xfa => return Some((u64::from(first), rest)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = rest.get(..n)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some((u64::from_le_bytes(v), &rest[n..]))
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|c| *c == 0) {
        Some(p) => (&b[..p], &b[p + 1..]),
        None => (b, &[]),
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// A statement span waits for this answer.
    Statement,
    /// COM_STMT_PREPARE: the answer names the statement id for this text.
    Prepare(String),
    /// COM_INIT_DB: the database in use changes on OK.
    InitDb(String),
    /// Ping, reset, statistics...: answered, but no span.
    Silent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AfterDefs {
    Rows,
    PrepareColumns(u64),
    Next,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// The next packet starts an answer.
    Start,
    /// Column (or parameter) definitions still to come.
    Defs {
        left: u64,
        then: AfterDefs,
    },
    /// After definitions: an EOF packet, unless the server deprecated it.
    MaybeEof(AfterDefs),
    Rows,
}

pub struct Mysql {
    client: Framer,
    server: Framer,
    handshake_done: bool,
    /// `mysql`, or `mariadb` once the greeting said so.
    /// `db.system.name`: mysql, or mariadb once the greeting says so.
    system: &'static str,
    capabilities: u32,
    database: Option<String>,
    statements: HashMap<u32, String>,
    expect: VecDeque<Expect>,
    answer: Answer,
    rows: u64,
    last_server: (u64, u64),
}

impl Mysql {
    /// `handshake_done`: false for a connection seen from its start (the greeting comes
    /// first), true for one adopted mid-stream.
    pub fn new(handshake_done: bool) -> Self {
        Self {
            client: Framer::new(KEEP_CLIENT),
            server: Framer::new(KEEP_SERVER),
            handshake_done,
            system: "mysql",
            capabilities: 0,
            database: None,
            statements: HashMap::default(),
            expect: VecDeque::new(),
            answer: Answer::Start,
            rows: 0,
            last_server: (0, 0),
        }
    }

    pub fn is_desynced(&self) -> bool {
        self.client.state == FrameState::Desync
    }

    pub fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Message>) {
        let mut packets = Vec::new();
        if from_client {
            if self.client.state == FrameState::Desync && looks_like_command(seg.data) {
                self.client = Framer::new(KEEP_CLIENT);
            }
            self.client.feed(seg, &mut packets);
            for p in packets {
                self.on_client(p, seg, out);
            }
        } else {
            self.last_server = (seg.ts_enter_ns, seg.ts_exit_ns);
            self.server.feed(seg, &mut packets);
            for p in packets {
                self.on_server(&p, out);
            }
        }
    }

    pub fn close(&mut self, out: &mut Vec<Message>) {
        if self.server.state == FrameState::Desync {
            self.end_blind(out);
        }
    }

    /// The answer was cut by the capture cap across packets: what waited ended at the last
    /// server bytes seen, and the next answer starts a new packet.
    fn end_blind(&mut self, out: &mut Vec<Message>) {
        let (end_enter_ns, end_exit_ns) = self.last_server;
        for e in self.expect.drain(..) {
            if e == Expect::Statement {
                out.push(Message::db_answer(end_enter_ns, end_exit_ns, DbOutcome::Ok, None));
            }
        }
        self.server = Framer::new(KEEP_SERVER);
        self.answer = Answer::Start;
        self.rows = 0;
    }

    fn on_client(&mut self, p: Packet, seg: Segment<'_>, out: &mut Vec<Message>) {
        if !self.handshake_done {
            // HandshakeResponse41 (or the short SSLRequest before TLS).
            if p.seq >= 1 && p.body.len() >= 32 {
                self.on_handshake_response(&p.body);
            }
            return;
        }
        if p.seq != 0 {
            return;
        }
        if self.server.state == FrameState::Desync || self.answer != Answer::Start {
            self.end_blind(out);
        }
        let Some((&command, args)) = p.body.split_first() else { return };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (request, expect) = match command {
            COM_QUERY => {
                let mut sql = args;
                if self.capabilities & CLIENT_QUERY_ATTRIBUTES != 0 {
                    // parameter_count and parameter_set_count come first (MySQL 8).
                    if let Some((_, r)) = lenenc(sql).and_then(|(_, r)| lenenc(r)) {
                        sql = r;
                    }
                }
                (Some((DbCommand::Sql(text(sql), Dialect::Mysql), false)), Expect::Statement)
            }
            COM_INIT_DB => (Some((DbCommand::Named("USE".into()), false)), Expect::InitDb(text(args))),
            COM_STMT_PREPARE => (None, Expect::Prepare(text(args))),
            COM_STMT_EXECUTE => {
                let id = args.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let command = self.statements.get(&id).map_or_else(|| DbCommand::Named("EXECUTE".into()), |s| DbCommand::Sql(s.clone(), Dialect::Mysql));
                (Some((command, true)), Expect::Statement)
            }
            COM_STMT_CLOSE => {
                if let Some(b) = args.get(..4) {
                    self.statements.remove(&u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
                return;
            }
            COM_QUIT | COM_STMT_SEND_LONG_DATA => return,
            _ => (None, Expect::Silent),
        };
        if let Some((command, prepared)) = request {
            let timing = Timing { first_enter_ns: seg.ts_enter_ns, first_exit_ns: seg.ts_exit_ns, last_enter_ns: p.end.0, last_exit_ns: p.end.1 };
            out.push(Message::db_call(timing, DbRequest { system: self.system, command, namespace: self.database.clone(), prepared }));
        }
        self.expect.push_back(expect);
    }

    fn on_handshake_response(&mut self, body: &[u8]) {
        let caps = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
        self.capabilities = caps;
        if caps & CLIENT_PROTOCOL_41 == 0 || body.len() == 32 {
            return;
        }
        let (_user, rest) = cstr(&body[32..]);
        let rest = if caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
            lenenc(rest).and_then(|(n, r)| r.get(n as usize..))
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            rest.split_first().and_then(|(&n, r)| r.get(n as usize..))
        } else {
            Some(cstr(rest).1)
        };
        if caps & CLIENT_CONNECT_WITH_DB != 0
            && let Some(rest) = rest
        {
            let (db, _) = cstr(rest);
            if !db.is_empty() {
                self.database = Some(String::from_utf8_lossy(db).into_owned());
            }
        }
    }

    fn on_server(&mut self, p: &Packet, out: &mut Vec<Message>) {
        let first = p.body.first().copied().unwrap_or(0);
        if !self.handshake_done {
            if p.seq == 0 && first == 0x0a && p.body.windows(7).any(|w| w == b"MariaDB") {
                self.system = "mariadb";
            }
            // Greeting, auth switch, more data... until OK (or ERR) ends the handshake.
            if p.seq > 0 && (first == 0x00 || first == 0xff) {
                self.handshake_done = true;
            }
            return;
        }
        match self.answer {
            Answer::Start => self.on_answer_start(p, out),
            Answer::Defs { left, then } => {
                self.answer = if left <= 1 { Answer::MaybeEof(then) } else { Answer::Defs { left: left - 1, then } };
            }
            Answer::MaybeEof(then) => {
                self.answer = self.after_defs(then);
                if !is_eof(p) {
                    self.on_server(p, out);
                }
            }
            Answer::Rows => {
                if first == 0xff {
                    self.complete(DbOutcome::Error { code: error_code(&p.body) }, None, p, out);
                } else if first == 0xfe && p.len < 0xff_ffff {
                    // EOF, or an OK packet with the EOF header (a row starting with 0xFE would
                    // hold a string of 16 MiB or more): the result set ends.
                    if status_of_end(p) & SERVER_MORE_RESULTS_EXISTS != 0 {
                        self.answer = Answer::Start;
                    } else {
                        self.complete(DbOutcome::Ok, Some(self.rows), p, out);
                    }
                } else {
                    self.rows += 1;
                }
            }
        }
    }

    fn on_answer_start(&mut self, p: &Packet, out: &mut Vec<Message>) {
        let Some(front) = self.expect.front().cloned() else { return };
        let first = p.body.first().copied().unwrap_or(0);
        match first {
            0x00 if p.len >= 7 || matches!(front, Expect::Prepare(_)) => {
                if let Expect::Prepare(sql) = &front {
                    // STMT_PREPARE_OK: id, columns, params; then their definitions.
                    let b = &p.body;
                    if b.len() >= 9 && !sql.is_empty() {
                        let id = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
                        let columns = u64::from(u16::from_le_bytes([b[5], b[6]]));
                        let params = u64::from(u16::from_le_bytes([b[7], b[8]]));
                        if self.statements.len() >= MAX_STATEMENTS {
                            self.statements.clear();
                        }
                        self.statements.insert(id, sql.clone());
                        self.complete(DbOutcome::Ok, None, p, out);
                        self.answer =
                            if params > 0 { Answer::Defs { left: params, then: AfterDefs::PrepareColumns(columns) } } else { self.after_defs(AfterDefs::PrepareColumns(columns)) };
                        return;
                    }
                }
                let Some((affected, rest)) = lenenc(p.body.get(1..).unwrap_or_default()) else { return self.complete(DbOutcome::Ok, None, p, out) };
                let status = lenenc(rest).and_then(|(_, r)| r.get(..2)).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
                self.rows += affected;
                if status & SERVER_MORE_RESULTS_EXISTS == 0 {
                    if let Expect::InitDb(db) = &front {
                        self.database = Some(db.clone());
                    }
                    self.complete(DbOutcome::Ok, Some(self.rows), p, out);
                }
            }
            0xff => self.complete(DbOutcome::Error { code: error_code(&p.body) }, None, p, out),
            // LOCAL INFILE request: the client sends the file, the server answers with OK.
            0xfb => {}
            _ => match lenenc(&p.body) {
                Some((columns, _)) if columns > 0 => self.answer = Answer::Defs { left: columns, then: AfterDefs::Rows },
                _ => self.complete(DbOutcome::Ok, None, p, out),
            },
        }
    }

    fn after_defs(&self, then: AfterDefs) -> Answer {
        match then {
            AfterDefs::Rows => Answer::Rows,
            AfterDefs::PrepareColumns(c) if c > 0 => Answer::Defs { left: c, then: AfterDefs::Next },
            _ => Answer::Start,
        }
    }

    /// The answer to the oldest command is complete.
    fn complete(&mut self, outcome: DbOutcome, rows: Option<u64>, p: &Packet, out: &mut Vec<Message>) {
        self.answer = Answer::Start;
        self.rows = 0;
        if let Some(Expect::Statement | Expect::InitDb(_)) = self.expect.pop_front() {
            out.push(Message::db_answer(p.end.0, p.end.1, outcome, rows));
        }
    }
}

fn is_eof(p: &Packet) -> bool {
    p.len == 5 && p.body.first() == Some(&0xfe)
}

/// Status flags of a result's last packet: EOF (`FE warnings status`) or OK with an EOF header.
fn status_of_end(p: &Packet) -> u16 {
    let status = if p.len == 5 { p.body.get(3..5) } else { lenenc(p.body.get(1..).unwrap_or_default()).and_then(|(_, r)| lenenc(r)).and_then(|(_, r)| r.get(..2)) };
    status.map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

/// The error number of an ERR packet, as text (`1064`).
fn error_code(body: &[u8]) -> String {
    body.get(1..3).map_or_else(|| "ERROR".to_string(), |c| u16::from_le_bytes([c[0], c[1]]).to_string())
}

/// The inherent methods do the work (they take precedence in `Mysql::feed`).
impl Parser for Mysql {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        Mysql::feed(self, from == Sender::Client, seg, out);
    }
    fn close(&mut self, out: &mut Vec<Message>) {
        Mysql::close(self, out);
    }
    fn health(&self) -> Health {
        Health::of(false, self.is_desynced())
    }
    fn after_tls_start(&self) -> Option<Box<dyn Parser>> {
        // TLS starts inside the handshake: the plaintext goes on with the rest of it.
        Some(Box::new(Mysql::new(false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    fn packet(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
        v.push(seq);
        v.extend_from_slice(payload);
        v
    }

    fn summary(out: &[Message]) -> Vec<String> {
        out.iter()
            .map(|m| match (m.db_request(), m.db_response()) {
                (Some(r), _) => match &r.command {
                    DbCommand::Sql(s, _) => format!("{}{s}@{}", if r.prepared { "prep:" } else { "" }, r.namespace.as_deref().unwrap_or("-")),
                    DbCommand::Named(n) => n.clone(),
                    DbCommand::Unrecognised => "?".into(),
                },
                (None, Some(r)) => match &r.outcome {
                    DbOutcome::Error { code } => format!("err:{code}"),
                    _ => format!("ok:{}", r.rows.map_or("-".into(), |n| n.to_string())),
                },
                (None, None) => "other".into(),
            })
            .collect()
    }

    fn greeting() -> Vec<u8> {
        let mut g = vec![0x0a];
        g.extend_from_slice(b"10.11.6-MariaDB\0");
        g.extend_from_slice(&[1, 0, 0, 0]);
        g.extend_from_slice(&[b'a'; 8]);
        g.extend_from_slice(&[0, 0xff, 0xf7, 8, 2, 0, 0xff, 0x81, 21]);
        g.extend_from_slice(&[0; 10]);
        g.extend_from_slice(&[b'b'; 12]);
        g.push(0);
        g.extend_from_slice(b"mysql_native_password\0");
        packet(0, &g)
    }

    fn handshake_response(db: &str) -> Vec<u8> {
        let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_CONNECT_WITH_DB;
        let mut b = caps.to_le_bytes().to_vec();
        b.extend_from_slice(&[0, 0, 0, 1, 33]);
        b.extend_from_slice(&[0; 23]);
        b.extend_from_slice(b"root\0");
        b.push(20);
        b.extend_from_slice(&[7; 20]);
        b.extend_from_slice(db.as_bytes());
        b.push(0);
        packet(1, &b)
    }

    fn ok(seq: u8, affected: u8, status: u16) -> Vec<u8> {
        let mut b = vec![0, affected, 0];
        b.extend_from_slice(&status.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        packet(seq, &b)
    }

    fn eof(seq: u8, status: u16) -> Vec<u8> {
        let mut b = vec![0xfe, 0, 0];
        b.extend_from_slice(&status.to_le_bytes());
        packet(seq, &b)
    }

    fn column(seq: u8) -> Vec<u8> {
        packet(seq, b"\x03def\x04shop\x01t\x01t\x02id\x02id\x0c?\x00\x0b\x00\x00\x00\x03\x00\x00\x00\x00\x00")
    }

    fn result_set(rows: usize, deprecate_eof: bool, status: u16) -> Vec<u8> {
        let mut v = packet(1, &[1]);
        v.extend(column(2));
        if !deprecate_eof {
            v.extend(eof(3, 0));
        }
        for i in 0..rows {
            v.extend(packet(4 + i as u8, b"\x011"));
        }
        if deprecate_eof {
            let mut b = vec![0xfe, 0, 0];
            b.extend_from_slice(&status.to_le_bytes());
            b.extend_from_slice(&[0, 0]);
            v.extend(packet(9, &b));
        } else {
            v.extend(eof(9, status));
        }
        v
    }

    #[test]
    fn handshake_queries_and_result_sets() {
        for deprecate_eof in [false, true] {
            let mut m = Mysql::new(false);
            let mut out = Vec::new();
            m.feed(false, seg(&greeting(), 1), &mut out);
            m.feed(true, seg(&handshake_response("shop"), 2), &mut out);
            m.feed(false, seg(&ok(2, 0, 2), 3), &mut out);
            m.feed(true, seg(&packet(0, b"\x03SELECT id FROM t"), 4), &mut out);
            let answer = result_set(3, deprecate_eof, 0);
            for (i, b) in answer.iter().enumerate() {
                m.feed(false, seg(std::slice::from_ref(b), 5 + i as u64), &mut out);
            }
            m.feed(true, seg(&packet(0, b"\x03UPDATE t SET a = 1"), 100), &mut out);
            m.feed(false, seg(&ok(1, 4, 2), 101), &mut out);
            m.feed(true, seg(&packet(0, b"\x03SELEC"), 102), &mut out);
            let mut err = vec![0xff, 0x28, 0x04, b'#'];
            err.extend_from_slice(b"42000You have an error");
            m.feed(false, seg(&packet(1, &err), 103), &mut out);
            assert_eq!(summary(&out), ["SELECT id FROM t@shop", "ok:3", "UPDATE t SET a = 1@shop", "ok:4", "SELEC@shop", "err:1064"], "deprecate_eof {deprecate_eof}");
        }
    }

    #[test]
    fn multi_results_init_db_and_prepared_statements() {
        let mut m = Mysql::new(true);
        let mut out = Vec::new();
        m.feed(true, seg(&packet(0, b"\x03SELECT 1; SELECT 2"), 1), &mut out);
        let mut answer = result_set(1, false, SERVER_MORE_RESULTS_EXISTS);
        answer.extend(result_set(1, false, 0));
        m.feed(false, seg(&answer, 2), &mut out);
        m.feed(true, seg(&packet(0, b"\x02inventory"), 3), &mut out);
        m.feed(false, seg(&ok(1, 0, 2), 4), &mut out);
        m.feed(true, seg(&packet(0, b"\x16SELECT * FROM items WHERE id = ?"), 5), &mut out);
        let mut prep = packet(1, &[0, 7, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0]);
        prep.extend(column(2));
        prep.extend(eof(3, 0));
        prep.extend(column(4));
        prep.extend(eof(5, 0));
        m.feed(false, seg(&prep, 6), &mut out);
        m.feed(true, seg(&packet(0, &[0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0]), 7), &mut out);
        m.feed(false, seg(&result_set(2, false, 0), 8), &mut out);
        m.feed(true, seg(&packet(0, &[0x19, 7, 0, 0, 0]), 9), &mut out);
        m.feed(true, seg(&packet(0, &[0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0]), 10), &mut out);
        assert_eq!(summary(&out), ["SELECT 1; SELECT 2@-", "ok:2", "USE", "ok:0", "prep:SELECT * FROM items WHERE id = ?@inventory", "ok:2", "EXECUTE"]);
    }

    #[test]
    fn detection() {
        assert!(looks_like_greeting(&greeting()));
        assert!(looks_like_command(&packet(0, b"\x03select 1")));
        assert!(!looks_like_command(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_greeting(b"HTTP/1.1 200 OK\r\n"));
        // Found by cargo fuzz: a length shorter than the command byte.
        assert!(!looks_like_command(b"\x00\x00\x00\x00\x03SELECT"));
        assert!(!looks_like_greeting(b"\x00\x00\x00\x00\x0a5.5.5\x00abc"));
    }

    #[test]
    fn huge_result_ends_at_next_command() {
        let mut m = Mysql::new(true);
        let mut out = Vec::new();
        m.feed(true, seg(&packet(0, b"\x03SELECT * FROM big"), 1), &mut out);
        let answer = result_set(5, false, 0);
        m.feed(false, Segment { data: &answer[..20], total: 1 << 20, ts_enter_ns: 2, ts_exit_ns: 3 }, &mut out);
        m.feed(false, Segment { data: &answer[..20], total: 1 << 20, ts_enter_ns: 4, ts_exit_ns: 5 }, &mut out);
        m.feed(true, seg(&packet(0, b"\x03SELECT 1"), 6), &mut out);
        m.feed(false, seg(&result_set(1, true, 0), 7), &mut out);
        assert_eq!(summary(&out), ["SELECT * FROM big@-", "ok:-", "SELECT 1@-", "ok:1"]);
    }
}
