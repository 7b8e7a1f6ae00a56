//! HTTP routes of the index server (documented in `docs/PROTOCOL.md`).
//!
//! Handlers parse and check input, then call the store and index on blocking threads. This module
//! never names a rusqlite or tantivy type.

pub mod accounts;
mod admin_pages;
mod error;
mod lists;
pub mod openapi;
mod pages;
mod reports;
mod social;
mod transfers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use peerdex_shared::api::{
    BrowseEntry, BrowseFolder, BrowseResponse, ChallengeResponse, ErrorCode, FolderListing,
    FolderResponse, HeartbeatResponse, RegisterRequest, RegisterResponse, SearchResponse,
    SourcesResponse, StatsResponse,
};
use peerdex_shared::folder::FolderId;
use peerdex_shared::identity::registration_message;
use peerdex_shared::kind::extension_of;
use peerdex_shared::routes;
use peerdex_shared::validate::validate_nickname;
use peerdex_shared::{FileHash, FileKind, PeerId};
use serde::Deserialize;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::{Level, info};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use accounts::Caller;
pub use error::ApiError;
use openapi::ApiErrors;

use crate::db::PeerRow;
use crate::index::{MediaFilters, SearchSpec};
use crate::limits::random_hex;
use crate::query::{self, QueryLimits};
use crate::search::{self, advertised};
use crate::state::{AppState, NONCE_TTL};

/// Runs blocking work (SQLite, tantivy) off the async threads.
pub(crate) async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

/// The application router, with all routes and layers. Tests can call it directly.
pub fn router(state: Arc<AppState>) -> Router {
    let (api, document) = api_routes(&state.config).split_for_parts();
    let metrics_route = Router::new().route(routes::METRICS, get(metrics));
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    // The web pages: plain GET URLs, under the request timeout like the API.
    let page_routes = Router::new()
        .route("/", get(pages::search_page))
        .route("/u/{nick}", get(pages::peer_page))
        .route("/signin", get(pages::signin_form).post(pages::signin))
        .route("/signout", post(pages::signout))
        .route("/contact", post(pages::ask_contact))
        .route("/message", post(pages::write_message))
        .route("/admin", get(admin_pages::admin_page))
        .route(
            "/admin/accounts/{name}/{action}",
            post(admin_pages::account_action),
        )
        .route("/admin/invites", post(admin_pages::create_invite))
        .route("/admin/groups", post(admin_pages::create_group))
        .route(
            "/admin/groups/{group}/members",
            post(admin_pages::add_member),
        )
        .route("/admin/bans", post(admin_pages::add_ban))
        .route("/admin/bans/{id}/remove", post(admin_pages::remove_ban))
        .route(
            "/admin/quarantine/{peer}/clear",
            post(admin_pages::clear_quarantine),
        )
        .route("/static/peerdex.css", get(pages::stylesheet))
        .route("/static/favicon.svg", get(pages::favicon))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            pages::only_our_forms,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    // The API's description and its viewer (Swagger UI, vendored).
    let docs = Router::from(
        utoipa_swagger_ui::SwaggerUi::new(openapi::VIEWER).url(openapi::DOCUMENT, document),
    )
    .layer(axum::middleware::map_response(
        |mut response: axum::response::Response| async move {
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(peerdex_shared::web::API_VIEWER_CSP),
            );
            response
        },
    ));
    Router::new()
        .merge(api)
        .merge(metrics_route)
        .merge(page_routes)
        .merge(docs)
        // After routing, so that the matched pattern (not the path as sent) is the label.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .fallback(unmatched)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// The OpenAPI document of the API (what `GET /api/openapi.json` serves).
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_routes(&crate::config::Config::default())
        .split_for_parts()
        .1
}

/// The API's routes, each registered with its `#[utoipa::path]` description: the router and
/// the OpenAPI document are made by the same calls, so neither can have a route the other lacks.
/// Layers (body limits, timeouts) come from `config`; they do not change the document.
fn api_routes(config: &crate::config::Config) -> OpenApiRouter<Arc<AppState>> {
    let limits = &config.limits;
    let timeout = Duration::from_secs(config.http.request_timeout_secs);
    // List bodies are streamed and bounded by `lists` itself (raw and decompressed bytes).
    let list_routes = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(put_list, delete_list))
        .routes(utoipa_axum::routes!(post_delta));
    let other_routes = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(healthz))
        .routes(utoipa_axum::routes!(challenge))
        .routes(utoipa_axum::routes!(register))
        .routes(utoipa_axum::routes!(heartbeat))
        .routes(utoipa_axum::routes!(logout))
        .routes(utoipa_axum::routes!(search))
        .routes(utoipa_axum::routes!(sources))
        .routes(utoipa_axum::routes!(browse))
        .routes(utoipa_axum::routes!(browse_folders))
        .routes(utoipa_axum::routes!(folder))
        .routes(utoipa_axum::routes!(stats))
        .routes(utoipa_axum::routes!(transfers::transfer))
        .routes(utoipa_axum::routes!(accounts::create_account))
        .routes(utoipa_axum::routes!(accounts::login, accounts::logout))
        .routes(utoipa_axum::routes!(accounts::whoami))
        .routes(utoipa_axum::routes!(accounts::create_invite))
        .routes(utoipa_axum::routes!(accounts::create_api_key))
        .routes(utoipa_axum::routes!(accounts::admin_accounts))
        .routes(utoipa_axum::routes!(accounts::admin_account))
        .routes(utoipa_axum::routes!(
            accounts::admin_groups,
            accounts::admin_create_group
        ))
        .routes(utoipa_axum::routes!(
            accounts::admin_add_group_member,
            accounts::admin_remove_group_member
        ))
        .routes(utoipa_axum::routes!(accounts::admin_audit))
        .routes(utoipa_axum::routes!(
            accounts::admin_bans,
            accounts::admin_add_ban
        ))
        .routes(utoipa_axum::routes!(accounts::admin_remove_ban))
        .routes(utoipa_axum::routes!(accounts::admin_takedown))
        .routes(utoipa_axum::routes!(reports::admin_quarantine))
        .routes(utoipa_axum::routes!(reports::admin_clear_quarantine))
        .routes(utoipa_axum::routes!(reports::post_report))
        .routes(utoipa_axum::routes!(reports::put_partials))
        .routes(utoipa_axum::routes!(social::contacts))
        .routes(utoipa_axum::routes!(
            social::add_contact,
            social::remove_contact
        ))
        .routes(utoipa_axum::routes!(social::accept_contact))
        .routes(utoipa_axum::routes!(social::decline_contact))
        .routes(utoipa_axum::routes!(social::blocks))
        .routes(utoipa_axum::routes!(social::block, social::unblock))
        .routes(utoipa_axum::routes!(social::messages, social::send_message))
        .routes(utoipa_axum::routes!(social::read_message))
        .routes(utoipa_axum::routes!(social::wishes, social::add_wish))
        .routes(utoipa_axum::routes!(social::remove_wish))
        .routes(utoipa_axum::routes!(social::rooms))
        .routes(utoipa_axum::routes!(social::join_room))
        .routes(utoipa_axum::routes!(social::leave_room))
        .routes(utoipa_axum::routes!(social::room_log, social::say))
        .routes(utoipa_axum::routes!(social::moderate_room))
        .routes(utoipa_axum::routes!(social::requests, social::ask))
        .routes(utoipa_axum::routes!(social::close_request))
        .routes(utoipa_axum::routes!(social::offer))
        .layer(DefaultBodyLimit::max(limits.max_json_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    // Long-lived: the control channel streams for hours, relays are upgraded connections.
    let open_ended = OpenApiRouter::new()
        .routes(utoipa_axum::routes!(transfers::control))
        .routes(utoipa_axum::routes!(transfers::relay))
        .routes(utoipa_axum::routes!(transfers::relay_accept))
        .routes(utoipa_axum::routes!(social::events))
        .merge(
            OpenApiRouter::new()
                .routes(utoipa_axum::routes!(social::report))
                .layer(DefaultBodyLimit::max(limits.max_json_bytes)),
        );
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(list_routes)
        .merge(open_ended)
        .merge(other_routes)
}

// ---- metrics ---------------------------------------------------------------------------------

/// Counts every routed request by its pattern, method and status, and times it to its head.
async fn count_request(
    State(state): State<Arc<AppState>>,
    route: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.observe_request(
        route.as_str(),
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Requests no route matched: counted under one label, whatever their path.
async fn unmatched(State(state): State<Arc<AppState>>, method: axum::http::Method) -> ApiError {
    state
        .metrics
        .observe_request("unmatched", &method, 404, Duration::ZERO);
    ApiError::not_found("no such endpoint")
}

/// `GET /metrics` (PROTOCOL §13): open to loopback clients, to others with `metrics.token`
/// as a bearer token, and answered 404 where neither applies (it does not say it exists).
async fn metrics(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    let config = &state.config.metrics;
    if !config.enabled {
        return Err(ApiError::not_found("no such endpoint"));
    }
    // A request a proxy forwarded is not local, even from a proxy on this machine that is not
    // in `trusted_proxies` (whose clients would all look like loopback).
    let forwarded = headers.contains_key("x-forwarded-for") || headers.contains_key("forwarded");
    let from_loopback = client_ip(&state, remote, &headers).is_loopback()
        && (!forwarded || state.is_trusted_proxy(remote.ip().to_canonical()));
    if !from_loopback {
        let Some(expected) = config.token.as_deref() else {
            return Err(ApiError::not_found("no such endpoint"));
        };
        match accounts::bearer(&headers) {
            None => {
                return Err(ApiError::unauthorized(
                    "metrics need the bearer token set as metrics.token",
                ));
            }
            Some(token) if !crate::limits::same_secret(token, expected.trim()) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    "wrong metrics token",
                ));
            }
            Some(_) => {}
        }
    }
    let state2 = state.clone();
    let text = run_blocking(move || {
        sample_live_state(&state2)?;
        state2.metrics.encode().map_err(ApiError::internal)
    })
    .await??;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// Sets the gauges of state that is kept elsewhere, just before they are read.
fn sample_live_state(state: &AppState) -> Result<(), ApiError> {
    use crate::metrics::PeerStateLabel;
    let metrics = &state.metrics;
    let progress = &state.store.progress;
    let committed = progress.committed_seq();
    let logged = state.store.db.last_index_op()?;
    metrics.index_committed_seq.set(committed);
    metrics.index_last_commit.set(progress.committed_at_secs());
    metrics
        .index_pending_ops
        .set(logged.saturating_sub(committed).max(0));
    metrics
        .index_docs
        .set(state.store.index.num_docs().min(i64::MAX as u64) as i64);
    let counts = state.counts()?;
    metrics
        .peers
        .get_or_create(&PeerStateLabel {
            state: "registered",
        })
        .set(counts.peers.min(i64::MAX as u64) as i64);
    metrics
        .peers
        .get_or_create(&PeerStateLabel { state: "online" })
        .set(state.presence.snapshot().count().min(i64::MAX as u64) as i64);
    metrics
        .control_channels
        .set(state.firewall.control.open_channels() as i64);
    metrics
        .event_streams
        .set(state.events.open_streams() as i64);
    metrics.wishes.set(state.wishes.filed() as i64);
    metrics.sample_process();
    Ok(())
}

// ---- helpers ---------------------------------------------------------------------------------

/// Seconds since the Unix epoch.
pub(crate) fn unix_now_secs() -> u64 {
    crate::db::unix_now().max(0) as u64
}

pub(crate) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::limit(
            "max_json_bytes",
            "request body is too large (max_json_bytes)",
        ),
        _ => ApiError::bad_request(format!("reading body: {e}")),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid json: {e}")))
}

/// `Path<T>` whose rejection is an [`ApiError`] (JSON, like every API error), not axum's plain
/// text: a path segment that is not valid UTF-8 or not a number is the caller's mistake.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(e) if e.status().is_client_error() => Err(ApiError::bad_request(format!(
                "invalid path: {}",
                e.body_text()
            ))),
            Err(e) => Err(ApiError::internal(e.body_text())),
        }
    }
}

/// `Query<T>` whose rejection is an [`ApiError`] (400 with a JSON body).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e: QueryRejection| {
                ApiError::bad_request(format!("invalid query parameters: {}", e.body_text()))
            })
    }
}

fn parse_peer_id(text: &str) -> Result<PeerId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid peer id in path: {e}")))
}

/// The client's IP: the connection's address, or `X-Forwarded-For` when the connection comes from
/// a configured trusted proxy (the rightmost address that is not itself a trusted proxy).
pub(crate) fn client_ip(state: &AppState, remote: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let direct = remote.ip().to_canonical();
    if !state.is_trusted_proxy(direct) {
        return direct;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !state.is_trusted_proxy(*ip))
        .unwrap_or(direct)
}

/// The peer a session token belongs to.
pub struct Authed(pub PeerRow);

impl FromRequestParts<Arc<AppState>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = accounts::bearer(&parts.headers)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token; register first"))?;
        let hash = *blake3::hash(token.as_bytes()).as_bytes();
        let db = state.store.db.clone();
        let peer = run_blocking(move || db.peer_by_session(&hash)).await??;
        peer.map(Authed).ok_or_else(|| {
            ApiError::unauthorized("unknown or expired session token; register again")
        })
    }
}

impl Authed {
    /// Allows the call only on the caller's own peer.
    fn require_self(&self, path_peer: &str) -> Result<&PeerRow, ApiError> {
        let target = parse_peer_id(path_peer)?;
        if target != self.0.key {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "a peer can only change its own state",
            ));
        }
        Ok(&self.0)
    }
}

// ---- identity and presence ---------------------------------------------------------------------

/// Is the server up.
///
/// `GET /healthz` (PROTOCOL §3.1): answers while the server runs; no authentication.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::HEALTHZ,
    tag = "server",
    responses((status = 200, description = "The server is up.", body = serde_json::Value), ApiErrors)
)]
async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Get a registration nonce.
///
/// `POST /api/v1/challenge` (PROTOCOL §3.2): a single-use nonce, valid briefly, that the peer
/// signs with its key to register.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::CHALLENGE,
    tag = "peers",
    responses((status = 200, description = "A nonce to sign for registration.", body = ChallengeResponse), ApiErrors)
)]
async fn challenge(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let ip = client_ip(&state, remote, &headers);
    if !state.guards.registrations.allow(&ip) {
        return Err(rate_limited("too many registrations from this address"));
    }
    let nonce = state.guards.nonces.issue().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "too many pending challenges",
        )
    })?;
    Ok(Json(ChallengeResponse {
        nonce,
        expires_in_secs: NONCE_TTL.as_secs(),
    }))
}

fn rate_limited(message: &str) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        message,
    )
}

/// Register a peer (sign the nonce with its key).
///
/// `POST /api/v1/register` (PROTOCOL §3.3): proves the key by its signature over the nonce, takes
/// the nickname, starts the connect-back probe of the announced port, and answers a session
/// token with the list version the server holds (so an unchanged list is not sent again).
#[utoipa::path(
    post,
    path = peerdex_shared::routes::REGISTER,
    tag = "peers",
    request_body = RegisterRequest,
    responses((status = 200, description = "Registered: the session token and what the server holds of this peer.", body = RegisterResponse), ApiErrors)
)]
async fn register(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let request: RegisterRequest = json_body(body)?;
    validate_nickname(&request.nickname)
        .map_err(|e| ApiError::bad_request(format!("nickname {e}")))?;
    let ip = client_ip(&state, remote, &headers);
    if !state.guards.registrations.allow(&ip) {
        return Err(rate_limited("too many registrations from this address"));
    }
    if !state.guards.nonces.consume(&request.nonce) {
        return Err(ApiError::unauthorized(
            "unknown, used or expired nonce; ask for a new challenge",
        ));
    }
    let message = registration_message(
        &request.nonce,
        &request.peer_id,
        &request.nickname,
        request.port,
    );
    request
        .peer_id
        .verify(&message, &request.signature)
        .map_err(|e| ApiError::unauthorized(format!("registration refused: {e}")))?;

    let db = state.store.db.clone();
    let key = request.peer_id;
    let account = run_blocking(move || db.account_of_device(&key)).await??;
    accounts::refuse_banned(
        &state,
        crate::db::BanSubject {
            account: account.as_ref().map(|a| a.name.clone()),
            peer: Some(request.peer_id),
            ip: Some(ip),
            nick: Some(request.nickname.clone()),
        },
    )
    .await?;
    if account.is_some_and(|account| account.disabled) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this device belongs to a disabled account",
        ));
    }
    let token = random_hex::<32>().ok_or_else(|| ApiError::internal("no randomness"))?;
    let session_hash = *blake3::hash(token.as_bytes()).as_bytes();
    let db = state.store.db.clone();
    let ip_text = ip.to_string();
    let (key, nickname, port) = (request.peer_id, request.nickname.clone(), request.port);
    let transport = request.transport;
    let peer = run_blocking(move || {
        db.register(&key, &nickname, &ip_text, port, transport, &session_hash)
    })
    .await??;
    state.presence.touch(peer.id);
    info!(peer = %peer.key.fmt_short(), nickname = %peer.nickname, %ip, port, "peer registered");
    if port != 0 {
        crate::probe::verify_in_background(&state, &peer, ip);
        // The old session's control channel goes with it; the agent opens a new one.
        state.firewall.control.detach(&peer.key);
    }
    Ok(Json(RegisterResponse {
        session_token: token,
        peer_id: peer.key,
        list_version: peer.list_version,
        entries: peer.entries,
        heartbeat_interval_secs: state.config.presence.heartbeat_interval_secs,
        offline_after_secs: state.config.presence.offline_after_secs,
        advertised_addr: advertised(peer.ip.as_deref(), peer.port),
        reachability: peer.reachability,
        server_key: Some(state.firewall.server_key.public()),
    }))
}

/// Stay online.
///
/// `POST /api/v1/peers/{peer}/heartbeat` (PROTOCOL §3.5): keeps the peer online; answers how
/// soon the next one is due and what the probe found.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::HEARTBEAT,
    tag = "peers",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex.")),
    responses((status = 200, description = "Still online.", body = HeartbeatResponse), ApiErrors),
    security(("peer_session" = []))
)]
async fn heartbeat(
    State(state): State<Arc<AppState>>,
    ApiPath(peer): ApiPath<String>,
    authed: Authed,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let peer = authed.require_self(&peer)?;
    state.presence.touch(peer.id);
    Ok(Json(HeartbeatResponse {
        heartbeat_interval_secs: state.config.presence.heartbeat_interval_secs,
        list_version: peer.list_version,
        reachability: peer.reachability,
    }))
}

/// End a peer session (go offline).
///
/// `DELETE /api/v1/peers/{peer}/session` (PROTOCOL §3.6): the peer goes offline at once.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::SESSION,
    tag = "peers",
    operation_id = "end_session",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex.")),
    responses((status = 204, description = "The session ended; the peer is offline."), ApiErrors),
    security(("peer_session" = []))
)]
async fn logout(
    State(state): State<Arc<AppState>>,
    ApiPath(peer): ApiPath<String>,
    authed: Authed,
) -> Result<StatusCode, ApiError> {
    let peer = authed.require_self(&peer)?;
    state.presence.mark_offline(peer.id);
    state.partials.replace(peer.id, Vec::new());
    // A logged-out peer's control channel would keep it online with its pings.
    state.firewall.control.detach(&peer.key);
    let (db, id) = (state.store.db.clone(), peer.id);
    run_blocking(move || db.end_session(id)).await??;
    Ok(StatusCode::NO_CONTENT)
}

// ---- lists ---------------------------------------------------------------------------------------

/// Query parameters of a full list upload.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct FullParams {
    /// The list version this upload makes current (greater than the server's).
    version: u64,
}

/// Query parameters of a list delta.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DeltaParams {
    /// The version the delta applies to: the server's current version for this peer.
    base: u64,
    /// The version the delta makes current.
    version: u64,
}

/// Upload the full file list.
///
/// `PUT /api/v1/peers/{peer}/list?version=V` (PROTOCOL §3.7): replaces the peer's whole list
/// (NDJSON, optionally gzip or zstd), streamed and checked entry by entry; a bad entry refuses
/// the upload and keeps the previous list.
#[utoipa::path(
    put,
    path = peerdex_shared::routes::LIST,
    tag = "peers",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex."), FullParams, ("content-encoding" = Option<String>, Header, description = "`gzip` or `zstd` for a compressed body; absent for none.")),
    request_body(content = String, content_type = "application/x-ndjson", description = "The list, one JSON object per line (PROTOCOL §3.7)"),
    responses((status = 200, description = "The list is stored and indexed.", body = peerdex_shared::api::SyncResponse), ApiErrors),
    security(("peer_session" = []))
)]
async fn put_list(
    State(state): State<Arc<AppState>>,
    ApiPath(peer): ApiPath<String>,
    authed: Authed,
    ApiQuery(params): ApiQuery<FullParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<peerdex_shared::api::SyncResponse>, ApiError> {
    let peer = authed.require_self(&peer)?;
    state.presence.touch(peer.id);
    lists::full_upload(&state, peer, params.version, &headers, body)
        .await
        .map(Json)
}

/// Upload changes to the file list.
///
/// `POST /api/v1/peers/{peer}/list/delta?base=B&version=V` (PROTOCOL §3.8): applies adds and
/// removes to the list the server holds at version `base` (409 `version_mismatch` otherwise).
#[utoipa::path(
    post,
    path = peerdex_shared::routes::LIST_DELTA,
    tag = "peers",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex."), DeltaParams, ("content-encoding" = Option<String>, Header, description = "`gzip` or `zstd` for a compressed body; absent for none.")),
    request_body(content = String, content_type = "application/x-ndjson", description = "The delta, one JSON operation per line (PROTOCOL §3.8)"),
    responses((status = 200, description = "The delta is applied.", body = peerdex_shared::api::SyncResponse), ApiErrors),
    security(("peer_session" = []))
)]
async fn post_delta(
    State(state): State<Arc<AppState>>,
    ApiPath(peer): ApiPath<String>,
    authed: Authed,
    ApiQuery(params): ApiQuery<DeltaParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<peerdex_shared::api::SyncResponse>, ApiError> {
    let peer = authed.require_self(&peer)?;
    state.presence.touch(peer.id);
    lists::delta_upload(&state, peer, params.base, params.version, &headers, body)
        .await
        .map(Json)
}

/// Withdraw the file list.
///
/// `DELETE /api/v1/peers/{peer}/list` (PROTOCOL §3.9): withdraws every file of the peer.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::LIST,
    tag = "peers",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex.")),
    responses((status = 204, description = "The list is gone."), ApiErrors),
    security(("peer_session" = []))
)]
async fn delete_list(
    State(state): State<Arc<AppState>>,
    ApiPath(peer): ApiPath<String>,
    authed: Authed,
) -> Result<StatusCode, ApiError> {
    let peer = authed.require_self(&peer)?;
    let (db, id) = (state.store.db.clone(), peer.id);
    run_blocking(move || db.drop_list(id)).await??;
    state.store.nudger.nudge();
    Ok(StatusCode::NO_CONTENT)
}

// ---- search ---------------------------------------------------------------------------------------

/// Query parameters of a search (PROTOCOL §3.10).
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// The query text (PROTOCOL §5: words, `"phrases"`, `-exclusions`, `field:value`), at
    /// most `search.max_query_bytes` bytes. Required in effect: without it, 400.
    pub(crate) q: Option<String>,
    /// Only files with this extension (a leading `.` is ignored; 1–16 letters or digits).
    ext: Option<String>,
    /// `audio`, `video`, `image`, `document`, `archive` or `other` (case-insensitive).
    kind: Option<String>,
    /// Smallest size in bytes (inclusive).
    min_size: Option<u64>,
    /// Largest size in bytes (inclusive).
    max_size: Option<u64>,
    /// Only files tagged with at least this bitrate, kbit/s.
    min_bitrate: Option<u32>,
    /// Shortest tagged duration in seconds (inclusive).
    min_duration: Option<u32>,
    /// Longest tagged duration in seconds (inclusive).
    max_duration: Option<u32>,
    /// `1`/`true`: only lossless audio; `0`/`false`: only lossy.
    lossless: Option<String>,
    /// Only files tagged with this year.
    year: Option<u32>,
    /// Page size, clamped to 1…`search.max_limit` (default 20).
    pub(crate) limit: Option<u64>,
    /// Results to skip, at most `search.max_offset` (default 0).
    pub(crate) offset: Option<u64>,
}

impl SearchParams {
    /// The media filters asked for (400 for a `lossless` that is not a yes or no).
    fn media(&self) -> Result<MediaFilters, ApiError> {
        let lossless = match self.lossless.as_deref() {
            None => None,
            Some("1" | "true" | "yes") => Some(true),
            Some("0" | "false" | "no") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "lossless={other:?}: use 1 (lossless only) or 0 (lossy only)"
                )));
            }
        };
        Ok(MediaFilters {
            min_bitrate: self.min_bitrate,
            min_duration: self.min_duration,
            max_duration: self.max_duration,
            lossless,
            year: self.year,
        })
    }
}

/// A search's query and filters, checked (the search route and wishes share them).
pub(crate) struct SearchFilters {
    pub(crate) plan: query::QueryPlan,
    pub(crate) ext: Option<String>,
    pub(crate) kind: Option<FileKind>,
    pub(crate) min_size: Option<u64>,
    pub(crate) max_size: Option<u64>,
    pub(crate) media: MediaFilters,
    max_prefix_expansions: u32,
}

impl SearchFilters {
    /// The index search for them, asking for `want` groups.
    pub(crate) fn spec(&self, want: usize, scope: Arc<crate::scope::Scope>) -> SearchSpec {
        SearchSpec {
            plan: self.plan.clone(),
            ext: self.ext.clone(),
            kind: self.kind,
            min_size: self.min_size,
            max_size: self.max_size,
            media: self.media,
            max_prefix_expansions: self.max_prefix_expansions,
            want,
            scope,
        }
    }
}

/// Checks a query and its filters under the search caps (400 naming the problem).
pub(crate) fn search_filters(
    config: &crate::config::SearchConfig,
    text: &str,
    ext: Option<&str>,
    kind: Option<&str>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    media: MediaFilters,
) -> Result<SearchFilters, ApiError> {
    let plan = query::parse(
        text,
        &QueryLimits {
            max_query_bytes: config.max_query_bytes,
            max_terms: config.max_query_terms,
        },
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let ext = match ext.map(|e| e.trim_start_matches('.').to_lowercase()) {
        Some(e) if e.is_empty() || e.len() > 16 || !e.chars().all(char::is_alphanumeric) => {
            return Err(ApiError::bad_request(format!("invalid extension {e:?}")));
        }
        other => other,
    };
    let kind = match kind {
        Some(k) => Some(FileKind::parse(k).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown kind {k:?}; use one of audio, video, image, document, archive, other"
            ))
        })?),
        None => None,
    };
    if let (Some(min), Some(max)) = (min_size, max_size)
        && min > max
    {
        return Err(ApiError::bad_request("min_size is greater than max_size"));
    }
    if let (Some(min), Some(max)) = (media.min_duration, media.max_duration)
        && min > max
    {
        return Err(ApiError::bad_request(
            "min_duration is greater than max_duration",
        ));
    }
    if let (Some(asked), Some(in_query)) = (media.year, plan.year)
        && asked != in_query
    {
        return Err(ApiError::bad_request(format!(
            "year={asked} and year:{in_query} in the query disagree"
        )));
    }
    Ok(SearchFilters {
        plan,
        ext,
        kind,
        min_size,
        max_size,
        media,
        max_prefix_expansions: config.max_prefix_expansions,
    })
}

/// How long a search waits for a free slot before the server says it is busy.
const SEARCH_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// Search files by keywords and filters.
///
/// `GET /api/v1/search` (PROTOCOL §3.10): keyword search over the files of online peers that
/// the caller may see, one hit per distinct content.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::SEARCH,
    tag = "search",
    params(SearchParams),
    responses((status = 200, description = "One hit per content the caller may see, online sources first.", body = SearchResponse), ApiErrors),
    security((), ("account" = []), ("peer_session" = []))
)]
async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<SearchResponse>, ApiError> {
    Ok(Json(run_search(&state, caller, params).await?))
}

/// A search as `caller` may see it: the API's answer and the search page's.
pub(crate) async fn run_search(
    state: &Arc<AppState>,
    caller: Caller,
    params: SearchParams,
) -> Result<SearchResponse, ApiError> {
    let scope = caller.scope(state, "search").await?;
    let config = &state.config.search;
    let filters = search_filters(
        config,
        params.q.as_deref().unwrap_or(""),
        params.ext.as_deref(),
        params.kind.as_deref(),
        params.min_size,
        params.max_size,
        params.media()?,
    )?;
    let limit = params.limit.unwrap_or(20).clamp(1, config.max_limit);
    let offset = params.offset.unwrap_or(0);
    if offset > config.max_offset {
        return Err(ApiError::bad_request(format!(
            "offset {offset} is over the limit of {} (max_offset); refine the query",
            config.max_offset
        )));
    }
    // Both are bounded above (max_offset, max_limit), so this is small.
    let spec = filters.spec((offset + limit) as usize, scope.clone());

    let _slot = tokio::time::timeout(SEARCH_QUEUE_WAIT, state.guards.search_slots.acquire())
        .await
        .map_err(|_| {
            state.metrics.search("busy");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "server busy; retry shortly",
            )
        })?
        .map_err(ApiError::internal)?;
    let started = Instant::now();
    let online = Arc::new(state.presence.snapshot());
    let request = search::SearchRequest {
        spec,
        offset,
        limit,
        max_sources: config.max_sources,
    };
    let state2 = state.clone();
    let page = run_blocking(move || {
        let viewer = caller.viewer(&state2, &scope);
        search::search(
            &state2.store.db,
            &state2.store.index,
            online,
            viewer,
            &request,
        )
    })
    .await
    .and_then(|page| page.map_err(ApiError::from));
    state
        .metrics
        .search(if page.is_ok() { "ok" } else { "error" });
    state
        .metrics
        .search_seconds
        .observe(started.elapsed().as_secs_f64());
    let search::SearchPage {
        total,
        total_exact,
        hits,
        folders,
        ..
    } = page?;
    Ok(SearchResponse {
        total,
        total_exact,
        offset,
        limit,
        hits,
        folders,
    })
}

/// The peers that hold a content.
///
/// `GET /api/v1/contents/{hash}/sources` (PROTOCOL §3.11): the online peers the caller may
/// fetch the content from, reachable ones first, with the size best supported by evidence.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::SOURCES,
    tag = "search",
    params(("hash" = peerdex_shared::FileHash, Path, description = "The content's BLAKE3 hash in hex.")),
    responses((status = 200, description = "The online peers that hold the content and that the caller may fetch from.", body = SourcesResponse), ApiErrors),
    security((), ("account" = []), ("peer_session" = []))
)]
async fn sources(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(hash): ApiPath<String>,
) -> Result<Json<SourcesResponse>, ApiError> {
    let hash: FileHash = hash
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid hash: {e}")))?;
    let scope = caller.scope(&state, "download").await?;
    let online = state.presence.snapshot();
    let state2 = state.clone();
    let max = state.config.search.max_sources.max(64);
    let partial = state.partials.holders(&hash);
    run_blocking(move || {
        let viewer = caller.viewer(&state2, &scope);
        let found = search::sources(&state2.store.db, &online, viewer, &hash, max)?;
        search::with_partial_sources(&state2.store.db, &online, viewer, &hash, found, partial)
    })
    .await??
    .map(Json)
    .ok_or_else(|| ApiError::not_found("no online peer has this content"))
}

/// A folder (release) and the peers that hold it.
///
/// `GET /api/v1/folders/{id}` (PROTOCOL §3.12b): a folder by its content identity, its files,
/// and the online peers that hold it (complete or not).
#[utoipa::path(
    get,
    path = peerdex_shared::routes::FOLDER,
    tag = "search",
    params(("id" = peerdex_shared::folder::FolderId, Path, description = "The folder's content identity.")),
    responses((status = 200, description = "The folder's files and the peers that hold it.", body = FolderResponse), ApiErrors),
    security((), ("account" = []), ("peer_session" = []))
)]
async fn folder(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<FolderResponse>, ApiError> {
    let id: FolderId = id
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid folder id: {e}")))?;
    let scope = caller.scope(&state, "download").await?;
    let online = state.presence.snapshot();
    let state2 = state.clone();
    let max = state.config.search.max_sources.max(64);
    run_blocking(move || {
        let viewer = caller.viewer(&state2, &scope);
        search::folder(&state2.store.db, &id, &online, viewer, max)
    })
    .await??
    .map(Json)
    .ok_or_else(|| ApiError::not_found("no online peer has this folder"))
}

/// Query parameters of a folder listing (PROTOCOL §3.12a).
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FolderListParams {
    /// `SHARE` or `SHARE/FOLDER/…`; empty or absent lists the peer's shares.
    pub(crate) path: Option<String>,
    /// Rows to skip (subfolders first, then files; default 0).
    pub(crate) offset: Option<u64>,
    /// Page size, clamped to 1…1000 (default 100).
    pub(crate) limit: Option<u64>,
}

fn browse_folder(row: &crate::db::FolderRow) -> BrowseFolder {
    BrowseFolder {
        share: row.share.clone(),
        path: row.path.clone(),
        files: row.files,
        bytes: row.bytes,
        id: row.content_id,
        summary: search::summary_of(row),
    }
}

/// One folder level of a peer's shares.
///
/// `GET /api/v1/peers/by-nick/{nick}/folders` (PROTOCOL §3.12a): subfolders, then files, of one
/// folder of the peer's shares, paged.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::BROWSE_FOLDERS,
    tag = "search",
    params(("nick" = String, Path, description = "The peer's nickname (case-insensitive; an earlier nickname of the same key works too)."), FolderListParams),
    responses((status = 200, description = "A page of one folder level of the peer's shares.", body = FolderListing), ApiErrors),
    security((), ("account" = []), ("peer_session" = []))
)]
async fn browse_folders(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(nick): ApiPath<String>,
    ApiQuery(params): ApiQuery<FolderListParams>,
) -> Result<Json<FolderListing>, ApiError> {
    let scope = caller.scope(&state, "read").await?;
    Ok(Json(list_folder(&state, scope, nick, params).await?))
}

/// One page of one folder of `nick`'s shares, as a viewer with `scope` may see it: the API's
/// answer and the sharer's page.
pub(crate) async fn list_folder(
    state: &Arc<AppState>,
    scope: Arc<crate::scope::Scope>,
    nick: String,
    params: FolderListParams,
) -> Result<FolderListing, ApiError> {
    validate_nickname(&nick).map_err(|e| ApiError::bad_request(format!("nickname {e}")))?;
    let limit = params
        .limit
        .unwrap_or(100)
        .clamp(1, MAX_BROWSE_LIMIT as u64) as usize;
    let offset = params.offset.unwrap_or(0) as usize;
    let path = params.path.unwrap_or_default();
    let path = path.trim_matches('/').to_string();
    let (share, dir) = match path.split_once('/') {
        Some((share, dir)) => (Some(share.to_string()), dir.to_string()),
        None if path.is_empty() => (None, String::new()),
        None => (Some(path.clone()), String::new()),
    };
    if let Some(share) = &share {
        peerdex_shared::validate::validate_share_name(share)
            .map_err(|e| ApiError::bad_request(format!("share {e}")))?;
    }
    let db = state.store.db.clone();
    let (peer, this, folders, files) = run_blocking(move || -> Result<_, ApiError> {
        let peer = db
            .peer_by_nickname(&nick)?
            .ok_or_else(|| ApiError::not_found(format!("no peer is called {nick:?}")))?;
        let visible = |acl| scope.lists(acl);
        let folders = db.subfolders(peer.id, share.as_deref(), &dir, &visible)?;
        let (this, files) = match &share {
            None => (None, Vec::new()),
            Some(share) => {
                let this = db.folder(peer.id, share, &dir)?;
                let files: Vec<BrowseEntry> = db
                    .folder_files(peer.id, share, &dir)?
                    .into_iter()
                    .filter(|f| scope.lists(f.acl))
                    .map(|f| BrowseEntry {
                        kind: FileKind::from_extension(&extension_of(&f.name)),
                        share: share.clone(),
                        path: if dir.is_empty() {
                            f.name
                        } else {
                            format!("{dir}/{}", f.name)
                        },
                        size: f.size,
                        mtime: f.mtime,
                        hash: f.hash,
                        tags: f.tags,
                    })
                    .collect();
                if this.is_none() && files.is_empty() && folders.is_empty() {
                    return Err(ApiError::not_found(format!(
                        "{nick} shares no folder {share}/{dir}"
                    )));
                }
                (this, files)
            }
        };
        Ok((peer, this, folders, files))
    })
    .await??;
    let mut files = files;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let total = folders.len() + files.len();
    let folders_page: Vec<BrowseFolder> = folders
        .iter()
        .skip(offset)
        .take(limit)
        .map(browse_folder)
        .collect();
    let files_page: Vec<BrowseEntry> = files
        .into_iter()
        .skip(offset.saturating_sub(folders.len()))
        .take(limit - folders_page.len())
        .collect();
    let shown = offset + folders_page.len() + files_page.len();
    Ok(FolderListing {
        online: state.presence.is_online(peer.id),
        peer_id: peer.key,
        nickname: peer.nickname,
        path,
        folder: this.as_ref().map(browse_folder),
        folders: folders_page,
        files: files_page,
        next_offset: (shown < total).then_some(shown as u64),
    })
}

/// Query parameters of a flat listing of a peer's files.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct BrowseParams {
    /// The `next_cursor` of the previous page (`SHARE/PATH` of its last entry).
    after: Option<String>,
    /// Page size, clamped to 1…1000 (default 100).
    limit: Option<i64>,
}

/// Largest browse page.
const MAX_BROWSE_LIMIT: i64 = 1000;

/// A page of a peer's files.
///
/// `GET /api/v1/peers/by-nick/{nick}/files` (PROTOCOL §3.12): a page of the peer's files the
/// caller may see, by path.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::BROWSE,
    tag = "search",
    params(("nick" = String, Path, description = "The peer's nickname (case-insensitive; an earlier nickname of the same key works too)."), BrowseParams),
    responses((status = 200, description = "A page of the peer's files the caller may see.", body = BrowseResponse), ApiErrors),
    security((), ("account" = []), ("peer_session" = []))
)]
async fn browse(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(nick): ApiPath<String>,
    ApiQuery(params): ApiQuery<BrowseParams>,
) -> Result<Json<BrowseResponse>, ApiError> {
    let scope = caller.scope(&state, "read").await?;
    validate_nickname(&nick).map_err(|e| ApiError::bad_request(format!("nickname {e}")))?;
    let limit = params.limit.unwrap_or(100).clamp(1, MAX_BROWSE_LIMIT);
    let after = match params.after {
        Some(cursor) => Some(
            cursor
                .split_once('/')
                .map(|(s, p)| (s.to_string(), p.to_string()))
                .ok_or_else(|| ApiError::bad_request("invalid cursor"))?,
        ),
        None => None,
    };
    let db = state.store.db.clone();
    let (peer, rows, entries) = run_blocking(move || -> Result<_, ApiError> {
        let peer = db
            .peer_by_nickname(&nick)?
            .ok_or_else(|| ApiError::not_found(format!("no peer is called {nick:?}")))?;
        let rows = db.browse(
            peer.id,
            after.as_ref().map(|(s, p)| (s.as_str(), p.as_str())),
            limit,
            &scope,
        )?;
        let entries = db.visible_entries(peer.id, &scope)?;
        Ok((peer, rows, entries))
    })
    .await??;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| format!("{}/{}", r.share, r.path)))
        .flatten();
    let files = rows
        .into_iter()
        .map(|r| BrowseEntry {
            kind: FileKind::from_extension(&extension_of(&r.path)),
            share: r.share,
            path: r.path,
            size: r.size,
            mtime: r.mtime,
            hash: r.hash,
            tags: r.tags,
        })
        .collect();
    Ok(Json(BrowseResponse {
        online: state.presence.is_online(peer.id),
        peer_id: peer.key,
        nickname: peer.nickname,
        entries,
        files,
        next_cursor,
    }))
}

/// Counts of peers, files and contents.
///
/// `GET /api/v1/stats` (PROTOCOL §3.13): counts of peers, files and contents.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::STATS,
    tag = "server",
    responses((status = 200, description = "Counts of peers, files and contents.", body = StatsResponse), ApiErrors)
)]
async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<StatsResponse>, ApiError> {
    let state2 = state.clone();
    let counts = run_blocking(move || state2.counts()).await??;
    Ok(Json(StatsResponse {
        peers_online: state.presence.snapshot().count(),
        peers_known: counts.peers,
        entries: counts.entries,
        distinct_contents: counts.contents,
    }))
}
