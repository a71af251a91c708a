//! `/metrics`: Prometheus text exposition of peers, pools, exporters, XDP exit reasons,
//! rebalance and failover events, and the API's own counters (authentication failures first).

use std::sync::atomic::{AtomicU64, Ordering};

use sluice_common::prom::Exposition;
use sluice_common::protocol::{PeerMetrics, PeerStatus, PeerView};
use tracing::debug;

use super::admin;
use super::context::ApiContext;
use crate::auth::TokenKind;

type PeerGauge = (
    &'static str,
    &'static str,
    &'static str,
    fn(&PeerMetrics) -> f64,
);

/// The heartbeat metrics, one family each.
const PEER_METRICS: &[PeerGauge] = &[
    (
        "sluice_peer_cpu_load_percent",
        "gauge",
        "Host CPU load of the peer.",
        |m| m.cpu_load_pct,
    ),
    (
        "sluice_peer_memory_used_percent",
        "gauge",
        "Host memory used on the peer.",
        |m| m.mem_used_pct,
    ),
    (
        "sluice_peer_process_cpu_percent",
        "gauge",
        "CPU used by the peer process (percent of one core).",
        |m| m.process_cpu_pct,
    ),
    (
        "sluice_peer_process_memory_bytes",
        "gauge",
        "Resident memory of the peer process.",
        |m| m.process_mem_bytes as f64,
    ),
    (
        "sluice_peer_input_packets_per_second",
        "gauge",
        "Datagrams the peer receives per second.",
        |m| m.input_pps,
    ),
    (
        "sluice_peer_processing_flows_per_second",
        "gauge",
        "Flow records the peer processes per second.",
        |m| m.flows_per_s,
    ),
    (
        "sluice_peer_drops_total",
        "counter",
        "Datagrams and records the peer dropped since its start.",
        |m| m.total_drops as f64,
    ),
    (
        "sluice_peer_start_time_seconds",
        "gauge",
        "Start of the peer process (Unix time).",
        |m| m.start_time_unix_s as f64,
    ),
];

fn counter(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn render_peers(e: &mut Exposition, peers: &[PeerView], ctx: &ApiContext) {
    let connected = ctx.sessions.connected();
    e.family(
        "sluice_peer_status",
        "gauge",
        "1 for the peer's current status (ONLINE, OFFLINE, DRAINING).",
    );
    for p in peers {
        let pool = p.pool.as_deref().unwrap_or("");
        for status in PeerStatus::ALL {
            let labels = [
                ("peer", p.name.as_str()),
                ("pool", pool),
                ("status", status.as_str()),
            ];
            e.sample("sluice_peer_status", &labels, u8::from(p.status == status));
        }
    }
    e.family(
        "sluice_peer_connected",
        "gauge",
        "1 while the peer has a live control session.",
    );
    for p in peers {
        let live = connected.iter().any(|(id, _)| *id == p.id);
        e.sample(
            "sluice_peer_connected",
            &[("peer", &p.name)],
            u8::from(live),
        );
    }
    e.family(
        "sluice_peer_last_seen_seconds",
        "gauge",
        "Last heartbeat (Unix time).",
    );
    for p in peers {
        if let Some(ms) = p.last_seen_unix_ms {
            e.sample(
                "sluice_peer_last_seen_seconds",
                &[("peer", &p.name)],
                ms as f64 / 1000.0,
            );
        }
    }
    e.family(
        "sluice_peer_weight",
        "gauge",
        "Relative capacity within the pool.",
    );
    for p in peers {
        e.sample("sluice_peer_weight", &[("peer", &p.name)], p.weight);
    }
    e.family(
        "sluice_peer_exporters",
        "gauge",
        "Exporters assigned to the peer.",
    );
    for p in peers {
        e.sample("sluice_peer_exporters", &[("peer", &p.name)], p.exporters);
    }
    for (name, kind, help, get) in PEER_METRICS {
        e.family(name, kind, help);
        for p in peers {
            if let Some(m) = &p.metrics {
                e.sample(name, &[("peer", &p.name)], get(m));
            }
        }
    }
}

fn render_ha(e: &mut Exposition, ha: &sluice_common::protocol::HaStatusView) {
    e.family(
        "sluice_ha_role",
        "gauge",
        "1 for this node's hot-standby role (active or standby).",
    );
    for role in ["active", "standby"] {
        e.sample(
            "sluice_ha_role",
            &[("role", role)],
            u64::from(ha.role == role),
        );
    }
    e.single(
        "sluice_ha_epoch",
        "gauge",
        "The HA term: bumped by every takeover.",
        ha.epoch,
    );
    e.single(
        "sluice_ha_takeovers_total",
        "counter",
        "Takeovers of the active role by this node.",
        ha.takeovers,
    );
    e.single(
        "sluice_ha_takeovers_refused_total",
        "counter",
        "Takeovers held back because another host still answered for the virtual IP.",
        ha.takeovers_refused,
    );
    e.single(
        "sluice_ha_link_up",
        "gauge",
        "1 while an authenticated link to the partner is up.",
        u64::from(ha.link_up),
    );
    e.single(
        "sluice_ha_link_refused_total",
        "counter",
        "HA connections refused (wrong credential, bad message).",
        ha.link_refused,
    );
    e.single(
        "sluice_ha_mirror_lag_seconds",
        "gauge",
        "Time from sending the last state change to its application on the standby.",
        ha.mirror_lag_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
    );
}

/// Renders the whole exposition. A controller call that fails leaves its section out.
pub(super) fn render(ctx: &ApiContext) -> String {
    let mut e = Exposition::default();
    e.single(
        "sluice_central_uptime_seconds",
        "gauge",
        "Seconds since the control API started.",
        ctx.started.elapsed().as_secs(),
    );
    match admin::status(ctx) {
        Ok(status) => {
            e.single(
                "sluice_rebalances_total",
                "counter",
                "Rebalances that moved at least one exporter.",
                status.rebalances,
            );
            e.single(
                "sluice_failovers_total",
                "counter",
                "Peers declared OFFLINE whose exporters were reassigned.",
                status.failovers,
            );
            e.family(
                "sluice_pool_healthy_peers",
                "gauge",
                "Peers of the pool that can take traffic (0: its traffic is dropped).",
            );
            for pool in &status.pools {
                e.sample(
                    "sluice_pool_healthy_peers",
                    &[("pool", &pool.name)],
                    pool.healthy_peers,
                );
            }
            e.family("sluice_pool_peers", "gauge", "Peers in the pool.");
            for pool in &status.pools {
                e.sample("sluice_pool_peers", &[("pool", &pool.name)], pool.peers);
            }
        }
        Err(error) => debug!(%error, "metrics: no status"),
    }
    match ctx.control.peers() {
        Ok(peers) => render_peers(&mut e, &peers, ctx),
        Err(error) => debug!(%error, "metrics: no peers"),
    }
    match ctx.control.exporters() {
        Ok(exporters) => {
            let families = [
                (
                    "sluice_exporter_packets_per_second",
                    "Smoothed packet rate of the exporter.",
                ),
                (
                    "sluice_exporter_bits_per_second",
                    "Smoothed bit rate of the exporter.",
                ),
            ];
            for (i, (name, help)) in families.iter().enumerate() {
                e.family(name, "gauge", help);
                for x in &exporters {
                    let addr = x.address.to_string();
                    let labels = [
                        ("exporter", addr.as_str()),
                        ("pool", x.pool.as_deref().unwrap_or("")),
                        ("peer", x.peer.as_deref().unwrap_or("")),
                    ];
                    e.sample(name, &labels, if i == 0 { x.pps } else { x.bps });
                }
            }
        }
        Err(error) => debug!(%error, "metrics: no exporters"),
    }
    if let Some(counters) = &ctx.xdp_counters {
        e.family(
            "sluice_xdp_packets_total",
            "counter",
            "Packets by XDP exit reason.",
        );
        for (reason, packets) in counters() {
            e.sample("sluice_xdp_packets_total", &[("reason", reason)], packets);
        }
    }
    e.family(
        "sluice_auth_failures_total",
        "counter",
        "Failed authentications (lockout rejections included).",
    );
    for kind in [TokenKind::Peer, TokenKind::Admin] {
        e.sample(
            "sluice_auth_failures_total",
            &[("kind", kind.as_str())],
            ctx.auth.failures(kind),
        );
    }
    let stats = &ctx.stats;
    e.single(
        "sluice_auth_lockout_rejections_total",
        "counter",
        "Attempts rejected because their source was locked out.",
        ctx.auth.locked_out(),
    );
    e.single(
        "sluice_api_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out.",
        counter(&stats.handshake_failures),
    );
    e.single(
        "sluice_api_peer_sessions_total",
        "counter",
        "Peer sessions established.",
        counter(&stats.sessions_started),
    );
    e.single(
        "sluice_api_peer_session_errors_total",
        "counter",
        "Peer sessions closed for a protocol or authentication error.",
        counter(&stats.protocol_errors),
    );
    if let Some(ha) = &ctx.ha {
        render_ha(&mut e, &ha.status());
    }
    e.single(
        "sluice_api_connections_refused_total",
        "counter",
        "Connections closed because the connection limit was reached.",
        counter(&stats.connections_refused),
    );
    e.into_string()
}
