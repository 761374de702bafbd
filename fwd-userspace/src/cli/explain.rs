//! `fwd explain`: what the compiled policy does with one packet.

use std::{io::BufRead, net::IpAddr, path::Path, process::ExitCode};

use anyhow::Context as _;

use clap::{Subcommand, ValueEnum};
use fwd_common::proto;

use super::args::{CompiledPolicy, PolicyArgs};
use crate::{
    compile::{Compiled, Evaluator, Probe, Verdict},
    control::DeniedSample,
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

/// One packet to explain.
struct Question {
    direction: Direction,
    protocol: u8,
    remote: RemoteArg,
    /// The remote port.
    port: u16,
    local_port: u16,
}

impl Question {
    fn of(packet: &ExplainPacket) -> Question {
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
        Question {
            direction,
            protocol,
            remote: remote.clone(),
            port,
            local_port,
        }
    }

    /// The packet of a `fwd monitor --json` sample: its remote end, ports and protocol.
    fn of_sample(s: &DeniedSample) -> Result<Question, String> {
        let (direction, remote, port, local_port) = match s.direction.as_str() {
            "out" => (Direction::Egress, s.dst, s.dst_port, s.src_port),
            "in" => (Direction::Ingress, s.src, s.src_port, s.dst_port),
            other => return Err(format!("direction `{other}` (expected out or in)")),
        };
        let remote = remote.ok_or("the sample has no remote address (a malformed packet)")?;
        let protocol = match s.protocol.as_str() {
            "tcp" => proto::TCP,
            "udp" => proto::UDP,
            "icmp" => proto::ICMP,
            "icmpv6" => proto::ICMPV6,
            other => {
                return Err(format!(
                    "protocol `{other}`: fwd's rules speak of tcp, udp and icmp only, so no rule can allow it"
                ));
            }
        };
        Ok(Question {
            direction,
            protocol,
            remote: RemoteArg::Address(remote),
            port,
            local_port: if direction == Direction::Ingress {
                local_port
            } else {
                0
            },
        })
    }

    fn has_ports(&self) -> bool {
        matches!(self.protocol, proto::TCP | proto::UDP)
    }

    fn probe(&self) -> Probe {
        Probe {
            direction: self.direction,
            protocol: self.protocol,
            remote: match &self.remote {
                RemoteArg::Address(a) => *a,
                RemoteArg::Name(_) => IpAddr::from([0, 0, 0, 0]),
            },
            port: if self.has_ports() { self.port } else { 0 },
            local_port: if self.has_ports() { self.local_port } else { 0 },
        }
    }
}

/// What the policy says of one question: whether it allows it, as JSON and as a line.
struct Answer {
    allowed: bool,
    json: serde_json::Value,
    text: String,
}

fn answer(compiled: &Compiled, evaluator: &Evaluator<'_>, q: &Question) -> Answer {
    let probe = q.probe();
    let remote = &q.remote;
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
    let json = serde_json::json!({
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
        "direction": q.direction.as_str(),
        "protocol": q.protocol,
        "remote": remote.to_string(),
        "remote_port": probe.port,
        "local_port": probe.local_port,
    });
    let text = match rule {
        Some(r) => format!(
            "allow{}{}: {} ({}, {}) at {}:{}",
            if r.related {
                " if related to a live flow with this remote"
            } else {
                ""
            },
            match remote {
                RemoteArg::Name(name) => match r.name_pattern(name) {
                    Some(pattern) => {
                        format!(" once fwd's DNS proxy resolves {name} (domain rule: {pattern})")
                    }
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
        None => format!(
            "deny: {}",
            match verdict {
                Verdict::NoAddressMatch => match remote {
                    RemoteArg::Address(_) => format!("no rule covers the address {remote}"),
                    RemoteArg::Name(_) => format!(
                        "no rule names {remote}; give its address to see whether a listed network covers it"
                    ),
                },
                _ => match remote {
                    RemoteArg::Name(name) if compiled.image.rules_naming(name).is_empty() => {
                        format!(
                            "no rule names {remote}, and no rule for every address allows this protocol and port; give its address to see whether a listed network covers it"
                        )
                    }
                    _ => format!("rules cover {remote}, but none of them this protocol and port"),
                },
            }
        ),
    };
    Answer {
        allowed: rule.is_some(),
        json,
        text,
    }
}

pub(crate) fn explain(
    args: &PolicyArgs,
    json: bool,
    packet: &ExplainPacket,
) -> anyhow::Result<ExitCode> {
    let CompiledPolicy { compiled, .. } = args.compile()?;
    let evaluator = Evaluator::new(&compiled.image);
    let a = answer(&compiled, &evaluator, &Question::of(packet));
    if json {
        println!("{}", a.json);
    } else {
        println!("{}", a.text);
    }
    Ok(ExitCode::from(if a.allowed { 0 } else { 1 }))
}

/// `fwd explain --from-sample FILE`: each `fwd monitor --json` line judged again by the
/// policy given (the one on disk by default: "would this pass now?"), with the name the
/// client resolved, if the sample has one. Exit 0 if the policy allows every sample now,
/// 1 if it still denies one, 2 on a line that is not a sample.
pub(crate) fn explain_samples(
    args: &PolicyArgs,
    json: bool,
    from: &Path,
) -> anyhow::Result<ExitCode> {
    let CompiledPolicy { compiled, .. } = args.compile()?;
    let evaluator = Evaluator::new(&compiled.image);
    let reader: Box<dyn BufRead> = if from == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?,
        ))
    };
    let name = if from == Path::new("-") {
        "standard input".to_string()
    } else {
        from.display().to_string()
    };
    let (mut samples, mut denied) = (0, 0);
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let sample: DeniedSample = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{name}:{}: not a `fwd monitor --json` sample: {e} (make them with `fwd monitor --last 20 --json`)",
                n + 1
            )
        })?;
        samples += 1;
        let question = Question::of_sample(&sample);
        let now = question.as_ref().map(|q| answer(&compiled, &evaluator, q));
        // The name the client asked for, judged as a name: does any rule name it?
        let by_name = match (&question, &sample.dns_name) {
            (Ok(q), Some(dns)) => Some(answer(
                &compiled,
                &evaluator,
                &Question {
                    remote: RemoteArg::Name(dns.trim_end_matches('.').to_ascii_lowercase()),
                    ..*q
                },
            )),
            _ => None,
        };
        if !now.as_ref().is_ok_and(|a| a.allowed) {
            denied += 1;
        }
        if json {
            let mut value = serde_json::json!({ "sample": sample });
            match &now {
                Ok(a) => value["now"] = a.json.clone(),
                Err(why) => value["error"] = serde_json::Value::from(why.as_str()),
            }
            if let Some(a) = &by_name {
                value["by_name"] = a.json.clone();
            }
            println!("{value}");
        } else {
            println!("{sample}");
            match &now {
                Ok(a) => println!("  now: {}", a.text),
                Err(why) => println!("  now: deny: {why}"),
            }
            if let (Some(a), Some(dns)) = (&by_name, &sample.dns_name) {
                println!("  as the name {dns}: {}", a.text);
            }
        }
    }
    if !json {
        eprintln!(
            "fwd explain: {samples} sample(s); the policy allows {} of them now, denies {denied}",
            samples - denied
        );
    }
    Ok(ExitCode::from(if denied == 0 { 0 } else { 1 }))
}
