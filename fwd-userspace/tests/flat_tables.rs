//! The kernel's flat policy tables and its flow cache, on the real programs
//! (BPF_PROG_TEST_RUN): the edges of every range against `fwd explain`'s evaluator, and each
//! change that can narrow the policy stopping a flow the cache already allowed. Needs root.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use fwd::{
    compile::{Evaluator, Probe, Selection, Verdict, compile},
    datapath::Datapath,
    policy::{Date, Direction, PolicySet, parse_vendor_file},
};
use fwd_common::proto;
use fwd_lab::packet;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// Nested prefixes of both families, adjacent networks of different rules, a range, an
/// any-address rule on its own port, and an any-protocol rule.
const EDGES: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "wide"
service = "s"
protocol = "tcp"
ports = [443]
remote = ["10.0.0.0/8", "2001:db8::/32"]

[[rule]]
id = "inner"
service = "s"
protocol = "tcp"
ports = [8443]
remote = ["10.1.0.0/16", "2001:db8:1::/48", "10.1.2.3", "2001:db8:1::7"]

[[rule]]
id = "left"
service = "s"
protocol = "udp"
ports = ["1000-2000"]
remote = ["192.0.2.0/25", "2001:db8:ffff::/48"]

[[rule]]
id = "right"
service = "s"
protocol = "udp"
ports = ["2001-3000"]
remote = ["192.0.2.128/25", "2001:db9::/48"]

[[rule]]
id = "range"
service = "s"
protocol = "tcp"
ports = [22]
remote = ["198.51.100.10-20"]

[[rule]]
id = "everywhere"
service = "s"
protocol = "udp"
ports = [53]
remote = "any"

[[rule]]
id = "tunnel"
service = "s"
protocol = "any"
remote = ["203.0.113.0/24"]
"#;

fn policy(text: &str) -> PolicySet {
    PolicySet {
        vendors: vec![parse_vendor_file(Path::new("v.toml"), text).unwrap()],
    }
}

fn today() -> Selection {
    Selection::widest(Date::parse("2026-12-01").unwrap())
}

/// A TCP SYN or UDP datagram from `src_port` to `dst`:`port`.
fn frame(dst: IpAddr, tcp: bool, src_port: u16, port: u16) -> Vec<u8> {
    let l4 = if tcp {
        packet::tcp(src_port, port)
    } else {
        packet::udp(src_port, port)
    };
    packet::to(dst, l4)
}

/// Every network's first and last address and the addresses just outside them.
fn edges(set: &PolicySet) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for rule in &set.vendors[0].rules {
        for remote in &rule.remotes {
            if let fwd::policy::Remote::Nets(nets) = remote {
                for net in nets {
                    match net {
                        ipnet::IpNet::V4(n) => {
                            let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                            for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                                out.push(IpAddr::V4(Ipv4Addr::from(a)));
                            }
                        }
                        ipnet::IpNet::V6(n) => {
                            let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                            for a in [lo.wrapping_sub(1), lo, hi, hi.wrapping_add(1)] {
                                out.push(IpAddr::V6(Ipv6Addr::from(a)));
                            }
                        }
                    }
                }
            }
        }
    }
    out.extend(
        ["0.0.0.0", "255.255.255.254", "::1", "ffff::1"].map(|a| a.parse::<IpAddr>().unwrap()),
    );
    out
}

/// Sends an egress TCP SYN or UDP datagram through `fwd_xdp` and checks its verdict is
/// the evaluator's; returns it.
fn judged_as_explain_says(
    dp: &Datapath,
    ev: &Evaluator,
    addr: IpAddr,
    tcp: bool,
    src_port: u16,
    port: u16,
) -> u32 {
    let probe = Probe {
        direction: Direction::Egress,
        protocol: if tcp { proto::TCP } else { proto::UDP },
        remote: addr,
        port,
        local_port: 0,
    };
    let expected = match ev.evaluate(&probe) {
        Verdict::Allow { .. } => XDP_PASS,
        _ => XDP_DROP,
    };
    let (kernel, _) = dp
        .test_run_xdp(&frame(addr, tcp, src_port, port), 1)
        .unwrap();
    let protocol = if tcp { "tcp" } else { "udp" };
    assert_eq!(kernel, expected, "{addr} {protocol} {port}");
    kernel
}

#[test]
fn every_range_edge_is_judged_as_explain_says() {
    if !fwd_lab::can_run_as_root("every_range_edge_is_judged_as_explain_says") {
        return;
    }
    let set = policy(EDGES);
    let compiled = compile(&set, &today()).unwrap();
    let ev = Evaluator::new(&compiled.image);
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(&compiled.image, 1).unwrap();
    let mut src_port = 1024;
    let mut checked = 0;
    for addr in edges(&set) {
        for (tcp, port) in [
            (true, 443),
            (true, 8443),
            (true, 22),
            (true, 80),
            (false, 53),
            (false, 999),
            (false, 1000),
            (false, 2000),
            (false, 2001),
            (false, 3000),
            (false, 3001),
        ] {
            // A new flow each time: the policy tables decide, not the flow cache.
            src_port += 1;
            judged_as_explain_says(&dp, &ev, addr, tcp, src_port, port);
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
    // Spot checks of what the edges mean.
    let run = |dp: &Datapath, dst: &str, tcp, port| {
        dp.test_run_xdp(&frame(dst.parse().unwrap(), tcp, 999, port), 1)
            .unwrap()
            .0
    };
    assert_eq!(
        run(&dp, "10.1.2.3", true, 8443),
        XDP_PASS,
        "the host prefix inside the /16"
    );
    assert_eq!(
        run(&dp, "10.1.2.3", true, 443),
        XDP_PASS,
        "the /8 still holds inside"
    );
    assert_eq!(
        run(&dp, "10.2.0.0", true, 8443),
        XDP_DROP,
        "outside the /16"
    );
    assert_eq!(run(&dp, "192.0.2.127", false, 2000), XDP_PASS);
    assert_eq!(run(&dp, "192.0.2.127", false, 2001), XDP_DROP);
    assert_eq!(run(&dp, "192.0.2.128", false, 2001), XDP_PASS);
    assert_eq!(run(&dp, "192.0.2.128", false, 2000), XDP_DROP);
    assert_eq!(run(&dp, "198.51.100.9", true, 22), XDP_DROP);
    assert_eq!(run(&dp, "198.51.100.20", true, 22), XDP_PASS);
    assert_eq!(run(&dp, "198.51.100.21", true, 22), XDP_DROP);
    assert_eq!(run(&dp, "8.8.8.8", false, 53), XDP_PASS, "/0 (any)");
    assert_eq!(run(&dp, "::1", false, 53), XDP_PASS, "::/0 (any)");
    assert_eq!(run(&dp, "203.0.113.1", true, 1), XDP_PASS, "any protocol");
}

const WEB: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "web"
service = "s"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/24"]
"#;

const NOTHING: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "other"
service = "s"
protocol = "tcp"
ports = [8443]
remote = ["192.0.2.0/24"]
"#;

/// A flow the cache allowed is stopped by each change that narrows the policy, and each such
/// change moves the epoch on; widening changes leave it.
#[test]
fn each_narrowing_change_stops_a_cached_flow() {
    if !fwd_lab::can_run_as_root("each_narrowing_change_stops_a_cached_flow") {
        return;
    }
    let web = compile(&policy(WEB), &today()).unwrap();
    let nothing = compile(&policy(NOTHING), &today()).unwrap();
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(&web.image, 1).unwrap();
    let syn = |dst: &str| frame(dst.parse().unwrap(), true, 40000, 443);
    let run = |dp: &Datapath, dst: &str| dp.test_run_xdp(&syn(dst), 1).unwrap().0;
    let web_id = web.ids.get("v/web").unwrap();
    let web_packets = |dp: &Datapath| dp.rule_counters([web_id]).unwrap()[0].outbound.packets;

    // Reload: the flow is cached (its second packet counts on the rule too), then a policy
    // without the rule stops it at once.
    assert_eq!(run(&dp, "192.0.2.1"), XDP_PASS);
    let before = web_packets(&dp);
    assert_eq!(run(&dp, "192.0.2.1"), XDP_PASS);
    assert_eq!(web_packets(&dp), before + 1);
    let epoch = dp.policy_epoch().unwrap();
    dp.install(&nothing.image, 2).unwrap();
    assert_ne!(dp.policy_epoch().unwrap(), epoch, "install");
    assert_eq!(run(&dp, "192.0.2.1"), XDP_DROP, "reload dropped the rule");
    dp.install(&web.image, 3).unwrap();
    assert_eq!(run(&dp, "192.0.2.1"), XDP_PASS);

    // A learned host: the flow is cached, then forgetting the host stops it.
    let class = web.image.dst4[0].1;
    let epoch = dp.policy_epoch().unwrap();
    dp.learn("203.0.113.7".parse().unwrap(), class).unwrap();
    assert_eq!(
        dp.policy_epoch().unwrap(),
        epoch,
        "learning a new host only widens"
    );
    assert_eq!(run(&dp, "203.0.113.7"), XDP_PASS);
    assert_eq!(run(&dp, "203.0.113.7"), XDP_PASS);
    dp.forget("203.0.113.7".parse().unwrap()).unwrap();
    assert_ne!(dp.policy_epoch().unwrap(), epoch, "forget");
    assert_eq!(run(&dp, "203.0.113.7"), XDP_DROP, "forgotten");
    // A host learned again with a class that allows less.
    dp.learn("203.0.113.8".parse().unwrap(), class).unwrap();
    assert_eq!(run(&dp, "203.0.113.8"), XDP_PASS);
    dp.learn_class(1 << 30, &[]).unwrap();
    let epoch = dp.policy_epoch().unwrap();
    dp.learn("203.0.113.8".parse().unwrap(), 1 << 30).unwrap();
    assert_ne!(
        dp.policy_epoch().unwrap(),
        epoch,
        "another class for a host"
    );
    assert_eq!(
        run(&dp, "203.0.113.8"),
        XDP_DROP,
        "its new class allows nothing"
    );

    // Exemptions replaced: in force at once, and gone at once.
    assert_eq!(run(&dp, "198.51.100.5"), XDP_DROP);
    dp.set_exemptions(&["198.51.100.0/24".parse().unwrap()])
        .unwrap();
    assert_eq!(run(&dp, "198.51.100.5"), XDP_PASS, "exempt");
    let epoch = dp.policy_epoch().unwrap();
    dp.set_exemptions(&[]).unwrap();
    assert_ne!(dp.policy_epoch().unwrap(), epoch, "exemptions replaced");
    assert_eq!(run(&dp, "198.51.100.5"), XDP_DROP, "no longer exempt");

    // Audit to enforce.
    dp.set_audit(true).unwrap();
    assert_eq!(
        run(&dp, "198.51.100.5"),
        XDP_PASS,
        "audit passes what would drop"
    );
    let epoch = dp.policy_epoch().unwrap();
    dp.set_audit(false).unwrap();
    assert_ne!(dp.policy_epoch().unwrap(), epoch, "enforce");
    assert_eq!(run(&dp, "198.51.100.5"), XDP_DROP);
    assert_eq!(
        run(&dp, "192.0.2.1"),
        XDP_PASS,
        "the allowed flow is judged again and passes"
    );
}

/// Chunks of the direct index with hundreds of ranges are split by nodes; the kernel walks
/// them as explain does, for both families (several rules, so neighbours differ in class).
#[test]
fn crowded_chunks_are_judged_as_explain_says() {
    if !fwd_lab::can_run_as_root("crowded_chunks_are_judged_as_explain_says") {
        return;
    }
    let mut text = String::from("[vendor]\nid = \"v\"\nname = \"V\"\n");
    let mut seed = 0x2545_f491_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    // (address inside a listed network, its rule's port), to probe half the time.
    let mut listed: Vec<(IpAddr, u16)> = Vec::new();
    for r in 0..4 {
        let remotes: Vec<String> = (0..300)
            .map(|i| {
                let x = next();
                let (text, inside): (String, IpAddr) = match i % 3 {
                    0 => {
                        let a = Ipv4Addr::new(10, 9, (x >> 8) as u8, x as u8);
                        (a.to_string(), a.into())
                    }
                    1 => {
                        let a: Ipv6Addr = format!("2001:db8:5::{:x}", x & 0xffff).parse().unwrap();
                        (a.to_string(), a.into())
                    }
                    _ => (
                        format!("10.9.{}.0/28", (x >> 8) & 0xff),
                        Ipv4Addr::new(10, 9, (x >> 8) as u8, (x & 0xf) as u8).into(),
                    ),
                };
                listed.push((inside, 1000 + r));
                format!("\"{text}\"")
            })
            .collect();
        text.push_str(&format!(
            "\n[[rule]]\nid = \"r{r}\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [{}]\nremote = [{}]\n",
            1000 + r,
            remotes.join(", ")
        ));
    }
    let compiled = compile(&policy(&text), &today()).unwrap();
    let ev = Evaluator::new(&compiled.image);
    let tables = fwd::compile::tables::SlotTables::build(&compiled.image, &[]);
    assert!(
        !tables.nodes4.is_empty() && !tables.nodes6.is_empty(),
        "nodes in use"
    );
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(&compiled.image, 1).unwrap();
    let (mut pass, mut drop) = (0, 0);
    for n in 0..3000u32 {
        let x = next();
        let (addr, port): (IpAddr, u16) = match n % 4 {
            0 => (
                Ipv4Addr::new(10, 9, (x >> 8) as u8, x as u8).into(),
                1000 + (x >> 16) as u16 % 4,
            ),
            1 => (
                format!("2001:db8:5::{:x}", x & 0xffff).parse().unwrap(),
                1000 + (x >> 16) as u16 % 4,
            ),
            _ => listed[x as usize % listed.len()],
        };
        let probe = Probe {
            direction: Direction::Egress,
            protocol: proto::TCP,
            remote: addr,
            port,
            local_port: 0,
        };
        let expected = match ev.evaluate(&probe) {
            Verdict::Allow { .. } => XDP_PASS,
            _ => XDP_DROP,
        };
        let src_port = 1024 + (n % 60000) as u16;
        let (kernel, _) = dp
            .test_run_xdp(&frame(addr, true, src_port, port), 1)
            .unwrap();
        assert_eq!(kernel, expected, "{addr} tcp {port}");
        if kernel == XDP_PASS {
            pass += 1;
        } else {
            drop += 1;
        }
    }
    assert!(pass > 300 && drop > 300, "pass {pass}, drop {drop}");
}

/// Two classes: one whose egress lists fit in its record (8 ranges in all), one whose do
/// not (10), so they stay in the port table.
const PORT_LISTS: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "fits-tcp"
service = "s"
protocol = "tcp"
ports = [443, "1000-2000"]
remote = ["192.0.2.0/24"]

[[rule]]
id = "fits-udp"
service = "s"
protocol = "udp"
ports = [3478]
remote = ["192.0.2.0/24"]

[[rule]]
id = "long-tcp"
service = "s"
protocol = "tcp"
ports = [443, 8443, "1000-2000"]
remote = ["198.51.100.0/24"]

[[rule]]
id = "long-udp"
service = "s"
protocol = "udp"
ports = [3478]
remote = ["198.51.100.0/24"]
"#;

#[test]
fn port_lists_in_and_out_of_the_class_record_are_judged_as_explain_says() {
    if !fwd_lab::can_run_as_root(
        "port_lists_in_and_out_of_the_class_record_are_judged_as_explain_says",
    ) {
        return;
    }
    use fwd_common::tables::ClassRecord;
    let set = policy(PORT_LISTS);
    let compiled = compile(&set, &today()).unwrap();
    // Both kinds of record are there.
    let tables = fwd::compile::tables::SlotTables::build(&compiled.image, &[]);
    let inline = |r: &ClassRecord| r.flags & ClassRecord::FLAG_INLINE_EGRESS != 0;
    assert_eq!(
        (
            tables.classes.iter().filter(|r| inline(r)).count(),
            tables.classes.iter().filter(|r| !inline(r)).count()
        ),
        (1, 1)
    );
    let ev = Evaluator::new(&compiled.image);
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(&compiled.image, 1).unwrap();
    let mut src_port = 1024;
    let mut allowed = 0;
    for addr in ["192.0.2.1", "198.51.100.1"] {
        let addr: IpAddr = addr.parse().unwrap();
        for tcp in [true, false] {
            // Every range's first and last port and their neighbours.
            for port in [
                0, 1, 442, 443, 444, 999, 1000, 2000, 2001, 3477, 3478, 3479, 8442, 8443, 8444,
                65535,
            ] {
                src_port += 1;
                let verdict = judged_as_explain_says(&dp, &ev, addr, tcp, src_port, port);
                allowed += usize::from(verdict == XDP_PASS);
            }
        }
    }
    // 443, 1000, 2000 and 3478 (UDP) open for both classes, 8443 for the long one.
    assert_eq!(allowed, 4 * 2 + 1, "the probes saw the rules");
}
