//! The fixture: a datapath with the policy installed, and one frame run through the
//! programs, asserting its verdict and the exact change of every reason and rule counter.

use std::collections::BTreeMap;

use fwd::{
    compile::{Selection, compile},
    datapath::{Datapath, DatapathError, ReasonCounters, RuleCounters, program},
    policy::Date,
};
use fwd_common::{Counter, Reason};
use ipnet::IpNet;

use Dir::{In, Out};
use Reason::{Allowed, AuditWouldDrop, Established, Exempt};

use crate::policy::*;
use fwd_lab::packet::*;

/// Linux 6.18's BPF_PROG_TEST_RUN for TC programs refuses (EINVAL) frames shorter than an
/// Ethernet header, and untagged IPv4 / IPv6 frames too short for the IP header (it reads
/// the header to set up the skb). XDP takes any frame of at least 14 bytes.
pub(crate) fn tc_test_run_refuses(frame: &[u8]) -> bool {
    if frame.len() < 14 {
        return true;
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => frame.len() < 14 + 20,
        ETH_P_IPV6 => frame.len() < 14 + 40,
        _ => false,
    }
}

pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const TC_PASS: i32 = -1;
pub(crate) const TC_DROP: i32 = 2;

/// Which way a rule counter counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Dir {
    Out,
    In,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Prog {
    Xdp,
    TcOut,
    TcIn,
}

/// What one run of a program did: its verdict and every counter that moved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Judged {
    pub(crate) pass: bool,
    /// (reason, direction of the packet) -> packets counted.
    pub(crate) reasons: BTreeMap<(Reason, Dir), u64>,
    /// (vendor/rule, direction) -> packets counted.
    pub(crate) rules: BTreeMap<(String, Dir), u64>,
}

impl Judged {
    pub(crate) fn new(pass: bool, reasons: &[(Reason, Dir)], rules: &[(&str, Dir)]) -> Judged {
        let mut out = Judged {
            pass,
            reasons: BTreeMap::new(),
            rules: BTreeMap::new(),
        };
        for r in reasons {
            *out.reasons.entry(*r).or_default() += 1;
        }
        for (name, dir) in rules {
            *out.rules.entry((name.to_string(), *dir)).or_default() += 1;
        }
        out
    }
}

/// An expected outcome: the verdict, the reasons counted, the rule counted (in the
/// direction of the program that runs).
#[derive(Clone, Debug)]
pub(crate) struct Want {
    pub(crate) pass: bool,
    pub(crate) reasons: Vec<Reason>,
    pub(crate) rule: Option<&'static str>,
}

/// Passes as `allowed` on `rule`.
pub(crate) fn allow(rule: &'static str) -> Want {
    Want {
        pass: true,
        reasons: vec![Allowed],
        rule: Some(rule),
    }
}

/// Passes as `established` on `rule`.
pub(crate) fn est(rule: &'static str) -> Want {
    Want {
        pass: true,
        reasons: vec![Established],
        rule: Some(rule),
    }
}

/// Passes as `exempt`, on no rule.
pub(crate) fn exempt() -> Want {
    Want {
        pass: true,
        reasons: vec![Exempt],
        rule: None,
    }
}

/// Dropped for `reason`, on no rule.
pub(crate) fn deny(reason: Reason) -> Want {
    Want {
        pass: false,
        reasons: vec![reason],
        rule: None,
    }
}

/// Would be dropped for `reason`, but passes as audited.
pub(crate) fn audit(reason: Reason) -> Want {
    Want {
        pass: true,
        reasons: vec![reason, AuditWouldDrop],
        rule: None,
    }
}

pub(crate) struct Snapshot {
    pub(crate) reasons: Vec<ReasonCounters>,
    pub(crate) rules: Vec<RuleCounters>,
}

pub(crate) struct Fixture {
    pub(crate) dp: Datapath,
    /// vendor/rule -> rule id.
    pub(crate) rules: Vec<(String, u32)>,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        Fixture::with_audit_vendors(&[])
    }

    /// The policy compiled with `audit` vendors in audit mode, installed in a fresh
    /// datapath, with the exemptions set.
    pub(crate) fn with_audit_vendors(audit: &[&str]) -> Fixture {
        let mut selection = Selection::widest(Date::parse("2026-11-21").unwrap());
        selection.audit_vendors = audit.iter().map(std::string::ToString::to_string).collect();
        let compiled = compile(&policy(), &selection).expect("the fixture policy compiles");
        let mut dp = Datapath::load().expect("loading the programs");
        dp.install(&compiled.image, 1)
            .expect("installing the policy");
        let exemptions: Vec<IpNet> = EXEMPTIONS.iter().map(|n| n.parse().unwrap()).collect();
        dp.set_exemptions(&exemptions).unwrap();
        let rules = compiled
            .image
            .rules
            .iter()
            .map(|r| (r.rule_ref().to_string(), r.id))
            .collect();
        Fixture { dp, rules }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            reasons: self.dp.reason_counters().unwrap(),
            rules: self
                .dp
                .rule_counters(self.rules.iter().map(|(_, id)| *id))
                .unwrap(),
        }
    }

    /// The counter changes between two snapshots; checks bytes = packets x `len`.
    pub(crate) fn delta(
        &self,
        before: &Snapshot,
        after: &Snapshot,
        pass: bool,
        len: usize,
    ) -> Judged {
        let mut judged = Judged::new(pass, &[], &[]);
        let check = |what: &str, b: &Counter, a: &Counter| -> u64 {
            let packets = a.packets - b.packets;
            assert_eq!(
                a.bytes - b.bytes,
                packets * len as u64,
                "{what}: bytes counted for {packets} packet(s) of {len} bytes"
            );
            packets
        };
        for (rb, ra) in before.reasons.iter().zip(&after.reasons) {
            for (dir, b, a) in [
                (Out, &rb.outbound, &ra.outbound),
                (In, &rb.inbound, &ra.inbound),
            ] {
                let n = check(rb.reason.label(), b, a);
                if n != 0 {
                    judged.reasons.insert((rb.reason, dir), n);
                }
            }
        }
        for (((name, _), b), a) in self.rules.iter().zip(&before.rules).zip(&after.rules) {
            for (dir, b, a) in [
                (Out, &b.outbound, &a.outbound),
                (In, &b.inbound, &a.inbound),
            ] {
                let n = check(name, b, a);
                if n != 0 {
                    judged.rules.insert((name.clone(), dir), n);
                }
            }
        }
        judged
    }

    /// Runs one program once on `frame`.
    pub(crate) fn try_run(&self, prog: Prog, frame: &[u8]) -> Result<Judged, DatapathError> {
        let before = self.snapshot();
        let pass = match prog {
            Prog::Xdp => match self.dp.test_run_xdp(frame, 1)?.0 {
                XDP_PASS => true,
                XDP_DROP => false,
                other => panic!("XDP action {other}"),
            },
            Prog::TcOut | Prog::TcIn => {
                let name = match prog {
                    Prog::TcOut => program::TC_OUT,
                    _ => program::TC_IN,
                };
                match self.dp.test_run_tc(name, frame, 1)?.0 {
                    TC_PASS => true,
                    TC_DROP => false,
                    other => panic!("TC action {other}"),
                }
            }
        };
        let after = self.snapshot();
        Ok(self.delta(&before, &after, pass, frame.len()))
    }

    pub(crate) fn run(&self, prog: Prog, frame: &[u8]) -> Judged {
        self.try_run(prog, frame)
            .unwrap_or_else(|e| panic!("test run of {prog:?} on {} bytes: {e}", frame.len()))
    }

    /// An outbound frame through `fwd_xdp` and then `fwd_tc_out`: both must give the same
    /// verdict and count the same. Where BPF_PROG_TEST_RUN refuses the frame for TC (see
    /// `tc_test_run_refuses`), it must refuse it and count nothing; XDP alone judges it.
    pub(crate) fn run_out(&self, frame: &[u8]) -> Judged {
        let xdp = self.run(Prog::Xdp, frame);
        if tc_test_run_refuses(frame) {
            let before = self.snapshot();
            let result = self.try_run(Prog::TcOut, frame);
            assert!(result.is_err(), "TC test run took {frame:02x?}: {result:?}");
            let after = self.snapshot();
            assert_eq!(
                self.delta(&before, &after, false, 0),
                Judged::new(false, &[], &[])
            );
        } else {
            let tc = self.run(Prog::TcOut, frame);
            assert_eq!(xdp, tc, "fwd_xdp and fwd_tc_out disagree on {frame:02x?}");
        }
        xdp
    }

    pub(crate) fn run_in(&self, frame: &[u8]) -> Judged {
        self.run(Prog::TcIn, frame)
    }

    /// What `want` means for a packet going `dir`: its reasons and rule count in that
    /// direction.
    pub(crate) fn judged(&self, want: &Want, dir: Dir) -> Judged {
        let rules: Vec<(&str, Dir)> = want.rule.iter().map(|r| (*r, dir)).collect();
        for (name, _) in &rules {
            assert!(
                self.rules.iter().any(|(n, _)| n == name),
                "no rule {name} in the fixture policy"
            );
        }
        let reasons: Vec<(Reason, Dir)> = want.reasons.iter().map(|r| (*r, dir)).collect();
        Judged::new(want.pass, &reasons, &rules)
    }

    /// Asserts what an outbound frame does in `fwd_xdp` and `fwd_tc_out`.
    #[track_caller]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the fixtures read fx.out(what, frame, allow(..)); a & at every call is noise"
    )]
    pub(crate) fn out(&self, what: &str, frame: &[u8], want: Want) {
        assert_eq!(
            self.run_out(frame),
            self.judged(&want, Out),
            "outbound: {what}"
        );
    }

    /// Asserts what an inbound frame does in `fwd_tc_in`.
    #[track_caller]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the fixtures read fx.inb(what, frame, allow(..)); a & at every call is noise"
    )]
    pub(crate) fn inb(&self, what: &str, frame: &[u8], want: Want) {
        assert_eq!(
            self.run_in(frame),
            self.judged(&want, In),
            "inbound: {what}"
        );
    }
}
