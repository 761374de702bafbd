//! Domain rules: fwd answers DNS itself and opens the addresses of the names the policy
//! names before the answer reaches the client, so the first packet finds them in place.
//!
//! - `proxy`: listeners, upstream queries, reading answers (hickory-proto).
//! - `table`: what is learned, the runtime classes it needs, and when entries end.
//! - here: the counters, `learned.json`, and what `fwd dns` shows.

pub mod proxy;
pub mod steer;
pub mod table;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use serde::{Deserialize, Serialize};

pub use proxy::{Learner, Proxy, Transport};
pub use table::{Answer, Change, DnsTable, Limits, Observed, Saved};

use crate::compile::MapImage;

/// The file under `state_dir` that keeps learned names across restarts.
pub const LEARNED_FILE: &str = "learned.json";

/// The proxy's counters (Prometheus names are a stable contract).
pub struct DnsStats {
    queries: IntCounterVec,
    answers: IntCounterVec,
    cap_reached: IntCounterVec,
    /// From the upstream answer to the addresses being in the datapath.
    pub insert_seconds: Histogram,
}

impl Default for DnsStats {
    fn default() -> Self {
        Self::new()
    }
}

impl DnsStats {
    pub fn new() -> Self {
        let queries = IntCounterVec::new(
            Opts::new(
                "fwd_dns_queries_total",
                "Client queries the DNS proxy handled, by transport and result (answered, servfail, formerr, notimp, dropped).",
            ),
            &["transport", "result"],
        )
        .expect("valid metric");
        let answers = IntCounterVec::new(
            Opts::new(
                "fwd_dns_answers_total",
                "Upstream answers by what they did: opened, not_covered (no rule names the name), no_address, capped, mismatch (ignored: wrong ID or question), error.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let cap_reached = IntCounterVec::new(
            Opts::new(
                "fwd_dns_cap_reached_total",
                "Answers in which a name pattern already held max_addresses addresses, so some of their addresses were not opened.",
            ),
            &["pattern"],
        )
        .expect("valid metric");
        let insert_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "fwd_dns_insert_seconds",
                "Time from an upstream answer to its addresses being in the datapath.",
            )
            .buckets(vec![
                0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.05,
                0.25,
            ]),
        )
        .expect("valid metric");
        Self {
            queries,
            answers,
            cap_reached,
            insert_seconds,
        }
    }

    pub fn query(&self, transport: Transport, result: &str) {
        self.queries
            .with_label_values(&[transport.label(), result])
            .inc();
    }

    pub fn answer(&self, result: &str) {
        self.answers.with_label_values(&[result]).inc();
    }

    /// Counts what observing an answer did.
    pub fn observed(&self, observed: &Observed) {
        let result = if !observed.covered {
            "not_covered"
        } else if observed.opened > 0 {
            "opened"
        } else if !observed.capped.is_empty() {
            "capped"
        } else {
            "no_address"
        };
        self.answer(result);
        for pattern in &observed.capped {
            self.cap_reached
                .with_label_values(&[pattern.as_str()])
                .inc();
        }
    }

    /// Adds the counters and the table's gauges to a scrape.
    pub fn register(
        &self,
        registry: &Registry,
        names_active: usize,
        addresses_active: usize,
    ) -> Result<(), prometheus::Error> {
        let names = IntGauge::new(
            "fwd_dns_names_active",
            "Names whose learned addresses are open.",
        )?;
        names.set(names_active as i64);
        let addresses = IntGauge::new(
            "fwd_dns_addresses_active",
            "Learned addresses open in the datapath.",
        )?;
        addresses.set(addresses_active as i64);
        registry.register(Box::new(names))?;
        registry.register(Box::new(addresses))?;
        registry.register(Box::new(self.queries.clone()))?;
        registry.register(Box::new(self.answers.clone()))?;
        registry.register(Box::new(self.cap_reached.clone()))?;
        registry.register(Box::new(self.insert_seconds.clone()))?;
        Ok(())
    }
}

/// Applies the table's changes to the datapath, in order.
pub fn apply(
    datapath: &mut crate::datapath::Datapath,
    changes: &[Change],
) -> Result<(), crate::datapath::DatapathError> {
    for change in changes {
        match change {
            Change::AddClass(class, ports) => datapath.learn_class(*class, ports)?,
            Change::SetHost(addr, value) => datapath.learn(*addr, *value)?,
            Change::RemoveHost(addr) => datapath.forget(*addr)?,
            Change::RemoveClass(class) => datapath.forget_class(*class)?,
        }
    }
    Ok(())
}

fn learned_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LEARNED_FILE)
}

/// The learned names of the last run; `None` if there is no file or it cannot be read
/// (said in the log: the names are learned again as clients ask).
pub fn load(state_dir: &Path) -> Option<Saved> {
    let path = learned_path(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read the learned names; they are learned again as clients ask");
            return None;
        }
    };
    match serde_json::from_str(&text) {
        Ok(saved) => Some(saved),
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "the learned names file is damaged; it is ignored and rewritten");
            None
        }
    }
}

/// Writes `learned.json` atomically (`atomic_file`).
pub fn save(state_dir: &Path, saved: &Saved) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    crate::atomic_file::write_bytes(
        &learned_path(state_dir),
        crate::atomic_file::Existing::Replace,
        &serde_json::to_vec(saved)?,
    )
}

/// One learned address, as `fwd dns` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryStatus {
    pub name: String,
    /// CNAME targets after the name.
    pub via: Vec<String>,
    pub address: IpAddr,
    /// `vendor/rule` of each domain rule it opens.
    pub rules: Vec<String>,
    /// Seconds until it ends; 0 when it is past its TTL and a live flow keeps it.
    pub remaining_s: u64,
}

/// The answer to the control command `dns`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsReply {
    /// Whether the proxy is configured.
    pub enabled: bool,
    pub listen: Vec<std::net::SocketAddr>,
    pub upstream: Vec<std::net::SocketAddr>,
    pub entries: Vec<EntryStatus>,
    /// (pattern, addresses held, cap)
    pub patterns: Vec<(String, usize, usize)>,
}

/// Each learned address as `fwd dns` shows it.
pub fn entry_status(table: &DnsTable, image: Option<&MapImage>, now_ms: u64) -> Vec<EntryStatus> {
    table
        .entries()
        .map(|e| EntryStatus {
            name: e.chain.first().cloned().unwrap_or_default(),
            via: e.chain.iter().skip(1).cloned().collect(),
            address: e.addr,
            rules: e
                .rules
                .iter()
                .map(|&id| match image.and_then(|i| i.rule(id)) {
                    Some(r) => r.rule_ref().to_string(),
                    None => format!("#{id}"),
                })
                .collect(),
            remaining_s: e.expires_ms.saturating_sub(now_ms).div_ceil(1000),
        })
        .collect()
}

impl std::fmt::Display for DnsReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.enabled {
            return write!(
                f,
                "the DNS proxy is off: add a [dns] section with `upstream` to the config"
            );
        }
        let list = |a: &[std::net::SocketAddr]| {
            a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "DNS proxy on {}, forwarding to {}",
            list(&self.listen),
            list(&self.upstream)
        )?;
        let names: std::collections::BTreeSet<_> = self.entries.iter().map(|e| &e.name).collect();
        writeln!(
            f,
            "{} names, {} learned addresses",
            names.len(),
            self.entries.len()
        )?;
        if !self.entries.is_empty() {
            writeln!(f, "{:<40} {:<40} {:>7}  RULES", "NAME", "ADDRESS", "TTL")?;
        }
        for e in &self.entries {
            let ttl = if e.remaining_s == 0 {
                "flow".to_string()
            } else {
                format!("{}s", e.remaining_s)
            };
            let mut name = e.name.clone();
            if let Some(last) = e.via.last() {
                name = format!("{name} -> {last}");
            }
            writeln!(
                f,
                "{name:<40} {:<40} {ttl:>7}  {}",
                e.address.to_string(),
                e.rules.join(", ")
            )?;
        }
        for (pattern, held, cap) in &self.patterns {
            if held >= cap {
                writeln!(
                    f,
                    "pattern {pattern} is full: {held} of {cap} addresses (raise [dns] max_addresses)"
                )?;
            }
        }
        Ok(())
    }
}
