//! `fwd diff`: what a policy change adds and removes, per vendor and rule, before it is
//! applied; exit 0 no change, 1 changes, 2 error (terraform's `-detailed-exitcode`).

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;

use crate::{
    compile::RuleIds,
    config::{Config, DEFAULT_CONFIG},
    diff::{self, RuleView},
    policy::{self, Date, PolicySet},
};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
fwd diff                                  # the config's policy_dir against what the daemon enforces\n  \
fwd diff --against /srv/fwd/policies.old  # against another policy directory\n  \
fwd diff --policies staged/ --json        # a staged directory, as JSON\n  \
fwd diff --against policies/zoom.toml --policies staged/   # one vendor file\n  \
fwd diff --proposed                       # what the feeds' proposals would change\n\n\
Exit status: 0 no change, 1 changes (listed), 2 bad input or no daemon to ask.")]
pub(crate) struct DiffArgs {
    /// The site config: its policy_dir (unless --policies), selection and site rules.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The new policy: this directory instead of the config's policy_dir.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// What to compare with: `running` (what the daemon enforces, asked over its control
    /// socket), a policy directory, or one vendor file (then only that vendor is compared).
    #[arg(long, default_value = "running", value_name = "running|DIR|FILE")]
    against: String,
    /// Also list rules whose not_before or not_after falls within this many days.
    #[arg(long, default_value_t = 30, value_name = "DAYS")]
    within: u32,
    /// Print one JSON object: {"changes": [...], "upcoming": [...]}.
    #[arg(long)]
    json: bool,
    /// The new policy with each feed's proposal (`<id>.feed.toml.proposed`, mode =
    /// "propose") in place of its file: what moving the proposals into place would change.
    #[arg(long)]
    proposed: bool,
}

fn views_of_dir(config: &Config, dir: &Path, today: Date) -> anyhow::Result<Vec<RuleView>> {
    let (set, _) = config.compile_policies(dir, today, &RuleIds::default())?;
    Ok(diff::views(&set))
}

/// The policy of `dir` with every `*.proposed` file there in place of the file it proposes.
fn views_with_proposals(config: &Config, dir: &Path, today: Date) -> anyhow::Result<Vec<RuleView>> {
    let mut views = views_of_dir(config, dir, today)?;
    let mut proposals: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".toml.proposed"))
        .collect();
    if proposals.is_empty() {
        anyhow::bail!(
            "{}: no proposals (*.toml.proposed; a [[feed]] with mode = \"propose\" writes them)",
            dir.display()
        );
    }
    proposals.sort();
    for path in proposals {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let vendor = policy::parse_vendor_file(&path, &text)?;
        let id = vendor.vendor.id.clone();
        views.retain(|r| r.vendor != id);
        views.extend(diff::views(&PolicySet {
            vendors: vec![vendor],
        }));
    }
    views.sort_by(|a, b| (&a.vendor, &a.rule).cmp(&(&b.vendor, &b.rule)));
    Ok(views)
}

pub(crate) fn run(args: &DiffArgs) -> anyhow::Result<ExitCode> {
    let today = Date::today();
    let config = Config::load(&args.config)?;
    let new_dir = args
        .policies
        .clone()
        .unwrap_or_else(|| config.policy_dir.clone());
    let mut new = if args.proposed {
        views_with_proposals(&config, &new_dir, today)?
    } else {
        views_of_dir(&config, &new_dir, today)?
    };
    let against = Path::new(&args.against);
    let old = if args.against == "running" {
        super::client::ask::<Vec<RuleView>>(&config.control_socket, "rules").context(
            "asking the running daemon what it enforces; compare with a directory or file with --against DIR|FILE",
        )?
    } else if against.is_dir() {
        views_of_dir(&config, against, today)?
    } else if against.is_file() {
        let text = std::fs::read_to_string(against)
            .with_context(|| format!("{}: cannot read", against.display()))?;
        let vendor = policy::parse_vendor_file(against, &text)?;
        let id = vendor.vendor.id.clone();
        new.retain(|r| r.vendor == id);
        diff::views(&PolicySet {
            vendors: vec![vendor],
        })
    } else {
        anyhow::bail!(
            "--against {}: neither `running`, a directory nor a file",
            args.against
        );
    };
    let changes = diff::diff(&old, &new);
    let upcoming = diff::upcoming(&new, today, args.within);
    if args.json {
        let upcoming: Vec<_> = upcoming
            .iter()
            .map(|(v, r, what, day)| serde_json::json!({"vendor": v, "rule": r, "what": what, "day": day}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"changes": changes, "upcoming": upcoming})
        );
    } else {
        print_text(&changes, &upcoming, args.within);
    }
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_text(
    changes: &[diff::RuleDiff],
    upcoming: &[(String, String, String, String)],
    within: u32,
) {
    print_changes(changes);
    if !upcoming.is_empty() {
        println!("within {within} days:");
        for (v, r, what, day) in upcoming {
            println!("  {v}/{r} {what} {day}");
        }
    }
    let count = |what: &str| changes.iter().filter(|c| c.change == what).count();
    println!(
        "{} rules added, {} removed, {} changed",
        count("added"),
        count("removed"),
        count("changed")
    );
}

/// Each changed rule and what it gained (+) and lost (-), field by field.
pub(super) fn print_changes(changes: &[diff::RuleDiff]) {
    for c in changes {
        let mark = match c.change.as_str() {
            "added" => '+',
            "removed" => '-',
            _ => '~',
        };
        println!("{mark} {}/{} ({})", c.vendor, c.rule, c.change);
        for f in &c.fields {
            let mut first = true;
            for (sign, values) in [('+', &f.added), ('-', &f.removed)] {
                for v in values {
                    let name = if first { f.field.as_str() } else { "" };
                    println!("    {name:<11} {sign} {v}");
                    first = false;
                }
            }
        }
    }
}
