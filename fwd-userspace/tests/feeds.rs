//! Feeds end to end against a real HTTPS server on loopback (rustls, a CA made for the
//! test): `fwd feeds update` writes a good list as a generated vendor file, answers an
//! unchanged one with a conditional request, and keeps the last good file through a
//! failing, a truncated, a shrinking and a hostile fetch, saying why each time. Needs no
//! root and no network beyond 127.0.0.1.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
};

use fwd_lab::https::Server;

struct Site {
    dir: PathBuf,
}

impl Site {
    fn new(server: &Server, feeds: &str) -> Site {
        let dir = std::env::temp_dir().join(format!(
            "fwd-feeds-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        std::fs::write(dir.join("ca.pem"), &server.ca_pem).unwrap();
        std::fs::write(
            dir.join("fwd.toml"),
            format!(
                "policy_dir = \"policies\"\nstate_dir = \"state\"\ncontrol_socket = \"control.sock\"\n{feeds}"
            ),
        )
        .unwrap();
        Site { dir }
    }

    /// `fwd feeds update --json`: exit code and the outcome of each feed by id.
    fn update(&self) -> (i32, HashMap<String, serde_json::Value>) {
        let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
            .args(["feeds", "update", "--json", "--config"])
            .arg(self.dir.join("fwd.toml"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let outcomes = stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["feed"].as_str().unwrap().to_string(), v))
            .collect();
        (out.status.code().unwrap(), outcomes)
    }

    fn file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.join("policies").join(name)).ok()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("state/feeds.json")).unwrap()).unwrap()
    }

    /// What `fwd explain` says of TCP to `addr`:443 under this site's policy.
    fn allows(&self, addr: &str) -> bool {
        let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
            .args(["explain", "--config"])
            .arg(self.dir.join("fwd.toml"))
            .args(["egress", "tcp", addr, "443"])
            .output()
            .unwrap();
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!(
                "fwd explain: {other:?} {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn feed(server: &Server, id: &str, path: &str, extra: &str) -> String {
    format!(
        "\n[[feed]]\nid = \"{id}\"\nurl = \"{}\"\nservice = \"Meetings\"\nports = \"443\"\nca_file = \"ca.pem\"\n{extra}",
        server.url(path)
    )
}

const LIST: &str = "# Acme meeting servers\n198.51.100.0/24\n203.0.113.0/25\n203.0.113.128/25\n2001:db8:100::/48\n";

#[test]
fn good_changes_are_followed_and_bad_fetches_keep_the_last_good_list() {
    let server = Server::start();
    server.serve("/acme.txt", 200, LIST, Some("\"v1\""));
    let site = Site::new(&server, &feed(&server, "acme", "/acme.txt", ""));

    // A good list: written, compiled, in force.
    let (code, out) = site.update();
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out["acme"]["result"], "updated", "{out:?}");
    let file = site.file("acme.feed.toml").expect("the generated file");
    assert!(
        file.contains(&server.url("/acme.txt")),
        "provenance: {file}"
    );
    assert!(file.contains("fwd feeds update"), "{file}");
    assert!(site.allows("198.51.100.7") && site.allows("203.0.113.200"));
    assert!(!site.allows("192.0.2.1"));
    assert_eq!(site.state()["acme"]["entries"], 4);

    // Unchanged: a conditional request, answered 304; nothing written.
    let (code, out) = site.update();
    assert_eq!(
        (code, out["acme"]["result"].as_str()),
        (0, Some("unchanged"))
    );
    assert_eq!(
        server.last_if_none_match().as_deref(),
        Some("\"v1\""),
        "the request carried the ETag"
    );
    assert_eq!(site.file("acme.feed.toml").unwrap(), file);

    // A good change: followed.
    let changed = LIST.replace("203.0.113.128/25", "192.0.2.0/25");
    server.serve("/acme.txt", 200, &changed, Some("\"v2\""));
    let (code, out) = site.update();
    assert_eq!((code, out["acme"]["result"].as_str()), (0, Some("updated")));
    assert!(site.allows("192.0.2.1") && !site.allows("203.0.113.200"));
    let good = site.file("acme.feed.toml").unwrap();

    // Each bad fetch keeps the last good file and says why (exit 1).
    let bad: [(&str, u16, String, &str); 5] = [
        ("failing", 503, "overloaded".into(), "HTTP 503"),
        (
            "truncated",
            200,
            "198.51.100.0/24\n203.0.11".into(),
            "acme.txt:2:1: `203.0.11` is not an address",
        ),
        (
            "shrinking",
            200,
            "198.51.100.0/24\n".into(),
            "shrank from 4 to 1",
        ),
        (
            "hostile",
            200,
            format!("{changed}0.0.0.0/1\n"),
            "0.0.0.0/1 is wider",
        ),
        (
            "private",
            200,
            format!("{changed}10.0.0.0/16\n"),
            "10.0.0.0/16 is private",
        ),
    ];
    for (n, (what, status, body, why)) in bad.iter().enumerate() {
        server.serve("/acme.txt", *status, body, Some(&format!("\"bad{n}\"")));
        let (code, out) = site.update();
        assert_eq!(code, 1, "{what}: {out:?}");
        let detail = out["acme"]["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{what}: {detail}");
        assert_eq!(
            site.file("acme.feed.toml").unwrap(),
            good,
            "{what} changed the file"
        );
        assert!(
            site.allows("192.0.2.1") && !site.allows("10.0.0.1"),
            "{what}"
        );
        assert_eq!(site.state()["acme"]["last_error"], detail, "{what}");
    }
    let results = &site.state()["acme"]["results"];
    assert_eq!(results["updated"], 2, "{results}");
    assert_eq!(results["unchanged"], 1);
    assert_eq!(results["failed"], 1);
    assert_eq!(results["malformed"], 1);
    assert_eq!(results["refused"], 3);
}

#[test]
fn json_feeds_keep_their_version_and_propose_mode_writes_beside() {
    let server = Server::start();
    let aws = r#"{"syncToken": "1700000000", "createDate": "2026-12-01-00-00-00",
      "prefixes": [
        {"ip_prefix": "198.51.100.0/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
        {"ip_prefix": "203.0.113.0/24", "region": "eu-west-1", "service": "EC2", "network_border_group": "eu-west-1"}],
      "ipv6_prefixes": []}"#;
    let google = r#"{"syncToken": "1700000001", "creationTime": "2026-12-01T00:00:00",
      "prefixes": [{"ipv4Prefix": "192.0.2.0/24"}, {"ipv6Prefix": "2001:db8:8::/48"}]}"#;
    let m365 = r#"[{"id": 1, "serviceArea": "Skype", "ips": ["198.18.0.0/24"], "category": "Optimize"},
      {"id": 2, "serviceArea": "Exchange", "ips": ["198.19.0.0/24"], "category": "Allow"}]"#;
    // No ETag: the publisher's version marker is what says "unchanged".
    server.serve("/ip-ranges.json", 200, aws, None);
    server.serve("/goog.json", 200, google, None);
    server.serve("/m365.json", 200, m365, None);
    server.serve(
        "/m365-version",
        200,
        r#"{"instance": "Worldwide", "latest": "2026110100"}"#,
        None,
    );
    let feeds = [
        feed(
            &server,
            "aws-ec2",
            "/ip-ranges.json",
            "format = \"aws\"\naws_services = [\"EC2\"]\naws_regions = [\"us-east-1\"]\n",
        ),
        feed(
            &server,
            "google",
            "/goog.json",
            "format = \"google\"\nmode = \"propose\"\n",
        ),
        feed(
            &server,
            "m365",
            "/m365.json",
            &format!(
                "format = \"m365\"\nm365_categories = [\"Optimize\"]\nversion_url = \"{}\"\n",
                server.url("/m365-version")
            ),
        ),
    ]
    .concat();
    let site = Site::new(&server, &feeds);
    let (code, out) = site.update();
    assert_eq!(code, 0, "{out:?}");
    assert_eq!(out["aws-ec2"]["result"], "updated");
    assert_eq!(out["m365"]["result"], "updated");
    assert_eq!(out["google"]["result"], "proposed");
    assert!(
        site.allows("198.51.100.1") && !site.allows("203.0.113.1"),
        "aws filters"
    );
    assert!(
        site.allows("198.18.0.1") && !site.allows("198.19.0.1"),
        "m365 filters"
    );
    // Proposed, not in force.
    assert!(site.file("google.feed.toml.proposed").is_some());
    assert!(site.file("google.feed.toml").is_none());
    assert!(!site.allows("192.0.2.1"));
    assert_eq!(site.state()["aws-ec2"]["version"], "1700000000");
    // `fwd diff --proposed` shows what moving the proposal into place would open.
    let (code, out) = fwd_lab::code_and_output(
        Command::new(env!("CARGO_BIN_EXE_fwd"))
            .args(["diff", "--proposed", "--against"])
            .arg(site.dir.join("policies"))
            .arg("--config")
            .arg(site.dir.join("fwd.toml")),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("+ google/feed (added)") && out.contains("+ 192.0.2.0/24"),
        "{out}"
    );

    // The same syncToken with other bytes (whitespace): unchanged, not rewritten.
    server.serve("/ip-ranges.json", 200, &format!("{aws}\n\n"), None);
    let before = site.file("aws-ec2.feed.toml").unwrap();
    let (_, out) = site.update();
    assert_eq!(out["aws-ec2"]["result"], "unchanged", "{out:?}");
    assert!(
        out["aws-ec2"]["detail"]
            .as_str()
            .unwrap()
            .contains("1700000000")
    );
    assert_eq!(site.file("aws-ec2.feed.toml").unwrap(), before);

    // Microsoft 365: the version service says whether to fetch the list at all.
    assert_eq!(site.state()["m365"]["version"], "2026110100");
    let m365_moved = m365.replace("198.18.0.0/24", "198.18.1.0/24");
    server.serve("/m365.json", 200, &m365_moved, None);
    let (_, out) = site.update();
    assert_eq!(out["m365"]["result"], "unchanged", "{out:?}");
    assert!(site.allows("198.18.0.1"), "the list in force stays");
    server.serve(
        "/m365-version",
        200,
        r#"{"instance": "Worldwide", "latest": "2026120100"}"#,
        None,
    );
    let (_, out) = site.update();
    assert_eq!(out["m365"]["result"], "updated", "{out:?}");
    assert!(site.allows("198.18.1.1") && !site.allows("198.18.0.1"));
    assert_eq!(site.state()["m365"]["version"], "2026120100");
}

#[test]
fn a_bad_feed_config_is_located() {
    let dir = std::env::temp_dir().join(format!("fwd-feeds-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |text: &str| -> String {
        let path = dir.join("fwd.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
            .args(["feeds", "update", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = check(
        "[[feed]]\nid = \"a\"\nurl = \"http://x.example/l.txt\"\nservice = \"s\"\nports = \"443\"\n",
    );
    assert!(
        e.contains("fwd.toml:3:7") && e.contains("must be https://"),
        "{e}"
    );
    let e = check(
        "[[feed]]\nid = \"a\"\nurl = \"https://x.example/l.txt\"\nservice = \"s\"\nformat = \"csv\"\nports = \"443\"\n",
    );
    assert!(
        e.contains("fwd.toml:5:10") && e.contains("unknown feed format"),
        "{e}"
    );
    let e = check("[[feed]]\nid = \"a\"\nurl = \"https://x.example/l.txt\"\nservice = \"s\"\n");
    assert!(e.contains("[[feed]] `a`") && e.contains("ports"), "{e}");
    let e = check(
        "[[feed]]\nid = \"a\"\nurl = \"https://x.example/l.txt\"\nservice = \"s\"\nports = \"443\"\nmax_shrink_percent = 150\n",
    );
    assert!(
        e.contains("fwd.toml:6") && e.contains("max_shrink_percent"),
        "{e}"
    );
    let e = check(
        "[[feed]]\nid = \"a\"\nurl = \"https://x.example/l\"\nservice = \"s\"\nports = \"443\"\n[[feed]]\nid = \"a\"\nurl = \"https://x.example/m\"\nservice = \"s\"\nports = \"443\"\n",
    );
    assert!(e.contains("used twice"), "{e}");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}

/// FWD_LOG_FORMAT=json: every log line is one JSON object (level, fields), for fleets that
/// ship logs.
#[test]
fn logs_can_be_json_lines() {
    let server = Server::start();
    server.serve("/acme.txt", 503, "down", None);
    let site = Site::new(&server, &feed(&server, "acme", "/acme.txt", ""));
    let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
        .args(["feeds", "update", "--config"])
        .arg(site.dir.join("fwd.toml"))
        .env("FWD_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let warn = lines
        .iter()
        .find(|l| l["level"] == "WARN")
        .unwrap_or_else(|| panic!("no warning in {stderr}"));
    assert_eq!(warn["fields"]["feed"], "acme", "{warn}");
    assert!(
        warn["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{warn}"
    );
}
