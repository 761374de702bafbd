//! `fwd detach`: takes fwd's programs off every hook and removes the pins, with no daemon
//! running: what a package's removal calls, so no frozen firewall is left without its
//! binary. Refuses while a daemon runs (it holds the lock).

use std::{path::PathBuf, process::ExitCode};

use crate::{config::Config, config::DEFAULT_CONFIG, datapath, lock};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  fwd detach\n  fwd detach --config /etc/fwd/fwd.toml\n\n\
Traffic is no longer filtered afterwards (with [gateway] hold_forwarding, IP forwarding is \
turned off instead). A running daemon is stopped first: `systemctl stop fwd` (with \
on_exit = \"detach\" it detaches as it stops)."
)]
pub(crate) struct DetachArgs {
    /// The site config (for pin_dir, state_dir and the DNS steering table).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

pub(crate) fn run(args: &DetachArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&args.config)?;
    let running = |e: lock::LockError| -> anyhow::Error {
        match e {
            lock::LockError::Held(held) => anyhow::anyhow!(
                "a daemon is running: {} holds {}; stop it first (`systemctl stop fwd`), or let it detach as it stops (on_exit = \"detach\")",
                held.holder,
                held.path.display()
            ),
            other => other.into(),
        }
    };
    let _state = lock::state_dir(&config.state_dir).map_err(running)?;
    if !config.pin_dir.exists() {
        println!(
            "nothing to detach: no pins under {}",
            config.pin_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let pins_lock = lock::directory(&config.pin_dir).map_err(running)?;
    if config.hold_forwarding {
        // Never forward unfiltered: the next start turns it on once attached.
        crate::net::set_ip_forwarding(false)?;
    }
    let links = datapath::remove_pins(&config.pin_dir)?;
    drop(pins_lock);
    if config.dns.as_ref().is_some_and(|d| d.steer)
        && let Err(err) = crate::daemon::dns::steer::remove()
    {
        eprintln!("fwd: removing the DNS steering table: {err:#}");
    }
    println!(
        "detached: {links} links removed (their programs are off the hooks), pins under {} removed",
        config.pin_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
