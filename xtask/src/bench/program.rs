//! `cargo xtask bench`'s program cost: ns per packet of fwd's XDP and TC programs through
//! BPF_PROG_TEST_RUN, from 10 to 1,000,000 prefixes, against a baseline that only parses.
//! The measuring is `fwd-userspace/benches/program_cost.rs` (it needs the library and the
//! eBPF object); this runs it and turns its JSON into the report's table.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::bench::report::{Goal, Section, median, ratio, thousands};

/// Table columns: (title, program, family).
const COLUMNS: [(&str, &str, &str); 4] = [
    ("XDP v4", "xdp", "v4"),
    ("XDP v6", "xdp", "v6"),
    ("TC v4", "tc", "v4"),
    ("TC v6", "tc", "v6"),
];

/// The goal: a new flow's cost at the largest policy over its cost at the smallest, at most
/// this.
const FLAT_RATIO: f64 = 1.5;

/// The goal: an established flow's packet costs at most this much more than the parse.
const ESTABLISHED_EXTRA_NS: f64 = 100.0;

/// The largest policy the goal speaks of.
const GOAL_PREFIXES: u64 = 1_000_000;

/// Runs the bench (release, `cargo bench`), writing its figures to
/// `target/bench/program_cost.json`, and returns the section made of them.
pub fn program_bench(root: &Path, quick: bool) -> anyhow::Result<Vec<Section>> {
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    let json_path = out.join("program_cost.json");
    // A file of an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&json_path);
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root).args([
        "bench",
        "--package",
        "fwd-userspace",
        "--bench",
        "program_cost",
        "--",
    ]);
    if quick {
        cmd.arg("--quick");
    }
    cmd.arg("--json").arg(&json_path);
    eprintln!(
        "xtask: program cost: fwd_xdp and fwd_tc_out against their parse-only baselines{}",
        if quick { " (quick)" } else { "" }
    );
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!(
            "the program cost bench failed ({status}); by hand: cargo bench -p fwd-userspace --bench program_cost -- --json {}",
            json_path.display()
        );
    }
    let text = std::fs::read_to_string(&json_path)
        .with_context(|| format!("reading {}", json_path.display()))?;
    let data: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", json_path.display()))?;
    Ok(vec![section(data, &json_path)?])
}

/// One measured (program, family, shape, prefixes).
#[derive(Clone)]
struct Cell {
    program: String,
    family: String,
    shape: String,
    prefixes: u64,
    /// An allowed packet of an established flow (the bench's allowed frames).
    fwd: f64,
    /// A denied packet (judged by the policy tables every time).
    denied: f64,
    /// The first packet of a new flow.
    new_flow: f64,
    baseline: f64,
    /// With repeat=N on each frame (TC only).
    repeat_n: Option<(u64, f64)>,
    /// Interquartile range of fwd's rounds over their median.
    spread: f64,
    /// What the policy put in the maps (the bench's `installed`).
    installed: Value,
    /// The same passes over the first few frames, whose flows and entries stay in cache:
    /// (established minus baseline, new flow) ns.
    hot: Option<(f64, f64)>,
}

/// (third quartile - first quartile) / median.
fn spread(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    (v[v.len() * 3 / 4] - v[v.len() / 4]) / median(&v)
}

fn cells(data: &Value) -> anyhow::Result<Vec<Cell>> {
    let results = data["results"]
        .as_array()
        .context("the bench's JSON has no `results`")?;
    results
        .iter()
        .map(|r| {
            let text = |key: &str| {
                r[key]
                    .as_str()
                    .map(str::to_string)
                    .with_context(|| format!("a result without `{key}`"))
            };
            let number = |v: &Value, key: &str| {
                v[key]
                    .as_f64()
                    .with_context(|| format!("a result without `{key}`"))
            };
            let hot = match &r["hot"] {
                Value::Null => None,
                h => Some((
                    number(h, "allowed_difference_ns")?,
                    number(h, "new_flow_ns")?,
                )),
            };
            let repeat_n = match &r["repeat_n"] {
                Value::Null => None,
                n => Some((n["repeat"].as_u64().unwrap_or(0), number(n, "fwd_ns")?)),
            };
            Ok(Cell {
                program: text("program")?,
                family: text("family")?,
                shape: text("shape")?,
                prefixes: r["prefixes"]
                    .as_u64()
                    .context("a result without `prefixes`")?,
                fwd: number(r, "allowed_ns")?,
                denied: number(r, "denied_ns")?,
                new_flow: number(r, "new_flow_ns")?,
                // The allowed frames' baseline: the difference is what fwd adds to them.
                baseline: number(r, "allowed_ns")? - number(r, "allowed_difference_ns")?,
                repeat_n,
                spread: spread(
                    &r["fwd_rounds"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_f64)
                        .collect::<Vec<_>>(),
                ),
                installed: r["installed"].clone(),
                hot,
            })
        })
        .collect()
}

/// `1234567` as `1,234,567`.
fn section(data: Value, json_path: &Path) -> anyhow::Result<Section> {
    let cells = cells(&data)?;
    if cells.is_empty() {
        bail!("the program cost bench measured nothing");
    }
    let mut s = Section::new(
        "program",
        "Program cost: fwd_xdp and fwd_tc_out per packet, against a parse-only baseline",
    );
    let quick = data["mode"] == "quick";
    s.note(format!(
        "BPF_PROG_TEST_RUN on the real programs, repeat=1 on each of {} distinct frames (7/8 \
         allowed, 1/8 denied, each its own flow); {} rounds interleaving fwd, baseline and the \
         policy sizes; medians",
        data["frames"], data["rounds"]
    ));
    s.note(
        "cell: new flows / established flows / denied, fwd ns/packet (+ fwd minus baseline); \
         new: every packet the first of its flow, judged by the policy tables and recorded; \
         established: an allowed packet of a flow already allowed under the current policy \
         epoch (one flow-table lookup); denied: the 1/8 of frames no rule allows, judged by \
         the tables every time and sampled; baseline: fwd_xdp_parse / fwd_tc_parse, the same \
         parse, then pass",
    );
    s.note(
        "each repeat=1 duration holds the kernel's timing overhead, the baseline's too: compare \
         the differences; fwd/baseline understates fwd's share",
    );
    // Why repeat=1 on distinct frames: what one cache-hot frame would have said.
    if let Some(c) = cells
        .iter()
        .filter(|c| c.repeat_n.is_some())
        .max_by_key(|c| (c.prefixes, c.family == "v4", c.shape == "dense"))
        && let Some((n, hot)) = c.repeat_n
    {
        s.note(format!(
            "repeat={n} on one frame at a time (cache-hot) would read {} {} {} at {} prefixes as \
             {hot:.0} ns instead of {:.0} ns",
            c.program.to_uppercase(),
            c.family,
            c.shape,
            thousands(c.prefixes),
            c.fwd
        ));
    }
    for skip in data["skipped"].as_array().into_iter().flatten() {
        s.note(format!(
            "{} {} {}: not installable: {}",
            skip["family"].as_str().unwrap_or("?"),
            skip["shape"].as_str().unwrap_or("?"),
            thousands(skip["prefixes"].as_u64().unwrap_or(0)),
            skip["reason"].as_str().unwrap_or("?"),
        ));
    }
    // What the largest policy of each family put in the tables.
    for family in ["v4", "v6"] {
        let Some(c) = cells
            .iter()
            .filter(|c| c.family == family)
            .max_by_key(|c| (c.prefixes, c.installed["ranges"].as_u64()))
        else {
            continue;
        };
        s.note(format!(
            "largest {family} policy ({} {}): {} address ranges, {} port ranges, {} classes",
            thousands(c.prefixes),
            c.shape,
            thousands(c.installed["ranges"].as_u64().unwrap_or(0)),
            thousands(c.installed["port_ranges"].as_u64().unwrap_or(0)),
            thousands(c.installed["classes"].as_u64().unwrap_or(0)),
        ));
    }
    // How deep the largest policies' lookups go: each node level and each line of the slice
    // searched is a dependent read, on a page of its own once the tables are large.
    if let Some(largest) = cells.iter().map(|c| c.prefixes).max() {
        let mut shapes: Vec<String> = Vec::new();
        for c in cells
            .iter()
            .filter(|c| c.prefixes == largest && c.program == "xdp")
        {
            let l = &c.installed["lookups"];
            if let (Some(levels), Some(ranges)) =
                (l["node_levels"].as_f64(), l["slice_ranges"].as_f64())
            {
                shapes.push(format!(
                    "{} {} {levels:.1} / {ranges:.1}",
                    c.family, c.shape
                ));
            }
        }
        if !shapes.is_empty() {
            s.note(format!(
                "lookups of the allowed frames at {} prefixes, node levels below the direct \
                 index / ranges in the slice searched (means): {}",
                thousands(largest),
                shapes.join(", ")
            ));
        }
    }
    if let Some(c) = cells
        .iter()
        .filter(|c| c.spread.is_finite())
        .max_by(|a, b| a.spread.total_cmp(&b.spread))
    {
        s.note(format!(
            "noise: the widest interquartile range of a cell's rounds is {:.0}% of its median \
             ({} {} {} {}); lookups that miss the caches feel the shared machine's load",
            c.spread * 100.0,
            c.program.to_uppercase(),
            c.family,
            c.shape,
            thousands(c.prefixes)
        ));
    }
    if let Some(hot) = hot_note(&cells, &data["hot_frames"]) {
        s.note(hot);
    }
    if quick {
        s.note("quick: up to 100,000 prefixes and fewer rounds; `cargo xtask bench` measures 1,000,000");
    }
    s.note(format!("every round's figures: {}", json_path.display()));

    let mut rows: Vec<(u64, String)> = cells
        .iter()
        .map(|c| (c.prefixes, c.shape.clone()))
        .collect();
    rows.sort();
    rows.dedup();
    let mut columns = vec!["prefixes"];
    columns.extend(COLUMNS.iter().map(|(title, _, _)| *title));
    s.columns(&columns);
    let find = |prefixes: u64, shape: &str, program: &str, family: &str| {
        cells.iter().find(|c| {
            c.prefixes == prefixes && c.shape == shape && c.program == program && c.family == family
        })
    };
    for (prefixes, shape) in &rows {
        let mut row = vec![format!("{} {shape}", thousands(*prefixes))];
        for (_, program, family) in COLUMNS {
            row.push(match find(*prefixes, shape, program, family) {
                Some(c) => format!(
                    "{:.0} (+{:.0}) / {:.0} (+{:.0}) / {:.0}",
                    c.new_flow,
                    c.new_flow - c.baseline,
                    c.fwd,
                    c.fwd - c.baseline,
                    c.denied
                ),
                None => "-".into(),
            });
        }
        s.row(row);
    }
    let mut baseline_row = vec!["baseline".to_string()];
    for (_, program, family) in COLUMNS {
        let values: Vec<f64> = cells
            .iter()
            .filter(|c| c.program == program && c.family == family)
            .map(|c| c.baseline)
            .collect();
        baseline_row.push(if values.is_empty() {
            "-".into()
        } else {
            format!("{:.0}", median(&values))
        });
    }
    s.row(baseline_row);
    s.goals.push(flat_goal(&cells));
    s.goals.push(established_goal(&cells));
    s.data = data;
    Ok(s)
}

/// What the in-cache passes read: the same goals' figures with every flow and entry in
/// cache, so the report shows how much of the cost is the memory hierarchy.
fn hot_note(cells: &[Cell], hot_frames: &Value) -> Option<String> {
    let hot: Vec<(f64, f64)> = cells.iter().filter_map(|c| c.hot).collect();
    if hot.is_empty() {
        return None;
    }
    let worst_established = hot.iter().map(|h| h.0).fold(f64::MIN, f64::max);
    let hot_cells: Vec<Cell> = cells
        .iter()
        .filter_map(|c| {
            c.hot.map(|(_, new_flow)| Cell {
                new_flow,
                ..c.clone()
            })
        })
        .collect();
    let flat = flat_goal(&hot_cells);
    Some(format!(
        "in cache: the same rounds over the first {hot_frames} frames only, their flows, table \
         entries and counters in the caches: established flows +{worst_established:.0} ns over \
         the parse at most; new flows' largest ratio {}; the difference to the table is what \
         cache and TLB misses cost on this machine",
        flat.figure
    ))
}

/// "An established flow's packet within +100 ns of the parse, at every size": the largest
/// difference over every cell.
fn established_goal(cells: &[Cell]) -> Goal {
    let text = format!(
        "established flows within +{ESTABLISHED_EXTRA_NS:.0} ns of the parse-only program at every size"
    );
    let Some(c) = cells
        .iter()
        .max_by(|a, b| (a.fwd - a.baseline).total_cmp(&(b.fwd - b.baseline)))
    else {
        return Goal::new(text, "-", None);
    };
    let extra = c.fwd - c.baseline;
    let figure = format!(
        "+{extra:.0} ns at most ({} {} {} {})",
        c.program.to_uppercase(),
        c.family,
        c.shape,
        thousands(c.prefixes)
    );
    Goal::new(text, figure, Some(extra <= ESTABLISHED_EXTRA_NS))
}

/// "New flows' cost nearly flat from 10 to 1,000,000 prefixes": the largest ratio of a new
/// flow's cost at the largest policy measured to its cost at the smallest, over programs,
/// families and shapes. Judged only when a policy of `GOAL_PREFIXES` was measured.
fn flat_goal(cells: &[Cell]) -> Goal {
    let mut worst: Option<(f64, &Cell, &Cell)> = None;
    let mut keys: Vec<(&str, &str, &str)> = cells
        .iter()
        .map(|c| (c.program.as_str(), c.family.as_str(), c.shape.as_str()))
        .collect();
    keys.sort();
    keys.dedup();
    for (program, family, shape) in keys {
        let of_key = || {
            cells
                .iter()
                .filter(move |c| c.program == program && c.family == family && c.shape == shape)
        };
        let (Some(small), Some(large)) = (
            of_key().min_by_key(|c| c.prefixes),
            of_key().max_by_key(|c| c.prefixes),
        ) else {
            continue;
        };
        if small.prefixes == large.prefixes {
            continue;
        }
        let r = large.new_flow / small.new_flow;
        if worst.is_none_or(|(w, _, _)| r > w) {
            worst = Some((r, small, large));
        }
    }
    let text = format!(
        "new flows' program cost nearly flat from 10 to {} prefixes (at most {FLAT_RATIO}x)",
        thousands(GOAL_PREFIXES)
    );
    let Some((r, small, large)) = worst else {
        return Goal::new(text, "-", None);
    };
    let reached = cells.iter().any(|c| c.prefixes >= GOAL_PREFIXES);
    let figure = format!(
        "{} ({} {} {}, {} -> {} prefixes)",
        ratio(r),
        large.program.to_uppercase(),
        large.family,
        large.shape,
        thousands(small.prefixes),
        thousands(large.prefixes)
    );
    Goal::new(text, figure, reached.then_some(r <= FLAT_RATIO))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(program: &str, family: &str, shape: &str, prefixes: u64, fwd: f64) -> Value {
        json!({
            "program": program, "family": family, "shape": shape, "prefixes": prefixes,
            "fwd_ns": 170.0, "new_flow_ns": fwd, "baseline_ns": 90.0,
            "allowed_ns": 150.0, "allowed_difference_ns": 60.0, "denied_ns": 300.0,
            "repeat_n": if program == "tc" { json!({"repeat": 32, "fwd_ns": fwd / 2.0}) } else { Value::Null },
        })
    }

    #[test]
    fn table_rows_cells_and_goal() {
        let mut results = Vec::new();
        for (program, family) in [("xdp", "v4"), ("xdp", "v6"), ("tc", "v4"), ("tc", "v6")] {
            for shape in ["dense", "mix"] {
                results.push(result(program, family, shape, 10, 400.0));
                let (largest, fwd) = if family == "v4" {
                    (1_000_000, 600.0)
                } else {
                    (524_288, 1000.0)
                };
                results.push(result(program, family, shape, largest, fwd));
            }
        }
        let data = json!({
            "mode": "full", "frames": 4096, "rounds": 11, "results": results,
            "skipped": [{"family": "v6", "shape": "dense", "prefixes": 1_000_000,
                         "reason": "too many"}],
        });
        let s = section(data, Path::new("x.json")).unwrap();
        assert_eq!(
            s.columns,
            ["prefixes", "XDP v4", "XDP v6", "TC v4", "TC v6"]
        );
        let labels: Vec<&str> = s.rows.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            labels,
            [
                "10 dense",
                "10 mix",
                "524,288 dense",
                "524,288 mix",
                "1,000,000 dense",
                "1,000,000 mix",
                "baseline"
            ]
        );
        assert_eq!(s.rows[0][1], "400 (+310) / 150 (+60) / 300");
        assert_eq!(s.rows[2][1], "-");
        assert_eq!(s.rows[2][2], "1000 (+910) / 150 (+60) / 300");
        assert_eq!(s.rows[6][1], "90");
        let text = s.text();
        assert!(
            text.contains("v6 dense 1,000,000: not installable: too many"),
            "{text}"
        );
        assert!(text.contains("repeat=32 on one frame"), "{text}");
        let goal = &s.goals[0];
        assert_eq!(goal.met, Some(false));
        assert!(
            goal.figure.starts_with("2.50x (TC v6 dense, 10 -> 524,288"),
            "{}",
            goal.figure
        );
        let established = &s.goals[1];
        assert_eq!(established.met, Some(true));
        assert_eq!(established.figure, "+60 ns at most (TC v6 mix 524,288)");
    }

    #[test]
    fn in_cache_figures_are_noted_beside_the_goals() {
        let hot = |r: &mut Value, established: f64, new_flow: f64| {
            r["hot"] = json!({"allowed_difference_ns": established, "new_flow_ns": new_flow});
        };
        let mut small = result("xdp", "v4", "dense", 10, 400.0);
        let mut large = result("xdp", "v4", "dense", 1_000_000, 900.0);
        hot(&mut small, 95.0, 380.0);
        hot(&mut large, 105.0, 456.0);
        let data = json!({
            "mode": "full", "frames": 4096, "hot_frames": 256, "rounds": 3,
            "results": [small, large], "skipped": [],
        });
        let s = section(data, Path::new("x.json")).unwrap();
        let text = s.text();
        assert!(
            text.contains("over the first 256 frames only")
                && text.contains("established flows +105 ns over the parse at most")
                && text.contains("largest ratio 1.20x (XDP v4 dense, 10 -> 1,000,000 prefixes)"),
            "{text}"
        );
        // The goals are judged on the full passes.
        assert_eq!(s.goals[0].met, Some(false));
        // Without in-cache figures (an earlier bench's JSON), no note.
        let old = section(
            json!({"mode": "full", "frames": 4096, "rounds": 3, "skipped": [],
                   "results": [result("xdp", "v4", "dense", 10, 400.0)]}),
            Path::new("x.json"),
        )
        .unwrap();
        assert!(!old.text().contains("in cache"), "{}", old.text());
    }

    #[test]
    fn goal_not_judged_below_a_million() {
        let cells = cells(&json!({"results": [
            result("xdp", "v4", "dense", 10, 400.0),
            result("xdp", "v4", "dense", 100_000, 500.0),
        ]}))
        .unwrap();
        let goal = flat_goal(&cells);
        assert_eq!(goal.met, None);
        assert_eq!(goal.figure, "1.25x (XDP v4 dense, 10 -> 100,000 prefixes)");
    }
}
