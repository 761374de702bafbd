//! The only module that talks to the kernel: load, attach, pin, fill, swap, read counters.

mod mmap;
mod pins;
mod slots;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader, Pod,
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuValues, RingBuf},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink, SchedClassifierLinkId},
        xdp::{XdpLink, XdpLinkId},
    },
    util::{KernelVersion, nr_cpus},
};
use fwd_common::{
    Counter, FLOWS_CAPACITY, FlowKey, FlowValue, FwdConfig, Reason, rule_counter_index,
};
use ipnet::IpNet;
pub use pins::Adoption;
pub use slots::TableCapacity;
use slots::{SlotMaps, SlotState};
use tracing::{debug, info, warn};

use crate::{
    compile::{MapImage, PortEntry},
    policy::RuleRef,
};

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
    #[error("{}: {what}", path.display())]
    Pin { path: PathBuf, what: String },
    #[error(
        "the policy needs {needed} entries in table {map}, which holds {capacity}: the tables are sized when fwd starts, so restart it to size them for this policy"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        capacity: usize,
    },
    #[error("class {0} is neither compiled nor learned (learn_class first)")]
    UnknownClass(u32),
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
    /// Bench only, never loaded by the daemon: `XDP_OUT`'s parse alone, always passing.
    pub const XDP_PARSE: &str = "fwd_xdp_parse";
    /// Bench only, never loaded by the daemon: `TC_OUT`'s pull and parse alone, always passing.
    pub const TC_PARSE: &str = "fwd_tc_parse";
}

/// Load-time sizes, the flow timeouts, and where to pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatapathOptions {
    pub flow_capacity: u32,
    pub tcp_timeout_s: u32,
    pub udp_timeout_s: u32,
    pub other_timeout_s: u32,
    pub samples_per_second: u32,
    /// Entries of each policy slot's tables (`TableCapacity::for_policy` sizes them for a
    /// policy).
    pub tables: TableCapacity,
    /// Pin maps, programs and links here (on a bpf filesystem) and adopt what an earlier
    /// run pinned; `None` keeps everything private to this process (tests, benchmarks).
    pub pin_dir: Option<PathBuf>,
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
            tables: TableCapacity::default(),
            pin_dir: None,
        }
    }
}

/// Where a program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    TcIngress,
    TcEgress,
}

impl Hook {
    pub fn name(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::TcIngress => "tc_ingress",
            Hook::TcEgress => "tc_egress",
        }
    }
}

/// How an attachment came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Attached by this run.
    Attached,
    /// A pinned link of an earlier run, running the same program version; now this run's.
    Adopted,
    /// A pinned link of an earlier run that ran another program version; replaced
    /// atomically (the link never went away).
    Replaced,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Attached => "attached",
            Origin::Adopted => "adopted",
            Origin::Replaced => "replaced",
        }
    }
}

/// What holds an attachment in place.
enum LinkHandle {
    /// Owned by the program: it goes when this process does.
    Xdp(XdpLinkId),
    Tc(SchedClassifierLinkId),
    /// Pinned: it stays until the pin is removed.
    Pinned {
        #[allow(dead_code)] // held for its file descriptor
        link: FdLink,
        path: PathBuf,
    },
}

/// One attached program.
struct Attachment {
    iface: String,
    program: &'static str,
    hook: Hook,
    origin: Origin,
    handle: LinkHandle,
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
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
    slots: [SlotMaps; 2],
    /// What each slot holds.
    state: [SlotState; 2],
    /// Networks that always pass; part of every install's address tables.
    exemptions: Vec<IpNet>,
    /// `FwdConfig::MODE_*` for the whole policy: written with every install's slot flip, in
    /// the same `CONFIG` write, so no packet sees a new policy under the old mode.
    mode: u32,
    capacity: TableCapacity,
    rule_counters: PerCpuArray<MapData, Counter>,
    reason_counters: PerCpuArray<MapData, Counter>,
    active: usize,
    attachments: Vec<Attachment>,
    pin_dir: Option<PathBuf>,
    /// The programs' own log records (aya-log), for the daemon to pass to its log.
    logger: Option<ProgramLog>,
    adoption: Adoption,
    /// The rules an adopted policy had (from the daemon's state), so the first install
    /// keeps their counters.
    adopted_rules: Option<Vec<(u32, RuleRef)>>,
}

/// The reader of the programs' log records; they go to the `log` crate, which the
/// daemon's tracing subscriber receives.
pub type ProgramLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Entries learned at run time (the DNS proxy's), beside a slot's compiled image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Learned {
    /// Host address (a /32 or /128 entry) -> class value, `CLASS_AUDIT` included.
    pub hosts: BTreeMap<IpAddr, u32>,
    /// Classes made at run time -> their port entries. Their numbers must not be classes
    /// of the image (the compiler numbers from 0 up; take them from high up).
    pub classes: BTreeMap<u32, Vec<PortEntry>>,
}

/// How long `install` took.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct InstallTimings {
    /// Filling the inactive slot.
    pub fill: Duration,
    /// Flipping to it, the grace period, and clearing the old slot.
    pub swap: Duration,
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
        let flow_capacity = options.flow_capacity.max(1);
        let mut max_entries = options.tables.max_entries();
        max_entries.push(("FLOWS", flow_capacity));
        // An earlier version's config map may have another shape: it is replaced, but its
        // generation carries on (the new tables are filled before the links move to the
        // new programs, so the old ones enforce until then).
        let mut earlier_generation = None;
        let (pinned_maps, adoption) = match &options.pin_dir {
            Some(dir) => {
                pins::prepare(dir)?;
                earlier_generation = pins::pinned_generation(dir);
                pins::plan_maps(dir, EBPF_OBJECT, &max_entries)?
            }
            None => (Vec::new(), Adoption::default()),
        };
        let mut loader = EbpfLoader::new();
        for (name, entries) in &max_entries {
            loader.map_max_entries(name, *entries);
        }
        for (name, path) in &pinned_maps {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        let mut ebpf = loader.load(EBPF_OBJECT)?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                debug!(%err, "the programs' log is not available");
                None
            }
        };
        let slots = [SlotMaps::take(&mut ebpf, 0)?, SlotMaps::take(&mut ebpf, 1)?];
        let mut datapath = Self {
            config: take(&mut ebpf, "CONFIG")?,
            rule_counters: take(&mut ebpf, "RULE_COUNTERS")?,
            reason_counters: take(&mut ebpf, "REASON_COUNTERS")?,
            slots,
            state: [SlotState::default(), SlotState::default()],
            exemptions: Vec::new(),
            mode: FwdConfig::MODE_ENFORCE,
            capacity: options.tables,
            ebpf,
            active: 0,
            attachments: Vec::new(),
            pin_dir: options.pin_dir.clone(),
            logger,
            adoption,
            adopted_rules: None,
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
        let mut config = FwdConfig::default();
        let kept_config = datapath.adoption.maps_kept.iter().any(|m| m == "CONFIG");
        if kept_config {
            // An earlier run's policy is in force: keep its slot, mode and generation, so
            // the programs it left attached go on judging exactly as before.
            let pinned = datapath.read_config()?;
            if pinned.generation != 0 {
                config = pinned;
                datapath.adoption.generation = pinned.generation;
                datapath.active = (pinned.active_slot as usize).min(1);
                for state in &mut datapath.state {
                    state.unknown = true;
                }
            }
        }
        if !kept_config && let Some(generation) = earlier_generation.filter(|&g| g != 0) {
            info!(
                generation,
                "taking over from pins of an earlier fwd version: its programs enforce until this version's are attached"
            );
            datapath.adoption.generation = generation;
            config.generation = generation;
        }
        // Flows recorded before this load are judged again (an earlier layout's carry no
        // epoch, and this run's policy is not installed yet).
        config.epoch = FwdConfig::next_epoch(config.epoch);
        config.tcp_timeout_s = options.tcp_timeout_s;
        config.udp_timeout_s = options.udp_timeout_s;
        config.other_timeout_s = options.other_timeout_s;
        config.samples_per_second = options.samples_per_second;
        // An adopted policy keeps its mode until an install or `set_audit` says otherwise.
        datapath.mode = config.mode;
        datapath.write_config(config)?;
        if let Some(dir) = &options.pin_dir {
            for name in [program::XDP_OUT, program::TC_OUT, program::TC_IN] {
                let path = dir.join(pins::PROGRAMS).join(name);
                pins::remove(&path)?;
                datapath
                    .program_mut(name)?
                    .pin(&path)
                    .map_err(|e| pins::pin_error(&path, e))?;
            }
        }
        Ok(datapath)
    }

    /// The programs' log records, for one reader to take and drain when readable.
    pub fn take_program_log(&mut self) -> Option<ProgramLog> {
        self.logger.take()
    }

    /// What the pins held when this datapath loaded.
    pub fn adoption(&self) -> &Adoption {
        &self.adoption
    }

    /// Where this datapath pins, if it does.
    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Tells an adopting datapath which rules the policy in force has, so the first
    /// install keeps the counters of the rules that stay.
    pub fn set_adopted_rules(&mut self, rules: Vec<(u32, RuleRef)>) {
        self.adopted_rules = Some(rules);
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

    /// The pin for `hook` on `iface`, when this datapath pins and the kernel gives that
    /// hook a link (XDP: always on supported kernels; TC: TCX, 6.6+).
    fn link_pin(&self, iface: &str, hook: Hook) -> Option<PathBuf> {
        let dir = self.pin_dir.as_deref()?;
        if hook != Hook::Xdp && !has_tcx() {
            return None;
        }
        pins::link_path(dir, iface, hook.name())
    }

    fn attach_error(program: &'static str, iface: &str, source: ProgramError) -> DatapathError {
        DatapathError::Attach {
            program,
            iface: iface.to_string(),
            source,
        }
    }

    /// Adopts the link pinned at `pin`, if there is a usable one; true if it did.
    fn try_adopt(
        &mut self,
        pin: Option<&Path>,
        name: &'static str,
        hook: Hook,
        iface: &str,
    ) -> Result<bool, DatapathError> {
        let Some(path) = pin.filter(|p| p.exists()) else {
            return Ok(false);
        };
        let Some((link, origin)) = self.adopt_link(path, name, hook, iface)? else {
            return Ok(false);
        };
        let path = path.to_path_buf();
        self.record(iface, name, hook, origin, LinkHandle::Pinned { link, path });
        Ok(true)
    }

    /// Takes over the pinned link at `path`: its program is replaced atomically by this
    /// run's (the hook never goes empty). `None` if the pin is not a usable link of the
    /// right kind; the caller then attaches anew.
    fn adopt_link(
        &mut self,
        path: &Path,
        name: &'static str,
        hook: Hook,
        iface: &str,
    ) -> Result<Option<(FdLink, Origin)>, DatapathError> {
        let fd: FdLink = match PinnedLink::from_pin(path) {
            Ok(pinned) => pinned.into(),
            Err(err) => {
                warn!(path = %path.display(), %err, "unreadable link pin; attaching anew");
                pins::remove(path)?;
                return Ok(None);
            }
        };
        let old_tag = fd
            .info()
            .ok()
            .and_then(|info| pins::program_tag(info.program_id()));
        let new_tag = self
            .program_mut(name)?
            .info()
            .map_err(|source| DatapathError::Program { name, source })?
            .tag();
        let origin = if old_tag == Some(new_tag) {
            Origin::Adopted
        } else {
            Origin::Replaced
        };
        let err = |source| Self::attach_error(name, iface, source);
        let fd = if hook == Hook::Xdp {
            let Ok(link) = XdpLink::try_from(fd) else {
                pins::remove(path)?;
                return Ok(None);
            };
            let xdp = self.xdp();
            let id = xdp.attach_to_link(link).map_err(err)?;
            FdLink::try_from(xdp.take_link(id).map_err(err)?)
        } else {
            let Ok(link) = SchedClassifierLink::try_from(fd) else {
                pins::remove(path)?;
                return Ok(None);
            };
            let tc = self.classifier(name);
            let id = tc.attach_to_link(link).map_err(err)?;
            FdLink::try_from(tc.take_link(id).map_err(err)?)
        };
        let fd = fd.map_err(|e| pins::pin_error(path, e))?;
        Ok(Some((fd, origin)))
    }

    fn record(
        &mut self,
        iface: &str,
        program: &'static str,
        hook: Hook,
        origin: Origin,
        handle: LinkHandle,
    ) {
        info!(%iface, program, hook = hook.name(), origin = origin.name(), "program in place");
        self.attachments.push(Attachment {
            iface: iface.to_string(),
            program,
            hook,
            origin,
            handle,
        });
    }

    /// Attaches a TC program to one side of `iface`: TCX where the kernel has it (6.6+),
    /// a clsact qdisc otherwise. With pins, a link an earlier run pinned there is adopted.
    fn attach_tc(
        &mut self,
        name: &'static str,
        iface: &str,
        side: TcAttachType,
    ) -> Result<(), DatapathError> {
        let hook = if matches!(side, TcAttachType::Ingress) {
            Hook::TcIngress
        } else {
            Hook::TcEgress
        };
        let pin = self.link_pin(iface, hook);
        if self.try_adopt(pin.as_deref(), name, hook, iface)? {
            return Ok(());
        }
        if !has_tcx() {
            // The qdisc may be there already (another tool, an earlier run): that is fine.
            if let Err(err) = tc::qdisc_add_clsact(iface) {
                debug!(%iface, %err, "adding the clsact qdisc");
            }
        }
        let err = |source| Self::attach_error(name, iface, source);
        let tc = self.classifier(name);
        let id = tc.attach(iface, side).map_err(err)?;
        let handle = match pin {
            Some(path) => pin_link(FdLink::try_from(tc.take_link(id).map_err(err)?), path)?,
            None => LinkHandle::Tc(id),
        };
        self.record(iface, name, hook, Origin::Attached, handle);
        Ok(())
    }

    /// Gateway mode on the LAN interface `iface`: XDP on its ingress judges what the LAN
    /// sends out (native XDP where the driver has it, generic otherwise), and TC on its
    /// egress judges what comes back in, after NAT has restored the LAN host's address.
    pub fn attach_gateway(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_xdp(iface)?;
        self.attach_tc(program::TC_IN, iface, TcAttachType::Egress)
    }

    /// Host mode on the uplink `iface`: TC on its egress judges what the host sends, TC on
    /// its ingress what it receives.
    pub fn attach_host(&mut self, iface: &str) -> Result<(), DatapathError> {
        self.attach_tc(program::TC_OUT, iface, TcAttachType::Egress)?;
        self.attach_tc(program::TC_IN, iface, TcAttachType::Ingress)
    }

    fn attach_xdp(&mut self, iface: &str) -> Result<(), DatapathError> {
        let name = program::XDP_OUT;
        let pin = self.link_pin(iface, Hook::Xdp);
        if self.try_adopt(pin.as_deref(), name, Hook::Xdp, iface)? {
            return Ok(());
        }
        let err = |source| Self::attach_error(name, iface, source);
        let program = self.xdp();
        let id = match program.attach(iface, XdpMode::Driver) {
            Ok(id) => id,
            Err(native) => {
                // veth, dummy and many virtual NICs lack native XDP; generic mode works
                // everywhere, at a lower packet rate.
                debug!(%iface, %native, "native XDP unavailable, using generic mode");
                program.attach(iface, XdpMode::Skb).map_err(err)?
            }
        };
        let handle = match pin {
            Some(path) => pin_link(FdLink::try_from(program.take_link(id).map_err(err)?), path)?,
            None => LinkHandle::Xdp(id),
        };
        self.record(iface, name, Hook::Xdp, Origin::Attached, handle);
        Ok(())
    }

    /// Removes link pins this run did not claim: interfaces no longer configured, or
    /// deleted and created again. Removing the pin detaches the link. Returns their names.
    pub fn prune_stale_links(&mut self) -> Result<Vec<String>, DatapathError> {
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(Vec::new());
        };
        let claimed: BTreeSet<&Path> = self
            .attachments
            .iter()
            .filter_map(|a| match &a.handle {
                LinkHandle::Pinned { path, .. } => Some(path.as_path()),
                _ => None,
            })
            .collect();
        let mut pruned = Vec::new();
        for path in pins::links(&dir) {
            if !claimed.contains(path.as_path()) {
                pins::remove(&path)?;
                let name = path
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                info!(link = %name, "stale link pin removed (its program is detached)");
                pruned.push(name);
            }
        }
        // Maps of an earlier layout (a previous fwd version) that no program of this one
        // uses: their programs left the hooks above, so unpinning them frees them.
        for path in pins::orphan_maps(&dir, EBPF_OBJECT)? {
            pins::remove(&path)?;
            info!(map = %path.display(), "map pin of an earlier fwd version removed");
        }
        Ok(pruned)
    }

    /// Detaches every program this datapath attached or adopted, the last first, and
    /// removes their link pins. Maps and program pins stay (see `unpin_all`).
    pub fn detach_all(&mut self) {
        while let Some(attachment) = self.attachments.pop() {
            let Attachment {
                iface,
                program,
                handle,
                ..
            } = attachment;
            let result = match handle {
                LinkHandle::Xdp(id) => self.xdp().detach(id).map_err(|e| e.to_string()),
                LinkHandle::Tc(id) => self
                    .classifier(program)
                    .detach(id)
                    .map_err(|e| e.to_string()),
                // The pin is what keeps the link; the file descriptor closes on drop.
                LinkHandle::Pinned { path, .. } => pins::remove(&path).map_err(|e| e.to_string()),
            };
            match result {
                Ok(()) => info!(%iface, program, "program detached"),
                Err(err) => warn!(%iface, program, %err, "detaching program"),
            }
        }
    }

    /// Detaches everything and removes every pin under the pin directory, so the next
    /// start begins afresh (`on_exit = "detach"`).
    pub fn unpin_all(&mut self) -> Result<(), DatapathError> {
        self.detach_all();
        let Some(dir) = self.pin_dir.clone() else {
            return Ok(());
        };
        for link in pins::links(&dir) {
            pins::remove(&link)?;
        }
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(pins::pin_error(&dir, format!("removing the pins: {e}"))),
        }
    }

    fn read_config(&self) -> Result<FwdConfig, DatapathError> {
        self.config.get(&0, 0).map_err(map_err("CONFIG"))
    }

    /// Writes the config, with the learned-host bits of what the slots hold now.
    fn write_config(&mut self, mut config: FwdConfig) -> Result<(), DatapathError> {
        config.hosts = self.host_bits();
        self.config.set(0, config, 0).map_err(map_err("CONFIG"))
    }

    /// Zeroes the counters of rules `image` brings that the active policy does not have
    /// (same id and name), so a new rule never starts with another rule's counts. Rules
    /// that stay keep counting across the swap. An adopted policy's rules are known from
    /// `set_adopted_rules`; without them every counter starts at zero.
    fn reset_new_rule_counters(&mut self, image: &MapImage) -> Result<(), DatapathError> {
        let active = self.state[self.active].image.as_ref().map(|(i, _)| i);
        let adopted = self.adopted_rules.as_deref().unwrap_or_default();
        let cpus = nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        for rule in &image.rules {
            let kept = match active {
                Some(a) => a
                    .rule(rule.id)
                    .is_some_and(|old| old.vendor == rule.vendor && old.rule == rule.rule),
                None => adopted.iter().any(|(id, name)| {
                    *id == rule.id && name.vendor == rule.vendor && name.rule == rule.rule
                }),
            };
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
        read_rule_counters(&self.rule_counters, ids)
    }

    /// Per-reason counters summed over CPUs.
    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counter)>, DatapathError> {
        read_reason_counters(&self.reason_counters)
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

    /// Bench only: runs `program::XDP_PARSE` (`xdp`) or `program::TC_PARSE` on one frame
    /// like `test_run_xdp`: the parse of `fwd_xdp` or `fwd_tc_out`, then pass (no policy
    /// lookup, flow or counter). Loaded on first use; `load_with` leaves them out, so a
    /// daemon never loads, attaches or pins them.
    pub fn test_run_parse_only(
        &mut self,
        xdp: bool,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let name = if xdp {
            program::XDP_PARSE
        } else {
            program::TC_PARSE
        };
        let prog_err = move |source| DatapathError::Program { name, source };
        if xdp {
            let program: &mut Xdp = self.program_mut(name)?.try_into().map_err(prog_err)?;
            if program.fd().is_err() {
                program.load().map_err(prog_err)?;
            }
            test_run(&*program, name, frame, repeat)
        } else {
            let program: &mut SchedClassifier =
                self.program_mut(name)?.try_into().map_err(prog_err)?;
            if program.fd().is_err() {
                program.load().map_err(prog_err)?;
            }
            test_run(&*program, name, frame, repeat)
        }
    }

    /// A hash map the programs share (the daemon reads it, the programs write it).
    fn hash_map<K: Pod, V: Pod>(
        &self,
        name: &'static str,
    ) -> Result<HashMap<&MapData, K, V>, DatapathError> {
        self.ebpf
            .map(name)
            .ok_or(DatapathError::MissingMap(name))?
            .try_into()
            .map_err(map_err(name))
    }

    /// Flows in the flow table whose last packet is within their protocol's timeout.
    /// Walks the table: cost grows with the number of entries.
    pub fn flows_active(&self) -> Result<u64, DatapathError> {
        let flows: HashMap<&MapData, FlowKey, FlowValue> = self.hash_map("FLOWS")?;
        count_live_flows(&flows, &self.read_config()?)
    }

    /// Those of `addrs` the protected network has a live allowed flow with: a packet to
    /// the address within the UDP timeout (`REMOTES`), or else a flow in `FLOWS` within its
    /// protocol's timeout. The flow table is walked only for addresses `REMOTES` does not
    /// settle.
    pub fn live_remotes(
        &self,
        addrs: &BTreeSet<IpAddr>,
    ) -> Result<BTreeSet<IpAddr>, DatapathError> {
        let config = self.read_config()?;
        let now = monotonic_ns();
        let remotes: HashMap<&MapData, fwd_common::Addr, u64> = self.hash_map("REMOTES")?;
        let mut live = BTreeSet::new();
        let mut unsettled = BTreeMap::new();
        for &addr in addrs {
            let key = addr_key(addr);
            match remotes.get(&key, 0) {
                Ok(seen) if fwd_common::is_live(now, seen, config.udp_timeout_s) => {
                    live.insert(addr);
                }
                _ => {
                    unsettled.insert(key, addr);
                }
            }
        }
        if unsettled.is_empty() {
            return Ok(live);
        }
        let flows: HashMap<&MapData, FlowKey, FlowValue> = self.hash_map("FLOWS")?;
        for entry in flows.iter() {
            let Ok((key, value)) = entry else { continue };
            let Some(addr) = unsettled.get(&key.remote) else {
                continue;
            };
            if fwd_common::is_live(now, value.last_seen_ns, config.timeout_s(key.protocol)) {
                live.insert(*addr);
            }
        }
        Ok(live)
    }

    /// What is attached where, and how it came about.
    pub fn attached(&self) -> Vec<Attached> {
        self.attachments
            .iter()
            .map(|a| Attached {
                iface: a.iface.clone(),
                program: a.program,
                hook: a.hook,
                origin: a.origin,
                pinned: matches!(a.handle, LinkHandle::Pinned { .. }),
            })
            .collect()
    }

    /// The ring buffer of denied-packet samples (its one reader takes it).
    pub fn take_denied_samples(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        take(&mut self.ebpf, "DENIED")
    }
}

/// Pins a link this run attached.
fn pin_link(
    link: Result<FdLink, aya::programs::links::LinkError>,
    path: PathBuf,
) -> Result<LinkHandle, DatapathError> {
    let link = link.map_err(|e| pins::pin_error(&path, e))?;
    let link = link.pin(&path).map_err(|e| pins::pin_error(&path, e))?;
    Ok(LinkHandle::Pinned {
        link: link.into(),
        path,
    })
}

/// One program in place on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    pub iface: String,
    pub program: &'static str,
    pub hook: Hook,
    pub origin: Origin,
    /// Pinned: it stays attached when the daemon stops or dies.
    pub pinned: bool,
}

/// TC programs get links (TCX, which can be pinned) from Linux 6.6.
fn has_tcx() -> bool {
    !KernelVersion::current().is_ok_and(|v| v < KernelVersion::new(6, 6, 0))
}

/// The pinned state of a datapath, read without loading anything: `fwd stats` works
/// while the daemon is stopped or dead.
pub struct PinnedState {
    config: Array<MapData, FwdConfig>,
    rule_counters: PerCpuArray<MapData, Counter>,
    reason_counters: PerCpuArray<MapData, Counter>,
    flows: HashMap<MapData, FlowKey, FlowValue>,
    flow_capacity: u32,
    dir: PathBuf,
}

impl PinnedState {
    pub fn open(dir: &Path) -> Result<Self, DatapathError> {
        let open = |name: &'static str| {
            let path = dir.join(pins::MAPS).join(name);
            if !path.exists() {
                return Err(pins::pin_error(
                    &path,
                    "not pinned: fwd has not run with this pin_dir, or stopped with on_exit = \"detach\"",
                ));
            }
            let data = MapData::from_pin(&path).map_err(map_err(name))?;
            aya::maps::Map::from_map_data(data).map_err(map_err(name))
        };
        let conv = |name: &'static str| {
            move |e| DatapathError::Map {
                map: name,
                source: e,
            }
        };
        Ok(Self {
            config: open("CONFIG")?.try_into().map_err(conv("CONFIG"))?,
            rule_counters: open("RULE_COUNTERS")?
                .try_into()
                .map_err(conv("RULE_COUNTERS"))?,
            reason_counters: open("REASON_COUNTERS")?
                .try_into()
                .map_err(conv("REASON_COUNTERS"))?,
            flows: open("FLOWS")?.try_into().map_err(conv("FLOWS"))?,
            flow_capacity: aya::maps::MapInfo::from_pin(dir.join(pins::MAPS).join("FLOWS"))
                .map_err(map_err("FLOWS"))?
                .max_entries(),
            dir: dir.to_path_buf(),
        })
    }

    /// The config the programs run with: active slot, mode, generation, timeouts.
    pub fn config(&self) -> Result<FwdConfig, DatapathError> {
        self.config.get(&0, 0).map_err(map_err("CONFIG"))
    }

    pub fn rule_counters(
        &self,
        ids: impl IntoIterator<Item = u32>,
    ) -> Result<Vec<RuleCounters>, DatapathError> {
        read_rule_counters(&self.rule_counters, ids)
    }

    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counter)>, DatapathError> {
        read_reason_counters(&self.reason_counters)
    }

    pub fn flows_active(&self) -> Result<u64, DatapathError> {
        count_live_flows(&self.flows, &self.config()?)
    }

    /// The flow table's capacity.
    pub fn flow_capacity(&self) -> u32 {
        self.flow_capacity
    }

    /// The pinned links, by pin name (`IFINDEX-HOOK-IFACE`).
    pub fn links(&self) -> Vec<String> {
        pins::links(&self.dir)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect()
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

fn read_rule_counters(
    map: &PerCpuArray<MapData, Counter>,
    ids: impl IntoIterator<Item = u32>,
) -> Result<Vec<RuleCounters>, DatapathError> {
    let read = |id, inbound| sum_cpus(map, rule_counter_index(id, inbound), "RULE_COUNTERS");
    ids.into_iter()
        .map(|id| {
            Ok(RuleCounters {
                outbound: read(id, false)?,
                inbound: read(id, true)?,
            })
        })
        .collect()
}

fn read_reason_counters(
    map: &PerCpuArray<MapData, Counter>,
) -> Result<Vec<(Reason, Counter)>, DatapathError> {
    Reason::ALL
        .iter()
        .map(|r| Ok((*r, sum_cpus(map, *r as u32, "REASON_COUNTERS")?)))
        .collect()
}

/// Flows whose last packet is within their protocol's timeout.
fn count_live_flows<T: std::borrow::Borrow<MapData>>(
    flows: &HashMap<T, FlowKey, FlowValue>,
    config: &FwdConfig,
) -> Result<u64, DatapathError> {
    let now = monotonic_ns();
    let mut live = 0;
    for entry in flows.iter() {
        // An entry evicted between listing and lookup is simply gone.
        let Ok((key, value)) = entry else { continue };
        if fwd_common::is_live(now, value.last_seen_ns, config.timeout_s(key.protocol)) {
            live += 1;
        }
    }
    Ok(live)
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

/// An address as the programs key it (`fwd_common::Addr`).
fn addr_key(addr: IpAddr) -> fwd_common::Addr {
    match addr {
        IpAddr::V4(a) => fwd_common::v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
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
    let mut out: Vec<IpNet> = addresses(None).into_iter().map(IpNet::from).collect();
    out.sort();
    out.dedup();
    out
}

/// The addresses of interface `iface` (all interfaces if `None`).
pub fn addresses(iface: Option<&str>) -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|ifa| iface.is_none_or(|name| ifa.interface_name == name))
        .filter_map(|ifa| ifa.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}
