//! The `fwd` command line: a thin layer over policy, compile, daemon and lab.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use fwd_common::proto;

use crate::{
    compile::{
        Compiled, DatedRule, Evaluator, Probe, Selection, Verdict, compile, tables::SlotTables,
    },
    config::{Action, Config, DEFAULT_CONFIG, DEFAULT_POLICY_DIR, InterfaceMode},
    daemon, export, lab, policy,
    policy::{Date, Direction},
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
fwd explain --json egress udp 176.121.88.10 10000\n  fwd explain egress udp x.sfu.whereby.com 3478"
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
    /// Write the compiled policy in another firewall's language (nftables), for machines that
    /// enforce without fwd's programs.
    #[command(subcommand)]
    Export(ExportFormat),
    /// Turn a vendor-published address list (one prefix per line, or AWS ip-ranges.json) into
    /// a policy file that records where it came from.
    Import(Box<crate::import::ImportArgs>),
    /// Run the daemon: load, attach, serve metrics; SIGHUP reloads, SIGINT/SIGTERM detach.
    Run {
        /// The site config.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask the running daemon to reload its config and policies; print the result. A bad
    /// policy is rejected whole (the running one stays) and the exit code is 2.
    Reload {
        /// The daemon's config (for its control_socket).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The control socket, if not the config's.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print the daemon's reply as one JSON object (with the compile, fill and swap
        /// times); the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Say what the running daemon has attached where, which policy generation is in
    /// force, how full the maps are, and how many flows are live.
    Status {
        /// The daemon's config (for its control_socket).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The control socket, if not the config's.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List what the daemon's DNS proxy learned: each name (and the CNAME it led to), its
    /// addresses, the domain rules they open and the seconds each has left.
    #[command(
        after_help = "An address past its TTL stays open while a flow to it is live; its time shows as `flow`.\n\nExamples:\n  fwd dns\n  fwd dns --json"
    )]
    Dns {
        /// The daemon's config (for its control_socket).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The control socket, if not the config's.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show samples of denied packets as the daemon sees them: time, interface, direction,
    /// protocol, addresses and ports, the reason, and the nearest rule.
    #[command(
        after_help = "The kernel sends at most 100 samples per second per CPU; counters in \
/metrics count every packet.\n\nExamples:\n  fwd monitor\n  fwd monitor --json --count 10"
    )]
    Monitor {
        /// The daemon's config (for its control_socket).
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// The control socket, if not the config's.
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print one JSON object per sample.
        #[arg(long)]
        json: bool,
        /// Stop after this many samples.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Read the counters straight from the pinned maps: per rule and direction, drops by
    /// reason, live flows, the generation in force. Works with the daemon stopped or dead.
    #[command(
        after_help = "Examples:\n  fwd stats\n  fwd stats --json\n  fwd stats --pin-dir /sys/fs/bpf/fwd --state-dir /var/lib/fwd"
    )]
    Stats(crate::stats::StatsArgs),
    /// Build a throwaway lab (client, gateway, vendor namespaces), run fwd on the gateway,
    /// drive traffic and show live counters until Ctrl-C; then remove the lab.
    Lab(lab::LabArgs),
}

#[derive(Subcommand, Debug)]
enum ExportFormat {
    /// An `nft -f` script giving fwd's verdicts: one `table inet` that loading replaces in
    /// one transaction.
    #[command(
        long_about = "Writes the compiled policy as an nftables script (`nft -f`) that gives the \
same verdicts as fwd's kernel programs wherever nftables can: one `table inet NAME` holding an \
interval map from remote address to the chain of its class, one chain per class with a rule \
per protocol and port range (each counting on a named counter `vendor/rule`), conntrack for \
return traffic, and fwd's exemptions, audit vendors and default action. Loading the script \
replaces the table in one transaction, so a new export takes over from the old one without a \
gap. What nftables cannot do as fwd does (domain rules, fragments, counters of replies, ...) \
is listed at the top of the script and printed as warnings.\n\n\
Hooks come from the config's [[interface]]s: a gateway's LAN interface is filtered in the \
forward hook (what comes from it is egress, what goes into it ingress); a host's uplink in \
output and input (and forward, out of and into it). Without --config, or with a config \
without [[interface]], the script assumes a host: its own traffic on every interface but lo \
is filtered (output as egress, input as ingress), and forwarded traffic is not. Exemptions \
come from the config's `exempt`; a gateway's own addresses need none, since traffic to and \
from the gateway itself never takes the forward hook.",
        after_help = "Exit status: 0 written; 2 bad input (printed as file:line:col) or an \
output that cannot be written.\n\n\
Examples:\n  \
fwd export nftables --config /etc/fwd/fwd.toml > fwd.nft && nft -c -f fwd.nft\n  \
fwd export nftables --config /etc/fwd/fwd.toml --output /etc/nftables.d/fwd.nft\n  \
nft -f /etc/nftables.d/fwd.nft                    # load: replaces table inet fwd_export\n  \
nft list counter inet fwd_export pexip/general-media\n  \
nft delete table inet fwd_export                  # remove\n\n\
See docs/export.md."
    )]
    Nftables(NftablesArgs),
}

#[derive(clap::Args, Debug)]
struct NftablesArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// The nftables table (family inet) the script creates or replaces. Not `fwd`: nft reads
    /// that as a keyword.
    #[arg(long, default_value = export::DEFAULT_TABLE)]
    table: String,
    /// Write the script to FILE (a temporary file renamed into place, so FILE is never
    /// half-written) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
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
enum RemoteArg {
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
enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
}

/// Exit code for bad input (and explain's "error").
const EXIT_BAD_INPUT: u8 = 2;

/// What `check` and `explain` compile, and how they got there.
struct Target {
    set: policy::PolicySet,
    compiled: Compiled,
    /// One line saying where the policy and the selection came from.
    origin: String,
    /// The site config, if one was given.
    config: Option<Config>,
}

impl PolicyArgs {
    fn compile(&self) -> anyhow::Result<Target> {
        let today = Date::today();
        let config = self.config.as_deref().map(Config::load).transpose()?;
        let dir = match (&self.policies, &config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(c)) => c.policy_dir.clone(),
            (None, None) => PathBuf::from(DEFAULT_POLICY_DIR),
        };
        let (selection, origin) = match (&config, &self.config) {
            (Some(c), Some(path)) => (
                c.selection(today),
                format!("{}, selected by {}", dir.display(), path.display()),
            ),
            _ => (
                Selection::widest(today),
                format!(
                    "{}, no --config: every vendor, profile, region and level (the widest policy)",
                    dir.display()
                ),
            ),
        };
        let started = std::time::Instant::now();
        let (set, compiled) = match &config {
            Some(c) => c.compile_policies(&dir, today, &crate::compile::RuleIds::default())?,
            None => {
                let set = policy::load_dir(&dir)?;
                let compiled = compile(&set, &selection)?;
                (set, compiled)
            }
        };
        tracing::debug!(elapsed = ?started.elapsed(), "compiled");
        Ok(Target {
            set,
            compiled,
            origin,
            config,
        })
    }
}

impl Cli {
    /// Whether this runs a long-lived process that writes to sockets (where a closed peer
    /// must be an error, not SIGPIPE).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run { .. } | Command::Lab(_))
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
        Command::Export(ExportFormat::Nftables(args)) => export_nftables(&args),
        Command::Import(args) => crate::import::run(&args),
        Command::Run { config } => run(&config),
        Command::Reload {
            config,
            socket,
            json,
        } => reload(&config, socket, json),
        Command::Status {
            config,
            socket,
            json,
        } => status(&config, socket, json),
        Command::Dns {
            config,
            socket,
            json,
        } => dns(&config, socket, json),
        Command::Monitor {
            config,
            socket,
            json,
            count,
        } => monitor(&config, socket, json, count),
        Command::Stats(args) => crate::stats::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Lab(args) => lab::run(&args).map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|err| {
        eprintln!("fwd: {err:#}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

fn check(args: &PolicyArgs) -> anyhow::Result<ExitCode> {
    let Target {
        set,
        compiled,
        origin,
        ..
    } = args.compile()?;
    let image = &compiled.image;
    println!("policies: {origin}");
    println!(
        "{:<24} {:>6} {:>9} {:>8} {:>8}",
        "vendor", "rules", "compiled", "pending", "expired"
    );
    let of_vendor = |dated: &[DatedRule], id: &str| {
        dated
            .iter()
            .filter(|d| d.rule.split_once('/').is_some_and(|(v, _)| v == id))
            .count()
    };
    for v in &set.vendors {
        let enforced = image
            .rules
            .iter()
            .filter(|r| r.vendor == v.vendor.id)
            .count();
        println!(
            "{:<24} {:>6} {:>9} {:>8} {:>8}",
            v.vendor.id,
            v.rules.len(),
            enforced,
            of_vendor(&compiled.pending, &v.vendor.id),
            of_vendor(&compiled.expired, &v.vendor.id)
        );
    }
    let tables = SlotTables::build(image, &[]).sizes();
    println!(
        "compiled: {} rules in {} classes; prefixes: {} IPv4, {} IPv6; kernel tables: {} IPv4 ranges, {} IPv6 ranges, {} port ranges",
        image.rules.len(),
        image.classes,
        image.dst4.len(),
        image.dst6.len(),
        tables.ranges4,
        tables.ranges6,
        tables.port_ranges
    );
    if compiled.unselected > 0 {
        println!("not selected by the config: {} rules", compiled.unselected);
    }
    println!(
        "dated: {} pending (enforced from a later day), {} expired (kept for the record, not enforced)",
        compiled.pending.len(),
        compiled.expired.len()
    );
    for p in &compiled.pending {
        println!(
            "pending: {}: rule `{}` is enforced from {}",
            p.location, p.rule, p.date
        );
    }
    for e in &compiled.expired {
        println!(
            "expired: {}: rule `{}` ended {}",
            e.location, e.rule, e.date
        );
    }
    for w in &compiled.warnings {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

fn explain(args: &PolicyArgs, json: bool, packet: &ExplainPacket) -> anyhow::Result<ExitCode> {
    let Target { compiled, .. } = args.compile()?;
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
                "allow{}{}: {}/{} ({}, {}) at {}:{}",
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

fn export_nftables(args: &NftablesArgs) -> anyhow::Result<ExitCode> {
    export::check_table_name(&args.table).map_err(anyhow::Error::msg)?;
    let Target {
        compiled,
        origin,
        config,
        ..
    } = args.policy.compile()?;
    let mut hooks = Vec::new();
    let mut exempt = Vec::new();
    let mut extra_differences = Vec::new();
    if let Some(c) = &config {
        for i in &c.interfaces {
            export::check_interface_name(&i.name)
                .map_err(|e| anyhow::anyhow!("{}: {e}", c.file.display()))?;
            hooks.push(export::Hook {
                interface: i.name.clone(),
                mode: match i.mode {
                    InterfaceMode::Gateway => export::HookMode::Gateway,
                    InterfaceMode::Host => export::HookMode::Host,
                },
            });
        }
        // As the daemon's exemptions, less the gateway's own addresses (the forward hook
        // never sees traffic to or from them).
        exempt.extend(c.exempt.iter().copied());
        if let Some(d) = &c.dns {
            if c.interfaces.iter().any(|i| i.mode == InterfaceMode::Host) {
                exempt.extend(d.upstream.iter().map(|u| ipnet::IpNet::from(u.ip())));
            }
            if d.steer {
                extra_differences.push(
                    "[dns] steer: the rule fwd/dns-steer allows DNS (port 53) to any address; the redirect to fwd's proxy (table inet fwd_dns) exists only while fwd runs".to_string(),
                );
            }
        }
    }
    let opts = export::NftOptions {
        table: args.table.clone(),
        hooks,
        exempt,
        audit: config.as_ref().is_some_and(|c| c.action == Action::Audit),
        live_remote_timeout_s: config
            .as_ref()
            .map_or(fwd_common::FwdConfig::DEFAULT_UDP_TIMEOUT_S, |c| {
                c.flows.udp_timeout_s
            }),
        origin,
        extra_differences,
    };
    let image = &compiled.image;
    for difference in export::differences(image, &opts) {
        eprintln!("fwd: warning: {difference}");
    }
    let (summary, written_to) = match &args.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let summary = export::write_nftables(&mut out, image, &opts)
                .map_err(|e| anyhow::anyhow!("writing the script to standard output: {e}"))?;
            (summary, "standard output".to_string())
        }
        Some(path) => (
            write_atomically(path, |out| export::write_nftables(out, image, &opts))?,
            path.display().to_string(),
        ),
    };
    eprintln!(
        "fwd: wrote table inet {} to {written_to}: {} egress ranges (IPv4 {}, IPv6 {}), {} ingress ranges, {} class chains, {} rule counters",
        opts.table,
        summary.egress4 + summary.egress6,
        summary.egress4,
        summary.egress6,
        summary.ingress4 + summary.ingress6,
        summary.class_chains,
        summary.rule_counters,
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `path` whole or not at all (`atomic_file`), replacing what is there.
fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    crate::atomic_file::write(path, crate::atomic_file::Existing::Replace, write).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e}; check that its directory exists and is writable",
            path.display()
        )
    })
}

fn status(config: &Path, socket: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    show::<daemon::control::StatusReply>(config, socket, json, "status")
}

fn dns(config: &Path, socket: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    show::<daemon::dns::DnsReply>(config, socket, json, "dns")
}

/// Asks the daemon `command` and prints the reply, as text or as the JSON it came in.
fn show<T>(
    config: &Path,
    socket: Option<PathBuf>,
    json: bool,
    command: &str,
) -> anyhow::Result<ExitCode>
where
    T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Display,
{
    let socket = socket.unwrap_or_else(|| daemon::control::socket_path_lenient(config));
    let reply: T = daemon::control::ask(&socket, command)?;
    if json {
        println!("{}", serde_json::to_string(&reply)?);
    } else {
        println!("{reply}");
    }
    Ok(ExitCode::SUCCESS)
}

fn reload(config: &Path, socket: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    // The daemon's config names the socket. Read leniently: a config with a mistake
    // elsewhere must still reach the daemon, which rejects it and says why.
    let socket = socket.unwrap_or_else(|| daemon::control::socket_path_lenient(config));
    let reply = daemon::control::reload(&socket)?;
    if json {
        println!("{}", serde_json::to_string(&reply)?);
        return Ok(if reply.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_BAD_INPUT)
        });
    }
    for warning in &reply.warnings {
        eprintln!("warning: {warning}");
    }
    match reply.error {
        None => {
            println!(
                "reloaded: generation {} in force, {} rules (compile {:.1} ms, fill {:.1} ms, swap {:.1} ms)",
                reply.generation, reply.rules, reply.compile_ms, reply.fill_ms, reply.swap_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(error) => {
            eprintln!("{error}");
            eprintln!(
                "fwd: reload rejected; generation {} stays in force",
                reply.generation
            );
            Ok(ExitCode::from(EXIT_BAD_INPUT))
        }
    }
}

fn monitor(
    config: &Path,
    socket: Option<PathBuf>,
    json: bool,
    count: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let socket = socket.unwrap_or_else(|| daemon::control::socket_path_lenient(config));
    daemon::control::monitor(&socket, json, count)?;
    Ok(ExitCode::SUCCESS)
}

fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(config))?;
    Ok(ExitCode::SUCCESS)
}
