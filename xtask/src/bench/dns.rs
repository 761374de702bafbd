//! `cargo xtask bench`, the DNS proxy: a bench daemon with a `[dns]` section and a domain
//! rule, a real dnsmasq as its upstream in the same network namespace, and a closed-loop
//! UDP load generator asking the proxy and dnsmasq by turns (proxy, direct, proxy, ...:
//! the machine is shared, so both sides see the same noise). Every name is asked once, so
//! every answer through the proxy is learned. Then the same clients paced to a quarter of
//! the slowest side's rate, where latency is what a query costs rather than how long it
//! queues behind the others. The daemon's own histogram
//! `fwd_dns_insert_seconds` (upstream answer to datapath insert) is scraped before and
//! after the measured rounds.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};

use crate::{
    bench::report::median,
    bench::{BenchDaemon, command_in_netns, enter_netns},
};

/// Where the daemon's proxy listens, in the bench namespace.
const PROXY: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 53), 53));
/// Where dnsmasq listens (all of 127/8 is local on `lo`; no address to add).
const UPSTREAM: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 53));
/// Where a second dnsmasq forwards every query to `UPSTREAM`: the plain forwarder fwd's
/// proxy is measured against (it does what the proxy does, minus reading and opening).
const FORWARDER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), 53));
/// dnsmasq's answer for every name under `bench.example` (the domain rule's names).
const BENCH_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// And under `other.example`, which no rule names.
const OTHER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// Every this many-th query asks a name no rule covers.
const OTHER_EVERY: u64 = 8;
/// Concurrent clients, each asking its next name when the previous answer arrives.
const CLIENTS: usize = 32;
/// A query with no answer within this is counted as lost and the client moves on.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// Debian's dnsmasq-base (`cargo xtask setup` installs it).
const DNSMASQ: &str = "/usr/sbin/dnsmasq";
/// How long dnsmasq and the proxy may take to answer their first query.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The policy: a domain rule beside a rule naming addresses.
const POLICY: &str = r#"[vendor]
id = "benchdns"
name = "Bench DNS"

[[rule]]
id = "names"
service = "s"
protocol = "tcp"
ports = [443]
remote = ["*.bench.example"]

[[rule]]
id = "addresses"
service = "s"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/24", "2001:db8::/32"]
"#;

/// Runs `f` on a thread of its own in the network namespace `netns`.
fn in_netns<T: Send>(
    netns: &File,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow!("the thread in the namespace panicked"))?
    })
}

/// A dnsmasq in the bench namespace: the authority (answering `bench.example` and
/// `other.example` itself) or the plain forwarder in front of it. Dropping it stops it
/// (SIGTERM, then SIGKILL).
struct Dnsmasq {
    child: Option<Child>,
    log: PathBuf,
}

/// What a dnsmasq of the bench does.
#[derive(Clone, Copy)]
enum Role {
    Authority,
    Forwarder,
}

impl Dnsmasq {
    fn start(netns_path: &str, role: Role, log: &Path) -> anyhow::Result<Dnsmasq> {
        if !Path::new(DNSMASQ).exists() {
            bail!("no {DNSMASQ} (Debian dnsmasq-base; `cargo xtask setup` installs it)");
        }
        let netns = File::open(netns_path).with_context(|| format!("opening {netns_path}"))?;
        let out = File::create(log)?;
        let mut cmd = Command::new(DNSMASQ);
        cmd.args([
            "--keep-in-foreground",
            // Not /etc/dnsmasq.conf, where the full dnsmasq package is installed.
            "--conf-file=/dev/null",
            "--log-facility=-",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
            // Every name is asked once: a cache would only cost.
            "--cache-size=0",
            "--pid-file=",
            "--user=root",
        ]);
        let listen = match role {
            Role::Authority => {
                cmd.arg("--local-ttl=300")
                    .arg(format!("--address=/bench.example/{BENCH_ADDR}"))
                    .arg(format!("--address=/other.example/{OTHER_ADDR}"));
                UPSTREAM
            }
            Role::Forwarder => {
                // As many queries in flight as the proxy allows (dnsmasq's default is 150).
                cmd.arg(format!("--server={}#{}", UPSTREAM.ip(), UPSTREAM.port()))
                    .arg("--dns-forward-max=1024");
                FORWARDER
            }
        };
        cmd.arg(format!("--listen-address={}", listen.ip()))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        command_in_netns(&mut cmd, netns);
        eprintln!(
            "xtask: starting dnsmasq on {listen} in the bench namespace (log: {})",
            log.display()
        );
        let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
        Ok(Dnsmasq {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails with dnsmasq's log if it has exited.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            self.child = None;
            bail!("dnsmasq exited ({status}); its log:\n{}", self.log_text());
        }
        Ok(())
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("xtask: dnsmasq did not stop within 5 s of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The name of query number `n` and the address its answer must hold.
fn name_of(n: u64) -> (String, Ipv4Addr) {
    if n % OTHER_EVERY == OTHER_EVERY - 1 {
        (format!("x{n}.other.example."), OTHER_ADDR)
    } else {
        (format!("q{n}.bench.example."), BENCH_ADDR)
    }
}

/// An A query for `name`, encoded.
fn a_query(id: u16, name: &str) -> anyhow::Result<Vec<u8>> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(message.to_vec()?)
}

/// Why `reply` is not the right answer, if it is not.
fn wrong(reply: &Message, expect: Ipv4Addr) -> Option<String> {
    if reply.metadata.response_code != ResponseCode::NoError {
        return Some(format!("response code {}", reply.metadata.response_code));
    }
    if reply
        .answers
        .iter()
        .any(|r| matches!(&r.data, RData::A(a) if a.0 == expect))
    {
        return None;
    }
    Some(format!("no A {expect} in the answer: {:?}", reply.answers))
}

/// The goal: the proxy's p99 over asking the authority directly, below this (µs).
const P99_ADDED_US: f64 = 500.0;
/// The paced rounds ask at this share of the slowest side's closed-loop rate.
const PACED_SHARE: f64 = 0.25;

/// One server the rounds ask, and what they measured of it.
struct Side {
    name: &'static str,
    target: SocketAddr,
    /// The process that answers it (its CPU time is read around each round).
    pid: u32,
    ok: u64,
    /// CPU time (user + system, all threads) of `pid` per right answer, in µs.
    cpu_us: Vec<f64>,
    qps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    /// The same quantiles in the paced rounds.
    paced_p50: Vec<f64>,
    paced_p99: Vec<f64>,
}

impl Side {
    fn new(name: &'static str, target: SocketAddr, pid: u32) -> Self {
        Self {
            name,
            target,
            pid,
            ok: 0,
            cpu_us: Vec::new(),
            qps: Vec::new(),
            p50: Vec::new(),
            p99: Vec::new(),
            paced_p50: Vec::new(),
            paced_p99: Vec::new(),
        }
    }
}

/// The CPU time `pid` has used (user + system, every thread), in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // After the command name in parentheses: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .context("an unreadable /proc/PID/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i - 3)
            .context("a short /proc/PID/stat")?
            .parse::<f64>()?)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((ticks(14)? + ticks(15)?) / hz)
}

/// One closed-loop run against one server.
#[derive(Default)]
struct Round {
    ok: u64,
    wrong: u64,
    lost: u64,
    first_wrong: Option<String>,
    /// Of the right answers, in nanoseconds.
    latencies: Vec<u64>,
    elapsed: Duration,
}

impl Round {
    fn merge(&mut self, other: Round) {
        self.ok += other.ok;
        self.wrong += other.wrong;
        self.lost += other.lost;
        if self.first_wrong.is_none() {
            self.first_wrong = other.first_wrong;
        }
        self.latencies.extend(other.latencies);
    }

    fn qps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile of the latencies, in microseconds.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1] as f64 / 1000.0
    }

    /// "p50 X, p99 Y" and what went wrong, for the progress lines.
    fn latency_line(&self) -> String {
        format!(
            "p50 {}, p99 {}{}",
            duration(self.quantile_us(0.5)),
            duration(self.quantile_us(0.99)),
            if self.wrong + self.lost > 0 {
                format!(", {} wrong, {} unanswered", self.wrong, self.lost)
            } else {
                String::new()
            }
        )
    }
}

/// What went wrong over all rounds, and the first wrong answer seen.
#[derive(Default)]
struct Faults {
    wrong: u64,
    lost: u64,
    first_wrong: Option<String>,
}

impl Faults {
    fn add(&mut self, side: &str, r: &mut Round) {
        self.wrong += r.wrong;
        self.lost += r.lost;
        if self.first_wrong.is_none() {
            self.first_wrong = r.first_wrong.take().map(|w| format!("{side}: {w}"));
        }
    }
}

/// A paced client's schedule: its first query at `first`, then one every `every` (or when
/// the previous answer arrives, if that is later).
#[derive(Clone, Copy)]
struct Pace {
    first: Instant,
    every: Duration,
}

/// One client: asks names from `next` until `end` or `deadline`, each when the previous
/// answer arrived (or was given up), or, paced, at its next slot after that.
fn client(
    target: SocketAddr,
    next: &AtomicU64,
    end: u64,
    deadline: Instant,
    pace: Option<Pace>,
) -> anyhow::Result<Round> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.connect(target)?;
    socket.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut round = Round::default();
    let mut buf = vec![0u8; 4096];
    let mut slot = pace.map(|p| p.first);
    loop {
        if let (Some(at), Some(p)) = (slot, pace) {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            // A slot missed (the previous answer came late) is not caught up in a burst.
            slot = Some(at.max(now) + p.every);
        }
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= end || Instant::now() >= deadline {
            return Ok(round);
        }
        let (name, expect) = name_of(n);
        let id = n as u16;
        let query = a_query(id, &name)?;
        let sent = Instant::now();
        socket.send(&query)?;
        loop {
            let len = match socket.recv(&mut buf) {
                Ok(len) => len,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    round.lost += 1;
                    break;
                }
                Err(e) => {
                    round.wrong += 1;
                    round.first_wrong.get_or_insert(format!("{name}: {e}"));
                    // A refusal (nobody listening) would spin; give the server a moment.
                    std::thread::sleep(Duration::from_millis(10));
                    break;
                }
            };
            let took = sent.elapsed();
            let reply = match Message::from_vec(&buf[..len]) {
                Ok(reply) => reply,
                Err(e) => {
                    round.wrong += 1;
                    round
                        .first_wrong
                        .get_or_insert(format!("{name}: undecodable answer: {e}"));
                    break;
                }
            };
            if reply.metadata.id != id {
                // A late answer to a query given up on: the one awaited may still come.
                continue;
            }
            match wrong(&reply, expect) {
                None => {
                    round.ok += 1;
                    round.latencies.push(took.as_nanos() as u64);
                }
                Some(why) => {
                    round.wrong += 1;
                    round.first_wrong.get_or_insert(format!("{name}: {why}"));
                }
            }
            break;
        }
    }
}

/// `CLIENTS` clients in the namespace asking `target` at most `queries` fresh names from
/// `next`, for at most `limit`: as fast as answers come, or, with `rate`, together at
/// most that many queries per second (each client in its own evenly spread slots).
fn round(
    netns: &File,
    target: SocketAddr,
    next: &AtomicU64,
    queries: u64,
    limit: Duration,
    rate: Option<f64>,
) -> anyhow::Result<Round> {
    let end = next.load(Ordering::Relaxed) + queries;
    let started = Instant::now();
    let deadline = started + limit;
    let every = rate.map(|r| Duration::from_secs_f64(CLIENTS as f64 / r));
    let results: Vec<anyhow::Result<Round>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let pace = every.map(|every| Pace {
                    first: started + every * i as u32 / CLIENTS as u32,
                    every,
                });
                s.spawn(move || {
                    enter_netns(netns)?;
                    client(target, next, end, deadline, pace)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow!("a DNS client thread panicked"))?
            })
            .collect()
    });
    let mut total = Round {
        elapsed: started.elapsed(),
        ..Round::default()
    };
    for r in results {
        total.merge(r?);
    }
    total.latencies.sort_unstable();
    // Names fetched past the end by clients that stopped are never asked; the next round
    // starts after them.
    Ok(total)
}

/// Asks `target` one fresh name until it answers right, for at most `ANSWER_TIMEOUT`.
fn wait_answering(netns: &File, target: SocketAddr, next: &AtomicU64) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let outcome = in_netns(netns, || {
            client(target, &AtomicU64::new(n), n + 1, deadline, None)
        })?;
        if outcome.ok == 1 {
            return Ok(());
        }
        if started.elapsed() > ANSWER_TIMEOUT {
            bail!(
                "{target} gave no right answer within {} s ({})",
                ANSWER_TIMEOUT.as_secs(),
                outcome
                    .first_wrong
                    .unwrap_or_else(|| "no answer".to_string())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /metrics` from the daemon's metrics listener, in the namespace.
fn scrape(netns: &File, port: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = in_netns(netns, || {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .with_context(|| format!("connecting to the metrics listener 127.0.0.1:{port}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the metrics listener sent no HTTP response")?;
    if head.split_whitespace().nth(1) != Some("200") {
        bail!("GET /metrics: {}", head.lines().next().unwrap_or_default());
    }
    // Series (name and labels as printed) -> value.
    Ok(body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// What the insert histogram gained between two scrapes.
struct Inserts {
    count: f64,
    sum: f64,
    /// (upper bound in seconds, cumulative count), ascending; `+Inf` last.
    buckets: Vec<(f64, f64)>,
}

impl Inserts {
    fn between(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Inserts {
        const NAME: &str = "fwd_dns_insert_seconds";
        let delta = |series: &str| {
            after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
        };
        let mut buckets: Vec<(f64, f64)> = after
            .keys()
            .filter_map(|series| {
                let le = series
                    .strip_prefix(NAME)?
                    .strip_prefix("_bucket{le=\"")?
                    .strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, delta(series)))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Inserts {
            count: delta(&format!("{NAME}_count")),
            sum: delta(&format!("{NAME}_sum")),
            buckets,
        }
    }

    /// The upper bound of the bucket holding the `q` quantile, as text.
    fn bound(&self, q: f64) -> String {
        let want = q * self.count;
        let mut last_finite = 0.0;
        for &(le, cumulative) in &self.buckets {
            if le.is_finite() {
                if cumulative >= want {
                    return format!("<= {}", duration(le * 1e6));
                }
                last_finite = le;
            }
        }
        format!("> {}", duration(last_finite * 1e6))
    }
}

/// The sum over the series of `name` whose labels include `label`.
fn total(samples: &BTreeMap<String, f64>, name: &str, label: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series
                .strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(label))
        })
        .map(|(_, v)| v)
        .sum()
}

/// Microseconds as text, in µs below 1 ms.
fn duration(us: f64) -> String {
    if us.abs() >= 1_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn rate(qps: f64) -> String {
    if qps >= 1000.0 {
        format!("{:.1}k", qps / 1000.0)
    } else {
        format!("{qps:.0}")
    }
}

/// Queries per second and latency through the daemon's DNS proxy against asking its
/// upstream (dnsmasq) directly, interleaved; and the daemon's answer-to-insert time.
pub fn dns_bench(
    root: &Path,
    fwd_release: &Path,
    quick: bool,
) -> anyhow::Result<crate::bench::report::Section> {
    let (rounds, per_round, limit) = if quick {
        (3, 5_000, Duration::from_secs(1))
    } else {
        (5, 20_000, Duration::from_secs(3))
    };
    let policy_dir = root.join("target/bench/policy-dns");
    let _ = std::fs::remove_dir_all(&policy_dir);
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::write(policy_dir.join("bench-dns.toml"), POLICY)?;
    let scratch = root.join("target/bench/dns");
    let dns_config = format!("\n[dns]\nlisten = [\"{PROXY}\"]\nupstream = [\"{UPSTREAM}\"]\n");
    let mut daemon = BenchDaemon::start_with(fwd_release, &scratch, &policy_dir, &dns_config)?;
    let (ready, _) = daemon.wait_ready()?;
    let netns_path = daemon.netns_path();
    let netns = File::open(&netns_path).with_context(|| format!("opening {netns_path}"))?;
    // Declared after the daemon, so they stop before the namespace goes.
    let mut authority = Dnsmasq::start(&netns_path, Role::Authority, &scratch.join("dnsmasq.log"))?;
    let mut forwarder = Dnsmasq::start(
        &netns_path,
        Role::Forwarder,
        &scratch.join("dnsmasq-forwarder.log"),
    )?;
    eprintln!(
        "xtask: daemon ready after {:.2} s; {rounds} rounds of at most {per_round} queries or {} s \
         each way, {CLIENTS} clients",
        ready.as_secs_f64(),
        limit.as_secs()
    );
    let next = AtomicU64::new(0);
    wait_answering(&netns, UPSTREAM, &next)
        .map_err(|e| e.context(format!("dnsmasq's log:\n{}", authority.log_text())))?;
    wait_answering(&netns, FORWARDER, &next).map_err(|e| {
        e.context(format!(
            "the forwarding dnsmasq's log:\n{}",
            forwarder.log_text()
        ))
    })?;
    wait_answering(&netns, PROXY, &next)
        .map_err(|e| e.context(format!("the daemon's log:\n{}", daemon.log_text())))?;
    let mut sides = [
        Side::new("proxy", PROXY, daemon.pid()),
        Side::new("forwarder", FORWARDER, forwarder.pid()),
        Side::new("direct", UPSTREAM, authority.pid()),
    ];
    // A warm-up each way, not counted.
    for side in &sides {
        round(&netns, side.target, &next, 1_000, limit, None)?;
    }

    let before = scrape(&netns, daemon.metrics_port())?;
    let mut faults = Faults::default();
    let started = Instant::now();
    for i in 0..rounds {
        // Each round in another order: no side always follows the same one.
        let n = sides.len();
        for k in 0..n {
            let side = &mut sides[(i + k) % n];
            let cpu_before = cpu_seconds(side.pid)?;
            let mut r = round(&netns, side.target, &next, per_round, limit, None)?;
            let cpu = cpu_seconds(side.pid)? - cpu_before;
            eprintln!(
                "xtask: dns round {}/{rounds} {}: {} answers in {:.2} s, {} qps, {:.0} µs CPU each, {}",
                i + 1,
                side.name,
                r.ok,
                r.elapsed.as_secs_f64(),
                rate(r.qps()),
                cpu * 1e6 / r.ok.max(1) as f64,
                r.latency_line()
            );
            if r.ok == 0 {
                bail!(
                    "no right answer from {} ({}): {}",
                    side.name,
                    side.target,
                    r.first_wrong
                        .unwrap_or_else(|| "every query timed out".into())
                );
            }
            side.ok += r.ok;
            side.cpu_us.push(cpu * 1e6 / r.ok as f64);
            side.qps.push(r.qps());
            side.p50.push(r.quantile_us(0.5));
            side.p99.push(r.quantile_us(0.99));
            faults.add(side.name, &mut r);
        }
        authority.check_alive()?;
        forwarder.check_alive()?;
    }
    // Latency apart from queueing: the same clients paced to a quarter of the slowest
    // side's rate, so that no server has a backlog and a query waits only for the work it
    // causes.
    let slowest = sides
        .iter()
        .map(|side| median(&side.qps))
        .fold(f64::INFINITY, f64::min);
    let paced_rate = ((slowest * PACED_SHARE / 100.0).floor() * 100.0).max(500.0);
    let paced_for = if quick { 1.0 } else { 2.0 };
    for i in 0..rounds {
        let n = sides.len();
        for k in 0..n {
            let side = &mut sides[(i + k) % n];
            let queries = (paced_rate * paced_for) as u64;
            let limit = Duration::from_secs_f64(paced_for + 1.0);
            let mut r = round(&netns, side.target, &next, queries, limit, Some(paced_rate))?;
            eprintln!(
                "xtask: dns paced round {}/{rounds} {}: {} answers at {} qps, {}",
                i + 1,
                side.name,
                r.ok,
                rate(r.qps()),
                r.latency_line()
            );
            if r.ok == 0 {
                bail!("no right answer from {} in a paced round", side.name);
            }
            side.ok += r.ok;
            side.paced_p50.push(r.quantile_us(0.5));
            side.paced_p99.push(r.quantile_us(0.99));
            faults.add(side.name, &mut r);
        }
        authority.check_alive()?;
        forwarder.check_alive()?;
    }
    let measured = started.elapsed();
    let after = scrape(&netns, daemon.metrics_port())?;
    drop(forwarder);
    drop(authority);
    drop(daemon);
    let Faults {
        wrong,
        lost,
        first_wrong,
    } = faults;
    if let Some(w) = first_wrong.filter(|_| wrong > 0) {
        bail!("{wrong} wrong answers, e.g. {w}");
    }

    let inserts = Inserts::between(&before, &after);
    let answers = |result: &str| {
        let label = format!("result=\"{result}\"");
        total(&after, "fwd_dns_answers_total", &label)
            - total(&before, "fwd_dns_answers_total", &label)
    };
    let (opened, not_covered) = (answers("opened"), answers("not_covered"));
    let servfail = total(&after, "fwd_dns_queries_total", "result=\"servfail\"")
        - total(&before, "fwd_dns_queries_total", "result=\"servfail\"");
    let [proxy, forwarder, direct] = &sides;
    eprintln!(
        "xtask: dns bench: {:.1} s measured; the daemon counted {opened} answers opened, \
         {not_covered} not covered, {servfail} SERVFAIL; {} right answers through \
         the proxy",
        measured.as_secs_f64(),
        proxy.ok
    );
    let insert = if inserts.count > 0.0 {
        format!(
            "answer->insert mean {}, p50 {}, p99 {} ({:.0} answers, {opened:.0} opened)",
            duration(inserts.sum / inserts.count * 1e6),
            inserts.bound(0.5),
            inserts.bound(0.99),
            inserts.count
        )
    } else {
        "answer->insert: fwd_dns_insert_seconds did not count (not exported by this fwd?)"
            .to_string()
    };
    let signed = |us: f64| {
        if us >= 0.0 {
            format!("+{}", duration(us))
        } else {
            format!("-{}", duration(-us))
        }
    };
    // A latency row: the proxy's and the forwarder's figure with what each adds over
    // asking directly, the direct figure, and the proxy's over the forwarder's (µs).
    let latency_row = |label: String, proxy: f64, forwarder: f64, direct: f64| {
        vec![
            label,
            format!("{} ({})", duration(proxy), signed(proxy - direct)),
            format!("{} ({})", duration(forwarder), signed(forwarder - direct)),
            duration(direct),
            signed(proxy - forwarder),
        ]
    };
    let (pq, fq, dq) = (
        median(&proxy.qps),
        median(&forwarder.qps),
        median(&direct.qps),
    );
    let quantiles = |side: &Side| (median(&side.p50), median(&side.p99));
    let ((p50, p99), (f50, f99), (d50, d99)) =
        (quantiles(proxy), quantiles(forwarder), quantiles(direct));
    let paced = |side: &Side| (median(&side.paced_p50), median(&side.paced_p99));
    let ((pp50, pp99), (fp50, fp99), (dp50, dp99)) =
        (paced(proxy), paced(forwarder), paced(direct));
    let mut section = crate::bench::report::Section::new(
        "dns",
        "DNS proxy: fwd's proxy against a dnsmasq forwarder and dnsmasq answering directly",
    );
    section
        .note(format!(
            "{CLIENTS} closed-loop UDP clients, every name new, every 8th not covered by a rule; \
             median of {rounds} interleaved rounds; then {rounds} interleaved paced rounds of \
             {paced_for:.0} s, the same clients together at {} ({:.0}% of the slowest side's \
             rate): latency there is what a query costs, closed-loop latency is mostly queueing \
             ({CLIENTS} clients / queries per second)",
            rate(paced_rate),
            PACED_SHARE * 100.0
        ))
        .note(
            "forwarder: a second dnsmasq forwarding every query to the same authority \
             (--cache-size=0, --dns-forward-max=1024), the fair anchor: it relays as the proxy \
             does, without reading answers or opening addresses; added: over asking the \
             authority directly; CPU per answer: user + system time of the answering process \
             (fwd's whole daemon, the forwarding dnsmasq, the authority) over the round, per \
             right answer (for fwd and the forwarder, the authority's share is not in it)",
        )
        .note(insert)
        .columns(&[
            "",
            "through fwd",
            "dnsmasq forwarder",
            "dnsmasq directly",
            "fwd / forwarder",
        ])
        .row(vec![
            "queries per second".into(),
            rate(pq),
            rate(fq),
            rate(dq),
            crate::bench::report::ratio(pq / fq),
        ])
        .row(vec![
            "CPU per answer (its process)".into(),
            format!("{:.0} µs", median(&proxy.cpu_us)),
            format!("{:.0} µs", median(&forwarder.cpu_us)),
            format!("{:.0} µs", median(&direct.cpu_us)),
            crate::bench::report::ratio(median(&proxy.cpu_us) / median(&forwarder.cpu_us)),
        ])
        .row(latency_row("p50 latency (added)".into(), p50, f50, d50))
        .row(latency_row("p99 latency (added)".into(), p99, f99, d99))
        .row(latency_row(
            format!("p50 latency at {} (added)", rate(paced_rate)),
            pp50,
            fp50,
            dp50,
        ))
        .row(latency_row(
            format!("p99 latency at {} (added)", rate(paced_rate)),
            pp99,
            fp99,
            dp99,
        ));
    if lost > 0 || servfail > 0.0 {
        section.note(format!("{lost} queries unanswered, {servfail:.0} SERVFAIL"));
    }
    section.goals.push(crate::bench::report::Goal::new(
        format!("the proxy answers at least as many queries per second as a dnsmasq forwarder ({CLIENTS} clients)"),
        format!("{} ({} against {})", crate::bench::report::ratio(pq / fq), rate(pq), rate(fq)),
        Some(pq >= fq),
    ));
    section.goals.push(crate::bench::report::Goal::new(
        format!(
            "the proxy's p99 added latency under 0.5 ms, paced ({CLIENTS} clients at {})",
            rate(paced_rate)
        ),
        format!(
            "{} (forwarder {})",
            signed(pp99 - dp99),
            signed(fp99 - dp99)
        ),
        Some(pp99 - dp99 < P99_ADDED_US),
    ));
    section.goals.push(crate::bench::report::Goal::new(
        format!("the proxy's p99 added latency under 0.5 ms, closed loop ({CLIENTS} clients)"),
        format!("{} (forwarder {})", signed(p99 - d99), signed(f99 - d99)),
        Some(p99 - d99 < P99_ADDED_US),
    ));
    section.data = serde_json::json!({
        "qps": {"proxy": proxy.qps, "forwarder": forwarder.qps, "direct": direct.qps},
        "cpu_us_per_answer": {"proxy": proxy.cpu_us, "forwarder": forwarder.cpu_us, "direct": direct.cpu_us},
        "p50_us": {"proxy": proxy.p50, "forwarder": forwarder.p50, "direct": direct.p50},
        "p99_us": {"proxy": proxy.p99, "forwarder": forwarder.p99, "direct": direct.p99},
        "paced_qps": paced_rate,
        "paced_p50_us": {"proxy": proxy.paced_p50, "forwarder": forwarder.paced_p50, "direct": direct.paced_p50},
        "paced_p99_us": {"proxy": proxy.paced_p99, "forwarder": forwarder.paced_p99, "direct": direct.paced_p99},
        "insert_mean_us": if inserts.count > 0.0 { inserts.sum / inserts.count * 1e6 } else { f64::NAN },
        "unanswered": lost,
        "servfail": servfail,
    });
    Ok(section)
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::{Record, rdata::A};

    use super::*;

    /// Answers every A query on `socket` as the bench's authority does, until `stop`.
    fn authority(socket: &UdpSocket, stop: &std::sync::atomic::AtomicBool) {
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            let query = Message::from_vec(&buf[..n]).unwrap();
            let name = query.queries[0].name().clone();
            let addr = if name.to_ascii().ends_with("other.example.") {
                OTHER_ADDR
            } else {
                BENCH_ADDR
            };
            let mut answer = Message::response(query.metadata.id, OpCode::Query);
            answer.add_queries(query.queries.iter().cloned());
            answer.add_answer(Record::from_rdata(name, 300, RData::A(A(addr))));
            socket.send_to(&answer.to_vec().unwrap(), from).unwrap();
        }
    }

    /// Paced rounds keep to their rate (never faster; every query answered and right),
    /// closed-loop rounds go as fast as answers come.
    #[test]
    fn paced_rounds_ask_at_their_rate() {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let target = socket.local_addr().unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        // The clients enter a namespace: this process's own.
        let netns = File::open("/proc/self/ns/net").unwrap();
        std::thread::scope(|s| {
            s.spawn(|| authority(&socket, &stop));
            let next = AtomicU64::new(0);
            let paced = round(
                &netns,
                target,
                &next,
                400,
                Duration::from_secs(5),
                Some(800.0),
            );
            let closed = round(&netns, target, &next, 400, Duration::from_secs(5), None);
            stop.store(true, Ordering::Relaxed);
            let (paced, closed) = (paced.unwrap(), closed.unwrap());
            assert_eq!((paced.ok, paced.wrong, paced.lost), (400, 0, 0));
            assert_eq!((closed.ok, closed.wrong, closed.lost), (400, 0, 0));
            assert_eq!(paced.latencies.len(), 400);
            // 400 queries at 800 per second: each client's last slot is at least
            // (400 / 32 - 1) * 40 ms after its first.
            let every = Duration::from_secs_f64(CLIENTS as f64 / 800.0);
            assert!(
                paced.elapsed >= every * (400 / CLIENTS as u32 - 1),
                "400 paced queries in {:?}",
                paced.elapsed
            );
            assert!(paced.qps() <= 800.0 * 1.05, "{} qps", paced.qps());
        });
    }
}
