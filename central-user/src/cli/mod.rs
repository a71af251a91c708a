//! Command-line pieces: the admin API client and output of `sluicectl`, and the
//! `sluice-central token` subcommand.

pub mod client;
pub mod render;
pub mod token;
