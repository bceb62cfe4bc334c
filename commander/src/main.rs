//! `ark-commander`: parses arguments, sets up logging, runs the command,
//! maps the error to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ark_link::memory::tune_allocator();
    let cli = ark_commander::cli::Cli::parse();
    ark_link::process::init_logging("info");
    match ark_commander::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ark-commander: {e:#}");
            ExitCode::FAILURE
        }
    }
}
