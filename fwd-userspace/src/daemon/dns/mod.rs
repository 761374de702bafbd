//! Domain rules: fwd answers DNS itself and opens the addresses of the names the policy
//! names before the answer reaches the client, so the first packet finds them in place.
//!
//! - `proxy`: listeners, upstream queries, reading answers (hickory-proto).
//! - `sockets`: the listening sockets, kept by the service manager across restarts.
//! - `table`: what is learned, the runtime classes it needs, and when entries end.
//! - `store`: `learned.json` and the journal of what was learned since.
//! - here: the counters and what `fwd dns` shows (its reply type is `crate::control`'s).

pub mod proxy;
mod sockets;
pub mod steer;
mod store;
pub mod table;

pub use crate::control::{DnsReply, EntryStatus};
pub use store::{JOURNAL_FILE, Journal, LEARNED_FILE, journal_due, load, save, saved};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

pub use proxy::{Learner, Proxy, Transport};
pub use sockets::release_passed_sockets;
pub use table::{Answer, Change, DnsTable, Limits, Observed, Saved};

use crate::compile::MapImage;

/// The proxy's counters (Prometheus names are a stable contract).
pub struct DnsStats {
    pub(crate) queries: IntCounterVec,
    pub(crate) answers: IntCounterVec,
    pub(crate) cap_reached: IntCounterVec,
    /// From the upstream answer to the addresses being in the datapath.
    pub insert_seconds: Histogram,
    /// The steering table was found gone and put back.
    pub(crate) steering_restored: IntCounter,
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
                "Client queries the DNS proxy handled, by transport and result (answered, servfail, formerr, notimp, dropped, canary: the DoH canary answered NXDOMAIN).",
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
        let steering_restored = IntCounter::new(
            "fwd_dns_steering_restored_total",
            "Times the DNS steering table (inet fwd_dns) was found gone, flushed by another tool, and put back.",
        )
        .expect("valid metric");
        Self {
            queries,
            answers,
            cap_reached,
            insert_seconds,
            steering_restored,
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
