//! The server side: one request per connection, read whole under [`Limits`], then answered
//! with `Connection: close`.
//!
//! What the caller never sees, hyper answers itself: a malformed head gets `400 Bad Request`,
//! a head over [`Limits::max_head`] or with more than [`Limits::max_headers`] headers
//! `431 Request Header Fields Too Large`, and a head not complete within [`Limits::timeout`]
//! has its connection closed. A body over the limit, or not complete in time, reaches the
//! caller as a [`RequestError`], so it answers in its own format.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};

use crate::message::{Request, Response};

/// hyper's smallest read buffer, which bounds the request head.
const MIN_HEAD: usize = 8192;

/// What a server accepts from one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head, request line and headers (at least 8 KiB).
    pub max_head: usize,
    /// Most headers in a request.
    pub max_headers: usize,
    /// Largest request body, with `Content-Length` or chunked.
    pub max_body: usize,
    /// For the whole request, head and body, from the start of the connection.
    pub timeout: Duration,
}

/// Why a request could not be read whole; the message is for the client.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The body is over [`Limits::max_body`].
    #[error("body over {0} bytes")]
    TooLarge(usize),
    /// The request took longer than [`Limits::timeout`].
    #[error("request not complete in time")]
    Timeout,
    /// The body broke off or is not valid chunked encoding.
    #[error("truncated body: {0}")]
    Body(#[source] hyper::Error),
}

/// Answers the one request on `io` with what `handler` makes of it.
///
/// Fails when the connection breaks or the request is refused before it reaches `handler`.
pub async fn serve<S, H>(io: S, limits: &Limits, handler: H) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Fn(Result<Request, RequestError>) -> Response,
{
    let deadline = Instant::now() + limits.timeout;
    let handler = &handler;
    let service = service_fn(move |request| async move {
        let mut response = handler(read(request, limits, deadline).await);
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        Ok::<_, Infallible>(response.map(Full::new))
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        .max_buf_size(limits.max_head.max(MIN_HEAD))
        .max_headers(limits.max_headers)
        .title_case_headers(true)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service)
        .await
}

async fn read(
    request: hyper::Request<Incoming>,
    limits: &Limits,
    deadline: Instant,
) -> Result<Request, RequestError> {
    let (head, body) = request.into_parts();
    let too_large = RequestError::TooLarge(limits.max_body);
    if body.size_hint().lower() > limits.max_body as u64 {
        return Err(too_large);
    }
    let body = timeout_at(deadline, Limited::new(body, limits.max_body).collect())
        .await
        .map_err(|_| RequestError::Timeout)?
        .map_err(|e| match e.downcast::<hyper::Error>() {
            Ok(e) => RequestError::Body(*e),
            // The only other error of a `Limited` body.
            Err(_) => too_large,
        })?;
    Ok(Request::from_parts(head, body.to_bytes()))
}
