//! `fwd feeds update`: fetch the config's `[[feed]]`s now (what the daemon does on each
//! feed's `refresh_s`, and what a systemd timer can call), write what changed, and ask the
//! running daemon to reload.

use std::{path::PathBuf, process::ExitCode};

use crate::{config::Config, config::DEFAULT_CONFIG, feeds, policy::Date};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum FeedsCommand {
    /// Fetch every feed (or one) now. A list that fails, does not read, or looks wrong
    /// (empty, shrunk past max_shrink_percent, a prefix wider than widest_ipv4/6, private
    /// addresses) keeps the last good file, and says why. Exit 0 if every feed ended well,
    /// 1 if one kept its last good list for a reason, 2 on a bad config.
    #[command(
        after_help = "Examples:\n  fwd feeds update\n  fwd feeds update --feed zoom --json\n\n\
The generated files are POLICY_DIR/<id>.feed.toml (or .proposed with mode = \"propose\");\n\
state_dir/feeds.json keeps each feed's ETag, version and results. See docs/policy.md, Feeds."
    )]
    Update {
        /// The site config holding the [[feed]]s.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Only this feed (its id).
        #[arg(long, value_name = "ID")]
        feed: Option<String>,
        /// Print one JSON object per feed.
        #[arg(long)]
        json: bool,
        /// Do not ask the running daemon to reload after an update.
        #[arg(long)]
        no_reload: bool,
    },
}

pub(crate) fn run(command: &FeedsCommand) -> anyhow::Result<ExitCode> {
    let FeedsCommand::Update {
        config,
        feed,
        json,
        no_reload,
    } = command;
    let config = Config::load(config)?;
    if config.feeds.is_empty() {
        anyhow::bail!(
            "{}: no [[feed]] configured; see docs/policy.md, Feeds",
            config.file.display()
        );
    }
    if let Some(id) = feed
        && !config.feeds.iter().any(|f| &f.id == id)
    {
        let ids: Vec<&str> = config.feeds.iter().map(|f| f.id.as_str()).collect();
        anyhow::bail!(
            "no feed `{id}` in {}; its feeds are {}",
            config.file.display(),
            ids.join(", ")
        );
    }
    let outcomes = feeds::update(&config, feed.as_deref(), Date::today());
    for o in &outcomes {
        if *json {
            println!("{}", serde_json::to_string(o)?);
        } else {
            println!("{:<16} {:<9} {}", o.feed, o.result.name(), o.detail);
        }
    }
    let updated = outcomes.iter().any(|o| o.result == feeds::Result::Updated);
    if updated && !no_reload {
        // A running daemon puts the new files in force now (its watch would, too).
        match super::client::ask_reload(&config.control_socket) {
            Ok(reply) if reply.ok => {
                eprintln!("fwd: reloaded: generation {} in force", reply.generation);
            }
            Ok(reply) => eprintln!(
                "fwd: the daemon rejected the reload: {}",
                reply.error.unwrap_or_default()
            ),
            Err(_) => eprintln!(
                "fwd: no daemon answered; the files take effect at its next start or reload"
            ),
        }
    }
    let troubled = outcomes.iter().any(|o| {
        matches!(
            o.result,
            feeds::Result::Failed | feeds::Result::Malformed | feeds::Result::Refused
        )
    });
    Ok(if troubled {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
