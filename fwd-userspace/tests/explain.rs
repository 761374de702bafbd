//! `fwd explain --from-sample`: the JSON lines of `fwd monitor --json` judged again by a
//! policy, with the name the client resolved. (From a running daemon's monitor:
//! fwd-lab/tests/gateway.rs.)

use std::{io::Write as _, process::Command, process::Stdio};

const POLICY: &str = "[vendor]\nid = \"acme\"\nname = \"Acme\"\n\
[[rule]]\nid = \"web\"\nservice = \"Web\"\nprotocol = \"tcp\"\nports = [443]\nremote = [\"198.51.100.0/24\"]\n\
[[rule]]\nid = \"turn\"\nservice = \"TURN\"\nprotocol = \"udp\"\nports = [3478]\nremote = \"turn.example.com\"\n";

fn sample(dst: &str, protocol: &str, port: u16, reason: &str, dns_name: Option<&str>) -> String {
    serde_json::json!({
        "time_ms": 1_764_000_000_000u64,
        "interface": "lan0",
        "direction": "out",
        "protocol": protocol,
        "src": "10.0.0.5",
        "dst": dst,
        "src_port": 40000,
        "dst_port": port,
        "reason": reason,
        "nearest_rule": null,
        "dns_name": dns_name,
    })
    .to_string()
}

/// `fwd explain --from-sample -` with `input` on its standard input: (exit code, stdout,
/// stderr).
fn explain(dir: &std::path::Path, input: &str, json: bool) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fwd"));
    cmd.arg("explain")
        .arg("--config")
        .arg(dir.join("fwd.toml"))
        .args(["--from-sample", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("fwd.toml"), "policy_dir = \"policies\"\n").unwrap();
    std::fs::write(dir.path().join("policies/acme.toml"), POLICY).unwrap();
    dir
}

#[test]
fn samples_are_judged_again_by_the_policy_and_by_the_name_the_client_resolved() {
    let dir = site();
    let input = [
        // Dropped before the web rule listed its network: allowed now.
        sample("198.51.100.7", "tcp", 443, "no_address_match", None),
        // An address no rule lists, which the client got for a name a rule names.
        sample(
            "203.0.113.9",
            "udp",
            3478,
            "no_address_match",
            Some("turn.example.com"),
        ),
        // A name no rule names.
        sample(
            "203.0.113.10",
            "udp",
            5000,
            "no_address_match",
            Some("meet.example.org"),
        ),
    ]
    .join("\n");
    let (code, out, err) = explain(dir.path(), &input, false);
    assert_eq!(code, 1, "one sample is still denied: {out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("198.51.100.7:443 no_address_match"),
        "{out}"
    );
    assert!(lines[1].starts_with("  now: allow: acme/web (Web"), "{out}");
    assert!(
        lines[2].contains("(the client resolved turn.example.com)"),
        "{out}"
    );
    assert_eq!(
        lines[3],
        "  now: deny: no rule covers the address 203.0.113.9"
    );
    assert!(
        lines[4].starts_with(
            "  as the name turn.example.com: allow once fwd's DNS proxy resolves turn.example.com"
        ),
        "{out}"
    );
    assert!(
        lines[6].contains("rules cover") || lines[6].contains("no rule covers"),
        "{out}"
    );
    assert!(
        lines[7]
            .starts_with("  as the name meet.example.org: deny: no rule names meet.example.org"),
        "{out}"
    );
    assert!(
        err.contains("3 sample(s); the policy allows 1 of them now, denies 2"),
        "{err}"
    );

    // JSON: one object per sample, with the sample and both answers.
    let (code, out, _) = explain(dir.path(), &input, true);
    assert_eq!(code, 1);
    let objects: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), 3);
    assert_eq!(objects[0]["now"]["verdict"], "allow");
    assert_eq!(objects[0]["now"]["rule"], "web");
    assert_eq!(objects[0]["sample"]["dst"], "198.51.100.7");
    assert!(objects[0].get("by_name").is_none());
    assert_eq!(objects[1]["now"]["reason"], "no_address_match");
    assert_eq!(objects[1]["by_name"]["verdict"], "allow");
    assert_eq!(objects[1]["by_name"]["domain_pattern"], "turn.example.com");
    assert_eq!(objects[2]["by_name"]["verdict"], "deny");

    // Every sample allowed now: exit 0.
    let (code, _, err) = explain(dir.path(), input.lines().next().unwrap(), false);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_line_that_is_not_a_sample_is_refused_with_its_place() {
    let dir = site();
    let input = format!(
        "{}\n{{\"time_ms\": 1}}\n",
        sample("198.51.100.7", "tcp", 443, "no_address_match", None)
    );
    let (code, _, err) = explain(dir.path(), &input, false);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("standard input:2: not a `fwd monitor --json` sample"),
        "{err}"
    );
    assert!(err.contains("fwd monitor --last 20 --json"), "{err}");
    // Neither a packet nor --from-sample: told what to give.
    let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
        .arg("explain")
        .arg("--config")
        .arg(dir.path().join("fwd.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--from-sample"), "{err}");
}
