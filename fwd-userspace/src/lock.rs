//! One daemon at a time: exclusive locks on the state directory's `fwd.lock` and on the pin
//! directory itself, taken before anything is loaded, attached or pinned. The kernel drops
//! them when the process ends, however it ends, so a crash never leaves a stale lock.
//!
//! The pin directory's lock is what another pod or mount namespace sees too (it shares the
//! bpf filesystem, not the control socket); the state directory's names the holder even
//! where its process is not visible (another PID namespace).

use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use nix::fcntl::{Flock, FlockArg};

/// The name of the lock file in `state_dir`.
pub const LOCK_FILE: &str = "fwd.lock";

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct Lock {
    _held: Flock<File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Held(#[from] Held),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Another process holds a lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another fwd daemon is running: {holder} holds the lock on {}; one daemon per state_dir and pin_dir. Stop it first (`systemctl stop fwd`; `fwd status` shows what it enforces), or give this one its own state_dir and pin_dir",
    path.display()
)]
pub struct Held {
    pub path: PathBuf,
    pub holder: Holder,
}

/// Who holds a lock, as far as this process can see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// When that process started (UTC).
    pub started: Option<String>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.pid, &self.started) {
            (Some(pid), Some(started)) => write!(f, "pid {pid} (started {started})"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            _ => f.write_str("a process this one cannot see (another PID namespace)"),
        }
    }
}

/// Locks `state_dir/fwd.lock` (creating the directory), and writes this process's pid and
/// start time into it for people and for a second daemon that cannot see this one's pid.
pub fn state_dir(state_dir: &Path) -> Result<Lock, LockError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LockError::Io { path, source }
    };
    std::fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let path = state_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    let mut held = lock(file, &path)?;
    let me = Holder::of(std::process::id());
    let record = format!(
        "pid {}\nstarted {}\n",
        std::process::id(),
        me.started.as_deref().unwrap_or("?")
    );
    let file: &mut File = &mut held;
    if let Err(e) = file
        .set_len(0)
        .and_then(|()| file.write_all(record.as_bytes()))
    {
        tracing::warn!(path = %path.display(), %e, "writing the lock file");
    }
    Ok(Lock { _held: held })
}

/// Locks the directory `dir` itself (a pin directory: a bpf filesystem holds no files).
pub fn directory(dir: &Path) -> Result<Lock, LockError> {
    let file = File::open(dir).map_err(|source| LockError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(Lock {
        _held: lock(file, dir)?,
    })
}

fn lock(file: File, path: &Path) -> Result<Flock<File>, LockError> {
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(held),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => Err(Held {
            path: path.to_path_buf(),
            holder: holder(&file, path),
        }
        .into()),
        Err((_, e)) => Err(LockError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// The holder of the lock on `file`: the pid `/proc/locks` shows for its inode (0 or absent
/// when it is in another PID namespace), else what the lock file says.
fn holder(file: &File, path: &Path) -> Holder {
    let pid = file.metadata().ok().and_then(|m| {
        let dev = m.dev();
        let key = (
            nix::sys::stat::major(dev),
            nix::sys::stat::minor(dev),
            m.ino(),
        );
        let locks = std::fs::read_to_string("/proc/locks").ok()?;
        locks_holder(&locks, key)
    });
    match pid {
        Some(pid) => Holder::of(pid),
        None => std::fs::read_to_string(path)
            .ok()
            .map(|text| recorded_holder(&text))
            .unwrap_or_default(),
    }
}

/// The pid holding a FLOCK on (major, minor, inode) in `/proc/locks` text.
fn locks_holder(locks: &str, (major, minor, ino): (u64, u64, u64)) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 4567 00:1a:12345 0 EOF"; waiters have "->" second.
        let [_, "FLOCK", _, _, pid, id, ..] = fields.as_slice() else {
            return None;
        };
        let mut parts = id.split(':');
        let found = (
            u64::from_str_radix(parts.next()?, 16).ok()?,
            u64::from_str_radix(parts.next()?, 16).ok()?,
            parts.next()?.parse::<u64>().ok()?,
        );
        let pid: u32 = pid.parse().ok()?;
        (found == (major, minor, ino) && pid != 0).then_some(pid)
    })
}

/// What a lock file written by `DaemonLock::take` says.
fn recorded_holder(text: &str) -> Holder {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(str::to_string)
    };
    Holder {
        pid: value("pid").and_then(|p| p.parse().ok()),
        started: value("started").filter(|s| s != "?"),
    }
}

impl Holder {
    /// `pid` and its start time, from `/proc`.
    fn of(pid: u32) -> Holder {
        Holder {
            pid: Some(pid),
            started: start_time(pid),
        }
    }
}

/// When process `pid` started, as RFC 3339 UTC: its start in clock ticks after boot
/// (`/proc/PID/stat`, field 22) plus the boot time (`/proc/stat`, `btime`).
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from its end.
    let after = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let boot: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0)?;
    let secs = boot + i64::try_from(ticks / hz).ok()?;
    Some(
        chrono::DateTime::from_timestamp(secs, 0)?
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_read_from_proc_locks() {
        let locks = "\
1: POSIX  ADVISORY  WRITE 900 00:1a:77 0 EOF
2: FLOCK  ADVISORY  WRITE 4567 00:2b:12345 0 EOF
2: -> FLOCK  ADVISORY  WRITE 4600 00:2b:12345 0 EOF
3: FLOCK  ADVISORY  WRITE 0 00:2c:5 0 EOF
";
        assert_eq!(locks_holder(locks, (0, 0x2b, 12345)), Some(4567));
        assert_eq!(
            locks_holder(locks, (0, 0x1a, 77)),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(
            locks_holder(locks, (0, 0x2c, 5)),
            None,
            "pid 0: not visible"
        );
        assert_eq!(locks_holder("garbage\n", (0, 0, 0)), None);
    }

    #[test]
    fn the_lock_file_names_its_holder() {
        let h = recorded_holder("pid 42\nstarted 2026-12-02 01:02:03 UTC\n");
        assert_eq!(h.pid, Some(42));
        assert_eq!(h.started.as_deref(), Some("2026-12-02 01:02:03 UTC"));
        assert_eq!(h.to_string(), "pid 42 (started 2026-12-02 01:02:03 UTC)");
        assert_eq!(recorded_holder("pid 42\nstarted ?\n").started, None);
        assert!(Holder::default().to_string().contains("cannot see"));
    }

    #[test]
    fn a_second_lock_is_refused_with_the_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins");
        std::fs::create_dir(&pins).unwrap();
        let first = (state_dir(dir.path()).unwrap(), directory(&pins).unwrap());
        let Err(LockError::Held(held)) = state_dir(dir.path()) else {
            panic!("a second state_dir lock was granted")
        };
        assert_eq!(held.path, dir.path().join(LOCK_FILE));
        assert_eq!(held.holder.pid, Some(std::process::id()));
        assert!(held.holder.started.is_some(), "{held}");
        assert!(held.to_string().contains("another fwd daemon is running"));
        let Err(LockError::Held(held)) = directory(&pins) else {
            panic!("a second pin_dir lock was granted")
        };
        assert_eq!(held.path, pins);
        assert_eq!(held.holder.pid, Some(std::process::id()));
        drop(first);
        state_dir(dir.path()).expect("free again once dropped");
        directory(&pins).expect("free again once dropped");
    }
}
