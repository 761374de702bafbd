//! Host tests of the DNS proxy: scripted fake upstreams on 127.0.0.1 and a learner that
//! records what it is handed. No kernel programs, no maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME},
    },
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
    time::timeout,
};

use super::{Learner, MAX_CHAIN, Proxy, Transport, read_answer};
use crate::daemon::dns::{Answer, DnsStats, Observed};

/// Every await that could hang is bounded by this.
const BOUND: Duration = Duration::from_secs(5);
/// The proxy's upstream timeout where upstreams are expected to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// The recording learner.

struct Recorder {
    seen: Mutex<Vec<Answer>>,
    outcome: Result<Observed, String>,
    max_ttl: u32,
}

impl Recorder {
    fn new(outcome: Result<Observed, String>, max_ttl: u32) -> Arc<Self> {
        Arc::new(Self {
            seen: Mutex::new(Vec::new()),
            outcome,
            max_ttl,
        })
    }

    /// A learner whose answers opened `n` addresses.
    fn opening(n: usize, max_ttl: u32) -> Arc<Self> {
        Self::new(
            Ok(Observed {
                covered: true,
                opened: n,
                ..Observed::default()
            }),
            max_ttl,
        )
    }

    fn answers(&self) -> Vec<Answer> {
        self.seen.lock().expect("learner lock").clone()
    }

    /// Every address of every answer it was handed, in order.
    fn addrs(&self) -> Vec<IpAddr> {
        self.answers()
            .iter()
            .flat_map(|a| a.addrs.iter().map(|&(addr, _)| addr))
            .collect()
    }
}

impl Learner for Recorder {
    fn learn(&self, answer: Answer) -> anyhow::Result<Observed> {
        self.seen.lock().expect("learner lock").push(answer);
        match &self.outcome {
            Ok(observed) => Ok(observed.clone()),
            Err(err) => Err(anyhow::anyhow!("{err}")),
        }
    }

    fn max_ttl(&self) -> u32 {
        self.max_ttl
    }
}

// ---------------------------------------------------------------------------------------
// Counters.

/// The value of a counter series whose labels include `labels` (summed over the others),
/// read from a Prometheus scrape of `stats`; 0 when no such series exists yet.
fn metric(stats: &DnsStats, name: &str, labels: &[(&str, &str)]) -> u64 {
    let registry = prometheus::Registry::new();
    crate::daemon::metrics::register_dns(
        &registry,
        &crate::daemon::metrics::DnsSnapshot {
            stats,
            names_active: 0,
            addresses_active: 0,
        },
    )
    .expect("registering the counters");
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .expect("encoding the scrape");
    let mut total = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric_name, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric_name != name {
            continue;
        }
        let found: BTreeMap<&str, &str> = label_text
            .split(',')
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        if labels.iter().all(|(k, v)| found.get(k) == Some(v)) {
            total += value.parse::<f64>().expect("a numeric sample");
        }
    }
    total as u64
}

fn answers_total(stats: &DnsStats, result: &str) -> u64 {
    metric(stats, "fwd_dns_answers_total", &[("result", result)])
}

fn queries_total(stats: &DnsStats, transport: &str, result: &str) -> u64 {
    metric(
        stats,
        "fwd_dns_queries_total",
        &[("transport", transport), ("result", result)],
    )
}

// ---------------------------------------------------------------------------------------
// Messages.

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("a valid name")
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("an IPv4 address")
}

fn query(id: u16, qname: &str, qtype: RecordType) -> Message {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    message
}

fn with_edns(mut message: Message, max_payload: u16, dnssec_ok: bool) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(max_payload);
    edns.set_dnssec_ok(dnssec_ok);
    message.set_edns(edns);
    message
}

/// The answer an upstream gives to `request`: its ID and question, and `answers`.
fn reply_to(request: &Message, answers: Vec<Record>) -> Message {
    let mut reply = Message::response(request.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(request.queries.iter().cloned());
    reply.add_answers(answers);
    reply
}

fn a(owner: &str, ttl: u32, addr: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(v4(addr))))
}

fn aaaa(owner: &str, ttl: u32, addr: &str) -> Record {
    let addr: Ipv6Addr = addr.parse().expect("an IPv6 address");
    Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(addr)))
}

fn cname(owner: &str, ttl: u32, target: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
}

/// `n` A records for `owner`: 203.0.113.1, .2, ...
fn many_a(owner: &str, n: u8) -> Vec<Record> {
    (1..=n)
        .map(|i| a(owner, 300, &format!("203.0.113.{i}")))
        .collect()
}

fn wire(message: &Message) -> Vec<u8> {
    message.to_vec().expect("the message encodes")
}

fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).expect("the message decodes")
}

/// The A and AAAA addresses of a message's answer section, in order.
fn addrs_of(message: &Message) -> Vec<IpAddr> {
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

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

// ---------------------------------------------------------------------------------------
// Fake upstreams.

type Responder = dyn Fn(&Message, Transport) -> Option<Message> + Send + Sync;

/// A resolver on 127.0.0.1 answering over UDP and TCP on one port number, recording the
/// queries it got.
struct Upstream {
    addr: SocketAddr,
    udp_log: Arc<Mutex<Vec<Message>>>,
    /// Where each UDP query came from.
    udp_from: Arc<Mutex<Vec<SocketAddr>>>,
    tcp_log: Arc<Mutex<Vec<Message>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A UDP socket and a TCP listener on the same port of 127.0.0.1.
async fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("binding udp");
        let port = udp.local_addr().expect("udp address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no port number free for both UDP and TCP on 127.0.0.1");
}

async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await.ok()?;
    Some(message)
}

fn frame(message: &[u8]) -> Vec<u8> {
    let len = u16::try_from(message.len()).expect("a short message");
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}

impl Upstream {
    async fn start(
        respond: impl Fn(&Message, Transport) -> Option<Message> + Send + Sync + 'static,
    ) -> Self {
        let respond: Arc<Responder> = Arc::new(respond);
        let (udp, tcp) = bind_pair().await;
        let addr = udp.local_addr().expect("udp address");
        let udp_log = Arc::new(Mutex::new(Vec::new()));
        let udp_from = Arc::new(Mutex::new(Vec::new()));
        let tcp_log = Arc::new(Mutex::new(Vec::new()));
        let udp_task = {
            let respond = respond.clone();
            let log = udp_log.clone();
            let from = udp_from.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_535];
                loop {
                    let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    let Ok(request) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    log.lock().expect("log lock").push(request.clone());
                    from.lock().expect("log lock").push(peer);
                    if let Some(reply) = respond(&request, Transport::Udp) {
                        let _ = udp.send_to(&wire(&reply), peer).await;
                    }
                }
            })
        };
        let tcp_task = {
            let log = tcp_log.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut stream, _)) = tcp.accept().await else {
                        continue;
                    };
                    let respond = respond.clone();
                    let log = log.clone();
                    tokio::spawn(async move {
                        while let Some(bytes) = read_frame(&mut stream).await {
                            let Ok(request) = Message::from_vec(&bytes) else {
                                return;
                            };
                            log.lock().expect("log lock").push(request.clone());
                            if let Some(reply) = respond(&request, Transport::Tcp)
                                && stream.write_all(&frame(&wire(&reply))).await.is_err()
                            {
                                return;
                            }
                        }
                    });
                }
            })
        };
        Self {
            addr,
            udp_log,
            udp_from,
            tcp_log,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// Answers every query with `answers`, over either transport.
    async fn fixed(answers: Vec<Record>) -> Self {
        Self::start(move |q, _| Some(reply_to(q, answers.clone()))).await
    }

    fn udp_queries(&self) -> Vec<Message> {
        self.udp_log.lock().expect("log lock").clone()
    }

    /// The source port of each UDP query, in order.
    fn udp_ports(&self) -> Vec<u16> {
        self.udp_from
            .lock()
            .expect("log lock")
            .iter()
            .map(SocketAddr::port)
            .collect()
    }

    fn tcp_queries(&self) -> Vec<Message> {
        self.tcp_log.lock().expect("log lock").clone()
    }
}

// ---------------------------------------------------------------------------------------
// The proxy.

fn proxy(
    upstreams: Vec<SocketAddr>,
    upstream_timeout: Duration,
    learner: &Arc<Recorder>,
) -> (Proxy, Arc<DnsStats>) {
    let stats = Arc::new(DnsStats::new());
    let learner: Arc<dyn Learner> = learner.clone();
    (
        Proxy::new(upstreams, upstream_timeout, learner, stats.clone()),
        stats,
    )
}

/// `Proxy::answer` on an encoded `request`, bounded; the decoded reply if there is one.
async fn ask(proxy: &Proxy, request: &Message, transport: Transport) -> Option<Message> {
    ask_bytes(proxy, &wire(request), transport)
        .await
        .map(|b| decode(&b))
}

async fn ask_bytes(proxy: &Proxy, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
    timeout(BOUND, proxy.answer(request, transport))
        .await
        .expect("the proxy decides within the bound")
}

fn assert_servfail(reply: &Message, request: &Message) {
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(reply.metadata.id, request.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.queries, request.queries, "the question is echoed");
    assert!(reply.answers.is_empty());
}

// ---------------------------------------------------------------------------------------
// 0. Upstream sockets.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sockets_carry_a_bounded_number_of_queries_and_none_after_a_timeout() {
    let up = Upstream::start(|q, _| {
        (q.queries[0].name().to_ascii() != "lost.example.")
            .then(|| reply_to(q, vec![a("reuse.example.", 60, "192.0.2.1")]))
    })
    .await;
    let learner = Recorder::opening(1, 3600);
    let (proxy, _) = proxy(vec![up.addr], Duration::from_millis(300), &learner);
    let uses = super::SOCKET_USES as usize;
    for id in 0..=uses {
        let request = query(id as u16, "reuse.example.", RecordType::A);
        let reply = ask(&proxy, &request, Transport::Udp)
            .await
            .expect("a reply");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    }
    let ports = up.udp_ports();
    assert_eq!(ports.len(), uses + 1);
    assert!(
        ports[..uses].iter().all(|&p| p == ports[0]),
        "one socket for the first {uses} queries: {ports:?}"
    );
    assert_ne!(ports[uses], ports[0], "then another socket");
    // A query that timed out leaves its socket out: a late answer would wait in it.
    let lost = query(1000, "lost.example.", RecordType::A);
    let reply = ask(&proxy, &lost, Transport::Udp).await.expect("a reply");
    assert_servfail(&reply, &lost);
    let request = query(1001, "reuse.example.", RecordType::A);
    ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");
    let ports = up.udp_ports();
    let lost_port = ports[uses + 1];
    assert_eq!(
        lost_port, ports[uses],
        "the lost query reused the spare socket"
    );
    assert_ne!(
        ports[uses + 2],
        lost_port,
        "the socket that timed out was closed"
    );
}

// ---------------------------------------------------------------------------------------
// 1. IDs and EDNS.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_gets_a_random_id_client_gets_its_own_and_edns_goes_along() {
    let up = Upstream::fixed(vec![a("id.example.", 60, "192.0.2.1")]).await;
    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let client_id = 0x4242;
    let request = with_edns(query(client_id, "id.example.", RecordType::A), 1232, true);

    for _ in 0..4 {
        let reply = ask(&proxy, &request, Transport::Udp)
            .await
            .expect("a reply");
        assert_eq!(reply.metadata.id, client_id, "the client's ID comes back");
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(reply.queries, request.queries);
        assert_eq!(addrs_of(&reply), vec![ip("192.0.2.1")]);
    }
    let reply = ask(&proxy, &request, Transport::Tcp)
        .await
        .expect("a reply over TCP");
    assert_eq!(reply.metadata.id, client_id);
    assert_eq!(addrs_of(&reply), vec![ip("192.0.2.1")]);

    let udp = up.udp_queries();
    let tcp = up.tcp_queries();
    assert_eq!(udp.len(), 4, "one UDP query per client query");
    assert_eq!(tcp.len(), 1, "one TCP query for the TCP client query");
    let ids: Vec<u16> = udp.iter().chain(&tcp).map(|q| q.metadata.id).collect();
    // Random IDs: equal to the client's by chance at most once in five, and not all the
    // same (a correct proxy fails this about once in 10^9 runs).
    assert!(
        ids.iter().filter(|&&id| id == client_id).count() <= 1,
        "the upstream saw the client's ID: {ids:?}"
    );
    assert!(
        ids.iter().collect::<BTreeSet<_>>().len() >= 2,
        "the upstream IDs are not random: {ids:?}"
    );
    for q in udp.iter().chain(&tcp) {
        assert_eq!(q.metadata.message_type, MessageType::Query);
        assert!(q.metadata.recursion_desired, "RD goes along");
        assert_eq!(q.queries, request.queries, "the question goes along");
        let edns = q
            .edns
            .as_ref()
            .expect("the client's EDNS reaches the upstream");
        assert_eq!(edns.max_payload(), 1232);
        assert!(edns.flags().dnssec_ok, "the DO bit reaches the upstream");
    }
    assert_eq!(learner.answers().len(), 5);
    assert_eq!(queries_total(&stats, "udp", "answered"), 4);
    assert_eq!(queries_total(&stats, "tcp", "answered"), 1);
    assert_eq!(answers_total(&stats, "opened"), 5);
}

// ---------------------------------------------------------------------------------------
// 2. Mismatched answers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_upstream_answers_are_ignored() {
    const NAME: &str = "match.example.";
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("binding");
    let upstream = socket.local_addr().expect("address");
    let script = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let (n, peer) = socket.recv_from(&mut buf).await.expect("the query");
        let q = decode(&buf[..n]);
        let id = q.metadata.id;

        let mut wrong_id = reply_to(&q, vec![a(NAME, 60, "192.0.2.1")]);
        wrong_id.metadata.id = id.wrapping_add(1);
        let wrong_name = reply_to(
            &query(id, "other.example.", RecordType::A),
            vec![a("other.example.", 60, "192.0.2.2")],
        );
        // The AAAA question, but an A record of the name: read against the A question it
        // would be learned.
        let wrong_type = reply_to(
            &query(id, NAME, RecordType::AAAA),
            vec![a(NAME, 60, "192.0.2.3"), aaaa(NAME, 60, "2001:db8::3")],
        );
        // No question section at all, the right ID and an A record of the name.
        let mut no_question = reply_to(&q, vec![a(NAME, 60, "192.0.2.5")]);
        no_question.queries.clear();
        let right = reply_to(&q, vec![a(NAME, 60, "192.0.2.4")]);
        for reply in [wrong_id, wrong_name, wrong_type, no_question, right] {
            socket.send_to(&wire(&reply), peer).await.expect("sending");
        }
        socket
    });

    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![upstream], UPSTREAM_TIMEOUT, &learner);
    let request = query(0x0101, NAME, RecordType::A);
    let reply = ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");
    timeout(BOUND, script)
        .await
        .expect("the script ends")
        .expect("the script ran");

    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.metadata.id, request.metadata.id);
    assert_eq!(addrs_of(&reply), vec![ip("192.0.2.4")]);
    assert_eq!(learner.addrs(), vec![ip("192.0.2.4")]);
    assert_eq!(answers_total(&stats, "mismatch"), 4);
    assert_eq!(queries_total(&stats, "udp", "answered"), 1);
}

// ---------------------------------------------------------------------------------------
// 3. The upstream socket is connected.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_answer_from_another_port_is_never_read() {
    const NAME: &str = "forge.example.";
    let real = UdpSocket::bind("127.0.0.1:0").await.expect("binding");
    let forger = UdpSocket::bind("127.0.0.1:0").await.expect("binding");
    let upstream = real.local_addr().expect("address");
    assert_ne!(forger.local_addr().expect("address"), upstream);
    let script = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        let (n, peer) = real.recv_from(&mut buf).await.expect("the query");
        let q = decode(&buf[..n]);
        // Right ID, right question, the wrong port.
        let forged = reply_to(&q, vec![a(NAME, 60, "192.0.2.66")]);
        forger
            .send_to(&wire(&forged), peer)
            .await
            .expect("sending the forgery");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let genuine = reply_to(&q, vec![a(NAME, 60, "198.51.100.7")]);
        real.send_to(&wire(&genuine), peer).await.expect("sending");
        (real, forger)
    });

    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![upstream], UPSTREAM_TIMEOUT, &learner);
    let request = query(0x0202, NAME, RecordType::A);
    let reply = ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");
    timeout(BOUND, script)
        .await
        .expect("the script ends")
        .expect("the script ran");

    assert_eq!(addrs_of(&reply), vec![ip("198.51.100.7")]);
    assert!(
        !learner.addrs().contains(&ip("192.0.2.66")),
        "the forged address was learned: {:?}",
        learner.answers()
    );
    assert_eq!(learner.addrs(), vec![ip("198.51.100.7")]);
    // The kernel dropped the forgery: the proxy did not even read it.
    assert_eq!(answers_total(&stats, "mismatch"), 0);
}

// ---------------------------------------------------------------------------------------
// 4. Truncated upstream answers are fetched again over TCP.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    const NAME: &str = "many.example.";
    let up = Upstream::start(|q, transport| {
        Some(match transport {
            Transport::Udp => {
                let mut reply = reply_to(q, Vec::new());
                reply.metadata.truncation = true;
                reply
            }
            Transport::Tcp => reply_to(q, many_a(NAME, 40)),
        })
    })
    .await;
    let learner = Recorder::opening(40, 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let request = with_edns(query(0x0303, NAME, RecordType::A), 4096, false);
    let reply = ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");

    let expected: Vec<IpAddr> = (1..=40).map(|i| ip(&format!("203.0.113.{i}"))).collect();
    assert_eq!(up.udp_queries().len(), 1);
    let tcp = up.tcp_queries();
    assert_eq!(tcp.len(), 1, "asked again over TCP, same address and port");
    assert_eq!(tcp[0].queries, request.queries);
    assert!(!reply.metadata.truncation, "the client's buffer holds it");
    assert_eq!(reply.metadata.id, request.metadata.id);
    assert_eq!(addrs_of(&reply), expected);
    let answers = learner.answers();
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].chain, vec!["many.example".to_string()]);
    assert_eq!(
        answers[0]
            .addrs
            .iter()
            .map(|&(addr, _)| addr)
            .collect::<Vec<_>>(),
        expected
    );
    assert_eq!(queries_total(&stats, "udp", "answered"), 1);
}

// ---------------------------------------------------------------------------------------
// 5. Truncation towards the client, after learning.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_truncated_for_a_udp_client_without_edns_after_learning() {
    const NAME: &str = "many.example.";
    // The upstream sends it all over UDP (a large EDNS buffer on its side).
    let up = Upstream::fixed(many_a(NAME, 40)).await;
    let learner = Recorder::opening(40, 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let request = query(0x0505, NAME, RecordType::A);
    let expected: Vec<IpAddr> = (1..=40).map(|i| ip(&format!("203.0.113.{i}"))).collect();
    assert!(
        wire(&reply_to(&request, many_a(NAME, 40))).len() > 512,
        "the test answer must exceed 512 bytes"
    );

    let bytes = ask_bytes(&proxy, &wire(&request), Transport::Udp)
        .await
        .expect("a reply");
    assert!(
        bytes.len() <= 512,
        "{} bytes to a 512-byte client",
        bytes.len()
    );
    let reply = decode(&bytes);
    assert!(reply.metadata.truncation, "TC is set");
    assert!(
        reply.answers.is_empty(),
        "no answers in the truncated reply"
    );
    assert_eq!(reply.metadata.id, request.metadata.id);
    assert_eq!(reply.queries, request.queries);
    assert_eq!(
        learner.addrs(),
        expected,
        "every address learned before release"
    );

    // The client's retry over TCP gets everything.
    let reply = ask(&proxy, &request, Transport::Tcp)
        .await
        .expect("a reply over TCP");
    assert!(!reply.metadata.truncation);
    assert_eq!(addrs_of(&reply), expected);
    assert_eq!(queries_total(&stats, "udp", "answered"), 1);
    assert_eq!(queries_total(&stats, "tcp", "answered"), 1);
}

// ---------------------------------------------------------------------------------------
// 6. CNAME chains.

/// `read_answer` on a reply that went through the wire, as the proxy sees it.
fn read_decoded(request: &Message, reply: &Message) -> Answer {
    let reply = decode(&wire(reply));
    let request = decode(&wire(request));
    read_answer(&request.queries[0], &reply)
}

fn chain_answer_records() -> Vec<Record> {
    vec![
        cname("meet.customer.example.", 30, "edge.sfu.vendor.example."),
        a("edge.sfu.vendor.example.", 300, "198.51.100.10"),
        a("edge.sfu.vendor.example.", 300, "198.51.100.11"),
        a("evil.example.", 300, "203.0.113.66"),
    ]
}

fn expected_chain_answer() -> Answer {
    Answer {
        chain: vec![
            "meet.customer.example".to_string(),
            "edge.sfu.vendor.example".to_string(),
        ],
        addrs: vec![(ip("198.51.100.10"), 30), (ip("198.51.100.11"), 30)],
    }
}

#[test]
fn read_answer_follows_the_cname_chain_and_ignores_other_names() {
    let request = query(1, "meet.customer.example.", RecordType::A);
    let reply = reply_to(&request, chain_answer_records());
    assert_eq!(read_decoded(&request, &reply), expected_chain_answer());

    // The order of the answer section does not matter (but for the addresses' order).
    let mut records = chain_answer_records();
    records.reverse();
    let reply = reply_to(&request, records);
    let mut answer = read_decoded(&request, &reply);
    answer.addrs.sort();
    assert_eq!(answer, expected_chain_answer());

    // Records of other names only: nothing believed.
    let reply = reply_to(
        &request,
        vec![
            a("evil.example.", 300, "203.0.113.66"),
            a("edge.sfu.vendor.example.", 300, "198.51.100.10"),
        ],
    );
    let answer = read_decoded(&request, &reply);
    assert_eq!(answer.chain, vec!["meet.customer.example".to_string()]);
    assert!(answer.addrs.is_empty(), "{answer:?}");

    // An error answer gives no addresses even with records in it.
    let mut reply = reply_to(&request, chain_answer_records());
    reply.metadata.response_code = ResponseCode::NXDomain;
    assert!(read_decoded(&request, &reply).addrs.is_empty());
}

#[test]
fn read_answer_takes_only_the_asked_address_family() {
    let request = query(1, "dual.example.", RecordType::AAAA);
    let reply = reply_to(
        &request,
        vec![
            a("dual.example.", 60, "192.0.2.5"),
            aaaa("dual.example.", 60, "2001:db8::5"),
        ],
    );
    let answer = read_decoded(&request, &reply);
    assert_eq!(answer.addrs, vec![(ip("2001:db8::5"), 60)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_learner_gets_the_cname_chain_with_the_smallest_ttl() {
    let up = Upstream::fixed(chain_answer_records()).await;
    let learner = Recorder::opening(2, 3600);
    let (proxy, _stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let request = query(0x0606, "meet.customer.example.", RecordType::A);
    let reply = ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");
    assert_eq!(reply.metadata.id, request.metadata.id);
    assert_eq!(learner.answers(), vec![expected_chain_answer()]);
    assert!(!learner.addrs().contains(&ip("203.0.113.66")));
}

/// `read_answer` in a thread, so that a loop that never ends fails the test instead of
/// hanging it.
fn read_answer_bounded(request: &Message, reply: &Message) -> Answer {
    let request = request.clone();
    let reply = reply.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(read_decoded(&request, &reply));
    });
    rx.recv_timeout(BOUND)
        .expect("read_answer ends on a CNAME loop")
}

#[test]
fn a_cname_loop_terminates() {
    let request = query(1, "a.loop.example.", RecordType::A);
    let reply = reply_to(
        &request,
        vec![
            cname("a.loop.example.", 60, "b.loop.example."),
            cname("b.loop.example.", 60, "a.loop.example."),
        ],
    );
    let answer = read_answer_bounded(&request, &reply);
    assert_eq!(
        answer.chain,
        vec!["a.loop.example".to_string(), "b.loop.example".to_string()]
    );
    assert!(answer.addrs.is_empty());

    let request = query(1, "self.loop.example.", RecordType::A);
    let reply = reply_to(
        &request,
        vec![cname("self.loop.example.", 60, "self.loop.example.")],
    );
    let answer = read_answer_bounded(&request, &reply);
    assert_eq!(answer.chain, vec!["self.loop.example".to_string()]);
    assert!(answer.addrs.is_empty());
}

#[test]
fn a_long_cname_chain_is_followed_only_so_far() {
    let hop = |i: usize| format!("c{i}.chain.example.");
    let chain_of = |hops: usize| {
        let request = query(1, &hop(0), RecordType::A);
        let mut records: Vec<Record> = (0..hops).map(|i| cname(&hop(i), 60, &hop(i + 1))).collect();
        records.push(a(&hop(hops), 60, "192.0.2.77"));
        read_answer_bounded(&request, &reply_to(&request, records))
    };

    let short = chain_of(8);
    assert_eq!(short.chain.len(), 9);
    assert_eq!(
        short.chain.last().map(String::as_str),
        Some("c8.chain.example")
    );
    assert_eq!(short.addrs, vec![(ip("192.0.2.77"), 60)]);

    let long = chain_of(MAX_CHAIN * 2);
    assert!(
        long.chain.len() <= MAX_CHAIN + 1,
        "{} names",
        long.chain.len()
    );
    assert!(long.addrs.is_empty(), "{:?}", long.addrs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cname_loop_through_the_proxy_is_answered_without_learning() {
    let up = Upstream::fixed(vec![
        cname("a.loop.example.", 60, "b.loop.example."),
        cname("b.loop.example.", 60, "a.loop.example."),
    ])
    .await;
    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let request = query(0x0707, "a.loop.example.", RecordType::A);
    let reply = ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 2, "the answer goes back as it came");
    assert!(learner.answers().is_empty());
    assert_eq!(answers_total(&stats, "no_address"), 1);
    assert_eq!(queries_total(&stats, "udp", "answered"), 1);
}

// ---------------------------------------------------------------------------------------
// 7. TTL lowering.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttls_are_lowered_only_when_the_answer_opened_something() {
    let records = vec![
        cname("ttl.example.", 3600, "edge.ttl.example."),
        a("edge.ttl.example.", 3600, "198.51.100.20"),
        a("edge.ttl.example.", 30, "198.51.100.21"),
    ];
    let up = Upstream::fixed(records).await;
    let ttls = |m: &Message| m.answers.iter().map(|r| r.ttl).collect::<Vec<_>>();

    let opened = Recorder::opening(2, 60);
    let (proxy_opened, _) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &opened);
    let request = query(0x0808, "ttl.example.", RecordType::A);
    let reply = ask(&proxy_opened, &request, Transport::Udp)
        .await
        .expect("a reply");
    assert_eq!(ttls(&reply), vec![60, 60, 30]);
    // The learner itself got the upstream's TTLs (the table applies its own limits).
    assert_eq!(
        opened.answers()[0].addrs,
        vec![(ip("198.51.100.20"), 3600), (ip("198.51.100.21"), 30)]
    );

    let nothing = Recorder::opening(0, 60);
    let (proxy_nothing, _) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &nothing);
    let reply = ask(&proxy_nothing, &request, Transport::Udp)
        .await
        .expect("a reply");
    assert_eq!(ttls(&reply), vec![3600, 3600, 30]);
    assert_eq!(nothing.answers().len(), 1);
}

// ---------------------------------------------------------------------------------------
// 8. A learner error.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_error_gives_servfail() {
    let up = Upstream::fixed(vec![a("fail.example.", 60, "192.0.2.8")]).await;
    let learner = Recorder::new(Err("the map is full".into()), 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let request = with_edns(query(0x0909, "fail.example.", RecordType::A), 1232, false);

    let reply = ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");
    assert_servfail(&reply, &request);
    let reply = ask(&proxy, &request, Transport::Tcp)
        .await
        .expect("a reply over TCP");
    assert_servfail(&reply, &request);

    assert_eq!(learner.addrs(), vec![ip("192.0.2.8"), ip("192.0.2.8")]);
    assert_eq!(queries_total(&stats, "udp", "servfail"), 1);
    assert_eq!(queries_total(&stats, "tcp", "servfail"), 1);
    assert_eq!(
        metric(&stats, "fwd_dns_queries_total", &[("result", "answered")]),
        0
    );
    assert_eq!(answers_total(&stats, "error"), 2);
}

// ---------------------------------------------------------------------------------------
// 9. Upstream timeouts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_gives_servfail_after_the_timeout() {
    let (silent_udp, silent_tcp) = bind_pair().await;
    let silent = silent_udp.local_addr().expect("address");
    // Accepts TCP connections and holds them open without a word.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((stream, _)) = silent_tcp.accept().await {
                held.push(stream);
            }
        }
    });
    let learner = Recorder::opening(1, 3600);
    let upstream_timeout = Duration::from_millis(200);
    let (proxy, stats) = proxy(vec![silent], upstream_timeout, &learner);
    let request = query(0x0a0a, "silent.example.", RecordType::A);

    for transport in [Transport::Udp, Transport::Tcp] {
        let started = Instant::now();
        let reply = ask(&proxy, &request, transport).await.expect("a reply");
        let waited = started.elapsed();
        assert_servfail(&reply, &request);
        assert!(
            waited >= upstream_timeout,
            "{transport:?}: SERVFAIL after {waited:?}, before the timeout"
        );
        assert!(
            waited < upstream_timeout * 10,
            "{transport:?}: SERVFAIL only after {waited:?}"
        );
    }
    let mut buf = vec![0u8; 65_535];
    let (n, _) = timeout(BOUND, silent_udp.recv_from(&mut buf))
        .await
        .expect("the silent upstream was asked")
        .expect("receiving");
    assert_eq!(decode(&buf[..n]).queries, request.queries);
    holder.abort();

    assert!(learner.answers().is_empty());
    assert_eq!(queries_total(&stats, "udp", "servfail"), 1);
    assert_eq!(queries_total(&stats, "tcp", "servfail"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_second_upstream_answers_when_the_first_is_silent() {
    let silent_socket = UdpSocket::bind("127.0.0.1:0").await.expect("binding");
    let silent = silent_socket.local_addr().expect("address");
    let up = Upstream::fixed(vec![a("second.example.", 60, "192.0.2.9")]).await;
    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![silent, up.addr], Duration::from_millis(200), &learner);
    let request = query(0x0b0b, "second.example.", RecordType::A);

    let reply = ask(&proxy, &request, Transport::Udp)
        .await
        .expect("a reply");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.metadata.id, request.metadata.id);
    assert_eq!(addrs_of(&reply), vec![ip("192.0.2.9")]);
    assert_eq!(learner.addrs(), vec![ip("192.0.2.9")]);

    let mut buf = vec![0u8; 65_535];
    let (n, _) = timeout(BOUND, silent_socket.recv_from(&mut buf))
        .await
        .expect("the first upstream was asked first")
        .expect("receiving");
    assert_eq!(decode(&buf[..n]).queries, request.queries);
    assert_eq!(up.udp_queries().len(), 1);
    assert_eq!(queries_total(&stats, "udp", "answered"), 1);
    assert_eq!(queries_total(&stats, "udp", "servfail"), 0);
}

// ---------------------------------------------------------------------------------------
// 10. What is not a query.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_garbage_get_nothing_other_opcodes_notimp() {
    let up = Upstream::fixed(vec![a("q.example.", 60, "192.0.2.10")]).await;
    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);

    // A response sent to the listener.
    let response = reply_to(
        &query(0x0c0c, "q.example.", RecordType::A),
        vec![a("q.example.", 60, "192.0.2.10")],
    );
    assert_eq!(response.metadata.message_type, MessageType::Response);
    assert!(ask(&proxy, &response, Transport::Udp).await.is_none());
    assert!(ask(&proxy, &response, Transport::Tcp).await.is_none());

    // Garbage (deliberately hand-written bytes): too short for a header, no reply.
    for garbage in [&b""[..], &b"\xde\xad\xbe"[..], &b"\x12\x34\x01"[..]] {
        assert!(
            ask_bytes(&proxy, garbage, Transport::Udp).await.is_none(),
            "a reply to {garbage:?}"
        );
    }
    // A query header that promises a question and ends: a header-only FORMERR with its ID,
    // opcode and RD; the same as a response: nothing.
    let cut: &[u8] = &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let reply = decode(
        &ask_bytes(&proxy, cut, Transport::Udp)
            .await
            .expect("a FORMERR to a query that does not decode"),
    );
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.metadata.op_code, OpCode::Query);
    assert!(reply.metadata.recursion_desired);
    assert!(reply.queries.is_empty() && reply.answers.is_empty());
    let cut_response: &[u8] = &[0x12, 0x35, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
    assert!(
        ask_bytes(&proxy, cut_response, Transport::Udp)
            .await
            .is_none()
    );

    // Other opcodes.
    for op_code in [OpCode::Status, OpCode::Notify, OpCode::Update] {
        let mut request = query(0x0d0d, "q.example.", RecordType::A);
        request.metadata.op_code = op_code;
        let reply = ask(&proxy, &request, Transport::Udp)
            .await
            .unwrap_or_else(|| panic!("no reply to {op_code:?}"));
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NotImp,
            "{op_code:?}"
        );
        assert_eq!(reply.metadata.id, 0x0d0d);
        assert_eq!(reply.metadata.message_type, MessageType::Response);
        assert_eq!(reply.metadata.op_code, op_code);
        assert!(reply.answers.is_empty());
    }

    // Not exactly one question.
    let mut none = Message::new(0x0e0e, MessageType::Query, OpCode::Query);
    none.metadata.recursion_desired = true;
    let mut two = query(0x0e0f, "q.example.", RecordType::A);
    two.add_query(Query::query(name("r.example."), RecordType::A));
    for request in [none, two] {
        let reply = ask(&proxy, &request, Transport::Udp)
            .await
            .expect("a FORMERR reply");
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(reply.metadata.id, request.metadata.id);
    }

    // None of it went upstream or to the learner.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(up.udp_queries().is_empty());
    assert!(up.tcp_queries().is_empty());
    assert!(learner.answers().is_empty());
    assert_eq!(queries_total(&stats, "udp", "dropped"), 1);
    assert_eq!(queries_total(&stats, "tcp", "dropped"), 1);
    assert_eq!(queries_total(&stats, "udp", "formerr"), 3 + 2 + 2);
    assert_eq!(queries_total(&stats, "udp", "notimp"), 3);
    assert_eq!(
        metric(&stats, "fwd_dns_queries_total", &[("result", "answered")]),
        0
    );
}

// ---------------------------------------------------------------------------------------
// 11. Through the listeners.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_udp_and_pipelined_tcp_clients() {
    let up = Upstream::start(|q, _| {
        let qname = q.queries[0].name().to_ascii();
        let addr = match qname.trim_end_matches('.') {
            "udp.serve.example" => "192.0.2.101",
            "one.serve.example" => "192.0.2.102",
            "two.serve.example" => "192.0.2.103",
            _ => {
                let mut reply = reply_to(q, Vec::new());
                reply.metadata.response_code = ResponseCode::NXDomain;
                return Some(reply);
            }
        };
        Some(reply_to(q, vec![a(&qname, 60, addr)]))
    })
    .await;
    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let proxy = Arc::new(proxy);

    let mut listen = None;
    for _ in 0..20 {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding a probe");
        let addr = probe.local_addr().expect("address");
        drop(probe);
        if proxy.clone().serve(&[addr]).await.is_ok() {
            listen = Some(addr);
            break;
        }
    }
    let listen = listen.expect("the proxy listens on a free port of 127.0.0.1");

    // UDP.
    let client = UdpSocket::bind("127.0.0.1:0").await.expect("binding");
    let request = query(0x1111, "udp.serve.example.", RecordType::A);
    client
        .send_to(&wire(&request), listen)
        .await
        .expect("sending");
    let mut buf = vec![0u8; 65_535];
    let (n, from) = timeout(BOUND, client.recv_from(&mut buf))
        .await
        .expect("a UDP reply in time")
        .expect("receiving");
    assert_eq!(from, listen, "the reply comes from the listening address");
    let reply = decode(&buf[..n]);
    assert_eq!(reply.metadata.id, 0x1111);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    assert_eq!(reply.queries, request.queries);
    assert_eq!(addrs_of(&reply), vec![ip("192.0.2.101")]);

    // TCP, two queries pipelined in one write.
    let mut stream = timeout(BOUND, TcpStream::connect(listen))
        .await
        .expect("connecting in time")
        .expect("connecting");
    let first = query(0x2221, "one.serve.example.", RecordType::A);
    let second = query(0x2222, "two.serve.example.", RecordType::A);
    let mut both = frame(&wire(&first));
    both.extend(frame(&wire(&second)));
    timeout(BOUND, stream.write_all(&both))
        .await
        .expect("writing in time")
        .expect("writing");
    for (request, addr) in [(&first, "192.0.2.102"), (&second, "192.0.2.103")] {
        let bytes = timeout(BOUND, read_frame(&mut stream))
            .await
            .expect("a TCP reply in time")
            .expect("a framed reply");
        let reply = decode(&bytes);
        assert_eq!(reply.metadata.id, request.metadata.id);
        assert_eq!(reply.queries, request.queries);
        assert_eq!(addrs_of(&reply), vec![ip(addr)]);
    }

    assert_eq!(up.udp_queries().len(), 1);
    assert_eq!(up.tcp_queries().len(), 2);
    assert_eq!(
        learner.addrs(),
        vec![ip("192.0.2.101"), ip("192.0.2.102"), ip("192.0.2.103")]
    );
    assert_eq!(queries_total(&stats, "udp", "answered"), 1);
    assert_eq!(queries_total(&stats, "tcp", "answered"), 2);
}

// ---------------------------------------------------------------------------------------
// The DoH canary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doh_canary_gets_nxdomain_from_the_proxy_itself_unless_turned_off() {
    let up = Upstream::fixed(vec![a("use-application-dns.net.", 60, "192.0.2.9")]).await;
    let learner = Recorder::opening(1, 3600);
    let (proxy, stats) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, &learner);
    let proxy = proxy.with_doh_canary(true);
    for name in ["use-application-dns.net.", "USE-Application-DNS.net."] {
        let reply = ask(&proxy, &query(7, name, RecordType::A), Transport::Udp)
            .await
            .expect("a reply");
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}"
        );
        assert!(reply.answers.is_empty());
        assert_eq!(reply.metadata.id, 7);
    }
    assert!(
        up.udp_queries().is_empty(),
        "the canary is not asked upstream"
    );
    assert_eq!(queries_total(&stats, "udp", "canary"), 2);
    // Turned off, it is an ordinary name.
    let (plain, _) = proxy_off(&up, &learner);
    let reply = ask(
        &plain,
        &query(8, "use-application-dns.net.", RecordType::A),
        Transport::Udp,
    )
    .await
    .expect("a reply");
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs_of(&reply), vec![ip("192.0.2.9")]);
}

/// A proxy with the canary off (`doh_canary = false`).
fn proxy_off(up: &Upstream, learner: &Arc<Recorder>) -> (Proxy, Arc<DnsStats>) {
    let (p, s) = proxy(vec![up.addr], UPSTREAM_TIMEOUT, learner);
    (p.with_doh_canary(false), s)
}
