//! The control socket's protocol, which the daemon (`daemon::control`) serves and the
//! client commands (`cli::client`) speak: the root-only socket `/run/fwd/control.sock`.
//!
//! Protocol: the client sends one command line; the daemon answers with JSON lines.
//! - `monitor`: one `DeniedSample` object per line until the client hangs up.
//! - `reload`: one `ReloadReply` object once the reload is done or rejected.
//! - `status`: one `StatusReply` object.
//! - `dns`: one `DnsReply` object (learned names).

use std::{net::IpAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

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
    /// How long the accepted reload took: reading and compiling the policy and building
    /// the slot's tables (without the daemon's lock), filling the inactive slot, and
    /// flipping to it (the grace period and clearing the old slot come after, without the
    /// lock, and are in none of these).
    #[serde(default)]
    pub compile_ms: f64,
    #[serde(default)]
    pub fill_ms: f64,
    #[serde(default)]
    pub swap_ms: f64,
    /// `fwd reload --confirm`: the unix time by which `fwd confirm` must come, or the policy
    /// before this reload comes back.
    #[serde(default)]
    pub confirm_by_unix: Option<i64>,
}

/// The answer to `fwd confirm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmReply {
    /// A reload was waiting, and is now kept.
    pub ok: bool,
    pub generation: u32,
    pub message: String,
}

/// The answer to `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    pub generation: u32,
    pub rules: usize,
    pub attached: Vec<AttachedStatus>,
    /// Configured interfaces that do not exist (or could not take the programs): nothing
    /// is enforced on them until they appear.
    #[serde(default)]
    pub missing: Vec<String>,
    /// `[gateway] hold_forwarding` holds IP forwarding off (a gateway interface lacks
    /// fwd's programs).
    #[serde(default)]
    pub forwarding_held: bool,
    /// Where programs, links and maps are pinned.
    pub pin_dir: Option<PathBuf>,
    /// `persistent` (the pins outlive the daemon) or `ephemeral` (they die with it).
    #[serde(default)]
    pub pins: Option<String>,
    /// (map, entries, capacity)
    pub maps: Vec<(String, usize, u32)>,
    pub flows_active: Option<u64>,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    pub last_reload_unix: i64,
    pub action: String,
    /// A `--confirm` reload is in force: it rolls back at this unix time unless confirmed.
    #[serde(default)]
    pub confirm_by_unix: Option<i64>,
    /// Unconfirmed reloads rolled back since the daemon started.
    #[serde(default)]
    pub rollbacks: u64,
}

/// What `fwd reload --dry-run` says: whether the policy on disk would be accepted, and what
/// it would change against the one in force. Nothing is changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunReply {
    /// The reload would succeed (compiles and fits the tables).
    pub ok: bool,
    /// The generation in force (it stays).
    pub generation: u32,
    /// Rules of the policy on disk.
    pub rules: usize,
    pub error: Option<String>,
    pub warnings: Vec<String>,
    pub changes: Vec<crate::diff::RuleDiff>,
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
        for iface in &self.missing {
            writeln!(
                f,
                "missing:  {iface:<10} configured but not there: nothing enforced on it until it appears"
            )?;
        }
        if self.forwarding_held {
            writeln!(
                f,
                "forwarding: held off until every gateway interface has fwd's programs"
            )?;
        }
        if let Some(dir) = &self.pin_dir {
            match &self.pins {
                Some(p) if p == "ephemeral" => writeln!(
                    f,
                    "pins: {} (ephemeral: they die with fwd, and enforcement with them)",
                    dir.display()
                )?,
                Some(p) => writeln!(f, "pins: {} ({p})", dir.display())?,
                None => writeln!(f, "pins: {}", dir.display())?,
            }
        }
        for (map, entries, capacity) in &self.maps {
            let fill = 100.0 * *entries as f64 / f64::from((*capacity).max(1));
            writeln!(
                f,
                "map {map:<6} {entries:>9} / {capacity:<9} ({fill:.1}% full)"
            )?;
        }
        if let Some(by) = self.confirm_by_unix {
            writeln!(
                f,
                "unconfirmed: generation {} goes back unless `fwd confirm` comes within {} s",
                self.generation,
                (by - unix_now()).max(0)
            )?;
        }
        match self.flows_active {
            Some(n) => write!(f, "live flows: {n}"),
            None => write!(f, "live flows: unknown"),
        }
    }
}

/// A denied packet (or one audit mode passed) as `fwd monitor` shows it.
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
    /// The name the DNS proxy last answered with the remote's address, whether or not a
    /// rule names it: what the client asked for before it sent this.
    #[serde(default)]
    pub dns_name: Option<String>,
    /// The packet passed anyway: the policy or its vendor audits (`fwd monitor --audited`
    /// shows these).
    #[serde(default)]
    pub audited: bool,
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
        if let Some(name) = &self.dns_name {
            write!(f, " (the client resolved {name})")?;
        }
        if self.audited {
            write!(f, " [audit: passed]")?;
        }
        Ok(())
    }
}

/// `2026-11-21T10:04:05.123Z` from Unix milliseconds.
pub(crate) fn humantime_ms(ms: u64) -> String {
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

pub(crate) fn protocol_name(p: u8) -> String {
    match p {
        fwd_common::proto::TCP => "tcp".into(),
        fwd_common::proto::UDP => "udp".into(),
        fwd_common::proto::ICMP => "icmp".into(),
        fwd_common::proto::ICMPV6 => "icmpv6".into(),
        other => format!("ip{other}"),
    }
}

/// One learned address, as `fwd dns` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryStatus {
    pub name: String,
    /// CNAME targets after the name.
    pub via: Vec<String>,
    pub address: IpAddr,
    /// `vendor/rule` of each domain rule it opens.
    pub rules: Vec<String>,
    /// Seconds until it ends; 0 when it is past its TTL and a live flow keeps it.
    pub remaining_s: u64,
}

/// The answer to the control command `dns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsReply {
    /// Whether the proxy is configured.
    pub enabled: bool,
    pub listen: Vec<std::net::SocketAddr>,
    pub upstream: Vec<std::net::SocketAddr>,
    pub entries: Vec<EntryStatus>,
    /// (pattern, addresses held, cap)
    pub patterns: Vec<(String, usize, usize)>,
}

impl std::fmt::Display for DnsReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.enabled {
            return write!(
                f,
                "the DNS proxy is off: add a [dns] section with `upstream` to the config"
            );
        }
        let list = |a: &[std::net::SocketAddr]| {
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "DNS proxy on {}, forwarding to {}",
            list(&self.listen),
            list(&self.upstream)
        )?;
        let names: std::collections::BTreeSet<_> = self.entries.iter().map(|e| &e.name).collect();
        writeln!(
            f,
            "{} names, {} learned addresses",
            names.len(),
            self.entries.len()
        )?;
        if !self.entries.is_empty() {
            writeln!(f, "{:<40} {:<40} {:>7}  RULES", "NAME", "ADDRESS", "TTL")?;
        }
        for e in &self.entries {
            let ttl = if e.remaining_s == 0 {
                "flow".to_string()
            } else {
                format!("{}s", e.remaining_s)
            };
            let mut name = e.name.clone();
            if let Some(last) = e.via.last() {
                name = format!("{name} -> {last}");
            }
            writeln!(
                f,
                "{name:<40} {:<40} {ttl:>7}  {}",
                e.address.to_string(),
                e.rules.join(", ")
            )?;
        }
        for (pattern, held, cap) in &self.patterns {
            if held >= cap {
                writeln!(
                    f,
                    "pattern {pattern} is full: {held} of {cap} addresses (raise [dns] max_addresses)"
                )?;
            }
        }
        Ok(())
    }
}

use crate::clock::unix_now;

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
            dns_name: None,
            audited: false,
        };
        let text = sample.to_string();
        assert!(text.starts_with("2026-11-21T06:00:00.123Z lan0"), "{text}");
        assert!(
            text.ends_with(
                "lan0     out tcp    10.250.0.2:51000 -> [2001:db8::1]:443 no_port_match (nearest rule: acme/web)"
            ),
            "{text}"
        );
        let audited = DeniedSample {
            audited: true,
            ..sample
        };
        assert!(
            audited
                .to_string()
                .ends_with("(nearest rule: acme/web) [audit: passed]")
        );
        // A sample of an earlier daemon (no `audited`) reads as denied.
        let json = serde_json::to_value(&audited).unwrap();
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("audited");
        let read: DeniedSample = serde_json::from_value(old).unwrap();
        assert!(!read.audited);
    }
}
