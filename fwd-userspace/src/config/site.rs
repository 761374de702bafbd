//! What the site adds to the vendor files: the DNS steering rule.

use std::path::Path;

use crate::policy::{Level, Rule, Vendor, VendorPolicy};

use super::{Dns, STEER_RULE, STEER_VENDOR};

/// With `[dns] steer`, the LAN's DNS to any address must get past the gateway's program
/// to the redirect in the kernel's stack (which hands it to the proxy); this rule lets it
/// through and records the flow, so the proxy's replies pass back.
pub(super) fn steer_policy(d: &Dns, file: &Path) -> VendorPolicy {
    use crate::policy::{Direction, PortRange, PortSide, Protocol, Remote};
    VendorPolicy {
        vendor: Vendor {
            id: STEER_VENDOR.to_string(),
            name: "fwd".to_string(),
            source: Some(file.display().to_string()),
            reviewed: None,
            notes: Some("Added by [dns] steer: the LAN's DNS goes to fwd's proxy.".to_string()),
        },
        rules: vec![Rule {
            id: STEER_RULE.to_string(),
            service: "DNS to the gateway's proxy ([dns] steer)".to_string(),
            purpose: None,
            level: Level::Mandatory,
            profile: None,
            region: None,
            direction: Direction::Egress,
            protocols: vec![Protocol::Udp, Protocol::Tcp],
            ports: vec![PortRange { lo: 53, hi: 53 }],
            port_side: PortSide::Remote,
            related: false,
            remotes: vec![Remote::Any],
            not_before: None,
            not_after: None,
            notes: None,
            todo: None,
            location: d.location.clone(),
        }],
        file: file.to_path_buf(),
    }
}
