//! The control API: one TLS 1.3 listener for peer sessions (ALPN `sluice-peer/1`, framed
//! bincode) and for `sluicectl`/`curl` (HTTP/1.1, JSON, `/metrics`).
//!
//! # Layout
//! - `context`: [`ApiContext`], what every connection shares, and its [`Limits`].
//! - [`tls`]: the certificate (generated into the state dir on first start) and fingerprint.
//! - [`control`]: [`ControlPlane`], everything the server asks of the controller.
//! - `live`: [`LiveControl`], the [`ControlPlane`] of the real controller.
//! - [`sessions`]: live peer sessions, so the controller can install templates on a peer.
//! - `session`: one peer session (register, heartbeats, templates).
//! - `http`, `admin`, `metrics`, `page`: the admin API, Prometheus text and the status page
//!   (`response`: the HTTP response they share; `page_sessions`: the page's signed-in browsers).
//!
//! [`serve`] takes an already-bound listener and a shutdown future (tests bind `127.0.0.1:0`).
//! On shutdown it stops accepting, tells every connection to finish, and waits for them a
//! bounded time.

mod admin;
mod context;
pub mod control;
mod http;
mod live;
mod metrics;
mod page;
mod page_sessions;
mod request;
mod response;
mod session;
pub mod sessions;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sluice_common::protocol::{ALPN_HA, ALPN_PEER};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

pub use context::{ApiContext, Limits, XdpCounters};
pub use control::{ControlError, ControlPlane, HaControl, HaStream, SessionPeer};
pub use live::LiveControl;
pub use sessions::{SendError, Sessions};
pub use tls::{CertSource, IdentityCell, IdentityError, TlsIdentity};

/// Serves the control API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctx: Arc<ApiContext>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(ctx.limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let local = listener.local_addr().ok();
    info!(listen = ?local, fingerprint = %ctx.fingerprint(), "control API listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, source)) => {
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        ctx.stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    // The identity as of now: a standby takes over the active's certificate.
                    let acceptor = TlsAcceptor::from(ctx.tls.get().config);
                    let (ctx, stop) = (ctx.clone(), stop_rx.clone());
                    tasks.spawn(async move {
                        connection(ctx, acceptor, tcp, source, stop).await;
                        drop(permit);
                    });
                }
                Err(error) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(ctx.limits.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
    info!("control API stopped");
}

async fn connection(
    ctx: Arc<ApiContext>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    source: SocketAddr,
    stop: watch::Receiver<bool>,
) {
    // Best effort: small frames should not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let stream =
        match tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                ctx.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                debug!(%source, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                ctx.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                debug!(%source, "TLS handshake timed out");
                return;
            }
        };
    let alpn = stream.get_ref().1.alpn_protocol();
    if alpn == Some(ALPN_PEER) {
        session::run(&ctx, stream, source, stop).await;
    } else if alpn == Some(ALPN_HA) {
        match &ctx.ha {
            Some(ha) => ha.clone().serve_link(stream, source).await,
            None => debug!(%source, "HA link refused: this Central has no [ha] section"),
        }
    } else {
        http::serve(&ctx, stream, source).await;
    }
}
