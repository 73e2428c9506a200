//! Redis connections: the RESP framer on both directions, turned into one request per command
//! and one response per reply. Pub/sub connections stop producing spans (their messages answer
//! no command); RESP3 pushes are skipped.

use super::message::{DbCommand, DbOutcome, DbRequest, Message, Timing};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use super::resp::{Direction, RespStream, RespValue};

pub const PROTOCOL: Protocol = Protocol {
    name: "redis",
    detectors: &[Detector { layer: Layer::Structure, sender: Sender::Client, matches: super::resp::looks_like_command, parser: || Box::new(Redis::new()) }],
};

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

    pub fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Message>) {
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
                // A name Redis does not define may be anything the client typed.
                let command = if super::redis_commands::is_known(&name) { DbCommand::Named(name) } else { DbCommand::Unrecognised };
                let timing = Timing { first_enter_ns: m.start_enter_ns, first_exit_ns: m.start_exit_ns, last_enter_ns: m.end_enter_ns, last_exit_ns: m.end_exit_ns };
                out.push(Message::db_call(timing, DbRequest { system: PROTOCOL.name, command, namespace: None, prepared: false }));
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
                out.push(Message::db_answer(m.end_enter_ns, m.end_exit_ns, outcome, None));
            }
        }
    }

    pub fn close(&mut self, out: &mut Vec<Message>) {
        if self.replies.is_desynced() {
            self.end_blind(out);
        }
    }

    fn end_blind(&mut self, out: &mut Vec<Message>) {
        for _ in 0..std::mem::take(&mut self.waiting) {
            out.push(Message::db_answer(self.last_reply.0, self.last_reply.1, DbOutcome::Ok, None));
        }
        self.replies = RespStream::new(Direction::Replies);
    }
}
/// The inherent methods do the work (they take precedence in `Redis::feed`).
impl Parser for Redis {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }
    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        Redis::feed(self, from == Sender::Client, seg, out);
    }
    fn close(&mut self, out: &mut Vec<Message>) {
        Redis::close(self, out);
    }
    fn health(&self) -> Health {
        Health::of(false, self.is_desynced())
    }
}
