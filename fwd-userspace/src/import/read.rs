//! Reading a vendor's list: one prefix, range or netmask per line, AWS ip-ranges.json,
//! Google's goog.json/cloud.json, or Microsoft 365's endpoints JSON, each entry with where
//! it came from.

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
    /// The publisher's version marker (AWS and Google `syncToken`), if the format has one.
    pub(super) version: Option<String>,
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
        version: None,
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
        json_error(
            file,
            &e,
            "AWS ip-ranges.json",
            &format!(
                "--format aws reads the file published at {AWS_URL}; for one prefix per line use --format text"
            ),
        )
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
        entries.push(ListEntry {
            nets: json_prefix(&map, text, &p.ip_prefix)?,
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
    Ok(ReadList {
        entries,
        details,
        version: Some(ranges.sync_token),
    })
}

/// A JSON reader's error, located where serde_json stopped.
fn json_error(file: &Path, e: &serde_json::Error, format: &str, hint: &str) -> PolicyError {
    let message = e.to_string();
    // serde_json appends " at line L column C"; the location leads instead.
    let message = message
        .rfind(" at line ")
        .map_or(message.as_str(), |i| &message[..i]);
    let what = match e.classify() {
        serde_json::error::Category::Data => format!("not {format}"),
        _ => "not JSON".to_string(),
    };
    PolicyError {
        location: Location {
            file: file.to_path_buf(),
            line: e.line().max(1),
            col: e.column().max(1),
        },
        message: format!("{what} ({message}); {hint}"),
    }
}

/// One prefix of a JSON list as networks, located by its first occurrence in the text
/// (JSON has no spans here).
fn json_prefix(map: &SourceMap, text: &str, prefix: &str) -> Result<Vec<IpNet>, PolicyError> {
    let at = || text.find(&format!("\"{prefix}\"")).map_or(0, |i| i + 1);
    match parse_remote(prefix) {
        Ok(Remote::Nets(nets)) => Ok(nets),
        Ok(_) => Err(map.error(at(), format!("`{prefix}` is not an address prefix"))),
        Err(m) => Err(map.error(at(), m)),
    }
}

/// Google's `goog.json` (every Google address) or `cloud.json` (Google Cloud, with a
/// `scope` per prefix), as published at https://www.gstatic.com/ipranges/.
#[derive(Deserialize)]
struct GoogleRanges {
    #[serde(rename = "syncToken")]
    sync_token: String,
    #[serde(rename = "creationTime")]
    creation_time: String,
    prefixes: Vec<GooglePrefix>,
}

#[derive(Deserialize)]
struct GooglePrefix {
    #[serde(rename = "ipv4Prefix")]
    ipv4: Option<String>,
    #[serde(rename = "ipv6Prefix")]
    ipv6: Option<String>,
    scope: Option<String>,
}

/// Google's lists, keeping the prefixes of `scopes` (cloud.json's regions; every prefix
/// when empty).
pub(super) fn read_google(
    file: &Path,
    text: &str,
    scopes: &[String],
) -> Result<ReadList, PolicyError> {
    let map = SourceMap::new(file, text);
    let hint = "google reads goog.json or cloud.json from https://www.gstatic.com/ipranges/";
    let ranges: GoogleRanges =
        serde_json::from_str(text).map_err(|e| json_error(file, &e, "Google's JSON", hint))?;
    let known: BTreeSet<&str> = ranges
        .prefixes
        .iter()
        .filter_map(|p| p.scope.as_deref())
        .collect();
    for s in scopes {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(s)) {
            return Err(map.error(
                0,
                format!(
                    "no prefix has scope `{s}`; this file's scopes are {}",
                    join(&known)
                ),
            ));
        }
    }
    let mut entries = Vec::new();
    for p in &ranges.prefixes {
        let scope = p.scope.as_deref().unwrap_or("");
        if !scopes.is_empty() && !scopes.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
            continue;
        }
        for prefix in p.ipv4.iter().chain(&p.ipv6) {
            entries.push(ListEntry {
                nets: json_prefix(&map, text, prefix)?,
                origin: ListOrigin::Label(if scope.is_empty() {
                    "google".to_string()
                } else {
                    scope.to_string()
                }),
            });
        }
    }
    let details = format!(
        "syncToken {}, creationTime {}; kept {}: {} of the file's {} prefixes",
        ranges.sync_token,
        ranges.creation_time,
        if scopes.is_empty() {
            "every scope".to_string()
        } else {
            format!("scope {}", scopes.join(", "))
        },
        entries.len(),
        ranges.prefixes.len()
    );
    Ok(ReadList {
        entries,
        details,
        version: Some(ranges.sync_token),
    })
}

/// One endpoint set of Microsoft 365's endpoints web service
/// (https://endpoints.office.com/endpoints/worldwide?clientrequestid=GUID).
#[derive(Deserialize)]
struct M365Set {
    id: u64,
    #[serde(rename = "serviceArea")]
    service_area: String,
    #[serde(default)]
    ips: Vec<String>,
    #[serde(default)]
    category: String,
}

/// Microsoft 365's endpoint sets, keeping the addresses of `areas` (Exchange, Skype,
/// SharePoint, Common; every area when empty) and `categories` (Optimize, Allow, Default;
/// every category when empty).
pub(super) fn read_m365(
    file: &Path,
    text: &str,
    areas: &[String],
    categories: &[String],
) -> Result<ReadList, PolicyError> {
    let map = SourceMap::new(file, text);
    let hint = "m365 reads https://endpoints.office.com/endpoints/worldwide?clientrequestid=GUID";
    let sets: Vec<M365Set> = serde_json::from_str(text)
        .map_err(|e| json_error(file, &e, "Microsoft 365 endpoints JSON", hint))?;
    let known: BTreeSet<&str> = sets.iter().map(|s| s.service_area.as_str()).collect();
    for a in areas {
        if !known.iter().any(|k| k.eq_ignore_ascii_case(a)) {
            return Err(map.error(
                0,
                format!(
                    "no endpoint set has serviceArea `{a}`; this file's are {}",
                    join(&known)
                ),
            ));
        }
    }
    let wanted = |set: &M365Set| {
        (areas.is_empty()
            || areas
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&set.service_area)))
            && (categories.is_empty()
                || categories
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(&set.category)))
    };
    let mut entries = Vec::new();
    for set in sets.iter().filter(|s| wanted(s)) {
        for prefix in &set.ips {
            entries.push(ListEntry {
                nets: json_prefix(&map, text, prefix)?,
                origin: ListOrigin::Label(format!("{} #{}", set.service_area, set.id)),
            });
        }
    }
    let details = format!(
        "kept serviceArea {} and category {}: {} addresses of {} endpoint sets",
        if areas.is_empty() {
            "any".to_string()
        } else {
            areas.join(", ")
        },
        if categories.is_empty() {
            "any".to_string()
        } else {
            categories.join(", ")
        },
        entries.len(),
        sets.len()
    );
    Ok(ReadList {
        entries,
        details,
        version: None,
    })
}

pub(super) fn join(items: &BTreeSet<&str>) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.iter().copied().collect::<Vec<_>>().join(", ")
    }
}
