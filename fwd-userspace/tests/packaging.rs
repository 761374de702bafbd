//! The files fwd ships besides the binary: the systemd unit passes `systemd-analyze
//! verify`, the example config is valid and compiles with the bundled policies, and the
//! Grafana dashboard queries only metrics the daemon exports.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("packaging/fwd.service")).unwrap();
    for needed in [
        "Type=notify",
        "ExecReload=/usr/bin/fwd reload",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON",
        // The DNS proxy listens on port 53.
        "CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "WatchdogSec=",
        // A firewall: before any network is configured, after the sysctls and the bpffs.
        "Before=network-pre.target",
        "DefaultDependencies=no",
        "After=local-fs.target sys-fs-bpf.mount systemd-sysctl.service",
        "Conflicts=shutdown.target",
    ] {
        assert!(unit.contains(needed), "fwd.service lacks {needed}");
    }
    // verify checks that ExecStart's binary exists: point it at this build.
    let bin = env!("CARGO_BIN_EXE_fwd");
    let dir = std::env::temp_dir().join(format!("fwd-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("fwd.service");
    std::fs::write(&path, unit.replace("/usr/bin/fwd", bin)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints about this unit count (the host's other units are not ours).
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("fwd.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn example_config_is_valid_and_compiles_the_bundled_policies() {
    let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
        .args(["check", "--config"])
        .arg(repo().join("packaging/fwd.toml"))
        .arg("--policies")
        .arg(repo().join("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The Prometheus names operators and the dashboard rely on (docs/operations.md, Metrics):
/// a rename breaks their queries.
const METRICS_CONTRACT: &[&str] = &[
    "fwd_rule_packets_total",
    "fwd_rule_bytes_total",
    "fwd_drop_packets_total",
    "fwd_policy_generation",
    "fwd_reloads_total",
    "fwd_last_reload_timestamp_seconds",
    "fwd_map_entries",
    "fwd_map_capacity",
    "fwd_flows_active",
    "fwd_dns_names_active",
    "fwd_interface_attached",
    "fwd_interface_changes_total",
    "fwd_feed_last_success_timestamp_seconds",
    "fwd_feed_entries",
    "fwd_feed_updates_total",
    "fwd_rule_info",
    "fwd_vendor_mode",
    "fwd_build_info",
];

const DASHBOARD: &str = include_str!("../../packaging/grafana/fwd.json");

/// The metric names of a scrape as the daemon renders it, with every optional part present
/// (live flows, the DNS proxy's series): the names a dashboard may query.
fn exported_metrics() -> BTreeSet<String> {
    let scrape = exposition();
    let names: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(names.len() >= METRICS_CONTRACT.len(), "{scrape}");
    names
}

/// A scrape as the daemon renders it, with every optional part present.
fn exposition() -> String {
    let text = "[vendor]\nid = \"v\"\nname = \"V\"\n[[rule]]\nid = \"r\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [443]\nremote = [\"192.0.2.0/24\"]\n";
    let set = fwd::policy::PolicySet {
        vendors: vec![
            fwd::policy::parse_vendor_file(std::path::Path::new("v.toml"), text).unwrap(),
        ],
    };
    let today = fwd::policy::Date::parse("2026-12-01").unwrap();
    let compiled = fwd::compile::compile(&set, &fwd::compile::Selection::widest(today)).unwrap();
    let rules = &compiled.image.rules;
    let counters = vec![fwd::datapath::RuleCounters::default(); rules.len()];
    let reasons: Vec<_> = fwd_common::Reason::ALL
        .iter()
        .map(|r| fwd::datapath::ReasonCounters {
            reason: *r,
            outbound: fwd_common::Counter::default(),
            inbound: fwd_common::Counter::default(),
        })
        .collect();
    let stats = fwd::daemon::dns::DnsStats::default();
    // A counter vector with no sample is not exported: give the proxy's one each.
    stats.query(fwd::daemon::dns::Transport::Udp, "answered");
    stats.answer("opened");
    let audit = |_: &str| false;
    let changes = std::collections::BTreeMap::from([(("lan0".to_string(), "appeared"), 1)]);
    fwd::daemon::metrics::render(&fwd::daemon::metrics::Snapshot {
        rules,
        rule_counters: &counters,
        reasons: &reasons,
        generation: 1,
        audit: &audit,
        flows_active: Some(0),
        reloads_ok: 1,
        reloads_error: 0,
        last_reload_unix: 0,
        maps: &[("RNG4", 1, 10)],
        dns: Some(fwd::daemon::metrics::DnsSnapshot {
            stats: &stats,
            names_active: 0,
            addresses_active: 0,
        }),
        interfaces: &[("lan0", true)],
        interface_changes: &changes,
        feeds: &[("zoom", fwd::feeds::FeedState::default())],
    })
    .unwrap()
}

/// promtool (Debian's `prometheus` package): `cargo xtask setup` unpacks it into
/// target/tools/; PROMTOOL or PATH otherwise. `None` (the test skips, saying so) unless
/// `cargo xtask test` runs it, which requires everything.
fn promtool() -> Option<PathBuf> {
    let unpacked = repo().join("target/tools/prometheus/usr/bin/promtool");
    let found = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| unpacked.exists().then_some(unpacked))
        .or_else(|| {
            Command::new("promtool")
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from("promtool"))
        });
    if found.is_none() {
        missing("promtool");
    }
    found
}

#[test]
fn promtool_accepts_the_exposition_and_the_alert_rules_fire_as_tested() {
    let Some(promtool) = promtool() else {
        return;
    };
    // The exposition: valid, and no lint (names, units, help texts).
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}"
    );
    // The alert rules load, and their unit tests pass.
    let rules = repo().join("packaging/prometheus");
    for args in [
        ["check", "rules", "fwd-alerts.yml"],
        ["test", "rules", "fwd-alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(&rules)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The rules name only what the daemon exports (and `up`).
    let text = std::fs::read_to_string(rules.join("fwd-alerts.yml")).unwrap();
    let exported = exported_metrics();
    let exprs = alert_exprs(&text);
    assert!(exprs.len() >= 7, "{exprs:?}");
    for name in exprs.iter().flat_map(|e| metric_names(e)) {
        assert!(
            exported.contains(&name),
            "fwd-alerts.yml uses {name}, which the daemon does not export"
        );
    }
}

/// The `expr:` values of a rules file (one line, or a folded block below `expr: >-`).
fn alert_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('>') || rest.starts_with('|') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join(" "));
        } else {
            out.push(rest.to_string());
        }
    }
    out
}

/// `fwd_*` identifiers of a PromQL expression, outside quoted label values.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for d in chars.by_ref() {
                if !escaped && d == c {
                    break;
                }
                escaped = !escaped && d == '\\';
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut ident = c.to_string();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    ident.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            if ident.starts_with("fwd_") {
                names.push(ident);
            }
        }
    }
    names
}

/// Every PromQL expression of the dashboard: panel targets (rows' nested panels too),
/// annotations and query variables, each with where it is.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn panels(list: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel `{title}`"), expr.to_string()));
                }
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = a["expr"].as_str() {
            out.push((format!("annotation `{}`", a["name"]), expr.to_string()));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = v["query"]["query"].as_str().or(v["query"].as_str());
        if v["type"] == "query"
            && let Some(q) = query
        {
            out.push((format!("variable `{}`", v["name"]), q.to_string()));
        }
    }
    out
}

/// What is wrong with `dashboard` (JSON text) given the metrics the daemon exports.
fn dashboard_problems(dashboard: &str, exported: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    let dashboard: serde_json::Value = match serde_json::from_str(dashboard) {
        Ok(d) => d,
        Err(err) => return vec![format!("not JSON: {err}")],
    };
    // The contract's metrics are exported under their names (a rename breaks this).
    for name in METRICS_CONTRACT {
        if !exported.contains(*name) {
            problems.push(format!(
                "contract metric {name} is not exported by the daemon"
            ));
        }
    }
    let queries = dashboard_queries(&dashboard);
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        for name in metric_names(expr) {
            if !exported.contains(&name) {
                problems.push(format!(
                    "{place} queries {name}, which the daemon does not export: {expr}"
                ));
            }
            used.insert(name);
        }
    }
    // Every contract metric has a panel.
    for name in METRICS_CONTRACT {
        if !used.contains(*name) {
            problems.push(format!("no panel shows {name}"));
        }
    }
    // Importable: the data source is an input, and also a variable for file provisioning.
    let inputs = dashboard["__inputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !inputs
        .iter()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus")
    {
        problems.push("no __inputs entry DS_PROMETHEUS (pluginId prometheus)".to_string());
    }
    if !dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource")
    {
        problems.push("no datasource variable DS_PROMETHEUS".to_string());
    }
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        if !ids.insert(panel["id"].as_u64()) {
            problems.push(format!("panel `{title}`: id missing or not unique"));
        }
        let (x, w) = (
            panel["gridPos"]["x"].as_u64(),
            panel["gridPos"]["w"].as_u64(),
        );
        if !matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24) {
            problems.push(format!("panel `{title}`: gridPos outside the 24 columns"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!(
                "panel `{title}`: data source is not ${{DS_PROMETHEUS}}"
            ));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel `{title}` has no query"));
        }
        for t in &targets {
            if t["datasource"]["uid"] != "${DS_PROMETHEUS}" {
                problems.push(format!(
                    "panel `{title}`: a query's data source is not ${{DS_PROMETHEUS}}"
                ));
            }
        }
    }
    problems
}

#[test]
fn grafana_dashboard_queries_only_exported_metrics() {
    let problems = dashboard_problems(DASHBOARD, &exported_metrics());
    assert!(
        problems.is_empty(),
        "packaging/grafana/fwd.json:\n{}",
        problems.join("\n")
    );
    // The check sees the dashboard's queries at all.
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    assert!(dashboard_queries(&dashboard).len() >= METRICS_CONTRACT.len());
}

/// The check above fails when it should: a metric renamed in the daemon, a dashboard query
/// of a metric nobody exports, a panel on another data source.
#[test]
fn grafana_dashboard_check_catches_renames() {
    let exported = exported_metrics();
    let mut renamed_in_daemon = exported.clone();
    renamed_in_daemon.remove("fwd_flows_active");
    renamed_in_daemon.insert("fwd_flows_live".to_string());
    let problems = dashboard_problems(DASHBOARD, &renamed_in_daemon);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("contract metric fwd_flows_active is not exported")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("queries fwd_flows_active, which the daemon does not export")),
        "{problems:?}"
    );

    let typo = DASHBOARD.replace("fwd_rule_bytes_total", "fwd_rule_byte_total");
    let problems = dashboard_problems(&typo, &exported);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("queries fwd_rule_byte_total")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no panel shows fwd_rule_bytes_total")),
        "{problems:?}"
    );

    let other_source = DASHBOARD.replacen("${DS_PROMETHEUS}", "my-prometheus", 3);
    assert!(!dashboard_problems(&other_source, &exported).is_empty());

    // Quoted label values are not metric names.
    assert_eq!(
        metric_names(r#"sum(rate(fwd_rule_packets_total{vendor=~"fwd_x"}[5m])) / fwd:ratio"#),
        ["fwd_rule_packets_total"]
    );
    assert_eq!(
        metric_names("fwd_rule_packets_total offset 1h"),
        ["fwd_rule_packets_total"]
    );
}

/// A tool the checks below run: found on PATH, else the test skips saying so, unless
/// `cargo xtask test` runs it (its setup installs them), which requires everything.
fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        missing(name);
    }
    found
}

/// A tool is missing: a failure under `cargo xtask test` (which requires everything and
/// whose setup installs it), else a line saying the check is skipped.
fn missing(name: &str) {
    assert!(
        std::env::var_os("FWD_TESTS_REQUIRE_ROOT").is_none(),
        "{name} not found: `cargo xtask setup` installs it"
    );
    eprintln!(
        "skipping the checks that need {name}: it is not installed (cargo xtask setup installs it)"
    );
}

/// The Kubernetes manifests render with `kubectl kustomize` (offline) for both roles, pass
/// `kubernetes-validate --strict` for the oldest and newest Kubernetes supported, carry
/// what a fail-closed firewall needs, and their fwd.toml files compile the bundled
/// policies. The policies' ConfigMap, as the docs tell to create it, validates too.
#[test]
fn kubernetes_manifests_render_validate_and_carry_what_fwd_needs() {
    if !tool("kubectl") || !tool("kubernetes-validate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let validate = |file: &std::path::Path| {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "-k", "1.29.0", "-k", "1.32.0"])
            .arg(file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubernetes-validate {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for role in ["gateway", "host"] {
        let overlay = repo().join("packaging/kubernetes/overlays").join(role);
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(&overlay)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        for needed in [
            "hostNetwork: true",
            "maxSurge: 0",
            "path: /sys/fs/bpf",
            "path: /readyz",
            "path: /healthz",
            "- ALL",
            "- BPF",
            "- NET_ADMIN",
            "FWD_METRICS_LISTEN",
            "prometheus.io/scrape",
            &format!("fwd.io/role: {role}"),
            "namespace: fwd-system",
        ] {
            assert!(text.contains(needed), "{role}: no `{needed}` in\n{text}");
        }
        assert!(!text.contains("subPath"), "subPath mounts never update");
        // The generated config's name (with its hash) is what the DaemonSet mounts.
        let generated = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("name: fwd-config-{role}-")))
            .expect("a generated fwd-config");
        assert_eq!(
            text.matches(&format!("fwd-config-{role}-{generated}"))
                .count(),
            2,
            "the DaemonSet does not mount the generated ConfigMap:\n{text}"
        );
        let file = dir.path().join(format!("{role}.yaml"));
        std::fs::write(&file, &text).unwrap();
        validate(&file);
        let out = Command::new(env!("CARGO_BIN_EXE_fwd"))
            .args(["check", "--config"])
            .arg(overlay.join("fwd.toml"))
            .arg("--policies")
            .arg(repo().join("policies"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{role}/fwd.toml: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new("kubectl")
        .args([
            "-n",
            "fwd-system",
            "create",
            "configmap",
            "fwd-policies",
            "--from-file",
        ])
        .arg(repo().join("policies"))
        .args(["--dry-run=client", "-o", "yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, &out.stdout).unwrap();
    validate(&file);
}
