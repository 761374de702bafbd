//! Prometheus exposition of the datapath's counters (names are a stable contract).

use fwd_common::Reason;
use prometheus::{Encoder as _, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::{
    compile::CompiledRule,
    datapath::{ReasonCounters, RuleCounters},
};

/// The DNS proxy's part of a scrape.
pub struct DnsSnapshot<'a> {
    pub stats: &'a super::dns::DnsStats,
    pub names_active: usize,
    pub addresses_active: usize,
}

/// Everything one scrape shows.
pub struct Snapshot<'a> {
    pub rules: &'a [CompiledRule],
    /// Indexed like `rules`.
    pub rule_counters: &'a [RuleCounters],
    pub reasons: &'a [ReasonCounters],
    pub generation: u32,
    /// Whether a vendor's rules are in audit mode (the whole policy, or that vendor).
    pub audit: &'a dyn Fn(&str) -> bool,
    pub flows_active: Option<u64>,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    pub last_reload_unix: i64,
    /// (map, entries, capacity)
    pub maps: &'a [(&'static str, usize, u32)],
    /// When the DNS proxy runs.
    pub dns: Option<DnsSnapshot<'a>>,
    /// Each configured interface and whether fwd's programs are on it.
    pub interfaces: &'a [(&'a str, bool)],
    /// (interface, change) -> times it appeared, was recreated, went or failed to attach.
    pub interface_changes: &'a std::collections::BTreeMap<(String, &'static str), u64>,
    /// Each configured feed's state (`state_dir/feeds.json`).
    pub feeds: &'a [(&'a str, crate::feeds::FeedState)],
}

/// Renders the Prometheus text format.
pub fn render(s: &Snapshot<'_>) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    // Only what identifies a series: a text edited in a policy (a service's name) or an
    // audit/enforce switch must not start new series. Those are in fwd_rule_info and
    // fwd_vendor_mode, to join on.
    let labels = ["vendor", "rule", "direction"];
    let packets = IntCounterVec::new(
        Opts::new("fwd_rule_packets_total", "Packets that matched a rule."),
        &labels,
    )?;
    let bytes = IntCounterVec::new(
        Opts::new(
            "fwd_rule_bytes_total",
            "Bytes of packets that matched a rule.",
        ),
        &labels,
    )?;
    let info = IntGaugeVec::new(
        Opts::new(
            "fwd_rule_info",
            "1 for each rule in force, with what describes it (join on vendor and rule).",
        ),
        &["vendor", "rule", "service", "level", "source"],
    )?;
    let modes = IntGaugeVec::new(
        Opts::new(
            "fwd_vendor_mode",
            "1 for each vendor in force, with whether its rules enforce or audit.",
        ),
        &["vendor", "mode"],
    )?;
    // `direction` is the packets' direction: an egress rule's replies count as ingress.
    for (rule, counters) in s.rules.iter().zip(s.rule_counters) {
        for (direction, counter) in [("egress", counters.outbound), ("ingress", counters.inbound)] {
            let values = [rule.vendor.as_str(), rule.rule.as_str(), direction];
            packets.with_label_values(&values).inc_by(counter.packets);
            bytes.with_label_values(&values).inc_by(counter.bytes);
        }
        let source = rule.source.file.display().to_string();
        info.with_label_values(&[
            rule.vendor.as_str(),
            rule.rule.as_str(),
            rule.service.as_str(),
            rule.level.as_str(),
            source.as_str(),
        ])
        .set(1);
        let mode = if (s.audit)(&rule.vendor) {
            "audit"
        } else {
            "enforce"
        };
        modes
            .with_label_values(&[rule.vendor.as_str(), mode])
            .set(1);
    }
    let build = IntGaugeVec::new(
        Opts::new("fwd_build_info", "1, with the version of the running fwd."),
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let drops = IntCounterVec::new(
        Opts::new(
            "fwd_drop_packets_total",
            "Packets dropped (or, in audit mode, that would have been), by reason and by the \
             packets' direction (egress: from the protected network).",
        ),
        &["reason", "direction"],
    )?;
    for c in s.reasons {
        if c.reason.is_drop() || c.reason == Reason::AuditWouldDrop {
            for (direction, counter) in [("egress", c.outbound), ("ingress", c.inbound)] {
                drops
                    .with_label_values(&[c.reason.label(), direction])
                    .inc_by(counter.packets);
            }
        }
    }
    let exempt = IntCounterVec::new(
        Opts::new(
            "fwd_exempt_packets_total",
            "Management packets passed without rules (ARP, neighbour discovery, exemptions).",
        ),
        &[] as &[&str],
    )?;
    if let Some(c) = s.reasons.iter().find(|c| c.reason == Reason::Exempt) {
        exempt
            .with_label_values(&[] as &[&str])
            .inc_by(c.total().packets);
    }
    let generation = IntGauge::new("fwd_policy_generation", "Generation of the active policy.")?;
    generation.set(i64::from(s.generation));
    let reloads = IntCounterVec::new(
        Opts::new("fwd_reloads_total", "Policy reloads, by result."),
        &["result"],
    )?;
    reloads.with_label_values(&["ok"]).inc_by(s.reloads_ok);
    reloads
        .with_label_values(&["error"])
        .inc_by(s.reloads_error);
    let last_reload = IntGauge::new(
        "fwd_last_reload_timestamp_seconds",
        "Unix time of the last successful policy load.",
    )?;
    last_reload.set(s.last_reload_unix);
    let entries = IntGaugeVec::new(
        Opts::new("fwd_map_entries", "Entries in the active policy's maps."),
        &["map"],
    )?;
    let capacity = IntGaugeVec::new(
        Opts::new("fwd_map_capacity", "Capacity of the policy maps."),
        &["map"],
    )?;
    for (map, n, cap) in s.maps {
        entries.with_label_values(&[*map]).set(*n as i64);
        capacity.with_label_values(&[*map]).set(i64::from(*cap));
    }
    if let Some(n) = s.flows_active {
        let flows = IntGauge::new(
            "fwd_flows_active",
            "Flows in the flow table that are still live (replies pass).",
        )?;
        flows.set(n as i64);
        registry.register(Box::new(flows))?;
    }
    registry.register(Box::new(packets))?;
    registry.register(Box::new(bytes))?;
    registry.register(Box::new(info))?;
    registry.register(Box::new(modes))?;
    registry.register(Box::new(build))?;
    registry.register(Box::new(drops))?;
    registry.register(Box::new(exempt))?;
    registry.register(Box::new(generation))?;
    registry.register(Box::new(reloads))?;
    registry.register(Box::new(last_reload))?;
    registry.register(Box::new(entries))?;
    registry.register(Box::new(capacity))?;
    let attached = IntGaugeVec::new(
        Opts::new(
            "fwd_interface_attached",
            "1 if fwd's programs are on this configured interface, 0 if it is missing.",
        ),
        &["interface"],
    )?;
    for (iface, on) in s.interfaces {
        attached.with_label_values(&[*iface]).set(i64::from(*on));
    }
    let changes = IntCounterVec::new(
        Opts::new(
            "fwd_interface_changes_total",
            "Configured interfaces that appeared, were recreated, went, or failed to take the programs.",
        ),
        &["interface", "change"],
    )?;
    for ((iface, change), n) in s.interface_changes {
        changes
            .with_label_values(&[iface.as_str(), change])
            .inc_by(*n);
    }
    registry.register(Box::new(attached))?;
    registry.register(Box::new(changes))?;
    if !s.feeds.is_empty() {
        register_feeds(&registry, s.feeds)?;
    }
    if let Some(dns) = &s.dns {
        register_dns(&registry, dns)?;
    }
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    Ok(String::from_utf8(out).expect("the text encoder writes UTF-8"))
}

/// The feeds' series, from what their updates recorded.
fn register_feeds(
    registry: &Registry,
    feeds: &[(&str, crate::feeds::FeedState)],
) -> Result<(), prometheus::Error> {
    let success = IntGaugeVec::new(
        Opts::new(
            "fwd_feed_last_success_timestamp_seconds",
            "Unix time of the feed's last fetch that ended well (updated, unchanged, proposed); 0 if none.",
        ),
        &["feed"],
    )?;
    let entries = IntGaugeVec::new(
        Opts::new(
            "fwd_feed_entries",
            "Distinct prefixes of the feed's list in force.",
        ),
        &["feed"],
    )?;
    let updates = IntCounterVec::new(
        Opts::new(
            "fwd_feed_updates_total",
            "Feed fetches by result: updated, proposed, unchanged, failed, malformed, refused.",
        ),
        &["feed", "result"],
    )?;
    for (feed, state) in feeds {
        success
            .with_label_values(&[*feed])
            .set(state.last_success_unix);
        entries
            .with_label_values(&[*feed])
            .set(state.entries as i64);
        for result in crate::feeds::Result::ALL {
            let n = state.results.get(result.name()).copied().unwrap_or(0);
            updates.with_label_values(&[*feed, result.name()]).inc_by(n);
        }
    }
    registry.register(Box::new(success))?;
    registry.register(Box::new(entries))?;
    registry.register(Box::new(updates))?;
    Ok(())
}

/// The DNS proxy's series: its counters (kept by the proxy) and the table's gauges.
pub(crate) fn register_dns(
    registry: &Registry,
    dns: &DnsSnapshot<'_>,
) -> Result<(), prometheus::Error> {
    let names = IntGauge::new(
        "fwd_dns_names_active",
        "Names whose learned addresses are open.",
    )?;
    names.set(dns.names_active as i64);
    let addresses = IntGauge::new(
        "fwd_dns_addresses_active",
        "Learned addresses open in the datapath.",
    )?;
    addresses.set(dns.addresses_active as i64);
    registry.register(Box::new(names))?;
    registry.register(Box::new(addresses))?;
    registry.register(Box::new(dns.stats.queries.clone()))?;
    registry.register(Box::new(dns.stats.answers.clone()))?;
    registry.register(Box::new(dns.stats.cap_reached.clone()))?;
    registry.register(Box::new(dns.stats.insert_seconds.clone()))?;
    registry.register(Box::new(dns.stats.steering_restored.clone()))?;
    Ok(())
}
