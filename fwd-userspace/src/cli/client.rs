//! The commands that ask the running daemon: `reload`, `status`, `dns`, `monitor`.

use std::process::ExitCode;

use super::args::{DaemonArgs, EXIT_BAD_INPUT};

pub(crate) fn status(daemon: &DaemonArgs, json: bool) -> anyhow::Result<ExitCode> {
    show::<crate::daemon::control::StatusReply>(daemon, json, "status")
}

pub(crate) fn dns(daemon: &DaemonArgs, json: bool) -> anyhow::Result<ExitCode> {
    show::<crate::daemon::dns::DnsReply>(daemon, json, "dns")
}

/// Asks the daemon `command` and prints the reply, as text or as the JSON it came in.
fn show<T>(daemon: &DaemonArgs, json: bool, command: &str) -> anyhow::Result<ExitCode>
where
    T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Display,
{
    let socket = daemon.socket();
    let reply: T = crate::daemon::control::ask(&socket, command)?;
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        println!("{reply}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn request_reload(daemon: &DaemonArgs, json: bool) -> anyhow::Result<ExitCode> {
    let socket = daemon.socket();
    let reply = crate::daemon::control::reload(&socket)?;
    if json {
        println!("{}", serde_json::to_string(&reply)?);
        return Ok(if reply.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_BAD_INPUT)
        });
    }
    for warning in &reply.warnings {
        eprintln!("warning: {warning}");
    }
    match reply.error {
        None => {
            println!(
                "reloaded: generation {} in force, {} rules (compile {:.1} ms, fill {:.1} ms, swap {:.1} ms)",
                reply.generation, reply.rules, reply.compile_ms, reply.fill_ms, reply.swap_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(error) => {
            eprintln!("{error}");
            eprintln!(
                "fwd: reload rejected; generation {} stays in force",
                reply.generation
            );
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

pub(crate) fn monitor(
    daemon: &DaemonArgs,
    json: bool,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let socket = daemon.socket();
    crate::daemon::control::monitor(&socket, json, count)?;
    Ok(ExitCode::SUCCESS)
}
