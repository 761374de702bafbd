//! The only module that talks to the kernel: load (here), attach (`attach`), fill and swap
//! the policy slots (`slots`, `mmap`), pins (`pins`, `pinned`), counters (`counters`),
//! test runs (`test_run`).

mod attach;
mod counters;
mod features;
mod mmap;
mod pinned;
mod pins;
mod slots;
mod test_run;

/// What the DNS proxy learned, as the datapath installs it (`compile::learned`).
pub use crate::compile::learned::Learned;
use attach::Attachment;
pub use attach::{Attached, Hook, Origin};
pub use counters::{ReasonCounters, RuleCounters};
use counters::{RuleCounterMap, count_live_flows, read_reason_counters};
pub use features::Features;
pub use pinned::PinnedState;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    programs::{ProgramError, SchedClassifier, Xdp},
};
use fwd_common::{Counter, FLOWS_CAPACITY, FwdConfig};
use ipnet::IpNet;
use mmap::MmapArray;
pub use pins::{Adoption, Persistence};
pub use slots::{PreparedTables, TableCapacity};
use slots::{SlotMaps, SlotState};
use tracing::{debug, info};

use crate::policy::RuleRef;

/// The kernel programs, built by build.rs from `fwd-ebpf`; empty without the `ebpf` feature.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fwd-ebpf"));

/// How long in-flight programs may still read the old slot after a flip. XDP and TC
/// programs run under RCU and finish in microseconds; this is a wide margin.
pub const SLOT_GRACE: Duration = Duration::from_millis(50);

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
    #[error("{0}")]
    Features(String),
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
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(
        "interface `{iface}` already runs an {hook} program this fwd did not attach: {programs}. fwd does not take over a program it did not put there (another tool's, or another fwd's with other pins): detach it with the tool that attached it (`bpftool net show dev {iface}` lists it; `ip link set dev {iface} xdp off` removes one no link holds), then start fwd again"
    )]
    Occupied {
        iface: String,
        hook: &'static str,
        programs: String,
    },
}

/// The oldest kernel fwd is tested on (stated in the README). Older ones are not refused
/// for their number: `features` probes what fwd uses.
pub const TESTED_KERNEL: &str = "5.15";

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
    /// Accept pins on a bpf filesystem that dies with this process (a private mount
    /// namespace): `pins = "ephemeral"`. Otherwise such a `pin_dir` is refused.
    pub ephemeral_pins: bool,
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
            ephemeral_pins: false,
        }
    }
}

fn map_err(map: &'static str) -> impl FnOnce(MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}

pub struct Datapath {
    ebpf: Ebpf,
    /// Mapped: its first word is written with one store (`MmapArray::write_config`).
    config: MmapArray<FwdConfig>,
    slots: [SlotMaps; 2],
    /// What each slot holds.
    state: [SlotState; 2],
    /// Networks that always pass; part of every install's address tables.
    exemptions: Vec<IpNet>,
    /// `FwdConfig::MODE_*` for the whole policy: written with every install's slot flip, in
    /// the same `CONFIG` write, so no packet sees a new policy under the old mode.
    mode: u8,
    capacity: TableCapacity,
    rule_counters: RuleCounterMap,
    reason_counters: PerCpuArray<MapData, Counter>,
    active: usize,
    attachments: Vec<Attachment>,
    pin_dir: Option<PathBuf>,
    /// The programs' own log records (aya-log), for the daemon to pass to its log.
    logger: Option<ProgramLog>,
    adoption: Adoption,
    /// Whether the pins outlive this process (`None`: nothing is pinned).
    persistence: Option<Persistence>,
    /// The rules an adopted policy had (from the daemon's state), so the first install
    /// keeps their counters.
    adopted_rules: Option<Vec<(u32, RuleRef)>>,
    /// The slot an earlier layout's programs read through their own config map: the first
    /// install leaves it as it is (they may still hold the hooks).
    earlier_slot: Option<usize>,
    /// Installs leave the previous slot's clean-up for `finish_install` instead of waiting
    /// `SLOT_GRACE` themselves (`defer_slot_clear`).
    defer_clear: bool,
    /// The slot an install flipped away from, not yet cleared, and when.
    pending_clear: Option<(usize, std::time::Instant)>,
    /// The lock on `pin_dir`, held while this datapath lives.
    _pin_lock: Option<crate::lock::Lock>,
}

/// The reader of the programs' log records; they go to the `log` crate, which the
/// daemon's tracing subscriber receives.
pub type ProgramLog = aya_log::EbpfLogger<&'static dyn log::Log>;

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
        let features = features::check(EBPF_OBJECT)?;
        debug!(?features, "kernel features");
        raise_memlock_limit();
        let flow_capacity = options.flow_capacity.max(1);
        let mut max_entries = options.tables.max_entries();
        max_entries.push(("FLOWS", flow_capacity));
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        max_entries.push(("RULE_COUNTERS", RuleCounterMap::entries(cpus)));
        // An earlier version's config map may have another shape: it is replaced, but its
        // generation carries on (the new tables are filled before the links move to the
        // new programs, so the old ones enforce until then).
        let mut earlier = None;
        let mut persistence = None;
        let mut pin_lock = None;
        let (pinned_maps, adoption) = match &options.pin_dir {
            Some(dir) => {
                persistence = Some(pins::prepare(dir, options.ephemeral_pins)?);
                // Before anything pinned is read or changed: one datapath per pin_dir.
                pin_lock = Some(crate::lock::directory(dir)?);
                earlier = pins::pinned_config(dir);
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
            config: MmapArray::new(
                ebpf.take_map("CONFIG")
                    .ok_or(DatapathError::MissingMap("CONFIG"))?,
                "CONFIG",
            )?,
            rule_counters: RuleCounterMap::new(
                ebpf.take_map("RULE_COUNTERS")
                    .ok_or(DatapathError::MissingMap("RULE_COUNTERS"))?,
            )?,
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
            persistence,
            adopted_rules: None,
            earlier_slot: None,
            defer_clear: false,
            pending_clear: None,
            _pin_lock: pin_lock,
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
        let carried = std::mem::take(&mut datapath.adoption.carried_rule_counters);
        datapath.rule_counters.carry(&carried)?;
        datapath.adoption.carried_rule_counters = carried;
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
        if !kept_config && let Some(earlier) = earlier.filter(|e| e.generation != 0) {
            info!(
                generation = earlier.generation,
                "taking over from pins of an earlier fwd version: its programs enforce until this version's are attached"
            );
            datapath.adoption.generation = earlier.generation;
            config.generation = earlier.generation;
            // Its programs read their own config map, so its slot stays as it is until
            // this version's programs hold the hooks: the first install fills the other
            // one, and leaves this one's learned hosts in place.
            datapath.active = earlier.slot;
            datapath.earlier_slot = Some(earlier.slot);
            for state in &mut datapath.state {
                state.unknown = true;
            }
            // The flows its programs record carry its epoch: this one must differ.
            config.epoch = earlier.epoch;
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

    /// What the kernel offers (probed once per process).
    pub fn features() -> Result<&'static Features, DatapathError> {
        features::probe(EBPF_OBJECT)
    }

    /// Whether the pins outlive this process, if it pins.
    pub fn persistence(&self) -> Option<Persistence> {
        self.persistence
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

    fn read_config(&self) -> Result<FwdConfig, DatapathError> {
        Ok(self.config.read_config())
    }

    /// Writes the config, with the learned-host bits of what the slots hold now.
    fn write_config(&mut self, mut config: FwdConfig) -> Result<(), DatapathError> {
        config.hosts = self.host_bits();
        self.config.write_config(&config);
        Ok(())
    }

    /// The ring buffer of denied-packet samples (its one reader takes it).
    pub fn take_denied_samples(&mut self) -> Result<RingBuf<MapData>, DatapathError> {
        take(&mut self.ebpf, "DENIED")
    }
}

/// Removes every pin under `dir`, links first (each removal takes its program off its
/// hook), then the directory: what `on_exit = "detach"` does, for a daemon not running.
/// The number of links removed.
pub fn remove_pins(dir: &Path) -> Result<usize, DatapathError> {
    let links = pins::links(dir);
    for link in &links {
        pins::remove(link)?;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(links.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(links.len()),
        Err(e) => Err(pins::pin_error(dir, format!("removing the pins: {e}"))),
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
