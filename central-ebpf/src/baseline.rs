//! The benchmark baseline: an XDP program that only returns `XDP_PASS`. `cargo xtask bench xdp`
//! reports the forwarding path's cost as a ratio to this (the BPF_PROG_TEST_RUN harness cost).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

mod rt;

#[xdp]
pub fn sluice_baseline(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}
