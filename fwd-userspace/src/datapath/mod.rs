//! The only module that talks to the kernel: load, attach, fill, swap, read counters.

use std::{net::IpAddr, time::Duration};

use aya::{
    Ebpf, EbpfError, Pod,
    maps::{Array, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use fwd_common::{Counter, FwdConfig, PortKey, PortVerdict, Reason};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tracing::{debug, info, warn};

use crate::compile::MapImage;

/// The kernel programs, built by build.rs from `fwd-ebpf`.
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
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "attaching XDP to interface `{iface}`: {source}; check that the interface exists in this network namespace"
    )]
    Attach {
        iface: String,
        #[source]
        source: ProgramError,
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
    xdp_links: Vec<(String, XdpLinkId)>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(DatapathError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl Datapath {
    /// Loads the programs and creates the maps (nothing is attached yet).
    pub fn load() -> Result<Self, DatapathError> {
        raise_memlock_limit();
        let mut ebpf = Ebpf::load(EBPF_OBJECT)?;
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
            xdp_links: Vec::new(),
        };
        let program: &mut Xdp = datapath
            .ebpf
            .program_mut("fwd_xdp")
            .ok_or(DatapathError::Program {
                name: "fwd_xdp",
                source: ProgramError::NotLoaded,
            })?
            .try_into()
            .map_err(|source| DatapathError::Program {
                name: "fwd_xdp",
                source,
            })?;
        program.load().map_err(|source| DatapathError::Program {
            name: "fwd_xdp",
            source,
        })?;
        Ok(datapath)
    }

    /// Attaches the gateway program to `iface`: native XDP where the driver has it,
    /// generic XDP otherwise.
    pub fn attach_gateway(&mut self, iface: &str) -> Result<XdpAttachMode, DatapathError> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut("fwd_xdp")
            .expect("loaded in Datapath::load")
            .try_into()
            .expect("fwd_xdp is an XDP program");
        let (link, mode) = match program.attach(iface, XdpMode::Driver) {
            Ok(link) => (link, XdpAttachMode::Driver),
            Err(err) => {
                debug!(%iface, %err, "native XDP unavailable, using generic XDP");
                let link = program.attach(iface, XdpMode::Skb).map_err(|source| {
                    DatapathError::Attach {
                        iface: iface.to_string(),
                        source,
                    }
                })?;
                (link, XdpAttachMode::Generic)
            }
        };
        info!(%iface, ?mode, "XDP gateway program attached");
        self.xdp_links.push((iface.to_string(), link));
        Ok(mode)
    }

    /// Detaches every program this datapath attached.
    pub fn detach_all(&mut self) {
        let program: &mut Xdp = self
            .ebpf
            .program_mut("fwd_xdp")
            .expect("loaded in Datapath::load")
            .try_into()
            .expect("fwd_xdp is an XDP program");
        for (iface, link) in self.xdp_links.drain(..) {
            match program.detach(link) {
                Ok(()) => info!(%iface, "XDP program detached"),
                Err(err) => warn!(%iface, %err, "detaching XDP program"),
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
    /// A packet sees either the old policy or the new one, never a mix.
    pub fn install(&mut self, image: &MapImage, generation: u32) -> Result<(), DatapathError> {
        let target = if self.installed[self.active].is_none() {
            self.active
        } else {
            1 - self.active
        };
        self.clear_slot(target)?;
        fill_slot(&mut self.slots[target], image)?;
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
        Ok(())
    }

    /// Per-rule counters summed over CPUs, indexed by rule id, for `rules` ids.
    pub fn rule_counters(&self, rules: usize) -> Result<Vec<Counter>, DatapathError> {
        (0..rules as u32)
            .map(|id| sum_cpus(&self.rule_counters, id, "RULE_COUNTERS"))
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

    /// Runs the gateway program on one Ethernet frame through BPF_PROG_TEST_RUN, `repeat`
    /// times; returns the XDP action and the kernel's average time per run. Counters count
    /// these runs like real packets.
    pub fn test_run_xdp(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let program: &Xdp = self
            .ebpf
            .program("fwd_xdp")
            .expect("loaded in Datapath::load")
            .try_into()
            .expect("fwd_xdp is an XDP program");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat.max(1);
        let result = program
            .test_run(opts)
            .map_err(|source| DatapathError::Program {
                name: "fwd_xdp",
                source,
            })?;
        Ok((result.return_value, result.duration))
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
