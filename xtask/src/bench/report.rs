//! The bench's results: sections of tables printed as text, written as Markdown and JSON
//! under `target/bench/`, and the goals each run makes visible (never asserted).

use std::{fmt::Write as _, path::Path};

use serde_json::{Value, json};

/// One comparison or measurement: a table, what it measured, and its raw figures.
#[derive(Debug, Default)]
pub struct Section {
    /// Short and stable (JSON key): `program`, `datapath`, `reload`, ...
    pub id: String,
    pub title: String,
    /// What was measured and how, one line each (workload, rounds, interleaving).
    pub notes: Vec<String>,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// The goals this section shows.
    pub goals: Vec<Goal>,
    /// The raw figures (every round's values, medians, ratios), for JSON.
    pub data: Value,
}

/// A target the bench shows beside its figure; `met` is `None` where it could not be
/// measured in this run.
#[derive(Debug, Clone)]
pub struct Goal {
    pub text: String,
    pub figure: String,
    pub met: Option<bool>,
}

impl Goal {
    pub fn new(text: impl Into<String>, figure: impl Into<String>, met: Option<bool>) -> Goal {
        Goal {
            text: text.into(),
            figure: figure.into(),
            met,
        }
    }

    fn mark(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        }
    }
}

impl Section {
    pub fn new(id: &str, title: &str) -> Section {
        Section {
            id: id.to_string(),
            title: title.to_string(),
            data: Value::Null,
            ..Section::default()
        }
    }

    /// A section that could not run: its title and why.
    pub fn failed(id: &str, title: &str, err: &anyhow::Error) -> Section {
        let mut s = Section::new(id, title);
        s.notes.push(format!("failed: {err:#}"));
        s.data = json!({ "error": format!("{err:#}") });
        s
    }

    pub fn note(&mut self, line: impl Into<String>) -> &mut Self {
        self.notes.push(line.into());
        self
    }

    pub fn columns(&mut self, columns: &[&str]) -> &mut Self {
        self.columns = columns
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        self
    }

    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        self.rows.push(cells);
        self
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i >= widths.len() {
                    widths.push(0);
                }
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        widths
    }

    /// Plain text for the terminal: title, notes, an aligned table, goals.
    pub fn text(&self) -> String {
        let mut out = format!("== {}\n", self.title);
        for note in &self.notes {
            let _ = writeln!(out, "   {note}");
        }
        if !self.columns.is_empty() {
            let widths = self.widths();
            let line = |cells: &[String]| {
                let mut l = String::from("  ");
                for (i, cell) in cells.iter().enumerate() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    // The first column is a label (left); figures align right.
                    if i == 0 {
                        let _ = write!(l, " {cell}{}", " ".repeat(pad));
                    } else {
                        let _ = write!(l, "  {}{cell}", " ".repeat(pad));
                    }
                }
                l.trim_end().to_string()
            };
            let _ = writeln!(out, "{}", line(&self.columns));
            for row in &self.rows {
                let _ = writeln!(out, "{}", line(row));
            }
        }
        for goal in &self.goals {
            let _ = writeln!(
                out,
                "   goal: {} -> {} ({})",
                goal.text,
                goal.figure,
                goal.mark()
            );
        }
        out
    }

    /// The same as GitHub-flavoured Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!("## {}\n\n", self.title);
        for note in &self.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !self.notes.is_empty() {
            out.push('\n');
        }
        if !self.columns.is_empty() {
            let cell = |c: &str| c.replace('|', "\\|");
            let _ = writeln!(
                out,
                "| {} |",
                self.columns
                    .iter()
                    .map(|c| cell(c))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            let _ = writeln!(
                out,
                "|{}|",
                self.columns
                    .iter()
                    .enumerate()
                    .map(|(i, _)| if i == 0 { "---" } else { "---:" })
                    .collect::<Vec<_>>()
                    .join("|")
            );
            for row in &self.rows {
                let _ = writeln!(
                    out,
                    "| {} |",
                    row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                );
            }
            out.push('\n');
        }
        for goal in &self.goals {
            let _ = writeln!(
                out,
                "- Goal: {}: **{}** ({})",
                goal.text,
                goal.figure,
                goal.mark()
            );
        }
        if !self.goals.is_empty() {
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "title": self.title,
            "notes": self.notes,
            "columns": self.columns,
            "rows": self.rows,
            "goals": self.goals.iter().map(|g| json!({
                "goal": g.text, "figure": g.figure, "met": g.met,
            })).collect::<Vec<_>>(),
            "data": self.data,
        })
    }
}

/// Runs `measure` on every configuration in turn, `rounds` times over (A B C A B C ...),
/// so drifting load on a shared machine falls on all of them alike. Returns each
/// configuration's values, in round order.
pub fn interleaved<C, E>(
    configs: &mut [C],
    rounds: usize,
    mut measure: impl FnMut(&mut C, usize) -> Result<f64, E>,
) -> Result<Vec<Vec<f64>>, E> {
    let mut values = vec![Vec::with_capacity(rounds); configs.len()];
    for round in 0..rounds {
        for (i, config) in configs.iter_mut().enumerate() {
            values[i].push(measure(config, round)?);
        }
    }
    Ok(values)
}

/// The median (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `x` as a ratio with two decimals and a trailing `x`, or `-` when not finite.
pub fn ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".to_string()
    }
}

/// `n` with thousands separators: 1,000,000.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A whole report: the text printed, `results.md` and `results.json` under `out`.
pub fn write(out: &Path, header: &[String], sections: &[Section]) -> anyhow::Result<String> {
    std::fs::create_dir_all(out)?;
    let mut text = String::new();
    for line in header {
        let _ = writeln!(text, "{line}");
    }
    let mut md = String::from("# fwd bench results\n\n");
    for line in header {
        let _ = writeln!(md, "- {line}");
    }
    md.push('\n');
    for s in sections {
        text.push('\n');
        text.push_str(&s.text());
        md.push_str(&s.markdown());
    }
    let goals: Vec<&Goal> = sections.iter().flat_map(|s| &s.goals).collect();
    if !goals.is_empty() {
        text.push_str("\n== Goals (shown, not asserted)\n");
        md.push_str("## Goals (shown, not asserted)\n\n| goal | figure | |\n|---|---|---|\n");
        for g in goals {
            let _ = writeln!(text, "   {:<12} {} -> {}", g.mark(), g.text, g.figure);
            let _ = writeln!(md, "| {} | {} | {} |", g.text, g.figure, g.mark());
        }
    }
    let json = json!({
        "header": header,
        "sections": sections.iter().map(|s| (s.id.clone(), s.json())).collect::<serde_json::Map<_, _>>(),
    });
    std::fs::write(out.join("results.md"), md)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaves_rounds_across_configurations() {
        let mut order = Vec::new();
        let mut configs = ['a', 'b', 'c'];
        let values = interleaved(&mut configs, 2, |c, round| {
            order.push((*c, round));
            Ok::<_, ()>(round as f64 + f64::from(*c as u8))
        })
        .unwrap();
        assert_eq!(
            order,
            [('a', 0), ('b', 0), ('c', 0), ('a', 1), ('b', 1), ('c', 1)]
        );
        assert_eq!(values[1], [98.0, 99.0]);
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(10), "10");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(524_288), "524,288");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn tables_align_and_escape() {
        let mut s = Section::new("x", "X");
        s.columns(&["config", "ns/packet"]);
        s.row(vec!["no filter".into(), "12.5".into()]);
        s.row(vec!["a|b".into(), "1".into()]);
        s.goals.push(Goal::new("fast", "1.00x", Some(true)));
        let text = s.text();
        assert!(text.contains("   config     ns/packet\n"), "{text}");
        assert!(text.contains("   no filter       12.5\n"), "{text}");
        assert!(text.contains("goal: fast -> 1.00x (met)"), "{text}");
        let md = s.markdown();
        assert!(md.contains("| a\\|b | 1 |"), "{md}");
        assert!(md.contains("|---|---:|"), "{md}");
        assert_eq!(s.json()["goals"][0]["met"], true);
    }
}
