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
