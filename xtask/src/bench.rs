//! `cargo xtask bench`: measurements printed side by side in one run (never test assertions).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A small deterministic generator (xorshift64*), so every run measures the same policy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

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

pub fn compile_bench(root: &Path, fwd_release: &Path, quick: bool) -> anyhow::Result<String> {
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
    runs.sort();
    let (time, _) = runs[runs.len() / 2];
    let peak = runs.iter().map(|r| r.1).max().unwrap_or(0);
    Ok(format!(
        "compile: fwd check, {prefixes} prefixes (3/4 IPv4, 1/4 IPv6), {rules} port-range rules: \
         median {:.2} s of 3 (goal <= 2 s), peak RSS {:.0} MiB (goal <= 1024 MiB)",
        time.as_secs_f64(),
        peak as f64 / (1024.0 * 1024.0)
    ))
}
