//! Database load for the benchmark: PostgreSQL under pgbench (select-only) and Redis under
//! redis-benchmark, each server started fresh in a temporary directory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Kill, LoadResult};
use crate::util::{output, run};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn wait_port(port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A PostgreSQL 15 cluster with pgbench's tables (scale 1); returns the postmaster.
pub fn start_postgres(dir: &Path, port: u16) -> Result<(Kill, u32)> {
    std::fs::create_dir_all(dir)?;
    run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir))?;
    let data = dir.join("pgdata");
    run(Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
        .arg(&data)
        .stdout(Stdio::null()))
    .context("initdb (cargo xtask setup installs PostgreSQL 15)")?;
    let child = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(Path::new(PG_BIN).join("postgres"))
        .arg("-D")
        .arg(&data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-k"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting postgres")?;
    let kill = Kill(child);
    wait_port(port, "postgres")?;
    std::thread::sleep(Duration::from_millis(500));
    // runuser's child is the postmaster.
    let pid = output(Command::new("pgrep").args(["-P", &kill.0.id().to_string()]))?.trim().parse::<u32>().context("finding the postmaster")?;
    run(Command::new(Path::new(PG_BIN).join("pgbench"))
        .args(["-i", "-q", "-s", "1", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null()))?;
    Ok((kill, pid))
}

/// pgbench select-only, 8 clients, one thread; latencies from its per-transaction log.
pub fn pgbench(port: u16, seconds: u32, log_dir: &Path) -> Result<LoadResult> {
    let _ = std::fs::remove_dir_all(log_dir);
    std::fs::create_dir_all(log_dir)?;
    let prefix = log_dir.join("tx");
    let out = output(
        Command::new(Path::new(PG_BIN).join("pgbench"))
            .args(["-n", "-S", "-c", "8", "-j", "1", "-T", &seconds.to_string(), "-l", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .arg(format!("--log-prefix={}", prefix.display()))
            .arg("postgres"),
    )?;
    let tps = out
        .lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("could not read pgbench's output:\n{out}"))?;
    // Log lines: client_id transaction_no time_us script_no time_epoch time_us.
    let mut latencies: Vec<f64> = Vec::new();
    for entry in std::fs::read_dir(log_dir)?.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        latencies.extend(text.lines().filter_map(|l| l.split(' ').nth(2)).filter_map(|v| v.parse::<f64>().ok()).map(|us| us / 1000.0));
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(f64::NAN);
    Ok(LoadResult { rps: tps, p50_ms: pct(0.50), p99_ms: pct(0.99) })
}

pub fn start_redis(dir: &Path, port: u16) -> Result<(Kill, u32)> {
    std::fs::create_dir_all(dir)?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .context("starting redis-server (cargo xtask setup installs it)")?;
    let pid = child.id();
    let kill = Kill(child);
    wait_port(port, "redis-server")?;
    Ok((kill, pid))
}

/// redis-benchmark GET and SET, 32 connections, no pipelining; about `seconds` long.
pub fn redis_benchmark(port: u16, seconds: u32) -> Result<LoadResult> {
    let requests = (seconds as u64 * 15_000).to_string();
    let out = output(Command::new("redis-benchmark").args(["-p", &port.to_string(), "-c", "32", "-n", &requests, "-t", "get,set", "--csv"]))?;
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let rows: Vec<Vec<f64>> =
        out.lines().skip(1).map(|l| l.split(',').skip(1).filter_map(|v| v.trim_matches('"').parse::<f64>().ok()).collect::<Vec<f64>>()).filter(|r| r.len() >= 6).collect();
    if rows.is_empty() {
        bail!("could not read redis-benchmark's output:\n{out}");
    }
    let mean = |i: usize| rows.iter().map(|r| r[i]).sum::<f64>() / rows.len() as f64;
    Ok(LoadResult { rps: mean(0), p50_ms: mean(3), p99_ms: mean(5) })
}
