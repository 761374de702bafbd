//! `fwd lab`: the built-in demonstration. Builds client, gateway and vendor namespaces, runs
//! `fwd run` on the gateway with the given policies, drives allowed and denied traffic, and
//! shows live counters until Ctrl-C (or `--duration`), then removes everything.

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fwd_common::proto;
use fwd_lab::{FwdProcess, GATEWAY_LAN_IF, Lab, Sink, http_get, tcp_probe, udp_probe};
use ipnet::IpNet;

use crate::{
    compile::{Evaluator, Probe, RuleIds, Verdict},
    config::{Config, DEFAULT_POLICY_DIR},
    policy::{self, Direction, Level, Protocol, Remote},
};

/// An address no bundled policy names (TEST-NET-3, RFC 5737).
const UNLISTED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const METRICS: &str = "127.0.0.1:9469";

#[derive(clap::Args, Debug)]
pub struct LabArgs {
    /// Directory of vendor policy files to run the gateway with.
    #[arg(long, default_value = DEFAULT_POLICY_DIR)]
    policies: PathBuf,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Prefix of the namespace names.
    #[arg(long, default_value = "fwd-lab")]
    prefix: String,
    /// Rule levels the gateway enforces (repeat or comma-separate). Mandatory rules alone keep
    /// some ports closed for the demonstration; "recommended" opens e.g. every UDP port.
    #[arg(long = "level", value_delimiter = ',', default_value = "mandatory")]
    levels: Vec<LevelArg>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LevelArg {
    Mandatory,
    Recommended,
    Optional,
}

impl LevelArg {
    fn level(self) -> Level {
        match self {
            LevelArg::Mandatory => Level::Mandatory,
            LevelArg::Recommended => Level::Recommended,
            LevelArg::Optional => Level::Optional,
        }
    }
}

struct LabProbe {
    protocol: u8,
    addr: IpAddr,
    port: u16,
    /// What the compiled policy says, e.g. "pexip/media".
    expected: Option<String>,
    delivered: u64,
    blocked: u64,
}

impl LabProbe {
    fn name(&self) -> String {
        let p = if self.protocol == proto::TCP {
            "tcp"
        } else {
            "udp"
        };
        format!("{p} {}", SocketAddr::new(self.addr, self.port))
    }
}

/// A usable host address inside `net`.
fn host_in(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) if n.prefix_len() < 31 => {
            IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) + 1))
        }
        _ => net.network(),
    }
}

/// One allowed TCP and one UDP probe per vendor that lists IPv4 addresses with ports, and one
/// denied probe per protocol to an unlisted address.
fn choose_probes(set: &policy::PolicySet, evaluator: &Evaluator<'_>) -> Vec<LabProbe> {
    let mut probes = Vec::new();
    let label = |verdict: Verdict| match verdict {
        Verdict::Allow { rule } => evaluator.rule(rule).map(|r| r.rule_ref().to_string()),
        _ => None,
    };
    for (vp, wanted) in set
        .vendors
        .iter()
        .flat_map(|vp| [(vp, Protocol::Tcp), (vp, Protocol::Udp)])
    {
        let candidate = vp.rules.iter().find_map(|rule| {
            if rule.direction != Direction::Egress {
                return None;
            }
            let net = rule.remotes.iter().find_map(|r| match r {
                Remote::Nets(nets) => nets.iter().find(|n| matches!(n, IpNet::V4(_))),
                _ => None,
            })?;
            if !rule.protocols.contains(&wanted) {
                return None;
            }
            let protocol = if wanted == Protocol::Tcp {
                proto::TCP
            } else {
                proto::UDP
            };
            Some((protocol, host_in(net), rule.ports.first()?.lo))
        });
        if let Some((protocol, addr, port)) = candidate {
            let probe = Probe {
                direction: Direction::Egress,
                protocol,
                remote: addr,
                port,
                local_port: 0,
            };
            if let Some(expected) = label(evaluator.evaluate(&probe)) {
                probes.push(LabProbe {
                    protocol,
                    addr,
                    port,
                    expected: Some(expected),
                    delivered: 0,
                    blocked: 0,
                });
            }
        }
    }
    for protocol in [proto::TCP, proto::UDP] {
        let denied_port = [25u16, 8081, 6667, 9, 7].into_iter().find(|port| {
            let probe = Probe {
                direction: Direction::Egress,
                protocol,
                remote: IpAddr::V4(UNLISTED),
                port: *port,
                local_port: 0,
            };
            label(evaluator.evaluate(&probe)).is_none()
        });
        if let Some(port) = denied_port {
            probes.push(LabProbe {
                protocol,
                addr: IpAddr::V4(UNLISTED),
                port,
                expected: None,
                delivered: 0,
                blocked: 0,
            });
        }
    }
    probes
}

pub fn run(args: &LabArgs) -> anyhow::Result<()> {
    let policies = std::fs::canonicalize(&args.policies)
        .with_context(|| format!("the policy directory {}", args.policies.display()))?;
    let levels: Vec<Level> = args.levels.iter().map(|l| l.level()).collect();
    let site = fwd_lab::SiteConfig::new(&policies)
        .pin_dir(format!("/sys/fs/bpf/{}", args.prefix))
        .state_dir("state")
        .on_exit("detach")
        .metrics(METRICS)
        .gateway(GATEWAY_LAN_IF)
        .tables(&format!(
            "[select]\nlevels = [{}]",
            levels
                .iter()
                .map(|l| fwd_lab::toml_str(l.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .render();
    // The lab judges its probes by what its daemon will enforce: the same site config,
    // compiled through the same door.
    let (set, compiled) = Config::parse(Path::new("fwd.toml"), &site)?.compile_policies(
        &policies,
        policy::Date::today(),
        &RuleIds::default(),
    )?;
    let evaluator = Evaluator::new(&compiled.image);
    let mut probes = choose_probes(&set, &evaluator);
    for protocol in ["tcp", "udp"] {
        let p = if protocol == "tcp" {
            proto::TCP
        } else {
            proto::UDP
        };
        if !probes
            .iter()
            .any(|x| x.protocol == p && x.expected.is_none())
        {
            eprintln!(
                "note: every {protocol} port the lab tries is open to any address under this policy; no denied {protocol} traffic is shown"
            );
        }
    }
    if !probes.iter().any(|p| p.expected.is_some()) {
        bail!(
            "{}: no vendor lists IPv4 addresses with TCP or UDP ports, so the lab has nothing to show",
            args.policies.display()
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())?;
    }

    let mut addrs: Vec<IpAddr> = probes.iter().map(|p| p.addr).collect();
    addrs.sort();
    addrs.dedup();
    eprintln!(
        "building the lab: namespaces {0}-client, {0}-gw, {0}-vendor",
        args.prefix
    );
    let lab = Lab::create(&args.prefix, &addrs)?;
    let workdir = std::env::temp_dir().join(format!("{}-{}", args.prefix, std::process::id()));
    std::fs::create_dir_all(&workdir)?;
    let config = workdir.join("fwd.toml");
    std::fs::write(&config, &site).with_context(|| format!("writing {}", config.display()))?;
    let log_path = workdir.join("fwd.log");
    let exe = std::env::current_exe().context("locating the fwd binary")?;
    eprintln!(
        "starting `fwd run --config {}` in {}",
        config.display(),
        lab.gateway.name()
    );
    let metrics_addr: SocketAddr = METRICS.parse().expect("valid address");
    let daemon = FwdProcess::start(&lab.gateway, &exe, &config, &log_path, metrics_addr)?;

    let ports: Vec<u16> = {
        let mut p: Vec<u16> = probes.iter().map(|p| p.port).collect();
        p.sort();
        p.dedup();
        p
    };
    let _sink = Sink::start(&lab.vendor, &ports)?;
    let started = Instant::now();
    let interactive = std::io::stdout().is_terminal();
    while !stop.load(Ordering::Relaxed) {
        for probe in &mut probes {
            let dst = SocketAddr::new(probe.addr, probe.port);
            let timeout = Duration::from_millis(300);
            let ok = if probe.protocol == proto::TCP {
                tcp_probe(&lab.client, dst, timeout)?
            } else {
                udp_probe(&lab.client, dst, timeout)?
            };
            if ok {
                probe.delivered += 1;
            } else {
                probe.blocked += 1;
            }
        }
        let metrics = http_get(&lab.gateway, metrics_addr, "/metrics")
            .map_err(|e| anyhow::anyhow!("{e}; daemon log: {}", log_path.display()))?;
        show(&probes, &metrics, &lab, interactive, started.elapsed());
        if args
            .duration
            .is_some_and(|d| started.elapsed() >= Duration::from_secs(d))
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(700));
    }
    drop(daemon);
    drop(lab);
    let _ = std::fs::remove_dir_all(&workdir);
    eprintln!("lab removed");
    Ok(())
}

fn show(probes: &[LabProbe], metrics: &str, lab: &Lab, interactive: bool, elapsed: Duration) {
    let mut out = String::new();
    if interactive {
        out.push_str("\x1b[H\x1b[2J");
    }
    out.push_str(&format!(
        "fwd lab, {}s; client {} -> gateway {} (XDP out, TC back on {GATEWAY_LAN_IF}) -> vendor {}\n",
        elapsed.as_secs(),
        lab.client.name(),
        lab.gateway.name(),
        lab.vendor.name()
    ));
    out.push_str(&format!(
        "metrics: ip netns exec {} curl -s http://{METRICS}/metrics\n\n",
        lab.gateway.name()
    ));
    out.push_str(&format!(
        "{:<30} {:<36} {:>9} {:>8}\n",
        "traffic", "policy says", "delivered", "blocked"
    ));
    for p in probes {
        out.push_str(&format!(
            "{:<30} {:<36} {:>9} {:>8}\n",
            p.name(),
            p.expected.as_deref().unwrap_or("deny"),
            p.delivered,
            p.blocked
        ));
    }
    let mut rules: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut drops: BTreeMap<String, f64> = BTreeMap::new();
    let lines = metrics.lines().map(|l| Ok(l.to_string()));
    if let Ok(scrape) = prometheus_parse::Scrape::parse(lines) {
        for s in scrape.samples {
            let (prometheus_parse::Value::Counter(value) | prometheus_parse::Value::Gauge(value)) =
                s.value
            else {
                continue;
            };
            let rule = crate::policy::RuleRef::new(
                s.labels.get("vendor").unwrap_or("?"),
                s.labels.get("rule").unwrap_or("?"),
            )
            .to_string();
            match s.metric.as_str() {
                "fwd_rule_packets_total" if value > 0.0 => {
                    rules.entry(rule).or_default().0 += value;
                }
                "fwd_rule_bytes_total" if value > 0.0 => {
                    rules.entry(rule).or_default().1 += value;
                }
                "fwd_drop_packets_total" if value > 0.0 => {
                    let reason = format!(
                        "{} ({})",
                        s.labels.get("reason").unwrap_or("?"),
                        s.labels.get("direction").unwrap_or("?")
                    );
                    drops.insert(reason, value);
                }
                _ => {}
            }
        }
    }
    out.push_str(
        "\nrule counters, both directions (fwd_rule_packets_total / fwd_rule_bytes_total):\n",
    );
    for (rule, (packets, bytes)) in &rules {
        out.push_str(&format!(
            "  {rule:<40} {packets:>8} pkts {bytes:>10} bytes\n"
        ));
    }
    out.push_str("drops (fwd_drop_packets_total):\n");
    for (reason, packets) in &drops {
        out.push_str(&format!("  {reason:<40} {packets:>8} pkts\n"));
    }
    if interactive {
        out.push_str("\nCtrl-C stops the lab and removes the namespaces.\n");
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}
