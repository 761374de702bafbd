//! The plan of chains: one per distinct class decision, shared by every class that makes
//! it, and the rules that write them.

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{self, Write},
};

use fwd_common::{CLASS_AUDIT, PortVerdict, direction, proto};

use crate::compile::MapImage;

use super::{
    NftOptions,
    names::counter_name,
    ranges::{Coalesce, disjoint_ranges, write_range},
    steps::{Match, ProtoPortEntries, Step, egress_steps, ingress_steps, match_text, port_entries},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dir {
    Egress,
    Ingress,
}

/// Where a remote's address sends a packet of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The class chain `e<n>` / `i<n>`.
    Chain(usize),
    /// An audited class without rules for this direction: passes as audit_would_drop.
    NoPortAudit,
}

/// A class chain: its steps, and whether what they leave is passed (audit) or dropped.
pub(super) type ClassChain = (Vec<Step>, bool);

/// Everything the script needs besides the streamed address maps.
pub(super) struct Plan<'a> {
    pub(super) image: &'a MapImage,
    /// Prefix of the reason counters (`reason`, unless a vendor has that id).
    pub(super) reasons: &'static str,
    pub(super) audit: bool,
    /// `related` rules exist: allowed egress records its remote in live4/live6.
    pub(super) live: bool,
    /// The distinct chains `e<n>` and `i<n>`.
    pub(super) egress_chains: Vec<ClassChain>,
    pub(super) ingress_chains: Vec<ClassChain>,
    /// By class id (without the audit bit); `None`: the class has nothing for the
    /// direction and is not audited, so it is left out of the map (and denied like an
    /// address no rule covers).
    pub(super) egress_target: Vec<Option<Target>>,
    pub(super) ingress_target: Vec<Option<Target>>,
}

/// The target of a class with `steps`, sharing the chain of an equal class.
pub(super) fn intern(
    chains: &mut Vec<ClassChain>,
    ids: &mut HashMap<ClassChain, usize>,
    steps: Vec<Step>,
    audited: bool,
) -> Option<Target> {
    if steps.is_empty() {
        return audited.then_some(Target::NoPortAudit);
    }
    let chain = (steps, audited);
    let id = *ids.entry(chain.clone()).or_insert_with(|| {
        chains.push(chain);
        chains.len() - 1
    });
    Some(Target::Chain(id))
}

impl<'a> Plan<'a> {
    pub(super) fn new(image: &'a MapImage, opts: &NftOptions) -> Self {
        let reasons = if image.rules.iter().any(|r| r.vendor == "reason") {
            "fwd-reason"
        } else {
            "reason"
        };
        let live = image.ports.iter().any(|e| {
            e.key.direction != direction::EGRESS && e.verdict.flags & PortVerdict::FLAG_RELATED != 0
        });
        let classes = image.classes as usize;
        let mut audited = vec![false; classes];
        for &class in image
            .dst4
            .iter()
            .map(|(_, c)| c)
            .chain(image.dst6.iter().map(|(_, c)| c))
        {
            if class & CLASS_AUDIT != 0
                && let Some(a) = audited.get_mut((class & !CLASS_AUDIT) as usize)
            {
                *a = true;
            }
        }
        // Global audit mode passes whatever a chain leaves.
        let pass = |class: usize| audited[class] || opts.audit;
        let entries = port_entries(image);
        let none = ProtoPortEntries::new();
        let get = |class: usize, dir: u8| entries.get(&(class as u32, dir)).unwrap_or(&none);
        let (mut egress_chains, mut ingress_chains) = (Vec::new(), Vec::new());
        let (mut egress_ids, mut ingress_ids) = (HashMap::new(), HashMap::new());
        let mut egress_target = Vec::with_capacity(classes);
        let mut ingress_target = Vec::with_capacity(classes);
        for class in 0..classes {
            let steps = egress_steps(get(class, direction::EGRESS));
            egress_target.push(intern(
                &mut egress_chains,
                &mut egress_ids,
                steps,
                pass(class),
            ));
            let steps = ingress_steps(
                get(class, direction::INGRESS_LOCAL_PORT),
                get(class, direction::INGRESS_REMOTE_PORT),
            );
            ingress_target.push(intern(
                &mut ingress_chains,
                &mut ingress_ids,
                steps,
                pass(class),
            ));
        }
        Plan {
            image,
            reasons,
            audit: opts.audit,
            live,
            egress_chains,
            ingress_chains,
            egress_target,
            ingress_target,
        }
    }

    pub(super) fn rule_counter(&self, rule: u32) -> String {
        match self.image.rule(rule) {
            Some(r) => format!("counter name \"{}\"", counter_name(&r.vendor, &r.rule)),
            None => "counter".to_string(),
        }
    }

    /// The statements that deny with `reason`: drop, or pass and count in audit mode.
    pub(super) fn deny(&self, reason: &str, audited: bool) -> String {
        let p = self.reasons;
        if audited || self.audit {
            format!("counter name \"{p}/{reason}\" counter name \"{p}/audit_would_drop\" accept")
        } else {
            format!("counter name \"{p}/{reason}\" drop")
        }
    }

    pub(super) fn egress_body(&self, (steps, audited): &ClassChain) -> String {
        let allow = if self.live {
            "goto egress_allow"
        } else {
            "accept"
        };
        let mut body = String::new();
        for step in steps {
            let _ = writeln!(
                body,
                "\t\t{}{} {allow}",
                match_text(step.covers, step.field),
                self.rule_counter(step.verdict.rule)
            );
        }
        if !steps.iter().any(|s| s.covers == Match::All) {
            let tail = if *audited {
                "egress_no_port_audit"
            } else {
                "egress_no_port"
            };
            let _ = writeln!(body, "\t\tgoto {tail}");
        }
        body
    }

    pub(super) fn ingress_body(&self, (steps, audited): &ClassChain) -> String {
        let suffix = if *audited { "_audit" } else { "" };
        let mut body = String::new();
        for step in steps {
            let covers = match_text(step.covers, step.field);
            let counter = self.rule_counter(step.verdict.rule);
            if step.verdict.flags & PortVerdict::FLAG_RELATED != 0 {
                let _ = writeln!(
                    body,
                    "\t\t{covers}ip saddr @live4 {counter} accept\n\
                     \t\t{covers}ip6 saddr @live6 {counter} accept\n\
                     \t\t{covers}goto ingress_not_related{suffix}"
                );
            } else {
                let _ = writeln!(body, "\t\t{covers}{counter} accept");
            }
        }
        if !steps.iter().any(|s| s.covers == Match::All) {
            let _ = writeln!(body, "\t\tgoto ingress_no_port{suffix}");
        }
        body
    }

    /// The chains a packet ends in when no class chain allows it.
    pub(super) fn write_tails<W: Write>(&self, out: &mut W) -> io::Result<()> {
        let p = self.reasons;
        let established = format!("counter name \"{p}/established\" accept");
        writeln!(
            out,
            "\n\t# Denied by the rules: a reply within a flow that began inbound, or an ICMP error\n\
             \t# about a live flow, still passes (fwd's flow table); the rest is the default action."
        )?;
        let replies = format!(
            "\t\tmeta l4proto icmp ct state related {established}\n\
             \t\tmeta l4proto ipv6-icmp ct state related {established}\n\
             \t\tct direction reply ct state established {established}\n"
        );
        for (name, reason, audited) in [
            ("egress_no_address", "no_address_match", false),
            ("egress_no_port", "no_port_match", false),
            ("egress_no_port_audit", "no_port_match", true),
        ] {
            writeln!(
                out,
                "\tchain {name} {{\n{replies}\t\t{}\n\t}}",
                self.deny(reason, audited)
            )?;
        }
        for (name, reason, audited) in [
            ("ingress_no_address", "no_address_match", false),
            ("ingress_no_port", "no_port_match", false),
            ("ingress_no_port_audit", "no_port_match", true),
            ("ingress_not_related", "not_related", false),
            ("ingress_not_related_audit", "not_related", true),
        ] {
            writeln!(
                out,
                "\tchain {name} {{\n\t\t{}\n\t}}",
                self.deny(reason, audited)
            )?;
        }
        if self.live {
            writeln!(
                out,
                "\t# Allowed egress keeps its remote live for related ingress rules.\n\
                 \tchain egress_allow {{\n\
                 \t\tupdate @live4 {{ ip daddr }}\n\
                 \t\tupdate @live6 {{ ip6 daddr }}\n\
                 \t\taccept\n\
                 \t}}"
            )?;
        }
        Ok(())
    }

    /// `egress` and `ingress`: fwd's order of checks before the rules.
    pub(super) fn write_dispatch<W: Write>(
        &self,
        out: &mut W,
        exempt4: bool,
        exempt6: bool,
    ) -> io::Result<()> {
        let p = self.reasons;
        let exempt = format!("counter name \"{p}/exempt\" accept");
        let unsupported = self.deny("unsupported_protocol", false);
        let common = format!(
            "\t\trt seg-left != 0 {unsupported}\n\
             \t\tmeta nfproto ipv6 meta l4proto @unjudged_headers {unsupported}\n\
             \t\ticmpv6 type 133-137 ip6 hoplimit 255 ip6 saddr @nd_sources {exempt}\n\
             \t\ticmpv6 type 130-132 ip6 hoplimit 1 ip6 saddr @nd_sources {exempt}\n\
             \t\ticmpv6 type 143 ip6 hoplimit 1 ip6 saddr @nd_sources {exempt}\n"
        );
        writeln!(
            out,
            "\n\t# From the protected network: the remote is the destination."
        )?;
        let mut egress = format!(
            "\tchain egress {{\n{common}\
             \t\tip daddr @link_local4 {exempt}\n\
             \t\tip6 daddr @link_local6 {exempt}\n"
        );
        if exempt4 {
            let _ = writeln!(egress, "\t\tip daddr @exempt4 {exempt}");
        }
        if exempt6 {
            let _ = writeln!(egress, "\t\tip6 daddr @exempt6 {exempt}");
        }
        egress.push_str(
            "\t\tip daddr vmap @egress4\n\t\tip6 daddr vmap @egress6\n\t\tgoto egress_no_address\n\t}\n",
        );
        out.write_all(egress.as_bytes())?;
        writeln!(
            out,
            "\t# Into the protected network: the remote is the source. Replies of flows that\n\
             \t# began outbound pass first, as in fwd."
        )?;
        let mut ingress = format!(
            "\tchain ingress {{\n{common}\
             \t\tip saddr @link_local4 {exempt}\n\
             \t\tip daddr @link_local4 {exempt}\n\
             \t\tip6 saddr @link_local6 {exempt}\n\
             \t\tip6 daddr @link_local6 {exempt}\n"
        );
        if exempt4 {
            let _ = writeln!(ingress, "\t\tip saddr @exempt4 {exempt}");
        }
        if exempt6 {
            let _ = writeln!(ingress, "\t\tip6 saddr @exempt6 {exempt}");
        }
        let established = format!("counter name \"{p}/established\" accept");
        let _ = write!(
            ingress,
            "\t\tct direction reply ct state established {established}\n\
             \t\tmeta l4proto icmp ct state related {established}\n\
             \t\tmeta l4proto ipv6-icmp ct state related {established}\n\
             \t\tip saddr vmap @ingress4\n\
             \t\tip6 saddr vmap @ingress6\n\
             \t\tgoto ingress_no_address\n\t}}\n"
        );
        out.write_all(ingress.as_bytes())
    }

    /// Calls `f` with the elements of one address map, ascending: disjoint ranges of the
    /// remote address, each with where its class sends a packet of `dir`.
    pub(super) fn elements<E>(
        &self,
        v6: bool,
        dir: Dir,
        mut f: impl FnMut(u128, u128, Target) -> Result<(), E>,
    ) -> Result<(), E> {
        let targets = match dir {
            Dir::Egress => &self.egress_target,
            Dir::Ingress => &self.ingress_target,
        };
        let (prefixes, width): (Vec<(u128, u8, u32)>, u8) = if v6 {
            let p = self
                .image
                .dst6
                .iter()
                .map(|(n, c)| (u128::from(n.network()), n.prefix_len(), *c))
                .collect();
            (p, 128)
        } else {
            let p = self
                .image
                .dst4
                .iter()
                .map(|(n, c)| (u128::from(u32::from(n.network())), n.prefix_len(), *c))
                .collect();
            (p, 32)
        };
        let mut coalesce = Coalesce::new();
        disjoint_ranges(prefixes, width, |lo, hi, class| {
            let target = targets
                .get((class & !CLASS_AUDIT) as usize)
                .copied()
                .flatten();
            let done = match target {
                Some(t) => coalesce.push(lo, hi, t),
                None => coalesce.finish(),
            };
            match done {
                Some((lo, hi, t)) => f(lo, hi, t),
                None => Ok(()),
            }
        })?;
        match coalesce.finish() {
            Some((lo, hi, t)) => f(lo, hi, t),
            None => Ok(()),
        }
    }

    /// Streams one address map; returns its element count.
    pub(super) fn write_map<W: Write>(
        &self,
        out: &mut W,
        name: &str,
        v6: bool,
        dir: Dir,
    ) -> io::Result<usize> {
        let (chain, audit_tail) = match dir {
            Dir::Egress => ("e", "egress_no_port_audit"),
            Dir::Ingress => ("i", "ingress_no_port_audit"),
        };
        write!(
            out,
            "\tmap {name} {{\n\t\ttype {} : verdict\n\t\tflags interval\n",
            if v6 { "ipv6_addr" } else { "ipv4_addr" }
        )?;
        let mut count = 0usize;
        self.elements(v6, dir, |lo, hi, target| -> io::Result<()> {
            out.write_all(if count == 0 {
                b"\t\telements = {\n\t\t\t"
            } else {
                b",\n\t\t\t"
            })?;
            write_range(out, lo, hi, v6)?;
            match target {
                Target::Chain(n) => write!(out, " : goto {chain}{n}")?,
                Target::NoPortAudit => write!(out, " : goto {audit_tail}")?,
            }
            count += 1;
            Ok(())
        })?;
        if count > 0 {
            write!(out, "\n\t\t}}\n")?;
        }
        writeln!(out, "\t}}")?;
        Ok(count)
    }
}

pub(super) fn protocol_name(protocol: u8) -> String {
    match protocol {
        proto::ICMP => "icmp".to_string(),
        proto::ICMPV6 => "ipv6-icmp".to_string(),
        other => other.to_string(),
    }
}
