//! An HTTP/1.1 response as the admin API, `/metrics` and the status page build it.

use sluice_common::protocol::{ApiErrorBody, ErrorCode};
use sluice_http::{StatusCode, header};

/// An HTTP response.
pub(super) struct Response {
    pub(super) status: u16,
    pub(super) content_type: &'static str,
    pub(super) headers: Vec<(&'static str, String)>,
    pub(super) body: Vec<u8>,
}

impl Response {
    pub(super) fn json(status: u16, value: &impl serde::Serialize) -> Self {
        match serde_json::to_vec_pretty(value) {
            Ok(mut body) => {
                body.push(b'\n');
                Response {
                    status,
                    content_type: "application/json",
                    headers: Vec::new(),
                    body,
                }
            }
            Err(e) => Response::error(ErrorCode::Internal, format!("cannot encode reply: {e}")),
        }
    }

    pub(super) fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        let body = ApiErrorBody {
            code,
            message: message.into(),
        };
        // An `ApiErrorBody` always serializes; the fallback only keeps this total.
        let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
        bytes.push(b'\n');
        Response {
            status: code.http_status(),
            content_type: "application/json",
            headers: Vec::new(),
            body: bytes,
        }
    }

    pub(super) fn text(body: String) -> Self {
        Response {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    pub(super) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The response for the wire; `Content-Length` and `Connection: close` are the HTTP layer's.
    pub(super) fn into_http(self) -> sluice_http::Response {
        let mut builder = sluice_http::http::Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, self.content_type);
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder.body(self.body.into()).unwrap_or_else(|e| {
            // Only a header value with a control character gets here: a bug, reported as such.
            let error = Response::error(ErrorCode::Internal, format!("cannot send reply: {e}"));
            sluice_http::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                error.content_type,
                error.body,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_response_keeps_status_type_and_headers() {
        let r = Response::error(ErrorCode::RateLimited, "slow down")
            .with_header("Retry-After", "7".into())
            .into_http();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(r.headers()["retry-after"], "7");
        assert!(r.body().ends_with(b"\"message\":\"slow down\"}\n"));

        let bad = Response::text("x".into())
            .with_header("Set-Cookie", "a\nb".into())
            .into_http();
        assert_eq!(bad.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
