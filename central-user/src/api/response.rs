//! An HTTP/1.1 response as the admin API, `/metrics` and the status page build it.

use sluice_common::protocol::{ApiErrorBody, ErrorCode};

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

    pub(super) fn head(&self) -> String {
        let reason = match self.status {
            200 => "OK",
            303 => "See Other",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            405 => "Method Not Allowed",
            409 => "Conflict",
            411 => "Length Required",
            413 => "Content Too Large",
            429 => "Too Many Requests",
            _ => "Internal Server Error",
        };
        let extra: String = self
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
    }
}
