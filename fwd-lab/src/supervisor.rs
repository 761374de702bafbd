//! The service manager's part, as systemd plays it, for tests outside systemd: a notify
//! socket (`NOTIFY_SOCKET`) that takes the daemon's messages and keeps the descriptors it
//! stores (`FDSTORE=1`, `FDNAME=`, `FDSTOREREMOVE=1`), and a start that passes them back
//! (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`, descriptors from 3 on).

use std::{
    io::IoSliceMut,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{net::UnixDatagram, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::Netns;

pub struct Supervisor {
    socket: UnixDatagram,
    path: PathBuf,
    /// The store: (name, descriptor), in the order stored.
    stored: Vec<(String, OwnedFd)>,
    /// Every message received, in order (`READY=1`, `STATUS=...`, ...).
    pub messages: Vec<String>,
}

impl Supervisor {
    /// A notify socket at `dir/notify.sock`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixDatagram::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket,
            path,
            stored: Vec::new(),
            messages: Vec::new(),
        })
    }

    /// Reads every message sent so far, storing and removing descriptors as they say.
    pub fn collect(&mut self) -> anyhow::Result<()> {
        loop {
            let mut buf = vec![0u8; 4096];
            let mut space = nix::cmsg_space!([RawFd; 16]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(err) => return Err(err).context("reading the notify socket"),
            };
            let mut fds = Vec::new();
            for cmsg in msg.cmsgs()? {
                if let ControlMessageOwned::ScmRights(raw) = cmsg {
                    // SAFETY: descriptors the kernel just installed in this process for us.
                    fds.extend(
                        raw.into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            let len = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..len]).into_owned();
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(str::to_string)
            };
            let name = field("FDNAME=").unwrap_or_else(|| "stored".into());
            if text.lines().any(|l| l == "FDSTORE=1") {
                for fd in fds {
                    // As systemd does: a descriptor of a file already stored is not added
                    // again (the next run stores what it was passed).
                    let known = self.stored.iter().any(|(_, s)| same_file(s, &fd));
                    if !known {
                        self.stored.push((name.clone(), fd));
                    }
                }
            } else if text.lines().any(|l| l == "FDSTOREREMOVE=1") {
                self.stored.retain(|(n, _)| *n != name);
            }
            self.messages.extend(text.lines().map(str::to_string));
        }
    }

    /// The names of the descriptors in the store.
    pub fn stored(&self) -> Vec<String> {
        self.stored.iter().map(|(n, _)| n.clone()).collect()
    }

    /// `fwd ARGS` in `ns` with `NOTIFY_SOCKET` set and the stored descriptors passed as
    /// systemd passes them (after `collect`): `LISTEN_PID` is the daemon's own (set by a
    /// shell that then execs it), the descriptors are 3, 4, ... in store order.
    pub fn command(&mut self, ns: &Netns, fwd: &Path, args: &[&str]) -> anyhow::Result<Command> {
        self.collect()?;
        let mut cmd = ns.command("sh")?;
        cmd.arg("-c")
            .arg(r#"export LISTEN_PID=$$; exec "$0" "$@""#)
            .arg(fwd)
            .args(args)
            .env("NOTIFY_SOCKET", &self.path)
            .env_remove("LISTEN_PID");
        if self.stored.is_empty() {
            cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
            return Ok(cmd);
        }
        let names: Vec<&str> = self.stored.iter().map(|(n, _)| n.as_str()).collect();
        cmd.env("LISTEN_FDS", self.stored.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"));
        let raw: Vec<RawFd> = self.stored.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        // SAFETY: fcntl and dup2 are async-signal-safe; the closure allocates nothing (the
        // vectors are made before the fork).
        unsafe {
            let mut high = vec![0 as RawFd; raw.len()];
            cmd.pre_exec(move || {
                // First above every target number, so no dup2 overwrites a source.
                for (i, &fd) in raw.iter().enumerate() {
                    high[i] = nix::libc::fcntl(fd, nix::libc::F_DUPFD, 100);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, &fd) in high.iter().enumerate() {
                    // dup2 leaves the copy open across exec.
                    if nix::libc::dup2(fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    nix::libc::close(fd);
                }
                Ok(())
            });
        }
        Ok(cmd)
    }
}

/// Whether two descriptors refer to the same file (for sockets, the same socket).
fn same_file(a: &OwnedFd, b: &OwnedFd) -> bool {
    match (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) {
        (Ok(x), Ok(y)) => (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino),
        _ => false,
    }
}
