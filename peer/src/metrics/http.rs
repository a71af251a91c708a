//! `GET /metrics` over HTTP/1.1 (the shared `sluice-http` layer on hyper).

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::log::LogLimiter;
use super::registry::Metrics;
use crate::shutdown::Shutdown;

/// Serves `GET /metrics` on an already-bound listener until shutdown, one scrape at a time on a
/// current-thread runtime of its own (the decode path has none).
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    const LIMITS: sluice_http::Limits = sluice_http::Limits {
        max_head: 8192,
        max_headers: 64,
        max_body: 4096,
        timeout: Duration::from_secs(2),
    };
    const POLL: Duration = Duration::from_millis(50);
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _runtime = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            let errors = LogLimiter::default();
            runtime.block_on(async {
                while !shutdown.is_triggered() {
                    // Wakes every 50 ms to look at the shutdown flag.
                    let stream = match tokio::time::timeout(POLL, listener.accept()).await {
                        Err(_) => continue,
                        Ok(Ok((stream, _))) => stream,
                        Ok(Err(error)) => {
                            if errors.allow() {
                                tracing::warn!(%error, "metrics listener accept failed");
                            }
                            tokio::time::sleep(POLL).await;
                            continue;
                        }
                    };
                    // The request and the reply, 2 s each.
                    let scrape =
                        sluice_http::serve(stream, &LIMITS, |request| respond(request, &metrics));
                    match tokio::time::timeout(2 * LIMITS.timeout, scrape).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) if errors.allow() => {
                            tracing::debug!(%error, "metrics request failed");
                        }
                        Err(_) if errors.allow() => {
                            tracing::debug!("metrics request not complete in time");
                        }
                        _ => {}
                    }
                }
            });
        })
}

fn respond(
    request: Result<sluice_http::Request, sluice_http::RequestError>,
    metrics: &Metrics,
) -> sluice_http::Response {
    use sluice_http::{Method, StatusCode, response};
    match request {
        Ok(r) if r.method() == Method::GET && r.uri().path() == "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        Ok(_) => response(StatusCode::NOT_FOUND, "text/plain", "try /metrics\n"),
        Err(error) => response(StatusCode::BAD_REQUEST, "text/plain", format!("{error}\n")),
    }
}
