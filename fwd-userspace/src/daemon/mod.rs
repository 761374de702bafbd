//! `fwd run`: load, attach, serve metrics, reload on SIGHUP, detach on SIGINT/SIGTERM.

pub mod config;
pub mod metrics;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use fwd_common::{DST4_CAPACITY, DST6_CAPACITY, PORTS_CAPACITY};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    compile::{Compiled, compile},
    datapath::{Datapath, own_addresses},
    policy,
};
use config::{Action, Config, InterfaceMode};

struct Daemon {
    datapath: Datapath,
    config_path: PathBuf,
    audit: bool,
    generation: u32,
    reloads_ok: u64,
    reloads_error: u64,
    last_reload_unix: i64,
}

type Shared = Arc<Mutex<Daemon>>;

/// Loads the config and compiles its policies; nothing touches the kernel.
pub fn load_policy(config_path: &Path) -> anyhow::Result<(Config, Compiled)> {
    let config = Config::load(config_path)?;
    let policies = policy::load_dir(&config.policy_dir)?;
    let compiled = compile(&policies, &config.selection(policy::Date::today()))?;
    Ok((config, compiled))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Daemon {
    /// Recompiles and installs atomically; on any error the running policy stays.
    fn reload(&mut self) -> anyhow::Result<()> {
        let (config, compiled) = load_policy(&self.config_path)?;
        let generation = self.generation + 1;
        self.datapath.install(&compiled.image, generation)?;
        let audit = config.action == Action::Audit;
        self.datapath.set_audit(audit)?;
        self.audit = audit;
        self.generation = generation;
        self.last_reload_unix = unix_now();
        info!(
            generation,
            rules = compiled.image.rules.len(),
            "policy reloaded"
        );
        Ok(())
    }

    fn metrics(&self) -> anyhow::Result<String> {
        let image = self
            .datapath
            .active_image()
            .context("no policy installed")?;
        let rule_counters = self.datapath.rule_counters(image.rules.len())?;
        let reasons = self.datapath.reason_counters()?;
        let maps = [
            ("dst4", image.dst4.len(), DST4_CAPACITY),
            ("dst6", image.dst6.len(), DST6_CAPACITY),
            ("ports", image.ports.len(), PORTS_CAPACITY),
        ];
        Ok(metrics::render(&metrics::Snapshot {
            rules: &image.rules,
            rule_counters: &rule_counters,
            reasons: &reasons,
            generation: self.generation,
            audit: self.audit,
            reloads_ok: self.reloads_ok,
            reloads_error: self.reloads_error,
            last_reload_unix: self.last_reload_unix,
            maps: &maps,
        })?)
    }
}

async fn serve_metrics(State(shared): State<Shared>) -> impl IntoResponse {
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

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let (config, compiled) = load_policy(config_path)?;
    for warning in &compiled.warnings {
        warn!("{warning}");
    }
    if config.interfaces.is_empty() {
        anyhow::bail!(
            "{}: no [[interface]] configured; add one, e.g.\n[[interface]]\nname = \"lan0\"\nmode = \"gateway\"",
            config_path.display()
        );
    }
    let mut datapath = Datapath::load()?;
    let mut exempt = config.exempt.clone();
    exempt.extend(own_addresses());
    datapath.set_exemptions(&exempt)?;
    let audit = config.action == Action::Audit;
    datapath.set_audit(audit)?;
    datapath.install(&compiled.image, 1)?;
    for iface in &config.interfaces {
        match iface.mode {
            InterfaceMode::Gateway => {
                datapath.attach_gateway(&iface.name)?;
            }
        }
    }
    info!(
        rules = compiled.image.rules.len(),
        classes = compiled.image.classes,
        dst4 = compiled.image.dst4.len(),
        dst6 = compiled.image.dst6.len(),
        ports = compiled.image.ports.len(),
        action = ?config.action,
        "policy installed"
    );

    let shared: Shared = Arc::new(Mutex::new(Daemon {
        datapath,
        config_path: config_path.to_path_buf(),
        audit,
        generation: 1,
        reloads_ok: 0,
        reloads_error: 0,
        last_reload_unix: unix_now(),
    }));

    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics listener {}", config.metrics_listen))?;
    info!("metrics at http://{}/metrics", config.metrics_listen);
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(shared.clone());

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let reloader = shared.clone();
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sighup.recv() => {
                    let reloader = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let mut daemon = reloader.lock().expect("daemon state lock");
                        match daemon.reload() {
                            Ok(()) => daemon.reloads_ok += 1,
                            Err(err) => {
                                daemon.reloads_error += 1;
                                error!("reload rejected, previous policy stays in force: {err:#}");
                            }
                        }
                    })
                    .await;
                }
            }
        }
        info!("stopping");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving metrics")?;

    let mut daemon = shared.lock().expect("daemon state lock");
    daemon.datapath.detach_all();
    Ok(())
}
