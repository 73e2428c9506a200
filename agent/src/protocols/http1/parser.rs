//! HTTP/1 behind the protocol interface: both directions of a connection, requests answered
//! in order.

use super::stream::{HalfStream, Head, Message as Http1Message, Side};
use crate::protocols::message::{Correlation, HttpRequest, HttpResponse, Message, Request, RequestFields, Response, ResponseFields, Timing, TraceContext, Writer};
use crate::protocols::parser::{Health, Parser, Segment, Sender, Switch};
use crate::protocols::registry::{Detector, Layer, Protocol};
use crate::spans::record::SpanKind;

pub const PROTOCOL: Protocol = Protocol {
    name: "http",
    detectors: &[
        Detector { layer: Layer::Structure, sender: Sender::Client, matches: |d| HalfStream::looks_like_start(Side::Request, d), parser: || Box::new(Http1::new()) },
        Detector { layer: Layer::Structure, sender: Sender::Server, matches: |d| HalfStream::looks_like_start(Side::Response, d), parser: || Box::new(Http1::new()) },
    ],
};

pub struct Http1 {
    requests: HalfStream,
    responses: HalfStream,
    /// Answers parsed so far: a response side that desyncs before its first answer is a
    /// server speaking another protocol.
    answers: u64,
    resyncs: u64,
    was_desynced: bool,
    /// The server agreed to `Upgrade: h2c`: HTTP/2 from now on.
    switch: Option<Switch>,
    /// Messages of the segment being fed, reused from segment to segment.
    scratch: Vec<Http1Message>,
}

impl Default for Http1 {
    fn default() -> Self {
        Self::new()
    }
}

impl Http1 {
    pub fn new() -> Self {
        Self {
            requests: HalfStream::new(Side::Request),
            responses: HalfStream::new(Side::Response),
            answers: 0,
            resyncs: 0,
            was_desynced: false,
            switch: None,
            scratch: Vec::new(),
        }
    }
}

fn timing(m: &Http1Message) -> Timing {
    Timing { first_enter_ns: m.start_enter_ns, first_exit_ns: m.start_exit_ns, last_enter_ns: m.end_enter_ns, last_exit_ns: m.end_exit_ns }
}

fn message(m: Http1Message) -> Message {
    let timing = timing(&m);
    match m.head {
        Head::Request(h) => Message::Request(Request {
            correlation: Correlation::InOrder,
            timing,
            context: TraceContext { traceparent: h.traceparent, tracestate: h.tracestate },
            client_kind: SpanKind::Client,
            writer: Writer::Caller,
            fields: RequestFields::Http(HttpRequest {
                method: Some(h.method),
                target: Some(h.target),
                version: if h.minor_version == 0 { "1.0" } else { "1.1" },
                host: h.host,
                user_agent: h.user_agent,
                complete: h.complete,
            }),
        }),
        Head::Response(h) => Message::Response(Response {
            correlation: Correlation::InOrder,
            timing,
            closes_connection: h.close,
            fields: ResponseFields::Http(HttpResponse { status: Some(h.status) }),
        }),
    }
}

impl Parser for Http1 {
    fn protocol(&self) -> &'static str {
        PROTOCOL.name
    }

    fn feed(&mut self, from: Sender, seg: Segment<'_>, out: &mut Vec<Message>) {
        let mut parsed = std::mem::take(&mut self.scratch);
        match from {
            Sender::Client => {
                self.requests.feed_into(seg, &mut parsed);
                for m in parsed.drain(..) {
                    if let Head::Request(r) = &m.head {
                        // A HEAD request's answer has no body: the response side must know.
                        self.responses.expect_response(&r.method);
                    }
                    out.push(message(m));
                }
            }
            Sender::Server => {
                self.responses.feed_into(seg, &mut parsed);
                self.answers += parsed.len() as u64;
                for answer in parsed.drain(..) {
                    if matches!(&answer.head, Head::Response(r) if r.upgrade_h2c) {
                        // Not the answer: that comes as HTTP/2 on stream 1, which the request
                        // waiting here (in order) takes.
                        let parser = Box::new(crate::protocols::http2::Http2::upgraded());
                        self.switch = Some(Switch { parser, server_bytes: self.responses.take_after_upgrade() });
                        break;
                    }
                    out.push(message(answer));
                }
            }
        }
        parsed.clear();
        self.scratch = parsed;
        let desynced = self.requests.is_desynced();
        if desynced && !self.was_desynced {
            self.resyncs += 1;
        }
        self.was_desynced = desynced;
    }

    fn close(&mut self, out: &mut Vec<Message>) {
        out.extend(self.responses.close().map(message));
    }

    fn health(&self) -> Health {
        Health::of(self.answers == 0 && self.responses.is_desynced(), self.requests.is_desynced())
    }

    fn resyncs(&self) -> u64 {
        self.resyncs
    }

    fn switched(&mut self) -> Option<Switch> {
        self.switch.take()
    }
}
