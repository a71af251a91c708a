//! The client side: one request per connection, the whole reply read, bounded.

use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use hyper::StatusCode;
use hyper::body::Bytes;

use crate::message::Request;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection broke or the reply is not HTTP/1.1.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The reply body is over the limit.
    #[error("reply over {0} bytes")]
    TooLarge(usize),
}

/// Sends `request` on `io` and reads the reply, its body up to `max_reply` bytes.
pub async fn exchange<S>(
    io: S,
    request: Request,
    max_reply: usize,
) -> Result<(StatusCode, Bytes), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sender, connection) = http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await?;
    let reply = async {
        let (head, body) = sender
            .send_request(request.map(Full::new))
            .await?
            .into_parts();
        let body = Limited::new(body, max_reply)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => ClientError::Http(*e),
                // The only other error of a `Limited` body.
                Err(_) => ClientError::TooLarge(max_reply),
            })?;
        Ok((head.status, body.to_bytes()))
    };
    tokio::pin!(reply, connection);
    tokio::select! {
        // A complete reply counts even if the server then closes uncleanly.
        biased;
        reply = &mut reply => reply,
        closed = &mut connection => {
            closed?;
            reply.await
        }
    }
}
