//! The commands that ask the running daemon: `reload`, `status`, `dns`, `monitor`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;

use super::args::{DaemonArgs, EXIT_BAD_INPUT};
use crate::{config::DEFAULT_SOCKET, control::ReloadReply};

pub(crate) fn status(daemon: &DaemonArgs, json: bool) -> anyhow::Result<ExitCode> {
    show::<crate::control::StatusReply>(daemon, json, "status")
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
    let reply: T = ask(&socket, command)?;
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        println!("{reply}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `fwd reload --dry-run`: what a reload would do; exit 0 no change, 1 changes, 2 rejected.
pub(crate) fn dry_run(daemon: &DaemonArgs, json: bool) -> anyhow::Result<ExitCode> {
    let reply: crate::control::DryRunReply = ask(&daemon.socket(), "dry-run")?;
    let code = match (&reply.error, reply.changes.is_empty()) {
        (Some(_), _) => ExitCode::from(EXIT_BAD_INPUT),
        (None, true) => ExitCode::SUCCESS,
        (None, false) => ExitCode::from(1),
    };
    if json {
        println!("{}", serde_json::to_string(&reply)?);
        return Ok(code);
    }
    for warning in &reply.warnings {
        eprintln!("warning: {warning}");
    }
    if let Some(error) = &reply.error {
        eprintln!("{error}");
        eprintln!(
            "fwd: a reload would be rejected; generation {} stays in force",
            reply.generation
        );
        return Ok(code);
    }
    super::diff::print_changes(&reply.changes);
    println!(
        "dry run: the policy on disk compiles ({} rules) and fits the tables; {} rules would change; generation {} stays in force",
        reply.rules,
        reply.changes.len(),
        reply.generation
    );
    Ok(code)
}

/// `60s`, `5m`, `1h` or plain seconds, at least 1.
pub(crate) fn parse_seconds(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a time such as 60s, 5m or 1h"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{text}`: the unit is s, m or h (60s, 5m, 1h)")),
    };
    let seconds = n.saturating_mul(scale);
    if seconds == 0 {
        return Err("the time to confirm must be at least 1s".into());
    }
    Ok(seconds)
}

/// `fwd confirm`: keeps a `--confirm` reload.
pub(crate) fn confirm(daemon: &DaemonArgs, json: bool) -> anyhow::Result<ExitCode> {
    let reply: crate::control::ConfirmReply = ask(&daemon.socket(), "confirm")?;
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    } else if reply.ok {
        println!("{}", reply.message);
    } else {
        eprintln!("fwd: {}", reply.message);
    }
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub(crate) fn request_reload(
    daemon: &DaemonArgs,
    json: bool,
    confirm: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let socket = daemon.socket();
    let reply: ReloadReply = match confirm {
        Some(seconds) => ask(&socket, &format!("reload-confirm {seconds}"))?,
        None => ask_reload(&socket)?,
    };
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
            if let Some(seconds) = confirm {
                println!(
                    "not confirmed yet: run `fwd confirm` within {seconds} s to keep it; otherwise the policy before comes back by itself"
                );
            }
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

/// Sends one command and reads the one-line JSON answer.
pub(crate) fn ask<T: serde::de::DeserializeOwned>(
    socket: &Path,
    command: &str,
) -> anyhow::Result<T> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is `fwd run` running? fwd {command} needs root)",
            socket.display()
        )
    })?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line)
        .with_context(|| format!("unexpected answer from the daemon: {line:?}"))
}

/// `fwd reload`: asks the daemon to reload; the reply says whether it was rejected.
pub(crate) fn ask_reload(socket: &Path) -> anyhow::Result<ReloadReply> {
    ask(socket, "reload")
}

/// The socket path named by the config at `config_path`, read without validating the rest
/// of the file; the default if the file or the key is missing.
pub(crate) fn socket_path_lenient(config_path: &Path) -> PathBuf {
    let named = std::fs::read_to_string(config_path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("control_socket")?.as_str().map(PathBuf::from));
    match named {
        Some(p) if p.is_relative() => config_path.parent().unwrap_or(Path::new(".")).join(p),
        Some(p) => p,
        None => PathBuf::from(DEFAULT_SOCKET),
    }
}
