//! The daemon's background work: the metrics endpoint, the programs' log, denied-packet
//! samples, expiring learned names, systemd notifications.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use tracing::{error, info, warn};

use super::{Shared, control, dns};

pub(super) async fn serve_metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let rendered = tokio::task::spawn_blocking(move || {
        let daemon = shared.lock().expect("daemon state lock");
        daemon.metrics()
    })
    .await;
    match rendered {
        Ok(Ok(text)) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        )
            .into_response(),
        Ok(Err(err)) => {
            error!(%err, "rendering metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response()
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// `/healthz`: the daemon answers (its runtime is alive).
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`: 200 once a policy is in force and every configured interface has fwd's
/// programs; 503 saying what is missing otherwise (a readiness probe).
pub(super) async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let ready = tokio::task::spawn_blocking(move || {
        let daemon = shared.lock().expect("daemon state lock");
        let attached: Vec<String> = daemon
            .config
            .interfaces
            .iter()
            .filter(|i| !daemon.interfaces.missing.contains(&i.name))
            .map(|i| i.name.clone())
            .collect();
        if daemon.generation == 0 || daemon.datapath.active_image().is_none() {
            Err("no policy in force".to_string())
        } else if !daemon.interfaces.missing.is_empty() {
            Err(format!(
                "interfaces without fwd's programs: {}",
                daemon.interfaces.missing.join(", ")
            ))
        } else {
            Ok(format!(
                "generation {} in force on {}",
                daemon.generation,
                attached.join(", ")
            ))
        }
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match ready {
        Ok(text) => (StatusCode::OK, format!("ready: {text}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Passes the programs' log records (aya-log) to the daemon's log as they arrive.
pub(super) async fn forward_program_log(log: crate::datapath::ProgramLog) {
    // SAFETY: the logger owns its ring buffer's file descriptor, which stays open and the
    // same until the AsyncFd (which owns the logger) is dropped.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(log, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(err) => {
            warn!(%err, "watching the programs' log; their messages are not shown");
            return;
        }
    };
    loop {
        let Ok(mut guard) = fd.readable_mut().await else {
            return;
        };
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}

/// Reads the kernel's denied-packet samples and passes them to `fwd monitor` clients.
pub(super) async fn read_denied_samples(
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    shared: Shared,
    samples: tokio::sync::broadcast::Sender<control::DeniedSample>,
) {
    // SAFETY: the ring buffer owns its map's file descriptor, which stays open and the
    // same until the AsyncFd (which owns the ring buffer) is dropped.
    let registered = unsafe { tokio::io::unix::AsyncFd::register(ring) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(err) => {
            error!(%err, "watching the denied-samples ring buffer; fwd monitor shows nothing");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(guard) => guard,
            Err(err) => {
                error!(%err, "reading the denied-samples ring buffer");
                return;
            }
        };
        let mut events = Vec::new();
        {
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                if item.len() >= std::mem::size_of::<fwd_common::DeniedEvent>() {
                    // SAFETY: the kernel wrote a DeniedEvent (repr(C), plain integers).
                    events.push(unsafe {
                        std::ptr::read_unaligned(item.as_ptr().cast::<fwd_common::DeniedEvent>())
                    });
                }
            }
        }
        guard.clear_ready();
        if events.is_empty() {
            continue;
        }
        let now = crate::datapath::monotonic_ns();
        // Every sample goes into the history (`fwd monitor --last`), with the name the
        // proxy answered for its remote, and to the clients following.
        let described: Vec<_> = {
            let mut daemon = shared.lock().expect("daemon state lock");
            let described: Vec<_> = {
                let image = daemon.datapath.active_image();
                events
                    .iter()
                    .map(|e| control::describe(e, image, now))
                    .collect()
            };
            described
                .into_iter()
                .map(|s| daemon.history.record(s))
                .collect()
        };
        for sample in described {
            let _ = samples.send(sample);
        }
    }
}

/// Clears the slot an install left once programs are done with it, for installs whose
/// caller did not (an unconfirmed reload rolled back, a reload of another trigger): every
/// 250 ms, briefly under the lock, and only once the grace has passed (it never waits
/// holding the lock).
pub(super) async fn finish_installs(shared: Shared) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut daemon = shared.lock().expect("daemon state lock");
            if let Err(err) = daemon.datapath.finish_install_if_due() {
                warn!("clearing the slot an install left: {err:#}");
            }
        })
        .await;
    }
}

/// Every second: ends learned entries past their time with no live flow, and writes
/// `learned.json` if the table changed in a way the journal does not hold, or the journal
/// grew to half the table (`dns::journal_due`).
pub(super) async fn keep_learned(shared: Shared, state_dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let shared = shared.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let mut daemon = shared.lock().expect("daemon state lock");
            match daemon.expire_dns() {
                Ok(0) => {}
                Ok(ended) => info!(
                    ended,
                    "DNS: learned addresses past their TTL with no live flow closed"
                ),
                Err(err) => warn!("DNS: ending expired learned addresses: {err:#}"),
            }
            let due = std::mem::take(&mut daemon.dns_dirty)
                || dns::journal_due(daemon.dns_journal.lines(), daemon.dns.entry_count());
            due.then(|| {
                // The journal so far is in this snapshot.
                daemon.dns_journal.set_aside();
                daemon.dns.saved()
            })
        })
        .await;
        if let Ok(Some(saved)) = saved {
            save_learned(&state_dir, &saved);
        }
    }
}

/// Writes `learned.json`; once it is written, the journal set aside with its snapshot goes.
pub(super) fn save_learned(state_dir: &Path, saved: &dns::Saved) {
    match dns::save(state_dir, saved) {
        Ok(()) => dns::saved(state_dir),
        Err(err) => {
            warn!(dir = %state_dir.display(), %err, "cannot write the learned DNS names; the journal keeps them until a save succeeds");
        }
    }
}

/// Tells systemd (Type=notify) where the daemon is; a no-op outside systemd.
pub(super) fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, state) {
        warn!(%err, "notifying systemd");
    }
}

/// How often the daemon looks for feeds due for a fetch.
const FEED_CHECK: Duration = Duration::from_secs(60);

/// Fetches each `[[feed]]` when its `refresh_s` is due (off the daemon lock: a fetch may
/// take seconds), and reloads after an update when the policy watch is off (with the
/// watch on, it sees the new file and reloads).
pub(super) async fn refresh_feeds(shared: Shared) {
    loop {
        let config = shared.lock().expect("daemon state lock").config.clone();
        let due = crate::feeds::due(&config, crate::feeds::unix_now());
        if !due.is_empty() {
            let cfg = config.clone();
            let outcomes = tokio::task::spawn_blocking(move || {
                due.iter()
                    .flat_map(|id| {
                        crate::feeds::update(&cfg, Some(id), crate::policy::Date::today())
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            let updated = outcomes
                .iter()
                .any(|o| o.result == crate::feeds::Result::Updated);
            if updated && !config.watch.enabled {
                super::blocking(&shared, super::reload_and_report).await;
            }
        }
        tokio::time::sleep(FEED_CHECK).await;
    }
}

/// Set as the daemon stops: the tasks that put things back leave them be.
pub(super) static STOPPING: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// How often the steering table is looked for.
const STEER_CHECK: Duration = Duration::from_secs(5);

/// Puts the DNS steering table back when something removed it (an `nft flush ruleset`, a
/// firewall script): without it, LAN clients that ask another resolver bypass the proxy.
pub(super) async fn keep_steering(
    interfaces: Vec<String>,
    port: u16,
    stats: std::sync::Arc<dns::DnsStats>,
) {
    loop {
        tokio::time::sleep(STEER_CHECK).await;
        if STOPPING.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let interfaces = interfaces.clone();
        let restored = tokio::task::spawn_blocking(move || {
            if dns::steer::present() || STOPPING.load(std::sync::atomic::Ordering::Relaxed) {
                return None;
            }
            let names: Vec<&str> = interfaces.iter().map(String::as_str).collect();
            Some(dns::steer::install(&names, port))
        })
        .await;
        match restored {
            Ok(Some(Ok(()))) => {
                stats.steering_restored.inc();
                warn!(
                    table = dns::steer::TABLE,
                    "the DNS steering table was gone (removed by another tool?): put back"
                );
            }
            Ok(Some(Err(err))) => error!("putting the DNS steering table back: {err:#}"),
            _ => {}
        }
    }
}
