//! `cargo xtask`: orchestration only (toolchain setup, the lab, tests, lints).

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    sync::{Arc, atomic::AtomicBool},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

mod bench;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "fwd's development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building fwd needs (nightly rust-src, LLVM 22, bpf-linker, iproute2).
    /// Idempotent and quick when everything is there.
    Setup,
    /// Build fwd and run the built-in lab with the bundled policies until Ctrl-C.
    Run {
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<u64>,
    },
    /// Run every test (as root): unit, property, golden and BPF_PROG_TEST_RUN tests, then the
    /// end-to-end tests in network namespaces.
    Test,
    /// cargo fmt --check and cargo clippy -D warnings.
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
    /// Print performance figures measured in one run (goals are shown, not asserted).
    Bench {
        /// A smaller, faster version.
        #[arg(long)]
        quick: bool,
    },
}

/// Debian packages the build and the lab need.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "libxml2-dev",
    "iproute2",
];

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
        cargo().args([
            "test",
            "--workspace",
            "--exclude",
            "fwd-ebpf",
            "--exclude",
            "fwd-lab",
        ]),
        "cargo test --workspace --exclude fwd-ebpf --exclude fwd-lab (as root)",
    )?;
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
            .env("FWD_BIN", &fwd),
        "cargo test --package fwd-lab --tests -- --test-threads=1 (as root)",
    )?;
    Ok(())
}

fn bench_all(quick: bool) -> anyhow::Result<()> {
    setup()?;
    run(
        "building fwd (release)",
        cargo().args(["build", "--release", "--package", "fwd-userspace"]),
        "cargo build --release --package fwd-userspace",
    )?;
    let root = workspace_root();
    let fwd = root.join("target/release/fwd");
    let report = bench::compile_bench(&root, &fwd, quick)?;
    println!("{report}");
    let out = root.join("target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("results.md"), format!("{report}\n"))?;
    Ok(())
}

fn lint() -> anyhow::Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
        "cargo fmt --all",
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
    )
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup(),
        Task::Run { duration } => lab(duration),
        Task::Test => test(),
        Task::Lint => lint(),
        Task::Bench { quick } => bench_all(quick),
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
