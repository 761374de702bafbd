//! The DNS proxy's network side: listeners for clients (UDP and TCP), queries to the
//! upstream resolvers, and the answer handed to a `Learner` before it goes back. Messages
//! are read and written with hickory-proto; nothing here knows of maps or policies.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    time::timeout_at,
};
use tracing::{debug, warn};

use super::{
    DnsStats, sockets,
    table::{Answer, Observed},
};

/// Opens what an answer opens; the proxy calls it before the answer goes to the client.
pub trait Learner: Send + Sync + 'static {
    /// An error keeps the answer back (the client gets SERVFAIL and asks again).
    fn learn(&self, answer: Answer) -> anyhow::Result<Observed>;
    /// Several answers at once, in order, a result for each (as `learn` gives it). The
    /// proxy hands over what arrived while the previous batch was learned, so a learner
    /// can take its lock and write its journal once for all of them.
    fn learn_all(&self, answers: Vec<Answer>) -> Vec<anyhow::Result<Observed>> {
        answers.into_iter().map(|a| self.learn(a)).collect()
    }
    /// `learn`, if that can be done now without waiting (its lock is free); else the
    /// answer comes back and goes to the learning thread. The proxy's thread calls it.
    fn try_learn(&self, answer: Answer) -> Result<anyhow::Result<Observed>, Answer> {
        Err(answer)
    }
    /// TTLs above this (seconds) are lowered in answers that opened something, so clients
    /// do not keep an address longer than fwd does.
    fn max_ttl(&self) -> u32;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

/// At most this many UDP queries in flight and TCP clients connected; more are dropped
/// (clients retry).
const MAX_IN_FLIGHT: usize = 1024;
/// A CNAME chain longer than this is not followed further.
const MAX_CHAIN: usize = 16;
/// A TCP client that sends nothing for this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);

pub struct Proxy {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    learner: Arc<dyn Learner>,
    /// To the learning thread (`learning`).
    learning: std::sync::mpsc::Sender<LearnJob>,
    /// Upstream sockets to reuse.
    spare: Spare,
    stats: Arc<DnsStats>,
    in_flight: Arc<Semaphore>,
    /// Answer the DoH canary domain with NXDOMAIN.
    doh_canary: bool,
}

/// Firefox asks for this name before it turns on DNS over HTTPS by itself; NXDOMAIN says
/// "this network filters DNS: do not" (Mozilla's canary domain).
pub const DOH_CANARY: &str = "use-application-dns.net";

/// An answer to learn, and where its result goes.
type LearnJob = (
    Answer,
    tokio::sync::oneshot::Sender<anyhow::Result<Observed>>,
);

/// At most this many answers are learned in one batch.
const LEARN_BATCH: usize = 256;

/// The learning thread: answers are learned off the runtime's workers (a learner may
/// wait for a lock a reload holds), in batches of what arrived meanwhile, in order. It
/// ends when the proxy is dropped.
fn learning(learner: Arc<dyn Learner>) -> std::sync::mpsc::Sender<LearnJob> {
    let (tx, rx) = std::sync::mpsc::channel::<LearnJob>();
    let spawned = std::thread::Builder::new()
        .name("fwd-dns-learn".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut jobs = vec![first];
                while jobs.len() < LEARN_BATCH
                    && let Ok(job) = rx.try_recv()
                {
                    jobs.push(job);
                }
                let (answers, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
                let results = learner.learn_all(answers);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
    if let Err(err) = spawned {
        // Every answer then fails to learn and is answered SERVFAIL (said per answer).
        warn!(%err, "DNS proxy: cannot start the learning thread");
    }
    tx
}

/// A socket connected to one upstream, and how many queries it has carried.
struct UpstreamSocket {
    upstream: SocketAddr,
    socket: UdpSocket,
    uses: u32,
}

impl UpstreamSocket {
    /// A socket on a random source port (the kernel's), connected to `upstream`.
    async fn open(upstream: SocketAddr) -> anyhow::Result<Self> {
        let local: IpAddr = if upstream.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = UdpSocket::bind((local, 0))
            .await
            .context("binding a socket")?;
        socket.connect(upstream).await.context("connecting")?;
        Ok(Self {
            upstream,
            socket,
            uses: 0,
        })
    }
}

/// Upstream sockets whose last query was answered, for the next queries. Each carries at
/// most `SOCKET_USES` queries, so its source port changes as often: a forged answer has
/// to hit the port (16 random bits while it lasts) as well as the query's random ID and
/// its question, from the upstream's address.
#[derive(Default)]
struct Spare {
    idle: std::sync::Mutex<Vec<UpstreamSocket>>,
}

std::thread_local! {
    /// Room for the largest datagram an upstream can send, per thread.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 65_535]);
}

/// Queries one upstream socket carries before it is closed.
const SOCKET_USES: u32 = 64;
/// Idle upstream sockets kept at most (more are closed).
const SPARE_SOCKETS: usize = 256;

impl Spare {
    fn take(&self, upstream: SocketAddr) -> Option<UpstreamSocket> {
        let mut idle = self.idle.lock().expect("spare sockets lock");
        let i = idle.iter().rposition(|s| s.upstream == upstream)?;
        Some(idle.swap_remove(i))
    }

    fn put(&self, socket: UpstreamSocket) {
        if socket.uses >= SOCKET_USES {
            return;
        }
        let mut idle = self.idle.lock().expect("spare sockets lock");
        if idle.len() < SPARE_SOCKETS {
            idle.push(socket);
        }
    }
}

/// Why no upstream answer came.
#[derive(Debug, thiserror::Error)]
#[error("{upstream}: {what}")]
struct UpstreamError {
    upstream: SocketAddr,
    what: String,
}

impl Proxy {
    pub fn new(
        upstreams: Vec<SocketAddr>,
        timeout: Duration,
        learner: Arc<dyn Learner>,
        stats: Arc<DnsStats>,
    ) -> Self {
        Self {
            upstreams,
            timeout,
            learning: learning(learner.clone()),
            spare: Spare::default(),
            learner,
            stats,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            doh_canary: false,
        }
    }

    /// Answers the DoH canary domain (`use-application-dns.net`) with NXDOMAIN itself.
    #[must_use]
    pub fn with_doh_canary(mut self, on: bool) -> Self {
        self.doh_canary = on;
        self
    }

    /// Serves every address (UDP and TCP) until the runtime ends, on the sockets the
    /// service manager passed where it passed one (`sockets`), else bound here; each is
    /// handed to the service manager's store for the next run. Binding errors come back at
    /// once, naming the address.
    pub async fn serve(self: Arc<Self>, listen: &[SocketAddr]) -> anyhow::Result<()> {
        let mut passed = sockets::Inherited::take();
        for &addr in listen {
            let udp = match passed.udp(addr) {
                Some(socket) => {
                    socket.set_nonblocking(true)?;
                    UdpSocket::from_std(socket)?
                }
                None => UdpSocket::bind(addr).await.with_context(|| {
                    format!("binding the DNS proxy to udp {addr} (in use by another resolver, or not an address of this host?)")
                })?,
            };
            let tcp = match passed.tcp(addr) {
                Some(listener) => {
                    listener.set_nonblocking(true)?;
                    TcpListener::from_std(listener)?
                }
                None => TcpListener::bind(addr).await.with_context(|| {
                    format!("binding the DNS proxy to tcp {addr} (in use by another resolver, or not an address of this host?)")
                })?,
            };
            sockets::store_socket(&udp, "udp", addr);
            sockets::store_socket(&tcp, "tcp", addr);
            tokio::spawn(self.clone().serve_udp(udp));
            tokio::spawn(self.clone().serve_tcp(tcp));
        }
        passed.release_rest();
        Ok(())
    }

    /// `serve` on a thread of its own with a single-threaded runtime: one thread relays
    /// every query, as a plain forwarder does, instead of the daemon's workers handing
    /// queries to each other. Returns once the sockets are bound (or failed to be).
    pub fn serve_on_own_thread(self: Arc<Self>, listen: &[SocketAddr]) -> anyhow::Result<()> {
        let listen = listen.to_vec();
        let (bound_tx, bound_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fwd-dns".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(err) => {
                        let _ = bound_tx
                            .send(Err(anyhow::Error::from(err)
                                .context("starting the DNS proxy's runtime")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let bound = self.serve(&listen).await;
                    let failed = bound.is_err();
                    let _ = bound_tx.send(bound);
                    if !failed {
                        std::future::pending::<()>().await;
                    }
                });
            })
            .context("starting the DNS proxy's thread")?;
        bound_rx
            .recv()
            .context("the DNS proxy's thread ended before binding")?
    }

    async fn serve_udp(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, client) = match socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(err) => {
                    warn!(%err, "DNS proxy: receiving a UDP query");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                self.stats.query(Transport::Udp, "dropped");
                continue;
            };
            let request = buf[..n].to_vec();
            let proxy = self.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Some(reply) = proxy.answer(&request, Transport::Udp).await
                    && let Err(err) = socket.send_to(&reply, client).await
                {
                    debug!(%err, %client, "DNS proxy: sending a UDP answer");
                }
            });
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, client) = match listener.accept().await {
                Ok(r) => r,
                Err(err) => {
                    warn!(%err, "DNS proxy: accepting a TCP client");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // A TCP client holds a slot while connected, like a UDP query in flight.
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                self.stats.query(Transport::Tcp, "dropped");
                continue;
            };
            let proxy = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(err) = proxy.serve_tcp_client(stream).await {
                    debug!(%err, %client, "DNS proxy: TCP client");
                }
            });
        }
    }

    async fn serve_tcp_client(&self, mut stream: TcpStream) -> std::io::Result<()> {
        loop {
            let deadline = tokio::time::Instant::now() + TCP_IDLE;
            let Ok(request) = timeout_at(deadline, read_framed(&mut stream)).await else {
                return Ok(());
            };
            let Some(request) = request? else {
                return Ok(());
            };
            if let Some(reply) = self.answer(&request, Transport::Tcp).await {
                write_framed(&mut stream, &reply).await?;
            }
        }
    }

    /// The reply to one client message, or `None` to send nothing.
    pub async fn answer(&self, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let Ok(request) = Message::from_vec(request) else {
            self.stats.query(transport, "formerr");
            return header_formerr(request);
        };
        if request.metadata.message_type != MessageType::Query {
            // An answer sent to the listener: nobody asked for it here.
            self.stats.query(transport, "dropped");
            return None;
        }
        if request.metadata.op_code != OpCode::Query {
            self.stats.query(transport, "notimp");
            return encode(&error_reply(&request, ResponseCode::NotImp));
        }
        if request.queries.len() != 1 {
            self.stats.query(transport, "formerr");
            return encode(&error_reply(&request, ResponseCode::FormErr));
        }
        if self.doh_canary
            && request.queries[0]
                .name()
                .to_ascii()
                .trim_end_matches('.')
                .eq_ignore_ascii_case(DOH_CANARY)
        {
            self.stats.query(transport, "canary");
            return encode(&error_reply(&request, ResponseCode::NXDomain));
        }
        let mut reply = match self.resolve(&request, transport).await {
            Ok(reply) => reply,
            Err(err) => {
                warn!(%err, name = %request.queries[0].name(), "DNS proxy: no upstream answered");
                self.stats.query(transport, "servfail");
                return encode(&error_reply(&request, ResponseCode::ServFail));
            }
        };
        let answer = read_answer(&request.queries[0], &reply);
        if !answer.addrs.is_empty() {
            let started = Instant::now();
            // On this thread when nothing holds the learner's lock (no hand-over, no
            // wake-up); else on the learning thread, which may wait for it.
            let learned = match self.learner.try_learn(answer) {
                Ok(learned) => Ok(learned),
                Err(answer) => {
                    let (reply_to, learned) = tokio::sync::oneshot::channel();
                    match self.learning.send((answer, reply_to)) {
                        Ok(()) => learned.await,
                        Err(_) => Ok(Err(anyhow::anyhow!("the learning thread has ended"))),
                    }
                }
            };
            self.stats
                .insert_seconds
                .observe(started.elapsed().as_secs_f64());
            match learned {
                Ok(Ok(observed)) => {
                    self.stats.observed(&observed);
                    if observed.opened > 0 {
                        lower_ttls(&mut reply, self.learner.max_ttl());
                    }
                }
                Ok(Err(err)) => {
                    warn!(
                        "DNS proxy: opening the answer's addresses failed; the client gets SERVFAIL: {err:#}"
                    );
                    self.stats.answer("error");
                    self.stats.query(transport, "servfail");
                    return encode(&error_reply(&request, ResponseCode::ServFail));
                }
                Err(err) => {
                    warn!(%err, "DNS proxy: the learning task failed");
                    self.stats.answer("error");
                    self.stats.query(transport, "servfail");
                    return encode(&error_reply(&request, ResponseCode::ServFail));
                }
            }
        } else {
            self.stats.answer("no_address");
        }
        reply.metadata.id = request.metadata.id;
        let mut bytes = encode(&reply)?;
        if transport == Transport::Udp && bytes.len() > usize::from(request.max_payload()) {
            // Too large for the client's UDP buffer: it asks again over TCP.
            bytes = encode(&reply.truncate())?;
        }
        self.stats.query(transport, "answered");
        Some(bytes)
    }

    /// Asks each upstream in turn until one answers.
    async fn resolve(
        &self,
        request: &Message,
        transport: Transport,
    ) -> Result<Message, UpstreamError> {
        let mut last = None;
        for &upstream in &self.upstreams {
            let answer = match transport {
                Transport::Tcp => self.exchange_tcp(upstream, request).await,
                Transport::Udp => match self.exchange_udp(upstream, request).await {
                    // Truncated: the whole answer over TCP, so every address is learned.
                    Ok(reply) if reply.metadata.truncation => {
                        self.exchange_tcp(upstream, request).await
                    }
                    other => other,
                },
            };
            match answer {
                Ok(reply) => return Ok(reply),
                Err(err) => {
                    debug!(%err, "DNS proxy: upstream failed");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or(UpstreamError {
            upstream: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            what: "no upstream resolver configured".into(),
        }))
    }

    /// One query over UDP with a random ID, from a socket connected to the upstream (the
    /// kernel delivers datagrams from its address and port only); a reply must also carry
    /// the ID and the question. Sockets are kept for reuse (`Spare`): a fresh one per
    /// query cost about a tenth of the proxy's time (socket, epoll registration, close).
    async fn exchange_udp(
        &self,
        upstream: SocketAddr,
        request: &Message,
    ) -> Result<Message, UpstreamError> {
        let fail = |what: String| UpstreamError { upstream, what };
        let (id, bytes) = outgoing(request).map_err(|e| fail(e.to_string()))?;
        let mut socket = match self.spare.take(upstream) {
            Some(socket) => socket,
            None => UpstreamSocket::open(upstream)
                .await
                .map_err(|e| fail(e.to_string()))?,
        };
        socket
            .socket
            .send(&bytes)
            .await
            .map_err(|e| fail(format!("sending: {e}")))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match timeout_at(deadline, socket.socket.readable()).await {
                // A socket that timed out or failed is not reused: a late answer to this
                // query would wait in it.
                Err(_) => return Err(fail(format!("no answer within {:?}", self.timeout))),
                Ok(Err(e)) => return Err(fail(format!("receiving: {e}"))),
                Ok(Ok(())) => {}
            }
            // Read and decoded without an await in between, so one buffer per thread
            // serves every query (a 64 KiB allocation per query had the allocator and the
            // kernel's page clearing in the profile).
            let got = RECV_BUF.with_borrow_mut(|buf| match socket.socket.try_recv(buf) {
                Ok(n) => Ok(self.reply_to(&buf[..n], id, request)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
                Err(e) => Err(e),
            });
            match got {
                Ok(Some(reply)) => {
                    socket.uses += 1;
                    self.spare.put(socket);
                    return Ok(reply);
                }
                Ok(None) => {}
                Err(e) => return Err(fail(format!("receiving: {e}"))),
            }
        }
    }

    /// One query over TCP (a fresh connection, a random ID).
    async fn exchange_tcp(
        &self,
        upstream: SocketAddr,
        request: &Message,
    ) -> Result<Message, UpstreamError> {
        let fail = |what: String| UpstreamError { upstream, what };
        let (id, bytes) = outgoing(request).map_err(|e| fail(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = |_| fail(format!("no answer over TCP within {:?}", self.timeout));
        let mut stream = timeout_at(deadline, TcpStream::connect(upstream))
            .await
            .map_err(timed_out)?
            .map_err(|e| fail(format!("connecting over TCP: {e}")))?;
        timeout_at(deadline, write_framed(&mut stream, &bytes))
            .await
            .map_err(timed_out)?
            .map_err(|e| fail(format!("sending over TCP: {e}")))?;
        loop {
            let reply = timeout_at(deadline, read_framed(&mut stream))
                .await
                .map_err(timed_out)?
                .map_err(|e| fail(format!("receiving over TCP: {e}")))?
                .ok_or_else(|| fail("closed the TCP connection without an answer".into()))?;
            if let Some(reply) = self.reply_to(&reply, id, request) {
                return Ok(reply);
            }
        }
    }

    /// `bytes` decoded if they answer the query sent with `id` for `request`. Anything else
    /// (wrong ID or question, or garbage) is counted and ignored; the real answer is still
    /// awaited.
    fn reply_to(&self, bytes: &[u8], id: u16, request: &Message) -> Option<Message> {
        let why = match Message::from_vec(bytes) {
            Ok(reply) => match mismatch(&reply, id, request) {
                None => return Some(reply),
                Some(why) => why,
            },
            Err(_) => "undecodable",
        };
        debug!(
            why,
            "DNS proxy: an upstream reply that does not answer the query, ignored"
        );
        self.stats.answer("mismatch");
        None
    }
}

/// A header-only FORMERR for a query that does not decode, if it has a header (12 bytes)
/// and is a query: its ID, opcode and RD flag back, no sections (RFC 1035 4.1.1).
fn header_formerr(request: &[u8]) -> Option<Vec<u8>> {
    let header = request.get(..12)?;
    if header[2] & 0x80 != 0 {
        // A response sent to the listener: nothing to answer.
        return None;
    }
    let mut reply = vec![0u8; 12];
    reply[..2].copy_from_slice(&header[..2]);
    // QR = 1, the opcode and RD as asked; RA = 1, RCODE = FORMERR (1).
    reply[2] = 0x80 | (header[2] & 0x79);
    reply[3] = 0x80 | 1;
    Some(reply)
}

/// The client's message under a fresh random ID, encoded; EDNS goes along unchanged.
fn outgoing(request: &Message) -> Result<(u16, Vec<u8>), hickory_proto::ProtoError> {
    let id = rand::random::<u16>();
    let mut query = request.clone();
    query.metadata.id = id;
    Ok((id, query.to_vec()?))
}

/// Why `reply` does not answer the query sent with `id` for `request`'s question, or
/// `None` if it does.
fn mismatch(reply: &Message, id: u16, request: &Message) -> Option<&'static str> {
    if reply.metadata.id != id {
        return Some("another ID");
    }
    if reply.metadata.message_type != MessageType::Response {
        return Some("not a response");
    }
    if reply.queries.is_empty() {
        return Some("no question section");
    }
    let same = reply.queries.len() == request.queries.len()
        && reply.queries.iter().zip(&request.queries).all(|(a, b)| {
            a.name() == b.name()
                && a.query_type() == b.query_type()
                && a.query_class() == b.query_class()
        });
    (!same).then_some("another question")
}

fn error_reply(request: &Message, code: ResponseCode) -> Message {
    let mut reply = Message::error_msg(request.metadata.id, request.metadata.op_code, code);
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(request.queries.iter().cloned());
    // A client that spoke EDNS gets an OPT back (RFC 6891).
    if let Some(edns) = &request.edns {
        let mut opt = hickory_proto::op::Edns::new();
        opt.set_max_payload(edns.max_payload().max(512));
        reply.set_edns(opt);
    }
    reply
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            warn!(%err, "DNS proxy: encoding an answer");
            None
        }
    }
}

/// Lowercase, without the root's dot.
fn plain(name: &hickory_proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// The question's CNAME chain and the addresses at its end, from the answer section only
/// (records about other names are not believed).
pub fn read_answer(query: &Query, reply: &Message) -> Answer {
    let mut answer = Answer {
        chain: vec![plain(query.name())],
        addrs: Vec::new(),
    };
    if reply.metadata.response_code != ResponseCode::NoError {
        return answer;
    }
    let mut current = query.name().clone();
    let mut chain_ttl = u32::MAX;
    while answer.chain.len() <= MAX_CHAIN {
        let next = reply.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(target) if r.name == current && r.dns_class == DNSClass::IN => {
                Some((target.0.clone(), r.ttl))
            }
            _ => None,
        });
        let Some((target, ttl)) = next else { break };
        if answer.chain.contains(&plain(&target)) {
            break;
        }
        chain_ttl = chain_ttl.min(ttl);
        answer.chain.push(plain(&target));
        current = target;
    }
    for record in &reply.answers {
        if record.name != current || record.dns_class != DNSClass::IN {
            continue;
        }
        let addr = match (&record.data, query.query_type()) {
            (RData::A(a), RecordType::A | RecordType::ANY) => IpAddr::V4(a.0),
            (RData::AAAA(a), RecordType::AAAA | RecordType::ANY) => IpAddr::V6(a.0),
            _ => continue,
        };
        answer.addrs.push((addr, record.ttl.min(chain_ttl)));
    }
    answer
}

/// Lowers every TTL of the answer section above `max` to `max`.
fn lower_ttls(reply: &mut Message, max: u32) {
    for record in &mut reply.answers {
        record.ttl = record.ttl.min(max);
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| std::io::Error::other("a DNS message over 65535 bytes"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
