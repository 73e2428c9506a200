//! AMQP 0-9-1 frames as the specification lays them out (section 4.2), built here.

use super::*;
use crate::protocols::parser::seg;

fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend(channel.to_be_bytes());
    f.extend((payload.len() as u32).to_be_bytes());
    f.extend(payload);
    f.push(0xCE);
    f
}

fn shortstr(s: &str) -> Vec<u8> {
    let mut b = vec![s.len() as u8];
    b.extend(s.as_bytes());
    b
}

fn publish(exchange: &str, routing_key: &str) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 40, 0, 0];
    p.extend(shortstr(exchange));
    p.extend(shortstr(routing_key));
    p.push(0);
    frame(wire::METHOD, 1, &p)
}

fn deliver(exchange: &str, routing_key: &str, redelivered: bool) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 60];
    p.extend(shortstr("ctag"));
    p.extend(7u64.to_be_bytes());
    p.push(u8::from(redelivered));
    p.extend(shortstr(exchange));
    p.extend(shortstr(routing_key));
    frame(wire::METHOD, 1, &p)
}

/// A content header: content-type, the headers table (a traceparent), message-id.
fn header(body_size: u64, message_id: Option<&str>, traceparent: Option<&str>) -> Vec<u8> {
    let mut p = vec![0, 60, 0, 0];
    p.extend(body_size.to_be_bytes());
    let mut flags = 1u16 << 15;
    let mut props = shortstr("application/json");
    if let Some(tp) = traceparent {
        flags |= 1 << 13;
        let mut table = shortstr("x-retries");
        table.extend([b'I', 0, 0, 0, 1]);
        table.extend(shortstr("traceparent"));
        table.push(b'S');
        table.extend((tp.len() as u32).to_be_bytes());
        table.extend(tp.as_bytes());
        props.extend((table.len() as u32).to_be_bytes());
        props.extend(table);
    }
    if let Some(id) = message_id {
        flags |= 1 << 7;
        props.extend(shortstr(id));
    }
    p.extend(flags.to_be_bytes());
    p.extend(props);
    frame(wire::HEADER, 1, &p)
}

fn fields(m: &Message) -> (SpanKind, &MessagingRequest, &TraceContext) {
    match m {
        Message::OneWay(r) | Message::Push(r) => match &r.fields {
            RequestFields::Messaging(f) => (r.client_kind, f, &r.context),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn a_publish_and_its_delivery_are_one_message() {
    let mut producer = Amqp::new(false);
    let mut out = Vec::new();
    let mut bytes = PROTOCOL_HEADER.to_vec();
    bytes.extend(publish("orders", "eu.new"));
    bytes.extend(header(10, None, Some(TP)));
    bytes.extend(frame(wire::BODY, 1, b"{\"id\""));
    producer.feed(Sender::Client, seg(&bytes, 1), &mut out);
    assert!(out.is_empty(), "the body is not whole yet");
    producer.feed(Sender::Client, seg(&frame(wire::BODY, 1, b": 7}"), 2), &mut out);
    producer.feed(Sender::Client, seg(&frame(wire::BODY, 1, b" "), 3), &mut out);
    let [m] = &out[..] else { panic!("{out:?}") };
    let (kind, sent, context) = fields(m);
    assert_eq!((kind, sent.destination.as_deref(), sent.routing_key.as_deref(), sent.body_size), (SpanKind::Producer, Some("orders"), Some("eu.new"), Some(10)));
    assert_eq!(context.traceparent.as_deref(), Some(TP));
    let mut consumer = Amqp::new(false);
    let mut got = Vec::new();
    let mut delivered = deliver("orders", "eu.new", false);
    delivered.extend(header(10, None, None));
    delivered.extend(frame(wire::BODY, 1, b"{\"id\": 7} "));
    consumer.feed(Sender::Server, seg(&delivered, 4), &mut got);
    let (kind, received, _) = fields(&got[0]);
    assert_eq!((kind, received.operation.as_str(), received.redelivered), (SpanKind::Consumer, "deliver", false));
    assert!(sent.identity.is_some());
    assert_eq!(received.identity, sent.identity, "same exchange, routing key and body");
}

#[test]
fn a_message_id_is_the_identity_even_when_the_body_is_cut() {
    let mut c = Amqp::new(false);
    let mut out = Vec::new();
    let mut bytes = deliver("", "jobs", true);
    bytes.extend(header(5000, Some("task-42"), None));
    bytes.extend(&frame(wire::BODY, 1, &[b'x'; 5000])[..100]);
    c.feed(Sender::Server, Segment { data: &bytes, total: bytes.len() as u64 - 100 + 5008, ts_enter_ns: 1, ts_exit_ns: 2 }, &mut out);
    let (_, m, _) = fields(&out[0]);
    assert_eq!((m.destination.as_deref(), m.message_id.as_deref(), m.redelivered), (Some("amq.default"), Some("task-42"), true));
    assert_eq!(m.identity, wire::identity("", "jobs", Some("task-42"), None));
    assert_eq!(c.health(), Health::InSync);
}

#[test]
fn channels_interleave_and_bad_frames_are_no_message() {
    let mut c = Amqp::new(true);
    let mut out = Vec::new();
    let mut bytes = publish("a", "1");
    let mut other = publish("b", "2");
    other[1..3].copy_from_slice(&2u16.to_be_bytes());
    bytes.extend(other);
    bytes.extend(header(1, None, None));
    let mut h2 = header(1, None, None);
    h2[1..3].copy_from_slice(&2u16.to_be_bytes());
    bytes.extend(h2);
    let mut b2 = frame(wire::BODY, 2, b"y");
    b2[1..3].copy_from_slice(&2u16.to_be_bytes());
    bytes.extend(b2);
    bytes.extend(frame(wire::BODY, 1, b"x"));
    c.feed(Sender::Client, seg(&bytes, 1), &mut out);
    let names: Vec<_> = out.iter().map(|m| fields(m).1.destination.clone().expect("a destination")).collect();
    assert_eq!(names, ["b", "a"]);
    let mut bad = Amqp::new(false);
    out.clear();
    bad.feed(Sender::Client, seg(b"GET / HTTP/1.1\r\n\r\n", 1), &mut out);
    assert!(out.is_empty());
    assert_eq!(bad.health(), Health::Resyncing);
    let mut wrong_end = publish("a", "1");
    *wrong_end.last_mut().expect("a frame") = 0;
    let mut c = Amqp::new(true);
    c.feed(Sender::Client, seg(&wrong_end, 1), &mut out);
    assert!(out.is_empty());
    assert_eq!(c.health(), Health::Resyncing);
}

#[test]
fn recognised_by_the_protocol_header_and_mid_stream_by_a_basic_method() {
    for (from, bytes) in [(Sender::Client, PROTOCOL_HEADER.to_vec()), (Sender::Client, publish("a", "b")), (Sender::Server, deliver("a", "b", false))] {
        let (sender, parser) = crate::protocols::registry::recognise(&bytes).expect("recognised");
        assert_eq!((sender, parser.protocol()), (from, "amqp"));
    }
}

/// A consumer's ack, reject, nack and `Basic.Get` settle what it read (it went back to its
/// broker); its publishes, its qos and the server's methods do not.
#[test]
fn acks_and_gets_from_the_client_settle() {
    let method = |id: u16| {
        let mut p = vec![0, 60];
        p.extend(id.to_be_bytes());
        p.extend(7u64.to_be_bytes());
        p.push(0);
        frame(wire::METHOD, 1, &p)
    };
    let settles = |from: Sender, bytes: &[u8]| {
        let mut amqp = Amqp::new(true);
        let mut out = Vec::new();
        amqp.feed(from, seg(bytes, 1), &mut out);
        out.iter().filter(|m| matches!(m, Message::Settle(_))).count()
    };
    for (id, name) in [(80, "ack"), (90, "reject"), (120, "nack"), (70, "get")] {
        assert_eq!(settles(Sender::Client, &method(id)), 1, "{name}");
        assert_eq!(settles(Sender::Server, &method(id)), 0, "{name} from the server");
    }
    assert_eq!(settles(Sender::Client, &method(10)), 0, "qos");
    assert_eq!(settles(Sender::Client, &publish("orders", "orders.1")), 0, "publish");
}
