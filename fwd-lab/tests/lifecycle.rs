//! End to end: the daemon's life cycle on the gateway lab — reloads under traffic, a crash
//! (SIGKILL) and a restart that adopts the pinned datapath, the policy-directory watch,
//! what a clean stop does with `on_exit`, and reloads that roll back unless confirmed.
//! Needs root; run through `cargo xtask test`.

use std::{net::SocketAddr, path::Path, time::Duration};

use fwd_lab::{
    ACME_POLICY, FwdProcess, GATEWAY_LAN_IF, Lab, Pins, Sink, SiteConfig, Stream, fwd_bin,
    fwd_json, scrape, scratch, udp_probe, wait_for,
};

const METRICS: &str = "127.0.0.1:9469";
const ALLOWED: &str = "198.51.100.10";
const UNLISTED: &str = "203.0.113.50";
/// The port the media rule opens, and one nothing opens.
const OPEN: u16 = 10000;
const CLOSED: u16 = 9999;

/// Two policies that both open ALLOWED:OPEN through the same rule (`acme/media`) and
/// differ elsewhere, so each reload really changes the maps.
const POLICY_A: &str = ACME_POLICY;

const POLICY_B: &str = r#"
[vendor]
id = "acme"
name = "Acme Video"

[[rule]]
id = "web"
service = "Web app"
protocol = "tcp"
ports = [443, 8443]
remote = ["198.51.100.0/25"]

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = ["10000-10100", 15000]
remote = ["198.51.100.8/29"]

[[rule]]
id = "turn"
service = "TURN"
protocol = "udp"
ports = [3478]
remote = "192.0.2.77"
"#;

/// `top` holds top-level keys, `tables` whole tables.
fn write_config(dir: &Path, pins: &Pins, top: &str, tables: &str) {
    SiteConfig::new("policies")
        .pins(pins)
        .top(top)
        .metrics(METRICS)
        .gateway(GATEWAY_LAN_IF)
        .tables(tables)
        .write(&dir.join("fwd.toml"))
        .unwrap();
}

fn start(lab: &Lab, dir: &Path, log: &str) -> FwdProcess {
    lab.start_fwd(dir, log, METRICS)
}

/// The media rule's outbound packets in `fwd stats --json` (read from the pins).
fn stats_media_packets(dir: &Path) -> u64 {
    let stats = fwd_json(dir, &["stats"]);
    stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "media")
        .expect("the media rule in fwd stats")["outbound_packets"]
        .as_u64()
        .unwrap()
}

fn media_counter(lab: &Lab, direction: &str) -> f64 {
    scrape(
        &lab.gateway,
        METRICS,
        "fwd_rule_packets_total",
        &[
            ("vendor", "acme"),
            ("rule", "media"),
            ("direction", direction),
        ],
    )
}

struct Setup {
    lab: Lab,
    sink: Sink,
    dir: std::path::PathBuf,
    pins: Pins,
    targets: [SocketAddr; 3],
}

fn setup(test: &str, tables: &str) -> Setup {
    let (prefix, dir) = scratch(test);
    let pins = Pins::new(&prefix);
    std::fs::write(dir.join("policies/acme.toml"), POLICY_A).unwrap();
    write_config(&dir, &pins, "", tables);
    let allowed = ALLOWED.parse().unwrap();
    let unlisted = UNLISTED.parse().unwrap();
    let lab = Lab::create(&prefix, &[allowed, unlisted]).unwrap();
    let sink = Sink::start(&lab.vendor, &[OPEN, CLOSED]).unwrap();
    Setup {
        lab,
        sink,
        dir,
        pins,
        // Allowed; the address is listed but not the port; nothing is listed.
        targets: [
            SocketAddr::new(allowed, OPEN),
            SocketAddr::new(allowed, CLOSED),
            SocketAddr::new(unlisted, CLOSED),
        ],
    }
}

/// Every datagram to the open port arrived and was echoed; nothing to the closed one did.
fn assert_nothing_lost_nothing_leaked(s: &Setup, results: &[(u64, u64)]) {
    let (sent, echoed) = results[0];
    assert!(sent > 500, "the stream ran ({sent} sent)");
    assert_eq!(s.sink.udp_datagrams(OPEN), sent, "allowed datagrams lost");
    assert_eq!(echoed, sent, "echoes of allowed datagrams lost");
    assert_eq!(s.sink.udp_datagrams(CLOSED), 0, "denied datagrams passed");
    assert_eq!(
        (results[1].1, results[2].1),
        (0, 0),
        "denied echoes came back"
    );
}

#[test]
fn a_hundred_reloads_under_traffic_lose_nothing_and_pass_nothing() {
    if !fwd_lab::can_run_as_root("a_hundred_reloads_under_traffic_lose_nothing_and_pass_nothing") {
        return;
    }
    let s = setup("reloads", "[reload]\nwatch = false\n");
    let fwd = start(&s.lab, &s.dir, "fwd.log");
    let stream =
        Stream::start(&s.lab.client, &s.targets, Duration::from_millis(2), 30_000).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..100u64 {
        let policy = if i % 2 == 0 { POLICY_B } else { POLICY_A };
        std::fs::write(s.dir.join("policies/acme.toml"), policy).unwrap();
        let reply = fwd_json(&s.dir, &["reload"]);
        assert_eq!(reply["ok"], true, "{reply}");
        assert_eq!(reply["generation"], i + 2, "{reply}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let results = stream.finish();
    assert_nothing_lost_nothing_leaked(&s, &results);
    // The media rule is in both policies: its counters never reset.
    assert_eq!(media_counter(&s.lab, "egress"), results[0].0 as f64);
    assert_eq!(media_counter(&s.lab, "ingress"), results[0].1 as f64);
    assert_eq!(
        scrape(
            &s.lab.gateway,
            METRICS,
            "fwd_reloads_total",
            &[("result", "ok")]
        ),
        100.0
    );
    drop(fwd);
}

#[test]
fn a_killed_daemon_keeps_enforcing_and_a_restart_adopts_it_without_a_gap() {
    if !fwd_lab::can_run_as_root(
        "a_killed_daemon_keeps_enforcing_and_a_restart_adopts_it_without_a_gap",
    ) {
        return;
    }
    let s = setup("crash", "[reload]\ndebounce_ms = 200\n");
    let mut fwd = start(&s.lab, &s.dir, "fwd.log");
    let stream =
        Stream::start(&s.lab.client, &s.targets, Duration::from_millis(3), 20_000).unwrap();
    std::thread::sleep(Duration::from_millis(500));

    // SIGKILL: no clean-up runs. The pinned links keep the programs attached.
    fwd.kill();
    let at_kill = s.sink.udp_datagrams(OPEN);
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        s.sink.udp_datagrams(OPEN) > at_kill + 100,
        "allowed traffic stopped with the daemon"
    );
    assert_eq!(
        s.sink.udp_datagrams(CLOSED),
        0,
        "denied traffic passed with the daemon dead"
    );
    // `fwd stats` reads the pinned counters with no daemon, and they still count.
    let first = stats_media_packets(&s.dir);
    std::thread::sleep(Duration::from_millis(300));
    let second = stats_media_packets(&s.dir);
    assert!(second > first && first > 0, "stats {first} -> {second}");
    let stats = fwd_json(&s.dir, &["stats"]);
    assert_eq!(stats["links"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(stats["generation"], 1);

    // A restart adopts the pins: same links, counters continue, generation moves on.
    let fwd = start(&s.lab, &s.dir, "fwd-2.log");
    let status = fwd_json(&s.dir, &["status"]);
    assert_eq!(status["generation"], 2, "{status}");
    let origins: Vec<_> = status["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["hook"].as_str().unwrap(), a["origin"].as_str().unwrap()))
        .collect();
    assert_eq!(origins, [("xdp", "adopted"), ("tc_egress", "adopted")]);
    std::thread::sleep(Duration::from_millis(500));
    let results = stream.finish();
    assert_nothing_lost_nothing_leaked(&s, &results);
    assert_eq!(media_counter(&s.lab, "egress"), results[0].0 as f64);

    // The watch: a burst of writes to the policy directory is one reload.
    for policy in [POLICY_B, POLICY_A, POLICY_B] {
        std::fs::write(s.dir.join("policies/acme.toml"), policy).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let generation = wait_for(Duration::from_secs(5), || {
        let g = fwd_json(&s.dir, &["status"])["generation"]
            .as_u64()
            .unwrap();
        (g > 2).then_some(g)
    });
    assert_eq!(generation, Some(3), "the policy change was not picked up");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        fwd_json(&s.dir, &["status"])["generation"],
        3,
        "one burst, one reload"
    );
    assert!(s.pins.dir.join("links").exists());
    drop(fwd);
}

#[test]
fn on_exit_keep_leaves_enforcement_and_detach_removes_it() {
    if !fwd_lab::can_run_as_root("on_exit_keep_leaves_enforcement_and_detach_removes_it") {
        return;
    }
    let s = setup("on-exit", "");
    let timeout = Duration::from_secs(1);
    let mut fwd = start(&s.lab, &s.dir, "fwd.log");
    assert!(udp_probe(&s.lab.client, s.targets[0], timeout).unwrap());
    assert!(!udp_probe(&s.lab.client, s.targets[2], timeout).unwrap());
    // The default, on_exit = "keep": a clean stop leaves the programs enforcing.
    assert!(
        fwd.stop(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert!(udp_probe(&s.lab.client, s.targets[0], timeout).unwrap());
    assert!(!udp_probe(&s.lab.client, s.targets[2], timeout).unwrap());

    // on_exit = "detach": the stop removes the programs and the pins.
    write_config(&s.dir, &s.pins, "on_exit = \"detach\"\n", "");
    let mut fwd = start(&s.lab, &s.dir, "fwd-2.log");
    assert!(!udp_probe(&s.lab.client, s.targets[2], timeout).unwrap());
    assert!(
        fwd.stop(Duration::from_secs(10))
            .is_some_and(|s| s.success())
    );
    assert!(
        udp_probe(&s.lab.client, s.targets[2], timeout).unwrap(),
        "traffic is still filtered after a detaching stop"
    );
    assert!(!s.pins.dir.exists(), "pins left behind");
}

#[test]
fn a_restart_that_puts_another_program_on_a_hook_replaces_it_in_place_and_prunes_the_rest() {
    if !fwd_lab::can_run_as_root(
        "a_restart_that_puts_another_program_on_a_hook_replaces_it_in_place_and_prunes_the_rest",
    ) {
        return;
    }
    let s = setup("replace", "");
    let timeout = Duration::from_secs(1);
    // Host mode on the LAN interface: TC programs on both of its sides.
    let host = std::fs::read_to_string(s.dir.join("fwd.toml"))
        .unwrap()
        .replace("mode = \"gateway\"", "mode = \"host\"");
    std::fs::write(s.dir.join("fwd.toml"), &host).unwrap();
    let mut fwd = start(&s.lab, &s.dir, "fwd.log");
    assert_eq!(
        fwd_json(&s.dir, &["stats"])["links"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    fwd.kill();

    // Gateway mode on the same interface: the egress link now needs fwd_tc_in instead of
    // fwd_tc_out (the link is updated in place), XDP is new, and the ingress link goes.
    write_config(&s.dir, &s.pins, "", "");
    let fwd = start(&s.lab, &s.dir, "fwd-2.log");
    let status = fwd_json(&s.dir, &["status"]);
    let attached: Vec<_> = status["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["hook"].as_str().unwrap(),
                a["program"].as_str().unwrap(),
                a["origin"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attached,
        [
            ("xdp", "fwd_xdp", "attached"),
            ("tc_egress", "fwd_tc_in", "replaced")
        ]
    );
    let links = fwd_json(&s.dir, &["stats"])["links"].clone();
    let links: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert!(links.iter().all(|l| !l.contains("tc_ingress")), "{links:?}");
    assert!(udp_probe(&s.lab.client, s.targets[0], timeout).unwrap());
    assert!(!udp_probe(&s.lab.client, s.targets[2], timeout).unwrap());
    drop(fwd);
}

/// POLICY_A with the closed port opened too: the change a `--confirm` reload tries.
fn opens_closed() -> String {
    format!(
        "{POLICY_A}\n[[rule]]\nid = \"extra\"\nservice = \"Extra\"\nprotocol = \"udp\"\nports = [{CLOSED}]\nremote = \"{ALLOWED}\"\n"
    )
}

/// `fwd reload --confirm 2s` without `fwd confirm` goes back by itself; with it, it stays.
/// Under a steady stream to the open port, which both policies allow: nothing is lost.
#[test]
fn an_unconfirmed_reload_rolls_back_by_itself_and_a_confirmed_one_stays() {
    if !fwd_lab::can_run_as_root(
        "an_unconfirmed_reload_rolls_back_by_itself_and_a_confirmed_one_stays",
    ) {
        return;
    }
    let s = setup("confirm", "[reload]\nwatch = false\n");
    let fwd = start(&s.lab, &s.dir, "fwd.log");
    let stream = Stream::start(
        &s.lab.client,
        &s.targets[..1],
        Duration::from_millis(3),
        20_000,
    )
    .unwrap();
    let timeout = Duration::from_millis(500);
    let closed = s.targets[1];
    let reload_confirm = |time: &str| {
        let out = std::process::Command::new(fwd_bin())
            .args(["reload", "--json", "--confirm", time, "--config"])
            .arg(s.dir.join("fwd.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert!(!udp_probe(&s.lab.client, closed, timeout).unwrap());

    // Not confirmed: the extra rule is in force for two seconds, then gone again.
    std::fs::write(s.dir.join("policies/acme.toml"), opens_closed()).unwrap();
    let reply = reload_confirm("2s");
    assert_eq!(
        (reply["ok"].as_bool(), reply["generation"].as_u64()),
        (Some(true), Some(2))
    );
    assert!(reply["confirm_by_unix"].as_i64().is_some(), "{reply}");
    assert!(
        udp_probe(&s.lab.client, closed, timeout).unwrap(),
        "the new rule"
    );
    assert!(fwd_json(&s.dir, &["status"])["confirm_by_unix"].is_i64());
    let back = wait_for(Duration::from_secs(5), || {
        let status = fwd_json(&s.dir, &["status"]);
        (status["generation"] == 3).then_some(status)
    })
    .expect("the unconfirmed reload did not roll back");
    assert_eq!(back["rollbacks"], 1, "{back}");
    assert!(back["confirm_by_unix"].is_null(), "{back}");
    assert!(
        !udp_probe(&s.lab.client, closed, timeout).unwrap(),
        "the rolled-back rule still passes"
    );
    // What the daemon says it enforces is the old policy again (`fwd diff` sees the file).
    let (code, out) = fwd_lab::code_and_output(
        std::process::Command::new(fwd_bin())
            .args(["diff", "--config"])
            .arg(s.dir.join("fwd.toml")),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("+ acme/extra (added)"), "{out}");

    // Confirmed: it stays past its deadline.
    let reply = reload_confirm("2s");
    assert_eq!(reply["generation"], 4);
    let confirmed = fwd_json(&s.dir, &["confirm"]);
    assert_eq!(confirmed["ok"], true, "{confirmed}");
    std::thread::sleep(Duration::from_secs(3));
    let status = fwd_json(&s.dir, &["status"]);
    assert_eq!(
        (status["generation"].as_u64(), status["rollbacks"].as_u64()),
        (Some(4), Some(1))
    );
    assert!(udp_probe(&s.lab.client, closed, timeout).unwrap());
    // Nothing is waiting now: exit 1, and it says so.
    let (code, out) = fwd_lab::code_and_output(
        std::process::Command::new(fwd_bin())
            .args(["confirm", "--config"])
            .arg(s.dir.join("fwd.toml")),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no reload is waiting"), "{out}");

    let results = stream.finish();
    let (sent, echoed) = results[0];
    assert!(sent > 500, "the stream ran ({sent} sent)");
    assert_eq!(
        echoed, sent,
        "allowed traffic was lost across the reloads and the rollback"
    );
    drop(fwd);
}
