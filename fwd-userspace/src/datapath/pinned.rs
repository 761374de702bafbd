//! The pinned maps of a datapath, read without loading anything (`fwd stats`, with the
//! daemon stopped or dead).

use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use fwd_common::{Counter, FlowKey, FlowValue, FwdConfig};

use super::{
    DatapathError, ReasonCounters, RuleCounters, count_live_flows, counters::RuleCounterMap,
    map_err, pins, read_reason_counters,
};

/// The pinned state of a datapath, read without loading anything: `fwd stats` works
/// while the daemon is stopped or dead.
pub struct PinnedState {
    config: Array<MapData, FwdConfig>,
    rule_counters: RuleCounterMap,
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
        // An earlier version's pins (an upgrade whose daemon has not started yet) have
        // another config layout: say so rather than fail on a size.
        let config_path = dir.join(pins::MAPS).join("CONFIG");
        if let Ok(info) = aya::maps::MapInfo::from_pin(&config_path) {
            let size = info.value_size() as usize;
            if size != std::mem::size_of::<FwdConfig>() {
                return Err(pins::pin_error(
                    &config_path,
                    format!(
                        "pinned by an earlier fwd version (a {size}-byte config; this version's is {}): \
                         start this version's daemon once (it takes the pins over without a gap in \
                         enforcement, and the counters carry on), or read them with the earlier fwd binary",
                        std::mem::size_of::<FwdConfig>()
                    ),
                ));
            }
        }
        let conv = |name: &'static str| {
            move |e| DatapathError::Map {
                map: name,
                source: e,
            }
        };
        Ok(Self {
            config: open("CONFIG")?.try_into().map_err(conv("CONFIG"))?,
            rule_counters: RuleCounterMap::new(open("RULE_COUNTERS")?)?,
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
        Ok(self.rule_counters.read(ids))
    }

    pub fn reason_counters(&self) -> Result<Vec<ReasonCounters>, DatapathError> {
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
