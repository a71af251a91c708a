//! Requests and replies with their whole bodies.

use hyper::body::Bytes;
use hyper::{StatusCode, header};

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
