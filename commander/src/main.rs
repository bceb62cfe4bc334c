//! `ark-commander`: parses arguments, sets up logging, runs the command,
//! maps the error to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ark_commander::cli::Cli::parse();
    // The demo prints its own story; an info-level log would drown it out.
    let default_level = match cli.cmd {
        ark_commander::cli::Cmd::Demo(_) => "warn",
        _ => "info",
    };
    ark_agent::process::init_logging(default_level);
    match ark_commander::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ark-commander: {e:#}");
            ExitCode::FAILURE
        }
    }
}
