//! `fwd import`: turns a vendor-published address list into a policy file.
//!
//! Vendors publish their networks as lists (one prefix per line) or as JSON (AWS's
//! `ip-ranges.json`). Typing them into a policy file by hand loses entries and provenance;
//! `fwd import` reads the list, checks every entry with the policy file's own `remote`
//! parser, sorts, deduplicates and merges the prefixes, and writes one complete vendor file
//! (`docs/policy.md`) whose `[vendor]` notes record what was imported, from which bytes,
//! with which filters. The output is parsed back before it is written: `fwd import` never
//! writes a file `fwd check` would reject, and never leaves half a file behind.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use ipnet::IpNet;
use serde::Deserialize;

use crate::atomic_file;
use crate::policy::{
    self, Date, Level, Location, PolicyError, PortRange, Protocol, Remote, SourceMap, parse_remote,
};

const AFTER_HELP: &str = "\
Examples:
  # One prefix per line, vendor media servers on udp 10000-20000:
  fwd import --vendor acme --vendor-name 'Acme Video' --service Media \\
      --protocol udp --ports 10000-20000 --source https://acme.example/ips.txt \\
      -o /etc/fwd/policies/acme.toml acme-ips.txt

  # AWS EC2 in two regions, from https://ip-ranges.amazonaws.com/ip-ranges.json:
  fwd import --format aws --aws-service EC2 --aws-region us-east-1,us-east-2 \\
      --vendor aws-ec2 --vendor-name 'Amazon EC2' --service 'Web services' --ports 443 \\
      --source https://ip-ranges.amazonaws.com/ip-ranges.json -o aws-ec2.toml ip-ranges.json

Then run `fwd check` to see the file compile. To update the list, run the same import on the
new list with --force: the file header records the command.";

/// Turn a vendor-published address list into a policy file: one `[vendor]` and one rule whose
/// `remote` is the list, sorted, deduplicated and merged, with the import recorded in the notes.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct ImportArgs {
    /// The published list: a file, or `-` to read standard input.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,

    /// How INPUT is written. `text`: one address, network or range per line, in any form a
    /// policy's `remote` accepts (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`,
    /// `10.0.0.0 255.0.0.0`, `218.83.160.8-23`); `#` starts a comment. `aws`: AWS's
    /// ip-ranges.json, filtered with --aws-service and --aws-region.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// With --format aws: keep the prefixes of this service, the `service` field of
    /// ip-ranges.json (AMAZON, EC2, CLOUDFRONT, S3, ...). Required for aws; repeat it or
    /// separate services with commas. AMAZON is every AWS address, the others are subsets.
    #[arg(long = "aws-service", value_name = "SERVICE", value_delimiter = ',')]
    pub aws_services: Vec<String>,

    /// With --format aws: keep only the prefixes of this region, the `region` field of
    /// ip-ranges.json (us-east-1, eu-central-1, GLOBAL, ...). Repeat it or separate regions
    /// with commas; without it every region is kept.
    #[arg(long = "aws-region", value_name = "REGION", value_delimiter = ',')]
    pub aws_regions: Vec<String>,

    /// The vendor id ([vendor] id): lowercase letters, digits, `-` and `_`. It is the
    /// `vendor` label of the metrics and must be unique in the policy directory.
    #[arg(long, value_name = "ID")]
    pub vendor: String,

    /// The vendor's display name ([vendor] name); default: the vendor id.
    #[arg(long, value_name = "NAME")]
    pub vendor_name: Option<String>,

    /// The rule id ([[rule]] id): lowercase letters, digits, `-` and `_`; the `rule` label of
    /// the metrics.
    #[arg(long, value_name = "ID", default_value = "imported")]
    pub rule: String,

    /// What the vendor calls the service the list is for ("Media", "Webhooks"); the
    /// `service` label of the metrics.
    #[arg(long, value_name = "SERVICE")]
    pub service: String,

    /// The protocols the rule opens to the listed addresses. Repeat it or separate with
    /// commas (`--protocol tcp,udp`); `any` must stand alone.
    #[arg(
        long,
        value_enum,
        value_name = "PROTOCOL",
        value_delimiter = ',',
        default_values_t = [ProtocolArg::Tcp]
    )]
    pub protocol: Vec<ProtocolArg>,

    /// The remote's ports for tcp and udp: numbers and ranges separated by commas, such as
    /// `443` or `443,10000-20000` (`1-65535` for every port). Required for tcp and udp; icmp
    /// and `any` take none.
    #[arg(long, value_name = "PORTS")]
    pub ports: Option<String>,

    /// How necessary the rule is: a site's `[select] levels` chooses which levels it enforces.
    #[arg(long, value_enum, default_value_t = LevelArg::Mandatory)]
    pub level: LevelArg,

    /// The region label of the rule (`global`, `us`, `china`): a site's `[select] regions`
    /// chooses which regions it enforces. Without it the rule applies under any selection.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Where the list comes from ([vendor] source), best the URL it was downloaded from;
    /// default: INPUT as given.
    #[arg(long, value_name = "URL_OR_TEXT")]
    pub source: Option<String>,

    /// Write the policy file here instead of standard output (`-`). The file appears whole or
    /// not at all: it is written to a temporary file in the same directory and renamed.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Replace --output if it exists (by default an existing file is never overwritten).
    #[arg(long)]
    pub force: bool,
}

/// The format of the published list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One address, network or range per line; `#` comments.
    Text,
    /// AWS ip-ranges.json.
    Aws,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Aws => "aws",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Tcp,
    Udp,
    Icmp,
    /// Every IP protocol; takes no --ports.
    Any,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Protocol {
        match p {
            ProtocolArg::Tcp => Protocol::Tcp,
            ProtocolArg::Udp => Protocol::Udp,
            ProtocolArg::Icmp => Protocol::Icmp,
            ProtocolArg::Any => Protocol::Any,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    Mandatory,
    Recommended,
    Optional,
}

impl From<LevelArg> for Level {
    fn from(l: LevelArg) -> Level {
        match l {
            LevelArg::Mandatory => Level::Mandatory,
            LevelArg::Recommended => Level::Recommended,
            LevelArg::Optional => Level::Optional,
        }
    }
}

/// Runs `fwd import`: reads INPUT, writes the policy file, prints a summary on stderr.
pub fn run(args: &ImportArgs) -> anyhow::Result<ExitCode> {
    let rule = RuleSettings::from_args(args)?;
    let output = args.output.as_deref().filter(|p| *p != Path::new("-"));
    if let Some(out) = output
        && !args.force
        && fs::symlink_metadata(out).is_ok()
    {
        bail!(
            "{}: already exists; pass --force to replace it (it stays untouched until the new file is complete)",
            out.display()
        );
    }

    let (input, bytes) = if args.input == Path::new("-") {
        let mut bytes = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        (Input::stdin(), bytes)
    } else {
        let bytes = fs::read(&args.input)
            .with_context(|| format!("{}: cannot read", args.input.display()))?;
        (Input::file(&args.input), bytes)
    };

    let imported = import(args, &rule, &input, &bytes, Date::today())?;

    // The output must be a file `fwd check` accepts; a failure here is a bug in fwd import.
    let out_name = output.unwrap_or(Path::new("<stdout>"));
    policy::parse_vendor_file(out_name, &imported.text).map_err(|e| {
        anyhow::anyhow!(
            "fwd import produced a policy that does not parse (a bug, please report it): {e}"
        )
    })?;

    let destination = match output {
        Some(path) => {
            write_atomically(path, imported.text.as_bytes(), args.force)?;
            path.display().to_string()
        }
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(imported.text.as_bytes())
                .and_then(|()| stdout.flush())
                .context("cannot write to standard output")?;
            "standard output".to_string()
        }
    };
    eprintln!(
        "fwd import: {}, written to {destination}",
        imported.summary.describe()
    );
    Ok(ExitCode::SUCCESS)
}

/// The rule options, checked before any input is read.
#[derive(Debug)]
struct RuleSettings {
    protocols: Vec<Protocol>,
    ports: Vec<PortRange>,
    level: Level,
}

impl RuleSettings {
    fn from_args(args: &ImportArgs) -> anyhow::Result<RuleSettings> {
        check_id("--vendor", "vendor id", &args.vendor)?;
        if args.vendor == crate::policy::LOCAL_VENDOR {
            anyhow::bail!(
                "--vendor `{}` is reserved for the [[rule]]s of the site config; choose the vendor's own id",
                crate::policy::LOCAL_VENDOR
            );
        }
        check_id("--rule", "rule id", &args.rule)?;
        if args.service.trim().is_empty() {
            bail!(
                "--service is empty; give what the vendor calls the service, e.g. --service Media"
            );
        }
        match args.format {
            Format::Aws if args.aws_services.is_empty() => bail!(
                "--format aws needs --aws-service: which AWS service's prefixes to keep \
                 (e.g. --aws-service CLOUDFRONT; AMAZON is every AWS address)"
            ),
            Format::Text if !args.aws_services.is_empty() || !args.aws_regions.is_empty() => {
                bail!(
                    "--aws-service and --aws-region filter AWS ip-ranges.json; use them with --format aws"
                )
            }
            _ => {}
        }

        let mut protocols: Vec<Protocol> = Vec::new();
        for p in &args.protocol {
            let p = Protocol::from(*p);
            if !protocols.contains(&p) {
                protocols.push(p);
            }
        }
        if protocols.is_empty() {
            protocols.push(Protocol::Tcp);
        }
        if protocols.contains(&Protocol::Any) && protocols.len() > 1 {
            bail!("--protocol any already covers every protocol; give it alone");
        }
        let with_ports = protocols.iter().any(|p| p.has_ports());
        let without_ports = protocols.iter().any(|p| !p.has_ports());
        if with_ports && without_ports {
            bail!(
                "--protocol mixes tcp/udp (which take --ports) with icmp/any (which take none); \
                 one rule cannot be both: import once for each, with different --vendor ids, \
                 or add the second rule to the file by hand"
            );
        }
        let ports = match (&args.ports, with_ports) {
            (None, true) => bail!(
                "--ports is required for tcp and udp: the remote's ports, e.g. --ports 443 or \
                 --ports 443,10000-20000 (--ports 1-65535 for every port)"
            ),
            (Some(_), false) => {
                bail!("--ports is for tcp and udp; icmp and `any` have no ports, so drop --ports")
            }
            (None, false) => Vec::new(),
            (Some(text), true) => parse_port_list(text)?,
        };
        Ok(RuleSettings {
            protocols,
            ports,
            level: args.level.into(),
        })
    }
}

/// `443,10000-20000` -> sorted, deduplicated ranges.
fn parse_port_list(text: &str) -> anyhow::Result<Vec<PortRange>> {
    let mut ports = Vec::new();
    for item in text.split(',') {
        if item.trim().is_empty() {
            bail!(
                "--ports `{text}` has an empty item; separate ports and ranges with single commas, e.g. 443,10000-20000"
            );
        }
        ports.push(PortRange::parse(item.trim()).map_err(|m| anyhow::anyhow!("--ports: {m}"))?);
    }
    ports.sort();
    ports.dedup();
    Ok(ports)
}

/// The identifier rule of policy files: lowercase letters, digits, `-`, `_`.
fn check_id(flag: &str, what: &str, id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        let suggestion: String = id
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        bail!(
            "{flag} `{id}`: a {what} is lowercase letters, digits, '-' and '_'{}",
            if suggestion.is_empty() {
                String::new()
            } else {
                format!(", e.g. `{suggestion}`")
            }
        );
    }
    Ok(())
}

/// Where the input bytes came from.
struct Input {
    /// The name errors are located in (`FILE:LINE:COL`).
    path: PathBuf,
    /// How the notes name it.
    label: String,
}

impl Input {
    fn stdin() -> Input {
        Input {
            path: PathBuf::from("<stdin>"),
            label: "standard input".to_string(),
        }
    }

    fn file(path: &Path) -> Input {
        Input {
            path: path.to_path_buf(),
            label: path.display().to_string(),
        }
    }
}

/// Where an imported prefix came from, for the comment beside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    /// A line of a text list.
    Line(usize),
    /// An entry of a JSON list (`EC2 us-east-1`).
    Label(String),
}

/// One entry of the list: the networks it names (a range names several) and its origin.
struct Entry {
    nets: Vec<IpNet>,
    origin: Origin,
}

/// What a reader found: the entries and what the notes should say about the input.
struct ReadList {
    entries: Vec<Entry>,
    /// Format-specific provenance (AWS syncToken, filters), empty for text.
    details: String,
}

/// The counts of the one-line summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Summary {
    /// Entries (lines, JSON prefixes) taken from the input.
    entries: usize,
    /// Distinct prefixes they name (ranges name several).
    prefixes: usize,
    /// Prefixes after merging adjacent and overlapping ones.
    merged: usize,
    ipv4: usize,
    ipv6: usize,
}

impl Summary {
    fn describe(&self) -> String {
        format!(
            "{} entries read ({} distinct prefixes), {} prefixes after merging ({} IPv4, {} IPv6)",
            self.entries, self.prefixes, self.merged, self.ipv4, self.ipv6
        )
    }
}

/// A generated policy file.
#[derive(Debug)]
struct Imported {
    text: String,
    summary: Summary,
}

/// Reads the list in `bytes` and renders the policy file.
fn import(
    args: &ImportArgs,
    rule: &RuleSettings,
    input: &Input,
    bytes: &[u8],
    today: Date,
) -> anyhow::Result<Imported> {
    let text = utf8(&input.path, bytes)?;
    let list = match args.format {
        Format::Text => read_text(&input.path, text)?,
        Format::Aws => read_aws(&input.path, text, &args.aws_services, &args.aws_regions)?,
    };
    if list.entries.is_empty() {
        bail!(
            "{}: no prefixes to import{}; a policy rule needs at least one address",
            input.path.display(),
            if args.format == Format::Text {
                " (every line is blank or a comment)"
            } else {
                ""
            }
        );
    }
    Ok(render(args, rule, input, bytes, &list, today))
}

/// The input as text; a byte that is not UTF-8 is reported where it is.
fn utf8<'a>(file: &Path, bytes: &'a [u8]) -> Result<&'a str, PolicyError> {
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
fn read_text(file: &Path, text: &str) -> Result<ReadList, PolicyError> {
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
        entries.push(Entry {
            nets,
            origin: Origin::Line(index + 1),
        });
    }
    Ok(ReadList {
        entries,
        details: String::new(),
    })
}

/// AWS `ip-ranges.json` (https://ip-ranges.amazonaws.com/ip-ranges.json).
#[derive(Deserialize)]
struct AwsRanges {
    #[serde(rename = "syncToken")]
    sync_token: String,
    #[serde(rename = "createDate")]
    create_date: String,
    prefixes: Vec<AwsPrefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<AwsPrefix>,
}

#[derive(Deserialize)]
struct AwsPrefix {
    #[serde(alias = "ipv6_prefix")]
    ip_prefix: String,
    region: String,
    service: String,
}

const AWS_URL: &str = "https://ip-ranges.amazonaws.com/ip-ranges.json";

fn read_aws(
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
        entries.push(Entry {
            nets,
            origin: Origin::Label(format!("{} {}", p.service, p.region)),
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

fn join(items: &BTreeSet<&str>) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.iter().copied().collect::<Vec<_>>().join(", ")
    }
}

/// Identifies the input bytes in the notes: SHA-256, size and line count.
fn fingerprint(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let lines = bytes.iter().filter(|b| **b == b'\n').count()
        + usize::from(bytes.last().is_some_and(|b| *b != b'\n'));
    format!(
        "SHA-256 {hex}, {} bytes, {} line{}",
        bytes.len(),
        lines,
        if lines == 1 { "" } else { "s" }
    )
}

/// A TOML basic string with everything escaped that needs it.
fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Text safe inside a TOML comment (no control characters but tab).
fn comment_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}

/// A word as a POSIX shell would read it back.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command that regenerates the file (written into its header).
fn command_line(args: &ImportArgs) -> String {
    let mut words: Vec<String> = vec!["fwd".into(), "import".into()];
    let mut push = |flag: &str, value: &str| {
        words.push(flag.to_string());
        words.push(shell_word(value));
    };
    push("--format", args.format.as_str());
    for s in &args.aws_services {
        push("--aws-service", s);
    }
    for r in &args.aws_regions {
        push("--aws-region", r);
    }
    push("--vendor", &args.vendor);
    if let Some(name) = &args.vendor_name {
        push("--vendor-name", name);
    }
    push("--rule", &args.rule);
    push("--service", &args.service);
    let protocols: Vec<&str> = args
        .protocol
        .iter()
        .map(|p| Protocol::from(*p).as_str())
        .collect();
    push("--protocol", &protocols.join(","));
    if let Some(ports) = &args.ports {
        push("--ports", ports);
    }
    push("--level", Level::from(args.level).as_str());
    if let Some(region) = &args.region {
        push("--region", region);
    }
    if let Some(source) = &args.source {
        push("--source", source);
    }
    if let Some(out) = &args.output {
        push("-o", &out.display().to_string());
        words.push("--force".into());
    }
    words.push(shell_word(&args.input.display().to_string()));
    words.join(" ")
}

/// The prefixes' origins as a short comment: `lines 3-4, 9` or `EC2 us-east-1, ...`.
fn describe_origins(origins: &BTreeSet<&Origin>) -> String {
    const SHOWN: usize = 4;
    let mut lines: Vec<usize> = Vec::new();
    let mut labels: Vec<&str> = Vec::new();
    for o in origins {
        match o {
            Origin::Line(n) => lines.push(*n),
            Origin::Label(l) => labels.push(l),
        }
    }
    let mut items: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j + 1 < lines.len() && lines[j + 1] == lines[j] + 1 {
            j += 1;
        }
        items.push(if i == j {
            lines[i].to_string()
        } else {
            format!("{}-{}", lines[i], lines[j])
        });
        i = j + 1;
    }
    let line_word = if lines.len() == 1 { "line " } else { "lines " };
    let prefix = if lines.is_empty() { "" } else { line_word };
    items.extend(labels.iter().map(|l| l.to_string()));
    let more = items.len().saturating_sub(SHOWN);
    items.truncate(SHOWN);
    let mut text = format!("{prefix}{}", items.join(", "));
    if more > 0 {
        let _ = write!(text, " +{more} more");
    }
    comment_safe(&text)
}

fn render(
    args: &ImportArgs,
    rule: &RuleSettings,
    input: &Input,
    bytes: &[u8],
    list: &ReadList,
    today: Date,
) -> Imported {
    // Every prefix with its origin, sorted; then merged into the minimal disjoint cover.
    let mut tagged: Vec<(IpNet, &Origin)> = list
        .entries
        .iter()
        .flat_map(|e| e.nets.iter().map(move |n| (n.trunc(), &e.origin)))
        .collect();
    tagged.sort();
    let distinct: BTreeSet<IpNet> = tagged.iter().map(|(n, _)| *n).collect();
    let mut merged = IpNet::aggregate(&distinct.iter().copied().collect());
    merged.sort();

    // Each input prefix lies inside exactly one merged prefix (aggregation never splits an
    // aligned block), and both lists are sorted by start address: one sweep pairs them.
    let mut origins: Vec<BTreeSet<&Origin>> = vec![BTreeSet::new(); merged.len()];
    let mut m = 0;
    for (net, origin) in &tagged {
        while m < merged.len() && !merged[m].contains(net) {
            m += 1;
        }
        if let Some(set) = origins.get_mut(m) {
            set.insert(*origin);
        }
    }

    let summary = Summary {
        entries: list.entries.len(),
        prefixes: distinct.len(),
        merged: merged.len(),
        ipv4: merged.iter().filter(|n| matches!(n, IpNet::V4(_))).count(),
        ipv6: merged.iter().filter(|n| matches!(n, IpNet::V6(_))).count(),
    };
    let source = args.source.clone().unwrap_or_else(|| input.label.clone());
    let mut vendor_notes = format!(
        "Imported by `fwd import --format {}` on {today} from {} ({})",
        args.format.as_str(),
        input.label,
        fingerprint(bytes)
    );
    if !list.details.is_empty() {
        let _ = write!(vendor_notes, "; {}", list.details);
    }
    let _ = write!(vendor_notes, "; {}.", summary.describe());
    let rule_notes = format!(
        "The remote list is {source}, imported by fwd import on {today}: sorted, deduplicated \
         and merged, covering exactly the published addresses. Re-run the import (see the file \
         header) when the vendor publishes a new list rather than editing it by hand."
    );

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `fwd import` on {today} from {}.",
        comment_safe(&input.label)
    );
    out.push_str("# To update it, re-run the import on the vendor's new list:\n");
    let _ = writeln!(out, "#   {}", comment_safe(&command_line(args)));
    out.push('\n');
    out.push_str("[vendor]\n");
    let _ = writeln!(out, "id = {}", toml_str(&args.vendor));
    let _ = writeln!(
        out,
        "name = {}",
        toml_str(args.vendor_name.as_deref().unwrap_or(&args.vendor))
    );
    let _ = writeln!(out, "source = {}", toml_str(&source));
    let _ = writeln!(out, "reviewed = {}", toml_str(&today.to_string()));
    let _ = writeln!(out, "notes = {}", toml_str(&vendor_notes));
    out.push('\n');
    out.push_str("[[rule]]\n");
    let _ = writeln!(out, "id = {}", toml_str(&args.rule));
    let _ = writeln!(out, "service = {}", toml_str(&args.service));
    let _ = writeln!(out, "level = {}", toml_str(rule.level.as_str()));
    if let Some(region) = &args.region {
        let _ = writeln!(out, "region = {}", toml_str(region));
    }
    let protocols: Vec<String> = rule
        .protocols
        .iter()
        .map(|p| toml_str(p.as_str()))
        .collect();
    if protocols.len() == 1 {
        let _ = writeln!(out, "protocol = {}", protocols[0]);
    } else {
        let _ = writeln!(out, "protocol = [{}]", protocols.join(", "));
    }
    if !rule.ports.is_empty() {
        let ports: Vec<String> = rule
            .ports
            .iter()
            .map(|p| {
                if p.lo == p.hi {
                    p.lo.to_string()
                } else {
                    toml_str(&p.to_string())
                }
            })
            .collect();
        let _ = writeln!(out, "ports = [{}]", ports.join(", "));
    }
    let _ = writeln!(out, "notes = {}", toml_str(&rule_notes));
    out.push_str("remote = [\n");
    let width = merged
        .iter()
        .map(|n| n.to_string().len() + 3)
        .max()
        .unwrap_or(0);
    for (net, origin) in merged.iter().zip(&origins) {
        let item = format!("\"{net}\",");
        let _ = writeln!(out, "    {item:<width$} # {}", describe_origins(origin));
    }
    out.push_str("]\n");
    Imported { text: out, summary }
}

/// Writes `dest` whole or not at all (`atomic_file`): replacing it with `force`, else
/// refusing if it exists, also when it was created after the early check.
fn write_atomically(dest: &Path, contents: &[u8], force: bool) -> anyhow::Result<()> {
    let existing = if force {
        atomic_file::Existing::Replace
    } else {
        atomic_file::Existing::Keep
    };
    atomic_file::write_bytes(dest, existing, contents).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{}: already exists; pass --force to replace it",
            dest.display()
        ),
        _ => anyhow::anyhow!(
            "{}: cannot write: {e}; check that its directory exists and is writable",
            dest.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        import: ImportArgs,
    }

    fn args(argv: &[&str]) -> ImportArgs {
        Cli::try_parse_from(std::iter::once("fwd-import").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
            .import
    }

    const TODAY: Date = Date {
        year: 2026,
        month: 5,
        day: 1,
    };

    fn import_bytes(argv: &[&str], file: &str, bytes: &[u8]) -> anyhow::Result<Imported> {
        let a = args(argv);
        let rule = RuleSettings::from_args(&a)?;
        import(&a, &rule, &Input::file(Path::new(file)), bytes, TODAY)
    }

    /// The networks of the generated file's single rule, after parsing it as a policy.
    fn parsed_nets(text: &str) -> Vec<IpNet> {
        let policy = policy::parse_vendor_file(Path::new("out.toml"), text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(policy.rules.len(), 1);
        policy.rules[0]
            .remotes
            .iter()
            .flat_map(|r| match r {
                Remote::Nets(n) => n.clone(),
                other => panic!("unexpected remote {other:?}"),
            })
            .collect()
    }

    fn covered(nets: &[IpNet], addr: &str) -> bool {
        let addr: IpAddr = addr.parse().unwrap();
        nets.iter().any(|n| n.contains(&addr))
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    const TEXT_ARGS: &[&str] = &[
        "--vendor",
        "acme",
        "--vendor-name",
        "Acme \"Video\" \\ Co",
        "--service",
        "Media \"servers\"",
        "--protocol",
        "tcp,udp",
        "--ports",
        "10000-20000,443,443",
        "--level",
        "recommended",
        "--region",
        "global",
        "--source",
        "https://acme.example/ips.txt",
        "list.txt",
    ];

    const TEXT_LIST: &str = "\
# Acme media servers, updated 2026-04-30
\u{20}
10.0.0.0/24
10.0.1.0/24   # adjacent to the line above: merges into 10.0.0.0/23
10.0.0.7      # inside 10.0.0.0/24 already

192.0.2.8-23
10.0.0.0/24
2001:db8::/33
\t2001:db8:8000::/33
198.51.100.0 255.255.255.0
";

    #[test]
    fn text_import_comments_blanks_duplicates_ranges_ipv6() {
        let out = import_bytes(TEXT_ARGS, "list.txt", TEXT_LIST.as_bytes()).unwrap();
        assert_eq!(
            out.summary,
            Summary {
                entries: 8,
                prefixes: 8,
                merged: 5,
                ipv4: 4,
                ipv6: 1
            }
        );
        let nets = parsed_nets(&out.text);
        assert_eq!(
            nets,
            [
                "10.0.0.0/23",
                "192.0.2.8/29",
                "192.0.2.16/29",
                "198.51.100.0/24",
                "2001:db8::/32"
            ]
            .map(net)
        );
        // Origins travel as comments beside each prefix.
        assert!(
            out.text.contains("\"10.0.0.0/23\",     # lines 3-5, 8\n"),
            "{}",
            out.text
        );
        assert!(out.text.contains("# line 7\n"));
        assert!(out.text.contains("# lines 9-10\n"));
        assert!(out.text.contains("# line 11\n"));

        let policy = policy::parse_vendor_file(Path::new("out.toml"), &out.text).unwrap();
        assert_eq!(policy.vendor.id, "acme");
        assert_eq!(policy.vendor.name, "Acme \"Video\" \\ Co");
        assert_eq!(
            policy.vendor.source.as_deref(),
            Some("https://acme.example/ips.txt")
        );
        assert_eq!(policy.vendor.reviewed.as_deref(), Some("2026-05-01"));
        let notes = policy.vendor.notes.unwrap();
        assert!(notes.contains("--format text"), "{notes}");
        assert!(notes.contains("list.txt"), "{notes}");
        assert!(
            notes.contains(&format!("{} bytes", TEXT_LIST.len())),
            "{notes}"
        );
        assert!(notes.contains("8 entries read"), "{notes}");
        let rule = &policy.rules[0];
        assert_eq!(rule.id, "imported");
        assert_eq!(rule.service, "Media \"servers\"");
        assert_eq!(rule.level, Level::Recommended);
        assert_eq!(rule.region.as_deref(), Some("global"));
        assert_eq!(rule.protocols, [Protocol::Tcp, Protocol::Udp]);
        assert_eq!(
            rule.ports,
            [
                PortRange { lo: 443, hi: 443 },
                PortRange {
                    lo: 10000,
                    hi: 20000
                }
            ]
        );
        assert!(
            rule.notes
                .as_deref()
                .unwrap()
                .contains("https://acme.example/ips.txt")
        );
    }

    #[test]
    fn round_trip_covers_exactly_the_input() {
        let out = import_bytes(TEXT_ARGS, "list.txt", TEXT_LIST.as_bytes()).unwrap();
        let nets = parsed_nets(&out.text);
        for inside in [
            "10.0.0.0",
            "10.0.0.7",
            "10.0.1.255",
            "192.0.2.8",
            "192.0.2.23",
            "198.51.100.77",
            "2001:db8::1",
            "2001:db8:ffff:ffff::1",
        ] {
            assert!(covered(&nets, inside), "{inside} should be covered");
        }
        for outside in [
            "9.255.255.255",
            "10.0.2.0",
            "192.0.2.7",
            "192.0.2.24",
            "198.51.101.0",
            "2001:db9::",
            "2001:db7:ffff::1",
        ] {
            assert!(!covered(&nets, outside), "{outside} should not be covered");
        }
        // The same address set as the input, entry by entry.
        let mut input: Vec<IpNet> = Vec::new();
        for line in TEXT_LIST.lines() {
            let entry = line.split('#').next().unwrap().trim();
            if let Ok(Remote::Nets(n)) = parse_remote(entry) {
                input.extend(n);
            }
        }
        assert_eq!(IpNet::aggregate(&input), nets);
        // Merged prefixes are disjoint.
        for (i, a) in nets.iter().enumerate() {
            for b in &nets[i + 1..] {
                assert!(!a.contains(b) && !b.contains(a), "{a} overlaps {b}");
            }
        }
    }

    #[test]
    fn bad_line_is_located() {
        let list = "10.0.0.0/24\n# fine\n  10.0.0.1/24  # host bits\n";
        let err = import_bytes(TEXT_ARGS, "list.txt", list.as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "list.txt:3:3: `10.0.0.1/24` has host bits set; the network is 10.0.0.0/24"
        );

        let err = import_bytes(TEXT_ARGS, "list.txt", b"1.2.3.4\n\n1.2.3.400\n").unwrap_err();
        assert!(err.to_string().starts_with("list.txt:3:1: "), "{err}");

        let err = import_bytes(TEXT_ARGS, "list.txt", b"1.2.3.4\n*.example.com\n").unwrap_err();
        assert!(err.to_string().starts_with("list.txt:2:1: "), "{err}");
        assert!(err.to_string().contains("domain name"), "{err}");

        let err = import_bytes(TEXT_ARGS, "list.txt", b"any\n").unwrap_err();
        assert!(err.to_string().starts_with("list.txt:1:1: "), "{err}");

        let err = import_bytes(TEXT_ARGS, "list.txt", b"1.2.3.4\n5.6.\xff\n").unwrap_err();
        assert!(err.to_string().starts_with("list.txt:2:5: "), "{err}");
        assert!(err.to_string().contains("UTF-8"), "{err}");

        let err = import_bytes(TEXT_ARGS, "list.txt", AWS_JSON.as_bytes()).unwrap_err();
        assert!(err.to_string().starts_with("list.txt:1:1: "), "{err}");
        assert!(err.to_string().contains("--format aws"), "{err}");

        let err = import_bytes(TEXT_ARGS, "list.txt", b"# nothing here\n\n").unwrap_err();
        assert!(err.to_string().contains("no prefixes"), "{err}");
    }

    const AWS_JSON: &str = r#"{
  "syncToken": "1777000000",
  "createDate": "2026-04-30-12-00-00",
  "prefixes": [
    {"ip_prefix": "3.5.140.0/22", "region": "ap-northeast-2", "service": "AMAZON", "network_border_group": "ap-northeast-2"},
    {"ip_prefix": "15.230.38.0/24", "region": "us-east-1", "service": "AMAZON", "network_border_group": "us-east-1"},
    {"ip_prefix": "15.230.38.0/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
    {"ip_prefix": "15.230.39.0/24", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
    {"ip_prefix": "52.94.76.0/22", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"},
    {"ip_prefix": "13.32.0.0/15", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"}
  ],
  "ipv6_prefixes": [
    {"ipv6_prefix": "2600:1f14::/35", "region": "us-west-2", "service": "EC2", "network_border_group": "us-west-2"},
    {"ipv6_prefix": "2600:1f18::/33", "region": "us-east-1", "service": "EC2", "network_border_group": "us-east-1"},
    {"ipv6_prefix": "2600:9000::/28", "region": "GLOBAL", "service": "CLOUDFRONT", "network_border_group": "GLOBAL"}
  ]
}
"#;

    fn aws_args(extra: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = [
            "--format",
            "aws",
            "--vendor",
            "aws",
            "--service",
            "EC2",
            "--ports",
            "443",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push("ip-ranges.json".into());
        v
    }

    fn import_aws(extra: &[&str], json: &str) -> anyhow::Result<Imported> {
        let argv = aws_args(extra);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        import_bytes(&argv, "ip-ranges.json", json.as_bytes())
    }

    #[test]
    fn aws_import_filters_by_service_and_region() {
        let out = import_aws(
            &["--aws-service", "ec2", "--aws-region", "us-east-1"],
            AWS_JSON,
        )
        .unwrap();
        let nets = parsed_nets(&out.text);
        assert_eq!(nets, ["15.230.38.0/23", "2600:1f18::/33"].map(net));
        assert_eq!(
            out.summary,
            Summary {
                entries: 3,
                prefixes: 3,
                merged: 2,
                ipv4: 1,
                ipv6: 1
            }
        );
        let policy = policy::parse_vendor_file(Path::new("aws.toml"), &out.text).unwrap();
        let notes = policy.vendor.notes.unwrap();
        for part in [
            "--format aws",
            "syncToken 1777000000",
            "createDate 2026-04-30-12-00-00",
            "kept service ec2 in region us-east-1: 3 of the file's 9 prefixes",
        ] {
            assert!(notes.contains(part), "{part:?} missing from {notes}");
        }
        assert!(out.text.contains("# EC2 us-east-1\n"), "{}", out.text);

        // Every region, two services.
        let out = import_aws(&["--aws-service", "EC2,CLOUDFRONT"], AWS_JSON).unwrap();
        let nets = parsed_nets(&out.text);
        assert_eq!(
            nets,
            [
                "13.32.0.0/15",
                "15.230.38.0/23",
                "52.94.76.0/22",
                "2600:1f14::/35",
                "2600:1f18::/33",
                "2600:9000::/28"
            ]
            .map(net)
        );
        assert!(covered(&nets, "13.33.255.255"));
        assert!(!covered(&nets, "3.5.140.1"));
        assert!(!covered(&nets, "15.230.40.0"));
        assert!(covered(&nets, "2600:9000::1"));
        assert!(!covered(&nets, "2600:1f14:2000::"));
    }

    #[test]
    fn aws_errors_are_clear() {
        let err = import_aws(&["--aws-service", "EC2"], "\n10.0.0.0/8\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("ip-ranges.json:2:1: "), "{msg}");
        assert!(msg.contains("`10.0.0.0/8`"), "{msg}");
        assert!(msg.contains("not JSON"), "{msg}");
        assert!(msg.contains("--format text"), "{msg}");

        let err = import_aws(
            &["--aws-service", "EC2"],
            r#"{"syncToken": "1", "createDate": "x"}"#,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("not AWS ip-ranges.json"), "{msg}");
        assert!(msg.contains("missing field `prefixes`"), "{msg}");
        assert!(msg.contains(AWS_URL), "{msg}");

        let json = r#"{"syncToken": "1", "createDate": "x",
  "prefixes": [{"region": "us-east-1", "service": "EC2"}]}"#;
        let msg = import_aws(&["--aws-service", "EC2"], json)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("ip-ranges.json:2:"), "{msg}");
        assert!(msg.contains("missing field `ip_prefix`"), "{msg}");

        // Syntax errors inside the object are located too.
        let msg = import_aws(&["--aws-service", "EC2"], "{\n  \"syncToken\": 1,,\n}")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("ip-ranges.json:2:"), "{msg}");
        assert!(msg.contains("not "), "{msg}");

        let msg = import_aws(&["--aws-service", "EC2"], "")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("the input is empty"), "{msg}");

        let msg = import_aws(&["--aws-service", "LAMBDA"], AWS_JSON)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no prefix has service `LAMBDA`"), "{msg}");
        assert!(msg.contains("AMAZON, CLOUDFRONT, EC2"), "{msg}");

        let msg = import_aws(
            &["--aws-service", "EC2", "--aws-region", "mars-1"],
            AWS_JSON,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("region `mars-1`"), "{msg}");
        assert!(msg.contains("us-east-1, us-west-2"), "{msg}");

        let msg = import_aws(
            &[
                "--aws-service",
                "EC2,CLOUDFRONT",
                "--aws-region",
                "us-east-1",
            ],
            AWS_JSON,
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains(
                "service `CLOUDFRONT` has no prefix in region us-east-1; its regions are GLOBAL"
            ),
            "{msg}"
        );

        let bad = AWS_JSON.replace("15.230.39.0/24", "15.230.39.1/24");
        let msg = import_aws(&["--aws-service", "EC2"], &bad)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("ip-ranges.json:8:"), "{msg}");
        assert!(msg.contains("host bits"), "{msg}");

        let msg = import_aws(&[], AWS_JSON).unwrap_err().to_string();
        assert!(msg.contains("needs --aws-service"), "{msg}");
    }

    #[test]
    fn option_errors_teach() {
        let check = |argv: &[&str], expected: &str| {
            let err = RuleSettings::from_args(&args(argv))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        };
        check(
            &["--vendor", "a", "--service", "s", "x"],
            "--ports is required",
        );
        check(
            &[
                "--vendor",
                "Acme Video",
                "--service",
                "s",
                "--ports",
                "443",
                "x",
            ],
            "e.g. `acme-video`",
        );
        check(
            &[
                "--vendor",
                "a",
                "--rule",
                "R",
                "--service",
                "s",
                "--ports",
                "443",
                "x",
            ],
            "--rule `R`",
        );
        check(
            &[
                "--vendor",
                "a",
                "--service",
                "s",
                "--protocol",
                "icmp",
                "--ports",
                "1",
                "x",
            ],
            "drop --ports",
        );
        check(
            &[
                "--vendor",
                "a",
                "--service",
                "s",
                "--protocol",
                "tcp,any",
                "x",
            ],
            "give it alone",
        );
        check(
            &[
                "--vendor",
                "a",
                "--service",
                "s",
                "--protocol",
                "udp,icmp",
                "--ports",
                "1",
                "x",
            ],
            "one rule cannot be both",
        );
        check(
            &["--vendor", "a", "--service", "s", "--ports", "443,,80", "x"],
            "empty item",
        );
        check(
            &["--vendor", "a", "--service", "s", "--ports", "0", "x"],
            "outside 1-65535",
        );
        check(
            &[
                "--vendor",
                "a",
                "--service",
                "s",
                "--ports",
                "1",
                "--aws-service",
                "EC2",
                "x",
            ],
            "with --format aws",
        );
        // icmp alone takes no ports and yields a valid file.
        let out = import_bytes(
            &[
                "--vendor",
                "a",
                "--service",
                "Ping",
                "--protocol",
                "icmp",
                "x",
            ],
            "x",
            b"192.0.2.1\n",
        )
        .unwrap();
        assert_eq!(parsed_nets(&out.text), [net("192.0.2.1/32")]);
    }

    /// A fresh directory for one test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fwd-import-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn output_file_is_atomic_and_not_overwritten_without_force() {
        let dir = temp_dir("output");
        let input = dir.join("list.txt");
        fs::write(&input, "192.0.2.0/24\n").unwrap();
        let out = dir.join("acme.toml");
        let argv = |force: bool| {
            let mut v = vec![
                "--vendor".to_string(),
                "acme".into(),
                "--service".into(),
                "Media".into(),
                "--ports".into(),
                "443".into(),
                "-o".into(),
                out.display().to_string(),
                input.display().to_string(),
            ];
            if force {
                v.push("--force".into());
            }
            v
        };
        let run_with = |force: bool| {
            let v = argv(force);
            let v: Vec<&str> = v.iter().map(String::as_str).collect();
            run(&args(&v))
        };

        // A new file is written whole.
        run_with(false).unwrap();
        let first = fs::read_to_string(&out).unwrap();
        assert_eq!(parsed_nets(&first), [net("192.0.2.0/24")]);
        assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

        // Without --force an existing file stays as it is.
        fs::write(&out, "old contents\n").unwrap();
        let err = run_with(false).unwrap_err().to_string();
        assert!(
            err.contains("already exists") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(fs::read_to_string(&out).unwrap(), "old contents\n");
        assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

        // The write path itself refuses too (a file created after the early check).
        let err = write_atomically(&out, b"new\n", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--force"), "{err}");
        assert_eq!(fs::read_to_string(&out).unwrap(), "old contents\n");
        assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

        // With --force it is replaced, and no temporary file remains.
        run_with(true).unwrap();
        let replaced = fs::read_to_string(&out).unwrap();
        assert_eq!(parsed_nets(&replaced), [net("192.0.2.0/24")]);
        assert!(replaced.contains(" --force "), "{replaced}");
        assert_eq!(listing(&dir), ["acme.toml", "list.txt"]);

        // A bad list writes nothing at all.
        fs::remove_file(&out).unwrap();
        fs::write(&input, "192.0.2.0/24\nnot an address\n").unwrap();
        let err = run_with(false).unwrap_err().to_string();
        assert!(err.contains("list.txt:2:1:"), "{err}");
        assert_eq!(listing(&dir), ["list.txt"]);

        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn header_command_regenerates_the_file() {
        let out = import_bytes(TEXT_ARGS, "list.txt", TEXT_LIST.as_bytes()).unwrap();
        let command = out
            .text
            .lines()
            .find_map(|l| l.strip_prefix("#   "))
            .unwrap();
        assert!(
            command.starts_with("fwd import --format text "),
            "{command}"
        );
        // Parse the command back (a minimal POSIX single-quote reader) and compare options.
        let mut words: Vec<String> = Vec::new();
        let mut chars = command.chars().peekable();
        while chars.peek().is_some() {
            let mut word = String::new();
            while let Some(c) = chars.next() {
                match c {
                    ' ' => break,
                    '\'' => word.extend(chars.by_ref().take_while(|c| *c != '\'')),
                    '\\' => word.extend(chars.next()),
                    c => word.push(c),
                }
            }
            words.push(word);
        }
        let again = Cli::try_parse_from(words.iter().skip(1)).unwrap().import;
        let original = args(TEXT_ARGS);
        assert_eq!(format!("{again:?}"), format!("{original:?}"));
    }

    #[test]
    fn help_renders() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for needle in ["--aws-service", "--ports", "Examples:", "--force"] {
            assert!(help.contains(needle), "{needle} missing from help");
        }
        Cli::command().debug_assert();
    }
}
