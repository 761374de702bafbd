//! `fwd import`: turns a vendor-published address list into a policy file.
//!
//! Vendors publish their networks as lists (one prefix per line) or as JSON (AWS's
//! `ip-ranges.json`). Typing them into a policy file by hand loses entries and provenance;
//! `fwd import` reads the list, checks every entry with the policy file's own `remote`
//! parser, sorts, deduplicates and merges the prefixes, and writes one complete vendor file
//! (`docs/policy.md`) whose `[vendor]` notes record what was imported, from which bytes,
//! with which filters. The output is parsed back before it is written: `fwd import` never
//! writes a file `fwd check` would reject, and never leaves half a file behind.
//!
//! Here: `run` and the write; `args` the command line, `read` the input formats, `render`
//! the policy file.

use std::{
    fs,
    io::{self, Read as _, Write as _},
    path::Path,
    process::ExitCode,
};

use anyhow::{Context as _, bail};

use crate::atomic_file;
use crate::policy::{self, Date};

mod args;
mod file;
mod read;
#[cfg(test)]
mod tests;
use args::RuleSettings;
pub use args::{Format, ImportArgs, LevelArg, ProtocolArg};
pub use file::FeedOrigin;
use file::render;
use read::Input;
use read::read_aws;
use read::read_text;
use read::utf8;

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
pub struct Imported {
    pub text: String,
    summary: Summary,
    /// The distinct prefixes the list named, before merging.
    pub distinct: Vec<ipnet::IpNet>,
}

impl Imported {
    /// The one-line summary (entries, prefixes, merged).
    pub fn describe(&self) -> String {
        self.summary.describe()
    }
}

/// `fwd import`'s checks of the rule arguments, for a `[[feed]]` that carries them.
pub fn check_args(args: &ImportArgs) -> anyhow::Result<()> {
    RuleSettings::from_args(args).map(|_| ())
}

/// A feed's list as a policy file: `args` describe the rule (as `fwd import`'s would),
/// `bytes` are what the server sent. Refused like `fwd import` refuses a file: located,
/// and nothing is written here.
pub fn generate(
    args: &ImportArgs,
    bytes: &[u8],
    today: Date,
    feed: &FeedOrigin,
) -> anyhow::Result<(Imported, Option<String>)> {
    let rule = RuleSettings::from_args(args)?;
    let input = Input {
        path: std::path::PathBuf::from(&feed.url),
        label: feed.url.clone(),
    };
    let list = read_list(args, &input, bytes)?;
    let version = list.version.clone();
    let imported = render(args, &rule, &input, bytes, &list, today, Some(feed));
    Ok((imported, version))
}

/// Reads the list in `bytes` and renders the policy file.
fn import(
    args: &ImportArgs,
    rule: &RuleSettings,
    input: &Input,
    bytes: &[u8],
    today: Date,
) -> anyhow::Result<Imported> {
    let list = read_list(args, input, bytes)?;
    Ok(render(args, rule, input, bytes, &list, today, None))
}

/// Reads the list in `bytes` as `args.format` says; an empty list is an error.
fn read_list(args: &ImportArgs, input: &Input, bytes: &[u8]) -> anyhow::Result<read::ReadList> {
    let text = utf8(&input.path, bytes)?;
    let list = match args.format {
        Format::Text => read_text(&input.path, text)?,
        Format::Aws => read_aws(&input.path, text, &args.aws_services, &args.aws_regions)?,
        Format::Google => read::read_google(&input.path, text, &args.google_scopes)?,
        Format::M365 => {
            read::read_m365(&input.path, text, &args.m365_areas, &args.m365_categories)?
        }
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
    Ok(list)
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
