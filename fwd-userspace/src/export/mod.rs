//! `fwd export nftables`: the compiled policy as an `nft -f` script, for machines that
//! enforce with nftables instead of fwd's programs. Pure: a [`MapImage`] and the hooks go in,
//! text comes out; this module knows nothing of aya or TOML.
//!
//! The ruleset mirrors the kernel programs' lookups (docs/export.md):
//! - `egress4`/`egress6` (`ingress4`/`ingress6`): interval verdict maps from the remote
//!   address to `goto` the chain of its class. The image's nested prefixes are flattened
//!   into disjoint ranges, each carrying its longest match's class, because an nftables
//!   interval map takes no overlapping elements.
//! - one chain per distinct class decision (`e<n>` egress, `i<n>` ingress): one rule per
//!   (protocol, port range) run of the class's `PORTS` entries, in fwd's precedence, each
//!   counting on the rule's named counter. No anonymous sets there: the kernel binds each
//!   anonymous set by walking the whole transaction, so thousands of them load in minutes.
//! - `egress`/`ingress`: fwd's order (headers fwd does not judge, management, exemptions,
//!   live flows, rules, then the default action), reached from base chains on the
//!   configured interfaces.
//!
//! Here: the options and the writer; `ranges` flattens addresses, `steps` turns a class's
//! port entries into ordered matches, `plan` shares chains between classes, `names` checks
//! what nftables accepts as a name.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use ipnet::IpNet;

use crate::compile::MapImage;
pub use crate::config::{Interface, InterfaceMode};

mod names;
mod plan;
mod ranges;
mod steps;
#[cfg(test)]
mod tests;

pub use names::{check_interface_name, check_table_name};
use names::{comment_text, counter_name, interfaces_match, names_of};
use plan::{Dir, Plan};
use ranges::{exempt_ranges, write_range_set};

/// The table name when none is given. Not `fwd`: nft (1.0.6 at least) reads that as the
/// keyword of its `fwd to` statement and rejects `table inet fwd`.
pub const DEFAULT_TABLE: &str = "fwd_export";

/// What the script is for, besides the compiled policy.
#[derive(Clone, Debug)]
pub struct NftOptions {
    /// The `inet` table the script (re)creates.
    pub table: String,
    /// Empty: host-style hooks on every interface but `lo` (output and input; forwarded
    /// traffic is not filtered).
    /// The interfaces filtered, and how (a site config's `[[interface]]`s).
    pub hooks: Vec<Interface>,
    /// Networks that always pass, both ways (the config's `exempt`, ...).
    pub exempt: Vec<IpNet>,
    /// The config's `action = "audit"`: nothing is dropped, what would be is counted.
    pub audit: bool,
    /// How long a remote stays live for `related` rules after the last allowed egress
    /// packet to it (fwd: `[flows] udp_timeout`).
    pub live_remote_timeout_s: u32,
    /// Where the policy came from, for the header comment.
    pub origin: String,
    /// Differences the caller knows of (config features the script does not carry).
    pub extra_differences: Vec<String>,
}

/// What was written, for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Elements of `egress4`, `egress6`, `ingress4`, `ingress6`.
    pub egress4: usize,
    pub egress6: usize,
    pub ingress4: usize,
    pub ingress6: usize,
    /// Distinct class chains (egress + ingress).
    pub class_chains: usize,
    /// Named counters of rules.
    pub rule_counters: usize,
}

/// What the script cannot do the way fwd's programs do, for this image and options: the
/// header comment lists them, and the CLI prints them as warnings.
pub fn differences(image: &MapImage, opts: &NftOptions) -> Vec<String> {
    let mut out = vec![
        "return traffic rides conntrack (`ct state established` in the reply direction; ICMP errors as `related`), not fwd's flow table: conntrack's timeouts apply (sysctl net.netfilter.nf_conntrack_*_timeout), not [flows] tcp_timeout/udp_timeout/other_timeout, and a reply conntrack finds invalid (a TCP segment out of window) is judged by the rules, where fwd passes it".to_string(),
        "replies count on the counter `reason/established`, not on the rule that allowed their flow; rule counters are not split by direction, and every load of the script starts them from zero (fwd's survive reloads)".to_string(),
        "nftables judges IP datagrams whole, after conntrack reassembled them; fwd judges a first fragment by its ports and lets the later fragments follow it".to_string(),
        "nftables runs after the kernel's own checks: malformed headers are dropped uncounted, ARP and other non-IP frames never reach an inet table (fwd passes ARP and drops other non-IP frames), and IPv6 extension-header chains longer than fwd walks (6 headers) are judged instead of dropped".to_string(),
    ];
    if opts.hooks.iter().any(|h| h.mode == InterfaceMode::Gateway) {
        out.push("a packet the gateway forwards from one LAN interface to another (or back out of the same one) is judged once, as egress; fwd judges it out (XDP) and in (TC)".to_string());
    }
    if opts.hooks.is_empty() {
        out.push("no [[interface]] given (no --config, or none in it): this host's own traffic is filtered on every interface but lo (output as egress, input as ingress) and forwarded traffic is not".to_string());
    }
    let named: Vec<String> = image
        .rules
        .iter()
        .filter(|r| !r.names.is_empty())
        .map(|r| r.rule_ref().to_string())
        .collect();
    if !named.is_empty() {
        out.push(format!(
            "{} rule(s) name hostnames or domains ({}): only their listed networks are exported; names open nothing without fwd's DNS proxy",
            named.len(),
            abbreviate(&named)
        ));
    }
    let related: Vec<String> = image
        .rules
        .iter()
        .filter(|r| r.related)
        .map(|r| r.rule_ref().to_string())
        .collect();
    if !related.is_empty() {
        out.push(format!(
            "related ingress rule(s) ({}) admit remotes in the sets live4/live6, which allowed egress refreshes ({} s, like fwd's remote table); a load of the script starts them empty (fwd's table survives reloads), and when {} remotes are live a set refuses new ones, where fwd forgets the least recently used",
            abbreviate(&related),
            opts.live_remote_timeout_s,
            fwd_common::REMOTES_CAPACITY
        ));
    }
    out.extend(opts.extra_differences.iter().cloned());
    out
}

/// The first few names of a list, and how many more.
fn abbreviate(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names[..names.len().min(SHOWN)].join(", ");
    if names.len() > SHOWN {
        let _ = write!(text, " and {} more", names.len() - SHOWN);
    }
    text
}

/// Writes the script for `image` to `out` as it goes (the address maps are streamed, not
/// built in memory).
pub fn write_nftables<W: Write>(
    out: &mut W,
    image: &MapImage,
    opts: &NftOptions,
) -> io::Result<ExportSummary> {
    let plan = Plan::new(image, opts);
    let table = &opts.table;
    let mut summary = ExportSummary {
        class_chains: plan.egress_chains.len() + plan.ingress_chains.len(),
        rule_counters: image.rules.len(),
        ..ExportSummary::default()
    };

    write_header(out, image, opts, &plan)?;
    // Create (a no-op if it exists), delete, define: one transaction replaces the table.
    writeln!(
        out,
        "table inet {table}\ndelete table inet {table}\ntable inet {table} {{"
    )?;

    let mut rules: Vec<_> = image.rules.iter().collect();
    rules.sort_by(|a, b| (&a.vendor, &a.rule).cmp(&(&b.vendor, &b.rule)));
    for rule in rules {
        writeln!(
            out,
            "\tcounter {} {{ comment \"{}\" }}",
            counter_name(&rule.vendor, &rule.rule),
            comment_text(&format!(
                "{}, {}:{}",
                rule.service,
                rule.source.file.display(),
                rule.source.line
            ))
        )?;
    }
    for (reason, meaning) in REASONS {
        writeln!(
            out,
            "\tcounter {}/{reason} {{ comment \"{meaning}\" }}",
            plan.reasons
        )?;
    }

    writeln!(
        out,
        "\n\tset port_protocols {{\n\t\ttype inet_proto\n\t\telements = {{ tcp, udp }}\n\t}}"
    )?;
    writeln!(
        out,
        "\tset link_local4 {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {{ 169.254.0.0/16, 224.0.0.0/24, 255.255.255.255 }}\n\t}}"
    )?;
    let multicast: Vec<String> = (0..16).map(|flags| format!("ff{flags:x}2::/16")).collect();
    writeln!(
        out,
        "\tset link_local6 {{\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = {{ fe80::/10, {} }}\n\t}}",
        multicast.join(", ")
    )?;
    writeln!(
        out,
        "\tset nd_sources {{\n\t\ttype ipv6_addr\n\t\tflags interval\n\t\telements = {{ ::, fe80::/10 }}\n\t}}"
    )?;
    writeln!(
        out,
        "\tset unjudged_headers {{\n\t\ttype inet_proto\n\t\telements = {{ 135, 139, 140, 253, 254 }}\n\t}}"
    )?;
    let (exempt4, exempt6) = exempt_ranges(&opts.exempt);
    if !exempt4.is_empty() {
        write_range_set(out, "exempt4", "ipv4_addr", &exempt4, false)?;
    }
    if !exempt6.is_empty() {
        write_range_set(out, "exempt6", "ipv6_addr", &exempt6, true)?;
    }
    if plan.live {
        for (name, kind) in [("live4", "ipv4_addr"), ("live6", "ipv6_addr")] {
            writeln!(
                out,
                "\tset {name} {{\n\t\ttype {kind}\n\t\tsize {}\n\t\tflags dynamic,timeout\n\t\ttimeout {}s\n\t}}",
                fwd_common::REMOTES_CAPACITY,
                opts.live_remote_timeout_s.max(1)
            )?;
        }
    }

    writeln!(
        out,
        "\n\t# Class chains: what each class of remotes may do."
    )?;
    for (n, chain) in plan.egress_chains.iter().enumerate() {
        writeln!(out, "\tchain e{n} {{\n{}\t}}", plan.egress_body(chain))?;
    }
    for (n, chain) in plan.ingress_chains.iter().enumerate() {
        writeln!(out, "\tchain i{n} {{\n{}\t}}", plan.ingress_body(chain))?;
    }

    plan.write_tails(out)?;
    plan.write_dispatch(out, !exempt4.is_empty(), !exempt6.is_empty())?;
    write_base_chains(out, &opts.hooks)?;

    writeln!(
        out,
        "\n\t# Remote address -> its class's chain: the compiled prefixes as disjoint ranges."
    )?;
    summary.egress4 = plan.write_map(out, "egress4", false, Dir::Egress)?;
    summary.egress6 = plan.write_map(out, "egress6", true, Dir::Egress)?;
    summary.ingress4 = plan.write_map(out, "ingress4", false, Dir::Ingress)?;
    summary.ingress6 = plan.write_map(out, "ingress6", true, Dir::Ingress)?;
    writeln!(out, "}}")?;
    out.flush()?;
    Ok(summary)
}

/// fwd's reasons that the script counts, with what they mean.
const REASONS: [(&str, &str); 7] = [
    (
        "exempt",
        "management and exemptions: link-local, neighbour discovery, exempt networks",
    ),
    (
        "established",
        "replies of allowed flows and ICMP errors about them (conntrack)",
    ),
    ("no_address_match", "no rule covers the remote address"),
    (
        "no_port_match",
        "rules cover the remote, none this protocol and port",
    ),
    (
        "not_related",
        "a related rule matched, but no allowed egress went to the remote lately",
    ),
    (
        "unsupported_protocol",
        "IPv6 headers fwd does not judge (routing with segments left, mobility, HIP, shim6, experimental)",
    ),
    (
        "audit_would_drop",
        "passed in audit mode; dropped when enforcing",
    ),
];

fn write_header<W: Write>(
    out: &mut W,
    image: &MapImage,
    opts: &NftOptions,
    plan: &Plan<'_>,
) -> io::Result<()> {
    let table = &opts.table;
    let vendors: std::collections::BTreeSet<&str> =
        image.rules.iter().map(|r| r.vendor.as_str()).collect();
    writeln!(
        out,
        "# nftables ruleset written by `fwd export nftables` (fwd {}) from\n#   {}",
        env!("CARGO_PKG_VERSION"),
        opts.origin.replace('\n', " ")
    )?;
    writeln!(
        out,
        "# It enforces the compiled policy ({} rules of {} vendors in {} classes) as fwd's kernel\n\
         # programs do, in the table `inet {table}`; loading this file replaces that table in one\n\
         # transaction:  nft -c -f FILE (check)   nft -f FILE (load)   nft delete table inet {table}",
        image.rules.len(),
        vendors.len(),
        image.classes,
    )?;
    writeln!(out, "#\n# Hooks:")?;
    let gateways: Vec<&str> = names_of(&opts.hooks, InterfaceMode::Gateway);
    let hosts: Vec<&str> = names_of(&opts.hooks, InterfaceMode::Host);
    if !gateways.is_empty() {
        writeln!(
            out,
            "#   gateway LAN interface(s) {}: forward (from them: egress; into them: ingress)",
            gateways.join(", ")
        )?;
    }
    if !hosts.is_empty() {
        writeln!(
            out,
            "#   host uplink(s) {}: output and forward out (egress), input and forward in (ingress)",
            hosts.join(", ")
        )?;
    }
    if opts.hooks.is_empty() {
        writeln!(
            out,
            "#   none configured: this host's traffic on every interface but lo (output: egress, input: ingress)"
        )?;
    }
    let audited: Vec<&str> = image.audit_vendors.iter().map(String::as_str).collect();
    writeln!(
        out,
        "# Default action: {}{}",
        if opts.audit {
            "audit (nothing is dropped; reason/audit_would_drop counts what would be)"
        } else {
            "enforce (drop what no rule allows)"
        },
        if audited.is_empty() || opts.audit {
            String::new()
        } else {
            format!("; audit mode for {}", audited.join(", "))
        }
    )?;
    writeln!(
        out,
        "# Counters: one per rule (nft list counter inet {table} VENDOR/RULE), one per fwd reason\n\
         # ({}/...). Chains e<n>/i<n> hold the egress/ingress decision of a class of remotes;\n\
         # the maps at the end send each remote address to its class's chain.",
        plan.reasons
    )?;
    writeln!(out, "#\n# What differs from fwd's programs:")?;
    for d in differences(image, opts) {
        writeln!(out, "# - {d}")?;
    }
    writeln!(out)
}

fn write_base_chains<W: Write>(out: &mut W, hooks: &[Interface]) -> io::Result<()> {
    let base =
        |hook: &str| format!("\t\ttype filter hook {hook} priority filter; policy accept;\n");
    writeln!(
        out,
        "\n\t# Hooks: which packets are egress (from the protected network) and which ingress."
    )?;
    if hooks.is_empty() {
        writeln!(
            out,
            "\tchain output {{\n{}\t\toifname != \"lo\" goto egress\n\t}}",
            base("output")
        )?;
        writeln!(
            out,
            "\tchain input {{\n{}\t\tiifname != \"lo\" goto ingress\n\t}}",
            base("input")
        )?;
        return Ok(());
    }
    let gateways = names_of(hooks, InterfaceMode::Gateway);
    let hosts = names_of(hooks, InterfaceMode::Host);
    let mut forward = base("forward");
    if !gateways.is_empty() {
        let _ = writeln!(
            forward,
            "\t\t{} goto egress\n\t\t{} goto ingress",
            interfaces_match("iifname", &gateways),
            interfaces_match("oifname", &gateways)
        );
    }
    if !hosts.is_empty() {
        let _ = writeln!(
            forward,
            "\t\t{} goto egress\n\t\t{} goto ingress",
            interfaces_match("oifname", &hosts),
            interfaces_match("iifname", &hosts)
        );
    }
    writeln!(out, "\tchain forward {{\n{forward}\t}}")?;
    if !hosts.is_empty() {
        writeln!(
            out,
            "\tchain output {{\n{}\t\t{} goto egress\n\t}}",
            base("output"),
            interfaces_match("oifname", &hosts)
        )?;
        writeln!(
            out,
            "\tchain input {{\n{}\t\t{} goto ingress\n\t}}",
            base("input"),
            interfaces_match("iifname", &hosts)
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Disjoint ranges of an LPM table
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Class decisions
// ---------------------------------------------------------------------------------------
