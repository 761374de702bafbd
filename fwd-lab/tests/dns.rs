//! End to end: domain rules through the daemon's DNS proxy on the gateway lab, with a real
//! authoritative server (dnsmasq) in the vendor namespace. The client asks the gateway,
//! connects the instant it has the answer, and gets through; names outside the policy
//! resolve but stay blocked; a forged answer opens nothing; entries end after their TTL
//! unless a flow is live; a restart keeps them. Needs root; run through `cargo xtask test`.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use fwd_lab::{
    Authority, FwdProcess, GATEWAY_LAN_IF, GATEWAY_LAN_V4, GATEWAY_LAN_V6, Lab, Netns, Pins, Sink,
    SiteConfig, Supervisor, VENDOR_WAN_V4, fwd_bin, fwd_json, scrape, scratch, tcp_probe,
    udp_probe, wait_for,
};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, Record, RecordType, rdata::A},
};

const METRICS: &str = "127.0.0.1:9469";
const WEB: u16 = 443;
const MEDIA: u16 = 10000;
const SFU_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 10);
const SFU_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 7, 0, 0, 0, 0, 0x10);
const CNAME_TARGET: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 11);
const SPOOFED_NAME_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 12);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 20);
const BRIEF: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 30);
const LIVELY: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 31);
/// What a forged answer claims, and the address it comes from.
const FORGED: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 66);
const FORGER: Ipv4Addr = Ipv4Addr::new(198, 18, 7, 99);
/// dnsmasq's port; the relay listens on 53 in front of it.
const AUTHORITY_PORT: u16 = 5353;
const SPOOF_NAME: &str = "spoof.sfu.whereby.com";

const TIMEOUT: Duration = Duration::from_secs(2);

/// A relay on the vendor host's port 53 in front of dnsmasq (UDP and TCP). For
/// `SPOOF_NAME` it first sends two forged answers to the proxy's query socket, with the
/// right ID and question: one from another address (`FORGER`), one from the relay's own
/// address with a wrong ID; the real answer follows 200 ms later.
struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    fn start(ns: &Netns) -> Relay {
        let listen = SocketAddr::from((VENDOR_WAN_V4, 53));
        let authority = SocketAddr::from((VENDOR_WAN_V4, AUTHORITY_PORT));
        let (udp, tcp, forger) = ns
            .run(move || -> std::io::Result<_> {
                Ok((
                    UdpSocket::bind(listen)?,
                    TcpListener::bind(listen)?,
                    UdpSocket::bind((FORGER, 53))?,
                ))
            })
            .unwrap()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let s = stop.clone();
        let upstream = ns
            .run(move || UdpSocket::bind((VENDOR_WAN_V4, 0)))
            .unwrap()
            .unwrap();
        upstream.connect(authority).unwrap();
        upstream.set_read_timeout(Some(TIMEOUT)).unwrap();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let name = query.queries.first().map(|q| q.name().to_ascii());
                if name.as_deref() == Some(&format!("{SPOOF_NAME}.")) {
                    let forged = forged_answer(&query, query.metadata.id);
                    let _ = forger.send_to(&forged, from);
                    let wrong_id = forged_answer(&query, query.metadata.id ^ 0x5a5a);
                    let _ = udp.send_to(&wrong_id, from);
                    std::thread::sleep(Duration::from_millis(200));
                }
                let _ = upstream.send(&buf[..n]);
                let mut answer = [0u8; 4096];
                if let Ok(m) = upstream.recv(&mut answer) {
                    let _ = udp.send_to(&answer[..m], from);
                }
            }
        }));
        tcp.set_nonblocking(true).unwrap();
        let s = stop.clone();
        // In the namespace: each relayed connection opens a socket there.
        let accept = ns
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let Ok((client, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = relay_tcp(client, authority);
                }
            })
            .unwrap();
        threads.push(std::thread::spawn(move || {
            let _ = accept.join();
        }));
        Relay { stop, threads }
    }
}

/// Passes one TCP client's bytes to dnsmasq and back until either side is done.
fn relay_tcp(client: TcpStream, authority: SocketAddr) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&authority, TIMEOUT)?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(TIMEOUT))?;
    }
    let (mut c_in, mut s_out) = (client.try_clone()?, server.try_clone()?);
    let up = std::thread::spawn(move || std::io::copy(&mut c_in, &mut s_out));
    let (mut s_in, mut c_out) = (server, client);
    let _ = std::io::copy(&mut s_in, &mut c_out);
    let _ = up.join();
    Ok(())
}

fn forged_answer(query: &Message, id: u16) -> Vec<u8> {
    let mut answer = Message::response(id, OpCode::Query);
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.add_queries(query.queries.iter().cloned());
    let name = query.queries[0].name().clone();
    answer.add_answer(Record::from_rdata(name, 3600, RData::A(A(FORGED))));
    answer.to_vec().unwrap()
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A DNS answer as the client got it, and when.
struct Resolved {
    addrs: Vec<IpAddr>,
    message: Message,
}

fn query_message(name: &str, rtype: RecordType) -> Message {
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    query
}

fn addresses(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// Asks `server` over UDP (from the namespace the caller runs in).
fn ask_udp(server: SocketAddr, name: &str, rtype: RecordType) -> std::io::Result<Resolved> {
    let query = query_message(name, rtype);
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    socket.connect(server)?;
    socket.send(&query.to_vec().unwrap())?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf)?;
    let message = Message::from_vec(&buf[..n]).map_err(std::io::Error::other)?;
    assert_eq!(message.metadata.id, query.metadata.id);
    assert_eq!(message.metadata.message_type, MessageType::Response);
    Ok(Resolved {
        addrs: addresses(&message),
        message,
    })
}

/// Asks `server` over TCP.
fn ask_tcp(server: SocketAddr, name: &str, rtype: RecordType) -> std::io::Result<Resolved> {
    ask_tcp_waiting(server, name, rtype, Duration::from_secs(5))
}

/// Asks `server` over TCP, waiting up to `wait` for the answer.
fn ask_tcp_waiting(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    wait: Duration,
) -> std::io::Result<Resolved> {
    let query = query_message(name, rtype).to_vec().unwrap();
    let mut stream = TcpStream::connect_timeout(&server, TIMEOUT)?;
    stream.set_read_timeout(Some(wait))?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf)?;
    let message = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    Ok(Resolved {
        addrs: addresses(&message),
        message,
    })
}

/// What `fwd dns --json` lists: (name, address, rules, remaining seconds).
fn learned(dir: &Path) -> Vec<(String, IpAddr, Vec<String>, u64)> {
    let reply = fwd_json(dir, &["dns"]);
    assert_eq!(reply["enabled"], true, "{reply}");
    reply["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["address"].as_str().unwrap().parse().unwrap(),
                e["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
                e["remaining_s"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn is_learned(dir: &Path, addr: IpAddr) -> bool {
    learned(dir).iter().any(|(_, a, _, _)| *a == addr)
}

struct Setup {
    lab: Lab,
    _sink: Sink,
    _authority: Authority,
    _relay: Relay,
    _pins: Pins,
    dir: std::path::PathBuf,
}

fn setup(test: &str, extra: &str) -> Setup {
    let (prefix, dir) = scratch(test);
    let lab = Lab::create(
        &prefix,
        &[
            SFU_V4.into(),
            SFU_V6.into(),
            CNAME_TARGET.into(),
            SPOOFED_NAME_ADDR.into(),
            OUTSIDE.into(),
            BRIEF.into(),
            LIVELY.into(),
            FORGED.into(),
            FORGER.into(),
        ],
    )
    .unwrap();
    let sink = Sink::start(&lab.vendor, &[WEB, MEDIA]).unwrap();
    let records = [
        format!("--host-record=x.sfu.whereby.com,{SFU_V4},{SFU_V6},300"),
        format!("--host-record=y.sfu.whereby.com,{CNAME_TARGET},300"),
        "--cname=meet.customer.example,y.sfu.whereby.com,300".to_string(),
        format!("--host-record={SPOOF_NAME},{SPOOFED_NAME_ADDR},300"),
        format!("--host-record=outside.example,{OUTSIDE},300"),
        format!("--host-record=brief.sfu.whereby.com,{BRIEF},2"),
        format!("--host-record=lively.sfu.whereby.com,{LIVELY},2"),
    ];
    let authority = Authority::start(
        &lab.vendor,
        VENDOR_WAN_V4,
        AUTHORITY_PORT,
        &records,
        &dir.join("dnsmasq.log"),
    )
    .unwrap();
    let relay = Relay::start(&lab.vendor);
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/whereby.toml");
    std::fs::copy(policies, dir.join("policies/whereby.toml")).unwrap();
    let pins = Pins::new(&prefix);
    SiteConfig::new("policies")
        .pins(&pins)
        .metrics(METRICS)
        .gateway(GATEWAY_LAN_IF)
        .tables(&format!(
            "[dns]\nupstream = [\"{VENDOR_WAN_V4}\"]\nmin_ttl = 1\nmax_ttl = 60\n{extra}"
        ))
        .write(&dir.join("fwd.toml"))
        .unwrap();
    Setup {
        lab,
        _sink: sink,
        _authority: authority,
        _relay: relay,
        _pins: pins,
        dir,
    }
}

fn start(s: &Setup, log: &str) -> FwdProcess {
    FwdProcess::start(
        &s.lab.gateway,
        &fwd_bin(),
        &s.dir.join("fwd.toml"),
        &s.dir.join(log),
        METRICS.parse().unwrap(),
    )
    .unwrap()
}

const PROXY_V4: SocketAddr = SocketAddr::new(IpAddr::V4(GATEWAY_LAN_V4), 53);

#[test]
fn domain_rules_open_exactly_what_the_proxy_resolved() {
    if !fwd_lab::can_run_as_root("domain_rules_open_exactly_what_the_proxy_resolved") {
        return;
    }
    let s = setup("dns", "");
    let mut fwd = start(&s, "fwd.log");
    let client = &s.lab.client;
    let sfu = SocketAddr::from((SFU_V4, WEB));
    assert!(
        !tcp_probe(client, sfu, TIMEOUT).unwrap(),
        "before any answer, nothing opens the SFU's address"
    );

    // Resolve over UDP and connect over UDP and TCP the instant the answer arrives.
    let (resolved, gap, udp_echo, tcp_echo) = client
        .run(move || {
            let udp = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            udp.set_read_timeout(Some(TIMEOUT)).unwrap();
            let resolved = ask_udp(PROXY_V4, "x.sfu.whereby.com", RecordType::A).unwrap();
            let answered = Instant::now();
            let addr = resolved.addrs[0];
            udp.send_to(b"first", (addr, MEDIA)).unwrap();
            let tcp = TcpStream::connect_timeout(&(addr, WEB).into(), TIMEOUT);
            let gap = answered.elapsed();
            let mut buf = [0u8; 16];
            let udp_echo = matches!(udp.recv(&mut buf), Ok(5));
            let tcp_echo = tcp.is_ok_and(|mut t| {
                t.set_read_timeout(Some(TIMEOUT)).unwrap();
                t.write_all(b"first").is_ok() && matches!(t.read(&mut buf), Ok(5))
            });
            (resolved, gap, udp_echo, tcp_echo)
        })
        .unwrap();
    assert_eq!(resolved.addrs, vec![IpAddr::V4(SFU_V4)]);
    eprintln!("first UDP datagram and TCP SYN sent {gap:?} after the answer");
    assert!(
        gap < Duration::from_millis(1),
        "the test must connect within the millisecond ({gap:?})"
    );
    assert!(
        udp_echo,
        "the first UDP datagram right after the answer got through"
    );
    assert!(
        tcp_echo,
        "the TCP connection right after the answer got through"
    );
    // The answer's TTL (300) is lowered to max_ttl, so the client keeps it no longer than fwd.
    assert!(resolved.message.answers.iter().all(|r| r.ttl <= 60));

    // AAAA over TCP, through the proxy's IPv6 listener; then an IPv6 connection.
    let v6 = client
        .run(|| {
            let proxy = SocketAddr::from((GATEWAY_LAN_V6, 53));
            let resolved = ask_tcp(proxy, "x.sfu.whereby.com", RecordType::AAAA).unwrap();
            let addr = resolved.addrs[0];
            let mut t = TcpStream::connect_timeout(&(addr, WEB).into(), TIMEOUT).ok()?;
            t.set_read_timeout(Some(TIMEOUT)).unwrap();
            t.write_all(b"v6").ok()?;
            let mut buf = [0u8; 4];
            matches!(t.read(&mut buf), Ok(2)).then_some(addr)
        })
        .unwrap();
    assert_eq!(v6, Some(IpAddr::V6(SFU_V6)), "AAAA over TCP opened IPv6");

    // A CNAME to a name of the policy opens the target's address.
    let cname = client
        .run(|| ask_udp(PROXY_V4, "meet.customer.example", RecordType::A).unwrap())
        .unwrap();
    assert!(cname.addrs.contains(&IpAddr::V4(CNAME_TARGET)));
    assert!(tcp_probe(client, (CNAME_TARGET, WEB).into(), TIMEOUT).unwrap());

    // A name outside the policy resolves but opens nothing.
    let outside = client
        .run(|| ask_udp(PROXY_V4, "outside.example", RecordType::A).unwrap())
        .unwrap();
    assert_eq!(outside.addrs, vec![IpAddr::V4(OUTSIDE)]);
    assert!(!tcp_probe(client, (OUTSIDE, WEB).into(), TIMEOUT).unwrap());
    assert!(!udp_probe(client, (OUTSIDE, MEDIA).into(), TIMEOUT).unwrap());

    // Forged answers (another source address; the right address with a wrong ID) are
    // ignored: the client gets the real one, and the forged address stays closed.
    let spoofed = client
        .run(|| ask_udp(PROXY_V4, SPOOF_NAME, RecordType::A).unwrap())
        .unwrap();
    assert_eq!(spoofed.addrs, vec![IpAddr::V4(SPOOFED_NAME_ADDR)]);
    assert!(!is_learned(&s.dir, FORGED.into()));
    assert!(!tcp_probe(client, (FORGED, WEB).into(), TIMEOUT).unwrap());
    assert!(!udp_probe(client, (FORGED, MEDIA).into(), TIMEOUT).unwrap());
    assert!(tcp_probe(client, (SPOOFED_NAME_ADDR, WEB).into(), TIMEOUT).unwrap());
    assert!(
        scrape(
            &s.lab.gateway,
            METRICS,
            "fwd_dns_answers_total",
            &[("result", "mismatch")]
        ) >= 1.0,
        "the forged answer from the upstream's address with a wrong ID was counted"
    );

    // `fwd dns` lists names, addresses, rules and time left; the metrics agree.
    let entries = learned(&s.dir);
    let sfu_entry = entries
        .iter()
        .find(|(n, a, _, _)| n == "x.sfu.whereby.com" && *a == IpAddr::V4(SFU_V4))
        .expect("x.sfu.whereby.com in fwd dns");
    assert!(sfu_entry.2.contains(&"whereby/signaling".to_string()));
    assert!(sfu_entry.2.contains(&"whereby/media-highport".to_string()));
    assert!((1..=60).contains(&sfu_entry.3), "{sfu_entry:?}");
    assert!(!entries.iter().any(|(n, ..)| n == "outside.example"));
    let names = scrape(&s.lab.gateway, METRICS, "fwd_dns_names_active", &[]);
    assert_eq!(names, 3.0, "x.sfu, meet.customer.example and {SPOOF_NAME}");
    assert!(
        scrape(
            &s.lab.gateway,
            METRICS,
            "fwd_dns_answers_total",
            &[("result", "not_covered")]
        ) >= 1.0
    );

    // A denied sample says which name the client resolved, though no rule names it.
    let out = std::process::Command::new(fwd_bin())
        .args(["monitor", "--json", "--last", "50", "--remote"])
        .arg(format!("{OUTSIDE}/32"))
        .arg("--config")
        .arg(s.dir.join("fwd.toml"))
        .output()
        .unwrap();
    let samples: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        samples
            .iter()
            .any(|s| s["dns_name"] == "outside.example" && s["reason"] == "no_address_match"),
        "{samples:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart keeps what was learned: the new policy slot gets the entries with the
    // rules, and traffic flows without asking again.
    assert!(
        fwd.stop(Duration::from_secs(10))
            .is_some_and(|st| st.success())
    );
    assert!(s.dir.join("state/learned.json").exists());
    let _fwd = start(&s, "fwd2.log");
    assert_eq!(fwd_json(&s.dir, &["status"])["generation"], 2);
    assert!(is_learned(&s.dir, SFU_V4.into()));
    assert!(tcp_probe(client, sfu, TIMEOUT).unwrap());
    assert!(udp_probe(client, (SFU_V4, MEDIA).into(), TIMEOUT).unwrap());
    assert!(!tcp_probe(client, (OUTSIDE, WEB).into(), TIMEOUT).unwrap());
}

#[test]
fn entries_end_after_their_ttl_unless_a_flow_is_live() {
    if !fwd_lab::can_run_as_root("entries_end_after_their_ttl_unless_a_flow_is_live") {
        return;
    }
    // Flows go idle after 2 s, so the test does not wait long.
    let s = setup(
        "dns-ttl",
        "[flows]\ntcp_timeout = 2\nudp_timeout = 2\nother_timeout = 2\n",
    );
    let _fwd = start(&s, "fwd.log");
    let client = &s.lab.client;
    for name in ["brief.sfu.whereby.com", "lively.sfu.whereby.com"] {
        client
            .run(move || ask_udp(PROXY_V4, name, RecordType::A).unwrap())
            .unwrap();
    }
    let resolved_at = Instant::now();
    assert!(tcp_probe(client, (BRIEF, WEB).into(), TIMEOUT).unwrap());
    // A steady UDP stream keeps LIVELY's flow live well past its 2 s TTL.
    let stream = fwd_lab::Stream::start(
        client,
        &[(LIVELY, MEDIA).into()],
        Duration::from_millis(200),
        35,
    )
    .unwrap();
    // BRIEF: TTL 2 s, then its flow idles out; the entry ends and the address closes.
    let ended = wait_for(Duration::from_secs(15), || {
        (!is_learned(&s.dir, BRIEF.into())).then_some(())
    });
    assert!(ended.is_some(), "brief.sfu.whereby.com was never closed");
    assert!(!tcp_probe(client, (BRIEF, WEB).into(), TIMEOUT).unwrap());
    // LIVELY is past its TTL but its flow is live: still open, shown as kept by the flow.
    assert!(resolved_at.elapsed() > Duration::from_secs(3));
    assert!(is_learned(&s.dir, LIVELY.into()));
    let results = stream.finish();
    assert_eq!(
        results[0].0, results[0].1,
        "every datagram of the live flow was echoed: {results:?}"
    );
    let ended = wait_for(Duration::from_secs(15), || {
        (!is_learned(&s.dir, LIVELY.into())).then_some(())
    });
    assert!(
        ended.is_some(),
        "lively.sfu.whereby.com stayed after its flow ended"
    );
    assert!(!udp_probe(client, (LIVELY, MEDIA).into(), TIMEOUT).unwrap());
    // Asking again opens it again.
    client
        .run(|| ask_udp(PROXY_V4, "lively.sfu.whereby.com", RecordType::A).unwrap())
        .unwrap();
    assert!(udp_probe(client, (LIVELY, MEDIA).into(), TIMEOUT).unwrap());
}

#[test]
fn steering_answers_queries_sent_to_any_resolver_and_comes_back_when_removed() {
    if !fwd_lab::can_run_as_root(
        "steering_answers_queries_sent_to_any_resolver_and_comes_back_when_removed",
    ) {
        return;
    }
    let s = setup("dns-steer", "steer = true\n");
    let _fwd = start(&s, "fwd.log");
    let client = &s.lab.client;
    // A resolver the client was configured with, which the LAN must not reach directly.
    let elsewhere = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 53), 53));
    let (udp, tcp) = client
        .run(move || {
            (
                ask_udp(elsewhere, "x.sfu.whereby.com", RecordType::A).unwrap(),
                ask_tcp(elsewhere, "y.sfu.whereby.com", RecordType::A).unwrap(),
            )
        })
        .unwrap();
    assert_eq!(udp.addrs, vec![IpAddr::V4(SFU_V4)]);
    assert_eq!(tcp.addrs, vec![IpAddr::V4(CNAME_TARGET)]);
    // The proxy answered (and learned): the addresses are open.
    assert!(is_learned(&s.dir, SFU_V4.into()));
    assert!(tcp_probe(client, (SFU_V4, WEB).into(), TIMEOUT).unwrap());
    assert!(udp_probe(client, (CNAME_TARGET, MEDIA).into(), TIMEOUT).unwrap());
    // The steering rule counts the redirected queries like any rule.
    assert!(
        scrape(
            &s.lab.gateway,
            METRICS,
            "fwd_rule_packets_total",
            &[
                ("vendor", "fwd"),
                ("rule", "dns-steer"),
                ("direction", "egress")
            ]
        ) >= 2.0
    );

    // Another tool removes the steering table: fwd puts it back within its 5 s check,
    // counts it, and queries to any resolver are answered again.
    let nft = |args: &[&str]| {
        s.lab
            .gateway
            .command("nft")
            .unwrap()
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        nft(&["delete", "table", "inet", "fwd_dns"])
            .status
            .success()
    );
    assert!(!nft(&["list", "table", "inet", "fwd_dns"]).status.success());
    let back = wait_for(Duration::from_secs(10), || {
        nft(&["list", "table", "inet", "fwd_dns"])
            .status
            .success()
            .then_some(())
    });
    assert!(back.is_some(), "the steering table was not put back");
    assert_eq!(
        scrape(
            &s.lab.gateway,
            METRICS,
            "fwd_dns_steering_restored_total",
            &[]
        ),
        1.0
    );
    let again = client
        .run(move || ask_udp(elsewhere, "x.sfu.whereby.com", RecordType::A).unwrap())
        .unwrap();
    assert_eq!(again.addrs, vec![IpAddr::V4(SFU_V4)]);
}

/// A vendor file of `n` /30 networks (100.64.0.0/10), large enough that compiling it takes
/// a while: what a reload of a big policy spends its time on.
fn big_policy(n: u32, extra_rule: bool) -> String {
    let mut text = String::from(
        "[vendor]\nid = \"big\"\nname = \"Big\"\n\n[[rule]]\nid = \"many\"\nservice = \"Many\"\nprotocol = \"tcp\"\nports = [443]\nremote = [\n",
    );
    for i in 0..n {
        let a = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i * 4);
        text.push_str(&format!("  \"{a}/30\",\n"));
    }
    text.push_str("]\n");
    if extra_rule {
        text.push_str("\n[[rule]]\nid = \"more\"\nservice = \"More\"\nprotocol = \"udp\"\nports = [5000]\nremote = [\"100.64.0.0/30\"]\n");
    }
    text
}

/// A reload compiles without the lock the DNS proxy's learning takes: a name asked while a
/// large policy compiles is answered, its address open, before the reload is done; the
/// address stays open after the flip.
#[test]
fn an_answer_during_a_large_reload_does_not_wait_for_its_compile_or_the_grace() {
    if !fwd_lab::can_run_as_root(
        "an_answer_during_a_large_reload_does_not_wait_for_its_compile_or_the_grace",
    ) {
        return;
    }
    let s = setup("dns-reload", "");
    std::fs::write(s.dir.join("policies/big.toml"), big_policy(200_000, false)).unwrap();
    let _fwd = start(&s, "fwd.log");
    // The same policy and one more rule: a reload that compiles 200,000 networks again.
    std::fs::write(s.dir.join("policies/big.toml"), big_policy(200_000, true)).unwrap();
    let config = s.dir.join("fwd.toml");
    let reload = std::thread::spawn(move || {
        let out = fwd_lab::fwd_command(&fwd_bin())
            .args(["reload", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        (out, Instant::now())
    });
    std::thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    let resolved = s
        .lab
        .client
        .run(|| ask_udp(PROXY_V4, "x.sfu.whereby.com", RecordType::A))
        .unwrap()
        .unwrap();
    let answered = Instant::now();
    let open = tcp_probe(&s.lab.client, SocketAddr::new(SFU_V4.into(), WEB), TIMEOUT).unwrap();
    // Through the rest of the reload (the install, the flip, the old slot's clean-up): a
    // name every 10 ms, each answer timed.
    let waits = s
        .lab
        .client
        .spawn({
            let reloading = reload;
            move || {
                let mut waits = Vec::new();
                while !reloading.is_finished() {
                    let asked = Instant::now();
                    let r = ask_udp(PROXY_V4, "y.sfu.whereby.com", RecordType::A).unwrap();
                    assert_eq!(r.addrs, vec![IpAddr::V4(CNAME_TARGET)]);
                    waits.push(asked.elapsed());
                    std::thread::sleep(Duration::from_millis(10));
                }
                (waits, reloading.join().unwrap())
            }
        })
        .unwrap();
    let (waits, (out, reloaded)) = waits.join().unwrap().unwrap();
    assert!(out.status.success(), "{out:?}");
    eprintln!(
        "{} answers while the reload went on, the longest after {:?}; the reload said: {}",
        waits.len(),
        waits.iter().max(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    assert!(!waits.is_empty());
    // The install holds the lock only to write the prebuilt tables and flip: the old
    // slot's grace (50 ms) is waited out without it, so the swap is far shorter.
    let said = String::from_utf8_lossy(&out.stdout);
    let swap_ms: f64 = said
        .split("swap ")
        .nth(1)
        .and_then(|r| r.split(" ms").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no swap time in {said}"));
    assert!(
        swap_ms < 25.0,
        "the swap held the lock {swap_ms} ms: {said}"
    );
    assert_eq!(resolved.addrs, vec![IpAddr::V4(SFU_V4)]);
    assert!(
        answered < reloaded,
        "the answer ({} ms after asking) waited for the reload",
        (answered - asked).as_millis()
    );
    assert!(open, "the answered address was open before the flip");
    let after = tcp_probe(&s.lab.client, SocketAddr::new(SFU_V4.into(), WEB), TIMEOUT).unwrap();
    assert!(after, "the answered address stays open after the flip");
    eprintln!(
        "answered {} ms after asking; the reload took {} ms more",
        (answered - asked).as_millis(),
        (reloaded - answered).as_millis()
    );
}

#[test]
fn an_answer_released_just_before_a_crash_is_open_after_the_restart() {
    if !fwd_lab::can_run_as_root("an_answer_released_just_before_a_crash_is_open_after_the_restart")
    {
        return;
    }
    let s = setup("dns-crash", "");
    let mut fwd = start(&s, "fwd.log");
    let client = &s.lab.client;
    let sfu = SocketAddr::from((SFU_V4, WEB));
    assert!(!tcp_probe(client, sfu, TIMEOUT).unwrap());
    // What an answer opens goes to the journal; learned.json is rewritten for it only once
    // the journal holds half the table (at least 1,024 lines).
    let resolved = client
        .run(|| ask_udp(PROXY_V4, "x.sfu.whereby.com", RecordType::A).unwrap())
        .unwrap();
    fwd.kill();
    assert_eq!(resolved.addrs, vec![IpAddr::V4(SFU_V4)]);
    const JOURNAL: &str = "learned.journal";
    let state = s.dir.join("state");
    let written = |file: &str| {
        std::fs::read_to_string(state.join(file)).is_ok_and(|t| t.contains("x.sfu.whereby.com"))
    };
    let (journal, table) = (written(JOURNAL), written("learned.json"));
    eprintln!("at the kill: in the journal {journal}, in learned.json {table}");
    assert!(journal, "the answer went out before it was written down");
    // The new daemon puts in force what the answer opened: the client was told the address.
    let _fwd = start(&s, "fwd2.log");
    assert!(is_learned(&s.dir, SFU_V4.into()), "{:?}", learned(&s.dir));
    assert!(tcp_probe(client, sfu, TIMEOUT).unwrap());
    assert!(udp_probe(client, (SFU_V4, MEDIA).into(), TIMEOUT).unwrap());
    assert!(!tcp_probe(client, (OUTSIDE, WEB).into(), TIMEOUT).unwrap());
    // The next save takes the journal into learned.json and sets it aside.
    let saved = wait_for(Duration::from_secs(10), || {
        (written("learned.json") && !written(JOURNAL)).then_some(())
    });
    assert!(
        saved.is_some(),
        "the journal was not taken into learned.json"
    );
}

/// A steady UDP query load from one socket: a query every `LOAD_EVERY`, each with its own
/// ID, answers matched by ID as they come.
struct Load {
    socket: Arc<UdpSocket>,
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Vec<Instant>>,
    receiver: JoinHandle<std::collections::BTreeMap<u16, Instant>>,
}

const LOAD_EVERY: Duration = Duration::from_millis(20);

fn query_with_id(id: u16) -> Vec<u8> {
    let mut query = query_message("x.sfu.whereby.com", RecordType::A);
    query.metadata.id = id;
    query.to_vec().unwrap()
}

impl Load {
    fn start(client: &Netns) -> Load {
        let socket = client
            .run(|| {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
                socket.connect(PROXY_V4).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                socket
            })
            .unwrap();
        let socket = Arc::new(socket);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, st) = (socket.clone(), stop.clone());
        let sender = std::thread::spawn(move || {
            let mut sent = Vec::new();
            // Bounded: at most 1,000 queries (20 s).
            while !st.load(Ordering::Relaxed) && sent.len() < 1000 {
                sent.push(Instant::now());
                let _ = tx.send(&query_with_id(sent.len() as u16 - 1));
                std::thread::sleep(LOAD_EVERY);
            }
            sent
        });
        let (rx, st) = (socket.clone(), stop.clone());
        let receiver = std::thread::spawn(move || {
            let mut answered = std::collections::BTreeMap::new();
            let mut buf = [0u8; 4096];
            let mut idle_since: Option<Instant> = None;
            loop {
                match rx.recv(&mut buf) {
                    Ok(n) => {
                        idle_since = None;
                        if let Ok(m) = Message::from_vec(&buf[..n])
                            && addresses(&m) == [IpAddr::V4(SFU_V4)]
                        {
                            answered.entry(m.metadata.id).or_insert_with(Instant::now);
                        }
                    }
                    Err(_) if st.load(Ordering::Relaxed) => {
                        // Stopped: wait up to 3 s of quiet for the last answers.
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(3) {
                            return answered;
                        }
                    }
                    Err(_) => {}
                }
            }
        });
        Load {
            socket,
            stop,
            sender,
            receiver,
        }
    }

    /// Stops sending, then asks once more (as a stub resolver does after its timeout) for
    /// what got no answer: (sent times, answered times, IDs asked again).
    fn finish(
        self,
    ) -> (
        Vec<Instant>,
        std::collections::BTreeMap<u16, Instant>,
        Vec<u16>,
    ) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().unwrap();
        let mut answered = self.receiver.join().unwrap();
        let again: Vec<u16> = (0..sent.len() as u16)
            .filter(|id| !answered.contains_key(id))
            .collect();
        let mut buf = [0u8; 4096];
        for &id in &again {
            self.socket.send(&query_with_id(id)).unwrap();
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if let Ok(n) = self.socket.recv(&mut buf)
                    && let Ok(m) = Message::from_vec(&buf[..n])
                    && addresses(&m) == [IpAddr::V4(SFU_V4)]
                {
                    answered.entry(m.metadata.id).or_insert_with(Instant::now);
                    if m.metadata.id == id {
                        break;
                    }
                }
            }
        }
        (sent, answered, again)
    }
}

/// The daemon under the test's own supervisor: it hands its DNS sockets to the store and
/// gets them back at the next start, as under systemd with `FileDescriptorStoreMax=`.
fn start_supervised(s: &Setup, supervisor: &mut Supervisor, log: &str) -> FwdProcess {
    let config = s.dir.join("fwd.toml");
    let cmd = supervisor
        .command(
            &s.lab.gateway,
            &fwd_bin(),
            &["run", "--config", config.to_str().unwrap()],
        )
        .unwrap();
    FwdProcess::spawn(
        &s.lab.gateway,
        cmd,
        &s.dir.join(log),
        METRICS.parse().unwrap(),
    )
    .unwrap()
}

#[test]
fn dns_is_answered_through_a_crash_and_a_restart() {
    if !fwd_lab::can_run_as_root("dns_is_answered_through_a_crash_and_a_restart") {
        return;
    }
    let s = setup("dns-restart", "");
    let mut supervisor = Supervisor::new(&s.dir).unwrap();
    let mut fwd = start_supervised(&s, &mut supervisor, "fwd.log");
    let names = [
        format!("dns-udp-{GATEWAY_LAN_V4}-53"),
        format!("dns-tcp-{GATEWAY_LAN_V4}-53"),
    ];
    let stored = wait_for(Duration::from_secs(10), || {
        supervisor.collect().unwrap();
        let stored = supervisor.stored();
        names.iter().all(|n| stored.contains(n)).then_some(stored)
    });
    let Some(first_stored) = stored else {
        panic!(
            "the proxy's sockets were not stored: {:?}",
            supervisor.messages
        );
    };

    let load = Load::start(&s.lab.client);
    std::thread::sleep(Duration::from_millis(600));
    fwd.kill();
    let killed = Instant::now();
    // While nothing runs: a TCP client connects (the kernel queues it) and asks.
    let tcp = s
        .lab
        .client
        .spawn(|| {
            ask_tcp_waiting(
                PROXY_V4,
                "x.sfu.whereby.com",
                RecordType::A,
                Duration::from_secs(20),
            )
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let fwd2 = start_supervised(&s, &mut supervisor, "fwd2.log");
    let back = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    let (sent, answered, again) = load.finish();
    let tcp = tcp.join().unwrap().unwrap().unwrap().addrs;

    let down: Vec<usize> = (0..sent.len())
        .filter(|&i| sent[i] > killed && sent[i] < back)
        .collect();
    // Of the queries answered the first time they were asked.
    let longest = (0..sent.len())
        .filter(|&i| !again.contains(&(i as u16)))
        .filter_map(|i| answered.get(&(i as u16)).map(|a| *a - sent[i]))
        .max()
        .unwrap();
    eprintln!(
        "{} queries, {} sent while fwd was down ({:?}), {} asked again (read by the killed process), longest wait of the others {longest:?}",
        sent.len(),
        down.len(),
        back - killed,
        again.len()
    );
    assert!(
        fwd2.log_text().contains("passed by the service manager"),
        "{}",
        fwd2.log_text()
    );
    assert_eq!(tcp, [IpAddr::V4(SFU_V4)], "the TCP query made while down");
    assert!(
        down.len() >= 5,
        "the restart was too quick to test anything"
    );
    let unanswered: Vec<usize> = (0..sent.len())
        .filter(|&i| !answered.contains_key(&(i as u16)))
        .collect();
    assert!(unanswered.is_empty(), "never answered: {unanswered:?}");
    // Queries sent while nothing ran waited in the socket: none needed asking again. Only
    // one the killed process had read and not yet answered can have been lost.
    assert!(
        down.iter().all(|i| !again.contains(&(*i as u16))),
        "asked again: {again:?}, down: {down:?}"
    );
    assert!(again.len() <= 1, "asked again: {again:?}");

    // The new process stored what it was passed again (a no-op for systemd, which keeps
    // one copy): the sockets outlive a second crash too.
    supervisor.collect().unwrap();
    assert_eq!(supervisor.stored(), first_stored, "one copy of each socket");
    let mut fwd2 = fwd2;
    fwd2.kill();
    let asked = s
        .lab
        .client
        .spawn(|| ask_udp(PROXY_V4, "x.sfu.whereby.com", RecordType::A))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _fwd3 = start_supervised(&s, &mut supervisor, "fwd3.log");
    let resolved = asked.join().unwrap().unwrap().unwrap();
    assert_eq!(
        resolved.addrs,
        vec![IpAddr::V4(SFU_V4)],
        "asked while down again"
    );
}
