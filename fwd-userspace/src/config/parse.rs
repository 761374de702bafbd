//! Reading `fwd.toml`: the raw TOML shapes and the checks that turn them into a `Config`,
//! every mistake located.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::policy::{Level, PolicyError, RawRule, SourceMap, build_rules};

use super::{
    Action, Config, ConfigError, DEFAULT_DEBOUNCE_MS, DEFAULT_DNS_TIMEOUT_MS, DEFAULT_METRICS,
    DEFAULT_PIN_DIR, DEFAULT_POLICY_DIR, DEFAULT_SOCKET, DEFAULT_STATE_DIR, Dns, DnsLimits, Flows,
    Interface, InterfaceMode, OnExit, Watch,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) policy_dir: Option<String>,
    pub(super) vendor_policy_dir: Option<String>,
    pub(super) action: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) vendor_action: BTreeMap<String, Spanned<String>>,
    pub(super) flows: Option<RawFlows>,
    #[serde(default)]
    pub(super) exempt: Vec<Spanned<String>>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) control_socket: Option<String>,
    pub(super) pin_dir: Option<String>,
    pub(super) pins: Option<Spanned<String>>,
    pub(super) state_dir: Option<String>,
    pub(super) on_exit: Option<Spanned<String>>,
    pub(super) reload: Option<RawReload>,
    pub(super) dns: Option<Spanned<RawDns>>,
    pub(super) gateway: Option<Spanned<RawGateway>>,
    #[serde(default, rename = "feed")]
    pub(super) feeds: Vec<Spanned<super::feed::RawFeed>>,
    #[serde(default, rename = "interface")]
    pub(super) interfaces: Vec<RawInterface>,
    pub(super) select: Option<RawSelect>,
    #[serde(default, rename = "rule")]
    pub(super) rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSelect {
    pub(super) vendors: Option<Vec<String>>,
    pub(super) levels: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub(super) profiles: BTreeMap<String, String>,
    pub(super) regions: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlows {
    pub(super) capacity: Option<Spanned<i64>>,
    pub(super) tcp_timeout: Option<Spanned<i64>>,
    pub(super) udp_timeout: Option<Spanned<i64>>,
    pub(super) other_timeout: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    pub(super) watch: Option<bool>,
    pub(super) debounce_ms: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[serde(default)]
    pub(super) listen: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) upstream: Vec<Spanned<String>>,
    pub(super) min_ttl: Option<Spanned<i64>>,
    pub(super) max_ttl: Option<Spanned<i64>>,
    pub(super) max_addresses: Option<Spanned<i64>>,
    pub(super) timeout_ms: Option<Spanned<i64>>,
    pub(super) steer: Option<bool>,
    pub(super) doh_canary: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) hold_forwarding: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    pub(super) listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    pub(super) name: Spanned<String>,
    pub(super) mode: Spanned<String>,
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
        let vendor_policy_dir = raw
            .vendor_policy_dir
            .map(|dir| path.parent().unwrap_or(Path::new(".")).join(dir));
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
        let ephemeral_pins = match &raw.pins {
            None => false,
            Some(s) => map.keyword(
                s,
                "pins",
                &[
                    (
                        "persistent",
                        false,
                        "they must outlive fwd; a bpf filesystem of a private mount namespace is refused",
                    ),
                    (
                        "ephemeral",
                        true,
                        "accept pins that die with fwd, and with them enforcement",
                    ),
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
        let hold_forwarding = match &raw.gateway {
            Some(g) if g.get_ref().hold_forwarding == Some(true) => {
                if !interfaces.iter().any(|i| i.mode == InterfaceMode::Gateway) {
                    return Err(map.error(
                        g.span().start,
                        "[gateway] hold_forwarding keeps a gateway from forwarding until fwd's programs are on its LAN interfaces; it needs an [[interface]] with mode = \"gateway\"",
                    ));
                }
                true
            }
            _ => false,
        };
        let config_dir = path.parent().unwrap_or(Path::new("."));
        let mut feeds: Vec<super::Feed> = Vec::new();
        for raw_feed in &raw.feeds {
            let feed = super::feed::parse_feed(&map, raw_feed, config_dir)?;
            if feeds.iter().any(|f| f.id == feed.id) {
                return Err(map.error(
                    raw_feed.span().start,
                    format!(
                        "[[feed]] id `{}` is used twice; each feed writes its own vendor file",
                        feed.id
                    ),
                ));
            }
            feeds.push(feed);
        }
        // Like policy_dir, a relative path is relative to the config file.
        let relative = |s: String| path.parent().unwrap_or(Path::new(".")).join(s);
        Ok(Config {
            policy_dir,
            vendor_policy_dir,
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
            ephemeral_pins,
            state_dir: raw
                .state_dir
                .map_or_else(|| PathBuf::from(DEFAULT_STATE_DIR), relative),
            on_exit,
            watch,
            dns,
            hold_forwarding,
            feeds,
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

/// `ADDRESS` or `ADDRESS:PORT` (`[2001:db8::53]:53` for IPv6 with a port); port 53 if none.
pub(super) fn dns_address(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(|a| (a, 53).into())
    })
}

pub(super) fn parse_dns(map: &SourceMap, d: &RawDns, at: usize) -> Result<Dns, PolicyError> {
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
        doh_canary: d.doh_canary.unwrap_or(true),
        location: map.location(at),
    })
}
