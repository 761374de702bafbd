//! Vendor lists that stay current: each `[[feed]]` is fetched (`fetch`), read as `fwd
//! import` reads a list, checked (`guard`) and compiled with the rest of the policy, and
//! only then written atomically as a generated vendor file `<id>.feed.toml` in the policy
//! directory (or beside it as `.proposed`). A failed, malformed or suspicious fetch keeps
//! the last good file, and says why; what happened is kept in `state_dir/feeds.json`
//! (`state`) for the next conditional request and for the metrics.

pub mod fetch;
pub mod guard;
pub mod state;

use std::path::PathBuf;

use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, Feed, FeedMode};
use crate::import::FeedOrigin;
use crate::policy::{Date, parse_vendor_file};

pub use state::FeedState;

/// How one feed's update ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Result {
    /// A new list was written into the policy directory.
    Updated,
    /// A new list was written beside it, for review (`mode = "propose"`).
    Proposed,
    /// The server or the publisher's version says nothing changed.
    Unchanged,
    /// No list: the fetch failed (network, TLS, HTTP status, size).
    Failed,
    /// The list did not read or compile.
    Malformed,
    /// The list read, but looked wrong (empty, shrunk, too wide, private).
    Refused,
}

impl Result {
    pub const ALL: [Result; 6] = [
        Result::Updated,
        Result::Proposed,
        Result::Unchanged,
        Result::Failed,
        Result::Malformed,
        Result::Refused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Result::Updated => "updated",
            Result::Proposed => "proposed",
            Result::Unchanged => "unchanged",
            Result::Failed => "failed",
            Result::Malformed => "malformed",
            Result::Refused => "refused",
        }
    }

    /// Whether the last good list is still the one in the policy.
    pub fn kept_last_good(self) -> bool {
        !matches!(self, Result::Updated)
    }
}

/// One feed's outcome, for the command's output and the log.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub feed: String,
    pub result: Result,
    /// What happened, in a sentence.
    pub detail: String,
    /// The file written, if any.
    pub file: Option<PathBuf>,
    /// Distinct prefixes of the list now in force (or proposed).
    pub entries: usize,
}

pub use crate::clock::unix_now;

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Updates the feeds of `config` (only `only` if given), one after the other; the state is
/// written after each. Never fails as a whole: each feed's outcome says what happened.
pub fn update(config: &Config, only: Option<&str>, today: Date) -> Vec<Outcome> {
    let mut states = state::load(&config.state_dir);
    let mut outcomes = Vec::new();
    for feed in config
        .feeds
        .iter()
        .filter(|f| only.is_none_or(|o| o == f.id))
    {
        let state = states.entry(feed.id.clone()).or_default();
        let outcome = update_one(config, feed, state, today);
        state.last_attempt_unix = unix_now();
        *state
            .results
            .entry(outcome.result.name().to_string())
            .or_default() += 1;
        if matches!(
            outcome.result,
            Result::Failed | Result::Malformed | Result::Refused
        ) {
            warn!(feed = %feed.id, result = outcome.result.name(), "feed: {}; the last good list stays", outcome.detail);
            state.last_error = Some(outcome.detail.clone());
        } else {
            info!(feed = %feed.id, result = outcome.result.name(), "feed: {}", outcome.detail);
            state.last_error = None;
            state.last_success_unix = unix_now();
        }
        if let Err(err) = state::save(&config.state_dir, &states) {
            warn!(dir = %config.state_dir.display(), %err, "writing the feeds' state");
        }
        outcomes.push(outcome);
    }
    outcomes
}

fn update_one(config: &Config, feed: &Feed, state: &mut FeedState, today: Date) -> Outcome {
    let file = config.policy_dir.join(feed.file_name());
    let target = match feed.mode {
        FeedMode::Apply => file.clone(),
        FeedMode::Propose => PathBuf::from(format!("{}.proposed", file.display())),
    };
    let outcome = |result, detail: String, entries| Outcome {
        feed: feed.id.clone(),
        result,
        detail,
        file: None,
        entries,
    };
    let in_place = file.exists();
    // Without the file, the validators describe nothing we have: ask for the whole list.
    let (etag, modified) = if in_place || feed.mode == FeedMode::Propose {
        (state.etag.as_deref(), state.last_modified.as_deref())
    } else {
        (None, None)
    };
    // Microsoft 365 says whether its list moved: ask that first.
    let m365_version = match &feed.version_url {
        None => None,
        Some(url) => match fetch::m365_version(feed, url) {
            Ok(v) if in_place && state.version.as_ref() == Some(&v) => {
                return outcome(
                    Result::Unchanged,
                    format!("Microsoft 365's version {v} is the one in force"),
                    state.entries,
                );
            }
            Ok(v) => Some(v),
            Err(e) => return outcome(Result::Failed, e, state.entries),
        },
    };
    let fetched = match fetch::fetch(feed, etag, modified) {
        Ok(f) => f,
        Err(e) => return outcome(Result::Failed, e, state.entries),
    };
    let (bytes, etag, last_modified) = match fetched {
        fetch::Fetched::NotModified => {
            return outcome(
                Result::Unchanged,
                "not modified (HTTP 304)".into(),
                state.entries,
            );
        }
        fetch::Fetched::Body {
            bytes,
            etag,
            last_modified,
        } => (bytes, etag, last_modified),
    };
    let hash = sha256(&bytes);
    if in_place && state.hash.as_deref() == Some(hash.as_str()) {
        state.etag = etag;
        state.last_modified = last_modified;
        return outcome(
            Result::Unchanged,
            "the same list as the last good one".into(),
            state.entries,
        );
    }
    let origin = FeedOrigin {
        feed: feed.id.clone(),
        url: feed.url.clone(),
        version: etag.clone(),
    };
    let (imported, version) = match crate::import::generate(&feed.import, &bytes, today, &origin) {
        Ok((imported, version)) => (imported, version.or(m365_version)),
        Err(e) => return outcome(Result::Malformed, format!("{e:#}"), state.entries),
    };
    if in_place && version.is_some() && version == state.version {
        state.etag = etag;
        state.last_modified = last_modified;
        state.hash = Some(hash);
        return outcome(
            Result::Unchanged,
            format!(
                "the publisher's version {} is the one in force",
                version.unwrap_or_default()
            ),
            state.entries,
        );
    }
    let previous = if in_place { state.entries } else { 0 };
    if let Some(why) = guard::refuse(feed, &imported.distinct, previous) {
        return outcome(Result::Refused, why, state.entries);
    }
    // Checked as the daemon would load it: the whole policy with this file in place.
    let candidate = match parse_vendor_file(&file, &imported.text) {
        Ok(c) => c,
        Err(e) => {
            return outcome(
                Result::Malformed,
                format!("the generated file does not parse (a bug, please report it): {e}"),
                state.entries,
            );
        }
    };
    if let Err(e) = config.compile_with_candidate(&config.policy_dir, candidate, today) {
        return outcome(
            Result::Malformed,
            format!("the policy with this list does not compile: {e:#}"),
            state.entries,
        );
    }
    if let Err(e) = crate::atomic_file::write_bytes(
        &target,
        crate::atomic_file::Existing::Replace,
        imported.text.as_bytes(),
    ) {
        return outcome(
            Result::Failed,
            format!("writing {}: {e}", target.display()),
            state.entries,
        );
    }
    let entries = imported.distinct.len();
    let result = match feed.mode {
        FeedMode::Apply => {
            state.etag = etag;
            state.last_modified = last_modified;
            state.version = version;
            state.hash = Some(hash);
            state.entries = entries;
            Result::Updated
        }
        // The list in force is still the old one: its validators stay.
        FeedMode::Propose => Result::Proposed,
    };
    Outcome {
        feed: feed.id.clone(),
        result,
        detail: format!("{}; written to {}", imported.describe(), target.display()),
        file: Some(target),
        entries,
    }
}

/// Each of `config`'s feeds with its recorded state (a feed never fetched has the default).
pub fn states(config: &Config) -> Vec<(&str, FeedState)> {
    let mut recorded = state::load(&config.state_dir);
    config
        .feeds
        .iter()
        .map(|f| (f.id.as_str(), recorded.remove(&f.id).unwrap_or_default()))
        .collect()
}

/// The feeds of `config` due for a fetch at `now` (unix seconds): never fetched, or
/// fetched at least their `refresh_s` ago.
pub fn due(config: &Config, now: i64) -> Vec<String> {
    states(config)
        .into_iter()
        .zip(&config.feeds)
        .filter(|((_, state), feed)| now - state.last_attempt_unix >= feed.refresh.as_secs() as i64)
        .map(|((id, _), _)| id.to_string())
        .collect()
}
