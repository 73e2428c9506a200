//! MQTT packets as the specifications lay them out (3.1.1 and 5.0, section 3), built here.

use super::*;
use crate::protocols::parser::seg;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend(varint(body.len()));
    p.extend(body);
    p
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u16).to_be_bytes().to_vec();
    b.extend(s);
    b
}

fn connect(level: u8) -> Vec<u8> {
    let mut body = string(b"MQTT");
    body.extend([level, 0b0000_0010, 0, 60]);
    if level == 5 {
        body.push(0);
    }
    body.extend(string(b"client-1"));
    packet(0x10, &body)
}

/// A PUBLISH: `props` are 5.0's property bytes (None on 3.1.1).
fn publish(topic: &str, qos: u8, dup: bool, id: u16, props: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic.as_bytes());
    if qos > 0 {
        body.extend(id.to_be_bytes());
    }
    if let Some(props) = props {
        body.extend(varint(props.len()));
        body.extend(props);
    }
    body.extend(payload);
    packet(0x30 | (u8::from(dup) << 3) | (qos << 1), &body)
}

fn user_property(name: &str, value: &str) -> Vec<u8> {
    let mut p = vec![0x26];
    p.extend(string(name.as_bytes()));
    p.extend(string(value.as_bytes()));
    p
}

fn messaging(m: &Message) -> (SpanKind, &MessagingRequest, &TraceContext) {
    match m {
        Message::Request(r) | Message::OneWay(r) | Message::Push(r) => match &r.fields {
            RequestFields::Messaging(f) => (r.client_kind, f, &r.context),
            other => panic!("not messaging: {other:?}"),
        },
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn recognised_by_its_connect_only() {
    assert!(wire::looks_like_connect(&connect(4)));
    assert!(wire::looks_like_connect(&connect(5)));
    let mut v31 = string(b"MQIsdp");
    v31.extend([3, 2, 0, 60]);
    v31.extend(string(b"c"));
    assert!(wire::looks_like_connect(&packet(0x10, &v31)));
    assert!(!wire::looks_like_connect(&packet(0x10, &[0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 60, 0, 0])), "another protocol name");
    assert!(!wire::looks_like_connect(&packet(0x10, &[0, 4, b'M', b'Q', b'T', b'T', 9, 2, 0, 60, 0, 0])), "a level no version defines");
    assert!(!wire::looks_like_connect(&publish("t", 0, false, 0, None, b"x")), "a PUBLISH");
    assert!(!wire::looks_like_connect(b"GET / HTTP/1.1\r\n"));
}

/// 3.1.1: a QoS 0 send is complete at once; a QoS 1 send waits for the PUBACK with its
/// packet id; a delivery and its send have one identity; the consumer's PUBACK settles.
#[test]
fn a_publish_and_its_delivery_are_one_message() {
    let mut producer = Mqtt::default();
    let mut out = Vec::new();
    producer.feed(Sender::Client, seg(&connect(4), 1), &mut out);
    producer.feed(Sender::Server, seg(&[0x20, 2, 0, 0], 2), &mut out);
    let mut both = publish("orders/1", 0, false, 0, None, b"{\"n\":1}");
    both.extend(publish("orders/2", 1, false, 7, None, b"{\"n\":2}"));
    producer.feed(Sender::Client, seg(&both, 3), &mut out);
    producer.feed(Sender::Server, seg(&[0x40, 2, 0, 7], 4), &mut out);
    assert!(matches!(&out[0], Message::OneWay(_)), "{out:?}");
    assert!(matches!(&out[1], Message::Request(r) if r.correlation == Correlation::Key(7)), "{out:?}");
    assert!(matches!(&out[2], Message::Response(r) if r.correlation == Correlation::Key(7)), "{out:?}");
    let (kind, sent, _) = messaging(&out[1]);
    assert_eq!((kind, sent.system, sent.destination.as_deref(), sent.body_size), (SpanKind::Producer, "mqtt", Some("orders/2"), Some(7)));

    let mut consumer = Mqtt::default();
    let mut got = Vec::new();
    consumer.feed(Sender::Client, seg(&connect(4), 5), &mut got);
    consumer.feed(Sender::Server, seg(&publish("orders/2", 1, true, 300, None, b"{\"n\":2}"), 6), &mut got);
    consumer.feed(Sender::Client, seg(&[0x40, 2, 1, 44], 7), &mut got);
    let (kind, delivered, _) = messaging(&got[0]);
    assert_eq!((kind, delivered.destination.as_deref(), delivered.redelivered), (SpanKind::Consumer, Some("orders/2"), true));
    assert_eq!(delivered.identity, sent.identity);
    assert!(sent.identity.is_some());
    assert_ne!(messaging(&out[0]).1.identity, sent.identity, "another topic and payload");
    assert!(matches!(got[1], Message::Settle(_)), "{got:?}");
}

/// 5.0: properties carry the trace context; a topic alias set once stands for its topic
/// later; a failing reason code fails the send; a packet split anywhere is the same packet.
#[test]
fn v5_properties_aliases_reasons_and_split_packets() {
    let mut m = Mqtt::default();
    let mut out = Vec::new();
    m.feed(Sender::Client, seg(&connect(5), 1), &mut out);
    let mut props = vec![0x01, 1, 0x23, 0, 3];
    props.extend(user_property("traceparent", TRACEPARENT));
    props.extend(user_property("region", "eu"));
    let first = publish("sensors/7", 1, false, 1, Some(&props), b"21.5");
    // Split inside the Remaining Length and inside the payload.
    m.feed(Sender::Client, seg(&first[..2], 2), &mut out);
    m.feed(Sender::Client, seg(&first[2..first.len() - 2], 3), &mut out);
    m.feed(Sender::Client, seg(&first[first.len() - 2..], 4), &mut out);
    m.feed(Sender::Client, seg(&publish("", 1, false, 2, Some(&[0x23, 0, 3]), b"22.0"), 5), &mut out);
    m.feed(Sender::Server, seg(&[0x40, 3, 0, 1, 0x10], 6), &mut out);
    m.feed(Sender::Server, seg(&[0x40, 3, 0, 2, 0x87], 7), &mut out);
    let (_, first, context) = messaging(&out[0]);
    assert_eq!((first.destination.as_deref(), context.traceparent.as_deref()), (Some("sensors/7"), Some(TRACEPARENT)));
    assert_eq!(out[0].timing().first_enter_ns, 2, "from the read that carried its first byte");
    assert_eq!(messaging(&out[1]).1.destination.as_deref(), Some("sensors/7"), "the alias stands for the topic");
    let errors: Vec<Option<String>> = out[2..]
        .iter()
        .map(|m| match m {
            Message::Response(Response { fields: ResponseFields::Messaging { error, .. }, .. }) => error.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(errors, [None, Some("not_authorized".to_string())], "0x10 (no subscribers) is a success, 0x87 a failure");
}

/// A payload past the capture: the packet still ends where its length says, without an
/// identity; the next packet in a later read is read. Garbage, a bad flag or an unknown
/// property never make a span; the framing comes back at a read that starts a packet.
#[test]
fn cut_payloads_bad_packets_and_resync() {
    let mut m = Mqtt::default();
    let mut out = Vec::new();
    m.feed(Sender::Client, seg(&connect(4), 1), &mut out);
    let big = publish("big", 0, false, 0, None, &vec![b'x'; 5000]);
    m.feed(Sender::Client, Segment { data: &big[..100], total: big.len() as u64, ts_enter_ns: 2, ts_exit_ns: 2 }, &mut out);
    m.feed(Sender::Client, seg(&publish("small", 0, false, 0, None, b"ok"), 3), &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    let (_, big, _) = messaging(&out[0]);
    assert_eq!((big.destination.as_deref(), big.body_size, big.identity), (Some("big"), Some(5000), None));
    assert!(messaging(&out[1]).1.identity.is_some());

    out.clear();
    // PUBREL with flags 0 is malformed: the framing is lost, then found again.
    m.feed(Sender::Client, seg(&[0x60, 2, 0, 1], 4), &mut out);
    m.feed(Sender::Client, seg(b"\xff\xff\xff\xff\xff garbage", 5), &mut out);
    m.feed(Sender::Client, seg(&publish("back", 0, false, 0, None, b"!"), 6), &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(messaging(&out[0]).1.destination.as_deref(), Some("back"));
    assert_eq!(m.resyncs(), 1);

    // 5.0: an unknown property, and an alias never announced, make no span and no topic.
    let mut v5 = Mqtt::default();
    let mut got = Vec::new();
    v5.feed(Sender::Client, seg(&connect(5), 1), &mut got);
    v5.feed(Sender::Client, seg(&publish("t", 0, false, 0, Some(&[0x7F, 1]), b"x"), 2), &mut got);
    v5.feed(Sender::Client, seg(&publish("", 0, false, 0, Some(&[0x23, 0, 9]), b"x"), 3), &mut got);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(messaging(&got[0]).1.destination, None);
}
