//! Cost per packet of the XDP program from BPF_PROG_TEST_RUN, next to a program that only
//! returns `XDP_PASS` (the harness cost).
//!
//! The kernel runs the program `repeat` times on one buffer, and each run sees the previous
//! run's output: the destination rewritten to the peer and the TTL one lower. So every peer
//! address is also a listener (a rewritten packet takes the same path again), frames start with
//! TTL/hop limit 255 and run in chunks of [`REPEAT`] (well before the TTL runs out), and after
//! every chunk the return value and the exit counters must show that all repetitions took the
//! measured path.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use sluice_central::{controller::dataplane::DataPlane, loader::BASELINE_OBJECT};
use sluice_common::Reason;

use crate::{
    bench::netflow::v9_datagrams,
    fixture::{
        LISTENER4, LISTENER6, PEER_A, PEER_B, PEER_C6, PEER_PORT, PINNED4, PINNED6, XDP_PASS,
        XDP_REDIRECT, XDP_TX, XdpLab,
    },
    netns::ifindex,
    packet::Frame,
};

/// Repetitions per BPF_PROG_TEST_RUN call (TTL 255 leaves room for 254).
pub const REPEAT: u32 = 200;
/// Repetitions per case in total.
pub const REPETITIONS: u64 = 1_000_000;
/// Every frame, whatever its headers, is this long.
pub const FRAME_LEN: usize = 1400;

/// One measured case.
pub struct CaseResult {
    /// What was measured.
    pub name: &'static str,
    /// The action every repetition returned.
    pub action: &'static str,
    /// Kernel-measured ns per repetition, averaged over all chunks (weighted by repeat).
    pub ns: f64,
    /// Repetitions run.
    pub repetitions: u64,
    /// True for the empty program.
    pub baseline: bool,
}

/// Everything `bench xdp` prints about BPF_PROG_TEST_RUN.
pub struct TestRunReport {
    /// Flow records in the untagged IPv4 frame's NetFlow v9 datagram.
    pub records: usize,
    /// Baseline first.
    pub cases: Vec<CaseResult>,
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    /// `struct xdp_md` carrying an ingress ifindex (XDP_TX path); None: loopback.
    ctx: Option<[u8; 24]>,
    action: u32,
    /// Counters each repetition must bump once; every other exit counter must stay put.
    /// Ignored for the baseline program, which has no maps.
    counts: &'static [Reason],
    baseline: bool,
}

/// Runs every case in a thread of its own (the fixture moves its thread into a private network
/// namespace, which disappears with the thread).
pub fn run(stop: &'static AtomicBool) -> Result<TestRunReport> {
    std::thread::Builder::new()
        .name("bench-test-run".into())
        .spawn(move || measure(stop))?
        .join()
        .unwrap_or_else(|panic| {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            bail!("BPF_PROG_TEST_RUN setup panicked: {msg}")
        })
}

/// A [`FRAME_LEN`]-byte frame to the listener on 2055 carrying NetFlow v9, TTL 255.
fn frame(src: IpAddr, vlans: Vec<(u16, u16)>) -> (Vec<u8>, usize) {
    let (dst, ip_len) = match src {
        IpAddr::V4(_) => (IpAddr::from(LISTENER4), 20),
        IpAddr::V6(_) => (IpAddr::from(LISTENER6), 40),
    };
    let payload = FRAME_LEN - 14 - 4 * vlans.len() - ip_len - 8;
    let datagrams = v9_datagrams(1, payload);
    let mut f = Frame::udp(src, dst, 2055, 0);
    f.vlans = vlans;
    f.ttl = 255;
    f.payload = datagrams.data;
    let bytes = f.build();
    assert_eq!(bytes.len(), FRAME_LEN);
    (bytes, datagrams.records)
}

fn action_name(action: u32) -> &'static str {
    match action {
        XDP_PASS => "pass",
        XDP_TX => "tx",
        XDP_REDIRECT => "redirect",
        _ => "other",
    }
}

fn measure(stop: &AtomicBool) -> Result<TestRunReport> {
    let mut lab = XdpLab::new("bench");
    // A rewritten packet is addressed to its peer: make that a listener of the same pool, so
    // the next repetition takes the same path.
    for (peer, pool) in [
        (IpAddr::from(PEER_A), 0),
        (PEER_B.into(), 0),
        (PEER_C6.into(), 1),
    ] {
        lab.loaded
            .maps
            .set_listener(SocketAddr::new(peer, PEER_PORT), pool)?;
    }
    let mut baseline = aya::Ebpf::load(BASELINE_OBJECT).context("load the baseline object")?;
    let empty: &mut Xdp = baseline
        .program_mut("sluice_baseline")
        .context("no program sluice_baseline in the baseline object")?
        .try_into()?;
    empty.load().context("load sluice_baseline")?;
    // BPF_PROG_TEST_RUN with repeat > 1 puts the program into the kernel's XDP dispatcher for
    // the call and takes it out after, each time waiting for an RCU grace period (~10-25 ms on
    // a quiet machine: minutes for thousands of calls). A program attached in driver mode stays
    // in the dispatcher, so the calls skip that. The veths stay down (no traffic reaches the
    // programs, so the counter checks below stay exact); timing is unaffected, as the
    // dispatcher holds the program during every timed call either way.
    crate::run("ip link add bq0 type veth peer name bq1");
    empty
        .attach("bq1", XdpMode::Driver)
        .context("attach sluice_baseline to an idle veth")?;
    lab.loaded
        .program()?
        .attach("bq0", XdpMode::Driver)
        .context("attach sluice_xdp to an idle veth")?;

    let (v4, records) = frame(PINNED4.into(), Vec::new());
    // Arriving on fx0, where the route to peer a leaves: XDP_TX, which keeps the tag (a
    // redirect to another interface strips it, and later repetitions would be untagged).
    let mut tx_ctx = [0u8; 24]; // data, data_end, data_meta, ingress_ifindex, rx_queue, egress
    tx_ctx[4..8].copy_from_slice(&(FRAME_LEN as u32).to_ne_bytes());
    tx_ctx[12..16].copy_from_slice(&ifindex("fx0").to_ne_bytes());
    let cases = [
        Case {
            name: "empty program (returns XDP_PASS)",
            frame: v4.clone(),
            ctx: None,
            action: XDP_PASS,
            counts: &[],
            baseline: true,
        },
        Case {
            name: "pinned IPv4 exporter",
            frame: v4,
            ctx: None,
            action: XDP_REDIRECT,
            counts: &[Reason::Redirect],
            baseline: false,
        },
        Case {
            name: "pinned IPv6 exporter",
            frame: frame(PINNED6.into(), Vec::new()).0,
            ctx: None,
            action: XDP_REDIRECT,
            counts: &[Reason::Redirect],
            baseline: false,
        },
        Case {
            name: "pinned IPv4, 802.1Q tag (XDP_TX)",
            frame: frame(PINNED4.into(), vec![(0x8100, 100)]).0,
            ctx: Some(tx_ctx),
            action: XDP_TX,
            counts: &[Reason::Tx],
            baseline: false,
        },
        Case {
            name: "unknown exporter (pool table)",
            frame: frame(Ipv4Addr::new(198, 18, 1, 77).into(), Vec::new()).0,
            ctx: None,
            action: XDP_REDIRECT,
            counts: &[Reason::Redirect, Reason::HashPlaced],
            baseline: false,
        },
    ];

    // Chunks of all cases interleave, so load from other work on the machine falls on every
    // case alike.
    let mut weighted_ns = vec![0u128; cases.len()];
    let mut repetitions = 0u64;
    while repetitions < REPETITIONS {
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        for (case, total) in cases.iter().zip(&mut weighted_ns) {
            let opts = TestRunOptions {
                data_in: Some(&case.frame),
                ctx_in: case.ctx.as_ref().map(|c| &c[..]),
                repeat: REPEAT,
                ..Default::default()
            };
            let r = if case.baseline {
                empty.test_run(opts)?
            } else {
                let before = lab.counters();
                let r = lab.loaded.program()?.test_run(opts)?;
                check_counters(case, &before, &lab.counters())?;
                r
            };
            ensure!(
                r.return_value == case.action,
                "{}: returned {} instead of {}",
                case.name,
                r.return_value,
                action_name(case.action)
            );
            *total += r.duration.as_nanos() * u128::from(REPEAT);
        }
        repetitions += u64::from(REPEAT);
    }
    let cases = cases
        .iter()
        .zip(weighted_ns)
        .map(|(c, ns)| CaseResult {
            name: c.name,
            action: action_name(c.action),
            ns: ns as f64 / repetitions as f64,
            repetitions,
            baseline: c.baseline,
        })
        .collect();
    Ok(TestRunReport { records, cases })
}

/// Every repetition of the chunk must have bumped `case.counts` and no other exit counter (the
/// ring-buffer event counters are side effects and may move).
fn check_counters(case: &Case, before: &[u64], after: &[u64]) -> Result<()> {
    for ((reason, b), a) in Reason::ALL.iter().zip(before).zip(after) {
        if matches!(reason, Reason::EventSent | Reason::EventSuppressed) {
            continue;
        }
        let want = if case.counts.contains(reason) {
            u64::from(REPEAT)
        } else {
            0
        };
        ensure!(
            a - b == want,
            "{}: counter {} moved by {} in a chunk of {REPEAT} (want {want}): not every repetition took the measured path",
            case.name,
            reason.label(),
            a - b
        );
    }
    Ok(())
}
