//! Admin API client: one HTTP/1.1 request per call over pinned TLS.

use sluice_common::client::{Connector, Endpoint, Pin, TlsError};
use sluice_common::protocol::{ALPN_HTTP, AdminReply, AdminRequest, ApiErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest reply accepted.
const MAX_REPLY: u64 = 64 << 20;

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
        let (status, reply) = self.exchange("POST", &path, &body).await?;
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
        let (status, body) = self.exchange("GET", "/metrics", &[]).await?;
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
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), CallError> {
        let io = |e: std::io::Error| CallError::Protocol(e.to_string());
        let mut stream = self.connector.connect(&self.endpoint).await?;
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.endpoint,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.map_err(io)?;
        stream.write_all(body).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        let mut reply = Vec::new();
        // Central closes after the reply; an unclean close after a complete reply is fine.
        let read = (&mut stream).take(MAX_REPLY).read_to_end(&mut reply).await;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&reply) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return Err(match read {
                    Err(e) => io(e),
                    Ok(_) => CallError::Protocol("truncated HTTP reply".into()),
                });
            }
            Err(e) => return Err(CallError::Protocol(e.to_string())),
        };
        let status = response.code.unwrap_or_default();
        Ok((status, reply.split_off(head_len)))
    }
}
