//! Shared by the oracle tests (`peer/tests/oracle_*.rs`): tool checks, a minimal pcap reader
//! and writer, and the comparison of our records with tshark's NetFlow/IPFIX dissection
//! (`tshark -T json`), field by field.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sluice_peer::decode::{DecoderConfig, ShardDecoder};
use sluice_peer::record::FlowRecord;

/// Packages that provide the tools (what `cargo xtask setup` installs).
pub const INSTALL_HINT: &str = "apt-get install tshark softflowd protobuf-compiler python3-pip && \
     pip install scapy chdb-core==26.9.0 && cargo install tansu --version 0.6.0 --locked --no-default-features \
     --features dynostore";

/// True when every tool runs. A missing tool fails the test when `CI=true` and skips it
/// (with a message) otherwise.
pub fn tools_available(tools: &[(&str, &[&str])]) -> bool {
    for (cmd, args) in tools {
        let ok = Command::new(cmd)
            .args(*args)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            let msg = format!(
                "oracle test needs `{cmd} {}` to work, which it does not: install with `{INSTALL_HINT}` (or `cargo xtask setup`)",
                args.join(" ")
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            return false;
        }
    }
    true
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sluice-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Ethernet frames with their capture time, written as a classic microsecond pcap.
pub fn write_pcap(path: &Path, frames: &[(u64, Vec<u8>)]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (ts_us, f) in frames {
        out.extend_from_slice(&((ts_us / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((ts_us % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).expect("write pcap");
}

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4 frame carrying `l4` (already built) as protocol `proto`.
pub fn ipv4_frame(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, tos: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let mut ip = vec![0x45, tos];
    ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = ipv4_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// A UDP datagram from `src` to 198.18.0.1:2055 in an Ethernet/IPv4 frame.
pub fn udp_frame(src: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    udp_frame_to(src, 2055, payload)
}

/// A UDP datagram from `src` to 198.18.0.1:`port` in an Ethernet/IPv4 frame.
pub fn udp_frame_to(src: Ipv4Addr, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&40_000u16.to_be_bytes());
    udp.extend_from_slice(&port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    ipv4_frame(src, Ipv4Addr::new(198, 18, 0, 1), 17, 0, &udp)
}

/// The UDP payloads of a pcap (Ethernet, IPv4, UDP), with their IPv4 source.
pub fn read_pcap_udp(path: &Path) -> Vec<(IpAddr, Vec<u8>)> {
    let b = std::fs::read(path).expect("read pcap");
    assert_eq!(
        &b[..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "little-endian µs pcap"
    );
    assert_eq!(
        u32::from_le_bytes(b[20..24].try_into().expect("pcap header")),
        1,
        "Ethernet pcap"
    );
    let mut off = 24;
    let mut out = Vec::new();
    while off + 16 <= b.len() {
        let len =
            u32::from_le_bytes(b[off + 8..off + 12].try_into().expect("record header")) as usize;
        let f = &b[off + 16..off + 16 + len];
        off += 16 + len;
        assert_eq!(&f[12..14], &[0x08, 0x00], "IPv4 frame");
        let ip = &f[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        assert_eq!(ip[9], 17, "UDP");
        let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
        let udp_len = usize::from(u16::from_be_bytes([ip[ihl + 4], ip[ihl + 5]]));
        out.push((src, ip[ihl + 8..ihl + udp_len].to_vec()));
    }
    out
}

/// Our decoder's records for each datagram (one decoder, so templates carry over).
pub fn decode_all(datagrams: &[(IpAddr, Vec<u8>)]) -> Vec<Vec<FlowRecord>> {
    let mut dec = ShardDecoder::new(DecoderConfig::default());
    let out = datagrams
        .iter()
        .enumerate()
        .map(|(i, (src, d))| {
            let mut out = Vec::new();
            dec.decode(*src, 1, d, &mut out)
                .unwrap_or_else(|e| panic!("frame {}: our decoder failed: {e}", i + 1));
            out
        })
        .collect();
    assert_eq!(dec.stats().held, 0, "nothing may stay held");
    assert_eq!(
        dec.stats().lost_total,
        0,
        "no sequence gaps in these captures"
    );
    out
}

/// One dissected frame: header fields, and in order the data records and options records.
pub struct TsharkFrame {
    pub header: BTreeMap<String, String>,
    /// `(is_data, fields)` in wire order.
    pub records: Vec<(bool, BTreeMap<String, String>)>,
}

/// Sort key restoring wire order of tshark subtree names like "pdu 2/3", "FlowSet 10 [id=0]",
/// "Set 3", "Flow 12" or "Expanded flow sample, seq 7" (serde_json's map sorts keys).
pub fn natural(key: &str) -> (u64, String) {
    let prefix: String = key.chars().take_while(|c| !c.is_ascii_digit()).collect();
    let num: String = key
        .chars()
        .skip(prefix.chars().count())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (num.parse().unwrap_or(0), prefix)
}

pub fn flatten(v: &Value, out: &mut BTreeMap<String, String>) {
    if let Value::Object(m) = v {
        for (k, v) in m {
            match v {
                Value::Object(_) => flatten(v, out),
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                other => {
                    out.insert(k.clone(), other.to_string());
                }
            }
        }
    }
}

fn is_record_key(k: &str) -> bool {
    k.starts_with("pdu ") || k.starts_with("Flow ")
}

fn collect(v: &Value, frame: &mut TsharkFrame, depth: usize) {
    let Value::Object(m) = v else { return };
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by_key(|k| natural(k));
    for k in keys {
        let child = &m[k];
        if is_record_key(k) {
            let mut fields = BTreeMap::new();
            flatten(child, &mut fields);
            let is_data =
                fields.contains_key("cflow.packets") || fields.contains_key("cflow.octets");
            frame.records.push((is_data, fields));
        } else if let Value::Object(_) = child {
            collect(child, frame, depth + 1);
        } else if depth == 0 {
            frame
                .header
                .insert(k.clone(), child.as_str().unwrap_or_default().to_owned());
        }
    }
}

/// Dissect a pcap with tshark (UDP 2055 as NetFlow/IPFIX) and return every frame's records.
pub fn tshark_frames(pcap: &Path) -> Vec<TsharkFrame> {
    let out = Command::new("tshark")
        .env("TZ", "UTC")
        .args(["-n", "-r"])
        .arg(pcap)
        .args(["-d", "udp.port==2055,cflow", "-T", "json"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("tshark JSON");
    v.as_array()
        .expect("array of frames")
        .iter()
        .map(|f| {
            let mut frame = TsharkFrame {
                header: BTreeMap::new(),
                records: Vec::new(),
            };
            let cflow = &f["_source"]["layers"]["cflow"];
            assert!(cflow.is_object(), "tshark did not dissect a frame as cflow");
            // Header fields are at the top, plus the timestamp subtree.
            flatten_header(cflow, &mut frame.header);
            collect(cflow, &mut frame, 0);
            frame
        })
        .collect()
}

fn flatten_header(cflow: &Value, out: &mut BTreeMap<String, String>) {
    if let Value::Object(m) = cflow {
        for (k, v) in m {
            match v {
                Value::String(s) => {
                    out.insert(k.clone(), s.clone());
                }
                Value::Object(_) if k == "cflow.timestamp_tree" => flatten(v, out),
                _ => {}
            }
        }
    }
}

/// "3599.500000000" (seconds, 9 decimals) → ns.
fn secs_to_ns(s: &str) -> i128 {
    let (int, frac) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{frac:0<9}");
    i128::from(int.parse::<i64>().expect("seconds")) * 1_000_000_000
        + i128::from(frac[..9].parse::<i64>().expect("fraction"))
}

/// "Nov 14, 2023 22:13:20.250000000 UTC" → ns since the epoch.
fn date_to_ns(s: &str) -> i128 {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == parts[0]).expect("month") as i64 + 1;
    let d: i64 = parts[1].trim_end_matches(',').parse().expect("day");
    let y: i64 = parts[2].parse().expect("year");
    let (hms, frac) = parts[3].split_once('.').unwrap_or((parts[3], "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().expect("time")).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    i128::from(secs) * 1_000_000_000 + secs_to_ns(&format!("0.{frac}"))
}

pub fn num(s: &str) -> u64 {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).expect("hex number"),
        None => s.parse().unwrap_or_else(|_| panic!("number {s:?}")),
    }
}

/// tshark fields that carry nothing our record represents (or are structure, not data).
const IGNORED: &[&str] = &[
    "cflow.padding",
    "cflow.tcpflags_tree",
    "cflow.timedelta",
    "cflow.timedelta_tree",
    "cflow.direction",
    "cflow.flow_end_reason",
    "cflow.if_name",
    "cflow.selector_algorithm",
    "cflow.mp_id",
    "cflow.scope_system",
    "cflow.sampling_algorithm",
    "cflow.od_id",
];

/// Compare every frame's data records with ours, field by field. Returns how many field values
/// were compared.
pub fn assert_same(ours: &[Vec<FlowRecord>], theirs: &[TsharkFrame]) -> usize {
    assert_eq!(ours.len(), theirs.len(), "frame count");
    let mut compared = 0;
    // Options data state, carried across frames like a collector does.
    let mut sampling: BTreeMap<String, u64> = BTreeMap::new();
    let mut sys_init_ns: Option<i128> = None;
    for (i, (ours, t)) in ours.iter().zip(theirs).enumerate() {
        let frame = i + 1;
        let h = &t.header;
        let version = num(&h["cflow.version"]);
        let domain = h
            .get("cflow.source_id")
            .or_else(|| h.get("cflow.od_id"))
            .map(|s| num(s));
        // Time base of relative (sysUptime) flow times.
        let export_ns = match version {
            10 => i128::from(num(&h["cflow.exporttime"])) * 1_000_000_000,
            _ => {
                i128::from(num(&h["cflow.unix_secs"])) * 1_000_000_000
                    + h.get("cflow.unix_nsecs").map_or(0, |n| i128::from(num(n)))
            }
        };
        let uptime_ns = h.get("cflow.sysuptime").map(|s| secs_to_ns(s));
        let key = format!("{version}/{domain:?}");
        if let Some(rate) = h.get("cflow.samplerate") {
            sampling.insert(key.clone(), num(rate));
        }
        let data: Vec<&BTreeMap<String, String>> = t
            .records
            .iter()
            .filter_map(|(is_data, f)| is_data.then_some(f))
            .collect();
        for (is_data, f) in &t.records {
            if *is_data {
                continue;
            }
            if let Some(r) = f.get("cflow.sampling_interval") {
                sampling.insert(key.clone(), num(r));
            }
            if let Some(iv) = f.get("cflow.sampling_packet_interval") {
                let space = f.get("cflow.sampling_packet_space").map_or(0, |s| num(s));
                let iv = num(iv);
                sampling.insert(key.clone(), (iv + space).checked_div(iv).unwrap_or(0));
            }
            if let Some(t) = f.get("cflow.sys_init_time") {
                sys_init_ns = Some(date_to_ns(t));
            }
        }
        assert_eq!(
            ours.len(),
            data.len(),
            "frame {frame}: we decoded {} records, tshark {}",
            ours.len(),
            data.len()
        );
        for (n, (r, f)) in ours.iter().zip(&data).enumerate() {
            let ctx = format!("frame {frame} record {}", n + 1);
            let check = |what: &str, ours: u64, theirs: u64| {
                assert_eq!(ours, theirs, "{ctx}: {what}: ours {ours}, tshark {theirs}");
            };
            check(
                "sequence",
                u64::from(r.sequence_num),
                num(&h["cflow.sequence"]),
            );
            if let Some(d) = domain {
                check("observation domain", u64::from(r.observation_domain_id), d);
            }
            check(
                "sampling rate",
                r.sampling_rate,
                sampling.get(&key).copied().unwrap_or(0),
            );
            compared += 3;
            for (k, v) in *f {
                let rel_time = |rel: i128| -> u64 {
                    let abs = match (version, uptime_ns) {
                        (10, _) => sys_init_ns.expect("IPFIX relative time without sys init") + rel,
                        (_, Some(up)) => export_ns - up + rel,
                        _ => panic!("{ctx}: relative time without sysUptime"),
                    };
                    u64::try_from(abs).expect("positive time")
                };
                let abs_time = |s: &str| -> u64 {
                    let t = date_to_ns(s);
                    // tshark shows a relative time of exactly 0 as the epoch itself.
                    if t < 946_684_800_000_000_000 {
                        rel_time(t)
                    } else {
                        t as u64
                    }
                };
                let ip = |a: Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
                match k.as_str() {
                    "cflow.srcaddr" | "cflow.srcaddrv6" => {
                        assert_eq!(&ip(r.src_addr), v, "{ctx}: {k}")
                    }
                    "cflow.dstaddr" | "cflow.dstaddrv6" => {
                        assert_eq!(&ip(r.dst_addr), v, "{ctx}: {k}")
                    }
                    "cflow.nexthop" | "cflow.nexthopv6" => {
                        assert_eq!(&ip(r.next_hop), v, "{ctx}: {k}")
                    }
                    "cflow.srcport" => check(k, u64::from(r.src_port), num(v)),
                    "cflow.dstport" => check(k, u64::from(r.dst_port), num(v)),
                    "cflow.protocol" => check(k, u64::from(r.proto), num(v)),
                    "cflow.tos" => check(k, u64::from(r.ip_tos), num(v)),
                    "cflow.tcpflags" => check(k, u64::from(r.tcp_flags), num(v)),
                    "cflow.octets" => check(k, r.bytes, num(v)),
                    "cflow.packets" => check(k, r.packets, num(v)),
                    "cflow.inputint" => check(k, u64::from(r.in_if), num(v)),
                    "cflow.outputint" => check(k, u64::from(r.out_if), num(v)),
                    "cflow.srcas" => check(k, u64::from(r.src_as), num(v)),
                    "cflow.dstas" => check(k, u64::from(r.dst_as), num(v)),
                    "cflow.srcmask" | "cflow.srcmaskv6" => check(k, u64::from(r.src_mask), num(v)),
                    "cflow.dstmask" | "cflow.dstmaskv6" => check(k, u64::from(r.dst_mask), num(v)),
                    "cflow.ip_version" => check(
                        k,
                        u64::from(r.etype),
                        if num(v) == 6 { 0x86dd } else { 0x0800 },
                    ),
                    "cflow.icmp_type_code_ipv4" | "cflow.icmp_type_code_ipv6" => check(
                        k,
                        u64::from(r.icmp_type) << 8 | u64::from(r.icmp_code),
                        num(v),
                    ),
                    "cflow.icmp_ipv4_type" | "cflow.icmp_ipv6_type" => {
                        check(k, u64::from(r.icmp_type), num(v))
                    }
                    "cflow.icmp_ipv4_code" | "cflow.icmp_ipv6_code" => {
                        check(k, u64::from(r.icmp_code), num(v))
                    }
                    "cflow.timestart" => check(k, r.time_flow_start_ns, rel_time(secs_to_ns(v))),
                    "cflow.timeend" => check(k, r.time_flow_end_ns, rel_time(secs_to_ns(v))),
                    "cflow.abstimestart" => check(k, r.time_flow_start_ns, abs_time(v)),
                    "cflow.abstimeend" => check(k, r.time_flow_end_ns, abs_time(v)),
                    other if IGNORED.contains(&other) || other.starts_with("cflow.tcpflags.") => {
                        continue;
                    }
                    other => panic!(
                        "{ctx}: tshark field {other} = {v} is not compared; map it or list it in IGNORED"
                    ),
                }
                compared += 1;
            }
        }
    }
    compared
}
