//! A constant-rate HTTP/1.1 load generator (open loop) and a do-nothing OTLP/HTTP sink.
//!
//! Written here rather than taken from Debian: wrk only saturates, and wrk2 is not packaged.
//! Requests are scheduled at fixed times; latency runs from the *scheduled* time to the end of
//! the answer, so a stalled server is charged for the requests it delayed (no coordinated
//! omission). Each worker thread owns one keep-alive connection and reconnects when the server
//! closes it (werkzeug's development server answers HTTP/1.0 and closes).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::LoadResult;

/// Connections (one thread each) the fixed rate is spread over.
const WORKERS: u32 = 8;

struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn { reader: BufReader::new(stream) })
    }

    /// Sends one GET and reads the whole answer; Ok(keep_alive).
    fn get(&mut self, path: &str) -> std::io::Result<bool> {
        write!(self.reader.get_mut(), "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        if !status.starts_with("HTTP/1.") {
            return Err(std::io::Error::other(format!("not an HTTP answer: {status:?}")));
        }
        let mut keep_alive = status.starts_with("HTTP/1.1");
        let mut length: Option<usize> = None;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else { continue };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().ok(),
                "connection" => keep_alive = value.trim().eq_ignore_ascii_case("keep-alive"),
                _ => {}
            }
        }
        match length {
            Some(n) => {
                let mut body = vec![0; n];
                self.reader.read_exact(&mut body)?;
            }
            None => {
                std::io::copy(&mut self.reader, &mut std::io::sink())?;
                keep_alive = false;
            }
        }
        Ok(keep_alive)
    }
}

/// Sends `rate` GET requests per second for `seconds` to 127.0.0.1:`port`, paths from
/// `path(i)`. Throughput counts answered requests; failed ones count as errors.
pub fn constant_rate(port: u16, rate: u32, seconds: u32, path: fn(u64) -> String) -> Result<(LoadResult, u64)> {
    let per_worker = Duration::from_secs_f64(WORKERS as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs(seconds as u64);
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            std::thread::spawn(move || {
                let mut latencies_ms = Vec::new();
                let mut errors = 0u64;
                let mut conn: Option<Conn> = None;
                let first = start + per_worker.mul_f64(w as f64 / WORKERS as f64);
                for i in 0u64.. {
                    let due = first + per_worker.mul_f64(i as f64);
                    if due >= end {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let answered = (|| -> std::io::Result<bool> {
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => conn.insert(Conn::open(port)?),
                        };
                        c.get(&path(i * WORKERS as u64 + w as u64))
                    })();
                    match answered {
                        Ok(keep) => {
                            latencies_ms.push(due.elapsed().as_secs_f64() * 1000.0);
                            if !keep {
                                conn = None;
                            }
                        }
                        Err(_) => {
                            errors += 1;
                            conn = None;
                        }
                    }
                }
                (latencies_ms, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.join().map_err(|_| anyhow::anyhow!("a load thread panicked"))?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64().max(seconds as f64);
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
    Ok((LoadResult { rps: latencies.len() as f64 / elapsed, p50_ms: pct(0.50), p99_ms: pct(0.99) }, errors))
}

/// An OTLP/HTTP endpoint that accepts every export and keeps nothing: the language agent's
/// export cost is paid as in production, without a collector's cost on these 2 cores. An
/// empty body is a valid (empty) ExportTraceServiceResponse.
pub fn otlp_sink() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the OTLP sink")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve_sink(stream));
        }
    });
    Ok(port)
}

fn serve_sink(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() && !first {
                break;
            }
            first = false;
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink())?;
        reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n")?;
    }
}
