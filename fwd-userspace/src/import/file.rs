//! Rendering the imported list as a policy file that records its provenance: the command
//! line, the source's fingerprint, and each entry's origin.

use std::{collections::BTreeSet, fmt::Write as _};

use ipnet::IpNet;

use crate::policy::{Date, Level, Protocol};

use super::{
    Imported, Summary, args::ImportArgs, args::RuleSettings, read::Input, read::ListOrigin,
    read::ReadList,
};

/// Identifies the input bytes in the notes: SHA-256, size and line count.
pub(super) fn fingerprint(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lines = bytes.iter().filter(|b| **b == b'\n').count()
        + usize::from(bytes.last().is_some_and(|b| *b != b'\n'));
    format!(
        "SHA-256 {hex}, {} bytes, {} line{}",
        bytes.len(),
        lines,
        if lines == 1 { "" } else { "s" }
    )
}

/// A TOML basic string with everything escaped that needs it.
pub(super) fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Text safe inside a TOML comment (no control characters but tab).
pub(super) fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// A word as a POSIX shell would read it back.
pub(super) fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that regenerates the file (written into its header).
pub(super) fn command_line(args: &ImportArgs) -> String {
    let mut words: Vec<String> = vec!["fwd".into(), "import".into()];
    let mut push = |flag: &str, value: &str| {
        words.push(flag.to_string());
        words.push(shell_word(value));
    };
    push("--format", args.format.as_str());
    for s in &args.aws_services {
        push("--aws-service", s);
    }
    for r in &args.aws_regions {
        push("--aws-region", r);
    }
    push("--vendor", &args.vendor);
    if let Some(name) = &args.vendor_name {
        push("--vendor-name", name);
    }
    push("--rule", &args.rule);
    push("--service", &args.service);
    let protocols: Vec<&str> = args
        .protocol
        .iter()
        .map(|p| Protocol::from(*p).as_str())
        .collect();
    push("--protocol", &protocols.join(","));
    if let Some(ports) = &args.ports {
        push("--ports", ports);
    }
    push("--level", Level::from(args.level).as_str());
    if let Some(region) = &args.region {
        push("--region", region);
    }
    if let Some(source) = &args.source {
        push("--source", source);
    }
    if let Some(out) = &args.output {
        push("-o", &out.display().to_string());
        words.push("--force".into());
    }
    words.push(shell_word(&args.input.display().to_string()));
    words.join(" ")
}

/// The prefixes' origins as a short comment: `lines 3-4, 9` or `EC2 us-east-1, ...`.
pub(super) fn describe_origins(origins: &BTreeSet<&ListOrigin>) -> String {
    const SHOWN: usize = 4;
    let mut lines: Vec<usize> = Vec::new();
    let mut labels: Vec<&str> = Vec::new();
    for o in origins {
        match o {
            ListOrigin::Line(n) => lines.push(*n),
            ListOrigin::Label(l) => labels.push(l),
        }
    }
    let mut items: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j + 1 < lines.len() && lines[j + 1] == lines[j] + 1 {
            j += 1;
        }
        items.push(if i == j {
            lines[i].to_string()
        } else {
            format!("{}-{}", lines[i], lines[j])
        });
        i = j + 1;
    }
    let line_word = if lines.len() == 1 { "line " } else { "lines " };
    let prefix = if lines.is_empty() { "" } else { line_word };
    items.extend(labels.iter().map(std::string::ToString::to_string));
    let more = items.len().saturating_sub(SHOWN);
    items.truncate(SHOWN);
    let mut text = format!("{prefix}{}", items.join(", "));
    if more > 0 {
        let _ = write!(text, " +{more} more");
    }
    comment_safe(&text)
}

/// Where a feed's list came from, for the generated file's header and notes.
pub struct FeedOrigin {
    pub feed: String,
    pub url: String,
    /// The publisher's version marker, or the server's ETag / Last-Modified.
    pub version: Option<String>,
}

pub(super) fn render(
    args: &ImportArgs,
    rule: &RuleSettings,
    input: &Input,
    bytes: &[u8],
    list: &ReadList,
    today: Date,
    feed: Option<&FeedOrigin>,
) -> Imported {
    // Every prefix with its origin, sorted; then merged into the minimal disjoint cover.
    let mut tagged: Vec<(IpNet, &ListOrigin)> = list
        .entries
        .iter()
        .flat_map(|e| e.nets.iter().map(move |n| (n.trunc(), &e.origin)))
        .collect();
    tagged.sort();
    let distinct: BTreeSet<IpNet> = tagged.iter().map(|(n, _)| *n).collect();
    let mut merged = IpNet::aggregate(&distinct.iter().copied().collect());
    merged.sort();

    // Each input prefix lies inside exactly one merged prefix (aggregation never splits an
    // aligned block), and both lists are sorted by start address: one sweep pairs them.
    let mut origins: Vec<BTreeSet<&ListOrigin>> = vec![BTreeSet::new(); merged.len()];
    let mut m = 0;
    for (net, origin) in &tagged {
        while m < merged.len() && !merged[m].contains(net) {
            m += 1;
        }
        if let Some(set) = origins.get_mut(m) {
            set.insert(*origin);
        }
    }

    let summary = Summary {
        entries: list.entries.len(),
        prefixes: distinct.len(),
        merged: merged.len(),
        ipv4: merged.iter().filter(|n| matches!(n, IpNet::V4(_))).count(),
        ipv6: merged.iter().filter(|n| matches!(n, IpNet::V6(_))).count(),
    };
    let source = args.source.clone().unwrap_or_else(|| input.label.clone());
    let mut vendor_notes = match feed {
        None => format!(
            "Imported by `fwd import --format {}` on {today} from {} ({})",
            args.format.as_str(),
            input.label,
            fingerprint(bytes)
        ),
        Some(f) => format!(
            "Fetched by `fwd feeds update` (feed `{}`, format {}) on {today} from {}{} ({})",
            f.feed,
            args.format.as_str(),
            f.url,
            f.version
                .as_ref()
                .map_or_else(String::new, |v| format!(", version {v}")),
            fingerprint(bytes)
        ),
    };
    if !list.details.is_empty() {
        let _ = write!(vendor_notes, "; {}", list.details);
    }
    let _ = write!(vendor_notes, "; {}.", summary.describe());
    let rule_notes = format!(
        "The remote list is {source}, imported by fwd import on {today}: sorted, deduplicated \
         and merged, covering exactly the published addresses. Re-run the import (see the file \
         header) when the vendor publishes a new list rather than editing it by hand."
    );

    let mut out = String::new();
    match feed {
        None => {
            let _ = writeln!(
                out,
                "# Generated by `fwd import` on {today} from {}.",
                comment_safe(&input.label)
            );
            out.push_str("# To update it, re-run the import on the vendor's new list:\n");
            let _ = writeln!(out, "#   {}", comment_safe(&command_line(args)));
        }
        Some(f) => {
            let _ = writeln!(
                out,
                "# Generated by `fwd feeds update` on {today} from feed `{}`: {}.",
                comment_safe(&f.feed),
                comment_safe(&f.url)
            );
            out.push_str(
                "# Do not edit: the next good fetch replaces it. Change the [[feed]] in fwd.toml.\n",
            );
        }
    }
    out.push('\n');
    out.push_str("[vendor]\n");
    let _ = writeln!(out, "id = {}", toml_str(&args.vendor));
    let _ = writeln!(
        out,
        "name = {}",
        toml_str(args.vendor_name.as_deref().unwrap_or(&args.vendor))
    );
    let _ = writeln!(out, "source = {}", toml_str(&source));
    let _ = writeln!(out, "reviewed = {}", toml_str(&today.to_string()));
    let _ = writeln!(out, "notes = {}", toml_str(&vendor_notes));
    out.push('\n');
    out.push_str("[[rule]]\n");
    let _ = writeln!(out, "id = {}", toml_str(&args.rule));
    let _ = writeln!(out, "service = {}", toml_str(&args.service));
    let _ = writeln!(out, "level = {}", toml_str(rule.level.as_str()));
    if let Some(region) = &args.region {
        let _ = writeln!(out, "region = {}", toml_str(region));
    }
    let protocols: Vec<String> = rule
        .protocols
        .iter()
        .map(|p| toml_str(p.as_str()))
        .collect();
    if protocols.len() == 1 {
        let _ = writeln!(out, "protocol = {}", protocols[0]);
    } else {
        let _ = writeln!(out, "protocol = [{}]", protocols.join(", "));
    }
    if !rule.ports.is_empty() {
        let ports: Vec<String> = rule
            .ports
            .iter()
            .map(|p| {
                if p.lo == p.hi {
                    p.lo.to_string()
                } else {
                    toml_str(&p.to_string())
                }
            })
            .collect();
        let _ = writeln!(out, "ports = [{}]", ports.join(", "));
    }
    let _ = writeln!(out, "notes = {}", toml_str(&rule_notes));
    out.push_str("remote = [\n");
    let width = merged
        .iter()
        .map(|n| n.to_string().len() + 3)
        .max()
        .unwrap_or(0);
    for (net, origin) in merged.iter().zip(&origins) {
        let item = format!("\"{net}\",");
        let _ = writeln!(out, "    {item:<width$} # {}", describe_origins(origin));
    }
    out.push_str("]\n");
    Imported {
        text: out,
        summary,
        distinct: distinct.into_iter().collect(),
    }
}
