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
//! Both sides speak one request per connection (`Connection: close`), as every caller here does.

pub mod client;
pub mod server;

pub use client::{ClientError, exchange};
pub use hyper::body::Bytes;
pub use hyper::{Method, StatusCode, header, http};
pub use server::{Limits, RequestError, serve};

/// A request read whole.
pub type Request = hyper::Request<Bytes>;
/// A reply with its whole body.
pub type Response = hyper::Response<Bytes>;

/// A reply with `status`, `content_type` and `body`.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests;
