//! The `ferry` binary: parse the command line, set up diagnostics, run.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let (cli, matches) = cli::Cli::parse_with_matches();
    // Diagnostics go to stderr, filtered by RUST_LOG (warnings by default);
    // results and report lines are printed by the cli module.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only for a person watching; not in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    cli::run(cli, &matches)
}
