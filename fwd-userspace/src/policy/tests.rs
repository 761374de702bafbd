use std::path::Path;

use ipnet::IpNet;

use super::*;

fn parse(text: &str) -> Result<VendorPolicy, PolicyError> {
    parse_vendor_file(Path::new("v.toml"), text)
}

fn nets(list: &[&str]) -> Remote {
    Remote::Nets(list.iter().map(|s| s.parse::<IpNet>().unwrap()).collect())
}

const HEADER: &str = "[vendor]\nid = \"acme\"\nname = \"Acme\"\n";

#[test]
fn remote_forms() {
    assert_eq!(parse_remote("any").unwrap(), Remote::Any);
    assert_eq!(
        parse_remote("52.71.32.188").unwrap(),
        nets(&["52.71.32.188/32"])
    );
    assert_eq!(parse_remote("10.0.0.0/8").unwrap(), nets(&["10.0.0.0/8"]));
    assert_eq!(
        parse_remote("2407:30c0::/32").unwrap(),
        nets(&["2407:30c0::/32"])
    );
    assert_eq!(
        parse_remote("176.121.88.0 255.255.248.0").unwrap(),
        nets(&["176.121.88.0/21"])
    );
    assert_eq!(
        parse_remote("218.83.160.8-23").unwrap(),
        nets(&["218.83.160.8/29", "218.83.160.16/29"])
    );
    assert_eq!(
        parse_remote("112.65.213.227-238").unwrap(),
        nets(&[
            "112.65.213.227/32",
            "112.65.213.228/30",
            "112.65.213.232/30",
            "112.65.213.236/31",
            "112.65.213.238/32"
        ])
    );
    assert_eq!(
        parse_remote("10.0.0.255-10.0.1.0").unwrap(),
        nets(&["10.0.0.255/32", "10.0.1.0/32"])
    );
    assert_eq!(
        parse_remote("2001:db8::-2001:db8::3").unwrap(),
        nets(&["2001:db8::/126"])
    );
    assert_eq!(
        parse_remote("*.sfu.whereby.com").unwrap(),
        Remote::Wildcard("sfu.whereby.com".into())
    );
    assert_eq!(
        parse_remote("Meet.VMR.vc").unwrap(),
        Remote::Host("meet.vmr.vc".into())
    );
}

#[test]
fn remote_errors_explain() {
    for (text, needle) in [
        ("10.0.0.1/8", "host bits"),
        ("176.121.88.0 255.0.255.0", "not contiguous"),
        ("176.121.88.1 255.255.248.0", "host bits"),
        ("218.83.160.23-8", "backwards"),
        ("10.0.0.1-2001:db8::1", "mixes"),
        ("10.0.0.300", "not an address"),
        ("10.0.0.1-300", "last octet"),
        ("localhost", "not an address"),
        ("*.", "not an address"),
    ] {
        let err = parse_remote(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn port_ranges() {
    assert_eq!(
        PortRange::parse("443").unwrap(),
        PortRange { lo: 443, hi: 443 }
    );
    assert_eq!(
        PortRange::parse("10000 - 20000").unwrap(),
        PortRange {
            lo: 10000,
            hi: 20000
        }
    );
    assert!(PortRange::parse("0").unwrap_err().contains("outside"));
    assert!(PortRange::parse("70000").unwrap_err().contains("outside"));
    assert!(PortRange::parse("20-10").unwrap_err().contains("backwards"));
    assert!(PortRange::parse("http").unwrap_err().contains("not a port"));
}

#[test]
fn a_full_rule() {
    let p = parse(&format!(
        "{HEADER}\n[[rule]]\nid = \"media\"\nservice = \"Media\"\nlevel = \"recommended\"\n\
         protocol = [\"udp\", \"tcp\"]\nports = [10000, \"20000-20010\"]\n\
         remote = [\"176.121.88.0 255.255.248.0\", \"meet.vmr.vc\"]\n"
    ))
    .unwrap();
    let r = &p.rules[0];
    assert_eq!(r.id, "media");
    assert_eq!(r.level, Level::Recommended);
    assert_eq!(r.direction, Direction::Egress);
    assert_eq!(r.protocols, vec![Protocol::Udp, Protocol::Tcp]);
    assert_eq!(
        r.ports,
        vec![
            PortRange {
                lo: 10000,
                hi: 10000
            },
            PortRange {
                lo: 20000,
                hi: 20010
            }
        ]
    );
    assert_eq!(r.location.line, 5);
    assert_eq!(r.remotes[1], Remote::Host("meet.vmr.vc".into()));
}

fn err(text: &str) -> String {
    parse(&format!("{HEADER}{text}")).unwrap_err().to_string()
}

#[test]
fn errors_carry_file_line_col() {
    let e = err(
        "[[rule]]\nid = \"a\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [443]\nremote = [\"10.0.0.1/8\"]\n",
    );
    assert!(e.starts_with("v.toml:9:11: "), "{e}");
    assert!(e.contains("host bits"), "{e}");

    let e = err(
        "[[rule]]\nid = \"a\"\nservice = \"s\"\nprotocol = \"sctp\"\nports = [1]\nremote = \"any\"\n",
    );
    assert!(e.starts_with("v.toml:7:12: unknown protocol `sctp`"), "{e}");

    let e = err(
        "[[rule]]\nid = \"a\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [0]\nremote = \"any\"\n",
    );
    assert!(e.starts_with("v.toml:8:10: port 0 is outside"), "{e}");

    let e = err("[[rule]]\nid = \"a\"\nservice = \"s\"\nprotocol = \"tcp\"\nremote = \"any\"\n");
    assert!(e.contains("lists no ports"), "{e}");

    let e = err(
        "[[rule]]\nid = \"a\"\nservice = \"s\"\nprotocol = \"icmp\"\nports = [1]\nremote = \"any\"\n",
    );
    assert!(e.contains("icmp and \"any\" have none"), "{e}");

    let e = err(
        "[[rule]]\nid = \"a\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [1]\nremote = \"any\"\ncolour = \"red\"\n",
    );
    assert!(e.starts_with("v.toml:10:1: unknown field `colour`"), "{e}");

    let e = err(
        "[[rule]]\nid = \"a\"\nservice = \"s\"\nlevel = \"must\"\nprotocol = \"tcp\"\nports = [1]\nremote = \"any\"\n",
    );
    assert!(e.starts_with("v.toml:7:9: unknown level `must`"), "{e}");

    let rule = "[[rule]]\nid = \"a\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [1]\nremote = \"any\"\n";
    let e = err(&format!("{rule}{rule}"));
    assert!(
        e.starts_with("v.toml:10:1: rule id `a` is already used at line 4"),
        "{e}"
    );

    let e = parse("[vendor]\nid = \"Acme Corp\"\nname = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("v.toml:2:6: vendor id"), "{e}");

    let e = parse("[vendor\nid = 1").unwrap_err().to_string();
    assert!(e.starts_with("v.toml:1:"), "{e}");
}

#[test]
fn load_dir_rejects_duplicate_vendors_and_empty_dirs() {
    let dir = std::env::temp_dir().join(format!("fwd-policy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(matches!(load_dir(&dir), Err(LoadError::Empty { .. })));
    std::fs::write(dir.join("a.toml"), HEADER).unwrap();
    std::fs::write(dir.join("b.toml"), HEADER).unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let e = load_dir(&dir).unwrap_err().to_string();
    assert!(
        e.contains("b.toml:1:1: vendor id `acme` is also used by"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn rule(body: &str) -> Result<Rule, String> {
    parse(&format!(
        "{HEADER}[[rule]]\nid = \"a\"\nservice = \"s\"\n{body}"
    ))
    .map(|p| p.rules.into_iter().next().unwrap())
    .map_err(|e| e.to_string())
}

#[test]
fn ingress_rules() {
    let r = rule("direction = \"ingress\"\nprotocol = \"udp\"\nremote_ports = [\"10000-20000\"]\nrelated = true\nremote = \"52.71.32.188\"\n").unwrap();
    assert_eq!(
        (r.direction, r.port_side, r.related),
        (Direction::Ingress, PortSide::Remote, true)
    );
    assert_eq!(
        r.ports,
        vec![PortRange {
            lo: 10000,
            hi: 20000
        }]
    );
    let r = rule("direction = \"ingress\"\nprotocol = \"tcp\"\nlocal_ports = [443]\nremote = \"52.71.32.188\"\n").unwrap();
    assert_eq!((r.port_side, r.related), (PortSide::Local, false));

    let e = rule("direction = \"ingress\"\nprotocol = \"tcp\"\nports = [443]\nremote = \"any\"\n")
        .unwrap_err();
    assert!(
        e.starts_with("v.toml:9:9: ingress rules take `local_ports`"),
        "{e}"
    );
    let e = rule("direction = \"ingress\"\nprotocol = \"tcp\"\nlocal_ports = [443]\nremote_ports = [1]\nremote = \"any\"\n").unwrap_err();
    assert!(e.contains("either local_ports or remote_ports"), "{e}");
    let e = rule("protocol = \"tcp\"\nremote_ports = [443]\nremote = \"any\"\n").unwrap_err();
    assert!(e.contains("egress rules take `ports`"), "{e}");
    let e =
        rule("protocol = \"tcp\"\nports = [443]\nrelated = true\nremote = \"any\"\n").unwrap_err();
    assert!(
        e.starts_with("v.toml:9:11: `related` is for ingress"),
        "{e}"
    );
}

#[test]
fn validity_dates() {
    let r = rule("protocol = \"tcp\"\nports = [443]\nremote = \"any\"\nnot_before = 2026-12-01\nnot_after = 2027-01-31\n").unwrap();
    assert_eq!(
        r.not_before,
        Some(Date {
            year: 2026,
            month: 12,
            day: 1
        })
    );
    assert_eq!(r.not_after.unwrap().to_string(), "2027-01-31");
    let e = rule("protocol = \"tcp\"\nports = [443]\nremote = \"any\"\nnot_before = 2027-01-01\nnot_after = 2026-01-01\n").unwrap_err();
    assert!(
        e.contains("valid from 2027-01-01 but only until 2026-01-01"),
        "{e}"
    );
    let e = rule(
        "protocol = \"tcp\"\nports = [443]\nremote = \"any\"\nnot_after = 2026-01-01T10:00:00\n",
    )
    .unwrap_err();
    assert!(
        e.starts_with("v.toml:10:13: `not_after` takes a date without time"),
        "{e}"
    );
}

#[test]
fn civil_dates() {
    assert_eq!(Date::from_days_since_epoch(0).to_string(), "1970-01-01");
    assert_eq!(
        Date::from_days_since_epoch(20_413).to_string(),
        "2025-11-21"
    );
    assert_eq!(
        Date::from_days_since_epoch(11_016).to_string(),
        "2000-02-29"
    );
    assert_eq!(
        Date::parse("2026-11-21"),
        Some(Date {
            year: 2026,
            month: 11,
            day: 21
        })
    );
    assert_eq!(Date::parse("2026-13-01"), None);
}

#[test]
fn keywords_and_numbers_say_what_is_accepted_where() {
    let choices: &[Keyword<u8>] = &[("one", 1, ""), ("two", 2, "the second"), ("three", 3, "")];
    assert_eq!(keyword("two", "count", choices), Ok(2));
    assert_eq!(
        keyword("four", "count", choices).unwrap_err(),
        "unknown count `four`; use \"one\", \"two\" (the second) or \"three\""
    );
    assert_eq!(
        keyword("x", "mode", &[("only", 0u8, "")]).unwrap_err(),
        "unknown mode `x`; use \"only\""
    );
    #[derive(serde::Deserialize)]
    struct Raw {
        word: toml::Spanned<String>,
        n: toml::Spanned<i64>,
    }
    let text = "word = \"fiv\"\nn = 70000\n";
    let raw: Raw = toml::from_str(text).unwrap();
    let map = SourceMap::new(Path::new("t.toml"), text);
    let e = map.keyword(&raw.word, "count", choices).unwrap_err();
    assert!(
        e.to_string().starts_with("t.toml:1:8: unknown count `fiv`"),
        "{e}"
    );
    let e = map
        .number_in::<u16>(&raw.n, 1..=65_536, "`n` is a number")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.toml:2:5: `n` is a number, from 1 to 65536"
    );
    // In the range but not in the type: refused too.
    let e = map
        .number_in::<u16>(&raw.n, 1..=100_000, "`n` is a number")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.toml:2:5: `n` is a number, from 1 to 100000"
    );
    assert_eq!(
        map.number_in::<u32>(&raw.n, 1..=100_000, "n").unwrap(),
        70_000
    );
}

#[test]
fn site_files_override_and_mask_the_packages_by_name() {
    let root = tempfile::tempdir().unwrap();
    let (vendor, site) = (root.path().join("usr"), root.path().join("etc"));
    std::fs::create_dir_all(&vendor).unwrap();
    std::fs::create_dir_all(&site).unwrap();
    let file = |id: &str, port: u16| {
        format!(
            "[vendor]\nid = \"{id}\"\nname = \"{id}\"\n[[rule]]\nid = \"r\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [{port}]\nremote = \"192.0.2.1\"\n"
        )
    };
    std::fs::write(vendor.join("a.toml"), file("a", 1)).unwrap();
    std::fs::write(vendor.join("b.toml"), file("b", 2)).unwrap();
    std::fs::write(vendor.join("c.toml"), file("c", 3)).unwrap();
    // The site's b replaces the package's, an empty c masks it, d is the site's own.
    std::fs::write(site.join("b.toml"), file("b", 20)).unwrap();
    std::fs::write(site.join("c.toml"), "\n").unwrap();
    std::fs::write(site.join("d.toml"), file("d", 4)).unwrap();
    let set = load_layered(&vendor, &site).unwrap();
    let got: Vec<(String, String, u16)> = set
        .vendors
        .iter()
        .map(|v| {
            (
                v.vendor.id.clone(),
                v.file
                    .parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into(),
                v.rules[0].ports[0].lo,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a".into(), "usr".into(), 1),
            ("b".into(), "etc".into(), 20),
            ("d".into(), "etc".into(), 4)
        ]
    );
    // No package directory (yet): the site's files alone.
    let only = load_layered(&root.path().join("nowhere"), &site).unwrap();
    assert_eq!(only.vendors.len(), 2);
    // Everything masked: as empty as no files.
    std::fs::write(site.join("b.toml"), "").unwrap();
    std::fs::write(site.join("d.toml"), "").unwrap();
    std::fs::remove_file(vendor.join("a.toml")).unwrap();
    assert!(matches!(
        load_layered(&vendor, &site),
        Err(LoadError::Empty { .. })
    ));
}
