//! The datapath bench's traffic: IPv4 UDP datagrams and TCP SYNs to destinations drawn
//! from a `RuleSet`, rendered as a trafgen packet configuration (static bytes with their
//! checksums), and the parsers the bench reads its figures with (`/proc/net/dev`,
//! `/proc/PID/schedstat`, captured frames).

use std::{fmt::Write as _, net::Ipv4Addr};

use crate::bench::rules::{OUTSIDE, Proto, Rng, RuleSet};

/// Every frame is this long: Ethernet 14 + IPv4 20 + (TCP 20 + 8 option bytes, or UDP 8 +
/// 20 payload bytes). No padding, so the IP length is the frame's.
pub const FRAME_LEN: usize = 62;

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_PAYLOAD: &[u8; 20] = b"fwd bench datapath!\n";
/// Source ports count up from here, one per packet of a file: every packet is its own flow.
const FIRST_SOURCE_PORT: u16 = 10_000;

/// Why a packet is in the traffic: what the rule set says of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Allowed,
    /// Denied: the destination is outside every rule's networks.
    DeniedAddress,
    /// Denied: the destination is inside a network, but no rule opens the port.
    DeniedPort,
}

/// One packet of the traffic, as the sink identifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Clone, Debug)]
pub struct Packet {
    pub flow: Flow,
    pub expect: Expect,
}

/// A file's worth of distinct packets (each its own 5-tuple), in the order trafgen sends
/// them round robin.
#[derive(Clone, Debug)]
pub struct Traffic {
    pub packets: Vec<Packet>,
}

impl Traffic {
    /// `n` packets from `src`: `allowed_share` of them allowed, the rest denied, half by
    /// address and half by port; shuffled.
    pub fn generate(
        rules: &RuleSet,
        src: Ipv4Addr,
        n: usize,
        allowed_share: f64,
        seed: u64,
    ) -> Traffic {
        let mut rng = Rng(seed | 1);
        let allowed = ((n as f64 * allowed_share).round() as usize).min(n);
        let denied = n - allowed;
        let by_address = denied / 2;
        let mut picks: Vec<(Ipv4Addr, Proto, u16, Expect)> = Vec::with_capacity(n);
        for _ in 0..allowed {
            let (dst, proto, port) = rules.allowed_packet(&mut rng);
            picks.push((dst, proto, port, Expect::Allowed));
        }
        let (mut want_address, mut want_port) = (by_address, denied - by_address);
        while want_address + want_port > 0 {
            let (dst, proto, port) = rules.denied_packet(&mut rng);
            let outside = u32::from(dst) >> (32 - OUTSIDE.1) == OUTSIDE.0 >> (32 - OUTSIDE.1);
            if outside && want_address > 0 {
                want_address -= 1;
                picks.push((dst, proto, port, Expect::DeniedAddress));
            } else if !outside && want_port > 0 {
                want_port -= 1;
                picks.push((dst, proto, port, Expect::DeniedPort));
            }
        }
        // Fisher-Yates, so allowed and denied packets interleave.
        for i in (1..picks.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            picks.swap(i, j);
        }
        let packets = picks
            .into_iter()
            .enumerate()
            .map(|(i, (dst, proto, dport, expect))| Packet {
                flow: Flow {
                    src,
                    dst,
                    proto: proto.number(),
                    sport: FIRST_SOURCE_PORT.wrapping_add(i as u16),
                    dport,
                },
                expect,
            })
            .collect();
        Traffic { packets }
    }

    pub fn count(&self, expect: Expect) -> usize {
        self.packets.iter().filter(|p| p.expect == expect).count()
    }

    /// The trafgen configuration: one `{ ... }` block of static bytes per packet.
    /// `n` packets from `src`, every one to an address no rule covers, each its own
    /// destination (a flood of denied packets).
    pub fn denied_flood(rules: &RuleSet, src: Ipv4Addr, n: usize, seed: u64) -> Traffic {
        let mut rng = Rng(seed | 1);
        let mut packets = Vec::with_capacity(n);
        let mut seen = std::collections::HashSet::new();
        while packets.len() < n {
            let (dst, proto, port) = rules.denied_packet(&mut rng);
            let outside = u32::from(dst) >> (32 - OUTSIDE.1) == OUTSIDE.0 >> (32 - OUTSIDE.1);
            if !outside || !seen.insert(dst) {
                continue;
            }
            let i = packets.len();
            packets.push(Packet {
                flow: Flow {
                    src,
                    dst,
                    proto: proto.number(),
                    sport: 10_000 + (i % 50_000) as u16,
                    dport: port,
                },
                expect: Expect::DeniedAddress,
            });
        }
        Traffic { packets }
    }

    /// The frames of `trafgen_config`, but each sent with a random source port (and the
    /// transport checksum trafgen computes for it): nearly every packet the first of a new
    /// flow.
    pub fn trafgen_config_new_flows(&self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> String {
        let mut out = format!(
            "# cargo xtask bench (datapath): {} packets, a random source port on each\n",
            self.packets.len()
        );
        let l4 = 14 + IP_LEN;
        for p in &self.packets {
            let frame = frame(src_mac, dst_mac, &p.flow);
            let tcp = p.flow.proto == Proto::Tcp.number();
            let sum = l4 + if tcp { 16 } else { 6 };
            out.push('{');
            let mut i = 0;
            while i < frame.len() {
                let sep = if i == 0 { " " } else { ", " };
                if i == l4 {
                    let _ = write!(out, "{sep}drnd(2)");
                    i += 2;
                } else if i == sum {
                    let f = if tcp { "csumtcp" } else { "csumudp" };
                    let _ = write!(out, "{sep}{f}(14, {l4})");
                    i += 2;
                } else {
                    let _ = write!(out, "{sep}0x{:02x}", frame[i]);
                    i += 1;
                }
            }
            out.push_str(" }\n");
        }
        out
    }

    pub fn trafgen_config(&self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> String {
        let mut out = format!(
            "# cargo xtask bench (datapath): {} packets, {} allowed, {} denied by address, {} by port\n",
            self.packets.len(),
            self.count(Expect::Allowed),
            self.count(Expect::DeniedAddress),
            self.count(Expect::DeniedPort)
        );
        for p in &self.packets {
            let frame = frame(src_mac, dst_mac, &p.flow);
            out.push('{');
            for (i, b) in frame.iter().enumerate() {
                let _ = write!(out, "{}0x{b:02x}", if i == 0 { " " } else { ", " });
            }
            out.push_str(" }\n");
        }
        out
    }
}

/// The Internet checksum (RFC 1071) of `data`, complemented, ready to store.
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP or UDP checksum of `segment` (its checksum field zero) with the IPv4 pseudo
/// header. UDP's zero means "none", so a computed zero is sent as 0xffff.
pub fn transport_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut acc = sum(0, &src.octets());
    acc = sum(acc, &dst.octets());
    acc += u32::from(proto) + segment.len() as u32;
    let c = !fold(sum(acc, segment));
    if c == 0 && proto == Proto::Udp.number() {
        0xffff
    } else {
        c
    }
}

/// An Ethernet frame carrying `flow`'s packet: a UDP datagram, or a TCP SYN with MSS and
/// SACK-permitted options.
pub fn frame(src_mac: [u8; 6], dst_mac: [u8; 6], flow: &Flow) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(28);
    l4.extend_from_slice(&flow.sport.to_be_bytes());
    l4.extend_from_slice(&flow.dport.to_be_bytes());
    if flow.proto == Proto::Tcp.number() {
        let seq = u32::from(flow.sport) << 16 | u32::from(flow.dport);
        l4.extend_from_slice(&seq.to_be_bytes());
        l4.extend_from_slice(&0u32.to_be_bytes()); // ack
        l4.push(7 << 4); // data offset: 28 bytes
        l4.push(0x02); // SYN
        l4.extend_from_slice(&64_240u16.to_be_bytes()); // window
        l4.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        l4.extend_from_slice(&[2, 4, 0x05, 0xb4, 1, 1, 4, 2]); // MSS 1460, NOP, NOP, SACK-permitted
    } else {
        l4.extend_from_slice(&(8 + UDP_PAYLOAD.len() as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend_from_slice(UDP_PAYLOAD);
    }
    let at = if flow.proto == Proto::Tcp.number() {
        16
    } else {
        6
    };
    let c = transport_checksum(flow.src, flow.dst, flow.proto, &l4);
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());

    let mut ip = [0u8; IP_LEN];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((IP_LEN + l4.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&flow.sport.to_be_bytes()); // identification
    ip[6] = 0x40; // don't fragment
    ip[8] = 64; // TTL
    ip[9] = flow.proto;
    ip[12..16].copy_from_slice(&flow.src.octets());
    ip[16..20].copy_from_slice(&flow.dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());

    let mut f = Vec::with_capacity(FRAME_LEN);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&l4);
    f
}

/// The flow of a captured Ethernet frame, if it is IPv4 TCP or UDP.
pub fn parse_frame(f: &[u8]) -> Option<Flow> {
    if f.len() < ETH_LEN + IP_LEN || f[12..14] != [0x08, 0x00] || f[ETH_LEN] >> 4 != 4 {
        return None;
    }
    let ip = &f[ETH_LEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    if ip.len() < ihl + 4 || (proto != 6 && proto != 17) {
        return None;
    }
    let l4 = &ip[ihl..];
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    Some(Flow {
        src: addr(12),
        dst: addr(16),
        proto,
        sport: u16::from_be_bytes([l4[0], l4[1]]),
        dport: u16::from_be_bytes([l4[2], l4[3]]),
    })
}

/// A MAC address as `ip -j link` prints it (`aa:bb:cc:dd:ee:ff`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// One interface's counters from `/proc/net/dev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// `dev`'s counters in the text of `/proc/net/dev`.
pub fn parse_net_dev(text: &str, dev: &str) -> Option<DevCounters> {
    text.lines().skip(2).find_map(|line| {
        let (name, rest) = line.split_once(':')?;
        if name.trim() != dev {
            return None;
        }
        let v: Vec<u64> = rest
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        // rx: bytes packets errs drop fifo frame compressed multicast; tx: bytes packets errs drop ...
        (v.len() >= 16).then(|| DevCounters {
            rx_packets: v[1],
            rx_dropped: v[3],
            tx_packets: v[9],
            tx_dropped: v[11],
        })
    })
}

/// The run time (ns) in the text of `/proc/PID/task/TID/schedstat`: its first field, the
/// scheduler's exact sum of the time the thread ran.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// (comm, ppid) from the text of `/proc/PID/stat` (comm may hold spaces and parentheses).
pub fn parse_stat(text: &str) -> Option<(&str, u32)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let ppid = text[close + 1..].split_whitespace().nth(1)?.parse().ok()?;
    Some((&text[open + 1..close], ppid))
}

/// (busy, irq + softirq) in clock ticks from the `cpu` line of `/proc/stat`: busy is user,
/// nice, system, irq and softirq (idle, iowait, steal and guest time are not this
/// machine's work or are already in user).
pub fn parse_proc_stat(text: &str, cpu: &str) -> Option<(u64, u64)> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(cpu))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    Some((get(0) + get(1) + get(2) + get(5) + get(6), get(5) + get(6)))
}

/// The CPUs of a `Cpus_allowed_list` value (`0`, `0-3`, `0,2-3`).
pub fn parse_cpu_list(s: &str) -> Vec<usize> {
    s.trim()
        .split(',')
        .filter_map(|part| match part.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?..=b.trim().parse().ok()?).collect()),
            None => part.trim().parse().ok().map(|c| vec![c]),
        })
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

    /// A checksum over data that holds its own checksum folds to all ones.
    fn verifies(data: &[u8]) -> bool {
        fold(sum(0, data)) == 0xffff
    }

    fn pseudo_verifies(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> bool {
        let mut acc = sum(0, &src.octets());
        acc = sum(acc, &dst.octets());
        acc += u32::from(proto) + segment.len() as u32;
        fold(sum(acc, segment)) == 0xffff
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071's example words 0001 f203 f4f5 f6f7 sum to ddf2; the checksum is 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
        // A classic IPv4 header (Wikipedia's example), checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verifies(&h));
        // Odd lengths pad with a zero byte.
        assert_eq!(checksum(&[0xff]), !0xff00);
    }

    #[test]
    fn frames_carry_their_flow_with_valid_checksums() {
        let set = RuleSet::generate(300, 30, 5);
        let t = Traffic::generate(&set, Ipv4Addr::new(10, 250, 0, 2), 400, 0.75, 9);
        let (mut tcp, mut udp) = (0, 0);
        for p in &t.packets {
            let f = frame(SRC_MAC, DST_MAC, &p.flow);
            assert_eq!(f.len(), FRAME_LEN, "{p:?}");
            assert_eq!(f[..6], DST_MAC);
            assert_eq!(f[6..12], SRC_MAC);
            let ip = &f[ETH_LEN..ETH_LEN + IP_LEN];
            assert!(verifies(ip), "IP header checksum of {p:?}");
            assert_eq!(
                usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                FRAME_LEN - ETH_LEN
            );
            let l4 = &f[ETH_LEN + IP_LEN..];
            assert!(
                pseudo_verifies(p.flow.src, p.flow.dst, p.flow.proto, l4),
                "transport checksum of {p:?}"
            );
            if p.flow.proto == 6 {
                tcp += 1;
                assert_eq!(l4[13], 0x02, "a SYN");
                assert_eq!(usize::from(l4[12] >> 4) * 4, l4.len());
            } else {
                udp += 1;
                assert_eq!(usize::from(u16::from_be_bytes([l4[4], l4[5]])), l4.len());
            }
            assert_eq!(parse_frame(&f), Some(p.flow));
        }
        assert!(tcp > 0 && udp > 0, "both protocols: {tcp} TCP, {udp} UDP");
    }

    #[test]
    fn traffic_mix_is_exact_and_agrees_with_the_reference() {
        let set = RuleSet::generate(500, 50, 7);
        let t = Traffic::generate(&set, Ipv4Addr::new(10, 250, 0, 2), 1000, 0.75, 3);
        assert_eq!(t.packets.len(), 1000);
        assert_eq!(t.count(Expect::Allowed), 750);
        assert_eq!(t.count(Expect::DeniedAddress), 125);
        assert_eq!(t.count(Expect::DeniedPort), 125);
        let proto = |n| if n == 6 { Proto::Tcp } else { Proto::Udp };
        for p in &t.packets {
            let allowed = set.allows(p.flow.dst, proto(p.flow.proto), p.flow.dport);
            assert_eq!(allowed, p.expect == Expect::Allowed, "{p:?}");
        }
        // Distinct flows, and shuffled: the first quarter is not all of one kind.
        let mut flows: Vec<_> = t.packets.iter().map(|p| p.flow).collect();
        flows.sort();
        flows.dedup();
        assert_eq!(flows.len(), 1000);
        let first = &t.packets[..250];
        assert!(first.iter().any(|p| p.expect == Expect::Allowed));
        assert!(first.iter().any(|p| p.expect != Expect::Allowed));
        let all = Traffic::generate(&set, Ipv4Addr::new(10, 250, 0, 2), 64, 1.0, 3);
        assert_eq!(all.count(Expect::Allowed), 64);
    }

    #[test]
    fn trafgen_config_has_one_block_per_packet() {
        let set = RuleSet::generate(100, 10, 1);
        let t = Traffic::generate(&set, Ipv4Addr::new(10, 250, 0, 2), 8, 0.5, 2);
        let cfg = t.trafgen_config(SRC_MAC, DST_MAC);
        let blocks: Vec<&str> = cfg.lines().filter(|l| l.starts_with('{')).collect();
        assert_eq!(blocks.len(), 8);
        assert!(cfg.starts_with("# cargo xtask bench"));
        let bytes: Vec<u8> = blocks[0]
            .trim_matches(['{', '}', ' '])
            .split(", ")
            .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap())
            .collect();
        assert_eq!(bytes, frame(SRC_MAC, DST_MAC, &t.packets[0].flow));
    }

    /// trafgen itself reads the configuration and writes the frames to a pcap file: they
    /// must be our bytes, in our order. Skipped (with a note) where trafgen is missing.
    #[test]
    fn trafgen_sends_exactly_the_rendered_frames() {
        let set = RuleSet::generate(100, 10, 1);
        let t = Traffic::generate(&set, Ipv4Addr::new(10, 250, 0, 2), 16, 0.75, 4);
        let Some(frames) = through_trafgen(&t.trafgen_config(SRC_MAC, DST_MAC), 16, "traffic")
        else {
            return;
        };
        let want: Vec<Vec<u8>> = t
            .packets
            .iter()
            .map(|p| frame(SRC_MAC, DST_MAC, &p.flow))
            .collect();
        assert_eq!(frames, want);
    }

    /// Runs trafgen on `config` into a pcap file and returns the frames, or `None` (with a
    /// note) where trafgen is missing.
    fn through_trafgen(config: &str, num: usize, name: &str) -> Option<Vec<Vec<u8>>> {
        // trafgen opens a packet socket.
        if !fwd_lab::can_run_as_root(&format!("trafgen round trip ({name})")) {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("fwd-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cfg, pcap) = (dir.join("t.cfg"), dir.join("t.pcap"));
        std::fs::write(&cfg, config).unwrap();
        let out = std::process::Command::new("trafgen")
            .arg("--in")
            .arg(&cfg)
            .arg("--out")
            .arg(&pcap)
            .args(["--num", &num.to_string(), "--cpus", "1", "--no-sock-mem"])
            .output();
        let Ok(out) = out else {
            eprintln!("trafgen is not installed: skipping the round trip through it");
            let _ = std::fs::remove_dir_all(&dir);
            return None;
        };
        assert!(out.status.success(), "{out:?}");
        let data = std::fs::read(&pcap).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let mut at = 24;
        let mut frames = Vec::new();
        while at + 16 <= data.len() {
            let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
            frames.push(data[at + 16..at + 16 + caplen].to_vec());
            at += 16 + caplen;
        }
        Some(frames)
    }

    /// The new-flow frames are the mix's with another source port each time and a transport
    /// checksum that is right for it (a wrong one would make conntrack call them invalid).
    #[test]
    fn new_flow_frames_vary_the_source_port_with_valid_checksums() {
        let set = RuleSet::generate(100, 10, 1);
        let t = Traffic::generate(&set, Ipv4Addr::new(10, 250, 0, 2), 8, 0.75, 4);
        let Some(frames) =
            through_trafgen(&t.trafgen_config_new_flows(SRC_MAC, DST_MAC), 64, "new")
        else {
            return;
        };
        assert_eq!(frames.len(), 64);
        let mut ports = std::collections::HashSet::new();
        for (i, f) in frames.iter().enumerate() {
            let p = &t.packets[i % t.packets.len()];
            let mut want = frame(SRC_MAC, DST_MAC, &p.flow);
            let l4 = 14 + IP_LEN;
            let sport = u16::from_be_bytes([f[l4], f[l4 + 1]]);
            ports.insert(sport);
            // The checksum trafgen wrote is the right one for its port.
            let sum = l4
                + if p.flow.proto == Proto::Tcp.number() {
                    16
                } else {
                    6
                };
            let mut zeroed = f[l4..].to_vec();
            zeroed[sum - l4..sum - l4 + 2].copy_from_slice(&[0, 0]);
            let right = transport_checksum(p.flow.src, p.flow.dst, p.flow.proto, &zeroed);
            assert_eq!(f[sum..sum + 2], right.to_be_bytes(), "frame {i}: checksum");
            // Everything else is our frame.
            want[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
            want[sum..sum + 2].copy_from_slice(&f[sum..sum + 2]);
            assert_eq!(f, &want, "frame {i}");
        }
        assert!(
            ports.len() > 50,
            "{} distinct source ports of 64",
            ports.len()
        );
    }

    #[test]
    fn a_denied_flood_goes_to_distinct_unlisted_addresses() {
        let set = RuleSet::generate(100, 10, 1);
        let t = Traffic::denied_flood(&set, Ipv4Addr::new(10, 250, 0, 2), 500, 9);
        assert_eq!(t.count(Expect::DeniedAddress), 500);
        let dsts: std::collections::HashSet<_> = t.packets.iter().map(|p| p.flow.dst).collect();
        assert_eq!(dsts.len(), 500);
    }

    #[test]
    fn parses_proc_files() {
        let net_dev = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  \
             lan0:123456789 2000000    0    7    0     0          0         0     1234      12    0    3    0     0       0          0\n";
        assert_eq!(
            parse_net_dev(net_dev, "lan0"),
            Some(DevCounters {
                rx_packets: 2_000_000,
                rx_dropped: 7,
                tx_packets: 12,
                tx_dropped: 3
            })
        );
        assert_eq!(parse_net_dev(net_dev, "lan"), None);
        assert_eq!(parse_schedstat("132821 55 1\n"), Some(132_821));
        assert_eq!(
            parse_stat("14 (ksoftirqd/0) S 2 0 0 0 -1"),
            Some(("ksoftirqd/0", 2))
        );
        assert_eq!(parse_stat("99 (a) b) R 7 1"), Some(("a) b", 7)));
        let stat = "cpu  10 1 20 500 9 3 4 8 0 0\ncpu0 5 0 10 250 4 1 2 4 0 0\n";
        assert_eq!(parse_proc_stat(stat, "cpu"), Some((10 + 1 + 20 + 3 + 4, 7)));
        assert_eq!(parse_proc_stat(stat, "cpu0"), Some((18, 3)));
        assert_eq!(parse_proc_stat(stat, "cpu1"), None);
        assert_eq!(parse_cpu_list("0\n"), [0]);
        assert_eq!(parse_cpu_list("0-2,5"), [0, 1, 2, 5]);
        assert_eq!(
            parse_mac("9e:8d:e3:54:f6:0c"),
            Some([0x9e, 0x8d, 0xe3, 0x54, 0xf6, 0x0c])
        );
        assert_eq!(parse_mac("9e:8d:e3:54:f6"), None);
    }
}
