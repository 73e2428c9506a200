//! The side-by-side matrix: the Flask and Express reference apps (tests/apps), each untraced,
//! under zerotrace, under its OpenTelemetry language agent, and under both, at a fixed request
//! rate (our open-loop generator) and at saturation (wrk). Per cell: throughput, p50/p99, the
//! app's CPU, zerotrace's CPU and peak RSS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Kill, LoadResult, cpu_ticks, rate, rss_peak_mb};
use crate::util::{root, run};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum App {
    Flask,
    Express,
}

impl App {
    pub fn label(self) -> &'static str {
        match self {
            App::Flask => "Flask (Python 3.11, werkzeug, thread per request)",
            App::Express => "Express (Node 20)",
        }
    }
    pub fn agent(self) -> &'static str {
        match self {
            App::Flask => "opentelemetry-instrument (Python agent 0.66b1)",
            App::Express => "@opentelemetry/auto-instrumentations-node 0.81.2",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Config {
    Untraced,
    Zerotrace,
    Agent,
    Both,
}

impl Config {
    pub const ALL: [Config; 4] = [Config::Untraced, Config::Zerotrace, Config::Agent, Config::Both];
    pub fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::Zerotrace => "zerotrace",
            Config::Agent => "language agent",
            Config::Both => "both",
        }
    }
    fn zerotrace(self) -> bool {
        matches!(self, Config::Zerotrace | Config::Both)
    }
    fn agent(self) -> bool {
        matches!(self, Config::Agent | Config::Both)
    }
}

/// One load mode's figures in one cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Measured {
    pub load: LoadResult,
    pub errors: u64,
    /// The app process's CPU (utime+stime, 100% = one core), probes in its syscalls included.
    pub app_cpu_pct: f64,
    pub zerotrace_cpu_pct: f64,
    pub zerotrace_rss_mb: f64,
}

impl Measured {
    /// Field-wise mean (errors summed, peak RSS the highest).
    fn mean(all: &[Measured]) -> Measured {
        let n = all.len().max(1) as f64;
        let loads: Vec<LoadResult> = all.iter().map(|m| m.load).collect();
        Measured {
            load: LoadResult::mean(&loads),
            errors: all.iter().map(|m| m.errors).sum(),
            app_cpu_pct: all.iter().map(|m| m.app_cpu_pct).sum::<f64>() / n,
            zerotrace_cpu_pct: all.iter().map(|m| m.zerotrace_cpu_pct).sum::<f64>() / n,
            zerotrace_rss_mb: all.iter().map(|m| m.zerotrace_rss_mb).fold(0.0, f64::max),
        }
    }
}

pub struct Cell {
    pub app: App,
    pub config: Config,
    pub fixed: Measured,
    pub saturated: Measured,
}

impl Cell {
    /// The mean of runs of one app and configuration (`runs` is not empty).
    pub fn mean(runs: &[&Cell]) -> Cell {
        let fixed: Vec<Measured> = runs.iter().map(|c| c.fixed).collect();
        let saturated: Vec<Measured> = runs.iter().map(|c| c.saturated).collect();
        Cell { app: runs[0].app, config: runs[0].config, fixed: Measured::mean(&fixed), saturated: Measured::mean(&saturated) }
    }
}

/// What the apps call: PostgreSQL (database `shop`, table `items`), Redis, and the plain
/// downstream HTTP service.
pub struct Backends {
    pg_port: u16,
    redis_port: u16,
    downstream_port: u16,
    _procs: Vec<Kill>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(child: &mut Child, port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            bail!("{what} did not start listening on {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub fn backends(dir: &Path) -> Result<Backends> {
    let pg_port = free_port()?;
    let (pg, _) = super::db::start_postgres(&dir.join("pg-apps"), pg_port)?;
    let psql =
        |sql: &str, db: &str| run(Command::new("psql").args(["-h", "127.0.0.1", "-p", &pg_port.to_string(), "-U", "postgres", "-q", "-d", db, "-c", sql]).stdout(Stdio::null()));
    psql("CREATE DATABASE shop", "postgres")?;
    psql("CREATE TABLE items (id int primary key, name text); INSERT INTO items SELECT g, 'item' || g FROM generate_series(0, 1000) g", "shop")?;
    let redis_port = free_port()?;
    let (redis, _) = super::db::start_redis(&dir.join("redis-apps"), redis_port)?;
    let downstream_port = free_port()?;
    let mut downstream = Command::new("python3")
        .arg(root().join("tests/apps/http_service.py"))
        .args(["--port", &downstream_port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .context("starting the downstream service")?;
    wait_ready(&mut downstream, downstream_port, "the downstream service")?;
    Ok(Backends { pg_port, redis_port, downstream_port, _procs: vec![pg, redis, Kill(downstream)] })
}

fn start_app(app: App, with_agent: bool, port: u16, b: &Backends, sink_port: u16) -> Result<Kill> {
    let mut cmd = match app {
        App::Flask if with_agent => {
            let mut c = Command::new("opentelemetry-instrument");
            c.arg("python3");
            c
        }
        App::Flask => Command::new("python3"),
        App::Express => {
            let mut c = Command::new("node");
            c.current_dir(root().join("tests/apps/express"));
            if with_agent {
                c.args(["--require", "@opentelemetry/auto-instrumentations-node/register"]);
            }
            c
        }
    };
    cmd.arg(match app {
        App::Flask => root().join("tests/apps/flask_service.py"),
        App::Express => root().join("tests/apps/express/server.js"),
    });
    cmd.args(["--port", &port.to_string(), "--downstream", &format!("http://127.0.0.1:{}", b.downstream_port)]);
    cmd.args(["--pg-port", &b.pg_port.to_string(), "--redis-port", &b.redis_port.to_string()]);
    // The agents' defaults, but traces only, over OTLP/HTTP to the sink.
    cmd.env("OTEL_SERVICE_NAME", "merchant")
        .env("OTEL_TRACES_EXPORTER", "otlp")
        .env("OTEL_METRICS_EXPORTER", "none")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{sink_port}"))
        .env("OTEL_SEMCONV_STABILITY_OPT_IN", "http,database")
        .env("OTEL_NODE_RESOURCE_DETECTORS", "env,host,os,process");
    let mut child = cmd.stdout(Stdio::null()).spawn().with_context(|| format!("starting the {app:?} app"))?;
    wait_ready(&mut child, port, "the app")?;
    Ok(Kill(child))
}

fn start_zerotrace(pid: u32, sink_port: u16) -> Result<Kill> {
    let mut child = Command::new(root().join("target/release/zerotrace"))
        .args(["run", "--pid", &pid.to_string(), "--exporter", "otlp", "--otlp-protocol", "http/protobuf", "--otlp-endpoint", &format!("http://127.0.0.1:{sink_port}")])
        .stderr(Stdio::piped())
        .spawn()
        .context("starting zerotrace")?;
    let stderr = child.stderr.take().context("zerotrace's stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("zerotrace: tracing") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30)).context("zerotrace did not start tracing")?;
    Ok(Kill(child))
}

fn merchant_path(i: u64) -> String {
    format!("/merchant/{}/status", i % 1000)
}

/// Runs `load` while sampling the app's and zerotrace's CPU.
fn sample(app_pid: u32, zerotrace: Option<u32>, load: impl FnOnce() -> Result<(LoadResult, u64)>) -> Result<Measured> {
    let app0 = cpu_ticks(app_pid);
    let zt0 = zerotrace.map(cpu_ticks).unwrap_or(0);
    let t0 = Instant::now();
    let (load, errors) = load()?;
    let wall = t0.elapsed().as_secs_f64();
    let pct = |ticks: u64| ticks as f64 / 100.0 / wall * 100.0;
    Ok(Measured {
        load,
        errors,
        app_cpu_pct: pct(cpu_ticks(app_pid) - app0),
        zerotrace_cpu_pct: zerotrace.map_or(0.0, |z| pct(cpu_ticks(z) - zt0)),
        zerotrace_rss_mb: zerotrace.map_or(0.0, rss_peak_mb),
    })
}

pub fn measure(app: App, config: Config, b: &Backends, fixed_rate: u32, seconds: u32) -> Result<Cell> {
    let sink = rate::otlp_sink()?;
    let port = free_port()?;
    let app_proc = start_app(app, config.agent(), port, b, sink)?;
    let app_pid = app_proc.0.id();
    let zt = if config.zerotrace() { Some(start_zerotrace(app_pid, sink)?) } else { None };
    // Warm-up, after attaching: imports, JIT, pools, the agents' first exports, the probes'
    // first look at the process's sockets.
    rate::constant_rate(port, fixed_rate, 2, merchant_path)?;
    let zt_pid = zt.as_ref().map(|k| k.0.id());
    let fixed = sample(app_pid, zt_pid, || rate::constant_rate(port, fixed_rate, seconds, merchant_path))?;
    let url = format!("http://127.0.0.1:{port}/merchant/7/status");
    let saturated = sample(app_pid, zt_pid, || Ok((super::wrk_with(&url, seconds, 16)?, 0)))?;
    drop(zt);
    drop(app_proc);
    let cell = Cell { app, config, fixed, saturated };
    println!(
        "{:?} {:>14}: fixed {:.0} req/s p50 {:.2} ms p99 {:.2} ms app {:.1}% zt {:.1}% | saturated {:.0} req/s p99 {:.2} ms app {:.1}% zt {:.1}% {:.0} MiB",
        app,
        config.label(),
        cell.fixed.load.rps,
        cell.fixed.load.p50_ms,
        cell.fixed.load.p99_ms,
        cell.fixed.app_cpu_pct,
        cell.fixed.zerotrace_cpu_pct,
        cell.saturated.load.rps,
        cell.saturated.load.p99_ms,
        cell.saturated.app_cpu_pct,
        cell.saturated.zerotrace_cpu_pct,
        cell.saturated.zerotrace_rss_mb
    );
    Ok(cell)
}

fn find(cells: &[Cell], app: App, config: Config) -> Option<&Cell> {
    cells.iter().find(|c| c.app == app && c.config == config)
}

/// The matrix's section of docs/BENCHMARKS.md.
pub fn report(seconds: u32, fixed_rate: u32, cells: &[Cell]) -> String {
    use std::fmt::Write;
    let mut md = String::new();
    let _ = writeln!(md, "## zerotrace next to the language agents (suite `agents`)\n");
    let _ = writeln!(
        md,
        "Method: the reference apps of `zerotrace compare` (tests/apps: GET /merchant/<id>/status makes one HTTP call to a plain Python service, one PostgreSQL query and one Redis GET) run on 127.0.0.1 with PostgreSQL 15, Redis 7 and the downstream service on the same 2 cores. Each configuration starts the app afresh, twice per app, in forward then reverse order (the tables show the mean of the two runs): untraced; traced by `zerotrace run --pid <app>`; under its OpenTelemetry language agent (traces only, stable semantic conventions, default batching); both. Both tracers export OTLP/HTTP to a sink in the benchmark that accepts and discards, so export is paid as in production. After a 2 s warm-up, {seconds} s at a fixed {fixed_rate} req/s (an open-loop generator in xtask, 8 keep-alive connections; latency from each request's scheduled time, so a stall is charged for the requests it delays), then {seconds} s at saturation (wrk, 1 thread, 16 connections). App CPU is the app process's utime+stime over the run (100% = one core; the probes' kernel time in its syscalls is included); zerotrace CPU likewise for the agent process; RSS is the agent's peak.\n"
    );
    for app in [App::Flask, App::Express] {
        let _ = writeln!(md, "### {} — language agent: {}\n", app.label(), app.agent());
        let _ = writeln!(
            md,
            "| configuration | fixed: req/s | errors | p50 | p99 | app CPU | zerotrace CPU | saturated: req/s | p50 | p99 | app CPU | zerotrace CPU | zerotrace peak RSS |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for config in Config::ALL {
            let Some(c) = find(cells, app, config) else { continue };
            let (f, s) = (&c.fixed, &c.saturated);
            let zt = |m: &Measured| if config.zerotrace() { format!("{:.1}%", m.zerotrace_cpu_pct) } else { "—".into() };
            let rss = if config.zerotrace() { format!("{:.1} MiB", s.zerotrace_rss_mb) } else { "—".into() };
            let _ = writeln!(
                md,
                "| {} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.1}% | {} | {:.0} | {:.2} ms | {:.2} ms | {:.1}% | {} | {rss} |",
                config.label(),
                f.load.rps,
                f.errors,
                f.load.p50_ms,
                f.load.p99_ms,
                f.app_cpu_pct,
                zt(f),
                s.load.rps,
                s.load.p50_ms,
                s.load.p99_ms,
                s.app_cpu_pct,
                zt(s)
            );
        }
        if let (Some(base), Some(zt), Some(agent)) = (find(cells, app, Config::Untraced), find(cells, app, Config::Zerotrace), find(cells, app, Config::Agent)) {
            let added_zt = zt.fixed.app_cpu_pct - base.fixed.app_cpu_pct;
            let added_agent = agent.fixed.app_cpu_pct - base.fixed.app_cpu_pct;
            let share = if added_agent > 0.0 { format!("{:.2}", added_zt / added_agent) } else { "n/a".into() };
            let _ = writeln!(
                md,
                "\nAt {fixed_rate} req/s: app CPU added by zerotrace **{added_zt:+.1}** points vs **{added_agent:+.1}** by the language agent (ratio {share}; target ≤ 0.10 against the Python agent); p99 with zerotrace **{:.2}×** untraced (target ≤ 1.10), with the language agent {:.2}×. zerotrace's own CPU: {:.1}% of a core. At saturation, throughput with zerotrace {:.2}× untraced, with the language agent {:.2}×.\n",
                zt.fixed.load.p99_ms / base.fixed.load.p99_ms,
                agent.fixed.load.p99_ms / base.fixed.load.p99_ms,
                zt.fixed.zerotrace_cpu_pct,
                zt.saturated.load.rps / base.saturated.load.rps,
                agent.saturated.load.rps / base.saturated.load.rps,
            );
        }
    }
    md
}
