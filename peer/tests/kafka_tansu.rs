//! `type = "kafka"` against a real Kafka-protocol broker: tansu (crates.io, installed by
//! `cargo xtask setup`) on loopback with in-memory storage, started and stopped by each test.
//! The real `sluice-peer` is fed by flowgen exporters, or by softflowd exporting a pcap in a
//! network namespace of the test's own; records are consumed back with a consumer group.
//!
//! Needs `tansu` on PATH (and softflowd and root for the softflowd test): without them the tests
//! fail when `CI=true` and print a skip otherwise.
#![cfg(feature = "kafka")]
#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]

#[path = "data/oracle_support.rs"]
#[allow(dead_code, reason = "each oracle test uses part of the support module")]
mod oracle;
#[path = "data/softflowd_support.rs"]
mod softflowd;
#[path = "data/tansu_support.rs"]
mod tansu;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use sluice_peer::flowgen::Protocol;
use sluice_peer::record::FlowRecord;
use sluice_peer::record::pb::FlowMessage;
use sluice_peer::testing::{
    Exporter, PeerProcess, free_tcp_port, multiset, read_jsonl, wait_until,
};

use softflowd::{EXPORTS, Softflowd, softflowd_available, traffic};
use tansu::{Tansu, tansu_available};

const SLUICE_PEER: &str = env!("CARGO_BIN_EXE_sluice-peer");

/// One consumed Kafka message.
struct Consumed {
    key: Option<String>,
    partition: i32,
    record: FlowRecord,
}

/// Consumes `topic` from the start with a consumer group until `want` messages arrived (tansu's
/// reported offsets can lag, so count instead of trusting watermarks), then a little longer to
/// catch extras.
fn consume(brokers: SocketAddr, topic: &str, want: usize) -> Vec<Consumed> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers.to_string())
        .set("group.id", format!("sluice-test-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut extra_until = None;
    loop {
        let now = Instant::now();
        if extra_until.is_some_and(|t| now >= t) {
            break;
        }
        assert!(
            now < deadline,
            "consumed {} of {want} messages from {topic}",
            out.len()
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.unwrap();
        let mut payload = msg.payload().unwrap();
        let m = FlowMessage::decode_length_delimited(&mut payload).unwrap();
        assert!(
            payload.is_empty(),
            "one length-delimited message per Kafka message"
        );
        out.push(Consumed {
            key: msg.key().map(|k| String::from_utf8(k.to_vec()).unwrap()),
            partition: msg.partition(),
            record: FlowRecord::try_from(&m).unwrap(),
        });
        if out.len() >= want && extra_until.is_none() {
            extra_until = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    out
}

/// A config file with two outputs: JSON lines to `json_path`, and Kafka topic `flows` on
/// `broker` with `kafka_extra` (one line of the kafka table).
fn file_and_kafka(dir: &Path, json_path: &Path, broker: SocketAddr, kafka_extra: &str) -> String {
    write_config(
        dir,
        &format!(
            "[[outputs]]\ntype = \"file\"\npath = \"{}\"\n\n\
             [[outputs]]\ntype = \"kafka\"\nbrokers = [\"{broker}\"]\ntopic = \"flows\"\n\
             {kafka_extra}\n",
            json_path.display(),
        ),
    )
}

/// A record's JSON in the canonical form `Value::to_string` gives (sorted keys).
fn json_of(r: &FlowRecord) -> String {
    serde_json::to_value(r).unwrap().to_string()
}

fn write_config(dir: &Path, outputs: &str) -> String {
    let path = dir.join("peer.toml");
    std::fs::write(&path, outputs).unwrap();
    path.to_str().unwrap().to_owned()
}

fn output_metric(peer: &PeerProcess, family: &str, output: &str) -> f64 {
    peer.metric(&format!(
        "sluice_peer_output_{family}{{output=\"{output}\"}}"
    ))
}

#[test]
fn flowgen_through_kafka_is_consumed_once_keyed_by_exporter_equal_to_json() {
    if !tansu_available() {
        return;
    }
    let tansu = Tansu::start(None);
    tansu.create_topic("flows", 3);
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("flows.jsonl");
    let config = file_and_kafka(dir.path(), &json_path, tansu.addr, "compression = \"zstd\"");
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &["--config", &config, "--listen", "127.0.0.1:0"],
    );
    let mut exporters = vec![
        Exporter::new("127.0.0.2".parse().unwrap(), Protocol::NetflowV9, 31),
        Exporter::new("127.0.0.3".parse().unwrap(), Protocol::Ipfix, 32),
        Exporter::new("127.0.0.4".parse().unwrap(), Protocol::Sflow5, 33),
        Exporter::new("127.0.0.5".parse().unwrap(), Protocol::NetflowV5, 34),
    ];
    for e in &mut exporters {
        e.send(peer.listen[0], 20, 10);
    }
    let expected: usize = exporters.iter().map(|e| e.sent.len()).sum();
    peer.wait_metric("sluice_peer_flows_total", expected as f64);
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"1-kafka\"}",
        expected as f64,
    );
    assert_eq!(output_metric(&peer, "in_flight_records", "1-kafka"), 0.0);
    assert_eq!(output_metric(&peer, "failed_records_total", "1-kafka"), 0.0);
    let consumed = consume(tansu.addr, "flows", expected);
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");

    // Every record once, equal to the JSON output of the same records.
    let json: Vec<Value> = read_jsonl(&json_path);
    assert_eq!(json.len(), expected);
    let want = multiset(json.iter().map(Value::to_string));
    let got = multiset(consumed.iter().map(|c| json_of(&c.record)));
    assert_eq!(consumed.len(), expected, "consumed messages");
    assert!(got == want, "Kafka records differ from the JSON output");
    // Keyed by exporter; each exporter on one partition.
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for c in &consumed {
        let exporter = c.record.sampler_address.unwrap().to_string();
        assert_eq!(c.key.as_deref(), Some(exporter.as_str()));
        partitions.entry(exporter).or_default().insert(c.partition);
    }
    assert_eq!(partitions.len(), exporters.len());
    for (exporter, parts) in &partitions {
        assert_eq!(
            parts.len(),
            1,
            "{exporter} spread over partitions {parts:?}"
        );
    }
}

/// Runs `test` on a thread of its own moved into a fresh network namespace, with loopback up
/// and `addrs` on it: what the test starts (broker, peer, exporters) and connects to lives
/// there, and the namespace goes with the thread. Needs root: without it the test fails when
/// `CI=true` and prints a skip otherwise.
fn in_own_netns(addrs: &'static [&str], test: impl FnOnce() + Send + 'static) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "needs root for a network namespace"
        );
        eprintln!("SKIPPED: needs root for a network namespace");
        return;
    }
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) changes only the calling thread's namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let lo = ["link set lo up".to_owned()]
            .into_iter()
            .chain(addrs.iter().map(|a| format!("addr add {a} dev lo")));
        for args in lo {
            let out = std::process::Command::new("ip")
                .args(args.split(' '))
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args}: {out:?}");
        }
        test();
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
}

/// Equal field by field (a record's JSON objects, `ctx` names it in the failure).
fn assert_same_fields(ctx: &str, got: &Value, want: &Value) {
    let (Value::Object(got), Value::Object(want)) = (got, want) else {
        panic!("{ctx}: not JSON objects: {got} {want}");
    };
    assert_eq!(
        got.keys().collect::<BTreeSet<_>>(),
        want.keys().collect::<BTreeSet<_>>(),
        "{ctx}: fields"
    );
    for (field, w) in want {
        assert_eq!(&got[field], w, "{ctx}: field {field}");
    }
}

#[test]
fn softflowd_through_kafka_is_consumed_once_keyed_by_exporter_equal_to_json() {
    if !tansu_available() || !softflowd_available() {
        return;
    }
    // One exporter per version: (softflowd -v, address, protocol label of the decode metrics).
    // A datagram to a local address leaves from that address, so each softflowd's source
    // address, the exporter, is the address it sends to.
    const EXPORTERS: [(&str, &str, &str); 2] = [
        ("9", "198.18.1.1", "NETFLOW_V9"),
        ("10", "198.18.2.1", "IPFIX"),
    ];
    in_own_netns(&["198.18.1.1/32", "198.18.2.1/32"], || {
        let tansu = Tansu::start(None);
        tansu.create_topic("flows", 3);
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join("traffic.pcap");
        oracle::write_pcap(&pcap, &traffic());
        let json_path = dir.path().join("flows.jsonl");
        let config = file_and_kafka(dir.path(), &json_path, tansu.addr, "format = \"pb\"");
        // Every address of the namespace: the exporters send to theirs.
        let peer = PeerProcess::start(SLUICE_PEER, &["--config", &config, "--listen", "0.0.0.0:0"]);
        let port = peer.listen[0].port();
        let mut exporters: Vec<Softflowd> = EXPORTERS
            .iter()
            .map(|(version, addr, _)| {
                let to = SocketAddr::new(addr.parse().unwrap(), port);
                Softflowd::start(&pcap, to, version)
            })
            .collect();
        wait_until(
            "softflowd read its pcap to the end",
            || peer.log(),
            || exporters.iter_mut().all(Softflowd::exited),
        );
        let exported = |version: &str| {
            let (_, packets, bytes, flows) =
                EXPORTS.into_iter().find(|(v, ..)| *v == version).unwrap();
            (packets, bytes, flows)
        };
        let expected: usize = EXPORTERS.iter().map(|(v, ..)| exported(v).2).sum();

        // Every record decoded (the per-protocol counts may follow the total) and acknowledged
        // by the broker, none failed or lost.
        let decoded = |p: &PeerProcess, protocol: &str| {
            p.metric(&format!(
                "sluice_peer_decoded_records_total{{protocol=\"{protocol}\"}}"
            ))
        };
        peer.wait_for("every record decoded", |p| {
            EXPORTERS
                .iter()
                .all(|(version, _, protocol)| decoded(p, protocol) >= exported(version).2 as f64)
        });
        for (version, _, protocol) in EXPORTERS {
            assert_eq!(
                decoded(&peer, protocol),
                exported(version).2 as f64,
                "{protocol} records decoded"
            );
        }
        let out = "1-kafka";
        peer.wait_for("the Kafka output accounted for every record", |p| {
            let m = |f| output_metric(p, f, out);
            m("sent_records_total") + m("failed_records_total") + m("overflow_records_total")
                == p.metric("sluice_peer_flows_total")
                && m("in_flight_records") == 0.0
                && m("buffered_records") == 0.0
        });
        assert_eq!(peer.metric("sluice_peer_flows_total"), expected as f64);
        for (family, want) in [
            ("sent_records_total", expected as f64),
            ("failed_records_total", 0.0),
            ("overflow_records_total", 0.0),
        ] {
            assert_eq!(output_metric(&peer, family, out), want, "{out} {family}");
        }
        peer.wait_metric(
            "sluice_peer_output_sent_records_total{output=\"0-file\"}",
            expected as f64,
        );
        let consumed = consume(tansu.addr, "flows", expected);
        let (status, log) = peer.stop();
        assert!(status.success(), "{log}");

        // Every record once: as many as in the JSON output, no two alike.
        let json: Vec<Value> = read_jsonl(&json_path);
        assert_eq!(json.len(), expected, "JSON records");
        assert_eq!(consumed.len(), expected, "consumed messages");
        let once = multiset(consumed.iter().map(|c| json_of(&c.record)));
        assert_eq!(once.len(), expected, "duplicate messages");
        // Keyed by exporter: the key is the record's exporter.
        for c in &consumed {
            let exporter = c.record.sampler_address.unwrap().to_string();
            assert_eq!(c.key.as_deref(), Some(exporter.as_str()), "message key");
        }
        for (version, addr, _) in EXPORTERS {
            let kafka: Vec<&Consumed> = consumed
                .iter()
                .filter(|c| c.key.as_deref() == Some(addr))
                .collect();
            let from_json: Vec<&Value> = json
                .iter()
                .filter(|v| v["sampler_address"] == addr)
                .collect();
            // What softflowd exported of the pcap, all of it.
            let records: Vec<&FlowRecord> = kafka.iter().map(|c| &c.record).collect();
            assert_eq!(
                (
                    records.iter().map(|r| r.packets).sum::<u64>(),
                    records.iter().map(|r| r.bytes).sum::<u64>(),
                    records.len(),
                ),
                exported(version),
                "-v {version} from {addr}: packets, bytes, flows"
            );
            let partitions: BTreeSet<i32> = kafka.iter().map(|c| c.partition).collect();
            assert_eq!(partitions.len(), 1, "{addr} over partitions {partitions:?}");
            // On its partition in the order of the JSON output, each record equal to its JSON.
            assert_eq!(
                records.len(),
                from_json.len(),
                "{addr}: Kafka and JSON records"
            );
            for (i, (r, j)) in records.iter().zip(&from_json).enumerate() {
                let got = serde_json::to_value(r).unwrap();
                assert_same_fields(&format!("{addr} record {i}"), &got, j);
            }
        }
    });
}

/// A TCP forwarder in front of the broker that can be cut (connections closed, new ones
/// refused) and restored: the broker keeps its state while it is unreachable.
struct Proxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(listener: TcpListener, upstream: Arc<Mutex<Option<SocketAddr>>>) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (d, c) = (down.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let target = *upstream.lock().unwrap();
                let server = match target {
                    Some(t) if !d.load(Ordering::SeqCst) => TcpStream::connect(t),
                    _ => {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                };
                let Ok(server) = server else { continue };
                let mut tracked = c.lock().unwrap();
                tracked.push(client.try_clone().unwrap());
                tracked.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, down, conns }
    }

    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

#[test]
fn broker_down_mid_stream_then_up_every_record_is_accounted_for() {
    if !tansu_available() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = Arc::new(Mutex::new(None));
    let proxy = Proxy::start(listener, upstream.clone());
    let tansu = Tansu::start(Some(proxy.addr));
    *upstream.lock().unwrap() = Some(tansu.addr);
    tansu.create_topic("outage", 2);
    let dir = tempfile::tempdir().unwrap();
    // A small buffer and librdkafka queue, so the outage overflows them.
    let config = write_config(
        dir.path(),
        &format!(
            "[[outputs]]\ntype = \"kafka\"\nbrokers = [\"{}\"]\ntopic = \"outage\"\n\
             buffer_records = 1500\nmax_in_flight_records = 1000\n\
             librdkafka = {{ \"reconnect.backoff.max.ms\" = \"200\" }}\n",
            proxy.addr
        ),
    );
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &["--config", &config, "--listen", "127.0.0.1:0"],
    );
    let out = "0-kafka";
    let mut exporter = Exporter::new("127.0.0.6".parse().unwrap(), Protocol::NetflowV9, 41);
    exporter.send(peer.listen[0], 50, 20);
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"0-kafka\"}",
        1000.0,
    );

    proxy.cut();
    exporter.send(peer.listen[0], 250, 20);
    peer.wait_metric("sluice_peer_flows_total", 6000.0);
    // Nothing can be acknowledged now: the records wait in librdkafka and the buffer, the rest
    // overflowed.
    std::thread::sleep(Duration::from_millis(500));
    let sent_while_down = output_metric(&peer, "sent_records_total", out);
    let waiting = output_metric(&peer, "in_flight_records", out)
        + output_metric(&peer, "buffered_records", out);
    let overflow = output_metric(&peer, "overflow_records_total", out);
    assert!(
        sent_while_down < 6000.0 && waiting > 0.0,
        "{}",
        peer.scrape().text
    );
    assert!(overflow > 0.0, "{}", peer.scrape().text);

    proxy.restore();
    peer.wait_for("every record sent, failed or overflowed", |p| {
        let m = |f| output_metric(p, f, out);
        m("sent_records_total") + m("overflow_records_total") + m("failed_records_total")
            == p.metric("sluice_peer_flows_total")
            && m("in_flight_records") == 0.0
            && m("buffered_records") == 0.0
    });
    let sent = output_metric(&peer, "sent_records_total", out);
    assert_eq!(output_metric(&peer, "failed_records_total", out), 0.0);
    assert_eq!(
        sent + output_metric(&peer, "overflow_records_total", out),
        6000.0
    );
    assert!(
        sent > sent_while_down,
        "records buffered during the outage were delivered"
    );
    // What counts as sent is in the topic, once each (the idempotent producer's retries
    // across the outage add no duplicates), and every one is a record that was sent.
    let consumed = consume(tansu.addr, "outage", sent as usize);
    assert_eq!(consumed.len(), sent as usize);
    let sent_json = multiset(exporter.sent.iter().map(|f| {
        format!(
            "{} {} {}",
            f.src_addr.unwrap(),
            f.dst_addr.unwrap(),
            f.packets
        )
    }));
    let got = multiset(consumed.iter().map(|c| {
        let r = &c.record;
        format!(
            "{} {} {}",
            r.src_addr.unwrap(),
            r.dst_addr.unwrap(),
            r.packets
        )
    }));
    for (k, n) in &got {
        assert!(
            sent_json.get(k).is_some_and(|m| m >= n),
            "{k} consumed {n} times"
        );
    }
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn wrong_broker_and_missing_topic_fail_clearly_while_other_outputs_work() {
    if !tansu_available() {
        return;
    }
    let tansu = Tansu::start(None);
    // Nothing listens on a port that was just free.
    let nowhere = free_tcp_port();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("flows.jsonl");
    let config = write_config(
        dir.path(),
        &format!(
            "[[outputs]]\ntype = \"file\"\npath = \"{}\"\n\n\
             [[outputs]]\ntype = \"kafka\"\nbrokers = [\"{nowhere}\"]\ntopic = \"flows\"\n\
             message_timeout_ms = 3000\n\n\
             [[outputs]]\ntype = \"kafka\"\nbrokers = [\"{}\"]\ntopic = \"missing\"\n\
             message_timeout_ms = 3000\n",
            json_path.display(),
            tansu.addr
        ),
    );
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &["--config", &config, "--listen", "127.0.0.1:0"],
    );
    let mut exporter = Exporter::new("127.0.0.7".parse().unwrap(), Protocol::Ipfix, 51);
    exporter.send(peer.listen[0], 30, 10);
    peer.wait_metric("sluice_peer_flows_total", 300.0);
    // The file output does not wait for the failing ones.
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"0-file\"}",
        300.0,
    );
    // Each failing output says why at start, and counts every record as failed.
    peer.wait_for("health check errors in the log", |p| {
        let log = p.log();
        log.contains("cannot reach the Kafka brokers") && log.contains("topic `missing`")
    });
    for out in ["1-kafka", "2-kafka"] {
        peer.wait_metric(
            &format!("sluice_peer_output_failed_records_total{{output=\"{out}\"}}"),
            300.0,
        );
        assert_eq!(output_metric(&peer, "sent_records_total", out), 0.0);
        assert_eq!(output_metric(&peer, "up", out), 0.0);
    }
    assert!(
        peer.log().contains("records not delivered"),
        "{}",
        peer.log()
    );
    // Still running and collecting.
    exporter.send(peer.listen[0], 10, 10);
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"0-file\"}",
        400.0,
    );
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");
    // librdkafka's own account of the unreachable broker reaches the log (its log lines come
    // as events on the queue the sink polls), and its client errors, one per connection
    // attempt, are rate-limited.
    let refused = format!("Connect to ipv4#{nowhere} failed: Connection refused");
    assert!(
        log.lines()
            .any(|l| l.contains("librdkafka: FAIL") && l.contains(&refused)),
        "{log}"
    );
    let client_errors = log.matches("librdkafka client error").count();
    assert!(
        (1..=4).contains(&client_errors),
        "{client_errors} client errors logged: {log}"
    );
    let mut text = String::new();
    std::fs::File::open(&json_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text.lines().count(), 400);
}
