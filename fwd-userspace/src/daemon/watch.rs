//! Reloading when the policy directory or the config file changes on disk.
//!
//! Editors and deployment tools write a file in several steps (a temporary file, a rename,
//! a chmod), and `git pull` touches many files at once; changes closer together than the
//! debounce interval make one reload, after the last of them.
//!
//! A Kubernetes ConfigMap mounted as the policy directory changes differently: the kubelet
//! writes the new files into a new `..<timestamp>` directory, points a `..data_tmp` symlink
//! at it, renames that over `..data` (the files are symlinks through `..data`), and removes
//! the old directory. The rename of `..data` is the change; the watch is set up again after
//! each change (the directories it watched are gone, and so may the policy directory be,
//! deleted and created again), and a periodic hash of the files the policy is read from
//! catches whatever an event missed.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
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
    _watcher: Option<Arc<Mutex<RecommendedWatcher>>>,
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

/// How often the files the policy is read from are hashed, to catch a change no event told.
pub const HASH_CHECK: Duration = Duration::from_secs(10);

/// Whether a changed path is one the policy depends on: a `.toml` file in the policy
/// directory (not an editor's swap or backup file), a ConfigMap's `..data` symlink (in the
/// policy directory, or in the config file's when both come from one ConfigMap), the
/// policy directory itself (deleted or created again), or the config file.
fn relevant(
    path: &Path,
    policy_dir: &Path,
    config_name: Option<&OsString>,
    config_dir: &Path,
) -> bool {
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    (path.starts_with(policy_dir) && is_toml)
        || path == policy_dir
        || ((path.parent() == Some(policy_dir) || path.parent() == Some(config_dir))
            && path.file_name().is_some_and(|n| n == "..data"))
        || (path.parent() == Some(config_dir)
            && path.file_name() == config_name.map(std::ffi::OsString::as_os_str))
}

/// A hash of what the policy is read from: the config file and every `.toml` file below
/// the policy directory (through symlinks, as the loader reads them), names and contents.
pub fn files_hash(policy_dirs: &[PathBuf], config_file: &Path) -> [u8; 32] {
    use sha2::Digest as _;
    let mut files = vec![config_file.to_path_buf()];
    let mut dirs = policy_dirs.to_vec();
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            // `..data` and `..<timestamp>` are reached through the files' symlinks.
            if hidden {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hash = sha2::Sha256::new();
    for file in files {
        hash.update(file.as_os_str().as_encoded_bytes());
        hash.update([0]);
        hash.update(std::fs::read(&file).unwrap_or_default());
        hash.update([0]);
    }
    hash.finalize().into()
}

/// (Re)places the watches: the policy directory (recursively, if it exists) and the
/// directory of the config file (which holds the policy directory in the usual layout, so
/// a policy directory created again is seen).
fn watch_all(watcher: &mut RecommendedWatcher, policy_dirs: &[PathBuf], config_dir: &Path) {
    for dir in policy_dirs {
        let _ = watcher.unwatch(dir);
    }
    let _ = watcher.unwatch(config_dir);
    let dirs = policy_dirs
        .iter()
        .map(|d| (d.as_path(), RecursiveMode::Recursive))
        .chain([(config_dir, RecursiveMode::NonRecursive)]);
    for (dir, mode) in dirs {
        match watcher.watch(dir, mode) {
            Ok(()) => debug!(dir = %dir.display(), "watching for changes"),
            Err(err) => warn!(
                dir = %dir.display(),
                %err,
                "cannot watch; changes there are seen by the periodic check, `fwd reload` or SIGHUP"
            ),
        }
    }
}

/// Watches `config`'s policy directory (recursively) and its config file, and hashes what
/// they hold every `hash_check`; a watch that cannot be set up is logged, and the check,
/// SIGHUP and `fwd reload` still work.
pub fn spawn(config: &Config, debounce: Duration, hash_check: Duration) -> Changes {
    spawn_with(config, debounce, hash_check, true)
}

/// `spawn`, with the file watches (`events`) or with the periodic check alone.
fn spawn_with(config: &Config, debounce: Duration, hash_check: Duration, events: bool) -> Changes {
    // The site's policy directory, and the package's under it if there is one.
    let policy_dirs: Vec<PathBuf> = std::iter::once(config.policy_dir.clone())
        .chain(config.vendor_policy_dir.clone())
        .collect();
    let config_dir = config
        .file
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let config_name = config.file.file_name().map(OsString::from);
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<PathBuf>();
    // Held by the task: without a watcher the channel stays open and the check runs on.
    let keep_open = raw_tx.clone();
    let filter_dirs = policy_dirs.clone();
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
            if filter_dirs
                .iter()
                .any(|d| relevant(&path, d, config_name.as_ref(), &filter_config_dir))
            {
                let _ = raw_tx.send(path);
            }
        }
    });
    let watcher = match watcher.map(|w| Some(w).filter(|_| events)) {
        Ok(None) => None,
        Ok(Some(mut w)) => {
            watch_all(&mut w, &policy_dirs, &config_dir);
            Some(Arc::new(Mutex::new(w)))
        }
        Err(err) => {
            warn!(%err, "cannot watch the policy files; the periodic check, `fwd reload` or SIGHUP reload");
            None
        }
    };
    let (tx, rx) = mpsc::channel(1);
    let rewatch = watcher.clone();
    let config_file = config.file.clone();
    tokio::spawn(async move {
        let _keep_open = keep_open;
        let mut loaded = files_hash(&policy_dirs, &config_file);
        let mut check = tokio::time::interval(hash_check);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            let mut last = tokio::select! {
                path = raw_rx.recv() => match path {
                    Some(path) => path,
                    None => return,
                },
                _ = check.tick() => {
                    let now = files_hash(&policy_dirs, &config_file);
                    if now == loaded {
                        continue;
                    }
                    debug!("the policy files changed with no event seen");
                    policy_dirs[0].clone()
                }
            };
            // Wait until the changes stop for a whole debounce interval.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(path)) => last = path,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // The directories watched may have been replaced (a ConfigMap's `..<timestamp>`,
            // a policy directory created again): watch what is there now.
            if let Some(w) = &rewatch {
                watch_all(
                    &mut w.lock().expect("watcher lock"),
                    &policy_dirs,
                    &config_dir,
                );
            }
            loaded = files_hash(&policy_dirs, &config_file);
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
        // A ConfigMap's swap, in the policy directory or the config's (one ConfigMap).
        assert!(r("/etc/fwd/policies/..data"));
        assert!(r("/etc/fwd/..data"));
        assert!(!r("/etc/fwd/policies/..data_tmp"));
        assert!(!r("/etc/fwd/policies/..2026_12_02_01_00_00.4000"));
        // The policy directory itself, deleted or created again.
        assert!(r("/etc/fwd/policies"));
    }

    /// What the kubelet does to a mounted ConfigMap (`AtomicWriter`): the files go into a
    /// new `..<timestamp>` directory, `..data_tmp` is pointed at it and renamed over
    /// `..data`, the visible names are symlinks through `..data` (made the first time),
    /// and the old directory is removed.
    fn kubelet_update(dir: &Path, n: u32, files: &[(&str, String)]) {
        let ts = format!("..2026_12_02_01_00_{n:02}.{}", 4000 + n);
        std::fs::create_dir(dir.join(&ts)).unwrap();
        for (name, text) in files {
            let path = dir.join(&ts).join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let old = std::fs::read_link(dir.join("..data")).ok();
        std::os::unix::fs::symlink(&ts, dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        // The visible names: a key's file, or the top directory of a key's `items: path`.
        for (name, _) in files {
            let top = Path::new(name).components().next().unwrap().as_os_str();
            let visible = dir.join(top);
            if std::fs::symlink_metadata(&visible).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(top), visible).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(dir.join(old)).unwrap();
        }
    }

    fn policy(marker: u32) -> String {
        format!(
            "[vendor]\nid = \"v\"\nname = \"V {marker}\"\n[[rule]]\nid = \"r\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [{}]\nremote = [\"192.0.2.0/24\"]\n",
            1000 + marker
        )
    }

    /// A scratch site whose policy directory is a ConfigMap mount, and its config.
    fn configmap_site() -> (tempfile::TempDir, Config) {
        let root = tempfile::tempdir().unwrap();
        let policies = root.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        kubelet_update(&policies, 0, &[("v.toml", policy(0))]);
        let file = root.path().join("fwd.toml");
        std::fs::write(&file, "policy_dir = \"policies\"\n").unwrap();
        let config = Config::load(&file).unwrap();
        assert_eq!(config.policy_dir, policies);
        (root, config)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_configmap_updates_are_three_changes_with_the_new_content() {
        let (_root, config) = configmap_site();
        // The hash check is out of the way: the events alone must do it.
        let mut changes = spawn(
            &config,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        for n in 1..=3 {
            kubelet_update(&config.policy_dir, n, &[("v.toml", policy(n))]);
            let changed = tokio::time::timeout(Duration::from_secs(3), changes.recv()).await;
            assert!(changed.is_ok(), "update {n} was not seen");
            let text = std::fs::read_to_string(config.policy_dir.join("v.toml")).unwrap();
            assert!(text.contains(&format!("V {n}")), "update {n}: {text}");
            let set = crate::policy::load_dir(&config.policy_dir).unwrap();
            assert_eq!(set.vendors[0].vendor.name, format!("V {n}"));
        }
        // Each update is one change.
        let extra = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        assert!(extra.is_err(), "a change too many: {extra:?}");
    }

    /// One ConfigMap for the config and the policies (`items: path: policies/v.toml`): the
    /// config file and the policy directory are symlinks through `..data`, and the
    /// directories first watched go with the first update.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_configmap_for_config_and_policies_is_followed_through_three_updates() {
        let root = tempfile::tempdir().unwrap();
        let mount = root.path();
        let files = |n: u32| {
            [
                (
                    "fwd.toml",
                    format!("policy_dir = \"policies\"\n# update {n}\n"),
                ),
                ("policies/v.toml", policy(n)),
            ]
        };
        kubelet_update(mount, 0, &files(0));
        let config = Config::load(&mount.join("fwd.toml")).unwrap();
        let mut changes = spawn(
            &config,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        for n in 1..=3 {
            kubelet_update(mount, n, &files(n));
            let changed = tokio::time::timeout(Duration::from_secs(3), changes.recv()).await;
            assert!(changed.is_ok(), "update {n} was not seen");
            let set = crate::policy::load_dir(&config.policy_dir).unwrap();
            assert_eq!(set.vendors[0].vendor.name, format!("V {n}"));
            let text = std::fs::read_to_string(&config.file).unwrap();
            assert!(text.contains(&format!("# update {n}")), "{text}");
        }
        let extra = tokio::time::timeout(Duration::from_millis(500), changes.recv()).await;
        assert!(extra.is_err(), "a change too many: {extra:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_policy_directory_deleted_and_created_again_is_followed() {
        let (_root, config) = configmap_site();
        let mut changes = spawn(
            &config,
            Duration::from_millis(100),
            Duration::from_secs(3600),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        std::fs::remove_dir_all(&config.policy_dir).unwrap();
        let gone = tokio::time::timeout(Duration::from_secs(3), changes.recv()).await;
        assert!(gone.is_ok(), "the deletion was not seen");
        std::fs::create_dir(&config.policy_dir).unwrap();
        std::fs::write(config.policy_dir.join("v.toml"), policy(7)).unwrap();
        let back = tokio::time::timeout(Duration::from_secs(3), changes.recv()).await;
        assert!(back.is_ok(), "the new directory was not seen");
        // And it is watched again: a later edit is seen.
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(config.policy_dir.join("v.toml"), policy(8)).unwrap();
        let edit = tokio::time::timeout(Duration::from_secs(3), changes.recv()).await;
        assert!(edit.is_ok(), "an edit in the new directory was not seen");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_hash_check_catches_a_change_no_event_told() {
        let (_root, config) = configmap_site();
        let before = files_hash(std::slice::from_ref(&config.policy_dir), &config.file);
        // No file watches: only the check can see.
        let mut changes = spawn_with(
            &config,
            Duration::from_millis(50),
            Duration::from_millis(300),
            false,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Unchanged files: no change, however often it checks.
        let quiet = tokio::time::timeout(Duration::from_millis(800), changes.recv()).await;
        assert!(quiet.is_err(), "a change with nothing changed");
        kubelet_update(&config.policy_dir, 1, &[("v.toml", policy(1))]);
        assert_ne!(
            files_hash(std::slice::from_ref(&config.policy_dir), &config.file),
            before
        );
        let seen = tokio::time::timeout(Duration::from_secs(3), changes.recv()).await;
        assert!(seen.is_ok(), "no change seen");
    }
}
