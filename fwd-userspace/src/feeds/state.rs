//! What each feed's last fetches left (`state_dir/feeds.json`): the validators of the last
//! good list (ETag, Last-Modified, the publisher's version, a hash), its size, and the
//! counts and times the metrics show. Written whole (`atomic_file`).

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "feeds.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// AWS's and Google's `syncToken`.
    pub version: Option<String>,
    /// SHA-256 of the last good list's bytes.
    pub hash: Option<String>,
    /// Distinct prefixes of the last good list.
    pub entries: usize,
    /// Unix time of the last fetch that ended well (updated, unchanged or proposed).
    pub last_success_unix: i64,
    /// Unix time of the last attempt, whatever its result.
    pub last_attempt_unix: i64,
    /// The last refusal or failure, if the last attempt had one.
    pub last_error: Option<String>,
    /// Attempts by result.
    pub results: BTreeMap<String, u64>,
}

/// The state of every feed; a missing or unreadable file is no state.
pub fn load(state_dir: &Path) -> BTreeMap<String, FeedState> {
    std::fs::read(state_dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save(state_dir: &Path, states: &BTreeMap<String, FeedState>) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let json = serde_json::to_vec_pretty(states).map_err(std::io::Error::other)?;
    crate::atomic_file::write_bytes(
        &state_dir.join(FILE),
        crate::atomic_file::Existing::Replace,
        &json,
    )
}
