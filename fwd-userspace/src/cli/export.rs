//! `fwd export nftables`: the compiled policy as an `nft -f` script.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use super::args::{CompiledPolicy, PolicyArgs};
use crate::{
    config::{Action, InterfaceMode},
    export,
};

#[derive(clap::Args, Debug)]
pub(crate) struct NftablesArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The nftables table (family inet) the script creates or replaces. Not `fwd`: nft reads
    /// that as a keyword.
    #[arg(long, default_value = export::DEFAULT_TABLE)]
    pub table: String,
    /// Write the script to FILE (a temporary file renamed into place, so FILE is never
    /// half-written) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub(crate) fn export_nftables(args: &NftablesArgs) -> anyhow::Result<ExitCode> {
    export::check_table_name(&args.table).map_err(anyhow::Error::msg)?;
    let CompiledPolicy {
        compiled,
        origin,
        config,
        ..
    } = args.policy.compile()?;
    let mut hooks = Vec::new();
    let mut exempt = Vec::new();
    let mut extra_differences = Vec::new();
    if let Some(c) = &config {
        for i in &c.interfaces {
            export::check_interface_name(&i.name)
                .map_err(|e| anyhow::anyhow!("{}: {e}", c.file.display()))?;
            hooks.push(i.clone());
        }
        // As the daemon's exemptions, less the gateway's own addresses (the forward hook
        // never sees traffic to or from them).
        exempt.extend(c.exempt.iter().copied());
        if let Some(d) = &c.dns {
            if c.interfaces.iter().any(|i| i.mode == InterfaceMode::Host) {
                exempt.extend(d.upstream.iter().map(|u| ipnet::IpNet::from(u.ip())));
            }
            if d.steer {
                extra_differences.push(
                    "[dns] steer: the rule fwd/dns-steer allows DNS (port 53) to any address; the redirect to fwd's proxy (table inet fwd_dns) exists only while fwd runs".to_string(),
                );
            }
        }
    }
    let opts = export::NftOptions {
        table: args.table.clone(),
        hooks,
        exempt,
        audit: config.as_ref().is_some_and(|c| c.action == Action::Audit),
        live_remote_timeout_s: config
            .as_ref()
            .map_or(fwd_common::FwdConfig::DEFAULT_UDP_TIMEOUT_S, |c| {
                c.flows.udp_timeout_s
            }),
        origin,
        extra_differences,
    };
    let image = &compiled.image;
    for difference in export::differences(image, &opts) {
        eprintln!("fwd: warning: {difference}");
    }
    let (summary, written_to) = match &args.output {
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            let summary = export::write_nftables(&mut out, image, &opts)
                .map_err(|e| anyhow::anyhow!("writing the script to standard output: {e}"))?;
            (summary, "standard output".to_string())
        }
        Some(path) => (
            write_atomically(path, |out| export::write_nftables(out, image, &opts))?,
            path.display().to_string(),
        ),
    };
    eprintln!(
        "fwd: wrote table inet {} to {written_to}: {} egress ranges (IPv4 {}, IPv6 {}), {} ingress ranges, {} class chains, {} rule counters",
        opts.table,
        summary.egress4 + summary.egress6,
        summary.egress4,
        summary.egress6,
        summary.ingress4 + summary.ingress6,
        summary.class_chains,
        summary.rule_counters,
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `path` whole or not at all (`atomic_file`), replacing what is there.
fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<&mut std::fs::File>) -> std::io::Result<T>,
) -> anyhow::Result<T> {
    crate::atomic_file::write(path, crate::atomic_file::Existing::Replace, write).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e}; check that its directory exists and is writable",
            path.display()
        )
    })
}
