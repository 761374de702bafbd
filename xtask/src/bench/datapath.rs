//! `cargo xtask bench`, the datapath: one rule set enforced on a gateway by fwd (XDP),
//! nftables (`fwd export nftables`, and one concatenated interval set), ipset + iptables
//! and a plain iptables chain, beside a gateway with no filter, over veth in network
//! namespaces; trafgen sends the traffic.
//!
//! Every configuration gets its own lab (client -> gateway -> vendor), set up once per
//! rule-set size; only the gateway differs. Each is checked first (the vendor must see
//! exactly the allowed packets), then measured in interleaved rounds: CPU time per packet
//! at a fixed offered load, and the maximum packet rate.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fwd_lab::{CLIENT_V4, FwdProcess, GATEWAY_LAN_IF, Lab, Netns, Pins, SiteConfig};
use serde_json::{Value, json};

use crate::{
    bench::report::{Goal, Section, interleaved, median, ratio, thousands},
    bench::rules::RuleSet,
};

use super::traffic::{self};
use traffic::{DevCounters, Expect, Flow, Traffic};

/// Networks per rule of the generated rule set.
const PER_RULE: usize = 100;
const RULES_SEED: u64 = 0xda7a_9a7e;
const MIX_SEED: u64 = 0x0005_eed1;
const ALLOWED_SEED: u64 = 0x0005_eed2;
const FLOOD_SEED: u64 = 0x0005_eed3;
/// Distinct packets per traffic file.
const PACKETS: usize = 4096;
const ALLOWED_SHARE: f64 = 0.75;
/// The plain chain is measured only up to this many (network, protocol, ports) triples.
const CHAIN_MAX_TRIPLES: usize = 10_000;
/// The gap between packets of the verdict check (trafgen's `--gap`).
const CHECK_GAP: &str = "20us";
/// A gap this long with no packet taken in means the generator is between bursts.
const IDLE_GAP: Duration = Duration::from_millis(20);
const METRICS: &str = "127.0.0.1:9469";
/// The table of the concatenated-set configuration (the export's is `fwd_export`).
const CONCAT_TABLE: &str = "bench_concat";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    None,
    /// A reference, not a filter: an XDP program that passes everything, on lan0.
    XdpPass,
    /// A reference, measured on the denied flood only: an XDP program that drops
    /// everything, on lan0; the floor under any filter's drop (trafgen's send, veth, XDP).
    XdpDrop,
    Fwd,
    /// `fwd export nftables` of fwd's policy.
    Nftables,
    /// One nftables table with a single concatenated address . protocol . port interval
    /// set (`RuleSet::nft_concat`).
    NftConcat,
    Ipset,
    Chain,
}

impl Filter {
    const ALL: [Filter; 8] = [
        Filter::None,
        Filter::XdpPass,
        Filter::XdpDrop,
        Filter::Fwd,
        Filter::Nftables,
        Filter::NftConcat,
        Filter::Ipset,
        Filter::Chain,
    ];

    fn id(self) -> &'static str {
        match self {
            Filter::None => "none",
            Filter::XdpPass => "xdp-pass",
            Filter::XdpDrop => "xdp-drop",
            Filter::Fwd => "fwd",
            Filter::Nftables => "nftables",
            Filter::NftConcat => "nftables-concat",
            Filter::Ipset => "ipset",
            Filter::Chain => "chain",
        }
    }

    /// Whether it filters (the others must deliver every packet).
    fn filters(self) -> bool {
        !matches!(self, Filter::None | Filter::XdpPass | Filter::XdpDrop)
    }

    /// Whether it is measured on the denied flood alone.
    fn flood_only(self) -> bool {
        self == Filter::XdpDrop
    }

    fn label(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::XdpPass => "XDP pass (reference)",
            Filter::XdpDrop => "XDP drop (reference)",
            Filter::Fwd => "fwd (XDP)",
            Filter::Nftables => "nftables (fwd export)",
            Filter::NftConcat => "nftables (concatenated set)",
            Filter::Ipset => "ipset + iptables",
            Filter::Chain => "iptables chain",
        }
    }
}

/// How much to measure.
struct Plan {
    sizes: &'static [usize],
    rounds: usize,
    /// The fixed-load window (between two idle moments of the generator).
    window: Duration,
    /// The maximum-rate window (after a short warm-up).
    max_window: Duration,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                sizes: &[10_000],
                rounds: 3,
                window: Duration::from_secs(1),
                max_window: Duration::from_millis(1000),
            }
        } else {
            Plan {
                sizes: &[10_000, 100_000],
                rounds: 5,
                window: Duration::from_secs(2),
                max_window: Duration::from_millis(1500),
            }
        }
    }
}

pub fn datapath_bench(
    root: &Path,
    fwd_release: &Path,
    quick: bool,
) -> anyhow::Result<Vec<Section>> {
    let started = Instant::now();
    let plan = Plan::new(quick);
    for tool in ["trafgen", "nft", "ipset", "iptables-restore"] {
        if !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            bail!(
                "`{tool}` is missing (cargo xtask setup installs netsniff-ng, nftables, ipset, iptables)"
            );
        }
    }
    let scratch = root.join("target/bench/datapath");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let machine = Machine::probe()?;
    let mut sizes = Vec::new();
    let mut load = None;
    for &prefixes in plan.sizes {
        let dir = scratch.join(format!("p{prefixes}"));
        match run_size(fwd_release, &dir, prefixes, &plan, &machine, &mut load) {
            Ok(size) => sizes.push(size),
            // The first size fixes the load: without it there is nothing to compare.
            Err(err) if sizes.is_empty() => return Err(err),
            Err(err) => {
                eprintln!("xtask: datapath: {prefixes} prefixes failed: {err:#}");
                sizes.push(SizeResult {
                    prefixes,
                    rules: 0,
                    ipset_elements: 0,
                    concat_elements: 0,
                    rate: None,
                    gateways: vec![GatewayResult {
                        filter: Filter::None,
                        r: Results {
                            problem: Some(format!("failed: {err:#}")),
                            ..Results::default()
                        },
                    }],
                });
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("xtask: datapath bench done in {elapsed:.0} s");
    Ok(sections(&sizes, &plan, &machine, elapsed))
}

/// What the machine's CPU accounting is like, found once.
struct Machine {
    /// Whether the kernel charges interrupt time apart (CONFIG_IRQ_TIME_ACCOUNTING); then
    /// softirq time is not in the tasks' run time and is added from /proc/stat.
    irq_time_accounting: Option<bool>,
    /// ksoftirqd's pid per CPU.
    ksoftirqd: Vec<(usize, u32)>,
    ns_per_tick: f64,
}

impl Machine {
    fn probe() -> anyhow::Result<Machine> {
        let mut ksoftirqd = Vec::new();
        for (pid, comm, ppid) in processes() {
            if ppid == 2
                && let Some(cpu) = comm.strip_prefix("ksoftirqd/")
                && let Ok(cpu) = cpu.parse()
            {
                ksoftirqd.push((cpu, pid));
            }
        }
        if ksoftirqd.is_empty() {
            bail!("no ksoftirqd threads found in /proc");
        }
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
        Ok(Machine {
            irq_time_accounting: kernel_config("CONFIG_IRQ_TIME_ACCOUNTING"),
            ksoftirqd,
            ns_per_tick: 1e9 / hz as f64,
        })
    }

    /// The run time of the ksoftirqd threads of `cpus`.
    fn softirqd_ns(&self, cpus: &[usize]) -> u64 {
        self.ksoftirqd
            .iter()
            .filter(|(cpu, _)| cpus.contains(cpu))
            .map(|&(_, pid)| runtime_ns(pid))
            .sum()
    }
}

/// The CPUs `pids` may run on (trafgen pins each worker to one).
fn allowed_cpus(pids: &[u32]) -> Vec<usize> {
    let mut cpus: Vec<usize> = pids
        .iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(traffic::parse_cpu_list)
        })
        .flatten()
        .collect();
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// Whether the running kernel's config sets `key=y` (None: no config to read).
fn kernel_config(key: &str) -> Option<bool> {
    let text = match File::open("/proc/config.gz") {
        Ok(f) => {
            let mut s = String::new();
            flate2::read::GzDecoder::new(f)
                .read_to_string(&mut s)
                .ok()?;
            s
        }
        Err(_) => {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
            std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?
        }
    };
    Some(text.lines().any(|l| l == format!("{key}=y")))
}

/// (pid, comm, ppid) of every process.
fn processes() -> Vec<(u32, String, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (comm, ppid) = traffic::parse_stat(&stat)?;
            Some((pid, comm.to_string(), ppid))
        })
        .collect()
}

/// The exact run time (ns) of every thread of `pid`.
fn runtime_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| traffic::parse_schedstat(&s))
        .sum()
}

/// Every kernel thread's run time (ns): for the JSON, beside the figures.
fn kthreads_ns() -> u64 {
    processes()
        .into_iter()
        .filter(|(pid, _, ppid)| *ppid == 2 || *pid == 2)
        .map(|(pid, _, _)| runtime_ns(pid))
        .sum()
}

/// `/proc/net/dev` of one namespace, opened inside it (the file keeps showing that
/// namespace's interfaces whoever reads it).
struct NetDev(File);

impl NetDev {
    fn open(ns: &Netns) -> anyhow::Result<NetDev> {
        let file = ns.run(|| File::open("/proc/thread-self/net/dev"))??;
        Ok(NetDev(file))
    }

    fn read(&self, dev: &str) -> anyhow::Result<DevCounters> {
        let mut f = &self.0;
        f.seek(SeekFrom::Start(0))?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        traffic::parse_net_dev(&text, dev).with_context(|| format!("no {dev} in /proc/net/dev"))
    }
}

/// trafgen in the client namespace, one worker process on one CPU, always bounded by
/// `--num`; stopped (SIGINT, then SIGKILL) on drop.
struct Trafgen {
    child: Option<Child>,
    log: PathBuf,
}

impl Trafgen {
    fn start(ns: &Netns, config: &Path, args: &[String], log: &Path) -> anyhow::Result<Trafgen> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = ns.command("trafgen")?;
        cmd.arg("--in")
            .arg(config)
            .args(["--out", "eth0", "--cpus", "1", "--no-sock-mem"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        // Nice -20 (its forked worker inherits it): on a shared machine the bursts run on
        // a CPU of their own as far as the scheduler allows (the softirq work in them too).
        // SAFETY: setpriority is async-signal-safe; it only changes the child's nice value.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setpriority(libc::PRIO_PROCESS, 0, -20) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting trafgen")?;
        Ok(Trafgen {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// trafgen's forked sender processes (none once trafgen is reaped).
    fn workers(&self) -> Vec<u32> {
        let pid = self.pid();
        if pid <= 1 {
            return Vec::new();
        }
        processes()
            .into_iter()
            .filter(|(_, _, ppid)| *ppid == pid)
            .map(|(p, _, _)| p)
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits for trafgen to finish on its own; fails with its log unless it exits 0.
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                if !status.success() {
                    bail!("trafgen failed ({status}):\n{}", self.log_text());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!("trafgen did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the workers and trafgen (SIGINT: they print their totals and exit), then
    /// SIGKILL what is left after 2 s.
    fn stop(&mut self) {
        // The workers are found while trafgen is still ours and unreaped.
        let mut pids = self.workers();
        let Some(mut child) = self.child.take() else {
            return;
        };
        pids.push(child.id());
        pids.retain(|&p| p > 1);
        let signal = |sig| {
            for &p in &pids {
                // SAFETY: kill has no memory-safety preconditions; these are our trafgen
                // and the workers it forked.
                unsafe { libc::kill(p as i32, sig) };
            }
        };
        signal(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(libc::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A packet socket on an interface of a namespace: what arrives there, for the verdict
/// check.
pub(crate) struct Capture(OwnedFd);

impl Capture {
    pub(crate) fn open(ns: &Netns, dev: &str) -> anyhow::Result<Capture> {
        let dev = std::ffi::CString::new(dev)?;
        let fd = ns.run(move || -> anyhow::Result<OwnedFd> {
            // ETH_P_ALL: a tap, which sees frames before the sink's ingress hook drops them
            // (a socket for one protocol would be served after it).
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2); the fd is owned right below.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    i32::from(proto),
                )
            };
            if raw < 0 {
                bail!("packet socket: {}", std::io::Error::last_os_error());
            }
            // SAFETY: raw is a fresh socket nobody else owns.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {dev:?}");
            }
            // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: a valid address of the right length for this socket.
            let rc = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc != 0 {
                bail!(
                    "binding the packet socket: {}",
                    std::io::Error::last_os_error()
                );
            }
            let buf: libc::c_int = 64 << 20;
            let timeout = libc::timeval {
                tv_sec: 0,
                tv_usec: 200_000,
            };
            // SAFETY: valid option values of the sizes given.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    (&raw const buf).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
            }
            Ok(fd)
        })??;
        Ok(Capture(fd))
    }

    /// The next frame (Ethernet header first), or `None` when none came for 200 ms.
    pub(crate) fn recv<'a>(&self, buf: &'a mut [u8]) -> Option<&'a [u8]> {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        (n > 0).then(|| &buf[..n as usize])
    }

    /// The flows of every frame received until none came for 200 ms.
    fn drain(&self) -> Vec<Flow> {
        let mut flows = Vec::new();
        let mut buf = [0u8; 2048];
        while let Some(frame) = self.recv(&mut buf) {
            if let Some(flow) = traffic::parse_frame(frame) {
                flows.push(flow);
            }
        }
        flows
    }
}

/// An XDP program that returns one action for every packet (`r0 = action; exit`),
/// attached to an interface in driver mode with a BPF link: with `XDP_PASS` the cost of
/// veth's XDP mode without any filtering, with `XDP_DROP` the cheapest possible drop.
/// Detached when dropped (the link's last fd closes).
struct XdpReference {
    _link: OwnedFd,
    _prog: OwnedFd,
}

/// The XDP actions the references return.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

impl XdpReference {
    fn attach(ns: &Netns, dev: &str, action: u32) -> anyhow::Result<XdpReference> {
        /// The start of `union bpf_attr` for BPF_PROG_LOAD (the kernel takes a prefix).
        #[repr(C)]
        struct ProgLoad {
            prog_type: u32,
            insn_cnt: u32,
            insns: u64,
            license: u64,
            log_level: u32,
            log_size: u32,
            log_buf: u64,
            kern_version: u32,
            prog_flags: u32,
            prog_name: [u8; 16],
        }
        /// The start of `union bpf_attr` for BPF_LINK_CREATE.
        #[repr(C)]
        struct LinkCreate {
            prog_fd: u32,
            target_ifindex: u32,
            attach_type: u32,
            flags: u32,
        }
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_LINK_CREATE: libc::c_long = 28;
        const BPF_PROG_TYPE_XDP: u32 = 6;
        const BPF_XDP: u32 = 37;
        const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
        // mov64 r0, action; exit
        let insns: [u64; 2] = [(u64::from(action) << 32) | 0xb7, 0x0000_0000_0000_0095];
        let what = if action == XDP_DROP {
            "XDP_DROP"
        } else {
            "XDP_PASS"
        };
        let license = c"GPL";
        let dev = std::ffi::CString::new(dev)?;
        let fds = ns.run(move || -> anyhow::Result<(OwnedFd, OwnedFd)> {
            let mut name = [0u8; 16];
            let short = if action == XDP_DROP {
                b"xdp_drop"
            } else {
                b"xdp_pass"
            };
            name[..8].copy_from_slice(short);
            let attr = ProgLoad {
                prog_type: BPF_PROG_TYPE_XDP,
                insn_cnt: insns.len() as u32,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level: 0,
                log_size: 0,
                log_buf: 0,
                kern_version: 0,
                prog_flags: 0,
                prog_name: name,
            };
            // SAFETY: a valid BPF_PROG_LOAD attribute prefix; its pointers outlive the call.
            let prog = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_PROG_LOAD,
                    &raw const attr,
                    std::mem::size_of::<ProgLoad>(),
                )
            };
            if prog < 0 {
                bail!(
                    "loading an {what} program: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: a fresh fd nobody else owns.
            let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(dev.as_ptr()) };
            if ifindex == 0 {
                bail!("no interface {dev:?}");
            }
            let attr = LinkCreate {
                prog_fd: prog.as_raw_fd() as u32,
                target_ifindex: ifindex,
                attach_type: BPF_XDP,
                flags: XDP_FLAGS_DRV_MODE,
            };
            // SAFETY: a valid BPF_LINK_CREATE attribute prefix.
            let link = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_LINK_CREATE,
                    &raw const attr,
                    std::mem::size_of::<LinkCreate>(),
                )
            };
            if link < 0 {
                bail!(
                    "attaching the {what} program to {dev:?}: {}",
                    std::io::Error::last_os_error()
                );
            }
            // SAFETY: a fresh fd nobody else owns.
            Ok((unsafe { OwnedFd::from_raw_fd(link as i32) }, prog))
        })??;
        Ok(XdpReference {
            _link: fds.0,
            _prog: fds.1,
        })
    }
}

/// What the vendor received of one pass of the traffic.
#[derive(Debug, Default)]
struct Verdicts {
    sent: usize,
    allowed: usize,
    delivered: usize,
    missing: usize,
    leaked_address: usize,
    leaked_port: usize,
    duplicates: usize,
    unknown: usize,
}

impl Verdicts {
    fn compare(traffic: &Traffic, received: &[Flow]) -> Verdicts {
        let mut v = Verdicts {
            sent: traffic.packets.len(),
            allowed: traffic.count(Expect::Allowed),
            ..Verdicts::default()
        };
        let expect: std::collections::HashMap<Flow, Expect> =
            traffic.packets.iter().map(|p| (p.flow, p.expect)).collect();
        let mut seen = std::collections::HashSet::new();
        for flow in received {
            if flow.src != CLIENT_V4 {
                continue;
            }
            if !seen.insert(*flow) {
                v.duplicates += 1;
                continue;
            }
            match expect.get(flow) {
                Some(Expect::Allowed) => v.delivered += 1,
                Some(Expect::DeniedAddress) => v.leaked_address += 1,
                Some(Expect::DeniedPort) => v.leaked_port += 1,
                None => v.unknown += 1,
            }
        }
        v.missing = v.allowed - v.delivered;
        v
    }

    fn ok(&self) -> bool {
        self.missing == 0
            && self.leaked_address == 0
            && self.leaked_port == 0
            && self.duplicates == 0
            && self.unknown == 0
    }

    fn summary(&self) -> String {
        format!(
            "{} of {} allowed delivered, {} denied by address and {} denied by port leaked, {} duplicates, {} unknown",
            self.delivered,
            self.allowed,
            self.leaked_address,
            self.leaked_port,
            self.duplicates,
            self.unknown
        )
    }

    fn json(&self) -> Value {
        json!({
            "sent": self.sent, "allowed": self.allowed, "delivered": self.delivered,
            "missing_allowed": self.missing, "leaked_denied_address": self.leaked_address,
            "leaked_denied_port": self.leaked_port, "duplicates": self.duplicates,
            "unknown": self.unknown,
        })
    }
}

/// CPU time of the tasks that carry the packets, and the machine's, at one moment.
struct CpuSnapshot {
    generator_ns: u64,
    softirqd_ns: u64,
    daemon_ns: u64,
    kthreads_ns: u64,
    /// /proc/stat: busy ticks of every CPU, irq + softirq ticks of the generator's CPUs.
    machine_busy_ticks: u64,
    generator_irq_ticks: u64,
}

/// The interfaces on the path: the gateway's lan0 (what it takes in), the client's eth0
/// (what the generator could not send) and the vendor's eth0 (what was delivered).
struct Counters {
    lan: DevCounters,
    client: DevCounters,
    vendor: DevCounters,
}

impl Counters {
    /// Packets lost between the generator and the gateway from `self` to `later`.
    fn drops(&self, later: &Counters) -> u64 {
        (later.lan.rx_dropped - self.lan.rx_dropped)
            + (later.client.tx_dropped - self.client.tx_dropped)
    }
}

/// One fixed-load run's figures.
struct LoadRun {
    ns_per_packet: f64,
    /// The fwd daemon's CPU time per second of the window (0 for the others).
    daemon_ms_per_s: f64,
    packets: u64,
    seconds: f64,
    drops: u64,
    detail: Value,
}

/// One maximum-rate run's figures.
struct MaxRun {
    /// Frames lan0 took in per second of wall time.
    pps: f64,
    /// The share of the sending CPU the path had (1.0: all of it).
    cpu_share: f64,
    delivered_share: f64,
    drops: u64,
}

impl MaxRun {
    /// Frames per second of the sending CPU's time on the path: the rate it sustains with
    /// the CPU to itself (the wall rate, when nothing else ran there).
    fn per_cpu_second(&self) -> f64 {
        if self.cpu_share > 0.05 {
            self.pps / self.cpu_share.min(1.0)
        } else {
            f64::NAN
        }
    }
}

/// One configuration: its lab, its filter, and what was measured on it. Fields drop in
/// order: the daemon stops (detaching its programs) before its pins go, the counter files
/// close before the namespaces are deleted.
struct Gateway {
    filter: Filter,
    daemon: Option<FwdProcess>,
    pins: Option<Pins>,
    xdp_reference: Option<XdpReference>,
    gw_dev: NetDev,
    client_dev: NetDev,
    vendor_dev: NetDev,
    lab: Lab,
    mix_cfg: PathBuf,
    allowed_cfg: PathBuf,
    /// The mix with a random source port on each packet: new flows.
    new_cfg: PathBuf,
    /// Packets to addresses no rule covers, each to its own.
    flood_cfg: PathBuf,
    dir: PathBuf,
    r: Results,
}

/// What was found and measured on one configuration.
#[derive(Clone, Default)]
struct Results {
    setup_s: f64,
    /// Set when the configuration is not measured (further): broken verdicts or a failure.
    problem: Option<String>,
    verdicts: Value,
    probe_pps: f64,
    /// Every round's figures, in round order.
    cpu_mix: Vec<f64>,
    cpu_allowed: Vec<f64>,
    cpu_new: Vec<f64>,
    cpu_flood: Vec<f64>,
    /// Per second of the sending CPU's time (the table's max kpps).
    max_pps: Vec<f64>,
    max_wall_pps: Vec<f64>,
    cpu_share: Vec<f64>,
    daemon_ms: Vec<f64>,
    rounds: Vec<Value>,
    failed_rounds: usize,
}

/// Everything one rule-set size needs to set up a configuration.
struct SizeSetup<'a> {
    fwd: &'a Path,
    dir: &'a Path,
    rules: &'a RuleSet,
    mix: &'a Traffic,
    allowed: &'a Traffic,
    flood: &'a Traffic,
}

impl Gateway {
    fn create(filter: Filter, s: &SizeSetup) -> anyhow::Result<Gateway> {
        let prefix = format!("fwd-bench-{}-path-{}", std::process::id(), filter.id());
        let dir = s.dir.join(filter.id());
        std::fs::create_dir_all(&dir)?;
        let lab = Lab::create(&prefix, &[])?;
        let mac = |ns: &Netns, dev: &str| -> anyhow::Result<[u8; 6]> {
            let out = output(ns.command("ip")?.args(["-j", "link", "show", dev]))?;
            let v: Value = serde_json::from_str(&out)?;
            v[0]["address"]
                .as_str()
                .and_then(traffic::parse_mac)
                .with_context(|| format!("no MAC address of {dev} in {out}"))
        };
        // IPv4 only: no router solicitations or MLD reports among the counted packets.
        lab.client.sysctl("net/ipv6/conf/eth0/disable_ipv6", "1")?;
        let (client_mac, lan_mac) = (
            mac(&lab.client, "eth0")?,
            mac(&lab.gateway, GATEWAY_LAN_IF)?,
        );
        let mix_cfg = dir.join("mix.cfg");
        let allowed_cfg = dir.join("allowed.cfg");
        let new_cfg = dir.join("new.cfg");
        let flood_cfg = dir.join("flood.cfg");
        std::fs::write(&mix_cfg, s.mix.trafgen_config(client_mac, lan_mac))?;
        std::fs::write(&allowed_cfg, s.allowed.trafgen_config(client_mac, lan_mac))?;
        std::fs::write(
            &new_cfg,
            s.mix.trafgen_config_new_flows(client_mac, lan_mac),
        )?;
        std::fs::write(&flood_cfg, s.flood.trafgen_config(client_mac, lan_mac))?;
        // The sink counts what arrives (its interface, a capture) and drops it at once in
        // its ingress hook, so the path ends at the vendor's interface.
        nft(
            &lab.vendor,
            "table netdev fwd_bench_sink {\n  chain ingress {\n    type filter hook ingress device \"eth0\" priority 0; policy accept;\n    meta protocol ip drop\n  }\n}\n",
            &dir.join("sink.nft"),
        )?;
        let mut gw = Gateway {
            filter,
            daemon: None,
            pins: None,
            xdp_reference: None,
            gw_dev: NetDev::open(&lab.gateway)?,
            client_dev: NetDev::open(&lab.client)?,
            vendor_dev: NetDev::open(&lab.vendor)?,
            lab,
            mix_cfg,
            allowed_cfg,
            new_cfg,
            flood_cfg,
            dir,
            r: Results {
                probe_pps: f64::NAN,
                ..Results::default()
            },
        };
        let started = Instant::now();
        gw.install(s, &prefix)?;
        gw.r.setup_s = started.elapsed().as_secs_f64();
        eprintln!(
            "xtask: datapath: {} set up in {:.1} s",
            filter.label(),
            gw.r.setup_s
        );
        Ok(gw)
    }

    /// Puts the filter on the gateway.
    fn install(&mut self, s: &SizeSetup, prefix: &str) -> anyhow::Result<()> {
        let gw = &self.lab.gateway;
        match self.filter {
            Filter::None => {}
            Filter::XdpPass => {
                self.xdp_reference = Some(XdpReference::attach(gw, GATEWAY_LAN_IF, XDP_PASS)?);
            }
            Filter::XdpDrop => {
                self.xdp_reference = Some(XdpReference::attach(gw, GATEWAY_LAN_IF, XDP_DROP)?);
            }
            Filter::Fwd => {
                let pins = Pins::new(prefix);
                let config = write_fwd_config(&self.dir, s.dir, &pins)?;
                self.pins = Some(pins);
                self.daemon = Some(FwdProcess::start(
                    gw,
                    s.fwd,
                    &config,
                    &self.dir.join("fwd.log"),
                    METRICS.parse()?,
                )?);
            }
            Filter::Nftables => {
                let pins = Pins::new(prefix);
                let config = write_fwd_config(&self.dir, s.dir, &pins)?;
                let script =
                    crate::bench::export_nftables(s.fwd, &config, &s.dir.join("policies"))?;
                nft(gw, &script, &self.dir.join("export.nft"))?;
            }
            Filter::NftConcat => {
                let script = s.rules.nft_concat(CONCAT_TABLE, GATEWAY_LAN_IF);
                nft(gw, &script, &self.dir.join("concat.nft"))?;
            }
            Filter::Ipset => {
                let set = "fwd_bench";
                // -exist: the rule set may name a (network, port) twice; the set is the union.
                restore(
                    gw,
                    "ipset",
                    &["-exist", "restore"],
                    &s.rules.ipset_restore(set),
                    &self.dir.join("ipset.restore"),
                )?;
                restore(
                    gw,
                    "iptables-restore",
                    &[],
                    &s.rules.iptables_restore(GATEWAY_LAN_IF, Some(set)),
                    &self.dir.join("iptables.restore"),
                )?;
            }
            Filter::Chain => {
                restore(
                    gw,
                    "iptables-restore",
                    &[],
                    &s.rules.iptables_restore(GATEWAY_LAN_IF, None),
                    &self.dir.join("iptables.restore"),
                )?;
            }
        }
        Ok(())
    }

    fn counters(&self) -> anyhow::Result<Counters> {
        Ok(Counters {
            lan: self.gw_dev.read(GATEWAY_LAN_IF)?,
            client: self.client_dev.read("eth0")?,
            vendor: self.vendor_dev.read("eth0")?,
        })
    }

    fn trafgen(&self, config: &Path, args: &[String], name: &str) -> anyhow::Result<Trafgen> {
        Trafgen::start(
            &self.lab.client,
            config,
            args,
            &self.dir.join(format!("trafgen-{name}.log")),
        )
    }

    /// Waits until trafgen's worker has parsed its file and lan0 takes in its packets
    /// (at least `min` of them); returns the workers.
    fn wait_started(&self, tg: &mut Trafgen, min: u64) -> anyhow::Result<Vec<u32>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut before = None;
        loop {
            let now = self.gw_dev.read(GATEWAY_LAN_IF)?.rx_packets;
            match before {
                None => {
                    if !tg.workers().is_empty() {
                        before = Some(now);
                    }
                }
                Some(b) if now >= b + min => return Ok(tg.workers()),
                Some(_) => {}
            }
            if tg.exited() {
                bail!("trafgen exited before sending:\n{}", tg.log_text());
            }
            if Instant::now() > deadline {
                bail!("no packet reached lan0 within 10 s:\n{}", tg.log_text());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends each packet of the mix once, slowly; the vendor must receive exactly the
    /// allowed ones.
    fn check_verdicts(&mut self, traffic: &Traffic) -> anyhow::Result<Verdicts> {
        let capture = Capture::open(&self.lab.vendor, "eth0")?;
        let before = self.vendor_dev.read("eth0")?;
        let mut tg = self.trafgen(
            &self.mix_cfg,
            &[
                "--num".into(),
                traffic.packets.len().to_string(),
                "--gap".into(),
                CHECK_GAP.into(),
            ],
            "check",
        )?;
        tg.wait(Duration::from_secs(60))?;
        let flows = capture.drain();
        let after = self.vendor_dev.read("eth0")?;
        let v = Verdicts::compare(traffic, &flows);
        self.r.verdicts = v.json();
        self.r.verdicts["vendor_rx_packets"] = json!(after.rx_packets - before.rx_packets);
        Ok(v)
    }

    /// CPU time per packet at `rate` packets per second: trafgen's shaper sends a burst of
    /// `rate` packets each second; the window runs from one idle moment (between bursts)
    /// to another `window` later, so every task's run time is settled when it is read.
    fn cpu_at_load(
        &self,
        config: &Path,
        rate: u64,
        window: Duration,
        machine: &Machine,
        name: &str,
    ) -> anyhow::Result<LoadRun> {
        let num = rate * (window.as_secs() + 5);
        let mut tg = self.trafgen(
            config,
            &[
                "--rate".into(),
                format!("{rate}pps"),
                "--num".into(),
                num.to_string(),
            ],
            name,
        )?;
        // Half a burst in: the worker's start-up (parsing its file) is behind it.
        let workers = self.wait_started(&mut tg, (rate / 2).max(1))?;
        let mut tasks = workers.clone();
        tasks.push(tg.pid());
        let cpus = allowed_cpus(&workers);
        let snapshot = || -> anyhow::Result<CpuSnapshot> {
            let stat = std::fs::read_to_string("/proc/stat")?;
            let (machine_busy_ticks, _) =
                traffic::parse_proc_stat(&stat, "cpu").context("no cpu line in /proc/stat")?;
            let generator_irq_ticks = cpus
                .iter()
                .filter_map(|c| traffic::parse_proc_stat(&stat, &format!("cpu{c}")))
                .map(|(_, irq)| irq)
                .sum();
            Ok(CpuSnapshot {
                generator_ns: tasks.iter().map(|&p| runtime_ns(p)).sum(),
                softirqd_ns: machine.softirqd_ns(&cpus),
                daemon_ns: self.daemon.as_ref().map_or(0, |d| runtime_ns(d.pid())),
                kthreads_ns: kthreads_ns(),
                machine_busy_ticks,
                generator_irq_ticks,
            })
        };
        let (t0, c0, cpu0) = self.idle_snapshot(&mut tg, rate, None, &snapshot)?;
        std::thread::sleep(window);
        // The next burst may start a little late: the window ends after one.
        let after = Some(c0.lan.rx_packets);
        let (t1, c1, cpu1) = self.idle_snapshot(&mut tg, rate, after, &snapshot)?;
        tg.stop();
        let packets = c1.lan.rx_packets - c0.lan.rx_packets;
        if packets == 0 {
            bail!("no packets in the window");
        }
        let drops = c0.drops(&c1);
        let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
        let generator = d(cpu0.generator_ns, cpu1.generator_ns);
        let softirqd = d(cpu0.softirqd_ns, cpu1.softirqd_ns);
        let daemon = d(cpu0.daemon_ns, cpu1.daemon_ns);
        // With interrupt time accounted apart, softirq work is not in the tasks' run time.
        let irq = if machine.irq_time_accounting == Some(true) {
            d(cpu0.generator_irq_ticks, cpu1.generator_irq_ticks) * machine.ns_per_tick
        } else {
            0.0
        };
        let n = packets as f64;
        // The daemon never touches a packet: its CPU time is per second, reported apart.
        let ns_per_packet = (generator + softirqd + irq) / n;
        let seconds = (t1 - t0).as_secs_f64();
        Ok(LoadRun {
            ns_per_packet,
            packets,
            seconds,
            drops,
            daemon_ms_per_s: daemon / 1e6 / seconds,
            detail: json!({
                "packets": packets,
                "seconds": seconds,
                "ns_per_packet": ns_per_packet,
                "generator_ns_per_packet": generator / n,
                "ksoftirqd_ns_per_packet": softirqd / n,
                "daemon_ms_per_s": daemon / 1e6 / seconds,
                "irq_ns_per_packet": irq / n,
                "all_kernel_threads_ns_per_packet": d(cpu0.kthreads_ns, cpu1.kthreads_ns) / n,
                "machine_busy_ns_per_packet":
                    d(cpu0.machine_busy_ticks, cpu1.machine_busy_ticks) * machine.ns_per_tick / n,
                "delivered": c1.vendor.rx_packets - c0.vendor.rx_packets,
                "drops": drops,
                "generator_cpus": cpus,
            }),
        })
    }

    /// Waits for a moment when lan0 has taken in nothing for IDLE_GAP (the generator is
    /// between bursts), with more than `after` packets taken in by then, and reads the
    /// counters and CPU times there. Fails if no such moment comes within 3 s: the
    /// configuration does not sustain the load.
    fn idle_snapshot(
        &self,
        tg: &mut Trafgen,
        rate: u64,
        after: Option<u64>,
        snapshot: &dyn Fn() -> anyhow::Result<CpuSnapshot>,
    ) -> anyhow::Result<(Instant, Counters, CpuSnapshot)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = self.gw_dev.read(GATEWAY_LAN_IF)?.rx_packets;
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(2));
            let now = self.gw_dev.read(GATEWAY_LAN_IF)?.rx_packets;
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= IDLE_GAP && after.is_none_or(|a| now > a) {
                let cpu = snapshot()?;
                let counters = self.counters()?;
                if counters.lan.rx_packets == last {
                    return Ok((Instant::now(), counters, cpu));
                }
                last = counters.lan.rx_packets;
                since = Instant::now();
            }
            if tg.exited() {
                bail!("trafgen exited during the window:\n{}", tg.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "lan0 never went idle: {} does not sustain {rate} pps",
                    self.filter.label()
                );
            }
        }
    }

    /// The rate lan0 takes packets in while trafgen sends as fast as it can, and the share
    /// of its CPU the path had meanwhile (generator + ksoftirqd run time / wall time).
    fn max_rate(
        &self,
        config: &Path,
        window: Duration,
        machine: &Machine,
        name: &str,
    ) -> anyhow::Result<MaxRun> {
        // Bounded: at most a few seconds even if this process dies and cannot stop it.
        let num = 4_000_000 * (window.as_secs() + 2);
        let mut tg = self.trafgen(config, &["--num".into(), num.to_string()], name)?;
        let workers = self.wait_started(&mut tg, 1000)?;
        let cpus = allowed_cpus(&workers);
        let busy = || -> u64 {
            workers.iter().map(|&p| runtime_ns(p)).sum::<u64>() + machine.softirqd_ns(&cpus)
        };
        std::thread::sleep(Duration::from_millis(300));
        let (c0, b0) = (self.counters()?, busy());
        let t0 = Instant::now();
        std::thread::sleep(window);
        let (c1, b1) = (self.counters()?, busy());
        let t1 = Instant::now();
        let still_sending = !tg.exited();
        tg.stop();
        if !still_sending {
            bail!("trafgen ran out of packets during the window: raise --num");
        }
        let taken = (c1.lan.rx_packets - c0.lan.rx_packets) as f64;
        let wall = (t1 - t0).as_secs_f64();
        Ok(MaxRun {
            pps: taken / wall,
            cpu_share: b1.saturating_sub(b0) as f64 / 1e9 / wall / cpus.len().max(1) as f64,
            delivered_share: (c1.vendor.rx_packets - c0.vendor.rx_packets) as f64 / taken.max(1.0),
            drops: c0.drops(&c1),
        })
    }

    /// One round: CPU per packet with the mix and with allowed-only traffic, then the
    /// maximum rate. A failure takes the configuration out of the rounds that follow.
    fn measure_round(&mut self, round: usize, load: &Load, machine: &Machine) -> f64 {
        if self.r.problem.is_some() {
            return f64::NAN;
        }
        if self.filter.flood_only() {
            return self.measure_flood_round(round, load, machine);
        }
        let result = (|| -> anyhow::Result<(LoadRun, LoadRun, LoadRun, LoadRun, MaxRun)> {
            let mix = self.cpu_at_load(&self.mix_cfg, load.rate, load.window, machine, "mix")?;
            let allowed = self.cpu_at_load(
                &self.allowed_cfg,
                load.rate,
                load.window,
                machine,
                "allowed",
            )?;
            let new = self.cpu_at_load(&self.new_cfg, load.rate, load.window, machine, "new")?;
            let flood =
                self.cpu_at_load(&self.flood_cfg, load.rate, load.window, machine, "flood")?;
            let max = self.max_rate(&self.mix_cfg, load.max_window, machine, "max")?;
            Ok((mix, allowed, new, flood, max))
        })();
        match result {
            Ok((mix, allowed, new, flood, max)) => {
                eprintln!(
                    "xtask: datapath round {}: {:<27} {:>7.0} ns/packet (mix), {:>7.0} (allowed), max {:>6.1} kpps; {} + {} packets in {:.1} + {:.1} s{}",
                    round + 1,
                    self.filter.label(),
                    mix.ns_per_packet,
                    allowed.ns_per_packet,
                    max.pps / 1000.0,
                    mix.packets,
                    allowed.packets,
                    mix.seconds,
                    allowed.seconds,
                    if mix.drops + allowed.drops + max.drops > 0 {
                        format!("; DROPS {} / {} / {}", mix.drops, allowed.drops, max.drops)
                    } else {
                        String::new()
                    }
                );
                eprintln!(
                    "xtask: datapath round {}: {:<27} {:>7.0} ns/packet (new flows), {:>7.0} (denied flood)",
                    round + 1,
                    self.filter.label(),
                    new.ns_per_packet,
                    flood.ns_per_packet,
                );
                self.r.cpu_mix.push(mix.ns_per_packet);
                self.r.cpu_allowed.push(allowed.ns_per_packet);
                self.r.cpu_new.push(new.ns_per_packet);
                self.r.cpu_flood.push(flood.ns_per_packet);
                self.r.max_pps.push(max.per_cpu_second());
                self.r.max_wall_pps.push(max.pps);
                self.r.cpu_share.push(max.cpu_share);
                self.r
                    .daemon_ms
                    .push((mix.daemon_ms_per_s + allowed.daemon_ms_per_s) / 2.0);
                self.r.rounds.push(json!({
                    "mix": mix.detail,
                    "allowed": allowed.detail,
                    "new_flows": new.detail,
                    "denied_flood": flood.detail,
                    "max": {
                        "pps_per_cpu_second": max.per_cpu_second(),
                        "pps_wall": max.pps,
                        "sender_cpu_share": max.cpu_share,
                        "delivered_share": max.delivered_share,
                        "drops": max.drops,
                    },
                }));
                mix.ns_per_packet
            }
            Err(err) => self.round_failed(round, &err),
        }
    }

    /// A round of a flood-only reference: CPU per packet of the denied flood.
    fn measure_flood_round(&mut self, round: usize, load: &Load, machine: &Machine) -> f64 {
        match self.cpu_at_load(&self.flood_cfg, load.rate, load.window, machine, "flood") {
            Ok(flood) => {
                eprintln!(
                    "xtask: datapath round {}: {:<27} {:>7.0} ns/packet (denied flood)",
                    round + 1,
                    self.filter.label(),
                    flood.ns_per_packet,
                );
                self.r.cpu_flood.push(flood.ns_per_packet);
                self.r.rounds.push(json!({ "denied_flood": flood.detail }));
                flood.ns_per_packet
            }
            Err(err) => self.round_failed(round, &err),
        }
    }

    fn round_failed(&mut self, round: usize, err: &anyhow::Error) -> f64 {
        eprintln!(
            "xtask: datapath round {}: {} failed: {err:#}",
            round + 1,
            self.filter.label()
        );
        let err = format!("round {}: {err:#}", round + 1);
        self.r.rounds.push(json!({ "error": err }));
        self.r.failed_rounds += 1;
        // One bad round is noise; a second takes the configuration out.
        if self.r.failed_rounds >= 2 {
            self.r.problem = Some(format!("failed in two rounds, last {err}"));
        }
        f64::NAN
    }
}

/// The fixed load and the windows of one size's rounds.
struct Load {
    rate: u64,
    window: Duration,
    max_window: Duration,
}

/// Writes the fwd site config (gateway mode on lan0, enforce, detach on exit) for one
/// configuration; returns its path.
fn write_fwd_config(dir: &Path, size_dir: &Path, pins: &Pins) -> anyhow::Result<PathBuf> {
    let config = dir.join("fwd.toml");
    SiteConfig::new(size_dir.join("policies"))
        .comment("cargo xtask bench (datapath)")
        .action("enforce")
        .pin_dir(&pins.dir)
        .state_dir(dir.join("state"))
        .control_socket(dir.join("control.sock"))
        .on_exit("detach")
        .metrics(METRICS)
        .watch(false)
        .gateway(GATEWAY_LAN_IF)
        .write(&config)?;
    Ok(config)
}

/// Runs a command, failing with its stderr.
pub(crate) fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `program ARGS < text` in `ns` (the text is kept in `file` for reading by hand).
fn restore(
    ns: &Netns,
    program: &str,
    args: &[&str],
    text: &str,
    file: &Path,
) -> anyhow::Result<()> {
    std::fs::write(file, text)?;
    let out = ns
        .command(program)?
        .args(args)
        .stdin(File::open(file)?)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` < {} failed ({}): {}",
            args.join(" "),
            file.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn nft(ns: &Netns, script: &str, file: &Path) -> anyhow::Result<()> {
    restore(ns, "nft", &["-f", "-"], script, file)
}

/// One rule-set size's results.
struct SizeResult {
    prefixes: usize,
    rules: usize,
    ipset_elements: usize,
    /// Elements of the concatenated set (disjoint address ranges x merged port ranges).
    concat_elements: usize,
    /// The fixed load it was measured at.
    rate: Option<u64>,
    gateways: Vec<GatewayResult>,
}

struct GatewayResult {
    filter: Filter,
    r: Results,
}

/// The median of the finite values (NaN if none).
fn med(values: &[f64]) -> f64 {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    median(&v)
}

/// `x` rounded down to two significant digits (a load that reads well).
fn round_down_2(x: f64) -> u64 {
    if !(x.is_finite() && x >= 1.0) {
        return 0;
    }
    let scale = 10f64.powi(x.log10().floor() as i32 - 1);
    ((x / scale).floor() * scale) as u64
}

/// Sets up every configuration of one size, checks their verdicts, probes their maximum
/// rates (the first size's probes fix the load for all sizes), then measures them in
/// interleaved rounds.
fn run_size(
    fwd: &Path,
    dir: &Path,
    prefixes: usize,
    plan: &Plan,
    machine: &Machine,
    load: &mut Option<Load>,
) -> anyhow::Result<SizeResult> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    eprintln!("xtask: datapath: {prefixes} prefixes: generating the rule set and traffic");
    let rules = RuleSet::generate(prefixes, PER_RULE, RULES_SEED);
    rules.write_fwd_policy(&dir.join("policies"))?;
    let mix = Traffic::generate(&rules, CLIENT_V4, PACKETS, ALLOWED_SHARE, MIX_SEED);
    let allowed = Traffic::generate(&rules, CLIENT_V4, PACKETS, 1.0, ALLOWED_SEED);
    let flood = Traffic::denied_flood(&rules, CLIENT_V4, PACKETS, FLOOD_SEED);
    let setup = SizeSetup {
        fwd,
        dir,
        rules: &rules,
        mix: &mix,
        allowed: &allowed,
        flood: &flood,
    };
    let triples = rules.triples().count();
    let mut result = SizeResult {
        prefixes,
        rules: rules.rules.len(),
        ipset_elements: rules
            .rules
            .iter()
            .map(|r| r.nets.len() * usize::from(r.ports.1 - r.ports.0 + 1))
            .sum(),
        concat_elements: rules.concat_elements().len(),
        rate: None,
        gateways: Vec::new(),
    };
    let mut gateways = Vec::new();
    for filter in Filter::ALL {
        if filter == Filter::Chain && triples > CHAIN_MAX_TRIPLES {
            continue;
        }
        match Gateway::create(filter, &setup) {
            Ok(gw) => gateways.push(gw),
            Err(err) => {
                eprintln!(
                    "xtask: datapath: {} could not be set up: {err:#}",
                    filter.label()
                );
                result.gateways.push(GatewayResult {
                    filter,
                    r: Results {
                        problem: Some(format!("not set up: {err:#}")),
                        setup_s: f64::NAN,
                        probe_pps: f64::NAN,
                        ..Results::default()
                    },
                });
            }
        }
    }
    if !gateways.iter().any(|g| g.filter == Filter::None) {
        bail!("the gateway without a filter could not be set up");
    }
    // Verdicts first: a filter that lets denied packets through, or loses allowed ones, is
    // reported broken and not measured; no filter and XDP pass must deliver everything,
    // XDP drop nothing.
    for gw in &mut gateways {
        match gw.check_verdicts(&mix) {
            Ok(v) => {
                let leaked = v.leaked_address + v.leaked_port;
                let ok = if gw.filter.filters() {
                    v.ok()
                } else if gw.filter == Filter::XdpDrop {
                    v.delivered == 0 && v.unknown == 0
                } else {
                    v.missing == 0
                        && v.duplicates == 0
                        && v.unknown == 0
                        && leaked == v.sent - v.allowed
                };
                eprintln!(
                    "xtask: datapath: {} verdicts{}: {}",
                    gw.filter.label(),
                    if ok { "" } else { " BROKEN" },
                    v.summary()
                );
                gw.r.verdicts["as_expected"] = json!(ok);
                if !ok {
                    gw.r.problem = Some(format!("broken: {}", v.summary()));
                }
            }
            Err(err) => gw.r.problem = Some(format!("verdict check failed: {err:#}")),
        }
    }
    for gw in gateways
        .iter_mut()
        .filter(|g| g.r.problem.is_none() && !g.filter.flood_only())
    {
        match gw.max_rate(&gw.mix_cfg.clone(), plan.max_window, machine, "probe") {
            Ok(m) => {
                gw.r.probe_pps = m.pps;
                eprintln!(
                    "xtask: datapath: {} takes in at most {:.1} kpps (probe)",
                    gw.filter.label(),
                    m.pps / 1000.0
                );
            }
            Err(err) => gw.r.problem = Some(format!("rate probe failed: {err:#}")),
        }
    }
    if load.is_none() {
        // Half the slowest configuration's maximum rate, and at most a quarter of no
        // filter's, so every configuration sustains it with room to spare.
        let none_max = gateways
            .iter()
            .find(|g| g.filter == Filter::None && g.r.problem.is_none())
            .map_or(f64::NAN, |g| g.r.probe_pps);
        let slowest = gateways
            .iter()
            .filter(|g| g.r.problem.is_none() && !g.filter.flood_only())
            .map(|g| g.r.probe_pps)
            .fold(f64::INFINITY, f64::min);
        let rate = round_down_2((none_max / 4.0).min(slowest / 2.0));
        if rate < 100 {
            bail!(
                "no usable fixed load (no filter takes in {none_max:.0} pps, the slowest {slowest:.0} pps)"
            );
        }
        *load = Some(Load {
            rate,
            window: plan.window,
            max_window: plan.max_window,
        });
    }
    let load = load.as_ref().context("no load")?;
    result.rate = Some(load.rate);
    eprintln!(
        "xtask: datapath: {prefixes} prefixes: fixed load {} pps; {} rounds",
        load.rate, plan.rounds
    );
    let _ = interleaved(&mut gateways, plan.rounds, |gw, round| {
        Ok::<_, std::convert::Infallible>(gw.measure_round(round, load, machine))
    });
    result
        .gateways
        .extend(gateways.iter().map(|g| GatewayResult {
            filter: g.filter,
            r: g.r.clone(),
        }));
    result
        .gateways
        .sort_by_key(|g| Filter::ALL.iter().position(|f| *f == g.filter));
    Ok(result)
}

fn kpps(pps: f64) -> String {
    if pps.is_finite() {
        format!("{:.1}", pps / 1000.0)
    } else {
        "-".into()
    }
}

fn ns(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "-".into()
    }
}

fn signed(x: f64) -> String {
    if x.is_finite() {
        format!("{x:+.0}")
    } else {
        "-".into()
    }
}

/// `s` on one line, at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > max {
        format!("{}...", line.chars().take(max).collect::<String>())
    } else {
        line
    }
}

/// The medians of one measured configuration.
#[derive(Clone, Copy)]
struct Medians {
    mix: f64,
    allowed: f64,
    new: f64,
    flood: f64,
    max_pps: f64,
}

fn medians(size: &SizeResult, filter: Filter) -> Option<Medians> {
    size.gateways
        .iter()
        .find(|g| g.filter == filter && g.r.problem.is_none() && !g.r.cpu_mix.is_empty())
        .map(|g| Medians {
            mix: med(&g.r.cpu_mix),
            allowed: med(&g.r.cpu_allowed),
            new: med(&g.r.cpu_new),
            flood: med(&g.r.cpu_flood),
            max_pps: med(&g.r.max_pps),
        })
}

/// The median CPU per packet of the denied flood, for every configuration measured on it
/// (the flood-only references too).
fn flood_median(size: &SizeResult, filter: Filter) -> Option<f64> {
    size.gateways
        .iter()
        .find(|g| g.filter == filter && g.r.problem.is_none() && !g.r.cpu_flood.is_empty())
        .map(|g| med(&g.r.cpu_flood))
}

fn sections(sizes: &[SizeResult], plan: &Plan, machine: &Machine, elapsed: f64) -> Vec<Section> {
    let mut main = Section::new(
        "datapath",
        "Datapath: a gateway enforcing one rule set, traffic 3/4 allowed (veth, trafgen)",
    );
    main.columns(&[
        "prefixes / configuration",
        "ns/packet",
        "x no filter",
        "added ns/packet",
        "max kpps",
        "x no filter",
    ]);
    let mut allowed = Section::new(
        "datapath_allowed",
        "Datapath: CPU per packet when every packet is allowed (same gateways and load)",
    );
    allowed.columns(&[
        "prefixes / configuration",
        "ns/packet",
        "x no filter",
        "added ns/packet",
    ]);
    let mut new_flows = Section::new(
        "datapath_new_flows",
        "Datapath: CPU per packet when every packet is the first of a new flow (the mix, a random source port on each)",
    );
    new_flows.columns(&[
        "prefixes / configuration",
        "ns/packet",
        "x no filter",
        "added ns/packet",
    ]);
    let mut flood = Section::new(
        "datapath_flood",
        "Datapath: CPU per packet of a flood of denied packets (each to another address no rule covers)",
    );
    flood.columns(&[
        "prefixes / configuration",
        "ns/packet",
        "x no filter",
        "x nftables (fwd export)",
        "over XDP drop",
        "x nftables' over XDP drop",
    ]);
    let mut problems = Vec::new();
    let mut program_cost = Vec::new();
    let mut data = Vec::new();
    for size in sizes {
        let base = medians(size, Filter::None);
        let floor = flood_median(size, Filter::XdpDrop);
        let nft_flood = flood_median(size, Filter::Nftables);
        // A configuration's flood cost above the floor, and that over nftables'.
        let over_floor = |x: f64| {
            floor.map_or(["-".to_string(), "-".to_string()], |d| {
                [
                    signed(x - d),
                    nft_flood.map_or("-".into(), |n| ratio((x - d) / (n - d))),
                ]
            })
        };
        for g in &size.gateways {
            let label = format!("{} {}", thousands(size.prefixes as u64), g.filter.label());
            if g.filter.flood_only() {
                match (&g.r.problem, flood_median(size, g.filter), base) {
                    (None, Some(x), Some(b)) => {
                        let [over, share] = over_floor(x);
                        flood.row(vec![
                            label,
                            ns(x),
                            ratio(x / b.flood),
                            nft_flood.map_or("-".into(), |n| ratio(x / n)),
                            over,
                            share,
                        ]);
                    }
                    (problem, _, _) => {
                        let problem = problem.as_deref().unwrap_or("not measured");
                        let cell = problem.split(':').next().unwrap_or("not measured");
                        problems.push(format!("{label}: {}", one_line(problem, 300)));
                        let dash = || "-".to_string();
                        flood.row(vec![label, cell.into(), dash(), dash(), dash(), dash()]);
                    }
                }
                continue;
            }
            let added = |x: f64, b: f64| {
                if g.filter == Filter::None {
                    "-".to_string()
                } else {
                    signed(x - b)
                }
            };
            match (&g.r.problem, medians(size, g.filter), base) {
                (None, Some(m), Some(b)) => {
                    main.row(vec![
                        label.clone(),
                        ns(m.mix),
                        ratio(m.mix / b.mix),
                        added(m.mix, b.mix),
                        kpps(m.max_pps),
                        ratio(m.max_pps / b.max_pps),
                    ]);
                    allowed.row(vec![
                        label.clone(),
                        ns(m.allowed),
                        ratio(m.allowed / b.allowed),
                        added(m.allowed, b.allowed),
                    ]);
                    new_flows.row(vec![
                        label.clone(),
                        ns(m.new),
                        ratio(m.new / b.new),
                        added(m.new, b.new),
                    ]);
                    let [over, share] = if g.filter == Filter::None {
                        // No filter forwards the flood: nothing of it is a drop.
                        ["-".to_string(), "-".to_string()]
                    } else {
                        over_floor(m.flood)
                    };
                    flood.row(vec![
                        label,
                        ns(m.flood),
                        ratio(m.flood / b.flood),
                        nft_flood.map_or("-".into(), |n| ratio(m.flood / n)),
                        over,
                        share,
                    ]);
                }
                (problem, _, _) => {
                    let problem = problem.as_deref().unwrap_or("no filter was not measured");
                    let cell = problem.split(':').next().unwrap_or("not measured");
                    problems.push(format!("{label}: {}", one_line(problem, 300)));
                    let dash = || "-".to_string();
                    main.row(vec![
                        label.clone(),
                        cell.into(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                    ]);
                    allowed.row(vec![label.clone(), cell.into(), dash(), dash()]);
                    new_flows.row(vec![label.clone(), cell.into(), dash(), dash()]);
                    flood.row(vec![label, cell.into(), dash(), dash(), dash(), dash()]);
                }
            }
        }
        if let (Some(f), Some(x)) = (medians(size, Filter::Fwd), medians(size, Filter::XdpPass)) {
            program_cost.push(format!(
                "{:+.0} ns/packet at {} prefixes",
                f.allowed - x.allowed,
                thousands(size.prefixes as u64)
            ));
        }
        data.push(json!({
            "prefixes": size.prefixes,
            "rules": size.rules,
            "ipset_elements": size.ipset_elements,
            "concat_elements": size.concat_elements,
            "fixed_load_pps": size.rate,
            "configurations": size.gateways.iter().map(|g| json!({
                "filter": g.filter.id(),
                "label": g.filter.label(),
                "problem": g.r.problem,
                "setup_s": g.r.setup_s,
                "verdicts": g.r.verdicts,
                "probe_max_pps": g.r.probe_pps,
                "cpu_ns_per_packet_mix": g.r.cpu_mix,
                "cpu_ns_per_packet_allowed": g.r.cpu_allowed,
                "cpu_ns_per_packet_new_flows": g.r.cpu_new,
                "cpu_ns_per_packet_denied_flood": g.r.cpu_flood,
                "max_pps_per_cpu_second": g.r.max_pps,
                "max_pps_wall": g.r.max_wall_pps,
                "max_sender_cpu_share": g.r.cpu_share,
                "daemon_cpu_ms_per_s": g.r.daemon_ms,
                "median": {
                    "cpu_ns_per_packet_mix": med(&g.r.cpu_mix),
                    "cpu_ns_per_packet_allowed": med(&g.r.cpu_allowed),
                    "cpu_ns_per_packet_new_flows": med(&g.r.cpu_new),
                    "cpu_ns_per_packet_denied_flood": med(&g.r.cpu_flood),
                    "max_pps_per_cpu_second": med(&g.r.max_pps),
                    "max_pps_wall": med(&g.r.max_wall_pps),
                    "max_sender_cpu_share": med(&g.r.cpu_share),
                    "daemon_cpu_ms_per_s": med(&g.r.daemon_ms),
                },
                "failed_rounds": g.r.failed_rounds,
                "rounds": g.r.rounds,
            })).collect::<Vec<_>>(),
        }));
    }
    let rate = sizes.iter().find_map(|s| s.rate);
    let rules_line = sizes
        .iter()
        .map(|s| {
            format!(
                "{} prefixes in {} rules ({} ipset elements, {} concatenated-set elements)",
                thousands(s.prefixes as u64),
                s.rules,
                thousands(s.ipset_elements as u64),
                thousands(s.concat_elements as u64)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let all = |f: fn(&Results) -> &Vec<f64>| -> Vec<f64> {
        sizes
            .iter()
            .flat_map(|s| &s.gateways)
            .flat_map(|g| f(&g.r).iter().copied())
            .collect()
    };
    let shares = all(|r| &r.cpu_share);
    let daemon: Vec<f64> = sizes
        .iter()
        .flat_map(|s| &s.gateways)
        .filter(|g| g.filter == Filter::Fwd)
        .flat_map(|g| g.r.daemon_ms.iter().copied())
        .collect();
    let denied = PACKETS - (PACKETS as f64 * ALLOWED_SHARE) as usize;
    let accounting = match machine.irq_time_accounting {
        Some(true) => {
            "accounts interrupt time apart (CONFIG_IRQ_TIME_ACCOUNTING), so the sending CPU's irq and softirq time from /proc/stat is added"
        }
        Some(false) => {
            "has no interrupt time accounting (CONFIG_IRQ_TIME_ACCOUNTING off), so softirq time is part of the task it ran in"
        }
        None => {
            "config is not readable; it is assumed to have no interrupt time accounting (softirq time part of the task it ran in)"
        }
    };
    let notes = vec![
        "Lab: client (trafgen) -veth-> gateway (lan0 ... wan0, forwarding) -veth-> vendor (sink). Every configuration has its own three namespaces, set up once per size; only the gateway differs. The sink counts what arrives and drops it in its ingress hook (nft netdev, `meta protocol ip drop`), so the path ends at the vendor's interface.".to_string(),
        format!(
            "Rule set: one IPv4 rule set rendered for each firewall (port ranges of at most 8 ports): {rules_line}. nftables (fwd export) = `fwd export nftables` of fwd's policy; nftables (concatenated set) = one table `{CONCAT_TABLE}` with a single `ipv4_addr . inet_proto . inet_service` interval set matched by `ip daddr . meta l4proto . th dport` (conntrack first, drop last, like the others): nftables refuses overlapping elements in such a set, so the address axis is flattened into disjoint pieces, each with its merged port ranges per protocol (`RuleSet::concat_elements`), what a user writing the set by hand has to do; ipset = hash:net,port + one iptables rule; chain = one iptables rule per (network, protocol, ports), only up to {} triples. iptables is the iptables-nft backend (its rules are nf_tables rules, evaluated one after another). XDP pass is a reference, not a filter: a two-instruction XDP program that passes everything, attached like fwd's.",
            thousands(CHAIN_MAX_TRIPLES as u64)
        ),
        format!(
            "Traffic: {PACKETS} distinct 62-byte frames (IPv4 UDP datagrams and TCP SYNs, correct checksums, each its own flow), {} allowed, {} denied by address, {} denied by port, shuffled; trafgen (AF_PACKET) sends them round robin from one CPU. The second table uses another {PACKETS} frames, all allowed.",
            PACKETS - denied,
            denied / 2,
            denied - denied / 2
        ),
        format!(
            "Verdicts (before measuring): the mix is sent once ({CHECK_GAP} between packets) and a packet socket on the vendor's interface must see exactly the allowed packets and no denied one (no filter and XDP pass: every packet); a configuration that fails is reported broken and not measured."
        ),
        format!(
            "CPU per packet, at a fixed offered load of {} pps for every size and configuration: half the slowest configuration's maximum rate and at most a quarter of no filter's, probed at the start, so every configuration sustains it (a configuration that did not would never go idle and fail; drops on lan0 and the client's interface are in the JSON). trafgen's shaper sends each second's packets as one burst; a window of about {:.0} s runs from one idle moment of lan0 (no packet for {} ms) to another.",
            rate.map_or("-".into(), |r| r.to_string()),
            plan.window.as_secs_f64(),
            IDLE_GAP.as_millis()
        ),
        format!(
            "CPU accounting: ns/packet = (run time of trafgen's processes + the ksoftirqd of their CPU) / packets lan0 took in, from the scheduler's exact per-thread run time (/proc/PID/task/TID/schedstat, read while they sleep between bursts). The whole path (the gateway's filtering and forwarding, the sink) runs in softirq on the sending CPU, on return from trafgen's send or, when deferred, in ksoftirqd; this kernel {accounting}. The tasks are read rather than /proc/stat because the machine is shared: other work would count. The machine's busy time and every kernel thread's time per packet are in the JSON beside each figure, not in it (on a shared machine they are mostly others' work, e.g. conntrack's garbage collection is in a kworker). ns/packet includes trafgen's own send, the same for every configuration: the ratios are of the whole path; added ns/packet (configuration minus no filter) is the configuration's own cost."
        ),
        format!(
            "fwd's daemon never touches a packet and is not in ns/packet: it used a median {:.2} ms of CPU per second during the windows (JSON: daemon_cpu_ms_per_s).",
            med(&daemon)
        ),
        format!(
            "Max rate (the 3/4-allowed mix): trafgen as fast as it can (TX ring, one CPU) for {:.1} s after a warm-up. The gateway's and the sink's work runs in trafgen's sends on that same CPU, so the CPU is the bottleneck: max kpps = frames lan0 took in (allowed and denied alike) per second of that CPU's time spent on the path (trafgen + its ksoftirqd, from schedstat), i.e. the rate generator + gateway + sink sustain on one CPU of their own. It equals the wall-clock rate when nothing else runs on that CPU; here the path had a median {:.0}% of it (lowest {:.0}%), and the wall-clock rates are in the JSON (max_pps_wall).",
            plan.max_window.as_secs_f64(),
            med(&shares) * 100.0,
            shares.iter().copied().fold(f64::INFINITY, f64::min) * 100.0
        ),
        "Denied packets: a filter drops the 1/4 of the mix that no filter forwards (fwd in XDP before the stack, netfilter at the forward hook after routing), so the mix's added ns/packet is net of that saving; the second table, where every configuration forwards every packet, shows the cost without it.".to_string(),
        "State: the iptables and nftables configurations track connections (conntrack; every flow here is unreplied, so each packet is NEW and goes through the rule lookup, and a dropped packet's unconfirmed entry is freed); fwd records allowed flows in its own flow table (an LRU hash). All do the same stateful job for return traffic; the no-filter gateway runs without conntrack.".to_string(),
        format!(
            "XDP on veth: attaching XDP to lan0 switches the veth pair to NAPI mode (the client's transmit goes into a ring polled by lan0's NAPI, with GRO, instead of the per-CPU backlog), and the program runs on an skb turned into an xdp_buff (copied when its headroom is short): costs of veth that a NIC's driver-mode XDP does not have. The XDP pass row measures them; fwd minus XDP pass is fwd's own program: {}.",
            if program_cost.is_empty() {
                "not measured".to_string()
            } else {
                format!("{} (every packet allowed)", program_cost.join(", "))
            }
        ),
        format!(
            "Rounds: configurations interleaved (A B C ... per round), {} rounds, medians; the section ran {elapsed:.0} s.",
            plan.rounds
        ),
    ];
    for n in notes {
        main.note(n);
    }
    for p in &problems {
        main.note(format!("Not measured: {p}"));
    }
    allowed.note(format!(
        "The gateways, load and accounting of `datapath`, with {PACKETS} frames that every rule set allows: every configuration forwards every packet, so added ns/packet is what classifying and tracking a packet that is let through costs."
    ));
    goals(&mut main, sizes);
    main.data = json!({
        "sizes": data,
        "rounds": plan.rounds,
        "window_s": plan.window.as_secs_f64(),
        "max_window_s": plan.max_window.as_secs_f64(),
        "fixed_load_pps": rate,
        "packets_per_file": PACKETS,
        "allowed_share": ALLOWED_SHARE,
        "irq_time_accounting": machine.irq_time_accounting,
        "elapsed_s": elapsed,
    });
    allowed.data = json!({ "see": "datapath (cpu_ns_per_packet_allowed)" });
    new_flows.note(format!(
        "The gateways, load and accounting of `datapath`, with the mix's {PACKETS} frames sent with a random source port each (trafgen's drnd, the transport checksum recomputed by trafgen): nearly every packet is the first of its flow, so fwd judges it by the policy tables and records the flow, and conntrack creates an entry for the filters that use it. The first table's mix repeats its {PACKETS} flows, which fwd's flow cache answers after their first packet."
    ));
    new_flows.data = json!({ "see": "datapath (cpu_ns_per_packet_new_flows)" });
    flood.note(format!(
        "The gateways, load and accounting of `datapath`, with {PACKETS} frames each to another address that no rule covers: every filter drops every packet (fwd in XDP before routing and conntrack, the netfilter ones at the forward hook); no filter forwards them all. x nftables: the configuration's CPU per packet over nftables' (the fwd export). XDP drop (reference): a program that drops every packet on lan0, measured on the flood alone, the floor under any drop on this path (trafgen's send, veth, its XDP mode); over XDP drop: what the configuration costs above that floor, and that over nftables' cost above it."
    ));
    flood.data = json!({ "see": "datapath (cpu_ns_per_packet_denied_flood)" });
    flow_goals(&mut main, sizes);
    vec![main, allowed, new_flows, flood]
}

fn goals(main: &mut Section, sizes: &[SizeResult]) {
    // The largest size measured: 100,000 prefixes in full mode, 10,000 in quick mode.
    let largest = sizes.iter().max_by_key(|s| s.prefixes);
    let at = |filter: Filter| largest.and_then(|s| medians(s, filter));
    let (fwd, none, pass) = (at(Filter::Fwd), at(Filter::None), at(Filter::XdpPass));
    let n = largest.map_or(0, |s| s.prefixes);
    let prefixes = thousands(n as u64);
    let text = format!(
        "fwd CPU per packet within 10% of no filter ({prefixes} prefixes, every packet allowed)"
    );
    match (fwd, none) {
        (Some(f), Some(b)) => main.goals.push(Goal::new(
            text,
            format!(
                "{} (3/4-allowed mix: {}; XDP pass alone: {})",
                ratio(f.allowed / b.allowed),
                ratio(f.mix / b.mix),
                pass.map_or("-".into(), |p| ratio(p.allowed / b.allowed))
            ),
            Some(f.allowed / b.allowed <= 1.10),
        )),
        _ => main.goals.push(Goal::new(text, "not measured", None)),
    }
    let added = |x: Option<Medians>| x.zip(none).map(|(x, b)| x.allowed - b.allowed);
    let fwd_added = added(fwd);
    // fwd against the cheaper of the two nftables configurations.
    let nft = cheaper_nftables(|f| added(at(f)));
    let text = "fwd's added cost at 100,000 prefixes <= half of nftables' (the cheaper nftables configuration; every packet allowed)";
    match (n >= 100_000, fwd_added, nft) {
        (true, Some(f), Some((filter, t, other))) => main.goals.push(Goal::new(
            text,
            format!(
                "{f:+.0} vs {t:+.0} ns/packet ({}{})",
                filter.label(),
                nft_other(filter, other)
            ),
            Some(f <= t / 2.0),
        )),
        _ => main.goals.push(Goal::new(text, "not measured", None)),
    }
    let chain = sizes
        .iter()
        .find(|s| s.prefixes == CHAIN_MAX_TRIPLES)
        .and_then(|s| {
            let b = medians(s, Filter::None)?;
            medians(s, Filter::Chain).map(|c| c.allowed - b.allowed)
        });
    let text = format!(
        "fwd's added cost <= 1/20 of a 10,000-rule iptables chain (fwd at {prefixes} prefixes vs the chain at 10,000; every packet allowed)"
    );
    match (fwd_added, chain) {
        (Some(f), Some(c)) => main.goals.push(Goal::new(
            text,
            format!("{f:+.0} vs {c:+.0} ns/packet"),
            Some(f <= c / 20.0),
        )),
        _ => main.goals.push(Goal::new(text, "not measured", None)),
    }
}

/// Of the nftables configurations measured, the one with the lower added cost: (it, its
/// added ns/packet, the other one's, if measured).
/// The new-flows and denied-flood goals at the largest size measured.
fn flow_goals(main: &mut Section, sizes: &[SizeResult]) {
    let largest = sizes.iter().max_by_key(|s| s.prefixes);
    let at = |filter: Filter| largest.and_then(|s| medians(s, filter));
    let prefixes = thousands(largest.map_or(0, |s| s.prefixes) as u64);
    let none = at(Filter::None);
    let added = |x: Option<Medians>| x.zip(none).map(|(x, b)| x.new - b.new);
    let text = format!(
        "fwd's added cost on new flows <= half of nftables' (fwd export) and below ipset's ({prefixes} prefixes, a new source port per packet)"
    );
    match (
        added(at(Filter::Fwd)),
        added(at(Filter::Nftables)),
        added(at(Filter::Ipset)),
    ) {
        (Some(f), Some(n), Some(i)) => main.goals.push(Goal::new(
            text,
            format!("{f:+.0} vs nftables {n:+.0}, ipset {i:+.0} ns/packet"),
            Some(f <= n / 2.0 && f < i),
        )),
        _ => main.goals.push(Goal::new(text, "not measured", None)),
    }
    let text = format!(
        "denied flood: fwd's CPU per packet <= 0.3x nftables' (fwd export) ({prefixes} prefixes)"
    );
    let floor = largest.and_then(|s| flood_median(s, Filter::XdpDrop));
    match (at(Filter::Fwd), at(Filter::Nftables), at(Filter::Ipset)) {
        (Some(f), Some(n), i) => main.goals.push(Goal::new(
            text,
            format!(
                "{} ({} vs {} ns/packet; ipset {}){}",
                ratio(f.flood / n.flood),
                ns(f.flood),
                ns(n.flood),
                i.map_or("-".into(), |i| ns(i.flood)),
                floor.map_or(String::new(), |d| format!(
                    "; above an XDP drop-everything floor of {}: {} vs {} ({})",
                    ns(d),
                    signed(f.flood - d),
                    signed(n.flood - d),
                    ratio((f.flood - d) / (n.flood - d))
                ))
            ),
            Some(f.flood <= 0.3 * n.flood),
        )),
        _ => main.goals.push(Goal::new(text, "not measured", None)),
    }
}

fn cheaper_nftables(added: impl Fn(Filter) -> Option<f64>) -> Option<(Filter, f64, Option<f64>)> {
    let (export, concat) = (added(Filter::Nftables), added(Filter::NftConcat));
    match (export, concat) {
        (Some(e), Some(c)) if c < e => Some((Filter::NftConcat, c, Some(e))),
        (Some(e), c) => Some((Filter::Nftables, e, c)),
        (None, Some(c)) => Some((Filter::NftConcat, c, None)),
        (None, None) => None,
    }
}

/// What the figure text adds after the chosen nftables configuration's name: the other
/// one's added cost.
fn nft_other(chosen: Filter, other: Option<f64>) -> String {
    let name = if chosen == Filter::Nftables {
        Filter::NftConcat.label()
    } else {
        Filter::Nftables.label()
    };
    match other {
        Some(o) => format!(", the cheaper; {name}: {o:+.0}"),
        None => format!("; {name} not measured"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_read_well() {
        assert_eq!(round_down_2(123_456.0), 120_000);
        assert_eq!(round_down_2(2_987.0), 2_900);
        assert_eq!(round_down_2(99.9), 99);
        assert_eq!(round_down_2(f64::NAN), 0);
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        assert!(med(&[f64::NAN, 3.0, 1.0]) == 2.0);
    }

    #[test]
    fn fwd_is_compared_with_the_cheaper_nftables() {
        let pick = |e: Option<f64>, c: Option<f64>| {
            cheaper_nftables(|f| match f {
                Filter::Nftables => e,
                Filter::NftConcat => c,
                _ => None,
            })
        };
        assert_eq!(
            pick(Some(90.0), Some(60.0)),
            Some((Filter::NftConcat, 60.0, Some(90.0)))
        );
        assert_eq!(
            pick(Some(50.0), Some(60.0)),
            Some((Filter::Nftables, 50.0, Some(60.0)))
        );
        assert_eq!(
            pick(None, Some(60.0)),
            Some((Filter::NftConcat, 60.0, None))
        );
        assert_eq!(pick(Some(50.0), None), Some((Filter::Nftables, 50.0, None)));
        assert_eq!(pick(None, None), None);
        assert_eq!(
            nft_other(Filter::NftConcat, Some(90.0)),
            ", the cheaper; nftables (fwd export): +90"
        );
    }

    /// Results of one configuration: every round the same figures.
    fn measured(filter: Filter, mix: f64, flood: f64) -> GatewayResult {
        let rounds = |x: f64| vec![x; 3];
        let flood_only = filter.flood_only();
        GatewayResult {
            filter,
            r: Results {
                cpu_mix: if flood_only { Vec::new() } else { rounds(mix) },
                cpu_allowed: if flood_only { Vec::new() } else { rounds(mix) },
                cpu_new: if flood_only { Vec::new() } else { rounds(mix) },
                cpu_flood: rounds(flood),
                max_pps: if flood_only { Vec::new() } else { rounds(1e5) },
                ..Results::default()
            },
        }
    }

    #[test]
    fn the_flood_is_shown_above_the_xdp_drop_floor() {
        let size = SizeResult {
            prefixes: 100_000,
            rules: 1000,
            ipset_elements: 0,
            concat_elements: 0,
            rate: Some(1000),
            gateways: vec![
                measured(Filter::None, 3000.0, 3500.0),
                measured(Filter::XdpDrop, 0.0, 2500.0),
                measured(Filter::Fwd, 4000.0, 2800.0),
                measured(Filter::Nftables, 6000.0, 5000.0),
            ],
        };
        let machine = Machine {
            irq_time_accounting: Some(false),
            ksoftirqd: Vec::new(),
            ns_per_tick: 1e7,
        };
        let sections = sections(&[size], &Plan::new(true), &machine, 1.0);
        let flood = sections.iter().find(|s| s.id == "datapath_flood").unwrap();
        let row = |label: &str| {
            flood
                .rows
                .iter()
                .find(|r| r[0] == format!("100,000 {label}"))
                .unwrap_or_else(|| panic!("no {label} row in {:?}", flood.rows))
                .clone()
        };
        // fwd: 300 above the floor, nftables 2,500: 0.12x.
        assert_eq!(row("fwd (XDP)")[4], "+300");
        assert_eq!(row("fwd (XDP)")[5], "0.12x");
        assert_eq!(row("nftables (fwd export)")[5], "1.00x");
        assert_eq!(row("XDP drop (reference)")[1], "2500");
        assert_eq!(row("no filter")[4], "-");
        // The reference is measured on the flood only: no row of its own elsewhere.
        let main = sections.iter().find(|s| s.id == "datapath").unwrap();
        assert!(!main.rows.iter().any(|r| r[0].contains("XDP drop")));
        let goal = main
            .goals
            .iter()
            .find(|g| g.text.starts_with("denied flood"))
            .unwrap();
        assert_eq!(goal.met, Some(false));
        assert!(
            goal.figure.contains("floor of 2500: +300 vs +2500 (0.12x)"),
            "{}",
            goal.figure
        );
    }

    #[test]
    fn verdicts_compare_what_arrived_with_what_was_meant() {
        let set = RuleSet::generate(200, 20, 1);
        let t = Traffic::generate(&set, CLIENT_V4, 100, 0.75, 2);
        let allowed: Vec<Flow> = t
            .packets
            .iter()
            .filter(|p| p.expect == Expect::Allowed)
            .map(|p| p.flow)
            .collect();
        assert!(Verdicts::compare(&t, &allowed).ok());
        let mut wrong = allowed[1..].to_vec();
        wrong.push(allowed[2]);
        let leaked = t.packets.iter().find(|p| p.expect == Expect::DeniedPort);
        wrong.push(leaked.unwrap().flow);
        let v = Verdicts::compare(&t, &wrong);
        assert!(!v.ok());
        assert_eq!((v.missing, v.duplicates, v.leaked_port), (1, 1, 1));
    }

    /// The whole section on this machine (root, trafgen, a release fwd):
    /// `cargo test -p xtask --release datapath -- --ignored --nocapture`, full mode with
    /// DATAPATH_FULL=1.
    #[test]
    #[ignore = "needs root, trafgen, nft, ipset, iptables and target/release/fwd; minutes"]
    fn datapath() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        crate::bench::clean_stale_daemons();
        let quick = std::env::var_os("DATAPATH_FULL").is_none();
        let sections = datapath_bench(root, &root.join("target/release/fwd"), quick).unwrap();
        let text =
            crate::bench::report::write(&root.join("target/bench/datapath-only"), &[], &sections)
                .unwrap();
        println!("{text}");
    }
}
