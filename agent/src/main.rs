//! The `zerotrace` binary: parse the command line, run, and turn errors into one line and a
//! non-zero exit.

use clap::Parser;

/// The pipeline allocates small strings per span; glibc malloc showed up as ~20% of the
/// agent's CPU under load, mimalloc's thread-local free lists do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
