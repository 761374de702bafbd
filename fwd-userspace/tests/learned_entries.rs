//! Host entries learned at run time (the DNS proxy's /32 and /128 entries) go into the
//! active policy without a recompile, survive a policy swap, and leave cleanly. Needs root.

use std::{net::IpAddr, path::Path};

use etherparse::PacketBuilder;
use fwd::{
    compile::{Selection, compile},
    datapath::Datapath,
    policy::{Date, PolicySet, parse_vendor_file},
};

const POLICY: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/24", "198.51.100.9"]
"#;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn frame(dst: IpAddr, port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let builder = match dst {
        IpAddr::V4(d) => builder.ipv4([10, 0, 0, 2], d.octets(), 64),
        IpAddr::V6(d) => builder.ipv6([0xfd; 16], d.octets(), 64),
    };
    let builder = builder.tcp(40000, port, 1, 1024).syn();
    let mut out = Vec::new();
    builder.write(&mut out, &[]).unwrap();
    out
}

#[test]
fn learned_hosts_are_enforced_carried_over_and_forgotten() {
    let set = PolicySet {
        vendors: vec![parse_vendor_file(Path::new("v.toml"), POLICY).unwrap()],
    };
    let compiled = compile(&set, &Selection::widest(Date::parse("2026-11-21").unwrap())).unwrap();
    let web = compiled.ids.get("v/web").unwrap();
    let class = compiled.image.dst4[0].1;
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(&compiled.image, 1).unwrap();
    let run = |dp: &Datapath, dst: &str| {
        dp.test_run_xdp(&frame(dst.parse().unwrap(), 443), 1)
            .unwrap()
            .0
    };
    let web_packets = |dp: &Datapath| dp.rule_counters([web]).unwrap()[0].outbound.packets;

    // Not listed: dropped. Learned with the web rule's class: allowed, on that rule.
    assert_eq!(run(&dp, "203.0.113.7"), XDP_DROP);
    dp.learn("203.0.113.7".parse().unwrap(), class).unwrap();
    dp.learn("2001:db8::7".parse().unwrap(), class).unwrap();
    let before = web_packets(&dp);
    assert_eq!(run(&dp, "203.0.113.7"), XDP_PASS);
    assert_eq!(run(&dp, "2001:db8::7"), XDP_PASS);
    assert_eq!(web_packets(&dp), before + 2);
    // Only the learned host, not its neighbours.
    assert_eq!(run(&dp, "203.0.113.8"), XDP_DROP);

    // A policy swap keeps the learned entries (the same image numbers classes the same).
    dp.install(&compiled.image, 2).unwrap();
    assert_eq!(run(&dp, "203.0.113.7"), XDP_PASS);
    assert_eq!(dp.learned().len(), 2);

    // A learned entry over a compiled host prefix wins while learned; forgetting it
    // restores the compiled entry, and forgetting other entries removes them.
    let other_class = u32::MAX >> 1;
    dp.learn("198.51.100.9".parse().unwrap(), other_class)
        .unwrap();
    assert_eq!(
        run(&dp, "198.51.100.9"),
        XDP_DROP,
        "class without port entries"
    );
    dp.forget("198.51.100.9".parse().unwrap()).unwrap();
    assert_eq!(run(&dp, "198.51.100.9"), XDP_PASS);
    dp.forget("203.0.113.7".parse().unwrap()).unwrap();
    dp.forget("2001:db8::7".parse().unwrap()).unwrap();
    assert_eq!(run(&dp, "203.0.113.7"), XDP_DROP);
    assert_eq!(run(&dp, "2001:db8::7"), XDP_DROP);
    assert!(dp.learned().is_empty());

    // Swapping again after forgetting leaves no stale entries behind.
    dp.install(&compiled.image, 3).unwrap();
    assert_eq!(run(&dp, "203.0.113.7"), XDP_DROP);
    assert_eq!(run(&dp, "192.0.2.1"), XDP_PASS);
}
