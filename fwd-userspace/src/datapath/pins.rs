//! Pins on a bpf filesystem (default `/sys/fs/bpf/fwd/`): the maps, programs and links that
//! outlive the daemon, so enforcement and counting go on through a crash or a restart.
//!
//! Layout: `maps/NAME`, `programs/NAME`, `links/IFINDEX-HOOK-IFACE`. The interface index is
//! part of a link's name, so a link to an interface that was deleted and created again is
//! recognised as stale.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::maps::MapInfo;
use nix::{
    mount::MsFlags,
    sys::statfs::{BPF_FS_MAGIC, statfs},
};
use tracing::{info, warn};

use fwd_common::Counter;

use super::DatapathError;

pub(super) const MAPS: &str = "maps";
pub(super) const PROGRAMS: &str = "programs";
pub(super) const LINKS: &str = "links";

/// Where the kernel's bpf filesystem is usually mounted.
const BPFFS: &str = "/sys/fs/bpf";

pub(super) fn pin_error(path: &Path, what: impl std::fmt::Display) -> DatapathError {
    DatapathError::Pin {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

fn on_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == BPF_FS_MAGIC)
}

/// Whether pins outlive the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// On a bpf filesystem the initial mount namespace has too: a crash leaves them, and
    /// the programs keep enforcing.
    Persistent,
    /// On a bpf filesystem only this process's mount namespace has (`pins = "ephemeral"`):
    /// when the process goes, the filesystem goes, the links are released and nothing is
    /// enforced until the next start.
    Ephemeral,
}

impl Persistence {
    pub fn name(self) -> &'static str {
        match self {
            Persistence::Persistent => "persistent",
            Persistence::Ephemeral => "ephemeral",
        }
    }
}

/// What to do about a bpf filesystem that would not outlive the daemon.
fn not_lasting(dir: &Path, why: &str) -> DatapathError {
    pin_error(
        dir,
        format!(
            "{why}: pins there die with this process, and with them enforcement. Run fwd in the host's mount namespace (systemd does; `ip netns exec` makes a private one and hides {BPFFS}: use `nsenter --net=/run/netns/NAME` instead), give a container the host's {BPFFS} (a hostPath volume), or accept it with `pins = \"ephemeral\"` in the config"
        ),
    )
}

/// The devices (major, minor) of the bpf filesystems mounted in the mount namespace whose
/// `mountinfo` this is.
pub(super) fn bpf_devices(mountinfo: &str) -> Vec<(u64, u64)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next()? == "bpf").then_some(())?;
            let (major, minor) = left.split_whitespace().nth(2)?.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

/// The inode number Linux 6.18 and later give the initial mount namespace
/// (`PROC_MNT_INIT_INO`); older kernels number it like any other.
const INITIAL_MOUNT_NS: &str = "mnt:[4026531832]";

/// Whether this process runs in the initial mount namespace: PID 1's, or, where PID 1's
/// namespace cannot be read (a sandbox that hides it even from root), the one with the
/// initial namespace's fixed number. `false` when neither tells.
pub(super) fn in_initial_mount_namespace() -> bool {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let Some(own) = ns("self") else {
        return false;
    };
    match ns("1") {
        Some(init) => own == init,
        None => own.as_os_str() == INITIAL_MOUNT_NS,
    }
}

/// Whether the bpf filesystem holding `path` is one the initial mount namespace (PID 1's)
/// has too, so it outlives this process. In that namespace it is, whatever it is.
fn outlives_us(path: &Path) -> bool {
    if in_initial_mount_namespace() {
        return true;
    }
    let Ok(st) = nix::sys::stat::stat(path) else {
        return false;
    };
    let dev = (
        nix::sys::stat::major(st.st_dev),
        nix::sys::stat::minor(st.st_dev),
    );
    std::fs::read_to_string("/proc/1/mountinfo").is_ok_and(|m| bpf_devices(&m).contains(&dev))
}

/// Makes `dir` (and its `maps`, `programs`, `links`) exist on a bpf filesystem that
/// outlives the daemon, or, with `ephemeral`, on any bpf filesystem, mounting one at
/// `/sys/fs/bpf` when `dir` is below it and nothing is mounted there yet.
pub(super) fn prepare(dir: &Path, ephemeral: bool) -> Result<Persistence, DatapathError> {
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    if !on_bpffs(existing) {
        let bpffs = Path::new(BPFFS);
        if !(dir.starts_with(bpffs) && bpffs.is_dir() && !on_bpffs(bpffs)) {
            return Err(pin_error(
                dir,
                format!(
                    "pin_dir is not on a bpf filesystem; put it under {BPFFS}, or mount one with `mount -t bpf bpf DIR`"
                ),
            ));
        }
        // A bpf filesystem fwd mounts itself lives in fwd's mount namespace: in the
        // initial one it stays, in a private one it goes with the process.
        if !in_initial_mount_namespace() && !ephemeral {
            return Err(not_lasting(
                bpffs,
                "no bpf filesystem is mounted here, and fwd runs in a private mount namespace where one it mounted would be its own",
            ));
        }
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=0700"),
        )
        .map_err(|e| {
            pin_error(
                bpffs,
                format!(
                    "no bpf filesystem is mounted here and mounting one failed ({e}); mount it with `mount -t bpf bpf {BPFFS}` (systemd does at boot), or run fwd with CAP_SYS_ADMIN"
                ),
            )
        })?;
        info!("mounted the bpf filesystem at {BPFFS}");
    }
    let mut existing = dir;
    while !existing.exists() {
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let persistence = if outlives_us(existing) {
        Persistence::Persistent
    } else if ephemeral {
        Persistence::Ephemeral
    } else {
        return Err(not_lasting(
            dir,
            "the bpf filesystem under pin_dir is mounted only in this private mount namespace",
        ));
    };
    if persistence == Persistence::Ephemeral {
        warn!(
            pins = %dir.display(),
            "pins = \"ephemeral\": the pins live on a bpf filesystem of this mount namespace only; if fwd dies, enforcement ends with it"
        );
    }
    for sub in [MAPS, PROGRAMS, LINKS] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path).map_err(|e| pin_error(&path, e))?;
    }
    Ok(persistence)
}

/// What the pins held when the datapath loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    /// Maps reused with their contents (counters, flows, the active policy).
    pub maps_kept: Vec<String>,
    /// Maps an earlier run pinned with another shape (a new fwd version, a new flow-table
    /// size): unpinned and created empty. (name, what changed)
    pub maps_recreated: Vec<(String, String)>,
    /// The policy generation in force in the pinned config map; 0 when nothing was adopted.
    pub generation: u32,
    /// The rule counters of an earlier layout's per-CPU counter map (by
    /// `rule_counter_index`, summed over CPUs, the non-zero ones): the new map starts
    /// from them.
    pub carried_rule_counters: Vec<(u32, Counter)>,
}

/// The non-zero counters of a pinned per-CPU `RULE_COUNTERS` (the layout before the
/// per-CPU blocks), summed over CPUs; empty if it is another kind of map.
fn earlier_rule_counters(path: &Path) -> Vec<(u32, Counter)> {
    let Ok(data) = aya::maps::MapData::from_pin(path) else {
        return Vec::new();
    };
    let Ok(map) = aya::maps::PerCpuArray::<_, Counter>::try_from(aya::maps::Map::PerCpuArray(data))
    else {
        return Vec::new();
    };
    let out: Vec<(u32, Counter)> = (0..map.len())
        .filter_map(|index| {
            let sum = super::counters::sum_cpus(&map, index, "RULE_COUNTERS").ok()?;
            (sum != Counter::default()).then_some((index, sum))
        })
        .collect();
    if !out.is_empty() {
        info!(
            counters = out.len(),
            "rule counters of an earlier fwd version carried into the new counter map"
        );
    }
    out
}

/// The maps of `object` to pin: every named map (not the compiler's `.rodata`-style
/// sections). Pinned maps whose shape differs from the object's (with `max_entries`
/// overrides applied) are unpinned, so the loader creates them anew.
pub(super) fn plan_maps(
    dir: &Path,
    object: &[u8],
    max_entries: &[(&str, u32)],
) -> Result<(Vec<(String, PathBuf)>, Adoption), DatapathError> {
    let parsed = aya_obj::Object::parse(object)
        .map_err(|e| pin_error(dir, format!("reading the eBPF object: {e}")))?;
    let mut maps: Vec<(String, PathBuf)> = Vec::new();
    let mut adoption = Adoption::default();
    let mut names: Vec<_> = parsed.maps.keys().collect();
    names.sort();
    for name in names {
        if name.starts_with('.') || name.starts_with("AYA_") {
            continue;
        }
        let def = &parsed.maps[name];
        let path = dir.join(MAPS).join(name);
        if path.exists() {
            let entries = max_entries
                .iter()
                .find(|(n, _)| n == name)
                .map_or(def.max_entries(), |(_, e)| *e);
            match MapInfo::from_pin(&path) {
                Ok(info) => {
                    let found = (
                        info.map_type().map_or(u32::MAX, |t| t as u32),
                        info.key_size(),
                        info.value_size(),
                        info.max_entries(),
                    );
                    let wanted = (def.map_type(), def.key_size(), def.value_size(), entries);
                    if found == wanted {
                        adoption.maps_kept.push(name.clone());
                    } else {
                        let why = format!(
                            "type/key/value/entries {}/{}/{}/{} -> {}/{}/{}/{}",
                            found.0,
                            found.1,
                            found.2,
                            found.3,
                            wanted.0,
                            wanted.1,
                            wanted.2,
                            wanted.3
                        );
                        if name == "RULE_COUNTERS" {
                            adoption.carried_rule_counters = earlier_rule_counters(&path);
                        }
                        warn!(map = %name, %why, "pinned map has another shape; creating it anew (its contents start empty)");
                        remove(&path)?;
                        adoption.maps_recreated.push((name.clone(), why));
                    }
                }
                Err(err) => {
                    warn!(map = %name, %err, "pinned map unreadable; creating it anew");
                    remove(&path)?;
                    adoption
                        .maps_recreated
                        .push((name.clone(), err.to_string()));
                }
            }
        }
        maps.push((name.clone(), path));
    }
    Ok((maps, adoption))
}

/// What an earlier layout's pinned config map says: the slot its programs read, the policy
/// generation and the epoch its flows carry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct EarlierConfig {
    pub slot: usize,
    pub generation: u32,
    pub epoch: u32,
}

/// The pinned config map read in whichever earlier layout of `FwdConfig` pinned it: every layout
/// has the generation as its third `u32`. The 40-byte layout (10 words) has the slot as its
/// first `u32` and the epoch as its eighth; the 32-byte one (8 words) the slot first and no
/// epoch.
pub(super) fn pinned_config(dir: &Path) -> Option<EarlierConfig> {
    let data = aya::maps::MapData::from_pin(dir.join(MAPS).join("CONFIG")).ok()?;
    let words = data.info().ok()?.value_size() as usize / 4;
    let map = aya::maps::Map::Array(data);
    macro_rules! read {
        ($n:literal) => {
            aya::maps::Array::<_, [u32; $n]>::try_from(map)
                .ok()?
                .get(&0, 0)
                .ok()
        };
    }
    let (slot, generation, epoch) = match words {
        8 => read!(8).map(|w| (w[0], w[2], 0))?,
        10 => read!(10).map(|w| (w[0], w[2], w[7]))?,
        _ => return None,
    };
    Some(EarlierConfig {
        slot: (slot as usize).min(1),
        generation,
        epoch,
    })
}

/// Pins under `maps/` of maps `object` does not have (an earlier version's layout).
pub(super) fn orphan_maps(dir: &Path, object: &[u8]) -> Result<Vec<PathBuf>, DatapathError> {
    let parsed = aya_obj::Object::parse(object)
        .map_err(|e| pin_error(dir, format!("reading the eBPF object: {e}")))?;
    let Ok(entries) = std::fs::read_dir(dir.join(MAPS)) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !parsed.maps.contains_key(n))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Removes one pin; a pin already gone is fine.
pub(super) fn remove(path: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(pin_error(path, format!("unpinning: {e}"))),
    }
}

/// The pin of the link that puts `hook` on `iface`; `None` if the interface does not exist.
pub(super) fn link_path(dir: &Path, iface: &str, hook: &str) -> Option<PathBuf> {
    let index = nix::net::if_::if_nametoindex(iface).ok()?;
    Some(dir.join(LINKS).join(format!("{index}-{hook}-{iface}")))
}

/// The link pins under `dir`.
pub(super) fn links(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join(LINKS)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    out
}

/// The name of the loaded program `id`.
pub(super) fn program_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| p.name_as_str().unwrap_or("?").to_string())
}

/// The kernel's tag (a hash of the instructions) of the loaded program `id`.
pub(super) fn program_tag(id: u32) -> Option<u64> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .map(|p| p.tag())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_mounts_are_read_from_mountinfo() {
        let mountinfo = "\
22 27 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
35 22 0:30 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:13 - bpf bpf rw,mode=700
90 35 0:30 /fwd /srv/pins rw,relatime shared:13 - bpf bpf rw,mode=700
41 27 0:35 / /tmp rw,nosuid,nodev shared:19 - tmpfs tmpfs rw
";
        assert_eq!(bpf_devices(mountinfo), [(0, 30), (0, 30)]);
        assert!(bpf_devices("garbage\n- bpf\n").is_empty());
    }

    #[test]
    fn this_namespace_outlives_itself() {
        // The tests run in PID 1's mount namespace here, or in a container's whose init is
        // PID 1: a path there is on a filesystem PID 1 has.
        if in_initial_mount_namespace() {
            assert!(outlives_us(Path::new("/")));
        }
        assert_eq!(Persistence::Ephemeral.name(), "ephemeral");
    }
}
