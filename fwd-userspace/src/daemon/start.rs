//! Start-up: from the config to a policy in force and the programs attached, and the one
//! apply that start-up and reload share.

use std::path::Path;

use tracing::{info, warn};

use crate::{
    compile::{Compiled, RuleIds, tables::SlotTables},
    config::{Action, Config, InterfaceMode},
    datapath::{Datapath, DatapathOptions, Hook, InstallTimings, TableCapacity},
    net::own_addresses,
};

use super::{Daemon, compile_config, dns, interfaces, state, tasks::forward_program_log, unix_now};

/// Start-up: reads the config, compiles, loads the datapath (adopting an earlier run's
/// pins), puts the policy in force with the names the proxy learned last time, attaches
/// the programs. The daemon state, the denied-sample ring and the generation in force.
pub(super) fn start(
    config_path: &Path,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<(Daemon, aya::maps::RingBuf<aya::maps::MapData>, String)> {
    // The rule ids of the last run, so counters keep their meaning across a restart.
    let mut config = Config::load(config_path)?;
    if let Some(listen) = metrics_listen {
        config.metrics_listen = listen;
    }
    let state_dir = config.state_dir.clone();
    // One daemon at a time, before anything is read or changed (the datapath locks the
    // pin directory as it opens it).
    let state_lock = crate::lock::state_dir(&state_dir)?;
    let recorded = state::load(&state_dir);
    let previous_ids = recorded
        .as_ref()
        .map_or_else(RuleIds::default, state::Recorded::rule_ids);
    let (compiled, views) = compile_config(&config, &previous_ids)?;
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
        ephemeral_pins: config.ephemeral_pins,
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
    let mut ifaces = interfaces::Interfaces {
        own_addresses: crate::net::own_addresses(),
        ..interfaces::Interfaces::default()
    };
    // A gateway whose LAN interfaces have no pinned programs to adopt forwards nothing
    // until they are attached (a restart that adopts them never stops forwarding).
    if config.hold_forwarding
        && !config
            .gateway_interfaces()
            .iter()
            .all(|i| datapath.has_pinned_link(i, Hook::Xdp))
    {
        interfaces::set_forwarding(&mut ifaces, false);
    }
    apply(
        &mut datapath,
        &config,
        &compiled,
        &mut table,
        generation,
        None,
    )?;
    // Later installs (reloads) leave the old slot's clean-up to their caller, which waits
    // for the programs without holding the daemon's lock.
    datapath.defer_slot_clear(true);
    let restored = table.addresses_active();
    if restored > 0 {
        info!(
            names = table.names_active(),
            addresses = restored,
            "learned DNS names restored"
        );
    }
    // Interfaces that do not exist yet get their programs when they appear.
    interfaces::reconcile(&mut datapath, &config, &mut ifaces, true)?;
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
    let status = format!(
        "generation {generation} in force, {} rules",
        compiled.image.rules.len()
    );

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
        // What was restored is saved once more, so a journal read at start is taken in.
        dns_dirty: restored > 0,
        dns_journal: dns::Journal::new(&config.state_dir),
        dns_stats: None,
        dns_listen: Vec::new(),
        interfaces: ifaces,
        rules_in_force: views,
        confirm: None,
        rollbacks: 0,
        metrics_override: metrics_listen,
        history: Default::default(),
        _state_lock: state_lock,
    };
    daemon.record(&compiled);
    Ok((daemon, denied, status))
}

/// Puts `compiled` in force under `config`, with the names `table` learned judged again
/// under it: the policy, those names, the exemptions and the action change with one flip.
/// Start-up and reload both come here; on an error the policy in force stays.
pub(super) fn apply(
    datapath: &mut Datapath,
    config: &Config,
    compiled: &Compiled,
    table: &mut dns::DnsTable,
    generation: u32,
    tables: Option<crate::datapath::PreparedTables>,
) -> Result<InstallTimings, crate::datapath::DatapathError> {
    let learned = table.rebuild(&compiled.image);
    datapath.apply_prepared(
        &compiled.image,
        generation,
        learned,
        &exemptions(config),
        config.action == Action::Audit,
        tables,
    )
}

/// What always passes: the config's exemptions, and a gateway's own addresses (it is not
/// what the policy protects; a host's are, or nothing it receives would be judged).
pub(super) fn exemptions(config: &Config) -> Vec<ipnet::IpNet> {
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
