//! The agent's local web endpoint (`ui_listen`, loopback only): the user's own web client
//! (pages under `/`, PROTOCOL §15) and `/metrics` in the Prometheus text format (§13.2).
//!
//! Any web page the user opens can make the browser send requests to loopback, and a DNS name
//! that resolves to 127.0.0.1 makes them same-origin for the page (DNS rebinding). So:
//! - every request must name this endpoint itself in `Host`, or it is refused before any route
//!   runs;
//! - every page needs the per-install token (the `ui-token` file in the state directory, which
//!   only this user can read): as the cookie `/login?token=…` sets (`peerdex ui` prints that
//!   address), or as `Authorization: Bearer` for scripts;
//! - every request that changes something (any method but GET and HEAD) made with the cookie
//!   must come from our own pages: its `Origin` names this endpoint (CSRF). A bearer token
//!   cannot be attached by another site without our consent (no CORS), so it needs no `Origin`.
//!
//! Pages run no inline script and load nothing from elsewhere (a strict CSP).

mod api;
pub use api::openapi_document;
mod metrics;
mod pages;
mod people;
mod rooms;
mod settings;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span, warn};

use super::{AgentControls, AgentStatus, CatalogCounts};

/// File in the state directory holding the web client's token.
pub const TOKEN_FILE: &str = "ui-token";

/// Live event streams (`/events`) open at once: a few tabs, not a flood.
const MAX_EVENT_STREAMS: usize = 16;

/// Players streaming a download at once (`/play/…`).
const MAX_PLAYERS: usize = 4;

/// What the endpoint's handlers reach.
struct Web {
    controls: Arc<AgentControls>,
    /// The port it listens on: the only one a valid `Host` may name.
    port: u16,
    /// BLAKE3 of the token (compared in constant time).
    token: blake3::Hash,
    /// The cookie's name: one per port, so two agents of one user keep their own.
    cookie: String,
    event_streams: Arc<Semaphore>,
    players: Arc<Semaphore>,
    stop: CancellationToken,
    /// The catalog counts pages show (see [`Web::status`]).
    counts: Arc<Mutex<Option<CountsRead>>>,
    refreshing: Arc<AtomicBool>,
}

impl Web {
    fn accepts(&self, token: &str) -> bool {
        blake3::hash(token.as_bytes()) == self.token
    }

    /// The agent's status for a page (blocking). Its catalog counts may be up to
    /// [`COUNTS_FRESH`] old, or older while a fresh read runs in the background: counting
    /// scans the catalog, and a page must not wait for that while the agent hashes a big share
    /// (`/` took 70 ms at 200,000 files that way). Everything else is read now.
    fn status(&self) -> AgentStatus {
        let cached = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some((read_at, counts)) = cached else {
            let counts = Arc::new(self.controls.catalog_counts());
            *self.counts.lock().unwrap_or_else(|p| p.into_inner()) =
                Some((Instant::now(), counts.clone()));
            return self.controls.status_with(&counts);
        };
        if read_at.elapsed() > COUNTS_FRESH && !self.refreshing.swap(true, Ordering::AcqRel) {
            let (controls, cache, refreshing) = (
                self.controls.clone(),
                self.counts.clone(),
                self.refreshing.clone(),
            );
            std::thread::spawn(move || {
                let counts = Arc::new(controls.catalog_counts());
                *cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), counts));
                refreshing.store(false, Ordering::Release);
            });
        }
        self.controls.status_with(&counts)
    }
}

/// Catalog counts, and when they were read.
type CountsRead = (Instant, Arc<CatalogCounts>);

/// How old the catalog counts of a page may be before a fresh read is started.
const COUNTS_FRESH: Duration = Duration::from_secs(1);

/// The web client's token for the state directory `state`: read from its file, or made (32
/// random bytes, hex) and written owner-only when there is none yet.
pub fn load_or_create_token(state: &Path) -> std::io::Result<String> {
    let path = state.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is too short to be a token; delete it and a new one is made",
                    path.display()
                ),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    let token = hex_text(&bytes);
    use std::os::unix::fs::OpenOptionsExt;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match created {
        Ok(mut file) => {
            file.write_all(token.as_bytes())?;
            file.sync_all()?;
            Ok(token)
        }
        // Another process made it first: theirs counts.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().to_owned())
        }
        Err(e) => Err(e),
    }
}

fn hex_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The address that signs a browser in: open it and the cookie is set.
pub fn sign_in_url(addr: SocketAddr, token: &str) -> String {
    format!("http://{addr}/login?token={token}")
}

/// Binds the endpoint; a taken port is reported and the agent goes on without it (another
/// agent of this user may hold it: sharing matters more than the web client).
pub(crate) async fn bind(addr: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            warn!(%addr, error = %e, "the local web endpoint (ui_listen) cannot listen; set ui_listen to another port or off");
            None
        }
    }
}

/// Serves the endpoint until `stop`; `token` is the one pages require.
pub(crate) async fn serve(
    listener: TcpListener,
    controls: Arc<AgentControls>,
    token: &str,
    stop: CancellationToken,
) {
    let port = match listener.local_addr() {
        Ok(addr) => addr.port(),
        Err(_) => return,
    };
    let web = Arc::new(Web {
        controls,
        port,
        token: blake3::hash(token.as_bytes()),
        cookie: format!("peerdex_ui_{port}"),
        event_streams: Arc::new(Semaphore::new(MAX_EVENT_STREAMS)),
        players: Arc::new(Semaphore::new(MAX_PLAYERS)),
        stop: stop.clone(),
        counts: Arc::default(),
        refreshing: Arc::default(),
    });
    let (api_routes, api_document) = api::routes();
    let signed_in = Router::new()
        .route("/", get(pages::home))
        .route("/search", get(pages::search))
        .route("/content/{hash}", get(pages::content))
        .route("/browse/{nick}", get(pages::browse))
        .route("/downloads", post(pages::download))
        .route("/transfers", get(pages::transfers))
        .route("/transfers/{id}/file", get(pages::transfer_file))
        .route("/transfers/{id}/{action}", post(pages::transfer_action))
        .route("/shares", get(pages::shares).post(pages::add_share))
        .route("/shares/remove", post(pages::remove_share))
        .route("/shares/visibility", post(pages::change_visibility))
        .route(
            "/settings",
            get(settings::settings).post(settings::save_settings),
        )
        .route("/people", get(people::people))
        .route("/people/{name}", get(people::conversation))
        .route("/contacts", post(people::add_contact))
        .route("/contacts/{name}/{action}", post(people::answer_contact))
        .route("/messages", post(people::send_message))
        .route("/wishes", post(people::add_wish))
        .route("/wishes/{id}/remove", post(people::remove_wish))
        .route("/rooms", get(rooms::rooms).post(rooms::join))
        .route("/rooms/{name}", get(rooms::room))
        .route("/rooms/{name}/say", post(rooms::say))
        .route("/rooms/{name}/leave", post(rooms::leave))
        .route("/play/{hash}", get(pages::play))
        .route("/events", get(pages::events))
        .route("/logout", post(logout))
        .merge(api_routes)
        .merge(Router::from(
            utoipa_swagger_ui::SwaggerUi::new(api::VIEWER).url(api::DOCUMENT, api_document),
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            web.clone(),
            require_token,
        ));
    let app = Router::new()
        .route(peerdex_shared::routes::METRICS, get(metrics::metrics))
        .route("/login", get(login))
        .route("/static/peerdex.css", get(pages::stylesheet))
        .route("/static/agent.js", get(pages::script))
        .route("/static/favicon.svg", get(pages::favicon))
        .merge(signed_in)
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn_with_state(web.clone(), own_host))
        .with_state(web);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        warn!(error = %e, "the local web endpoint stopped");
    }
}

/// Whether `Host` names this endpoint by a loopback name: `localhost`, `127.0.0.1` or `[::1]`,
/// with our port.
fn is_own_host(headers: &HeaderMap, port: u16) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some((name, host_port)) = host.rsplit_once(':') else {
        return false;
    };
    host_port.parse() == Ok(port) && matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

/// Refuses requests whose `Host` is not this endpoint (DNS rebinding).
async fn own_host(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    if !is_own_host(request.headers(), web.port) {
        return (
            StatusCode::FORBIDDEN,
            "this endpoint answers only requests to localhost, 127.0.0.1 or [::1] on its own port\n",
        )
            .into_response();
    }
    let span = info_span!("ui", method = %request.method(), path = %request.uri().path());
    next.run(request).instrument(span).await
}

/// The value of cookie `name` in `Cookie`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let values = headers.get_all(header::COOKIE).iter();
    peerdex_shared::web::cookie(values.filter_map(|v| v.to_str().ok()), name)
}

/// Whether a request comes from one of our own pages (`shared::web::same_origin`, over
/// plain HTTP: this endpoint has no TLS).
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    peerdex_shared::web::same_origin(text("origin"), text("host"), text("sec-fetch-site"), false)
}

/// Lets a request through with a valid token, and a change only from our own pages.
async fn require_token(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let by_bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(peerdex_shared::routes::bearer_token)
        .is_some_and(|token| web.accepts(token));
    let by_cookie = cookie(headers, &web.cookie).is_some_and(|token| web.accepts(token));
    // The JSON API answers in JSON, the pages with a page.
    let api = request.uri().path().starts_with("/api/");
    if !by_bearer && !by_cookie {
        return if api {
            api::JsonError::sign_in_required().into_response()
        } else {
            pages::sign_in_required()
        };
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes && !by_bearer && !same_origin(headers) {
        return if api {
            api::JsonError::cross_site().into_response()
        } else {
            pages::refused_cross_site()
        };
    }
    next.run(request).await
}

#[derive(Deserialize)]
struct LoginParams {
    token: Option<String>,
}

/// `GET /login?token=…`: sets the cookie and goes to the start page.
async fn login(State(web): State<Arc<Web>>, Query(params): Query<LoginParams>) -> Response {
    match params.token {
        Some(token) if web.accepts(&token) => {
            let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", web.cookie);
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(header::SET_COOKIE, value);
            }
            response
        }
        _ => pages::sign_in_required(),
    }
}

/// `POST /logout`: forgets the cookie.
async fn logout(State(web): State<Arc<Web>>) -> Response {
    let cookie = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        web.cookie
    );
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/login")]).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// What every answer sends: scripts and styles from this endpoint only, nothing from
/// elsewhere, no framing, no referrer.
async fn security_headers(request: Request, next: Next) -> Response {
    let viewer = request.uri().path().starts_with(api::VIEWER);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let policy = if viewer {
        peerdex_shared::web::API_VIEWER_CSP
    } else {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         media-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
         frame-ancestors 'none'"
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        // Same-origin, not no-referrer: under no-referrer a browser's form POST says
        // `Origin: null`, and the CSRF check wants to see our own origin.
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().expect("a header value"));
        }
        headers
    }

    #[test]
    fn only_loopback_names_on_our_port_are_our_host() {
        for ok in ["127.0.0.1:7702", "localhost:7702", "[::1]:7702"] {
            assert!(is_own_host(&headers(&[("host", ok)]), 7702), "{ok}");
        }
        for bad in [
            "127.0.0.1:7703",
            "evil.example:7702",
            "127.0.0.1.evil.example:7702",
            "localhost",
            "127.0.0.1",
            "[::1]",
            "",
        ] {
            assert!(!is_own_host(&headers(&[("host", bad)]), 7702), "{bad}");
        }
        assert!(!is_own_host(&HeaderMap::new(), 7702));
    }

    #[test]
    fn only_our_own_origin_is_same_origin() {
        let host = ("host", "127.0.0.1:7702");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:7702")
        ])));
        for other in [
            "http://evil.example",
            "http://127.0.0.1:7703",
            "https://127.0.0.1:7702",
            "null",
        ] {
            assert!(
                !same_origin(&headers(&[host, ("origin", other)])),
                "{other}"
            );
        }
        assert!(same_origin(&headers(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(!same_origin(&headers(&[host])));
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; peerdex_ui_7702=tok; b=2")]);
        assert_eq!(cookie(&h, "peerdex_ui_7702"), Some("tok"));
        assert_eq!(cookie(&h, "peerdex_ui_7703"), None);
    }

    #[test]
    fn a_token_is_made_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let token = load_or_create_token(dir.path()).expect("a token");
        assert_eq!(token.len(), 64);
        assert_eq!(load_or_create_token(dir.path()).expect("read back"), token);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .expect("the file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(TOKEN_FILE), "short").expect("write");
        assert!(load_or_create_token(dir.path()).is_err());
    }
}
