//! One peer session: `Register` (token checked) → `Registered`, then heartbeats and template
//! reports in, template installations out. Any protocol error sends an `Error` and closes the
//! connection. When a session ends nothing else happens: the controller's heartbeat timeout
//! decides when the peer is OFFLINE.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use sluice_common::client::{ConnError, Connection};
use sluice_common::protocol::{
    ApiErrorBody, CentralMessage, ErrorCode, FrameError, PeerMessage, Register,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::context::ApiContext;
use super::control::SessionPeer;
use super::sessions::Attached;
use crate::auth::{AuthFailure, TokenKind};

/// Why a session ended early; sent to the peer as its last message when possible.
struct Refusal(ApiErrorBody);

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal(ApiErrorBody {
            code,
            message: message.into(),
        })
    }
}

impl From<AuthFailure> for Refusal {
    fn from(f: AuthFailure) -> Self {
        let code = match f {
            AuthFailure::RateLimited { .. } => ErrorCode::RateLimited,
            AuthFailure::Missing | AuthFailure::Invalid => ErrorCode::Unauthorized,
        };
        Refusal::new(code, f.to_string())
    }
}

impl From<ConnError> for Refusal {
    fn from(e: ConnError) -> Self {
        let code = match &e {
            ConnError::Frame(FrameError::TooLarge { .. }) => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        };
        Refusal::new(code, e.to_string())
    }
}

enum Event {
    Peer(Result<Option<PeerMessage>, ConnError>),
    Idle,
    Outbound(Option<CentralMessage>),
    Stop,
}

pub(super) async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ApiContext,
    stream: S,
    source: SocketAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut conn = Connection::new(stream);
    let result = match register(ctx, &mut conn, source).await {
        Ok((peer, _attached, outbound)) => {
            let result = serve(ctx, &mut conn, &peer, outbound, &mut stop).await;
            // A newer session of the same peer, or Central shutting down, is not a lost peer.
            let superseded = matches!(&result, Err(Refusal(b)) if matches!(b.code, ErrorCode::Conflict | ErrorCode::Internal));
            if !superseded && let Err(error) = ctx.control.session_lost(&peer) {
                debug!(peer_id = peer.id, %error, "session loss not recorded");
            }
            result
        }
        Err(refusal) => Err(refusal),
    };
    if let Err(Refusal(body)) = result {
        ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
        debug!(%source, code = ?body.code, message = %body.message, "peer session refused");
        // Best effort: the connection may already be gone.
        let _ = conn.write(&CentralMessage::Error(body)).await;
    }
    // Best effort: a clean TLS close for a peer that is still there.
    let _ = conn.shutdown().await;
}

async fn register<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ApiContext,
    conn: &mut Connection<S>,
    source: SocketAddr,
) -> Result<(SessionPeer, Attached, mpsc::Receiver<CentralMessage>), Refusal> {
    let first = timeout(ctx.limits.request_timeout, conn.read::<PeerMessage>())
        .await
        .map_err(|_| Refusal::new(ErrorCode::BadRequest, "no registration in time"))??;
    let register: Register = match first {
        Some(PeerMessage::Register(r)) => r,
        Some(_) => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "the first message must be Register",
            ));
        }
        None => {
            return Err(Refusal::new(
                ErrorCode::BadRequest,
                "closed before Register",
            ));
        }
    };
    ctx.auth
        .check(TokenKind::Peer, Some(&register.token), source.ip())?;
    if let Some(ha) = &ctx.ha
        && ha.saw_epoch(register.epoch_seen)
    {
        return Err(Refusal::new(
            ErrorCode::Conflict,
            format!(
                "this Central's epoch is older than the peer's ({}): another node is the active",
                register.epoch_seen
            ),
        ));
    }
    if let Some(reason) = ctx.refusal() {
        return Err(Refusal::new(ErrorCode::Conflict, reason));
    }
    let mut registered = ctx
        .control
        .register_peer(&register, source)
        .map_err(|e| Refusal(e.into()))?;
    if let Some(ha) = &ctx.ha {
        registered.epoch = ha.status().epoch;
    }
    let peer = SessionPeer {
        id: registered.peer_id,
        name: register.name,
    };
    let (attached, outbound) = ctx.sessions.attach(peer.id, source);
    conn.write(&CentralMessage::Registered(registered.clone()))
        .await?;
    ctx.stats.sessions_started.fetch_add(1, Ordering::Relaxed);
    info!(%source, peer = %peer.name, peer_id = peer.id, pool = %registered.pool, "peer session established");
    Ok((peer, attached, outbound))
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ApiContext,
    conn: &mut Connection<S>,
    peer: &SessionPeer,
    mut outbound: mpsc::Receiver<CentralMessage>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Refusal> {
    let peer_id = peer.id;
    loop {
        let event = tokio::select! {
            msg = timeout(ctx.limits.idle_timeout, conn.read::<PeerMessage>()) => {
                msg.map_or(Event::Idle, Event::Peer)
            }
            msg = outbound.recv() => Event::Outbound(msg),
            _ = stop.wait_for(|s| *s) => Event::Stop,
        };
        match event {
            Event::Peer(msg) => match msg? {
                Some(PeerMessage::Heartbeat(hb)) => ctx
                    .control
                    .heartbeat(peer, hb.metrics)
                    .map_err(|e| Refusal(e.into()))?,
                // Templates of an exporter Central does not (yet) steer are no reason to end
                // the session.
                Some(PeerMessage::Templates(t)) => {
                    let exporter = t.exporter;
                    if let Err(error) = ctx.control.templates_learned(peer, t) {
                        debug!(peer_id, %exporter, %error, "templates not kept");
                    }
                }
                Some(PeerMessage::TemplatesInstalled { request_id }) => {
                    if let Err(error) = ctx.control.templates_installed(peer, request_id) {
                        debug!(peer_id, request_id, %error, "installation acknowledgement ignored");
                    }
                }
                Some(PeerMessage::TemplatesSynced { request_id }) => {
                    if let Err(error) = ctx.control.templates_synced(peer, request_id) {
                        debug!(peer_id, request_id, %error, "sync answer ignored");
                    }
                }
                Some(PeerMessage::Register(_)) => {
                    return Err(Refusal::new(ErrorCode::BadRequest, "already registered"));
                }
                None => {
                    debug!(peer_id, "peer closed its session");
                    return Ok(());
                }
            },
            Event::Outbound(Some(msg)) => conn.write(&msg).await?,
            Event::Outbound(None) => {
                info!(peer_id, "peer session replaced by a newer one");
                return Err(Refusal::new(
                    ErrorCode::Conflict,
                    "a newer session of this peer took over",
                ));
            }
            Event::Idle => {
                warn!(peer_id, "peer session idle, closing");
                return Err(Refusal::new(ErrorCode::BadRequest, "idle timeout"));
            }
            Event::Stop => {
                return Err(Refusal::new(
                    ErrorCode::Internal,
                    "Central is shutting down",
                ));
            }
        }
    }
}
