//! A daemon of this version over the pins of an earlier layout (what an upgrade leaves): the
//! earlier config map's generation carries on, its programs keep their own maps until the
//! links move, and the maps no program of this version uses are unpinned afterwards. One
//! build has no earlier programs to run, so the earlier layout's maps are made by hand with
//! the shapes it pinned (a 32-byte config, LPM tries). Needs root and /sys/fs/bpf.

use std::{os::fd::RawFd, path::PathBuf};

use fwd::{
    compile::{Selection, compile},
    datapath::{Datapath, DatapathOptions},
    policy::{Date, PolicySet, parse_vendor_file},
};
use fwd_lab::packet;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
const BPF_MAP_TYPE_LPM_TRIE: u32 = 11;
const BPF_F_NO_PREALLOC: u32 = 1;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: `attr` is a zero-padded bpf_attr of the size given.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) }
}

fn put(attr: &mut [u8; 128], at: usize, bytes: &[u8]) {
    attr[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Creates a map and pins it at `path`.
fn pin_map(
    path: &std::path::Path,
    map_type: u32,
    key: u32,
    value: u32,
    entries: u32,
    flags: u32,
) -> RawFd {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &map_type.to_ne_bytes());
    put(&mut attr, 4, &key.to_ne_bytes());
    put(&mut attr, 8, &value.to_ne_bytes());
    put(&mut attr, 12, &entries.to_ne_bytes());
    put(&mut attr, 16, &flags.to_ne_bytes());
    let fd = bpf(BPF_MAP_CREATE, &mut attr);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(c_path.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 8, &(fd as u32).to_ne_bytes());
    assert_eq!(
        bpf(BPF_OBJ_PIN, &mut attr),
        0,
        "BPF_OBJ_PIN: {}",
        std::io::Error::last_os_error()
    );
    fd as RawFd
}

fn update(fd: RawFd, key: &[u8], value: &[u8]) {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(fd as u32).to_ne_bytes());
    put(&mut attr, 8, &(key.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(value.as_ptr() as u64).to_ne_bytes());
    assert_eq!(
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr),
        0,
        "BPF_MAP_UPDATE_ELEM: {}",
        std::io::Error::last_os_error()
    );
}

const POLICY: &str = r#"
[vendor]
id = "v"
name = "V"

[[rule]]
id = "web"
service = "Web"
protocol = "tcp"
ports = [443]
remote = ["192.0.2.0/24"]
"#;

#[test]
fn a_new_layout_takes_over_the_pins_of_an_earlier_one() {
    if !fwd_lab::can_run_as_root("a_new_layout_takes_over_the_pins_of_an_earlier_one") {
        return;
    }
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/fwd-test-upgrade-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("maps")).unwrap();
    // The earlier layout: a 32-byte config in generation 7, and its address trie.
    let config = pin_map(&dir.join("maps/CONFIG"), BPF_MAP_TYPE_ARRAY, 4, 32, 1, 0);
    let mut old = [0u8; 32];
    old[8..12].copy_from_slice(&7u32.to_ne_bytes());
    update(config, &0u32.to_ne_bytes(), &old);
    pin_map(
        &dir.join("maps/DST4_0"),
        BPF_MAP_TYPE_LPM_TRIE,
        8,
        4,
        16,
        BPF_F_NO_PREALLOC,
    );
    // SAFETY: our own descriptor, closed once (the pin keeps the map).
    unsafe { libc::close(config) };

    let set = PolicySet {
        vendors: vec![parse_vendor_file(std::path::Path::new("v.toml"), POLICY).unwrap()],
    };
    let compiled = compile(&set, &Selection::widest(Date::parse("2026-12-01").unwrap())).unwrap();
    let mut dp = Datapath::load_with(&DatapathOptions {
        pin_dir: Some(dir.clone()),
        ..DatapathOptions::default()
    })
    .expect("loading over the earlier pins (needs root)");
    assert_eq!(dp.adoption().generation, 7, "the generation carries on");
    assert!(
        dp.adoption()
            .maps_recreated
            .iter()
            .any(|(m, _)| m == "CONFIG"),
        "{:?}",
        dp.adoption()
    );
    // The earlier layout's maps stay pinned until this version's programs hold the hooks.
    assert!(dir.join("maps/DST4_0").exists());
    dp.install(&compiled.image, 8).unwrap();
    let frame = packet::to("192.0.2.1".parse().unwrap(), packet::tcp(40000, 443));
    assert_eq!(
        dp.test_run_xdp(&frame, 1).unwrap().0,
        2,
        "the new tables enforce"
    );
    dp.prune_stale_links().unwrap();
    assert!(
        !dir.join("maps/DST4_0").exists(),
        "the earlier layout's map is unpinned"
    );
    assert!(dir.join("maps/IDX4_0").exists() && dir.join("maps/CONFIG").exists());
    dp.unpin_all().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bytes of a pinned mmapable array.
fn array_bytes(path: &std::path::Path) -> Vec<u8> {
    let data = aya::maps::MapData::from_pin(path).unwrap();
    let info = data.info().unwrap();
    let len = info.value_size() as usize * info.max_entries() as usize;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(data.fd()));
    // SAFETY: a read-only shared mapping of the map's memory, unmapped below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    // SAFETY: `len` bytes mapped above.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }.to_vec();
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(ptr, len) };
    bytes
}

/// The previous version pinned the same policy tables with a 40-byte config map. Its
/// programs go on reading their own config (slot 0 here) until the links move, so the new
/// datapath must fill the other slot, leave slot 0's tables and learned hosts alone, and use
/// an epoch other than the one the earlier programs stamp their flows with.
#[test]
fn the_previous_layouts_slot_is_left_alone_until_the_links_move() {
    if !fwd_lab::can_run_as_root("the_previous_layouts_slot_is_left_alone_until_the_links_move") {
        return;
    }
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/fwd-test-upgrade-prev-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let options = DatapathOptions {
        pin_dir: Some(dir.clone()),
        ..DatapathOptions::default()
    };
    let compile_one = |text: &str| {
        let set = PolicySet {
            vendors: vec![parse_vendor_file(std::path::Path::new("v.toml"), text).unwrap()],
        };
        compile(&set, &Selection::widest(Date::parse("2026-12-01").unwrap())).unwrap()
    };
    let old = compile_one(POLICY);
    let new = compile_one(&POLICY.replace("[443]", "[8443]"));

    // What the earlier daemon left: its policy in slot 0 with a learned host.
    {
        let mut dp = Datapath::load_with(&options).expect("loading (needs root)");
        dp.install(&old.image, 1).unwrap();
        dp.learn("203.0.113.7".parse().unwrap(), old.image.dst4[0].1)
            .unwrap();
    }
    let slot0 = ["IDX4_0", "RNG4_0", "CLASSES_0", "PORT_RANGES_0"]
        .map(|m| array_bytes(&dir.join("maps").join(m)));
    let hosts0 = || {
        let data = aya::maps::MapData::from_pin(dir.join("maps/HOSTS4_0")).unwrap();
        let map =
            aya::maps::HashMap::<_, [u8; 4], u32>::try_from(aya::maps::Map::HashMap(data)).unwrap();
        map.keys().count()
    };
    assert_eq!(hosts0(), 1);
    // ... and its config map, in the 40-byte layout: slot 0, generation 9, epoch 2 (the
    // epoch a fresh config moves to at load).
    std::fs::remove_file(dir.join("maps/CONFIG")).unwrap();
    let config = pin_map(&dir.join("maps/CONFIG"), BPF_MAP_TYPE_ARRAY, 4, 40, 1, 0);
    let mut words = [0u32; 10];
    words[2] = 9;
    words[7] = 2;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    update(config, &0u32.to_ne_bytes(), &bytes);
    // SAFETY: our own descriptor, closed once (the pin keeps the map).
    unsafe { libc::close(config) };

    // ... and its per-CPU rule counters: the web rule counted 5 packets on each CPU out.
    let web = old.ids.get("v/web").unwrap();
    std::fs::remove_file(dir.join("maps/RULE_COUNTERS")).unwrap();
    let counters = pin_map(
        &dir.join("maps/RULE_COUNTERS"),
        BPF_MAP_TYPE_PERCPU_ARRAY,
        4,
        16,
        fwd_common::RULE_COUNTER_SLOTS,
        0,
    );
    let cpus = aya::util::nr_cpus().unwrap();
    let per_cpu: Vec<u8> = (0..cpus)
        .flat_map(|_| [5u64.to_ne_bytes(), 500u64.to_ne_bytes()].concat())
        .collect();
    update(
        counters,
        &fwd_common::rule_counter_index(web, false).to_ne_bytes(),
        &per_cpu,
    );
    // SAFETY: as above.
    unsafe { libc::close(counters) };

    // `fwd stats` over them before this version's daemon has run says what they are.
    let err = fwd::datapath::PinnedState::open(&dir)
        .err()
        .expect("the earlier layout read as this one")
        .to_string();
    assert!(
        err.contains("earlier fwd version (a 40-byte config"),
        "{err}"
    );

    let mut dp = Datapath::load_with(&options).expect("loading over the earlier pins");
    assert_eq!(dp.adoption().generation, 9, "the generation carries on");
    let carried = dp.rule_counters([web]).unwrap()[0];
    assert_eq!(
        (
            carried.outbound.packets,
            carried.outbound.bytes,
            carried.inbound.packets
        ),
        (5 * cpus as u64, 500 * cpus as u64, 0),
        "the earlier per-CPU rule counters carry on"
    );
    assert!(
        dp.adoption()
            .maps_recreated
            .iter()
            .any(|(m, _)| m == "CONFIG"),
        "{:?}",
        dp.adoption()
    );
    assert_ne!(dp.policy_epoch().unwrap(), 2, "the earlier programs' epoch");
    // The new policy has the web rule under the same id and name (the daemon knows the
    // adopted rules from its state): its counts go on.
    dp.set_adopted_rules(vec![(web, fwd::policy::RuleRef::new("v", "web"))]);
    dp.install(&new.image, 10).unwrap();
    assert_eq!(dp.rule_counters([web]).unwrap()[0], carried);
    let run = |port| {
        let frame = packet::to("192.0.2.1".parse().unwrap(), packet::tcp(40000, port));
        dp.test_run_xdp(&frame, 1).unwrap().0
    };
    assert_eq!((run(8443), run(443)), (2, 1), "the new policy enforces");
    for (map, before) in ["IDX4_0", "RNG4_0", "CLASSES_0", "PORT_RANGES_0"]
        .iter()
        .zip(&slot0)
    {
        assert!(
            array_bytes(&dir.join("maps").join(map)) == *before,
            "{map}: the earlier programs' slot was written"
        );
    }
    assert_eq!(
        hosts0(),
        1,
        "the earlier programs' learned host was removed"
    );
    // The next install may use slot 0 again: it is cleared then.
    dp.install(&old.image, 11).unwrap();
    assert_eq!(hosts0(), 0);
    dp.unpin_all().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
