//! The root-only control socket (`/run/fwd/control.sock`) and the denied-packet samples it
//! streams to `fwd monitor`.
//!
//! Protocol: the client sends one command line; the daemon answers with JSON lines.
//! - `monitor`: one `DeniedSample` object per line until the client hangs up.
//! - `reload`: one `ReloadReply` object once the reload is done or rejected.
//! - `status`: one `StatusReply` object.
//! - `dns`: one `DnsReply` object (learned names).

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use fwd_common::{DeniedEvent, Reason};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};
use tracing::{debug, info, warn};

use crate::compile::MapImage;

pub use crate::config::DEFAULT_SOCKET;

/// The answer to `reload`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReloadReply {
    pub ok: bool,
    /// The generation now in force (the old one if the reload was rejected).
    pub generation: u32,
    pub rules: usize,
    /// Why the reload was rejected (`file:line:col: message` for bad input).
    pub error: Option<String>,
    pub warnings: Vec<String>,
    /// How long the accepted reload took: reading and compiling the policy, filling the
    /// inactive slot, and flipping to it (with the grace period and clearing the old slot).
    #[serde(default)]
    pub compile_ms: f64,
    #[serde(default)]
    pub fill_ms: f64,
    #[serde(default)]
    pub swap_ms: f64,
}

/// The answer to `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub generation: u32,
    pub rules: usize,
    pub attached: Vec<AttachedStatus>,
    /// Where programs, links and maps are pinned.
    pub pin_dir: Option<PathBuf>,
    /// (map, entries, capacity)
    pub maps: Vec<(String, usize, u32)>,
    pub flows_active: Option<u64>,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    pub last_reload_unix: i64,
    pub action: String,
}

/// One program in place, as `fwd status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedStatus {
    pub interface: String,
    pub program: String,
    /// "xdp", "tc_ingress" or "tc_egress".
    pub hook: String,
    /// "attached" (by this run), "adopted" (an earlier run's pinned link, same program
    /// version) or "replaced" (an earlier run's pinned link, program version changed).
    pub origin: String,
    /// Stays attached when the daemon stops or dies.
    pub pinned: bool,
}

impl std::fmt::Display for StatusReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "policy generation {} ({} rules, {}), reloads: {} ok, {} rejected",
            self.generation, self.rules, self.action, self.reloads_ok, self.reloads_error
        )?;
        for a in &self.attached {
            writeln!(
                f,
                "attached: {:<10} {:<10} {:<10} {}{}",
                a.interface,
                a.hook,
                a.program,
                a.origin,
                if a.pinned { ", pinned" } else { "" }
            )?;
        }
        if let Some(dir) = &self.pin_dir {
            writeln!(f, "pins: {}", dir.display())?;
        }
        for (map, entries, capacity) in &self.maps {
            let fill = 100.0 * *entries as f64 / f64::from((*capacity).max(1));
            writeln!(
                f,
                "map {map:<6} {entries:>9} / {capacity:<9} ({fill:.1}% full)"
            )?;
        }
        match self.flows_active {
            Some(n) => write!(f, "live flows: {n}"),
            None => write!(f, "live flows: unknown"),
        }
    }
}

/// What a control client asks the daemon, with the channel for the answer.
pub enum Request {
    Reload(tokio::sync::oneshot::Sender<ReloadReply>),
    Status(tokio::sync::oneshot::Sender<StatusReply>),
    Dns(tokio::sync::oneshot::Sender<super::dns::DnsReply>),
}

/// A denied packet as `fwd monitor` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedSample {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    pub interface: String,
    /// "out" (from the protected network) or "in".
    pub direction: String,
    pub protocol: String,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub src_port: u16,
    pub dst_port: u16,
    pub reason: String,
    /// For a remote whose address some rules cover: the rule of that address that comes
    /// closest (same protocol first), as `vendor/rule`.
    pub nearest_rule: Option<String>,
}

impl std::fmt::Display for DeniedSample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = humantime_ms(self.time_ms);
        let end = |a: Option<IpAddr>, port: u16| match a {
            None => "?".to_string(),
            Some(a) if port == 0 => a.to_string(),
            Some(IpAddr::V6(a)) => format!("[{a}]:{port}"),
            Some(a) => format!("{a}:{port}"),
        };
        write!(
            f,
            "{time} {:<8} {:<3} {:<6} {} -> {} {}",
            self.interface,
            self.direction,
            self.protocol,
            end(self.src, self.src_port),
            end(self.dst, self.dst_port),
            self.reason
        )?;
        if let Some(rule) = &self.nearest_rule {
            write!(f, " (nearest rule: {rule})")?;
        }
        Ok(())
    }
}

/// `2026-11-21T10:04:05.123Z` from Unix milliseconds.
fn humantime_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let date = crate::policy::Date::from_days_since_epoch((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

fn protocol_name(p: u8) -> String {
    match p {
        fwd_common::proto::TCP => "tcp".into(),
        fwd_common::proto::UDP => "udp".into(),
        fwd_common::proto::ICMP => "icmp".into(),
        fwd_common::proto::ICMPV6 => "icmpv6".into(),
        other => format!("ip{other}"),
    }
}

fn addr(family: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match family {
        4 => Some(IpAddr::from([bytes[12], bytes[13], bytes[14], bytes[15]])),
        6 => Some(IpAddr::from(bytes)),
        _ => None,
    }
}

/// Turns a kernel sample into what `fwd monitor` shows; `image` is the active policy.
pub fn describe(event: &DeniedEvent, image: Option<&MapImage>, mono_now_ns: u64) -> DeniedSample {
    let age = Duration::from_nanos(mono_now_ns.saturating_sub(event.ts_ns));
    let time_ms = SystemTime::now()
        .checked_sub(age)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let interface = nix::net::if_::if_indextoname(event.ifindex)
        .ok()
        .and_then(|n| n.into_string().ok())
        .unwrap_or_else(|| format!("if{}", event.ifindex));
    let nearest_rule = (event.class != DeniedEvent::NO_CLASS)
        .then(|| image.and_then(|i| nearest(i, event.class, event.protocol)))
        .flatten();
    DeniedSample {
        time_ms,
        interface,
        direction: if event.inbound != 0 { "in" } else { "out" }.into(),
        protocol: protocol_name(event.protocol),
        src: addr(event.family, event.src),
        dst: addr(event.family, event.dst),
        src_port: event.src_port,
        dst_port: event.dst_port,
        reason: Reason::ALL
            .get(event.reason as usize)
            .map_or("unknown", |r| r.label())
            .into(),
        nearest_rule,
    }
}

/// A rule of `class` for `protocol` (or, failing that, any rule of the class).
fn nearest(image: &MapImage, class: u32, protocol: u8) -> Option<String> {
    let mut fallback = None;
    for entry in image.ports.iter().filter(|e| e.key.class() == class) {
        let rule = image.rule(entry.verdict.rule)?;
        let name = rule.rule_ref().to_string();
        if entry.key.protocol == protocol {
            return Some(name);
        }
        fallback.get_or_insert(name);
    }
    fallback
}

/// Binds the control socket (root only: mode 0600 in a 0700 directory), replacing a stale
/// socket file.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "{}: another fwd daemon is listening there; stop it first",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    info!(socket = %path.display(), "control socket ready");
    Ok(listener)
}

/// Serves control connections until the task is dropped.
pub async fn serve(
    listener: UnixListener,
    samples: broadcast::Sender<DeniedSample>,
    requests: tokio::sync::mpsc::Sender<Request>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let samples = samples.subscribe();
                let requests = requests.clone();
                tokio::spawn(async move {
                    if let Err(err) = handle(stream, samples, requests).await {
                        debug!(%err, "control connection ended");
                    }
                });
            }
            Err(err) => {
                warn!(%err, "accepting a control connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(
    stream: UnixStream,
    mut samples: broadcast::Receiver<DeniedSample>,
    requests: tokio::sync::mpsc::Sender<Request>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let command = lines.next_line().await?.unwrap_or_default();
    match command.trim() {
        "reload" => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            requests.send(Request::Reload(tx)).await?;
            let mut line = serde_json::to_string(&rx.await?)?;
            line.push('\n');
            write.write_all(line.as_bytes()).await?;
            Ok(())
        }
        "status" => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            requests.send(Request::Status(tx)).await?;
            let mut line = serde_json::to_string(&rx.await?)?;
            line.push('\n');
            write.write_all(line.as_bytes()).await?;
            Ok(())
        }
        "dns" => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            requests.send(Request::Dns(tx)).await?;
            let mut line = serde_json::to_string(&rx.await?)?;
            line.push('\n');
            write.write_all(line.as_bytes()).await?;
            Ok(())
        }
        "monitor" => loop {
            match samples.recv().await {
                Ok(sample) => {
                    let mut line = serde_json::to_string(&sample)?;
                    line.push('\n');
                    write.write_all(line.as_bytes()).await?;
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = serde_json::json!({ "lagged": n });
                    write.write_all(format!("{note}\n").as_bytes()).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        },
        other => {
            let reply = serde_json::json!({
                "error": format!("unknown command `{other}`; this daemon knows: dns, monitor, reload, status")
            });
            write.write_all(format!("{reply}\n").as_bytes()).await?;
            Ok(())
        }
    }
}

/// `fwd monitor`: prints denied-packet samples from the daemon's control socket.
pub fn monitor(socket: &Path, json: bool, count: Option<u64>) -> anyhow::Result<()> {
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
pub fn ask<T: serde::de::DeserializeOwned>(socket: &Path, command: &str) -> anyhow::Result<T> {
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
pub fn reload(socket: &Path) -> anyhow::Result<ReloadReply> {
    ask(socket, "reload")
}

/// The socket path named by the config at `config_path`, read without validating the rest
/// of the file; the default if the file or the key is missing.
pub fn socket_path_lenient(config_path: &Path) -> PathBuf {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_read_like_a_log_line() {
        let sample = DeniedSample {
            time_ms: 1_795_240_800_123,
            interface: "lan0".into(),
            direction: "out".into(),
            protocol: "tcp".into(),
            src: Some("10.250.0.2".parse().unwrap()),
            dst: Some("2001:db8::1".parse().unwrap()),
            src_port: 51000,
            dst_port: 443,
            reason: "no_port_match".into(),
            nearest_rule: Some("acme/web".into()),
        };
        let text = sample.to_string();
        assert!(text.starts_with("2026-11-21T06:00:00.123Z lan0"), "{text}");
        assert!(
            text.ends_with(
                "lan0     out tcp    10.250.0.2:51000 -> [2001:db8::1]:443 no_port_match (nearest rule: acme/web)"
            ),
            "{text}"
        );
    }
}
