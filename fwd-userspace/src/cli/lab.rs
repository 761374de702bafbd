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
    control::DeniedSample,
    policy::{self, Direction, Level, Protocol, Remote},
};

/// An address no bundled policy names (TEST-NET-3, RFC 5737).
const UNLISTED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const METRICS: &str = "127.0.0.1:9469";

#[derive(clap::Args, Debug)]
#[command(
    after_help = "What it shows, every second (redrawn in place in a terminal, green where \
traffic did what the policy says and red where not; plain text when piped): a TCP and a UDP \
probe per vendor that lists IPv4 networks, a probe by name for each vendor whose rules name \
hosts (the client asks fwd's DNS proxy; the first probe, before asking, is blocked), a denied \
probe per reason (an unlisted address, a listed address on a port no rule opens, an \
unsolicited connection into the client), the rule counters, the drops by reason and \
direction, and the daemon's last samples.\n\n\
Examples:\n  fwd lab --policies /etc/fwd/policies\n  \
fwd lab --policies policies --audit              # what enforcing would drop\n  \
fwd lab --policies policies --level mandatory,recommended --duration 30"
)]
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
    /// Run the gateway in audit mode: everything passes, and the lab shows what enforcing
    /// would have dropped (the probes the policy denies, `audit_would_drop`, the audited
    /// samples).
    #[arg(long)]
    audit: bool,
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
    /// The remote end: the destination of an outbound probe, the source of an inbound one.
    addr: IpAddr,
    /// The remote port (outbound), the client's port (inbound).
    port: u16,
    /// From the vendor side to the client, not the other way.
    inbound: bool,
    /// A domain rule's name: the client asks fwd's DNS proxy for it before each probe (not
    /// before the first, which shows the address closed until the name is asked).
    name: Option<String>,
    /// What the compiled policy says: the rule that allows it, e.g. "pexip/media"...
    expected: Option<String>,
    /// ... or why it is dropped.
    denied_because: &'static str,
    delivered: u64,
    blocked: u64,
}

impl LabProbe {
    fn denied(protocol: u8, addr: IpAddr, port: u16, because: &'static str) -> LabProbe {
        LabProbe {
            protocol,
            addr,
            port,
            inbound: false,
            name: None,
            expected: None,
            denied_because: because,
            delivered: 0,
            blocked: 0,
        }
    }

    fn name(&self) -> String {
        let p = if self.protocol == proto::TCP {
            "tcp"
        } else {
            "udp"
        };
        if self.inbound {
            format!("{p} {} -> client:{}", self.addr, self.port)
        } else if let Some(name) = &self.name {
            format!("{p} {name}:{}", self.port)
        } else {
            format!("{p} {}", SocketAddr::new(self.addr, self.port))
        }
    }

    fn policy_says(&self) -> String {
        match (&self.expected, &self.name) {
            (Some(rule), Some(_)) => format!("allow: {rule}, once asked via fwd's DNS"),
            (Some(rule), None) => format!("allow: {rule}"),
            (None, _) => format!("deny: {}", self.denied_because),
        }
    }
}

/// The first address the lab's DNS authority gives a domain rule's name (RFC 2544's
/// benchmark range: no bundled policy lists it, so only the name can open it); the next
/// name gets the next address.
const NAMED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// For each vendor the probes so far show nothing of (its rules name hosts, not networks):
/// a probe of its first egress domain rule with a TCP or UDP port, by name (a wildcard's
/// `lab.` child), which the policy allows at the name's address while the address alone is
/// denied.
fn choose_name_probes(
    set: &policy::PolicySet,
    evaluator: &Evaluator<'_>,
    shown: &[LabProbe],
) -> Vec<LabProbe> {
    let covered: Vec<&str> = shown
        .iter()
        .filter_map(|p| p.expected.as_deref()?.split('/').next())
        .collect();
    let mut probes: Vec<LabProbe> = Vec::new();
    for vp in &set.vendors {
        if covered.contains(&vp.vendor.id.as_str()) {
            continue;
        }
        let at = Ipv4Addr::from(u32::from(NAMED) + probes.len() as u32);
        probes.extend(name_probe(vp, evaluator, at));
    }
    probes
}

fn name_probe(
    vp: &policy::VendorPolicy,
    evaluator: &Evaluator<'_>,
    at: Ipv4Addr,
) -> Option<LabProbe> {
    vp.rules.iter().find_map(|rule| {
        if rule.direction != Direction::Egress {
            return None;
        }
        let name = rule.remotes.iter().find_map(|r| match r {
            Remote::Host(h) => Some(h.clone()),
            Remote::Wildcard(suffix) => Some(format!("lab.{suffix}")),
            _ => None,
        })?;
        let protocol = if rule.protocols.contains(&Protocol::Tcp) {
            proto::TCP
        } else if rule.protocols.contains(&Protocol::Udp) {
            proto::UDP
        } else {
            return None;
        };
        let port = rule.ports.first()?.lo;
        let probe = Probe {
            direction: Direction::Egress,
            protocol,
            remote: IpAddr::V4(at),
            port,
            local_port: 0,
        };
        let Verdict::Allow { rule: id } = evaluator.evaluate_name(&name, &probe) else {
            return None;
        };
        if matches!(evaluator.evaluate(&probe), Verdict::Allow { .. }) {
            return None;
        }
        Some(LabProbe {
            name: Some(name),
            expected: evaluator.rule(id).map(|r| r.rule_ref().to_string()),
            ..LabProbe::denied(protocol, IpAddr::V4(at), port, "")
        })
    })
}

/// Asks fwd's DNS proxy on the gateway for `name`'s A records, from the client.
fn resolve(lab: &Lab, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, RecordType},
    };
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    let bytes = query.to_vec()?;
    let socket = lab
        .client
        .run(|| std::net::UdpSocket::bind((fwd_lab::CLIENT_V4, 0)))??;
    socket.set_read_timeout(Some(Duration::from_millis(800)))?;
    socket.connect((fwd_lab::GATEWAY_LAN_V4, 53))?;
    socket.send(&bytes)?;
    let mut buf = [0u8; 1500];
    let n = socket.recv(&mut buf)?;
    let reply = Message::from_vec(&buf[..n])?;
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

/// Ports the lab tries for traffic the policy denies.
const DENIED_PORTS: [u16; 5] = [8081, 6667, 25, 9, 7];
/// The client's port an unsolicited inbound connection goes to.
const INBOUND_PORT: u16 = 2222;

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
                    expected: Some(expected),
                    ..LabProbe::denied(protocol, addr, port, "")
                });
            }
        }
    }
    // A listed address on a port no rule opens, and an unsolicited connection from it.
    if let Some(listed) = probes
        .iter()
        .find(|p| p.protocol == proto::TCP)
        .map(|p| p.addr)
    {
        let wrong_port = DENIED_PORTS.into_iter().find(|port| {
            let probe = Probe {
                direction: Direction::Egress,
                protocol: proto::TCP,
                remote: listed,
                port: *port,
                local_port: 0,
            };
            matches!(evaluator.evaluate(&probe), Verdict::NoPortMatch { .. })
        });
        if let Some(port) = wrong_port {
            probes.push(LabProbe::denied(
                proto::TCP,
                listed,
                port,
                "no rule for this port (no_port_match)",
            ));
        }
        let inbound = Probe {
            direction: Direction::Ingress,
            protocol: proto::TCP,
            remote: listed,
            port: 40000,
            local_port: INBOUND_PORT,
        };
        if label(evaluator.evaluate(&inbound)).is_none() {
            probes.push(LabProbe {
                inbound: true,
                ..LabProbe::denied(
                    proto::TCP,
                    listed,
                    INBOUND_PORT,
                    "unsolicited inbound connection",
                )
            });
        }
    }
    for protocol in [proto::TCP, proto::UDP] {
        // The reason is the policy's: an `any` rule covers every address (Pexip's general
        // profile), and then an unlisted address is dropped for its port.
        let denied = DENIED_PORTS.into_iter().find_map(|port| {
            let probe = Probe {
                direction: Direction::Egress,
                protocol,
                remote: IpAddr::V4(UNLISTED),
                port,
                local_port: 0,
            };
            match evaluator.evaluate(&probe) {
                Verdict::Allow { .. } => None,
                Verdict::NoAddressMatch => {
                    Some((port, "no rule lists the address (no_address_match)"))
                }
                Verdict::NoPortMatch { .. } => Some((
                    port,
                    "unlisted; rules for any address, not this port (no_port_match)",
                )),
            }
        });
        if let Some((port, because)) = denied {
            probes.push(LabProbe::denied(
                protocol,
                IpAddr::V4(UNLISTED),
                port,
                because,
            ));
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
        .action(if args.audit { "audit" } else { "enforce" })
        .metrics(METRICS)
        .gateway(GATEWAY_LAN_IF)
        .tables(&format!(
            "[select]\nlevels = [{}]\n\n[dns]\nupstream = [\"{}\"]\n",
            levels
                .iter()
                .map(|l| fwd_lab::toml_str(l.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
            fwd_lab::VENDOR_WAN_V4
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
    let named = choose_name_probes(&set, &evaluator, &probes);
    if named.is_empty() {
        eprintln!(
            "note: no domain rule with a TCP or UDP port; the lab shows no name opening its address"
        );
    }
    probes.extend(named);
    for protocol in ["tcp", "udp"] {
        let p = if protocol == "tcp" {
            proto::TCP
        } else {
            proto::UDP
        };
        if !probes
            .iter()
            .any(|x| x.protocol == p && x.expected.is_none() && !x.inbound)
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

    let ports = |inbound: bool| {
        let mut p: Vec<u16> = probes
            .iter()
            .filter(|p| p.inbound == inbound)
            .map(|p| p.port)
            .collect();
        p.sort();
        p.dedup();
        p
    };
    let records: Vec<(String, Ipv4Addr)> = probes
        .iter()
        .filter_map(|p| match (&p.name, p.addr) {
            (Some(name), IpAddr::V4(a)) => Some((name.clone(), a)),
            _ => None,
        })
        .collect();
    let _authority = if records.is_empty() {
        None
    } else {
        let records: Vec<String> = records
            .iter()
            .map(|(name, addr)| format!("--host-record={name},{addr}"))
            .collect();
        Some(fwd_lab::Authority::start(
            &lab.vendor,
            fwd_lab::VENDOR_WAN_V4,
            53,
            &records,
            &workdir.join("dnsmasq.log"),
        )?)
    };
    let _sink = Sink::start(&lab.vendor, &ports(false))?;
    let _client_sink = Sink::start(&lab.client, &ports(true))?;
    let socket = workdir.join("control.sock");
    let started = Instant::now();
    let interactive = std::io::stdout().is_terminal();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for probe in &mut probes {
            let dst = SocketAddr::new(probe.addr, probe.port);
            let timeout = Duration::from_millis(300);
            // The first round sends to a name's address before asking for the name.
            if let Some(name) = probe.name.as_deref().filter(|_| round > 0)
                && let Err(err) = resolve(&lab, name)
            {
                eprintln!("the lab's DNS query for {name} failed: {err}");
            }
            let ok = if probe.inbound {
                let client = SocketAddr::new(IpAddr::V4(fwd_lab::CLIENT_V4), probe.port);
                fwd_lab::tcp_probe_from(&lab.vendor, probe.addr, client, timeout)?
            } else if probe.protocol == proto::TCP {
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
        // The daemon's last samples of what it dropped (or, auditing, passed anyway).
        let samples: Vec<DeniedSample> = super::client::ask(&socket, "history").unwrap_or_default();
        let view = View {
            lab: &lab,
            interactive,
            audit: args.audit,
            elapsed: started.elapsed(),
        };
        show(&view, &probes, &metrics, &samples);
        if args
            .duration
            .is_some_and(|d| started.elapsed() >= Duration::from_secs(d))
        {
            break;
        }
        round += 1;
        std::thread::sleep(Duration::from_millis(700));
    }
    drop(daemon);
    drop(lab);
    let _ = std::fs::remove_dir_all(&workdir);
    eprintln!("lab removed");
    Ok(())
}

/// What `show` draws around the probes.
struct View<'a> {
    lab: &'a Lab,
    interactive: bool,
    audit: bool,
    elapsed: Duration,
}

/// `text` in `colour` (an SGR code) on a terminal, plain otherwise.
fn paint(view: &View<'_>, colour: &str, text: &str) -> String {
    if view.interactive {
        format!("\x1b[{colour}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn show(view: &View<'_>, probes: &[LabProbe], metrics: &str, samples: &[DeniedSample]) {
    let lab = view.lab;
    let mut out = String::new();
    if view.interactive {
        // Home and clear: the picture redraws in place, like top.
        out.push_str("\x1b[H\x1b[2J");
    }
    out.push_str(&format!(
        "fwd lab, {}s{}; client {} -> gateway {} (XDP out, TC back on {GATEWAY_LAN_IF}) -> vendor {}\n",
        view.elapsed.as_secs(),
        if view.audit {
            ", AUDIT mode: nothing is dropped"
        } else {
            ""
        },
        lab.client.name(),
        lab.gateway.name(),
        lab.vendor.name()
    ));
    out.push_str(&format!(
        "metrics: ip netns exec {} curl -s http://{METRICS}/metrics\n\n",
        lab.gateway.name()
    ));
    out.push_str(&format!(
        "{:<38} {:<64} {:>9} {:>8}\n",
        "traffic", "policy says", "delivered", "blocked"
    ));
    for p in probes {
        // As the policy says: green; otherwise red (in audit mode a denied probe passes).
        // A name's address is closed until the client asks for the name (the first probe).
        let closed_first = u64::from(p.name.is_some() && !view.audit);
        let as_expected = match (&p.expected, view.audit) {
            (Some(_), _) | (None, true) => p.blocked <= closed_first,
            (None, false) => p.delivered == 0,
        };
        let line = format!(
            "{:<38} {:<64} {:>9} {:>8}",
            p.name(),
            p.policy_says(),
            p.delivered,
            p.blocked
        );
        out.push_str(&paint(view, if as_expected { "32" } else { "31" }, &line));
        out.push('\n');
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
    let shown: Vec<&DeniedSample> = samples
        .iter()
        .filter(|s| view.audit || !s.audited)
        .rev()
        .take(6)
        .collect();
    out.push_str(if view.audit {
        "\nlast samples (fwd monitor --audited; these passed only because of audit mode):\n"
    } else {
        "\nlast samples of dropped packets (fwd monitor --last 6):\n"
    });
    if shown.is_empty() {
        out.push_str("  none yet\n");
    }
    for sample in shown.into_iter().rev() {
        out.push_str(&format!("  {sample}\n"));
    }
    if view.interactive {
        out.push_str("\nCtrl-C stops the lab and removes the namespaces.\n");
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}
