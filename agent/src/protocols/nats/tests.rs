//! NATS messages as a client and nats-server write them (the protocol document's examples,
//! with headers as nats-py sends them).

use super::*;
use crate::protocols::parser::seg;

fn messaging(m: &Message) -> (&'static str, SpanKind, &MessagingRequest, &TraceContext) {
    let (kind, r) = match m {
        Message::OneWay(r) => ("one-way", r),
        Message::Push(r) => ("push", r),
        other => panic!("not a message: {other:?}"),
    };
    match &r.fields {
        RequestFields::Messaging(fields) => (kind, r.client_kind, fields, &r.context),
        other => panic!("not messaging: {other:?}"),
    }
}

fn feed(n: &mut Nats, from: Sender, bytes: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    n.feed(from, seg(bytes, 1), &mut out);
    out
}

#[test]
fn a_publish_and_its_delivery_are_one_message() {
    let mut producer = Nats::default();
    assert!(feed(&mut producer, Sender::Server, b"INFO {\"server_id\":\"x\",\"version\":\"2.9.10\",\"headers\":true}\r\n").is_empty());
    let sent = feed(&mut producer, Sender::Client, b"CONNECT {\"verbose\":false,\"headers\":true}\r\nPING\r\nPUB orders.7 _INBOX.a 11\r\n{\"id\": 7}\r\n\r\n");
    let [m] = &sent[..] else { panic!("{sent:?}") };
    let (how, kind, fields, _) = messaging(m);
    assert_eq!((how, kind, fields.destination.as_deref(), fields.operation.as_str(), fields.body_size), ("one-way", SpanKind::Producer, Some("orders.7"), "publish", Some(11)));
    let mut consumer = Nats::default();
    let delivered = feed(&mut consumer, Sender::Server, b"INFO {\"server_id\":\"x\"}\r\nMSG orders.7 1 _INBOX.a 11\r\n{\"id\": 7}\r\n\r\n");
    let [d] = &delivered[..] else { panic!("{delivered:?}") };
    let (how, kind, delivery, _) = messaging(d);
    assert_eq!((how, kind, delivery.destination.as_deref()), ("push", SpanKind::Consumer, Some("orders.7")));
    assert!(fields.identity.is_some());
    assert_eq!(fields.identity, delivery.identity, "the same subject and payload");
    let other = feed(&mut consumer, Sender::Server, b"MSG orders.7 1 11\r\n{\"id\": 8}\r\n\r\n");
    assert_ne!(messaging(&other[0]).2.identity, fields.identity, "another payload");
}

#[test]
fn headers_carry_trace_context_and_the_message_id_and_are_not_the_identity() {
    let headers = "NATS/1.0\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nNats-Msg-Id: m-1\r\n\r\n";
    let line = format!("HPUB jobs {} {}\r\n{headers}work\r\n", headers.len(), headers.len() + 4);
    let mut n = Nats::default();
    let out = feed(&mut n, Sender::Client, line.as_bytes());
    let (_, kind, fields, context) = messaging(&out[0]);
    assert_eq!(kind, SpanKind::Producer);
    assert_eq!(context.traceparent.as_deref(), Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
    assert_eq!((fields.message_id.as_deref(), fields.body_size), (Some("m-1"), Some(4)));
    let mut c = Nats::default();
    let plain = feed(&mut c, Sender::Server, b"HMSG jobs 9 12 16\r\nNATS/1.0\r\n\r\nwork\r\n");
    assert_eq!(messaging(&plain[0]).2.identity, fields.identity, "the payload, not the headers");
}

#[test]
fn a_payload_split_across_reads_is_one_message_and_a_gap_in_it_leaves_no_identity() {
    let mut n = Nats::default();
    assert!(feed(&mut n, Sender::Server, b"MSG a 1 10\r\n01234").is_empty());
    let out = feed(&mut n, Sender::Server, b"56789\r\nPING\r\n");
    assert!(messaging(&out[0]).2.identity.is_some());
    // 10 bytes moved, 4 captured.
    let mut out = Vec::new();
    n.feed(Sender::Server, Segment { data: b"MSG a 1 10\r\n0123", total: 22 + 2, ts_enter_ns: 2, ts_exit_ns: 3 }, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(messaging(&out[0]).2.identity, None, "not captured whole");
    assert_eq!(n.health(), Health::InSync);
}

#[test]
fn bad_input_is_no_message() {
    let mut n = Nats::default();
    assert!(feed(&mut n, Sender::Client, b"GET / HTTP/1.1\r\n\r\n").is_empty());
    assert_eq!(n.health(), Health::Resyncing);
    assert!(feed(&mut n, Sender::Client, b"PUB x 99999999999\r\n").is_empty(), "a payload larger than NATS allows");
    let mut s = Nats::default();
    assert!(feed(&mut s, Sender::Server, b"HTTP/1.1 400 Bad Request\r\n\r\n").is_empty());
    assert_eq!(s.health(), Health::Foreign);
    for garbage in [&b"MSG\r\n"[..], b"HMSG a 1 9 3\r\n", b"PUB  3\r\n", b"MSG a 1 x\r\n", b"\xff\xfe\r\n"] {
        assert!(feed(&mut Nats::default(), Sender::Server, garbage).is_empty(), "{garbage:?}");
    }
}

#[test]
fn recognised_by_its_greetings_and_mid_stream_by_a_message_line() {
    for (from, bytes) in [
        (Sender::Server, &b"INFO {\"server_id\":\"x\"}\r\n"[..]),
        (Sender::Client, b"CONNECT {}\r\n"),
        (Sender::Client, b"PUB a 1\r\nx\r\n"),
        (Sender::Server, b"MSG a 1 1\r\nx\r\n"),
    ] {
        let (sender, parser) = crate::protocols::registry::recognise(bytes).expect("recognised");
        assert_eq!((sender, parser.protocol()), (from, "nats"), "{bytes:?}");
    }
}

#[test]
fn fuzzed_input_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        let mut n = Nats::default();
        let mut bytes = b"MSG a.b 1 _R 12\r\nhello world!\r\nHMSG a 2 10 12\r\nNATS/1.0\r\n\r\nhi\r\nPUB x 3\r\nabc\r\n".to_vec();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % bytes.len();
            bytes[at] = (seed >> 32) as u8;
        }
        let mut out = Vec::new();
        for (i, chunk) in bytes.chunks(1 + (seed as usize % 9)).enumerate() {
            let from = if i % 3 == 0 { Sender::Client } else { Sender::Server };
            n.feed(from, seg(chunk, i as u64), &mut out);
        }
        let _ = n.health();
    }
}
