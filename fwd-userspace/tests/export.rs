//! `fwd export nftables` as an operator runs it: the bundled policies with the packaged
//! config become a script that `nft -c` accepts and `nft -f` loads, twice (the second load
//! replaces the first: one table), in a scratch network namespace; bad input exits 2 and
//! says what and where. The nft tests need root (namespaces) and skip, saying so, when
//! `nft` is not installed.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use fwd_lab::Netns;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fwd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fwd"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("running fwd")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fwd-export-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn nft_missing() -> bool {
    !Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `nft ARGS` in `ns`: (success, stdout + stderr).
fn nft(ns: &Netns, args: &[&str]) -> (bool, String) {
    let out = ns.command("nft").unwrap().args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn assert_ok(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed: {stderr}");
    stderr
}

#[test]
fn bundled_policies_export_checks_and_loads_with_nft() {
    if nft_missing() {
        eprintln!("SKIPPED: `nft` is not installed (the nftables package)");
        return;
    }
    if !fwd_lab::can_run_as_root("bundled_policies_export_checks_and_loads_with_nft") {
        return;
    }
    let dir = scratch_dir("bundled");
    let gateway = dir.join("gateway.nft");
    let stderr = assert_ok(
        &fwd(&[
            "export",
            "nftables",
            "--config",
            "packaging/fwd.toml",
            "--policies",
            "policies",
            "--output",
            gateway.to_str().unwrap(),
        ]),
        "export with packaging/fwd.toml",
    );
    // What differs from fwd is said on stderr, and so is what was written.
    assert!(
        stderr.contains("fwd: warning: return traffic rides conntrack"),
        "{stderr}"
    );
    assert!(stderr.contains("name hostnames or domains"), "{stderr}");
    assert!(
        stderr.contains("fwd: wrote table inet fwd_export to "),
        "{stderr}"
    );
    // The temporary file was renamed into place.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    let script = std::fs::read_to_string(&gateway).unwrap();
    assert!(
        script.contains("\t\tiifname \"lan0\" goto egress\n"),
        "{script}"
    );
    // 192.0.2.0/24 is the packaged config's exemption.
    assert!(script.contains("elements = { 192.0.2.0/24 }"), "{script}");

    // Without a config: the widest policy, host-style hooks; to standard output.
    let host = fwd(&["export", "nftables", "--policies", "policies"]);
    assert_ok(&host, "export without a config");
    let host_script = dir.join("host.nft");
    std::fs::write(&host_script, &host.stdout).unwrap();
    assert!(String::from_utf8_lossy(&host.stdout).contains("\t\toifname != \"lo\" goto egress\n"));

    let ns = Netns::create(&format!("fwdexp{}", std::process::id())).unwrap();
    for file in [&gateway, &host_script] {
        let file = file.to_str().unwrap();
        let (ok, text) = nft(&ns, &["-c", "-f", file]);
        assert!(ok, "nft -c -f {file}:\n{text}");
    }
    // Loading twice, and then the other script: each replaces the table in one go.
    for file in [&gateway, &gateway, &host_script] {
        let file = file.to_str().unwrap();
        let (ok, text) = nft(&ns, &["-f", file]);
        assert!(ok, "nft -f {file}:\n{text}");
        let (_, tables) = nft(&ns, &["list", "tables"]);
        assert_eq!(tables.trim(), "table inet fwd_export");
    }
    let (ok, text) = nft(
        &ns,
        &[
            "list",
            "counter",
            "inet",
            "fwd_export",
            "pexip/general-media",
        ],
    );
    assert!(ok && text.contains("packets 0"), "{text}");
    let (ok, text) = nft(&ns, &["list", "chain", "inet", "fwd_export", "output"]);
    assert!(ok && text.contains("hook output"), "{text}");
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_site_config_with_every_feature_exports_a_valid_script() {
    if nft_missing() {
        eprintln!("SKIPPED: `nft` is not installed (the nftables package)");
        return;
    }
    if !fwd_lab::can_run_as_root("a_site_config_with_every_feature_exports_a_valid_script") {
        return;
    }
    // Gateway and host interfaces, audit mode for one vendor, IPv4 and IPv6 exemptions, a
    // DNS proxy with steering, site rules, an empty selection of another vendor's rules.
    let dir = scratch_dir("features");
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("fwd.toml"),
        format!(
            "policy_dir = \"{}\"\n\
             exempt = [\"192.0.2.0/24\", \"2001:db8:ffff::/48\", \"198.51.100.7\"]\n\
             [vendor_action]\nzoom = \"audit\"\n\
             [dns]\nupstream = [\"203.0.113.53\"]\nsteer = true\n\
             [[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n\
             [[interface]]\nname = \"lan1\"\nmode = \"gateway\"\n\
             [[interface]]\nname = \"uplink\"\nmode = \"host\"\n\
             [[rule]]\nid = \"ehr\"\nservice = \"EHR\"\nprotocol = \"tcp\"\nports = [8443]\n\
             remote = \"198.51.100.10\"\n",
            workspace().join("policies").display()
        ),
    )
    .unwrap();
    let script = dir.join("site.nft");
    let config = dir.join("fwd.toml");
    let stderr = assert_ok(
        &fwd(&[
            "export",
            "nftables",
            "--config",
            config.to_str().unwrap(),
            "--table",
            "site_filter",
            "-o",
            script.to_str().unwrap(),
        ]),
        "export of the site config",
    );
    assert!(stderr.contains("[dns] steer"), "{stderr}");
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("table inet site_filter {"));
    assert!(text.contains("counter local/ehr {"));
    assert!(
        text.contains("goto egress_no_port_audit"),
        "zoom is audited"
    );
    assert!(text.contains("\t\tiifname { \"lan0\", \"lan1\" } goto egress\n"));
    assert!(text.contains("\t\toifname \"uplink\" goto egress\n"));
    // A host with a DNS proxy asks its upstream through the uplink: exempt, as in fwd.
    assert!(
        text.contains("elements = { 192.0.2.0/24, 198.51.100.7, 203.0.113.53 }"),
        "{text}"
    );
    let ns = Netns::create(&format!("fwdexs{}", std::process::id())).unwrap();
    let (ok, out) = nft(&ns, &["-c", "-f", script.to_str().unwrap()]);
    assert!(ok, "nft -c -f {}:\n{out}", script.display());

    // A policy that compiles to nothing still makes a script nft accepts (all denied).
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(
        empty.join("old.toml"),
        "[vendor]\nid = \"old\"\nname = \"Old\"\n\n[[rule]]\nid = \"gone\"\nservice = \"Gone\"\n\
         protocol = \"tcp\"\nports = [443]\nremote = \"198.51.100.0/24\"\nnot_after = 2020-01-01\n",
    )
    .unwrap();
    let out = fwd(&["export", "nftables", "--policies", empty.to_str().unwrap()]);
    assert_ok(&out, "export of a policy that compiles to nothing");
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 egress ranges"));
    let empty_script = dir.join("empty.nft");
    std::fs::write(&empty_script, &out.stdout).unwrap();
    let (ok, out) = nft(&ns, &["-c", "-f", empty_script.to_str().unwrap()]);
    assert!(ok, "nft -c -f (empty policy):\n{out}");
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_exits_2_and_says_what_and_where() {
    let dir = scratch_dir("bad");
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/acme.toml"),
        "[vendor]\nid = \"acme\"\nname = \"Acme\"\n\n[[rule]]\nid = \"web\"\nservice = \"Web\"\n\
         protocol = \"tcp\"\nports = [70000]\nremote = \"198.51.100.0/24\"\n",
    )
    .unwrap();
    let policies = dir.join("policies");
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["--policies", policies.to_str().unwrap()],
            "acme.toml:9:10: port 70000",
        ),
        (
            vec!["--policies", "policies", "--table", "fwd"],
            "nft reads `fwd` as a keyword",
        ),
        (
            vec!["--policies", "policies", "--table", "my table"],
            "--table `my table`: a table name is a letter",
        ),
        (
            vec![
                "--policies",
                "policies",
                "--output",
                "/nonexistent-dir/fwd.nft",
            ],
            "cannot write /nonexistent-dir/fwd.nft",
        ),
    ];
    for (args, message) in cases {
        let mut full = vec!["export", "nftables"];
        full.extend(&args);
        let out = fwd(&full);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} wrote a script");
    }
    // A config naming an interface nft cannot quote.
    std::fs::write(
        dir.join("fwd.toml"),
        "policy_dir = \"policies-none\"\n[[interface]]\nname = \"lan\\\"0\"\nmode = \"gateway\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("policies-none")).unwrap();
    std::fs::write(
        dir.join("policies-none/acme.toml"),
        "[vendor]\nid = \"acme\"\nname = \"Acme\"\n",
    )
    .unwrap();
    let out = fwd(&[
        "export",
        "nftables",
        "--config",
        dir.join("fwd.toml").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("fwd.toml: interface `lan\"0`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
