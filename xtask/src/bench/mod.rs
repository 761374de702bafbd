//! `cargo xtask bench`: measurements printed side by side in one run (never test assertions).

pub mod datapath;
pub mod dns;
pub mod program;
pub mod reload;
pub mod report;
pub mod rules;
pub mod traffic;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bench::report::{Goal, Section, median},
    bench::rules::Rng,
};

/// Writes `rules` rules with `prefixes` prefixes in all, 3/4 IPv4 and 1/4 IPv6, with a
/// realistic mix of prefix lengths, into `files` vendor files under `dir`.
/// Each rule has one or two port ranges (10,000-60,000-style spans and single ports).
pub fn write_policy(dir: &Path, files: usize, rules: usize, prefixes: usize) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng(0x5eed_f00d_dead_beef);
    let per_rule = prefixes / rules;
    let rules_per_file = rules / files;
    for f in 0..files {
        let mut text = format!("[vendor]\nid = \"bench{f}\"\nname = \"Bench {f}\"\n");
        for r in 0..rules_per_file {
            let lo = 1 + rng.below(60000) as u16;
            let hi = lo.saturating_add(rng.below(4000) as u16);
            let protocol = if rng.below(2) == 0 { "tcp" } else { "udp" };
            let _ = write!(
                text,
                "\n[[rule]]\nid = \"r{r}\"\nservice = \"s\"\nprotocol = \"{protocol}\"\nports = [\"{lo}-{hi}\", {}]\nremote = [\n",
                1 + rng.below(1024)
            );
            // Each rule owns an address block, as a vendor's list does; blocks of different
            // rules collide now and then, so some prefixes nest across rules.
            let block4 = (rng.next() as u32) & 0xffff_0000;
            let block6 = (0x2001_0db8u128 << 96) | (u128::from(rng.below(1 << 16) as u16) << 80);
            for _ in 0..per_rule {
                if rng.below(4) == 0 {
                    let len = [48, 56, 64, 64, 96, 128][rng.below(6) as usize];
                    let addr = block6 | (u128::from(rng.next()) << 16);
                    let masked = addr >> (128 - len) << (128 - len);
                    let _ = writeln!(text, "  \"{}/{len}\",", std::net::Ipv6Addr::from(masked));
                } else {
                    let len = [20, 22, 24, 24, 26, 28, 32, 32, 32][rng.below(9) as usize];
                    let a = block4 | (rng.next() as u32 & 0xffff);
                    let masked = if len == 32 {
                        a
                    } else {
                        a >> (32 - len) << (32 - len)
                    };
                    let _ = writeln!(text, "  \"{}/{len}\",", std::net::Ipv4Addr::from(masked));
                }
            }
            text.push_str("]\n");
        }
        std::fs::write(dir.join(format!("bench{f}.toml")), text)?;
    }
    Ok(())
}

/// Runs `cmd`, returning wall time and peak resident memory (from wait4's rusage).
fn measure(cmd: &mut Command) -> anyhow::Result<(Duration, u64)> {
    use std::os::unix::process::ExitStatusExt as _;
    let started = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; the pid is our child's.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = started.elapsed();
    if pid < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let exit = std::process::ExitStatus::from_raw(status);
    if !exit.success() {
        bail!("{cmd:?} failed: {exit}");
    }
    Ok((elapsed, usage.ru_maxrss as u64 * 1024))
}

pub fn compile_bench(root: &Path, fwd_release: &Path, quick: bool) -> anyhow::Result<Section> {
    let (prefixes, rules) = if quick {
        (100_000, 1_000)
    } else {
        (1_000_000, 10_000)
    };
    let dir: PathBuf = root.join("target/bench/policy-1m");
    eprintln!("xtask: generating {prefixes} prefixes in {rules} port-range rules");
    write_policy(&dir, 10, rules, prefixes)?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(measure(
            Command::new(fwd_release)
                .args(["check", "--policies"])
                .arg(&dir),
        )?);
    }
    let times: Vec<f64> = runs.iter().map(|r| r.0.as_secs_f64()).collect();
    let peak = runs.iter().map(|r| r.1).max().unwrap_or(0);
    let time = median(&times);
    let mut section = Section::new("compile", "Compile: `fwd check` on a large policy");
    section
        .note(format!(
            "{prefixes} prefixes (3/4 IPv4, 1/4 IPv6, mixed lengths) in {rules} rules with wide port ranges; 3 runs"
        ))
        .columns(&["prefixes", "time (median)", "peak RSS"])
        .row(vec![
            prefixes.to_string(),
            format!("{time:.2} s"),
            format!("{:.0} MiB", mib(peak)),
        ]);
    section.goals.push(Goal::new(
        format!("fwd check on {prefixes} prefixes in at most 2 s"),
        format!("{time:.2} s"),
        Some(time <= 2.0),
    ));
    section.goals.push(Goal::new(
        format!("fwd check on {prefixes} prefixes in at most 1 GiB"),
        format!("{:.0} MiB", mib(peak)),
        Some(peak <= 1 << 30),
    ));
    section.data = serde_json::json!({
        "prefixes": prefixes, "rules": rules, "seconds": times, "peak_rss_bytes": peak,
    });
    Ok(section)
}

/// Network namespaces and pin directories of bench daemons are named after xtask's pid.
pub(crate) const BENCH_PREFIX: &str = "fwd-bench-";

/// How long a daemon may take to answer `fwd status` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a daemon may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

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

/// Removes the namespaces and pin directories of bench runs whose xtask is gone (killed
/// before its guard could clean up).
pub fn clean_stale_daemons() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let mut stale: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    if let Ok(pins) = std::fs::read_dir("/sys/fs/bpf") {
        stale.extend(
            pins.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned()),
        );
    }
    stale.retain(|name| {
        // fwd-bench-PID, or fwd-bench-PID-ROLE for the lab's namespaces.
        name.strip_prefix(BENCH_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    stale.sort();
    stale.dedup();
    for name in stale {
        eprintln!("xtask: removing {name}, left by an earlier bench run");
        let _ = ip(&["netns", "delete", &name]);
        let _ = std::fs::remove_dir_all(Path::new("/sys/fs/bpf").join(&name));
    }
}

/// `fwd export nftables --config CONFIG --policies POLICIES`: the nft script it prints.
pub(crate) fn export_nftables(
    fwd: &Path,
    config: &Path,
    policies: &Path,
) -> anyhow::Result<String> {
    let out = Command::new(fwd)
        .args(["export", "nftables", "--config"])
        .arg(config)
        .arg("--policies")
        .arg(policies)
        .stdin(Stdio::null())
        .output()
        .context("running fwd export nftables")?;
    if !out.status.success() {
        bail!(
            "`fwd export nftables` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout).context("fwd export nftables printed non-UTF-8")
}

/// Moves the calling thread into the network namespace `netns`.
pub(crate) fn enter_netns(netns: &std::fs::File) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid namespace fd; only the calling thread changes namespace.
    if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes `cmd` start in the network namespace `netns` (only the network namespace changes,
/// not the mount namespace, so /sys/fs/bpf stays the host's).
pub(crate) fn command_in_netns(cmd: &mut Command, netns: std::fs::File) {
    // SAFETY: setns is async-signal-safe; the closure calls it and reads errno.
    unsafe {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        cmd.pre_exec(move || {
            if libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A free TCP port on the loopback of the network namespace at `netns_path`.
fn free_port_in(netns_path: &str) -> anyhow::Result<u16> {
    let file = std::fs::File::open(netns_path).with_context(|| format!("opening {netns_path}"))?;
    std::thread::spawn(move || -> anyhow::Result<u16> {
        enter_netns(&file)?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        Ok(listener.local_addr()?.port())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in the namespace panicked"))?
}

/// `fwd run` in a scratch network namespace with one `dummy` interface (`d0`, host mode; a
/// veth pair where the kernel has no dummy driver),
/// its own pin directory, state directory, control socket and metrics port. Dropping it
/// stops the daemon (SIGTERM, then SIGKILL), removes the pin directory and the namespace.
pub(crate) struct BenchDaemon {
    fwd: PathBuf,
    netns: String,
    pin_dir: PathBuf,
    config: PathBuf,
    log: PathBuf,
    metrics_port: u16,
    child: Option<Child>,
}

impl BenchDaemon {
    fn start(fwd: &Path, scratch: &Path, policy_dir: &Path) -> anyhow::Result<BenchDaemon> {
        Self::start_with(fwd, scratch, policy_dir, "")
    }

    /// `start`, with `extra` (more TOML sections, e.g. `[dns]`) at the end of the config.
    pub(crate) fn start_with(
        fwd: &Path,
        scratch: &Path,
        policy_dir: &Path,
        extra: &str,
    ) -> anyhow::Result<BenchDaemon> {
        let name = format!("{BENCH_PREFIX}{}", std::process::id());
        let _ = std::fs::remove_dir_all(scratch);
        std::fs::create_dir_all(scratch)?;
        // The guard exists before anything it removes, so a failure halfway cleans up.
        let mut daemon = BenchDaemon {
            fwd: fwd.to_path_buf(),
            netns: name.clone(),
            pin_dir: PathBuf::from("/sys/fs/bpf").join(&name),
            config: scratch.join("fwd.toml"),
            log: scratch.join("daemon.log"),
            metrics_port: 0,
            child: None,
        };
        let _ = ip(&["netns", "delete", &name]);
        ip(&["netns", "add", &name])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        // A dummy interface; on a kernel without CONFIG_DUMMY, one end of a veth pair whose
        // other end stays in the same namespace.
        if let Err(err) = ip(&["-n", &name, "link", "add", "d0", "type", "dummy"]) {
            eprintln!("xtask: no dummy interface ({err:#}); using a veth pair d0/d0p instead");
            ip(&[
                "-n", &name, "link", "add", "d0", "type", "veth", "peer", "name", "d0p",
            ])?;
            ip(&["-n", &name, "link", "set", "d0p", "up"])?;
        }
        ip(&["-n", &name, "link", "set", "d0", "up"])?;
        let netns_path = format!("/run/netns/{name}");
        let port = free_port_in(&netns_path)?;
        daemon.metrics_port = port;
        fwd_lab::SiteConfig::new(policy_dir)
            .comment(&format!(
                "cargo xtask bench: a daemon in the scratch network namespace {name}"
            ))
            .action("enforce")
            .pin_dir(&daemon.pin_dir)
            .state_dir(scratch.join("state"))
            .control_socket(scratch.join("control.sock"))
            .on_exit("detach")
            .metrics(format!("127.0.0.1:{port}"))
            .watch(false)
            .host("d0")
            .tables(extra)
            .write(&daemon.config)?;

        let log = std::fs::File::create(&daemon.log)?;
        let netns =
            std::fs::File::open(&netns_path).with_context(|| format!("opening {netns_path}"))?;
        let mut cmd = Command::new(fwd);
        cmd.arg("run")
            .arg("--config")
            .arg(&daemon.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        command_in_netns(&mut cmd, netns);
        eprintln!(
            "xtask: starting fwd run in the network namespace {name} (log: {})",
            daemon.log.display()
        );
        daemon.child = Some(cmd.spawn().with_context(|| format!("starting {cmd:?}"))?);
        Ok(daemon)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The network namespace it runs in, `/run/netns/NAME`.
    pub(crate) fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    /// Its metrics port on 127.0.0.1 in that namespace.
    pub(crate) fn metrics_port(&self) -> u16 {
        self.metrics_port
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `fwd CMD --config CONFIG ARGS...`, captured.
    fn fwd(&self, command: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        Command::new(&self.fwd)
            .arg(command)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running fwd {command}"))
    }

    /// Polls `fwd status --json` until the daemon answers; returns how long that took and
    /// the answer. Fails with the daemon's log if it exits or does not answer in time.
    pub(crate) fn wait_ready(&mut self) -> anyhow::Result<(Duration, serde_json::Value)> {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                bail!(
                    "fwd run exited ({status}) before it was ready; its log:\n{}",
                    self.log_text()
                );
            }
            let out = self.fwd("status", &["--json"])?;
            if out.status.success() {
                let status = serde_json::from_slice(&out.stdout)
                    .context("parsing the output of fwd status --json")?;
                return Ok((started.elapsed(), status));
            }
            let last = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "fwd run did not answer `fwd status` within {} s (last: {last}); its log:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// VmRSS and VmHWM of the daemon, in bytes.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("no {name} in {path}"))?;
            let kib: u64 = line
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("{name}{line} in {path}"))?;
            Ok(kib * 1024)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() {
                            eprintln!(
                                "xtask: fwd run stopped with {status}; its log: {}",
                                self.log.display()
                            );
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        eprintln!(
                            "xtask: fwd run did not stop within {} s of SIGTERM; killing it",
                            STOP_TIMEOUT.as_secs()
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if self.pin_dir.exists()
            && let Err(err) = std::fs::remove_dir_all(&self.pin_dir)
        {
            eprintln!("xtask: removing {}: {err}", self.pin_dir.display());
        }
        if let Err(err) = ip(&["netns", "delete", &self.netns]) {
            eprintln!("xtask: {err:#}");
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The daemon's resident memory, idle, with the bundled policies.
pub fn memory_bench(root: &Path, fwd_release: &Path) -> anyhow::Result<Section> {
    let mut daemon = BenchDaemon::start(
        fwd_release,
        &root.join("target/bench/memory"),
        &root.join("policies"),
    )?;
    let (ready, status) = daemon.wait_ready()?;
    eprintln!(
        "xtask: daemon ready after {:.2} s; idling 2 s",
        ready.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let (rss, hwm) = daemon.memory()?;
    drop(daemon);
    let mut section = Section::new("memory", "Daemon memory: idle with the bundled policies");
    section
        .note(format!(
            "fwd run in host mode, {} rules, 2 s after it was ready",
            status["rules"]
        ))
        .columns(&["", "VmRSS", "VmHWM"])
        .row(vec![
            "fwd run".into(),
            format!("{:.1} MiB", mib(rss)),
            format!("{:.1} MiB", mib(hwm)),
        ]);
    section.goals.push(Goal::new(
        "daemon resident memory under 30 MiB",
        format!("{:.1} MiB", mib(rss)),
        Some(rss < 30 << 20),
    ));
    section.data = serde_json::json!({ "rss_bytes": rss, "hwm_bytes": hwm });
    Ok(section)
}
