//! Names nftables accepts: the table, interfaces, counters and comments.

use super::{DEFAULT_TABLE, Interface, InterfaceMode};

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
pub(super) const NFT_KEYWORDS: &[&str] = &[
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

pub(super) fn names_of(hooks: &[Interface], mode: InterfaceMode) -> Vec<&str> {
    hooks
        .iter()
        .filter(|h| h.mode == mode)
        .map(|h| h.name.as_str())
        .collect()
}

/// `iifname "a"` or `iifname { "a", "b" }`.
pub(super) fn interfaces_match(key: &str, names: &[&str]) -> String {
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

/// A counter object's name: `vendor/rule`, which nft takes unquoted when it starts with a
/// letter (`_` in front otherwise).
pub(super) fn counter_name(vendor: &str, rule: &str) -> String {
    if vendor.starts_with(|c: char| c.is_ascii_alphabetic()) {
        format!("{vendor}/{rule}")
    } else {
        format!("_{vendor}/{rule}")
    }
}

/// Text for an nft `comment "..."`: no double quotes or line breaks, at most 128 bytes.
pub(super) fn comment_text(text: &str) -> String {
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
