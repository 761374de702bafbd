//! One install for start-up and reload: a change of both the policy and the mode (audit or
//! enforce) reaches the programs in one `CONFIG` write. A reader polls the pinned config
//! map while the policy and the mode change together forty times; every config it sees must
//! pair the slot in force with that slot's policy's mode. (The programs read the slot and
//! the mode from one 8-byte word; a reader of the whole value through the syscall may see
//! the generation, in another word, torn from the next write, so the generation only says
//! which changes were seen.) The same reader, run over the old way (install, then a
//! separate mode write), must catch the moment in between, so the check can fail. Needs
//! root and /sys/fs/bpf.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use aya::maps::{Array, Map, MapData};
use fwd::{
    compile::{Selection, compile},
    datapath::{Datapath, DatapathOptions, Learned},
    policy::{Date, PolicySet, parse_vendor_file},
};
use fwd_common::FwdConfig;
use fwd_lab::packet;

/// A policy whose port differs with `n`, so every generation installs something new.
fn image(n: u16) -> fwd::compile::MapImage {
    let text = format!(
        "[vendor]\nid = \"v\"\nname = \"V\"\n\n[[rule]]\nid = \"r\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [{}]\nremote = [\"192.0.2.0/24\"]\n",
        1000 + n
    );
    let set = PolicySet {
        vendors: vec![parse_vendor_file(Path::new("v.toml"), &text).unwrap()],
    };
    compile(&set, &Selection::widest(Date::parse("2026-12-01").unwrap()))
        .unwrap()
        .image
}

/// Generation `g`'s mode: audit for even generations.
fn audit(generation: u32) -> bool {
    generation.is_multiple_of(2)
}

/// Every install goes to the other slot, the first (generation 1) to slot 0: generation
/// `g` is in slot `(g + 1) % 2`, so slot 0 holds the odd (enforce) generations and slot 1
/// the even (audit) ones.
fn mode_of_slot(slot: u8) -> u8 {
    if audit(u32::from(slot) + 1) {
        FwdConfig::MODE_AUDIT
    } else {
        FwdConfig::MODE_ENFORCE
    }
}

/// Polls the pinned `CONFIG` until `stop`; returns (configs read, generations seen, the
/// configs whose mode was not their generation's).
fn watch(dir: &Path, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, usize, Vec<FwdConfig>)> {
    let path = dir.join("maps/CONFIG");
    thread::spawn(move || {
        let data = MapData::from_pin(&path).expect("the pinned config map");
        // The first word as the programs read it: one 8-byte load of the map's memory.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(data.fd()));
        let config: Array<MapData, FwdConfig> = Array::try_from(Map::Array(data)).unwrap();
        // SAFETY: a read-only shared mapping of the one-entry mmapable array; never unmapped
        // while this thread reads it (it lives until the process ends).
        let head = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                size_of::<FwdConfig>(),
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
            std::sync::atomic::AtomicU64::from_ptr(p.cast::<u64>())
        };
        let (mut reads, mut seen, mut wrong) = (0, std::collections::BTreeSet::new(), Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let c = config
                .get(&0, 0)
                .unwrap()
                .with_head(head.load(Ordering::Acquire));
            reads += 1;
            if c.generation == 0 {
                continue;
            }
            seen.insert(c.generation);
            if c.mode != mode_of_slot(c.active_slot) && wrong.len() < 10 {
                wrong.push(c);
            }
        }
        (reads, seen.len(), wrong)
    })
}

fn pinned_datapath(dir: &PathBuf) -> Datapath {
    let _ = std::fs::remove_dir_all(dir);
    Datapath::load_with(&DatapathOptions {
        pin_dir: Some(dir.clone()),
        ..DatapathOptions::default()
    })
    .expect("loading the programs (needs root and /sys/fs/bpf)")
}

#[test]
fn a_change_of_policy_and_mode_is_one_config_write() {
    if !fwd_lab::can_run_as_root("a_change_of_policy_and_mode_is_one_config_write") {
        return;
    }
    let dir = PathBuf::from(format!("/sys/fs/bpf/fwd-test-apply-{}", std::process::id()));
    let mut dp = pinned_datapath(&dir);
    let images: Vec<_> = (0..4).map(image).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = watch(&dir, stop.clone());
    const CHANGES: u32 = 40;
    for g in 1..=CHANGES {
        let image = &images[g as usize % images.len()];
        dp.apply(image, g, Learned::default(), &[], audit(g))
            .unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, generations, wrong) = reader.join().unwrap();
    assert!(
        wrong.is_empty(),
        "the programs could see a policy with another policy's mode: {wrong:?}"
    );
    // The reader watched the changes happen (each install waits out a grace period).
    assert!(reads > 1000, "{reads} reads");
    assert!(
        generations as u32 > CHANGES / 2,
        "{generations} generations seen"
    );

    // The old way, for contrast: install, then the mode in a second write. The reader sees
    // the new policy under the old mode in between.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = watch(&dir, stop.clone());
    for g in CHANGES + 1..=CHANGES + 10 {
        let image = &images[g as usize % images.len()];
        dp.install(image, g).unwrap();
        dp.set_audit(audit(g)).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (_, _, wrong) = reader.join().unwrap();
    assert!(
        !wrong.is_empty(),
        "two writes went unseen: this test could not tell one write from two"
    );
    dp.unpin_all().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A policy too large for the tables the datapath was loaded with (a range table of
/// `RANGES4_CAPACITY` entries): its install fails before the flip.
fn too_large() -> fwd::compile::MapImage {
    let hosts: Vec<String> = (0..fwd_common::RANGES4_CAPACITY + 10)
        .map(|i| format!("\"{}\"", std::net::Ipv4Addr::from(0x0a00_0000 + i * 2)))
        .collect();
    let text = format!(
        "[vendor]\nid = \"v\"\nname = \"V\"\n\n[[rule]]\nid = \"r\"\nservice = \"s\"\nprotocol = \"tcp\"\nports = [1]\nremote = [{}]\n",
        hosts.join(", ")
    );
    let set = PolicySet {
        vendors: vec![parse_vendor_file(Path::new("v.toml"), &text).unwrap()],
    };
    compile(&set, &Selection::widest(Date::parse("2026-12-01").unwrap()))
        .unwrap()
        .image
}

#[test]
fn a_failed_apply_changes_no_setting() {
    if !fwd_lab::can_run_as_root("a_failed_apply_changes_no_setting") {
        return;
    }
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/fwd-test-apply-failed-{}",
        std::process::id()
    ));
    let mut dp = pinned_datapath(&dir);
    let pinned = fwd::datapath::PinnedState::open(&dir).unwrap();
    dp.apply(&image(0), 1, Learned::default(), &[], false)
        .unwrap();
    let exempt: Vec<ipnet::IpNet> = vec!["198.51.100.0/24".parse().unwrap()];
    // The dry run's check says what the install will, and writes nothing.
    let check = dp
        .check_capacity(&too_large(), &exempt)
        .expect_err("the check of an install larger than the tables");
    assert!(check.to_string().contains("RNG4"), "{check}");
    dp.check_capacity(&image(1), &exempt).unwrap();
    assert_eq!(pinned.config().unwrap().generation, 1);
    let err = dp
        .apply(&too_large(), 2, Learned::default(), &exempt, true)
        .expect_err("an install larger than the tables");
    assert!(err.to_string().contains("RNG4"), "{err}");
    let config = pinned.config().unwrap();
    assert_eq!(
        (config.generation, config.mode),
        (1, FwdConfig::MODE_ENFORCE)
    );
    // The next plain install brings neither the failed apply's mode nor its exemptions.
    dp.install(&image(1), 3).unwrap();
    let config = pinned.config().unwrap();
    assert_eq!(
        (config.generation, config.mode),
        (3, FwdConfig::MODE_ENFORCE)
    );
    let frame = packet::to("198.51.100.7".parse().unwrap(), packet::udp(1000, 9));
    const XDP_DROP: u32 = 1;
    assert_eq!(
        dp.test_run_xdp(&frame, 1).unwrap().0,
        XDP_DROP,
        "not exempt"
    );
    dp.unpin_all().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `defer_slot_clear` (the daemon's reloads) an install flips and returns, and the
/// slot it left is cleared by `finish_install` after `SLOT_GRACE`, so the caller need not
/// hold its lock meanwhile. An install that comes before then waits out the rest of the
/// grace before it writes that slot, which programs may still be reading.
#[test]
fn a_deferred_install_leaves_the_old_slot_alone_for_the_grace() {
    if !fwd_lab::can_run_as_root("a_deferred_install_leaves_the_old_slot_alone_for_the_grace") {
        return;
    }
    let dir = PathBuf::from(format!(
        "/sys/fs/bpf/fwd-test-apply-defer-{}",
        std::process::id()
    ));
    let mut dp = pinned_datapath(&dir);
    dp.install(&image(0), 1).unwrap();
    dp.defer_slot_clear(true);
    dp.install(&image(1), 2).unwrap();
    let flipped = std::time::Instant::now();
    assert!(
        dp.install_pending(),
        "the old slot is left for finish_install"
    );
    // The next install writes the slot just left: not before the grace has passed.
    dp.install(&image(2), 3).unwrap();
    assert!(
        flipped.elapsed() >= fwd::datapath::SLOT_GRACE,
        "the slot was written {:?} after the flip away from it",
        flipped.elapsed()
    );
    assert!(dp.install_pending());
    dp.finish_install().unwrap();
    assert!(!dp.install_pending());
    // Generation 3's policy is in force: its port passes, the others' do not.
    const XDP_DROP: u32 = 1;
    const XDP_PASS: u32 = 2;
    for (port, verdict) in [(1002, XDP_PASS), (1001, XDP_DROP), (1000, XDP_DROP)] {
        let frame = packet::to("192.0.2.7".parse().unwrap(), packet::tcp(40000, port));
        assert_eq!(
            dp.test_run_xdp(&frame, 1).unwrap().0,
            verdict,
            "port {port}"
        );
    }
    dp.unpin_all().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
