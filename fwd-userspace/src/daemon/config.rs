//! The site config, `/etc/fwd/fwd.toml`. Unknown keys and bad values are located errors.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::{
    compile::Selection,
    policy::{
        Date, LOCAL_VENDOR, Level, LoadError, PolicyError, PolicySet, RawRule, Rule, SourceMap,
        Vendor, VendorPolicy, build_rules, load_dir,
    },
};

pub const DEFAULT_CONFIG: &str = "/etc/fwd/fwd.toml";
pub const DEFAULT_POLICY_DIR: &str = "/etc/fwd/policies";
pub const DEFAULT_METRICS: &str = "127.0.0.1:9469";
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/fwd";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fwd";
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mode: InterfaceMode,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub policy_dir: PathBuf,
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
    /// Where the daemon keeps what must survive a restart (rule ids).
    pub state_dir: PathBuf,
    pub on_exit: OnExit,
    pub watch: Watch,
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

    /// Vendors in audit mode while the policy as a whole enforces.
    pub fn audited_vendors(&self) -> std::collections::BTreeSet<String> {
        self.vendor_action
            .iter()
            .filter(|(_, a)| **a == Action::Audit)
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// The site's selection, judged on `today`. Local rules are always selected.
    pub fn selection(&self, today: Date) -> Selection {
        let mut vendors = self.vendors.clone();
        if let Some(v) = vendors.as_mut()
            && !self.local_rules.is_empty()
        {
            v.push(LOCAL_VENDOR.to_string());
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

    /// The vendor files of `policy_dir` plus the site's local rules.
    pub fn policy_set(&self) -> Result<PolicySet, LoadError> {
        self.policy_set_from(&self.policy_dir)
    }

    /// The vendor files of `dir` plus the site's local rules.
    pub fn policy_set_from(&self, dir: &Path) -> Result<PolicySet, LoadError> {
        let mut set = load_dir(dir)?;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    policy_dir: Option<String>,
    action: Option<Spanned<String>>,
    #[serde(default)]
    vendor_action: BTreeMap<String, Spanned<String>>,
    flows: Option<RawFlows>,
    #[serde(default)]
    exempt: Vec<Spanned<String>>,
    metrics: Option<RawMetrics>,
    control_socket: Option<String>,
    pin_dir: Option<String>,
    state_dir: Option<String>,
    on_exit: Option<Spanned<String>>,
    reload: Option<RawReload>,
    #[serde(default, rename = "interface")]
    interfaces: Vec<RawInterface>,
    select: Option<RawSelect>,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelect {
    vendors: Option<Vec<String>>,
    levels: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    profiles: BTreeMap<String, String>,
    regions: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlows {
    capacity: Option<Spanned<i64>>,
    tcp_timeout: Option<Spanned<i64>>,
    udp_timeout: Option<Spanned<i64>>,
    other_timeout: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReload {
    watch: Option<bool>,
    debounce_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    mode: Spanned<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Config::parse(path, &text)?)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, PolicyError> {
        let map = SourceMap::new(path, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| map.toml_error(&e))?;
        // A relative policy_dir is relative to the config file.
        let policy_dir = match raw.policy_dir {
            Some(dir) => path.parent().unwrap_or(Path::new(".")).join(dir),
            None => PathBuf::from(DEFAULT_POLICY_DIR),
        };
        let parse_action = |a: &Spanned<String>| match a.get_ref().as_str() {
            "enforce" => Ok(Action::Enforce),
            "audit" => Ok(Action::Audit),
            other => Err(map.error(
                a.span().start,
                format!("unknown action `{other}`; use \"enforce\" or \"audit\""),
            )),
        };
        let action = match &raw.action {
            None => Action::Enforce,
            Some(a) => parse_action(a)?,
        };
        let vendor_action = raw
            .vendor_action
            .iter()
            .map(|(vendor, a)| Ok((vendor.clone(), parse_action(a)?)))
            .collect::<Result<BTreeMap<_, _>, PolicyError>>()?;
        let mut flows = Flows::default();
        if let Some(f) = &raw.flows {
            let seconds = |v: &Option<Spanned<i64>>, key: &str, default: u32| match v {
                None => Ok(default),
                Some(s) => u32::try_from(*s.get_ref())
                    .ok()
                    .filter(|n| (1..=86_400 * 7).contains(n))
                    .ok_or_else(|| {
                        map.error(
                            s.span().start,
                            format!("`{key}` is in seconds, from 1 to 604800 (a week)"),
                        )
                    }),
            };
            flows.tcp_timeout_s = seconds(&f.tcp_timeout, "tcp_timeout", flows.tcp_timeout_s)?;
            flows.udp_timeout_s = seconds(&f.udp_timeout, "udp_timeout", flows.udp_timeout_s)?;
            flows.other_timeout_s =
                seconds(&f.other_timeout, "other_timeout", flows.other_timeout_s)?;
            if let Some(c) = &f.capacity {
                flows.capacity = u32::try_from(*c.get_ref())
                    .ok()
                    .filter(|n| (1024..=1 << 24).contains(n))
                    .ok_or_else(|| {
                        map.error(
                            c.span().start,
                            "`capacity` is a number of flows, from 1024 to 16777216",
                        )
                    })?;
            }
        }
        let exempt = raw
            .exempt
            .iter()
            .map(|e| {
                let t = e.get_ref().trim();
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        map.error(
                            e.span().start,
                            format!("exemption `{t}` is not an address or network"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        let metrics_listen = match raw.metrics {
            None => DEFAULT_METRICS.parse().expect("valid default"),
            Some(m) => m.listen.get_ref().parse().map_err(|_| {
                map.error(
                    m.listen.span().start,
                    format!(
                        "metrics listen address `{}` is not ADDRESS:PORT (e.g. 127.0.0.1:9469)",
                        m.listen.get_ref()
                    ),
                )
            })?,
        };
        let mut interfaces = Vec::new();
        for i in raw.interfaces {
            let mode = match i.mode.get_ref().as_str() {
                "gateway" => InterfaceMode::Gateway,
                "host" => InterfaceMode::Host,
                other => {
                    return Err(map.error(
                        i.mode.span().start,
                        format!(
                            "unknown interface mode `{other}`; use \"gateway\" (a gateway's LAN interface) or \"host\" (this host's uplink)"
                        ),
                    ));
                }
            };
            interfaces.push(Interface {
                name: i.name.into_inner(),
                mode,
            });
        }
        let select = raw.select.unwrap_or(RawSelect {
            vendors: None,
            levels: None,
            profiles: BTreeMap::new(),
            regions: None,
        });
        let levels = select
            .levels
            .map(|levels| {
                levels
                    .iter()
                    .map(|l| Level::parse(l.get_ref()).map_err(|m| map.error(l.span().start, m)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let local_rules = build_rules(&map, raw.rules)?;
        let on_exit = match &raw.on_exit {
            None => OnExit::Keep,
            Some(s) => match s.get_ref().as_str() {
                "keep" => OnExit::Keep,
                "detach" => OnExit::Detach,
                other => {
                    return Err(map.error(
                        s.span().start,
                        format!(
                            "unknown on_exit `{other}`; use \"keep\" (programs stay attached and keep enforcing) or \"detach\" (a stop removes them)"
                        ),
                    ));
                }
            },
        };
        let mut watch = Watch {
            enabled: true,
            debounce_ms: DEFAULT_DEBOUNCE_MS,
        };
        if let Some(r) = &raw.reload {
            watch.enabled = r.watch.unwrap_or(true);
            if let Some(d) = &r.debounce_ms {
                watch.debounce_ms = u64::try_from(*d.get_ref())
                    .ok()
                    .filter(|n| (10..=60_000).contains(n))
                    .ok_or_else(|| {
                        map.error(
                            d.span().start,
                            "`debounce_ms` is in milliseconds, from 10 to 60000",
                        )
                    })?;
            }
        }
        // Like policy_dir, a relative path is relative to the config file.
        let relative = |s: String| path.parent().unwrap_or(Path::new(".")).join(s);
        Ok(Config {
            policy_dir,
            action,
            vendor_action,
            flows,
            exempt,
            metrics_listen,
            control_socket: raw
                .control_socket
                .map_or_else(|| PathBuf::from(super::control::DEFAULT_SOCKET), relative),
            pin_dir: raw
                .pin_dir
                .map_or_else(|| PathBuf::from(DEFAULT_PIN_DIR), relative),
            state_dir: raw
                .state_dir
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), relative),
            on_exit,
            watch,
            interfaces,
            vendors: select.vendors,
            levels,
            profiles: select.profiles,
            regions: select.regions,
            local_rules,
            file: path.to_path_buf(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(Path::new("/etc/fwd/fwd.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.policy_dir, PathBuf::from(DEFAULT_POLICY_DIR));
        assert_eq!(c.action, Action::Enforce);
        assert_eq!(c.metrics_listen.to_string(), DEFAULT_METRICS);
        assert!(c.interfaces.is_empty());
        assert_eq!(c.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.on_exit, OnExit::Keep);
        assert!(c.watch.enabled);
    }

    #[test]
    fn lifecycle_keys() {
        let c = parse(
            "pin_dir = \"/sys/fs/bpf/fwd-lab\"\nstate_dir = \"state\"\non_exit = \"detach\"\n\
             [reload]\nwatch = false\ndebounce_ms = 200\n",
        )
        .unwrap();
        assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/fwd-lab"));
        assert_eq!(c.state_dir, PathBuf::from("/etc/fwd/state"));
        assert_eq!(c.on_exit, OnExit::Detach);
        assert_eq!(
            c.watch,
            Watch {
                enabled: false,
                debounce_ms: 200
            }
        );
        let err = parse("action = \"audit\"\non_exit = \"stop\"\n").unwrap_err();
        assert!(err.starts_with("/etc/fwd/fwd.toml:2:11:"), "{err}");
        assert!(err.contains("\"keep\""), "{err}");
        let err = parse("[reload]\ndebounce_ms = 0\n").unwrap_err();
        assert!(err.starts_with("/etc/fwd/fwd.toml:2:15:"), "{err}");
    }

    #[test]
    fn full() {
        let c = parse(
            "policy_dir = \"policies\"\naction = \"audit\"\nexempt = [\"192.0.2.0/24\", \"2001:db8::1\"]\n\
             [metrics]\nlisten = \"0.0.0.0:9000\"\n[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n",
        )
        .unwrap();
        assert_eq!(c.policy_dir, PathBuf::from("/etc/fwd/policies"));
        assert_eq!(c.action, Action::Audit);
        assert_eq!(c.exempt.len(), 2);
        assert_eq!(c.metrics_listen.port(), 9000);
        assert_eq!(c.interfaces[0].name, "lan0");
        assert_eq!(c.vendors, None);
    }

    #[test]
    fn select() {
        let c = parse(
            "[select]\nvendors = [\"pexip\"]\nlevels = [\"mandatory\"]\nregions = [\"global\"]\n\
             profiles = { pexip = \"restricted\" }\n",
        )
        .unwrap();
        assert_eq!(c.vendors, Some(vec!["pexip".to_string()]));
        assert_eq!(c.levels, Some(vec![Level::Mandatory]));
        assert_eq!(
            c.profiles.get("pexip").map(String::as_str),
            Some("restricted")
        );
        let e = parse("[select]\nlevels = [\"urgent\"]\n").unwrap_err();
        assert!(
            e.starts_with("/etc/fwd/fwd.toml:2:11: unknown level `urgent`"),
            "{e}"
        );
    }

    #[test]
    fn local_rules_join_the_policy_as_vendor_local() {
        let dir = std::env::temp_dir().join(format!("fwd-config-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("pexip.toml"),
            "[vendor]\nid = \"pexip\"\nname = \"Pexip\"\n[[rule]]\nid = \"web\"\nservice = \"Web\"\n\
             protocol = \"tcp\"\nports = [443]\nremote = \"176.121.88.0/21\"\n",
        )
        .unwrap();
        let config = parse(
            "[select]\nvendors = [\"pexip\"]\n\n[[rule]]\nid = \"ehr\"\nservice = \"EHR backend\"\n\
             protocol = \"tcp\"\nports = [8443]\nremote = \"192.0.2.10\"\n",
        )
        .unwrap();
        assert_eq!(config.local_rules.len(), 1);
        assert_eq!(config.local_rules[0].location.line, 4);
        let set = config.policy_set_from(&dir).unwrap();
        assert_eq!(set.vendors.len(), 2);
        let local = &set.vendors[1];
        assert_eq!(local.vendor.id, LOCAL_VENDOR);
        assert_eq!(local.file, PathBuf::from("/etc/fwd/fwd.toml"));
        // `[select] vendors` does not drop the site's own rules.
        let today = Date::parse("2026-11-21").unwrap();
        let compiled = crate::compile::compile(&set, &config.selection(today)).unwrap();
        let names: Vec<String> = compiled
            .image
            .rules
            .iter()
            .map(|r| format!("{}/{}", r.vendor, r.rule))
            .collect();
        assert!(names.contains(&"local/ehr".to_string()), "{names:?}");
        assert!(names.contains(&"pexip/web".to_string()), "{names:?}");

        // A vendor file may not take the reserved id.
        std::fs::write(
            dir.join("local.toml"),
            "[vendor]\nid = \"local\"\nname = \"Mine\"\n",
        )
        .unwrap();
        let e = config.policy_set_from(&dir).unwrap_err().to_string();
        assert!(e.contains("vendor id `local` is reserved"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // Local rules are checked like vendor rules, with the config's line numbers.
        let e = parse("\n[[rule]]\nid = \"x\"\nservice = \"X\"\nprotocol = \"tcp\"\nports = [70000]\nremote = \"any\"\n")
            .unwrap_err();
        assert!(e.starts_with("/etc/fwd/fwd.toml:6:10: port 70000"), "{e}");
    }

    #[test]
    fn errors_are_located() {
        let e = parse("action = \"block\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/fwd/fwd.toml:1:10: unknown action `block`"),
            "{e}"
        );
        let e = parse("\nexempt = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(e.starts_with("/etc/fwd/fwd.toml:2:11: exemption"), "{e}");
        let e = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/fwd/fwd.toml:2:10: metrics listen"),
            "{e}"
        );
        let e = parse("polcy_dir = \"x\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/fwd/fwd.toml:1:1: unknown field `polcy_dir`"),
            "{e}"
        );
        let e = parse("[[interface]]\nname = \"lan0\"\nmode = \"bridge\"\n").unwrap_err();
        assert!(
            e.starts_with("/etc/fwd/fwd.toml:3:8: unknown interface mode"),
            "{e}"
        );
    }
}
