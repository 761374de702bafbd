//! The `fwd` command line: a thin layer over policy, compile, daemon and lab. One file per
//! command: `check`, `explain`, `export` (nftables), `client` (the daemon's `reload`,
//! `status`, `dns`, `monitor`), `stats`, `lab`; `args` holds what several share. `fwd
//! import` is `crate::import`.

mod args;
mod check;
mod client;
mod detach;
mod diff;
mod explain;
mod export;
mod feeds;
pub mod lab;
mod monitor;
pub mod stats;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{CommandFactory, Parser, Subcommand};

use crate::{config::DEFAULT_CONFIG, daemon};
use args::{DaemonArgs, EXIT_BAD_INPUT, PolicyArgs};
use explain::ExplainPacket;
use export::NftablesArgs;

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
    /// Say what the compiled policy does with one packet, or with `fwd monitor` samples
    /// (exit 0 allow, 1 deny, 2 error).
    #[command(
        after_help = "Examples:\n  fwd explain egress tcp 52.71.32.188 8089\n  \
fwd explain --json egress udp 176.121.88.10 10000\n  fwd explain egress udp x.sfu.whereby.com 3478\n  \
fwd monitor --last 20 --json | fwd explain --from-sample -   # would these pass now?"
    )]
    Explain {
        #[command(flatten)]
        policy: PolicyArgs,
        /// Print one JSON object (per sample) instead of text.
        #[arg(long)]
        json: bool,
        /// Judge the denied samples in FILE (`-`: standard input), as `fwd monitor --json`
        /// prints them, by this policy, and the name the client resolved for each. Exit 0
        /// if the policy allows them all, 1 if it denies one.
        #[arg(long, value_name = "FILE")]
        from_sample: Option<PathBuf>,
        #[command(subcommand)]
        packet: Option<ExplainPacket>,
    },
    /// Say what a policy change adds and removes, per vendor and rule (networks as merged
    /// ranges, names, ports, protocols, levels, dates), before it is applied: against what
    /// the daemon enforces, another directory or one file. Exit 0 no change, 1 changes, 2
    /// error.
    Diff(diff::DiffArgs),
    /// Write the compiled policy in another firewall's language (nftables), for machines that
    /// enforce without fwd's programs.
    #[command(subcommand)]
    Export(ExportFormat),
    /// Turn a vendor-published address list (one prefix per line, or AWS ip-ranges.json) into
    /// a policy file that records where it came from.
    Import(Box<crate::import::ImportArgs>),
    /// Vendor lists fetched over HTTPS on a schedule ([[feed]] in the config).
    #[command(subcommand)]
    Feeds(feeds::FeedsCommand),
    /// Run the daemon: load, attach, serve metrics; SIGHUP reloads, SIGINT/SIGTERM detach.
    Run {
        /// The site config.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Serve /metrics, /healthz and /readyz here instead of the config's [metrics]
        /// listen: one config for a fleet, each node binding its own address (in a
        /// DaemonSet, `--metrics-listen $(NODE_IP):9469`).
        #[arg(long, env = "FWD_METRICS_LISTEN", value_name = "ADDR:PORT")]
        metrics_listen: Option<std::net::SocketAddr>,
    },
    /// Ask the running daemon to reload its config and policies; print the result. A bad
    /// policy is rejected whole (the running one stays) and the exit code is 2.
    Reload {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Print the daemon's reply as one JSON object (with the compile, fill and swap
        /// times); the exit code is the same.
        #[arg(long)]
        json: bool,
        /// Change nothing: the daemon compiles the policy on disk, checks that it fits the
        /// tables, and says what it would change against the one in force (exit 0 no
        /// change, 1 changes, 2 it would be rejected).
        #[arg(long, conflicts_with = "confirm")]
        dry_run: bool,
        /// Apply, and go back to the policy before by itself unless `fwd confirm` comes
        /// within this time (`60s`, `5m`, or seconds): for a change that might cut you off.
        #[arg(long, value_name = "TIME", value_parser = client::parse_seconds)]
        confirm: Option<u64>,
    },
    /// Take fwd's programs off every hook and remove the pins, with the daemon stopped (what
    /// removing the package does): traffic is no longer filtered.
    Detach(detach::DetachArgs),
    /// Keep a reload made with `fwd reload --confirm` (else it rolls back at its deadline).
    Confirm {
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Print the daemon's reply as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Say what the running daemon has attached where, which policy generation is in
    /// force, how full the maps are, and how many flows are live.
    Status {
        #[command(flatten)]
        daemon: DaemonArgs,
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
        #[command(flatten)]
        daemon: DaemonArgs,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show samples of denied packets: time, interface, direction, protocol, addresses and
    /// ports, the reason, the nearest rule, and the name the client resolved; from the
    /// daemon's history (--last, --since) or as they happen, filtered.
    Monitor(monitor::MonitorArgs),
    /// Read the counters straight from the pinned maps: per rule and direction, drops by
    /// reason, live flows, the generation in force. Works with the daemon stopped or dead.
    #[command(
        after_help = "Examples:\n  fwd stats\n  fwd stats --json\n  fwd stats --pin-dir /sys/fs/bpf/fwd --state-dir /var/lib/fwd"
    )]
    Stats(stats::StatsArgs),
    /// Build a throwaway lab (client, gateway, vendor namespaces), run fwd on the gateway,
    /// drive traffic and show live counters until Ctrl-C; then remove the lab.
    Lab(lab::LabArgs),
    /// Print a shell's completion script for fwd (the packages install them).
    #[command(
        after_help = "Examples:\n  fwd completions bash > /etc/bash_completion.d/fwd\n  \
fwd completions zsh > \"${fpath[1]}/_fwd\"\n  fwd completions fish > ~/.config/fish/completions/fwd.fish"
    )]
    Completions { shell: clap_complete::Shell },
    /// Write fwd's manual pages (fwd.1 and one per command, fwd-check.1, ...) into DIR.
    Man {
        /// Where to write them (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
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

impl Cli {
    /// Whether this runs a long-lived process that writes to sockets (where a closed peer
    /// must be an error, not SIGPIPE).
    pub fn is_daemon(&self) -> bool {
        matches!(self.command, Command::Run { .. } | Command::Lab(_))
    }
}

pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Check(args) => check::check(&args),
        Command::Explain {
            policy,
            json,
            from_sample,
            packet,
        } => match (packet, from_sample) {
            (Some(_), Some(_)) => Err(anyhow::anyhow!("give a packet or --from-sample, not both")),
            (Some(packet), None) => explain::explain(&policy, json, &packet),
            (None, Some(file)) => explain::explain_samples(&policy, json, &file),
            (None, None) => Err(anyhow::anyhow!(
                "explain what? Give a packet (`fwd explain egress tcp 52.71.32.188 443`, see \
                 `fwd explain --help`) or samples (`fwd monitor --last 20 --json | fwd explain --from-sample -`)"
            )),
        },
        Command::Export(ExportFormat::Nftables(args)) => export::export_nftables(&args),
        Command::Import(args) => crate::import::run(&args),
        Command::Feeds(command) => feeds::run(&command),
        Command::Diff(args) => diff::run(&args),
        Command::Detach(args) => detach::run(&args),
        Command::Run {
            config,
            metrics_listen,
        } => run(&config, metrics_listen),
        Command::Reload {
            daemon,
            json,
            dry_run: true,
            ..
        } => client::dry_run(&daemon, json),
        Command::Reload {
            daemon,
            json,
            confirm,
            ..
        } => client::request_reload(&daemon, json, confirm),
        Command::Confirm { daemon, json } => client::confirm(&daemon, json),
        Command::Status { daemon, json } => client::status(&daemon, json),
        Command::Dns { daemon, json } => client::dns(&daemon, json),
        Command::Monitor(args) => monitor::run(&args),
        Command::Stats(args) => stats::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Lab(args) => lab::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "fwd", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { dir } => man_pages(&dir).map(|n| {
            eprintln!("fwd: wrote {n} manual pages into {}", dir.display());
            ExitCode::SUCCESS
        }),
    };
    result.unwrap_or_else(|err| {
        eprintln!("fwd: {err:#}");
        ExitCode::from(EXIT_BAD_INPUT)
    })
}

/// Writes `fwd.1` and a page per command (`fwd-check.1`, `fwd-export-nftables.1`, ...)
/// into `dir`; returns how many pages it holds.
fn man_pages(dir: &Path) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing manual pages into {}", dir.display()))?;
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "1"))
        .count())
}

fn run(config: &Path, metrics_listen: Option<std::net::SocketAddr>) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(daemon::run(config, metrics_listen))?;
    Ok(ExitCode::SUCCESS)
}
