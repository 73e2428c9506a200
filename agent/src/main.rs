//! The `zerotrace` binary: parse the command line, run, and turn errors into one line and a
//! non-zero exit.

use clap::Parser;

/// mimalloc instead of glibc's malloc: every span is a few dozen short-lived allocations, and
/// glibc's free/consolidate paths were about a third of the pipeline's time (perf, replay).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = zerotrace::cli::Cli::parse();
    match zerotrace::agent::main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("zerotrace: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
