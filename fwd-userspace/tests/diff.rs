//! `fwd diff` against a directory and a file: what a change opens and closes, per vendor
//! and rule, as text and JSON, with terraform's exit codes. (Against the running daemon:
//! fwd-lab/tests/feeds.rs.)

use std::process::Command;

const OLD: &str = "[vendor]\nid = \"acme\"\nname = \"Acme\"\n\
[[rule]]\nid = \"web\"\nservice = \"Web\"\nprotocol = \"tcp\"\nports = [443]\nremote = [\"198.51.100.0/24\"]\n\
[[rule]]\nid = \"old\"\nservice = \"Old\"\nprotocol = \"udp\"\nports = [5000]\nremote = \"203.0.113.9\"\n";

fn fwd_diff(dir: &std::path::Path, against: &std::path::Path, json: bool) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fwd"));
    cmd.args(["diff", "--config"])
        .arg(dir.join("fwd.toml"))
        .arg("--policies")
        .arg(dir.join("new"))
        .arg("--against")
        .arg(against);
    if json {
        cmd.arg("--json");
    }
    fwd_lab::code_and_output(&mut cmd)
}

#[test]
fn diff_says_what_opens_and_closes_and_exits_like_terraform() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    std::fs::write(dir.path().join("fwd.toml"), "policy_dir = \"new\"\n").unwrap();
    std::fs::write(old.join("acme.toml"), OLD).unwrap();
    // The same policy written otherwise: no change.
    let same = OLD.replace(
        "\"198.51.100.0/24\"",
        "\"198.51.100.0/25\", \"198.51.100.128/25\"",
    );
    std::fs::write(new.join("acme.toml"), &same).unwrap();
    let (code, out) = fwd_diff(dir.path(), &old, false);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 rules added, 0 removed, 0 changed"), "{out}");

    // A change: a network and a port added, one rule removed, one added with a date.
    let changed = OLD
        .replace("\"198.51.100.0/24\"", "\"198.51.100.0/24\", \"192.0.2.0/25\"")
        .replace("ports = [443]", "ports = [443, 8443]")
        .replace(
            "[[rule]]\nid = \"old\"\nservice = \"Old\"\nprotocol = \"udp\"\nports = [5000]\nremote = \"203.0.113.9\"\n",
            "[[rule]]\nid = \"turn\"\nservice = \"TURN\"\nprotocol = \"udp\"\nports = [3478]\nremote = \"turn.example.com\"\nnot_after = 2099-01-01\n",
        );
    std::fs::write(new.join("acme.toml"), &changed).unwrap();
    let (code, out) = fwd_diff(dir.path(), &old, false);
    assert_eq!(code, 1, "{out}");
    for line in [
        "~ acme/web (changed)",
        "networks    + 192.0.2.0/25",
        "ports       + 8443",
        "- acme/old (removed)",
        "+ acme/turn (added)",
        "names       + turn.example.com",
        "1 rules added, 1 removed, 1 changed",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    let (code, out) = fwd_diff(dir.path(), &old, true);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let changes = json["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{json}");
    let web = changes.iter().find(|c| c["rule"] == "web").unwrap();
    assert_eq!(web["change"], "changed");
    assert!(
        web["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["field"] == "networks"
                && f["added"] == serde_json::json!(["192.0.2.0/25"])
                && f["removed"] == serde_json::json!([]))
    );

    // Against one vendor file: only that vendor; another vendor's file is not compared.
    std::fs::write(new.join("other.toml"), OLD.replace("\"acme\"", "\"other\"")).unwrap();
    let (code, out) = fwd_diff(dir.path(), &old.join("acme.toml"), false);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("other/"), "{out}");

    // Bad input: exit 2.
    let (code, out) = fwd_diff(dir.path(), &dir.path().join("nowhere"), false);
    assert_eq!(code, 2, "{out}");
    std::fs::write(new.join("acme.toml"), "[vendor]\nid = 1\n").unwrap();
    let (code, out) = fwd_diff(dir.path(), &old, false);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("acme.toml:2"), "{out}");
}
