//! Reloading when the policy directory or the config file changes on disk.
//!
//! Editors and deployment tools write a file in several steps (a temporary file, a rename,
//! a chmod), and `git pull` touches many files at once; changes closer together than the
//! debounce interval make one reload, after the last of them.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::config::Config;

/// Settled changes: each item is one reload's worth, named by the last path that changed.
pub struct Changes {
    rx: Option<mpsc::Receiver<PathBuf>>,
    /// Held so the watches stay in place.
    _watcher: Option<RecommendedWatcher>,
}

impl Changes {
    /// The next settled change; waits forever when watching is off.
    pub async fn recv(&mut self) -> Option<PathBuf> {
        match self.rx.as_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

/// A `Changes` that never yields (`[reload] watch = false`).
pub fn disabled() -> Changes {
    Changes {
        rx: None,
        _watcher: None,
    }
}

/// Whether a changed path is one the policy depends on: a `.toml` file in the policy
/// directory (not an editor's swap or backup file), or the config file itself.
fn relevant(
    path: &Path,
    policy_dir: &Path,
    config_name: Option<&OsString>,
    config_dir: &Path,
) -> bool {
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    (path.starts_with(policy_dir) && is_toml)
        || (path.parent() == Some(config_dir)
            && path.file_name() == config_name.map(std::ffi::OsString::as_os_str))
}

/// Watches `config`'s policy directory (recursively) and its config file; a watch that
/// cannot be set up is logged, and reloading by SIGHUP or `fwd reload` still works.
pub fn spawn(config: &Config, debounce: Duration) -> Changes {
    let policy_dir = config.policy_dir.clone();
    let config_dir = config
        .file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let config_name = config.file.file_name().map(OsString::from);
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<PathBuf>();
    let filter_dir = policy_dir.clone();
    let filter_config_dir = config_dir.clone();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                warn!(%err, "watching the policy files");
                return;
            }
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for path in event.paths {
            if relevant(&path, &filter_dir, config_name.as_ref(), &filter_config_dir) {
                let _ = raw_tx.send(path);
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(err) => {
            warn!(%err, "cannot watch the policy files; reload with `fwd reload` or SIGHUP");
            None
        }
    };
    if let Some(w) = watcher.as_mut() {
        for (dir, mode) in [
            (&policy_dir, RecursiveMode::Recursive),
            (&config_dir, RecursiveMode::NonRecursive),
        ] {
            match w.watch(dir, mode) {
                Ok(()) => debug!(dir = %dir.display(), "watching for changes"),
                Err(err) => warn!(
                    dir = %dir.display(),
                    %err,
                    "cannot watch; changes there need `fwd reload` or SIGHUP"
                ),
            }
        }
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(mut last) = raw_rx.recv().await {
            // Wait until the changes stop for a whole debounce interval.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(path)) => last = path,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(last).await.is_err() {
                return;
            }
        }
    });
    Changes {
        rx: Some(rx),
        _watcher: watcher,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_policy_and_config_files_count() {
        let policies = Path::new("/etc/fwd/policies");
        let dir = Path::new("/etc/fwd");
        let name = OsString::from("fwd.toml");
        let r = |p: &str| relevant(Path::new(p), policies, Some(&name), dir);
        assert!(r("/etc/fwd/policies/pexip.toml"));
        assert!(r("/etc/fwd/policies/sub/zoom.toml"));
        assert!(r("/etc/fwd/fwd.toml"));
        assert!(!r("/etc/fwd/policies/.pexip.toml.swp"));
        assert!(!r("/etc/fwd/policies/pexip.toml~"));
        assert!(!r("/etc/fwd/other.toml"));
        assert!(!r("/etc/fwd/fwd.toml.bak"));
    }
}
