use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // Quiet by default; FWD_LOG (e.g. "debug", "fwd=trace") turns it up.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FWD_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    fwd::cli::main(fwd::cli::Cli::parse())
}
