//! Command-line interface. The shapes here are a contract that users' scripts rely on.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "zerotrace", version, about = "Zero-code distributed tracing with eBPF: unmodified processes in, OpenTelemetry traces out")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace processes (and the children they fork) or containers, and emit spans.
    Run(RunArgs),
    /// Compare zerotrace's spans with a language agent's: live (trace the targets while a
    /// built-in OTLP receiver takes the agent's spans) or offline (two recorded span files).
    Compare(CompareArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Exporter {
    /// A human-readable tree per trace on stdout.
    Terminal,
    /// OTLP to a collector (gRPC or HTTP/protobuf).
    Otlp,
    /// One span per line in OTLP JSON, to --output.
    Jsonl,
    /// Trace but export nothing (benchmarks).
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OtlpProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// What to trace and how: shared by `run` and `compare`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TraceArgs {
    /// Read options from this YAML file: its keys are these long flags (`exe: [nginx]`,
    /// `capture-bytes: 512`, `exporter: otlp`), plus an `env` map of variables
    /// (`OTEL_TRACES_SAMPLER: traceidratio`). A flag on the command line wins over the file; so
    /// does a variable already set, over the file's `env` and over the file's `exporter`,
    /// `otlp-endpoint` and `otlp-protocol`.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Process to trace, with its threads, its existing descendants and the children it forks
    /// later. Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// cgroup v2 directory (a container) whose processes to trace, e.g.
    /// /sys/fs/cgroup/unified/system.slice/docker-<id>.scope. Repeatable.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<PathBuf>,
    /// Fleet mode (no --pid, no --cgroup): every process of the host is traced, the ones
    /// started later too, unless the selectors below narrow it. Each kind of selector given
    /// must match; repeated values of one kind match when any does. Executable path or name,
    /// a shell glob ('nginx', 'python3*', '/opt/app/*').
    #[arg(long = "exe", value_name = "GLOB", help_heading = "Fleet mode")]
    pub exe: Vec<String>,
    /// Never trace executables whose path or name matches (wins over every selector).
    #[arg(long = "exclude-exe", value_name = "GLOB", help_heading = "Fleet mode")]
    pub exclude_exe: Vec<String>,
    /// Processes listening on this TCP port (checked at start, at exec, and 1 s and 5 s after an
    /// exec: a server listens after it starts).
    #[arg(long = "port", value_name = "PORT", help_heading = "Fleet mode")]
    pub ports: Vec<u16>,
    /// Processes in a container (a container id in their cgroup path).
    #[arg(long, help_heading = "Fleet mode")]
    pub container: bool,
    /// Processes of Kubernetes pods in a namespace matching this glob (read from the pod's
    /// service-account namespace file; no API access).
    #[arg(long = "k8s-namespace", value_name = "GLOB", help_heading = "Fleet mode")]
    pub k8s_namespace: Vec<String>,
    /// Processes of Kubernetes pods whose name matches this glob.
    #[arg(long = "k8s-pod", value_name = "GLOB", help_heading = "Fleet mode")]
    pub k8s_pod: Vec<String>,
    /// Never trace processes of pods in a namespace matching this glob (e.g. kube-system).
    #[arg(long = "exclude-k8s-namespace", value_name = "GLOB", help_heading = "Fleet mode")]
    pub exclude_k8s_namespace: Vec<String>,
    /// A path template for HTTP span names, `url.template` and the RED metrics, when the
    /// path matches it: `{name}` or `*` for one segment, `**` for the rest, e.g.
    /// /merchant/{id}/status. Repeatable; the first that matches wins over the inferred one.
    #[arg(long = "route", value_name = "TEMPLATE")]
    pub routes: Vec<String>,
    /// Fleet mode survey: print every process of the host, whether it would be traced and
    /// why, then exit without tracing.
    #[arg(long, help_heading = "Fleet mode")]
    pub list: bool,
    /// Bytes of each read/write to capture (1..=4096). Larger heads are parsed from their
    /// start line only. A connection the traced process opens, or that was open when the agent
    /// attached, copies up to 4096 bytes until its protocol is recognised (its first request or
    /// messages, whole), unless this is set below its default.
    #[arg(long, default_value_t = zerotrace_abi::DEFAULT_PAYLOAD_CAP, value_parser = clap::value_parser!(u32).range(1..=zerotrace_abi::MAX_PAYLOAD as i64))]
    pub capture_bytes: u32,
    /// Put SQL on database spans as sent, literals included. By default every literal is
    /// replaced by `?`, because literals can hold personal data and secrets.
    #[arg(long)]
    pub keep_sql_literals: bool,
    /// Which processes trap on the TLS probes. `file` (default): every process that maps the
    /// probed library, so children forked or exec'd later are covered from their first call;
    /// untraced processes using the same file pay a trap (~1 µs) per SSL call, then are
    /// filtered out. `process`: only the traced processes; new ones get probes once the agent
    /// sees them (a few ms), so a short-lived child (curl run from a traced shell) can be missed.
    #[arg(long, value_enum, default_value_t = TlsScope::File)]
    pub tls_scope: TlsScope,
    /// Stop after this many seconds (flushing first). Default: until SIGINT/SIGTERM.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Serve the agent's own metrics (events, spans, and every loss by reason, as in the exit
    /// report) in the Prometheus text format at http://ADDR/metrics, e.g. 127.0.0.1:9464, and a
    /// liveness probe at http://ADDR/healthz (200 while the agent reads its events, 503 once it
    /// has not for 10 s).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The same page on 0.0.0.0:PORT (with the RED histograms, as for --metrics-listen).
    #[arg(long, value_name = "PORT", conflicts_with = "metrics_listen")]
    pub prometheus_port: Option<u16>,
    /// On SIGINT/SIGTERM or the end of --duration: at most this many seconds to export what is
    /// queued; then what is left is counted as dropped and the exit report printed. A second
    /// signal stops at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout: u64,
    /// Per traced process, the most tracing may cost it, as a percentage of its own CPU time
    /// (the kernel programs' run time and the agent's, by its share of the records; the hooks'
    /// fixed floor is not counted). A process over it for 2 s copies heads only (256 bytes a
    /// read or write: every request keeps its span and the RED metrics stay exact; spans say
    /// `zerotrace.capture.head_only`); still over, it captures one connection in N (spans say
    /// `zerotrace.capture.one_in=N` and count N times in the RED metrics). It steps back up
    /// once the lighter level would cost under half the budget for 10 s.
    #[arg(long, value_name = "PERCENT", value_parser = budget_percent)]
    pub overhead_budget: Option<f64>,
    /// Have the kernel count each hook's runs and time while the agent runs (BPF_ENABLE_STATS),
    /// for `zerotrace_hook_runs_total` and `zerotrace_hook_run_seconds_total` on the metrics
    /// page and the probe costs in the exit report. Costs two clock reads per hook run.
    #[arg(long)]
    pub hook_stats: bool,
    /// Attach every hook (tracepoints, TLS uprobes) as usual, but have each program return as
    /// soon as it runs: no data is captured and no span is made. For measuring what the hooks
    /// alone cost the traced processes (`cargo xtask bench` reports it as the floor).
    #[arg(long)]
    pub hooks_only: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsScope {
    #[default]
    File,
    Process,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Where spans go. Default: $OTEL_TRACES_EXPORTER (otlp, console, none), else terminal.
    #[arg(long, value_enum)]
    pub exporter: Option<Exporter>,
    /// OTLP endpoint. Default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, $OTEL_EXPORTER_OTLP_ENDPOINT,
    /// else http://localhost:4317 (grpc) or http://localhost:4318 (http/protobuf).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol. Default: $OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, $OTEL_EXPORTER_OTLP_PROTOCOL,
    /// else http/protobuf.
    #[arg(long, value_enum)]
    pub otlp_protocol: Option<OtlpProtocol>,
    /// Output file for --exporter jsonl.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub trace: TraceArgs,
    /// Offline: zerotrace's recorded spans (OTLP JSON or jsonl, e.g. from --exporter jsonl).
    #[arg(long, value_name = "FILE", requires = "agent_spans", conflicts_with_all = ["pids", "cgroups"])]
    pub zerotrace_spans: Option<PathBuf>,
    /// Offline: the language agent's recorded spans (OTLP JSON or jsonl, e.g. from the
    /// Collector's file exporter).
    #[arg(long, value_name = "FILE", requires = "zerotrace_spans")]
    pub agent_spans: Option<PathBuf>,
    /// Live: address the built-in OTLP receiver listens on. Use 0.0.0.0 for agents in
    /// containers.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    pub otlp_listen: std::net::IpAddr,
    /// Live: OTLP/gRPC port of the built-in receiver.
    #[arg(long, value_name = "PORT", default_value_t = 4317)]
    pub otlp_grpc_port: u16,
    /// Live: OTLP/HTTP port of the built-in receiver (protobuf or JSON bodies).
    #[arg(long, value_name = "PORT", default_value_t = 4318)]
    pub otlp_http_port: u16,
    /// Live: seconds to keep receiving after tracing stops, for the agent's last batches.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    pub settle: u64,
    /// Live: also save both sides' spans as jsonl (zerotrace.jsonl, agent.jsonl) into DIR, for
    /// offline comparisons later.
    #[arg(long, value_name = "DIR")]
    pub save_spans: Option<PathBuf>,
    /// Write the self-contained HTML report (waterfalls side by side) here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Write the figures as JSON here (for CI gates and scripts).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn budget_percent(value: &str) -> Result<f64, String> {
    match value.trim_end_matches('%').parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 100.0 => Ok(p),
        _ => Err(format!("{value} is not a percentage between 0 and 100, e.g. 2 or 0.5")),
    }
}
