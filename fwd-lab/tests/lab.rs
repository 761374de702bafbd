//! `fwd lab` (what `cargo xtask run` shows a newcomer), piped: the probes it picks from the
//! bundled policies go through or are dropped as the policy says, one per vendor with
//! listed IPv4 addresses, a domain rule's name resolved through fwd's DNS proxy (from a
//! dnsmasq authority in the vendor namespace), a denied probe per reason (an unlisted address, a listed address
//! on a port no rule opens, an unsolicited inbound connection), the counters, and the
//! daemon's last samples; with --audit, everything passes and the samples say so.

use fwd_lab::{fwd_bin, fwd_command};

/// Runs `fwd lab` for `seconds` with `extra` arguments; its output (stdout, not a terminal).
fn lab(prefix: &str, seconds: u32, extra: &[&str]) -> String {
    let policies = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let out = fwd_command(&fwd_bin())
        .args([
            "lab",
            "--prefix",
            prefix,
            "--duration",
            &seconds.to_string(),
        ])
        .arg("--policies")
        .arg(&policies)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fwd lab failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The lines of the last picture the lab printed.
fn last_picture(text: &str) -> Vec<&str> {
    let start = text.rfind("fwd lab, ").expect("a picture");
    text[start..].lines().collect()
}

/// (delivered, blocked) of the probe line that starts with `traffic`.
fn counts(lines: &[&str], traffic: &str) -> (u64, u64) {
    let line = lines
        .iter()
        .find(|l| l.starts_with(traffic))
        .unwrap_or_else(|| panic!("no probe {traffic} in:\n{}", lines.join("\n")));
    let n: Vec<u64> = line
        .split_whitespace()
        .rev()
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    (n[1], n[0])
}

#[test]
fn the_lab_shows_what_the_policy_allows_and_drops_and_why() {
    if !fwd_lab::can_run_as_root("the_lab_shows_what_the_policy_allows_and_drops_and_why") {
        return;
    }
    let text = lab("fwd-t-lab", 3, &[]);
    let lines = last_picture(&text);
    let picture = lines.join("\n");
    // No colour codes when the output is not a terminal.
    assert!(!text.contains('\x1b'), "{text}");
    let allowed: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(" allow: ") && !l.contains("once asked via fwd's DNS"))
        .collect();
    assert!(allowed.len() >= 4, "{picture}");
    for vendor in ["zoom/", "pexip/", "one-click-twilio/", "webrtc-sip-wss/"] {
        assert!(
            allowed.iter().any(|l| l.contains(vendor)),
            "{vendor}: {picture}"
        );
    }
    for line in &allowed {
        let traffic = line.split("  ").next().unwrap();
        let (delivered, blocked) = counts(&lines, traffic);
        assert!(delivered >= 1 && blocked == 0, "{line}");
    }
    for because in [
        "deny: no rule for this port (no_port_match)",
        "deny: unsolicited inbound connection",
    ] {
        let line = lines
            .iter()
            .find(|l| l.contains(because))
            .unwrap_or_else(|| panic!("no probe {because}: {picture}"));
        let traffic = line.split("  ").next().unwrap();
        let (delivered, blocked) = counts(&lines, traffic);
        assert!(delivered == 0 && blocked >= 1, "{line}");
    }
    // A domain rule's name: closed before the client asks fwd's DNS proxy for it (the
    // first probe), open after.
    let named = lines
        .iter()
        .find(|l| l.contains(", once asked via fwd's DNS"))
        .unwrap_or_else(|| panic!("no probe of a name: {picture}"));
    let traffic = named.split("  ").next().unwrap();
    let (delivered, blocked) = counts(&lines, traffic);
    assert!(delivered >= 1 && blocked == 1, "{named}");
    assert!(picture.contains("203.0.113.7:8081"), "{picture}");
    assert!(picture.contains("no_port_match (ingress)"), "{picture}");
    let samples = picture
        .split("last samples of dropped packets")
        .nth(1)
        .expect("the samples part");
    assert!(
        samples.contains(" in  tcp ") && samples.contains(":2222"),
        "{samples}"
    );
    assert!(!samples.contains("[audit: passed]"), "{samples}");
}

#[test]
fn the_lab_in_audit_mode_passes_everything_and_shows_what_would_drop() {
    if !fwd_lab::can_run_as_root(
        "the_lab_in_audit_mode_passes_everything_and_shows_what_would_drop",
    ) {
        return;
    }
    let text = lab("fwd-t-laba", 3, &["--audit"]);
    let lines = last_picture(&text);
    let picture = lines.join("\n");
    assert!(lines[0].contains("AUDIT mode"), "{picture}");
    let denied = lines
        .iter()
        .find(|l| l.contains("deny: unsolicited inbound"))
        .unwrap();
    let traffic = denied.split("  ").next().unwrap();
    let (delivered, blocked) = counts(&lines, traffic);
    assert!(delivered >= 1 && blocked == 0, "{denied}");
    assert!(picture.contains("audit_would_drop (ingress)"), "{picture}");
    assert!(picture.contains("[audit: passed]"), "{picture}");
}
