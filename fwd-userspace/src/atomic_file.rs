//! Writing a file whole or not at all: a temporary file in the same directory, written and
//! flushed to disk, then moved into place (`tempfile`), and the directory flushed after. A
//! reader, or a crash, sees the old file or the new one, never a part. The one way fwd
//! writes its state (`rules.json`, `learned.json`) and the files a command writes
//! (`fwd export --output`, `fwd import --output`).

use std::{
    fs::{File, Permissions},
    io::{self, BufWriter, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::Path,
};

/// Whether a write may replace a file already at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it, keeping its permissions.
    Replace,
    /// Fail with `io::ErrorKind::AlreadyExists` (checked as the file goes into place, so a
    /// file created meanwhile is never replaced).
    Keep,
}

/// Writes `path` with what `fill` writes into the buffered temporary file; returns what
/// `fill` returned. A new file gets the mode `File::create` would give it (0666 less the
/// umask). On an error the temporary file is removed and `path` is untouched.
pub fn write<T>(
    path: &Path,
    existing: Existing,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> io::Result<T>,
) -> io::Result<T> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        )
    })?;
    let permissions = match (existing, std::fs::metadata(path)) {
        (Existing::Replace, Ok(meta)) => meta.permissions(),
        _ => Permissions::from_mode(0o666),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut temp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(permissions)
        .tempfile_in(dir)?;
    let value = {
        let mut out = BufWriter::with_capacity(1 << 16, temp.as_file_mut());
        let value = fill(&mut out)?;
        out.flush()?;
        value
    };
    temp.as_file().sync_all()?;
    match existing {
        Existing::Replace => temp.persist(path).map_err(|e| e.error)?,
        Existing::Keep => temp.persist_noclobber(path).map_err(|e| e.error)?,
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(value)
}

/// `write` of bytes already in memory.
pub fn write_bytes(path: &Path, existing: Existing, bytes: &[u8]) -> io::Result<()> {
    write(path, existing, |out| out.write_all(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fwd-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_keeping_permissions_or_refuses() {
        let dir = scratch("replace");
        let path = dir.join("a.toml");
        write_bytes(&path, Existing::Keep, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        let err = write_bytes(&path, Existing::Keep, b"two").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_bytes(&path, Existing::Replace, b"three").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"three");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failed_fill_leaves_the_old_file_and_no_temporary() {
        let dir = scratch("fail");
        let path = dir.join("state.json");
        write_bytes(&path, Existing::Replace, b"old").unwrap();
        let err = write(&path, Existing::Replace, |out| {
            out.write_all(b"half")?;
            Err::<(), _>(io::Error::other("the writer gave up"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "the writer gave up");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        // A new file: the mode File::create gives (0666 less the umask, never wider).
        let fresh = dir.join("fresh");
        write_bytes(&fresh, Existing::Keep, b"x").unwrap();
        let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o666, 0, "{mode:o}");
        assert_ne!(mode & 0o600, 0, "{mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
