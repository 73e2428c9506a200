//! Runs the agent: validate what the user asked for, check the host, load the probes, then
//! drain events into the pipeline and spans into the sink until told to stop.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::cli::{Exporter, RunArgs, TraceArgs};
use crate::discovery::Discovery;
use crate::export::{self, ExportStats, SpanSink};
use crate::fleet::Fleet;
use crate::pipeline::{Pipeline, ProcHost};
use crate::probes::{Probes, Settings};
use crate::red::RedMetrics;
use crate::red::otlp::MetricsExporter;
use crate::runtime::{Runtime, RuntimeProbes};
use crate::selectors::{SelectorArgs, Selectors};
use crate::self_metrics::SelfMetrics;
use crate::spans::Clock;
use crate::tls::TlsProbes;
use crate::{preflight, process, targets};

/// Records read per drain before the loop looks at its timers and signals again: under a load
/// the agent cannot keep up with, an unbounded drain held the once-a-second work (self-metrics,
/// the overhead budget, a fleet's relooks) and a signal back for seconds.
const DRAIN_BATCH: usize = 8192;

/// The reader drains on this period when no wakeup came (the probes wake it only when the
/// unread bytes cross a multiple of WAKEUP_BYTES).
const DRAIN_PERIOD: Duration = Duration::from_millis(50);
/// Unread ring-buffer bytes whose every multiple, when a record crosses it, wakes the reader.
/// Under load the reader wakes about this often and parses what is queued in one burst; a
/// burst that runs on the traced server's core holds its requests up for that long. Measured
/// under redis-benchmark (~85k req/s, ~25 MB/s of records): 256 KiB meant ~2.5 ms bursts
/// every ~10 ms and a p99 of 1.6–2.0 ms (0.3 ms untraced); 64 KiB gives 0.8–1.0 ms at the
/// same throughput, and 16 KiB 0.55–0.8 ms but lost throughput to the extra wakeups.
/// Draining on a timer instead (every 2–50 ms, aiming at 64 KiB a drain, with a wakeup only
/// past 1 MiB) cost nginx under wrk 9% of its traced throughput against these wakeups,
/// measured alternating over 11 rounds; with a 10 ms floor, 9% as well.
const WAKEUP_BYTES: u64 = 64 * 1024;
/// Batches the pipeline may queue for the sink before it drops.
const EXPORT_QUEUE: usize = 256;

fn exporter_choice(flag: Option<Exporter>) -> Result<Exporter> {
    if let Some(e) = flag {
        return Ok(e);
    }
    match std::env::var("OTEL_TRACES_EXPORTER").ok().as_deref().map(str::trim) {
        None | Some("") => Ok(Exporter::Terminal),
        Some("otlp") => Ok(Exporter::Otlp),
        Some("console") => Ok(Exporter::Terminal),
        Some("none") => Ok(Exporter::None),
        Some(other) => bail!("OTEL_TRACES_EXPORTER={other} is not supported; use otlp, console or none (or --exporter)"),
    }
}

fn build_sink(args: &RunArgs, host_name: &str) -> Result<Box<dyn SpanSink>> {
    Ok(match exporter_choice(args.exporter)? {
        Exporter::Terminal => Box::new(export::terminal::TerminalSink::default()),
        Exporter::None => Box::new(export::NoSink),
        Exporter::Jsonl => {
            let path = args.output.as_ref().context("--exporter jsonl needs --output FILE")?;
            Box::new(export::jsonl::JsonlSink::create(path, host_name.to_string())?)
        }
        Exporter::Otlp => {
            let config = export::otlp::OtlpConfig::resolve(args.otlp_endpoint.as_deref(), args.otlp_protocol)?;
            Box::new(export::otlp::OtlpSink::new(config, host_name.to_string())?)
        }
    })
}

/// Whether RED metrics are pushed as OTLP (`OTEL_METRICS_EXPORTER`: `otlp`; unset, when the
/// traces go out as OTLP; `none` or `prometheus`: not), and where.
fn metrics_push(args: &RunArgs) -> Result<Option<(MetricsExporter, Duration)>> {
    let push = match std::env::var("OTEL_METRICS_EXPORTER").ok().as_deref().map(str::trim) {
        None | Some("") => exporter_choice(args.exporter)? == Exporter::Otlp,
        Some("otlp") => true,
        Some("none" | "prometheus") => false,
        Some(other) => bail!("OTEL_METRICS_EXPORTER={other} is not supported; use otlp, prometheus (the --prometheus-port page only) or none"),
    };
    if !push {
        return Ok(None);
    }
    let exporter = MetricsExporter::new(args.otlp_endpoint.as_deref(), args.otlp_protocol)?;
    let interval = crate::red::otlp::export_interval()?;
    eprintln!("zerotrace: RED metrics pushed to {} every {} s", exporter.endpoint(), interval.as_secs_f64());
    Ok(Some((exporter, interval)))
}

fn now_unix_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// `zerotrace run`: trace the targets into the chosen sink until told to stop.
pub fn run(args: RunArgs) -> Result<()> {
    if args.trace.list {
        return list(&args.trace);
    }
    let targets = Targets::resolve(&args.trace, true)?;
    runtime()?.block_on(async {
        // Inside the runtime: tonic's lazy channel needs it.
        let sink = build_sink(&args, &process::host_name())?;
        let metrics = metrics_push(&args)?;
        trace(&args.trace, targets, sink, metrics).await
    })
}

/// One thread: the pipeline builds spans and the exporter frees them after export; across
/// threads every one of those frees missed malloc's per-thread cache (~15% of the agent's CPU
/// under load). Nothing here blocks for long: /proc and ELF reads are short, exports are
/// async.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `--list`: every process of the host, whether fleet mode would trace it, and why.
fn list(args: &TraceArgs) -> Result<()> {
    if !args.pids.is_empty() || !args.cgroups.is_empty() {
        bail!("--list surveys fleet mode: drop --pid and --cgroup");
    }
    let selectors = Selectors::new(&selector_args(args))?;
    let surveyed = crate::fleet::survey(&selectors);
    let mut lines = vec![format!("{:>8}  {:<7}  {:<40}  why", "PID", "TRACED", "EXECUTABLE")];
    for s in &surveyed {
        let (traced, why) = match &s.verdict {
            crate::selectors::Verdict::Trace(why) => ("yes", why),
            crate::selectors::Verdict::Skip(why) => ("no", why),
        };
        lines.push(format!("{:>8}  {:<7}  {:<40}  {why}", s.facts.pid, traced, s.facts.exe.as_deref().unwrap_or("-")));
    }
    let traced = surveyed.iter().filter(|s| s.verdict.traced()).count();
    lines.push(format!("{traced} of {} processes would be traced, and processes started later that match", surveyed.len()));
    // A reader that stops early (`--list | head`) is not an error.
    let mut out = std::io::stdout().lock();
    for line in lines {
        match writeln!(out, "{line}") {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
    }
    Ok(())
}

fn selector_args(args: &TraceArgs) -> SelectorArgs<'_> {
    SelectorArgs {
        exe: &args.exe,
        exclude_exe: &args.exclude_exe,
        ports: &args.ports,
        container: args.container,
        k8s_namespace: &args.k8s_namespace,
        k8s_pod: &args.k8s_pod,
        exclude_k8s_namespace: &args.exclude_k8s_namespace,
    }
}

/// The processes and cgroups asked for, checked to exist, with the host checked to be able to
/// trace them; or, in fleet mode, the host's processes the selectors match.
pub struct Targets {
    pids: Vec<u32>,
    cgroup_ids: Vec<u64>,
    /// Fleet mode: the selectors processes that run exec later are checked against.
    fleet: Option<Selectors>,
}

impl Targets {
    /// `fleet_allowed`: no `--pid` and no `--cgroup` means fleet mode (`run`), else an error.
    pub fn resolve(args: &TraceArgs, fleet_allowed: bool) -> Result<Targets> {
        let selectors = Selectors::new(&selector_args(args))?;
        let fleet_mode = args.pids.is_empty() && args.cgroups.is_empty();
        if !fleet_mode && selectors.narrows() {
            bail!("--exe, --exclude-exe, --port, --container and --k8s-* select processes in fleet mode, without --pid or --cgroup: drop one or the other");
        }
        if fleet_mode && !fleet_allowed {
            return Err(targets::TargetError::Nothing.into());
        }
        if fleet_mode {
            for warning in preflight::check()? {
                eprintln!("zerotrace: warning: {warning}");
            }
            let surveyed = crate::fleet::survey(&selectors);
            let pids: Vec<u32> = surveyed.iter().filter(|s| s.verdict.traced()).map(|s| s.facts.pid).collect();
            eprintln!(
                "zerotrace: fleet mode: {} of {} processes match{}; processes that start later are checked when they run exec (--list shows why each is traced or not)",
                pids.len(),
                surveyed.len(),
                if selectors.narrows() { " the selectors" } else { " (no selector: every process)" }
            );
            if pids.is_empty() {
                eprintln!("zerotrace: warning: no running process matches the selectors; waiting for one to start (--list shows why each process is not traced)");
            }
            return Ok(Targets { pids, cgroup_ids: Vec::new(), fleet: Some(selectors) });
        }
        let pids = targets::pids_with_descendants(&args.pids)?;
        let mut cgroup_ids = Vec::new();
        for dir in &args.cgroups {
            cgroup_ids.extend(targets::cgroup_ids(dir)?);
        }
        for warning in preflight::check()? {
            eprintln!("zerotrace: warning: {warning}");
        }
        Ok(Targets { pids, cgroup_ids, fleet: None })
    }
}

/// The capture of a socket the traced process connects, or that was open at attach, until its
/// protocol is recognised: the largest, unless the user asked for less than the default cap.
fn client_first_cap(capture_bytes: u32) -> u32 {
    if capture_bytes >= zerotrace_abi::DEFAULT_PAYLOAD_CAP { zerotrace_abi::MAX_PAYLOAD as u32 } else { 0 }
}

/// Traces until a signal, the deadline, or every traced process has exited, sending spans
/// to `sink`.
pub async fn trace(args: &TraceArgs, targets: Targets, sink: Box<dyn SpanSink>, metrics_push: Option<(MetricsExporter, Duration)>) -> Result<()> {
    let Targets { pids, cgroup_ids, fleet } = targets;
    let rules = args.routes.iter().map(|r| crate::spans::routes::Rule::parse(r)).collect::<Result<Vec<_>, _>>()?;
    let sampler = crate::sampling::Sampler::from_env()?;
    if !matches!(&sampler, crate::sampling::Sampler::ParentBased(root) if root.keeps_all()) {
        eprintln!("zerotrace: sampling traces: {} (OTEL_TRACES_SAMPLER); RED metrics count every request", sampler.describe());
    }
    let settings = Settings {
        payload_cap: args.capture_bytes,
        client_first_cap: client_first_cap(args.capture_bytes),
        cgroup_filter: !args.cgroups.is_empty(),
        wakeup_bytes: WAKEUP_BYTES,
        hooks_only: args.hooks_only,
        go_goroutines: crate::probes::kernel_has_btf(),
        loop_gather: crate::probes::kernel_has_bpf_loop(),
        discover_execs: fleet.is_some(),
    };
    let go_goroutines = settings.go_goroutines;
    if !settings.loop_gather {
        eprintln!("zerotrace: Linux before 5.17 (no bpf_loop): vectored reads and writes are captured from their first 16 buffers only");
    }
    let (mut probes, ring) = Probes::load(&settings)?;
    // Kept open for the agent's life: the kernel counts while any such fd is open.
    let _hook_stats = if args.hook_stats {
        Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| {
            anyhow::anyhow!("--hook-stats: the kernel refused to count hook runs ({e}); it needs Linux 5.8 and CAP_SYS_ADMIN, or set kernel.bpf_stats_enabled=1 and drop the flag")
        })?)
    } else {
        None
    };
    let mut discovery = Discovery::default();
    for &pid in &pids {
        match discovery.add(&mut probes, pid) {
            Ok(()) => {}
            // Fleet mode lists processes, some of which exit before they are added.
            Err(_) if fleet.is_some() && !targets::is_alive(pid) => {}
            Err(err) => return Err(err),
        }
    }
    let mut fleet = fleet.map(|selectors| Fleet::new(selectors, discovery));
    let mut known_cgroups: std::collections::HashSet<u64> = cgroup_ids.iter().copied().collect();
    for &id in &cgroup_ids {
        probes.trace_cgroup(id)?;
    }
    probes.attach()?;
    let mut tls_pids = pids.clone();
    for dir in &args.cgroups {
        tls_pids.extend(targets::cgroup_pids(dir));
    }
    let mut tls = TlsProbes::new(args.tls_scope);
    let mut runtimes = RuntimeProbes::default();
    for &pid in &tls_pids {
        tls.attach_process(&mut probes, pid);
        runtimes.attach_process(&mut probes, pid);
        probes.adopt_open_sockets(pid, client_first_cap(args.capture_bytes) as u16);
    }
    eprintln!(
        "zerotrace: tracing {} process(es){}{} — Ctrl-C to stop",
        pids.len(),
        if args.cgroups.is_empty() { String::new() } else { format!(" and {} cgroup(s)", args.cgroups.len()) },
        if args.hooks_only { " (--hooks-only: hooks attached, nothing captured)" } else { "" }
    );

    let stats = Arc::new(ExportStats::default());
    let (tx, rx) = mpsc::channel(EXPORT_QUEUE);
    let exporter = tokio::spawn(export::run(rx, sink, stats.clone()));
    // SAFETY: the RingBuf owns its map fd and is moved into the AsyncFd, which drops it; the fd
    // stays open for as long as it is registered.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }.map_err(|e| anyhow::anyhow!("watching the ring buffer: {e}"))?;
    let mut pipeline = Pipeline::new(ProcHost, Clock::now());
    pipeline.db_options.keep_literals = args.keep_sql_literals;
    pipeline.routes = crate::spans::routes::Routes::new(rules);
    pipeline.client_first_cap = client_first_cap(args.capture_bytes) as u16;
    for &pid in &pids {
        pipeline.preload_resource(pid);
    }
    for dir in &args.cgroups {
        targets::cgroup_pids(dir).into_iter().for_each(|p| pipeline.preload_resource(p));
    }
    let traced = tls_pids.iter().copied().collect();
    let mut budget = args.overhead_budget.map(crate::budget::Budget::new);
    if let Some(percent) = args.overhead_budget {
        let measured = !probes.program_runs().is_empty() || args.hook_stats || std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1");
        eprintln!(
            "zerotrace: overhead budget {percent}% of each traced process's CPU time; the kernel programs' share {}",
            if measured { "measured by the kernel" } else { "estimated at 1 µs a record (--hook-stats or kernel.bpf_stats_enabled=1 measure it)" }
        );
    }
    let mut user = UserProbes { tls, traced, runtimes, go_goroutines, first_cap: client_first_cap(args.capture_bytes) as u16 };
    let listen = args.metrics_listen.or(args.prometheus_port.map(|port| std::net::SocketAddr::from(([0, 0, 0, 0], port))));
    // RED metrics are counted only when something reads them: counting costs every span.
    let red = (listen.is_some() || metrics_push.is_some()).then(|| Arc::new(std::sync::Mutex::new(RedMetrics::new(now_unix_ns()))));
    let mut self_metrics = match listen {
        Some(addr) => {
            let mut metrics = SelfMetrics::new();
            if let Some(red) = &red {
                metrics.register_collector(Box::new(crate::red::prometheus::RedCollector(red.clone())));
            }
            crate::self_metrics::serve(addr, metrics.page()).await?;
            eprintln!("zerotrace: own metrics and RED metrics on http://{addr}/metrics");
            Some(metrics)
        }
        None => None,
    };
    let push_every = metrics_push.as_ref().map_or(Duration::from_secs(3600), |(_, every)| *every);
    let mut push_tick = tokio::time::interval_at(tokio::time::Instant::now() + push_every, push_every);
    let (push_tx, push_task) = match metrics_push {
        Some((mut exporter, _)) => {
            // Latest totals only: a push still in flight makes the next one wait its turn.
            let (tx, mut rx) = mpsc::channel::<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest>(1);
            let task = tokio::spawn(async move {
                while let Some(request) = rx.recv().await {
                    exporter.export(request).await;
                }
            });
            (Some(tx), Some(task))
        }
        None => (None, None),
    };
    let host_name = process::host_name();
    let started_unix_ns = now_unix_ns();
    user.recognised(&mut pipeline, &mut probes);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut drain = tokio::time::interval(DRAIN_PERIOD);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    let deadline = args.duration.map(|s| Instant::now() + Duration::from_secs(s));
    let mut live: Vec<u32> = pids.clone();
    // Whether a signal (rather than --duration or the targets' exit) started the shutdown.
    let mut signalled = false;
    // The last drain stopped with records left (`DRAIN_BATCH`): go on at once, after a look
    // at the timers and signals.
    let mut backlog = false;
    // Exits noticed while a backlog was read, handled once it is.
    let mut exits_pending = false;

    loop {
        let mut exits_due = false;
        // In this order: signals, then the timed work, then reading (which a busy host keeps
        // ready), so a backlog never holds back the once-a-second work or a stop.
        tokio::select! {
            biased;
            _ = sigint.recv() => {
                signalled = true;
                break;
            }
            _ = sigterm.recv() => {
                signalled = true;
                break;
            }
            _ = push_tick.tick(), if push_tx.is_some() => {
                if let (Some(tx), Some(red)) = (&push_tx, &red) {
                    let _ = tx.try_send(metrics_request(red, (&probes, &pipeline, &user, &stats, budget.as_ref()), &host_name, started_unix_ns));
                }
            }
            _ = housekeeping.tick() => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                user.traced.retain(|&pid| targets::is_alive(pid));
                if let Some(budget) = budget.as_mut() {
                    review_budget(budget, &mut probes, &mut pipeline);
                }
                if let Some(metrics) = self_metrics.as_mut() {
                    metrics.update(&reading(&probes, &pipeline, &stats, budget.as_ref()), &levels(&probes, &user, &stats, budget.as_ref()));
                }
                rescan_cgroups(&args.cgroups, &mut known_cgroups, &mut probes);
                for pid in args.cgroups.iter().flat_map(|dir| targets::cgroup_pids(dir)) {
                    user.traced.insert(pid);
                    if !user.tls.knows(pid) {
                        user.tls.process_started(&mut probes, pid);
                        user.runtimes.attach_process(&mut probes, pid);
                    }
                }
                user.tls.housekeeping(&mut probes);
                user.runtimes.housekeeping(&mut probes);
                exits_due = true;
                if let Some(red) = &red {
                    red.lock().unwrap_or_else(|e| e.into_inner()).forget_gone(targets::is_alive, push_every * 2 + Duration::from_secs(60));
                }
                let before = live.len();
                live.retain(|&p| targets::is_alive(p));
                if before > live.len() {
                    eprintln!("zerotrace: {} traced process(es) exited; {} still traced", before - live.len(), live.len());
                }
                if live.is_empty() && args.cgroups.is_empty() && !pids.is_empty() && fleet.is_none() {
                    eprintln!("zerotrace: every traced process has exited; stopping");
                    break;
                }
            }
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                guard.clear_ready();
            }
            _ = drain.tick() => {}
            // Yields to the runtime (a ready future would not): its timers and signals answer
            // only once the task has yielded and its cooperative budget is renewed.
            _ = tokio::task::yield_now(), if backlog => {}
        }
        if let Some(fleet) = fleet.as_mut() {
            for pid in fleet.relook_due(&mut probes) {
                user.started(pid, &mut probes, &mut pipeline);
            }
        }
        backlog = drain_ring(ring.get_mut(), &mut pipeline, &mut probes, &mut user, fleet.as_mut(), budget.as_mut(), DRAIN_BATCH);
        exits_pending |= exits_due;
        if backlog {
            // Spans are decided only once everything written so far is read: a delivery
            // decided between two partial drains could miss the send of the same message
            // still in the ring (and a duplicate would get a parent instead of links).
            continue;
        }
        if std::mem::take(&mut exits_pending) {
            // After draining: an exited process's last records are already in the ring.
            pipeline.remove_exited();
        }
        let mut spans = pipeline.tick(Instant::now());
        if let Some(red) = &red {
            red.lock().unwrap_or_else(|e| e.into_inner()).observe_all(&spans);
        }
        sample(&sampler, &pipeline, &mut spans, &stats);
        send(&tx, spans, &stats);
    }

    drain_ring(ring.get_mut(), &mut pipeline, &mut probes, &mut user, fleet.as_mut(), budget.as_mut(), usize::MAX);
    let mut spans = pipeline.flush();
    if let Some(red) = &red {
        red.lock().unwrap_or_else(|e| e.into_inner()).observe_all(&spans);
    }
    sample(&sampler, &pipeline, &mut spans, &stats);
    send(&tx, spans, &stats);
    drop(tx);
    // The last totals go with the last spans, within the same deadline (a push in flight
    // keeps the slot: then the totals it carries, a moment older, are the last).
    if let (Some(push_tx), Some(red)) = (push_tx, &red) {
        let _ = push_tx.try_send(metrics_request(red, (&probes, &pipeline, &user, &stats, budget.as_ref()), &host_name, started_unix_ns));
    }
    finish_export(exporter, push_task, Duration::from_secs(args.shutdown_timeout), (&mut sigint, &mut sigterm, signalled), &stats).await;
    report(&probes, &pipeline, &stats);
    if let Some(metrics) = self_metrics.as_mut() {
        metrics.update(&reading(&probes, &pipeline, &stats, budget.as_ref()), &levels(&probes, &user, &stats, budget.as_ref()));
    }
    probes.detach_all();
    Ok(())
}

/// Lets the sink export what is queued, for at most `deadline`, or until a second signal: the
/// first one (already received when `signalled`) asks for a clean stop, the second for an
/// immediate one.
/// `metrics`: the RED metrics push, given its last totals, finishes within the same deadline.
async fn finish_export(
    mut exporter: tokio::task::JoinHandle<()>,
    mut metrics: Option<tokio::task::JoinHandle<()>>,
    deadline: Duration,
    signals: (&mut tokio::signal::unix::Signal, &mut tokio::signal::unix::Signal, bool),
    stats: &ExportStats,
) {
    let (sigint, sigterm, mut signalled) = signals;
    let deadline = tokio::time::sleep(deadline);
    tokio::pin!(deadline);
    let why = {
        let done = async {
            let _ = (&mut exporter).await;
            if let Some(push) = metrics.as_mut() {
                let _ = push.await;
            }
        };
        tokio::pin!(done);
        loop {
            tokio::select! {
                _ = &mut done => return,
                _ = &mut deadline => break "export did not finish within the shutdown deadline (--shutdown-timeout)",
                _ = sigint.recv() => {}
                _ = sigterm.recv() => {}
            }
            if signalled {
                break "second signal";
            }
            signalled = true;
        }
    };
    exporter.abort();
    if let Some(push) = metrics {
        push.abort();
    }
    stats.abandon_pending();
    eprintln!("zerotrace: {why}: stopping now; {} queued span(s) dropped", stats.dropped_shutdown.load(Ordering::Relaxed));
}

/// The per-process uprobes: TLS libraries and runtimes.
struct UserProbes {
    tls: TlsProbes,
    /// The processes traced now, for the self-metrics: the ones found at start, forked from a
    /// traced one, or chosen by fleet mode; exited or released ones leave.
    traced: std::collections::HashSet<u32>,
    runtimes: RuntimeProbes,
    /// Go processes' plain socket calls are attributed to goroutines (kernel BTF).
    go_goroutines: bool,
    /// The capture of sockets found open in a process traced from now on.
    first_cap: u16,
}

impl UserProbes {
    /// A process traced from now on (fleet mode): its per-process probes, the sockets it
    /// already holds, its resource while it lives.
    fn started(&mut self, pid: u32, probes: &mut Probes, pipeline: &mut Pipeline<ProcHost>) {
        self.traced.insert(pid);
        self.tls.process_started(probes, pid);
        self.runtimes.process_started(probes, pid);
        probes.adopt_open_sockets(pid, self.first_cap);
        pipeline.preload_resource(pid);
    }

    /// Tells the pipeline and the probes what runtimes were recognised. A Go process's
    /// threads are no unit of work: its plain socket calls go by goroutine where the kernel
    /// allows, and the thread rule is off for whatever still comes by thread.
    fn recognised(&mut self, pipeline: &mut Pipeline<ProcHost>, probes: &mut Probes) {
        for (pid, runtime) in self.runtimes.take_recognised() {
            if runtime == Runtime::Go {
                pipeline.thread_rule_off(pid);
                if self.go_goroutines
                    && let Err(err) = probes.mark_go(pid)
                {
                    eprintln!("zerotrace: warning: {err:#}; pid {pid}'s plain socket calls are not linked by goroutine");
                }
            }
        }
    }
}

fn drain_ring(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    pipeline: &mut Pipeline<ProcHost>,
    probes: &mut Probes,
    user: &mut UserProbes,
    fleet: Option<&mut Fleet>,
    mut budget: Option<&mut crate::budget::Budget>,
    limit: usize,
) -> bool {
    let mut read = 0;
    while read < limit
        && let Some(item) = ring.next()
    {
        if let Some(budget) = budget.as_deref_mut() {
            budget.count(&item);
        }
        pipeline.record(&item);
        read += 1;
    }
    let effects = pipeline.take_effects();
    for ignore in effects.ignore_fds {
        // A verdict for a connection the fd no longer holds is dropped: nothing to do.
        let _ = probes.ignore_fd(ignore);
    }
    for recapture in effects.recapture {
        // Closed or reused meanwhile: the new connection has its own state.
        let _ = probes.recapture_fd(recapture);
    }
    for (tgid, fd, bytes) in effects.capture {
        // The socket may be closed by now: then there is nothing to capture anyway.
        let _ = probes.set_capture_cap(tgid, fd, bytes);
    }
    let mut released = Vec::new();
    if let Some(fleet) = fleet {
        for pid in effects.execs {
            if !fleet.exec_traced(probes, pid) {
                released.push(pid);
            }
        }
        for pid in effects.execs_untraced {
            if fleet.exec_untraced(probes, pid) {
                user.started(pid, probes, pipeline);
            }
        }
    }
    for pid in &released {
        user.traced.remove(pid);
    }
    for pid in effects.started {
        if released.contains(&pid) {
            continue;
        }
        user.traced.insert(pid);
        user.tls.process_started(probes, pid);
        user.runtimes.process_started(probes, pid);
    }
    for pid in effects.library_fields {
        user.runtimes.attach_library_fields(probes, pid);
    }
    for pid in effects.library_fields_done {
        user.runtimes.detach_library_fields(probes, pid);
    }
    user.recognised(pipeline, probes);
    read == limit
}

/// Keeps the spans of sampled traces (after the RED metrics counted them all).
fn sample(sampler: &crate::sampling::Sampler, pipeline: &Pipeline<ProcHost>, spans: &mut Vec<crate::pipeline::FinishedSpan>, stats: &ExportStats) {
    // The default keeps everything until a trace comes in marked "not sampled": no work.
    if sampler.keeps_all() || (sampler.drops_only_unsampled_parents() && !pipeline.has_unsampled_remote()) {
        return;
    }
    let before = spans.len();
    spans.retain(|f| sampler.sampled(&f.span.ids.trace_id, pipeline.remote_sampled(&f.span.ids.trace_id)));
    stats.not_sampled.fetch_add((before - spans.len()) as u64, Ordering::Relaxed);
}

fn send(tx: &mpsc::Sender<Vec<crate::pipeline::FinishedSpan>>, spans: Vec<crate::pipeline::FinishedSpan>, stats: &ExportStats) {
    if spans.is_empty() {
        return;
    }
    let n = spans.len() as u64;
    let counter = if tx.try_send(spans).is_ok() { &stats.queued } else { &stats.dropped_queue_full };
    counter.fetch_add(n, Ordering::Relaxed);
}

fn rescan_cgroups(dirs: &[PathBuf], known: &mut std::collections::HashSet<u64>, probes: &mut Probes) {
    for dir in dirs {
        for id in targets::cgroup_ids(dir).unwrap_or_default() {
            if known.insert(id) {
                let _ = probes.trace_cgroup(id);
            }
        }
    }
}

/// Once a second with `--overhead-budget`: each process's cost, and the capture it gets.
fn review_budget(budget: &mut crate::budget::Budget, probes: &mut Probes, pipeline: &mut Pipeline<ProcHost>) {
    let runs = probes.program_runs();
    let totals = crate::budget::Totals {
        agent_cpu_seconds: crate::self_metrics::Levels::own_usage().0,
        kernel_run_ns: (!runs.is_empty()).then(|| runs.iter().map(|(_, _, ns)| ns).sum()),
        process_cpu_seconds: &crate::budget::process_cpu_seconds,
    };
    for step in budget.review(&totals) {
        let name = process::executable_name(step.pid).unwrap_or_else(|| "gone".to_string());
        let head_only = step.mode.head_only();
        // The sockets it opens from now on (in the kernel), and those it has (the pipeline
        // caps each at its next read or write, and takes each out of the share or back).
        if let Err(err) = probes.set_head_only(step.pid, head_only) {
            eprintln!("zerotrace: warning: {err:#}");
        }
        pipeline.set_head_only(step.pid, head_only);
        pipeline.set_sampling(step.pid, step.mode.one_in());
        if !step.gone {
            eprintln!("zerotrace: pid {} ({name}): {}", step.pid, step.describe());
        }
    }
}

/// The OTLP metrics push: the RED histograms, and the agent's own figures as its own resource.
fn metrics_request(
    red: &std::sync::Mutex<RedMetrics>,
    (probes, pipeline, user, stats, budget): (&Probes, &Pipeline<ProcHost>, &UserProbes, &ExportStats, Option<&crate::budget::Budget>),
    host_name: &str,
    started_unix_ns: u64,
) -> opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    let now = now_unix_ns();
    let mut request = crate::red::otlp::request(&red.lock().unwrap_or_else(|e| e.into_inner()), host_name, now);
    request.resource_metrics.push(crate::self_metrics::otlp(&reading(probes, pipeline, stats, budget), &levels(probes, user, stats, budget), host_name, started_unix_ns, now));
    request
}

/// What the agent holds and costs now, for the self-metrics.
fn levels(probes: &Probes, user: &UserProbes, stats: &ExportStats, budget: Option<&crate::budget::Budget>) -> crate::self_metrics::Levels {
    let (cpu_seconds, resident_bytes) = crate::self_metrics::Levels::own_usage();
    let left = stats.exported.load(Ordering::Relaxed) + stats.dropped_export_failed.load(Ordering::Relaxed) + stats.dropped_shutdown.load(Ordering::Relaxed);
    crate::self_metrics::Levels {
        processes_traced: user.traced.len() as u64,
        processes_head_only: budget.map_or(0, |b| b.head_only() as u64),
        processes_sampled: budget.map_or(0, |b| b.sampled() as u64),
        export_queue_spans: stats.queued.load(Ordering::Relaxed).saturating_sub(left),
        cpu_seconds,
        resident_bytes,
        hooks: probes.program_runs(),
    }
}

/// Every counter the exit report prints, for the self-metrics.
fn reading(probes: &Probes, pipeline: &Pipeline<ProcHost>, stats: &ExportStats, budget: Option<&crate::budget::Budget>) -> crate::self_metrics::Reading {
    use crate::self_metrics::Metric::*;
    let s = pipeline.stats;
    let stitch = pipeline.stitch_stats();
    let mut out = vec![
        (Events, "", s.events),
        (Spans, "", s.spans),
        (Exported, "", stats.exported.load(Ordering::Relaxed)),
        (SpansDropped, "queue_full", stats.dropped_queue_full.load(Ordering::Relaxed)),
        (SpansDropped, "export_failed", stats.dropped_export_failed.load(Ordering::Relaxed)),
        (SpansDropped, "shutdown_deadline", stats.dropped_shutdown.load(Ordering::Relaxed)),
        (SpansDropped, "unlinked_backlog", s.dropped_unlinked),
        (SpansDropped, "not_sampled", stats.not_sampled.load(Ordering::Relaxed)),
        (EventsLost, "tls_record_without_socket", s.tls_without_socket),
        (RequestsWithoutSpan, "request_not_captured", s.answers_without_request),
        (RequestsWithoutSpan, "answered_in_another_protocol", s.answered_in_another_protocol),
        (RequestsWithoutSpan, "server_closed_unanswered", s.closed_unanswered),
        (RequestsWithoutSpan, "after_connection_close", s.after_close),
        (RequestsWithoutSpan, "connection_sampled_out", s.sampled_out),
        (Stitching, "stitched", stitch.stitched),
        (Stitching, "caller_not_seen", stitch.caller_not_seen),
        (Stitching, "caller_unplaced", stitch.caller_unplaced),
    ];
    out.extend(probes.loss_counters().into_iter().map(|(why, n)| (EventsLost, why, n)));
    if let Some(budget) = budget {
        out.extend(budget.steps().map(|(reason, n)| (BudgetSteps, reason, n)));
    }
    out
}

fn report(probes: &Probes, pipeline: &Pipeline<ProcHost>, stats: &ExportStats) {
    let costs = probes.program_costs();
    if !costs.is_empty() {
        let text: Vec<String> = costs.iter().map(|(name, runs, avg)| format!("{name} {runs} runs avg {avg} ns")).collect();
        eprintln!("zerotrace: probe cost (kernel.bpf_stats_enabled): {}", text.join("; "));
    }
    let lost: Vec<String> = probes.loss_counters().iter().filter(|(_, n)| *n > 0).map(|(why, n)| format!("{n} ({why})")).collect();
    let s = pipeline.stats;
    eprintln!(
        "zerotrace: {} events, {} bytes of records, {} spans, {} exported, {} not sampled; lost events: {}; spans dropped: {} (queue full), {} (export failed), {} (shutdown deadline), {} (unlinked backlog); TLS records without a known socket: {}",
        s.events,
        s.record_bytes,
        s.spans,
        stats.exported.load(Ordering::Relaxed),
        stats.not_sampled.load(Ordering::Relaxed),
        if lost.is_empty() { "none".to_string() } else { lost.join(", ") },
        stats.dropped_queue_full.load(Ordering::Relaxed),
        stats.dropped_export_failed.load(Ordering::Relaxed),
        stats.dropped_shutdown.load(Ordering::Relaxed),
        s.dropped_unlinked,
        s.tls_without_socket,
    );
    eprintln!(
        "zerotrace: requests without a span: {} (answered, but the request was not captured: beyond --capture-bytes in one large write, or sent before attach), {} (answered in another protocol), {} (server closed without answering), {} (sent after the server's Connection: close), {} (in flight at shutdown), {} (in flight when their connection left its process's sampled share)",
        s.answers_without_request,
        s.answered_in_another_protocol,
        s.closed_unanswered,
        s.after_close,
        pipeline.in_flight(),
        s.sampled_out,
    );
    let protocols: Vec<String> =
        pipeline.protocol_stats().iter().map(|(name, p)| format!("{name}: {} connection(s), {} request(s), {} resync(s)", p.connections, p.requests, p.resyncs)).collect();
    eprintln!("zerotrace: protocols — {}", if protocols.is_empty() { "none recognised".to_string() } else { protocols.join("; ") });
    eprintln!("zerotrace: client span parents — {}", pipeline.link_stats().summary());
    eprintln!("zerotrace: same-host callees — {}", pipeline.stitch_stats().summary());
    let consumers = pipeline.consumer_stats();
    if consumers.by_headers + consumers.by_identity + consumers.ambiguous + consumers.producer_not_seen > 0 {
        eprintln!("zerotrace: consumer spans — {}", consumers.summary());
    }
    let handed = pipeline.hand_off_stats();
    if handed.one + handed.several > 0 {
        eprintln!("zerotrace: messages handed to worker processes — {} named one delivered message, {} several (no parent)", handed.one, handed.several);
    }
}
