//! `fwd run`: load, attach, serve metrics, reload on SIGHUP, detach on SIGINT/SIGTERM.

pub mod control;
pub mod dns;
pub mod metrics;
pub mod state;
mod watch;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::{self, Action, Config, InterfaceMode, OnExit};
use crate::{
    compile::tables::SlotTables,
    compile::{Compiled, RuleIds},
    datapath::{Datapath, DatapathOptions, InstallTimings, TableCapacity},
    net::own_addresses,
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
    /// The table changed since `learned.json` was last written.
    dns_dirty: bool,
    /// The proxy's counters, when it runs.
    dns_stats: Option<Arc<dns::DnsStats>>,
    /// Where the proxy listens, when it runs.
    dns_listen: Vec<std::net::SocketAddr>,
}

type Shared = Arc<Mutex<Daemon>>;

/// Loads the config and compiles its policies, keeping the rule ids of `previous`; nothing
/// touches the kernel.
pub fn load_policy(config_path: &Path, previous: &RuleIds) -> anyhow::Result<(Config, Compiled)> {
    let config = Config::load(config_path)?;
    let compiled = compile_config(&config, previous)?;
    Ok((config, compiled))
}

/// Compiles the policies `config` selects, keeping the rule ids of `previous`.
fn compile_config(config: &Config, previous: &RuleIds) -> anyhow::Result<Compiled> {
    let (_, compiled) =
        config.compile_policies(&config.policy_dir, policy::Date::today(), previous)?;
    Ok(compiled)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Daemon {
    /// Recompiles and installs atomically; on any error the running policy stays.
    fn reload(&mut self) -> anyhow::Result<(Compiled, Duration, InstallTimings)> {
        let started = Instant::now();
        let (config, compiled) = load_policy(&self.config_path, &self.rule_ids)?;
        let compile_time = started.elapsed();
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
                "[dns] listen, upstream, timeout_ms or steer",
            ),
        ];
        for (changed, key) in restart_needed {
            if changed {
                warn!("{key} changed: it takes effect when fwd restarts");
            }
        }
        let generation = self.generation.wrapping_add(1).max(1);
        // Learned names are judged again under the new rules; the table changes only if
        // the install succeeds.
        let mut table = self.dns.clone();
        match &config.dns {
            Some(d) => table.set_limits(d.limits),
            None => table = dns::DnsTable::new(dns::Limits::default()),
        }
        let timings = apply(
            &mut self.datapath,
            &config,
            &compiled,
            &mut table,
            generation,
        )?;
        self.dns = table;
        self.dns_dirty = true;
        self.config = config;
        self.generation = generation;
        self.rule_ids = compiled.ids.clone();
        self.last_reload_unix = unix_now();
        self.record(&compiled);
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
            pin_dir: self.datapath.pin_dir().map(Path::to_path_buf),
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

    /// Opens what a DNS answer opens (the proxy calls this before it answers the client).
    fn learn(&mut self, answer: &dns::Answer) -> anyhow::Result<dns::Observed> {
        let image = self
            .datapath
            .active_image()
            .context("no policy installed")?;
        let observed = self.dns.observe(image, answer, unix_ms());
        dns::apply(&mut self.datapath, &observed.changes)
            .context("writing learned addresses into the datapath")?;
        for pattern in &observed.now_full {
            warn!(
                %pattern,
                max_addresses = self.dns.limits().max_addresses,
                "DNS: this name pattern holds as many addresses as it may; more are answered but not opened until some expire (raise [dns] max_addresses)"
            );
        }
        if observed.opened > 0 {
            self.dns_dirty = true;
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
        dns::apply(&mut self.datapath, &changes)
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

/// What always passes: the config's exemptions, and a gateway's own addresses (it is not
/// what the policy protects; a host's are, or nothing it receives would be judged).
/// Puts `compiled` in force under `config`, with the names `table` learned judged again
/// under it: the policy, those names, the exemptions and the action change with one flip.
/// Start-up and reload both come here; on an error the policy in force stays.
fn apply(
    datapath: &mut Datapath,
    config: &Config,
    compiled: &Compiled,
    table: &mut dns::DnsTable,
    generation: u32,
) -> Result<InstallTimings, crate::datapath::DatapathError> {
    let learned = table.rebuild(&compiled.image);
    datapath.apply(
        &compiled.image,
        generation,
        learned,
        &exemptions(config),
        config.action == Action::Audit,
    )
}

fn exemptions(config: &Config) -> Vec<ipnet::IpNet> {
    let mut exempt = config.exempt.clone();
    // A host's own proxy asks the upstream resolvers through the filtered uplink.
    if let Some(d) = &config.dns
        && config
            .interfaces
            .iter()
            .any(|i| i.mode == InterfaceMode::Host)
    {
        exempt.extend(d.upstream.iter().map(|u| ipnet::IpNet::from(u.ip())));
    }
    if !config.gateway_interfaces().is_empty() {
        exempt.extend(own_addresses());
    }
    exempt
}

/// Tells systemd (Type=notify) where the daemon is; a no-op outside systemd.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, state) {
        warn!(%err, "notifying systemd");
    }
}

/// Reloads under the lock, counts the result and says what happened.
fn reload_and_report(shared: &Shared) -> control::ReloadReply {
    let mut daemon = shared.lock().expect("daemon state lock");
    let mut state = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        state.push(now);
    }
    notify(&state);
    let reply = reload_reply(&mut daemon);
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

fn reload_reply(daemon: &mut Daemon) -> control::ReloadReply {
    match daemon.reload() {
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
            }
        }
    }
}

/// Passes the programs' log records (aya-log) to the daemon's log as they arrive.
async fn forward_program_log(log: crate::datapath::ProgramLog) {
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
async fn read_denied_samples(
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
        if samples.receiver_count() == 0 || events.is_empty() {
            continue;
        }
        let now = crate::datapath::monotonic_ns();
        let described: Vec<_> = {
            let daemon = shared.lock().expect("daemon state lock");
            let image = daemon.datapath.active_image();
            events
                .iter()
                .map(|e| control::describe(e, image, now))
                .collect()
        };
        for sample in described {
            let _ = samples.send(sample);
        }
    }
}

/// The daemon as the DNS proxy's learner.
struct DaemonLearner {
    shared: Shared,
}

impl dns::Learner for DaemonLearner {
    fn learn(&self, answer: dns::Answer) -> anyhow::Result<dns::Observed> {
        self.shared
            .lock()
            .expect("daemon state lock")
            .learn(&answer)
    }

    fn max_ttl(&self) -> u32 {
        let daemon = self.shared.lock().expect("daemon state lock");
        daemon.dns.limits().max_ttl
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
    });
    let proxy = Arc::new(dns::Proxy::new(
        d.upstream.clone(),
        Duration::from_millis(d.timeout_ms),
        learner,
        stats.clone(),
    ));
    proxy.serve(&listen).await?;
    if d.steer {
        let gateways = config.gateway_interfaces();
        let port = listen.first().map_or(53, std::net::SocketAddr::port);
        dns::steer::install(&gateways, port)?;
        info!(
            interfaces = ?gateways,
            table = dns::steer::TABLE,
            "the LAN's DNS to any resolver is redirected to the proxy"
        );
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

/// Every second: ends learned entries past their time with no live flow, and writes
/// `learned.json` if the table changed (so a crash forgets at most a second of answers).
async fn keep_learned(shared: Shared, state_dir: PathBuf) {
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
            std::mem::take(&mut daemon.dns_dirty).then(|| daemon.dns.saved())
        })
        .await;
        if let Ok(Some(saved)) = saved {
            save_learned(&state_dir, &saved);
        }
    }
}

fn save_learned(state_dir: &Path, saved: &dns::Saved) {
    if let Err(err) = dns::save(state_dir, saved) {
        warn!(dir = %state_dir.display(), %err, "cannot write the learned DNS names; a restart forgets them");
    }
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    // The rule ids of the last run, so counters keep their meaning across a restart.
    let config = Config::load(config_path)?;
    let state_dir = config.state_dir.clone();
    let recorded = state::load(&state_dir);
    let previous_ids = recorded
        .as_ref()
        .map_or_else(RuleIds::default, state::Recorded::rule_ids);
    let compiled = compile_config(&config, &previous_ids)?;
    for warning in &compiled.warnings {
        warn!("{warning}");
    }
    if config.interfaces.is_empty() {
        anyhow::bail!(
            "{}: no [[interface]] configured; add one, e.g.\n[[interface]]\nname = \"lan0\"\nmode = \"gateway\"",
            config_path.display()
        );
    }
    // The tables are preallocated arrays: sized for this policy, with room to grow.
    let sizes = SlotTables::build(&compiled.image, &exemptions(&config)).sizes();
    let mut datapath = Datapath::load_with(&DatapathOptions {
        tables: TableCapacity::for_policy(sizes),
        flow_capacity: config.flows.capacity,
        tcp_timeout_s: config.flows.tcp_timeout_s,
        udp_timeout_s: config.flows.udp_timeout_s,
        other_timeout_s: config.flows.other_timeout_s,
        pin_dir: Some(config.pin_dir.clone()),
        ..DatapathOptions::default()
    })?;
    let adoption = datapath.adoption().clone();
    if adoption.generation != 0 {
        info!(
            pins = %config.pin_dir.display(),
            generation = adoption.generation,
            maps_kept = adoption.maps_kept.len(),
            "adopting the pinned datapath of an earlier run: enforcement and counters continue"
        );
        match &recorded {
            Some(r) => datapath.set_adopted_rules(r.rule_names()),
            None => warn!(
                dir = %state_dir.display(),
                "no record of the earlier run's rule ids: rule counters start from zero"
            ),
        }
    }
    for (map, why) in &adoption.maps_recreated {
        warn!(%map, %why, "pinned map recreated empty");
    }
    let generation = adoption.generation.wrapping_add(1).max(1);
    // The names the proxy learned last time go in with the policy: a restart opens no gap.
    let mut table = dns::DnsTable::new(
        config
            .dns
            .as_ref()
            .map_or_else(dns::Limits::default, |d| d.limits),
    );
    if config.dns.is_some()
        && let Some(saved) = dns::load(&state_dir)
    {
        table.restore(saved);
    }
    apply(&mut datapath, &config, &compiled, &mut table, generation)?;
    let restored = table.addresses_active();
    if restored > 0 {
        info!(
            names = table.names_active(),
            addresses = restored,
            "learned DNS names restored"
        );
    }
    for iface in &config.interfaces {
        match iface.mode {
            InterfaceMode::Gateway => datapath.attach_gateway(&iface.name)?,
            InterfaceMode::Host => datapath.attach_host(&iface.name)?,
        }
    }
    datapath.prune_stale_links()?;
    info!(
        rules = compiled.image.rules.len(),
        classes = compiled.image.classes,
        dst4 = compiled.image.dst4.len(),
        dst6 = compiled.image.dst6.len(),
        ports = compiled.image.ports.len(),
        action = ?config.action,
        "policy installed"
    );

    let denied = datapath.take_denied_samples()?;
    if let Some(log) = datapath.take_program_log() {
        tokio::spawn(forward_program_log(log));
    }

    let daemon = Daemon {
        datapath,
        config_path: config_path.to_path_buf(),
        config: config.clone(),
        generation,
        rule_ids: compiled.ids.clone(),
        reloads_ok: 0,
        reloads_error: 0,
        last_reload_unix: unix_now(),
        dns: table,
        dns_dirty: false,
        dns_stats: None,
        dns_listen: Vec::new(),
    };
    daemon.record(&compiled);
    let shared: Shared = Arc::new(Mutex::new(daemon));

    if let Some(d) = &config.dns {
        start_dns(&shared, &config, d).await?;
    }

    let (samples, _) = tokio::sync::broadcast::channel(1024);
    let control = control::bind(&config.control_socket)?;
    let (request_tx, mut request_rx) = tokio::sync::mpsc::channel::<control::Request>(8);
    tokio::spawn(control::serve(control, samples.clone(), request_tx));
    tokio::spawn(read_denied_samples(denied, shared.clone(), samples));

    let listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("binding the metrics listener {}", config.metrics_listen))?;
    info!("metrics at http://{}/metrics", config.metrics_listen);
    let app = Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(shared.clone());

    let status = format!(
        "generation {generation} in force, {} rules",
        compiled.image.rules.len()
    );
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
        watch::spawn(&config, Duration::from_millis(config.watch.debounce_ms))
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
                    let reloader = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || reload_and_report(&reloader)).await;
                }
                Some(changed) = changes.recv() => {
                    info!(path = %changed.display(), "policy or config changed on disk; reloading");
                    let reloader = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || reload_and_report(&reloader)).await;
                }
                Some(request) = request_rx.recv() => {
                    let shared = reloader.clone();
                    match request {
                        control::Request::Reload(reply) => {
                            if let Ok(report) =
                                tokio::task::spawn_blocking(move || reload_and_report(&shared)).await
                            {
                                let _ = reply.send(report);
                            }
                        }
                        control::Request::Dns(reply) => {
                            if let Ok(status) = tokio::task::spawn_blocking(move || {
                                shared.lock().expect("daemon state lock").dns_status()
                            })
                            .await
                            {
                                let _ = reply.send(status);
                            }
                        }
                        control::Request::Status(reply) => {
                            if let Ok(status) = tokio::task::spawn_blocking(move || {
                                shared.lock().expect("daemon state lock").status()
                            })
                            .await
                            {
                                let _ = reply.send(status);
                            }
                        }
                    }
                }
            }
        }
        info!("stopping");
        notify(&[sd_notify::NotifyState::Stopping]);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving metrics")?;

    let mut daemon = shared.lock().expect("daemon state lock");
    if std::mem::take(&mut daemon.dns_dirty) {
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
