//! The site config, `/etc/fwd/fwd.toml`. Unknown keys and bad values are located errors.
//!
//! Here: the config's types and defaults, and the door from a site to a compiled policy
//! (`compile_policies`); `parse` reads the file, `site` holds what the site adds to the
//! vendor files (the DNS steering rule).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;

use crate::{
    compile::{Compiled, RuleIds, Selection, compile_with_ids},
    policy::{
        Date, LOCAL_VENDOR, Level, LoadError, PolicyError, PolicySet, Rule, Vendor, VendorPolicy,
        load_dir,
    },
};

mod feed;
mod parse;
mod site;
pub use feed::{Feed, FeedMode};
#[cfg(test)]
mod tests;
use site::steer_policy;

pub const DEFAULT_CONFIG: &str = "/etc/fwd/fwd.toml";
pub const DEFAULT_POLICY_DIR: &str = "/etc/fwd/policies";
pub const DEFAULT_METRICS: &str = "127.0.0.1:9469";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/fwd";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fwd";
/// The daemon's control socket (`fwd reload`, `status`, `monitor`).
pub const DEFAULT_SOCKET: &str = "/run/fwd/control.sock";
pub const DEFAULT_DEBOUNCE_MS: u64 = 500;

/// What a clean stop (SIGTERM, `systemctl stop`) does with the programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    /// Leave the pinned programs attached: enforcement and counting go on, and the next
    /// start adopts them without a gap.
    Keep,
    /// Detach the programs and remove the pins: traffic is no longer filtered.
    Detach,
}

/// Reloading on its own when the policy directory or the config file changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub enabled: bool,
    /// Changes closer together than this make one reload.
    pub debounce_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Drop what no rule allows.
    Enforce,
    /// Pass everything; count what would have been dropped.
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceMode {
    /// The LAN-facing interface of a gateway: XDP judges what the LAN sends, TC on the
    /// interface's egress what comes back.
    Gateway,
    /// A host's uplink: TC judges what the host sends and receives.
    Host,
}

/// The flow table: size and how long an idle flow stays live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flows {
    pub capacity: u32,
    pub tcp_timeout_s: u32,
    pub udp_timeout_s: u32,
    pub other_timeout_s: u32,
}

impl Default for Flows {
    fn default() -> Self {
        let d = fwd_common::FwdConfig::default();
        Self {
            capacity: fwd_common::FLOWS_CAPACITY,
            tcp_timeout_s: d.tcp_timeout_s,
            udp_timeout_s: d.udp_timeout_s,
            other_timeout_s: d.other_timeout_s,
        }
    }
}

/// The DNS proxy that opens domain rules (`[dns]`; off without the section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dns {
    /// Where it answers clients (UDP and TCP). Empty: the addresses of the gateway
    /// interfaces, or 127.0.0.53:53 when every interface is a host's.
    pub listen: Vec<SocketAddr>,
    /// The resolvers it asks, in order.
    pub upstream: Vec<SocketAddr>,
    pub limits: DnsLimits,
    /// How long it waits for an upstream answer before trying the next.
    pub timeout_ms: u64,
    /// Gateways: redirect the LAN's port-53 traffic to the proxy (nftables).
    pub steer: bool,
    /// Answer `use-application-dns.net` with NXDOMAIN, so Firefox leaves its automatic DNS
    /// over HTTPS off and its names go through the proxy (`doh_canary`, on by default).
    pub doh_canary: bool,
    /// Where the `[dns]` table is (the steering rule's source).
    pub location: crate::policy::Location,
}

/// The vendor and rule id of the rule that lets the LAN's DNS reach the gateway's
/// steering (`[dns] steer`).
pub const STEER_VENDOR: &str = "fwd";
pub const STEER_RULE: &str = "dns-steer";

impl Dns {
    /// The keys that take effect only when fwd restarts (the proxy's sockets and the
    /// steering table are set up at start); the limits apply at a reload.
    pub fn restart_keys(&self) -> (&[SocketAddr], &[SocketAddr], u64, bool, bool) {
        (
            &self.listen,
            &self.upstream,
            self.timeout_ms,
            self.steer,
            self.doh_canary,
        )
    }
}

/// `[dns]` limits: how long learned entries live and how many a name pattern may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsLimits {
    /// An entry lives at least this long (seconds), whatever the record's TTL.
    pub min_ttl: u32,
    /// And at most this long; the proxy lowers longer TTLs in the answer to this.
    pub max_ttl: u32,
    /// Addresses one name pattern (`*.sfu.whereby.com`) may open at once.
    pub max_addresses: usize,
}

impl Default for DnsLimits {
    fn default() -> Self {
        Self {
            min_ttl: 30,
            max_ttl: 3600,
            max_addresses: 256,
        }
    }
}

pub const DEFAULT_DNS_TIMEOUT_MS: u64 = 2000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mode: InterfaceMode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub policy_dir: PathBuf,
    /// The package's vendor policies (`/usr/share/fwd/policies`): a file of the same name
    /// in `policy_dir` overrides one here, and an empty one masks it.
    pub vendor_policy_dir: Option<PathBuf>,
    pub action: Action,
    /// Vendors whose rules run in another action than `action` (`[vendor_action]`).
    pub vendor_action: BTreeMap<String, Action>,
    pub flows: Flows,
    pub exempt: Vec<IpNet>,
    pub metrics_listen: SocketAddr,
    /// The root-only control socket (`fwd monitor`).
    pub control_socket: PathBuf,
    /// Where programs, links and maps are pinned (on a bpf filesystem).
    pub pin_dir: PathBuf,
    /// `pins = "ephemeral"`: accept a bpf filesystem that dies with fwd (a private mount
    /// namespace); by default such a `pin_dir` is refused, since a crash would end
    /// enforcement.
    pub ephemeral_pins: bool,
    /// Where the daemon keeps what must survive a restart (rule ids).
    pub state_dir: PathBuf,
    pub on_exit: OnExit,
    pub watch: Watch,
    pub dns: Option<Dns>,
    /// `[gateway] hold_forwarding`: IP forwarding stays off while a gateway interface
    /// lacks fwd's programs (at boot, and while one is recreated).
    pub hold_forwarding: bool,
    /// `[[feed]]`s: vendor lists fetched on a schedule into generated vendor files.
    pub feeds: Vec<Feed>,
    pub interfaces: Vec<Interface>,
    /// What `[select]` picks; `None` fields select everything.
    pub vendors: Option<Vec<String>>,
    pub levels: Option<Vec<Level>>,
    pub profiles: BTreeMap<String, String>,
    pub regions: Option<Vec<String>>,
    /// The site's own `[[rule]]`s: vendor `local`, always selected.
    pub local_rules: Vec<Rule>,
    /// The config file itself.
    pub file: PathBuf,
}

impl Config {
    /// The action for `vendor`'s rules.
    pub fn action_for(&self, vendor: &str) -> Action {
        self.vendor_action
            .get(vendor)
            .copied()
            .unwrap_or(self.action)
    }

    /// The names of the interfaces in gateway mode.
    pub fn gateway_interfaces(&self) -> Vec<&str> {
        self.interfaces
            .iter()
            .filter(|i| i.mode == InterfaceMode::Gateway)
            .map(|i| i.name.as_str())
            .collect()
    }

    /// Vendors in audit mode while the policy as a whole enforces.
    pub fn audited_vendors(&self) -> std::collections::BTreeSet<String> {
        self.vendor_action
            .iter()
            .filter(|(_, a)| **a == Action::Audit)
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// The site's selection, judged on `today`. Local rules and the DNS steering rule are
    /// always selected.
    pub fn selection(&self, today: Date) -> Selection {
        let mut vendors = self.vendors.clone();
        if let Some(v) = vendors.as_mut() {
            if !self.local_rules.is_empty() {
                v.push(LOCAL_VENDOR.to_string());
            }
            if self.dns.as_ref().is_some_and(|d| d.steer) {
                v.push(STEER_VENDOR.to_string());
            }
        }
        Selection {
            today,
            vendors,
            levels: self.levels.clone(),
            profiles: self.profiles.clone(),
            regions: self.regions.clone(),
            audit_vendors: self.audited_vendors(),
        }
    }

    /// The one door from a site to a compiled policy: the vendor files of `dir` (the
    /// config's `policy_dir`, unless a command was given another) with the site's own rules
    /// and the steering rule, selected as the config says on `today`, keeping the rule ids
    /// of `previous`. The daemon, `fwd check`, `explain` and `export` compile through here.
    pub fn compile_policies(
        &self,
        dir: &Path,
        today: Date,
        previous: &RuleIds,
    ) -> anyhow::Result<(PolicySet, Compiled)> {
        let set = self.policy_set_from(dir)?;
        let compiled = compile_with_ids(&set, &self.selection(today), previous)?;
        Ok((set, compiled))
    }

    /// Compiles the policies of `dir` with `candidate` in place of the vendor of its id: a
    /// feed's new file, checked before it is written.
    pub fn compile_with_candidate(
        &self,
        dir: &Path,
        candidate: VendorPolicy,
        today: Date,
    ) -> anyhow::Result<Compiled> {
        let files = match self.load_files(dir) {
            Ok(set) => set,
            // The feed's file may be the first one.
            Err(LoadError::Empty { .. }) => PolicySet::default(),
            Err(e) => return Err(e.into()),
        };
        let mut set = self.with_site_rules(files)?;
        set.vendors.retain(|v| v.file != candidate.file);
        if let Some(other) = set
            .vendors
            .iter()
            .find(|v| v.vendor.id == candidate.vendor.id)
        {
            anyhow::bail!(
                "vendor id `{}` is also used by {}: give the feed another id",
                candidate.vendor.id,
                other.file.display()
            );
        }
        set.vendors.push(candidate);
        Ok(compile_with_ids(
            &set,
            &self.selection(today),
            &RuleIds::default(),
        )?)
    }

    /// The vendor files of `dir` plus the site's local rules (and the DNS steering rule).
    fn policy_set_from(&self, dir: &Path) -> Result<PolicySet, LoadError> {
        self.with_site_rules(self.load_files(dir)?)
    }

    /// The vendor files of `dir`; for the config's own policy_dir, layered over the
    /// package's `vendor_policy_dir` when there is one.
    fn load_files(&self, dir: &Path) -> Result<PolicySet, LoadError> {
        match &self.vendor_policy_dir {
            Some(vendor) if dir == self.policy_dir => crate::policy::load_layered(vendor, dir),
            _ => load_dir(dir),
        }
    }

    /// `set` plus the site's local rules (and the DNS steering rule).
    fn with_site_rules(&self, mut set: PolicySet) -> Result<PolicySet, LoadError> {
        if let Some(d) = self.dns.as_ref().filter(|d| d.steer) {
            set.vendors.push(steer_policy(d, &self.file));
        }
        if self.local_rules.is_empty() {
            return Ok(set);
        }
        if let Some(v) = set.vendors.iter().find(|v| v.vendor.id == LOCAL_VENDOR) {
            return Err(LoadError::Policy(PolicyError {
                location: crate::policy::Location {
                    file: v.file.clone(),
                    line: 1,
                    col: 1,
                },
                message: format!(
                    "vendor id `{LOCAL_VENDOR}` is reserved for the [[rule]]s of {}; rename this vendor",
                    self.file.display()
                ),
            }));
        }
        set.vendors.push(VendorPolicy {
            vendor: Vendor {
                id: LOCAL_VENDOR.to_string(),
                name: "Local rules".to_string(),
                source: Some(self.file.display().to_string()),
                reviewed: None,
                notes: None,
            },
            rules: self.local_rules.clone(),
            file: self.file.clone(),
        });
        Ok(set)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] PolicyError),
}
