//! `cargo xtask bench` measurements (the `sluice-bench` binary prints them): BPF_PROG_TEST_RUN
//! cost per packet, forwarding rate and CPU per packet on the namespace lab, and failover time
//! with real peers, and the hot-standby pair's takeover next to keepalived (and its soak).

pub mod bpf_stats;
pub mod cpu;
pub mod decode;
pub mod failover;
pub mod forwarding;
pub mod netflow;
pub mod takeover;
pub mod test_run;
