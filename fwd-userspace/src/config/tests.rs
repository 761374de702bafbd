use super::*;

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(Path::new("/etc/fwd/fwd.toml"), text).map_err(|e| e.to_string())
}

/// The builder the tests, the lab and the benches write their configs with says what
/// this parser reads.
#[test]
fn the_lab_site_config_builder_writes_what_this_reads() {
    let text = fwd_lab::SiteConfig::new("pol")
        .comment("a test")
        .action("audit")
        .pin_dir("/sys/fs/bpf/t")
        .state_dir("st")
        .control_socket("c.sock")
        .on_exit("detach")
        .top("exempt = [\"192.0.2.0/24\"]")
        .metrics("127.0.0.1:9")
        .watch(false)
        .gateway("lan0")
        .host("eth0")
        .tables("[select]\nlevels = [\"mandatory\"]")
        .render();
    let c = parse(&text).unwrap();
    assert_eq!(c.policy_dir, PathBuf::from("/etc/fwd/pol"));
    assert_eq!(c.action, Action::Audit);
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/t"));
    assert_eq!(c.state_dir, PathBuf::from("/etc/fwd/st"));
    assert_eq!(c.control_socket, PathBuf::from("/etc/fwd/c.sock"));
    assert_eq!(c.on_exit, OnExit::Detach);
    assert_eq!(c.exempt, vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]);
    assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:9");
    assert!(!c.watch.enabled);
    let modes: Vec<_> = c
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.mode))
        .collect();
    assert_eq!(
        modes,
        [
            ("lan0", InterfaceMode::Gateway),
            ("eth0", InterfaceMode::Host)
        ]
    );
    assert_eq!(c.levels, Some(vec![Level::Mandatory]));
}

#[test]
fn defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.policy_dir, PathBuf::from(DEFAULT_POLICY_DIR));
    assert_eq!(c.action, Action::Enforce);
    assert_eq!(c.metrics_listen.to_string(), DEFAULT_METRICS);
    assert!(c.interfaces.is_empty());
    assert_eq!(c.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(c.on_exit, OnExit::Keep);
    assert!(c.watch.enabled);
}

#[test]
fn lifecycle_keys() {
    let c = parse(
        "pin_dir = \"/sys/fs/bpf/fwd-lab\"\nstate_dir = \"state\"\non_exit = \"detach\"\n\
         [reload]\nwatch = false\ndebounce_ms = 200\n",
    )
    .unwrap();
    assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/fwd-lab"));
    assert_eq!(c.state_dir, PathBuf::from("/etc/fwd/state"));
    assert_eq!(c.on_exit, OnExit::Detach);
    assert!(
        !c.ephemeral_pins,
        "pins are persistent unless the config says otherwise"
    );
    assert!(parse("pins = \"ephemeral\"\n").unwrap().ephemeral_pins);
    let err = parse("pins = \"tmp\"\n").unwrap_err();
    assert!(
        err.starts_with("/etc/fwd/fwd.toml:1:8: unknown pins `tmp`; use \"persistent\"")
            && err.contains("\"ephemeral\""),
        "{err}"
    );
    assert_eq!(
        c.watch,
        Watch {
            enabled: false,
            debounce_ms: 200
        }
    );
    let err = parse("action = \"audit\"\non_exit = \"stop\"\n").unwrap_err();
    assert!(err.starts_with("/etc/fwd/fwd.toml:2:11:"), "{err}");
    assert!(err.contains("\"keep\""), "{err}");
    let err = parse("[reload]\ndebounce_ms = 0\n").unwrap_err();
    assert!(err.starts_with("/etc/fwd/fwd.toml:2:15:"), "{err}");
}

#[test]
fn dns_section() {
    let c = parse(
        "[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n\
         [dns]\nupstream = [\"192.0.2.53\", \"[2001:db8::53]:5353\"]\nlisten = [\"10.0.0.1\"]\n\
         min_ttl = 5\nmax_ttl = 600\nmax_addresses = 32\nsteer = true\n",
    )
    .unwrap();
    let dns = c.dns.unwrap();
    assert_eq!(dns.upstream[0].to_string(), "192.0.2.53:53");
    assert_eq!(dns.upstream[1].to_string(), "[2001:db8::53]:5353");
    assert_eq!(dns.listen[0].to_string(), "10.0.0.1:53");
    assert_eq!(dns.limits.min_ttl, 5);
    assert_eq!(dns.limits.max_ttl, 600);
    assert_eq!(dns.limits.max_addresses, 32);
    assert_eq!(dns.timeout_ms, DEFAULT_DNS_TIMEOUT_MS);
    assert!(dns.steer);
    assert!(parse("").unwrap().dns.is_none());
    let err = parse("[dns]\nlisten = [\"127.0.0.53\"]\n").unwrap_err();
    assert!(err.contains("needs `upstream`"), "{err}");
    let err = parse("[dns]\nupstream = [\"resolver\"]\n").unwrap_err();
    assert!(err.starts_with("/etc/fwd/fwd.toml:2:13:"), "{err}");
    let err =
        parse("[dns]\nupstream = [\"192.0.2.53\"]\nmin_ttl = 90\nmax_ttl = 60\n").unwrap_err();
    assert!(err.contains("min_ttl (90) is above max_ttl (60)"), "{err}");
    let err =
        parse("[dns]\nupstream = [\"192.0.2.53\"]\nlisten = [\"192.0.2.53:53\"]\n").unwrap_err();
    assert!(err.contains("ask itself"), "{err}");
    // A vendor selection keeps the steering rule.
    let c = parse(
        "[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n[select]\nvendors = [\"whereby\"]\n\
         [dns]\nupstream = [\"192.0.2.53\"]\nsteer = true\n",
    )
    .unwrap();
    let selection = c.selection(Date::parse("2026-11-21").unwrap());
    assert_eq!(
        selection.vendors,
        Some(vec!["whereby".to_string(), STEER_VENDOR.to_string()])
    );
    let err = parse("[dns]\nupstream = [\"192.0.2.53\"]\nsteer = true\n").unwrap_err();
    assert!(
        err.contains("needs an [[interface]] with mode = \"gateway\""),
        "{err}"
    );
}

#[test]
fn full() {
    let c = parse(
        "policy_dir = \"policies\"\naction = \"audit\"\nexempt = [\"192.0.2.0/24\", \"2001:db8::1\"]\n\
         [metrics]\nlisten = \"0.0.0.0:9000\"\n[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n",
    )
    .unwrap();
    assert_eq!(c.policy_dir, PathBuf::from("/etc/fwd/policies"));
    assert_eq!(c.action, Action::Audit);
    assert_eq!(c.exempt.len(), 2);
    assert_eq!(c.metrics_listen.port(), 9000);
    assert_eq!(c.interfaces[0].name, "lan0");
    assert_eq!(c.vendors, None);
}

#[test]
fn select() {
    let c = parse(
        "[select]\nvendors = [\"pexip\"]\nlevels = [\"mandatory\"]\nregions = [\"global\"]\n\
         profiles = { pexip = \"restricted\" }\n",
    )
    .unwrap();
    assert_eq!(c.vendors, Some(vec!["pexip".to_string()]));
    assert_eq!(c.levels, Some(vec![Level::Mandatory]));
    assert_eq!(
        c.profiles.get("pexip").map(String::as_str),
        Some("restricted")
    );
    let e = parse("[select]\nlevels = [\"urgent\"]\n").unwrap_err();
    assert!(
        e.starts_with("/etc/fwd/fwd.toml:2:11: unknown level `urgent`"),
        "{e}"
    );
}

#[test]
fn local_rules_join_the_policy_as_vendor_local() {
    let dir = std::env::temp_dir().join(format!("fwd-config-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pexip.toml"),
        "[vendor]\nid = \"pexip\"\nname = \"Pexip\"\n[[rule]]\nid = \"web\"\nservice = \"Web\"\n\
         protocol = \"tcp\"\nports = [443]\nremote = \"176.121.88.0/21\"\n",
    )
    .unwrap();
    let config = parse(
        "[select]\nvendors = [\"pexip\"]\n\n[[rule]]\nid = \"ehr\"\nservice = \"EHR backend\"\n\
         protocol = \"tcp\"\nports = [8443]\nremote = \"192.0.2.10\"\n",
    )
    .unwrap();
    assert_eq!(config.local_rules.len(), 1);
    assert_eq!(config.local_rules[0].location.line, 4);
    let set = config.policy_set_from(&dir).unwrap();
    assert_eq!(set.vendors.len(), 2);
    let local = &set.vendors[1];
    assert_eq!(local.vendor.id, LOCAL_VENDOR);
    assert_eq!(local.file, PathBuf::from("/etc/fwd/fwd.toml"));
    // `[select] vendors` does not drop the site's own rules.
    let today = Date::parse("2026-11-21").unwrap();
    let compiled = crate::compile::compile(&set, &config.selection(today)).unwrap();
    let names: Vec<String> = compiled
        .image
        .rules
        .iter()
        .map(|r| r.rule_ref().to_string())
        .collect();
    assert!(names.contains(&"local/ehr".to_string()), "{names:?}");
    assert!(names.contains(&"pexip/web".to_string()), "{names:?}");

    // A vendor file may not take the reserved id.
    std::fs::write(
        dir.join("local.toml"),
        "[vendor]\nid = \"local\"\nname = \"Mine\"\n",
    )
    .unwrap();
    let e = config.policy_set_from(&dir).unwrap_err().to_string();
    assert!(e.contains("vendor id `local` is reserved"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();

    // Local rules are checked like vendor rules, with the config's line numbers.
    let e = parse("\n[[rule]]\nid = \"x\"\nservice = \"X\"\nprotocol = \"tcp\"\nports = [70000]\nremote = \"any\"\n")
        .unwrap_err();
    assert!(e.starts_with("/etc/fwd/fwd.toml:6:10: port 70000"), "{e}");
}

#[test]
fn errors_are_located() {
    let e = parse("action = \"block\"\n").unwrap_err();
    assert!(
        e.starts_with("/etc/fwd/fwd.toml:1:10: unknown action `block`"),
        "{e}"
    );
    let e = parse("\nexempt = [\"10.0.0.0/33\"]\n").unwrap_err();
    assert!(e.starts_with("/etc/fwd/fwd.toml:2:11: exemption"), "{e}");
    let e = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
    assert!(
        e.starts_with("/etc/fwd/fwd.toml:2:10: metrics listen"),
        "{e}"
    );
    let e = parse("polcy_dir = \"x\"\n").unwrap_err();
    assert!(
        e.starts_with("/etc/fwd/fwd.toml:1:1: unknown field `polcy_dir`"),
        "{e}"
    );
    let e = parse("[[interface]]\nname = \"lan0\"\nmode = \"bridge\"\n").unwrap_err();
    assert!(
        e.starts_with("/etc/fwd/fwd.toml:3:8: unknown interface mode"),
        "{e}"
    );
}

#[test]
fn hold_forwarding_is_for_gateways() {
    let gateway = "[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n";
    assert!(!parse(gateway).unwrap().hold_forwarding, "off by default");
    let c = parse(&format!("{gateway}[gateway]\nhold_forwarding = true\n")).unwrap();
    assert!(c.hold_forwarding);
    let c = parse(&format!("{gateway}[gateway]\nhold_forwarding = false\n")).unwrap();
    assert!(!c.hold_forwarding);
    let e = parse(
        "[[interface]]\nname = \"eth0\"\nmode = \"host\"\n[gateway]\nhold_forwarding = true\n",
    )
    .unwrap_err();
    assert!(
        e.starts_with("/etc/fwd/fwd.toml:4:1: [gateway] hold_forwarding")
            && e.contains("mode = \"gateway\""),
        "{e}"
    );
    let e = parse(&format!("{gateway}[gateway]\nhold = true\n")).unwrap_err();
    assert!(e.contains("unknown field `hold`"), "{e}");
}

#[test]
fn the_doh_canary_is_answered_unless_turned_off() {
    let dns = "[dns]\nupstream = [\"192.0.2.53\"]\n";
    assert!(parse(dns).unwrap().dns.unwrap().doh_canary, "on by default");
    let off = parse(&format!("{dns}doh_canary = false\n")).unwrap();
    assert!(!off.dns.unwrap().doh_canary);
}

#[test]
fn the_package_policies_are_layered_under_the_sites() {
    let root = tempfile::tempdir().unwrap();
    let (usr, etc) = (root.path().join("usr"), root.path().join("etc"));
    std::fs::create_dir_all(&usr).unwrap();
    std::fs::create_dir_all(&etc).unwrap();
    let vendor = |id: &str| {
        format!(
            "[vendor]\nid = \"{id}\"\nname = \"{id}\"\n[[rule]]\nid = \"r\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [443]\nremote = \"192.0.2.1\"\n"
        )
    };
    std::fs::write(usr.join("zoom.toml"), vendor("zoom")).unwrap();
    std::fs::write(usr.join("vsee.toml"), vendor("vsee")).unwrap();
    std::fs::write(etc.join("vsee.toml"), "").unwrap();
    std::fs::write(etc.join("acme.toml"), vendor("acme")).unwrap();
    let file = root.path().join("fwd.toml");
    std::fs::write(&file, "policy_dir = \"etc\"\nvendor_policy_dir = \"usr\"\n").unwrap();
    let config = Config::load(&file).unwrap();
    assert_eq!(config.vendor_policy_dir.as_deref(), Some(usr.as_path()));
    let (set, _) = config
        .compile_policies(
            &config.policy_dir,
            crate::policy::Date::today(),
            &Default::default(),
        )
        .unwrap();
    let ids: Vec<&str> = set.vendors.iter().map(|v| v.vendor.id.as_str()).collect();
    assert_eq!(ids, ["acme", "zoom"], "vsee masked, zoom from the package");
    // Another directory (fwd check --policies DIR) is read alone.
    let (set, _) = config
        .compile_policies(&usr, crate::policy::Date::today(), &Default::default())
        .unwrap();
    assert_eq!(set.vendors.len(), 2);
}
