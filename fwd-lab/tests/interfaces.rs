//! End to end: never fail open. Interfaces that appear after start, or are deleted and
//! created again, get fwd's programs at once (and with `hold_forwarding` nothing is
//! forwarded before); a restart after the interface a link was pinned for was replaced by
//! one of the same name and index attaches afresh; a second daemon changes nothing. Each
//! asserts on traffic. Needs root; run through `cargo xtask test`.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use fwd_lab::{
    ACME_POLICY, FwdProcess, GATEWAY_LAN_IF, GATEWAY_LAN_V4, Lab, Pins, Sink, SiteConfig, Stream,
    fwd_bin, fwd_json, run_bounded, scrape, scratch, tcp_probe, udp_probe, wait_for,
};

const METRICS: &str = "127.0.0.1:9471";
const ALLOWED: &str = "198.51.100.10";
/// The port the media rule opens, and one nothing opens.
const OPEN: u16 = 10000;
const CLOSED: u16 = 9999;

struct Setup {
    lab: Lab,
    sink: Sink,
    dir: std::path::PathBuf,
    pins: Pins,
    open: SocketAddr,
    closed: SocketAddr,
}

fn setup(test: &str, top: &str, tables: &str) -> Setup {
    let (prefix, dir) = scratch(test);
    let pins = Pins::new(&prefix);
    std::fs::write(dir.join("policies/acme.toml"), ACME_POLICY).unwrap();
    write_config(&dir, &pins, METRICS, top, tables);
    let lab = Lab::create(&prefix, &[ALLOWED.parse().unwrap()]).unwrap();
    Setup::new(lab, dir, pins)
}

impl Setup {
    /// The vendor's sink on both ports, in `lab`.
    fn new(lab: Lab, dir: std::path::PathBuf, pins: Pins) -> Setup {
        let allowed = ALLOWED.parse().unwrap();
        let sink = Sink::start(&lab.vendor, &[OPEN, CLOSED]).unwrap();
        Setup {
            lab,
            sink,
            dir,
            pins,
            open: SocketAddr::new(allowed, OPEN),
            closed: SocketAddr::new(allowed, CLOSED),
        }
    }
}

fn write_config(dir: &Path, pins: &Pins, metrics: &str, top: &str, tables: &str) {
    SiteConfig::new("policies")
        .pins(pins)
        .top(top)
        .metrics(metrics)
        .watch(false)
        .gateway(GATEWAY_LAN_IF)
        .tables(tables)
        .write(&dir.join("fwd.toml"))
        .unwrap();
}

fn start(lab: &Lab, dir: &Path, log: &str) -> FwdProcess {
    lab.start_fwd(dir, log, METRICS)
}

/// The hooks `fwd status` says are attached on lan0.
fn lan_hooks(dir: &Path) -> Vec<String> {
    fwd_json(dir, &["status"])["attached"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["interface"] == GATEWAY_LAN_IF)
        .map(|a| a["hook"].as_str().unwrap().to_string())
        .collect()
}

fn forwarding(lab: &Lab) -> String {
    lab.gateway
        .run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"))
        .unwrap()
        .unwrap()
        .trim()
        .to_string()
}

/// The allowed port answers and the closed one does not (and never received anything).
fn assert_enforced(s: &Setup, when: &str) {
    let timeout = Duration::from_secs(1);
    assert!(
        udp_probe(&s.lab.client, s.open, timeout).unwrap(),
        "{when}: allowed traffic does not pass"
    );
    assert!(
        !udp_probe(&s.lab.client, s.closed, timeout).unwrap(),
        "{when}: denied traffic passed"
    );
    assert_eq!(
        s.sink.udp_datagrams(CLOSED),
        0,
        "{when}: denied traffic passed"
    );
}

/// From the moment the LAN link exists: a stream to both ports for `for_how_long`; the
/// closed port must receive nothing and the open one must answer within a second.
fn stream_from_appearance(s: &Setup, appeared: Instant, for_how_long: Duration) {
    let stream = Stream::start(
        &s.lab.client,
        &[s.open, s.closed],
        Duration::from_millis(2),
        100_000,
    )
    .unwrap();
    let answered = wait_for(Duration::from_secs(2), || {
        (s.sink.udp_datagrams(OPEN) > 0).then(Instant::now)
    });
    std::thread::sleep(for_how_long);
    let results = stream.finish();
    let answered = answered.expect("allowed traffic never passed after the interface appeared");
    assert!(
        answered - appeared < Duration::from_secs(1),
        "enforcing (and forwarding) took {:?} after the interface appeared",
        answered - appeared
    );
    assert_eq!(
        s.sink.udp_datagrams(CLOSED),
        0,
        "denied traffic passed while the interface appeared"
    );
    assert_eq!(results[1].1, 0, "denied echoes came back");
    assert!(results[0].1 > 0, "allowed echoes came back");
}

#[test]
fn an_interface_that_appears_late_or_is_recreated_is_enforced_and_nothing_forwards_before() {
    if !fwd_lab::can_run_as_root(
        "an_interface_that_appears_late_or_is_recreated_is_enforced_and_nothing_forwards_before",
    ) {
        return;
    }
    let s = setup("iface-late", "", "[gateway]\nhold_forwarding = true\n");
    // The LAN interface does not exist when fwd starts: it starts, says so, and holds
    // forwarding off.
    s.lab.remove_lan().unwrap();
    let fwd = start(&s.lab, &s.dir, "fwd.log");
    let status = fwd_json(&s.dir, &["status"]);
    assert_eq!(
        status["missing"],
        serde_json::json!([GATEWAY_LAN_IF]),
        "{status}"
    );
    assert_eq!(status["forwarding_held"], true, "{status}");
    assert_eq!(forwarding(&s.lab), "0");
    let attached = || {
        scrape(
            &s.lab.gateway,
            METRICS,
            "fwd_interface_attached",
            &[("interface", GATEWAY_LAN_IF)],
        )
    };
    assert_eq!(attached(), 0.0);
    let readyz = || fwd_lab::http_get(&s.lab.gateway, METRICS.parse().unwrap(), "/readyz");
    let not_ready = readyz().expect_err("ready without its interface");
    assert!(not_ready.to_string().contains("503"), "{not_ready}");

    // A service on the gateway itself (TCP on every address, those to come too).
    let gateway_service = Sink::start(&s.lab.gateway, &[7000]).unwrap();

    // It appears: enforced within a second, and nothing denied passed meanwhile.
    s.lab.add_lan().unwrap();
    let appeared = Instant::now();
    stream_from_appearance(&s, appeared, Duration::from_millis(500));
    // The gateway's own LAN address came with the interface; it is exempt like the others
    // (a reload after the appearance puts it in).
    let own = SocketAddr::new(GATEWAY_LAN_V4.into(), 7000);
    let reached = wait_for(Duration::from_secs(3), || {
        tcp_probe(&s.lab.client, own, Duration::from_millis(300))
            .unwrap()
            .then_some(())
    });
    assert!(
        reached.is_some(),
        "the gateway's new own address is not exempt"
    );
    assert!(gateway_service.tcp_connections(7000) > 0);
    let generation = fwd_json(&s.dir, &["status"])["generation"]
        .as_u64()
        .unwrap();
    assert!(generation > 1, "no reload for the new addresses");
    assert_eq!(lan_hooks(&s.dir), ["xdp", "tc_egress"]);
    let status = fwd_json(&s.dir, &["status"]);
    assert_eq!(status["missing"], serde_json::json!([]), "{status}");
    assert_eq!(status["forwarding_held"], false, "{status}");
    assert_eq!(forwarding(&s.lab), "1");
    assert_eq!(attached(), 1.0);
    let ready = readyz().expect("ready once the interface has its programs");
    assert!(
        ready.starts_with("ready: generation") && ready.contains("lan0"),
        "{ready}"
    );
    assert_enforced(&s, "after the interface appeared");

    // Deleted while fwd runs: forwarding is held off again, and status says it is missing.
    s.lab.remove_lan().unwrap();
    let missing = wait_for(Duration::from_secs(2), || {
        let status = fwd_json(&s.dir, &["status"]);
        (status["missing"] == serde_json::json!([GATEWAY_LAN_IF])).then_some(())
    });
    assert!(
        missing.is_some(),
        "a deleted interface is not shown missing"
    );
    assert_eq!(forwarding(&s.lab), "0");
    // Created again (a new index): enforced again, as quickly.
    s.lab.add_lan().unwrap();
    let appeared = Instant::now();
    stream_from_appearance(&s, appeared, Duration::from_millis(500));
    assert_eq!(lan_hooks(&s.dir), ["xdp", "tc_egress"]);
    assert_enforced(&s, "after the interface was recreated");
    let change = |change: &str| {
        scrape(
            &s.lab.gateway,
            METRICS,
            "fwd_interface_changes_total",
            &[("interface", GATEWAY_LAN_IF), ("change", change)],
        )
    };
    assert_eq!(change("appeared"), 2.0);
    assert_eq!(change("gone"), 1.0);
    // No link pin of a deleted interface is left behind.
    let links: Vec<_> = std::fs::read_dir(s.pins.dir.join("links"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    drop(fwd);
}

#[test]
fn a_restart_after_the_interface_was_replaced_attaches_afresh_and_enforces() {
    if !fwd_lab::can_run_as_root(
        "a_restart_after_the_interface_was_replaced_attaches_afresh_and_enforces",
    ) {
        return;
    }
    let (prefix, dir) = scratch("iface-replaced");
    let pins = Pins::new(&prefix);
    std::fs::write(dir.join("policies/acme.toml"), ACME_POLICY).unwrap();
    write_config(&dir, &pins, METRICS, "", "");
    let allowed = ALLOWED.parse().unwrap();
    let lab = Lab::create(&prefix, &[allowed]).unwrap();
    let mut fwd = start(&lab, &dir, "fwd.log");
    fwd.kill();
    let index_before = nix_index(&lab);
    // The namespaces go (the links lose their interfaces) and come back with the same
    // names: lan0 gets the same index in the new gateway namespace.
    drop(lab);
    let lab = Lab::create(&prefix, &[allowed]).unwrap();
    assert_eq!(
        nix_index(&lab),
        index_before,
        "the scenario needs the same index"
    );
    let s = Setup::new(lab, dir, pins);
    // Nothing holds lan0 now: traffic passes unfiltered until fwd starts.
    assert!(udp_probe(&s.lab.client, s.closed, Duration::from_secs(1)).unwrap());
    let before = s.sink.udp_datagrams(CLOSED);
    let fwd = start(&s.lab, &s.dir, "fwd-2.log");
    let origins: Vec<String> = fwd_json(&s.dir, &["status"])["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["origin"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(origins, ["attached", "attached"], "{}", fwd.log_text());
    assert!(
        fwd.log_text().contains("not on this interface"),
        "{}",
        fwd.log_text()
    );
    let timeout = Duration::from_secs(1);
    assert!(udp_probe(&s.lab.client, s.open, timeout).unwrap());
    assert!(!udp_probe(&s.lab.client, s.closed, timeout).unwrap());
    assert_eq!(
        s.sink.udp_datagrams(CLOSED),
        before,
        "denied traffic passed"
    );
    drop(fwd);
}

/// lan0's index in the gateway namespace.
fn nix_index(lab: &Lab) -> u32 {
    lab.gateway
        .run(|| nix::net::if_::if_nametoindex(GATEWAY_LAN_IF))
        .unwrap()
        .unwrap()
}

#[test]
fn a_second_daemon_changes_nothing_and_names_the_first() {
    if !fwd_lab::can_run_as_root("a_second_daemon_changes_nothing_and_names_the_first") {
        return;
    }
    let s = setup("second", "", "");
    let first = start(&s.lab, &s.dir, "fwd.log");
    assert_enforced(&s, "with the first daemon");
    let links = |dir: &Path| -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir.join("links"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let links_before = links(&s.pins.dir);
    let status_before = fwd_json(&s.dir, &["status"]);

    // A second daemon with a policy that opens everything to the vendor: once with the
    // same state_dir, once with its own (another pod sharing the host's bpffs).
    let wide = ACME_POLICY.replace("ports = [\"10000-20000\"]", "ports = [\"1-65535\"]");
    for (n, state) in [(1, "state"), (2, "state-other")] {
        let second = s.dir.join(format!("second-{n}"));
        std::fs::create_dir_all(second.join("policies")).unwrap();
        std::fs::write(second.join("policies/acme.toml"), &wide).unwrap();
        SiteConfig::new("policies")
            .pins(&s.pins)
            .state_dir(if n == 1 {
                s.dir.join("state")
            } else {
                second.join(state)
            })
            .control_socket(second.join("control.sock"))
            .metrics("127.0.0.1:9472")
            .watch(false)
            .gateway(GATEWAY_LAN_IF)
            .write(&second.join("fwd.toml"))
            .unwrap();
        // Bounded: a second daemon that runs is killed and the test fails.
        let mut cmd = s.lab.gateway.command(fwd_bin()).unwrap();
        cmd.args(["run", "--config"]).arg(second.join("fwd.toml"));
        let (exited, out) = run_bounded(&mut cmd, Duration::from_secs(20)).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(exited, "second daemon {n} runs beside the first: {stderr}");
        assert_eq!(out.status.code(), Some(2), "second daemon {n}: {stderr}");
        assert!(
            stderr.contains("another fwd daemon is running")
                && stderr.contains(&format!("pid {}", first.pid())),
            "second daemon {n}: {stderr}"
        );
        assert!(stderr.contains("started "), "{stderr}");
        // The first's enforcement, links and policy are untouched.
        assert_enforced(&s, &format!("after second daemon {n}"));
        assert_eq!(links(&s.pins.dir), links_before);
        let status = fwd_json(&s.dir, &["status"]);
        assert_eq!(status["generation"], status_before["generation"]);
        assert_eq!(status["attached"], status_before["attached"]);
    }
    let stats = fwd_json(&s.dir, &["stats"]);
    assert_eq!(stats["generation"], status_before["generation"], "{stats}");
    drop(first);
}

/// `fwd detach` refuses while a daemon runs; after the daemon died (its pins enforcing), it
/// takes the programs off and removes the pins. The daemon here binds its endpoints where
/// FWD_METRICS_LISTEN says, not where the config does, and answers /healthz there.
#[test]
fn detach_refuses_beside_a_daemon_and_removes_what_a_dead_one_left() {
    if !fwd_lab::can_run_as_root("detach_refuses_beside_a_daemon_and_removes_what_a_dead_one_left")
    {
        return;
    }
    let s = setup("detach", "", "");
    let elsewhere: SocketAddr = "127.0.0.1:9476".parse().unwrap();
    let mut child = s
        .lab
        .gateway
        .command(fwd_bin())
        .unwrap()
        .args(["run", "--config"])
        .arg(s.dir.join("fwd.toml"))
        .env("FWD_METRICS_LISTEN", elsewhere.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let health = wait_for(Duration::from_secs(20), || {
        fwd_lab::http_get(&s.lab.gateway, elsewhere, "/healthz").ok()
    });
    let Some(health) = health else {
        let _ = child.kill();
        panic!("fwd did not answer on FWD_METRICS_LISTEN");
    };
    assert_eq!(health, "ok\n");
    assert!(
        fwd_lab::http_get(&s.lab.gateway, METRICS.parse().unwrap(), "/healthz").is_err(),
        "the config's address is not the one bound"
    );
    assert_enforced(&s, "with the daemon");

    let detach = || {
        fwd_lab::code_and_output(
            std::process::Command::new(fwd_bin())
                .args(["detach", "--config"])
                .arg(s.dir.join("fwd.toml")),
        )
    };
    let (code, out) = detach();
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("a daemon is running") && out.contains(&format!("pid {}", child.id())),
        "{out}"
    );
    assert!(s.pins.dir.join("links").exists());
    assert_enforced(&s, "after a refused detach");

    // Killed: the pins go on enforcing until `fwd detach`.
    child.kill().unwrap();
    child.wait().unwrap();
    assert_enforced(&s, "with the daemon dead");
    let (code, out) = detach();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("detached: 2 links removed"), "{out}");
    assert!(!s.pins.dir.exists());
    // The kernel frees a link whose last pin went a moment later.
    let open = wait_for(Duration::from_secs(5), || {
        udp_probe(&s.lab.client, s.closed, Duration::from_millis(300))
            .unwrap()
            .then_some(())
    });
    assert!(open.is_some(), "after detach something still filters");
}
