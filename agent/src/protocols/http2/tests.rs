//! HTTP/2 connections as both directions' bytes, with header blocks from an independent HPACK
//! encoder (loona-hpack).

use super::frame::{PREFACE, encode, flag, kind};
use super::*;
use crate::protocols::parser::seg;

struct Peer {
    hpack: loona_hpack::Encoder<'static>,
}

impl Peer {
    fn new() -> Self {
        Self { hpack: loona_hpack::Encoder::new() }
    }

    fn headers(&mut self, stream: u32, flags: u8, fields: &[(&str, &str)]) -> Vec<u8> {
        let block = self.hpack.encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
        encode(kind::HEADERS, flags | flag::END_HEADERS, stream, &block)
    }
}

fn summary(out: &[Message]) -> Vec<String> {
    out.iter()
        .map(|m| match m {
            Message::Request(r) => match &r.fields {
                RequestFields::Http(h) => format!("req {:?} {} {}", r.correlation, h.method.as_deref().unwrap_or("?"), h.target.as_deref().unwrap_or("?")),
                RequestFields::Rpc(rpc) => format!("rpc {:?} {}/{}", r.correlation, rpc.service.as_deref().unwrap_or("?"), rpc.method.as_deref().unwrap_or("?")),
                other => format!("{other:?}"),
            },
            Message::Response(r) => match &r.fields {
                ResponseFields::Http(h) => format!("resp {:?} {}", r.correlation, h.status.map_or("?".to_string(), |s| s.to_string())),
                ResponseFields::Rpc { status_code, .. } => format!("status {:?} {}", r.correlation, status_code.map_or("?".to_string(), |c| c.to_string())),
                ResponseFields::Failed { error } => format!("failed {:?} {error}", r.correlation),
                other => format!("{other:?}"),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

fn client_start() -> Vec<u8> {
    let mut b = PREFACE.to_vec();
    b.extend(encode(kind::SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]));
    b
}

#[test]
fn interleaved_streams_pair_by_id() {
    let (mut client, mut server) = (Peer::new(), Peer::new());
    let mut h2 = Http2::new();
    let mut out = Vec::new();
    let mut c = client_start();
    c.extend(client.headers(1, flag::END_STREAM, &[(":method", "GET"), (":scheme", "http"), (":path", "/a?secret=1"), (":authority", "svc:8080")]));
    c.extend(client.headers(
        3,
        0,
        &[(":method", "POST"), (":scheme", "http"), (":path", "/b"), (":authority", "svc:8080"), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
    ));
    c.extend(encode(kind::DATA, flag::END_STREAM, 3, b"body"));
    h2.feed(Sender::Client, seg(&c, 1), &mut out);
    let mut s = encode(kind::SETTINGS, 0, 0, &[]);
    s.extend(server.headers(3, 0, &[(":status", "201")]));
    s.extend(encode(kind::DATA, flag::END_STREAM, 3, b"made"));
    h2.feed(Sender::Server, seg(&s, 2), &mut out);
    h2.feed(Sender::Server, seg(&server.headers(1, flag::END_STREAM, &[(":status", "200")]), 3), &mut out);
    assert_eq!(summary(&out), ["req Key(1) GET /a?secret=1", "req Key(3) POST /b", "resp Key(3) 201", "resp Key(1) 200"]);
    let Message::Request(r) = &out[1] else { panic!() };
    assert!(r.context.traceparent.is_some(), "trace context travels in the headers");
    assert_eq!(h2.health(), Health::InSync);
}

#[test]
fn grpc_status_from_trailers_and_trailers_only() {
    let (mut client, mut server) = (Peer::new(), Peer::new());
    let mut h2 = Http2::new();
    let mut out = Vec::new();
    let grpc =
        |path: &'static str| vec![(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")];
    let mut c = client_start();
    c.extend(client.headers(1, 0, &grpc("/helloworld.Greeter/SayHello")));
    c.extend(encode(kind::DATA, flag::END_STREAM, 1, &[0, 0, 0, 0, 2, 10, 0]));
    c.extend(client.headers(3, 0, &grpc("/helloworld.Greeter/Missing")));
    h2.feed(Sender::Client, seg(&c, 1), &mut out);
    let mut s = encode(kind::SETTINGS, 0, 0, &[]);
    s.extend(server.headers(1, 0, &[(":status", "200"), ("content-type", "application/grpc")]));
    s.extend(encode(kind::DATA, 0, 1, &[0, 0, 0, 0, 0]));
    s.extend(server.headers(1, flag::END_STREAM, &[("grpc-status", "5"), ("grpc-message", "no such greeting")]));
    // Trailers-only: the status in the only header block.
    s.extend(server.headers(3, flag::END_STREAM, &[(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "12")]));
    h2.feed(Sender::Server, seg(&s, 2), &mut out);
    assert_eq!(summary(&out), ["rpc Key(1) helloworld.Greeter/SayHello", "rpc Key(3) helloworld.Greeter/Missing", "status Key(1) 5", "status Key(3) 12"]);
}

#[test]
fn resets_and_goaway_end_streams_as_errors() {
    let (mut client, mut server) = (Peer::new(), Peer::new());
    let mut h2 = Http2::new();
    let mut out = Vec::new();
    let mut c = client_start();
    for id in [1, 3, 5] {
        c.extend(client.headers(id, flag::END_STREAM, &[(":method", "GET"), (":scheme", "http"), (":path", "/slow"), (":authority", "a")]));
    }
    c.extend(encode(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
    h2.feed(Sender::Client, seg(&c, 1), &mut out);
    let mut goaway = 3u32.to_be_bytes().to_vec();
    goaway.extend(0u32.to_be_bytes());
    let mut s = encode(kind::SETTINGS, 0, 0, &[]);
    s.extend(encode(kind::GOAWAY, 0, 0, &goaway));
    s.extend(server.headers(3, flag::END_STREAM, &[(":status", "200")]));
    h2.feed(Sender::Server, seg(&s, 2), &mut out);
    assert_eq!(summary(&out)[3..], ["failed Key(1) CANCEL", "failed Key(5) GOAWAY NO_ERROR", "resp Key(3) 200"]);
}

#[test]
fn a_missed_header_block_leaves_values_out_instead_of_guessing() {
    let mut h2 = Http2::new();
    let mut out = Vec::new();
    h2.feed(Sender::Client, seg(&client_start(), 1), &mut out);
    // Stream 1's block (GET, then `:path /first` inserted into the table) is moved but not
    // captured: a gap covers it.
    let missed = encode(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, b"\x82\x44\x06/first");
    h2.feed(Sender::Client, Segment { data: &[], total: missed.len() as u64, ts_enter_ns: 2, ts_exit_ns: 3 }, &mut out);
    // Stream 3: GET, the path by the entry stream 1 inserted (index 62), and a new literal.
    let again = encode(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, b"\x82\xbe\x41\x03svc");
    h2.feed(Sender::Client, seg(&again, 4), &mut out);
    h2.feed(Sender::Server, seg(&encode(kind::SETTINGS, 0, 0, &[]), 5), &mut out);
    h2.feed(Sender::Server, seg(&encode(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 3, b"\x88"), 6), &mut out);
    // The path is unknown, so left out; the method and the authority are exact.
    assert_eq!(summary(&out), ["req Key(3) GET ?", "resp Key(3) 200"]);
    let Message::Request(Request { fields: RequestFields::Http(h), .. }) = &out[0] else { panic!() };
    assert_eq!(h.host.as_deref(), Some("svc"));
    assert!(!h.complete);
    assert!(h2.resyncs() >= 1);
}

#[test]
fn a_server_that_does_not_speak_http2_is_foreign() {
    let mut h2 = Http2::new();
    let mut out = Vec::new();
    h2.feed(Sender::Client, seg(&client_start(), 1), &mut out);
    h2.feed(Sender::Server, seg(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", 2), &mut out);
    assert_eq!(h2.health(), Health::Foreign);
    assert!(out.is_empty());
}

#[test]
fn garbage_never_panics() {
    let mut client = Peer::new();
    let mut seed = client.headers(1, 0, &[(":method", "POST"), (":path", "/x.Y/Z"), ("content-type", "application/grpc")]);
    seed.extend(encode(kind::DATA, flag::END_STREAM, 1, b"abc"));
    seed.extend(encode(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]));
    let seeds: Vec<Vec<u8>> = vec![[&[1u8, 2, 3, 4, 5, 6, 7, 8][..], &seed].concat(), [&[0x41u8, 0x42, 7, 9, 0x43, 5, 6, 7][..], &seed].concat()];
    let seeds: Vec<&[u8]> = seeds.iter().map(|s| s.as_slice()).collect();
    crate::protocols::fuzz::smoke::mutate_and_run(&seeds, 20_000, fuzz_one);
}

/// A connection opened before the agent attached: recognised from a request's HEADERS frame,
/// its fields decoded as far as the table is known, and nothing guessed.
#[test]
fn a_connection_joined_in_the_middle_is_recognised_and_never_guessed() {
    let (mut client, mut server) = (Peer::new(), Peer::new());
    let grpc = |path: &'static str| vec![(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "localhost"), ("content-type", "application/grpc")];
    // Before the agent: stream 1 fills both tables.
    let _unseen = client.headers(1, 0, &grpc("/demo.Greeter/Call0"));
    let _unseen = server.headers(1, flag::END_STREAM, &[(":status", "200"), ("grpc-status", "0")]);
    // After: stream 3 repeats the path (from the table), stream 5 sends a new one.
    let again = client.headers(3, flag::END_STREAM, &grpc("/demo.Greeter/Call0"));
    let (sender, mut h2) = crate::protocols::registry::recognise(&again).unwrap_or_else(|| panic!("recognised mid-stream: {:02x?}", &again[..16]));
    assert_eq!((h2.protocol(), sender), ("http2", Sender::Client));
    let mut out = Vec::new();
    h2.feed(Sender::Client, seg(&again, 1), &mut out);
    h2.feed(Sender::Client, seg(&client.headers(5, flag::END_STREAM, &grpc("/demo.Greeter/Call9")), 2), &mut out);
    let answer = server.headers(3, flag::END_STREAM, &[(":status", "200"), ("grpc-status", "0")]);
    assert_eq!(crate::protocols::registry::recognise(&answer).map(|(s, p)| (p.protocol(), s)), Some(("http2", Sender::Server)));
    h2.feed(Sender::Server, seg(&answer, 3), &mut out);
    for m in &out {
        match m {
            Message::Request(Request { fields: RequestFields::Rpc(r), .. }) => assert!(matches!(r.method.as_deref(), Some("Call0" | "Call9") | None), "{r:?}"),
            Message::Request(Request { fields: RequestFields::Http(h), .. }) => {
                assert_eq!(h.method.as_deref(), Some("POST"));
                assert!(matches!(h.target.as_deref(), Some("/demo.Greeter/Call0" | "/demo.Greeter/Call9") | None), "{h:?}");
                assert!(!h.complete, "values were left out: the span says so");
            }
            _ => {}
        }
    }
    assert_eq!(out.iter().filter(|m| matches!(m, Message::Request(_))).count(), 2, "{out:?}");
}

#[test]
fn a_mid_stream_guess_that_the_server_does_not_confirm_is_foreign() {
    let mut client = Peer::new();
    let request = client.headers(1, flag::END_STREAM, &[(":method", "GET"), (":path", "/x")]);
    let (_, mut h2) = crate::protocols::registry::recognise(&request).expect("looks like HTTP/2");
    let mut out = Vec::new();
    h2.feed(Sender::Client, seg(&request, 1), &mut out);
    h2.feed(Sender::Server, seg(b"\xff\xfe garbage that is no frame at all", 2), &mut out);
    assert_eq!(h2.health(), Health::Foreign, "no span may come of it");
}

#[test]
fn grpc_core_says_its_transport_writes_for_every_thread() {
    let mut client = Peer::new();
    let mut h2 = Http2::new();
    let mut out = Vec::new();
    let call = |ua: &'static str| vec![(":method", "POST"), (":scheme", "http"), (":path", "/demo.Greeter/Call1"), ("content-type", "application/grpc"), ("user-agent", ua)];
    let mut c = client_start();
    c.extend(client.headers(1, 0, &call("grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)")));
    c.extend(client.headers(3, 0, &call("grpc-go/1.33.3")));
    h2.feed(Sender::Client, seg(&c, 1), &mut out);
    let writers: Vec<Writer> = out
        .iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r.writer),
            _ => None,
        })
        .collect();
    // Once grpc-core is seen on a connection, every request on it may be written by any thread.
    assert_eq!(writers, [Writer::SharedTransport, Writer::SharedTransport]);
    let mut go = Http2::new();
    out.clear();
    let mut c = client_start();
    c.extend(Peer::new().headers(1, 0, &call("grpc-go/1.33.3")));
    go.feed(Sender::Client, seg(&c, 1), &mut out);
    assert!(matches!(&out[..], [Message::Request(r)] if r.writer == Writer::Caller));
    // Joined mid-connection: a block naming entries never seen does not say who wrote it.
    let mut joined = Http2::joining();
    out.clear();
    joined.feed(Sender::Client, seg(&encode(kind::HEADERS, flag::END_HEADERS, 5, &[0x83, 0xbe]), 2), &mut out);
    assert!(matches!(&out[..], [Message::Request(r)] if r.writer == Writer::Unknown), "{out:?}");
}

/// A connection joined mid-stream: a request naming entries never seen is completed by the
/// library's list of its fields when the two agree wherever the bytes are known, and the
/// entries it named are learned; a list that disagrees, or has another number of fields,
/// completes nothing.
#[test]
fn the_librarys_fields_complete_a_request_that_named_unknown_entries() {
    use crate::protocols::parser::LibraryField;
    let list =
        |fields: &[(&str, &str)]| -> Vec<LibraryField> { fields.iter().map(|(n, v)| LibraryField { name: n.as_bytes().to_vec(), value: Some(v.as_bytes().to_vec()) }).collect() };
    let call0 = [(":method", "POST"), (":scheme", "http"), (":path", "/demo.Greeter/Call0"), ("content-type", "application/grpc")];
    let mut h2 = Http2::joining();
    let mut out = Vec::new();
    // POST, http, then entries 63 and 62, never seen.
    for (stream, ts) in [(3, 1), (5, 2), (7, 3)] {
        h2.feed(Sender::Client, seg(&encode(kind::HEADERS, flag::END_HEADERS, stream, &[0x83, 0x86, 0xbf, 0xbe]), ts), &mut out);
    }
    assert_eq!(summary(&out), ["req Key(3) POST ?", "req Key(5) POST ?", "req Key(7) POST ?"]);
    assert!(h2.library_fields_wanted());
    assert!(!h2.library_fields_wanted(), "taken");
    let wrong = [(":method", "GET"), (":scheme", "http"), (":path", "/demo.Greeter/Call0"), ("content-type", "application/grpc")];
    assert_eq!(h2.complete_request(3, &list(&wrong)), None, "it disagrees with the known :method");
    assert_eq!(h2.complete_request(5, &list(&call0[..3])), None, "three fields for a block of four");
    let done = h2.complete_request(7, &list(&call0)).expect("agrees");
    assert_eq!(done.fields, RequestFields::Rpc(RpcRequest { system: "grpc", service: Some("demo.Greeter".into()), method: Some("Call0".into()) }));
    assert_eq!(h2.recovery(), Recovery { incomplete: 3, completed: 1, refused: 2, learned: 2 });
    // Learned: the same block decodes whole now, without the library.
    out.clear();
    h2.feed(Sender::Client, seg(&encode(kind::HEADERS, flag::END_HEADERS, 9, &[0x83, 0x86, 0xbf, 0xbe]), 4), &mut out);
    assert_eq!(summary(&out), ["rpc Key(9) demo.Greeter/Call0"]);
    assert!(!h2.library_fields_wanted(), "the entries were learned: nothing more to ask");
}
