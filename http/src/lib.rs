//! The one HTTP/1.1 layer of Sluice, on [`hyper`]: Central's admin API and status page, the
//! peer's `/metrics`, and `sluicectl`'s client all go through it.
//!
//! # Layout
//! - [`server`]: [`serve`] answers one request on a connection (TLS or plain TCP), with the
//!   head and body read whole under [`Limits`]; the caller routes a [`Request`] to a
//!   [`Response`] without touching the wire.
//! - [`client`]: [`exchange`] sends one request on a connection and reads the whole reply,
//!   bounded.
//!
//! - [`message`]: the whole-body [`Request`] and [`Response`] both sides pass around.
//!
//! Both sides speak one request per connection (`Connection: close`), as every caller here does.

pub mod client;
pub mod message;
pub mod server;

pub use client::{ClientError, exchange};
pub use hyper::body::Bytes;
pub use hyper::{Method, StatusCode, header, http};
pub use message::{Request, Response, response};
pub use server::{Limits, RequestError, serve};

#[cfg(test)]
mod tests;
