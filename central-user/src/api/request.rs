//! An API request as the routes see it: method, path, the two credentials headers and the body
//! (what [`super::http`] reads off the wire through `sluice-http`).

use sluice_http::{Bytes, header};

pub(super) struct Request {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) authorization: Option<String>,
    pub(super) cookie: Option<String>,
    pub(super) body: Bytes,
}

impl From<sluice_http::Request> for Request {
    fn from(request: sluice_http::Request) -> Self {
        let (head, body) = request.into_parts();
        let header = |name| {
            head.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        };
        Request {
            method: head.method.to_string(),
            path: head.uri.path().to_string(),
            authorization: header(header::AUTHORIZATION),
            cookie: header(header::COOKIE),
            body,
        }
    }
}
