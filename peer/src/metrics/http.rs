//! `GET /metrics` over HTTP/1.1.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::log::LogLimiter;
use super::registry::Metrics;
use crate::shutdown::Shutdown;

/// Serves `GET /metrics` on an already-bound listener until shutdown.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let errors = LogLimiter::default();
            while !shutdown.is_triggered() {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if let Err(error) = respond(stream, &metrics)
                            && errors.allow()
                        {
                            tracing::debug!(%error, "metrics request failed");
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        shutdown.sleep(Duration::from_millis(50));
                    }
                    Err(error) => {
                        if errors.allow() {
                            tracing::warn!(%error, "metrics listener accept failed");
                        }
                        shutdown.sleep(Duration::from_millis(50));
                    }
                }
            }
        })
}

fn respond(stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Skip the headers.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let (status, content_type, body) = if request_line.starts_with("GET ")
        && (path == "/metrics" || path.starts_with("/metrics?"))
    {
        ("200 OK", "text/plain; version=0.0.4", metrics.render())
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_owned())
    };
    let mut w = &stream;
    write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}
