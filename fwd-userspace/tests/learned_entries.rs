//! Host entries learned at run time (the DNS proxy's /32 and /128 entries) go into the
//! active policy without a recompile, survive a policy swap, and leave cleanly. Needs root.

use std::{net::IpAddr, path::Path};

use fwd::{
    compile::{Selection, compile},
    datapath::{Datapath, Learned},
    policy::{Date, PolicySet, parse_vendor_file},
};
use fwd_lab::packet;

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

/// A TCP SYN to `dst`:`port`.
fn frame(dst: IpAddr, port: u16) -> Vec<u8> {
    frame_of(dst, port, true)
}

/// A UDP datagram to `dst`:`port`.
fn udp_frame(dst: IpAddr, port: u16) -> Vec<u8> {
    frame_of(dst, port, false)
}

fn frame_of(dst: IpAddr, port: u16, tcp: bool) -> Vec<u8> {
    let l4 = if tcp {
        packet::tcp(40000, port)
    } else {
        packet::udp(40000, port)
    };
    packet::to(dst, l4)
}

#[test]
fn learned_hosts_are_enforced_carried_over_and_forgotten() {
    if !fwd_lab::can_run_as_root("learned_hosts_are_enforced_carried_over_and_forgotten") {
        return;
    }
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
    assert_eq!(dp.learned().hosts.len(), 2);

    // A learned entry over a compiled host prefix wins while learned; forgetting it
    // restores the compiled entry, and forgetting other entries removes them.
    let other_class = u32::MAX >> 1;
    // A class must be known before a host uses it.
    assert!(
        dp.learn("198.51.100.9".parse().unwrap(), other_class)
            .is_err()
    );
    dp.learn_class(other_class, &[]).unwrap();
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
    assert!(dp.learned().hosts.is_empty());

    // Swapping again after forgetting leaves no stale entries behind.
    dp.install(&compiled.image, 3).unwrap();
    assert_eq!(run(&dp, "203.0.113.7"), XDP_DROP);
    assert_eq!(run(&dp, "192.0.2.1"), XDP_PASS);
}

const DOMAIN_POLICY: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/24"]

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = [3478]
remote = "*.sfu.example.com"
"#;

/// A class made at run time for a name's address (the domain rule plus the rules of the
/// network covering it) opens exactly that, survives a swap, is replaced whole by
/// `install_with_learned`, and leaves no entry behind in either slot.
#[test]
fn runtime_classes_open_a_names_rules_and_leave_no_stale_entries() {
    if !fwd_lab::can_run_as_root("runtime_classes_open_a_names_rules_and_leave_no_stale_entries") {
        return;
    }
    let set = PolicySet {
        vendors: vec![parse_vendor_file(Path::new("v.toml"), DOMAIN_POLICY).unwrap()],
    };
    let compiled = compile(&set, &Selection::widest(Date::parse("2026-11-21").unwrap())).unwrap();
    let image = &compiled.image;
    let media = compiled.ids.get("v/media").unwrap();
    let web = compiled.ids.get("v/web").unwrap();
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(image, 1).unwrap();
    let udp = |dp: &Datapath, dst: &str, port| {
        dp.test_run_xdp(&udp_frame(dst.parse().unwrap(), port), 1)
            .unwrap()
            .0
    };
    let tcp = |dp: &Datapath, dst: &str| {
        dp.test_run_xdp(&frame(dst.parse().unwrap(), 443), 1)
            .unwrap()
            .0
    };
    let packets = |dp: &Datapath, id| dp.rule_counters([id]).unwrap()[0].outbound.packets;

    // x.sfu.example.com answered 192.0.2.77 (inside web's network) and 203.0.113.77.
    let named = image.rules_naming("x.sfu.example.com");
    let class = 1 << 30;
    let inside = image
        .learned_class("192.0.2.77".parse().unwrap(), &named, class)
        .unwrap();
    let outside = image
        .learned_class("203.0.113.77".parse().unwrap(), &named, class + 1)
        .unwrap();
    assert_eq!(udp(&dp, "203.0.113.77", 3478), XDP_DROP);
    assert_eq!(udp(&dp, "192.0.2.77", 3478), XDP_DROP);
    dp.learn_class(class, &inside.ports).unwrap();
    dp.learn_class(class + 1, &outside.ports).unwrap();
    dp.learn("192.0.2.77".parse().unwrap(), class).unwrap();
    dp.learn("203.0.113.77".parse().unwrap(), class + 1)
        .unwrap();
    let (m, w) = (packets(&dp, media), packets(&dp, web));
    assert_eq!(udp(&dp, "203.0.113.77", 3478), XDP_PASS);
    assert_eq!(udp(&dp, "192.0.2.77", 3478), XDP_PASS);
    assert_eq!(packets(&dp, media), m + 2);
    // The network's own rule still holds for the learned address; nothing else opens.
    assert_eq!(tcp(&dp, "192.0.2.77"), XDP_PASS);
    assert_eq!(packets(&dp, web), w + 1);
    assert_eq!(tcp(&dp, "203.0.113.77"), XDP_DROP);
    assert_eq!(udp(&dp, "203.0.113.77", 3479), XDP_DROP);
    assert_eq!(udp(&dp, "203.0.113.78", 3478), XDP_DROP);

    // A swap carries the classes and hosts over.
    dp.install(image, 2).unwrap();
    assert_eq!(udp(&dp, "203.0.113.77", 3478), XDP_PASS);

    // Replacing the learned set whole: only the outside address, under a new number.
    let mut learned = Learned::default();
    let renumbered = image
        .learned_class("203.0.113.77".parse().unwrap(), &named, class + 5)
        .unwrap();
    learned.classes.insert(class + 5, renumbered.ports);
    learned
        .hosts
        .insert("203.0.113.77".parse().unwrap(), class + 5);
    dp.install_with_learned(image, 3, learned).unwrap();
    assert_eq!(udp(&dp, "203.0.113.77", 3478), XDP_PASS);
    assert_eq!(udp(&dp, "192.0.2.77", 3478), XDP_DROP);
    assert_eq!(
        tcp(&dp, "192.0.2.77"),
        XDP_PASS,
        "back to the compiled network"
    );

    // Forgetting and two more swaps (both slots refilled): nothing learned is left.
    dp.forget("203.0.113.77".parse().unwrap()).unwrap();
    dp.forget_class(class + 5).unwrap();
    assert_eq!(udp(&dp, "203.0.113.77", 3478), XDP_DROP);
    dp.install(image, 4).unwrap();
    dp.install(image, 5).unwrap();
    for (dst, port) in [("203.0.113.77", 3478), ("192.0.2.77", 3478)] {
        assert_eq!(udp(&dp, dst, port), XDP_DROP, "{dst}:{port}");
    }
    assert!(dp.learned().hosts.is_empty() && dp.learned().classes.is_empty());
}

/// `fwd explain` of a hostname says what the kernel does once the DNS proxy has learned the
/// name's address: the answer goes through the proxy's table into the real datapath, and
/// every probe's kernel verdict matches `evaluate_name` (the `remote = "any"` rules included).
#[test]
fn explain_of_a_name_is_what_the_kernel_does_with_its_learned_address() {
    if !fwd_lab::can_run_as_root(
        "explain_of_a_name_is_what_the_kernel_does_with_its_learned_address",
    ) {
        return;
    }
    use fwd::{
        compile::{Evaluator, Probe, Verdict},
        daemon::dns::{Answer, DnsTable, Limits},
        policy::{Direction, load_dir},
    };
    let set = load_dir(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies"
    )))
    .expect("the bundled policies load");
    let compiled = compile(&set, &Selection::widest(Date::parse("2026-12-01").unwrap())).unwrap();
    let image = &compiled.image;
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(image, 1).unwrap();
    let mut table = DnsTable::new(Limits::default());
    let ev = Evaluator::new(image);
    // A VSee TURN name (a domain rule) and a name no rule names, each answered with an
    // address no listed network covers.
    let cases = [
        ("cl-coturn-ohio01.vsee.com", "203.0.113.50", true),
        ("meet.example.org", "203.0.113.51", false),
    ];
    for (name, addr, named) in cases {
        let addr: IpAddr = addr.parse().unwrap();
        let answer = Answer {
            chain: vec![name.to_string()],
            addrs: vec![(addr, 300)],
        };
        let seen = table.observe(image, &answer, 0);
        assert_eq!(seen.covered, named, "{name}");
        dp.apply_learned(&seen.changes).unwrap();
        let probes = [
            (false, 1853),
            (false, 3478),
            (false, 5000),
            (false, 6000),
            (false, 10000),
            (false, 49152),
            (true, 80),
            (true, 443),
            (true, 3478),
            (true, 5222),
            (true, 22),
            (true, 8080),
        ];
        for (is_tcp, port) in probes {
            let probe = Probe {
                direction: Direction::Egress,
                protocol: if is_tcp { 6 } else { 17 },
                remote: addr,
                port,
                local_port: 0,
            };
            let frame = frame_of(addr, port, is_tcp);
            let kernel = dp.test_run_xdp(&frame, 1).unwrap().0;
            let explained = ev.evaluate_name(name, &probe);
            let expected = match explained {
                Verdict::Allow { .. } => XDP_PASS,
                Verdict::NoAddressMatch | Verdict::NoPortMatch { .. } => XDP_DROP,
            };
            assert_eq!(
                kernel,
                expected,
                "{name} ({addr}) {} {port}: explain says {explained:?}",
                if is_tcp { "tcp" } else { "udp" }
            );
        }
        // The any-address UDP route is what opens udp 5000 for both names.
        assert!(matches!(
            ev.evaluate_name(
                name,
                &Probe {
                    direction: Direction::Egress,
                    protocol: 17,
                    remote: addr,
                    port: 5000,
                    local_port: 0,
                }
            ),
            Verdict::Allow { .. }
        ));
    }
}

const RELATED_POLICY: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/24"]

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = [10000]
remote = ["198.51.100.0/24"]

[[rule]]
id = "media-in"
service = "Related media"
direction = "ingress"
protocol = "udp"
local_ports = [40000]
related = true
remote = ["198.51.100.0/24"]
"#;

/// `REMOTES` holds the remotes of allowed outbound flows only where something asks about
/// them: a class with a `related` ingress rule, or a learned host. The related rule still
/// opens once the host has sent to the remote.
#[test]
fn remotes_are_recorded_where_a_related_rule_or_a_learned_host_asks() {
    if !fwd_lab::can_run_as_root("remotes_are_recorded_where_a_related_rule_or_a_learned_host_asks")
    {
        return;
    }
    let set = PolicySet {
        vendors: vec![parse_vendor_file(Path::new("v.toml"), RELATED_POLICY).unwrap()],
    };
    let compiled = compile(&set, &Selection::widest(Date::parse("2026-11-21").unwrap())).unwrap();
    let web_class = compiled
        .image
        .dst4
        .iter()
        .find(|(net, _)| net.to_string() == "192.0.2.0/24")
        .unwrap()
        .1;
    let mut dp = Datapath::load().expect("loading the programs (needs root)");
    dp.install(&compiled.image, 1).unwrap();
    let out = |dp: &Datapath, frame: &[u8]| dp.test_run_xdp(frame, 1).unwrap().0;
    let addr = |a: &str| a.parse::<IpAddr>().unwrap();

    // A class without a related rule: allowed, not recorded.
    assert_eq!(out(&dp, &frame(addr("192.0.2.7"), 443)), XDP_PASS);
    assert!(!dp.remote_recorded(addr("192.0.2.7")).unwrap());
    // A class with one: recorded, and its related media comes in.
    let media_in = packet::v4([198, 51, 100, 7], packet::FROM4, packet::udp(10000, 40000)).frame();
    let tc_in = |dp: &Datapath| {
        dp.test_run_tc(fwd::datapath::program::TC_IN, &media_in, 1)
            .unwrap()
            .0
    };
    const TC_PASS: i32 = -1;
    const TC_DROP: i32 = 2;
    assert_eq!(tc_in(&dp), TC_DROP, "not related before the host sends");
    assert_eq!(out(&dp, &udp_frame(addr("198.51.100.7"), 10000)), XDP_PASS);
    assert!(dp.remote_recorded(addr("198.51.100.7")).unwrap());
    assert_eq!(tc_in(&dp), TC_PASS, "related once the host sent to it");
    // A learned host, in a class without a related rule: recorded (its expiry asks).
    dp.learn(addr("203.0.113.7"), web_class).unwrap();
    assert_eq!(out(&dp, &frame(addr("203.0.113.7"), 443)), XDP_PASS);
    assert!(dp.remote_recorded(addr("203.0.113.7")).unwrap());
    assert_eq!(
        dp.live_remotes(&[addr("203.0.113.7")].into()).unwrap(),
        [addr("203.0.113.7")].into()
    );
}
