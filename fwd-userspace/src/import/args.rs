//! `fwd import`'s arguments: the input, the vendor and the rule it writes.

use std::path::PathBuf;

use anyhow::bail;
use clap::ValueEnum;

use crate::policy::{Level, PortRange, Protocol};

pub(super) const AFTER_HELP: &str = "\
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
#[derive(clap::Args, Clone, Debug, PartialEq, Eq)]
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

    /// With --format google: keep only the prefixes of this scope (cloud.json's regions,
    /// e.g. europe-west1); without it every prefix is kept.
    #[arg(long = "google-scope", value_name = "SCOPE", value_delimiter = ',')]
    pub google_scopes: Vec<String>,

    /// With --format m365: keep only the endpoint sets of this serviceArea (Exchange,
    /// Skype, SharePoint, Common); without it every area is kept.
    #[arg(long = "m365-area", value_name = "AREA", value_delimiter = ',')]
    pub m365_areas: Vec<String>,

    /// With --format m365: keep only the endpoint sets of this category (Optimize, Allow,
    /// Default); without it every category is kept.
    #[arg(long = "m365-category", value_name = "CATEGORY", value_delimiter = ',')]
    pub m365_categories: Vec<String>,

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
    /// Google's goog.json or cloud.json.
    Google,
    /// Microsoft 365's endpoints web service JSON.
    M365,
}

impl Format {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Aws => "aws",
            Format::Google => "google",
            Format::M365 => "m365",
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

/// The rule options, checked before any input is read.
#[derive(Debug)]
pub(super) struct RuleSettings {
    pub(super) protocols: Vec<Protocol>,
    pub(super) ports: Vec<PortRange>,
    pub(super) level: Level,
}

impl RuleSettings {
    pub(super) fn from_args(args: &ImportArgs) -> anyhow::Result<RuleSettings> {
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
            f if f != Format::Aws
                && (!args.aws_services.is_empty() || !args.aws_regions.is_empty()) =>
            {
                bail!(
                    "--aws-service and --aws-region filter AWS ip-ranges.json; use them with --format aws"
                )
            }
            f if f != Format::Google && !args.google_scopes.is_empty() => {
                bail!("--google-scope filters Google's cloud.json; use it with --format google")
            }
            f if f != Format::M365
                && (!args.m365_areas.is_empty() || !args.m365_categories.is_empty()) =>
            {
                bail!(
                    "--m365-area and --m365-category filter Microsoft 365's endpoints; use them with --format m365"
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
pub(super) fn parse_port_list(text: &str) -> anyhow::Result<Vec<PortRange>> {
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
pub(super) fn check_id(flag: &str, what: &str, id: &str) -> anyhow::Result<()> {
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
