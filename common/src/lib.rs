//! The contract between the XDP program and user space.
//!
//! Everything the kernel and user space both read or write lives here: map names, the
//! `#[repr(C)]` key and value layouts (with explicit padding and size assertions), the exit
//! reason counters and the exporter hash. Changing a layout here changes the map ABI: pinned
//! maps from an older build are rejected on load (see `central-user`'s loader).
//!
//! With the `std` feature the crate also carries the control-protocol messages ([`protocol`]);
//! with `client`, the TLS client side of the control channel (`client`) that peers link.
#![no_std]

#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "client")]
pub mod client;
pub mod counters;
pub mod csum;
#[cfg(feature = "std")]
pub mod duration;
pub mod hash;
pub mod maps;
#[cfg(feature = "std")]
pub mod prom;
#[cfg(feature = "std")]
pub mod protocol;

pub use counters::{REASON_COUNT, Reason};
pub use maps::*;
