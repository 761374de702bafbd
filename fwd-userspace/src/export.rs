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

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{self, Write},
    net::{Ipv4Addr, Ipv6Addr},
};

use fwd_common::{CLASS_AUDIT, PortVerdict, direction, proto};
use ipnet::IpNet;

use crate::compile::MapImage;

/// The table name when none is given. Not `fwd`: nft (1.0.6 at least) reads that as the
/// keyword of its `fwd to` statement and rejects `table inet fwd`.
pub const DEFAULT_TABLE: &str = "fwd_export";

/// Where an interface sits, as in the config's `[[interface]] mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookMode {
    /// A gateway's LAN interface: what the LAN sends through it is egress, what the gateway
    /// forwards into it is ingress.
    Gateway,
    /// A host's uplink: what leaves through it is egress, what arrives on it is ingress.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub interface: String,
    pub mode: HookMode,
}

/// What the script is for, besides the compiled policy.
#[derive(Clone, Debug)]
pub struct NftOptions {
    /// The `inet` table the script (re)creates.
    pub table: String,
    /// Empty: host-style hooks on every interface but `lo` (output and input; forwarded
    /// traffic is not filtered).
    pub hooks: Vec<Hook>,
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

/// Checks a table name for `--table`: nft takes it unquoted, so it must be an identifier and
/// not one of nft's keywords.
pub fn check_table_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let identifier = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && name.len() <= 64;
    if !identifier {
        return Err(format!(
            "--table `{name}`: a table name is a letter followed by letters, digits, `_` or `-` (at most 64), e.g. {DEFAULT_TABLE}"
        ));
    }
    if NFT_KEYWORDS.contains(&name) {
        return Err(format!(
            "--table `{name}`: nft reads `{name}` as a keyword and rejects it as a table name; choose another, e.g. {DEFAULT_TABLE}"
        ));
    }
    Ok(())
}

/// Words nft 1.0.6 rejects as a table name (each checked with `nft -c`): its keywords.
const NFT_KEYWORDS: &[&str] = &[
    "fwd",
    "dup",
    "queue",
    "counter",
    "quota",
    "limit",
    "ip",
    "ip6",
    "inet",
    "arp",
    "bridge",
    "netdev",
    "tcp",
    "udp",
    "icmp",
    "icmpv6",
    "accept",
    "drop",
    "reject",
    "continue",
    "return",
    "jump",
    "goto",
    "policy",
    "export",
    "import",
    "table",
    "chain",
    "set",
    "map",
    "meta",
    "ct",
    "rule",
    "ruleset",
    "element",
    "add",
    "delete",
    "create",
    "insert",
    "replace",
    "flush",
    "list",
    "reset",
    "monitor",
    "describe",
    "log",
    "snat",
    "dnat",
    "masquerade",
    "redirect",
    "notrack",
    "flow",
    "flowtable",
    "type",
    "hook",
    "priority",
    "device",
    "handle",
    "comment",
    "elements",
    "flags",
    "timeout",
    "update",
    "define",
    "include",
    "synproxy",
    "secmark",
    "rt",
    "fib",
];

/// Checks an interface name for the hooks: it is written in double quotes.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '/');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "interface `{name}` cannot be named in an nftables rule (an interface name is 1 to 15 printable characters without quotes, `\\` or `/`)"
        ))
    }
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
    if opts.hooks.iter().any(|h| h.mode == HookMode::Gateway) {
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
    let gateways: Vec<&str> = names_of(&opts.hooks, HookMode::Gateway);
    let hosts: Vec<&str> = names_of(&opts.hooks, HookMode::Host);
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

fn names_of(hooks: &[Hook], mode: HookMode) -> Vec<&str> {
    hooks
        .iter()
        .filter(|h| h.mode == mode)
        .map(|h| h.interface.as_str())
        .collect()
}

/// `iifname "a"` or `iifname { "a", "b" }`.
fn interfaces_match(key: &str, names: &[&str]) -> String {
    match names {
        [one] => format!("{key} \"{one}\""),
        many => format!(
            "{key} {{ {} }}",
            many.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn write_base_chains<W: Write>(out: &mut W, hooks: &[Hook]) -> io::Result<()> {
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
    let gateways = names_of(hooks, HookMode::Gateway);
    let hosts = names_of(hooks, HookMode::Host);
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

/// A counter object's name: `vendor/rule`, which nft takes unquoted when it starts with a
/// letter (`_` in front otherwise).
pub fn counter_name(vendor: &str, rule: &str) -> String {
    if vendor.starts_with(|c: char| c.is_ascii_alphabetic()) {
        format!("{vendor}/{rule}")
    } else {
        format!("_{vendor}/{rule}")
    }
}

/// Text for an nft `comment "..."`: no double quotes or line breaks, at most 128 bytes.
fn comment_text(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    if clean.len() > 128 {
        let mut end = 125;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
        clean.push_str("...");
    }
    clean
}

// ---------------------------------------------------------------------------------------
// Disjoint ranges of an LPM table
// ---------------------------------------------------------------------------------------

/// The largest value of `width` bits.
fn max_of(width: u8) -> u128 {
    u128::MAX >> (128 - u32::from(width))
}

/// Calls `emit` with the disjoint, ascending ranges of an LPM table over `width`-bit keys,
/// each with the value of its longest matching prefix; keys no prefix covers are left out.
/// `prefixes` are (key, prefix length, value); host bits are ignored, and of two equal
/// prefixes the later one wins (as a later insert replaces an earlier one).
pub fn disjoint_ranges<V: Copy, E>(
    mut prefixes: Vec<(u128, u8, V)>,
    width: u8,
    mut emit: impl FnMut(u128, u128, V) -> Result<(), E>,
) -> Result<(), E> {
    let max = max_of(width);
    for p in &mut prefixes {
        p.0 = crate::compile::lpm::mask(p.0 & max, p.1.min(width), width);
        p.1 = p.1.min(width);
    }
    // A prefix sorts after the prefixes that contain it; stable, so equal ones keep order.
    prefixes.sort_by_key(|&(start, len, _)| (start, len));
    // The prefixes containing the current one, outermost first: (last key, value).
    let mut stack: Vec<(u128, V)> = Vec::new();
    // The first key not yet emitted; `None` once past the last key.
    let mut cursor: Option<u128> = Some(0);
    for (start, len, value) in prefixes {
        let end = start | max.checked_shr(u32::from(len)).unwrap_or(0);
        while let Some(&(top_end, top_value)) = stack.last() {
            if top_end >= start {
                break;
            }
            if let Some(c) = cursor
                && c <= top_end
            {
                emit(c, top_end, top_value)?;
                cursor = top_end.checked_add(1);
            }
            stack.pop();
        }
        if let Some(&(_, top_value)) = stack.last()
            && let Some(c) = cursor
            && c < start
        {
            emit(c, start - 1, top_value)?;
        }
        cursor = Some(start);
        stack.push((end, value));
    }
    while let Some((top_end, top_value)) = stack.pop() {
        if let Some(c) = cursor
            && c <= top_end
        {
            emit(c, top_end, top_value)?;
            cursor = top_end.checked_add(1);
        }
    }
    Ok(())
}

/// Joins adjacent ranges with equal values before passing them on.
struct Coalesce<T> {
    pending: Option<(u128, u128, T)>,
}

impl<T: PartialEq> Coalesce<T> {
    fn new() -> Self {
        Self { pending: None }
    }

    /// Adds `lo..=hi` (ascending, disjoint from earlier ranges); returns a finished range.
    fn push(&mut self, lo: u128, hi: u128, value: T) -> Option<(u128, u128, T)> {
        if let Some((_, phi, pv)) = &mut self.pending
            && phi.checked_add(1) == Some(lo)
            && *pv == value
        {
            *phi = hi;
            return None;
        }
        self.pending.replace((lo, hi, value))
    }

    fn finish(&mut self) -> Option<(u128, u128, T)> {
        self.pending.take()
    }
}

/// `a.b.c.d`, `a.b.c.d/len` or `a.b.c.d-e.f.g.h` (and IPv6 alike), as nft reads them.
fn write_range<W: Write>(out: &mut W, lo: u128, hi: u128, v6: bool) -> io::Result<()> {
    let addr = |v: u128| -> String {
        if v6 {
            Ipv6Addr::from(v).to_string()
        } else {
            Ipv4Addr::from(v as u32).to_string()
        }
    };
    let width: u32 = if v6 { 128 } else { 32 };
    let span = hi - lo;
    // An aligned block of 2^k keys is a prefix.
    if span & span.wrapping_add(1) == 0 && lo & span == 0 {
        let bits = 128 - span.leading_zeros();
        let len = width - bits;
        if len == width {
            write!(out, "{}", addr(lo))
        } else {
            write!(out, "{}/{len}", addr(lo))
        }
    } else {
        write!(out, "{}-{}", addr(lo), addr(hi))
    }
}

/// Inclusive address ranges.
type Ranges = Vec<(u128, u128)>;

/// The exemptions as disjoint, merged ranges per family.
fn exempt_ranges(nets: &[IpNet]) -> (Ranges, Ranges) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in nets {
        match net {
            IpNet::V4(n) => v4.push((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
    }
    (merge_ranges(v4), merge_ranges(v6))
}

fn merge_ranges(mut ranges: Ranges) -> Ranges {
    ranges.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some((_, phi)) if phi.checked_add(1).is_none_or(|next| lo <= next) => {
                *phi = (*phi).max(hi);
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn write_range_set<W: Write>(
    out: &mut W,
    name: &str,
    kind: &str,
    ranges: &[(u128, u128)],
    v6: bool,
) -> io::Result<()> {
    write!(
        out,
        "\tset {name} {{\n\t\ttype {kind}\n\t\tflags interval\n\t\telements = {{ "
    )?;
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        if i > 0 {
            write!(out, ", ")?;
        }
        write_range(out, lo, hi, v6)?;
    }
    writeln!(out, " }}\n\t}}")
}

// ---------------------------------------------------------------------------------------
// Class decisions
// ---------------------------------------------------------------------------------------

/// A port key without its class and direction: protocol << 16 | port.
const PROTO_PORT_BITS: u8 = 24;
/// The port key's prefix length where the protocol begins.
const PROTO_OFFSET_BITS: u32 = 40;

/// Which packets a step of a class decision covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Match {
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
pub enum PortField {
    /// The destination port: the remote's on egress, the local one on ingress.
    Destination,
    /// The source port: the remote's on ingress.
    Source,
}

/// One rule of a class chain: packets that `covers` go to `verdict`'s rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    pub field: PortField,
    pub covers: Match,
    pub verdict: PortVerdict,
}

impl Match {
    /// Whether a packet of `protocol` with `port` in the step's field is covered.
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

fn has_ports(protocol: u8) -> bool {
    protocol == proto::TCP || protocol == proto::UDP
}

/// The first step covering a packet: what the class chain does with it.
pub fn first_step(steps: &[Step], protocol: u8, dst_port: u16, src_port: u16) -> Option<&Step> {
    steps.iter().find(|s| {
        let port = match s.field {
            PortField::Destination => dst_port,
            PortField::Source => src_port,
        };
        s.covers.contains(protocol, port)
    })
}

/// A class's port entries of one direction byte as (protocol << 16 | port, length, verdict).
type ProtoPortEntries = Vec<(u128, u8, PortVerdict)>;

/// The disjoint runs of one (class, direction byte): which verdict owns each
/// (protocol, port), with the kernel trie's longest-prefix semantics.
fn decision_runs(entries: &ProtoPortEntries) -> Vec<(u32, u32, PortVerdict)> {
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
fn steps_of(runs: &[(u32, u32, PortVerdict)], field: PortField) -> Vec<Step> {
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
fn ingress_rank(step: &Step) -> (u32, PortField) {
    (step.verdict.ingress_rank(), step.field)
}

/// The egress steps of a class. Where the runs leave no packet uncovered, the verdict with
/// the most steps becomes one catch-all step at the end (an `any`-protocol rule's gaps).
pub fn egress_steps(entries: &ProtoPortEntries) -> Vec<Step> {
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
pub fn ingress_steps(local: &ProtoPortEntries, remote: &ProtoPortEntries) -> Vec<Step> {
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
pub fn port_entries(image: &MapImage) -> HashMap<(u32, u8), ProtoPortEntries> {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Egress,
    Ingress,
}

/// Where a remote's address sends a packet of one direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The class chain `e<n>` / `i<n>`.
    Chain(usize),
    /// An audited class without rules for this direction: passes as audit_would_drop.
    NoPortAudit,
}

/// A class chain: its steps, and whether what they leave is passed (audit) or dropped.
type ClassChain = (Vec<Step>, bool);

/// Everything the script needs besides the streamed address maps.
struct Plan<'a> {
    image: &'a MapImage,
    /// Prefix of the reason counters (`reason`, unless a vendor has that id).
    reasons: &'static str,
    audit: bool,
    /// `related` rules exist: allowed egress records its remote in live4/live6.
    live: bool,
    /// The distinct chains `e<n>` and `i<n>`.
    egress_chains: Vec<ClassChain>,
    ingress_chains: Vec<ClassChain>,
    /// By class id (without the audit bit); `None`: the class has nothing for the
    /// direction and is not audited, so it is left out of the map (and denied like an
    /// address no rule covers).
    egress_target: Vec<Option<Target>>,
    ingress_target: Vec<Option<Target>>,
}

/// The target of a class with `steps`, sharing the chain of an equal class.
fn intern(
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
    fn new(image: &'a MapImage, opts: &NftOptions) -> Self {
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

    fn rule_counter(&self, rule: u32) -> String {
        match self.image.rule(rule) {
            Some(r) => format!("counter name \"{}\"", counter_name(&r.vendor, &r.rule)),
            None => "counter".to_string(),
        }
    }

    /// The statements that deny with `reason`: drop, or pass and count in audit mode.
    fn deny(&self, reason: &str, audited: bool) -> String {
        let p = self.reasons;
        if audited || self.audit {
            format!("counter name \"{p}/{reason}\" counter name \"{p}/audit_would_drop\" accept")
        } else {
            format!("counter name \"{p}/{reason}\" drop")
        }
    }

    fn egress_body(&self, (steps, audited): &ClassChain) -> String {
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

    fn ingress_body(&self, (steps, audited): &ClassChain) -> String {
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
    fn write_tails<W: Write>(&self, out: &mut W) -> io::Result<()> {
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
    fn write_dispatch<W: Write>(
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
    fn elements<E>(
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
    fn write_map<W: Write>(
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

/// The nft match of a step (with a trailing space), or nothing for `Match::All`.
fn match_text(covers: Match, field: PortField) -> String {
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

fn protocol_name(protocol: u8) -> String {
    match protocol {
        proto::ICMP => "icmp".to_string(),
        proto::ICMPV6 => "ipv6-icmp".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        net::IpAddr,
        path::{Path, PathBuf},
    };

    use proptest::prelude::*;

    use super::*;
    use crate::{
        compile::{Evaluator, Probe, Selection, Verdict, compile, lpm::LpmTable},
        policy::{
            Date, Direction, Level, Location, PolicySet, PortRange, PortSide, Protocol, Remote,
            Rule, Vendor, VendorPolicy, parse_vendor_file,
        },
    };

    const DAY: Date = Date {
        year: 2026,
        month: 6,
        day: 1,
    };

    fn image_of(files: &[&str], audit_vendors: &[&str]) -> MapImage {
        let vendors = files
            .iter()
            .enumerate()
            .map(|(i, text)| parse_vendor_file(Path::new(&format!("v{i}.toml")), text).unwrap())
            .collect();
        let mut selection = Selection::widest(DAY);
        selection.audit_vendors = audit_vendors.iter().map(|v| v.to_string()).collect();
        compile(&PolicySet { vendors }, &selection).unwrap().image
    }

    fn options() -> NftOptions {
        NftOptions {
            table: DEFAULT_TABLE.to_string(),
            hooks: vec![Hook {
                interface: "lan0".to_string(),
                mode: HookMode::Gateway,
            }],
            exempt: vec!["192.0.2.0/24".parse().unwrap()],
            audit: false,
            live_remote_timeout_s: 120,
            origin: "test policies".to_string(),
            extra_differences: Vec::new(),
        }
    }

    fn render(image: &MapImage, opts: &NftOptions) -> String {
        let mut out = Vec::new();
        write_nftables(&mut out, image, opts).unwrap();
        String::from_utf8(out).unwrap()
    }

    // -----------------------------------------------------------------------------------
    // Disjoint ranges against a brute-force longest-prefix match
    // -----------------------------------------------------------------------------------

    /// Every key of a `width`-bit table, looked up in the ranges.
    fn ranges_of(prefixes: &[(u128, u8, u32)], width: u8) -> Vec<(u128, u128, u32)> {
        let mut out = Vec::new();
        disjoint_ranges::<_, ()>(prefixes.to_vec(), width, |lo, hi, v| {
            out.push((lo, hi, v));
            Ok(())
        })
        .unwrap();
        out
    }

    fn lookup(ranges: &[(u128, u128, u32)], key: u128) -> Option<u32> {
        let i = ranges.partition_point(|&(_, hi, _)| hi < key);
        ranges
            .get(i)
            .filter(|&&(lo, _, _)| lo <= key)
            .map(|&(_, _, v)| v)
    }

    fn reference(prefixes: &[(u128, u8, u32)], width: u8) -> LpmTable<u32> {
        let mut table = LpmTable::new(width);
        for &(key, len, v) in prefixes {
            table.insert(key & max_of(width), len, v);
        }
        table
    }

    fn assert_sound(ranges: &[(u128, u128, u32)]) {
        for w in ranges.windows(2) {
            assert!(w[0].0 <= w[0].1 && w[0].1 < w[1].0, "not disjoint: {w:?}");
        }
    }

    proptest! {
        /// Exhaustively over 8-bit keys: each key's range carries its longest match.
        #[test]
        fn disjoint_ranges_match_longest_prefix_exhaustively(
            prefixes in proptest::collection::vec((any::<u8>(), 0u8..=8, 0u32..6), 0..14)
        ) {
            let prefixes: Vec<(u128, u8, u32)> =
                prefixes.into_iter().map(|(k, l, v)| (u128::from(k), l, v)).collect();
            let ranges = ranges_of(&prefixes, 8);
            assert_sound(&ranges);
            let table = reference(&prefixes, 8);
            for key in 0..=255u128 {
                prop_assert_eq!(
                    lookup(&ranges, key),
                    table.lookup(key).map(|(_, v)| *v),
                    "key {} of {:?} -> {:?}", key, prefixes, ranges
                );
            }
        }

        /// Nested IPv4 and IPv6 prefixes: the boundaries of every range and prefix (where a
        /// mistake would show) agree with the longest match.
        #[test]
        fn disjoint_ranges_match_longest_prefix_at_every_boundary(
            v4 in proptest::collection::vec((any::<u32>(), 0u8..=32, 0u32..8), 0..24),
            v6 in proptest::collection::vec((any::<u128>(), 0u8..=128, 0u32..8), 0..24),
            seed in any::<u128>(),
        ) {
            for (prefixes, width) in [
                // Crowded into 10.0.0.0/20 (and 2001:db8::/116) so that prefixes nest.
                (v4.iter().map(|&(k, l, v)| (0x0a00_0000 | u128::from(k & 0xfff), l.max(12), v)).collect::<Vec<_>>(), 32u8),
                (v6.iter().map(|&(k, l, v)| ((0x2001_0db8u128 << 96) | (k & 0xfff), l.max(108), v)).collect(), 128u8),
                (v6.iter().map(|&(k, l, v)| (k, l % 9, v)).collect(), 128u8),
            ] {
                let ranges = ranges_of(&prefixes, width);
                assert_sound(&ranges);
                let table = reference(&prefixes, width);
                let max = max_of(width);
                let mut keys = vec![0, max, seed & max];
                for &(k, l, _) in &prefixes {
                    let lo = crate::compile::lpm::mask(k & max, l, width);
                    let hi = lo | max.checked_shr(u32::from(l)).unwrap_or(0);
                    keys.extend([lo, hi, lo.wrapping_sub(1) & max, hi.wrapping_add(1) & max]);
                }
                for &(lo, hi, _) in &ranges {
                    keys.extend([lo, hi, lo.wrapping_sub(1) & max, hi.wrapping_add(1) & max]);
                }
                for key in keys {
                    prop_assert_eq!(lookup(&ranges, key), table.lookup(key).map(|(_, v)| *v), "key {:#x}", key);
                }
            }
        }
    }

    #[test]
    fn disjoint_ranges_handle_whole_spaces_and_their_last_key() {
        let v6 = ranges_of(&[(0, 0, 1), (u128::MAX, 128, 2), (1 << 127, 1, 3)], 128);
        assert_eq!(
            v6,
            vec![
                (0, (1 << 127) - 1, 1),
                (1 << 127, u128::MAX - 1, 3),
                (u128::MAX, u128::MAX, 2)
            ]
        );
        let v4 = ranges_of(&[(0, 0, 7), (0xffff_ffff, 32, 8), (0, 32, 9)], 32);
        assert_eq!(
            v4,
            vec![
                (0, 0, 9),
                (1, 0xffff_fffe, 7),
                (0xffff_ffff, 0xffff_ffff, 8)
            ]
        );
        assert!(ranges_of(&[], 32).is_empty());
        // Of two equal prefixes the later wins, as a later trie insert replaces the earlier.
        assert_eq!(ranges_of(&[(5, 32, 1), (5, 32, 2)], 32), vec![(5, 5, 2)]);
    }

    #[test]
    fn ranges_are_written_as_prefixes_where_they_are_prefixes() {
        let text = |lo: u128, hi: u128, v6: bool| {
            let mut out = Vec::new();
            write_range(&mut out, lo, hi, v6).unwrap();
            String::from_utf8(out).unwrap()
        };
        let a = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
        let b = |s: &str| u128::from(s.parse::<Ipv6Addr>().unwrap());
        assert_eq!(text(a("10.0.0.0"), a("10.0.0.255"), false), "10.0.0.0/24");
        assert_eq!(text(a("10.0.0.7"), a("10.0.0.7"), false), "10.0.0.7");
        assert_eq!(
            text(a("10.0.0.1"), a("10.0.0.4"), false),
            "10.0.0.1-10.0.0.4"
        );
        assert_eq!(
            text(a("10.0.0.0"), a("10.0.0.2"), false),
            "10.0.0.0-10.0.0.2"
        );
        assert_eq!(text(0, 0xffff_ffff, false), "0.0.0.0/0");
        assert_eq!(text(0, u128::MAX, true), "::/0");
        assert_eq!(
            text(b("2001:db8::"), b("2001:db8::ffff"), true),
            "2001:db8::/112"
        );
        assert_eq!(
            text(b("2001:db8::1"), b("2001:db8::10"), true),
            "2001:db8::1-2001:db8::10"
        );
        assert_eq!(
            text(u128::MAX, u128::MAX, true),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
    }

    #[test]
    fn exemptions_merge_into_disjoint_ranges() {
        let nets: Vec<IpNet> = [
            "10.0.0.0/24",
            "10.0.0.128/25",
            "10.0.1.0/24",
            "::/0",
            "2001:db8::1/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let (v4, v6) = exempt_ranges(&nets);
        assert_eq!(v4, vec![(0x0a00_0000, 0x0a00_01ff)]);
        assert_eq!(v6, vec![(0, u128::MAX)]);
    }

    // -----------------------------------------------------------------------------------
    // The plan against fwd's evaluator (the kernel's semantics)
    // -----------------------------------------------------------------------------------

    /// What the script does with a packet whose remote is `remote`, read from the plan (the
    /// maps' elements and the class chains' steps): `Ok(rule)` if a rule allows it (with the
    /// rule's `related` flag), `Err(passes)` if it is denied (`passes`: in audit mode).
    fn plan_decides(
        plan: &Plan<'_>,
        elements: &[(u128, u128, Target)],
        dir: Dir,
        remote: u128,
        protocol: u8,
        dst_port: u16,
        src_port: u16,
    ) -> Result<(u32, bool), bool> {
        let i = elements.partition_point(|&(_, hi, _)| hi < remote);
        let target = elements
            .get(i)
            .filter(|&&(lo, _, _)| lo <= remote)
            .map(|&(_, _, t)| t);
        let chains = match dir {
            Dir::Egress => &plan.egress_chains,
            Dir::Ingress => &plan.ingress_chains,
        };
        match target {
            None => Err(plan.audit),
            Some(Target::NoPortAudit) => Err(true),
            Some(Target::Chain(n)) => {
                let (steps, audited) = &chains[n];
                match first_step(steps, protocol, dst_port, src_port) {
                    Some(step) => Ok((
                        step.verdict.rule,
                        step.verdict.flags & PortVerdict::FLAG_RELATED != 0,
                    )),
                    None => Err(*audited),
                }
            }
        }
    }

    fn elements_of(plan: &Plan<'_>, v6: bool, dir: Dir) -> Vec<(u128, u128, Target)> {
        let mut out: Vec<(u128, u128, Target)> = Vec::new();
        plan.elements::<()>(v6, dir, |lo, hi, t| {
            if let Some(&(_, phi, pt)) = out.last() {
                assert!(phi < lo, "elements overlap");
                assert!(
                    phi + 1 != lo || pt != t,
                    "adjacent equal elements not joined"
                );
            }
            out.push((lo, hi, t));
            Ok(())
        })
        .unwrap();
        out
    }

    /// Checks every probe on the plan against `Evaluator` (and the address maps' audit bit):
    /// the same rule allows it, or both deny it and agree on whether audit mode passes it.
    fn assert_plan_matches_evaluator(
        image: &MapImage,
        opts: &NftOptions,
        addresses: &[IpAddr],
        protocols: &[u8],
        ports: &[u16],
    ) {
        let plan = Plan::new(image, opts);
        let evaluator = Evaluator::new(image);
        let mut audit4 = LpmTable::new(32);
        for (n, c) in &image.dst4 {
            audit4.insert(
                u128::from(u32::from(n.network())),
                n.prefix_len(),
                c & CLASS_AUDIT != 0,
            );
        }
        let mut audit6 = LpmTable::new(128);
        for (n, c) in &image.dst6 {
            audit6.insert(
                u128::from(n.network()),
                n.prefix_len(),
                c & CLASS_AUDIT != 0,
            );
        }
        let elements = [
            [
                elements_of(&plan, false, Dir::Egress),
                elements_of(&plan, false, Dir::Ingress),
            ],
            [
                elements_of(&plan, true, Dir::Egress),
                elements_of(&plan, true, Dir::Ingress),
            ],
        ];
        for &remote in addresses {
            let (key, v6) = match remote {
                IpAddr::V4(a) => (u128::from(u32::from(a)), false),
                IpAddr::V6(a) => (u128::from(a), true),
            };
            let audited = opts.audit
                || if v6 {
                    audit6.lookup(key)
                } else {
                    audit4.lookup(key)
                }
                .is_some_and(|(_, a)| *a);
            for &protocol in protocols {
                let portless = !has_ports(protocol);
                for (i, &port) in ports.iter().enumerate() {
                    let port = if portless { 0 } else { port };
                    // Egress: the remote port is the destination.
                    let kernel = evaluator.evaluate(&Probe {
                        direction: Direction::Egress,
                        protocol,
                        remote,
                        port,
                        local_port: 0,
                    });
                    let ours = plan_decides(
                        &plan,
                        &elements[v6 as usize][0],
                        Dir::Egress,
                        key,
                        protocol,
                        port,
                        0,
                    );
                    let expected = match kernel {
                        Verdict::Allow { rule } => Ok((rule, image.rule(rule).unwrap().related)),
                        _ => Err(audited),
                    };
                    assert_eq!(
                        ours, expected,
                        "egress {remote} proto {protocol} port {port}"
                    );
                    // Ingress: the local port is the destination, the remote's the source.
                    for &other in ports.iter().skip(i % 3).step_by(3) {
                        let local = if portless { 0 } else { other };
                        let kernel = evaluator.evaluate(&Probe {
                            direction: Direction::Ingress,
                            protocol,
                            remote,
                            port,
                            local_port: local,
                        });
                        let ours = plan_decides(
                            &plan,
                            &elements[v6 as usize][1],
                            Dir::Ingress,
                            key,
                            protocol,
                            local,
                            port,
                        );
                        let expected = match kernel {
                            Verdict::Allow { rule } => {
                                Ok((rule, image.rule(rule).unwrap().related))
                            }
                            _ => Err(audited),
                        };
                        assert_eq!(
                            ours, expected,
                            "ingress {remote} proto {protocol} remote port {port} local port {local}"
                        );
                    }
                }
            }
        }
    }

    fn rule(n: usize, spec: &RuleSpec) -> Rule {
        Rule {
            id: format!("r{n}"),
            service: format!("service {n}"),
            purpose: None,
            level: Level::Mandatory,
            profile: None,
            region: None,
            direction: if spec.ingress {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            protocols: spec.protocols.clone(),
            ports: if spec
                .protocols
                .iter()
                .any(|p| matches!(p, Protocol::Tcp | Protocol::Udp))
            {
                spec.ports.clone()
            } else {
                Vec::new()
            },
            port_side: if spec.ingress && spec.local {
                PortSide::Local
            } else {
                PortSide::Remote
            },
            related: spec.ingress && spec.related,
            remotes: spec.remotes.clone(),
            not_before: None,
            not_after: None,
            notes: None,
            todo: None,
            location: Location {
                file: PathBuf::from("p.toml"),
                line: n + 1,
                col: 1,
            },
        }
    }

    #[derive(Clone, Debug)]
    struct RuleSpec {
        ingress: bool,
        local: bool,
        related: bool,
        protocols: Vec<Protocol>,
        ports: Vec<PortRange>,
        remotes: Vec<Remote>,
        vendor: usize,
    }

    fn rule_spec() -> impl Strategy<Value = RuleSpec> {
        let protocols = prop_oneof![
            Just(vec![Protocol::Tcp]),
            Just(vec![Protocol::Udp]),
            Just(vec![Protocol::Tcp, Protocol::Udp]),
            Just(vec![Protocol::Icmp]),
            Just(vec![Protocol::Any]),
        ];
        let ports = proptest::collection::vec(
            prop_oneof![
                (0u16..120, 0u16..40).prop_map(|(lo, w)| PortRange { lo, hi: lo + w }),
                Just(PortRange::ALL),
            ],
            1..3,
        );
        // Prefixes crowded into 10.0.0.0/24 and 2001:db8::/120, so they nest; now and then
        // `any`.
        let net = prop_oneof![
            (any::<u8>(), 24u8..=32).prop_map(|(k, l)| {
                IpNet::V4(
                    ipnet::Ipv4Net::new(Ipv4Addr::new(10, 0, 0, k), l)
                        .unwrap()
                        .trunc(),
                )
            }),
            (any::<u8>(), 120u8..=128).prop_map(|(k, l)| {
                let a = (0x2001_0db8u128 << 96) | u128::from(k);
                IpNet::V6(ipnet::Ipv6Net::new(Ipv6Addr::from(a), l).unwrap().trunc())
            }),
        ];
        let remotes = prop_oneof![
            5 => proptest::collection::vec(net, 1..4).prop_map(|n| vec![Remote::Nets(n)]),
            1 => Just(vec![Remote::Any]),
        ];
        (
            (any::<bool>(), any::<bool>(), any::<bool>(), 0u8..10),
            protocols,
            ports,
            remotes,
            0usize..2,
        )
            .prop_map(
                |((ingress, local, related, p), protocols, ports, remotes, vendor)| RuleSpec {
                    // One rule in three is ingress.
                    ingress: ingress && p < 7,
                    local,
                    related,
                    protocols,
                    ports,
                    remotes,
                    vendor,
                },
            )
    }

    fn image_from_specs(specs: &[RuleSpec], audit_second: bool) -> MapImage {
        let vendors = (0..2)
            .map(|v| VendorPolicy {
                vendor: Vendor {
                    id: format!("v{v}"),
                    name: format!("V{v}"),
                    source: None,
                    reviewed: None,
                    notes: None,
                },
                rules: specs
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.vendor == v)
                    .map(|(n, s)| rule(n, s))
                    .collect(),
                file: PathBuf::from(format!("v{v}.toml")),
            })
            .collect();
        let mut selection = Selection::widest(DAY);
        if audit_second {
            selection.audit_vendors = BTreeSet::from(["v1".to_string()]);
        }
        compile(&PolicySet { vendors }, &selection).unwrap().image
    }

    /// Addresses at and around every prefix boundary, and a few outside.
    fn probe_addresses(image: &MapImage) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = vec![
            "10.0.1.1".parse().unwrap(),
            "9.255.255.255".parse().unwrap(),
            "2001:db8::1:0".parse().unwrap(),
        ];
        for (n, _) in &image.dst4 {
            let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
            for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                out.push(IpAddr::from(Ipv4Addr::from(a)));
            }
        }
        for (n, _) in &image.dst6 {
            let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
            for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                out.push(IpAddr::from(Ipv6Addr::from(a)));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn probe_ports(image: &MapImage) -> Vec<u16> {
        let mut out = vec![0, 1, 65534, 65535];
        for r in &image.rules {
            for p in &r.ports {
                out.extend([p.lo, p.hi, p.lo.saturating_sub(1), p.hi.saturating_add(1)]);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    const PROTOCOLS: [u8; 7] = [
        proto::TCP,
        proto::UDP,
        proto::ICMP,
        proto::ICMPV6,
        0,
        47,
        255,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Random policies (nested prefixes, port ranges, tcp/udp/icmp/any, egress and
        /// ingress on either port, related, `any` remotes, an audited vendor): the script's
        /// maps and class chains decide every probe as fwd's evaluator does.
        #[test]
        fn plan_decides_like_the_kernel(
            specs in proptest::collection::vec(rule_spec(), 1..7),
            audit_second in any::<bool>(),
            global_audit in proptest::bool::weighted(0.2),
        ) {
            let image = image_from_specs(&specs, audit_second);
            let mut opts = options();
            opts.audit = global_audit;
            assert_plan_matches_evaluator(
                &image,
                &opts,
                &probe_addresses(&image),
                &PROTOCOLS,
                &probe_ports(&image),
            );
        }
    }

    const ACME: &str = r#"
[vendor]
id = "acme"
name = "Acme Video"

[[rule]]
id = "web"
service = "Web app"
protocol = "tcp"
ports = [443, "8000-8100"]
remote = ["198.51.100.0/24", "2001:db8:a::/48"]

[[rule]]
id = "media"
service = "Media \"SRTP\""
protocol = "udp"
ports = ["10000-20000"]
remote = ["198.51.100.128/25", "2001:db8:a:1::/64"]

[[rule]]
id = "ping"
service = "Reachability"
protocol = "icmp"
remote = "198.51.100.200"

[[rule]]
id = "tunnel"
service = "Tunnel"
protocol = "any"
remote = "198.51.100.192/26"

[[rule]]
id = "srtp-in"
service = "Media from the SFU"
direction = "ingress"
protocol = "udp"
remote_ports = ["3478"]
related = true
remote = "198.51.100.0/24"

[[rule]]
id = "webhook"
service = "Webhooks"
direction = "ingress"
protocol = "tcp"
local_ports = [8443]
remote = "203.0.113.0/24"

[[rule]]
id = "portal"
service = "Portal"
protocol = "tcp"
ports = [443]
remote = "portal.acme.example"
"#;

    const TRIAL: &str = r#"
[vendor]
id = "trial"
name = "Trial"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = "192.0.2.0/25"
"#;

    #[test]
    fn bundled_style_policy_decides_like_the_kernel() {
        let image = image_of(&[ACME, TRIAL], &["trial"]);
        let mut addresses = probe_addresses(&image);
        addresses.extend(
            [
                "198.51.100.201",
                "198.51.100.130",
                "2001:db8:a:1::5",
                "192.0.2.1",
                "203.0.113.9",
            ]
            .iter()
            .map(|a| a.parse::<IpAddr>().unwrap()),
        );
        let ports = probe_ports(&image);
        assert_plan_matches_evaluator(&image, &options(), &addresses, &PROTOCOLS, &ports);
        let mut audit = options();
        audit.audit = true;
        assert_plan_matches_evaluator(&image, &audit, &addresses, &PROTOCOLS, &ports);
    }

    /// fwd's ingress precedence, case by case: a rule naming addresses beats a `remote =
    /// "any"` rule on the other port, a rule that needs no live flow beats a `related` one,
    /// then the local port beats the remote port.
    #[test]
    fn ingress_precedence_decides_like_the_kernel() {
        let policy = r#"
[vendor]
id = "inbound"
name = "Inbound"

[[rule]]
id = "any-local"
service = "Any, local ports"
direction = "ingress"
protocol = "udp"
local_ports = ["5000-6000"]
remote = "any"

[[rule]]
id = "named-remote"
service = "Named, remote ports"
direction = "ingress"
protocol = "udp"
remote_ports = ["3478-3480"]
remote = "198.51.100.0/24"

[[rule]]
id = "related-local"
service = "Related, local port"
direction = "ingress"
protocol = "udp"
local_ports = [3478, 5500]
related = true
remote = "198.51.100.0/25"

[[rule]]
id = "named-local"
service = "Named, local port"
direction = "ingress"
protocol = ["tcp", "udp"]
local_ports = ["3479-3479"]
remote = "198.51.100.7"
"#;
        let image = image_of(&[policy], &[]);
        let addresses: Vec<IpAddr> = [
            "198.51.100.7",
            "198.51.100.8",
            "198.51.100.200",
            "192.0.2.1",
            "2001:db8::1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let ports = [
            0, 22, 3477, 3478, 3479, 3480, 3481, 4999, 5000, 5500, 6000, 6001, 65535,
        ];
        assert_plan_matches_evaluator(&image, &options(), &addresses, &PROTOCOLS, &ports);
    }

    // -----------------------------------------------------------------------------------
    // The text
    // -----------------------------------------------------------------------------------

    #[test]
    fn script_replaces_its_table_and_reads_as_nftables() {
        let image = image_of(&[ACME, TRIAL], &["trial"]);
        let text = render(&image, &options());
        // The header is comments only; then create, delete, define: one transaction.
        let body: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect();
        assert_eq!(
            &body[..3],
            &[
                "table inet fwd_export",
                "delete table inet fwd_export",
                "table inet fwd_export {"
            ]
        );
        assert_eq!(body.last(), Some(&"}"));
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        for expected in [
            "\tcounter acme/web { comment \"Web app, v0.toml:6\" }",
            // Quotes in a service become apostrophes in the comment.
            "\tcounter acme/media { comment \"Media 'SRTP', v0.toml:13\" }",
            "\t\ttcp dport 443 counter name \"acme/web\" goto egress_allow",
            "\t\ttcp dport 8000-8100 counter name \"acme/web\" goto egress_allow",
            "\t\tudp dport 10000-20000 counter name \"acme/media\" goto egress_allow",
            "\t\tmeta l4proto icmp counter name \"acme/ping\" goto egress_allow",
            "\t\tmeta l4proto ipv6-icmp counter name \"acme/ping\" goto egress_allow",
            // The related rule: from a live remote, else not_related.
            "\t\tudp sport 3478 ip saddr @live4 counter name \"acme/srtp-in\" accept",
            "\t\tudp sport 3478 ip6 saddr @live6 counter name \"acme/srtp-in\" accept",
            "\t\tudp sport 3478 goto ingress_not_related",
            "\t\ttcp dport 8443 counter name \"acme/webhook\" accept",
            "\t\tip daddr @exempt4 counter name \"reason/exempt\" accept",
            "\t\tip daddr vmap @egress4",
            "\t\tip6 saddr vmap @ingress6",
            "\t\tiifname \"lan0\" goto egress",
            "\t\toifname \"lan0\" goto ingress",
            "\t\tcounter name \"reason/no_address_match\" drop",
            "\t\ttype filter hook forward priority filter; policy accept;",
            "\t\t\t198.51.100.0/25 : goto e",
            // The audited vendor's class passes what it does not allow.
            "\t\tgoto egress_no_port_audit",
            "\t\t\t2001:db8:a::/64 : goto e",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // The `any` rule: every protocol from its /26.
        assert!(
            text.contains("\t\tcounter name \"acme/tunnel\" goto egress_allow\n"),
            "{text}"
        );
        // No anonymous sets in class chains (they load in quadratic time).
        for line in text.lines().filter(|l| l.contains("counter name \"acme/")) {
            assert!(!line.contains('{'), "anonymous set in {line}");
        }
        // The domain rule is named among the differences.
        assert!(
            text.contains("# - 1 rule(s) name hostnames or domains (acme/portal)"),
            "{text}"
        );
        // Nothing for the host hooks of a gateway-only config.
        assert!(!text.contains("hook output"));
    }

    #[test]
    fn audit_mode_drops_nothing_and_counts_what_it_would() {
        let image = image_of(&[ACME], &[]);
        let mut opts = options();
        opts.audit = true;
        let text = render(&image, &opts);
        assert!(
            !text
                .lines()
                .any(|l| !l.starts_with('#') && l.ends_with(" drop")),
            "{text}"
        );
        assert!(text.contains(
            "counter name \"reason/no_address_match\" counter name \"reason/audit_would_drop\" accept"
        ));
    }

    #[test]
    fn empty_policy_writes_empty_maps_and_no_class_chains() {
        let image = image_of(&[], &[]);
        let mut opts = options();
        opts.hooks.clear();
        opts.exempt.clear();
        let mut out = Vec::new();
        let summary = write_nftables(&mut out, &image, &opts).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(summary, ExportSummary::default());
        assert!(
            text.contains(
                "\tmap egress4 {\n\t\ttype ipv4_addr : verdict\n\t\tflags interval\n\t}\n"
            )
        );
        assert!(!text.contains("elements = {\n"));
        assert!(!text.contains("chain e0"));
        assert!(!text.contains("@exempt4"));
        // Without hooks from a config: this host's traffic on every interface but lo.
        assert!(text.contains("\t\toifname != \"lo\" goto egress\n"));
        assert!(text.contains("\t\tiifname != \"lo\" goto ingress\n"));
        assert!(!text.contains("hook forward"));
        assert!(text.contains("# - no [[interface]] given"));
    }

    #[test]
    fn host_uplinks_hook_output_input_and_forward() {
        let image = image_of(&[TRIAL], &[]);
        let mut opts = options();
        opts.hooks = vec![
            Hook {
                interface: "eth0".into(),
                mode: HookMode::Host,
            },
            Hook {
                interface: "eth1".into(),
                mode: HookMode::Host,
            },
        ];
        let text = render(&image, &opts);
        for expected in [
            "\tchain output {\n\t\ttype filter hook output priority filter; policy accept;\n\t\toifname { \"eth0\", \"eth1\" } goto egress\n\t}",
            "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname { \"eth0\", \"eth1\" } goto ingress\n\t}",
            "\t\toifname { \"eth0\", \"eth1\" } goto egress\n\t\tiifname { \"eth0\", \"eth1\" } goto ingress\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        // Without related rules there is no live-remote set, and allowed egress accepts.
        assert!(!text.contains("live4"));
        assert!(text.contains("tcp dport 443 counter name \"trial/web\" accept"));
    }

    #[test]
    fn equal_class_decisions_share_a_chain() {
        // 192.0.2.0/26 also has an ingress rule: two classes, one egress decision. The
        // egress map then holds one element for the whole /25.
        let trial = TRIAL.to_string()
            + "\n[[rule]]\nid = \"in\"\nservice = \"In\"\ndirection = \"ingress\"\n\
               protocol = \"tcp\"\nlocal_ports = [22]\nremote = \"192.0.2.0/26\"\n";
        let image = image_of(&[&trial], &[]);
        assert_eq!(image.classes, 2);
        let plan = Plan::new(&image, &options());
        assert_eq!(plan.egress_chains.len(), 1);
        assert_eq!(
            elements_of(&plan, false, Dir::Egress),
            vec![(0xc000_0200, 0xc000_027f, Target::Chain(0))]
        );
        assert_eq!(plan.ingress_chains.len(), 1);
        assert_eq!(
            elements_of(&plan, false, Dir::Ingress),
            vec![(0xc000_0200, 0xc000_023f, Target::Chain(0))]
        );
    }

    #[test]
    fn an_any_protocol_rule_becomes_the_catch_all_of_its_chain() {
        let image = image_of(&[ACME], &[]);
        let text = render(&image, &options());
        let chain = "\t\ttcp dport 443 counter name \"acme/web\" goto egress_allow\n\
                     \t\ttcp dport 8000-8100 counter name \"acme/web\" goto egress_allow\n\
                     \t\tudp dport 10000-20000 counter name \"acme/media\" goto egress_allow\n\
                     \t\tmeta l4proto icmp counter name \"acme/ping\" goto egress_allow\n\
                     \t\tmeta l4proto ipv6-icmp counter name \"acme/ping\" goto egress_allow\n\
                     \t\tcounter name \"acme/tunnel\" goto egress_allow\n\t}";
        assert!(text.contains(chain), "{text}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_table_name("fwd_export").is_ok());
        assert!(check_table_name("vendor-allow").is_ok());
        let e = check_table_name("fwd").unwrap_err();
        assert!(e.contains("keyword"), "{e}");
        assert!(check_table_name("1table").is_err());
        assert!(check_table_name("a b").is_err());
        assert!(check_interface_name("lan0").is_ok());
        assert!(check_interface_name("bad\"name").is_err());
        assert!(check_interface_name("").is_err());
        assert_eq!(counter_name("acme", "web"), "acme/web");
        assert_eq!(counter_name("8x8", "web"), "_8x8/web");
    }
}
