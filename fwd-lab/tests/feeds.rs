//! End to end: a feed's list, fetched over HTTPS from a server on loopback, is what the
//! gateway enforces; a good change is enforced after `fwd feeds update` (which asks the
//! daemon to reload), and a failing or hostile fetch leaves the last good list in force.
//! Asserted on traffic through the lab. `fwd diff` against the running daemon is checked
//! on the way. Needs root; run through `cargo xtask test`.

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use fwd_lab::{
    GATEWAY_LAN_IF, Lab, Pins, Sink, SiteConfig, fwd_bin, fwd_json, https::Server, scrape, scratch,
    udp_probe,
};

const METRICS: &str = "127.0.0.1:9473";
const PORT: u16 = 10000;

/// `fwd feeds update` (from the test's own namespace, where the server is): its exit code.
fn update(dir: &Path) -> i32 {
    let out = Command::new(fwd_bin())
        .args(["feeds", "update", "--config"])
        .arg(dir.join("fwd.toml"))
        .output()
        .unwrap();
    eprintln!(
        "fwd feeds update: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code().unwrap()
}

/// `fwd diff` (against the running daemon): exit code and output.
fn diff(dir: &Path) -> (i32, String) {
    fwd_lab::code_and_output(
        Command::new(fwd_bin())
            .args(["diff", "--config"])
            .arg(dir.join("fwd.toml")),
    )
}

#[test]
fn the_gateway_enforces_what_the_feed_says_and_keeps_the_last_good_list() {
    if !fwd_lab::can_run_as_root(
        "the_gateway_enforces_what_the_feed_says_and_keeps_the_last_good_list",
    ) {
        return;
    }
    let (prefix, dir) = scratch("feeds");
    let pins = Pins::new(&prefix);
    let server = Server::start();
    std::fs::write(dir.join("ca.pem"), &server.ca_pem).unwrap();
    let listed = "198.51.100.10".parse().unwrap();
    let added = "192.0.2.10".parse().unwrap();
    let hostile = "45.0.0.10".parse().unwrap();
    let lab = Lab::create(&prefix, &[listed, added, hostile]).unwrap();
    let sink = Sink::start(&lab.vendor, &[PORT]).unwrap();
    SiteConfig::new("policies")
        .pins(&pins)
        .metrics(METRICS)
        .watch(false)
        .gateway(GATEWAY_LAN_IF)
        .tables(&format!(
            "[[feed]]\nid = \"acme\"\nurl = \"{}\"\nservice = \"Media\"\nprotocol = [\"udp\"]\nports = \"{PORT}\"\nca_file = \"ca.pem\"\n",
            server.url("/acme.txt")
        ))
        .write(&dir.join("fwd.toml"))
        .unwrap();
    let passes = |addr| {
        udp_probe(
            &lab.client,
            SocketAddr::new(addr, PORT),
            Duration::from_millis(500),
        )
        .unwrap()
    };

    // The first good list, then the daemon.
    server.serve("/acme.txt", 200, "198.51.100.0/24\n", Some("\"1\""));
    assert_eq!(update(&dir), 0);
    let fwd = lab.start_fwd(&dir, "fwd.log", METRICS);
    assert!(passes(listed), "the feed's address is not open");
    assert!(!passes(added) && !passes(hostile));

    // `fwd diff` against what the daemon enforces: nothing, then a staged vendor file.
    assert_eq!(diff(&dir).0, 0);
    std::fs::write(
        dir.join("policies/extra.toml"),
        "[vendor]\nid = \"extra\"\nname = \"Extra\"\n[[rule]]\nid = \"web\"\nservice = \"Web\"\nprotocol = \"tcp\"\nports = [443]\nremote = \"192.0.2.99\"\n",
    )
    .unwrap();
    let (code, out) = diff(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("+ extra/web (added)") && out.contains("192.0.2.99/32"),
        "{out}"
    );
    // `fwd reload --dry-run` says the same and changes nothing.
    let (code, out) = fwd_lab::code_and_output(
        Command::new(fwd_bin())
            .args(["reload", "--dry-run", "--json", "--config"])
            .arg(dir.join("fwd.toml")),
    );
    assert_eq!(code, 1, "{out}");
    let reply: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["changes"][0]["rule"], "web", "{reply}");
    assert_eq!(reply["changes"][0]["vendor"], "extra", "{reply}");
    assert_eq!(
        fwd_json(&dir, &["status"])["generation"],
        1,
        "the dry run reloaded"
    );
    std::fs::remove_file(dir.join("policies/extra.toml")).unwrap();
    assert_eq!(diff(&dir).0, 0);

    // A good change: enforced once the update asks the daemon to reload.
    server.serve(
        "/acme.txt",
        200,
        "198.51.100.0/24\n192.0.2.0/24\n",
        Some("\"2\""),
    );
    assert_eq!(update(&dir), 0);
    assert_eq!(fwd_json(&dir, &["status"])["generation"], 2);
    assert!(passes(listed) && passes(added));

    // A failing and a hostile fetch: the last good list stays in force.
    server.serve("/acme.txt", 503, "down", None);
    assert_eq!(update(&dir), 1);
    server.serve(
        "/acme.txt",
        200,
        "198.51.100.0/24\n192.0.2.0/24\n0.0.0.0/1\n",
        Some("\"3\""),
    );
    assert_eq!(update(&dir), 1);
    assert_eq!(fwd_json(&dir, &["status"])["generation"], 2, "no reload");
    assert!(passes(listed) && passes(added));
    assert!(!passes(hostile), "the hostile list's /1 was put in force");
    let count = |result: &str| {
        scrape(
            &lab.gateway,
            METRICS,
            "fwd_feed_updates_total",
            &[("feed", "acme"), ("result", result)],
        )
    };
    assert_eq!(
        (count("updated"), count("failed"), count("refused")),
        (2.0, 1.0, 1.0)
    );
    assert_eq!(
        scrape(
            &lab.gateway,
            METRICS,
            "fwd_feed_entries",
            &[("feed", "acme")]
        ),
        2.0
    );
    assert!(sink.udp_datagrams(PORT) > 0);
    drop(fwd);
}
