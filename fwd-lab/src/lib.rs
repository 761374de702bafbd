//! fwd's lab: test hosts in network namespaces, shared by `fwd lab` and the end-to-end tests.
//!
//! Topology (nothing in the root namespace is on the path; no namespace has a route out):
//!
//! ```text
//!  client ──veth── gateway ──veth── vendor
//!  10.250.0.2     lan0 10.250.0.1    wan0 10.251.0.2 + every vendor address
//!  fd00:250::2    wan0 10.251.0.1    fd00:251::2
//! ```
//! The gateway forwards; its `lan0` is where fwd's XDP program sits.

mod authority;
pub mod https;
pub mod packet;
mod site;
mod supervisor;
pub use authority::Authority;
pub use site::{SiteConfig, toml_str};
pub use supervisor::Supervisor;

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::sched::{CloneFlags, setns};

pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
pub const GATEWAY_LAN_V4: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
pub const GATEWAY_WAN_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
pub const VENDOR_WAN_V4: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 2);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 2);
pub const GATEWAY_LAN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, 1);
pub const GATEWAY_WAN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x251, 0, 0, 0, 0, 0, 1);
pub const VENDOR_WAN_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x251, 0, 0, 0, 0, 0, 2);
/// The gateway's LAN-facing interface, where the XDP program is attached.
pub const GATEWAY_LAN_IF: &str = "lan0";

/// The lab's vendor policy: TCP 443 to the vendor's networks, UDP media to one address.
pub const ACME_POLICY: &str = r#"
[vendor]
id = "acme"
name = "Acme Video"

[[rule]]
id = "web"
service = "Web app"
protocol = "tcp"
ports = [443]
remote = ["198.51.100.0/24", "2001:db8:100::/64"]

[[rule]]
id = "media"
service = "Media"
protocol = "udp"
ports = ["10000-20000"]
remote = "198.51.100.10"
"#;

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (iproute2; `cargo xtask setup` installs it)")?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Adds `cidr` to `dev` in `ns` (IPv6 without duplicate address detection).
fn addr(ns: &Netns, dev: &str, cidr: &str) -> anyhow::Result<()> {
    if cidr.contains(':') {
        ns.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])
    } else {
        ns.ip(&["addr", "add", cidr, "dev", dev])
    }
}

/// A veth pair from `name` in `ns` to `eth0` in `peer` (created inside the namespaces,
/// never in the root one).
fn veth(ns: &Netns, name: &str, peer: &Netns) -> anyhow::Result<()> {
    ns.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        peer.name(),
    ])
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name`, replacing a stale one left by a killed run.
    pub fn create(name: &str) -> anyhow::Result<Netns> {
        let _ = ip(&["netns", "delete", name]);
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...`.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Runs `f` on a thread that has entered this namespace. Sockets created there stay in
    /// the namespace and can be used from any thread afterwards.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| anyhow::anyhow!("thread in namespace panicked"))?
    }

    /// Starts a thread that enters this namespace and then runs `f` (for servers that
    /// open sockets as they go, such as a TCP relay).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<T>>> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        Ok(std::thread::spawn(move || -> anyhow::Result<T> {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET).context("setns")?;
            Ok(f())
        }))
    }

    /// A command that will run inside this namespace (only the network namespace changes).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
        use std::os::unix::process::CommandExt as _;
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        let mut cmd = Command::new(program);
        // SAFETY: setns is async-signal-safe; the closure only calls it and maps the error.
        unsafe {
            cmd.pre_exec(move || {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
            });
        }
        Ok(cmd)
    }

    /// Writes a sysctl of this namespace (`net/ipv4/ip_forward` style path under /proc/sys).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let path = format!("/proc/sys/{key}");
        let value = value.to_string();
        self.run(move || std::fs::write(&path, value).with_context(|| format!("writing {path}")))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "delete", &self.name]);
    }
}

/// The three-host lab.
pub struct Lab {
    pub client: Netns,
    pub gateway: Netns,
    pub vendor: Netns,
}

impl Lab {
    /// Builds the lab; `vendor_addrs` are assigned to the vendor host.
    pub fn create(prefix: &str, vendor_addrs: &[IpAddr]) -> anyhow::Result<Lab> {
        let lab = Lab {
            client: Netns::create(&format!("{prefix}-client"))?,
            gateway: Netns::create(&format!("{prefix}-gw"))?,
            vendor: Netns::create(&format!("{prefix}-vendor"))?,
        };
        // No duplicate address detection: addresses (link-local ones included) are usable at
        // once, so IPv6 works as soon as the lab exists rather than seconds later.
        for ns in [&lab.client, &lab.gateway, &lab.vendor] {
            ns.sysctl("net/ipv6/conf/default/accept_dad", "0")?;
            ns.sysctl("net/ipv6/conf/all/accept_dad", "0")?;
        }
        // veth pairs are created inside the namespaces, never in the root one.
        lab.add_lan()?;
        veth(&lab.gateway, "wan0", &lab.vendor)?;
        addr(&lab.gateway, "wan0", &format!("{GATEWAY_WAN_V4}/24"))?;
        addr(&lab.gateway, "wan0", &format!("{GATEWAY_WAN_V6}/64"))?;
        addr(&lab.vendor, "eth0", &format!("{VENDOR_WAN_V4}/24"))?;
        addr(&lab.vendor, "eth0", &format!("{VENDOR_WAN_V6}/64"))?;
        for a in vendor_addrs {
            match a {
                IpAddr::V4(_) => {
                    lab.vendor
                        .ip(&["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
                }
                IpAddr::V6(_) => lab.vendor.ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{a}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ])?,
            }
        }
        for (ns, dev) in [(&lab.gateway, "wan0"), (&lab.vendor, "eth0")] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        lab.gateway
            .ip(&["route", "add", "default", "via", &VENDOR_WAN_V4.to_string()])?;
        lab.gateway.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &VENDOR_WAN_V6.to_string(),
        ])?;
        lab.vendor.ip(&[
            "route",
            "add",
            "10.250.0.0/24",
            "via",
            &GATEWAY_WAN_V4.to_string(),
        ])?;
        lab.vendor.ip(&[
            "-6",
            "route",
            "add",
            "fd00:250::/64",
            "via",
            &GATEWAY_WAN_V6.to_string(),
        ])?;
        lab.gateway.sysctl("net/ipv4/ip_forward", "1")?;
        lab.gateway.sysctl("net/ipv6/conf/all/forwarding", "1")?;
        lab.wait_until_routed()?;
        Ok(lab)
    }

    /// Creates the LAN link (the gateway's `lan0`, the client's `eth0`) with its addresses
    /// and the client's routes: what `create` does, and what recreates it after
    /// `remove_lan` (a veth or VLAN deleted and created again).
    pub fn add_lan(&self) -> anyhow::Result<()> {
        veth(&self.gateway, GATEWAY_LAN_IF, &self.client)?;
        addr(&self.client, "eth0", &format!("{CLIENT_V4}/24"))?;
        addr(&self.client, "eth0", &format!("{CLIENT_V6}/64"))?;
        addr(
            &self.gateway,
            GATEWAY_LAN_IF,
            &format!("{GATEWAY_LAN_V4}/24"),
        )?;
        addr(
            &self.gateway,
            GATEWAY_LAN_IF,
            &format!("{GATEWAY_LAN_V6}/64"),
        )?;
        self.client.ip(&["link", "set", "eth0", "up"])?;
        self.gateway.ip(&["link", "set", GATEWAY_LAN_IF, "up"])?;
        // Every "internet" address of the client is behind the gateway.
        self.client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_LAN_V4.to_string(),
        ])?;
        self.client.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &GATEWAY_LAN_V6.to_string(),
        ])
    }

    /// Starts `fwd run --config DIR/fwd.toml` on the gateway, logging to `DIR/LOG`, and
    /// waits until its metrics at `metrics` answer (panics with its log otherwise).
    pub fn start_fwd(&self, dir: &std::path::Path, log: &str, metrics: &str) -> FwdProcess {
        FwdProcess::start(
            &self.gateway,
            &fwd_bin(),
            &dir.join("fwd.toml"),
            &dir.join(log),
            metrics.parse().expect("a metrics address"),
        )
        .unwrap()
    }

    /// Deletes the LAN link (both ends go; the client is cut off until `add_lan`).
    pub fn remove_lan(&self) -> anyhow::Result<()> {
        self.gateway.ip(&["link", "delete", GATEWAY_LAN_IF])
    }

    /// Waits (at most 10 s) until the client reaches the vendor host over IPv4 and IPv6: a
    /// TCP connection to a closed port is refused once neighbours and routes are in place.
    pub fn wait_until_routed(&self) -> anyhow::Result<()> {
        for addr in [IpAddr::V4(VENDOR_WAN_V4), IpAddr::V6(VENDOR_WAN_V6)] {
            let dst = SocketAddr::new(addr, 9);
            let ready = wait_for(Duration::from_secs(10), || {
                let refused = self.client.run(move || {
                    matches!(
                        TcpStream::connect_timeout(&dst, Duration::from_millis(200)),
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
                    )
                });
                matches!(refused, Ok(true)).then_some(())
            });
            if ready.is_none() {
                bail!("the lab's client cannot reach {addr} after 10 s");
            }
        }
        Ok(())
    }
}

/// The global addresses of the current network namespace's interfaces (IPv6 link-local
/// ones need a scope to bind and are left out).
fn namespace_addresses() -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(a) = ifa.address else { continue };
        if let Some(v4) = a.as_sockaddr_in() {
            out.push(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = a.as_sockaddr_in6()
            && v6.ip().segments()[0] & 0xffc0 != 0xfe80
        {
            out.push(IpAddr::V6(v6.ip()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What a sink has received.
#[derive(Default)]
pub struct Received {
    pub tcp_connections: AtomicU64,
    pub udp_datagrams: AtomicU64,
}

/// Echo servers on the vendor host: a TCP listener per port on every address, and a UDP
/// socket per port and address, so a reply leaves from the address the client sent to (as a
/// firewall's flow table expects). They stop when dropped.
pub struct Sink {
    pub received: Vec<(u16, Arc<Received>)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sink {
    pub fn start(ns: &Netns, ports: &[u16]) -> anyhow::Result<Sink> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut sink = Sink {
            received: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
        };
        for &port in ports {
            let received = Arc::new(Received::default());
            let (tcp, udps) = ns.run(move || -> anyhow::Result<_> {
                let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
                // A dual-stack listener: IPv4 arrives as IPv4-mapped addresses.
                let tcp = TcpListener::bind(any)?;
                let mut udps = Vec::new();
                for addr in namespace_addresses()? {
                    udps.push(UdpSocket::bind(SocketAddr::new(addr, port))?);
                }
                Ok((tcp, udps))
            })??;
            tcp.set_nonblocking(true)?;
            let (r, s) = (received.clone(), stop.clone());
            sink.threads.push(std::thread::spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    match tcp.accept() {
                        Ok((mut conn, _)) => {
                            r.tcp_connections.fetch_add(1, Ordering::Relaxed);
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
                            let mut buf = [0u8; 512];
                            if let Ok(n) = conn.read(&mut buf) {
                                let _ = conn.write_all(&buf[..n]);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
            for udp in udps {
                udp.set_read_timeout(Some(Duration::from_millis(50)))?;
                let (r, s) = (received.clone(), stop.clone());
                sink.threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !s.load(Ordering::Relaxed) {
                        if let Ok((n, from)) = udp.recv_from(&mut buf) {
                            r.udp_datagrams.fetch_add(1, Ordering::Relaxed);
                            let _ = udp.send_to(&buf[..n], from);
                        }
                    }
                }));
            }
            sink.received.push((port, received));
        }
        Ok(sink)
    }

    pub fn tcp_connections(&self, port: u16) -> u64 {
        self.get(port).tcp_connections.load(Ordering::Relaxed)
    }

    pub fn udp_datagrams(&self, port: u16) -> u64 {
        self.get(port).udp_datagrams.load(Ordering::Relaxed)
    }

    fn get(&self, port: u16) -> &Received {
        &self
            .received
            .iter()
            .find(|(p, _)| *p == port)
            .unwrap_or_else(|| panic!("no sink on port {port}"))
            .1
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Connects from `ns` to `dst`, sends a line and waits for its echo. True if it came back.
pub fn tcp_probe(ns: &Netns, dst: SocketAddr, timeout: Duration) -> anyhow::Result<bool> {
    let stream = ns.run(move || TcpStream::connect_timeout(&dst, timeout))?;
    match stream {
        Ok(stream) => echoes(stream, timeout),
        Err(_) => Ok(false),
    }
}

/// Sends a line on a connected stream and waits for its echo.
fn echoes(mut stream: TcpStream, timeout: Duration) -> anyhow::Result<bool> {
    stream.set_read_timeout(Some(timeout))?;
    let payload = b"fwd lab probe\n";
    if stream.write_all(payload).is_err() {
        return Ok(false);
    }
    let mut echo = [0u8; 64];
    Ok(matches!(stream.read(&mut echo), Ok(n) if echo[..n] == payload[..]))
}

/// Sends one datagram from `ns` to `dst` and waits for its echo. True if it came back.
pub fn udp_probe(ns: &Netns, dst: SocketAddr, timeout: Duration) -> anyhow::Result<bool> {
    let bind: SocketAddr = match dst {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = ns.run(move || UdpSocket::bind(bind))??;
    socket.set_read_timeout(Some(timeout))?;
    socket.send_to(b"fwd lab probe", dst)?;
    let mut buf = [0u8; 64];
    Ok(matches!(socket.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"fwd lab probe"))
}

/// GETs `http://ADDR/PATH` from inside `ns` (HTTP/1.0, for the daemon's metrics endpoint).
pub fn http_get(ns: &Netns, addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let response = ns.run(move || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(request.as_bytes())?;
        let mut body = String::new();
        stream.read_to_string(&mut body)?;
        Ok(body)
    })??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("HTTP response without a header end")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "GET {path}: {}",
            head.lines().next().unwrap_or("empty response")
        );
    }
    Ok(body.to_string())
}

/// Polls `f` every 100 ms until it returns `Some`, or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `fwd run` started inside a namespace; stopped with SIGTERM (then SIGKILL) on drop.
pub struct FwdProcess {
    child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl FwdProcess {
    /// Starts `fwd run --config CONFIG` in `ns`, logging to `log`, and waits until `metrics`
    /// answers. Fails with the daemon's log if it exits or does not come up.
    pub fn start(
        ns: &Netns,
        fwd: &std::path::Path,
        config: &std::path::Path,
        log: &std::path::Path,
        metrics: SocketAddr,
    ) -> anyhow::Result<FwdProcess> {
        let mut cmd = ns.command(fwd)?;
        cmd.args(["run", "--config"]).arg(config);
        Self::spawn(ns, cmd, log, metrics)
    }

    /// Like `start`, with the command made by the caller (in `ns`, as `Netns::command`
    /// makes it): for a test that plays the service manager's part.
    pub fn spawn(
        ns: &Netns,
        mut cmd: Command,
        log: &std::path::Path,
        metrics: SocketAddr,
    ) -> anyhow::Result<FwdProcess> {
        let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut process = FwdProcess {
            child,
            log: log.to_path_buf(),
        };
        let ready = wait_for(Duration::from_secs(20), || {
            if matches!(process.child.try_wait(), Ok(Some(_))) {
                return Some(false);
            }
            http_get(ns, metrics, "/metrics").ok().map(|_| true)
        });
        if ready != Some(true) {
            bail!("fwd did not come up; its log:\n{}", process.log_text());
        }
        Ok(process)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns its status.
    pub fn stop(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        wait_for(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Kills the daemon with SIGKILL (no clean-up runs) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Runs `cmd` to its end: its exit code and its stdout then stderr as text.
pub fn code_and_output(cmd: &mut Command) -> (i32, String) {
    let out = cmd.output().expect("running a command");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `cmd` (stderr captured) for at most `timeout`, killing it if it is still running
/// then. Whether it exited by itself, and its output.
pub fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
) -> anyhow::Result<(bool, std::process::Output)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a command")?;
    let exited = wait_for(timeout, || child.try_wait().ok().flatten()).is_some();
    if !exited {
        let _ = child.kill();
    }
    Ok((exited, child.wait_with_output()?))
}

/// A test daemon's own pin directory on the bpf filesystem, removed (which detaches what
/// is still pinned there) when dropped.
pub struct Pins {
    pub dir: PathBuf,
}

impl Pins {
    pub fn new(prefix: &str) -> Pins {
        Pins {
            dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}")),
        }
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for FwdProcess {
    fn drop(&mut self) {
        if self.stop(Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `fwd` binary for end-to-end tests: FWD_BIN, or the workspace's debug build
/// (`cargo xtask test` builds it).
pub fn fwd_bin() -> PathBuf {
    let bin = std::env::var_os("FWD_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/fwd"),
        PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build -p fwd-userspace`) or set FWD_BIN",
        bin.display()
    );
    bin
}

/// A command running `fwd` (in the current network namespace).
pub fn fwd_command(fwd: &std::path::Path) -> Command {
    let mut cmd = Command::new(fwd);
    cmd.stdin(Stdio::null());
    cmd
}

/// Set by `cargo xtask test`: a test that needs root fails instead of skipping, so the
/// full run never passes by skipping.
pub const REQUIRE_ROOT_ENV: &str = "FWD_TESTS_REQUIRE_ROOT";

/// Whether a test that needs root (BPF, network namespaces, raw sockets) can run. As root:
/// true. Otherwise it writes a line saying it skips `test` and why, and returns false, so a
/// contributor's `cargo test` as a normal user runs everything else; unless
/// `FWD_TESTS_REQUIRE_ROOT` is set (`cargo xtask test` sets it), when it fails instead.
///
/// Use: `if !fwd_lab::can_run_as_root("name") { return; }` first thing in the test.
pub fn can_run_as_root(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    assert!(
        std::env::var_os(REQUIRE_ROOT_ENV).is_none(),
        "{test} needs root (BPF, network namespaces), and {REQUIRE_ROOT_ENV} says it must run: run `cargo xtask test` as root"
    );
    // Straight to the process's stderr: the test harness captures `eprintln!` of a test
    // that passes, and this line is the point.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs root (BPF, network namespaces); `sudo cargo xtask test` runs it"
    );
    false
}

/// A unique namespace prefix and a scratch directory (with `policies/`) for one test.
pub fn scratch(test: &str) -> (String, PathBuf) {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("fwdt{}-{n}", std::process::id());
    let dir = std::env::temp_dir().join(format!("{prefix}-{test}"));
    std::fs::create_dir_all(dir.join("policies")).expect("creating the scratch directory");
    (prefix, dir)
}

/// Runs `fwd ARGS --config DIR/fwd.toml --json` and parses its output (panics on failure).
pub fn fwd_json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = fwd_command(&fwd_bin())
        .args(args)
        .arg("--config")
        .arg(dir.join("fwd.toml"))
        .arg("--json")
        .output()
        .expect("running fwd");
    assert!(
        out.status.success(),
        "fwd {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("fwd --json prints JSON")
}

/// Scrapes the daemon's metrics from inside `ns`, parses them with a Prometheus parser and
/// returns the one sample of `metric` that has all of `labels` (panics otherwise).
pub fn scrape(ns: &Netns, listen: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let addr = listen.parse().expect("a metrics address");
    let text = http_get(ns, addr, "/metrics").expect("scraping the daemon's metrics");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid Prometheus text exposition");
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{metric} is not a counter or gauge: {other:?}"),
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one {metric}{labels:?} sample in:\n{text}"
    );
    matching[0]
}

/// Sends one datagram from `src` (an address of `ns`, any port if 0) to `dst`; the
/// datagram's fate is for the receiver to tell.
pub fn udp_send_from(ns: &Netns, src: SocketAddr, dst: SocketAddr) -> anyhow::Result<()> {
    let socket = ns.run(move || UdpSocket::bind(src))??;
    socket.send_to(b"fwd lab datagram", dst)?;
    Ok(())
}

/// Like `tcp_probe`, from a chosen source address of `ns`.
pub fn tcp_probe_from(
    ns: &Netns,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<bool> {
    let stream = ns.run(move || -> std::io::Result<TcpStream> {
        let socket = match dst {
            SocketAddr::V4(_) => {
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?
            }
            SocketAddr::V6(_) => {
                socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?
            }
        };
        socket.bind(&SocketAddr::new(src, 0).into())?;
        socket.connect_timeout(&dst.into(), timeout)?;
        Ok(socket.into())
    })?;
    match stream {
        Ok(stream) => echoes(stream, timeout),
        Err(_) => Ok(false),
    }
}

/// A steady, bounded stream of UDP datagrams from `ns`: one to each target every
/// `interval`, until stopped or `max_per_target` are sent. It counts what it sent and the
/// echoes that came back, per target.
pub struct Stream {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    sent: Vec<Arc<AtomicU64>>,
    echoed: Vec<Arc<AtomicU64>>,
}

impl Stream {
    pub fn start(
        ns: &Netns,
        targets: &[SocketAddr],
        interval: Duration,
        max_per_target: u64,
    ) -> anyhow::Result<Stream> {
        let mut sockets = Vec::new();
        for &dst in targets {
            let socket = ns.run(move || -> std::io::Result<UdpSocket> {
                let any: SocketAddr = match dst {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let socket = UdpSocket::bind(any)?;
                socket.connect(dst)?;
                socket.set_nonblocking(true)?;
                Ok(socket)
            })??;
            sockets.push(socket);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent: Vec<_> = targets
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let echoed: Vec<_> = targets
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect();
        let (s, sent_c, echoed_c) = (stop.clone(), sent.clone(), echoed.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let mut n = 0u64;
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) && n < max_per_target {
                for (i, socket) in sockets.iter().enumerate() {
                    if socket.send(&n.to_be_bytes()).is_ok() {
                        sent_c[i].fetch_add(1, Ordering::Relaxed);
                    }
                    while socket.recv(&mut buf).is_ok() {
                        echoed_c[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
                next += interval;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            // Collect the echoes still on their way.
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                for (i, socket) in sockets.iter().enumerate() {
                    while socket.recv(&mut buf).is_ok() {
                        echoed_c[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Ok(Stream {
            stop,
            thread: Some(thread),
            sent,
            echoed,
        })
    }

    /// Datagrams sent to target `i` so far.
    pub fn sent(&self, i: usize) -> u64 {
        self.sent[i].load(Ordering::Relaxed)
    }

    /// Stops sending, waits for late echoes, and returns (sent, echoed) per target.
    pub fn finish(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent
            .iter()
            .zip(&self.echoed)
            .map(|(s, e)| (s.load(Ordering::Relaxed), e.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
