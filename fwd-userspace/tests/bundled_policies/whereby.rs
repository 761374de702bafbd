//! Whereby (whereby.toml): domains only

use super::*;

#[test]
fn whereby_names_domains_only() {
    let set = policies();
    let whereby = set
        .vendors
        .iter()
        .find(|v| v.vendor.id == "whereby")
        .unwrap();
    for rule in &whereby.rules {
        assert_eq!(rule.direction, Direction::Egress, "whereby/{}", rule.id);
        assert!(
            rule.remotes
                .iter()
                .all(|r| matches!(r, Remote::Host(_) | Remote::Wildcard(_))),
            "whereby/{} lists addresses",
            rule.id
        );
    }
    let c = build(&widest(TODAY));
    assert_eq!(
        c.image
            .rules
            .iter()
            .filter(|r| r.vendor == "whereby")
            .count(),
        5
    );
    let needs_dns = c
        .warnings
        .iter()
        .filter(|w| matches!(w, Warning::NeedsDns { rule, .. } if rule.starts_with("whereby/")))
        .count();
    assert_eq!(needs_dns, 5);
    assert!(!owning_rules(&c).iter().any(|r| r.starts_with("whereby/")));
    let ev = Evaluator::new(&c.image);
    // Whereby's ports to unrelated addresses belong to other vendors' any-address rules.
    expect_allow(&ev, tcp(UNLISTED, 443), "pexip/general-video-tcp");
    expect_allow(&ev, udp(UNLISTED, 443), "vsee/p2p-udp");
    expect_allow(&ev, udp(UNLISTED, 2000), "vsee/p2p-udp");
}

#[test]
fn whereby_alone_allows_nothing_without_dns() {
    let c = build(&only(TODAY, &["whereby"]));
    assert_eq!(c.image.rules.len(), 5);
    assert!(c.image.dst4.is_empty() && c.image.dst6.is_empty());
    let ev = Evaluator::new(&c.image);
    for remote in [UNLISTED, UNLISTED6] {
        assert_eq!(ev.evaluate(&tcp(remote, 443)), Verdict::NoAddressMatch);
        expect_deny(&ev, udp(remote, 443));
        expect_deny(&ev, udp(remote, 1024));
        expect_deny(&ev, udp(remote, 65535));
    }
}
