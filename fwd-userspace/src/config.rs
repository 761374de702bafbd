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
    compile::{Compiled, RuleIds, Selection, compile_with_ids},
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
    pub fn restart_keys(&self) -> (&[SocketAddr], &[SocketAddr], u64, bool) {
        (&self.listen, &self.upstream, self.timeout_ms, self.steer)
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
    pub dns: Option<Dns>,
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

    /// The vendor files of `dir` plus the site's local rules (and the DNS steering rule).
    fn policy_set_from(&self, dir: &Path) -> Result<PolicySet, LoadError> {
        let mut set = load_dir(dir)?;
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
    dns: Option<Spanned<RawDns>>,
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
struct RawDns {
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    upstream: Vec<Spanned<String>>,
    min_ttl: Option<Spanned<i64>>,
    max_ttl: Option<Spanned<i64>>,
    max_addresses: Option<Spanned<i64>>,
    timeout_ms: Option<Spanned<i64>>,
    steer: Option<bool>,
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
        let parse_action = |a: &Spanned<String>| {
            map.keyword(
                a,
                "action",
                &[
                    ("enforce", Action::Enforce, ""),
                    ("audit", Action::Audit, ""),
                ],
            )
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
            // At most a week.
            let seconds = |v: &Option<Spanned<i64>>, key: &str, default: u32| match v {
                None => Ok(default),
                Some(s) => map.number_in(s, 1..=86_400 * 7, &format!("`{key}` is in seconds")),
            };
            flows.tcp_timeout_s = seconds(&f.tcp_timeout, "tcp_timeout", flows.tcp_timeout_s)?;
            flows.udp_timeout_s = seconds(&f.udp_timeout, "udp_timeout", flows.udp_timeout_s)?;
            flows.other_timeout_s =
                seconds(&f.other_timeout, "other_timeout", flows.other_timeout_s)?;
            if let Some(c) = &f.capacity {
                flows.capacity =
                    map.number_in(c, 1024..=1 << 24, "`capacity` is a number of flows")?;
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
            let mode = map.keyword(
                &i.mode,
                "interface mode",
                &[
                    (
                        "gateway",
                        InterfaceMode::Gateway,
                        "a gateway's LAN interface",
                    ),
                    ("host", InterfaceMode::Host, "this host's uplink"),
                ],
            )?;
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
                    .map(|l| map.keyword(l, "level", Level::KEYWORDS))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let local_rules = build_rules(&map, raw.rules)?;
        let on_exit = match &raw.on_exit {
            None => OnExit::Keep,
            Some(s) => map.keyword(
                s,
                "on_exit",
                &[
                    (
                        "keep",
                        OnExit::Keep,
                        "programs stay attached and keep enforcing",
                    ),
                    ("detach", OnExit::Detach, "a stop removes them"),
                ],
            )?,
        };
        let mut watch = Watch {
            enabled: true,
            debounce_ms: DEFAULT_DEBOUNCE_MS,
        };
        if let Some(r) = &raw.reload {
            watch.enabled = r.watch.unwrap_or(true);
            if let Some(d) = &r.debounce_ms {
                watch.debounce_ms =
                    map.number_in(d, 10..=60_000, "`debounce_ms` is in milliseconds")?;
            }
        }
        let dns = raw
            .dns
            .as_ref()
            .map(|d| parse_dns(&map, d.get_ref(), d.span().start))
            .transpose()?;
        if let (Some(d), Some(raw_dns)) = (&dns, &raw.dns)
            && d.steer
            && !interfaces.iter().any(|i| i.mode == InterfaceMode::Gateway)
        {
            return Err(map.error(
                raw_dns.span().start,
                "[dns] steer redirects a LAN's DNS on a gateway; it needs an [[interface]] with mode = \"gateway\"",
            ));
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
                .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), relative),
            pin_dir: raw
                .pin_dir
                .map_or_else(|| PathBuf::from(DEFAULT_PIN_DIR), relative),
            state_dir: raw
                .state_dir
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), relative),
            on_exit,
            watch,
            dns,
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

/// With `[dns] steer`, the LAN's DNS to any address must get past the gateway's program
/// to the redirect in the kernel's stack (which hands it to the proxy); this rule lets it
/// through and records the flow, so the proxy's replies pass back.
fn steer_policy(d: &Dns, file: &Path) -> VendorPolicy {
    use crate::policy::{Direction, PortRange, PortSide, Protocol, Remote};
    VendorPolicy {
        vendor: Vendor {
            id: STEER_VENDOR.to_string(),
            name: "fwd".to_string(),
            source: Some(file.display().to_string()),
            reviewed: None,
            notes: Some("Added by [dns] steer: the LAN's DNS goes to fwd's proxy.".to_string()),
        },
        rules: vec![Rule {
            id: STEER_RULE.to_string(),
            service: "DNS to the gateway's proxy ([dns] steer)".to_string(),
            purpose: None,
            level: Level::Mandatory,
            profile: None,
            region: None,
            direction: Direction::Egress,
            protocols: vec![Protocol::Udp, Protocol::Tcp],
            ports: vec![PortRange { lo: 53, hi: 53 }],
            port_side: PortSide::Remote,
            related: false,
            remotes: vec![Remote::Any],
            not_before: None,
            not_after: None,
            notes: None,
            todo: None,
            location: d.location.clone(),
        }],
        file: file.to_path_buf(),
    }
}

/// `ADDRESS` or `ADDRESS:PORT` (`[2001:db8::53]:53` for IPv6 with a port); port 53 if none.
fn dns_address(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(|a| (a, 53).into())
    })
}

fn parse_dns(map: &SourceMap, d: &RawDns, at: usize) -> Result<Dns, PolicyError> {
    let addresses = |list: &[Spanned<String>], key: &str| {
        list.iter()
            .map(|a| {
                dns_address(a.get_ref()).ok_or_else(|| {
                    map.error(
                        a.span().start,
                        format!(
                            "[dns] {key}: `{}` is not ADDRESS or ADDRESS:PORT (e.g. 192.0.2.53, [2001:db8::53]:53)",
                            a.get_ref()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let listen = addresses(&d.listen, "listen")?;
    let upstream = addresses(&d.upstream, "upstream")?;
    if upstream.is_empty() {
        return Err(map.error(
            at,
            "[dns] needs `upstream`, the resolvers fwd asks, e.g. upstream = [\"192.0.2.53\"]",
        ));
    }
    if let Some(a) = upstream.iter().find(|u| listen.contains(u)) {
        return Err(map.error(
            at,
            format!("[dns] upstream {a} is also a listen address: fwd would ask itself"),
        ));
    }
    let number = |v: &Option<Spanned<i64>>,
                  what: &str,
                  range: std::ops::RangeInclusive<i64>,
                  default: i64| match v {
        None => Ok(default),
        Some(s) => map.number_in(s, range, &format!("[dns] {what}")),
    };
    let defaults = DnsLimits::default();
    let min_ttl = number(
        &d.min_ttl,
        "`min_ttl` is in seconds",
        0..=86_400,
        i64::from(defaults.min_ttl),
    )?;
    let max_ttl = number(
        &d.max_ttl,
        "`max_ttl` is in seconds",
        1..=604_800,
        i64::from(defaults.max_ttl),
    )?;
    if min_ttl > max_ttl
        && let Some(s) = d.min_ttl.as_ref().or(d.max_ttl.as_ref())
    {
        return Err(map.error(
            s.span().start,
            format!("[dns] min_ttl ({min_ttl}) is above max_ttl ({max_ttl})"),
        ));
    }
    let max_addresses = number(
        &d.max_addresses,
        "`max_addresses` is a number of addresses",
        1..=65_536,
        defaults.max_addresses as i64,
    )?;
    let timeout_ms = number(
        &d.timeout_ms,
        "`timeout_ms` is in milliseconds",
        10..=30_000,
        DEFAULT_DNS_TIMEOUT_MS as i64,
    )?;
    Ok(Dns {
        listen,
        upstream,
        limits: DnsLimits {
            min_ttl: min_ttl as u32,
            max_ttl: max_ttl as u32,
            max_addresses: max_addresses as usize,
        },
        timeout_ms: timeout_ms as u64,
        steer: d.steer.unwrap_or(false),
        location: map.location(at),
    })
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

    /// The builder the tests, the lab and the benches write their configs with says what
    /// this parser reads.
    #[test]
    fn the_lab_site_config_builder_writes_what_this_reads() {
        let text = fwd_lab::SiteConfig::new("pol")
            .comment("a test")
            .action("audit")
            .pin_dir("/sys/fs/bpf/t")
            .state_dir("st")
            .control_socket("c.sock")
            .on_exit("detach")
            .top("exempt = [\"192.0.2.0/24\"]")
            .metrics("127.0.0.1:9")
            .watch(false)
            .gateway("lan0")
            .host("eth0")
            .tables("[select]\nlevels = [\"mandatory\"]")
            .render();
        let c = parse(&text).unwrap();
        assert_eq!(c.policy_dir, PathBuf::from("/etc/fwd/pol"));
        assert_eq!(c.action, Action::Audit);
        assert_eq!(c.pin_dir, PathBuf::from("/sys/fs/bpf/t"));
        assert_eq!(c.state_dir, PathBuf::from("/etc/fwd/st"));
        assert_eq!(c.control_socket, PathBuf::from("/etc/fwd/c.sock"));
        assert_eq!(c.on_exit, OnExit::Detach);
        assert_eq!(c.exempt, vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(c.metrics_listen.to_string(), "127.0.0.1:9");
        assert!(!c.watch.enabled);
        let modes: Vec<_> = c
            .interfaces
            .iter()
            .map(|i| (i.name.as_str(), i.mode))
            .collect();
        assert_eq!(
            modes,
            [
                ("lan0", InterfaceMode::Gateway),
                ("eth0", InterfaceMode::Host)
            ]
        );
        assert_eq!(c.levels, Some(vec![Level::Mandatory]));
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
    fn dns_section() {
        let c = parse(
            "[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n\
             [dns]\nupstream = [\"192.0.2.53\", \"[2001:db8::53]:5353\"]\nlisten = [\"10.0.0.1\"]\n\
             min_ttl = 5\nmax_ttl = 600\nmax_addresses = 32\nsteer = true\n",
        )
        .unwrap();
        let dns = c.dns.unwrap();
        assert_eq!(dns.upstream[0].to_string(), "192.0.2.53:53");
        assert_eq!(dns.upstream[1].to_string(), "[2001:db8::53]:5353");
        assert_eq!(dns.listen[0].to_string(), "10.0.0.1:53");
        assert_eq!(dns.limits.min_ttl, 5);
        assert_eq!(dns.limits.max_ttl, 600);
        assert_eq!(dns.limits.max_addresses, 32);
        assert_eq!(dns.timeout_ms, DEFAULT_DNS_TIMEOUT_MS);
        assert!(dns.steer);
        assert!(parse("").unwrap().dns.is_none());
        let err = parse("[dns]\nlisten = [\"127.0.0.53\"]\n").unwrap_err();
        assert!(err.contains("needs `upstream`"), "{err}");
        let err = parse("[dns]\nupstream = [\"resolver\"]\n").unwrap_err();
        assert!(err.starts_with("/etc/fwd/fwd.toml:2:13:"), "{err}");
        let err =
            parse("[dns]\nupstream = [\"192.0.2.53\"]\nmin_ttl = 90\nmax_ttl = 60\n").unwrap_err();
        assert!(err.contains("min_ttl (90) is above max_ttl (60)"), "{err}");
        let err = parse("[dns]\nupstream = [\"192.0.2.53\"]\nlisten = [\"192.0.2.53:53\"]\n")
            .unwrap_err();
        assert!(err.contains("ask itself"), "{err}");
        // A vendor selection keeps the steering rule.
        let c = parse(
            "[[interface]]\nname = \"lan0\"\nmode = \"gateway\"\n[select]\nvendors = [\"whereby\"]\n\
             [dns]\nupstream = [\"192.0.2.53\"]\nsteer = true\n",
        )
        .unwrap();
        let selection = c.selection(Date::parse("2026-11-21").unwrap());
        assert_eq!(
            selection.vendors,
            Some(vec!["whereby".to_string(), STEER_VENDOR.to_string()])
        );
        let err = parse("[dns]\nupstream = [\"192.0.2.53\"]\nsteer = true\n").unwrap_err();
        assert!(
            err.contains("needs an [[interface]] with mode = \"gateway\""),
            "{err}"
        );
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
            .map(|r| r.rule_ref().to_string())
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
