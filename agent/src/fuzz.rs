//! Fuzzing the whole userspace pipeline: arbitrary sequences of kernel events (connections
//! opened, data in both directions with capture gaps, closes, process exits, runtime units,
//! hand-offs, raw ring-buffer records) through connection tracking, every parser, span
//! building and linking. Shared by the cargo-fuzz target `pipeline` and the smoke test that
//! runs in every `cargo test`. Must never panic.
//!
//! The input is a script: each step is an opcode byte and the bytes it consumes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::conn::Role;
use crate::events::{Cause, Event};
use crate::pipeline::{Host, Pipeline};
use crate::process::{FdKind, ProcessResource};
use crate::spans::Clock;

/// A machine without /proc: sockets whose ends are whatever the script says.
struct ScriptHost;

impl Host for ScriptHost {
    fn fd_kind(&mut self, _: u32, fd: u32) -> FdKind {
        match fd % 3 {
            0 => FdKind::Socket(u64::from(fd)),
            1 => FdKind::Other,
            _ => FdKind::Gone,
        }
    }
    fn socket_ends(&mut self, _: u32, fd: u32, _: u64) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
        Some((Some(SocketAddr::from(([127, 0, 0, 1], 40_000 + fd as u16))), Some(SocketAddr::from(([127, 0, 0, 1], 8080)))))
    }
    fn resource(&mut self, tgid: u32) -> Option<ProcessResource> {
        Some(ProcessResource { pid: tgid, service_name: "fuzz".into(), executable_name: "fuzz".into(), ..Default::default() })
    }
    fn is_alive(&mut self, tgid: u32) -> bool {
        tgid != 102
    }
}

/// Opcodes of the script (the low three bits of a step's first byte).
pub mod op {
    /// fd, role, port: a connection opened.
    pub const OPEN: u8 = 0;
    /// fd, flags (bit 0 ingress, bit 1 TLS, bits 2.. gap), length, bytes: one syscall's data.
    pub const DATA: u8 = 1;
    /// fd: closed.
    pub const CLOSE: u8 = 2;
    /// code: the process ended (0xff: killed).
    pub const EXIT: u8 = 3;
    /// a, b: an asyncio task created inside another, or a hand-off put/take.
    pub const UNIT: u8 = 4;
    /// length, bytes: a raw ring-buffer record.
    pub const RECORD: u8 = 5;
    /// milliseconds: the pipeline's tick, that much later.
    pub const TICK: u8 = 6;
    /// fd: a TLS socket record.
    pub const TLS_SOCKET: u8 = 7;
}

/// The next `n` bytes of the script (fewer at its end).
fn take(n: usize, rest: &mut &[u8]) -> Vec<u8> {
    let n = n.min(rest.len());
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    head.to_vec()
}

/// One fuzz iteration. The step byte's high bits pick the process (tgid 100..=102) and the
/// unit of work the event came from.
pub fn pipeline(data: &[u8]) {
    let mut pipeline = Pipeline::new(ScriptHost, Clock::now());
    let start = Instant::now();
    let mut now = start;
    let mut ts = 1_000_000u64;
    let mut rest = data;
    while let Some((&step, tail)) = rest.split_first() {
        rest = tail;
        let tgid = 100 + u32::from(step >> 6) % 3;
        let tid = tgid + u32::from(step >> 5 & 1);
        let cause = match step >> 3 & 3 {
            0 => Cause::Thread,
            1 => Cause::Outside,
            2 => Cause::Callback { fd: 3, seq: u32::from(step) },
            _ => Cause::Task(0x1000 + u64::from(step & 0x30)),
        };
        ts += 1_000 + u64::from(step) * 10;
        let args = take(2, &mut rest);
        let (a, b) = (args.first().copied().unwrap_or(0), args.get(1).copied().unwrap_or(0));
        let fd = 3 + u32::from(a % 8);
        match step & 7 {
            op::OPEN => {
                let role = [Role::Server, Role::Client, Role::Unknown][usize::from(b % 3)];
                let peer = SocketAddr::from(([127, 0, 0, 1], 40_000 + u16::from(b)));
                let own = SocketAddr::from(([127, 0, 0, 1], 8080));
                let (local, remote) = if role == Role::Client { (Some(peer), Some(own)) } else { (Some(own), Some(peer)) };
                let listen_fd = (b & 0x80 != 0).then_some(2);
                pipeline.handle(Event::ConnOpen { tgid, tid, fd, role, listen_fd, local, remote, ts_ns: ts, comm: "fuzz".into(), cause, generation: a });
            }
            op::DATA => {
                let payload = take(usize::from(b), &mut rest);
                let gap = u64::from(a >> 4) * 97;
                pipeline.handle(Event::Data {
                    tgid,
                    tid,
                    fd,
                    ingress: a & 1 != 0,
                    ts_enter_ns: ts,
                    ts_exit_ns: ts + 50,
                    total: payload.len() as u64 + gap,
                    payload: &payload,
                    tls: a & 2 != 0 && a & 4 != 0,
                    cause,
                });
            }
            op::CLOSE => pipeline.handle(Event::Close { tgid, tid, fd, ts_ns: ts }),
            op::EXIT => pipeline.handle(Event::Exit { tgid, ts_ns: ts, code: (a != 0xff).then_some(i32::from(a)) }),
            op::UNIT => match b % 7 {
                0 => pipeline.handle(Event::UnitSpawn { tgid, parent: cause, child: 0x1000 + u64::from(a & 0x30), ts_ns: ts }),
                3 => pipeline.handle(Event::StreamCaller { tgid, stream: u32::from(a & 0x0f) * 2 + 1, caller: tid, cause: Cause::Thread, ts_ns: ts }),
                4 | 5 => {
                    // A library's header field: names and values from the script, either side.
                    let name = take(usize::from(a & 0x0f), &mut rest);
                    let value = take(usize::from(a >> 4), &mut rest);
                    let field = crate::protocols::parser::LibraryField { name, value: (a & 0x80 == 0).then_some(value) };
                    pipeline.handle(Event::HeaderField { tgid, tid, stream: u32::from(a & 0x07) * 2 + 1, cause, ts_ns: ts, decoded: b % 7 == 5, field });
                }
                6 => pipeline.handle(Event::HeaderFieldsEnd { tgid, tid, stream: u32::from(a & 0x07) * 2 + 1, decoded: a & 0x80 != 0 }),
                n => pipeline.handle(Event::HandOff { tgid, tid, take: n == 2, item: u64::from(a), cause }),
            },
            op::RECORD => {
                let record = take(usize::from(a), &mut rest);
                pipeline.record(&record);
            }
            op::TICK => {
                now += Duration::from_millis(u64::from(a) * u64::from(b));
                let _ = pipeline.tick(now);
                pipeline.remove_exited();
            }
            _ => pipeline.handle(Event::TlsSocket { tgid, tid, fd }),
        }
    }
    let _ = pipeline.tick(now + Duration::from_secs(20));
    let _ = pipeline.flush();
}

#[cfg(test)]
mod tests {
    use super::op;

    /// Script steps for the seeds: (opcode, a, b, bytes).
    fn script(steps: &[(u8, u8, u8, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, a, b, bytes) in steps {
            out.extend_from_slice(&[*code, *a, *b]);
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Realistic sequences (a served request with a call inside, a PostgreSQL exchange, a
    /// pipelined Redis write past the cap, a process killed mid-request), mutated.
    #[test]
    fn the_pipeline_never_panics() {
        let get = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let call = b"GET /b HTTP/1.1\r\nHost: y\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
        let pg = b"\x00\x00\x00\x08\x04\xd2\x16\x2f\x00\x00\x00\x10\x00\x03\x00\x00user\x00pg\x00\x00";
        let query = b"Q\x00\x00\x00\x0dSELECT 1\x00";
        let redis = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let seeds: Vec<Vec<u8>> = vec![
            script(&[
                (op::OPEN, 0, 0, b""),
                (op::DATA, 1, get.len() as u8, get),
                (op::OPEN, 1, 1, b""),
                (op::DATA, 0, call.len() as u8, call),
                (op::DATA, 1, ok.len() as u8, ok),
                (op::DATA, 0, ok.len() as u8, ok),
                (op::TICK, 10, 10, b""),
                (op::CLOSE, 0, 0, b""),
            ]),
            script(&[
                (op::OPEN | 0x40, 2, 1, b""),
                (op::DATA | 0x40, 2, pg.len() as u8, pg),
                (op::DATA | 0x40, 2, query.len() as u8, query),
                (op::DATA | 0x40, 3, 6, b"Z\x00\x00\x00\x05I"),
            ]),
            script(&[(op::OPEN, 4, 1, b""), (op::DATA, 0xf4, redis.len() as u8, redis), (op::DATA, 5, 10, b"$1\r\nv\r\n$1\r"), (op::TICK, 1, 1, b"")]),
            script(&[
                (op::OPEN | 0x80, 0, 0, b""),
                (op::DATA | 0x80, 1, get.len() as u8, get),
                (op::EXIT | 0x80, 0xff, 0, b""),
                (op::UNIT | 0x18, 7, 1, b""),
                (op::UNIT, 7, 2, b""),
                (op::RECORD, 4, 0, b"\x09\x00\x00\x00"),
            ]),
        ];
        let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
        crate::protocols::fuzz::smoke::mutate_and_run(&seeds, 5_000, super::pipeline);
    }
}
