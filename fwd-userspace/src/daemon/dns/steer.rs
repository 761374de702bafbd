//! `[dns] steer`: an nftables table that redirects the LAN's DNS (UDP and TCP port 53, to
//! any address) arriving on the gateway interfaces to the proxy. The kernel's NAT rewrites
//! the destination to the interface's own address and the replies back, so clients that
//! ask another resolver still get fwd's answers. The gateway program lets such queries
//! through by the rule `fwd/dns-steer` (see `config::steer_policy`).

use std::{io::Write as _, process::Command};

use anyhow::{Context as _, bail};

/// The nftables table fwd owns (`nft list table inet fwd_dns` shows it).
pub const TABLE: &str = "fwd_dns";

/// The ruleset for `interfaces`, redirecting to `port`.
pub fn ruleset(interfaces: &[&str], port: u16) -> String {
    let names = interfaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // Declaring the table first makes the delete succeed when it does not exist yet, so
    // the whole file replaces the table atomically.
    format!(
        "table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain steer {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tiifname {{ {names} }} udp dport 53 redirect to :{port}\n\
         \t\tiifname {{ {names} }} tcp dport 53 redirect to :{port}\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(input: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context(
            "running `nft` for [dns] steer (install the nftables package, or set steer = false)",
        )?;
    child
        .stdin
        .take()
        .context("nft's stdin")?
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft rejected the DNS steering table: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Puts the steering table in place (replacing an earlier one).
pub fn install(interfaces: &[&str], port: u16) -> anyhow::Result<()> {
    nft(&ruleset(interfaces, port))
}

/// Whether the steering table is in place (`nft list table inet fwd_dns` finds it).
pub fn present() -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", TABLE])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes the steering table, if there is one.
pub fn remove() -> anyhow::Result<()> {
    nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_redirects_both_protocols_on_each_interface() {
        let text = ruleset(&["lan0", "lan1"], 53);
        assert!(text.starts_with("table inet fwd_dns\ndelete table inet fwd_dns\n"));
        assert!(text.contains("iifname { \"lan0\", \"lan1\" } udp dport 53 redirect to :53"));
        assert!(text.contains("iifname { \"lan0\", \"lan1\" } tcp dport 53 redirect to :53"));
        assert!(text.contains("type nat hook prerouting priority dstnat"));
    }
}
