//! Exporter clocks: sysUptime-relative stamps to Unix time.

/// Flow time in ns since the epoch from a sysUptime-relative millisecond stamp, given the
/// export time (ns) and the exporter's sysUptime (ms) at export.
pub(crate) fn uptime_to_ns(export_ns: u64, sys_uptime_ms: u32, stamp_ms: u32) -> u64 {
    // The stamp is at most ~49 days before the uptime (u32 wrap), possibly slightly after it.
    let behind_ms = i128::from(sys_uptime_ms.wrapping_sub(stamp_ms) as i32);
    let ns = i128::from(export_ns) - behind_ms * 1_000_000;
    u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
}
