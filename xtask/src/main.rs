//! `cargo xtask setup | build-ebpf | test | bench | demo`.

mod bench;
mod build;
mod demo;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "zerotrace project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (idempotent): nightly rust-src, bpf-linker,
    /// Debian packages (nginx, curl, wrk), Python packages.
    Setup,
    /// Build the kernel programs into target/bpf/zerotrace-probes.o.
    BuildEbpf,
    /// Build everything, check formatting and clippy, and run the whole test suite (unit +
    /// integration, as root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure traced vs untraced throughput/latency and write docs/BENCHMARKS.md.
    Bench {
        /// Seconds per load run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Which benchmarks to run; each rewrites its own section of docs/BENCHMARKS.md.
        #[arg(long, value_enum, default_value_t = bench::Suite::All)]
        suite: bench::Suite,
        /// Fixed request rate (req/s) for the reference apps in the `agents` suite. The default
        /// is half of what the Flask app sustains untraced on a 2-core machine (~210 req/s,
        /// its backends sharing the cores); 1,000 would only measure saturation twice.
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// Build, start a small demo workload, trace it and print its traces.
    Demo,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::install(),
        Cmd::BuildEbpf => build::ebpf(),
        Cmd::Test { args } => {
            build::ebpf()?;
            build::checks()?;
            build::agent(false)?;
            util::run_tests(util::cargo().args(["test", "--workspace", "--no-fail-fast"]).args(&args).env("ZEROTRACE_BIN", util::root().join("target/debug/zerotrace")))
        }
        Cmd::Bench { seconds, suite, rate } => bench::run(seconds, suite, rate),
        Cmd::Demo => demo::run(),
    }
}
