//! Admin API client: one HTTP/1.1 request per call ([`sluice_http`]) over pinned TLS.

use sluice_common::client::{Connector, Endpoint, Pin, TlsError};
use sluice_common::protocol::{ALPN_HTTP, AdminReply, AdminRequest, ApiErrorBody, ErrorCode};
use sluice_http::{Bytes, Method, header};

/// Largest reply accepted.
const MAX_REPLY: usize = 64 << 20;

/// Why an admin call failed; each is one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Unreachable, certificate mismatch, bad URL.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Central refused the admin token.
    #[error("Central rejected the admin token: {0}")]
    Unauthorized(String),
    /// Central answered with an error.
    #[error("{message}")]
    Api {
        /// Class.
        code: ErrorCode,
        /// Central's message.
        message: String,
    },
    /// The connection broke or the answer is not understood.
    #[error("bad answer from Central: {0}")]
    Protocol(String),
}

/// A client of one Central.
pub struct AdminClient {
    endpoint: Endpoint,
    connector: Connector,
    token: Option<String>,
}

impl AdminClient {
    /// A client for `central` (`https://host:port`), pinning `pin`, sending `token`.
    pub fn new(central: &str, pin: &Pin, token: Option<String>) -> Result<Self, CallError> {
        Ok(AdminClient {
            endpoint: Endpoint::parse(central)?,
            connector: Connector::new(pin, ALPN_HTTP)?,
            token: token.map(|t| t.trim().to_string()),
        })
    }

    /// Sends one admin request.
    pub async fn call(&self, request: &AdminRequest) -> Result<AdminReply, CallError> {
        let encode = |e: serde_json::Error| CallError::Protocol(e.to_string());
        let path = request.path().map_err(encode)?;
        let body = serde_json::to_vec(&request.body().map_err(encode)?).map_err(encode)?;
        let (status, reply) = self.exchange(Method::POST, &path, body).await?;
        if status == 200 {
            return serde_json::from_slice(&reply).map_err(|e| CallError::Protocol(e.to_string()));
        }
        let error: ApiErrorBody = serde_json::from_slice(&reply).map_err(|_| {
            CallError::Protocol(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&reply).trim()
            ))
        })?;
        Err(match error.code {
            ErrorCode::Unauthorized | ErrorCode::RateLimited => {
                CallError::Unauthorized(error.message)
            }
            code => CallError::Api {
                code,
                message: error.message,
            },
        })
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> Result<String, CallError> {
        let (status, body) = self.exchange(Method::GET, "/metrics", Vec::new()).await?;
        let text = String::from_utf8_lossy(&body).into_owned();
        if status == 200 {
            Ok(text)
        } else {
            Err(CallError::Protocol(format!(
                "HTTP {status}: {}",
                text.trim()
            )))
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Bytes), CallError> {
        let protocol = |e: &dyn std::fmt::Display| CallError::Protocol(e.to_string());
        let mut request = sluice_http::http::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.endpoint.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "close");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request.body(Bytes::from(body)).map_err(|e| protocol(&e))?;
        let stream = self.connector.connect(&self.endpoint).await?;
        let (status, reply) = sluice_http::exchange(stream, request, MAX_REPLY)
            .await
            .map_err(|e| protocol(&e))?;
        Ok((status.as_u16(), reply))
    }
}
