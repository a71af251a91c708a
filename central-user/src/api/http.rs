//! The admin API, `/metrics` and the status page over HTTP/1.1 ([`sluice_http`]): one request
//! per connection, bounded head and body, answered with `Connection: close`.

use std::net::SocketAddr;

use sluice_common::protocol::{API_PREFIX, AdminRequest, ErrorCode, MAX_FRAME};
use sluice_http::{Limits, RequestError};

use super::request::Request;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use super::response::Response;
use super::{ApiContext, admin, metrics, page};
use crate::auth::{AuthFailure, TokenKind};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body.
const MAX_BODY: usize = MAX_FRAME;
const MAX_HEADERS: usize = 32;

pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ApiContext,
    stream: S,
    source: SocketAddr,
) {
    let limits = Limits {
        max_head: MAX_HEAD,
        max_headers: MAX_HEADERS,
        max_body: MAX_BODY,
        timeout: ctx.limits.request_timeout,
    };
    let answer = |request: Result<sluice_http::Request, RequestError>| {
        match request {
            Ok(request) => route(ctx, request.into(), source),
            Err(e @ RequestError::TooLarge(_)) => {
                Response::error(ErrorCode::TooLarge, e.to_string())
            }
            Err(e) => Response::error(ErrorCode::BadRequest, e.to_string()),
        }
        .into_http()
    };
    if let Err(error) = sluice_http::serve(stream, &limits, answer).await {
        debug!(%source, %error, "HTTP response not delivered");
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
    let path = request.path.as_str();
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
