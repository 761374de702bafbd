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

/// The Prometheus names of ARCHITECTURE.md's contract ("Contracts that stay stable").
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
];

/// Contract metrics the daemon does not export yet (the DNS proxy is to come). The dashboard
/// may already show them; once metrics.rs exports one, it is checked like the others.
const METRICS_PENDING: &[&str] = &["fwd_dns_names_active"];

/// The metric source: what the daemon exports is what its string literals name.
const METRICS_RS: &str = include_str!("../src/daemon/metrics.rs");

const DASHBOARD: &str = include_str!("../../packaging/grafana/fwd.json");

/// `fwd_*` names of string literals in Rust source.
fn exported_metrics(source: &str) -> BTreeSet<String> {
    source
        .split("\"fwd_")
        .skip(1)
        .filter_map(|rest| {
            let (name, _) = rest.split_once('"')?;
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| format!("fwd_{name}"))
        })
        .collect()
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

/// What is wrong with `dashboard` (JSON text) given the metrics `metrics_rs` exports.
fn dashboard_problems(dashboard: &str, metrics_rs: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let dashboard: serde_json::Value = match serde_json::from_str(dashboard) {
        Ok(d) => d,
        Err(err) => return vec![format!("not JSON: {err}")],
    };
    let exported = exported_metrics(metrics_rs);
    // The contract's metrics are exported under their names (a rename breaks this).
    for name in METRICS_CONTRACT {
        if !exported.contains(*name) && !METRICS_PENDING.contains(name) {
            problems.push(format!(
                "contract metric {name} is not exported by src/daemon/metrics.rs"
            ));
        }
    }
    let queries = dashboard_queries(&dashboard);
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        for name in metric_names(expr) {
            let known = exported.contains(&name) || METRICS_PENDING.contains(&name.as_str());
            if !known {
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
    let problems = dashboard_problems(DASHBOARD, METRICS_RS);
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
    let renamed_in_daemon = METRICS_RS.replace("\"fwd_flows_active\"", "\"fwd_flows_live\"");
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
    let problems = dashboard_problems(&typo, METRICS_RS);
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
    assert!(!dashboard_problems(&other_source, METRICS_RS).is_empty());

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
