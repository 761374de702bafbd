//! Vendor policy files: format, parsing and validation. Knows nothing of maps or aya.
//!
//! One TOML file per vendor (spec: `docs/policy.md`). Every error carries `file:line:col`.

pub mod remote;

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

pub use remote::{Remote, parse_remote};

/// A rule's identity: its vendor's id and its own, shown `vendor/rule` (the form of
/// `fwd explain`, the metrics' labels joined, `fwd stats` and the rule ids' hash input).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, Deserialize)]
pub struct RuleRef {
    pub vendor: String,
    pub rule: String,
}

impl RuleRef {
    pub fn new(vendor: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            vendor: vendor.into(),
            rule: rule.into(),
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.vendor, self.rule)
    }
}

/// Where something was written: file, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A mistake in a policy or config file, located.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: {message}")]
pub struct PolicyError {
    pub location: Location,
    pub message: String,
}

/// Maps byte offsets of one source text to line and column.
pub struct SourceMap<'a> {
    file: &'a Path,
    text: &'a str,
    /// Byte offset where each line starts, computed once: a file can hold a million entries.
    line_starts: Vec<usize>,
}

impl<'a> SourceMap<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Self {
            file,
            text,
            line_starts,
        }
    }

    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|start| *start <= offset);
        let col = self.text[self.line_starts[line - 1]..offset]
            .chars()
            .count()
            + 1;
        Location {
            file: self.file.to_path_buf(),
            line,
            col,
        }
    }

    pub fn error(&self, offset: usize, message: impl Into<String>) -> PolicyError {
        PolicyError {
            location: self.location(offset),
            message: message.into(),
        }
    }

    /// Converts a deserialisation error into a located one.
    pub fn toml_error(&self, err: &toml::de::Error) -> PolicyError {
        let offset = err.span().map_or(0, |s| s.start);
        self.error(offset, err.message().trim_end().to_string())
    }

    /// The value of the keyword `value` holds among `choices`, or an error at it that lists
    /// them (`keyword`).
    pub fn keyword<T: Copy>(
        &self,
        value: &toml::Spanned<String>,
        what: &str,
        choices: &[Keyword<T>],
    ) -> Result<T, PolicyError> {
        keyword(value.get_ref(), what, choices).map_err(|m| self.error(value.span().start, m))
    }

    /// `value` if it is within `range`, else an error at it: "{what}, from LO to HI".
    pub fn number_in<T: TryFrom<i64>>(
        &self,
        value: &toml::Spanned<i64>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
    ) -> Result<T, PolicyError> {
        let n = *value.get_ref();
        range
            .contains(&n)
            .then(|| T::try_from(n).ok())
            .flatten()
            .ok_or_else(|| {
                self.error(
                    value.span().start,
                    format!("{what}, from {} to {}", range.start(), range.end()),
                )
            })
    }
}

/// A word a key accepts: the word, what it stands for, and what it means (empty where the
/// word says it).
pub type Keyword<T> = (&'static str, T, &'static str);

/// The value of `text` among `choices`, or the message that says what is accepted:
/// unknown WHAT `text`; use "a" (what a means), "b" or "c".
pub fn keyword<T: Copy>(text: &str, what: &str, choices: &[Keyword<T>]) -> Result<T, String> {
    if let Some((_, value, _)) = choices.iter().find(|(word, _, _)| *word == text) {
        return Ok(*value);
    }
    let words: Vec<String> = choices
        .iter()
        .map(|(word, _, meaning)| match *meaning {
            "" => format!("\"{word}\""),
            m => format!("\"{word}\" ({m})"),
        })
        .collect();
    let list = match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(format!("unknown {what} `{text}`; use {list}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// From the protected network to the remote (the default).
    Egress,
    /// From the remote into the protected network.
    Ingress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Egress => "egress",
            Direction::Ingress => "ingress",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Mandatory,
    Recommended,
    Optional,
}

impl Level {
    pub const KEYWORDS: &[Keyword<Level>] = &[
        ("mandatory", Level::Mandatory, ""),
        ("recommended", Level::Recommended, ""),
        ("optional", Level::Optional, ""),
    ];

    /// Parses `mandatory`, `recommended` or `optional`, or says what is accepted.
    pub fn parse(text: &str) -> Result<Level, String> {
        keyword(text, "level", Self::KEYWORDS)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Mandatory => "mandatory",
            Level::Recommended => "recommended",
            Level::Optional => "optional",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    /// Every IP protocol (ports cannot be constrained).
    Any,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::Any => "any",
        }
    }

    pub const KEYWORDS: &[Keyword<Protocol>] = &[
        ("tcp", Protocol::Tcp, ""),
        ("udp", Protocol::Udp, ""),
        ("icmp", Protocol::Icmp, ""),
        ("any", Protocol::Any, ""),
    ];

    /// Parses a protocol name in any case, or says what is accepted.
    pub fn parse(text: &str) -> Result<Protocol, String> {
        keyword(&text.to_ascii_lowercase(), "protocol", Self::KEYWORDS)
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

/// An inclusive port range; a single port has `lo == hi`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub const ALL: PortRange = PortRange { lo: 0, hi: 65535 };

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// Parses `443` or `10000-20000`.
    pub fn parse(text: &str) -> Result<PortRange, String> {
        let port = |s: &str| -> Result<u16, String> {
            let s = s.trim();
            match s.parse::<u32>() {
                Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
                Ok(p) => Err(format!("port {p} is outside 1-65535")),
                Err(_) => Err(format!("`{s}` is not a port number")),
            }
        };
        let range = match text.split_once('-') {
            Some((lo, hi)) => PortRange {
                lo: port(lo)?,
                hi: port(hi)?,
            },
            None => {
                let p = port(text)?;
                PortRange { lo: p, hi: p }
            }
        };
        if range.lo > range.hi {
            return Err(format!(
                "port range `{text}` runs backwards (write {}-{})",
                range.hi, range.lo
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Which port of the packet a rule's ports constrain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortSide {
    /// The remote's port: the destination of egress, the source of ingress.
    Remote,
    /// The local port: the destination of ingress.
    Local,
}

/// A calendar date (validity windows are whole days, in UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    pub year: u16,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// Today in UTC.
    pub fn today() -> Date {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Date::from_days_since_epoch((secs / 86_400) as i64)
    }

    /// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    pub fn from_days_since_epoch(days: i64) -> Date {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
        Date { year, month, day }
    }

    /// Days since 1970-01-01 (the inverse of `from_days_since_epoch`).
    pub fn days_since_epoch(self) -> i64 {
        let (m, d) = (i64::from(self.month), i64::from(self.day));
        let y = i64::from(self.year) - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The day `days` after this one.
    pub fn plus_days(self, days: u32) -> Date {
        Date::from_days_since_epoch(self.days_since_epoch() + i64::from(days))
    }

    pub fn parse(text: &str) -> Option<Date> {
        let mut parts = text.trim().splitn(3, '-');
        let year = parts.next()?.parse().ok()?;
        let month = parts.next()?.parse().ok()?;
        let day = parts.next()?.parse().ok()?;
        ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Date { year, month, day })
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Vendor metadata from the `[vendor]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vendor {
    pub id: String,
    pub name: String,
    pub source: Option<String>,
    pub reviewed: Option<String>,
    pub notes: Option<String>,
}

/// One rule, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub service: String,
    pub purpose: Option<String>,
    pub level: Level,
    pub profile: Option<String>,
    pub region: Option<String>,
    pub direction: Direction,
    pub protocols: Vec<Protocol>,
    /// Allowed ports (on `port_side`). Empty for protocols without ports.
    pub ports: Vec<PortRange>,
    pub port_side: PortSide,
    /// Ingress only from remotes the protected host has a live flow with.
    pub related: bool,
    pub remotes: Vec<Remote>,
    /// Enforced from this day on (announced changes).
    pub not_before: Option<Date>,
    /// Enforced until this day, inclusive (removed by the vendor, kept for history).
    pub not_after: Option<Date>,
    pub notes: Option<String>,
    /// What the source document lost or leaves open.
    pub todo: Option<String>,
    /// Where the `[[rule]]` table starts.
    pub location: Location,
}

/// One vendor file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendorPolicy {
    pub vendor: Vendor,
    pub rules: Vec<Rule>,
    pub file: PathBuf,
}

/// The vendor id of the rules a site config adds (`[[rule]]` in `fwd.toml`).
pub const LOCAL_VENDOR: &str = "local";

/// Every vendor file of a policy directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySet {
    pub vendors: Vec<VendorPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    vendor: RawVendor,
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVendor {
    id: Spanned<String>,
    name: String,
    source: Option<String>,
    reviewed: Option<String>,
    notes: Option<String>,
}

/// A string or a list of strings; each list element keeps its own span.
enum OneOrMany {
    One(Spanned<String>),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                // The caller's span covers a lone string; the element span is unused then.
                Ok(OneOrMany::One(Spanned::new(0..0, v.to_string())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl OneOrMany {
    /// The strings with their spans; a lone string takes `outer`, the value's own span.
    fn into_vec(self, outer: std::ops::Range<usize>) -> Vec<Spanned<String>> {
        match self {
            OneOrMany::One(s) => vec![Spanned::new(outer, s.into_inner())],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Text(String),
}

/// A `[[rule]]` table as written, in a vendor file or in the site config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    id: Spanned<String>,
    service: String,
    purpose: Option<String>,
    level: Option<Spanned<String>>,
    profile: Option<String>,
    region: Option<String>,
    direction: Option<Spanned<String>>,
    protocol: Spanned<OneOrMany>,
    ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    remote_ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    local_ports: Option<Spanned<Vec<Spanned<RawPort>>>>,
    related: Option<Spanned<bool>>,
    remote: Spanned<OneOrMany>,
    not_before: Option<Spanned<toml::value::Datetime>>,
    not_after: Option<Spanned<toml::value::Datetime>>,
    notes: Option<String>,
    todo: Option<String>,
}

type RawPorts = Spanned<Vec<Spanned<RawPort>>>;

/// Parses a `ports`-style list: sorted, deduplicated ranges.
fn parse_ports(
    map: &SourceMap<'_>,
    key: &str,
    ports: RawPorts,
) -> Result<Vec<PortRange>, PolicyError> {
    let span = ports.span();
    let mut out = Vec::new();
    for port in ports.into_inner() {
        let offset = port.span().start;
        let parsed = match port.into_inner() {
            RawPort::Number(n) => u16::try_from(n)
                .ok()
                .filter(|p| *p != 0)
                .map(|p| PortRange { lo: p, hi: p })
                .ok_or_else(|| format!("port {n} is outside 1-65535")),
            RawPort::Text(t) => PortRange::parse(&t),
        };
        out.push(parsed.map_err(|m| map.error(offset, m))?);
    }
    if out.is_empty() {
        return Err(map.error(
            span.start,
            format!("`{key}` is empty; list ports or ranges, or remove the key"),
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn parse_date(
    map: &SourceMap<'_>,
    key: &str,
    value: Option<Spanned<toml::value::Datetime>>,
) -> Result<Option<Date>, PolicyError> {
    let Some(value) = value else { return Ok(None) };
    match (value.get_ref().date, value.get_ref().time) {
        (Some(d), None) => Ok(Some(Date {
            year: d.year,
            month: d.month,
            day: d.day,
        })),
        _ => Err(map.error(
            value.span().start,
            format!("`{key}` takes a date without time, e.g. {key} = 2026-12-01"),
        )),
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Parses and validates one vendor file's text.
pub fn parse_vendor_file(file: &Path, text: &str) -> Result<VendorPolicy, PolicyError> {
    let map = SourceMap::new(file, text);
    let raw: RawFile = toml::from_str(text).map_err(|e| map.toml_error(&e))?;

    let vendor_id = raw.vendor.id.get_ref().clone();
    if !is_identifier(&vendor_id) {
        return Err(map.error(
            raw.vendor.id.span().start,
            format!("vendor id `{vendor_id}` must be lowercase letters, digits, '-' or '_'"),
        ));
    }
    let vendor = Vendor {
        id: vendor_id,
        name: raw.vendor.name,
        source: raw.vendor.source,
        reviewed: raw.vendor.reviewed,
        notes: raw.vendor.notes,
    };

    Ok(VendorPolicy {
        vendor,
        rules: build_rules(&map, raw.rules)?,
        file: file.to_path_buf(),
    })
}

/// Validates `[[rule]]` tables; rule ids must be unique among them.
pub(crate) fn build_rules(
    map: &SourceMap<'_>,
    raw: Vec<Spanned<RawRule>>,
) -> Result<Vec<Rule>, PolicyError> {
    let mut rules: Vec<Rule> = Vec::with_capacity(raw.len());
    let mut lines: HashMap<String, usize> = HashMap::with_capacity(raw.len());
    for spanned in raw {
        let rule_start = spanned.span().start;
        let rule = build_rule(map, rule_start, spanned.into_inner())?;
        if let Some(line) = lines.get(&rule.id) {
            return Err(PolicyError {
                location: rule.location.clone(),
                message: format!(
                    "rule id `{}` is already used at line {line}; rule ids must be unique per vendor",
                    rule.id
                ),
            });
        }
        lines.insert(rule.id.clone(), rule.location.line);
        rules.push(rule);
    }
    Ok(rules)
}

fn build_rule(map: &SourceMap<'_>, start: usize, raw: RawRule) -> Result<Rule, PolicyError> {
    let id = raw.id.get_ref().clone();
    if !is_identifier(&id) {
        return Err(map.error(
            raw.id.span().start,
            format!("rule id `{id}` must be lowercase letters, digits, '-' or '_'"),
        ));
    }
    let level = match &raw.level {
        None => Level::Mandatory,
        Some(l) => map.keyword(l, "level", Level::KEYWORDS)?,
    };
    let direction = match &raw.direction {
        None => Direction::Egress,
        Some(d) => map.keyword(
            d,
            "direction",
            &[
                ("egress", Direction::Egress, ""),
                ("ingress", Direction::Ingress, ""),
            ],
        )?,
    };

    let protocol_span = raw.protocol.span();
    let mut protocols = Vec::new();
    for p in raw.protocol.into_inner().into_vec(protocol_span.clone()) {
        let proto = Protocol::parse(p.get_ref()).map_err(|m| map.error(p.span().start, m))?;
        if !protocols.contains(&proto) {
            protocols.push(proto);
        }
    }
    if protocols.is_empty() {
        return Err(map.error(protocol_span.start, "a rule needs at least one protocol"));
    }
    if protocols.contains(&Protocol::Any) && protocols.len() > 1 {
        return Err(map.error(
            protocol_span.start,
            "\"any\" already covers every protocol; list it alone",
        ));
    }

    let (ports, port_side) = match (direction, raw.ports, raw.remote_ports, raw.local_ports) {
        (Direction::Egress, ports, None, None) => (ports, PortSide::Remote),
        (Direction::Egress, _, Some(p), _) | (Direction::Egress, _, _, Some(p)) => {
            return Err(map.error(
                p.span().start,
                "egress rules take `ports` (the remote's ports); remote_ports and local_ports are for ingress",
            ));
        }
        (Direction::Ingress, Some(p), _, _) => {
            return Err(map.error(
                p.span().start,
                "ingress rules take `local_ports` (ports on the protected host) or `remote_ports` (the remote's source ports), not `ports`",
            ));
        }
        (Direction::Ingress, None, Some(_), Some(l)) => {
            return Err(map.error(
                l.span().start,
                "an ingress rule constrains either local_ports or remote_ports, not both; split it into two rules",
            ));
        }
        (Direction::Ingress, None, Some(r), None) => (Some(r), PortSide::Remote),
        (Direction::Ingress, None, None, local) => (local, PortSide::Local),
    };
    let ports = match ports {
        None => Vec::new(),
        Some(p) => {
            let key = match (direction, port_side) {
                (Direction::Egress, _) => "ports",
                (_, PortSide::Remote) => "remote_ports",
                (_, PortSide::Local) => "local_ports",
            };
            parse_ports(map, key, p)?
        }
    };
    let related = match raw.related {
        Some(r) if *r.get_ref() && direction == Direction::Egress => {
            return Err(map.error(
                r.span().start,
                "`related` is for ingress rules (media from remotes the host already talks to)",
            ));
        }
        Some(r) => *r.get_ref(),
        None => false,
    };
    let not_before = parse_date(map, "not_before", raw.not_before)?;
    let not_after = parse_date(map, "not_after", raw.not_after)?;
    if let (Some(b), Some(a)) = (not_before, not_after)
        && b > a
    {
        return Err(map.error(
            start,
            format!("rule `{id}` is valid from {b} but only until {a}; check the dates"),
        ));
    }
    let with_ports = protocols.iter().any(|p| p.has_ports());
    let without_ports = protocols.iter().any(|p| !p.has_ports());
    if with_ports && ports.is_empty() {
        return Err(map.error(
            start,
            format!(
                "rule `{id}` uses tcp/udp but lists no ports; list them (\"1-65535\" for every port)"
            ),
        ));
    }
    if without_ports && !ports.is_empty() {
        return Err(map.error(
            protocol_span.start,
            format!(
                "rule `{id}` gives ports, but icmp and \"any\" have none; split it into separate rules"
            ),
        ));
    }

    let remote_span = raw.remote.span();
    let mut remotes = Vec::new();
    for r in raw.remote.into_inner().into_vec(remote_span.clone()) {
        let parsed = parse_remote(r.get_ref()).map_err(|m| map.error(r.span().start, m))?;
        remotes.push(parsed);
    }
    if remotes.is_empty() {
        return Err(map.error(
            remote_span.start,
            "`remote` is empty; list addresses, networks, hostnames or \"any\"",
        ));
    }

    Ok(Rule {
        id,
        service: raw.service,
        purpose: raw.purpose,
        level,
        profile: raw.profile,
        region: raw.region,
        direction,
        protocols,
        ports,
        port_side,
        related,
        remotes,
        not_before,
        not_after,
        notes: raw.notes,
        todo: raw.todo,
        location: map.location(start),
    })
}

/// An error that is not about a file's contents (a directory that cannot be read).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{}: no policy files (*.toml) found; point --policies at the directory of vendor files", dir.display())]
    Empty { dir: PathBuf },
}

/// Loads the package's vendor files of `vendor` with the site's of `site` over them, the way
/// systemd treats unit files: a file in `site` replaces the one of the same name in
/// `vendor`, an empty one (nothing but whitespace) masks it, and the others add to them.
/// In file-name order. A missing `vendor` directory is no vendor files.
pub fn load_layered(vendor: &Path, site: &Path) -> Result<PolicySet, LoadError> {
    let names = |dir: &Path, missing_ok: bool| -> Result<Vec<PathBuf>, LoadError> {
        match std::fs::read_dir(dir) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()),
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(LoadError::Io {
                path: dir.to_path_buf(),
                source,
            }),
        }
    };
    let mut chosen: std::collections::BTreeMap<std::ffi::OsString, PathBuf> =
        std::collections::BTreeMap::new();
    for path in names(vendor, true)?.into_iter().chain(names(site, false)?) {
        if let Some(name) = path.file_name() {
            chosen.insert(name.to_os_string(), path);
        }
    }
    let mut set = PolicySet::default();
    for (_, file) in chosen {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        if text.trim().is_empty() && file.starts_with(site) {
            continue; // masked
        }
        add_vendor(&mut set, &file, &text)?;
    }
    if set.vendors.is_empty() {
        return Err(LoadError::Empty {
            dir: site.to_path_buf(),
        });
    }
    Ok(set)
}

/// Parses one vendor file into `set`; a vendor id two files use is an error.
fn add_vendor(set: &mut PolicySet, file: &Path, text: &str) -> Result<(), LoadError> {
    let policy = parse_vendor_file(file, text)?;
    if let Some(other) = set.vendors.iter().find(|v| v.vendor.id == policy.vendor.id) {
        return Err(PolicyError {
            location: SourceMap::new(file, text).location(0),
            message: format!(
                "vendor id `{}` is also used by {}",
                policy.vendor.id,
                other.file.display()
            ),
        }
        .into());
    }
    set.vendors.push(policy);
    Ok(())
}

/// Loads every `*.toml` file of `dir`, in file-name order.
pub fn load_dir(dir: &Path) -> Result<PolicySet, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    files.sort();
    if files.is_empty() {
        return Err(LoadError::Empty {
            dir: dir.to_path_buf(),
        });
    }
    let mut set = PolicySet::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        add_vendor(&mut set, &file, &text)?;
    }
    Ok(set)
}

#[cfg(test)]
mod tests;
