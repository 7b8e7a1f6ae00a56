//! HTTP routes of the index server (documented in `docs/PROTOCOL.md`).
//!
//! Handlers parse and check input, then call the store and index on blocking threads. This module
//! never names a rusqlite or tantivy type.

pub mod accounts;
mod admin_pages;
mod error;
mod lists;
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
use axum::routing::{delete, get, post, put};
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

pub use accounts::Caller;
pub use error::ApiError;

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
    let limits = &state.config.limits;
    // List bodies are streamed and bounded by `lists` itself (raw and decompressed bytes).
    let list_routes = Router::new()
        .route(routes::LIST, put(put_list).delete(delete_list))
        .route(routes::LIST_DELTA, post(post_delta));
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    let other_routes = Router::new()
        .route(routes::HEALTHZ, get(healthz))
        .route(routes::CHALLENGE, post(challenge))
        .route(routes::REGISTER, post(register))
        .route(routes::HEARTBEAT, post(heartbeat))
        .route(routes::SESSION, delete(logout))
        .route(routes::SEARCH, get(search))
        .route(routes::SOURCES, get(sources))
        .route(routes::BROWSE, get(browse))
        .route(routes::BROWSE_FOLDERS, get(browse_folders))
        .route(routes::FOLDER, get(folder))
        .route(routes::STATS, get(stats))
        .route(routes::TRANSFERS, post(transfers::transfer))
        .route(routes::ACCOUNTS, post(accounts::create_account))
        .route(
            routes::LOGIN,
            post(accounts::login).delete(accounts::logout),
        )
        .route(routes::WHOAMI, get(accounts::whoami))
        .route(routes::INVITES, post(accounts::create_invite))
        .route(routes::API_KEYS, post(accounts::create_api_key))
        .route(routes::ADMIN_ACCOUNTS, get(accounts::admin_accounts))
        .route(routes::ADMIN_ACCOUNT, post(accounts::admin_account))
        .route(
            routes::ADMIN_GROUPS,
            get(accounts::admin_groups).post(accounts::admin_create_group),
        )
        .route(
            routes::ADMIN_GROUP_MEMBER,
            put(accounts::admin_group_member).delete(accounts::admin_group_member),
        )
        .route(routes::ADMIN_AUDIT, get(accounts::admin_audit))
        .route(
            routes::ADMIN_BANS,
            get(accounts::admin_bans).post(accounts::admin_add_ban),
        )
        .route(routes::ADMIN_BAN, delete(accounts::admin_remove_ban))
        .route(routes::ADMIN_TAKEDOWNS, post(accounts::admin_takedown))
        .route(routes::ADMIN_QUARANTINE, get(reports::admin_quarantine))
        .route(
            routes::ADMIN_QUARANTINE_PEER,
            delete(reports::admin_clear_quarantine),
        )
        .route(routes::REPORTS, post(reports::post_report))
        .route(routes::PARTIALS, put(reports::put_partials))
        .route(routes::CONTACTS, get(social::contacts))
        .route(
            routes::CONTACT,
            put(social::add_contact).delete(social::remove_contact),
        )
        .route(routes::CONTACT_ACCEPT, post(social::accept_contact))
        .route(routes::CONTACT_DECLINE, post(social::decline_contact))
        .route(routes::BLOCKS, get(social::blocks))
        .route(routes::BLOCK, put(social::block).delete(social::unblock))
        .route(
            routes::MESSAGES,
            get(social::messages).post(social::send_message),
        )
        .route(routes::MESSAGE_READ, post(social::read_message))
        .route(routes::WISHES, get(social::wishes).post(social::add_wish))
        .route(routes::WISH, delete(social::remove_wish))
        .route(routes::ROOMS, get(social::rooms))
        .route(routes::ROOM_JOIN, post(social::join_room))
        .route(routes::ROOM_LEAVE, post(social::leave_room))
        .route(routes::ROOM_LINES, get(social::room_log).post(social::say))
        .route(routes::ROOM_MODERATE, post(social::moderate_room))
        .route(routes::REQUESTS, get(social::requests).post(social::ask))
        .route(routes::REQUEST, delete(social::close_request))
        .route(routes::REQUEST_OFFERS, post(social::offer))
        .layer(DefaultBodyLimit::max(limits.max_json_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ));
    let metrics_route = Router::new().route(routes::METRICS, get(metrics));
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
    // Long-lived: the control channel streams for hours, relays are upgraded connections.
    let open_ended = Router::new()
        .route(routes::CONTROL, get(transfers::control))
        .route(routes::RELAY, get(transfers::relay))
        .route(routes::RELAY_ACCEPT, get(transfers::relay_accept))
        .route(
            routes::EVENTS,
            get(social::events)
                .post(social::report)
                .layer(DefaultBodyLimit::max(limits.max_json_bytes)),
        );
    Router::new()
        .merge(list_routes)
        .merge(open_ended)
        .merge(other_routes)
        .merge(metrics_route)
        .merge(page_routes)
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

fn query_params<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {}", e.body_text())))
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

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

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

async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Path(peer): Path<String>,
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

async fn logout(
    State(state): State<Arc<AppState>>,
    Path(peer): Path<String>,
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

#[derive(Deserialize)]
struct FullParams {
    version: u64,
}

#[derive(Deserialize)]
struct DeltaParams {
    base: u64,
    version: u64,
}

async fn put_list(
    State(state): State<Arc<AppState>>,
    Path(peer): Path<String>,
    authed: Authed,
    params: Result<Query<FullParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<peerdex_shared::api::SyncResponse>, ApiError> {
    let peer = authed.require_self(&peer)?;
    let params = query_params(params)?;
    state.presence.touch(peer.id);
    lists::full_upload(&state, peer, params.version, &headers, body)
        .await
        .map(Json)
}

async fn post_delta(
    State(state): State<Arc<AppState>>,
    Path(peer): Path<String>,
    authed: Authed,
    params: Result<Query<DeltaParams>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<peerdex_shared::api::SyncResponse>, ApiError> {
    let peer = authed.require_self(&peer)?;
    let params = query_params(params)?;
    state.presence.touch(peer.id);
    lists::delta_upload(&state, peer, params.base, params.version, &headers, body)
        .await
        .map(Json)
}

async fn delete_list(
    State(state): State<Arc<AppState>>,
    Path(peer): Path<String>,
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
#[derive(Deserialize, Default)]
pub(crate) struct SearchParams {
    pub(crate) q: Option<String>,
    ext: Option<String>,
    kind: Option<String>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    min_bitrate: Option<u32>,
    min_duration: Option<u32>,
    max_duration: Option<u32>,
    lossless: Option<String>,
    year: Option<u32>,
    pub(crate) limit: Option<u64>,
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

async fn search(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    Ok(Json(
        run_search(&state, caller, query_params(params)?).await?,
    ))
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

async fn sources(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(hash): Path<String>,
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

async fn folder(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
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
#[derive(Deserialize, Default)]
pub(crate) struct FolderListParams {
    pub(crate) path: Option<String>,
    pub(crate) offset: Option<u64>,
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

async fn browse_folders(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(nick): Path<String>,
    params: Result<Query<FolderListParams>, QueryRejection>,
) -> Result<Json<FolderListing>, ApiError> {
    let params = query_params(params)?;
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

#[derive(Deserialize)]
struct BrowseParams {
    after: Option<String>,
    limit: Option<i64>,
}

/// Largest browse page.
const MAX_BROWSE_LIMIT: i64 = 1000;

async fn browse(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(nick): Path<String>,
    params: Result<Query<BrowseParams>, QueryRejection>,
) -> Result<Json<BrowseResponse>, ApiError> {
    let params = query_params(params)?;
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
