//! `fwd run`: load, attach, serve metrics, reload on SIGHUP, detach on SIGINT/SIGTERM.

mod confirm;
pub mod control;
pub mod dns;
mod history;
mod interfaces;
pub mod metrics;
mod start;
pub mod state;
mod tasks;
mod watch;

use start::{apply, start};
use tasks::{keep_learned, notify, read_denied_samples, save_learned, serve_metrics};

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{Router, routing::get};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::{self, Action, Config, OnExit};
use crate::{
    compile::{Compiled, RuleIds},
    datapath::{Datapath, InstallTimings, PreparedTables},
    policy,
};

struct Daemon {
    datapath: Datapath,
    config_path: PathBuf,
    /// The config of the active policy.
    config: Config,
    generation: u32,
    /// The ids the active policy gave its rules; the next compile keeps them.
    rule_ids: RuleIds,
    reloads_ok: u64,
    reloads_error: u64,
    last_reload_unix: i64,
    /// Names the DNS proxy learned (empty when it is off).
    dns: dns::DnsTable,
    /// The table changed since `learned.json` was last written in a way the journal does
    /// not hold (a reload, entries ended, a restore): saved within a second.
    dns_dirty: bool,
    /// What answers opened since `learned.json` was last written, written before they go out.
    dns_journal: dns::Journal,
    /// The proxy's counters, when it runs.
    dns_stats: Option<Arc<dns::DnsStats>>,
    /// Where the proxy listens, when it runs.
    dns_listen: Vec<std::net::SocketAddr>,
    /// A `--confirm` reload's way back, until `fwd confirm` or the deadline.
    confirm: Option<confirm::Pending>,
    /// Unconfirmed reloads rolled back.
    rollbacks: u64,
    /// Denied samples kept for `fwd monitor --last/--since`, and the names answered.
    history: history::History,
    /// `fwd run --metrics-listen`: in place of every config's `[metrics] listen`.
    metrics_override: Option<std::net::SocketAddr>,
    /// The rules in force, as `fwd diff --against running` compares them.
    rules_in_force: Vec<crate::diff::RuleView>,
    /// Configured interfaces missing, and how often they changed.
    interfaces: interfaces::Interfaces,
    /// The lock on `state_dir`, held while the daemon runs.
    _state_lock: crate::lock::Lock,
}

type Shared = Arc<Mutex<Daemon>>;

/// Loads the config and compiles its policies, keeping the rule ids of `previous`; nothing
/// touches the kernel.
pub fn load_policy(
    config_path: &Path,
    previous: &RuleIds,
) -> anyhow::Result<(Config, Compiled, Vec<crate::diff::RuleView>)> {
    let config = Config::load(config_path)?;
    let (compiled, views) = compile_config(&config, previous)?;
    Ok((config, compiled, views))
}

/// Compiles the policies `config` selects, keeping the rule ids of `previous`; with the
/// rules as `fwd diff` compares them.
fn compile_config(
    config: &Config,
    previous: &RuleIds,
) -> anyhow::Result<(Compiled, Vec<crate::diff::RuleView>)> {
    let (set, compiled) =
        config.compile_policies(&config.policy_dir, policy::Date::today(), previous)?;
    Ok((compiled, crate::diff::views(&set)))
}

use crate::clock::{unix_ms, unix_now};

/// A reload's compiled policy, made without the daemon's lock (learning goes on meanwhile),
/// with what it was compiled from.
struct Prepared {
    config: Config,
    compiled: Compiled,
    views: Vec<crate::diff::RuleView>,
    compile_time: Duration,
    /// The rule ids it kept: if another reload changed them meanwhile, it is compiled again.
    from_ids: RuleIds,
    /// The slot's tables, built here too (most of an install's time at a large policy).
    tables: PreparedTables,
}

/// What a reload compiles from, read under the lock.
struct ReloadInput {
    config_path: PathBuf,
    rule_ids: RuleIds,
    metrics_override: Option<std::net::SocketAddr>,
}

impl ReloadInput {
    fn of(daemon: &Daemon) -> ReloadInput {
        ReloadInput {
            config_path: daemon.config_path.clone(),
            rule_ids: daemon.rule_ids.clone(),
            metrics_override: daemon.metrics_override,
        }
    }

    /// Loads the config and compiles its policies; touches neither the daemon nor the kernel.
    fn prepare(self) -> anyhow::Result<Prepared> {
        let started = Instant::now();
        let (mut config, compiled, views) = load_policy(&self.config_path, &self.rule_ids)?;
        if let Some(listen) = self.metrics_override {
            config.metrics_listen = listen;
        }
        let tables = PreparedTables::build(&compiled.image, &start::exemptions(&config));
        Ok(Prepared {
            config,
            compiled,
            views,
            compile_time: started.elapsed(),
            from_ids: self.rule_ids,
            tables,
        })
    }
}

impl Daemon {
    /// Recompiles and installs atomically; on any error the running policy stays.
    fn reload(&mut self) -> anyhow::Result<(Compiled, Duration, InstallTimings)> {
        let prepared = ReloadInput::of(self).prepare()?;
        self.install_prepared(prepared)
    }

    /// Installs a reload compiled without the lock (compiled again if the rule ids it
    /// kept are no longer the ones in force); on any error the running policy stays.
    fn install_prepared(
        &mut self,
        prepared: Prepared,
    ) -> anyhow::Result<(Compiled, Duration, InstallTimings)> {
        let prepared = if prepared.from_ids == self.rule_ids {
            prepared
        } else {
            ReloadInput::of(self).prepare()?
        };
        let Prepared {
            config,
            compiled,
            views,
            compile_time,
            tables,
            ..
        } = prepared;
        let restart_needed = [
            (config.interfaces != self.config.interfaces, "[[interface]]"),
            (config.pin_dir != self.config.pin_dir, "pin_dir"),
            (
                config.flows.capacity != self.config.flows.capacity,
                "[flows] capacity",
            ),
            (
                config.control_socket != self.config.control_socket,
                "control_socket",
            ),
            (
                config.metrics_listen != self.config.metrics_listen,
                "[metrics] listen",
            ),
            (
                config.dns.as_ref().map(config::Dns::restart_keys)
                    != self.config.dns.as_ref().map(config::Dns::restart_keys),
                "[dns] listen, upstream, timeout_ms, steer or doh_canary",
            ),
        ];
        for (changed, key) in restart_needed {
            if changed {
                warn!("{key} changed: it takes effect when fwd restarts");
            }
        }
        let (generation, timings) = self.put_in_force(config, &compiled, views, Some(tables))?;
        info!(
            generation,
            rules = compiled.image.rules.len(),
            compile_ms = compile_time.as_secs_f64() * 1e3,
            fill_ms = timings.fill.as_secs_f64() * 1e3,
            swap_ms = timings.swap.as_secs_f64() * 1e3,
            "policy reloaded"
        );
        Ok((compiled, compile_time, timings))
    }

    /// What a reload would do, without doing it: compile, check the tables' room, and
    /// compare with the rules in force.
    fn dry_run(&self) -> control::DryRunReply {
        let checked =
            load_policy(&self.config_path, &self.rule_ids).and_then(|(config, compiled, views)| {
                self.datapath
                    .check_capacity(&compiled.image, &start::exemptions(&config))?;
                Ok((compiled, views))
            });
        match checked {
            Ok((compiled, views)) => control::DryRunReply {
                ok: true,
                generation: self.generation,
                rules: compiled.image.rules.len(),
                error: None,
                warnings: compiled.warnings.iter().map(ToString::to_string).collect(),
                changes: crate::diff::diff(&self.rules_in_force, &views),
            },
            Err(err) => control::DryRunReply {
                ok: false,
                generation: self.generation,
                rules: 0,
                error: Some(format!("{err:#}")),
                warnings: Vec::new(),
                changes: Vec::new(),
            },
        }
    }

    /// Installs `compiled` under `config` as the next generation, with the learned names
    /// judged again under it; on success it is the daemon's policy in force (a reload, a
    /// roll-back), on an error nothing changes.
    fn put_in_force(
        &mut self,
        config: Config,
        compiled: &Compiled,
        views: Vec<crate::diff::RuleView>,
        tables: Option<PreparedTables>,
    ) -> anyhow::Result<(u32, InstallTimings)> {
        let generation = self.generation.wrapping_add(1).max(1);
        // The table changes only if the install succeeds.
        let mut table = self.dns.clone();
        match &config.dns {
            Some(d) => table.set_limits(d.limits),
            None => table = dns::DnsTable::new(dns::Limits::default()),
        }
        let timings = apply(
            &mut self.datapath,
            &config,
            compiled,
            &mut table,
            generation,
            tables,
        )?;
        self.dns = table;
        self.dns_dirty = true;
        self.config = config;
        self.rules_in_force = views;
        self.generation = generation;
        self.rule_ids = compiled.ids.clone();
        self.last_reload_unix = unix_now();
        self.record(compiled);
        Ok((generation, timings))
    }

    /// Records the rule ids in force, for the next start and for `fwd stats`.
    fn record(&self, compiled: &Compiled) {
        let recorded = state::Recorded::of(&compiled.image, self.generation);
        if let Err(err) = state::save(&self.config.state_dir, &recorded) {
            warn!(
                dir = %self.config.state_dir.display(),
                %err,
                "cannot record the rule ids; a restart may reset some rule counters"
            );
        }
    }

    fn status(&self) -> control::StatusReply {
        let image = self.datapath.active_image();
        control::StatusReply {
            generation: self.generation,
            rules: image.map_or(0, |i| i.rules.len()),
            attached: self
                .datapath
                .attached()
                .into_iter()
                .map(|a| control::AttachedStatus {
                    interface: a.iface,
                    program: a.program.to_string(),
                    hook: a.hook.name().to_string(),
                    origin: a.origin.name().to_string(),
                    pinned: a.pinned,
                })
                .collect(),
            missing: self.interfaces.missing.clone(),
            forwarding_held: self.interfaces.forwarding_held,
            pin_dir: self.datapath.pin_dir().map(Path::to_path_buf),
            pins: self.datapath.persistence().map(|p| p.name().to_string()),
            maps: image
                .map(|_| {
                    self.datapath
                        .table_fill()
                        .into_iter()
                        .map(|(map, used, capacity)| (map.to_string(), used, capacity as u32))
                        .collect()
                })
                .unwrap_or_default(),
            flows_active: self.datapath.flows_active().ok(),
            reloads_ok: self.reloads_ok,
            reloads_error: self.reloads_error,
            last_reload_unix: self.last_reload_unix,
            action: match self.config.action {
                Action::Enforce => "enforce".into(),
                Action::Audit => "audit".into(),
            },
            confirm_by_unix: self.confirm.as_ref().map(|p| p.deadline_unix),
            rollbacks: self.rollbacks,
        }
    }

    fn dns_status(&self) -> dns::DnsReply {
        let limits = self.dns.limits();
        dns::DnsReply {
            enabled: self.config.dns.is_some(),
            listen: self.dns_listen.clone(),
            upstream: self
                .config
                .dns
                .as_ref()
                .map(|d| d.upstream.clone())
                .unwrap_or_default(),
            entries: dns::entry_status(&self.dns, self.datapath.active_image(), unix_ms()),
            patterns: self
                .dns
                .pattern_use()
                .map(|(p, n)| (p.to_string(), n, limits.max_addresses))
                .collect(),
        }
    }

    /// Opens what a DNS answer opens (the proxy calls this before it answers the client);
    /// what it opened is staged in the journal, which `DaemonLearner` flushes before the
    /// answers go out.
    fn learn(&mut self, answer: &dns::Answer) -> anyhow::Result<dns::Observed> {
        let image = self
            .datapath
            .active_image()
            .context("no policy installed")?;
        if let Some(name) = answer.chain.first() {
            self.history
                .answered(name, answer.addrs.iter().map(|(a, _)| *a));
        }
        let observed = self.dns.observe(image, answer, unix_ms());
        self.datapath
            .apply_learned(&observed.changes)
            .context("writing learned addresses into the datapath")?;
        for pattern in &observed.now_full {
            warn!(
                %pattern,
                max_addresses = self.dns.limits().max_addresses,
                "DNS: this name pattern holds as many addresses as it may; more are answered but not opened until some expire (raise [dns] max_addresses)"
            );
        }
        // What opened is in the journal; an entry ended is not, and is saved.
        self.dns_dirty |= observed.dropped > 0;
        if observed.opened > 0
            && let Some(name) = answer.chain.first()
        {
            let dns = &self.dns;
            self.dns_journal
                .stage(answer.addrs.iter().filter_map(|(a, _)| dns.entry(name, *a)));
        }
        Ok(observed)
    }

    /// Ends learned entries past their time unless a flow to the address is live.
    fn expire_dns(&mut self) -> anyhow::Result<usize> {
        let now = unix_ms();
        let due = self.dns.due(now);
        if due.is_empty() {
            return Ok(0);
        }
        let live = self.datapath.live_remotes(&due)?;
        let image = self
            .datapath
            .active_image()
            .context("no policy installed")?;
        let grace = u64::from(self.dns.limits().min_ttl.max(1)) * 1000;
        let (changes, ended) = self.dns.expire(image, now, &live, grace);
        self.datapath
            .apply_learned(&changes)
            .context("removing expired learned addresses from the datapath")?;
        self.dns_dirty = true;
        Ok(ended)
    }

    fn metrics(&self) -> anyhow::Result<String> {
        let image = self
            .datapath
            .active_image()
            .context("no policy installed")?;
        let rule_counters = self
            .datapath
            .rule_counters(image.rules.iter().map(|r| r.id))?;
        let reasons = self.datapath.reason_counters()?;
        let maps: Vec<(&str, usize, u32)> = self
            .datapath
            .table_fill()
            .into_iter()
            .map(|(map, used, capacity)| (map, used, capacity as u32))
            .collect();
        Ok(metrics::render(&metrics::Snapshot {
            rules: &image.rules,
            rule_counters: &rule_counters,
            reasons: &reasons,
            generation: self.generation,
            audit: &|vendor| self.config.action_for(vendor) == Action::Audit,
            dns: self.dns_stats.as_deref().map(|stats| metrics::DnsSnapshot {
                stats,
                names_active: self.dns.names_active(),
                addresses_active: self.dns.addresses_active(),
            }),
            flows_active: match self.datapath.flows_active() {
                Ok(n) => Some(n),
                Err(err) => {
                    warn!(%err, "counting live flows");
                    None
                }
            },
            reloads_ok: self.reloads_ok,
            reloads_error: self.reloads_error,
            last_reload_unix: self.last_reload_unix,
            maps: &maps,
            interfaces: &self
                .config
                .interfaces
                .iter()
                .map(|i| (i.name.as_str(), !self.interfaces.missing.contains(&i.name)))
                .collect::<Vec<_>>(),
            interface_changes: &self.interfaces.changes,
            feeds: &crate::feeds::states(&self.config),
        })?)
    }
}

/// Reloads, counts the result and says what happened. The config is read and the policies
/// compiled without the daemon's lock, so the DNS proxy goes on learning (and answering)
/// meanwhile; only the install (fill and flip) takes it.
fn reload_and_report(shared: &Shared) -> control::ReloadReply {
    let input = ReloadInput::of(&shared.lock().expect("daemon state lock"));
    let mut state = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        state.push(now);
    }
    notify(&state);
    let prepared = input.prepare();
    let mut daemon = shared.lock().expect("daemon state lock");
    let result = prepared.and_then(|p| daemon.install_prepared(p));
    let reply = reload_reply(&mut daemon, result);
    // The old slot is cleared once programs are done with it, without the lock meanwhile.
    if daemon.datapath.install_pending() {
        drop(daemon);
        std::thread::sleep(crate::datapath::SLOT_GRACE);
        daemon = shared.lock().expect("daemon state lock");
        if let Err(err) = daemon.datapath.finish_install() {
            warn!("clearing the slot the reload left: {err:#}");
        }
    }
    let status = if reply.ok {
        format!(
            "generation {} in force, {} rules",
            reply.generation, reply.rules
        )
    } else {
        format!(
            "reload rejected; generation {} stays in force",
            reply.generation
        )
    };
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    reply
}

fn reload_reply(
    daemon: &mut Daemon,
    result: anyhow::Result<(Compiled, Duration, InstallTimings)>,
) -> control::ReloadReply {
    match result {
        Ok((compiled, compile_time, timings)) => {
            daemon.reloads_ok += 1;
            control::ReloadReply {
                ok: true,
                generation: daemon.generation,
                rules: compiled.image.rules.len(),
                error: None,
                warnings: compiled.warnings.iter().map(ToString::to_string).collect(),
                compile_ms: compile_time.as_secs_f64() * 1e3,
                fill_ms: timings.fill.as_secs_f64() * 1e3,
                swap_ms: timings.swap.as_secs_f64() * 1e3,
                confirm_by_unix: None,
            }
        }
        Err(err) => {
            daemon.reloads_error += 1;
            error!("reload rejected, previous policy stays in force: {err:#}");
            control::ReloadReply {
                ok: false,
                generation: daemon.generation,
                rules: daemon.datapath.active_image().map_or(0, |i| i.rules.len()),
                error: Some(format!("{err:#}")),
                warnings: Vec::new(),
                compile_ms: 0.0,
                fill_ms: 0.0,
                swap_ms: 0.0,
                confirm_by_unix: None,
            }
        }
    }
}

/// The daemon as the DNS proxy's learner.
struct DaemonLearner {
    shared: Shared,
    /// `[dns] max_ttl` as of the last answer learned (read without the lock).
    max_ttl: std::sync::atomic::AtomicU32,
}

impl dns::Learner for DaemonLearner {
    fn learn(&self, answer: dns::Answer) -> anyhow::Result<dns::Observed> {
        self.learn_all(vec![answer])
            .pop()
            .expect("a result for each answer")
    }

    /// One lock and one journal write for the batch.
    fn learn_all(&self, answers: Vec<dns::Answer>) -> Vec<anyhow::Result<dns::Observed>> {
        let daemon = self.shared.lock().expect("daemon state lock");
        self.learn_locked(daemon, &answers)
    }

    fn try_learn(&self, answer: dns::Answer) -> Result<anyhow::Result<dns::Observed>, dns::Answer> {
        let daemon = match self.shared.try_lock() {
            Ok(daemon) => daemon,
            Err(std::sync::TryLockError::WouldBlock) => return Err(answer),
            Err(std::sync::TryLockError::Poisoned(p)) => panic!("daemon state lock: {p}"),
        };
        Ok(self
            .learn_locked(daemon, std::slice::from_ref(&answer))
            .pop()
            .expect("a result for each answer"))
    }

    fn max_ttl(&self) -> u32 {
        self.max_ttl.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl DaemonLearner {
    /// Learns `answers` in order, then writes what they opened to the journal with one
    /// write, before any of them is released.
    fn learn_locked(
        &self,
        mut daemon: std::sync::MutexGuard<'_, Daemon>,
        answers: &[dns::Answer],
    ) -> Vec<anyhow::Result<dns::Observed>> {
        let results = answers.iter().map(|a| daemon.learn(a)).collect();
        daemon.dns_journal.flush();
        self.max_ttl.store(
            daemon.dns.limits().max_ttl,
            std::sync::atomic::Ordering::Relaxed,
        );
        results
    }
}

/// Where the proxy listens: the configured addresses, else the gateway interfaces'
/// addresses (IPv6 link-local ones left out), else 127.0.0.53:53 on a host.
fn dns_listen(config: &Config, d: &config::Dns) -> Vec<std::net::SocketAddr> {
    if !d.listen.is_empty() {
        return d.listen.clone();
    }
    let gateways = config.gateway_interfaces();
    if gateways.is_empty() {
        return vec![(std::net::Ipv4Addr::new(127, 0, 0, 53), 53).into()];
    }
    gateways
        .iter()
        .flat_map(|name| crate::net::addresses(Some(name)))
        .filter(|a| match a {
            std::net::IpAddr::V6(v6) => !v6.is_unicast_link_local(),
            std::net::IpAddr::V4(_) => true,
        })
        .map(|a| (a, 53).into())
        .collect()
}

/// Starts the DNS proxy and the task that ends expired entries and writes them down.
async fn start_dns(shared: &Shared, config: &Config, d: &config::Dns) -> anyhow::Result<()> {
    let listen = dns_listen(config, d);
    if listen.is_empty() {
        anyhow::bail!(
            "{}: [dns] has no listen address and the gateway interfaces have none; set [dns] listen",
            config.file.display()
        );
    }
    let stats = Arc::new(dns::DnsStats::new());
    let learner = Arc::new(DaemonLearner {
        shared: shared.clone(),
        max_ttl: d.limits.max_ttl.into(),
    });
    let proxy = Arc::new(
        dns::Proxy::new(
            d.upstream.clone(),
            Duration::from_millis(d.timeout_ms),
            learner,
            stats.clone(),
        )
        .with_doh_canary(d.doh_canary),
    );
    proxy.serve_on_own_thread(&listen)?;
    if d.steer {
        let gateways = config.gateway_interfaces();
        let port = listen.first().map_or(53, std::net::SocketAddr::port);
        dns::steer::install(&gateways, port)?;
        info!(
            interfaces = ?gateways,
            table = dns::steer::TABLE,
            "the LAN's DNS to any resolver is redirected to the proxy"
        );
        tokio::spawn(tasks::keep_steering(
            gateways.iter().map(ToString::to_string).collect(),
            port,
            stats.clone(),
        ));
    }
    info!(
        listen = ?listen,
        upstream = ?d.upstream,
        "DNS proxy answering; domain rules open what it resolves"
    );
    {
        let mut daemon = shared.lock().expect("daemon state lock");
        daemon.dns_stats = Some(stats);
        daemon.dns_listen = listen;
    }
    tokio::spawn(keep_learned(shared.clone(), config.state_dir.clone()));
    Ok(())
}

/// Runs the daemon until SIGINT or SIGTERM; `metrics_listen` overrides the config's.
pub async fn run(
    config_path: &Path,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let (daemon, denied, status) = start(config_path, metrics_listen)?;
    let config = daemon.config.clone();
    let shared: Shared = Arc::new(Mutex::new(daemon));

    match &config.dns {
        Some(d) => start_dns(&shared, &config, d).await?,
        // Sockets an earlier run with a proxy left in the service manager's store: closed
        // and taken out, or they would hold port 53 with nobody answering.
        None => dns::release_passed_sockets(),
    }

    let (samples, _) = tokio::sync::broadcast::channel(1024);
    let control = control::bind(&config.control_socket)?;
    let (request_tx, mut request_rx) = tokio::sync::mpsc::channel::<control::Request>(8);
    tokio::spawn(control::serve(control, samples.clone(), request_tx));
    tokio::spawn(read_denied_samples(denied, shared.clone(), samples));
    tokio::spawn(interfaces::follow(shared.clone()));
    tokio::spawn(tasks::finish_installs(shared.clone()));
    if !config.feeds.is_empty() {
        tokio::spawn(tasks::refresh_feeds(shared.clone()));
    }

    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics listener {}", config.metrics_listen))?;
    info!("metrics at http://{}/metrics", config.metrics_listen);
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(tasks::healthz))
        .route("/readyz", get(tasks::readyz))
        .with_state(shared.clone());

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status),
    ]);
    let mut watchdog_usec = 0;
    if sd_notify::watchdog_enabled(false, &mut watchdog_usec) {
        // Pet the watchdog at half its period; a hung runtime stops petting it.
        let period = std::time::Duration::from_micros(watchdog_usec / 2);
        tokio::spawn(async move {
            loop {
                notify(&[sd_notify::NotifyState::Watchdog]);
                tokio::time::sleep(period).await;
            }
        });
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut changes = if config.watch.enabled {
        watch::spawn(
            &config,
            Duration::from_millis(config.watch.debounce_ms),
            watch::HASH_CHECK,
        )
    } else {
        watch::disabled()
    };
    let reloader = shared.clone();
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sighup.recv() => {
                    blocking(&reloader, reload_and_report).await;
                }
                Some(changed) = changes.recv() => {
                    info!(path = %changed.display(), "policy or config changed on disk; reloading");
                    blocking(&reloader, reload_and_report).await;
                }
                Some(request) = request_rx.recv() => answer(&reloader, request).await,
            }
        }
        info!("stopping");
        notify(&[sd_notify::NotifyState::Stopping]);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving metrics")?;

    stop(&shared)
}

/// Runs `work` on the daemon state off the async runtime (it takes the daemon lock and
/// may compile and fill for a while).
async fn blocking<T: Send + 'static>(
    shared: &Shared,
    work: impl FnOnce(&Shared) -> T + Send + 'static,
) -> Option<T> {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || work(&shared))
        .await
        .ok()
}

/// Answers a control request off the async runtime (each takes the daemon lock).
async fn answer(shared: &Shared, request: control::Request) {
    match request {
        control::Request::Reload(reply) => {
            if let Some(report) = blocking(shared, reload_and_report).await {
                let _ = reply.send(report);
            }
        }
        control::Request::Dns(reply) => {
            if let Some(status) = blocking(shared, |s| {
                s.lock().expect("daemon state lock").dns_status()
            })
            .await
            {
                let _ = reply.send(status);
            }
        }
        control::Request::ReloadToConfirm(seconds, reply) => {
            if let Some((report, token)) = blocking(shared, move |s| {
                s.lock()
                    .expect("daemon state lock")
                    .reload_to_confirm(seconds)
            })
            .await
            {
                if report.confirm_by_unix.is_some() {
                    tokio::spawn(confirm::watch(shared.clone(), token, seconds));
                }
                let _ = reply.send(report);
            }
        }
        control::Request::Confirm(reply) => {
            if let Some(r) =
                blocking(shared, |s| s.lock().expect("daemon state lock").confirm()).await
            {
                let _ = reply.send(r);
            }
        }
        control::Request::History(reply) => {
            if let Some(samples) = blocking(shared, |s| {
                s.lock().expect("daemon state lock").history.samples()
            })
            .await
            {
                let _ = reply.send(samples);
            }
        }
        control::Request::DryRun(reply) => {
            if let Some(r) =
                blocking(shared, |s| s.lock().expect("daemon state lock").dry_run()).await
            {
                let _ = reply.send(r);
            }
        }
        control::Request::Rules(reply) => {
            if let Some(rules) = blocking(shared, |s| {
                s.lock().expect("daemon state lock").rules_in_force.clone()
            })
            .await
            {
                let _ = reply.send(rules);
            }
        }
        control::Request::Status(reply) => {
            if let Some(status) =
                blocking(shared, |s| s.lock().expect("daemon state lock").status()).await
            {
                let _ = reply.send(status);
            }
        }
    }
}

/// Shutdown: writes what the proxy learned, then keeps the programs attached or detaches
/// them, as `on_exit` says.
fn stop(shared: &Shared) -> anyhow::Result<()> {
    tasks::STOPPING.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut daemon = shared.lock().expect("daemon state lock");
    if std::mem::take(&mut daemon.dns_dirty) || daemon.dns_journal.lines() > 0 {
        daemon.dns_journal.set_aside();
        save_learned(&daemon.config.state_dir, &daemon.dns.saved());
    }
    match daemon.config.on_exit {
        OnExit::Keep => {
            info!(
                pins = %daemon.config.pin_dir.display(),
                "programs stay attached and keep enforcing (on_exit = \"keep\"); the next start adopts them"
            );
        }
        OnExit::Detach => {
            if daemon.config.hold_forwarding {
                // Nothing forwards unfiltered: the next start turns it on once attached.
                interfaces::set_forwarding(&mut daemon.interfaces, false);
            }
            daemon.datapath.unpin_all()?;
            if daemon.config.dns.as_ref().is_some_and(|d| d.steer)
                && let Err(err) = dns::steer::remove()
            {
                warn!("removing the DNS steering table: {err:#}");
            }
            info!("programs detached and pins removed (on_exit = \"detach\")");
        }
    }
    Ok(())
}
