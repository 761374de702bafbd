//! Golden tests of the bundled vendor policies (`policies/`): what the compiled tables allow,
//! which rule allows it, and what they must not allow.
//!
//! Under the widest selection some rules open ports to every address (Pexip's "general"
//! profile: tcp 80, 389, 443, 1720, 5060, 5061, udp 123, 162, 10000-65535; the SIP provider's
//! STUN: tcp/udp 3478; VSee's optional peer-to-peer route: udp 1-65535 out, and in from remotes
//! with a live flow). Probes that must be
//! denied therefore use ports outside those, or a narrower selection.

mod pexip;
mod securevideo;
mod vsee;
mod webrtc;
mod whereby;
mod zoom;

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use fwd::{
    compile::{Compiled, Evaluator, Probe, Selection, Verdict, Warning, compile},
    policy::{self, Date, Direction, Level, PolicySet, Remote},
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// The day the bundled files were last reviewed.
const TODAY: &str = "2026-12-01";
/// An address no vendor lists (TEST-NET-3).
const UNLISTED: &str = "203.0.113.9";
const UNLISTED6: &str = "2001:db8::9";

fn policies() -> PolicySet {
    policy::load_dir(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies"
    )))
    .expect("the bundled policies load")
}

fn date(text: &str) -> Date {
    Date::parse(text).expect("a valid date")
}

fn widest(today: &str) -> Selection {
    Selection::widest(date(today))
}

/// Only `vendors`, every level, profile and region.
fn only(today: &str, vendors: &[&str]) -> Selection {
    Selection {
        vendors: Some(
            vendors
                .iter()
                .map(std::string::ToString::to_string)
                .collect(),
        ),
        ..widest(today)
    }
}

fn build(selection: &Selection) -> Compiled {
    compile(&policies(), selection).expect("the bundled policies compile")
}

fn addr(text: &str) -> IpAddr {
    text.parse().expect("a valid address")
}

fn egress(protocol: u8, remote: &str, port: u16) -> Probe {
    Probe {
        direction: Direction::Egress,
        protocol,
        remote: addr(remote),
        port,
        local_port: 0,
    }
}

fn tcp(remote: &str, port: u16) -> Probe {
    egress(TCP, remote, port)
}

fn udp(remote: &str, port: u16) -> Probe {
    egress(UDP, remote, port)
}

/// An ingress packet from `remote:remote_port` to `local_port` on the protected host.
fn ingress(protocol: u8, remote: &str, remote_port: u16, local_port: u16) -> Probe {
    Probe {
        direction: Direction::Ingress,
        protocol,
        remote: addr(remote),
        port: remote_port,
        local_port,
    }
}

/// "vendor/rule" of an allowing verdict.
fn allowed_by(ev: &Evaluator<'_>, probe: &Probe) -> Option<String> {
    match ev.evaluate(probe) {
        Verdict::Allow { rule } => {
            let info = ev.rule(rule).expect("the verdict's rule is in the image");
            Some(info.rule_ref().to_string())
        }
        Verdict::NoAddressMatch | Verdict::NoPortMatch { .. } => None,
    }
}

/// "vendor/rule" allowing `probe` sent to a host called `name` (what `fwd explain` says of a
/// hostname).
fn allowed_name(ev: &Evaluator<'_>, name: &str, probe: &Probe) -> Option<String> {
    match ev.evaluate_name(name, probe) {
        Verdict::Allow { rule } => {
            let info = ev.rule(rule).expect("the verdict's rule is in the image");
            Some(info.rule_ref().to_string())
        }
        Verdict::NoAddressMatch | Verdict::NoPortMatch { .. } => None,
    }
}

#[track_caller]
fn expect_allow(ev: &Evaluator<'_>, probe: Probe, expected: &str) {
    match ev.evaluate(&probe) {
        Verdict::Allow { rule } => {
            let info = ev.rule(rule).expect("the verdict's rule is in the image");
            assert_eq!(
                info.rule_ref().to_string(),
                expected,
                "{probe:?} is allowed, but by another rule"
            );
            assert_eq!(info.direction, probe.direction, "{probe:?}");
        }
        other => panic!("{probe:?}: expected allow by {expected}, got {other:?}"),
    }
}

#[track_caller]
fn expect_deny(ev: &Evaluator<'_>, probe: Probe) {
    if let Some(rule) = allowed_by(ev, &probe) {
        panic!("{probe:?}: expected deny, but {rule} allows it");
    }
}

/// Whether `vendor/rule` was compiled, left pending or expired under `selection`.
fn state(selection: &Selection, name: &str) -> &'static str {
    let c = build(selection);
    if c.image
        .rules
        .iter()
        .any(|r| r.rule_ref().to_string() == name)
    {
        "compiled"
    } else if c.pending.iter().any(|d| d.rule == name) {
        "pending"
    } else if c.expired.iter().any(|d| d.rule == name) {
        "expired"
    } else {
        "absent"
    }
}

/// "vendor/rule" of every rule that owns at least one port entry (so can ever allow).
fn owning_rules(c: &Compiled) -> BTreeSet<String> {
    c.image
        .ports
        .iter()
        .map(|e| {
            let r = c.image.rule(e.verdict.rule).expect("a compiled rule");
            r.rule_ref().to_string()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The directory as a whole
// ---------------------------------------------------------------------------------------

#[test]
fn every_bundled_vendor_file_loads() {
    let set = policies();
    let ids: Vec<&str> = set.vendors.iter().map(|v| v.vendor.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "one-click-twilio",
            "pexip",
            "securevideo",
            "vsee",
            "webrtc-sip-wss",
            "whereby",
            "zoom"
        ]
    );
    let counts: Vec<usize> = set.vendors.iter().map(|v| v.rules.len()).collect();
    assert_eq!(counts, [8, 18, 3, 18, 3, 5, 30]);
    for v in &set.vendors {
        assert_eq!(v.vendor.reviewed.as_deref(), Some(TODAY), "{}", v.vendor.id);
        assert!(
            v.vendor
                .source
                .as_deref()
                .is_some_and(|s| s.starts_with("vendor-docs/")),
            "{}",
            v.vendor.id
        );
        for r in &v.rules {
            assert!(
                r.id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}/{}: rule ids are lowercase-with-dashes",
                v.vendor.id,
                r.id
            );
        }
    }
}

#[test]
fn widest_policy_has_no_duplicate_or_shadowed_rules() {
    let c = build(&widest(TODAY));
    let bad: Vec<String> = c
        .warnings
        .iter()
        .filter(|w| matches!(w, Warning::Duplicate { .. } | Warning::Shadowed { .. }))
        .map(std::string::ToString::to_string)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn only_the_documented_rules_open_ports_to_every_address() {
    let c = build(&widest(TODAY));
    let any: BTreeSet<&str> = c
        .warnings
        .iter()
        .filter_map(|w| match w {
            Warning::AnyRemote { rule, .. } => Some(rule.as_str()),
            _ => None,
        })
        .collect();
    let expected: BTreeSet<&str> = [
        "pexip/general-video-tcp",
        "pexip/general-video-udp",
        "pexip/general-provisioning",
        "pexip/general-signaling",
        "pexip/general-media",
        "pexip/general-ntp",
        "pexip/general-snmp-traps",
        "webrtc-sip-wss/stun",
        "vsee/p2p-udp",
        "vsee/p2p-udp-inbound",
    ]
    .into_iter()
    .collect();
    assert_eq!(any, expected);
}

#[test]
fn dated_rules_at_review_time() {
    let c = build(&widest(TODAY));
    assert!(c.pending.is_empty(), "{:?}", c.pending);
    let vsee: Vec<(&str, String)> = c
        .expired
        .iter()
        .filter(|d| d.rule.starts_with("vsee/"))
        .map(|d| (d.rule.as_str(), d.date.to_string()))
        .collect();
    assert_eq!(
        vsee,
        [
            ("vsee/simplified-video-bridge-removed", "2021-02-15".into()),
            (
                "vsee/detailed-turn-international-removed",
                "2021-02-15".into()
            ),
        ]
    );
    // Zoom's history (zoom.rs has the details): only its removed prefixes are expired.
    let zoom = c
        .expired
        .iter()
        .filter(|d| d.rule.starts_with("zoom/"))
        .count();
    assert_eq!(zoom, 20);
    assert_eq!(c.expired.len(), zoom + vsee.len());
    // Every other rule of every vendor is compiled.
    let total: usize = policies().vendors.iter().map(|v| v.rules.len()).sum();
    assert_eq!(c.image.rules.len(), total - c.expired.len());
}

#[test]
fn recovered_rules_name_their_source_and_confidence() {
    let set = policies();
    let mut recovered = 0;
    for v in &set.vendors {
        for r in &v.rules {
            let notes = r.notes.as_deref().unwrap_or_default();
            if notes.contains("recovered.md") || notes.contains("Recovered") {
                recovered += 1;
                assert!(
                    notes.contains("recovered.md") && states_confidence(notes),
                    "{}/{}: a recovered rule names recovered.md and a confidence (A, B or C): {notes}",
                    v.vendor.id,
                    r.id
                );
            }
        }
    }
    // (Every vendor's `source` stays its captured document: every_bundled_vendor_file_loads.)
    // SecureVideo's and One-Click's rules all rest on recovered facts.
    for id in ["securevideo", "one-click-twilio"] {
        let v = set.vendors.iter().find(|v| v.vendor.id == id).unwrap();
        for r in &v.rules {
            assert!(
                r.notes
                    .as_deref()
                    .is_some_and(|n| n.contains("recovered.md")),
                "{id}/{}",
                r.id
            );
        }
    }
    assert!(recovered >= 40, "{recovered}");
}

/// Whether `notes` states a confidence: "confidence A", "confidence B/C", ...
fn states_confidence(notes: &str) -> bool {
    notes.match_indices("confidence ").any(|(i, m)| {
        notes[i + m.len()..]
            .chars()
            .next()
            .is_some_and(|c| matches!(c, 'A' | 'B' | 'C'))
    })
}

#[test]
fn every_any_address_rule_is_egress_or_related() {
    // An any-address ingress rule that needs no live flow would admit unsolicited packets
    // from the whole internet.
    let set = policies();
    for v in &set.vendors {
        for r in &v.rules {
            if r.remotes.contains(&Remote::Any) && r.direction == Direction::Ingress {
                assert!(
                    r.related,
                    "{}/{} admits any remote unsolicited",
                    v.vendor.id, r.id
                );
            }
        }
    }
    // A site that selects mandatory and recommended rules does not open all UDP.
    let c = build(&Selection {
        levels: Some(vec![Level::Mandatory, Level::Recommended]),
        ..widest(TODAY)
    });
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6] {
        for port in [53, 1853, 5000, 9999] {
            expect_deny(&ev, udp(remote, port));
            expect_deny(&ev, ingress(UDP, remote, port, 40000));
        }
    }
}

#[test]
fn unlisted_addresses_and_ports_are_denied() {
    let c = build(&widest(TODAY));
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6] {
        for port in [22, 25, 8080, 8443, 8801, 4443, 5349] {
            expect_deny(&ev, tcp(remote, port));
        }
        expect_deny(&ev, ingress(TCP, remote, 40000, 443));
        expect_deny(&ev, ingress(TCP, remote, 443, 40000));
    }
    expect_deny(&ev, egress(ICMP, UNLISTED, 0));
}
