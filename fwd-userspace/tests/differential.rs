//! The real XDP program, run through BPF_PROG_TEST_RUN, against the evaluator behind
//! `fwd explain`: on random policies and random packets both must give the same verdict, the
//! same rule and the same drop reason. Every packet also runs through the outbound TC
//! program (`fwd_tc_out`, host mode), which must give the same verdict and move the same
//! counters by the same amounts as XDP. Each round also has random exemptions and a few
//! learned hosts (the DNS proxy's, with the classes `MapImage::learned_class` makes), one in
//! three is rolled out in audit mode, and the
//! policies follow each other, so slot swaps and the flow cache's epochs are part of it.
//! Needs root (BPF); `cargo xtask test` runs it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use fwd::{
    compile::{Evaluator, Probe, RuleIds, Selection, Verdict, compile_with_ids},
    datapath::{Datapath, Learned, RuleCounters, program},
    policy::{Date, Direction, PolicySet, parse_vendor_file},
};
use fwd_common::{CLASS_AUDIT, Counter, Reason, proto};
use fwd_lab::packet;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC: on to the next program or the stack.
const TC_PASS: i32 = -1;
/// TC_ACT_SHOT.
const TC_DROP: i32 = 2;

fn random_v4(rng: &mut StdRng) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        rng.random_range(0..3),
        rng.random_range(0..4),
        rng.random(),
    )
}

fn random_v6(rng: &mut StdRng) -> Ipv6Addr {
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        rng.random_range(0..3),
        0,
        0,
        0,
        0,
        rng.random_range(0..8),
    )
}

fn random_remote(rng: &mut StdRng) -> String {
    match rng.random_range(0..20) {
        0 => "any".to_string(),
        1..=3 => {
            let a = random_v4(rng).octets();
            let last = rng.random_range(a[3]..=255);
            format!("{}.{}.{}.{}-{last}", a[0], a[1], a[2], a[3])
        }
        4..=5 => {
            let net = ipnet::Ipv6Net::new(random_v6(rng), rng.random_range(44..=128)).unwrap();
            net.trunc().to_string()
        }
        6 => format!("{}", random_v4(rng)),
        _ => {
            let net = ipnet::Ipv4Net::new(random_v4(rng), rng.random_range(14..=32)).unwrap();
            net.trunc().to_string()
        }
    }
}

fn random_ports(rng: &mut StdRng) -> String {
    let n = rng.random_range(1..=3);
    let ports: Vec<String> = (0..n)
        .map(|_| {
            if rng.random_ratio(1, 10) {
                "\"1-65535\"".to_string()
            } else {
                let lo: u16 = rng.random_range(1..2000);
                let hi = lo + rng.random_range(0..300);
                format!("\"{lo}-{hi}\"")
            }
        })
        .collect();
    format!("[{}]", ports.join(", "))
}

/// A random vendor file, as text, so the parser is part of what is compared.
fn random_policy(rng: &mut StdRng, round: usize) -> PolicySet {
    let mut text = format!("[vendor]\nid = \"v{round}\"\nname = \"Vendor {round}\"\n");
    for i in 0..rng.random_range(1..12) {
        let remotes: Vec<String> = (0..rng.random_range(1..4))
            .map(|_| format!("\"{}\"", random_remote(rng)))
            .collect();
        let (protocol, ports) = match rng.random_range(0..8) {
            0 => ("\"any\"".to_string(), String::new()),
            1 => ("\"icmp\"".to_string(), String::new()),
            2 => (
                "[\"tcp\", \"udp\"]".to_string(),
                format!("ports = {}\n", random_ports(rng)),
            ),
            3..=5 => (
                "\"tcp\"".to_string(),
                format!("ports = {}\n", random_ports(rng)),
            ),
            _ => (
                "\"udp\"".to_string(),
                format!("ports = {}\n", random_ports(rng)),
            ),
        };
        text.push_str(&format!(
            "\n[[rule]]\nid = \"r{i}\"\nservice = \"s{i}\"\nprotocol = {protocol}\n{ports}remote = [{}]\n",
            remotes.join(", ")
        ));
    }
    let vendor = parse_vendor_file(Path::new("random.toml"), &text)
        .unwrap_or_else(|e| panic!("generated policy does not parse: {e}\n{text}"));
    PolicySet {
        vendors: vec![vendor],
    }
}

struct Packet {
    frame: Vec<u8>,
    probe: Probe,
}

/// A random packet; one in five goes to one of `learned` (when there are any).
fn random_packet(rng: &mut StdRng, learned: &[IpAddr]) -> Packet {
    let remote = if !learned.is_empty() && rng.random_ratio(1, 5) {
        *learned.choose(rng).unwrap()
    } else if rng.random_ratio(1, 4) {
        IpAddr::V6(random_v6(rng))
    } else {
        IpAddr::V4(random_v4(rng))
    };
    let protocol = *[proto::TCP, proto::TCP, proto::UDP, proto::UDP, proto::ICMP]
        .choose(rng)
        .unwrap();
    let port: u16 = rng.random_range(1..2400);
    let frame = match remote {
        IpAddr::V4(dst) => {
            let l4 = match protocol {
                proto::TCP => packet::tcp(40000, port),
                proto::UDP => packet::udp(40000, port),
                _ => packet::echo(8, 7),
            };
            packet::v4([10, 250, 0, 2], dst.octets(), l4).frame()
        }
        IpAddr::V6(dst) => {
            let src = "fd00:250::2".parse::<Ipv6Addr>().unwrap().octets();
            let l4 = match protocol {
                proto::TCP => packet::tcp(40000, port),
                proto::UDP => packet::udp(40000, port),
                _ => packet::echo(128, 7),
            };
            packet::v6(src, dst.octets(), l4).frame()
        }
    };
    let protocol = match (protocol, remote) {
        (proto::ICMP, IpAddr::V6(_)) => proto::ICMPV6,
        (p, _) => p,
    };
    let port = if matches!(protocol, proto::TCP | proto::UDP) {
        port
    } else {
        0
    };
    Packet {
        frame,
        probe: Probe {
            direction: Direction::Egress,
            protocol,
            remote,
            port,
            local_port: 0,
        },
    }
}

/// What one program run did: the verdict, and how much every reason counter and every
/// rule counter (of the ids given) moved.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    pass: bool,
    reasons: Vec<Counter>,
    rules: Vec<RuleCounters>,
}

#[derive(Clone, Copy, Debug)]
enum Program {
    Xdp,
    TcOut,
}

fn minus(after: Counter, before: Counter) -> Counter {
    Counter {
        packets: after.packets - before.packets,
        bytes: after.bytes - before.bytes,
    }
}

fn run(dp: &Datapath, which: Program, frame: &[u8], rule_ids: &[u32]) -> Run {
    // Every reason's outbound counter, then every reason's inbound one.
    let reasons = || -> Vec<Counter> {
        let counters = dp.reason_counters().unwrap();
        let inbound: Vec<Counter> = counters.iter().map(|c| c.inbound).collect();
        counters.iter().map(|c| c.outbound).chain(inbound).collect()
    };
    let rules = || dp.rule_counters(rule_ids.iter().copied()).unwrap();
    let (reasons_before, rules_before) = (reasons(), rules());
    let pass = match which {
        Program::Xdp => match dp.test_run_xdp(frame, 1).unwrap().0 {
            XDP_PASS => true,
            XDP_DROP => false,
            other => panic!("XDP action {other}"),
        },
        Program::TcOut => match dp.test_run_tc(program::TC_OUT, frame, 1).unwrap().0 {
            TC_PASS => true,
            TC_DROP => false,
            other => panic!("TC action {other}"),
        },
    };
    let (reasons_after, rules_after) = (reasons(), rules());
    Run {
        pass,
        reasons: reasons_after
            .into_iter()
            .zip(reasons_before)
            .map(|(a, b)| minus(a, b))
            .collect(),
        rules: rules_after
            .into_iter()
            .zip(rules_before)
            .map(|(a, b)| RuleCounters {
                outbound: minus(a.outbound, b.outbound),
                inbound: minus(a.inbound, b.inbound),
            })
            .collect(),
    }
}

#[test]
fn xdp_program_agrees_with_explain_on_random_policies_and_packets() {
    if !fwd_lab::can_run_as_root("xdp_program_agrees_with_explain_on_random_policies_and_packets") {
        return;
    }
    let seed: u64 = std::env::var("FWD_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (FWD_DIFF_SEED={seed} reproduces this run)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut dp = Datapath::load().expect("loading the programs");
    let today = Date::parse("2026-11-21").unwrap();
    let (mut allowed, mut denied) = (0, 0);
    // Several policies in a row, so slot swaps and slot clearing are part of the comparison.
    // Each compile keeps the previous one's ids, as the daemon's reload does.
    let mut ids = RuleIds::default();
    let (mut exempted, mut learned_seen, mut audit_passed) = (0, 0, 0);
    for round in 0..8 {
        let set = random_policy(&mut rng, round);
        // One round in three rolls the vendor out in audit mode.
        let audited = rng.random_ratio(1, 3);
        let mut selection = Selection::widest(today);
        if audited {
            selection.audit_vendors.insert(format!("v{round}"));
        }
        let compiled = compile_with_ids(&set, &selection, &ids).unwrap();
        ids = compiled.ids.clone();
        // Exemptions for this round, in force with its install.
        let exempt: Vec<ipnet::IpNet> = (0..rng.random_range(0..3))
            .map(|_| {
                if rng.random_ratio(1, 3) {
                    ipnet::IpNet::V6(
                        ipnet::Ipv6Net::new(random_v6(&mut rng), rng.random_range(124..=128))
                            .unwrap()
                            .trunc(),
                    )
                } else {
                    ipnet::IpNet::V4(
                        ipnet::Ipv4Net::new(random_v4(&mut rng), rng.random_range(26..=32))
                            .unwrap()
                            .trunc(),
                    )
                }
            })
            .collect();
        dp.set_exemptions(&exempt).unwrap();
        // The last round's learned hosts go: they were learned under its rules.
        dp.install_with_learned(&compiled.image, round as u32 + 1, Learned::default())
            .unwrap();
        let image = &compiled.image;
        let ev = Evaluator::new(image);
        let rule_ids: Vec<u32> = image.rules.iter().map(|r| r.id).collect();
        // Learned hosts: each named by one or two random rules, as a DNS answer would be.
        let mut learned = Vec::new();
        for k in 0..rng.random_range(0..4u32) {
            let addr = if rng.random_ratio(1, 3) {
                IpAddr::V6(random_v6(&mut rng))
            } else {
                IpAddr::V4(random_v4(&mut rng))
            };
            if learned.iter().any(|(a, _)| *a == addr) {
                continue;
            }
            let mut named: Vec<u32> = (0..rng.random_range(1..=2))
                .map(|_| *rule_ids.choose(&mut rng).unwrap())
                .collect();
            named.sort_unstable();
            named.dedup();
            let class = image.classes + 100 + k;
            let lc = image.learned_class(addr, &named, class).unwrap();
            dp.learn_class(class, &lc.ports).unwrap();
            assert_eq!(lc.audit, audited);
            dp.learn(addr, class | if lc.audit { CLASS_AUDIT } else { 0 })
                .unwrap();
            learned.push((addr, lc));
        }
        let learned_addrs: Vec<IpAddr> = learned.iter().map(|(a, _)| *a).collect();
        for _ in 0..400 {
            let packet = random_packet(&mut rng, &learned_addrs);
            let remote = packet.probe.remote;
            let is_exempt = exempt.iter().any(|n| n.contains(&remote));
            let expected = match learned.iter().find(|(a, _)| *a == remote) {
                Some((_, lc)) => {
                    learned_seen += 1;
                    ev.evaluate_learned(lc, &packet.probe)
                }
                None => ev.evaluate(&packet.probe),
            };
            let xdp = run(&dp, Program::Xdp, &packet.frame, &rule_ids);
            let context = format!(
                "seed {seed}, round {round}, probe {:?}, expected {expected:?}",
                packet.probe
            );
            // An audited vendor's classes pass what no rule allows, counted as both.
            let audit_pass =
                audited && !is_exempt && matches!(expected, Verdict::NoPortMatch { .. });
            let (want_pass, want_reason, want_rule) = match expected {
                // An exemption owns its addresses over any policy.
                _ if is_exempt => {
                    exempted += 1;
                    (true, Reason::Exempt, None)
                }
                Verdict::Allow { rule } => (true, Reason::Allowed, Some(rule)),
                Verdict::NoAddressMatch => (false, Reason::NoAddressMatch, None),
                Verdict::NoPortMatch { .. } => (audit_pass, Reason::NoPortMatch, None),
            };
            audit_passed += u32::from(audit_pass);
            let len = packet.frame.len() as u64;
            let counted = |n: u64| Counter {
                packets: n,
                bytes: n * len,
            };
            assert_eq!(xdp.pass, want_pass, "{context}");
            // Outbound packets: only the outbound half moves.
            for (i, moved) in xdp.reasons.iter().enumerate() {
                let want = counted(u64::from(
                    i == want_reason as usize
                        || (audit_pass && i == Reason::AuditWouldDrop as usize),
                ));
                let (reason, half) = (Reason::ALL[i % Reason::ALL.len()], i / Reason::ALL.len());
                assert_eq!(*moved, want, "{context}: reason {reason:?} (half {half})");
            }
            for (&id, moved) in rule_ids.iter().zip(&xdp.rules) {
                let want = counted(u64::from(want_rule == Some(id)));
                assert_eq!(moved.outbound, want, "{context}: rule {id}");
                assert_eq!(moved.inbound, counted(0), "{context}: rule {id} inbound");
            }
            // Host mode: the TC egress program judges and counts exactly like XDP.
            let tc = run(&dp, Program::TcOut, &packet.frame, &rule_ids);
            assert_eq!(tc, xdp, "{context}: fwd_tc_out differs from fwd_xdp");
            if want_rule.is_some() {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    eprintln!(
        "{allowed} allowed and {denied} denied packets agreed (XDP, TC and explain); {exempted} exempt, {learned_seen} to learned hosts, {audit_passed} passed by audit"
    );
    // The generator must exercise both outcomes, or the comparison proves little.
    assert!(
        allowed > 200 && denied > 200,
        "allowed {allowed}, denied {denied}"
    );
}
