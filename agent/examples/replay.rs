//! Userspace pipeline micro-benchmark: synthetic nginx-like keep-alive traffic (request read,
//! response written) replayed through parsing, span building, linking and the conversion to
//! OTLP protobuf bytes, without a kernel.
//! Reports events per second on one core. Run by `cargo xtask bench`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use zerotrace::conn::Role;
use zerotrace::events::Event;
use zerotrace::export::{otlp_wire, proto};
use zerotrace::pipeline::{FinishedSpan, Host, Pipeline};
use zerotrace::process::{FdKind, ProcessResource};
use zerotrace::spans::Clock;

/// The system allocator, counting allocations: the figure "heap allocations per request"
/// tells per-span churn apart from the rest of the time.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counter has no
// effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` or `realloc` above, which are System's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

/// Encodes the spans as the OTLP sink does, into one export request's bytes, so the figure
/// covers what every span costs up to the wire.
/// `REPLAY_VIA_PROST=1` builds prost's messages and encodes those instead, as the sink did
/// before `otlp_wire`, for comparison.
fn to_otlp(batch: Vec<FinishedSpan>) -> u64 {
    if std::env::var_os("REPLAY_VIA_PROST").is_some() {
        let request = ExportTraceServiceRequest { resource_spans: proto::resource_spans(&batch, "host") };
        std::hint::black_box(prost::Message::encode_to_vec(&request));
    } else {
        std::hint::black_box(otlp_wire::export_request(&batch, "host"));
    }
    batch.len() as u64
}

/// glibc returns the top of its main heap to the kernel past 128 KiB free, and serves blocks
/// past a threshold that adapts from 128 KiB with mmap: this single-threaded loop frees each
/// tick's batch and export buffer and faults them in again (~108k page faults per 500k
/// requests, a third of its time). The agent, whose pipeline and exporter run on worker
/// threads, took ~200 faults a second at 24k–32k spans a second (docs/BENCHMARKS.md), so
/// the loop keeps its memory as the agent does.
fn keep_freed_memory() {
    // SAFETY: mallopt only sets two of glibc's allocator parameters; no memory is passed.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

fn main() {
    keep_freed_memory();
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
    let allocations_before = ALLOCATIONS.load(Ordering::Relaxed);
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
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_before;
    let events = requests * 2;
    assert_eq!(spans, requests, "every request became a span");
    println!(
        "pipeline: {events} events, {spans} spans in {elapsed:.3} s: {:.0} events/s, {:.2} µs per request, {:.1} heap allocations per request",
        events as f64 / elapsed,
        elapsed * 1e6 / requests as f64,
        allocations as f64 / requests as f64
    );
}
