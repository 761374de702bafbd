use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
};

use fwd_common::{PortVerdict, proto};

use proptest::prelude::*;

use super::{evaluate::*, ids::*, select::*, warnings::*, *};
use crate::policy::{
    Date, Direction, Level, Location, PortRange, PortSide, Protocol, Vendor, VendorPolicy,
};

fn rule(id: &str, protocols: Vec<Protocol>, ports: Vec<PortRange>, remotes: Vec<Remote>) -> Rule {
    Rule {
        id: id.into(),
        service: id.into(),
        purpose: None,
        level: Level::Mandatory,
        profile: None,
        region: None,
        direction: Direction::Egress,
        protocols,
        ports,
        port_side: PortSide::Remote,
        related: false,
        remotes,
        not_before: None,
        not_after: None,
        notes: None,
        todo: None,
        location: Location {
            file: PathBuf::from("t.toml"),
            line: 1,
            col: 1,
        },
    }
}

fn set(rules: Vec<Rule>) -> PolicySet {
    PolicySet {
        vendors: vec![VendorPolicy {
            vendor: Vendor {
                id: "v".into(),
                name: "V".into(),
                source: None,
                reviewed: None,
                notes: None,
            },
            rules,
            file: PathBuf::from("t.toml"),
        }],
    }
}

fn nets(list: &[&str]) -> Remote {
    Remote::Nets(list.iter().map(|s| s.parse().unwrap()).collect())
}

fn range(lo: u16, hi: u16) -> PortRange {
    PortRange { lo, hi }
}

fn tcp(remote: &str, port: u16) -> Probe {
    Probe {
        direction: Direction::Egress,
        protocol: proto::TCP,
        remote: remote.parse().unwrap(),
        port,
        local_port: 0,
    }
}

/// The verdict that allows a packet by rule `v/{name}`.
fn allow(compiled: &Compiled, name: &str) -> Verdict {
    let rule = compiled
        .ids
        .get(&format!("v/{name}"))
        .expect("a compiled rule");
    Verdict::Allow { rule }
}

fn compile_all(set: &PolicySet) -> Result<Compiled, CompileError> {
    compile(set, &widest())
}

fn widest() -> Selection {
    Selection::widest(Date::parse("2026-11-21").unwrap())
}

#[test]
fn overlapping_prefixes_carry_every_rule() {
    let compiled = compile_all(&set(vec![
        rule(
            "wide",
            vec![Protocol::Tcp],
            vec![range(443, 443)],
            vec![nets(&["10.0.0.0/8"])],
        ),
        rule(
            "narrow",
            vec![Protocol::Tcp],
            vec![range(8443, 8443)],
            vec![nets(&["10.1.0.0/16"])],
        ),
        rule(
            "web",
            vec![Protocol::Tcp],
            vec![range(80, 80)],
            vec![Remote::Any],
        ),
    ]))
    .unwrap();
    let ev = Evaluator::new(&compiled.image);
    // Inside the /16, both the /8's and the /16's rules apply, and the any rule.
    assert_eq!(ev.evaluate(&tcp("10.1.2.3", 443)), allow(&compiled, "wide"));
    assert_eq!(
        ev.evaluate(&tcp("10.1.2.3", 8443)),
        allow(&compiled, "narrow")
    );
    assert_eq!(ev.evaluate(&tcp("10.1.2.3", 80)), allow(&compiled, "web"));
    assert!(matches!(
        ev.evaluate(&tcp("10.2.0.1", 8443)),
        Verdict::NoPortMatch { .. }
    ));
    assert_eq!(
        ev.evaluate(&tcp("2001:db8::1", 80)),
        allow(&compiled, "web")
    );
    assert!(matches!(
        ev.evaluate(&tcp("2001:db8::1", 443)),
        Verdict::NoPortMatch { .. }
    ));
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| matches!(w, Warning::AnyRemote { rule, .. } if rule == "v/web"))
    );
}

#[test]
fn classes_are_deduplicated() {
    // Pexip-style: one rule set over several networks is one class.
    let compiled = compile_all(&set(vec![rule(
        "media",
        vec![Protocol::Udp],
        vec![range(10000, 65535)],
        vec![nets(&[
            "176.121.88.0/21",
            "91.240.204.0/22",
            "185.94.240.0/22",
        ])],
    )]))
    .unwrap();
    assert_eq!(compiled.image.classes, 1);
    assert_eq!(compiled.image.dst4.len(), 3);
    // 10000-65535 is 8 aligned blocks: 10000/12, 10016/11, 10048/10, 10240/6, 12288/4, 16384/2, 32768/1...
    assert_eq!(compiled.image.ports.len(), 8);
}

#[test]
fn narrowest_port_range_owns_the_port() {
    let compiled = compile_all(&set(vec![
        rule(
            "media",
            vec![Protocol::Udp],
            vec![range(10000, 65535)],
            vec![Remote::Any],
        ),
        rule(
            "video",
            vec![Protocol::Udp],
            vec![range(10000, 10000)],
            vec![Remote::Any],
        ),
        rule(
            "all",
            vec![Protocol::Any],
            vec![],
            vec![nets(&["192.0.2.0/24"])],
        ),
    ]))
    .unwrap();
    let ev = Evaluator::new(&compiled.image);
    let udp = |addr: &str, port| Probe {
        protocol: proto::UDP,
        ..tcp(addr, port)
    };
    assert_eq!(
        ev.evaluate(&udp("198.51.100.1", 10000)),
        allow(&compiled, "video")
    );
    assert_eq!(
        ev.evaluate(&udp("198.51.100.1", 10001)),
        allow(&compiled, "media")
    );
    assert!(matches!(
        ev.evaluate(&udp("198.51.100.1", 9999)),
        Verdict::NoPortMatch { .. }
    ));
    // A protocol-specific rule beats `any`; `any` covers what it does not; on equal port
    // ranges a rule naming addresses beats a `remote = "any"` one.
    assert_eq!(
        ev.evaluate(&udp("192.0.2.9", 10001)),
        allow(&compiled, "media")
    );
    assert_eq!(ev.evaluate(&udp("192.0.2.9", 53)), allow(&compiled, "all"));
    let gre = Probe {
        protocol: 47,
        port: 0,
        ..tcp("192.0.2.9", 0)
    };
    assert_eq!(ev.evaluate(&gre), allow(&compiled, "all"));
    let gre_elsewhere = Probe {
        remote: "198.51.100.1".parse().unwrap(),
        ..gre
    };
    assert!(matches!(
        ev.evaluate(&gre_elsewhere),
        Verdict::NoPortMatch { .. }
    ));
}

#[test]
fn hostnames_warn_and_open_nothing() {
    let compiled = compile_all(&set(vec![rule(
        "sig",
        vec![Protocol::Tcp],
        vec![range(443, 443)],
        vec![Remote::Wildcard("sfu.whereby.com".into())],
    )]))
    .unwrap();
    assert!(compiled.image.dst4.is_empty());
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| w.to_string().contains("*.sfu.whereby.com"))
    );
}

#[test]
fn output_is_deterministic() {
    let build = || {
        compile_all(&set(vec![
            rule(
                "a",
                vec![Protocol::Tcp],
                vec![range(1, 1000)],
                vec![nets(&["10.0.0.0/8", "10.9.0.0/16"])],
            ),
            rule(
                "b",
                vec![Protocol::Udp, Protocol::Tcp],
                vec![range(500, 600)],
                vec![nets(&["10.9.9.0/24"])],
            ),
        ]))
        .unwrap()
        .image
    };
    let (x, y) = (build(), build());
    assert_eq!(x.dst4, y.dst4);
    assert_eq!(x.ports, y.ports);
}

/// Brute force: the rule that applies, straight from the rules (no flattening, no LPM).
fn reference(rules: &[Rule], probe: &Probe) -> Option<u32> {
    let addr = match probe.remote {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!(),
    };
    let covering: Vec<(u32, &Rule)> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.remotes.iter().any(|rem| match rem {
                Remote::Any => true,
                Remote::Nets(ns) => ns.iter().any(|n| n.contains(&IpAddr::V4(addr))),
                _ => false,
            })
        })
        .map(|(i, r)| (i as u32, r))
        .collect();
    let specific = covering
        .iter()
        .filter_map(|(id, r)| {
            let proto_ok = r.protocols.iter().any(|p| {
                matches!(
                    (p, probe.protocol),
                    (Protocol::Tcp, proto::TCP) | (Protocol::Udp, proto::UDP)
                )
            });
            if !proto_ok {
                return None;
            }
            let any_remote = r.remotes.contains(&Remote::Any);
            r.ports
                .iter()
                .filter(|pr| pr.contains(probe.port))
                .map(|pr| (pr.hi - pr.lo, any_remote, *id))
                .min()
        })
        .min()
        .map(|(_, _, id)| id);
    specific.or_else(|| {
        covering
            .iter()
            .filter(|(_, r)| r.protocols.contains(&Protocol::Any))
            .map(|(id, r)| (r.remotes.contains(&Remote::Any), *id))
            .min()
            .map(|(_, id)| id)
    })
}

fn arb_rule() -> impl Strategy<Value = Rule> {
    // A small address space (10.0.0.0/24 and a few wider prefixes) so overlaps are common.
    let prefix = (0u8..=255, 22u8..=32).prop_map(|(host, len)| {
        let net = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, host), len)
            .unwrap()
            .trunc();
        IpNet::V4(net)
    });
    let remote = prop_oneof![
        1 => Just(Remote::Any),
        6 => prop::collection::vec(prefix, 1..4).prop_map(Remote::Nets),
    ];
    let ports = prop::collection::vec(
        (0u16..64, 0u16..16).prop_map(|(lo, w)| range(lo, lo + w)),
        1..3,
    );
    let protos = prop_oneof![
        Just(vec![Protocol::Tcp]),
        Just(vec![Protocol::Udp]),
        Just(vec![Protocol::Tcp, Protocol::Udp]),
        Just(vec![Protocol::Any]),
    ];
    (protos, ports, prop::collection::vec(remote, 1..3)).prop_map(|(protocols, ports, remotes)| {
        let ports = if protocols.contains(&Protocol::Any) {
            Vec::new()
        } else {
            ports
        };
        rule("r", protocols, ports, remotes)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn compiled_tables_match_brute_force(
        rules in prop::collection::vec(arb_rule(), 1..8),
        probes in prop::collection::vec((0u8..=255, prop::bool::ANY, 0u16..96), 64),
    ) {
        let rules: Vec<Rule> = rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| with(r, |r| r.id = format!("r{i}")))
            .collect();
        let compiled = compile_all(&set(rules.clone())).unwrap();
        let ev = Evaluator::new(&compiled.image);
        let id_of = |index: usize| compiled.ids.get(&format!("v/r{index}")).unwrap();
        for (host, is_tcp, port) in probes {
            for addr in [Ipv4Addr::new(10, 0, 0, host), Ipv4Addr::new(10, 0, 4, host)] {
                let probe = Probe {
                    direction: Direction::Egress,
                    protocol: if is_tcp { proto::TCP } else { proto::UDP },
                    remote: IpAddr::V4(addr),
                    port,
                    local_port: 0,
                };
                let got = match ev.evaluate(&probe) {
                    Verdict::Allow { rule } => Some(rule),
                    _ => None,
                };
                prop_assert_eq!(got, reference(&rules, &probe).map(|i| id_of(i as usize)), "probe {:?}", probe);
            }
        }
    }

    #[test]
    fn range_cover_is_exact(a in any::<u32>(), b in any::<u32>()) {
        let (lo, hi) = (a.min(b) >> 20 << 20 | (a.min(b) & 0xff), a.max(b) >> 20 << 20 | (a.max(b) & 0xff));
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let text = format!("{}-{}", Ipv4Addr::from(lo), Ipv4Addr::from(hi));
        let Remote::Nets(nets) = crate::policy::parse_remote(&text).unwrap() else { panic!() };
        // Disjoint, ascending, and exactly covering [lo, hi].
        let mut next = u64::from(lo);
        for n in &nets {
            let IpNet::V4(n) = n else { panic!() };
            prop_assert_eq!(u64::from(u32::from(n.network())), next);
            next = u64::from(u32::from(n.broadcast())) + 1;
        }
        prop_assert_eq!(next, u64::from(hi) + 1);
    }
}

fn with(mut r: Rule, f: impl FnOnce(&mut Rule)) -> Rule {
    f(&mut r);
    r
}

#[test]
fn selection_picks_vendors_levels_profiles_and_regions() {
    let rules = vec![
        with(
            rule(
                "general",
                vec![Protocol::Tcp],
                vec![range(443, 443)],
                vec![Remote::Any],
            ),
            |r| r.profile = Some("general".into()),
        ),
        with(
            rule(
                "global",
                vec![Protocol::Tcp],
                vec![range(443, 443)],
                vec![nets(&["176.121.88.0/21"])],
            ),
            |r| {
                r.profile = Some("restricted".into());
                r.region = Some("global".into());
            },
        ),
        with(
            rule(
                "china",
                vec![Protocol::Tcp],
                vec![range(443, 443)],
                vec![nets(&["218.83.160.8/29"])],
            ),
            |r| {
                r.profile = Some("restricted".into());
                r.region = Some("china".into());
            },
        ),
        with(
            rule(
                "ntp",
                vec![Protocol::Udp],
                vec![range(123, 123)],
                vec![nets(&["176.58.109.199/32"])],
            ),
            |r| r.level = Level::Recommended,
        ),
    ];
    let mut selection = widest();
    selection.profiles.insert("v".into(), "restricted".into());
    selection.regions = Some(vec!["global".into()]);
    selection.levels = Some(vec![Level::Mandatory]);
    let compiled = compile(&set(rules.clone()), &selection).unwrap();
    let names: Vec<&str> = compiled
        .image
        .rules
        .iter()
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(names, ["global"]);
    assert_eq!(compiled.unselected, 3);

    selection.vendors = Some(vec!["other".into()]);
    assert!(
        compile(&set(rules), &selection)
            .unwrap()
            .image
            .rules
            .is_empty()
    );
}

#[test]
fn validity_windows_are_enforced_and_reported() {
    let date = |s| Date::parse(s).unwrap();
    let rules = vec![
        with(
            rule(
                "old",
                vec![Protocol::Tcp],
                vec![range(80, 80)],
                vec![nets(&["192.0.2.1/32"])],
            ),
            |r| r.not_after = Some(date("2026-11-20")),
        ),
        with(
            rule(
                "new",
                vec![Protocol::Tcp],
                vec![range(81, 81)],
                vec![nets(&["192.0.2.1/32"])],
            ),
            |r| r.not_before = Some(date("2026-11-22")),
        ),
        with(
            rule(
                "now",
                vec![Protocol::Tcp],
                vec![range(82, 82)],
                vec![nets(&["192.0.2.1/32"])],
            ),
            |r| {
                r.not_before = Some(date("2026-11-21"));
                r.not_after = Some(date("2026-11-21"));
            },
        ),
    ];
    let compiled = compile_all(&set(rules.clone())).unwrap();
    let names: Vec<&str> = compiled
        .image
        .rules
        .iter()
        .map(|r| r.rule.as_str())
        .collect();
    assert_eq!(names, ["now"]);
    assert_eq!(compiled.expired[0].rule, "v/old");
    assert_eq!(compiled.pending[0].rule, "v/new");
    assert_eq!(compiled.pending[0].date, date("2026-11-22"));

    // A day later the announced rule is in force and the one-day rule has ended.
    let later = compile(&set(rules), &Selection::widest(date("2026-11-22"))).unwrap();
    let names: Vec<&str> = later.image.rules.iter().map(|r| r.rule.as_str()).collect();
    assert_eq!(names, ["new"]);
}

#[test]
fn ingress_matches_local_port_then_remote_port() {
    let webhook = with(
        rule(
            "webhook",
            vec![Protocol::Tcp],
            vec![range(443, 443)],
            vec![nets(&["52.71.0.0/16"])],
        ),
        |r| {
            r.direction = Direction::Ingress;
            r.port_side = PortSide::Local;
        },
    );
    let media = with(
        rule(
            "media",
            vec![Protocol::Udp],
            vec![range(10000, 20000)],
            vec![nets(&["52.71.32.188/32"])],
        ),
        |r| {
            r.direction = Direction::Ingress;
            r.port_side = PortSide::Remote;
            r.related = true;
        },
    );
    let compiled = compile_all(&set(vec![webhook, media])).unwrap();
    let ev = Evaluator::new(&compiled.image);
    let ingress = |proto_: u8, remote: &str, port, local_port| Probe {
        direction: Direction::Ingress,
        protocol: proto_,
        remote: remote.parse().unwrap(),
        port,
        local_port,
    };
    assert_eq!(
        ev.evaluate(&ingress(proto::TCP, "52.71.1.1", 50000, 443)),
        allow(&compiled, "webhook")
    );
    assert!(matches!(
        ev.evaluate(&ingress(proto::TCP, "52.71.1.1", 443, 444)),
        Verdict::NoPortMatch { .. }
    ));
    assert_eq!(
        ev.evaluate(&ingress(proto::UDP, "52.71.32.188", 15000, 40000)),
        allow(&compiled, "media")
    );
    assert!(
        ev.rule(compiled.ids.get("v/media").unwrap())
            .unwrap()
            .related
    );
    assert!(matches!(
        ev.evaluate(&ingress(proto::UDP, "52.71.32.188", 9999, 15000)),
        Verdict::NoPortMatch { .. }
    ));
    // Egress to the same remote is not opened by ingress rules.
    assert!(matches!(
        ev.evaluate(&tcp("52.71.1.1", 443)),
        Verdict::NoPortMatch { .. }
    ));
    let related_entries = compiled
        .image
        .ports
        .iter()
        .filter(|e| e.verdict.flags & PortVerdict::FLAG_RELATED != 0)
        .count();
    assert!(related_entries > 0);
    assert!(
        compiled
            .image
            .ports
            .iter()
            .all(|e| (e.verdict.flags & PortVerdict::FLAG_RELATED != 0)
                == (e.verdict.rule == compiled.ids.get("v/media").unwrap()))
    );
}

#[test]
fn shadowed_and_duplicate_rules_warn() {
    let compiled = compile_all(&set(vec![
        rule(
            "a",
            vec![Protocol::Tcp],
            vec![range(443, 443)],
            vec![nets(&["192.0.2.0/24"])],
        ),
        rule(
            "b",
            vec![Protocol::Tcp],
            vec![range(443, 443)],
            vec![nets(&["192.0.2.0/24"])],
        ),
        rule(
            "c",
            vec![Protocol::Tcp],
            vec![range(80, 80)],
            vec![nets(&["192.0.2.0/24"])],
        ),
    ]))
    .unwrap();
    let text: Vec<String> = compiled
        .warnings
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert!(
        text.iter()
            .any(|w| w.contains("rule `v/b` repeats rule `a`")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|w| w.contains("rule `v/b` is shadowed")),
        "{text:?}"
    );
    assert!(
        !text.iter().any(|w| w.contains("`v/c` is shadowed")),
        "{text:?}"
    );
}

#[test]
fn ingress_rule_naming_addresses_beats_an_any_local_port_rule() {
    for related in [false, true] {
        ingress_precedence(related);
    }
}

/// An ingress rule naming addresses beats a `remote = "any"` rule on the other port key;
/// but a `related` rule never beats a rule that needs no live flow, or the kernel would
/// drop (without a flow) what that rule allows.
fn ingress_precedence(related: bool) {
    let p2p = with(
        rule(
            "p2p",
            vec![Protocol::Udp],
            vec![range(1, 65535)],
            vec![Remote::Any],
        ),
        |r| {
            r.direction = Direction::Ingress;
            r.port_side = PortSide::Local;
        },
    );
    let media = with(
        rule(
            "media",
            vec![Protocol::Udp],
            vec![range(10000, 20000)],
            vec![nets(&["52.71.32.188/32"])],
        ),
        |r| {
            r.direction = Direction::Ingress;
            r.port_side = PortSide::Remote;
            r.related = related;
        },
    );
    let compiled = compile_all(&set(vec![p2p, media])).unwrap();
    let ev = Evaluator::new(&compiled.image);
    let udp_in = |remote: &str, port| Probe {
        direction: Direction::Ingress,
        protocol: proto::UDP,
        remote: remote.parse().unwrap(),
        port,
        local_port: 40000,
    };
    assert_eq!(
        ev.evaluate(&udp_in("52.71.32.188", 12000)),
        allow(&compiled, if related { "p2p" } else { "media" })
    );
    assert_eq!(
        ev.evaluate(&udp_in("52.71.32.188", 9000)),
        allow(&compiled, "p2p")
    );
    assert_eq!(
        ev.evaluate(&udp_in("198.51.100.1", 12000)),
        allow(&compiled, "p2p")
    );
}

fn port_rule(id: &str, port: u16, net: &str) -> Rule {
    rule(
        id,
        vec![Protocol::Tcp],
        vec![range(port, port)],
        vec![nets(&[net])],
    )
}

#[test]
fn rule_ids_derive_from_names_and_survive_edits_of_other_rules() {
    let first = compile_all(&set(vec![
        port_rule("a", 443, "192.0.2.0/24"),
        port_rule("b", 8443, "198.51.100.0/24"),
        port_rule("c", 5060, "203.0.113.0/24"),
    ]))
    .unwrap();
    // Without history the id is the name's home slot, wherever the rule sits in the file.
    let reordered = compile_all(&set(vec![
        port_rule("c", 5060, "203.0.113.0/24"),
        port_rule("a", 443, "192.0.2.0/24"),
    ]))
    .unwrap();
    assert_eq!(first.ids.get("v/a"), reordered.ids.get("v/a"));
    assert_eq!(first.ids.get("v/c"), reordered.ids.get("v/c"));
    assert_eq!(first.ids.get("v/a"), Some(home_slot("v/a")));

    // Given the previous ids, kept rules keep theirs and new rules avoid the slots of
    // removed ones, so no counter changes hands.
    let next = compile_with_ids(
        &set(vec![
            port_rule("new", 1, "192.0.2.7/32"),
            port_rule("c", 5061, "203.0.113.0/24"),
        ]),
        &widest(),
        &first.ids,
    )
    .unwrap();
    assert_eq!(next.ids.get("v/c"), first.ids.get("v/c"));
    let new = next.ids.get("v/new").unwrap();
    assert!(first.ids.iter().all(|(_, id)| id != new));
    // The image speaks the same ids.
    let ev = Evaluator::new(&next.image);
    assert_eq!(ev.evaluate(&tcp("203.0.113.5", 5061)), allow(&next, "c"));
    assert_eq!(ev.rule(new).unwrap().rule, "new");
    let mut ids: Vec<u32> = next.image.rules.iter().map(|r| r.id).collect();
    let sorted = ids.clone();
    ids.sort();
    assert_eq!(ids, sorted, "image rules are sorted by id");
}

#[test]
fn colliding_names_get_distinct_ids_and_keep_them() {
    // Force collisions: a previous assignment that already holds every name's home slot.
    let names: Vec<String> = (0..200).map(|i| format!("v/r{i}")).collect();
    let homes: BTreeMap<String, u32> = names
        .iter()
        .map(|n| (format!("gone/{n}"), home_slot(n)))
        .collect();
    let previous = RuleIds(homes);
    let (ids, by_index) = previous.assign(&names);
    let distinct: std::collections::BTreeSet<u32> = by_index.iter().copied().collect();
    assert_eq!(distinct.len(), names.len());
    for id in &by_index {
        assert!(!previous.iter().any(|(_, old)| old == *id));
    }
    // Reassigning with the result as history changes nothing.
    let (again, by_index_again) = ids.assign(&names);
    assert_eq!(again, ids);
    assert_eq!(by_index_again, by_index);
}

#[test]
fn duplicates_are_found_among_many_rules() {
    let mut rules: Vec<Rule> = (0..2000)
        .map(|i| port_rule(&format!("r{i}"), 1 + i as u16, "192.0.2.0/24"))
        .collect();
    rules.push(port_rule("again", 1000, "192.0.2.0/24"));
    let compiled = compile_all(&set(rules)).unwrap();
    let dups: Vec<String> = compiled
        .warnings
        .iter()
        .filter(|w| matches!(w, Warning::Duplicate { .. }))
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(dups.len(), 1, "{dups:?}");
    assert!(
        dups[0].contains("rule `v/again` repeats rule `r999`"),
        "{dups:?}"
    );
}

#[test]
fn hostnames_match_domain_rules_with_the_compilers_precedence() {
    let compiled = compile_all(&set(vec![
        rule(
            "signaling",
            vec![Protocol::Tcp],
            vec![range(443, 443)],
            vec![Remote::Wildcard("example.com".into())],
        ),
        rule(
            "media",
            vec![Protocol::Udp, Protocol::Tcp],
            vec![range(443, 443), range(10000, 20000)],
            vec![
                Remote::Wildcard("sfu.example.com".into()),
                Remote::Host("turn.example.net".into()),
            ],
        ),
        port_rule("listed", 443, "192.0.2.0/24"),
    ]))
    .unwrap();
    let ev = Evaluator::new(&compiled.image);
    let udp = |port| Probe {
        protocol: proto::UDP,
        ..tcp("0.0.0.0", port)
    };
    // Any depth below the domain, any case, trailing dot; not the apex.
    assert_eq!(
        ev.evaluate_name("a.b.sfu.example.com", &udp(15000)),
        allow(&compiled, "media")
    );
    assert_eq!(
        ev.evaluate_name("X.SFU.Example.COM.", &udp(15000)),
        allow(&compiled, "media")
    );
    assert!(matches!(
        ev.evaluate_name("x.example.com", &udp(15000)),
        Verdict::NoPortMatch { .. }
    ));
    assert_eq!(
        ev.evaluate_name("example.com", &tcp("0.0.0.0", 443)),
        Verdict::NoAddressMatch
    );
    assert_eq!(
        ev.evaluate_name("notexample.com", &tcp("0.0.0.0", 443)),
        Verdict::NoAddressMatch
    );
    // Equal port ranges: the rule compiled first owns the port, as for addresses.
    assert_eq!(
        ev.evaluate_name("x.sfu.example.com", &tcp("0.0.0.0", 443)),
        allow(&compiled, "signaling")
    );
    assert_eq!(
        ev.evaluate_name("turn.example.net", &tcp("0.0.0.0", 443)),
        allow(&compiled, "media")
    );
    assert_eq!(
        ev.evaluate_name("x.turn.example.net", &tcp("0.0.0.0", 443)),
        Verdict::NoAddressMatch
    );
}

#[test]
fn a_related_rule_never_shadows_one_that_needs_no_flow() {
    // Found by fuzzing: the narrower related rule owned 10000-20000, so the kernel dropped
    // (without a live flow) packets the wider unconditional rule allows.
    let any_port = with(
        rule(
            "any-port",
            vec![Protocol::Udp],
            vec![range(1, 65535)],
            vec![nets(&["10.0.0.0/8"])],
        ),
        |r| {
            r.direction = Direction::Ingress;
            r.port_side = PortSide::Local;
        },
    );
    let related = with(
        rule(
            "related",
            vec![Protocol::Udp],
            vec![range(10000, 20000)],
            vec![nets(&["10.0.0.0/8"])],
        ),
        |r| {
            r.direction = Direction::Ingress;
            r.port_side = PortSide::Local;
            r.related = true;
        },
    );
    let compiled = compile_all(&set(vec![any_port, related])).unwrap();
    let ev = Evaluator::new(&compiled.image);
    let probe = Probe {
        direction: Direction::Ingress,
        protocol: proto::UDP,
        remote: "10.1.2.3".parse().unwrap(),
        port: 5000,
        local_port: 15000,
    };
    assert_eq!(ev.evaluate(&probe), allow(&compiled, "any-port"));
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| w.to_string().contains("rule `v/related` is shadowed")),
        "{:?}",
        compiled.warnings
    );
}

/// The verdict of `probe` against the port entries of one learned class.
fn decide_learned(learned: &LearnedClass, class: u32, probe: &Probe) -> Verdict {
    decide_entries(&learned.ports, learned.audit, class, probe)
}

#[test]
fn a_learned_address_gets_its_names_rules_and_keeps_its_networks_rules() {
    let compiled = compile_all(&set(vec![
        rule(
            "media",
            vec![Protocol::Udp],
            vec![range(3478, 3478), range(10000, 20000)],
            vec![Remote::Wildcard("sfu.example.com".into())],
        ),
        port_rule("listed", 443, "192.0.2.0/24"),
    ]))
    .unwrap();
    let image = &compiled.image;
    let ev = Evaluator::new(image);
    let udp = |port| Probe {
        protocol: proto::UDP,
        ..tcp("0.0.0.0", port)
    };
    let named = image.rules_naming("x.SFU.example.com.");
    assert_eq!(named, vec![compiled.ids.get("v/media").unwrap()]);
    assert!(image.rules_naming("example.com").is_empty());
    let class = image.classes + 7;

    // An address no network lists: exactly what `explain` says of the name.
    let outside: IpAddr = "203.0.113.9".parse().unwrap();
    let learned = image.learned_class(outside, &named, class).unwrap();
    assert_eq!(learned.members, named);
    assert!(!learned.audit);
    // (The class number a "no port" verdict names differs; the verdict does not.)
    let unnumbered = |v: Verdict| match v {
        Verdict::NoPortMatch { .. } => Verdict::NoPortMatch { class: 0 },
        other => other,
    };
    for probe in [udp(3478), udp(15000), udp(20001), tcp("0.0.0.0", 443)] {
        assert_eq!(
            unnumbered(decide_learned(&learned, class, &probe)),
            unnumbered(ev.evaluate_name("x.sfu.example.com", &probe)),
            "{probe:?}"
        );
    }

    // Inside a listed network: the network's rule stays, the name's rule joins.
    let inside: IpAddr = "192.0.2.5".parse().unwrap();
    let learned = image.learned_class(inside, &named, class).unwrap();
    assert_eq!(learned.members.len(), 2);
    assert_eq!(
        decide_learned(&learned, class, &tcp("192.0.2.5", 443)),
        allow(&compiled, "listed")
    );
    assert_eq!(
        decide_learned(&learned, class, &udp(10000)),
        allow(&compiled, "media")
    );

    // An answer no domain rule names opens nothing.
    assert_eq!(image.learned_class(inside, &[], class), None);
}

#[test]
fn a_learned_class_with_an_audited_vendor_is_audited() {
    let mut selection = widest();
    selection.audit_vendors.insert("v".into());
    let compiled = compile(
        &set(vec![rule(
            "media",
            vec![Protocol::Udp],
            vec![range(3478, 3478)],
            vec![Remote::Host("turn.example.net".into())],
        )]),
        &selection,
    )
    .unwrap();
    let image = &compiled.image;
    let named = image.rules_naming("turn.example.net");
    let learned = image
        .learned_class("198.51.100.1".parse().unwrap(), &named, image.classes)
        .unwrap();
    assert!(learned.audit);
}
