//! README's ClickHouse example, run for real: the real `sluice-peer` writes flowgen traffic
//! (NetFlow v9, IPFIX, sFlow; IPv4 and IPv6) to a `format = "pb"` Kafka output on tansu and to a
//! JSON file; then ClickHouse (chDB, the embedded engine of PyPI's `chdb-core`, driven by
//! `data/chdb_run.py`) runs the README's SQL block as written — only the broker list is
//! substituted — and consumes the topic from the start with its Kafka engine in the background.
//!
//! Every record must arrive exactly once and equal the peer's JSON of it: all of `flow.proto`
//! through the README's queue table (its columns, re-encoded by ClickHouse as `FlowMessage`,
//! decoded by us), and the README's `flows` table field by field. One extra record, produced
//! straight to the topic, carries the repeated fields flowgen leaves empty (MPLS, BGP).
//!
//! Needs `tansu` and the `chdb` Python module (`cargo xtask setup` installs both): without them
//! the test fails when `CI=true` and prints a skip otherwise.
#![cfg(feature = "kafka")]
#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]

#[path = "data/oracle_support.rs"]
#[allow(dead_code, reason = "each oracle test uses part of the support module")]
mod oracle;
#[path = "data/tansu_support.rs"]
mod tansu;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{Value, json};
use sluice_peer::flowgen::Protocol;
use sluice_peer::output::{EncodedBatch, Format};
use sluice_peer::record::pb::FlowMessage;
use sluice_peer::record::{FlowRecord, Layer, Mac};
use sluice_peer::testing::*;
use tansu::{Tansu, tansu_available};

const SLUICE_PEER: &str = env!("CARGO_BIN_EXE_sluice-peer");

const TOPIC: &str = "flows";
/// The broker list in the README's SQL, replaced by the test broker's address.
const README_BROKERS: &str = "'kafka-1:9092,kafka-2:9092'";

fn chdb_available() -> bool {
    oracle::tools_available(&[(
        "python3",
        &[
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('chdb') is None)",
        ],
    )])
}

/// The README's ClickHouse SQL block (the one after "ClickHouse reads the topic"), as statements.
fn readme_sql(brokers: SocketAddr) -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let from = readme
        .find("ClickHouse reads the topic")
        .expect("README's ClickHouse paragraph");
    let block = &readme[from..];
    let start = block.find("```sql\n").expect("README's SQL block") + "```sql\n".len();
    let sql = &block[start..start + block[start..].find("\n```").unwrap()];
    assert!(sql.contains(README_BROKERS), "{sql}");
    sql.replace(README_BROKERS, &format!("'{brokers}'"))
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The field names of `flowpb.FlowMessage` in `peer/proto/flow.proto`.
fn proto_fields() -> BTreeSet<String> {
    let proto =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/flow.proto"))
            .unwrap();
    proto
        .lines()
        .filter_map(|l| {
            let decl = l.trim().strip_suffix(';')?;
            let (lhs, number) = decl.split_once(" = ")?;
            number.parse::<u32>().ok()?;
            // `[repeated] TYPE NAME`; enum values are a bare `NAME`.
            let words: Vec<&str> = lhs.split_whitespace().collect();
            (words.len() >= 2).then(|| words[words.len() - 1].to_owned())
        })
        .collect()
}

/// A record with what flowgen's traffic leaves empty — repeated fields (full MPLS stack, every
/// layer kind, SRv6 segments), IPv6 next hop, MACs — and values at the top of their columns' ClickHouse types.
fn extra_record() -> FlowRecord {
    let a = |s: &str| -> IpAddr { s.parse().unwrap() };
    FlowRecord {
        flow_type: Protocol::Ipfix,
        time_received_ns: 1_800_000_001_000_000_001,
        sampler_address: Some(a("198.18.1.10")),
        time_flow_start_ns: 1_800_000_000_500_000_000,
        time_flow_end_ns: 1_800_000_000_999_999_999,
        bytes: u64::MAX,
        packets: u64::from(u32::MAX) + 1,
        src_addr: Some(a("2001:db8:1::a")),
        dst_addr: Some(a("2001:db8:1::b")),
        etype: 0x86dd,
        proto: 17,
        src_port: 65_535,
        dst_port: 1,
        in_if: u32::MAX,
        out_if: 1,
        src_mac: Mac([0xff; 6]),
        dst_mac: Mac([0x02, 0x42, 0xac, 0x11, 0, 2]),
        src_as: u32::MAX,
        next_hop: Some(a("2001:db8:1::fe")),
        bgp_next_hop: Some(a("198.18.0.254")),
        bgp_communities: [u32::MAX, (65_000 << 16) | 100, 1].into_iter().collect(),
        as_path: [64_512, 64_513, u32::MAX].into_iter().collect(),
        mpls_label: [0xf_ffff, 1, 2, 3].into_iter().collect(),
        mpls_ttl: [64, 1, 255, 2].into_iter().collect(),
        mpls_ip: [a("2001:db8:2::1"), a("198.18.0.9")].into_iter().collect(),
        layer_stack: Layer::ALL.into_iter().collect(),
        layer_size: [14, 4, 8, 40, 56, 8, 20, 8, 8, 8, 4, 2048]
            .into_iter()
            .collect(),
        ipv6_routing_header_addresses: [a("2001:db8:5::1"), a("2001:db8:5::2")]
            .into_iter()
            .collect(),
        ipv6_routing_header_seg_left: 255,
        ..FlowRecord::default()
    }
}

/// Produces `r` to the topic as the peer would: one length-delimited `FlowMessage`.
fn produce(brokers: SocketAddr, r: &FlowRecord) {
    let mut batch = EncodedBatch::with_capacity(Format::Pb, 1);
    batch.push_record(r);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers.to_string())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to(TOPIC)
                .key("198.18.1.10")
                .payload(batch.text(0..1)),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// A record's JSON in the canonical form `Value::to_string` gives (sorted keys).
fn json_of(r: &FlowRecord) -> String {
    serde_json::to_value(r).unwrap().to_string()
}

fn addr_text(a: Option<IpAddr>) -> String {
    a.map_or_else(String::new, |a| a.to_string())
}

/// A row of the README's `flows` table as the test reads it back (times in ns).
fn flows_row(r: &FlowRecord) -> String {
    json!({
        "time_received": r.time_received_ns,
        "time_flow_start": r.time_flow_start_ns,
        "time_flow_end": r.time_flow_end_ns,
        "sampler_address": addr_text(r.sampler_address),
        "src_addr": addr_text(r.src_addr),
        "dst_addr": addr_text(r.dst_addr),
        "etype": r.etype,
        "proto": r.proto,
        "src_port": r.src_port,
        "dst_port": r.dst_port,
        "in_if": r.in_if,
        "out_if": r.out_if,
        "bytes": r.bytes,
        "packets": r.packets,
        "sampling_rate": r.sampling_rate,
    })
    .to_string()
}

const FLOWS_QUERY: &str = "SELECT toUnixTimestamp64Nano(time_received) AS time_received, \
     toUnixTimestamp64Nano(time_flow_start) AS time_flow_start, \
     toUnixTimestamp64Nano(time_flow_end) AS time_flow_end, sampler_address, src_addr, dst_addr, \
     etype, proto, src_port, dst_port, in_if, out_if, bytes, packets, sampling_rate FROM flows \
     SETTINGS output_format_json_quote_64bit_integers = 0";

/// Runs `data/chdb_run.py` with the README's SQL plus a test-only copy of every queue column
/// (`flows_all`), waits for `want` rows in both tables, and writes the dumps into `dir`.
fn run_clickhouse(dir: &Path, brokers: SocketAddr, want: usize) {
    let schemas = dir.join("format_schemas");
    std::fs::create_dir_all(&schemas).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/flow.proto"),
        schemas.join("flow.proto"),
    )
    .unwrap();
    let mut setup = readme_sql(brokers);
    setup.extend(
        [
            "CREATE TABLE flows_all AS flows_queue ENGINE = MergeTree ORDER BY tuple()",
            "CREATE MATERIALIZED VIEW flows_all_mv TO flows_all AS SELECT * FROM flows_queue",
        ]
        .map(str::to_owned),
    );
    let path = |f: &str| dir.join(f).display().to_string();
    let job = json!({
        "db": path("chdb"),
        "schemas": schemas.display().to_string(),
        "setup": setup,
        "wait": {
            "query": "SELECT least((SELECT count() FROM flows), (SELECT count() FROM flows_all))",
            "want": want,
            "timeout_s": 40,
            // Long enough for a redelivered batch to show up as an extra row.
            "settle_s": 2,
        },
        "dumps": [
            {
                "query": "SELECT * FROM flows_all SETTINGS format_schema = 'flow.proto:FlowMessage'",
                "format": "Protobuf",
                "path": path("all.pb"),
            },
            {"query": FLOWS_QUERY, "format": "JSONEachRow", "path": path("flows.jsonl")},
            {
                "query": "SELECT name FROM system.columns WHERE database = currentDatabase() \
                          AND table = 'flows_queue'",
                "format": "TSV",
                "path": path("columns.tsv"),
            },
            {"query": "SELECT version()", "format": "TSV", "path": path("version.tsv")},
        ],
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/chdb_run.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chdb_run.py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readme_clickhouse_tables_consume_the_pb_topic_once_equal_to_json() {
    if !tansu_available() || !chdb_available() {
        return;
    }
    let tansu = Tansu::start(None);
    tansu.create_topic(TOPIC, 3);
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("peer.jsonl");
    let config = dir.path().join("peer.toml");
    std::fs::write(
        &config,
        format!(
            "[[outputs]]\ntype = \"file\"\npath = \"{}\"\n\n\
             [[outputs]]\ntype = \"kafka\"\nbrokers = [\"{}\"]\ntopic = \"{TOPIC}\"\n\
             format = \"pb\"\n",
            json_path.display(),
            tansu.addr
        ),
    )
    .unwrap();
    let (v4, v6) = ("127.0.0.1:0", "[::1]:0");
    let config = config.to_str().unwrap();
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &["--config", config, "--listen", v4, "--listen", v6],
    );
    let mut exporters = [
        Exporter::new("127.0.0.2".parse().unwrap(), Protocol::NetflowV9, 61),
        Exporter::new("127.0.0.3".parse().unwrap(), Protocol::Ipfix, 62),
        Exporter::new("127.0.0.4".parse().unwrap(), Protocol::Sflow5, 63),
        Exporter::new("::1".parse().unwrap(), Protocol::Ipfix, 64),
    ];
    // The peer listens on 127.0.0.1 first, then on [::1].
    for (e, to) in exporters.iter_mut().zip([0, 0, 0, 1]) {
        e.send(peer.listen[to], 15, 10);
    }
    let sent: usize = exporters.iter().map(|e| e.sent.len()).sum();
    peer.wait_metric("sluice_peer_flows_total", sent as f64);
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"1-kafka\"}",
        sent as f64,
    );
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");
    let extra = extra_record();
    produce(tansu.addr, &extra);

    let mut want: Vec<FlowRecord> = read_jsonl(&json_path)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
    assert_eq!(want.len(), sent);
    want.push(extra);
    // The topic is full before ClickHouse starts: it reads it from the beginning.
    run_clickhouse(dir.path(), tansu.addr, want.len());
    let version = std::fs::read_to_string(dir.path().join("version.tsv")).unwrap();
    eprintln!("ClickHouse {}", version.trim());

    // The queue table has a column for every field of flow.proto.
    let columns: BTreeSet<String> = std::fs::read_to_string(dir.path().join("columns.tsv"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let fields = proto_fields();
    assert!(
        columns == fields,
        "README's flows_queue lacks {:?} and has {:?} that flow.proto lacks",
        fields.difference(&columns).collect::<Vec<_>>(),
        columns.difference(&fields).collect::<Vec<_>>()
    );

    // Every field of every record, once: ClickHouse's rows re-encoded as FlowMessage.
    let mut pb = &std::fs::read(dir.path().join("all.pb")).unwrap()[..];
    let mut all = Vec::new();
    while !pb.is_empty() {
        let m = FlowMessage::decode_length_delimited(&mut pb).unwrap();
        all.push(FlowRecord::try_from(&m).unwrap());
    }
    assert_eq!(all.len(), want.len(), "rows in flows_all");
    let want_json = multiset(want.iter().map(json_of));
    assert!(
        multiset(all.iter().map(json_of)) == want_json,
        "ClickHouse's rows differ from the peer's JSON"
    );

    // The README's own table: addresses as text, times, ports, protocol, counters, interfaces.
    let flows = read_jsonl(&dir.path().join("flows.jsonl"));
    assert_eq!(flows.len(), want.len(), "rows in flows");
    let got = multiset(flows.iter().map(Value::to_string));
    assert!(
        got == multiset(want.iter().map(flows_row)),
        "README's flows table differs from the peer's JSON; first row: {}",
        flows[0]
    );
    // What was compared covers both address families and every exporter.
    let exporters_seen: BTreeSet<String> = flows
        .iter()
        .map(|r| r["sampler_address"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        exporters_seen.into_iter().collect::<Vec<_>>(),
        ["127.0.0.2", "127.0.0.3", "127.0.0.4", "198.18.1.10", "::1"]
    );
}
