//! Peer mode without a network: which template changes the decoders report, how template
//! state is packed per (exporter, observation domain), and the `[central]` keys.

use std::net::IpAddr;
use std::path::Path;

use sluice_peer::central::{decode_snapshots, to_templates};
use sluice_peer::config::{CentralOverrides, Overrides, PeerConfig};
use sluice_peer::decode::{DecoderConfig, ShardDecoder, TemplateSnapshot};
use sluice_peer::flowgen::{Encoder, EncoderConfig, FlowSynth, Protocol};

fn datagrams(protocol: Protocol, cfg: EncoderConfig, n: usize) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::new(protocol, cfg);
    let mut synth = FlowSynth::new(3, protocol);
    (0..n)
        .map(|_| {
            let now = 1_800_000_000_000_000_000;
            let flows: Vec<_> = (0..4).map(|_| synth.flow(now)).collect();
            let mut out = Vec::new();
            encoder.encode(&flows, now, &mut out);
            out
        })
        .collect()
}

#[test]
fn only_real_changes_are_reported() {
    let exporter: IpAddr = "198.18.0.9".parse().unwrap();
    let other: IpAddr = "198.18.0.10".parse().unwrap();
    let mut d = ShardDecoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    assert!(d.take_changed_templates().is_empty());

    // Templates in every datagram: learned once, refreshes change nothing.
    let cfg = EncoderConfig {
        template_every: 1,
        sampling_rate: 10,
        observation_domain_id: 4,
        ..EncoderConfig::default()
    };
    let v9 = datagrams(Protocol::NetflowV9, cfg.clone(), 3);
    d.decode(exporter, 1, &v9[0], &mut out).unwrap();
    let changed = d.take_changed_templates();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].0, exporter);
    assert_eq!(changed[0].1, d.export_templates(exporter));
    assert!(changed[0].1.iter().any(|s| matches!(
        s,
        TemplateSnapshot::Sampling {
            sampling_rate: 10,
            ..
        }
    )));
    d.decode(exporter, 2, &v9[1], &mut out).unwrap();
    assert!(
        d.take_changed_templates().is_empty(),
        "a refresh is no change"
    );

    // Another sampling rate is a change; so is a new exporter. Imports are not reported.
    let resampled = datagrams(
        Protocol::NetflowV9,
        EncoderConfig {
            sampling_rate: 20,
            ..cfg
        },
        1,
    );
    d.decode(exporter, 3, &resampled[0], &mut out).unwrap();
    let ipfix = datagrams(Protocol::Ipfix, EncoderConfig::default(), 1);
    d.decode(other, 3, &ipfix[0], &mut out).unwrap();
    let mut changed: Vec<IpAddr> = d
        .take_changed_templates()
        .into_iter()
        .map(|c| c.0)
        .collect();
    changed.sort();
    assert_eq!(changed, vec![exporter, other]);
    let snaps = d.export_templates(exporter);
    d.import_templates("198.18.0.11".parse().unwrap(), &snaps)
        .unwrap();
    assert!(d.take_changed_templates().is_empty());
}

#[test]
fn template_state_is_one_entry_per_observation_domain() {
    let exporter: IpAddr = "198.18.0.9".parse().unwrap();
    let mut d = ShardDecoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    for domain in [1, 2] {
        let cfg = EncoderConfig {
            observation_domain_id: domain,
            sampling_rate: 5,
            ..EncoderConfig::default()
        };
        d.decode(
            exporter,
            1,
            &datagrams(Protocol::Ipfix, cfg, 1)[0],
            &mut out,
        )
        .unwrap();
    }
    let snaps = d.export_templates(exporter);
    let templates = to_templates(exporter, snaps.clone());
    assert_eq!(
        templates
            .iter()
            .map(|t| t.observation_domain)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Installing every domain's bytes elsewhere reproduces the state exactly.
    let mut fresh = ShardDecoder::new(DecoderConfig::default());
    for t in &templates {
        assert_eq!(t.exporter, exporter);
        fresh
            .import_templates(exporter, &decode_snapshots(&t.bytes).unwrap())
            .unwrap();
    }
    assert_eq!(fresh.export_templates(exporter), snaps);
}

fn check(central: &str) -> Result<PeerConfig, String> {
    let text =
        format!("[central]\nurl = \"https://198.18.0.1:8443\"\ntoken_file = \"/t\"\n{central}");
    let cfg =
        PeerConfig::from_toml(&text, Path::new("peer.toml")).map_err(|e| format!("{e}: {e:?}"))?;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

#[test]
fn central_keys_are_validated_by_name() {
    let fp = format!("sha256:{}", "ab".repeat(32));
    let cfg = check(&format!(
        "fingerprint = \"{fp}\"\ndata_address = \"198.18.2.2\"\nweight = 4\npool = \"edge\""
    ))
    .unwrap();
    let central = cfg.central.unwrap();
    assert_eq!(central.fingerprint.as_deref(), Some(fp.as_str()));
    assert_eq!(central.data_address, Some("198.18.2.2".parse().unwrap()));
    assert_eq!((central.weight, central.pool.as_deref()), (4, Some("edge")));
    let central = check("ca_cert = \"/etc/sluice/central.pem\"")
        .unwrap()
        .central
        .unwrap();
    assert_eq!(
        (central.weight, central.pool, central.data_address),
        (1, None, None)
    );

    for (text, key) in [
        ("", "`central.ca_cert`"),
        (
            &*format!("ca_cert = \"/c.pem\"\nfingerprint = \"{fp}\""),
            "`central.fingerprint`",
        ),
        ("fingerprint = \"sha256:abc\"", "`central.fingerprint`"),
        (
            &*format!("fingerprint = \"{fp}\"\ndata_address = \"0.0.0.0\""),
            "`central.data_address`",
        ),
        (
            &*format!("fingerprint = \"{fp}\"\nweight = 0"),
            "`central.weight`",
        ),
        (
            &*format!("fingerprint = \"{fp}\"\npool = \" \""),
            "`central.pool`",
        ),
        (
            &*format!("fingerprint = \"{fp}\"\nfingerprints = \"x\""),
            "fingerprints",
        ),
    ] {
        let err = check(text).unwrap_err();
        assert!(err.contains(key), "{text:?}: {err}");
    }
}

#[test]
fn flags_create_or_amend_the_central_section() {
    let fp = format!("sha256:{}", "cd".repeat(32));
    let flags = || CentralOverrides {
        url: Some("https://198.18.0.1:8443".into()),
        token_file: Some("/etc/sluice/token".into()),
        fingerprint: Some(fp.clone()),
        ..CentralOverrides::default()
    };
    let mut cfg = PeerConfig::default();
    cfg.apply(Overrides {
        central: flags(),
        ..Overrides::default()
    });
    cfg.validate().unwrap();
    let central = cfg.central.unwrap();
    assert_eq!(central.url, "https://198.18.0.1:8443");
    assert_eq!(central.fingerprint.as_deref(), Some(fp.as_str()));

    // A pin flag replaces the file's pin; other keys stay.
    let mut cfg = check("ca_cert = \"/c.pem\"\nweight = 2").unwrap();
    cfg.apply(Overrides {
        central: CentralOverrides {
            fingerprint: Some(fp.clone()),
            ..CentralOverrides::default()
        },
        ..Overrides::default()
    });
    cfg.validate().unwrap();
    let central = cfg.central.unwrap();
    assert_eq!((central.ca_cert, central.weight), (None, 2));

    // --central without a token file names what is missing.
    let mut cfg = PeerConfig::default();
    cfg.apply(Overrides {
        central: CentralOverrides {
            token_file: None,
            ..flags()
        },
        ..Overrides::default()
    });
    let err = cfg.validate().unwrap_err().to_string();
    assert!(
        err.contains("`central.token_file`") && err.contains("--token-file"),
        "{err}"
    );
    // No peer-mode flag: standalone stays standalone.
    let mut cfg = PeerConfig::default();
    cfg.apply(Overrides::default());
    assert!(cfg.central.is_none());
}

#[test]
fn data_held_before_an_import_is_released_by_it() {
    let exporter: IpAddr = "198.18.0.9".parse().unwrap();
    let cfg = EncoderConfig {
        template_every: 0,
        ..EncoderConfig::default()
    };
    let v9 = datagrams(Protocol::NetflowV9, cfg, 2);
    let mut learned = ShardDecoder::new(DecoderConfig::default());
    learned
        .decode(exporter, 1, &v9[0], &mut Vec::new())
        .unwrap();

    let mut d = ShardDecoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    assert_eq!(d.release_held(exporter, &mut out), 0);
    let outcome = d.decode(exporter, 2, &v9[1], &mut out).unwrap();
    assert!(outcome.held_sets > 0 && out.is_empty(), "{outcome:?}");
    d.import_templates(exporter, &learned.export_templates(exporter))
        .unwrap();
    assert_eq!(d.release_held(exporter, &mut out), 4);
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|r| r.time_received_ns == 2));
    let stats = d.stats();
    assert_eq!(
        (stats.held, stats.held_released),
        (0, outcome.held_sets as u64)
    );
    assert_eq!(stats.records.netflow_v9, 4);
}

#[test]
fn the_first_heartbeat_already_carries_the_start_time() {
    let m = sluice_peer::metrics::Metrics::new();
    assert!(m.peer_metrics().start_time_unix_s > 1_600_000_000);
}
