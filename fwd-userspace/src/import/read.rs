//! Reading a vendor's list: one prefix, range or netmask per line, or AWS ip-ranges.json,
//! each entry with where it came from.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;

use crate::policy::{Location, PolicyError, Remote, SourceMap, parse_remote};

/// Where the input bytes came from.
pub(super) struct Input {
    /// The name errors are located in (`FILE:LINE:COL`).
    pub(super) path: PathBuf,
    /// How the notes name it.
    pub(super) label: String,
}

impl Input {
    pub(super) fn stdin() -> Input {
        Input {
            path: PathBuf::from("<stdin>"),
            label: "standard input".to_string(),
        }
    }

    pub(super) fn file(path: &Path) -> Input {
        Input {
            path: path.to_path_buf(),
            label: path.display().to_string(),
        }
    }
}

/// Where an imported prefix came from, for the comment beside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ListOrigin {
    /// A line of a text list.
    Line(usize),
    /// An entry of a JSON list (`EC2 us-east-1`).
    Label(String),
}

/// One entry of the list: the networks it names (a range names several) and its origin.
pub(super) struct ListEntry {
    pub(super) nets: Vec<IpNet>,
    pub(super) origin: ListOrigin,
}

/// What a reader found: the entries and what the notes should say about the input.
pub(super) struct ReadList {
    pub(super) entries: Vec<ListEntry>,
    /// Format-specific provenance (AWS syncToken, filters), empty for text.
    pub(super) details: String,
}

/// The input as text; a byte that is not UTF-8 is reported where it is.
pub(super) fn utf8<'a>(file: &Path, bytes: &'a [u8]) -> Result<&'a str, PolicyError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by construction.
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        SourceMap::new(file, prefix).error(
            prefix.len(),
            format!(
                "byte 0x{:02x} is not UTF-8 text; save the list as UTF-8 (or ASCII)",
                bytes[e.valid_up_to()]
            ),
        )
    })?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

/// One address, network or range per line; `#` to the end of the line is a comment.
pub(super) fn read_text(file: &Path, text: &str) -> Result<ReadList, PolicyError> {
    let map = SourceMap::new(file, text);
    let mut entries = Vec::new();
    let mut line_start = 0;
    for (index, raw_line) in text.split_inclusive('\n').enumerate() {
        let offset = line_start;
        line_start += raw_line.len();
        let content = raw_line.split('#').next().unwrap_or_default();
        let entry = content.trim();
        if entry.is_empty() {
            continue;
        }
        let at = offset + (content.len() - content.trim_start().len());
        let nets = match parse_remote(entry) {
            Ok(Remote::Nets(nets)) => nets,
            Ok(Remote::Any) => {
                return Err(map.error(
                    at,
                    "`any` is every address, not a published prefix; write `remote = \"any\"` \
                     in a policy file by hand if that is what you mean",
                ));
            }
            Ok(Remote::Host(_) | Remote::Wildcard(_)) => {
                return Err(map.error(
                    at,
                    format!(
                        "`{entry}` is a domain name; fwd import reads addresses, networks and \
                         ranges only (write domain rules by hand, see docs/policy.md)"
                    ),
                ));
            }
            Err(message) => {
                let hint = if entry.starts_with('{') || entry.starts_with('[') {
                    "; this looks like JSON: for AWS's ip-ranges.json use --format aws"
                } else {
                    ""
                };
                return Err(map.error(at, format!("{message}{hint}")));
            }
        };
        entries.push(ListEntry {
            nets,
            origin: ListOrigin::Line(index + 1),
        });
    }
    Ok(ReadList {
        entries,
        details: String::new(),
    })
}

/// AWS `ip-ranges.json` (https://ip-ranges.amazonaws.com/ip-ranges.json).
#[derive(Deserialize)]
pub(super) struct AwsRanges {
    #[serde(rename = "syncToken")]
    pub(super) sync_token: String,
    #[serde(rename = "createDate")]
    pub(super) create_date: String,
    pub(super) prefixes: Vec<AwsPrefix>,
    #[serde(default)]
    pub(super) ipv6_prefixes: Vec<AwsPrefix>,
}

#[derive(Deserialize)]
pub(super) struct AwsPrefix {
    #[serde(alias = "ipv6_prefix")]
    pub(super) ip_prefix: String,
    pub(super) region: String,
    pub(super) service: String,
}

pub(super) const AWS_URL: &str = "https://ip-ranges.amazonaws.com/ip-ranges.json";

pub(super) fn read_aws(
    file: &Path,
    text: &str,
    services: &[String],
    regions: &[String],
) -> Result<ReadList, PolicyError> {
    let map = SourceMap::new(file, text);
    let body = text.trim_start();
    if !body.starts_with('{') {
        let found = match body.lines().next().map(str::trim) {
            None | Some("") => "the input is empty".to_string(),
            Some(line) => format!(
                "it starts with `{}`",
                line.chars().take(40).collect::<String>()
            ),
        };
        return Err(map.error(
            text.len() - body.len(),
            format!(
                "not JSON: {found}, but ip-ranges.json is one JSON object \
                 ({{\"syncToken\": ..., \"prefixes\": [...]}}) as published at {AWS_URL}; \
                 for one prefix per line use --format text"
            ),
        ));
    }
    let ranges: AwsRanges = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_json appends " at line L column C"; the location leads instead.
        let message = message
            .rfind(" at line ")
            .map_or(message.as_str(), |i| &message[..i]);
        let what = match e.classify() {
            serde_json::error::Category::Data => "not AWS ip-ranges.json",
            _ => "not JSON",
        };
        PolicyError {
            location: Location {
                file: file.to_path_buf(),
                line: e.line().max(1),
                col: e.column().max(1),
            },
            message: format!(
                "{what} ({message}); --format aws reads the file published at {AWS_URL}; \
                 for one prefix per line use --format text"
            ),
        }
    })?;
    let all: Vec<&AwsPrefix> = ranges
        .prefixes
        .iter()
        .chain(&ranges.ipv6_prefixes)
        .collect();
    let file_error = |message: String| PolicyError {
        location: Location {
            file: file.to_path_buf(),
            line: 1,
            col: 1,
        },
        message,
    };

    let known_services: BTreeSet<&str> = all.iter().map(|p| p.service.as_str()).collect();
    for s in services {
        if !known_services.iter().any(|k| k.eq_ignore_ascii_case(s)) {
            return Err(file_error(format!(
                "no prefix has service `{s}`; this file's services are {}",
                join(&known_services)
            )));
        }
    }
    let wanted_service =
        |p: &AwsPrefix| services.iter().any(|s| s.eq_ignore_ascii_case(&p.service));
    let known_regions: BTreeSet<&str> = all
        .iter()
        .filter(|p| wanted_service(p))
        .map(|p| p.region.as_str())
        .collect();
    for r in regions {
        if !known_regions.iter().any(|k| k.eq_ignore_ascii_case(r)) {
            return Err(file_error(format!(
                "no prefix of service {} has region `{r}`; its regions are {}",
                services.join(", "),
                join(&known_regions)
            )));
        }
    }
    let wanted_region = |p: &AwsPrefix| {
        regions.is_empty() || regions.iter().any(|r| r.eq_ignore_ascii_case(&p.region))
    };

    // A service the region filter empties would vanish silently; say so instead.
    for s in services {
        let of_service = |p: &&&AwsPrefix| p.service.eq_ignore_ascii_case(s);
        if !all.iter().filter(of_service).any(|p| wanted_region(p)) {
            let its: BTreeSet<&str> = all
                .iter()
                .filter(of_service)
                .map(|p| p.region.as_str())
                .collect();
            return Err(file_error(format!(
                "service `{s}` has no prefix in region {}; its regions are {}",
                regions.join(", "),
                join(&its)
            )));
        }
    }

    let mut entries = Vec::new();
    for p in all.iter().filter(|p| wanted_service(p) && wanted_region(p)) {
        // Locate a bad prefix by its first occurrence in the text (JSON has no spans here).
        let at = || {
            text.find(&format!("\"{}\"", p.ip_prefix))
                .map_or(0, |i| i + 1)
        };
        let nets = match parse_remote(&p.ip_prefix) {
            Ok(Remote::Nets(nets)) => nets,
            Ok(_) => {
                return Err(map.error(at(), format!("`{}` is not an address prefix", p.ip_prefix)));
            }
            Err(m) => return Err(map.error(at(), m)),
        };
        entries.push(ListEntry {
            nets,
            origin: ListOrigin::Label(format!("{} {}", p.service, p.region)),
        });
    }
    let details = format!(
        "syncToken {}, createDate {}; kept service {} in {}: {} of the file's {} prefixes",
        ranges.sync_token,
        ranges.create_date,
        services.join(", "),
        if regions.is_empty() {
            "every region".to_string()
        } else {
            format!("region {}", regions.join(", "))
        },
        entries.len(),
        all.len()
    );
    Ok(ReadList { entries, details })
}

pub(super) fn join(items: &BTreeSet<&str>) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.iter().copied().collect::<Vec<_>>().join(", ")
    }
}
