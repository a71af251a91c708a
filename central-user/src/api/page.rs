//! The status page at `/`: a login form for the admin token that sets a `Secure; HttpOnly;
//! SameSite=Strict` session cookie, then a read-only page that draws `/status.json` every
//! 1.5 s. Served from the binary; the Content-Security-Policy forbids anything not from this
//! origin, and the page builds its DOM from text only, so names with markup cannot inject.

use std::net::SocketAddr;

use serde::Serialize;
use sluice_common::protocol::{
    ErrorCode, ExporterView, HaStatusView, PeerView, PoolView, StatusView,
};

use super::admin;
use super::context::ApiContext;
use super::page_sessions::SESSION_TTL;
use super::request::Request;
use super::response::Response;
use crate::auth::TokenKind;

const INDEX: &str = include_str!("page/index.html");
const LOGIN: &str = include_str!("page/login.html");
const APP_JS: &str = include_str!("page/app.js");
const APP_CSS: &str = include_str!("page/app.css");

const COOKIE: &str = "sluice_session";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The session id in a `Cookie:` header.
fn session_id(cookie: Option<&str>) -> Option<&str> {
    cookie?
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

fn page(status: u16, content_type: &'static str, body: &str) -> Response {
    Response {
        status,
        content_type,
        headers: vec![
            ("Content-Security-Policy", CSP.into()),
            ("X-Content-Type-Options", "nosniff".into()),
            ("Referrer-Policy", "no-referrer".into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

fn login(status: u16, error: &str) -> Response {
    // `error` is one of the fixed messages below, never user input.
    page(
        status,
        "text/html; charset=utf-8",
        &LOGIN.replace("{{error}}", error),
    )
}

/// Everything the page shows, in one request.
#[derive(Serialize)]
struct Snapshot {
    status: StatusView,
    peers: Vec<PeerView>,
    pools: Vec<PoolView>,
    exporters: Vec<ExporterView>,
    xdp: Vec<(&'static str, u64)>,
    ha: Option<HaStatusView>,
}

fn snapshot(ctx: &ApiContext) -> Result<Snapshot, super::control::ControlError> {
    Ok(Snapshot {
        status: admin::status(ctx)?,
        peers: ctx.control.peers()?,
        pools: ctx.control.pools()?,
        exporters: ctx.control.exporters()?,
        xdp: ctx.xdp_counters.as_ref().map(|c| c()).unwrap_or_default(),
        ha: ctx.ha.as_ref().map(|ha| ha.status()),
    })
}

pub(super) fn route(
    ctx: &ApiContext,
    request: &Request,
    path: &str,
    source: SocketAddr,
) -> Response {
    let signed_in = session_id(request.cookie.as_deref()).is_some_and(|id| ctx.pages.valid(id));
    match (request.method.as_str(), path) {
        ("GET", "/app.js") => page(200, "text/javascript; charset=utf-8", APP_JS),
        ("GET", "/app.css") => page(200, "text/css; charset=utf-8", APP_CSS),
        ("GET", "/") if signed_in => page(200, "text/html; charset=utf-8", INDEX),
        ("GET", "/") => login(200, ""),
        ("GET", _) if !signed_in => Response::error(ErrorCode::Unauthorized, "sign in at /"),
        ("GET", _) => match snapshot(ctx) {
            Ok(s) => {
                let mut r = Response::json(200, &s);
                r.headers.push(("Cache-Control", "no-store".into()));
                r
            }
            Err(e) => Response::error(e.code(), e.to_string()),
        },
        ("POST", "/logout") => {
            if let Some(id) = session_id(request.cookie.as_deref()) {
                ctx.pages.remove(id);
            }
            redirect(format!(
                "{COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
            ))
        }
        _ => sign_in(ctx, request, source),
    }
}

fn redirect(cookie: String) -> Response {
    let mut r = page(303, "text/plain; charset=utf-8", "");
    r.headers.push(("Location", "/".into()));
    r.headers.push(("Set-Cookie", cookie));
    r
}

fn sign_in(ctx: &ApiContext, request: &Request, source: SocketAddr) -> Response {
    let token = form_urlencoded::parse(&request.body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    match ctx
        .auth
        .check(TokenKind::Admin, token.as_deref(), source.ip())
    {
        Ok(()) => match ctx.pages.create() {
            Some(id) => redirect(format!(
                "{COOKIE}={id}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                SESSION_TTL.as_secs()
            )),
            None => login(500, "No randomness for a session; try again."),
        },
        Err(crate::auth::AuthFailure::RateLimited { .. }) => login(
            429,
            "Too many failed sign-ins from this address; wait a minute.",
        ),
        Err(_) => login(401, "Wrong token."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        assert_eq!(
            session_id(Some("a=1; sluice_session=abc; b=2")),
            Some("abc")
        );
        assert_eq!(session_id(Some("sluice_sessionx=abc")), None);
        assert_eq!(session_id(None), None);
    }

    #[test]
    fn the_page_never_builds_markup_from_data() {
        // The page script draws with textContent / createElement only.
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("insertAdjacentHTML"));
        // Nothing is fetched from elsewhere: the SVG namespace is the only URL in the script.
        let urls = APP_JS.replace("http://www.w3.org/2000/svg", "");
        assert!(!urls.contains("http://") && !urls.contains("https://"));
        assert!(
            !INDEX.contains("<script>") && !INDEX.contains("style="),
            "inline code breaks the CSP"
        );
    }
}
