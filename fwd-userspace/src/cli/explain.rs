//! `fwd explain`: what the compiled policy does with one packet.

use std::{net::IpAddr, process::ExitCode};

use clap::{Subcommand, ValueEnum};
use fwd_common::proto;

use super::args::{CompiledPolicy, PolicyArgs};
use crate::{
    compile::{Evaluator, Probe, Verdict},
    policy::{self, Direction},
};

#[derive(Subcommand, Debug)]
pub(crate) enum ExplainPacket {
    /// A packet from the protected network to REMOTE:PORT.
    Egress {
        protocol: ProtocolArg,
        /// The remote: an address, or a hostname (matched against domain rules).
        #[arg(value_parser = parse_remote_arg)]
        remote: RemoteArg,
        /// The remote port (0 for icmp).
        #[arg(default_value_t = 0)]
        port: u16,
    },
    /// A packet from REMOTE:REMOTE_PORT to LOCAL_PORT on the protected network that is not
    /// return traffic of an allowed flow.
    Ingress {
        protocol: ProtocolArg,
        /// The remote (the packet's source): an address, or a hostname.
        #[arg(value_parser = parse_remote_arg)]
        remote: RemoteArg,
        /// The remote's source port (0 for icmp).
        remote_port: u16,
        /// The local destination port (0 for icmp).
        local_port: u16,
    },
}

/// `explain`'s REMOTE.
#[derive(Clone, Debug)]
pub(crate) enum RemoteArg {
    Address(IpAddr),
    /// A hostname, lowercase.
    Name(String),
}

impl std::fmt::Display for RemoteArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteArg::Address(a) => a.fmt(f),
            RemoteArg::Name(n) => n.fmt(f),
        }
    }
}

fn parse_remote_arg(text: &str) -> Result<RemoteArg, String> {
    if let Ok(addr) = text.parse::<IpAddr>() {
        return Ok(RemoteArg::Address(addr));
    }
    match policy::parse_remote(text.trim_end_matches('.')) {
        Ok(policy::Remote::Host(name)) => Ok(RemoteArg::Name(name)),
        _ => Err(format!(
            "`{text}` is neither an IP address nor a hostname (e.g. 176.121.88.10, 2407:30c0::10, x.sfu.whereby.com)"
        )),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
}

pub(crate) fn explain(
    args: &PolicyArgs,
    json: bool,
    packet: &ExplainPacket,
) -> anyhow::Result<ExitCode> {
    let CompiledPolicy { compiled, .. } = args.compile()?;
    let (direction, protocol, remote, port, local_port) = match packet {
        ExplainPacket::Egress {
            protocol,
            remote,
            port,
        } => (Direction::Egress, protocol, remote, *port, 0),
        ExplainPacket::Ingress {
            protocol,
            remote,
            remote_port,
            local_port,
        } => (
            Direction::Ingress,
            protocol,
            remote,
            *remote_port,
            *local_port,
        ),
    };
    let protocol = match (protocol, remote) {
        (ProtocolArg::Tcp, _) => proto::TCP,
        (ProtocolArg::Udp, _) => proto::UDP,
        (ProtocolArg::Icmp, RemoteArg::Address(IpAddr::V6(_))) => proto::ICMPV6,
        (ProtocolArg::Icmp, _) => proto::ICMP,
    };
    let has_ports = matches!(protocol, proto::TCP | proto::UDP);
    let probe = Probe {
        direction,
        protocol,
        remote: match remote {
            RemoteArg::Address(a) => *a,
            RemoteArg::Name(_) => IpAddr::from([0, 0, 0, 0]),
        },
        port: if has_ports { port } else { 0 },
        local_port: if has_ports { local_port } else { 0 },
    };
    let evaluator = Evaluator::new(&compiled.image);
    let verdict = match remote {
        RemoteArg::Address(_) => evaluator.evaluate(&probe),
        RemoteArg::Name(name) => evaluator.evaluate_name(name, &probe),
    };
    let rule = match verdict {
        Verdict::Allow { rule } => evaluator.rule(rule),
        _ => None,
    };
    let reason = match verdict {
        Verdict::Allow { .. } => "allowed",
        Verdict::NoAddressMatch => "no_address_match",
        Verdict::NoPortMatch { .. } => "no_port_match",
    };
    if json {
        let value = serde_json::json!({
            "verdict": if rule.is_some() { "allow" } else { "deny" },
            "reason": reason,
            "vendor": rule.map(|r| r.vendor.as_str()),
            "rule": rule.map(|r| r.rule.as_str()),
            "service": rule.map(|r| r.service.as_str()),
            "level": rule.map(|r| r.level.as_str()),
            "source": rule.map(|r| format!("{}:{}", r.source.file.display(), r.source.line)),
            "related": rule.map(|r| r.related),
            "needs_dns": matches!(remote, RemoteArg::Name(_)),
            "domain_pattern": match remote {
                RemoteArg::Name(name) => rule.and_then(|r| r.name_pattern(name)),
                RemoteArg::Address(_) => None,
            },
            "direction": direction.as_str(),
            "protocol": protocol,
            "remote": remote.to_string(),
            "remote_port": probe.port,
            "local_port": probe.local_port,
        });
        println!("{value}");
    } else {
        match rule {
            Some(r) => println!(
                "allow{}{}: {} ({}, {}) at {}:{}",
                if r.related {
                    " if related to a live flow with this remote"
                } else {
                    ""
                },
                match remote {
                    RemoteArg::Name(name) => match r.name_pattern(name) {
                        Some(pattern) => format!(
                            " once fwd's DNS proxy resolves {name} (domain rule: {pattern})"
                        ),
                        None => format!(" to whatever {name} resolves to (remote = \"any\")"),
                    },
                    RemoteArg::Address(_) => String::new(),
                },
                r.rule_ref(),
                r.service,
                r.level.as_str(),
                r.source.file.display(),
                r.source.line
            ),
            None => println!(
                "deny: {}",
                match verdict {
                    Verdict::NoAddressMatch => match remote {
                        RemoteArg::Address(_) => format!("no rule covers the address {remote}"),
                        RemoteArg::Name(_) => format!(
                            "no rule names {remote}; give its address to see whether a listed network covers it"
                        ),
                    },
                    _ => match remote {
                        RemoteArg::Name(name) if compiled.image.rules_naming(name).is_empty() =>
                            format!(
                                "no rule names {remote}, and no rule for every address allows this protocol and port; give its address to see whether a listed network covers it"
                            ),
                        _ =>
                            format!("rules cover {remote}, but none of them this protocol and port"),
                    },
                }
            ),
        }
    }
    Ok(ExitCode::from(if rule.is_some() { 0 } else { 1 }))
}
