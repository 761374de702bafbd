//! What one packet costs in fwd's kernel programs: `fwd_xdp` (gateway) and `fwd_tc_out`
//! (host egress), IPv4 and IPv6, from 10 to 1,000,000 prefixes, as dense host prefixes and
//! as a realistic mix of lengths, each against a baseline program that runs the same parse
//! and passes (`fwd_xdp_parse`, `fwd_tc_parse`). Run through BPF_PROG_TEST_RUN on the real
//! eBPF object, with the policy installed as the daemon installs it.
//!
//! `cargo bench -p fwd-userspace --bench program_cost -- [--quick] --json FILE`; needs root
//! (BPF). `cargo xtask bench` runs it and prints the table; the method is in `METHOD`.
//! Experiments: `--frames N`, `--hot-frames N`, `--rounds N`, `--prefixes 10,1000`.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use etherparse::PacketBuilder;
use fwd::{
    compile::{Selection, compile, tables::SlotTables},
    datapath::{Datapath, DatapathOptions, TableCapacity, program},
    policy::{
        Date, Direction, Level, Location, PolicySet, PortRange, PortSide, Protocol, Remote, Rule,
        Vendor, VendorPolicy,
    },
};
use fwd_common::tables::{
    IndexEntry, MAX_DEPTH4, MAX_DEPTH6, chunk4, chunk6, descend, node_byte4, node_byte6,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{Value, json};

/// How the figures are taken, and why; copied into the JSON for the report.
const METHOD: &[&str] = &[
    "BPF_PROG_TEST_RUN with repeat=1 on each distinct frame, one pass over all frames per \
     program per round; ns/packet = the kernel's durations summed over the pass / frames. \
     Each frame is its own flow and most go to another prefix, as on a real link, so large \
     tries pay their cache and TLB misses. repeat=N on one frame measures one cache-hot path \
     instead and flatters large policies (shown as `repeat_n`, TC only: an XDP test run \
     with repeat > 1 enters the XDP dispatcher and waits an RCU grace period, ~20 ms a call).",
    "With repeat=1 each duration also holds the kernel's timing overhead (a clock read, \
     bottom halves off and on; integer ns); the baseline pays the same, so fwd minus \
     baseline is the cost of classification, lookups, flows and counters, while the ratio \
     understates it. Unattached, XDP programs run through an indirect call, fwd and baseline \
     alike.",
    "Baseline: fwd_xdp_parse / fwd_tc_parse run the same parse (and TC's pull) into the same \
     per-CPU scratch memory and pass; no policy lookup, flow, counter or clock.",
    "Rounds interleave fwd and baseline and the policy sizes: all sizes of one family and \
     shape are installed at once, each in its own datapath, and each round visits them in \
     turn: an uncounted pass brings that datapath's maps back into the caches, then XDP fwd, \
     XDP baseline, TC fwd, TC baseline (TC first in every other round). Drifting load on a \
     shared machine falls on small and large policies alike; figures are medians of the \
     rounds. First a checked pass (every verdict as generated) creates the allowed frames' \
     flows, then one uncounted round lets the flow table recycle its nodes; counted rounds \
     refresh the flows, as established traffic does. The thread stays on one CPU.",
    "Established flows: the frames as they are, after a checked pass created their flows: an \
     allowed packet takes the flow fast path (one flow-table lookup, no policy lookup); \
     `allowed_*` are over the allowed frames only (the established-flow figure), `denied_*` \
     over the denied ones (judged by the tables every time), `fwd_ns` over all. New \
     flows: every frame with a source address and port never seen before, so each is judged \
     by the policy tables and records its flow (the first packet of every connection).",
    "In cache (`hot`): the same passes, in the same rounds, over the first `hot_frames` \
     frames only, right after an uncounted pass over them: their flows, table entries and \
     counters stay in the caches and the TLB, so the difference to the full pass is what \
     the memory hierarchy costs (a few thousand flows and a large policy do not fit in a \
     shared VM's caches), and the rest is instructions.",
    "Frames: 7 of 8 allowed (a random address in a random installed prefix, the rule's \
     protocol and a port it allows), 1 of 8 denied (half to addresses no prefix covers, half \
     to an installed address on TCP port 23, which no rule opens). Policies: 100 prefixes \
     per rule, one or two port ranges each, built in memory and compiled by fwd's compiler.",
];

/// xorshift64*: every run measures the same policies and frames.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Host prefixes only (/32, /128): the most entries per address range, like learned
    /// DNS answers.
    Dense,
    /// The length mix of `cargo xtask bench`'s compile bench (`write_policy`).
    Mix,
    /// The mix, but IPv4 with 65,536 host prefixes (a whole /16) in one block: the
    /// direct index's worst chunk. (Every IPv6 policy here sits in 2001:db8::/32, one
    /// chunk of the index: IPv6 is always this case.)
    Skew,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Dense => "dense",
            Shape::Mix => "mix",
            Shape::Skew => "skew",
        }
    }

    fn lengths(self, family: Family) -> &'static [u8] {
        match (self, family) {
            (Shape::Dense, Family::V4) => &[32],
            (Shape::Dense, Family::V6) => &[128],
            (Shape::Mix | Shape::Skew, Family::V4) => &[20, 22, 24, 24, 26, 28, 32, 32, 32],
            (Shape::Mix | Shape::Skew, Family::V6) => &[48, 56, 64, 64, 96, 128],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::Tc => "tc",
        }
    }
}

/// A generated rule: what frames to it must carry to be allowed.
struct RuleSpec {
    protocol: Protocol,
    ports: Vec<PortRange>,
    nets: Vec<IpNet>,
}

/// Addresses no generated prefix covers: the denied frames' destinations.
fn denied4() -> Ipv4Net {
    "198.18.0.0/15".parse().expect("valid")
}

fn denied6() -> Ipv6Net {
    "3fff::/20".parse().expect("valid")
}

/// The skewed shape's /16 of host prefixes (outside every generated block: blocks avoid it).
const SKEW_BLOCK: u32 = 0x2d00_0000;
const SKEW_HOSTS: usize = 1 << 16;

/// A /16 of ordinary unicast space for one rule's IPv4 prefixes (as a vendor's list sits in
/// its own blocks): not the local network, loopback, link-local, multicast or `denied4`.
fn block4(rng: &mut Rng) -> u32 {
    loop {
        let block = (rng.next() as u32) & 0xffff_0000;
        let first = block >> 24;
        let reserved = matches!(first, 0 | 10 | 127)
            || first >= 224
            || block >> 16 == 0xa9fe
            || block == SKEW_BLOCK
            || denied4().contains(&Ipv4Addr::from(block));
        if !reserved {
            return block;
        }
    }
}

/// `prefixes` distinct prefixes of `family` with `shape`'s lengths, 100 per rule, each rule
/// in its own block (blocks collide now and then, so some prefixes nest across rules, as in
/// `write_policy`), with one or two port ranges per rule.
fn generate(family: Family, shape: Shape, prefixes: usize, rng: &mut Rng) -> Vec<RuleSpec> {
    let rules = prefixes.div_ceil(100).max(1);
    let mut seen: HashSet<IpNet> = HashSet::with_capacity(prefixes);
    let mut out = Vec::with_capacity(rules);
    for r in 0..rules {
        let want = prefixes / rules + usize::from(r < prefixes % rules);
        // Ports from 1024 up: TCP 23 is never allowed, so denied frames use it.
        let lo = 1024 + rng.below(59_000) as u16;
        let hi = lo.saturating_add(rng.below(4_000) as u16);
        let single = 1024 + rng.below(1024) as u16;
        let protocol = if rng.below(2) == 0 {
            Protocol::Tcp
        } else {
            Protocol::Udp
        };
        let block4 = block4(rng);
        let block6 = (0x2001_0db8u128 << 96) | (u128::from(rng.below(1 << 16) as u16) << 80);
        // Skew: the first 65,536 prefixes are every host of one /16.
        let skewed = shape == Shape::Skew && family == Family::V4 && r * 100 < SKEW_HOSTS;
        let mut nets = Vec::with_capacity(want);
        if skewed {
            for host in (r * 100..(r * 100 + want).min(SKEW_HOSTS)).map(|h| h as u32) {
                let net = IpNet::V4(Ipv4Net::new((SKEW_BLOCK | host).into(), 32).expect("a host"));
                if seen.insert(net) {
                    nets.push(net);
                }
            }
        }
        while nets.len() < want {
            let len = *rng.pick(shape.lengths(family));
            let net = match family {
                Family::V4 => {
                    let addr = block4 | (rng.next() as u32 & 0xffff);
                    IpNet::V4(Ipv4Net::new(addr.into(), len).expect("len <= 32").trunc())
                }
                Family::V6 => {
                    let addr =
                        block6 | (u128::from(rng.next()) << 16) | u128::from(rng.next() as u16);
                    IpNet::V6(Ipv6Net::new(addr.into(), len).expect("len <= 128").trunc())
                }
            };
            if seen.insert(net) {
                nets.push(net);
            }
        }
        out.push(RuleSpec {
            protocol,
            ports: vec![
                PortRange { lo, hi },
                PortRange {
                    lo: single,
                    hi: single,
                },
            ],
            nets,
        });
    }
    out
}

/// The rules as a policy, 1,000 rules per vendor file.
fn policy(rules: &[RuleSpec]) -> PolicySet {
    let vendors = rules
        .chunks(1000)
        .enumerate()
        .map(|(v, chunk)| {
            let file = PathBuf::from(format!("bench{v}.toml"));
            let rules = chunk
                .iter()
                .enumerate()
                .map(|(i, spec)| Rule {
                    id: format!("r{i}"),
                    service: "s".into(),
                    purpose: None,
                    level: Level::Mandatory,
                    profile: None,
                    region: None,
                    direction: Direction::Egress,
                    protocols: vec![spec.protocol],
                    ports: spec.ports.clone(),
                    port_side: PortSide::Remote,
                    related: false,
                    remotes: vec![Remote::Nets(spec.nets.clone())],
                    not_before: None,
                    not_after: None,
                    notes: None,
                    todo: None,
                    location: Location {
                        file: file.clone(),
                        line: 1 + i,
                        col: 1,
                    },
                })
                .collect();
            VendorPolicy {
                vendor: Vendor {
                    id: format!("bench{v}"),
                    name: format!("Bench {v}"),
                    source: None,
                    reviewed: None,
                    notes: None,
                },
                rules,
                file,
            }
        })
        .collect();
    PolicySet { vendors }
}

struct Frame {
    bytes: Vec<u8>,
    dst: IpAddr,
    allowed: bool,
}

/// Makes `frame` the first packet of a flow never seen before: the low 16 bits of its source
/// address and its source port become `n`'s (no program checks the checksums).
fn renew(frame: &mut [u8], family: Family, n: u32) {
    let (addr_end, l4) = match family {
        Family::V4 => (14 + 16, 14 + 20),
        Family::V6 => (14 + 24, 14 + 40),
    };
    frame[addr_end - 2..addr_end].copy_from_slice(&((n >> 16) as u16).to_be_bytes());
    frame[l4..l4 + 2].copy_from_slice(&(n as u16).to_be_bytes());
}

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const LOCAL4: [u8; 4] = [10, 1, 0, 2];
const LOCAL6: [u8; 16] = 0xfd00_0001_0000_0000_0000_0000_0000_0002u128.to_be_bytes();
const PAYLOAD: [u8; 32] = [0x5a; 32];
/// The port denied frames to installed addresses use (every rule opens 1024 and up).
const DENIED_PORT: u16 = 23;

/// A random address inside `net`.
fn address_in(net: &IpNet, rng: &mut Rng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host = (rng.next() as u32) & !u32::from(n.netmask());
            IpAddr::V4((u32::from(n.network()) | host).into())
        }
        IpNet::V6(n) => {
            let random = (u128::from(rng.next()) << 64) | u128::from(rng.next());
            IpAddr::V6((u128::from(n.network()) | (random & !u128::from(n.netmask()))).into())
        }
    }
}

fn frame(dst: IpAddr, protocol: Protocol, src_port: u16, dst_port: u16) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(SRC_MAC, DST_MAC);
    let ip = match dst {
        IpAddr::V4(a) => eth.ipv4(LOCAL4, a.octets(), 64),
        IpAddr::V6(a) => eth.ipv6(LOCAL6, a.octets(), 64),
    };
    let mut out = Vec::new();
    let written = if protocol == Protocol::Udp {
        ip.udp(src_port, dst_port).write(&mut out, &PAYLOAD)
    } else {
        ip.tcp(src_port, dst_port, 1, 65535)
            .syn()
            .write(&mut out, &PAYLOAD)
    };
    written.expect("writing to a Vec");
    out
}

/// `count` frames, each from its own source port (its own flow): 7 of 8 allowed, 1 of 8
/// denied (alternately no address match and no port match).
fn frames(family: Family, rules: &[RuleSpec], count: usize, rng: &mut Rng) -> Vec<Frame> {
    (0..count)
        .map(|i| {
            let src_port = 20_000 + (i % 40_000) as u16;
            let rule = rng.pick(rules);
            let installed = address_in(rng.pick(&rule.nets), rng);
            if i % 8 != 7 {
                let range = rng.pick(&rule.ports);
                let port = range.lo + rng.below(u64::from(range.hi - range.lo) + 1) as u16;
                Frame {
                    bytes: frame(installed, rule.protocol, src_port, port),
                    dst: installed,
                    allowed: true,
                }
            } else if (i / 8) % 2 == 0 {
                let unknown = match family {
                    Family::V4 => address_in(&IpNet::V4(denied4()), rng),
                    Family::V6 => address_in(&IpNet::V6(denied6()), rng),
                };
                Frame {
                    bytes: frame(unknown, Protocol::Tcp, src_port, 443),
                    dst: unknown,
                    allowed: false,
                }
            } else {
                Frame {
                    bytes: frame(installed, Protocol::Tcp, src_port, DENIED_PORT),
                    dst: installed,
                    allowed: false,
                }
            }
        })
        .collect()
}

/// How deep the address lookups of the allowed frames go in `tables`, as means: node
/// levels below the direct index, and ranges in the slice searched at the end (0: the
/// entry gives the class). Each level and each cache line of a slice is a dependent read.
fn lookup_shape(tables: &SlotTables, frames: &[Frame]) -> Value {
    let (mut levels, mut ranges, mut n) = (0u64, 0u64, 0u64);
    for f in frames.iter().filter(|f| f.allowed) {
        // `descend` as the kernel walks it, counting the node entries it reads.
        let level = std::cell::Cell::new(0u32);
        let node = |nodes: &[IndexEntry], i: u32| {
            level.set(level.get() + 1);
            nodes.get(i as usize).copied()
        };
        let entry = match f.dst {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                descend(
                    &tables.idx4[chunk4(a) as usize],
                    MAX_DEPTH4,
                    |l| node_byte4(a, l),
                    |i| node(&tables.nodes4, i),
                )
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let (hi, lo) = ((a >> 64) as u64, a as u64);
                descend(
                    &tables.idx6[chunk6(hi) as usize],
                    MAX_DEPTH6,
                    |l| node_byte6(hi, lo, l),
                    |i| node(&tables.nodes6, i),
                )
            }
        }
        .unwrap_or_default();
        let level = level.get();
        levels += u64::from(level);
        ranges += u64::from(entry.count);
        n += 1;
    }
    let mean = |sum: u64| sum as f64 / n.max(1) as f64;
    json!({"node_levels": mean(levels), "slice_ranges": mean(ranges)})
}

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// TC_ACT_UNSPEC and TC_ACT_SHOT as the kernel returns them.
const TC_PASS: u32 = u32::MAX;
const TC_DROP: u32 = 2;

/// One run of fwd's program (`baseline` false) or its baseline on `frame`, `repeat` times:
/// the program's return value and the kernel's average time per run.
fn run(
    dp: &mut Datapath,
    hook: Hook,
    baseline: bool,
    frame: &[u8],
    repeat: u32,
) -> anyhow::Result<(u32, Duration)> {
    Ok(match (hook, baseline) {
        (_, true) => dp.test_run_parse_only(hook == Hook::Xdp, frame, repeat)?,
        (Hook::Xdp, false) => dp.test_run_xdp(frame, repeat)?,
        (Hook::Tc, false) => {
            let (action, time) = dp.test_run_tc(program::TC_OUT, frame, repeat)?;
            (action as u32, time)
        }
    })
}

/// Mean ns per packet over one pass of `frames`: over all of them, over the allowed ones and
/// over the denied ones (an allowed frame of an established flow takes the flow fast path; a
/// denied one is judged by the policy tables every time).
#[derive(Clone, Copy)]
struct Means {
    all: f64,
    allowed: f64,
    denied: f64,
}

/// One pass of `frames`, each run `repeat` times.
fn pass(
    dp: &mut Datapath,
    hook: Hook,
    baseline: bool,
    frames: &[Frame],
    repeat: u32,
) -> anyhow::Result<Means> {
    let (mut allowed, mut denied) = ((0.0, 0usize), (0.0, 0usize));
    for f in frames {
        let ns = run(dp, hook, baseline, &f.bytes, repeat)?.1.as_nanos() as f64;
        let sum = if f.allowed { &mut allowed } else { &mut denied };
        sum.0 += ns;
        sum.1 += 1;
    }
    let mean = |(total, n): (f64, usize)| total / n.max(1) as f64;
    Ok(Means {
        all: (allowed.0 + denied.0) / frames.len().max(1) as f64,
        allowed: mean(allowed),
        denied: mean(denied),
    })
}

/// Like `pass`, but every frame is the first packet of a new flow (`renew`, numbered on from
/// `next_flow`): the cost of judging by the policy and recording the flow.
fn new_flow_pass(
    dp: &mut Datapath,
    hook: Hook,
    family: Family,
    frames: &[Frame],
    next_flow: &mut u32,
) -> anyhow::Result<f64> {
    let mut total = 0.0;
    let mut bytes = Vec::new();
    for f in frames {
        bytes.clone_from(&f.bytes);
        renew(&mut bytes, family, *next_flow);
        *next_flow = next_flow.wrapping_add(1);
        total += run(dp, hook, false, &bytes, 1)?.1.as_nanos() as f64;
    }
    Ok(total / frames.len() as f64)
}

/// Runs every frame once through every program and checks each verdict: fwd allows exactly
/// the frames generated as allowed, the baselines pass everything.
fn warm_up(dp: &mut Datapath, frames: &[Frame]) -> anyhow::Result<()> {
    for hook in [Hook::Xdp, Hook::Tc] {
        for baseline in [false, true] {
            let mut wrong = 0;
            for f in frames {
                let (action, _) = run(dp, hook, baseline, &f.bytes, 1)?;
                let expected = match (hook, baseline || f.allowed) {
                    (Hook::Xdp, true) => XDP_PASS,
                    (Hook::Xdp, false) => XDP_DROP,
                    (Hook::Tc, true) => TC_PASS,
                    (Hook::Tc, false) => TC_DROP,
                };
                wrong += usize::from(action != expected);
            }
            if wrong > 0 {
                bail!(
                    "{} {}: {wrong} of {} frames got another verdict than generated; the bench would measure something else",
                    hook.name(),
                    if baseline { "baseline" } else { "fwd" },
                    frames.len()
                );
            }
        }
    }
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Frames of the in-cache passes: 224 allowed flows and their table entries fit in L2.
const HOT_FRAMES: usize = 256;

/// The sizes of the run.
struct Plan {
    quick: bool,
    prefixes: Vec<usize>,
    frames: usize,
    /// The frames of the in-cache passes (the first of `frames`).
    hot_frames: usize,
    rounds: usize,
    /// Rounds of the repeat=N comparison, and N.
    repeat_rounds: usize,
    repeat_n: u32,
}

/// One policy installed in its own datapath, with its frames.
struct Setup {
    prefixes: usize,
    dp: Datapath,
    frames: Vec<Frame>,
    stats: Value,
}

/// Compiles and installs `prefixes` prefixes of `family` and `shape` in a fresh datapath and
/// runs the checked warm-up pass; `Err` with the compiler's reason if the maps cannot hold
/// them.
fn setup(
    plan: &Plan,
    family: Family,
    shape: Shape,
    prefixes: usize,
) -> anyhow::Result<Result<Setup, String>> {
    // Seeded per configuration: each one measures the same policy and frames every run.
    let mut rng = Rng(0x5eed_f00d_dead_beef
        ^ ((prefixes as u64) << 8)
        ^ (u64::from(family == Family::V6) << 1)
        ^ u64::from(shape == Shape::Mix));
    let rules = generate(family, shape, prefixes, &mut rng);
    let started = Instant::now();
    let compiled = match compile(&policy(&rules), &Selection::widest(Date::today())) {
        Ok(c) => c,
        Err(err) => return Ok(Err(err.to_string())),
    };
    let compiled_s = started.elapsed().as_secs_f64();
    let image = &compiled.image;
    // Sized as the daemon sizes them, and a flow table that holds every new flow the
    // rounds make (an LRU table that evicts would measure its eviction too).
    let tables = SlotTables::build(image, &[]);
    let sizes = tables.sizes();
    let mut dp = Datapath::load_with(&DatapathOptions {
        tables: TableCapacity::for_policy(sizes),
        flow_capacity: 1 << 18,
        ..DatapathOptions::default()
    })
    .context("loading the programs (needs root)")?;
    let started = Instant::now();
    if let Err(err) = dp.install(image, 1) {
        return Ok(Err(err.to_string()));
    }
    let installed_s = started.elapsed().as_secs_f64();
    let frames = frames(family, &rules, plan.frames, &mut rng);
    let lookups = lookup_shape(&tables, &frames);
    drop(tables);
    warm_up(&mut dp, &frames)?;
    eprintln!(
        "program_cost: {} {} {prefixes}: compiled in {compiled_s:.1} s, installed in {installed_s:.1} s",
        family.name(),
        shape.name(),
    );
    let stats = json!({
        "address_entries": match family {
            Family::V4 => image.dst4.len(),
            Family::V6 => image.dst6.len(),
        },
        "port_entries": image.ports.len(),
        "classes": image.classes,
        "rules": image.rules.len(),
        "ranges": match family {
            Family::V4 => sizes.ranges4,
            Family::V6 => sizes.ranges6,
        },
        "port_ranges": sizes.port_ranges,
        "lookups": lookups,
        "compile_seconds": compiled_s,
        "install_seconds": installed_s,
    });
    Ok(Ok(Setup {
        prefixes,
        dp,
        frames,
        stats,
    }))
}

/// What a pass runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    /// fwd on the frames as they are: after the warm-up, packets of established flows.
    Established,
    /// fwd with every frame the first packet of a new flow.
    NewFlows,
    /// The parse-only program.
    Baseline,
}

/// The passes each round runs on each setup, in order.
const ORDER: [(Hook, Run); 6] = [
    (Hook::Xdp, Run::Established),
    (Hook::Xdp, Run::NewFlows),
    (Hook::Xdp, Run::Baseline),
    (Hook::Tc, Run::Established),
    (Hook::Tc, Run::NewFlows),
    (Hook::Tc, Run::Baseline),
];

/// One counted pass of `what`.
fn one_pass(
    dp: &mut Datapath,
    hook: Hook,
    what: Run,
    family: Family,
    frames: &[Frame],
    next_flow: &mut u32,
) -> anyhow::Result<Means> {
    Ok(match what {
        Run::Established => pass(dp, hook, false, frames, 1)?,
        Run::Baseline => pass(dp, hook, true, frames, 1)?,
        Run::NewFlows => {
            let ns = new_flow_pass(dp, hook, family, frames, next_flow)?;
            Means {
                all: ns,
                allowed: ns,
                denied: ns,
            }
        }
    })
}

/// Measures every setup of one family and shape, interleaved: each round runs every
/// program on every setup, so drifting load falls on small and large policies alike.
/// Returns one JSON result per setup and hook.
fn measure(
    plan: &Plan,
    family: Family,
    shape: Shape,
    setups: &mut [Setup],
) -> anyhow::Result<Vec<Value>> {
    let started = Instant::now();
    // [setup][ORDER index] -> ns per round.
    let mut values = vec![vec![Vec::with_capacity(plan.rounds); ORDER.len()]; setups.len()];
    let mut hot_values = values.clone();
    // New flows are numbered on across rounds and hooks: none repeats.
    let mut next_flow = 1u32;
    // Round 0 is not counted: the flow table's first updates after the warm-up take nodes
    // it has never touched; later rounds recycle them, as steady traffic does.
    for round in 0..=plan.rounds {
        // XDP first in even rounds, TC first in odd ones: neither hook always follows the
        // switch from another setup.
        let turn = if round % 2 == 0 {
            [0, 1, 2, 3, 4, 5]
        } else {
            [3, 4, 5, 0, 1, 2]
        };
        for (s, setup) in setups.iter_mut().enumerate() {
            // Uncounted: brings this datapath's maps back into the caches the other setups
            // used, so each counted pass finds what its own traffic left there (else the
            // first program after the switch pays for it, the next one not).
            let (first, _) = ORDER[turn[0]];
            let hot = plan.hot_frames.min(setup.frames.len());
            let all = setup.frames.len();
            for (frames, values) in [(..all, &mut values), (..hot, &mut hot_values)] {
                let frames = &setup.frames[frames];
                pass(&mut setup.dp, first, false, frames, 1)?;
                for i in turn {
                    let (hook, what) = ORDER[i];
                    let ns = one_pass(&mut setup.dp, hook, what, family, frames, &mut next_flow)?;
                    if round > 0 {
                        values[s][i].push(ns);
                    }
                }
            }
        }
    }
    // TC only: an XDP test run with repeat > 1 adds the program to the XDP dispatcher and
    // removes it after, waiting for an RCU grace period each time (~20 ms a call).
    let mut repeated = vec![[Vec::new(), Vec::new()]; setups.len()];
    for _ in 0..plan.repeat_rounds {
        for (s, setup) in setups.iter_mut().enumerate() {
            pass(&mut setup.dp, Hook::Tc, false, &setup.frames, 1)?;
            for (i, baseline) in [false, true].into_iter().enumerate() {
                repeated[s][i].push(
                    pass(
                        &mut setup.dp,
                        Hook::Tc,
                        baseline,
                        &setup.frames,
                        plan.repeat_n,
                    )?
                    .all,
                );
            }
        }
    }
    eprintln!(
        "program_cost: {} {}: measured in {:.1} s",
        family.name(),
        shape.name(),
        started.elapsed().as_secs_f64()
    );
    let mut results = Vec::new();
    for (s, setup) in setups.iter().enumerate() {
        for (h, hook) in [Hook::Xdp, Hook::Tc].into_iter().enumerate() {
            let (fwd, new, base) = (
                &values[s][3 * h],
                &values[s][3 * h + 1],
                &values[s][3 * h + 2],
            );
            let all = |v: &[Means]| v.iter().map(|m| m.all).collect::<Vec<_>>();
            let (fwd_all, new_all, base_all) = (all(fwd), all(new), all(base));
            let (f, n, b) = (median(&fwd_all), median(&new_all), median(&base_all));
            let of = |v: &[Means], pick: fn(&Means) -> f64| {
                median(&v.iter().map(pick).collect::<Vec<_>>())
            };
            let (fa, ba) = (of(fwd, |m| m.allowed), of(base, |m| m.allowed));
            let (fd, bd) = (of(fwd, |m| m.denied), of(base, |m| m.denied));
            let hot = |i: usize| &hot_values[s][3 * h + i];
            let (hot_allowed, hot_base) = (of(hot(0), |m| m.allowed), of(hot(2), |m| m.allowed));
            let hot_new = of(hot(1), |m| m.all);
            let mut result = json!({
                "program": hook.name(),
                "family": family.name(),
                "shape": shape.name(),
                "prefixes": setup.prefixes,
                "installed": setup.stats,
                "fwd_ns": f,
                "new_flow_ns": n,
                "baseline_ns": b,
                "difference_ns": f - b,
                "new_flow_difference_ns": n - b,
                "ratio": f / b,
                "allowed_ns": fa,
                "allowed_difference_ns": fa - ba,
                "denied_ns": fd,
                "denied_difference_ns": fd - bd,
                "fwd_rounds": fwd_all,
                "new_flow_rounds": new_all,
                "baseline_rounds": base_all,
                "hot": {
                    "allowed_ns": hot_allowed,
                    "allowed_difference_ns": hot_allowed - hot_base,
                    "new_flow_ns": hot_new,
                    "baseline_ns": of(hot(2), |m| m.all),
                },
            });
            if hook == Hook::Tc && plan.repeat_rounds > 0 {
                result["repeat_n"] = json!({
                    "repeat": plan.repeat_n,
                    "fwd_ns": median(&repeated[s][0]),
                    "baseline_ns": median(&repeated[s][1]),
                    "fwd_rounds": repeated[s][0],
                    "baseline_rounds": repeated[s][1],
                });
            }
            results.push(result);
        }
    }
    Ok(results)
}

struct Args {
    quick: bool,
    json: Option<PathBuf>,
    frames: Option<usize>,
    hot_frames: Option<usize>,
    rounds: Option<usize>,
    prefixes: Option<Vec<usize>>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        quick: false,
        json: None,
        frames: None,
        hot_frames: None,
        rounds: None,
        prefixes: None,
    };
    let mut it = std::env::args().skip(1);
    let number = |v: Option<String>, what: &str| -> anyhow::Result<usize> {
        v.with_context(|| format!("{what} needs a number"))?
            .parse()
            .with_context(|| format!("{what} needs a number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(it.next().context("--json needs a file")?.into()),
            "--frames" => args.frames = Some(number(it.next(), "--frames")?),
            "--hot-frames" => args.hot_frames = Some(number(it.next(), "--hot-frames")?),
            "--rounds" => args.rounds = Some(number(it.next(), "--rounds")?),
            "--prefixes" => {
                let list = it.next().context("--prefixes needs a list like 10,1000")?;
                args.prefixes = Some(
                    list.split(',')
                        .map(|p| p.trim().parse())
                        .collect::<Result<_, _>>()
                        .context("--prefixes needs a list like 10,1000")?,
                );
            }
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => bail!(
                "unknown argument `{other}`; usage: program_cost [--quick] [--json FILE] [--frames N] [--hot-frames N] [--rounds N] [--prefixes 10,1000]"
            ),
        }
    }
    Ok(args)
}

/// Keeps this thread on the CPU it runs on: a test run runs on the caller's CPU, and a
/// packet's programs run on one CPU (its queue's), with that CPU's caches and per-CPU maps.
fn stay_on_this_cpu() -> anyhow::Result<usize> {
    // SAFETY: no arguments; returns the CPU or -1.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        bail!("sched_getcpu: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (the kernel gave it), so this writes inside `set`.
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: a valid set of the size given, for this thread (0).
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) } != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(cpu as usize)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let cpu = stay_on_this_cpu()?;
    let mut plan = if args.quick {
        Plan {
            quick: true,
            prefixes: vec![10, 1_000, 100_000],
            frames: 4096,
            hot_frames: HOT_FRAMES,
            rounds: 3,
            repeat_rounds: 1,
            repeat_n: 32,
        }
    } else {
        Plan {
            quick: false,
            prefixes: vec![10, 1_000, 100_000, 1_000_000],
            frames: 4096,
            hot_frames: HOT_FRAMES,
            rounds: 21,
            repeat_rounds: 3,
            repeat_n: 32,
        }
    };
    plan.frames = args.frames.unwrap_or(plan.frames).max(8);
    plan.hot_frames = args
        .hot_frames
        .unwrap_or(plan.hot_frames)
        .clamp(8, plan.frames);
    plan.rounds = args.rounds.unwrap_or(plan.rounds).max(1);
    if let Some(p) = args.prefixes {
        plan.prefixes = p;
    }
    let started = Instant::now();
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for family in [Family::V4, Family::V6] {
        for shape in [Shape::Dense, Shape::Mix, Shape::Skew] {
            let mut setups = Vec::new();
            for &prefixes in &plan.prefixes {
                match setup(&plan, family, shape, prefixes)? {
                    Ok(s) => setups.push(s),
                    Err(reason) => {
                        eprintln!(
                            "program_cost: {} {} {prefixes}: not installable: {reason}",
                            family.name(),
                            shape.name()
                        );
                        skipped.push(json!({
                            "family": family.name(),
                            "shape": shape.name(),
                            "prefixes": prefixes,
                            "reason": reason,
                        }));
                    }
                }
            }
            results.extend(measure(&plan, family, shape, &mut setups)?);
        }
    }
    let runtime = started.elapsed().as_secs_f64();
    let out = json!({
        "mode": if plan.quick { "quick" } else { "full" },
        "cpu": cpu,
        "frames": plan.frames,
        "hot_frames": plan.hot_frames,
        "rounds": plan.rounds,
        "prefixes": plan.prefixes,
        "method": METHOD,
        "results": results,
        "skipped": skipped,
        "runtime_seconds": runtime,
    });
    let text = serde_json::to_string_pretty(&out)?;
    match &args.json {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("program_cost: wrote {} in {runtime:.0} s", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}
