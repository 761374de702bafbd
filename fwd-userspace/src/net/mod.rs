//! This host's interfaces: their addresses (getifaddrs; a gateway's own are exempt), and
//! what rtnetlink says of them (`links`).

pub mod links;

use std::net::IpAddr;

use ipnet::IpNet;

/// The addresses of every interface in this network namespace, as host prefixes.
pub fn own_addresses() -> Vec<IpNet> {
    let mut out: Vec<IpNet> = addresses(None).into_iter().map(IpNet::from).collect();
    out.sort();
    out.dedup();
    out
}

/// The addresses of interface `iface` (all interfaces if `None`).
pub fn addresses(iface: Option<&str>) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|ifa| iface.is_none_or(|name| ifa.interface_name == name))
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// The forwarding switches of this network namespace (IPv4, IPv6).
const FORWARDING: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// Turns IP forwarding (IPv4 and IPv6) on or off where it is not so already. Without IPv6
/// (disabled at boot) its switch does not exist, which is fine.
pub fn set_ip_forwarding(on: bool) -> std::io::Result<()> {
    let value = if on { "1" } else { "0" };
    for path in FORWARDING {
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current.trim() == value {
            continue;
        }
        match std::fs::write(path, value) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(std::io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    Ok(())
}
