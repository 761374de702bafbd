//! `learned.json` under the state directory: the names the proxy learned, kept across a
//! restart (written atomically).

use std::path::{Path, PathBuf};

use super::Saved;

/// The file under `state_dir` that keeps learned names across restarts.
pub const LEARNED_FILE: &str = "learned.json";

pub(super) fn learned_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEARNED_FILE)
}

/// The learned names of the last run; `None` if there is no file or it cannot be read
/// (said in the log: the names are learned again as clients ask).
pub fn load(state_dir: &Path) -> Option<Saved> {
    let path = learned_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read the learned names; they are learned again as clients ask");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(saved) => Some(saved),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "the learned names file is damaged; it is ignored and rewritten");
            None
        }
    }
}

/// Writes `learned.json` atomically (`atomic_file`).
pub fn save(state_dir: &Path, saved: &Saved) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    crate::atomic_file::write_bytes(
        &learned_path(state_dir),
        crate::atomic_file::Existing::Replace,
        &serde_json::to_vec(saved)?,
    )
}
