use std::{net::IpAddr, path::PathBuf};

use clap::Parser;
use ipnet::IpNet;

use super::{args::*, read::*, *};
use crate::policy::{Level, PortRange, Protocol, Remote, parse_remote};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    import: ImportArgs,
}

fn args(argv: &[&str]) -> ImportArgs {
    Cli::try_parse_from(std::iter::once("fwd-import").chain(argv.iter().copied()))
        .unwrap_or_else(|e| panic!("{e}"))
        .import
}

const TODAY: Date = Date {
    year: 2026,
    month: 5,
    day: 1,
};

fn import_bytes(argv: &[&str], file: &str, bytes: &[u8]) -> anyhow::Result<Imported> {
    let a = args(argv);
    let rule = RuleSettings::from_args(&a)?;
    import(&a, &rule, &Input::file(Path::new(file)), bytes, TODAY)
}

/// The networks of the generated file's single rule, after parsing it as a policy.
fn parsed_nets(text: &str) -> Vec<IpNet> {
    let policy = policy::parse_vendor_file(Path::new("out.toml"), text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(policy.rules.len(), 1);
    policy.rules[0]
        .remotes
        .iter()
        .flat_map(|r| match r {
            Remote::Nets(n) => n.clone(),
            other => panic!("unexpected remote {other:?}"),
        })
        .collect()
}

fn covered(nets: &[IpNet], addr: &str) -> bool {
    let addr: IpAddr = addr.parse().unwrap();
    nets.iter().any(|n| n.contains(&addr))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const TEXT_ARGS: &[&str] = &[
    "--vendor",
    "acme",
    "--vendor-name",
    "Acme \"Video\" \\ Co",
    "--service",
    "Media \"servers\"",
    "--protocol",
    "tcp,udp",
    "--ports",
    "10000-20000,443,443",
    "--level",
    "recommended",
    "--region",
    "global",
    "--source",
    "https://acme.example/ips.txt",
    "list.txt",
];

const TEXT_LIST: &str = "\
# Acme media servers, updated 2026-04-30
\u{20}
10.0.0.0/24
10.0.1.0/24   # adjacent to the line above: merges into 10.0.0.0/23
10.0.0.7      # inside 10.0.0.0/24 already

192.0.2.8-23
10.0.0.0/24
2001:db8::/33
\t2001:db8:8000::/33
198.51.100.0 255.255.255.0
";

#[test]
fn text_import_comments_blanks_duplicates_ranges_ipv6() {
    let out = import_bytes(TEXT_ARGS, "list.txt", TEXT_LIST.as_bytes()).unwrap();
    assert_eq!(
        out.summary,
        Summary {
            entries: 8,
            prefixes: 8,
            merged: 5,
            ipv4: 4,
            ipv6: 1
        }
    );
    let nets = parsed_nets(&out.text);
    assert_eq!(
        nets,
        [
            "10.0.0.0/23",
            "192.0.2.8/29",
            "192.0.2.16/29",
            "198.51.100.0/24",
            "2001:db8::/32"
        ]
        .map(net)
    );
    // Origins travel as comments beside each prefix.
    assert!(
        out.text.contains("\"10.0.0.0/23\",     # lines 3-5, 8\n"),
        "{}",
        out.text
    );
    assert!(out.text.contains("# line 7\n"));
    assert!(out.text.contains("# lines 9-10\n"));
    assert!(out.text.contains("# line 11\n"));

    let policy = policy::parse_vendor_file(Path::new("out.toml"), &out.text).unwrap();
    assert_eq!(policy.vendor.id, "acme");
    assert_eq!(policy.vendor.name, "Acme \"Video\" \\ Co");
    assert_eq!(
        policy.vendor.source.as_deref(),
        Some("https://acme.example/ips.txt")
    );
    assert_eq!(policy.vendor.reviewed.as_deref(), Some("2026-05-01"));
    let notes = policy.vendor.notes.unwrap();
    assert!(notes.contains("--format text"), "{notes}");
    assert!(notes.contains("list.txt"), "{notes}");
    assert!(
        notes.contains(&format!("{} bytes", TEXT_LIST.len())),
        "{notes}"
    );
    assert!(notes.contains("8 entries read"), "{notes}");
    let rule = &policy.rules[0];
    assert_eq!(rule.id, "imported");
    assert_eq!(rule.service, "Media \"servers\"");
    assert_eq!(rule.level, Level::Recommended);
    assert_eq!(rule.region.as_deref(), Some("global"));
    assert_eq!(rule.protocols, [Protocol::Tcp, Protocol::Udp]);
    assert_eq!(
        rule.ports,
        [
            PortRange { lo: 443, hi: 443 },
            PortRange {
                lo: 10000,
                hi: 20000
            }
        ]
    );
    assert!(
        rule.notes
            .as_deref()
            .unwrap()
            .contains("https://acme.example/ips.txt")
    );
}

#[test]
fn round_trip_covers_exactly_the_input() {
    let out = import_bytes(TEXT_ARGS, "list.txt", TEXT_LIST.as_bytes()).unwrap();
    let nets = parsed_nets(&out.text);
    for inside in [
        "10.0.0.0",
        "10.0.0.7",
        "10.0.1.255",
        "192.0.2.8",
        "192.0.2.23",
        "198.51.100.77",
        "2001:db8::1",
        "2001:db8:ffff:ffff::1",
    ] {
        assert!(covered(&nets, inside), "{inside} should be covered");
    }
    for outside in [
        "9.255.255.255",
        "10.0.2.0",
        "192.0.2.7",
        "192.0.2.24",
        "198.51.101.0",
        "2001:db9::",
        "2001:db7:ffff::1",
    ] {
        assert!(!covered(&nets, outside), "{outside} should not be covered");
    }
    // The same address set as the input, entry by entry.
    let mut input: Vec<IpNet> = Vec::new();
    for line in TEXT_LIST.lines() {
        let entry = line.split('#').next().unwrap().trim();
        if let Ok(Remote::Nets(n)) = parse_remote(entry) {
            input.extend(n);
        }
    }
    assert_eq!(IpNet::aggregate(&input), nets);
    // Merged prefixes are disjoint.
    for (i, a) in nets.iter().enumerate() {
        for b in &nets[i + 1..] {
            assert!(!a.contains(b) && !b.contains(a), "{a} overlaps {b}");
        }
    }
}

#[test]
fn bad_line_is_located() {
    let list = "10.0.0.0/24\n# fine\n  10.0.0.1/24  # host bits\n";
    let err = import_bytes(TEXT_ARGS, "list.txt", list.as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "list.txt:3:3: `10.0.0.1/24` has host bits set; the network is 10.0.0.0/24"
    );

    let err = import_bytes(TEXT_ARGS, "list.txt", b"1.2.3.4\n\n1.2.3.400\n").unwrap_err();
    assert!(err.to_string().starts_with("list.txt:3:1: "), "{err}");

    let err = import_bytes(TEXT_ARGS, "list.txt", b"1.2.3.4\n*.example.com\n").unwrap_err();
    assert!(err.to_string().starts_with("list.txt:2:1: "), "{err}");
    assert!(err.to_string().contains("domain name"), "{err}");

    let err = import_bytes(TEXT_ARGS, "list.txt", b"any\n").unwrap_err();
    assert!(err.to_string().starts_with("list.txt:1:1: "), "{err}");

    let err = import_bytes(TEXT_ARGS, "list.txt", b"1.2.3.4\n5.6.\xff\n").unwrap_err();
    assert!(err.to_string().starts_with("list.txt:2:5: "), "{err}");
    assert!(err.to_string().contains("UTF-8"), "{err}");

    let err = import_bytes(TEXT_ARGS, "list.txt", AWS_JSON.as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("list.txt:1:1: "), "{err}");
    assert!(err.to_string().contains("--format aws"), "{err}");

    let err = import_bytes(TEXT_ARGS, "list.txt", b"# nothing here\n\n").unwrap_err();
    assert!(err.to_string().contains("no prefixes"), "{err}");
}

const AWS_JSON: &str = r#"{
  "syncToken": "1777000000",
  "createDate": "2026-04-30-12-00-00",
  "prefixes": [
{"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON", "network_border_group": "ap-northeast-2"},
{"ip_prefix": "15.230.38.0/24", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
{"ip_prefix": "15.230.38.0/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
{"ip_prefix": "15.230.39.0/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
{"ip_prefix": "52.94.76.0/22", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"},
{"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"}
  ],
  "ipv6_prefixes": [
{"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"},
{"ipv6_prefix": "2600:1f18::/33", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
{"ipv6_prefix": "2600:9000::/28", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"}
  ]
}
"#;

fn aws_args(extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "--format",
        "aws",
        "--vendor",
        "aws",
        "--service",
        "EC2",
        "--ports",
        "443",
    ]
    .iter()
    .map(std::string::ToString::to_string)
    .collect();
    v.extend(extra.iter().map(std::string::ToString::to_string));
    v.push("ip-ranges.json".into());
    v
}

fn import_aws(extra: &[&str], json: &str) -> anyhow::Result<Imported> {
    let argv = aws_args(extra);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    import_bytes(&argv, "ip-ranges.json", json.as_bytes())
}

#[test]
fn aws_import_filters_by_service_and_region() {
    let out = import_aws(
        &["--aws-service", "ec2", "--aws-region", "us-east-1"],
        AWS_JSON,
    )
    .unwrap();
    let nets = parsed_nets(&out.text);
    assert_eq!(nets, ["15.230.38.0/23", "2600:1f18::/33"].map(net));
    assert_eq!(
        out.summary,
        Summary {
            entries: 3,
            prefixes: 3,
            merged: 2,
            ipv4: 1,
            ipv6: 1
        }
    );
    let policy = policy::parse_vendor_file(Path::new("aws.toml"), &out.text).unwrap();
    let notes = policy.vendor.notes.unwrap();
    for part in [
        "--format aws",
        "syncToken 1777000000",
        "createDate 2026-04-30-12-00-00",
        "kept service ec2 in region us-east-1: 3 of the file's 9 prefixes",
    ] {
        assert!(notes.contains(part), "{part:?} missing from {notes}");
    }
    assert!(out.text.contains("# EC2 us-east-1\n"), "{}", out.text);

    // Every region, two services.
    let out = import_aws(&["--aws-service", "EC2,CLOUDFRONT"], AWS_JSON).unwrap();
    let nets = parsed_nets(&out.text);
    assert_eq!(
        nets,
        [
            "13.32.0.0/15",
            "15.230.38.0/23",
            "52.94.76.0/22",
            "2600:1f14::/35",
            "2600:1f18::/33",
            "2600:9000::/28"
        ]
        .map(net)
    );
    assert!(covered(&nets, "13.33.255.255"));
    assert!(!covered(&nets, "3.5.140.1"));
    assert!(!covered(&nets, "15.230.40.0"));
    assert!(covered(&nets, "2600:9000::1"));
    assert!(!covered(&nets, "2600:1f14:2000::"));
}

#[test]
fn aws_errors_are_clear() {
    let err = import_aws(&["--aws-service", "EC2"], "\n10.0.0.0/8\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("ip-ranges.json:2:1: "), "{msg}");
    assert!(msg.contains("`10.0.0.0/8`"), "{msg}");
    assert!(msg.contains("not JSON"), "{msg}");
    assert!(msg.contains("--format text"), "{msg}");

    let err = import_aws(
        &["--aws-service", "EC2"],
        r#"{"syncToken": "1", "createDate": "x"}"#,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not AWS ip-ranges.json"), "{msg}");
    assert!(msg.contains("missing field `prefixes`"), "{msg}");
    assert!(msg.contains(AWS_URL), "{msg}");

    let json = r#"{"syncToken": "1", "createDate": "x",
  "prefixes": [{"region": "us-east-1", "service": "EC2"}]}"#;
    let msg = import_aws(&["--aws-service", "EC2"], json)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("ip-ranges.json:2:"), "{msg}");
    assert!(msg.contains("missing field `ip_prefix`"), "{msg}");

    // Syntax errors inside the object are located too.
    let msg = import_aws(&["--aws-service", "EC2"], "{\n  \"syncToken\": 1,,\n}")
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("ip-ranges.json:2:"), "{msg}");
    assert!(msg.contains("not "), "{msg}");

    let msg = import_aws(&["--aws-service", "EC2"], "")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("the input is empty"), "{msg}");

    let msg = import_aws(&["--aws-service", "LAMBDA"], AWS_JSON)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no prefix has service `LAMBDA`"), "{msg}");
    assert!(msg.contains("AMAZON, CLOUDFRONT, EC2"), "{msg}");

    let msg = import_aws(
        &["--aws-service", "EC2", "--aws-region", "mars-1"],
        AWS_JSON,
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("region `mars-1`"), "{msg}");
    assert!(msg.contains("us-east-1, us-west-2"), "{msg}");

    let msg = import_aws(
        &[
            "--aws-service",
            "EC2,CLOUDFRONT",
            "--aws-region",
            "us-east-1",
        ],
        AWS_JSON,
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains(
            "service `CLOUDFRONT` has no prefix in region us-east-1; its regions are GLOBAL"
        ),
        "{msg}"
    );

    let bad = AWS_JSON.replace("15.230.39.0/24", "15.230.39.1/24");
    let msg = import_aws(&["--aws-service", "EC2"], &bad)
        .unwrap_err()
        .to_string();
    assert!(msg.starts_with("ip-ranges.json:8:"), "{msg}");
    assert!(msg.contains("host bits"), "{msg}");

    let msg = import_aws(&[], AWS_JSON).unwrap_err().to_string();
    assert!(msg.contains("needs --aws-service"), "{msg}");
}

#[test]
fn option_errors_teach() {
    let check = |argv: &[&str], expected: &str| {
        let err = RuleSettings::from_args(&args(argv))
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err:?} lacks {expected:?}");
    };
    check(
        &["--vendor", "a", "--service", "s", "x"],
        "--ports is required",
    );
    check(
        &[
            "--vendor",
            "Acme Video",
            "--service",
            "s",
            "--ports",
            "443",
            "x",
        ],
        "e.g. `acme-video`",
    );
    check(
        &[
            "--vendor",
            "a",
            "--rule",
            "R",
            "--service",
            "s",
            "--ports",
            "443",
            "x",
        ],
        "--rule `R`",
    );
    check(
        &[
            "--vendor",
            "a",
            "--service",
            "s",
            "--protocol",
            "icmp",
            "--ports",
            "1",
            "x",
        ],
        "drop --ports",
    );
    check(
        &[
            "--vendor",
            "a",
            "--service",
            "s",
            "--protocol",
            "tcp,any",
            "x",
        ],
        "give it alone",
    );
    check(
        &[
            "--vendor",
            "a",
            "--service",
            "s",
            "--protocol",
            "udp,icmp",
            "--ports",
            "1",
            "x",
        ],
        "one rule cannot be both",
    );
    check(
        &["--vendor", "a", "--service", "s", "--ports", "443,,80", "x"],
        "empty item",
    );
    check(
        &["--vendor", "a", "--service", "s", "--ports", "0", "x"],
        "outside 1-65535",
    );
    check(
        &[
            "--vendor",
            "a",
            "--service",
            "s",
            "--ports",
            "1",
            "--aws-service",
            "EC2",
            "x",
        ],
        "with --format aws",
    );
    // icmp alone takes no ports and yields a valid file.
    let out = import_bytes(
        &[
            "--vendor",
            "a",
            "--service",
            "Ping",
            "--protocol",
            "icmp",
            "x",
        ],
        "x",
        b"192.0.2.1\n",
    )
    .unwrap();
    assert_eq!(parsed_nets(&out.text), [net("192.0.2.1/32")]);
}

/// A fresh directory for one test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fwd-import-test-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn output_file_is_atomic_and_not_overwritten_without_force() {
    let dir = temp_dir("output");
    let input = dir.join("list.txt");
    fs::write(&input, "192.0.2.0/24\n").unwrap();
    let out = dir.join("acme.toml");
    let argv = |force: bool| {
        let mut v = vec![
            "--vendor".to_string(),
            "acme".into(),
            "--service".into(),
            "Media".into(),
            "--ports".into(),
            "443".into(),
            "-o".into(),
            out.display().to_string(),
            input.display().to_string(),
        ];
        if force {
            v.push("--force".into());
        }
        v
    };
    let run_with = |force: bool| {
        let v = argv(force);
        let v: Vec<&str> = v.iter().map(String::as_str).collect();
        run(&args(&v))
    };

    // A new file is written whole.
    run_with(false).unwrap();
    let first = fs::read_to_string(&out).unwrap();
    assert_eq!(parsed_nets(&first), [net("192.0.2.0/24")]);
    assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

    // Without --force an existing file stays as it is.
    fs::write(&out, "old contents\n").unwrap();
    let err = run_with(false).unwrap_err().to_string();
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "old contents\n");
    assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

    // The write path itself refuses too (a file created after the early check).
    let err = write_atomically(&out, b"new\n", false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--force"), "{err}");
    assert_eq!(fs::read_to_string(&out).unwrap(), "old contents\n");
    assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

    // With --force it is replaced, and no temporary file remains.
    run_with(true).unwrap();
    let replaced = fs::read_to_string(&out).unwrap();
    assert_eq!(parsed_nets(&replaced), [net("192.0.2.0/24")]);
    assert!(replaced.contains(" --force "), "{replaced}");
    assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

    // A bad list writes nothing at all.
    fs::remove_file(&out).unwrap();
    fs::write(&input, "192.0.2.0/24\nnot an address\n").unwrap();
    let err = run_with(false).unwrap_err().to_string();
    assert!(err.contains("list.txt:2:1:"), "{err}");
    assert_eq!(listing(&dir), ["list.txt"]);

    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn header_command_regenerates_the_file() {
    let out = import_bytes(TEXT_ARGS, "list.txt", TEXT_LIST.as_bytes()).unwrap();
    let command = out
        .text
        .lines()
        .find_map(|l| l.strip_prefix("#   "))
        .unwrap();
    assert!(
        command.starts_with("fwd import --format text "),
        "{command}"
    );
    // Parse the command back (a minimal POSIX single-quote reader) and compare options.
    let mut words: Vec<String> = Vec::new();
    let mut chars = command.chars().peekable();
    while chars.peek().is_some() {
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                ' ' => break,
                '\'' => word.extend(chars.by_ref().take_while(|c| *c != '\'')),
                '\\' => word.extend(chars.next()),
                c => word.push(c),
            }
        }
        words.push(word);
    }
    let again = Cli::try_parse_from(words.iter().skip(1)).unwrap().import;
    let original = args(TEXT_ARGS);
    assert_eq!(format!("{again:?}"), format!("{original:?}"));
}

#[test]
fn help_renders() {
    use clap::CommandFactory;
    let help = Cli::command().render_long_help().to_string();
    for needle in ["--aws-service", "--ports", "Examples:", "--force"] {
        assert!(help.contains(needle), "{needle} missing from help");
    }
    Cli::command().debug_assert();
}
