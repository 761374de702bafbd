//! The daemon's side of the control socket (the protocol is `crate::control`): binding
//! it, serving commands, and turning kernel samples of denied packets into what `fwd
//! monitor` shows.
//!
//! Protocol: the client sends one command line; the daemon answers with JSON lines.
//! - `monitor`: one `DeniedSample` object per line until the client hangs up.
//! - `reload`: one `ReloadReply` object once the reload is done or rejected.
//! - `status`: one `StatusReply` object.
//! - `dns`: one `DnsReply` object (learned names).

use std::{
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use fwd_common::{DeniedEvent, Reason};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::broadcast,
};
use tracing::{debug, info, warn};

use crate::compile::MapImage;
use crate::control::protocol_name;
pub use crate::control::{
    AttachedStatus, ConfirmReply, DeniedSample, DryRunReply, ReloadReply, StatusReply,
};

/// What a control client asks the daemon, with the channel for the answer.
pub enum Request {
    Reload(tokio::sync::oneshot::Sender<ReloadReply>),
    Status(tokio::sync::oneshot::Sender<StatusReply>),
    Dns(tokio::sync::oneshot::Sender<super::dns::DnsReply>),
    /// The rules in force (`fwd diff --against running`).
    Rules(tokio::sync::oneshot::Sender<Vec<crate::diff::RuleView>>),
    /// `fwd reload --dry-run`.
    DryRun(tokio::sync::oneshot::Sender<DryRunReply>),
    /// `fwd reload --confirm SECS`.
    ReloadToConfirm(u64, tokio::sync::oneshot::Sender<ReloadReply>),
    /// `fwd confirm`.
    Confirm(tokio::sync::oneshot::Sender<ConfirmReply>),
    /// The kept denied samples (`fwd monitor --last/--since`).
    History(tokio::sync::oneshot::Sender<Vec<DeniedSample>>),
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
        dns_name: None,
        audited: event.audited != 0,
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

/// Passes one request to the daemon and writes its answer as a JSON line.
async fn forward<T: serde::Serialize>(
    requests: &tokio::sync::mpsc::Sender<Request>,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    request: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Request,
) -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    requests.send(request(tx)).await?;
    let mut line = serde_json::to_string(&rx.await?)?;
    line.push('\n');
    write.write_all(line.as_bytes()).await?;
    Ok(())
}

async fn handle(
    stream: UnixStream,
    mut samples: broadcast::Receiver<DeniedSample>,
    requests: tokio::sync::mpsc::Sender<Request>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let command = lines.next_line().await?.unwrap_or_default();
    if let Some(seconds) = command.trim().strip_prefix("reload-confirm ") {
        let seconds: u64 = seconds.trim().parse()?;
        return forward(&requests, &mut write, |tx| {
            Request::ReloadToConfirm(seconds, tx)
        })
        .await;
    }
    match command.trim() {
        "confirm" => forward(&requests, &mut write, Request::Confirm).await,
        "reload" => forward(&requests, &mut write, Request::Reload).await,
        "status" => forward(&requests, &mut write, Request::Status).await,
        "dry-run" => forward(&requests, &mut write, Request::DryRun).await,
        "rules" => forward(&requests, &mut write, Request::Rules).await,
        "history" => forward(&requests, &mut write, Request::History).await,
        "dns" => forward(&requests, &mut write, Request::Dns).await,
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
                "error": format!("unknown command `{other}`; this daemon knows: confirm, dns, dry-run, history, monitor, reload, reload-confirm SECONDS, rules, status")
            });
            write.write_all(format!("{reply}\n").as_bytes()).await?;
            Ok(())
        }
    }
}
