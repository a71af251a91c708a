//! End to end: the real `sluice-peer` binary on loopback, fed by the flowgen encoders.
// Helpers outside `#[test]` functions are test code too: a panic is the failure report.
#![expect(clippy::unwrap_used, reason = "test helpers panic on failure")]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;

use serde_json::Value;
use sluice_peer::flowgen::Protocol;
use sluice_peer::testing::{
    Exporter, PeerProcess, TIMEOUT, free_tcp_port, key_of_json, key_of_record, multiset,
    read_jsonl, run_to_exit,
};

const SLUICE_PEER: &str = env!("CARGO_BIN_EXE_sluice-peer");

#[test]
fn every_protocol_from_many_exporters_reaches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let output = format!("file:{}", path.display());
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &[
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--shards",
            "2",
            "--output",
            &output,
        ],
    );
    let mut exporters = Exporter::every_protocol(1);
    for e in &mut exporters {
        let to = e.same_family(&peer.listen);
        let flows = if e.encoder.protocol() == Protocol::Sflow5 {
            5
        } else {
            30
        };
        e.send(to, 40, flows);
    }
    let expected: usize = exporters.iter().map(|e| e.sent.len()).sum();
    peer.wait_metric("sluice_peer_flows_total", expected as f64);
    peer.wait_metric("sluice_peer_input_datagrams_total", 200.0);
    assert_eq!(
        peer.metric("sluice_peer_drops_total{reason=\"queue_full\"}"),
        0.0
    );
    // Decoder counters are published by the shards about once a second.
    peer.wait_metric(
        "sluice_peer_decoded_datagrams_total{protocol=\"NETFLOW_V5\"}",
        40.0,
    );
    assert_eq!(
        peer.metric("sluice_peer_decode_errors_total{kind=\"truncated\"}"),
        0.0
    );
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"0-file\"}",
        expected as f64,
    );

    assert_eq!(
        peer.metric("sluice_peer_output_latency_seconds_count{output=\"0-file\"}"),
        expected as f64
    );
    let (status, log) = peer.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("stopped"), "{log}");

    let lines = read_jsonl(&path);
    assert_eq!(lines.len(), expected);
    for e in &exporters {
        let exporter = e.addr().to_string();
        let from_exporter: Vec<&Value> = lines
            .iter()
            .filter(|v| v["sampler_address"] == exporter.as_str())
            .collect();
        assert_eq!(from_exporter.len(), e.sent.len(), "records from {exporter}");
        assert!(
            from_exporter
                .iter()
                .all(|v| v["type"] == e.encoder.protocol().as_str())
        );
        if e.encoder.protocol() != Protocol::Sflow5 {
            // sFlow reports sampled packets, not flows; the rest must match field for field.
            assert_eq!(
                multiset(from_exporter.iter().map(|v| key_of_json(v))),
                multiset(e.sent.iter().map(key_of_record)),
                "contents from {exporter}"
            );
        }
    }
}

/// Reads octet-counted RFC 5424 messages until `n` arrived.
fn read_syslog_tcp(listener: &TcpListener, n: usize) -> Vec<String> {
    listener.set_nonblocking(false).unwrap();
    let (conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = BufReader::new(conn);
    let mut messages = Vec::new();
    while messages.len() < n {
        let mut len = Vec::new();
        reader.read_until(b' ', &mut len).unwrap();
        let len: usize = std::str::from_utf8(&len).unwrap().trim().parse().unwrap();
        let mut msg = vec![0; len];
        reader.read_exact(&mut msg).unwrap();
        messages.push(String::from_utf8(msg).unwrap());
    }
    messages
}

#[test]
fn syslog_down_then_up_loses_nothing_that_fits_the_buffer() {
    let server = free_tcp_port();
    let output = format!("syslog+tcp://{server}");
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &[
            "--listen",
            "127.0.0.1:0",
            "--shards",
            "2",
            "--output",
            &output,
        ],
    );
    let mut exporter = Exporter::new("127.0.0.6".parse().unwrap(), Protocol::NetflowV5, 7);
    exporter.send(peer.listen[0], 50, 30);
    peer.wait_metric("sluice_peer_flows_total", 1500.0);
    peer.wait_metric("sluice_peer_output_errors_total{output=\"0-syslog\"}", 1.0);
    assert_eq!(
        peer.metric("sluice_peer_output_up{output=\"0-syslog\"}"),
        0.0
    );
    peer.wait_metric(
        "sluice_peer_output_buffered_records{output=\"0-syslog\"}",
        1500.0,
    );

    let listener = TcpListener::bind(server).unwrap();
    let messages = read_syslog_tcp(&listener, 1500);
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"0-syslog\"}",
        1500.0,
    );
    assert_eq!(
        peer.metric("sluice_peer_output_overflow_records_total{output=\"0-syslog\"}"),
        0.0
    );
    assert_eq!(
        peer.metric("sluice_peer_output_up{output=\"0-syslog\"}"),
        1.0
    );
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("output recovered"), "{log}");

    let mut got = Vec::new();
    for m in &messages {
        assert!(m.starts_with("<134>1 "), "{m}");
        let json = &m[m.find(" flow - ").unwrap() + 8..];
        got.push(key_of_json(&serde_json::from_str(json).unwrap()));
    }
    assert_eq!(
        multiset(got.into_iter()),
        multiset(exporter.sent.iter().map(key_of_record))
    );
}

#[test]
fn overflow_beyond_the_buffer_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("peer.toml");
    let server = free_tcp_port();
    std::fs::write(
        &config,
        format!(
            "name = \"overflow\"\n[ingest]\nlisten = [\"127.0.0.1:0\"]\nsockets_per_port = 1\n\
             [pipeline]\nshards = 1\n\
             [[outputs]]\ntype = \"syslog\"\nprotocol = \"tcp\"\naddress = \"{server}\"\n\
             buffer_records = 100\n"
        ),
    )
    .unwrap();
    let peer = PeerProcess::start(SLUICE_PEER, &["--config", config.to_str().unwrap()]);
    let mut exporter = Exporter::new("127.0.0.7".parse().unwrap(), Protocol::NetflowV5, 9);
    exporter.send(peer.listen[0], 10, 30);
    let buffered_sample = "sluice_peer_output_buffered_records{output=\"0-syslog\"}";
    let overflow_sample = "sluice_peer_output_overflow_records_total{output=\"0-syslog\"}";
    peer.wait_for("every record buffered or counted", |p| {
        p.metric(buffered_sample) + p.metric(overflow_sample) >= 300.0
    });
    // The output is down: exactly the buffer's worth waits, the rest is counted.
    assert_eq!(peer.metric(buffered_sample), 100.0);
    assert_eq!(peer.metric(overflow_sample), 200.0);
    assert_eq!(peer.metric("sluice_peer_all_drops_total"), 200.0);

    // What fitted is delivered once the server is up.
    let listener = TcpListener::bind(server).unwrap();
    let messages = read_syslog_tcp(&listener, 100);
    assert_eq!(messages.len(), 100);
    peer.wait_metric(
        "sluice_peer_output_sent_records_total{output=\"0-syslog\"}",
        100.0,
    );
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("output buffer full"), "{log}");
}

#[test]
fn bad_config_names_the_key_and_help_has_an_example() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("peer.toml");
    std::fs::write(&config, "[pipeline]\nshards = 0\n").unwrap();
    let (status, _, stderr) = run_to_exit(
        SLUICE_PEER,
        &["check", "--config", config.to_str().unwrap()],
    );
    assert!(!status.success());
    assert!(stderr.contains("`pipeline.shards`"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (_, help, _) = run_to_exit(SLUICE_PEER, &["run", "--help"]);
    assert!(
        help.contains("sluice-peer run --listen 0.0.0.0:2055"),
        "{help}"
    );
}

#[test]
fn sigterm_right_after_sending_still_writes_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flows.jsonl");
    let output = format!("file:{}", path.display());
    let peer = PeerProcess::start(
        SLUICE_PEER,
        &["--listen", "127.0.0.1:0", "--output", &output],
    );
    let mut exporter = Exporter::new("127.0.0.8".parse().unwrap(), Protocol::NetflowV9, 11);
    exporter.send(peer.listen[0], 100, 30);
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");
    assert_eq!(read_jsonl(&path).len(), 3000, "{log}");
}

#[test]
fn an_output_with_fields_writes_those_fields_of_the_same_records_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let (full, picked) = (
        dir.path().join("full.jsonl"),
        dir.path().join("picked.jsonl"),
    );
    let fields = ["sampler_address", "src_addr", "dst_port", "proto", "bytes"];
    let config = dir.path().join("peer.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"fields\"\n[ingest]\nlisten = [\"127.0.0.1:0\"]\n\
             [[outputs]]\ntype = \"file\"\npath = \"{}\"\n\
             [[outputs]]\ntype = \"file\"\npath = \"{}\"\nfields = {:?}\n",
            full.display(),
            picked.display(),
            fields
        ),
    )
    .unwrap();
    let peer = PeerProcess::start(SLUICE_PEER, &["--config", config.to_str().unwrap()]);
    let mut v9 = Exporter::new("127.0.0.8".parse().unwrap(), Protocol::NetflowV9, 3);
    v9.send(peer.listen[0], 20, 30);
    let expected = v9.sent.len() as f64;
    for output in ["0-file", "1-file"] {
        peer.wait_metric(
            &format!("sluice_peer_output_sent_records_total{{output=\"{output}\"}}"),
            expected,
        );
    }
    let (status, log) = peer.stop();
    assert!(status.success(), "{log}");

    let full = read_jsonl(&full);
    let picked_text = std::fs::read_to_string(&picked).unwrap();
    let picked: Vec<&str> = picked_text.lines().collect();
    assert_eq!((full.len(), picked.len()), (v9.sent.len(), v9.sent.len()));
    // The same records in the same order (one shard batch feeds both), each line holding
    // exactly the listed fields, in the listed order, with the full line's values.
    for (whole, line) in full.iter().zip(&picked) {
        let want: Vec<String> = fields
            .iter()
            .map(|f| format!("\"{f}\":{}", whole[f]))
            .collect();
        assert_eq!(*line, format!("{{{}}}", want.join(",")));
    }
}
