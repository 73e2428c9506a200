//! A toy line protocol: the worked example of docs/ARCHITECTURE.md ("Adding a protocol"),
//! registered in test builds only. It exercises every pairing the contract has:
//!
//! ```text
//! client → server   TOY CALL <id> <service>/<method>   answered by TOY DONE <id> <ok|error>, in any order
//!                   TOY PUB <topic>                    one-way: a PRODUCER span
//! server → client   TOY MSG <topic>                    pushed: a CONSUMER span
//! ```

use super::message::{Correlation, Message, MessagingRequest, Request, RequestFields, Response, ResponseFields, RpcRequest, Timing, TraceContext, Writer};
use super::parser::{Health, Parser, Segment, Sender};
use super::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

/// Lines longer than this are not the toy protocol.
const MAX_LINE: usize = 256;

pub const PROTOCOL: Protocol = Protocol {
    name: "toy",
    detectors: &[
        // A fixed prefix: the most certain layer.
        Detector { layer: Layer::Magic, sender: Sender::Client, matches: |d| d.starts_with(b"TOY CALL ") || d.starts_with(b"TOY PUB "), parser: || Box::new(Toy::default()) },
        Detector { layer: Layer::Magic, sender: Sender::Server, matches: |d| d.starts_with(b"TOY DONE ") || d.starts_with(b"TOY MSG "), parser: || Box::new(Toy::default()) },
    ],
};

/// One direction's unfinished line and when it started.
#[derive(Default)]
struct Lines {
    line: Vec<u8>,
    started: (u64, u64),
    lost: bool,
}

impl Lines {
    /// Complete lines in `seg`, each with the timing of the syscalls that carried it. A gap
    /// loses the line it falls in.
    fn feed(&mut self, seg: Segment<'_>, mut on_line: impl FnMut(&[u8], Timing)) {
        for &b in seg.data {
            if self.line.is_empty() {
                self.started = (seg.ts_enter_ns, seg.ts_exit_ns);
            }
            if b == b'\n' {
                let timing = Timing { first_enter_ns: self.started.0, first_exit_ns: self.started.1, last_enter_ns: seg.ts_enter_ns, last_exit_ns: seg.ts_exit_ns };
                on_line(&self.line, timing);
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.lost = true;
            }
        }
        if seg.total > seg.data.len() as u64 {
            self.line.clear();
            self.lost = true;
        }
    }
}

#[derive(Default)]
pub struct Toy {
    requests: Lines,
    answers: Lines,
    /// Client lines that were no toy message.
    bad_requests: u64,
    /// Server lines that were no toy message, and answers seen.
    bad_answers: u64,
    answered: u64,
}

fn request(timing: Timing, client_kind: SpanKind, fields: RequestFields) -> Request {
    Request { correlation: Correlation::InOrder, timing, context: TraceContext::default(), client_kind, fields, writer: Writer::Caller }
}

fn topic(system: &'static str, operation: &str, topic: &str) -> RequestFields {
    RequestFields::Messaging(MessagingRequest { system, destination: Some(topic.to_string()), operation: operation.to_string(), ..Default::default() })
}

impl Parser for Toy {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }

    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        let (lines, bad) = match from {
            Sender::Client => (&mut self.requests, &mut self.bad_requests),
            Sender::Server => (&mut self.answers, &mut self.bad_answers),
        };
        let answered = &mut self.answered;
        lines.feed(seg, |line, timing| {
            let words: Vec<&str> = std::str::from_utf8(line).unwrap_or_default().split(' ').collect();
            let message = match (from, words.as_slice()) {
                (Sender::Client, ["TOY", "CALL", id, call]) => id.parse().ok().map(|id| {
                    let (service, method) = call.split_once('/').map_or((None, None), |(s, m)| (Some(s.to_string()), Some(m.to_string())));
                    let mut r = request(timing, SpanKind::Client, RequestFields::Rpc(RpcRequest { system: "toy", service, method }));
                    r.correlation = Correlation::Key(id);
                    Message::Request(r)
                }),
                (Sender::Client, ["TOY", "PUB", t]) => Some(Message::OneWay(request(timing, SpanKind::Producer, topic("toy", "publish", t)))),
                (Sender::Server, ["TOY", "DONE", id, status]) => id.parse().ok().map(|id| {
                    *answered += 1;
                    let error = (*status != "ok").then(|| status.to_string());
                    Message::Response(Response { correlation: Correlation::Key(id), timing, closes_connection: false, fields: ResponseFields::Rpc { status_code: None, error } })
                }),
                (Sender::Server, ["TOY", "MSG", t]) => Some(Message::Push(request(timing, SpanKind::Consumer, topic("toy", "deliver", t)))),
                _ => None,
            };
            match message {
                Some(m) => out.push(m),
                None => *bad += 1,
            }
        });
    }

    fn close(&mut self, _: &mut Vec<Message>) {}

    fn health(&self) -> Health {
        Health::of(self.answered == 0 && self.bad_answers > 0, self.bad_requests > 0 || self.requests.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::parser::seg;

    #[test]
    fn calls_pair_by_key_and_pushes_stand_alone() {
        let mut toy = Toy::default();
        let mut out = Vec::new();
        toy.feed(Sender::Client, seg(b"TOY CALL 7 calc/add\nTOY CA", 1), &mut out);
        toy.feed(Sender::Client, seg(b"LL 8 calc/mul\nTOY PUB news\n", 3), &mut out);
        toy.feed(Sender::Server, seg(b"TOY DONE 8 ok\nTOY MSG news\nTOY DONE 7 overflow\n", 5), &mut out);
        let kinds: Vec<String> = out
            .iter()
            .map(|m| match m {
                Message::Request(r) => format!("call {:?}", r.correlation),
                Message::Response(r) => format!("done {:?}", r.correlation),
                Message::OneWay(_) => "pub".into(),
                Message::Push(_) => "msg".into(),
                Message::Settle(_) => "settle".into(),
            })
            .collect();
        assert_eq!(kinds, ["call Key(7)", "call Key(8)", "pub", "done Key(8)", "msg", "done Key(7)"]);
        // A line split across reads starts with the read that carried its first byte.
        assert_eq!((out[1].timing().first_enter_ns, out[1].timing().last_enter_ns), (1, 3));
        assert_eq!(toy.health(), Health::InSync);
    }

    #[test]
    fn an_answer_in_another_protocol_is_foreign() {
        let mut toy = Toy::default();
        let mut out = Vec::new();
        toy.feed(Sender::Client, seg(b"TOY CALL 1 a/b\n", 1), &mut out);
        toy.feed(Sender::Server, seg(b"HTTP/1.1 400 Bad Request\r\n", 2), &mut out);
        assert_eq!(toy.health(), Health::Foreign);
    }
}
