//! A class's port entries as the ordered steps of its chain (protocol and port-range
//! matches with their verdicts), in fwd's precedence.

use std::collections::HashMap;

use fwd_common::{PortVerdict, proto};

use crate::compile::MapImage;

use super::{
    plan::protocol_name,
    ranges::{Coalesce, disjoint_ranges},
};

/// A port key without its class and direction: protocol << 16 | port.
pub(super) const PROTO_PORT_BITS: u8 = 24;

/// The port key's prefix length where the protocol begins.
pub(super) const PROTO_OFFSET_BITS: u32 = 40;

/// Which packets a step of a class decision covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Match {
    /// Every packet.
    All,
    /// TCP or UDP with the port in `lo..=hi`.
    Ports { protocol: u8, lo: u16, hi: u16 },
    /// Protocols `lo..=hi`, none of them TCP or UDP (fwd reads no port of them: port 0).
    Protocols { lo: u8, hi: u8 },
    /// Every protocol but TCP and UDP.
    PortlessProtocols,
}

/// Which port of the packet a step reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum PortField {
    /// The destination port: the remote's on egress, the local one on ingress.
    Destination,
    /// The source port: the remote's on ingress.
    Source,
}

/// One rule of a class chain: packets that `covers` go to `verdict`'s rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Step {
    pub field: PortField,
    pub covers: Match,
    pub verdict: PortVerdict,
}

impl Match {
    /// Whether a packet of `protocol` with `port` in the step's field is covered.
    #[cfg(test)]
    pub fn contains(self, protocol: u8, port: u16) -> bool {
        match self {
            Match::All => true,
            Match::Ports {
                protocol: p,
                lo,
                hi,
            } => protocol == p && (lo..=hi).contains(&port),
            Match::Protocols { lo, hi } => (lo..=hi).contains(&protocol),
            Match::PortlessProtocols => !has_ports(protocol),
        }
    }
}

pub(super) fn has_ports(protocol: u8) -> bool {
    protocol == proto::TCP || protocol == proto::UDP
}

#[cfg(test)]
/// The first step covering a packet: what the class chain does with it.
pub(super) fn first_step(
    steps: &[Step],
    protocol: u8,
    dst_port: u16,
    src_port: u16,
) -> Option<&Step> {
    steps.iter().find(|s| {
        let port = match s.field {
            PortField::Destination => dst_port,
            PortField::Source => src_port,
        };
        s.covers.contains(protocol, port)
    })
}

/// A class's port entries of one direction byte as (protocol << 16 | port, length, verdict).
pub(super) type ProtoPortEntries = Vec<(u128, u8, PortVerdict)>;

/// The disjoint runs of one (class, direction byte): which verdict owns each
/// (protocol, port), with the kernel trie's longest-prefix semantics.
pub(super) fn decision_runs(entries: &ProtoPortEntries) -> Vec<(u32, u32, PortVerdict)> {
    let mut runs = Vec::new();
    let mut coalesce = Coalesce::new();
    let _ = disjoint_ranges::<_, ()>(entries.clone(), PROTO_PORT_BITS, |lo, hi, v| {
        if let Some(run) = coalesce.push(lo, hi, v) {
            runs.push(run);
        }
        Ok(())
    });
    runs.extend(coalesce.finish());
    runs.into_iter()
        .map(|(lo, hi, v)| (lo as u32, hi as u32, v))
        .collect()
}

/// The steps that reproduce `runs` when read from `field`: TCP and UDP by port, other
/// protocols by number (fwd sees port 0 for them).
pub(super) fn steps_of(runs: &[(u32, u32, PortVerdict)], field: PortField) -> Vec<Step> {
    const FULL: u32 = (1 << PROTO_PORT_BITS) - 1;
    if let [(0, FULL, verdict)] = runs {
        return vec![Step {
            field,
            covers: Match::All,
            verdict: *verdict,
        }];
    }
    let mut steps = Vec::new();
    let mut portless: [Option<PortVerdict>; 256] = [None; 256];
    for &(lo, hi, verdict) in runs {
        for protocol in [proto::TCP, proto::UDP] {
            let base = u32::from(protocol) << 16;
            let (a, b) = (lo.max(base), hi.min(base | 0xffff));
            if a <= b {
                steps.push(Step {
                    field,
                    covers: Match::Ports {
                        protocol,
                        lo: (a & 0xffff) as u16,
                        hi: (b & 0xffff) as u16,
                    },
                    verdict,
                });
            }
        }
        // Protocols whose port 0 the run covers.
        let (first, last) = (lo.div_ceil(1 << 16), hi >> 16);
        for protocol in first..=last {
            if !has_ports(protocol as u8) {
                portless[protocol as usize] = Some(verdict);
            }
        }
    }
    let mut verdicts: Vec<PortVerdict> = portless.iter().flatten().copied().collect();
    verdicts.sort_unstable();
    verdicts.dedup();
    for verdict in verdicts {
        let mine = |p: usize| portless[p] == Some(verdict);
        if (0..256).all(|p| has_ports(p as u8) || mine(p)) {
            steps.push(Step {
                field,
                covers: Match::PortlessProtocols,
                verdict,
            });
            continue;
        }
        let mut p = 0;
        while p < 256 {
            if !mine(p) {
                p += 1;
                continue;
            }
            let lo = p;
            while p + 1 < 256 && mine(p + 1) {
                p += 1;
            }
            steps.push(Step {
                field,
                covers: Match::Protocols {
                    lo: lo as u8,
                    hi: p as u8,
                },
                verdict,
            });
            p += 1;
        }
    }
    steps
}

/// fwd's ingress precedence (lower first): the kernel's `PortVerdict::ingress_rank`, then
/// the local-port match before the remote-port one (`PortVerdict::choose_ingress`).
pub(super) fn ingress_rank(step: &Step) -> (u32, PortField) {
    (step.verdict.ingress_rank(), step.field)
}

/// The egress steps of a class. Where the runs leave no packet uncovered, the verdict with
/// the most steps becomes one catch-all step at the end (an `any`-protocol rule's gaps).
pub(super) fn egress_steps(entries: &ProtoPortEntries) -> Vec<Step> {
    let runs = decision_runs(entries);
    let mut steps = steps_of(&runs, PortField::Destination);
    let gapless = runs.first().is_some_and(|r| r.0 == 0)
        && runs
            .last()
            .is_some_and(|r| r.1 == (1 << PROTO_PORT_BITS) - 1)
        && runs.windows(2).all(|w| w[0].1 + 1 == w[1].0);
    if gapless && steps.len() > 1 {
        let mut counts: HashMap<PortVerdict, usize> = HashMap::new();
        for s in &steps {
            *counts.entry(s.verdict).or_default() += 1;
        }
        let (&most, _) = counts
            .iter()
            .max_by_key(|&(v, n)| (*n, std::cmp::Reverse(*v)))
            .expect("steps are not empty");
        steps.retain(|s| s.verdict != most);
        steps.push(Step {
            field: PortField::Destination,
            covers: Match::All,
            verdict: most,
        });
    }
    steps
}

/// The ingress steps of a class, in the order a chain must try them: each side's runs are
/// disjoint, so the first step that covers a packet is the better of its two matches.
pub(super) fn ingress_steps(local: &ProtoPortEntries, remote: &ProtoPortEntries) -> Vec<Step> {
    let mut steps = steps_of(&decision_runs(local), PortField::Destination);
    steps.extend(steps_of(&decision_runs(remote), PortField::Source));
    steps.sort_by_key(ingress_rank);
    // Nothing after a step that covers everything is reached.
    if let Some(all) = steps.iter().position(|s| s.covers == Match::All) {
        steps.truncate(all + 1);
    }
    steps
}

/// The port entries of `image`, by (class, direction byte), as decision inputs.
pub(super) fn port_entries(image: &MapImage) -> HashMap<(u32, u8), ProtoPortEntries> {
    let mut by_class: HashMap<(u32, u8), ProtoPortEntries> = HashMap::new();
    for e in &image.ports {
        let key = (u128::from(e.key.protocol) << 16) | u128::from(e.key.port());
        // Entries shorter than the protocol (none are compiled) would cover the direction.
        let len = e.prefix_len.saturating_sub(PROTO_OFFSET_BITS) as u8;
        by_class
            .entry((e.key.class(), e.key.direction))
            .or_default()
            .push((key, len, e.verdict));
    }
    by_class
}

/// The nft match of a step (with a trailing space), or nothing for `Match::All`.
pub(super) fn match_text(covers: Match, field: PortField) -> String {
    let port = match field {
        PortField::Destination => "dport",
        PortField::Source => "sport",
    };
    match covers {
        Match::All => String::new(),
        Match::Ports { protocol, lo, hi } => {
            let name = if protocol == proto::TCP { "tcp" } else { "udp" };
            match (lo, hi) {
                (0, 65535) => format!("meta l4proto {name} "),
                (lo, hi) if lo == hi => format!("{name} {port} {lo} "),
                (lo, hi) => format!("{name} {port} {lo}-{hi} "),
            }
        }
        Match::Protocols { lo, hi } if lo == hi => format!("meta l4proto {} ", protocol_name(lo)),
        Match::Protocols { lo, hi } => format!("meta l4proto {lo}-{hi} "),
        Match::PortlessProtocols => "meta l4proto != @port_protocols ".to_string(),
    }
}
