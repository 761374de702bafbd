//! What the fuzz targets check, shared by `policy_parse` (arbitrary bytes) and
//! `policy_compile` (generated, mostly valid policy files).
//!
//! Nothing may panic, and the compiled tables must agree with the rules: every packet a rule
//! in force opens is allowed, every `Allow` names a compiled rule of the probe's direction,
//! and a recompile keeps the rule ids.

use std::{
    fmt::{self, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use fwd::{
    compile::{self, Evaluator, MapImage, Probe, Selection, Verdict},
    policy::{
        self, Date, Direction, PolicyError, PolicySet, PortSide, Protocol, Remote, Rule,
        VendorPolicy,
    },
};
use ipnet::IpNet;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};

/// A fixed "today" (not `Date::today()`), so that a crash reproduces on any day.
pub const TODAY: Date = Date {
    year: 2026,
    month: 6,
    day: 1,
};

/// IP protocol numbers.
const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const GRE: u8 = 47;
const ICMPV6: u8 = 58;

/// Bounds the probes derived from the rules, so that one input stays fast.
const MAX_ORACLE_PROBES: usize = 512;

/// Whether the oracle also demands that a packet an unconditional rule opens is not credited
/// to a `related` rule. The kernel drops a packet credited to a `related` rule when the
/// remote has no live flow, so a narrower `related` rule currently takes away what a wider
/// unconditional rule of the same addresses opens (seed
/// `seeds/policy_parse/related-shadows-unconditional.toml`). Fixed: unconditional rules now
/// rank before related ones; the check stays as a regression guard.
const CHECK_RELATED_PRECEDENCE: bool = true;

/// An error must point into the text it is about.
pub fn check_error_location(text: &str, err: &PolicyError) {
    let _ = err.to_string();
    let lines = text.split('\n').count();
    assert!(
        err.location.line >= 1 && err.location.line <= lines && err.location.col >= 1,
        "error location {} outside the text ({lines} lines): {err}",
        err.location
    );
}

/// Parses vendor files `(name, text)`, compiles them as one policy directory if they all
/// parse, and checks the result.
pub fn check_policy_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) {
    let mut vendors: Vec<VendorPolicy> = Vec::new();
    for (name, text) in files {
        match policy::parse_vendor_file(Path::new(name), text) {
            Ok(vendor) => {
                // A directory with two files of one vendor id is refused by `load_dir`.
                if vendors.iter().any(|v| v.vendor.id == vendor.vendor.id) {
                    return;
                }
                vendors.push(vendor);
            }
            Err(err) => {
                check_error_location(text, &err);
                return;
            }
        }
    }
    check_compile(&PolicySet { vendors });
}

fn check_compile(set: &PolicySet) {
    let selection = Selection::widest(TODAY);
    let compiled = match compile::compile(set, &selection) {
        Ok(compiled) => compiled,
        Err(err) => {
            let _ = err.to_string();
            return;
        }
    };
    for warning in &compiled.warnings {
        let _ = warning.to_string();
    }
    let image = &compiled.image;
    for pair in image.rules.windows(2) {
        assert!(
            pair[0].id < pair[1].id,
            "image rules not sorted by unique id: {}/{} has {}, {}/{} has {}",
            pair[0].vendor,
            pair[0].rule,
            pair[0].id,
            pair[1].vendor,
            pair[1].rule,
            pair[1].id
        );
    }
    let again = compile::compile_with_ids(set, &selection, &compiled.ids)
        .expect("the same policy compiled once already");
    assert_eq!(
        again.ids, compiled.ids,
        "recompiling with the previous ids changed them"
    );

    let evaluator = Evaluator::new(image);
    fixed_probes(&evaluator, image);
    rule_probes(&evaluator, set);
}

/// Checks what any verdict must satisfy: the allowing rule exists and has the probe's direction.
fn checked(verdict: Verdict, evaluator: &Evaluator<'_>, probe: &Probe, what: &str) -> Verdict {
    if let Verdict::Allow { rule } = verdict {
        let info = evaluator.rule(rule).unwrap_or_else(|| {
            panic!("{what}: {probe:?} allowed by rule id {rule}, which is not in the image")
        });
        assert_eq!(
            info.direction, probe.direction,
            "{what}: {probe:?} allowed by {}/{} of the other direction",
            info.vendor, info.rule
        );
    }
    verdict
}

/// Probes that do not depend on the input, plus the edges of compiled prefixes.
fn fixed_probes(evaluator: &Evaluator<'_>, image: &MapImage) {
    let mut remotes: Vec<IpAddr> = vec![
        Ipv4Addr::UNSPECIFIED.into(),
        Ipv4Addr::new(10, 1, 2, 3).into(),
        Ipv4Addr::BROADCAST.into(),
        Ipv6Addr::UNSPECIFIED.into(),
        Ipv6Addr::LOCALHOST.into(),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).into(),
        Ipv6Addr::from(u128::MAX).into(),
    ];
    for (net, _) in image.dst4.iter().take(8) {
        remotes.push(net.network().into());
        remotes.push(net.broadcast().into());
    }
    for (net, _) in image.dst6.iter().take(8) {
        remotes.push(net.network().into());
        remotes.push(net.broadcast().into());
    }
    for remote in remotes {
        for direction in [Direction::Egress, Direction::Ingress] {
            for protocol in [TCP, UDP, ICMP, ICMPV6, GRE, 0, 255] {
                for (port, local_port) in [(0, 0), (1, 443), (443, 0), (65535, 65535)] {
                    let probe = Probe {
                        direction,
                        protocol,
                        remote,
                        port,
                        local_port,
                    };
                    checked(evaluator.evaluate(&probe), evaluator, &probe, "fixed probe");
                }
            }
        }
    }
    for name in ["example.com", "a.example.com", "x.sfu.example.com", ".", ""] {
        let probe = Probe {
            direction: Direction::Egress,
            protocol: TCP,
            remote: Ipv4Addr::UNSPECIFIED.into(),
            port: 443,
            local_port: 0,
        };
        checked(
            evaluator.evaluate_name(name, &probe),
            evaluator,
            &probe,
            name,
        );
    }
}

/// Whether the compile judged `rule` valid on `TODAY` (`Selection::widest` picks all else).
fn in_force(rule: &Rule) -> bool {
    rule.not_before.is_none_or(|d| d <= TODAY) && rule.not_after.is_none_or(|d| d >= TODAY)
}

/// Where a rule's packets go: an address (listed networks) or a name (DNS-based rules).
enum Target {
    Addr(IpAddr),
    Name(String),
}

/// The oracle: a packet that a rule in force opens must be allowed, whichever rule the
/// compiler credits (`related` rules need live flows and are left out).
fn rule_probes(evaluator: &Evaluator<'_>, set: &PolicySet) {
    let mut probes = 0;
    for (vendor, rule) in set
        .vendors
        .iter()
        .flat_map(|v| v.rules.iter().map(move |r| (&v.vendor.id, r)))
    {
        if !in_force(rule) || rule.related {
            continue;
        }
        let mut targets = Vec::new();
        for remote in &rule.remotes {
            match remote {
                Remote::Nets(nets) => {
                    for net in nets {
                        let (first, last): (IpAddr, IpAddr) = match net {
                            IpNet::V4(n) => (n.network().into(), n.broadcast().into()),
                            IpNet::V6(n) => (n.network().into(), n.broadcast().into()),
                        };
                        targets.push(Target::Addr(first));
                        targets.push(Target::Addr(last));
                    }
                }
                Remote::Host(host) => targets.push(Target::Name(host.clone())),
                Remote::Wildcard(domain) => targets.push(Target::Name(format!("x.{domain}"))),
                Remote::Any => {
                    targets.push(Target::Addr(Ipv4Addr::new(100, 64, 0, 1).into()));
                    targets.push(Target::Addr(
                        Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 1).into(),
                    ));
                }
            }
        }
        for target in &targets {
            for protocol in &rule.protocols {
                let numbers: &[u8] = match protocol {
                    Protocol::Tcp => &[TCP],
                    Protocol::Udp => &[UDP],
                    Protocol::Any => &[GRE, TCP],
                    // ICMP's number depends on the family; left to fixed_probes.
                    Protocol::Icmp => &[],
                };
                let ports: Vec<u16> = if protocol.has_ports() {
                    rule.ports.iter().flat_map(|r| [r.lo, r.hi]).collect()
                } else {
                    vec![0]
                };
                for &number in numbers {
                    for &port in &ports {
                        probes += 1;
                        if probes > MAX_ORACLE_PROBES {
                            return;
                        }
                        // The constrained port gets `port`; the other side some port.
                        let (port, local_port) = match (rule.direction, rule.port_side) {
                            (Direction::Egress, _) => (port, 0),
                            (Direction::Ingress, PortSide::Remote) => (port, 40000),
                            (Direction::Ingress, PortSide::Local) => (40000, port),
                        };
                        let (port, local_port) = if number == TCP || number == UDP {
                            (port.max(1), local_port.max(1))
                        } else {
                            (port, local_port)
                        };
                        let mut probe = Probe {
                            direction: rule.direction,
                            protocol: number,
                            remote: Ipv4Addr::UNSPECIFIED.into(),
                            port,
                            local_port,
                        };
                        let verdict = match target {
                            Target::Addr(addr) => {
                                probe.remote = *addr;
                                evaluator.evaluate(&probe)
                            }
                            Target::Name(name) => evaluator.evaluate_name(name, &probe),
                        };
                        let what = match target {
                            Target::Addr(_) => format!("rule `{vendor}/{}`", rule.id),
                            Target::Name(name) => {
                                format!("rule `{vendor}/{}`, name {name}", rule.id)
                            }
                        };
                        let verdict = checked(verdict, evaluator, &probe, &what);
                        let Verdict::Allow { rule: credited } = verdict else {
                            panic!(
                                "{what} ({}) opens {probe:?}, but the compiled tables say {verdict:?}",
                                rule.location
                            );
                        };
                        if CHECK_RELATED_PRECEDENCE && let Some(info) = evaluator.rule(credited) {
                            assert!(
                                !info.related,
                                "{what} ({}) opens {probe:?} unconditionally, but the compiled \
                                 tables credit `related` rule {}/{}: dropped without a live flow",
                                rule.location, info.vendor, info.rule
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Up to three vendor files generated from the fuzzer's bytes: valid more often than not,
/// with overlapping networks, port ranges and dates around `TODAY`, so that the compiler gets
/// the inputs byte-level mutation of TOML rarely produces. `Debug` prints the files, so
/// `cargo fuzz fmt policy_compile ARTIFACT` shows the policy that failed.
pub struct GeneratedPolicies {
    pub files: Vec<(String, String)>,
}

impl fmt::Debug for GeneratedPolicies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, text) in &self.files {
            writeln!(f, "# ---- {name}\n{text}")?;
        }
        Ok(())
    }
}

impl<'a> Arbitrary<'a> for GeneratedPolicies {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut files = Vec::new();
        for v in 0..u.int_in_range(1..=3)? {
            let mut text = format!("[vendor]\nid = \"v{v}\"\nname = \"Vendor {v}\"\n");
            for r in 0..u.int_in_range(0..=8)? {
                rule(u, r, &mut text)?;
            }
            files.push((format!("v{v}.toml"), text));
        }
        Ok(GeneratedPolicies { files })
    }
}

fn rule(u: &mut Unstructured<'_>, index: u32, out: &mut String) -> arbitrary::Result<()> {
    // Now and then a repeated id (an error the parser must locate).
    let id = if u.ratio(1, 32)? { 0 } else { index };
    let _ = write!(out, "\n[[rule]]\nid = \"r{id}\"\nservice = \"S\"\n");
    if let Some(level) = u.choose(&[
        None,
        Some("mandatory"),
        Some("recommended"),
        Some("optional"),
    ])? {
        let _ = writeln!(out, "level = \"{level}\"");
    }
    if let Some(profile) = u.choose(&[None, None, Some("general"), Some("restricted")])? {
        let _ = writeln!(out, "profile = \"{profile}\"");
    }
    if let Some(region) = u.choose(&[None, None, Some("global"), Some("china")])? {
        let _ = writeln!(out, "region = \"{region}\"");
    }
    let ingress = u.ratio(1, 3)?;
    if ingress {
        out.push_str("direction = \"ingress\"\n");
        if u.arbitrary()? {
            out.push_str("related = true\n");
        }
    } else if u.arbitrary()? {
        out.push_str("direction = \"egress\"\n");
    }
    let (protocol, with_ports) = *u.choose(&[
        ("\"tcp\"", true),
        ("\"udp\"", true),
        ("[\"tcp\", \"udp\"]", true),
        ("\"icmp\"", false),
        ("\"any\"", false),
    ])?;
    let _ = writeln!(out, "protocol = {protocol}");
    if with_ports {
        let key = match (ingress, u.arbitrary::<bool>()?) {
            (false, _) => "ports",
            (true, true) => "local_ports",
            (true, false) => "remote_ports",
        };
        let mut ports = Vec::new();
        for _ in 0..u.int_in_range(1..=4)? {
            ports.push(port(u)?);
        }
        let _ = writeln!(out, "{key} = [{}]", ports.join(", "));
    }
    let mut remotes = Vec::new();
    for _ in 0..u.int_in_range(1..=4)? {
        remotes.push(format!("\"{}\"", remote(u)?));
    }
    let _ = writeln!(out, "remote = [{}]", remotes.join(", "));
    const DATES: &[&str] = &[
        "2025-01-01",
        "2026-05-31",
        "2026-06-01",
        "2026-06-02",
        "2027-12-31",
    ];
    let mut before = if u.ratio(1, 4)? {
        Some(*u.choose(DATES)?)
    } else {
        None
    };
    let mut after = if u.ratio(1, 4)? {
        Some(*u.choose(DATES)?)
    } else {
        None
    };
    if let (Some(b), Some(a)) = (before, after)
        && b > a
    {
        (before, after) = (Some(a), Some(b));
    }
    if let Some(b) = before {
        let _ = writeln!(out, "not_before = {b}");
    }
    if let Some(a) = after {
        let _ = writeln!(out, "not_after = {a}");
    }
    Ok(())
}

fn port(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    const PORTS: &[u16] = &[1, 53, 443, 1023, 1024, 3478, 10000, 20000, 60000, 65535];
    fn one(u: &mut Unstructured<'_>) -> arbitrary::Result<u16> {
        if u.arbitrary()? {
            Ok(*u.choose(PORTS)?)
        } else {
            u.int_in_range(1..=65535)
        }
    }
    Ok(if u.arbitrary()? {
        one(u)?.to_string()
    } else {
        let (a, b) = (one(u)?, one(u)?);
        format!("\"{}-{}\"", a.min(b), a.max(b))
    })
}

fn remote(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        0..=3 => {
            let bases = [
                0x0a00_0000,
                0x0a01_0000,
                0x0a01_0200,
                0xc000_0200,
                0,
                u32::MAX,
            ];
            let base = if u.arbitrary()? {
                *u.choose(&bases)?
            } else {
                u.arbitrary()?
            };
            let len = u.int_in_range(0..=32)?;
            let net = ipnet::Ipv4Net::new(Ipv4Addr::from(base), len)
                .expect("length at most 32")
                .trunc();
            match u.int_in_range(0..=3)? {
                0 if len == 32 => net.addr().to_string(),
                1 => format!("{} {}", net.network(), net.netmask()),
                _ => net.to_string(),
            }
        }
        4..=5 => {
            let bases = [
                0x2001_0db8u128 << 96,
                0x2001_0db8_0001u128 << 80,
                0,
                0xffff << 32,
                u128::MAX,
            ];
            let base = if u.arbitrary()? {
                *u.choose(&bases)?
            } else {
                u.arbitrary()?
            };
            let len = u.int_in_range(0..=128)?;
            ipnet::Ipv6Net::new(Ipv6Addr::from(base), len)
                .expect("length at most 128")
                .trunc()
                .to_string()
        }
        6 => {
            let a = 0x0a01_0200 | u32::from(u.arbitrary::<u8>()?);
            let b = 0x0a01_0200 | u32::from(u.arbitrary::<u16>()? & 0x3ff);
            let (a, b) = (a.min(b), a.max(b));
            if u.arbitrary()? && a >> 8 == b >> 8 {
                format!("{}-{}", Ipv4Addr::from(a), b & 0xff)
            } else {
                format!("{}-{}", Ipv4Addr::from(a), Ipv4Addr::from(b))
            }
        }
        7 => {
            let a = (0x2001_0db8u128 << 96) | u128::from(u.arbitrary::<u16>()?);
            let b = (0x2001_0db8u128 << 96) | u128::from(u.arbitrary::<u16>()?);
            format!("{}-{}", Ipv6Addr::from(a.min(b)), Ipv6Addr::from(a.max(b)))
        }
        8 => u
            .choose(&[
                "any",
                "meet.example.com",
                "*.example.com",
                "*.sfu.example.com",
                "a.example.com",
            ])?
            .to_string(),
        _ => "any".to_string(),
    })
}
