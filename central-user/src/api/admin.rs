//! Admin API: one [`AdminRequest`] → one [`ControlPlane`](super::control::ControlPlane) call → one
//! [`AdminReply`].

use std::time::Duration;

use sluice_common::protocol::{AdminReply, AdminRequest, DoneView, StatusView, TokenView};
use tracing::info;

use super::context::ApiContext;
use super::control::ControlError;
use super::response::Response;
use crate::auth::TokenKind;

pub(super) fn dispatch(ctx: &ApiContext, request: AdminRequest) -> Response {
    let verb = request.path().unwrap_or_default();
    match reply(ctx, request) {
        Ok(reply) => Response::json(200, &reply),
        Err(e) => {
            info!(%verb, error = %e, "admin request failed");
            Response::error(e.code(), e.to_string())
        }
    }
}

fn done(message: String) -> Result<AdminReply, ControlError> {
    info!(%message, "admin change");
    Ok(AdminReply::Done(DoneView { message }))
}

/// Requests that only read: a standby answers them too.
fn reads_only(request: &AdminRequest) -> bool {
    matches!(
        request,
        AdminRequest::Status
            | AdminRequest::PeersList
            | AdminRequest::PoolsList
            | AdminRequest::ListenersList
            | AdminRequest::GroupsList
            | AdminRequest::ExportersList
            | AdminRequest::BalancerShow
            | AdminRequest::BalancerPlan
            | AdminRequest::HaStatus
            | AdminRequest::HaSwitchover
    )
}

fn reply(ctx: &ApiContext, request: AdminRequest) -> Result<AdminReply, ControlError> {
    let c = &ctx.control;
    if !reads_only(&request)
        && let Some(reason) = ctx.refusal()
    {
        return Err(ControlError::Conflict(reason));
    }
    match request {
        AdminRequest::HaStatus | AdminRequest::HaSwitchover => {
            let ha = ctx.ha.as_ref().ok_or_else(|| {
                ControlError::NotFound("this Central runs without [ha] (no hot standby)".into())
            })?;
            Ok(AdminReply::Ha(
                if matches!(request, AdminRequest::HaStatus) {
                    ha.status()
                } else {
                    ha.switchover()?
                },
            ))
        }
        AdminRequest::Status => Ok(AdminReply::Status(status(ctx)?)),
        AdminRequest::PeersList => Ok(AdminReply::Peers(c.peers()?)),
        AdminRequest::PeersDrain { name } => {
            c.set_draining(&name, true)?;
            done(format!("peer {name} is DRAINING"))
        }
        AdminRequest::PeersUndrain { name } => {
            c.set_draining(&name, false)?;
            done(format!("peer {name} is no longer draining"))
        }
        AdminRequest::PoolsList => Ok(AdminReply::Pools(c.pools()?)),
        AdminRequest::PoolsCreate { name } => {
            c.create_pool(&name)?;
            done(format!("pool {name} created"))
        }
        AdminRequest::PoolsDelete { name } => {
            c.delete_pool(&name)?;
            done(format!("pool {name} deleted"))
        }
        AdminRequest::PoolsAssign { pool, peer, weight } => {
            c.assign(&pool, &peer, weight)?;
            done(format!("peer {peer} assigned to pool {pool}"))
        }
        AdminRequest::PoolsUnassign { pool, peer } => {
            c.unassign(&pool, &peer)?;
            done(format!("peer {peer} removed from pool {pool}"))
        }
        AdminRequest::ListenersList => Ok(AdminReply::Listeners(c.listeners()?)),
        AdminRequest::ListenersAdd { addr, pool } => {
            c.set_listener(addr, &pool)?;
            done(format!(
                "listener {addr} steers new exporters to pool {pool}"
            ))
        }
        AdminRequest::ListenersRemove { addr } => {
            c.remove_listener(addr)?;
            done(format!("listener {addr} removed"))
        }
        AdminRequest::GroupsList => Ok(AdminReply::Groups(c.source_groups()?)),
        AdminRequest::GroupsAdd { cidr, pool } => {
            c.set_source_group(cidr, &pool)?;
            done(format!("new exporters in {cidr} join pool {pool}"))
        }
        AdminRequest::GroupsRemove { cidr } => {
            c.remove_source_group(cidr)?;
            done(format!("source group {cidr} removed"))
        }
        AdminRequest::ExportersList => Ok(AdminReply::Exporters(c.exporters()?)),
        AdminRequest::ExportersMove { addr, peer } => {
            c.move_exporter(addr, &peer)?;
            done(format!("exporter {addr} moved to {peer} and pinned"))
        }
        AdminRequest::ExportersPin { addr } => {
            c.set_pinned(addr, true)?;
            done(format!("exporter {addr} pinned"))
        }
        AdminRequest::ExportersUnpin { addr } => {
            c.set_pinned(addr, false)?;
            done(format!("exporter {addr} unpinned"))
        }
        AdminRequest::BalancerShow => Ok(AdminReply::Balancer(c.balancer()?)),
        AdminRequest::BalancerSet(patch) => Ok(AdminReply::Balancer(c.set_balancer(patch)?)),
        AdminRequest::BalancerPlan => Ok(AdminReply::Plan(c.rebalance(false)?)),
        AdminRequest::BalancerRun => Ok(AdminReply::Plan(c.rebalance(true)?)),
        AdminRequest::TokenGenerate { admin, grace_s } => {
            let kind = if admin {
                TokenKind::Admin
            } else {
                TokenKind::Peer
            };
            let issued = ctx
                .auth
                .issue(kind, grace_s.map(Duration::from_secs))
                .map_err(|e| ControlError::Internal(e.to_string()))?;
            Ok(AdminReply::Token(TokenView {
                token: issued.token,
                hash: issued.hash,
                kind: kind.to_string(),
                previous_expires_unix_s: issued.previous_expires_unix_ms.map(|ms| ms / 1000),
            }))
        }
    }
}

/// The controller's status completed with what only the API knows.
pub(super) fn status(ctx: &ApiContext) -> Result<StatusView, ControlError> {
    let mut status = ctx.control.status()?;
    status.fingerprint = ctx.fingerprint();
    status.ha_role = ctx.ha.as_ref().map(|ha| ha.status().role);
    status.auth_failures = ctx.auth.failures(TokenKind::Peer) + ctx.auth.failures(TokenKind::Admin);
    status.uptime_s = status.uptime_s.max(ctx.started.elapsed().as_secs());
    Ok(status)
}
