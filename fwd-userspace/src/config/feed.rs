//! `[[feed]]`: a vendor list fetched over HTTPS on a schedule and turned into a generated
//! vendor file, as `fwd import` would write it, with the guards that keep a bad fetch from
//! widening or emptying the policy.

use std::{path::PathBuf, time::Duration};

use clap::ValueEnum as _;
use serde::Deserialize;
use toml::Spanned;

use crate::import::{Format, ImportArgs, LevelArg, ProtocolArg};
use crate::policy::{Location, PolicyError, SourceMap};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeed {
    id: Spanned<String>,
    url: Spanned<String>,
    format: Option<Spanned<String>>,
    vendor_name: Option<String>,
    rule: Option<String>,
    service: Spanned<String>,
    #[serde(default)]
    protocol: Vec<Spanned<String>>,
    ports: Option<Spanned<String>>,
    level: Option<Spanned<String>>,
    region: Option<String>,
    #[serde(default)]
    aws_services: Vec<String>,
    #[serde(default)]
    aws_regions: Vec<String>,
    #[serde(default)]
    google_scopes: Vec<String>,
    #[serde(default)]
    m365_areas: Vec<String>,
    #[serde(default)]
    m365_categories: Vec<String>,
    refresh_s: Option<Spanned<i64>>,
    max_shrink_percent: Option<Spanned<i64>>,
    widest_ipv4: Option<Spanned<i64>>,
    widest_ipv6: Option<Spanned<i64>>,
    allow_private: Option<bool>,
    max_bytes: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    ca_file: Option<String>,
    version_url: Option<Spanned<String>>,
}

/// What a good fetch does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedMode {
    /// Written into the policy directory and put in force.
    Apply,
    /// Written beside it as `<file>.proposed`, for a person to review and move into place.
    Propose,
}

/// One `[[feed]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feed {
    /// The feed id: also the vendor id of the generated file (`<id>.feed.toml`).
    pub id: String,
    pub url: String,
    /// The rule the list becomes, as `fwd import`'s arguments.
    pub import: ImportArgs,
    /// How often the daemon fetches it.
    pub refresh: Duration,
    /// A list that lost more than this share of its prefixes is refused.
    pub max_shrink_percent: u8,
    /// Prefixes shorter than these are refused (too wide to be a vendor's).
    pub widest_ipv4: u8,
    pub widest_ipv6: u8,
    /// Private, loopback, link-local and multicast addresses are refused unless allowed.
    pub allow_private: bool,
    /// A response larger than this is refused.
    pub max_bytes: u64,
    pub mode: FeedMode,
    /// Trust this CA (PEM) instead of the usual roots: an internal mirror.
    pub ca_file: Option<PathBuf>,
    /// Microsoft 365's version service for this list (`{"latest": "..."}`): asked first, and
    /// the list is fetched only when the version moved.
    pub version_url: Option<String>,
    pub location: Location,
}

impl Feed {
    /// The generated vendor file's name in the policy directory.
    pub fn file_name(&self) -> String {
        format!("{}.feed.toml", self.id)
    }
}

pub const DEFAULT_REFRESH_S: i64 = 6 * 3600;
pub const DEFAULT_MAX_SHRINK_PERCENT: i64 = 50;
pub const DEFAULT_MAX_BYTES: i64 = 16 << 20;

pub(super) fn parse_feed(
    map: &SourceMap,
    raw: &Spanned<RawFeed>,
    config_dir: &std::path::Path,
) -> Result<Feed, PolicyError> {
    let at = raw.span().start;
    let f = raw.get_ref();
    let id = f.id.get_ref().clone();
    let url = f.url.get_ref().trim().to_string();
    if !url.starts_with("https://") || url.len() <= "https://".len() {
        return Err(map.error(
            f.url.span().start,
            format!(
                "[[feed]] `{id}`: url `{url}` must be https:// (feeds are fetched over TLS only)"
            ),
        ));
    }
    let format = match &f.format {
        None => Format::Text,
        Some(s) => map.keyword(
            s,
            "feed format",
            &[
                (
                    "text",
                    Format::Text,
                    "one address, network or range per line",
                ),
                ("aws", Format::Aws, "AWS ip-ranges.json"),
                ("google", Format::Google, "Google's goog.json or cloud.json"),
                ("m365", Format::M365, "Microsoft 365's endpoints JSON"),
            ],
        )?,
    };
    let mut protocol = Vec::new();
    for p in &f.protocol {
        protocol.push(ProtocolArg::from_str(p.get_ref(), true).map_err(|_| {
            map.error(
                p.span().start,
                format!(
                    "[[feed]] `{id}`: unknown protocol `{}` (tcp, udp, icmp or any)",
                    p.get_ref()
                ),
            )
        })?);
    }
    if protocol.is_empty() {
        protocol.push(ProtocolArg::Tcp);
    }
    let level = match &f.level {
        None => LevelArg::Mandatory,
        Some(l) => LevelArg::from_str(l.get_ref(), true).map_err(|_| {
            map.error(
                l.span().start,
                format!(
                    "[[feed]] `{id}`: unknown level `{}` (mandatory, recommended or optional)",
                    l.get_ref()
                ),
            )
        })?,
    };
    let import = ImportArgs {
        input: PathBuf::from(&url),
        format,
        aws_services: f.aws_services.clone(),
        aws_regions: f.aws_regions.clone(),
        google_scopes: f.google_scopes.clone(),
        m365_areas: f.m365_areas.clone(),
        m365_categories: f.m365_categories.clone(),
        vendor: id.clone(),
        vendor_name: f.vendor_name.clone(),
        rule: f.rule.clone().unwrap_or_else(|| "feed".to_string()),
        service: f.service.get_ref().clone(),
        protocol,
        ports: f.ports.as_ref().map(|p| p.get_ref().clone()),
        level,
        region: f.region.clone(),
        source: Some(url.clone()),
        output: None,
        force: true,
    };
    // The same checks `fwd import` makes of its arguments, located at the feed.
    crate::import::check_args(&import).map_err(|e| {
        map.error(
            at,
            format!(
                "[[feed]] `{id}`: {}",
                e.to_string()
                    .replace("--vendor", "id")
                    .replace("--rule", "rule")
                    .replace("--service", "service")
                    .replace("--ports", "ports")
                    .replace("--protocol", "protocol")
                    .replace("--format", "format")
                    .replace("--aws-service", "aws_services")
                    .replace("--aws-region", "aws_regions")
                    .replace("--google-scope", "google_scopes")
                    .replace("--m365-area", "m365_areas")
                    .replace("--m365-category", "m365_categories")
            ),
        )
    })?;
    let number = |v: &Option<Spanned<i64>>, range, what: &str, default: i64| match v {
        None => Ok(default),
        Some(s) => map.number_in(s, range, &format!("[[feed]] `{id}`: {what}")),
    };
    let refresh = number(
        &f.refresh_s,
        60..=7 * 86_400,
        "`refresh_s` is in seconds",
        DEFAULT_REFRESH_S,
    )?;
    let max_shrink = number(
        &f.max_shrink_percent,
        0..=100,
        "`max_shrink_percent` is a percentage",
        DEFAULT_MAX_SHRINK_PERCENT,
    )?;
    let widest_ipv4 = number(
        &f.widest_ipv4,
        0..=32,
        "`widest_ipv4` is a prefix length",
        8,
    )?;
    let widest_ipv6 = number(
        &f.widest_ipv6,
        0..=128,
        "`widest_ipv6` is a prefix length",
        19,
    )?;
    let max_bytes = number(
        &f.max_bytes,
        1024..=1 << 30,
        "`max_bytes` is a size in bytes",
        DEFAULT_MAX_BYTES,
    )?;
    let mode = match &f.mode {
        None => FeedMode::Apply,
        Some(m) => map.keyword(
            m,
            "feed mode",
            &[
                ("apply", FeedMode::Apply, "a good fetch is put in force"),
                (
                    "propose",
                    FeedMode::Propose,
                    "a good fetch is written beside the policy as <file>.proposed",
                ),
            ],
        )?,
    };
    let version_url = match &f.version_url {
        None => None,
        Some(v) if format != Format::M365 => {
            return Err(map.error(
                v.span().start,
                format!("[[feed]] `{id}`: version_url is Microsoft 365's version service; it goes with format = \"m365\""),
            ));
        }
        Some(v) if !v.get_ref().starts_with("https://") => {
            return Err(map.error(
                v.span().start,
                format!("[[feed]] `{id}`: version_url must be https://"),
            ));
        }
        Some(v) => Some(v.get_ref().clone()),
    };
    Ok(Feed {
        id,
        url,
        import,
        refresh: Duration::from_secs(refresh as u64),
        max_shrink_percent: max_shrink as u8,
        widest_ipv4: widest_ipv4 as u8,
        widest_ipv6: widest_ipv6 as u8,
        allow_private: f.allow_private.unwrap_or(false),
        max_bytes: max_bytes as u64,
        mode,
        ca_file: f.ca_file.as_ref().map(|p| config_dir.join(p)),
        version_url,
        location: map.location(at),
    })
}
