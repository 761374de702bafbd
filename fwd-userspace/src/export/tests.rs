use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use fwd_common::{CLASS_AUDIT, PortVerdict, proto};

use proptest::prelude::*;

use super::{names::*, plan::*, ranges::*, steps::*, *};
use crate::{
    compile::{Evaluator, Probe, Selection, Verdict, compile, lpm::LpmTable},
    policy::{
        Date, Direction, Level, Location, PolicySet, PortRange, PortSide, Protocol, Remote, Rule,
        Vendor, VendorPolicy, parse_vendor_file,
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
    selection.audit_vendors = audit_vendors
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    compile(&PolicySet { vendors }, &selection).unwrap().image
}

fn options() -> NftOptions {
    NftOptions {
        table: DEFAULT_TABLE.to_string(),
        hooks: vec![Interface {
            name: "lan0".to_string(),
            mode: InterfaceMode::Gateway,
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
                        Verdict::Allow { rule } => Ok((rule, image.rule(rule).unwrap().related)),
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
        text.contains("\tmap egress4 {\n\t\ttype ipv4_addr : verdict\n\t\tflags interval\n\t}\n")
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
        Interface {
            name: "eth0".into(),
            mode: InterfaceMode::Host,
        },
        Interface {
            name: "eth1".into(),
            mode: InterfaceMode::Host,
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
