//! `cargo xtask`: orchestration only (toolchain setup, the lab, tests, lints, benchmarks,
//! the release tarball).

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::{Arc, atomic::AtomicBool},
    time::{Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod bench;
mod deb;
mod dist;
mod image;
mod rpm;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fwd's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building fwd needs (nightly rust-src, LLVM 22, bpf-linker, iproute2,
    /// cargo-fuzz). Idempotent and quick when everything is there.
    Setup,
    /// Build fwd and run the built-in lab with the bundled policies until Ctrl-C.
    Run {
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Run every test (as root): unit, property, golden and BPF_PROG_TEST_RUN tests, a short
    /// fuzzing run, then the end-to-end tests in network namespaces.
    Test,
    /// Fuzz the policy parser and compiler and the site config (cargo-fuzz, libFuzzer, nightly).
    /// Fails if a target crashes, and says how to reproduce it.
    Fuzz {
        /// How long to fuzz each target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// One target (default: every target): policy_parse, policy_compile or site_config.
        target: Option<String>,
    },
    /// cargo fmt --check and cargo clippy -D warnings (the workspace and the fuzz targets).
    Lint,
    /// Write the benchmark's generated policy directory (for profiling by hand).
    #[command(hide = true)]
    BenchPolicy {
        dir: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        prefixes: usize,
        #[arg(long, default_value_t = 10_000)]
        rules: usize,
    },
    /// Measure fwd side by side with nftables, ipset and iptables (goals shown, not asserted).
    ///
    /// Prints tables and writes target/bench/results.md and results.json. Sections: policy
    /// compile time and memory (`fwd check`); as root also the programs' cost per packet
    /// (BPF_PROG_TEST_RUN, 10 to 1,000,000 prefixes, against a parse-only program); CPU per
    /// packet and maximum rate through a gateway namespace with no filter, fwd, nftables,
    /// ipset + iptables and a plain iptables chain; replacing 100,000 and 1,000,000 prefixes
    /// under load (fwd reload, nft -f, ipset swap) and the packets lost meanwhile; the
    /// daemon's idle memory; the DNS proxy against dnsmasq. Configurations run interleaved
    /// (A B A B ...) in one run and figures are medians. Every host is a scratch network
    /// namespace, removed afterwards. docs/performance.md shows a run and explains the method.
    #[command(
        after_help = "Examples:\n  sudo cargo xtask bench --quick\n  sudo cargo xtask bench --only datapath,reload"
    )]
    Bench {
        /// A smaller, faster version.
        #[arg(long)]
        quick: bool,
        /// Run only these sections (comma-separated): compile, program, datapath, reload,
        /// memory, dns.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Build the release fwd and write the installable target/dist/fwd-VERSION-ARCH.tar.gz
    /// and the Debian package target/dist/fwd_VERSION_ARCH.deb, the RPM and the OCI image,
    /// each checked (the .deb: contents, lintian, install/upgrade/remove/purge into a
    /// scratch root).
    ///
    /// The tarball holds the binary, the systemd unit, the example config, the bundled
    /// policies, the Grafana dashboard and the README laid out from / (usr/bin/fwd,
    /// usr/lib/systemd/system/fwd.service, etc/fwd/fwd.toml, etc/fwd/policies/,
    /// usr/share/fwd/grafana/fwd.json, usr/share/doc/fwd/README.md), plus an install.sh that
    /// never overwrites an existing config or policy file. Then checks it: unpacks it, runs
    /// its `fwd check` on its config and policies, verifies the unit with systemd-analyze,
    /// and tries install.sh into a scratch DESTDIR.
    #[command(
        after_help = "Install on a machine:\n  mkdir fwd && tar -C fwd -xzf fwd-VERSION-ARCH.tar.gz && sudo fwd/install.sh\n\
(DESTDIR=/some/root fwd/install.sh installs under another root.)"
    )]
    Dist,
}

/// Debian packages the build and the lab need.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
    "iproute2",
    // The DNS tests' and bench's authoritative server; nft for the gateway's DNS steering.
    "dnsmasq-base",
    "nftables",
    // The bench's comparisons: trafgen (netsniff-ng) generates traffic; ipset and iptables
    // are the other firewalls measured beside fwd and nftables.
    "netsniff-ng",
    "ipset",
    "iptables",
    // Checks the Debian package `cargo xtask dist` builds.
    "lintian",
    // Build and inspect the OCI image without a daemon.
    "umoci",
    "skopeo",
    // Query and install the RPM into a scratch root.
    "rpm",
];

/// A cargo-fuzz target of `fwd-userspace/fuzz/`.
struct FuzzTarget {
    name: &'static str,
    /// libFuzzer dictionary, relative to `fwd-userspace/fuzz/`.
    dict: Option<&'static str>,
    /// Read-only seed directories besides the committed `fuzz/seeds/NAME/` (where it
    /// exists), relative to the workspace root. libFuzzer reads them as corpora and never
    /// writes into them, so the bundled policies seed the parser without copies.
    seeds: &'static [&'static str],
    /// More libFuzzer options.
    options: &'static [&'static str],
}

const FUZZ_TARGETS: &[FuzzTarget] = &[
    FuzzTarget {
        name: "policy_parse",
        dict: Some("policy.dict"),
        seeds: &["policies"],
        options: &[],
    },
    // Generates its policies from the fuzzer's bytes: no text seeds or dictionary. Inputs of
    // any length from the start (libFuzzer would grow them slowly from a few bytes, i.e. a
    // rule or two): more rules, more overlaps, more coverage in a short run.
    FuzzTarget {
        name: "policy_compile",
        dict: None,
        seeds: &[],
        options: &["-len_control=0", "-max_len=1024"],
    },
    FuzzTarget {
        name: "site_config",
        dict: Some("config.dict"),
        seeds: &[],
        options: &[],
    },
];

/// Seconds per target in `cargo xtask test`: catches regressions in the seeds and shallow
/// crashes; longer runs are `cargo xtask fuzz`.
const TEST_FUZZ_SECONDS: u64 = 20;

/// An input slower than this is a finding (a policy that stalls `fwd check` or a reload),
/// reported as a `timeout-*` artifact; it also bounds a run to `--seconds` plus this.
const FUZZ_INPUT_TIMEOUT_SECONDS: u64 = 10;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd`; on failure, says which step failed and how to do it by hand.
fn run(step: &str, cmd: &mut Command, by_hand: &str) -> anyhow::Result<()> {
    eprintln!("xtask: {step}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {cmd:?}; by hand: {by_hand}"))?;
    if !status.success() {
        bail!("{step} failed ({status}); by hand: {by_hand}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn setup() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(
            "installing nightly rust-src",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src --toolchain nightly",
        )?;
    }

    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            let status = output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]));
            !status.contains("install ok installed")
        })
        .collect();
    if !missing.is_empty() {
        let by_hand = format!("apt-get update && apt-get install -y {}", missing.join(" "));
        run(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
            &by_hand,
        )?;
        run(
            &format!("installing {}", missing.join(" ")),
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &by_hand,
        )?;
    }

    // promtool, for the exposition and alert-rule checks: only the tool, unpacked from
    // Debian's `prometheus` package (installing the package would set up a server).
    let tools = workspace_root().join("target/tools");
    if !tools.join("prometheus/usr/bin/promtool").exists() {
        std::fs::create_dir_all(&tools)?;
        let by_hand = "cd target/tools && apt-get download prometheus && dpkg-deb -x prometheus_*.deb prometheus";
        run(
            "downloading promtool (Debian's prometheus package)",
            Command::new("apt-get")
                .args(["download", "prometheus"])
                .current_dir(&tools),
            by_hand,
        )?;
        let deb = std::fs::read_dir(&tools)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("prometheus_"))
            })
            .ok_or_else(|| anyhow::anyhow!("apt-get download left no prometheus_*.deb"))?;
        run(
            "unpacking promtool",
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(tools.join("prometheus")),
            by_hand,
        )?;
        std::fs::remove_file(&deb)?;
    }

    // kubernetes-validate (PyPI) checks the Kubernetes manifests offline, against bundled
    // schemas of each Kubernetes version (kubectl, for `kubectl kustomize`, is on the image).
    if !succeeds(Command::new("kubernetes-validate").arg("--version")) {
        run(
            "installing kubernetes-validate (PyPI)",
            Command::new("python3").args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "kubernetes-validate==1.37.0",
            ]),
            "python3 -m pip install kubernetes-validate==1.37.0",
        )?;
    }

    // cargo-deb builds the Debian package from fwd-userspace's [package.metadata.deb].
    if !succeeds(Command::new("cargo").args(["deb", "--version"])) {
        run(
            "installing cargo-deb",
            Command::new("cargo").args(["install", "cargo-deb", "--locked", "--version", "3.8.0"]),
            "cargo install cargo-deb --locked --version 3.8.0",
        )?;
    }

    // cargo-generate-rpm builds the RPM from [package.metadata.generate-rpm].
    if !succeeds(Command::new("cargo").args(["generate-rpm", "--version"])) {
        run(
            "installing cargo-generate-rpm",
            Command::new("cargo").args([
                "install",
                "cargo-generate-rpm",
                "--locked",
                "--version",
                "0.21.1",
            ]),
            "cargo install cargo-generate-rpm --locked --version 0.21.1",
        )?;
    }

    if !succeeds(Command::new("cargo").args(["fuzz", "--version"])) {
        run(
            "installing cargo-fuzz",
            Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]),
            "cargo install cargo-fuzz --locked",
        )?;
    }

    if !succeeds(Command::new("bpf-linker").arg("--version")) {
        run(
            "installing bpf-linker (builds against LLVM 22; takes a few minutes)",
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
            "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --no-default-features --features llvm-22",
        )?;
    }
    eprintln!("xtask: setup complete");
    Ok(())
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (network namespaces and BPF); run it as root");
    }
    Ok(())
}

fn build_fwd() -> anyhow::Result<PathBuf> {
    run(
        "building fwd (and its eBPF programs)",
        cargo().args(["build", "--package", "fwd-userspace"]),
        "cargo build --package fwd-userspace",
    )?;
    Ok(workspace_root().join("target/debug/fwd"))
}

/// Builds the release `fwd` (with its embedded eBPF programs) and returns its path.
fn build_fwd_release() -> anyhow::Result<PathBuf> {
    run(
        "building fwd (release, with its eBPF programs)",
        cargo().args([
            "build",
            "--release",
            "--package",
            "fwd-userspace",
            "--bin",
            "fwd",
        ]),
        "cargo build --release --package fwd-userspace --bin fwd (needs `cargo xtask setup`: nightly rust-src and bpf-linker)",
    )?;
    Ok(workspace_root().join("target/release/fwd"))
}

fn lab(duration: Option<u64>) -> anyhow::Result<()> {
    require_root("cargo xtask run")?;
    setup()?;
    let fwd = build_fwd()?;
    let mut cmd = Command::new(&fwd);
    cmd.current_dir(workspace_root())
        .args(["lab", "--policies", "policies"]);
    if let Some(d) = duration {
        cmd.args(["--duration", &d.to_string()]);
    }
    // Ctrl-C reaches the whole foreground group: the lab handles it and removes its
    // namespaces; xtask waits for that instead of dying first.
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::new(AtomicBool::new(false)))
            .context("installing the signal handler")?;
    }
    run(
        "running the lab",
        &mut cmd,
        "target/debug/fwd lab --policies policies",
    )
}

fn test() -> anyhow::Result<()> {
    require_root("cargo xtask test (BPF and network namespaces)")?;
    setup()?;
    let fwd = build_fwd()?;
    run(
        "unit, property, golden and BPF_PROG_TEST_RUN tests",
        cargo()
            .args([
                "test",
                "--workspace",
                "--exclude",
                "fwd-ebpf",
                "--exclude",
                "fwd-lab",
            ])
            // Root-only tests skip for a normal user's `cargo test`; here they must run.
            .env(fwd_lab::REQUIRE_ROOT_ENV, "1"),
        "cargo test --workspace --exclude fwd-ebpf --exclude fwd-lab (as root)",
    )?;
    fuzz(TEST_FUZZ_SECONDS, None)?;
    run(
        "end-to-end tests in network namespaces",
        cargo()
            // --tests: the end-to-end result is the run's last line, not an empty doc-test run.
            .args([
                "test",
                "--package",
                "fwd-lab",
                "--tests",
                "--",
                "--test-threads=1",
            ])
            .env("FWD_BIN", &fwd)
            .env(fwd_lab::REQUIRE_ROOT_ENV, "1"),
        "cargo test --package fwd-lab --tests -- --test-threads=1 (as root)",
    )?;
    // The packages, built and checked as a site would install them.
    dist::dist()
}

/// `cargo +nightly fuzz ...` in `fwd-userspace/`. Plain `cargo` (the rustup proxy), not
/// `$CARGO`: that is the stable cargo running xtask, which does not take `+nightly`.
fn cargo_fuzz() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(workspace_root().join("fwd-userspace"))
        .args(["+nightly", "fuzz"]);
    cmd
}

/// Crash, leak, timeout and out-of-memory inputs libFuzzer wrote for `target` since `since`.
fn fuzz_artifacts(target: &str, since: SystemTime) -> Vec<PathBuf> {
    let dir = workspace_root()
        .join("fwd-userspace/fuzz/artifacts")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            // Not `slow-unit-*`: a slow input that stays under -timeout is no failure.
            ["crash-", "leak-", "timeout-", "oom-"]
                .iter()
                .any(|p| name.starts_with(p))
                && e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= since)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// Fuzzes `only` (default: every target) for `seconds` each. Runs every target before
/// failing, so one run reports every crashing target.
///
/// Address sanitizer (cargo-fuzz's default) works on this machine and costs little here
/// (the targets are safe Rust; it mainly adds leak detection), so no `--sanitizer none`.
/// The fuzz crate depends on fwd-userspace without its `ebpf` feature: no kernel programs
/// are built under the sanitizer flags, and edits to fwd-ebpf do not rebuild the fuzzers.
fn fuzz(seconds: u64, only: Option<&str>) -> anyhow::Result<()> {
    let targets: Vec<&FuzzTarget> = match only {
        None => FUZZ_TARGETS.iter().collect(),
        Some(name) => match FUZZ_TARGETS.iter().find(|t| t.name == name) {
            Some(t) => vec![t],
            None => bail!(
                "no fuzz target `{name}`; the targets are {}",
                FUZZ_TARGETS
                    .iter()
                    .map(|t| t.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    if !succeeds(cargo_fuzz().arg("--version")) {
        bail!(
            "cargo-fuzz is not installed; run `cargo xtask setup` (or cargo install cargo-fuzz --locked)"
        );
    }
    let started = Instant::now();
    let mut build = cargo_fuzz();
    build.arg("build");
    if let [t] = targets.as_slice() {
        build.arg(t.name);
    }
    run(
        "building the fuzz targets (nightly, address sanitizer)",
        &mut build,
        "cd fwd-userspace && cargo +nightly fuzz build",
    )?;
    eprintln!(
        "xtask: fuzz targets built in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let fuzz_dir = workspace_root().join("fwd-userspace/fuzz");
    let mut crashes = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        // The working corpus (git-ignored) keeps what earlier runs found; it must exist, as
        // libFuzzer writes new inputs into the first directory it is given.
        let corpus = fuzz_dir.join("corpus").join(t.name);
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        // Paths relative to fwd-userspace/, where cargo fuzz runs, so the by-hand command
        // below is the same command.
        let mut args = vec![
            "run".to_string(),
            t.name.to_string(),
            format!("fuzz/corpus/{}", t.name),
        ];
        if fuzz_dir.join("seeds").join(t.name).is_dir() {
            args.push(format!("fuzz/seeds/{}", t.name));
        }
        args.extend(t.seeds.iter().map(|s| format!("../{s}")));
        args.extend([
            "--".to_string(),
            format!("-max_total_time={seconds}"),
            format!("-timeout={FUZZ_INPUT_TIMEOUT_SECONDS}"),
            "-print_final_stats=1".to_string(),
        ]);
        args.extend(t.dict.map(|d| format!("-dict=fuzz/{d}")));
        args.extend(t.options.iter().map(std::string::ToString::to_string));
        let step = format!(
            "fuzzing {} for {seconds} s ({}/{})",
            t.name,
            i + 1,
            targets.len()
        );
        let by_hand = format!("cd fwd-userspace && cargo +nightly fuzz {}", args.join(" "));
        let since = SystemTime::now();
        let target_started = Instant::now();
        let result = run(&step, cargo_fuzz().args(&args), &by_hand);
        let artifacts = fuzz_artifacts(t.name, since);
        if artifacts.is_empty() {
            result?;
            eprintln!(
                "xtask: {}: no crash in {:.0} s",
                t.name,
                target_started.elapsed().as_secs_f64()
            );
            continue;
        }
        if let Err(err) = result {
            eprintln!("xtask: {err:#}");
        }
        // libFuzzer stops at the first finding: one artifact per run.
        for artifact in &artifacts {
            let in_crate = artifact
                .strip_prefix(workspace_root().join("fwd-userspace"))
                .unwrap_or(artifact);
            eprintln!(
                "xtask: {name}: libFuzzer found a failing input: fwd-userspace/{path}\n\
                 xtask:   reproduce: cd fwd-userspace && cargo +nightly fuzz run {name} {path}\n\
                 xtask:   show it:   cd fwd-userspace && cargo +nightly fuzz fmt {name} {path}\n\
                 xtask:   minimise:  cd fwd-userspace && cargo +nightly fuzz tmin {name} {path}",
                name = t.name,
                path = in_crate.display(),
            );
        }
        crashes.push(t.name);
    }
    if !crashes.is_empty() {
        bail!(
            "fuzzing found failing inputs for {}; see above for the artifacts and how to reproduce them",
            crashes.join(", ")
        );
    }
    eprintln!(
        "xtask: fuzzing done in {:.0} s, no crashes",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The bench's sections, in the order they run: id, title, whether it needs root.
const BENCH_SECTIONS: &[(&str, &str, bool)] = &[
    ("compile", "Compile", false),
    ("program", "Program cost", true),
    ("datapath", "Datapath", true),
    ("reload", "Reload", true),
    ("memory", "Daemon memory", true),
    ("dns", "DNS proxy", true),
];

fn bench_all(quick: bool, only: &[String]) -> anyhow::Result<()> {
    if let Some(unknown) = only
        .iter()
        .find(|o| !BENCH_SECTIONS.iter().any(|(id, ..)| id == o))
    {
        bail!(
            "--only {unknown}: no such section; the sections are {}",
            BENCH_SECTIONS
                .iter()
                .map(|(id, ..)| *id)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    setup()?;
    let root = workspace_root();
    let fwd = build_fwd_release()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root_user = unsafe { libc::geteuid() } == 0;
    if root_user {
        bench::clean_stale_daemons();
    }
    // A section that cannot run says why in its place, the others still run, and the exit
    // code says that one failed.
    let mut sections = Vec::new();
    let mut failed = false;
    for &(id, title, needs_root) in BENCH_SECTIONS {
        if !only.is_empty() && !only.iter().any(|o| o == id) {
            continue;
        }
        if needs_root && !root_user {
            let mut s = bench::report::Section::new(id, title);
            s.note("not run: needs root (network namespaces and BPF)");
            sections.push(s);
            continue;
        }
        eprintln!("xtask: bench: {title}");
        let one = |r: anyhow::Result<bench::report::Section>| r.map(|s| vec![s]);
        let result = match id {
            "compile" => one(bench::compile_bench(&root, &fwd, quick)),
            "program" => bench::program::program_bench(&root, quick),
            "datapath" => bench::datapath::datapath_bench(&root, &fwd, quick),
            "reload" => one(bench::reload::reload_bench(&root, &fwd, quick)),
            "memory" => one(bench::memory_bench(&root, &fwd)),
            "dns" => one(bench::dns::dns_bench(&root, &fwd, quick)),
            _ => unreachable!("every id of BENCH_SECTIONS is matched"),
        };
        match result {
            Ok(s) => sections.extend(s),
            Err(err) => {
                failed = true;
                eprintln!("xtask: bench {id} failed: {err:#}");
                sections.push(bench::report::Section::failed(id, title, &err));
            }
        }
    }
    let header = bench_header(&root, quick);
    let out = root.join("target/bench");
    let text = bench::report::write(&out, &header, &sections)?;
    println!("{text}");
    eprintln!(
        "xtask: wrote {} and {}",
        out.join("results.md").display(),
        out.join("results.json").display()
    );
    if failed {
        bail!("a benchmark could not run; see its section above");
    }
    Ok(())
}

/// What the figures were measured on and with: command, commit, kernel, CPUs.
fn bench_header(root: &Path, quick: bool) -> Vec<String> {
    let commit = output(
        Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(root),
    );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    vec![
        format!(
            "command: cargo xtask bench{}",
            if quick { " --quick" } else { "" }
        ),
        format!("commit: {}", commit.trim()),
        format!("machine: Linux {}, {cpus} x {cpu}", kernel.trim()),
        "every comparison runs its configurations interleaved in one invocation; figures are medians".into(),
    ]
}

fn lint() -> anyhow::Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
        "cargo fmt --all",
    )?;
    // The fuzz crate is a workspace of its own, so `--all` does not reach it.
    run(
        "cargo fmt --check (fuzz targets)",
        cargo().args([
            "fmt",
            "--manifest-path",
            "fwd-userspace/fuzz/Cargo.toml",
            "--check",
        ]),
        "cargo fmt --manifest-path fwd-userspace/fuzz/Cargo.toml",
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--exclude",
            "fwd-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "cargo clippy --workspace --exclude fwd-ebpf --all-targets",
    )?;
    // Stable clippy builds the fuzz crate without sanitizers (its own target directory).
    run(
        "cargo clippy (fuzz targets)",
        cargo().args([
            "clippy",
            "--manifest-path",
            "fwd-userspace/fuzz/Cargo.toml",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        "cargo clippy --manifest-path fwd-userspace/fuzz/Cargo.toml --all-targets",
    )
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup(),
        Task::Run { duration } => lab(duration),
        Task::Test => test(),
        Task::Lint => lint(),
        Task::Fuzz { seconds, target } => fuzz(seconds, target.as_deref()),
        Task::Bench { quick, only } => bench_all(quick, &only),
        Task::Dist => dist::dist(),
        Task::BenchPolicy {
            dir,
            prefixes,
            rules,
        } => bench::write_policy(&dir, 10, rules, prefixes),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
