//! Kafka frames as kafka-python 3.0.12's own encoders write them: `fixtures.py` (next to this
//! file) prints these constants. Produce v9 (flexible) and v7, Fetch v11, v12 and v13 (topic
//! ids), Metadata v12, and the broker's answers to each.

use super::*;
use crate::protocols::parser::seg;

const PRODUCE_V9: &str = "000000ea000000090000000500176b61666b612d707974686f6e2d70726f64756365722d310000ffff0000753002076f72646572730200000002b0010000000000000000000000a3000000000232c7c59a0000000000010000018bcfe568000000018bcfe56801ffffffffffffffffffffffffffff00000002ba010000000e6f726465722d37187b226f72646572223a20377d02167472616365706172656e746e30302d30616637363531393136636434336464383434386562323131633830333139632d623761643662373136393230333333312d30312400020201187b226f72646572223a20387d00000000";
const PRODUCE_V7: &str = "000000f0000000070000000600176b61666b612d707974686f6e2d70726f64756365722d31ffffffff000075300000000100066f72646572730000000100000002000000af0000000000000000000000a3000000000232c7c59a0000000000010000018bcfe568000000018bcfe56801ffffffffffffffffffffffffffff00000002ba010000000e6f726465722d37187b226f72646572223a20377d02167472616365706172656e746e30302d30616637363531393136636434336464383434386562323131633830333139632d623761643662373136393230333333312d30312400020201187b226f72646572223a20387d00";
const FETCH_V12: &str = "000000690001000c0000000900176b61666b612d707974686f6e2d636f6e73756d65722d3100ffffffff000001f400000001032000000000000000ffffffff02076f72646572730200000002ffffffff0000000000000029ffffffffffffffffffffffff001000000000010100";
const FETCH_V11: &str = "0000006c0001000b0000000900176b61666b612d707974686f6e2d636f6e73756d65722d31ffffffff000001f400000001032000000000000000ffffffff0000000100066f72646572730000000100000002ffffffff0000000000000029ffffffffffffffff00100000000000000000";
const FETCH_V13: &str = "000000720001000d0000000900176b61666b612d707974686f6e2d636f6e73756d65722d3100ffffffff000001f400000001032000000000000000ffffffff028f5c3c6e1b2a4c3d9e8f0a1b2c3d4e5f0200000002ffffffff0000000000000029ffffffffffffffffffffffff001000000000010100";
const METADATA_V12: &str = "000000260003000c0000000800176b61666b612d707974686f6e2d636f6e73756d65722d310000010000";
const PRODUCE_RESPONSE_V9: &str = "00000035000000050002076f7264657273020000000200000000000000000029ffffffffffffffff0000000000000000010000000000000000";
const PRODUCE_RESPONSE_V7_ERROR: &str = "00000036000000060000000100066f7264657273000000010000000200030000000000000029ffffffffffffffff000000000000000000000000";
const FETCH_RESPONSE_V12: &str = "000000ef00000009000000000000000000000002076f726465727302000000020000000000000000002b000000000000002b000000000000000000ffffffffb0010000000000000029000000a3000000000232c7c59a0000000000010000018bcfe568000000018bcfe56801ffffffffffffffffffffffffffff00000002ba010000000e6f726465722d37187b226f72646572223a20377d02167472616365706172656e746e30302d30616637363531393136636434336464383434386562323131633830333139632d623761643662373136393230333333312d30312400020201187b226f72646572223a20387d00000000";
const FETCH_RESPONSE_V11: &str = "000000f700000009000000000000000000000000000100066f726465727300000001000000020000000000000000002b000000000000002b0000000000000000ffffffffffffffff000000af0000000000000029000000a3000000000232c7c59a0000000000010000018bcfe568000000018bcfe56801ffffffffffffffffffffffffffff00000002ba010000000e6f726465722d37187b226f72646572223a20377d02167472616365706172656e746e30302d30616637363531393136636434336464383434386562323131633830333139632d623761643662373136393230333333312d30312400020201187b226f72646572223a20387d00";
const FETCH_RESPONSE_V13: &str = "000000f8000000090000000000000000000000028f5c3c6e1b2a4c3d9e8f0a1b2c3d4e5f02000000020000000000000000002b000000000000002b000000000000000000ffffffffb0010000000000000029000000a3000000000232c7c59a0000000000010000018bcfe568000000018bcfe56801ffffffffffffffffffffffffffff00000002ba010000000e6f726465722d37187b226f72646572223a20377d02167472616365706172656e746e30302d30616637363531393136636434336464383434386562323131633830333139632d623761643662373136393230333333312d30312400020201187b226f72646572223a20387d00000000";
const METADATA_RESPONSE_V12: &str = "0000006000000008000000000002000000000a3132372e302e302e31000023840000026300000000020000076f72646572738f5c3c6e1b2a4c3d9e8f0a1b2c3d4e5f00020000000000020000000000000000020000000002000000000100800000000000";

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

fn feed(k: &mut Kafka, from: Sender, hex: &str) -> Vec<Message> {
    let mut out = Vec::new();
    k.feed(from, seg(&bytes(hex), 1), &mut out);
    out
}

/// (message kind, span kind, fields, context) of a messaging request.
fn sent(m: &Message) -> (&'static str, SpanKind, &MessagingRequest, &TraceContext) {
    let (how, r) = match m {
        Message::Request(r) => ("request", r),
        Message::OneWay(r) => ("one-way", r),
        Message::Push(r) => ("push", r),
        other => panic!("not a request: {other:?}"),
    };
    match &r.fields {
        RequestFields::Messaging(f) => (how, r.client_kind, f, &r.context),
        other => panic!("not messaging: {other:?}"),
    }
}

fn answers(out: &[Message]) -> Vec<(Correlation, Option<String>)> {
    out.iter()
        .map(|m| match m {
            Message::Response(Response { correlation, fields: ResponseFields::Messaging { error, .. }, .. }) => (*correlation, error.clone()),
            other => panic!("not an answer: {other:?}"),
        })
        .collect()
}

#[test]
fn a_produce_request_is_a_producer_span_per_record_ended_by_its_partitions_answer() {
    for (request, response, error) in [(PRODUCE_V9, PRODUCE_RESPONSE_V9, None), (PRODUCE_V7, PRODUCE_RESPONSE_V7_ERROR, Some("UNKNOWN_TOPIC_OR_PARTITION"))] {
        let mut k = Kafka::default();
        let out = feed(&mut k, Sender::Client, request);
        assert_eq!(out.len(), 2, "{out:?}");
        let (how, kind, first, context) = sent(&out[0]);
        assert_eq!((how, kind, first.destination.as_deref(), first.operation.as_str(), first.partition), ("request", SpanKind::Producer, Some("orders"), "send", Some(2)));
        assert_eq!((first.body_size, context.traceparent.as_deref()), (Some(12), Some(TRACEPARENT)));
        let (_, _, second, context) = sent(&out[1]);
        assert_eq!(context.traceparent, None);
        assert!(first.identity.is_some() && second.identity.is_some() && first.identity != second.identity);
        let keys: Vec<Correlation> = out.iter().map(|m| if let Message::Request(r) = m { r.correlation } else { unreachable!() }).collect();
        let answered = feed(&mut k, Sender::Server, response);
        assert_eq!(answers(&answered), keys.iter().map(|k| (*k, error.map(str::to_string))).collect::<Vec<_>>());
        assert!(k.waiting.is_empty());
        let offsets: Vec<Option<i64>> =
            answered.iter().map(|m| if let Message::Response(Response { fields: ResponseFields::Messaging { offset, .. }, .. }) = m { *offset } else { None }).collect();
        assert_eq!(offsets, if error.is_none() { [Some(41), Some(42)] } else { [None, None] }, "offsets from the partition's base");
    }
}

#[test]
fn fetched_records_are_consumer_spans_with_their_producers_identity() {
    let mut producer = Kafka::default();
    let produced = feed(&mut producer, Sender::Client, PRODUCE_V9);
    for (request, response) in [(FETCH_V12, FETCH_RESPONSE_V12), (FETCH_V11, FETCH_RESPONSE_V11)] {
        let mut consumer = Kafka::default();
        assert!(feed(&mut consumer, Sender::Client, request).is_empty(), "a fetch is no span");
        let fetched = feed(&mut consumer, Sender::Server, response);
        assert_eq!(fetched.len(), 2, "{fetched:?}");
        for (i, (delivery, send)) in fetched.iter().zip(&produced).enumerate() {
            let (how, kind, got, context) = sent(delivery);
            assert_eq!((how, kind, got.destination.as_deref(), got.partition, got.offset), ("push", SpanKind::Consumer, Some("orders"), Some(2), Some(41 + i as i64)));
            assert_eq!(got.identity, sent(send).2.identity, "record {i}");
            assert_eq!(context.traceparent.as_deref(), (i == 0).then_some(TRACEPARENT));
        }
    }
}

#[test]
fn topic_ids_take_the_names_the_connection_learned() {
    let mut consumer = Kafka::default();
    feed(&mut consumer, Sender::Client, FETCH_V13);
    let unknown = feed(&mut consumer, Sender::Server, FETCH_RESPONSE_V13);
    assert_eq!(unknown.iter().map(|m| sent(m).2.destination.clone()).collect::<Vec<_>>(), [None, None], "an id never named: no name, never a guess");
    feed(&mut consumer, Sender::Client, METADATA_V12);
    assert!(feed(&mut consumer, Sender::Server, METADATA_RESPONSE_V12).is_empty());
    feed(&mut consumer, Sender::Client, FETCH_V13);
    let named = feed(&mut consumer, Sender::Server, FETCH_RESPONSE_V13);
    assert_eq!(named.iter().map(|m| sent(m).2.destination.clone()).collect::<Vec<_>>(), [Some("orders".to_string()), Some("orders".to_string())]);
}

/// Split at every byte after a side's first segment, both ways: the same messages. A side's
/// first segment must start with a frame and hold enough of it to be told from the other
/// side's (`Side::aligned`): a request's header and its first record batch's header, a
/// response's correlation id. Clients write a request whole.
#[test]
fn frames_split_across_reads_give_the_same_messages() {
    let whole = {
        let mut k = Kafka::default();
        let mut out = feed(&mut k, Sender::Client, PRODUCE_V9);
        out.extend(feed(&mut k, Sender::Server, PRODUCE_RESPONSE_V9));
        out
    };
    for (request, response) in [(bytes(PRODUCE_V9), bytes(PRODUCE_RESPONSE_V9))] {
        let (first_request, first_response) = (100, 8);
        for cut in first_request..request.len() {
            let mut k = Kafka::default();
            let mut out = Vec::new();
            k.feed(Sender::Client, seg(&request[..cut], 1), &mut out);
            k.feed(Sender::Client, seg(&request[cut..], 1), &mut out);
            let at = (cut - first_request + first_response).min(response.len() - 1);
            k.feed(Sender::Server, seg(&response[..at], 1), &mut out);
            k.feed(Sender::Server, seg(&response[at..], 1), &mut out);
            assert_eq!(out, whole, "cut at {cut}");
        }
    }
}

/// A fetch answer cut by the capture: the records before the cut are delivered, the rest
/// counted as undecoded; the next answer is framed again.
#[test]
fn a_fetch_answer_cut_by_the_capture_gives_the_records_before_the_cut() {
    let response = bytes(FETCH_RESPONSE_V12);
    let mut k = Kafka::default();
    feed(&mut k, Sender::Client, FETCH_V12);
    // Everything up to the middle of the second record; the rest moved uncaptured.
    let keep = response.len() - 20;
    let mut out = Vec::new();
    k.feed(Sender::Server, Segment { data: &response[..keep], total: response.len() as u64, ts_enter_ns: 1, ts_exit_ns: 2 }, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(sent(&out[0]).2.offset, Some(41));
    feed(&mut k, Sender::Client, FETCH_V12);
    assert_eq!(feed(&mut k, Sender::Server, FETCH_RESPONSE_V12).len(), 2, "framed again");
}

#[test]
fn acks_zero_sends_are_one_way() {
    let mut request = bytes(PRODUCE_V9);
    // acks sits after the header (4 + 8 + 2 + 23 client id + 1 tagged) and the null
    // transactional id (1): -1 → 0.
    let at = 4 + 8 + 2 + 23 + 1 + 1;
    assert_eq!(&request[at..at + 2], &[0xff, 0xff]);
    request[at..at + 2].copy_from_slice(&[0, 0]);
    let mut k = Kafka::default();
    let mut out = Vec::new();
    k.feed(Sender::Client, seg(&request, 1), &mut out);
    assert!(out.iter().all(|m| matches!(m, Message::OneWay(_))) && out.len() == 2, "{out:?}");
    assert!(k.waiting.is_empty(), "no answer is due");
}

#[test]
fn requests_are_recognised_and_garbage_is_not() {
    assert!(looks_like_request(&bytes(PRODUCE_V9)));
    assert!(looks_like_request(&bytes(METADATA_V12)));
    assert!(!looks_like_request(b"GET / HTTP/1.1\r\n\r\n"));
    // Answers whose correlation id reads as a Produce header: not requests.
    for answer in [FETCH_RESPONSE_V12, FETCH_RESPONSE_V11, PRODUCE_RESPONSE_V9, PRODUCE_RESPONSE_V7_ERROR, METADATA_RESPONSE_V12] {
        assert!(!looks_like_request(&bytes(answer)), "{answer}");
        assert!(crate::protocols::registry::recognise(&bytes(answer)).is_none(), "no protocol claims {answer}");
    }
    for request in [PRODUCE_V9, PRODUCE_V7, FETCH_V11, FETCH_V12, FETCH_V13, METADATA_V12] {
        let (sender, parser) = crate::protocols::registry::recognise(&bytes(request)).expect("recognised");
        assert_eq!((parser.protocol(), sender), ("kafka", Sender::Client), "{request}");
    }
    assert!(!looks_like_request(&[0, 0, 0, 20, 0x7f, 0, 0, 0, 0, 0, 0, 1, 0, 0]));
    // A client id that is not text.
    assert!(!looks_like_request(&[0, 0, 0, 20, 0, 0, 0, 9, 0, 0, 0, 1, 0, 2, 0xff, 0x00]));
    // Garbage never panics and gives nothing.
    let mut k = Kafka::default();
    let mut out = Vec::new();
    for n in 0..64u8 {
        let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
        k.feed(Sender::Client, seg(&junk, 1), &mut out);
        k.feed(Sender::Server, seg(&junk, 1), &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
}
