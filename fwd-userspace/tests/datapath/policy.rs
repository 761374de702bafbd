//! The fixtures' policy and the addresses they use.

use std::path::Path;

use fwd::policy::{PolicySet, parse_vendor_file};

pub(crate) const ALPHA: &str = r#"
[vendor]
id = "alpha"
name = "Alpha Video"

[[rule]]
id = "tcp"
service = "Signaling"
protocol = "tcp"
ports = [443, "10000-10010"]
remote = ["203.0.113.0/24", "2001:db8:1::/48"]

[[rule]]
id = "udp"
service = "Media"
protocol = "udp"
ports = [3478, "20000-20100"]
remote = ["203.0.113.0/24", "2001:db8:1::/48"]

[[rule]]
id = "icmp"
service = "Diagnostics"
protocol = "icmp"
remote = ["203.0.113.0/24", "2001:db8:1::/48"]

[[rule]]
id = "tunnel"
service = "Tunnel"
protocol = "any"
remote = ["198.51.100.7", "2001:db8:7::7"]

[[rule]]
id = "webhook"
service = "Webhook"
direction = "ingress"
protocol = "tcp"
local_ports = [8443]
remote = ["192.0.2.0/24", "2001:db8:2::/48"]

[[rule]]
id = "relay"
service = "Relay media"
direction = "ingress"
protocol = "udp"
remote_ports = ["5000-5010"]
remote = ["192.0.2.0/24", "2001:db8:2::/48"]

[[rule]]
id = "srtp"
service = "Related media"
direction = "ingress"
protocol = "udp"
local_ports = ["30000-30100"]
related = true
remote = ["203.0.113.0/24", "2001:db8:1::/48"]
"#;

pub(crate) const BETA: &str = r#"
[vendor]
id = "beta"
name = "Beta Cloud"

[[rule]]
id = "https"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["100.64.0.0/24", "2001:db8:64::/48"]
"#;

/// Configured exemptions (a management subnet).
pub(crate) const EXEMPTIONS: [&str; 2] = ["192.168.77.0/24", "fd77::/64"];

/// The protected host.
pub(crate) const LOCAL4: [u8; 4] = [10, 1, 0, 2];
/// Another host of the protected network.
pub(crate) const OTHER_LOCAL4: [u8; 4] = [10, 1, 0, 3];
/// alpha/tcp, alpha/udp, alpha/icmp, alpha/srtp (ingress, related).
pub(crate) const ALLOWED4: [u8; 4] = [203, 0, 113, 5];
pub(crate) const ALLOWED4_B: [u8; 4] = [203, 0, 113, 6];
/// alpha/tunnel (protocol any).
pub(crate) const TUNNEL4: [u8; 4] = [198, 51, 100, 7];
/// alpha/webhook and alpha/relay (ingress only).
pub(crate) const PEER4: [u8; 4] = [192, 0, 2, 10];
/// beta/https.
pub(crate) const BETA4: [u8; 4] = [100, 64, 0, 5];
/// No rule.
pub(crate) const UNKNOWN4: [u8; 4] = [198, 18, 0, 9];
/// A router on the path (no rule): sends ICMP errors.
pub(crate) const ROUTER4: [u8; 4] = [198, 18, 0, 1];
pub(crate) const EXEMPT4: [u8; 4] = [192, 168, 77, 5];

pub(crate) const LOCAL6: [u8; 16] = 0xfd00_0001_0000_0000_0000_0000_0000_0002u128.to_be_bytes();
pub(crate) const LINK6: [u8; 16] = 0xfe80_0000_0000_0000_0000_0000_0000_0002u128.to_be_bytes();
pub(crate) const ALLOWED6: [u8; 16] = 0x2001_0db8_0001_0000_0000_0000_0000_0005u128.to_be_bytes();
pub(crate) const ALLOWED6_B: [u8; 16] = 0x2001_0db8_0001_0000_0000_0000_0000_0006u128.to_be_bytes();
pub(crate) const TUNNEL6: [u8; 16] = 0x2001_0db8_0007_0000_0000_0000_0000_0007u128.to_be_bytes();
pub(crate) const PEER6: [u8; 16] = 0x2001_0db8_0002_0000_0000_0000_0000_0010u128.to_be_bytes();
pub(crate) const BETA6: [u8; 16] = 0x2001_0db8_0064_0000_0000_0000_0000_0005u128.to_be_bytes();
pub(crate) const UNKNOWN6: [u8; 16] = 0x2001_0db8_dead_0000_0000_0000_0000_0009u128.to_be_bytes();
pub(crate) const ROUTER6: [u8; 16] = 0x2001_0db8_ffff_0000_0000_0000_0000_0001u128.to_be_bytes();
pub(crate) const EXEMPT6: [u8; 16] = 0xfd77_0000_0000_0000_0000_0000_0000_0005u128.to_be_bytes();

pub(crate) fn addr6(text: &str) -> [u8; 16] {
    text.parse::<std::net::Ipv6Addr>().unwrap().octets()
}

/// `::ffff:a.b.c.d`.
pub(crate) fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[10] = 0xff;
    out[11] = 0xff;
    out[12..].copy_from_slice(&a);
    out
}

pub(crate) fn policy() -> PolicySet {
    let vendors = [("alpha.toml", ALPHA), ("beta.toml", BETA)]
        .into_iter()
        .map(|(file, text)| parse_vendor_file(Path::new(file), text).expect("fixture policy"))
        .collect();
    PolicySet { vendors }
}
