//! Redis connections: the RESP framer on both directions, turned into one request per command
//! and one response per reply. Pub/sub connections stop producing spans (their messages answer
//! no command); RESP3 pushes are skipped.

use super::db::{DbCodec, DbCommand, DbMessage, DbOutcome, DbRequest, DbResponse, DbSystem};
use super::http1::Segment;
use super::resp::{Direction, RespStream, RespValue};

pub struct Redis {
    commands: RespStream,
    replies: RespStream,
    /// Requests emitted whose reply has not been seen.
    waiting: usize,
    subscribed: bool,
    last_reply: (u64, u64),
}

impl Default for Redis {
    fn default() -> Self {
        Self::new()
    }
}

impl Redis {
    pub fn new() -> Self {
        Self { commands: RespStream::new(Direction::Commands), replies: RespStream::new(Direction::Replies), waiting: 0, subscribed: false, last_reply: (0, 0) }
    }

    pub fn is_desynced(&self) -> bool {
        self.commands.is_desynced()
    }

    pub fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<DbMessage>) {
        if from_client {
            for m in self.commands.feed(seg) {
                if self.replies.is_desynced() {
                    // A reply cut across values by the capture cap: what waited ended at the
                    // last reply bytes, and the next reply starts a segment.
                    self.end_blind(out);
                }
                let RespValue::Command { name, .. } = m.value else { continue };
                if matches!(name.as_str(), "SUBSCRIBE" | "PSUBSCRIBE" | "SSUBSCRIBE" | "MONITOR") {
                    self.subscribed = true;
                }
                if self.subscribed {
                    continue;
                }
                self.waiting += 1;
                out.push(DbMessage::Request(DbRequest {
                    system: DbSystem::Redis,
                    // A name Redis does not define may be anything the client typed.
                    command: if super::redis_commands::is_known(&name) { DbCommand::Named(name) } else { DbCommand::Unrecognised },
                    namespace: None,
                    prepared: false,
                    start_enter_ns: m.start_enter_ns,
                    start_exit_ns: m.start_exit_ns,
                    end_exit_ns: m.end_exit_ns,
                }));
            }
        } else {
            self.last_reply = (seg.ts_enter_ns, seg.ts_exit_ns);
            for m in self.replies.feed(seg) {
                let RespValue::Reply { error, push } = m.value else { continue };
                if push || self.subscribed || self.waiting == 0 {
                    continue;
                }
                self.waiting -= 1;
                let outcome = match error {
                    Some(code) => DbOutcome::Error { code },
                    None => DbOutcome::Ok,
                };
                out.push(DbMessage::Response(DbResponse { outcome, rows: None, end_enter_ns: m.end_enter_ns, end_exit_ns: m.end_exit_ns }));
            }
        }
    }

    pub fn close(&mut self, out: &mut Vec<DbMessage>) {
        if self.replies.is_desynced() {
            self.end_blind(out);
        }
    }

    fn end_blind(&mut self, out: &mut Vec<DbMessage>) {
        for _ in 0..std::mem::take(&mut self.waiting) {
            out.push(DbMessage::Response(DbResponse { outcome: DbOutcome::Ok, rows: None, end_enter_ns: self.last_reply.0, end_exit_ns: self.last_reply.1 }));
        }
        self.replies = RespStream::new(Direction::Replies);
    }
}
/// The inherent methods do the work (they take precedence in `Redis::feed`); the trait lets a
/// connection hold any codec.
impl DbCodec for Redis {
    fn system(&self) -> DbSystem {
        DbSystem::Redis
    }
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<DbMessage>) {
        Redis::feed(self, from_client, seg, out);
    }
    fn close(&mut self, out: &mut Vec<DbMessage>) {
        Redis::close(self, out);
    }
    fn is_desynced(&self) -> bool {
        Redis::is_desynced(self)
    }
}
