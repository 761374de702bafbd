//! Differential end to end: the same few hundred packets cross the lab's gateway twice, once
//! judged by `fwd run` (XDP and TC on the LAN interface) and once by the ruleset `fwd export
//! nftables` writes for the same config, loaded with `nft -f` on a gateway without fwd. Which
//! packets reach the far side, and whether their replies come back, must agree packet by
//! packet.
//!
//! The probes: TCP SYNs, UDP datagrams and ICMP echoes from the client to addresses inside and
//! outside nested prefixes, on ports inside and outside the rules' ranges, IPv4 and IPv6;
//! then UDP from the vendor side into the client (an ingress rule by local port, a `related`
//! rule by remote port from remotes the client did and did not talk to, audited, exempt and
//! unlisted remotes). Arrival is seen by packet sockets on the receiving host's interface;
//! return traffic by the sending sockets (a TCP handshake completing, an echo answered).
//!
//! Needs root (namespaces, BPF) and `nft`; skips with a message when `nft` is missing.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket},
    os::fd::{AsRawFd as _, OwnedFd},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use fwd_lab::{
    CLIENT_V4, CLIENT_V6, FwdProcess, GATEWAY_LAN_IF, Lab, Netns, Pins, SiteConfig, fwd_bin,
    fwd_command, scratch,
};
use nix::sys::socket::{
    AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType, recvfrom, setsockopt, socket,
    sockopt::ReceiveTimeout,
};
use socket2::{Domain, Protocol, Socket, Type};

const METRICS: &str = "127.0.0.1:9469";
const TABLE: &str = "fwd_export";

/// Nested prefixes across rules (web /24 > media /25 > sip /27; /48 > /64 > /112), port
/// ranges, tcp, udp, tcp+udp and icmp, v4 and v6, an ingress rule by local port and a
/// `related` one by remote port.
const POLICY: &str = r#"
[vendor]
id = "diff"
name = "Differential"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443, "8000-8100"]
remote = ["198.51.100.0/24", "2001:db8:a::/48"]

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = ["3478-3481", "10000-20000"]
remote = ["198.51.100.128/25", "2001:db8:a:1::/64"]

[[rule]]
id = "sip"
service = "SIP"
protocol = ["tcp", "udp"]
ports = ["5060-5061"]
remote = ["198.51.100.192/27", "2001:db8:a:1::/112"]

[[rule]]
id = "ssh"
service = "Admin"
protocol = "tcp"
ports = [22]
remote = ["203.0.113.7", "2001:db8:b::7"]

[[rule]]
id = "ping"
service = "Reachability"
protocol = "icmp"
remote = ["198.51.100.0/25", "2001:db8:a::/64"]

[[rule]]
id = "callbacks"
service = "Callbacks"
direction = "ingress"
protocol = "udp"
local_ports = ["40000-40099"]
remote = ["203.0.113.0/24", "2001:db8:b::/64"]

[[rule]]
id = "srtp"
service = "Media from the SFU"
direction = "ingress"
protocol = "udp"
remote_ports = [5004]
related = true
remote = ["198.51.100.0/24", "2001:db8:a::/48"]
"#;

/// A vendor rolled out in audit mode: what it does not allow passes anyway.
const TRIAL: &str = r#"
[vendor]
id = "trial"
name = "Trial"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/25", "2001:db8:c::/64"]
"#;

/// Remotes the client sends to.
const EGRESS_REMOTES: [&str; 20] = [
    "198.51.100.1",      // web, ping
    "198.51.100.127",    // web, ping: the /25's last address
    "198.51.100.130",    // web, media
    "198.51.100.200",    // web, media, sip
    "198.51.100.250",    // web, media (above the sip /27)
    "198.51.101.1",      // no rule
    "203.0.113.7",       // ssh (and the callbacks ingress rule)
    "203.0.113.8",       // only the callbacks ingress rule
    "203.0.113.200",     // exempt
    "192.0.2.10",        // trial, audited
    "192.0.2.200",       // no rule (outside trial's /25)
    "2001:db8:a::1",     // web, ping
    "2001:db8:a:1::1",   // web, media, sip
    "2001:db8:a:1::1:1", // web, media (outside the sip /112)
    "2001:db8:a:2::1",   // web only
    "2001:db8:b::7",     // ssh
    "2001:db8:b::8",     // only the callbacks ingress rule
    "2001:db8:c::10",    // trial, audited
    "2001:db8:d::1",     // no rule
    "2001:db8:e::1",     // exempt
];
const TCP_PORTS: [u16; 12] = [
    21, 22, 23, 442, 443, 444, 5060, 5061, 7999, 8000, 8100, 8101,
];
const UDP_PORTS: [u16; 9] = [3477, 3478, 3481, 3482, 5060, 9999, 10000, 20000, 20001];

/// Remotes that send into the client; `.61` and `a::61` never hear from it, so the related
/// rule must not admit them.
const INGRESS_REMOTES: [&str; 13] = [
    "203.0.113.7",
    "203.0.113.8",
    "198.51.100.130",
    "198.51.100.61",
    "198.51.101.1",
    "203.0.113.200",
    "192.0.2.10",
    "2001:db8:b::8",
    "2001:db8:a::1",
    "2001:db8:a::61",
    "2001:db8:d::1",
    "2001:db8:e::1",
    "2001:db8:c::10",
];
const INGRESS_REMOTE_PORTS: [u16; 2] = [5004, 5005];
const INGRESS_LOCAL_PORTS: [u16; 4] = [40000, 40099, 40100, 41000];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Tcp,
    Udp,
    Ping,
}

/// A probe as both runs name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Probe {
    ingress: bool,
    kind: Kind,
    remote: IpAddr,
    remote_port: u16,
    local_port: u16,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Ping => "icmp echo",
        };
        let remote = SocketAddr::new(self.remote, self.remote_port);
        if self.ingress {
            write!(
                f,
                "ingress {kind} from {remote} to local port {}",
                self.local_port
            )
        } else if self.kind == Kind::Ping {
            write!(f, "egress {kind} to {}", self.remote)
        } else {
            write!(f, "egress {kind} to {remote}")
        }
    }
}

/// A packet on the wire: for ICMP echo, `sport` is the echo identifier and `dport` 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Wire {
    protocol: u8,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

/// What happened to a probe: it reached the far side; its reply came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outcome {
    arrived: bool,
    returned: bool,
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn client_addr(remote: IpAddr) -> IpAddr {
    match remote {
        IpAddr::V4(_) => IpAddr::V4(CLIENT_V4),
        IpAddr::V6(_) => IpAddr::V6(CLIENT_V6),
    }
}

fn nft_missing() -> bool {
    !Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn exported_nftables_ruleset_gives_fwds_verdicts_packet_by_packet() {
    if !fwd_lab::can_run_as_root("exported_nftables_ruleset_gives_fwds_verdicts_packet_by_packet") {
        return;
    }
    if nft_missing() {
        eprintln!(
            "SKIPPED: `nft` is not installed (the nftables package; `cargo xtask setup` installs it)"
        );
        return;
    }
    let (prefix, dir) = scratch("export");
    let pins = Pins::new(&prefix);
    std::fs::write(dir.join("policies/diff.toml"), POLICY).unwrap();
    std::fs::write(dir.join("policies/trial.toml"), TRIAL).unwrap();
    let config = dir.join("fwd.toml");
    SiteConfig::new("policies")
        .pins(&pins)
        .on_exit("detach")
        .top("exempt = [\"203.0.113.128/25\", \"2001:db8:e::/64\"]")
        .metrics(METRICS)
        .gateway(GATEWAY_LAN_IF)
        .tables("[vendor_action]\ntrial = \"audit\"")
        .write(&config)
        .unwrap();
    let mut vendor_addrs: Vec<IpAddr> = EGRESS_REMOTES.iter().map(|a| addr(a)).collect();
    vendor_addrs.extend(INGRESS_REMOTES.iter().map(|a| addr(a)));
    vendor_addrs.sort();
    vendor_addrs.dedup();

    // Run 1: fwd's programs on the gateway.
    let by_fwd = {
        let lab = Lab::create(&format!("{prefix}a"), &vendor_addrs).unwrap();
        let fwd = FwdProcess::start(
            &lab.gateway,
            &fwd_bin(),
            &config,
            &dir.join("fwd.log"),
            METRICS.parse().unwrap(),
        )
        .unwrap();
        let outcomes = run_probes(&lab);
        drop(fwd);
        outcomes
    };

    // Run 2: a gateway without fwd, with the exported ruleset.
    let script = dir.join("fwd.nft");
    let out = fwd_command(&fwd_bin())
        .args(["export", "nftables", "--config"])
        .arg(&config)
        .arg("--output")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fwd export nftables failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (by_nft, counters) = {
        let lab = Lab::create(&format!("{prefix}b"), &vendor_addrs).unwrap();
        nft(&lab.gateway, &["-f", script.to_str().unwrap()]);
        let outcomes = run_probes(&lab);
        // The named counters: rules, replies, what no rule allows, unrelated remotes.
        let counters: Vec<(&str, u64)> = [
            "diff/web",
            "diff/srtp",
            "reason/established",
            "reason/no_address_match",
            "reason/not_related",
        ]
        .into_iter()
        .map(|c| {
            (
                c,
                packets(&nft(&lab.gateway, &["list", "counter", "inet", TABLE, c])),
            )
        })
        .collect();
        (outcomes, counters)
    };

    // The lab and the probes are sound: known verdicts of fwd's (which the evaluator and
    // the gateway tests pin down), so that equal outcomes mean something.
    let expect = |probe: Probe, arrived: bool, returned: bool| {
        assert_eq!(
            by_fwd[&probe],
            Outcome { arrived, returned },
            "fwd's verdict on {probe}"
        );
    };
    let egress = |kind, remote: &str, port| Probe {
        ingress: false,
        kind,
        remote: addr(remote),
        remote_port: port,
        local_port: 0,
    };
    let ingress = |remote: &str, remote_port, local_port| Probe {
        ingress: true,
        kind: Kind::Udp,
        remote: addr(remote),
        remote_port,
        local_port,
    };
    expect(egress(Kind::Tcp, "198.51.100.1", 443), true, true);
    expect(egress(Kind::Tcp, "198.51.101.1", 443), false, false);
    expect(egress(Kind::Udp, "198.51.100.200", 5060), true, true);
    expect(egress(Kind::Udp, "198.51.100.250", 5060), false, false);
    expect(egress(Kind::Udp, "198.51.100.1", 10000), false, false);
    expect(egress(Kind::Ping, "198.51.100.1", 0), true, true);
    expect(egress(Kind::Ping, "198.51.100.130", 0), false, false);
    expect(egress(Kind::Tcp, "2001:db8:a:1::1", 5061), true, true);
    expect(egress(Kind::Tcp, "2001:db8:a:1::1:1", 5061), false, false);
    expect(egress(Kind::Tcp, "192.0.2.10", 21), true, true);
    expect(egress(Kind::Udp, "203.0.113.200", 9999), true, true);
    expect(ingress("198.51.100.130", 5004, 41000), true, true);
    expect(ingress("198.51.100.61", 5004, 41000), false, false);
    expect(ingress("2001:db8:a::61", 5004, 41000), false, false);
    expect(ingress("203.0.113.8", 5005, 40099), true, true);
    expect(ingress("203.0.113.8", 5005, 40100), false, false);

    assert_eq!(by_fwd.len(), by_nft.len());
    let differing: Vec<String> = by_fwd
        .iter()
        .filter(|(probe, outcome)| by_nft.get(probe) != Some(outcome))
        .map(|(probe, o)| {
            format!(
                "  {probe}: fwd {} / nftables {}",
                show(Some(o)),
                show(by_nft.get(probe))
            )
        })
        .collect();
    let passed = by_fwd.values().filter(|o| o.arrived).count();
    println!(
        "{} probes, {passed} passed both ways of judging, {} differ",
        by_fwd.len(),
        differing.len()
    );
    assert!(
        differing.is_empty(),
        "the exported ruleset and fwd disagree on {} of {} probes:\n{}",
        differing.len(),
        by_fwd.len(),
        differing.join("\n")
    );

    for (counter, packets) in counters {
        assert!(
            packets > 0,
            "the ruleset's counter {counter} counted nothing"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn show(outcome: Option<&Outcome>) -> String {
    match outcome {
        None => "not sent".to_string(),
        Some(o) => format!(
            "{}, {}",
            if o.arrived { "arrived" } else { "stopped" },
            if o.returned { "reply back" } else { "no reply" }
        ),
    }
}

/// Runs `nft ARGS` in `ns`; panics with nft's message on failure. Returns its output.
fn nft(ns: &Netns, args: &[&str]) -> String {
    let out = ns.command("nft").unwrap().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `packets N` of a listed counter.
fn packets(listing: &str) -> u64 {
    listing
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Sends every probe through the lab's gateway and records what happened to each.
fn run_probes(lab: &Lab) -> BTreeMap<Probe, Outcome> {
    lab.client
        .sysctl("net/ipv4/ping_group_range", "0 2147483647")
        .unwrap();
    let egress_remotes: Vec<IpAddr> = EGRESS_REMOTES.iter().map(|a| addr(a)).collect();
    // The vendor answers: TCP listeners on every port and address, UDP echoes per address.
    let listeners = lab
        .vendor
        .run(|| {
            TCP_PORTS
                .iter()
                .map(|&p| TcpListener::bind((Ipv6Addr::UNSPECIFIED, p)).unwrap())
                .collect::<Vec<_>>()
        })
        .unwrap();
    let remotes = egress_remotes.clone();
    let vendor_echo = Echo::start(
        lab.vendor
            .run(move || {
                let mut sockets = Vec::new();
                for &a in &remotes {
                    for &p in &UDP_PORTS {
                        sockets.push(UdpSocket::bind((a, p)).unwrap());
                    }
                }
                sockets
            })
            .unwrap(),
    );
    let client_echo = Echo::start(
        lab.client
            .run(|| {
                INGRESS_LOCAL_PORTS
                    .iter()
                    .map(|&p| UdpSocket::bind((Ipv6Addr::UNSPECIFIED, p)).unwrap())
                    .collect()
            })
            .unwrap(),
    );
    let vendor_seen = Capture::start(&lab.vendor, "eth0");
    let client_seen = Capture::start(&lab.client, "eth0");

    // Egress: every probe at once, then a wait long enough for a retransmitted SYN.
    let mut probes = Vec::new();
    for &remote in &egress_remotes {
        for &port in &TCP_PORTS {
            probes.push((Kind::Tcp, remote, port));
        }
        for &port in &UDP_PORTS {
            probes.push((Kind::Udp, remote, port));
        }
        probes.push((Kind::Ping, remote, 0));
    }
    let sent: Vec<(Probe, Wire, Socket)> = lab
        .client
        .run(move || {
            probes
                .into_iter()
                .map(|(k, r, p)| send_egress(k, r, p))
                .collect()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let mut results: Vec<(Probe, Wire, bool)> = sent
        .iter()
        .map(|(probe, wire, socket)| (*probe, *wire, replied(probe.kind, socket)))
        .collect();
    drop(sent);

    // Ingress, after egress: the related rule admits the remotes the client talked to.
    let ingress_remotes: Vec<IpAddr> = INGRESS_REMOTES.iter().map(|a| addr(a)).collect();
    let senders: Vec<(IpAddr, u16, UdpSocket)> = lab
        .vendor
        .run(move || {
            let mut senders = Vec::new();
            for &remote in &ingress_remotes {
                for &port in &INGRESS_REMOTE_PORTS {
                    let socket = UdpSocket::bind((remote, port)).unwrap();
                    for &local in &INGRESS_LOCAL_PORTS {
                        socket
                            .send_to(b"fwd differential", (client_addr(remote), local))
                            .unwrap();
                    }
                    socket.set_nonblocking(true).unwrap();
                    senders.push((remote, port, socket));
                }
            }
            senders
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for (remote, port, socket) in &senders {
        let mut echoed = HashSet::new();
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            echoed.insert(from.port());
        }
        for &local in &INGRESS_LOCAL_PORTS {
            let probe = Probe {
                ingress: true,
                kind: Kind::Udp,
                remote: *remote,
                remote_port: *port,
                local_port: local,
            };
            let wire = Wire {
                protocol: 17,
                src: *remote,
                dst: client_addr(*remote),
                sport: *port,
                dport: local,
            };
            results.push((probe, wire, echoed.contains(&local)));
        }
    }

    let vendor_seen = vendor_seen.finish();
    let client_seen = client_seen.finish();
    drop((listeners, vendor_echo, client_echo, senders));
    results
        .into_iter()
        .map(|(probe, wire, returned)| {
            let seen = if probe.ingress {
                &client_seen
            } else {
                &vendor_seen
            };
            (
                probe,
                Outcome {
                    arrived: seen.contains(&wire),
                    returned,
                },
            )
        })
        .collect()
}

/// Opens a socket for one egress probe (in the client's namespace) and sends it: a
/// non-blocking connect, a datagram, or an echo request on a ping socket.
fn send_egress(kind: Kind, remote: IpAddr, port: u16) -> (Probe, Wire, Socket) {
    let domain = if remote.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let dst = SocketAddr::new(remote, port);
    let (socket, protocol) = match kind {
        Kind::Tcp => {
            let s = Socket::new(domain, Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&dst.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => {}
                Err(e) => panic!("connecting to {dst}: {e}"),
            }
            (s, 6)
        }
        Kind::Udp => {
            let s = Socket::new(domain, Type::DGRAM, None).unwrap();
            s.connect(&dst.into()).unwrap();
            s.send(b"fwd differential").unwrap();
            (s, 17)
        }
        Kind::Ping => {
            let (icmp, request) = if remote.is_ipv4() {
                (Protocol::ICMPV4, 8u8)
            } else {
                (Protocol::ICMPV6, 128u8)
            };
            let s = Socket::new(domain, Type::DGRAM, Some(icmp)).unwrap();
            s.connect(&SocketAddr::new(remote, 0).into()).unwrap();
            // The kernel fills in the identifier (the socket's port) and the checksum.
            s.send(&[request, 0, 0, 0, 0, 0, 0, 1, b'f', b'w', b'd', b'!'])
                .unwrap();
            (s, if remote.is_ipv4() { 1 } else { 58 })
        }
    };
    socket.set_nonblocking(true).unwrap();
    let local = socket
        .local_addr()
        .unwrap()
        .as_socket()
        .expect("an IP socket")
        .port();
    let probe = Probe {
        ingress: false,
        kind,
        remote,
        remote_port: port,
        local_port: 0,
    };
    let wire = Wire {
        protocol,
        src: client_addr(remote),
        dst: remote,
        sport: local,
        dport: if kind == Kind::Ping { 0 } else { port },
    };
    (probe, wire, socket)
}

/// Whether the reply of an egress probe came back: the handshake completed (or a reset
/// came), the datagram or the echo was answered.
fn replied(kind: Kind, socket: &Socket) -> bool {
    match kind {
        Kind::Tcp => match socket.take_error() {
            Ok(Some(e)) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            _ => socket.peer_addr().is_ok(),
        },
        Kind::Udp | Kind::Ping => {
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 64];
            socket.recv(&mut buf).is_ok()
        }
    }
}

/// UDP sockets that send back what they receive, polled by one thread; stops on drop.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(sockets: Vec<UdpSocket>) -> Echo {
        for s in &sockets {
            s.set_nonblocking(true).unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                for socket in &sockets {
                    while let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The probes that arrive on one interface of a namespace (a packet socket): TCP SYNs, UDP
/// datagrams and ICMP echo requests.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<HashSet<Wire>>,
}

/// `sll_pkttype` of frames the host sends.
const PACKET_OUTGOING: u8 = 4;

impl Capture {
    fn start(ns: &Netns, interface: &'static str) -> Capture {
        let (fd, ifindex): (OwnedFd, u32) = ns
            .run(move || {
                let fd = socket(
                    AddressFamily::Packet,
                    SockType::Raw,
                    SockFlag::empty(),
                    SockProtocol::EthAll,
                )
                .expect("a packet socket (root)");
                let ifindex = nix::net::if_::if_nametoindex(interface).unwrap();
                (fd, ifindex)
            })
            .unwrap();
        setsockopt(
            &fd,
            ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 50_000),
        )
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = HashSet::new();
            let mut frame = [0u8; 2048];
            loop {
                match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut frame) {
                    Ok((n, Some(from)))
                        if from.ifindex() == ifindex as usize
                            && from.pkttype() != PACKET_OUTGOING =>
                    {
                        seen.extend(parse_frame(&frame[..n]));
                    }
                    Ok(_) => {}
                    // The timeout: check whether to stop.
                    Err(_) => {
                        if s.load(Ordering::Relaxed) {
                            return seen;
                        }
                    }
                }
            }
        });
        Capture { stop, thread }
    }

    fn finish(self) -> HashSet<Wire> {
        // Let the last packets in flight land.
        std::thread::sleep(Duration::from_millis(200));
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("capture thread")
    }
}

/// The probe an Ethernet frame carries, if it is one.
fn parse_frame(frame: &[u8]) -> Option<Wire> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let (protocol, src, dst, l4) = match ethertype {
        0x0800 => {
            let header = usize::from(ip.first()? & 0x0f) * 4;
            let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
            (
                *ip.get(9)?,
                IpAddr::from(Ipv4Addr::from(src)),
                IpAddr::from(Ipv4Addr::from(dst)),
                ip.get(header..)?,
            )
        }
        0x86dd => {
            let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
            (
                *ip.get(6)?,
                IpAddr::from(Ipv6Addr::from(src)),
                IpAddr::from(Ipv6Addr::from(dst)),
                ip.get(40..)?,
            )
        }
        _ => return None,
    };
    let be16 = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    match protocol {
        // A connection attempt: SYN without ACK.
        6 if l4.get(13)? & 0x12 == 0x02 => Some(Wire {
            protocol,
            src,
            dst,
            sport: be16(0)?,
            dport: be16(2)?,
        }),
        17 => Some(Wire {
            protocol,
            src,
            dst,
            sport: be16(0)?,
            dport: be16(2)?,
        }),
        1 | 58 if *l4.first()? == if protocol == 1 { 8 } else { 128 } => Some(Wire {
            protocol,
            src,
            dst,
            sport: be16(4)?,
            dport: 0,
        }),
        _ => None,
    }
}
