//! High availability for Central: the pieces an active/standby pair needs. [`vip`] owns the
//! virtual addresses exporters send to (claim, announce, release, and the split-brain witness).
pub mod vip;
