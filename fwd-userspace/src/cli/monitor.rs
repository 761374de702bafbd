//! `fwd monitor`: denied-packet samples, from the daemon's history (`--last`, `--since`)
//! and as they happen (by default, or `-f` after the history), filtered, as a table or as
//! JSON lines.

use std::{io::Write as _, path::Path, process::ExitCode};

use anyhow::Context as _;
use ipnet::IpNet;

use super::args::DaemonArgs;
use crate::control::DeniedSample;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The kernel sends at most 100 samples per second per CPU; counters in \
/metrics count every packet. The daemon keeps the last 4096 samples.\n\n\
Each sample says which name the DNS proxy last answered with the remote's address, whether \
or not a rule names it: `(the client resolved meet.example.org)`.\n\n\
Examples:\n  fwd monitor                                   # as they happen\n  \
fwd monitor --last 20                         # the last 20, then exit\n  \
fwd monitor --since 10m --reason no_port_match -f\n  \
fwd monitor --remote 203.0.113.0/24 --proto udp --json\n  \
fwd monitor --last 100 --not --vendor zoom     # everything but what comes close to zoom's rules\n  \
fwd monitor --audited --last 50               # in audit mode: what enforcing would drop"
)]
pub(crate) struct MonitorArgs {
    #[command(flatten)]
    daemon: DaemonArgs,
    /// Print one JSON object per sample.
    #[arg(long)]
    json: bool,
    /// Stop after this many samples (of those shown).
    #[arg(long)]
    count: Option<u64>,
    /// The last N kept samples (that pass the filters), then exit (or follow with -f).
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// The kept samples of the last TIME (`30s`, `10m`, `2h`), then exit (or follow).
    #[arg(long, value_name = "TIME", value_parser = super::client::parse_seconds)]
    since: Option<u64>,
    /// After --last or --since, go on with samples as they happen.
    #[arg(short, long)]
    follow: bool,
    /// Only samples whose nearest rule is this vendor's.
    #[arg(long)]
    vendor: Option<String>,
    /// Only samples whose nearest rule is this one (`rule` or `vendor/rule`).
    #[arg(long)]
    rule: Option<String>,
    /// Only this drop reason (no_address_match, no_port_match, unsolicited, ...).
    #[arg(long)]
    reason: Option<String>,
    /// Only samples whose remote end is in this network.
    #[arg(long, value_name = "CIDR")]
    remote: Option<IpNet>,
    /// Only samples whose protected end (the LAN client, the host) is in this network.
    #[arg(long, value_name = "CIDR")]
    client: Option<IpNet>,
    /// Only samples with this port at either end.
    #[arg(long)]
    port: Option<u16>,
    /// Only this protocol (tcp, udp, icmp, icmpv6, ...).
    #[arg(long)]
    proto: Option<String>,
    /// Only samples of this interface.
    #[arg(long)]
    interface: Option<String>,
    /// Invert the filters: samples that do not pass them all.
    #[arg(long)]
    not: bool,
    /// Also the packets that passed only because the policy or their vendor audits
    /// (`action = "audit"`, `[vendor_action]`), marked `[audit: passed]`: what enforcing
    /// would drop.
    #[arg(long)]
    audited: bool,
}

impl MonitorArgs {
    /// Whether `s` passes the filters (inverted with --not); audited samples only with
    /// --audited, whatever the filters.
    fn shows(&self, s: &DeniedSample) -> bool {
        if s.audited && !self.audited {
            return false;
        }
        let (local, remote) = if s.direction == "out" {
            (s.src, s.dst)
        } else {
            (s.dst, s.src)
        };
        let rule = s.nearest_rule.as_deref().unwrap_or("");
        let in_net = |net: &Option<IpNet>, a: Option<std::net::IpAddr>| {
            net.is_none_or(|n| a.is_some_and(|a| n.contains(&a)))
        };
        let all =
            self.vendor
                .as_ref()
                .is_none_or(|v| rule.split('/').next() == Some(v.as_str()))
                && self.rule.as_ref().is_none_or(|r| {
                    rule == r || rule.split_once('/').is_some_and(|(_, id)| id == r)
                })
                && self.reason.as_ref().is_none_or(|r| &s.reason == r)
                && in_net(&self.remote, remote)
                && in_net(&self.client, local)
                && self.port.is_none_or(|p| s.src_port == p || s.dst_port == p)
                && self
                    .proto
                    .as_ref()
                    .is_none_or(|p| s.protocol.eq_ignore_ascii_case(p))
                && self.interface.as_ref().is_none_or(|i| &s.interface == i);
        all != self.not
    }
}

fn print(out: &mut impl std::io::Write, s: &DeniedSample, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(s)?)?;
    } else {
        writeln!(out, "{s}")?;
    }
    out.flush()?;
    Ok(())
}

pub(crate) fn run(args: &MonitorArgs) -> anyhow::Result<ExitCode> {
    let socket = args.daemon.socket();
    let mut shown = 0u64;
    let done = |shown: u64| args.count.is_some_and(|c| shown >= c);
    let stdout = std::io::stdout();
    if args.last.is_some() || args.since.is_some() {
        let kept: Vec<DeniedSample> = super::client::ask(&socket, "history")?;
        let now_ms = crate::clock::unix_ms();
        let since_ms = args.since.map(|s| now_ms.saturating_sub(s * 1000));
        let mut matching: Vec<&DeniedSample> = kept
            .iter()
            .filter(|s| since_ms.is_none_or(|t| s.time_ms >= t))
            .filter(|s| args.shows(s))
            .collect();
        if let Some(n) = args.last {
            let skip = matching.len().saturating_sub(n);
            matching.drain(..skip);
        }
        let hidden = kept
            .iter()
            .filter(|s| s.audited && since_ms.is_none_or(|t| s.time_ms >= t))
            .count();
        if !args.audited && hidden > 0 && !args.json {
            eprintln!(
                "fwd monitor: {hidden} kept sample(s) passed in audit mode and are not shown; --audited shows them"
            );
        }
        let mut out = stdout.lock();
        for s in matching {
            print(&mut out, s, args.json)?;
            shown += 1;
            if done(shown) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
    }
    follow(&socket, args, shown)?;
    Ok(ExitCode::SUCCESS)
}

/// Samples as they happen, filtered.
fn follow(socket: &Path, args: &MonitorArgs, mut shown: u64) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to {} (is `fwd run` running? fwd monitor needs root)",
            socket.display()
        )
    })?;
    stream.write_all(b"monitor\n")?;
    if !args.json {
        eprintln!(
            "fwd monitor: denied packets (sampled, at most {} per second per CPU); Ctrl-C stops",
            fwd_common::FwdConfig::DEFAULT_SAMPLES_PER_SECOND
        );
    }
    let stdout = std::io::stdout();
    for line in std::io::BufReader::new(stream).lines() {
        let line = line?;
        let mut out = stdout.lock();
        match serde_json::from_str::<DeniedSample>(&line) {
            Ok(sample) => {
                if !args.shows(&sample) {
                    continue;
                }
                print(&mut out, &sample, args.json)?;
                shown += 1;
                if args.count.is_some_and(|c| shown >= c) {
                    break;
                }
            }
            // A note from the daemon (samples lost to a slow reader): passed on.
            Err(_) => {
                writeln!(out, "{line}")?;
                out.flush()?;
            }
        }
    }
    Ok(())
}
