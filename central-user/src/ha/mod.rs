//! Hot standby: two `sluice-central`s, one active and one standby, the standby mirroring all
//! of the active's state with XDP attached, taking over the virtual IPs when the active's host
//! is gone. See ARCHITECTURE.md, "Hot standby", for roles, epochs and the split-brain rule.
//!
//! # Layout
//! - [`role`]: the role rules, one pure function.
//! - [`link`]: messages on the HA link, their framing, the credential proof.
//! - [`mirror`]: what the active sends and how the standby applies it.
//! - [`node`]: the running node: links, role changes, virtual IPs, status.
//! - [`vip`]: adding, announcing, releasing and probing the virtual IPs.

pub mod link;
pub mod mirror;
pub mod node;
pub mod role;
pub mod vip;
