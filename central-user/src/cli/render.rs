//! Human output of `sluicectl`: aligned tables and short summaries.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_common::protocol::{
    AdminReply, BalancerSettings, ExporterView, HaStatusView, PeerView, PlanView, PoolView,
    StatusView, TokenView,
};

/// A table with left-aligned columns separated by two spaces.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = self
            .header
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let _ = write!(line, "{cell:<w$}");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// "0.4s ago", "3m12s ago", "-" when never.
fn ago(unix_ms: Option<u64>, now_ms: u64) -> String {
    let Some(t) = unix_ms else {
        return "-".into();
    };
    let ms = now_ms.saturating_sub(t);
    if ms < 10_000 {
        format!("{:.1}s ago", ms as f64 / 1000.0)
    } else {
        format!("{} ago", duration(ms / 1000))
    }
}

/// `1d02h`, `3h04m`, `5m06s`, `7s`.
pub fn duration(s: u64) -> String {
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// `YYYY-MM-DD HH:MM:SS` UTC of a Unix time (RFC 3339 with a space and no zone letter).
fn utc(unix_s: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_s);
    let rfc3339 = humantime::format_rfc3339_seconds(t).to_string();
    rfc3339.trim_end_matches('Z').replacen('T', " ", 1)
}

/// `12.3k`, `4.5M`: rates with an SI suffix.
fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.1}G", v / 1e9),
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 10.0 => format!("{v:.1}"),
        // A slow exporter is not 0 pps beside a non-zero bit rate.
        v if v > 0.0 => format!("{v:.2}"),
        _ => "0".into(),
    }
}

/// `512.0 MiB`.
fn bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

fn peers(list: &[PeerView]) -> String {
    let now = now_unix_ms();
    let mut t = Table::new(&[
        "NAME",
        "ADDRESS",
        "VERSION",
        "LAST SEEN",
        "POOL",
        "STATUS",
        "START TIME",
        "CPU %",
        "MEM %",
        "PROC CPU %",
        "PROC MEM",
        "INPUT RATE",
        "PROCESSING RATE",
        "TOTAL DROPS",
    ]);
    for p in list {
        let m = p.metrics;
        let metric = |f: &dyn Fn(&sluice_common::protocol::PeerMetrics) -> String| {
            m.as_ref().map_or_else(|| "-".to_string(), f)
        };
        t.row(vec![
            p.name.clone(),
            p.data_addr.to_string(),
            p.version.clone(),
            ago(p.last_seen_unix_ms, now),
            p.pool.clone().unwrap_or_else(|| "-".into()),
            p.status.to_string(),
            metric(&|m| utc(m.start_time_unix_s)),
            metric(&|m| format!("{:.1}", m.cpu_load_pct)),
            metric(&|m| format!("{:.1}", m.mem_used_pct)),
            metric(&|m| format!("{:.1}", m.process_cpu_pct)),
            metric(&|m| bytes(m.process_mem_bytes)),
            metric(&|m| format!("{} pps", si(m.input_pps))),
            metric(&|m| format!("{} flows/s", si(m.flows_per_s))),
            metric(&|m| m.total_drops.to_string()),
        ]);
    }
    t.render()
}

fn pools(list: &[PoolView]) -> String {
    let mut t = Table::new(&[
        "POOL",
        "ID",
        "HEALTHY",
        "EXPORTERS",
        "PEERS (WEIGHT, STATUS)",
    ]);
    for p in list {
        let members = p
            .peers
            .iter()
            .map(|m| format!("{} ({}, {})", m.peer, m.weight, m.status))
            .collect::<Vec<_>>()
            .join(", ");
        t.row(vec![
            p.name.clone(),
            p.id.to_string(),
            format!("{}/{}", p.healthy_peers(), p.peers.len()),
            p.exporters.to_string(),
            if members.is_empty() {
                "-".into()
            } else {
                members
            },
        ]);
    }
    t.render()
}

/// Listeners and source groups: what is steered (an address:port or a CIDR), and to which pool.
fn steering<'a>(what: &'static str, rows: impl Iterator<Item = (String, &'a str)>) -> String {
    let mut t = Table::new(&[what, "POOL"]);
    for (key, pool) in rows {
        t.row(vec![key, pool.into()]);
    }
    t.render()
}

fn exporters(list: &[ExporterView]) -> String {
    let now = now_unix_ms();
    let mut t = Table::new(&[
        "ADDRESS",
        "POOL",
        "PEER",
        "PPS",
        "BPS",
        "PINNED",
        "LAST SEEN",
    ]);
    for x in list {
        t.row(vec![
            x.address.to_string(),
            x.pool.clone().unwrap_or_else(|| "-".into()),
            x.peer.clone().unwrap_or_else(|| "-".into()),
            si(x.pps),
            si(x.bps),
            if x.pinned { "yes" } else { "no" }.into(),
            ago(x.last_seen_unix_ms, now),
        ]);
    }
    t.render()
}

fn balancer(b: &BalancerSettings) -> String {
    format!(
        "rebalance interval   {} s\ndistribution margin  {} percentage points\npeer timeout         {} ms\n",
        b.rebalance_interval_s, b.distribution_margin_pct, b.peer_timeout_ms
    )
}

fn plan(p: &PlanView) -> String {
    let mut out = if p.moves.is_empty() {
        "no move needed: every peer is within the margin\n".to_string()
    } else {
        let mut t = Table::new(&["EXPORTER", "POOL", "FROM", "TO", "PPS"]);
        for m in &p.moves {
            t.row(vec![
                m.exporter.to_string(),
                m.pool.clone(),
                m.from.clone(),
                m.to.clone(),
                si(m.pps),
            ]);
        }
        t.render()
    };
    for x in &p.too_large {
        let _ = writeln!(
            out,
            "too large to place: {} in pool {} ({} pps exceeds any peer's share)",
            x.exporter,
            x.pool,
            si(x.pps)
        );
    }
    let verdict = match (p.applied, p.moves.len()) {
        (_, 0) => "",
        (true, n) => &format!("applied: {n} move(s)\n"),
        (false, n) => &format!("plan only: {n} move(s); `sluicectl balancer run` applies it\n"),
    };
    out.push_str(verdict);
    out
}

fn status(s: &StatusView) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Central      {} (up {})",
        s.version,
        duration(s.uptime_s)
    );
    let _ = writeln!(out, "certificate  {}", s.fingerprint);
    if let Some(role) = &s.ha_role {
        let _ = writeln!(out, "ha role      {role}");
    }
    let _ = writeln!(out, "peers        {} ({} online)", s.peers, s.peers_online);
    let _ = writeln!(out, "exporters    {}", s.exporters);
    let _ = writeln!(
        out,
        "balancer     every {} s, margin {} pp, peer timeout {} ms",
        s.balancer.rebalance_interval_s,
        s.balancer.distribution_margin_pct,
        s.balancer.peer_timeout_ms
    );
    let _ = writeln!(
        out,
        "events       {} rebalances, {} failovers, {} auth failures",
        s.rebalances, s.failovers, s.auth_failures
    );
    for p in &s.pools {
        let _ = writeln!(
            out,
            "pool         {}: {}/{} peers healthy",
            p.name, p.healthy_peers, p.peers
        );
    }
    for p in s.pools_without_healthy_peer() {
        let _ = writeln!(
            out,
            "!!! POOL {} HAS NO HEALTHY PEER: ITS TRAFFIC IS DROPPED !!!",
            p.name
        );
    }
    out
}

fn ha(h: &HaStatusView) -> String {
    let now = now_unix_ms();
    let mut out = String::new();
    let ms = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} ms"));
    let lines = [
        (
            "node",
            format!(
                "{} ({}, priority {})",
                h.node,
                h.role.to_uppercase(),
                h.priority
            ),
        ),
        ("epoch", h.epoch.to_string()),
        (
            "partner",
            format!(
                "{} at {} ({})",
                h.partner,
                h.partner_address,
                h.partner_role.as_deref().unwrap_or("not heard from")
            ),
        ),
        (
            "link",
            if h.link_up {
                "up".into()
            } else {
                "DOWN".into()
            },
        ),
        (
            "heartbeat",
            h.last_heartbeat_ms_ago
                .map_or("never".into(), |a| format!("{:.1}s ago", a as f64 / 1000.0)),
        ),
        (
            "mirror",
            format!(
                "seq {}, lag {}, {}",
                h.mirror_seq,
                ms(h.mirror_lag_ms),
                if h.mirror_synced {
                    "synced"
                } else {
                    "not synced"
                }
            ),
        ),
        ("vips", format!("{} on {}", h.vips.join(", "), h.interface)),
        (
            "timers",
            format!(
                "heartbeat every {} ms, takeover after {} ms, preempt {}",
                h.heartbeat_interval_ms,
                h.takeover_timeout_ms,
                if h.preempt { "on" } else { "off" }
            ),
        ),
        (
            "takeovers",
            format!(
                "{} ({} held back: the virtual IP still answered elsewhere), {} link connections refused",
                h.takeovers, h.takeovers_refused, h.link_refused
            ),
        ),
        (
            "last change",
            match (&h.last_change_reason, h.last_change_unix_ms) {
                (Some(reason), at) => format!("{} ({reason})", ago(at, now)),
                _ => "-".into(),
            },
        ),
    ];
    for (k, v) in lines {
        let _ = writeln!(out, "{k:<12} {v}");
    }
    out
}

fn token(t: &TokenView) -> String {
    let mut out = format!(
        "{}\n\n{} token generated; it is shown only this once.\naccess token hash: {}\n",
        t.token, t.kind, t.hash
    );
    if let Some(expiry) = t.previous_expires_unix_s {
        let _ = writeln!(
            out,
            "the previous {} token stays valid until {} UTC",
            t.kind,
            utc(expiry)
        );
    }
    out
}

/// The human rendering of a reply.
pub fn human(reply: &AdminReply) -> String {
    match reply {
        AdminReply::Status(s) => status(s),
        AdminReply::Peers(p) => peers(p),
        AdminReply::Pools(p) => pools(p),
        AdminReply::Listeners(l) => steering(
            "LISTENER",
            l.iter().map(|l| (l.address.to_string(), l.pool.as_str())),
        ),
        AdminReply::Groups(g) => steering(
            "SOURCE GROUP",
            g.iter().map(|g| (g.cidr.to_string(), g.pool.as_str())),
        ),
        AdminReply::Exporters(x) => exporters(x),
        AdminReply::Balancer(b) => balancer(b),
        AdminReply::Plan(p) => plan(p),
        AdminReply::Token(t) => token(t),
        AdminReply::Done(d) => format!("{}\n", d.message),
        AdminReply::Ha(h) => ha(h),
    }
}

/// The JSON rendering of a reply: its data, without the envelope.
pub fn json(reply: &AdminReply) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(reply)?;
    let data = value
        .as_object_mut()
        .and_then(|o| o.remove("data"))
        .unwrap_or(value);
    Ok(serde_json::to_string_pretty(&data)? + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_795_219_200 + 3661), "2026-11-21 01:01:01");
    }

    #[test]
    fn units() {
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(0.25), "0.25", "a slow exporter is not 0 pps");
        assert_eq!(
            (si(0.0), si(42.0), si(420.0)),
            ("0".into(), "42.0".into(), "420".into())
        );
        assert_eq!(bytes(512 * 1024 * 1024), "512.0 MiB");
        assert_eq!(duration(3725), "1h02m");
        assert_eq!(ago(Some(1000), 1500), "0.5s ago");
        assert_eq!(ago(None, 1500), "-");
    }

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["A", "LONG HEADER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONG HEADER\nwide cell  x\n");
    }
}
