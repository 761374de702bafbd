//! What several commands share: the policy arguments and what they compile to, the way to
//! the running daemon, the exit code for bad input.

use std::path::PathBuf;

use crate::{
    compile::{Compiled, RuleIds, Selection, compile},
    config::{Config, DEFAULT_CONFIG, DEFAULT_POLICY_DIR},
    policy::{self, Date},
};

#[derive(clap::Args, Debug)]
pub(crate) struct PolicyArgs {
    /// Directory of vendor policy files (default: the config's policy_dir, or /etc/fwd/policies).
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// A site config; its policy_dir is used unless --policies is given.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Exit code for bad input (and explain's "error").
pub(crate) const EXIT_BAD_INPUT: u8 = 2;

/// What `check` and `explain` compile, and how they got there.
pub(crate) struct CompiledPolicy {
    pub set: policy::PolicySet,
    pub compiled: Compiled,
    /// One line saying where the policy and the selection came from.
    pub origin: String,
    /// The site config, if one was given.
    pub config: Option<Config>,
}

impl PolicyArgs {
    pub fn compile(&self) -> anyhow::Result<CompiledPolicy> {
        let today = Date::today();
        let config = self.config.as_deref().map(Config::load).transpose()?;
        let dir = match (&self.policies, &config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(c)) => c.policy_dir.clone(),
            (None, None) => PathBuf::from(DEFAULT_POLICY_DIR),
        };
        let (selection, origin) = match (&config, &self.config) {
            (Some(c), Some(path)) => (
                c.selection(today),
                format!("{}, selected by {}", dir.display(), path.display()),
            ),
            _ => (
                Selection::widest(today),
                format!(
                    "{}, no --config: every vendor, profile, region and level (the widest policy)",
                    dir.display()
                ),
            ),
        };
        let started = std::time::Instant::now();
        let (set, compiled) = match &config {
            Some(c) => c.compile_policies(&dir, today, &RuleIds::default())?,
            None => {
                let set = policy::load_dir(&dir)?;
                let compiled = compile(&set, &selection)?;
                (set, compiled)
            }
        };
        tracing::debug!(elapsed = ?started.elapsed(), "compiled");
        Ok(CompiledPolicy {
            set,
            compiled,
            origin,
            config,
        })
    }
}

/// How a client command reaches the running daemon.
#[derive(clap::Args, Debug)]
pub(crate) struct DaemonArgs {
    /// The daemon's config (for its control_socket).
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The control socket, if not the config's.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

impl DaemonArgs {
    /// `--socket`, else the config's `control_socket`, read leniently: a config with a
    /// mistake elsewhere must still reach the daemon (which rejects it on reload and says
    /// why).
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| super::client::socket_path_lenient(&self.config))
    }
}
