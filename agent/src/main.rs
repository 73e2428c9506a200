//! The `zerotrace` binary: parse the command line, run, and turn errors into one line and a
//! non-zero exit.

use clap::Parser;

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
