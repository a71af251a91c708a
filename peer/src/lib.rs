pub mod decode;
pub mod flowgen;
pub mod record;
