//! Minimal HTTP/1.1 for the admin API and `/metrics`: one request per connection, bodies with
//! `Content-Length` only, bounded head and body, answered with `Connection: close`.

use std::net::SocketAddr;

use sluice_common::protocol::{API_PREFIX, AdminRequest, ErrorCode, MAX_FRAME};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::debug;

use super::response::Response;
use super::{ApiContext, admin, metrics, page};
use crate::auth::{AuthFailure, TokenKind};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
const MAX_BODY: usize = MAX_FRAME;
const MAX_HEADERS: usize = 32;

pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) authorization: Option<String>,
    pub(super) cookie: Option<String>,
    pub(super) body: Vec<u8>,
}

pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ApiContext,
    mut stream: S,
    source: SocketAddr,
) {
    let response = match timeout(ctx.limits.request_timeout, read_request(&mut stream)).await {
        Err(_) => Response::error(ErrorCode::BadRequest, "request not complete in time"),
        Ok(Err(response)) => response,
        Ok(Ok(request)) => route(ctx, request, source),
    };
    let written = async {
        stream.write_all(response.head().as_bytes()).await?;
        stream.write_all(&response.body).await?;
        stream.shutdown().await
    };
    if let Err(error) = written.await {
        debug!(%source, %error, "HTTP response not delivered");
    }
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Request, Response> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let mut request = Request {
                    method: parsed.method.unwrap_or_default().to_string(),
                    path: parsed.path.unwrap_or_default().to_string(),
                    authorization: None,
                    cookie: None,
                    body: Vec::new(),
                };
                let mut content_length = 0usize;
                for h in parsed.headers.iter() {
                    let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
                    if h.name.eq_ignore_ascii_case("content-length") {
                        content_length = value.parse().map_err(|_| {
                            Response::error(ErrorCode::BadRequest, "bad Content-Length")
                        })?;
                    } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                        return Err(Response::error(
                            ErrorCode::BadRequest,
                            "Transfer-Encoding is not supported; send Content-Length",
                        ));
                    } else if h.name.eq_ignore_ascii_case("authorization") {
                        request.authorization = Some(value.to_string());
                    } else if h.name.eq_ignore_ascii_case("cookie") {
                        request.cookie = Some(value.to_string());
                    }
                }
                if content_length > MAX_BODY {
                    return Err(Response::error(
                        ErrorCode::TooLarge,
                        format!("body over {MAX_BODY} bytes"),
                    ));
                }
                buf.drain(..head_len);
                while buf.len() < content_length {
                    if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return Err(Response::error(ErrorCode::BadRequest, "truncated body"));
                    }
                }
                buf.truncate(content_length);
                request.body = buf;
                return Ok(request);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) => {
                return Err(Response::error(
                    ErrorCode::TooLarge,
                    "request head too large",
                ));
            }
            Err(e) => {
                return Err(Response::error(
                    ErrorCode::BadRequest,
                    format!("malformed HTTP request: {e}"),
                ));
            }
        }
        if stream.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            return Err(Response::error(ErrorCode::BadRequest, "truncated request"));
        }
    }
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn route(ctx: &ApiContext, request: Request, source: SocketAddr) -> Response {
    let path = request
        .path
        .split_once('?')
        .map_or(request.path.as_str(), |(p, _)| p);
    match (request.method.as_str(), path) {
        ("GET", "/metrics") => Response::text(metrics::render(ctx)),
        ("GET", "/" | "/app.js" | "/app.css" | "/status.json") | ("POST", "/login" | "/logout") => {
            page::route(ctx, &request, path, source)
        }
        ("POST", p) if p.starts_with(API_PREFIX) => {
            let token = bearer(request.authorization.as_deref());
            if let Err(failure) = ctx.auth.check(TokenKind::Admin, token, source.ip()) {
                return match failure {
                    AuthFailure::RateLimited { retry_after_s } => {
                        Response::error(ErrorCode::RateLimited, failure.to_string())
                            .with_header("Retry-After", retry_after_s.to_string())
                    }
                    AuthFailure::Missing | AuthFailure::Invalid => Response::error(
                        ErrorCode::Unauthorized,
                        format!("{failure}: send Authorization: Bearer <admin token>"),
                    )
                    .with_header("WWW-Authenticate", "Bearer".into()),
                };
            }
            match AdminRequest::from_http(p, &request.body) {
                Ok(admin_request) => admin::dispatch(ctx, admin_request),
                Err(e) => Response::error(ErrorCode::BadRequest, e.to_string()),
            }
        }
        (_, p) if p.starts_with(API_PREFIX) || p == "/metrics" => Response {
            status: 405,
            ..Response::error(
                ErrorCode::BadRequest,
                "use POST for /api/v1/…, GET for /metrics",
            )
        },
        _ => Response {
            status: 404,
            ..Response::error(ErrorCode::NotFound, format!("no such path: {path}"))
        },
    }
}
