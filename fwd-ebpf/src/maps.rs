//! The maps the programs share with the daemon, and this CPU's scratch memory.
//!
//! Policy tables exist twice (slots 0 and 1, `tables::` in fwd-common has the layout);
//! `CONFIG.active_slot` says which one the programs read. Each slot is a type implementing
//! `Slot`, so every lookup names its map statically and the verifier can inline it (one
//! lookup site choosing between two maps at run time would be a helper call).
//! The array tables are `BPF_F_MMAPABLE`: the daemon writes a whole slot through `mmap`.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use fwd_common::{
    Addr, CLASSES_CAPACITY, Counter, DENIED_RING_BYTES, FLOWS_CAPACITY, FRAGS_CAPACITY, FlowKey,
    FlowValue, FragKey, FragValue, FwdConfig, HOSTS_CAPACITY, NODE_ENTRIES_CAPACITY,
    PORT_RANGES_CAPACITY, RANGES4_CAPACITY, RANGES6_CAPACITY, REASON_COUNTER_SLOTS,
    REMOTES_CAPACITY, RULE_COUNTER_SLOTS, SampleBudget,
    tables::{ClassRecord, INDEX_ENTRIES, IndexEntry, PortRange, Range4, Range6},
};

use crate::parse::Ip;

/// Mmapable, so the daemon writes its first word (slot, mode, host bits, epoch) with one
/// 8-byte store (`FwdConfig::head`).
#[map]
pub static CONFIG: Array<FwdConfig> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// One policy slot's tables.
pub trait Slot {
    fn idx4() -> &'static Array<IndexEntry>;
    fn nodes4() -> &'static Array<IndexEntry>;
    fn rng4() -> &'static Array<Range4>;
    fn idx6() -> &'static Array<IndexEntry>;
    fn nodes6() -> &'static Array<IndexEntry>;
    fn rng6() -> &'static Array<Range6>;
    fn classes() -> &'static Array<ClassRecord>;
    fn port_ranges() -> &'static Array<PortRange>;
    /// Learned host (IPv4, network order) -> class record index.
    fn hosts4() -> &'static HashMap<[u8; 4], u32>;
    fn hosts6() -> &'static HashMap<Addr, u32>;
}

macro_rules! slot {
    ($name:ident, $idx4:ident, $nodes4:ident, $rng4:ident, $idx6:ident, $nodes6:ident,
     $rng6:ident, $classes:ident, $ports:ident, $hosts4:ident, $hosts6:ident) => {
        #[map]
        static $idx4: Array<IndexEntry> = Array::with_max_entries(INDEX_ENTRIES, BPF_F_MMAPABLE);
        #[map]
        static $nodes4: Array<IndexEntry> =
            Array::with_max_entries(NODE_ENTRIES_CAPACITY, BPF_F_MMAPABLE);
        #[map]
        static $nodes6: Array<IndexEntry> =
            Array::with_max_entries(NODE_ENTRIES_CAPACITY, BPF_F_MMAPABLE);
        #[map]
        static $rng4: Array<Range4> = Array::with_max_entries(RANGES4_CAPACITY, BPF_F_MMAPABLE);
        #[map]
        static $idx6: Array<IndexEntry> = Array::with_max_entries(INDEX_ENTRIES, BPF_F_MMAPABLE);
        #[map]
        static $rng6: Array<Range6> = Array::with_max_entries(RANGES6_CAPACITY, BPF_F_MMAPABLE);
        #[map]
        static $classes: Array<ClassRecord> =
            Array::with_max_entries(CLASSES_CAPACITY, BPF_F_MMAPABLE);
        #[map]
        static $ports: Array<PortRange> =
            Array::with_max_entries(PORT_RANGES_CAPACITY, BPF_F_MMAPABLE);
        #[map]
        static $hosts4: HashMap<[u8; 4], u32> = HashMap::with_max_entries(HOSTS_CAPACITY, 0);
        #[map]
        static $hosts6: HashMap<Addr, u32> = HashMap::with_max_entries(HOSTS_CAPACITY, 0);

        pub struct $name;

        impl Slot for $name {
            #[inline(always)]
            fn idx4() -> &'static Array<IndexEntry> {
                &$idx4
            }
            #[inline(always)]
            fn nodes4() -> &'static Array<IndexEntry> {
                &$nodes4
            }
            #[inline(always)]
            fn nodes6() -> &'static Array<IndexEntry> {
                &$nodes6
            }
            #[inline(always)]
            fn rng4() -> &'static Array<Range4> {
                &$rng4
            }
            #[inline(always)]
            fn idx6() -> &'static Array<IndexEntry> {
                &$idx6
            }
            #[inline(always)]
            fn rng6() -> &'static Array<Range6> {
                &$rng6
            }
            #[inline(always)]
            fn classes() -> &'static Array<ClassRecord> {
                &$classes
            }
            #[inline(always)]
            fn port_ranges() -> &'static Array<PortRange> {
                &$ports
            }
            #[inline(always)]
            fn hosts4() -> &'static HashMap<[u8; 4], u32> {
                &$hosts4
            }
            #[inline(always)]
            fn hosts6() -> &'static HashMap<Addr, u32> {
                &$hosts6
            }
        }
    };
}

slot!(
    Slot0,
    IDX4_0,
    NODES4_0,
    RNG4_0,
    IDX6_0,
    NODES6_0,
    RNG6_0,
    CLASSES_0,
    PORT_RANGES_0,
    HOSTS4_0,
    HOSTS6_0
);
slot!(
    Slot1,
    IDX4_1,
    NODES4_1,
    RNG4_1,
    IDX6_1,
    NODES6_1,
    RNG6_1,
    CLASSES_1,
    PORT_RANGES_1,
    HOSTS4_1,
    HOSTS6_1
);

/// Live flows, from the protected host's point of view. Per-CPU LRU lists
/// (`BPF_F_NO_COMMON_LRU`): a new flow takes a node from its CPU's list without the common
/// list's lock; entries stay visible to every CPU, so replies on another CPU find them.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> =
    LruHashMap::with_max_entries(FLOWS_CAPACITY, BPF_F_NO_COMMON_LRU);
/// Remotes the protected network has a live allowed flow with -> last packet time.
#[map]
pub static REMOTES: LruHashMap<Addr, u64> = LruHashMap::with_max_entries(REMOTES_CAPACITY, 0);
/// First fragments that passed, so their datagram's later fragments may follow.
#[map]
pub static FRAGS: LruHashMap<FragKey, FragValue> = LruHashMap::with_max_entries(FRAGS_CAPACITY, 0);

/// Indexed by `rule_counter_slot(cpu, rule_counter_index(rule, inbound))`: a block per
/// possible CPU (the daemon sets the size at load). Mmapable: the daemon reads it as memory.
#[map]
pub static RULE_COUNTERS: Array<Counter> =
    Array::with_max_entries(RULE_COUNTER_SLOTS, BPF_F_MMAPABLE);
/// Indexed by `reason_counter_index(reason, inbound)`.
#[map]
pub static REASON_COUNTERS: PerCpuArray<Counter> =
    PerCpuArray::with_max_entries(REASON_COUNTER_SLOTS, 0);

/// Samples of denied packets for `fwd monitor`, at most `samples_per_second` per CPU.
#[map]
pub static DENIED: RingBuf = RingBuf::with_byte_size(DENIED_RING_BYTES, 0);
#[map]
pub static SAMPLE_BUDGET: PerCpuArray<SampleBudget> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory for one packet. The BPF stack is 512 bytes for the whole call
/// chain; the parsed packet and the lookup keys live here instead. Programs do not nest on
/// a CPU (XDP and TC ingress run in softirq, TC egress with softirqs off).
pub struct Scratch {
    pub ip: Ip,
    pub flow: FlowKey,
    /// The flow an ICMP error quotes.
    pub quoted: FlowKey,
    pub frag: FragKey,
    /// The verdict, written by `judge_*` (returning structs from BPF calls trips the
    /// verifier's spill checks).
    pub outcome: crate::judge::Outcome,
    /// The error of a failed flow-state update for this packet (0: none), for the log.
    pub state_error: i32,
}

#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
