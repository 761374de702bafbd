//! `fwd stats`: the pinned counters, read straight from the bpf filesystem. It needs no
//! running daemon: after a crash, or with `on_exit = "keep"` after a stop, the programs go
//! on counting and this is where to read it.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fwd_common::FwdConfig;
use serde::Serialize;

use crate::{
    config::{Config, DEFAULT_PIN_DIR, DEFAULT_STATE_DIR},
    daemon::state,
    datapath::{PinnedState, RuleCounters},
    policy::RuleRef,
};

#[derive(clap::Args, Debug)]
pub struct StatsArgs {
    /// The daemon's config (for its pin_dir and state_dir). A missing file means the
    /// defaults.
    #[arg(long, default_value = crate::config::DEFAULT_CONFIG)]
    config: PathBuf,
    /// Read the pins here instead of the config's pin_dir.
    #[arg(long)]
    pin_dir: Option<PathBuf>,
    /// Read the recorded rule names here instead of the config's state_dir.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct RuleStats {
    id: u32,
    /// `vendor` and `rule` in the JSON.
    #[serde(flatten)]
    name: RuleRef,
    service: String,
    outbound_packets: u64,
    outbound_bytes: u64,
    inbound_packets: u64,
    inbound_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Stats {
    pin_dir: PathBuf,
    generation: u32,
    action: &'static str,
    active_slot: u32,
    /// The generation the recorded rule names belong to (0: none recorded).
    names_generation: u32,
    links: Vec<String>,
    flows_active: u64,
    flow_capacity: u32,
    rules: Vec<RuleStats>,
    /// (reason, packets, bytes)
    reasons: Vec<(String, u64, u64)>,
}

fn dirs(args: &StatsArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (pin, state) = if args.config.exists() {
        let config = Config::load(&args.config).with_context(
            || "reading the config for pin_dir and state_dir (or pass --pin-dir and --state-dir)",
        )?;
        (config.pin_dir, config.state_dir)
    } else {
        (
            PathBuf::from(DEFAULT_PIN_DIR),
            PathBuf::from(DEFAULT_STATE_DIR),
        )
    };
    Ok((
        args.pin_dir.clone().unwrap_or(pin),
        args.state_dir.clone().unwrap_or(state),
    ))
}

fn collect(pin_dir: &Path, state_dir: &Path) -> anyhow::Result<Stats> {
    let pinned = PinnedState::open(pin_dir)?;
    let config = pinned.config()?;
    let recorded = state::load(state_dir).unwrap_or_default();
    let counters = pinned.rule_counters(recorded.rules.iter().map(|r| r.id))?;
    let rules = recorded
        .rules
        .iter()
        .zip(counters)
        .map(|(r, c): (_, RuleCounters)| RuleStats {
            id: r.id,
            name: r.name.clone(),
            service: r.service.clone(),
            outbound_packets: c.outbound.packets,
            outbound_bytes: c.outbound.bytes,
            inbound_packets: c.inbound.packets,
            inbound_bytes: c.inbound.bytes,
        })
        .collect();
    let reasons = pinned
        .reason_counters()?
        .into_iter()
        .map(|c| {
            let t = c.total();
            (c.reason.label().to_string(), t.packets, t.bytes)
        })
        .collect();
    Ok(Stats {
        pin_dir: pin_dir.to_path_buf(),
        generation: config.generation,
        action: if config.mode == FwdConfig::MODE_AUDIT {
            "audit"
        } else {
            "enforce"
        },
        active_slot: config.active_slot.into(),
        names_generation: recorded.generation,
        links: pinned.links(),
        flows_active: pinned.flows_active()?,
        flow_capacity: pinned.flow_capacity(),
        rules,
        reasons,
    })
}

pub fn run(args: &StatsArgs) -> anyhow::Result<()> {
    let (pin_dir, state_dir) = dirs(args)?;
    let stats = collect(&pin_dir, &state_dir)?;
    if args.json {
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(());
    }
    println!(
        "pins {}: policy generation {} ({}), slot {}",
        stats.pin_dir.display(),
        stats.generation,
        stats.action,
        stats.active_slot
    );
    if stats.links.is_empty() {
        println!("links: none pinned (nothing is attached by a pinned link)");
    }
    for link in &stats.links {
        println!("link: {link}");
    }
    println!(
        "live flows: {} of {}",
        stats.flows_active, stats.flow_capacity
    );
    if stats.names_generation != stats.generation {
        println!(
            "note: rule names are recorded for generation {}, the pins run {}; names may be off",
            stats.names_generation, stats.generation
        );
    }
    println!(
        "{:<40} {:>12} {:>14} {:>12} {:>14}",
        "rule", "out packets", "out bytes", "in packets", "in bytes"
    );
    for r in &stats.rules {
        println!(
            "{:<40} {:>12} {:>14} {:>12} {:>14}",
            r.name.to_string(),
            r.outbound_packets,
            r.outbound_bytes,
            r.inbound_packets,
            r.inbound_bytes
        );
    }
    println!("{:<40} {:>12} {:>14}", "reason", "packets", "bytes");
    for (reason, packets, bytes) in &stats.reasons {
        println!("{reason:<40} {packets:>12} {bytes:>14}");
    }
    Ok(())
}
