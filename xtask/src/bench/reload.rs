//! The reload section of `cargo xtask bench`: how long fwd, nftables and ipset take to
//! replace a large rule set, and how many packets each loses while it does so under load.
//!
//! All of them are in force at once on the lab's gateway (fwd's XDP program on lan0, the
//! `fwd export nftables` table, a table with one concatenated interval set, and an iptables
//! FORWARD rule matching an ipset), each allowing the same rule set, so a probe stream
//! passes them all. Each round replaces
//! the rule set in each firewall in turn (A B C A B C ...); a probe packet that never
//! arrives is charged to the firewall whose replacement was under way when it was sent.

use std::{
    net::{SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use fwd_lab::{FwdProcess, GATEWAY_LAN_IF, Lab, Netns, Pins, SiteConfig};
use serde_json::json;

use crate::{
    bench::datapath::{Capture, output},
    bench::report::{Section, median, ratio},
    bench::rules::{Proto, Rng, RuleSet},
};

/// Probe datagrams carry this magic before their sequence number.
const MAGIC: &[u8; 4] = b"FWDR";

/// The probe stream's rate (datagrams per second) and its number of destinations.
const PROBE_RATE: u64 = 10_000;
const PROBE_DESTINATIONS: usize = 64;

/// A probe sent this long after a replacement ended is still charged to it (queues drain).
const GRACE: Duration = Duration::from_millis(50);

/// The ipset every round swaps into place, and the name new contents are restored under.
const SET: &str = "fwd-allow";
const SET_NEXT: &str = "fwd-allow-next";

const METRICS: &str = "127.0.0.1:9469";

/// The table of the concatenated-set rendering (the export's is `fwd_export`).
const CONCAT_TABLE: &str = "bench_concat";

/// Above this size the concatenated set is loaded once and not replaced in rounds: nft
/// takes minutes to load 1,000,000 prefixes into it.
const CONCAT_ROUNDS_MAX: usize = 100_000;

/// The send time of a probe the sender's own stack refused (not charged to anyone).
const NOT_SENT: Duration = Duration::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Fwd,
    Nft,
    /// nftables with one concatenated address . protocol . port interval set.
    NftConcat,
    Ipset,
}

impl Tool {
    const ALL: [Tool; 4] = [Tool::Fwd, Tool::Nft, Tool::NftConcat, Tool::Ipset];

    fn name(self) -> &'static str {
        match self {
            Tool::Fwd => "fwd reload",
            Tool::Nft => "nft -f (fwd export nftables)",
            Tool::NftConcat => "nft -f (concatenated set)",
            Tool::Ipset => "ipset restore + swap",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Tool::Fwd => "fwd",
            Tool::Nft => "nftables",
            Tool::NftConcat => "nftables_concat",
            Tool::Ipset => "ipset",
        }
    }
}

/// One replacement: which firewall, when (relative to the probe's start), its wall time
/// and, for fwd, the daemon's compile, fill and swap times in ms.
struct Swap {
    tool: Tool,
    start: Duration,
    end: Duration,
    phases: Option<(f64, f64, f64)>,
}

/// Runs `program ARGS` in `ns`, failing with its stderr.
fn run_in(ns: &Netns, program: &str, args: &[&str]) -> anyhow::Result<()> {
    output(ns.command(program)?.args(args)).map(drop)
}

/// The two rule sets the rounds alternate between: `b` is `a` with one more rule, so both
/// allow every probe and each replacement really changes the contents.
fn variants(prefixes: usize) -> (RuleSet, RuleSet) {
    let a = RuleSet::generate(prefixes, 100, 0x7e1_0ad);
    let mut b = a.clone();
    b.rules.extend(RuleSet::generate(100, 100, 0xb).rules);
    (a, b)
}

/// What the three firewalls need for one variant: a fwd policy directory, an nft script and
/// an ipset restore file (restored under `SET_NEXT`), each written ahead of the rounds.
struct Variant {
    policy: PathBuf,
    nft: PathBuf,
    concat: PathBuf,
    ipset: PathBuf,
    export_s: f64,
}

fn prepare(
    fwd: &Path,
    scratch: &Path,
    name: &str,
    rules: &RuleSet,
    config: &Path,
) -> anyhow::Result<Variant> {
    let policy = scratch.join(format!("policy-{name}"));
    rules.write_fwd_policy(&policy)?;
    let nft = scratch.join(format!("{name}.nft"));
    let started = Instant::now();
    let script = crate::bench::export_nftables(fwd, config, &policy)?;
    let export_s = started.elapsed().as_secs_f64();
    std::fs::write(&nft, script)?;
    let ipset = scratch.join(format!("{name}.ipset"));
    std::fs::write(&ipset, rules.ipset_restore(SET_NEXT))?;
    let concat = scratch.join(format!("{name}-concat.nft"));
    std::fs::write(&concat, rules.nft_concat(CONCAT_TABLE, GATEWAY_LAN_IF))?;
    Ok(Variant {
        policy,
        nft,
        concat,
        ipset,
        export_s,
    })
}

/// Sends sequenced UDP datagrams at `PROBE_RATE` to `dsts` from inside `ns` until `stop`;
/// returns each datagram's send time.
fn start_probe(
    ns: &Netns,
    dsts: Vec<SocketAddrV4>,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<anyhow::Result<Vec<Duration>>>>> {
    ns.spawn(move || -> anyhow::Result<Vec<Duration>> {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        let mut sent: Vec<Duration> = Vec::new();
        let mut payload = [0u8; 32];
        payload[..4].copy_from_slice(MAGIC);
        while !stop.load(Ordering::Relaxed) {
            let due = (epoch.elapsed().as_secs_f64() * PROBE_RATE as f64) as usize;
            while sent.len() < due {
                let seq = sent.len() as u64;
                payload[4..12].copy_from_slice(&seq.to_be_bytes());
                let dst = dsts[sent.len() % dsts.len()];
                let at = epoch.elapsed();
                // A datagram the sender's own stack refused never reached a firewall.
                sent.push(match socket.send_to(&payload, dst) {
                    Ok(_) => at,
                    Err(_) => NOT_SENT,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(sent)
    })
}

/// Captures the probe datagrams arriving on `dev` in `ns` (a packet socket, so they are
/// seen whatever their destination address) until `stop`; returns their sequence numbers.
fn start_capture(
    ns: &Netns,
    dev: &str,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<Vec<u64>>> {
    let capture = Capture::open(ns, dev)?;
    Ok(std::thread::spawn(move || {
        let mut seqs = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            // An IPv4 frame: the Ethernet header, then the packet.
            if let Some(frame) = capture.recv(&mut buf)
                && frame.get(12..14) == Some(&[0x08, 0x00])
                && let Some(seq) = probe_seq(&frame[14..])
            {
                seqs.push(seq);
            }
        }
        seqs
    }))
}

/// The sequence number of a probe datagram (an IPv4 packet).
fn probe_seq(packet: &[u8]) -> Option<u64> {
    if packet.len() < 20 || packet[0] >> 4 != 4 || packet[9] != 17 {
        return None;
    }
    let payload = packet.get(usize::from(packet[0] & 0xf) * 4 + 8..)?;
    if payload.len() < 12 || &payload[..4] != MAGIC {
        return None;
    }
    Some(u64::from_be_bytes(payload[4..12].try_into().ok()?))
}

/// Charges each lost probe to the replacement under way when it was sent (or to none).
fn attribute(sent: &[Duration], received: &[u64], swaps: &[Swap]) -> (Vec<u64>, u64) {
    let mut seen = vec![false; sent.len()];
    for &seq in received {
        if let Some(s) = seen.get_mut(seq as usize) {
            *s = true;
        }
    }
    let mut lost = vec![0u64; Tool::ALL.len()];
    let mut outside = 0;
    for (seq, at) in sent.iter().enumerate() {
        if seen[seq] || *at == NOT_SENT {
            continue;
        }
        match swaps
            .iter()
            .find(|s| *at >= s.start && *at <= s.end + GRACE)
        {
            Some(s) => lost[Tool::ALL.iter().position(|t| *t == s.tool).unwrap_or(0)] += 1,
            None => outside += 1,
        }
    }
    (lost, outside)
}

/// Probes sent while a replacement by `tool` was under way.
fn sent_during(sent: &[Duration], swaps: &[Swap], tool: Tool) -> usize {
    sent.iter()
        .filter(|at| **at != NOT_SENT)
        .filter(|at| {
            swaps
                .iter()
                .any(|s| s.tool == tool && **at >= s.start && **at <= s.end + GRACE)
        })
        .count()
}

/// One size: every firewall in force, `rounds` replacements each, interleaved.
fn measure(
    fwd: &Path,
    scratch: &Path,
    prefixes: usize,
    rounds: usize,
) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>, serde_json::Value)> {
    let (a, b) = variants(prefixes);
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch)?;
    let name = format!(
        "{}{}-reload",
        crate::bench::BENCH_PREFIX,
        std::process::id()
    );
    let pins = Pins::new(&name);
    let config = scratch.join("fwd.toml");
    SiteConfig::new("policy")
        .comment("cargo xtask bench: the reload comparison's gateway")
        .pins(&pins)
        .on_exit("detach")
        .metrics(METRICS)
        .watch(false)
        .gateway(GATEWAY_LAN_IF)
        .write(&config)?;
    eprintln!("xtask: reload bench: {prefixes} prefixes; exporting and rendering both variants");
    let variants = [
        prepare(fwd, scratch, "a", &a, &config)?,
        prepare(fwd, scratch, "b", &b, &config)?,
    ];
    let live_policy = scratch.join("policy");
    let use_variant = |v: &Variant| -> anyhow::Result<()> {
        let _ = std::fs::remove_file(&live_policy);
        std::os::unix::fs::symlink(&v.policy, &live_policy)?;
        Ok(())
    };
    use_variant(&variants[0])?;

    let lab = Lab::create(&name, &[])?;
    eprintln!("xtask: reload bench: starting fwd on the gateway");
    let started = Instant::now();
    let mut daemon = FwdProcess::start(
        &lab.gateway,
        fwd,
        &config,
        &scratch.join("fwd.log"),
        METRICS.parse()?,
    )?;
    eprintln!(
        "xtask: reload bench: fwd up after {:.1} s; loading nftables and ipset",
        started.elapsed().as_secs_f64()
    );
    let map_memory = bpf_map_memory(daemon.pid());
    let nft_file = |v: &Variant| v.nft.to_string_lossy().into_owned();
    let concat_file = |v: &Variant| v.concat.to_string_lossy().into_owned();
    run_in(&lab.gateway, "nft", &["-f", &nft_file(&variants[0])])?;
    let started = Instant::now();
    run_in(&lab.gateway, "nft", &["-f", &concat_file(&variants[0])])?;
    let concat_first_load = started.elapsed();
    eprintln!(
        "xtask: reload bench: the concatenated set loaded in {:.1} s",
        concat_first_load.as_secs_f64()
    );
    let ipset_swap = |v: &Variant| -> anyhow::Result<()> {
        run_in(
            &lab.gateway,
            "ipset",
            &["restore", "-exist", "-file", &v.ipset.to_string_lossy()],
        )?;
        run_in(&lab.gateway, "ipset", &["swap", SET_NEXT, SET])?;
        run_in(&lab.gateway, "ipset", &["destroy", SET_NEXT])
    };
    // The set the iptables rule names must exist first: restore it under its final name.
    let first_set = scratch.join("first.ipset");
    std::fs::write(&first_set, a.ipset_restore(SET))?;
    run_in(
        &lab.gateway,
        "ipset",
        &["restore", "-exist", "-file", &first_set.to_string_lossy()],
    )?;
    let iptables = scratch.join("iptables.rules");
    std::fs::write(&iptables, a.iptables_restore(GATEWAY_LAN_IF, Some(SET)))?;
    run_in(
        &lab.gateway,
        "iptables-restore",
        &["-w", &iptables.to_string_lossy()],
    )?;

    let mut rng = Rng(0x9e0b);
    let mut dsts = Vec::new();
    while dsts.len() < PROBE_DESTINATIONS {
        let (addr, proto, port) = a.allowed_packet(&mut rng);
        if proto == Proto::Udp {
            dsts.push(SocketAddrV4::new(addr, port));
        }
    }
    let epoch = Instant::now();
    let stop_probe = Arc::new(AtomicBool::new(false));
    let stop_capture = Arc::new(AtomicBool::new(false));
    let capture = start_capture(&lab.vendor, "eth0", stop_capture.clone())?;
    let probe = start_probe(&lab.client, dsts, epoch, stop_probe.clone())?;
    std::thread::sleep(Duration::from_secs(1));

    let mut swaps = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for round in 0..rounds {
            let next = &variants[(round + 1) % 2];
            for tool in Tool::ALL {
                if tool == Tool::NftConcat && prefixes > CONCAT_ROUNDS_MAX {
                    continue;
                }
                let start = epoch.elapsed();
                let mut phases = None;
                match tool {
                    Tool::Fwd => {
                        use_variant(next)?;
                        let out = Command::new(fwd)
                            .args(["reload", "--json", "--config"])
                            .arg(&config)
                            .stdin(Stdio::null())
                            .output()?;
                        let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
                            .with_context(|| {
                                format!(
                                    "fwd reload printed no JSON: {}",
                                    String::from_utf8_lossy(&out.stderr)
                                )
                            })?;
                        if reply["ok"] != true {
                            bail!("fwd reload rejected: {}", reply["error"]);
                        }
                        let ms = |k: &str| reply[k].as_f64().unwrap_or(f64::NAN);
                        phases = Some((ms("compile_ms"), ms("fill_ms"), ms("swap_ms")));
                    }
                    Tool::Nft => run_in(&lab.gateway, "nft", &["-f", &nft_file(next)])?,
                    Tool::NftConcat => run_in(&lab.gateway, "nft", &["-f", &concat_file(next)])?,
                    Tool::Ipset => ipset_swap(next)?,
                }
                let end = epoch.elapsed();
                eprintln!(
                    "xtask: reload bench: {prefixes} prefixes, round {}/{rounds}: {} took {:.0} ms",
                    round + 1,
                    tool.name(),
                    (end - start).as_secs_f64() * 1000.0
                );
                swaps.push(Swap {
                    tool,
                    start,
                    end,
                    phases,
                });
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        Ok(())
    })();
    std::thread::sleep(Duration::from_millis(200));
    stop_probe.store(true, Ordering::Relaxed);
    let sent = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))???;
    std::thread::sleep(Duration::from_millis(300));
    stop_capture.store(true, Ordering::Relaxed);
    let received = capture
        .join()
        .map_err(|_| anyhow::anyhow!("the capture thread panicked"))?;
    daemon.stop(Duration::from_secs(15));
    drop(lab);
    drop(pins);
    result?;
    if received.is_empty() {
        bail!("no probe datagram crossed the gateway: the three rule sets do not all allow them");
    }

    let (lost, outside) = attribute(&sent, &received, &swaps);
    let columns = [
        "prefixes",
        "firewall",
        "replace (median)",
        "x fwd",
        "phases (median)",
        "probes sent during",
        "lost",
    ];
    let mut rows = Vec::new();
    let mut data = serde_json::Map::new();
    let wall = |tool: Tool| -> Vec<f64> {
        swaps
            .iter()
            .filter(|s| s.tool == tool)
            .map(|s| (s.end - s.start).as_secs_f64() * 1000.0)
            .collect()
    };
    let fwd_ms = median(&wall(Tool::Fwd));
    let mut swaps_total = 0;
    for (i, tool) in Tool::ALL.into_iter().enumerate() {
        let mut ms = wall(tool);
        let once = tool == Tool::NftConcat && ms.is_empty();
        if once {
            // Not replaced in rounds at this size: its first load is the figure.
            ms.push(concat_first_load.as_secs_f64() * 1000.0);
        }
        let m = median(&ms);
        let phases = match tool {
            Tool::Fwd => {
                let get = |f: fn(&(f64, f64, f64)) -> f64| {
                    median(
                        &swaps
                            .iter()
                            .filter_map(|s| s.phases.as_ref().map(f))
                            .collect::<Vec<_>>(),
                    )
                };
                format!(
                    "compile {:.0} + fill {:.0} + swap {:.0} ms",
                    get(|p| p.0),
                    get(|p| p.1),
                    get(|p| p.2)
                )
            }
            Tool::Nft => format!(
                "export {:.0} ms (once) + nft -f",
                variants[0].export_s * 1000.0
            ),
            Tool::NftConcat if once => {
                "one load, before the probe (not repeated: too slow)".to_string()
            }
            Tool::NftConcat => "nft -f".to_string(),
            Tool::Ipset => "restore + swap + destroy".to_string(),
        };
        let during = sent_during(&sent, &swaps, tool);
        swaps_total += during;
        rows.push(vec![
            prefixes.to_string(),
            tool.name().to_string(),
            format!("{m:.0} ms"),
            ratio(m / fwd_ms),
            phases,
            if once {
                "-".to_string()
            } else {
                during.to_string()
            },
            if once {
                "-".to_string()
            } else {
                lost[i].to_string()
            },
        ]);
        data.insert(
            tool.key().to_string(),
            json!({
                "replace_ms": ms,
                "median_ms": m,
                "probes_sent_during": during,
                "lost": lost[i],
                "phases_ms": swaps.iter().filter(|s| s.tool == tool).filter_map(|s| s.phases)
                    .map(|(c, f, w)| json!({"compile": c, "fill": f, "swap": w})).collect::<Vec<_>>(),
            }),
        );
    }
    let refused = sent.iter().filter(|at| **at == NOT_SENT).count();
    let quiet = sent.len() - refused - swaps_total;
    rows.push(vec![
        prefixes.to_string(),
        "(no replacement under way)".to_string(),
        "-".into(),
        "-".into(),
        "the probe's own loss, for scale".into(),
        quiet.to_string(),
        outside.to_string(),
    ]);
    data.insert(
        "fwd_map_memlock_bytes".into(),
        json!(map_memory.as_ref().map(|m| m.total)),
    );
    data.insert(
        "fwd_map_memlock_largest".into(),
        json!(map_memory.as_ref().map(|m| &m.largest)),
    );
    data.insert("probes_sent".into(), json!(sent.len()));
    data.insert("probes_refused_by_sender".into(), json!(refused));
    data.insert("probes_received".into(), json!(received.len()));
    data.insert("lost_outside_replacements".into(), json!(outside));
    data.insert("export_s".into(), json!(variants[0].export_s));
    eprintln!(
        "xtask: reload bench: {prefixes} prefixes: {} probes sent, {} received, {outside} lost outside any replacement",
        sent.len(),
        received.len()
    );
    Ok((
        columns
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        rows,
        serde_json::Value::Object(data),
    ))
}

/// The reload section: 100,000 prefixes (and 1,000,000 unless `quick`).
pub fn reload_bench(root: &Path, fwd: &Path, quick: bool) -> anyhow::Result<Section> {
    let sizes: &[usize] = if quick {
        &[100_000]
    } else {
        &[100_000, 1_000_000]
    };
    let rounds = if quick { 2 } else { 3 };
    let mut section = Section::new(
        "reload",
        "Reload: replacing the whole rule set under load (fwd, nftables, ipset)",
    );
    section
        .note(format!(
            "the bench's IPv4 rule set (rules of 100 prefixes, narrow port ranges), replaced by one with a rule more and back, {rounds} rounds, firewalls interleaved"
        ))
        .note("all four in force at once on the gateway (fwd's XDP program, the exported nftables table, a second table with one concatenated address . protocol . port set, an iptables rule matching the ipset); each replacement is timed from the command's start to its exit")
        .note(format!("above {CONCAT_ROUNDS_MAX} prefixes the concatenated set is loaded once, not replaced in rounds: nft takes minutes to fill it"))
        .note(format!(
            "probe: {PROBE_RATE} UDP datagrams/s to {PROBE_DESTINATIONS} allowed destinations; a probe that never arrives is charged to the replacement under way when it was sent (+{} ms)",
            GRACE.as_millis()
        ));
    let mut data = serde_json::Map::new();
    for &prefixes in sizes {
        let (columns, rows, d) = measure(
            fwd,
            &root.join(format!("target/bench/reload-{prefixes}")),
            prefixes,
            rounds,
        )?;
        section.columns = columns;
        section.rows.extend(rows);
        if let Some(bytes) = d["fwd_map_memlock_bytes"].as_u64() {
            let largest: Vec<String> = d["fwd_map_memlock_largest"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    format!(
                        "{} {:.1} MiB",
                        m[0].as_str().unwrap_or("?"),
                        m[1].as_f64().unwrap_or(0.0) / 1048576.0
                    )
                })
                .collect();
            section.note(format!(
                "kernel memory of fwd's maps at {} prefixes (memlock of every map the daemon holds, /proc/PID/fdinfo): {:.1} MiB; largest: {}",
                crate::bench::report::thousands(prefixes as u64),
                bytes as f64 / 1048576.0,
                largest.join(", ")
            ));
        }
        data.insert(prefixes.to_string(), d);
    }
    section.data = serde_json::Value::Object(data);
    Ok(section)
}

/// What the kernel charges for the maps a process holds.
struct MapMemory {
    total: u64,
    /// The five largest: (map type and entries, bytes).
    largest: Vec<(String, u64)>,
}

/// The memlock of every BPF map `pid` has a descriptor of, from its fdinfo.
fn bpf_map_memory(pid: u32) -> Option<MapMemory> {
    let mut maps = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let (Some(kind), Some(memlock)) = (field("map_type:"), field("memlock:")) else {
            continue;
        };
        let id = field("map_id:").unwrap_or_default();
        let entries = field("max_entries:").unwrap_or_default();
        maps.push((
            id,
            format!("type {kind} x{entries}"),
            memlock.parse::<u64>().ok()?,
        ));
    }
    // A map held twice counts once.
    maps.sort();
    maps.dedup_by(|a, b| a.0 == b.0);
    let total = maps.iter().map(|m| m.2).sum();
    maps.sort_by_key(|m| std::cmp::Reverse(m.2));
    Some(MapMemory {
        total,
        largest: maps.into_iter().take(5).map(|m| (m.1, m.2)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_packet(seq: u64, ihl: u8) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(ihl) * 4 + 8];
        p[0] = 0x40 | ihl;
        p[9] = 17;
        p.extend_from_slice(MAGIC);
        p.extend_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn probe_sequence_numbers_are_read_past_ip_options() {
        assert_eq!(probe_seq(&probe_packet(42, 5)), Some(42));
        assert_eq!(probe_seq(&probe_packet(7, 6)), Some(7));
        let mut tcp = probe_packet(1, 5);
        tcp[9] = 6;
        assert_eq!(probe_seq(&tcp), None);
        let mut other = probe_packet(1, 5);
        other[28] = b'X';
        assert_eq!(probe_seq(&other), None);
        assert_eq!(probe_seq(&probe_packet(1, 5)[..30]), None);
    }

    #[test]
    fn lost_probes_are_charged_to_the_replacement_under_way() {
        let ms = Duration::from_millis;
        let sent: Vec<Duration> = (0..10).map(|i| ms(i * 100)).collect();
        let swaps = [
            Swap {
                tool: Tool::Nft,
                start: ms(150),
                end: ms(320),
                phases: None,
            },
            Swap {
                tool: Tool::Ipset,
                start: ms(600),
                end: ms(650),
                phases: None,
            },
        ];
        // Lost: 2 and 3 (during nft), 7 (ipset's, at the end of its grace), 8 (no
        // replacement under way).
        let received = [0, 1, 4, 5, 6, 9];
        let (lost, outside) = attribute(&sent, &received, &swaps);
        assert_eq!(lost, [0, 2, 0, 1]);
        assert_eq!(outside, 1);
        assert_eq!(sent_during(&sent, &swaps, Tool::Nft), 2);
        assert_eq!(sent_during(&sent, &swaps, Tool::Ipset), 2);
    }
}
