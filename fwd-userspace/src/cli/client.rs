//! The commands that ask the running daemon: `reload`, `status`, `dns`, `monitor`.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;

use super::args::{DaemonArgs, EXIT_BAD_INPUT};
use crate::{
    config::DEFAULT_SOCKET,
    control::{DeniedSample, ReloadReply},
};

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

pub(crate) fn request_reload(daemon: &DaemonArgs, json: bool) -> anyhow::Result<ExitCode> {
    let socket = daemon.socket();
    let reply = ask_reload(&socket)?;
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
    follow_samples(&socket, json, count)?;
    Ok(ExitCode::SUCCESS)
}

/// `fwd monitor`: prints denied-packet samples from the daemon's control socket.
fn follow_samples(socket: &Path, json: bool, count: Option<u64>) -> anyhow::Result<()> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is `fwd run` running? fwd monitor needs root)",
            socket.display()
        )
    })?;
    stream.write_all(b"monitor\n")?;
    let mut seen = 0;
    if !json {
        eprintln!(
            "fwd monitor: denied packets (sampled, at most {} per second per CPU); Ctrl-C stops",
            fwd_common::FwdConfig::DEFAULT_SAMPLES_PER_SECOND
        );
    }
    let stdout = std::io::stdout();
    for line in std::io::BufReader::new(stream).lines() {
        let line = line?;
        let sample = serde_json::from_str::<DeniedSample>(&line).ok();
        let mut out = stdout.lock();
        match &sample {
            Some(sample) if !json => writeln!(out, "{sample}")?,
            _ => writeln!(out, "{line}")?,
        }
        out.flush()?;
        if sample.is_some() {
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                break;
            }
        }
    }
    Ok(())
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
