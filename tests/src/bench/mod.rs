//! `cargo xtask bench` measurements (the `sluice-bench` binary prints them): BPF_PROG_TEST_RUN
//! cost per packet, and forwarding rate and CPU per packet on the namespace lab.

pub mod cpu;
pub mod forwarding;
pub mod netflow;
pub mod test_run;
