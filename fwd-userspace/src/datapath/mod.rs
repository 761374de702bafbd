//! The only module that talks to the kernel: load, attach, fill, swap, read counters.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use aya::{
    Ebpf, EbpfError, EbpfLoader, Pod,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRunOptions, Xdp, XdpMode,
        tc::{self, SchedClassifierLinkId},
        xdp::XdpLinkId,
    },
    util::{KernelVersion, nr_cpus},
};
use fwd_common::{
    Counter, FLOWS_CAPACITY, FlowKey, FlowValue, FwdConfig, PortKey, PortVerdict, Reason,
    rule_counter_index,
};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::{debug, info, warn};

use crate::compile::MapImage;

/// The kernel programs, built by build.rs from `fwd-ebpf`; empty without the `ebpf` feature.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fwd-ebpf"));

/// How long in-flight programs may still read the old slot after a flip. XDP and TC
/// programs run under RCU and finish in microseconds; this is a wide margin.
const SLOT_GRACE: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the eBPF object: {0} (fwd needs root or CAP_BPF + CAP_NET_ADMIN)")]
    Load(#[from] EbpfError),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading the possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("this build of fwd has no eBPF programs (built without the `ebpf` feature)")]
    NoPrograms,
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching {program} to interface `{iface}`: {source}; check that the interface exists in this network namespace"
    )]
    Attach {
        program: &'static str,
        iface: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "Linux {found} is too old: fwd needs {MIN_KERNEL} or newer (LPM tries, ring buffers, BPF-to-BPF calls)"
    )]
    KernelTooOld { found: String },
}

/// The oldest kernel fwd supports (stated in the README).
pub const MIN_KERNEL: &str = "5.15";

/// Checks the running kernel against `MIN_KERNEL`.
pub fn check_kernel() -> Result<(), DatapathError> {
    match KernelVersion::current() {
        Ok(v) if v < KernelVersion::new(5, 15, 0) => Err(DatapathError::KernelTooOld {
            found: format!("{v:?}"),
        }),
        // A kernel whose version cannot be read is given the benefit of the doubt; loading
        // will say what is missing.
        _ => Ok(()),
    }
}

/// The programs in the eBPF object.
pub mod program {
    /// XDP, outbound (a gateway's LAN interface, ingress).
    pub const XDP_OUT: &str = "fwd_xdp";
    /// TC, outbound (a host's uplink, egress).
    pub const TC_OUT: &str = "fwd_tc_out";
    /// TC, inbound (a host's uplink ingress; a gateway's LAN interface egress).
    pub const TC_IN: &str = "fwd_tc_in";
}

/// Load-time sizes and the flow timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathOptions {
    pub flow_capacity: u32,
    pub tcp_timeout_s: u32,
    pub udp_timeout_s: u32,
    pub other_timeout_s: u32,
    pub samples_per_second: u32,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        let config = FwdConfig::default();
        Self {
            flow_capacity: FLOWS_CAPACITY,
            tcp_timeout_s: config.tcp_timeout_s,
            udp_timeout_s: config.udp_timeout_s,
            other_timeout_s: config.other_timeout_s,
            samples_per_second: config.samples_per_second,
        }
    }
}

/// One attached program.
enum Attachment {
    Xdp {
        iface: String,
        link: XdpLinkId,
    },
    Tc {
        program: &'static str,
        iface: String,
        /// True on the interface's ingress, false on its egress.
        ingress: bool,
        link: SchedClassifierLinkId,
    },
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}

/// One policy slot's maps.
struct Slot {
    dst4: LpmTrie<MapData, [u8; 4], u32>,
    dst6: LpmTrie<MapData, [u8; 16], u32>,
    ports: LpmTrie<MapData, PortKey, PortVerdict>,
}

/// How an XDP program got attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttachMode {
    Driver,
    Generic,
}

/// Counters of one rule, by packet direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Packets from the protected network out (egress rules, replies of inbound flows).
    pub outbound: Counter,
    /// Packets in (ingress rules, replies of outbound flows).
    pub inbound: Counter,
}

pub struct Datapath {
    ebpf: Ebpf,
    config: Array<MapData, FwdConfig>,
    slots: [Slot; 2],
    exempt4: LpmTrie<MapData, [u8; 4], u32>,
    exempt6: LpmTrie<MapData, [u8; 16], u32>,
    rule_counters: PerCpuArray<MapData, Counter>,
    reason_counters: PerCpuArray<MapData, Counter>,
    /// What each slot holds, so clearing removes exactly that.
    installed: [Option<MapImage>; 2],
    active: usize,
    attachments: Vec<Attachment>,
    /// Host entries learned at run time: address -> class value of the active image.
    learned: BTreeMap<IpAddr, u32>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl Datapath {
    /// Loads the programs and creates the maps with default sizes (nothing is attached).
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(&DatapathOptions::default())
    }

    /// Loads the programs and creates the maps (nothing is attached yet).
    pub fn load_with(options: &DatapathOptions) -> Result<Self, DatapathError> {
        if EBPF_OBJECT.is_empty() {
            return Err(DatapathError::NoPrograms);
        }
        check_kernel()?;
        raise_memlock_limit();
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("FLOWS", options.flow_capacity.max(1))
            .load(EBPF_OBJECT)?;
        let slots = [
            Slot {
                dst4: take(&mut ebpf, "DST4_0")?,
                dst6: take(&mut ebpf, "DST6_0")?,
                ports: take(&mut ebpf, "PORTS_0")?,
            },
            Slot {
                dst4: take(&mut ebpf, "DST4_1")?,
                dst6: take(&mut ebpf, "DST6_1")?,
                ports: take(&mut ebpf, "PORTS_1")?,
            },
        ];
        let mut datapath = Self {
            config: take(&mut ebpf, "CONFIG")?,
            exempt4: take(&mut ebpf, "EXEMPT4")?,
            exempt6: take(&mut ebpf, "EXEMPT6")?,
            rule_counters: take(&mut ebpf, "RULE_COUNTERS")?,
            reason_counters: take(&mut ebpf, "REASON_COUNTERS")?,
            slots,
            ebpf,
            installed: [None, None],
            active: 0,
            attachments: Vec::new(),
            learned: BTreeMap::new(),
        };
        let prog_err = |name| move |source| DatapathError::Program { name, source };
        let xdp: &mut Xdp = datapath
            .program_mut(program::XDP_OUT)?
            .try_into()
            .map_err(prog_err(program::XDP_OUT))?;
        xdp.load().map_err(prog_err(program::XDP_OUT))?;
        for name in [program::TC_OUT, program::TC_IN] {
            let tc: &mut SchedClassifier = datapath
                .program_mut(name)?
                .try_into()
                .map_err(prog_err(name))?;
            tc.load().map_err(prog_err(name))?;
        }
        datapath.write_config(FwdConfig {
            tcp_timeout_s: options.tcp_timeout_s,
            udp_timeout_s: options.udp_timeout_s,
            other_timeout_s: options.other_timeout_s,
            samples_per_second: options.samples_per_second,
            ..FwdConfig::default()
        })?;
        Ok(datapath)
    }

    fn program_mut(
        &mut self,
        name: &'static str,
    ) -> Result<&mut aya::programs::Program, DatapathError> {
        self.ebpf.program_mut(name).ok_or(DatapathError::Program {
            name,
            source: ProgramError::NotLoaded,
        })
    }

    fn xdp(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(program::XDP_OUT)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    fn classifier(&mut self, name: &'static str) -> &mut SchedClassifier {
        self.ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load")
    }

    /// Attaches a TC program to one side of `iface`: TCX where the kernel has it (6.6+),
    /// a clsact qdisc otherwise.
    fn attach_tc(
        &mut self,
        name: &'static str,
        iface: &str,
        side: TcAttachType,
    ) -> Result<(), DatapathError> {
        let attach_err = |source| DatapathError::Attach {
            program: name,
            iface: iface.to_string(),
            source,
        };
        if KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0)) {
            // The qdisc may be there already (another tool, an earlier run): that is fine.
            if let Err(err) = tc::qdisc_add_clsact(iface) {
                debug!(%iface, %err, "adding the clsact qdisc");
            }
        }
        let link = self
            .classifier(name)
            .attach(iface, side)
            .map_err(attach_err)?;
        info!(%iface, program = name, ?side, "TC program attached");
        self.attachments.push(Attachment::Tc {
            program: name,
            iface: iface.to_string(),
            ingress: matches!(side, TcAttachType::Ingress),
            link,
        });
        Ok(())
    }

    /// Gateway mode on the LAN interface `iface`: XDP on its ingress judges what the LAN
    /// sends out (native XDP where the driver has it, generic otherwise), and TC on its
    /// egress judges what comes back in, after NAT has restored the LAN host's address.
    pub fn attach_gateway(&mut self, iface: &str) -> Result<XdpAttachMode, DatapathError> {
        let mode = self.attach_xdp(iface)?;
        self.attach_tc(program::TC_IN, iface, TcAttachType::Egress)?;
        Ok(mode)
    }

    /// Host mode on the uplink `iface`: TC on its egress judges what the host sends, TC on
    /// its ingress what it receives.
    pub fn attach_host(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_tc(program::TC_OUT, iface, TcAttachType::Egress)?;
        self.attach_tc(program::TC_IN, iface, TcAttachType::Ingress)
    }

    fn attach_xdp(&mut self, iface: &str) -> Result<XdpAttachMode, DatapathError> {
        let program = self.xdp();
        let (link, mode) = match program.attach(iface, XdpMode::Driver) {
            Ok(link) => (link, XdpAttachMode::Driver),
            Err(err) => {
                debug!(%iface, %err, "native XDP unavailable, using generic XDP");
                let link = program.attach(iface, XdpMode::Skb).map_err(|source| {
                    DatapathError::Attach {
                        program: program::XDP_OUT,
                        iface: iface.to_string(),
                        source,
                    }
                })?;
                (link, XdpAttachMode::Generic)
            }
        };
        info!(%iface, ?mode, "XDP program attached");
        self.attachments.push(Attachment::Xdp {
            iface: iface.to_string(),
            link,
        });
        Ok(mode)
    }

    /// Detaches every program this datapath attached, the last attached first.
    pub fn detach_all(&mut self) {
        while let Some(attachment) = self.attachments.pop() {
            let (program, iface, result) = match attachment {
                Attachment::Xdp { iface, link } => {
                    let result = self.xdp().detach(link);
                    (program::XDP_OUT, iface, result)
                }
                Attachment::Tc {
                    program,
                    iface,
                    link,
                    ..
                } => {
                    let result = self.classifier(program).detach(link);
                    (program, iface, result)
                }
            };
            match result {
                Ok(()) => info!(%iface, program, "program detached"),
                Err(err) => warn!(%iface, program, %err, "detaching program"),
            }
        }
    }

    /// Enforce or audit for the whole policy.
    pub fn set_audit(&mut self, audit: bool) -> Result<(), DatapathError> {
        let mut config = self.read_config()?;
        config.mode = if audit {
            FwdConfig::MODE_AUDIT
        } else {
            FwdConfig::MODE_ENFORCE
        };
        self.write_config(config)
    }

    fn read_config(&self) -> Result<FwdConfig, DatapathError> {
        self.config.get(&0, 0).map_err(map_err("CONFIG"))
    }

    fn write_config(&mut self, config: FwdConfig) -> Result<(), DatapathError> {
        self.config.set(0, config, 0).map_err(map_err("CONFIG"))
    }

    /// Replaces the exemption tries (addresses that always pass: management, own addresses).
    pub fn set_exemptions(&mut self, nets: &[IpNet]) -> Result<(), DatapathError> {
        clear_trie(&mut self.exempt4, "EXEMPT4")?;
        clear_trie(&mut self.exempt6, "EXEMPT6")?;
        for net in nets {
            match net {
                IpNet::V4(n) => self
                    .exempt4
                    .insert(&key4(n), 1, 0)
                    .map_err(map_err("EXEMPT4"))?,
                IpNet::V6(n) => self
                    .exempt6
                    .insert(&key6(n), 1, 0)
                    .map_err(map_err("EXEMPT6"))?,
            }
        }
        Ok(())
    }

    /// Installs `image` atomically: fill the inactive slot, flip, wait, clear the old one.
    /// A packet sees either the old policy or the new one, never a mix. Learned host
    /// entries are carried over with their class values unchanged; when the new image
    /// numbers its classes differently, use `install_with_learned`.
    pub fn install(&mut self, image: &MapImage, generation: u32) -> Result<(), DatapathError> {
        let learned = self.learned.clone();
        self.install_with_learned(image, generation, learned)
    }

    /// Installs `image` together with the learned host entries that go with it (address ->
    /// class value in this image), atomically.
    pub fn install_with_learned(
        &mut self,
        image: &MapImage,
        generation: u32,
        learned: BTreeMap<IpAddr, u32>,
    ) -> Result<(), DatapathError> {
        let target = if self.installed[self.active].is_none() {
            self.active
        } else {
            1 - self.active
        };
        self.clear_slot(target)?;
        fill_slot(&mut self.slots[target], image)?;
        for (addr, class) in &learned {
            insert_host(&mut self.slots[target], *addr, *class)?;
        }
        self.learned = learned;
        self.reset_new_rule_counters(image)?;
        self.installed[target] = Some(image.clone());
        let mut config = self.read_config()?;
        config.active_slot = target as u32;
        config.generation = generation;
        self.write_config(config)?;
        let previous = self.active;
        self.active = target;
        if previous != target {
            std::thread::sleep(SLOT_GRACE);
            self.clear_slot(previous)?;
        }
        Ok(())
    }

    /// Adds a host entry (a /32 or /128 learned at run time, e.g. from DNS) with a class
    /// value of the active image, without a recompile. It replaces a compiled entry for the
    /// same host prefix until `forget`.
    pub fn learn(&mut self, addr: IpAddr, class: u32) -> Result<(), DatapathError> {
        if self.installed[self.active].is_some() {
            insert_host(&mut self.slots[self.active], addr, class)?;
        }
        self.learned.insert(addr, class);
        Ok(())
    }

    /// Removes a learned host entry; a compiled entry for the same host prefix comes back.
    pub fn forget(&mut self, addr: IpAddr) -> Result<(), DatapathError> {
        if self.learned.remove(&addr).is_none() {
            return Ok(());
        }
        let Some(image) = self.installed[self.active].as_ref() else {
            return Ok(());
        };
        let host = IpNet::from(addr);
        let compiled = match host {
            IpNet::V4(h) => image.dst4.iter().find(|(n, _)| *n == h).map(|(_, c)| *c),
            IpNet::V6(h) => image.dst6.iter().find(|(n, _)| *n == h).map(|(_, c)| *c),
        };
        let slot = &mut self.slots[self.active];
        match (compiled, host) {
            (Some(class), _) => insert_host(slot, addr, class),
            (None, IpNet::V4(h)) => slot.dst4.remove(&key4(&h)).map_err(map_err("DST4")),
            (None, IpNet::V6(h)) => slot.dst6.remove(&key6(&h)).map_err(map_err("DST6")),
        }
    }

    /// The learned host entries of the active policy.
    pub fn learned(&self) -> &BTreeMap<IpAddr, u32> {
        &self.learned
    }

    fn clear_slot(&mut self, index: usize) -> Result<(), DatapathError> {
        let Some(image) = self.installed[index].take() else {
            return Ok(());
        };
        let slot = &mut self.slots[index];
        for (net, _) in &image.dst4 {
            slot.dst4.remove(&key4(net)).map_err(map_err("DST4"))?;
        }
        for (net, _) in &image.dst6 {
            slot.dst6.remove(&key6(net)).map_err(map_err("DST6"))?;
        }
        for entry in &image.ports {
            slot.ports
                .remove(&Key::new(entry.prefix_len, entry.key))
                .map_err(map_err("PORTS"))?;
        }
        // Learned entries last: one over a compiled host prefix went with the image's entry,
        // and one learned after this slot was filled was never in it.
        for addr in self.learned.keys() {
            let removed = match IpNet::from(*addr) {
                IpNet::V4(h) => slot.dst4.remove(&key4(&h)),
                IpNet::V6(h) => slot.dst6.remove(&key6(&h)),
            };
            if let Err(err) = removed {
                debug!(%err, %addr, "learned entry not in the slot being cleared");
            }
        }
        Ok(())
    }

    /// Zeroes the counters of rules `image` brings that the active policy does not have
    /// (same id and name), so a new rule never starts with another rule's counts. Rules
    /// that stay keep counting across the swap.
    fn reset_new_rule_counters(&mut self, image: &MapImage) -> Result<(), DatapathError> {
        let active = self.installed[self.active].as_ref();
        let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        for rule in &image.rules {
            let kept = active
                .and_then(|a| a.rule(rule.id))
                .is_some_and(|old| old.vendor == rule.vendor && old.rule == rule.rule);
            if !kept {
                for inbound in [false, true] {
                    let zero = PerCpuValues::try_from(vec![Counter::default(); cpus])
                        .map_err(DatapathError::Cpus)?;
                    self.rule_counters
                        .set(rule_counter_index(rule.id, inbound), zero, 0)
                        .map_err(map_err("RULE_COUNTERS"))?;
                }
            }
        }
        Ok(())
    }

    /// Per-rule counters summed over CPUs, one per id of `ids`.
    pub fn rule_counters(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<Vec<RuleCounters>, DatapathError> {
        let read = |id, inbound| {
            sum_cpus(
                &self.rule_counters,
                rule_counter_index(id, inbound),
                "RULE_COUNTERS",
            )
        };
        ids.into_iter()
            .map(|id| {
                Ok(RuleCounters {
                    outbound: read(id, false)?,
                    inbound: read(id, true)?,
                })
            })
            .collect()
    }

    /// Per-reason counters summed over CPUs.
    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counter)>, DatapathError> {
        Reason::ALL
            .iter()
            .map(|r| {
                Ok((
                    *r,
                    sum_cpus(&self.reason_counters, *r as u32, "REASON_COUNTERS")?,
                ))
            })
            .collect()
    }

    /// Runs the outbound XDP program on one Ethernet frame through BPF_PROG_TEST_RUN,
    /// `repeat` times; returns the XDP action and the kernel's average time per run.
    /// Counters, flows and fragments record these runs like real packets.
    pub fn test_run_xdp(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program(program::XDP_OUT)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Datapath::load");
        test_run(program, program::XDP_OUT, frame, repeat)
    }

    /// Runs a TC program (`program::TC_OUT` or `program::TC_IN`) on one Ethernet frame;
    /// returns the TC action (-1 pass to the next program, 2 drop) and the time per run.
    pub fn test_run_tc(
        &self,
        name: &'static str,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(i32, Duration), DatapathError> {
        let program: &SchedClassifier = self
            .ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .ok_or(DatapathError::Program {
                name,
                source: ProgramError::NotLoaded,
            })?;
        let (action, duration) = test_run(program, name, frame, repeat)?;
        Ok((action as i32, duration))
    }

    /// Flows in the flow table whose last packet is within their protocol's timeout.
    /// Walks the table: cost grows with the number of entries.
    pub fn flows_active(&self) -> Result<u64, DatapathError> {
        let flows: aya::maps::HashMap<&MapData, FlowKey, FlowValue> = self
            .ebpf
            .map("FLOWS")
            .ok_or(DatapathError::MissingMap("FLOWS"))?
            .try_into()
            .map_err(map_err("FLOWS"))?;
        let config = self.read_config()?;
        let now = monotonic_ns();
        let mut live = 0;
        for entry in flows.iter() {
            // An entry evicted between listing and lookup is simply gone.
            let Ok((key, value)) = entry else { continue };
            let timeout = u64::from(config.timeout_s(key.protocol)) * 1_000_000_000;
            if now.saturating_sub(value.last_seen_ns) <= timeout {
                live += 1;
            }
        }
        Ok(live)
    }

    /// What is attached where: (interface, program, hook).
    pub fn attached(&self) -> Vec<(String, &'static str, &'static str)> {
        self.attachments
            .iter()
            .map(|a| match a {
                Attachment::Xdp { iface, .. } => (iface.clone(), program::XDP_OUT, "xdp"),
                Attachment::Tc {
                    program: name,
                    iface,
                    ingress,
                    ..
                } => {
                    let hook = if *ingress { "tc ingress" } else { "tc egress" };
                    (iface.clone(), *name, hook)
                }
            })
            .collect()
    }

    /// The ring buffer of denied-packet samples (its one reader takes it).
    pub fn take_denied_samples(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        take(&mut self.ebpf, "DENIED")
    }

    /// Entries in the active slot's maps.
    pub fn active_image(&self) -> Option<&MapImage> {
        self.installed[self.active].as_ref()
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        self.detach_all();
    }
}

fn test_run<P>(
    program: &P,
    name: &'static str,
    frame: &[u8],
    repeat: u32,
) -> Result<(u32, Duration), DatapathError>
where
    P: for<'a> aya::programs::TestRun<
            Opts<'a> = TestRunOptions<'a>,
            Result = aya::programs::TestRunResult,
        >,
{
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat.max(1);
    let result = program
        .test_run(opts)
        .map_err(|source| DatapathError::Program { name, source })?;
    Ok((result.return_value, result.duration))
}

fn fill_slot(slot: &mut Slot, image: &MapImage) -> Result<(), DatapathError> {
    for (net, class) in &image.dst4 {
        slot.dst4
            .insert(&key4(net), class, 0)
            .map_err(map_err("DST4"))?;
    }
    for (net, class) in &image.dst6 {
        slot.dst6
            .insert(&key6(net), class, 0)
            .map_err(map_err("DST6"))?;
    }
    for entry in &image.ports {
        slot.ports
            .insert(&Key::new(entry.prefix_len, entry.key), entry.verdict, 0)
            .map_err(map_err("PORTS"))?;
    }
    Ok(())
}

fn insert_host(slot: &mut Slot, addr: IpAddr, class: u32) -> Result<(), DatapathError> {
    match IpNet::from(addr) {
        IpNet::V4(h) => slot
            .dst4
            .insert(&key4(&h), class, 0)
            .map_err(map_err("DST4")),
        IpNet::V6(h) => slot
            .dst6
            .insert(&key6(&h), class, 0)
            .map_err(map_err("DST6")),
    }
}

fn key4(net: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

fn key6(net: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(u32::from(net.prefix_len()), net.network().octets())
}

/// Removes every entry of a trie whose contents no image records (the exemptions).
fn clear_trie<K: Pod, V: Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    name: &'static str,
) -> Result<(), DatapathError> {
    let keys: Vec<_> = trie
        .keys()
        .collect::<Result<_, _>>()
        .map_err(map_err(name))?;
    for key in keys {
        trie.remove(&key).map_err(map_err(name))?;
    }
    Ok(())
}

fn sum_cpus(
    map: &PerCpuArray<MapData, Counter>,
    index: u32,
    name: &'static str,
) -> Result<Counter, DatapathError> {
    let values = map.get(&index, 0).map_err(map_err(name))?;
    Ok(values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    }))
}

/// The clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; harmless on newer ones.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to an initialised rlimit.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        debug!(
            "raising RLIMIT_MEMLOCK failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The addresses of every interface in this network namespace, as host prefixes.
pub fn own_addresses() -> Vec<IpNet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpNet> = addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .map(IpNet::from)
        .collect();
    out.sort();
    out.dedup();
    out
}
