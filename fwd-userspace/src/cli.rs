//! The `fwd` command line: a thin layer over policy, compile, daemon and lab.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use fwd_common::proto;

use crate::{
    compile::{Compiled, Evaluator, Probe, Verdict, compile},
    daemon::{
        self,
        config::{Config, DEFAULT_CONFIG, DEFAULT_POLICY_DIR},
    },
    lab, policy,
    policy::Direction,
};

#[derive(Parser, Debug)]
#[command(
    name = "fwd",
    version,
    about = "An eBPF egress firewall for the allowlists video and telehealth vendors publish",
    long_about = "fwd compiles vendor allowlists (one TOML file per vendor) into eBPF maps and \
enforces them at line rate: XDP on a gateway's LAN interface drops every outbound packet no \
rule allows, and counts every rule's hits for Prometheus.\n\n\
Start with `fwd check` to see what your policy directory compiles to, `fwd explain` to ask \
what happens to one packet, and `fwd lab` to watch it work in throwaway network namespaces."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile the policies and print a summary; exit 2 with file:line:col on bad input.
    Check(PolicyArgs),
    /// Say what the compiled policy does with one packet (exit 0 allow, 1 deny, 2 error).
    #[command(
        after_help = "Examples:\n  fwd explain egress tcp 52.71.32.188 8089\n  \
fwd explain --json egress udp 176.121.88.10 10000"
    )]
    Explain {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        packet: ExplainPacket,
    },
    /// Run the daemon: load, attach, serve metrics; SIGHUP reloads, SIGINT/SIGTERM detach.
    Run {
        /// The site config.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Build a throwaway lab (client, gateway, vendor namespaces), run fwd on the gateway,
    /// drive traffic and show live counters until Ctrl-C; then remove the lab.
    Lab(lab::LabArgs),
}

#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// Directory of vendor policy files (default: the config's policy_dir, or /etc/fwd/policies).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// A site config; its policy_dir is used unless --policies is given.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ExplainPacket {
    /// A packet from the protected network to REMOTE:PORT.
    Egress {
        protocol: ProtocolArg,
        /// The remote address.
        remote: IpAddr,
        /// The remote port (0 for icmp).
        #[arg(default_value_t = 0)]
        port: u16,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
}

/// Exit code for bad input (and explain's "error").
const EXIT_BAD_INPUT: u8 = 2;

impl PolicyArgs {
    fn policy_dir(&self) -> anyhow::Result<(PathBuf, &'static str)> {
        if let Some(dir) = &self.policies {
            return Ok((dir.clone(), "--policies"));
        }
        if let Some(config) = &self.config {
            return Ok((Config::load(config)?.policy_dir, "the config's policy_dir"));
        }
        Ok((PathBuf::from(DEFAULT_POLICY_DIR), "the default"))
    }

    fn compile(&self) -> anyhow::Result<(PathBuf, Compiled)> {
        let (dir, _) = self.policy_dir()?;
        let set = policy::load_dir(&dir)?;
        Ok((dir, compile(&set)?))
    }
}

pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => check(&args),
        Command::Explain {
            policy,
            json,
            packet,
        } => explain(&policy, json, &packet),
        Command::Run { config } => run(&config),
        Command::Lab(args) => lab::run(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|err| {
        eprintln!("fwd: {err:#}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

fn check(args: &PolicyArgs) -> anyhow::Result<ExitCode> {
    let (dir, from) = args.policy_dir()?;
    let set = policy::load_dir(&dir)?;
    let compiled = compile(&set)?;
    let image = &compiled.image;
    println!("policies: {} ({from})", dir.display());
    println!("{:<24} {:>6}", "vendor", "rules");
    for v in &set.vendors {
        println!("{:<24} {:>6}", v.vendor.id, v.rules.len());
    }
    println!(
        "compiled: {} rules, {} classes; map entries: dst4 {}, dst6 {}, ports {}",
        image.rules.len(),
        image.classes,
        image.dst4.len(),
        image.dst6.len(),
        image.ports.len()
    );
    for w in &compiled.warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

fn explain(args: &PolicyArgs, json: bool, packet: &ExplainPacket) -> anyhow::Result<ExitCode> {
    let (_, compiled) = args.compile()?;
    let ExplainPacket::Egress {
        protocol,
        remote,
        port,
    } = packet;
    let protocol = match (protocol, remote) {
        (ProtocolArg::Tcp, _) => proto::TCP,
        (ProtocolArg::Udp, _) => proto::UDP,
        (ProtocolArg::Icmp, IpAddr::V4(_)) => proto::ICMP,
        (ProtocolArg::Icmp, IpAddr::V6(_)) => proto::ICMPV6,
    };
    let probe = Probe {
        direction: Direction::Egress,
        protocol,
        remote: *remote,
        port: if matches!(protocol, proto::TCP | proto::UDP) {
            *port
        } else {
            0
        },
    };
    let evaluator = Evaluator::new(&compiled.image);
    let verdict = evaluator.evaluate(&probe);
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
            "direction": "egress",
            "protocol": protocol,
            "remote": remote.to_string(),
            "port": probe.port,
        });
        println!("{value}");
    } else {
        match rule {
            Some(r) => println!(
                "allow: {}/{} ({}, {}) at {}:{}",
                r.vendor,
                r.rule,
                r.service,
                r.level.as_str(),
                r.source.file.display(),
                r.source.line
            ),
            None => println!(
                "deny: {}",
                match verdict {
                    Verdict::NoAddressMatch => format!("no rule covers the address {remote}"),
                    _ => format!("rules cover {remote}, but none of them this protocol and port"),
                }
            ),
        }
    }
    Ok(ExitCode::from(if rule.is_some() { 0 } else { 1 }))
}

fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(config))?;
    Ok(ExitCode::SUCCESS)
}
