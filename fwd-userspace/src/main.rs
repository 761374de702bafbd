use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = fwd::cli::Cli::parse();
    // Quiet by default (info: what changed, warnings, errors); FWD_LOG (e.g. "debug",
    // "fwd=trace") turns it up. The programs' own records (aya-log) arrive through the
    // `log` crate, which `init` bridges into tracing. FWD_LOG_FORMAT=json writes one JSON
    // object per line, for fleets that ship logs.
    let filter = || EnvFilter::try_from_env("FWD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    match std::env::var("FWD_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_current_span(false).init(),
        Ok("text") | Err(_) if std::env::var_os("JOURNAL_STREAM").is_some() => {
            // Under systemd the journal stamps each line itself and shows no colours.
            builder.with_ansi(false).without_time().init();
        }
        Ok("text") | Err(_) => builder.init(),
        Ok(other) => {
            builder.init();
            tracing::warn!(
                "FWD_LOG_FORMAT={other} is not a log format (json or text); writing text"
            );
        }
    }
    if !cli.is_daemon() {
        // `fwd check | head` ends quietly when head closes the pipe, like other tools.
        // SAFETY: setting a signal's disposition to its default before any threads start.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    fwd::cli::main(cli)
}
