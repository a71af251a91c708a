//! A framed connection: reads and writes whole [`crate::protocol`] frames over any byte stream.
//! Both ends of the peer channel use it.

use std::io;
use std::vec::Vec;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::protocol::{FRAME_HEADER, FrameError, check_frame, decode_payload, encode_frame};

/// Errors of a framed connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The other end sent something that is not a valid frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The other end closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Reads and writes frames on `S`.
pub struct Connection<S> {
    stream: S,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        Connection {
            stream,
            buf: Vec::with_capacity(8 * 1024),
            out: Vec::with_capacity(8 * 1024),
        }
    }

    /// The next message, or `None` when the other end closed cleanly between frames.
    ///
    /// Cancel safe: a partly read frame stays buffered for the next call.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnError> {
        loop {
            match check_frame(&self.buf) {
                Ok(len) => {
                    let msg = decode_payload(&self.buf[FRAME_HEADER..len]);
                    self.buf.drain(..len);
                    return Ok(Some(msg?));
                }
                Err(FrameError::Incomplete) => {}
                Err(e) => return Err(e.into()),
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::Truncated)
                };
            }
        }
    }

    /// Sends one message.
    pub async fn write<T: Serialize>(&mut self, msg: &T) -> Result<(), ConnError> {
        self.out.clear();
        encode_frame(msg, &mut self.out)?;
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Closes the write side (TLS close_notify) so the other end sees a clean end.
    pub async fn shutdown(&mut self) -> Result<(), ConnError> {
        Ok(self.stream.shutdown().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MAX_FRAME, PeerMessage};

    #[tokio::test]
    async fn frames_cross_a_duplex_in_small_pieces() {
        let (a, b) = tokio::io::duplex(3);
        let mut tx = Connection::new(a);
        let mut rx = Connection::new(b);
        let writer = tokio::spawn(async move {
            for id in 0..5 {
                tx.write(&PeerMessage::TemplatesInstalled { request_id: id })
                    .await
                    .unwrap();
            }
        });
        for id in 0..5 {
            let msg: PeerMessage = rx.read().await.unwrap().unwrap();
            assert_eq!(msg, PeerMessage::TemplatesInstalled { request_id: id });
        }
        writer.await.unwrap();
        assert!(rx.read::<PeerMessage>().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut rx = Connection::new(b);
        a.write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            rx.read::<PeerMessage>().await,
            Err(ConnError::Frame(FrameError::TooLarge { .. }))
        ));

        let (mut a, b) = tokio::io::duplex(64);
        let mut rx = Connection::new(b);
        a.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
        drop(a);
        assert!(matches!(
            rx.read::<PeerMessage>().await,
            Err(ConnError::Truncated)
        ));
    }
}
