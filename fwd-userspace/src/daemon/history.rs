//! What `fwd monitor --last/--since` reads: a bounded history of denied-packet samples,
//! and which name the DNS proxy last answered for each address (whether or not a rule
//! names it), so a sample can say "the client resolved meet.example.org, then sent here".

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use crate::control::DeniedSample;

/// Samples kept (the kernel sends at most 100 a second per CPU).
const SAMPLES: usize = 4096;
/// Addresses whose last answered name is kept.
const NAMES: usize = 16_384;

#[derive(Default)]
pub(super) struct History {
    samples: VecDeque<DeniedSample>,
    names: HashMap<IpAddr, String>,
    /// Insertion order of `names`, oldest first (an address answered again moves back).
    order: VecDeque<IpAddr>,
}

impl History {
    /// The proxy answered `name` with `addrs`.
    pub(super) fn answered(&mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) {
        for addr in addrs {
            if self.names.insert(addr, name.to_string()).is_some() {
                self.order.retain(|a| *a != addr);
            }
            self.order.push_back(addr);
            while self.order.len() > NAMES {
                if let Some(old) = self.order.pop_front() {
                    self.names.remove(&old);
                }
            }
        }
    }

    /// Annotates `sample` with the name last answered for its remote end, keeps it, and
    /// returns it.
    pub(super) fn record(&mut self, mut sample: DeniedSample) -> DeniedSample {
        let remote = if sample.direction == "out" {
            sample.dst
        } else {
            sample.src
        };
        sample.dns_name = remote.and_then(|a| self.names.get(&a).cloned());
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample.clone());
        sample
    }

    /// Every kept sample, oldest first.
    pub(super) fn samples(&self) -> Vec<DeniedSample> {
        self.samples.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dst: &str) -> DeniedSample {
        DeniedSample {
            time_ms: 0,
            interface: "lan0".into(),
            direction: "out".into(),
            protocol: "tcp".into(),
            src: Some("10.0.0.2".parse().unwrap()),
            dst: Some(dst.parse().unwrap()),
            src_port: 40000,
            dst_port: 443,
            reason: "no_address_match".into(),
            nearest_rule: None,
            dns_name: None,
            audited: false,
        }
    }

    #[test]
    fn a_sample_names_what_the_proxy_answered_for_its_remote_and_the_history_is_bounded() {
        let mut h = History::default();
        h.answered("meet.example.org", ["203.0.113.9".parse().unwrap()]);
        let s = h.record(sample("203.0.113.9"));
        assert_eq!(s.dns_name.as_deref(), Some("meet.example.org"));
        assert_eq!(h.record(sample("203.0.113.10")).dns_name, None);
        // Answered again under another name: the last one counts.
        h.answered("other.example.org", ["203.0.113.9".parse().unwrap()]);
        assert_eq!(
            h.record(sample("203.0.113.9")).dns_name.as_deref(),
            Some("other.example.org")
        );
        for _ in 0..SAMPLES + 10 {
            h.record(sample("192.0.2.1"));
        }
        assert_eq!(h.samples().len(), SAMPLES);
        for i in 0..(NAMES + 5) as u32 {
            h.answered("n.example", [IpAddr::from(std::net::Ipv4Addr::from(i))]);
        }
        assert_eq!(h.names.len(), NAMES);
        assert_eq!(h.order.len(), NAMES);
    }
}
