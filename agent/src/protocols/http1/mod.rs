//! HTTP/1.x: message heads (via `httparse`) and a per-direction stream reassembler that
//! frames messages (Content-Length, chunked, until-close) across reads, pipelining and
//! capture gaps.

mod head;
mod lenient;
mod parser;
mod stream;

pub use head::{Framing, HeadParse, RequestHead, ResponseHead, parse_request_head, parse_response_head};
pub use parser::{Http1, PROTOCOL};
pub use stream::{HalfStream, Head, Message, Side};

use crate::protocols::parser::Segment;

/// One fuzz iteration, shared by the cargo-fuzz target and the randomized unit test: the
/// first bytes choose segment sizes and gaps, the rest is traffic. Must never panic.
pub fn fuzz_one(data: &[u8]) {
    let (control, traffic) = data.split_at(data.len().min(8));
    for side in [Side::Request, Side::Response] {
        let mut stream = HalfStream::new(side);
        stream.expect_response("GET");
        stream.expect_response("HEAD");
        let mut rest = traffic;
        let mut i = 0usize;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let c = control.get(i % control.len().max(1)).copied().unwrap_or(7) as usize;
            let n = (c % 61 + 1).min(rest.len());
            let gap = if c.is_multiple_of(5) { (c * 13) as u64 } else { 0 };
            let _ = head::parse_request_head(&rest[..n]);
            let _ = head::parse_response_head(&rest[..n], Some("HEAD"));
            stream.feed_into(Segment { data: &rest[..n], total: n as u64 + gap, ts_enter_ns: i as u64, ts_exit_ns: i as u64 + 1 }, &mut out);
            out.clear();
            rest = &rest[n..];
            i += 1;
        }
        let _ = stream.close();
    }
}

#[cfg(test)]
mod fuzz_smoke {
    /// A cheap stand-in for the fuzzer in every test run: many random and mutated inputs.
    #[test]
    fn parsers_never_panic() {
        let seeds: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nbody",
        ];
        crate::protocols::fuzz::smoke::mutate_and_run(seeds, 20_000, super::fuzz_one);
    }
}
