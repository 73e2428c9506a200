//! Every protocol zerotrace parses, and how each is recognised from a connection's first
//! bytes, whatever the port. Adding a protocol: one folder (or file) under `protocols/` that
//! exports a `PROTOCOL`, and one line in `PROTOCOLS` (docs/ARCHITECTURE.md has a worked
//! example).
//!
//! Detection runs in layers, the most certain first: exact magic numbers, then structural
//! checks (a grammar or a framing that must hold), then text heuristics. Within a layer,
//! `PROTOCOLS`' order decides.

use super::parser::{Parser, Sender};
use super::{amqp, http1, http2, kafka, memcached, mqtt, mysql, nats, postgres, redis};

/// How certain a detector is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layer {
    /// A fixed number only this protocol sends (PostgreSQL's startup code).
    Magic,
    /// A grammar or framing that must hold over the first bytes (an HTTP request line, a
    /// length-prefixed packet whose length and type agree).
    Structure,
    /// Plausible text (a memcached command word, a printable query after a type byte).
    Heuristic,
}

/// One way of recognising a protocol from the first bytes seen in one direction.
pub struct Detector {
    pub layer: Layer,
    /// Who sends what this detector matches: it tells the role of a connection opened before
    /// the agent attached.
    pub sender: Sender,
    pub matches: fn(&[u8]) -> bool,
    /// A parser for a connection recognised by this detector.
    pub parser: fn() -> Box<dyn Parser>,
}

pub struct Protocol {
    pub name: &'static str,
    pub detectors: &'static [Detector],
}

/// Every protocol, in the order ties within a layer are broken.
pub const PROTOCOLS: &[&Protocol] = &[
    // HTTP first among the structural checks: its grammar is the strictest (a method from a
    // closed list, a target, `HTTP/1.x`) and the most common traffic by far.
    &http1::PROTOCOL,
    // The client preface is magic: checked before every structural check.
    &http2::PROTOCOL,
    &postgres::PROTOCOL,
    &mysql::PROTOCOL,
    &redis::PROTOCOL,
    &memcached::PROTOCOL,
    // Its greetings are magic; a PUB or MSG line (a connection opened before attach) has a
    // grammar no other protocol here shares.
    &nats::PROTOCOL,
    // The client's protocol header is magic; a Basic method frame (mid-stream) is checked to
    // its frame-end octet.
    &amqp::PROTOCOL,
    // A CONNECT packet naming the protocol (`MQTT`, `MQIsdp`) and a level it defines: magic.
    &mqtt::PROTOCOL,
    // A size, then an API key and version in their ranges and a printable client id: after
    // the others, whose grammars are stricter.
    &kafka::PROTOCOL,
    // The worked example of docs/ARCHITECTURE.md, in test builds only.
    #[cfg(test)]
    &super::toy::PROTOCOL,
];

/// The protocol `data` (the first bytes of one direction) starts, who sent it, and a parser.
pub fn recognise(data: &[u8]) -> Option<(Sender, Box<dyn Parser>)> {
    for layer in [Layer::Magic, Layer::Structure, Layer::Heuristic] {
        for protocol in PROTOCOLS {
            for d in protocol.detectors.iter().filter(|d| d.layer == layer) {
                if (d.matches)(data) {
                    return Some((d.sender, (d.parser)()));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(data: &[u8]) -> Option<(&'static str, Sender)> {
        recognise(data).map(|(sender, p)| (p.protocol(), sender))
    }

    #[test]
    fn first_bytes_name_the_protocol_and_who_spoke() {
        assert_eq!(name(b"GET / HTTP/1.1\r\n"), Some(("http", Sender::Client)));
        assert_eq!(name(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04"), Some(("http2", Sender::Client)));
        assert_eq!(name(b"HTTP/1.1 200 OK\r\n"), Some(("http", Sender::Server)));
        assert_eq!(name(b"\x00\x00\x00\x08\x04\xd2\x16\x2f"), Some(("postgresql", Sender::Client)));
        assert_eq!(name(b"Q\x00\x00\x00\x0dSELECT 1\x00"), Some(("postgresql", Sender::Client)));
        assert_eq!(name(b"*1\r\n$4\r\nPING\r\n"), Some(("redis", Sender::Client)));
        assert_eq!(name(b"get k\r\n"), Some(("memcached", Sender::Client)));
        assert_eq!(name(b"\x0b\x00\x00\x00\x03SELECT 1;"), Some(("mysql", Sender::Client)));
        assert_eq!(name(b"\x00\x01\x02garbage"), None);
        // Methods that look like a PostgreSQL Parse ('P' and a length) are HTTP: the Parse
        // check is a heuristic, after HTTP's grammar.
        assert_eq!(name(b"POST /x HTTP/1.1\r\n"), Some(("http", Sender::Client)));
        assert_eq!(name(b"PATCH /x HTTP/1.1\r\n"), Some(("http", Sender::Client)));
    }

    #[test]
    fn every_protocol_names_its_parsers_after_itself() {
        for p in PROTOCOLS {
            for d in p.detectors {
                assert_eq!((d.parser)().protocol(), p.name);
            }
        }
    }
}
