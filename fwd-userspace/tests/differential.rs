//! The real XDP program, run through BPF_PROG_TEST_RUN, against the evaluator behind
//! `fwd explain`: on random policies and random packets both must give the same verdict, the
//! same rule and the same drop reason. Needs root (BPF); `cargo xtask test` runs it.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use etherparse::PacketBuilder;
use fwd::{
    compile::{Evaluator, Probe, RuleIds, Selection, Verdict, compile_with_ids},
    datapath::Datapath,
    policy::{Date, Direction, PolicySet, parse_vendor_file},
};
use fwd_common::{Reason, proto};
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

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

fn random_packet(rng: &mut StdRng) -> Packet {
    let remote = if rng.random_ratio(1, 4) {
        IpAddr::V6(random_v6(rng))
    } else {
        IpAddr::V4(random_v4(rng))
    };
    let protocol = *[proto::TCP, proto::TCP, proto::UDP, proto::UDP, proto::ICMP]
        .choose(rng)
        .unwrap();
    let port: u16 = rng.random_range(1..2400);
    let mut frame = Vec::new();
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let payload = [0x5au8; 16];
    match remote {
        IpAddr::V4(dst) => {
            let ip = eth.ipv4([10, 250, 0, 2], dst.octets(), 64);
            match protocol {
                proto::TCP => ip.tcp(40000, port, 1, 1024).write(&mut frame, &payload),
                proto::UDP => ip.udp(40000, port).write(&mut frame, &payload),
                _ => ip.icmpv4_echo_request(7, 1).write(&mut frame, &payload),
            }
        }
        IpAddr::V6(dst) => {
            let src = "fd00:250::2".parse::<Ipv6Addr>().unwrap().octets();
            let ip = eth.ipv6(src, dst.octets(), 64);
            match protocol {
                proto::TCP => ip.tcp(40000, port, 1, 1024).write(&mut frame, &payload),
                proto::UDP => ip.udp(40000, port).write(&mut frame, &payload),
                _ => ip.icmpv6_echo_request(7, 1).write(&mut frame, &payload),
            }
        }
    }
    .expect("building a packet");
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

fn reason_packets(dp: &Datapath) -> Vec<u64> {
    dp.reason_counters()
        .unwrap()
        .iter()
        .map(|(_, c)| c.packets)
        .collect()
}

#[test]
fn xdp_program_agrees_with_explain_on_random_policies_and_packets() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "needs root (BPF): run `cargo xtask test` as root"
    );
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
    for round in 0..8 {
        let set = random_policy(&mut rng, round);
        let compiled = compile_with_ids(&set, &Selection::widest(today), &ids).unwrap();
        ids = compiled.ids.clone();
        dp.install(&compiled.image, round as u32 + 1).unwrap();
        let ev = Evaluator::new(&compiled.image);
        let rule_ids: Vec<u32> = compiled.image.rules.iter().map(|r| r.id).collect();
        for _ in 0..400 {
            let packet = random_packet(&mut rng);
            let expected = ev.evaluate(&packet.probe);
            let reasons_before = reason_packets(&dp);
            let rules_before = dp.rule_counters(rule_ids.iter().copied()).unwrap();
            let (action, _) = dp.test_run_xdp(&packet.frame, 1).unwrap();
            let rules_after = dp.rule_counters(rule_ids.iter().copied()).unwrap();
            let reasons_after = reason_packets(&dp);
            let context = format!(
                "seed {seed}, round {round}, probe {:?}, expected {expected:?}",
                packet.probe
            );
            let (want_action, want_reason, want_rule) = match expected {
                Verdict::Allow { rule } => (XDP_PASS, Reason::Allowed, Some(rule)),
                Verdict::NoAddressMatch => (XDP_DROP, Reason::NoAddressMatch, None),
                Verdict::NoPortMatch { .. } => (XDP_DROP, Reason::NoPortMatch, None),
            };
            assert_eq!(action, want_action, "{context}");
            for (i, (b, a)) in reasons_before.iter().zip(&reasons_after).enumerate() {
                let want = u64::from(i == want_reason as usize);
                assert_eq!(a - b, want, "{context}: reason {:?}", Reason::ALL[i]);
            }
            for (&id, (b, a)) in rule_ids.iter().zip(rules_before.iter().zip(&rules_after)) {
                let want = u64::from(want_rule == Some(id));
                assert_eq!(
                    a.outbound.packets - b.outbound.packets,
                    want,
                    "{context}: rule {id}"
                );
                assert_eq!(a.inbound, b.inbound, "{context}: rule {id} inbound");
                if want == 1 {
                    assert_eq!(
                        a.outbound.bytes - b.outbound.bytes,
                        packet.frame.len() as u64,
                        "{context}"
                    );
                }
            }
            if want_rule.is_some() {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    eprintln!("{allowed} allowed and {denied} denied packets agreed");
    // The generator must exercise both outcomes, or the comparison proves little.
    assert!(
        allowed > 200 && denied > 200,
        "allowed {allowed}, denied {denied}"
    );
}
