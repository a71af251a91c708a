//! Byte-writing helpers shared by the encoders.

use std::net::IpAddr;

pub(super) fn u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub(super) fn u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub(super) fn u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
pub(super) fn u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}
/// IPv4 address bytes; IPv6 addresses (and none) write 0.0.0.0.
pub(super) fn ipv4(out: &mut Vec<u8>, a: Option<IpAddr>) {
    match a {
        Some(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
        _ => out.extend_from_slice(&[0; 4]),
    }
}
/// IPv6 address bytes; IPv4 addresses are written IPv4-mapped, none as `::`.
pub(super) fn ipv6(out: &mut Vec<u8>, a: Option<IpAddr>) {
    match a {
        Some(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
        Some(IpAddr::V4(a)) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
        None => out.extend_from_slice(&[0; 16]),
    }
}
/// Overwrite a big-endian u16 written earlier (no-op if `at` is out of range).
pub(super) fn patch_u16(out: &mut [u8], at: usize, v: u16) {
    if let Some(s) = out.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
pub(super) fn patch_u32(out: &mut [u8], at: usize, v: u32) {
    if let Some(s) = out.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}
/// Milliseconds of sysUptime at `t_ns` for an exporter booted at `boot_ns` (wraps like a
/// real 32-bit uptime counter).
pub(super) fn uptime_ms(boot_ns: u64, t_ns: u64) -> u32 {
    (t_ns.wrapping_sub(boot_ns) / 1_000_000) as u32
}
