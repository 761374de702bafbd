//! The `remote` forms vendors publish: CIDRs, single addresses, dotted netmasks, address
//! ranges (`218.83.160.8-23`, `a.b.c.d-e.f.g.h`, IPv6 ranges), `any`, hostnames and
//! wildcard domains.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv4Subnets, Ipv6Net, Ipv6Subnets};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Remote {
    /// Every address, IPv4 and IPv6.
    Any,
    /// Networks (a range or a netmask is already its minimal CIDR cover).
    Nets(Vec<IpNet>),
    /// An exact hostname; only the DNS proxy can open it.
    Host(String),
    /// `*.example.com`: any name at any depth below `example.com` (not the apex).
    Wildcard(String),
}

/// Parses one `remote` entry, or explains what is wrong with it.
pub fn parse_remote(text: &str) -> Result<Remote, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("any") {
        return Ok(Remote::Any);
    }
    if let Some((addr, mask)) = t.split_once(char::is_whitespace) {
        return parse_netmask(addr.trim(), mask.trim()).map(|n| Remote::Nets(vec![n]));
    }
    if t.contains('/') {
        let net: IpNet = t
            .parse()
            .map_err(|_| format!("`{t}` is not a valid network (address/prefix length)"))?;
        if net.network() != net.addr() {
            return Err(format!(
                "`{t}` has host bits set; the network is {}",
                net.trunc()
            ));
        }
        return Ok(Remote::Nets(vec![net]));
    }
    if let Ok(addr) = t.parse::<IpAddr>() {
        return Ok(Remote::Nets(vec![IpNet::from(addr)]));
    }
    if let Some((start, end)) = t.split_once('-')
        && let Ok(start) = start.trim().parse::<IpAddr>()
    {
        return parse_range(start, end.trim()).map(Remote::Nets);
    }
    if let Some(domain) = t.strip_prefix("*.") {
        check_hostname(domain, t)?;
        return Ok(Remote::Wildcard(domain.to_ascii_lowercase()));
    }
    check_hostname(t, t)?;
    Ok(Remote::Host(t.to_ascii_lowercase()))
}

fn check_hostname(name: &str, whole: &str) -> Result<(), String> {
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    // A name of digits and dots only is a mistyped address, not a hostname.
    let looks_numeric = name.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !labels_ok || !name.contains('.') || looks_numeric || name.len() > 253 {
        return Err(format!(
            "`{whole}` is not an address, network, range, hostname or `*.domain`"
        ));
    }
    Ok(())
}

fn parse_netmask(addr: &str, mask: &str) -> Result<IpNet, String> {
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IPv4 address (dotted netmasks are IPv4 only)"))?;
    let mask: Ipv4Addr = mask
        .parse()
        .map_err(|_| format!("`{mask}` is not a dotted netmask such as 255.255.248.0"))?;
    let bits = u32::from(mask);
    let len = bits.leading_ones();
    if bits.checked_shl(len).unwrap_or(0) != 0 {
        return Err(format!(
            "netmask {mask} is not contiguous (its one-bits must all come first)"
        ));
    }
    let net = Ipv4Net::new(addr, len as u8).map_err(|e| e.to_string())?;
    if net.network() != addr {
        return Err(format!(
            "{addr} {mask} has host bits set; the network is {}",
            net.trunc()
        ));
    }
    Ok(IpNet::V4(net))
}

/// `218.83.160.8-23` (last octet), `a.b.c.d-e.f.g.h`, or `x::1-x::ff`.
fn parse_range(start: IpAddr, end: &str) -> Result<Vec<IpNet>, String> {
    let end_addr: IpAddr = match (start, end.parse::<IpAddr>()) {
        (_, Ok(end)) => end,
        (IpAddr::V4(s), Err(_)) => {
            let last: u8 = end
                .parse()
                .map_err(|_| format!("`{end}` is not an address or a last octet (0-255)"))?;
            let o = s.octets();
            IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], last))
        }
        (IpAddr::V6(_), Err(_)) => {
            return Err(format!("`{end}` is not an IPv6 address"));
        }
    };
    match (start, end_addr) {
        (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
            Ok(Ipv4Subnets::new(s, e, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
            Ok(Ipv6Subnets::new(s, e, 0).map(IpNet::V6).collect())
        }
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => Err(format!(
            "range {start}-{end} runs backwards; write the lower address first"
        )),
        _ => Err(format!("range {start}-{end} mixes IPv4 and IPv6")),
    }
}

/// Every address of `any`, per family.
pub fn any_nets() -> [IpNet; 2] {
    [IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default())]
}
