//! Userspace pipeline micro-benchmark: synthetic nginx-like keep-alive traffic (request read,
//! response written) replayed through parsing, span building, linking and the conversion to
//! OTLP spans, without a kernel.
//! Reports events per second on one core. Run by `cargo xtask bench`.

use std::time::{Duration, Instant};

use zerotrace::conn::Role;
use zerotrace::events::Event;
use zerotrace::export::otlp_span;
use zerotrace::pipeline::{FinishedSpan, Host, Pipeline};
use zerotrace::process::{FdKind, ProcessResource};
use zerotrace::spans::Clock;

struct FakeHost;

impl Host for FakeHost {
    fn fd_kind(&mut self, _: u32, _: u32) -> FdKind {
        FdKind::Gone
    }
    fn socket_ends(&mut self, _: u32, _: u32, _: u64) -> Option<(Option<std::net::SocketAddr>, Option<std::net::SocketAddr>)> {
        None
    }
    fn resource(&mut self, tgid: u32) -> Option<ProcessResource> {
        Some(ProcessResource { pid: tgid, service_name: "nginx".into(), executable_name: "nginx".into(), ..Default::default() })
    }
    fn is_alive(&mut self, _: u32) -> bool {
        true
    }
}

/// Converts the spans as the OTLP sink does, so the figure covers what every span costs
/// before it is serialised.
fn to_otlp(batch: Vec<FinishedSpan>) -> u64 {
    for f in &batch {
        std::hint::black_box(otlp_span::span(&f.span));
    }
    batch.len() as u64
}

fn main() {
    let requests: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500_000);
    let request = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";
    let mut response = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 400\r\nConnection: keep-alive\r\n\r\n".to_vec();
    response.extend(std::iter::repeat_n(b'x', 400));
    let mut pipeline = Pipeline::new(FakeHost, Clock::now());
    let conns = 32u32;
    for fd in 0..conns {
        pipeline.handle(Event::ConnOpen {
            tgid: 100,
            tid: 100,
            fd: 10 + fd,
            role: Role::Server,
            listen_fd: None,
            local: None,
            remote: Some(format!("127.0.0.1:{}", 40000 + fd).parse().expect("addr")),
            ts_ns: 1,
            comm: "nginx".into(),
            cause: Default::default(),
            generation: 1,
        });
    }
    let start = Instant::now();
    let mut spans = 0u64;
    let mut ts = 1_000u64;
    for i in 0..requests {
        let fd = 10 + (i % conns as u64) as u32;
        ts += 1_000;
        pipeline.handle(Event::Data {
            tgid: 100,
            tid: 100,
            fd,
            ingress: true,
            ts_enter_ns: ts,
            ts_exit_ns: ts + 100,
            total: request.len() as u64,
            payload: request,
            tls: false,
            cause: Default::default(),
        });
        pipeline.handle(Event::Data {
            tgid: 100,
            tid: 100,
            fd,
            ingress: false,
            ts_enter_ns: ts + 500,
            ts_exit_ns: ts + 600,
            total: response.len() as u64,
            payload: &response,
            tls: false,
            cause: Default::default(),
        });
        if i % 256 == 0 {
            spans += to_otlp(pipeline.tick(Instant::now()));
        }
    }
    spans += to_otlp(pipeline.tick(Instant::now() + Duration::from_secs(3600)));
    let elapsed = start.elapsed().as_secs_f64();
    let events = requests * 2;
    assert_eq!(spans, requests, "every request became a span");
    println!("pipeline: {events} events, {spans} spans in {elapsed:.3} s: {:.0} events/s, {:.2} µs per request", events as f64 / elapsed, elapsed * 1e6 / requests as f64);
}
