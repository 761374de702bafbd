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
    policy::{Date, Level, PolicyError, SourceMap},
};

pub const DEFAULT_CONFIG: &str = "/etc/fwd/fwd.toml";
pub const DEFAULT_POLICY_DIR: &str = "/etc/fwd/policies";
pub const DEFAULT_METRICS: &str = "127.0.0.1:9469";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Drop what no rule allows.
    Enforce,
    /// Pass everything; count what would have been dropped.
    Audit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterfaceMode {
    /// XDP on the LAN-facing interface of a gateway.
    Gateway,
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
    pub exempt: Vec<IpNet>,
    pub metrics_listen: SocketAddr,
    pub interfaces: Vec<Interface>,
    /// What `[select]` picks; `None` fields select everything.
    pub vendors: Option<Vec<String>>,
    pub levels: Option<Vec<Level>>,
    pub profiles: BTreeMap<String, String>,
    pub regions: Option<Vec<String>>,
}

impl Config {
    /// The site's selection, judged on `today`.
    pub fn selection(&self, today: Date) -> Selection {
        Selection {
            today,
            vendors: self.vendors.clone(),
            levels: self.levels.clone(),
            profiles: self.profiles.clone(),
            regions: self.regions.clone(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    policy_dir: Option<String>,
    action: Option<Spanned<String>>,
    #[serde(default)]
    exempt: Vec<Spanned<String>>,
    metrics: Option<RawMetrics>,
    #[serde(default, rename = "interface")]
    interfaces: Vec<RawInterface>,
    select: Option<RawSelect>,
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
        let action = match raw.action {
            None => Action::Enforce,
            Some(a) => match a.get_ref().as_str() {
                "enforce" => Action::Enforce,
                "audit" => Action::Audit,
                other => {
                    return Err(map.error(
                        a.span().start,
                        format!("unknown action `{other}`; use \"enforce\" or \"audit\""),
                    ));
                }
            },
        };
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
                other => {
                    return Err(map.error(
                        i.mode.span().start,
                        format!("unknown interface mode `{other}`; use \"gateway\""),
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
        Ok(Config {
            policy_dir,
            action,
            exempt,
            metrics_listen,
            interfaces,
            vendors: select.vendors,
            levels,
            profiles: select.profiles,
            regions: select.regions,
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
