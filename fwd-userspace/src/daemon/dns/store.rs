//! What the proxy learned, kept across a restart or a crash under the state directory:
//! - `learned.json`, the whole table, written atomically within a second of a change the
//!   journal does not hold (a reload, entries ended, a restore), once the journal has grown
//!   to half the table (`journal_due`), and at a clean stop;
//! - `learned.journal`, one line per entry an answer opened, appended before the answer is
//!   released, so a crash between two writes of `learned.json` forgets nothing a client
//!   was told. Each save sets the journal aside (`learned.journal.saving`) under the daemon's
//!   lock with the table it saves, and removes it once `learned.json` is written.
//!
//! Rewriting the whole table only as the journal grows keeps the cost per learned entry
//! flat: each entry is written about three times in all, where a save every second under
//! a steady stream of answers rewrote a table of 100,000 entries (megabytes) every second.
//!
//! The journal is not synced to disk: it must outlive the process (a `kill -9`), which
//! the page cache gives; a power loss also loses the pinned maps it would be checked
//! against (they are kernel memory), and the next start puts in force what the files hold.

use std::{
    fs::File,
    io::{BufRead as _, Write as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{Saved, table::Entry};

/// The file under `state_dir` that keeps learned names across restarts.
pub const LEARNED_FILE: &str = "learned.json";
/// Entries learned since `learned.json` was last written.
pub const JOURNAL_FILE: &str = "learned.journal";
/// The journal a save in progress covers.
const SAVING_FILE: &str = "learned.journal.saving";
/// Journal lines below which `learned.json` is not rewritten for the journal's sake.
pub const JOURNAL_LINES_MIN: usize = 1024;

/// Whether a journal of `lines` lines since the last save is worth taking into
/// `learned.json` (a table of `table_len` entries): at half the table, so the journal read
/// at start stays a fraction of the table and each entry is written a bounded number of
/// times.
pub fn journal_due(lines: usize, table_len: usize) -> bool {
    lines >= JOURNAL_LINES_MIN.max(table_len / 2)
}

pub(super) fn learned_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEARNED_FILE)
}

/// The learned names of the last run (`learned.json`, then the journal lines written
/// after it); `None` if there is nothing or it cannot be read (said in the log: the names
/// are learned again as clients ask).
pub fn load(state_dir: &Path) -> Option<Saved> {
    let mut saved = load_table(state_dir);
    for name in [SAVING_FILE, JOURNAL_FILE] {
        let path = state_dir.join(name);
        let entries = read_journal(&path);
        if !entries.is_empty() {
            saved
                .get_or_insert_with(Saved::current)
                .entries
                .extend(entries.into_iter().map(Arc::new));
        }
    }
    saved
}

fn load_table(state_dir: &Path) -> Option<Saved> {
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

/// A journal's entries in order; a line that does not read (the last one, cut by a crash
/// in the middle of a write) is left out and said in the log.
fn read_journal(path: &Path) -> Vec<Entry> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read the learned names' journal; its names are learned again as clients ask");
            return Vec::new();
        }
    };
    let mut entries = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        if line.as_ref().is_ok_and(String::is_empty) {
            continue;
        }
        let parsed = line
            .map_err(|e| e.to_string())
            .and_then(|l| serde_json::from_str::<Entry>(&l).map_err(|e| e.to_string()));
        match parsed {
            Ok(entry) => entries.push(entry),
            Err(err) => {
                tracing::warn!(path = %path.display(), line = n + 1, %err, "a line of the learned names' journal does not read; left out");
            }
        }
    }
    entries
}

/// Whether the file at `path` is empty or ends with a newline.
fn ends_a_line(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
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

/// The journal of entries learned since the last save.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    /// Open for appending once something was written.
    file: Option<File>,
    /// The last append failed (said once in the log until one succeeds).
    failing: bool,
    /// Lines for the next `flush`.
    staged: Vec<u8>,
    /// Lines staged since the journal was last set aside.
    lines: usize,
}

impl Journal {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.to_path_buf(),
            file: None,
            failing: false,
            staged: Vec::new(),
            lines: 0,
        }
    }

    /// Lines staged since the journal was last set aside (what no save holds yet).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Adds `entries` to what the next `flush` writes.
    pub fn stage<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) {
        for entry in entries {
            if serde_json::to_writer(&mut self.staged, entry).is_ok() {
                self.staged.push(b'\n');
                self.lines += 1;
            }
        }
    }

    /// Appends what was staged with one write, before the answers that opened it are
    /// released. A failure is logged (once until the journal works again), not returned:
    /// the answers still go out, and `learned.json` takes the entries at the next save.
    pub fn flush(&mut self) {
        if self.staged.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.staged);
        match self.write(&buf) {
            Ok(()) => self.failing = false,
            Err(err) => {
                self.file = None;
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(path = %self.dir.join(JOURNAL_FILE).display(), %err, "cannot append to the learned names' journal; a crash before the next save of learned.json forgets what was learned meanwhile");
                }
            }
        }
    }

    /// `stage`, then `flush`.
    pub fn append<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) {
        self.stage(entries);
        self.flush();
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)?;
            let path = self.dir.join(JOURNAL_FILE);
            let mut file = File::options().create(true).append(true).open(&path)?;
            // A line cut by a crash or a failed write is ended, so the next entry is a
            // line of its own.
            if !ends_a_line(&path)? {
                file.write_all(b"\n")?;
            }
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        file.write_all(buf).inspect_err(|_| {
            // What went out of a failed write may end in the middle of a line.
            self.file = None;
        })
    }

    /// Sets the journal aside for a save of the table as it is now (call it under the lock
    /// that learning takes, with the snapshot); `saved` removes it once the table is
    /// written. A journal set aside by a save that failed stays, and so does this one: both
    /// are read at start, and what they hold is in the next save too.
    pub fn set_aside(&mut self) {
        // The snapshot saved with it holds every line so far.
        self.lines = 0;
        let saving = self.dir.join(SAVING_FILE);
        if saving.exists() {
            return;
        }
        match std::fs::rename(self.dir.join(JOURNAL_FILE), &saving) {
            Ok(()) => self.file = None,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), %err, "cannot set the learned names' journal aside; it is kept whole");
            }
        }
    }
}

/// After `learned.json` was written: the journal it covers is no longer needed.
pub fn saved(state_dir: &Path) {
    match std::fs::remove_file(state_dir.join(SAVING_FILE)) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => {
            tracing::warn!(dir = %state_dir.display(), %err, "cannot remove the learned names' saved journal; it is read again at start (harmless)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, addr: &str, expires_ms: u64) -> Entry {
        Entry {
            chain: vec![name.to_string()],
            addr: addr.parse().unwrap(),
            expires_ms,
            rules: Vec::new(),
            patterns: Vec::new(),
        }
    }

    fn names(saved: &Saved) -> Vec<(String, u64)> {
        saved
            .entries
            .iter()
            .map(|e| (format!("{} {}", e.chain[0], e.addr), e.expires_ms))
            .collect()
    }

    #[test]
    fn the_journal_adds_what_came_after_the_table_and_survives_a_save_cut_short() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(load(d).is_none());
        let mut journal = Journal::new(d);
        journal.append([&entry("a.example", "192.0.2.1", 10)]);
        // Crash before any save: the journal alone.
        assert_eq!(
            names(&load(d).unwrap()),
            [("a.example 192.0.2.1".to_string(), 10)]
        );
        // A save: set aside with the snapshot, then written, then removed.
        journal.set_aside();
        journal.append([&entry("b.example", "192.0.2.2", 20)]);
        let snapshot = Saved {
            entries: vec![Arc::new(entry("a.example", "192.0.2.1", 10))],
            ..Saved::current()
        };
        // Cut short before learned.json was written: nothing lost.
        let got = names(&load(d).unwrap());
        assert_eq!(
            got,
            [
                ("a.example 192.0.2.1".to_string(), 10),
                ("b.example 192.0.2.2".to_string(), 20)
            ]
        );
        save(d, &snapshot).unwrap();
        saved(d);
        assert!(!d.join(SAVING_FILE).exists());
        assert_eq!(names(&load(d).unwrap()), got);
        // A line cut by a crash in the middle of a write is left out, the rest read.
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.join(JOURNAL_FILE))
            .unwrap()
            .write_all(b"{\"chain\":[\"c.exa")
            .unwrap();
        assert_eq!(names(&load(d).unwrap()), got);
        // The next run's first entry after the cut line is read, not glued to it.
        Journal::new(d).append([&entry("d.example", "192.0.2.4", 40)]);
        let mut more = got.clone();
        more.push(("d.example 192.0.2.4".to_string(), 40));
        assert_eq!(names(&load(d).unwrap()), more);
        // A save that failed leaves its set-aside journal: the next one keeps the journal
        // whole beside it, and both are read.
        let mut journal = Journal::new(d);
        journal.set_aside();
        journal.append([&entry("e.example", "192.0.2.5", 50)]);
        journal.set_aside();
        assert!(d.join(SAVING_FILE).exists() && d.join(JOURNAL_FILE).exists());
        more.push(("e.example 192.0.2.5".to_string(), 50));
        assert_eq!(names(&load(d).unwrap()), more);
    }

    #[test]
    fn the_table_is_rewritten_as_the_journal_grows_not_with_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::new(dir.path());
        for n in 0..JOURNAL_LINES_MIN {
            let e = entry(&format!("n{n}.example"), "192.0.2.1", 10);
            journal.stage([&e]);
        }
        journal.flush();
        assert_eq!(journal.lines(), JOURNAL_LINES_MIN);
        // A small table: due at the floor, not before.
        assert!(!journal_due(JOURNAL_LINES_MIN - 1, 10));
        assert!(journal_due(journal.lines(), 10));
        // A large one: at half its size.
        assert!(!journal_due(journal.lines(), 100_000));
        assert!(!journal_due(49_999, 100_000));
        assert!(journal_due(50_000, 100_000));
        // A save takes every line so far.
        journal.set_aside();
        assert_eq!(journal.lines(), 0);
        journal.append([&entry("a.example", "192.0.2.1", 10)]);
        assert_eq!(journal.lines(), 1);
    }

    #[test]
    fn a_journal_that_cannot_be_written_does_not_fail_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let mut journal = Journal::new(&file);
        journal.append([&entry("a.example", "192.0.2.1", 10)]);
        assert!(journal.failing);
        journal.append([&entry("a.example", "192.0.2.1", 10)]);
        assert!(journal.failing);
    }
}
