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
