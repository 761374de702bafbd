//! The proxy's listening sockets outlive the process, so DNS is answered across a restart
//! or a crash: queries that arrive while fwd is down wait in the sockets' queues.
//!
//! At start the proxy takes the sockets the service manager passes (`LISTEN_FDS`, as
//! systemd does for socket activation and when it hands back its file descriptor store),
//! and binds only the addresses none of them serves. Each socket in use is then handed to
//! the store (`FDSTORE=1`, named `dns-udp-ADDR-PORT` / `dns-tcp-ADDR-PORT`; the unit sets
//! `FileDescriptorStoreMax=`), so the next run gets it back. A passed socket no listen
//! address wants any more is closed and, if it came from the store, taken out of it.
//! Outside a service manager (no `LISTEN_FDS`, no `NOTIFY_SOCKET`) the proxy binds its
//! addresses as before.

use std::{
    net::SocketAddr,
    os::fd::{AsFd, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
};

use nix::sys::socket::{SockType, getsockopt, sockopt};
use tracing::{info, warn};

/// A socket the service manager passed, not yet claimed.
struct Passed {
    fd: OwnedFd,
    name: String,
    kind: SockType,
    local: Option<SocketAddr>,
}

/// The sockets passed at start (`LISTEN_FDS`).
pub struct Inherited {
    passed: Vec<Passed>,
}

/// The name a socket is stored under: `:` may not appear in one.
pub fn store_name(kind: &str, addr: SocketAddr) -> String {
    format!("dns-{kind}-{}-{}", addr.ip(), addr.port()).replace(':', ".")
}

impl Inherited {
    /// Takes the passed sockets, if this process was given any. The variables stay set
    /// (removing them is not safe once threads run); programs fwd starts ignore them, as
    /// `LISTEN_PID` names fwd, and do not get the descriptors (close-on-exec).
    pub fn take() -> Self {
        // Once per process: the variables stay set, and a second take would own the same
        // descriptors twice.
        static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Self { passed: Vec::new() };
        }
        let fds: Vec<(RawFd, String)> = match sd_notify::listen_fds_with_names(false) {
            Ok(fds) => fds.collect(),
            Err(err) => {
                warn!(%err, "DNS proxy: the passed sockets (LISTEN_FDS) do not read; binding the listen addresses instead");
                Vec::new()
            }
        };
        let passed = fds
            .into_iter()
            .map(|(raw, name)| {
                // SAFETY: the service manager passed these descriptors to this process
                // (LISTEN_PID is ours); nothing else owns them.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                let kind = getsockopt(&fd, sockopt::SockType).unwrap_or(SockType::Raw);
                let local = nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(raw)
                    .ok()
                    .and_then(|a| socket_addr(&a));
                Passed {
                    fd,
                    name,
                    kind,
                    local,
                }
            })
            .collect();
        Self { passed }
    }

    fn claim(&mut self, kind: SockType, addr: SocketAddr) -> Option<OwnedFd> {
        let i = self
            .passed
            .iter()
            .position(|p| p.kind == kind && p.local == Some(addr))?;
        let p = self.passed.swap_remove(i);
        info!(%addr, kind = ?kind, name = %p.name, "DNS proxy: listening on a socket passed by the service manager (kept from an earlier run or by socket activation)");
        Some(p.fd)
    }

    /// The passed UDP socket bound to `addr`, if any.
    pub fn udp(&mut self, addr: SocketAddr) -> Option<std::net::UdpSocket> {
        self.claim(SockType::Datagram, addr)
            .map(std::net::UdpSocket::from)
    }

    /// The passed TCP listening socket bound to `addr`, if any.
    pub fn tcp(&mut self, addr: SocketAddr) -> Option<std::net::TcpListener> {
        self.claim(SockType::Stream, addr)
            .map(std::net::TcpListener::from)
    }

    /// Closes the passed sockets nothing claimed, taking the stored ones out of the store.
    pub fn release_rest(self) {
        for p in self.passed {
            warn!(name = %p.name, local = ?p.local, "DNS proxy: a passed socket no listen address wants; closed");
            if p.name.starts_with("dns-")
                && let Err(err) = sd_notify::notify(
                    false,
                    &[
                        sd_notify::NotifyState::FdStoreRemove,
                        sd_notify::NotifyState::FdName(&p.name),
                    ],
                )
            {
                warn!(%err, name = %p.name, "DNS proxy: taking a socket out of the service manager's store");
            }
        }
    }
}

/// With the proxy off: closes the passed sockets and takes the stored ones out of the
/// store.
pub fn release_passed_sockets() {
    Inherited::take().release_rest();
}

/// Hands `fd` to the service manager's file descriptor store under `name` (nothing
/// outside one). Storing a socket that is in the store already changes nothing.
pub fn store(fd: BorrowedFd<'_>, name: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(err) = sd_notify::notify_with_fds(
        false,
        &[
            sd_notify::NotifyState::FdStore,
            sd_notify::NotifyState::FdName(name),
        ],
        &[fd],
    ) {
        warn!(%err, name, "DNS proxy: handing a socket to the service manager's store failed; a restart rebinds it, and queries during the restart go unanswered");
    }
}

/// Stores `socket` under its kind and address.
pub fn store_socket(socket: &impl AsFd, kind: &str, addr: SocketAddr) {
    store(socket.as_fd(), &store_name(kind, addr));
}

fn socket_addr(a: &nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_hold_no_colon() {
        assert_eq!(
            store_name("udp", "192.0.2.1:53".parse().unwrap()),
            "dns-udp-192.0.2.1-53"
        );
        assert_eq!(
            store_name("tcp", "[fd00::1]:5353".parse().unwrap()),
            "dns-tcp-fd00..1-5353"
        );
    }
}
