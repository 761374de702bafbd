//! What a fetched list must pass before it replaces the last good one: a list that shrank
//! by more than a share, a prefix too wide to be one vendor's, or private addresses are
//! signs of a broken or hostile source, and the last good list stays.

use ipnet::IpNet;

use crate::config::Feed;

/// Why a list is refused, or `None` if it may replace the last good one (`previous`
/// distinct prefixes; 0 if there is none).
pub fn refuse(feed: &Feed, prefixes: &[IpNet], previous: usize) -> Option<String> {
    if prefixes.is_empty() {
        return Some("the list is empty".into());
    }
    let kept = prefixes.len() * 100;
    if previous > 0 && kept < previous * (100 - usize::from(feed.max_shrink_percent)) {
        return Some(format!(
            "the list shrank from {previous} to {} prefixes, more than max_shrink_percent ({}%)",
            prefixes.len(),
            feed.max_shrink_percent
        ));
    }
    let too_wide: Vec<String> = prefixes
        .iter()
        .filter(|n| match n {
            IpNet::V4(v4) => v4.prefix_len() < feed.widest_ipv4,
            IpNet::V6(v6) => v6.prefix_len() < feed.widest_ipv6,
        })
        .take(3)
        .map(ToString::to_string)
        .collect();
    if !too_wide.is_empty() {
        return Some(format!(
            "{} is wider than widest_ipv4 /{} or widest_ipv6 /{}",
            too_wide.join(", "),
            feed.widest_ipv4,
            feed.widest_ipv6
        ));
    }
    if !feed.allow_private {
        let private: Vec<String> = prefixes
            .iter()
            .filter(|n| is_private(n))
            .take(3)
            .map(ToString::to_string)
            .collect();
        if !private.is_empty() {
            return Some(format!(
                "{} is private, loopback, link-local or multicast, which no vendor publishes (allow_private = true if this feed is an internal list)",
                private.join(", ")
            ));
        }
    }
    None
}

/// Whether `net` overlaps an address range no public vendor list holds.
fn is_private(net: &IpNet) -> bool {
    const RANGES: &[&str] = &[
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "224.0.0.0/3",
        "::/127",
        "::ffff:0:0/96",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    ];
    RANGES.iter().any(|r| {
        let r: IpNet = r.parse().expect("a valid range");
        r.contains(net) || net.contains(&r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed() -> Feed {
        let text = "[[feed]]\nid = \"f\"\nurl = \"https://example.com/l.txt\"\nservice = \"s\"\nports = \"443\"\n";
        crate::config::Config::parse(std::path::Path::new("/etc/fwd/fwd.toml"), text)
            .unwrap()
            .feeds
            .remove(0)
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn a_good_list_passes_and_each_sign_of_trouble_is_refused() {
        let f = feed();
        let good = nets(&["198.51.100.0/24", "203.0.113.0/25", "2001:db8:100::/48"]);
        assert_eq!(refuse(&f, &good, 0), None);
        assert_eq!(refuse(&f, &good, 6), None, "half of 6 is allowed");
        assert!(refuse(&f, &[], 3).unwrap().contains("empty"));
        let shrunk = refuse(&f, &good, 7).unwrap();
        assert!(shrunk.contains("shrank from 7 to 3"), "{shrunk}");
        let wide = refuse(&f, &nets(&["198.51.100.0/24", "0.0.0.0/0"]), 0).unwrap();
        assert!(wide.contains("0.0.0.0/0 is wider"), "{wide}");
        assert!(
            refuse(&f, &nets(&["2000::/3"]), 0)
                .unwrap()
                .contains("wider")
        );
        let private = refuse(&f, &nets(&["198.51.100.0/24", "10.1.0.0/16"]), 0).unwrap();
        assert!(private.contains("10.1.0.0/16 is private"), "{private}");
        assert!(refuse(&f, &nets(&["fd00::/64"]), 0).is_some());
        assert!(
            refuse(&f, &nets(&["8.0.0.0/7"]), 0).is_some(),
            "wider than /8"
        );
        let mut internal = f.clone();
        internal.allow_private = true;
        assert_eq!(refuse(&internal, &nets(&["10.1.0.0/16"]), 0), None);
    }
}
