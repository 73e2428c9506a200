//! The `zerotrace` binary: parse the command line, run, and turn errors into one line and a
//! non-zero exit.

use zerotrace::cli::Command;

fn main() -> std::process::ExitCode {
    // Dispatch lives here, at the binary edge: `compare` runs the agent, so the agent must
    // not know about `compare`.
    let result = match zerotrace::config::parse() {
        Ok(cli) => match cli.command {
            Command::Run(args) => zerotrace::agent::run(args),
            Command::Compare(args) => zerotrace::compare::run(&args),
        },
        Err(err) => Err(err.into()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("zerotrace: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
