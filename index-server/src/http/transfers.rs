//! Routes that help firewalled peers (PROTOCOL §8): the control channel an agent keeps open, the
//! reverse-connection request of a downloader, and the two ends of a relay session.

use super::openapi::ApiErrors;
use super::{ApiPath, ApiQuery};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::OnUpgrade;
use peerdex_shared::api::{
    ControlMessage, ErrorCode, Ticket, TicketKind, TransferRequest, TransferResponse,
};
use peerdex_shared::peer::{RELAY_PROTOCOL, peer_bucket};
use peerdex_shared::{FileHash, PeerId};
use serde::Deserialize;
use tracing::{Instrument, info, info_span, warn};

use super::{ApiError, Authed, Caller, client_ip, json_body, run_blocking};
use crate::limits::random_hex;
use crate::probe::ProbeError;
use crate::state::AppState;
use crate::transfers::RelayRefusal;

/// Longest token a downloader may choose.
const MAX_TOKEN_LEN: usize = 64;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn check_token(token: &str) -> Result<(), ApiError> {
    if token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ApiError::bad_request(
            "token must be 1 to 64 ASCII letters or digits",
        ));
    }
    Ok(())
}

/// Whether the caller may fetch `hash` from `source` (see [`crate::search::may_fetch`]).
async fn may_fetch(
    state: &Arc<AppState>,
    scope: &Arc<crate::scope::Scope>,
    hash: FileHash,
    source: PeerId,
) -> Result<bool, ApiError> {
    let (db, scope) = (state.store.db.clone(), scope.clone());
    let partial = state.partials.holders(&hash);
    Ok(run_blocking(move || -> Result<bool, crate::db::DbError> {
        if crate::search::may_fetch(&db, &scope, &hash, &source)? {
            return Ok(true);
        }
        // A peer serving verified pieces of a public download (PROTOCOL §11.4).
        if !scope.downloads(crate::db::AclRef::PUBLIC) || db.taken_down(&hash)? {
            return Ok(false);
        }
        for (peer, _) in partial {
            if db.peer_card(peer)?.is_some_and(|card| card.key == source) {
                return Ok(db.standing().offers(peer, &hash));
            }
        }
        Ok(false)
    })
    .await??)
}

/// Makes and signs a ticket and sends it down the source's control channel.
fn send_ticket(
    state: &AppState,
    kind: TicketKind,
    source: PeerId,
    downloader: PeerId,
    addr: Option<String>,
    token: &str,
    hash: FileHash,
) -> Result<Ticket, ApiError> {
    let id = random_hex::<16>().ok_or_else(|| ApiError::internal("no randomness"))?;
    let ticket = Ticket {
        id,
        kind,
        source,
        downloader,
        addr,
        token: token.to_owned(),
        hash,
        expires_at: unix_now() + state.config.relay.ticket_ttl_secs,
    };
    let signature = state.firewall.server_key.sign(&ticket);
    let message = ControlMessage::Connect {
        ticket: Box::new(ticket.clone()),
        signature,
    };
    if !state.firewall.control.send(&source, message) {
        return Err(source_unreachable());
    }
    Ok(ticket)
}

fn source_unreachable() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::SourceUnreachable,
        "the source has no control channel open; it cannot be asked to connect",
    )
}

/// Open the control channel (agents).
///
/// `GET /api/v1/peers/{peer}/control`: the agent's control channel, one JSON message per line
/// (pings and tickets) until the agent or the server closes it. An open channel keeps the peer
/// online.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::CONTROL,
    tag = "transfers",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex.")),
    responses((status = 200, description = "The control channel: one JSON message per line (pings, tickets) for as long as it stays open.", body = String, content_type = "application/x-ndjson"), ApiErrors),
    security(("peer_session" = []))
)]
pub async fn control(
    State(state): State<Arc<AppState>>,
    auth: Authed,
    ApiPath(peer): ApiPath<String>,
) -> Result<Response, ApiError> {
    let me = auth.require_self(&peer)?.clone();
    let receiver = state.firewall.control.attach(me.key);
    state.presence.touch(me.id);
    info!(peer = %me.key.fmt_short(), "control channel open");
    let mut ping = tokio::time::interval(Duration::from_secs(
        state.config.relay.control_ping_secs.max(1),
    ));
    // The first tick is at once: the agent knows at once that it is connected.
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = state.lifecycle.draining.clone();
    let presence = state.presence.clone();
    // The first message says what the server knows of the peer's reachability, read after the
    // channel is attached: a probe finishing now either updated the row already or sends its
    // verdict down the channel.
    let (db, id) = (state.store.db.clone(), me.id);
    let current = run_blocking(move || db.peer(id))
        .await??
        .map_or(me.reachability, |row| row.reachability);
    let first = Some(ControlMessage::Reachability {
        reachability: current,
    });
    // Dropped after the receiver (tuple fields drop in order), so it sees whether a newer
    // channel replaced this one.
    let gone = OfflineWhenGone {
        state: state.clone(),
        peer: me.id,
        key: me.key,
    };
    let stream = futures_util::stream::unfold(
        (receiver, ping, stop, presence, first, gone),
        move |(mut receiver, mut ping, stop, presence, mut first, gone)| async move {
            // Pings keep their own rhythm, however many tickets flow in between.
            let message = if let Some(first) = first.take() {
                first
            } else {
                tokio::select! {
                message = receiver.messages.recv() => message?,
                _ = ping.tick() => {
                    presence.touch(me.id);
                    ControlMessage::Ping
                }
                () = stop.cancelled() => return None,
                }
            };
            let mut line = serde_json::to_vec(&message).unwrap_or_default();
            line.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                (receiver, ping, stop, presence, first, gone),
            ))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// Puts a peer offline when its control channel ends because the agent went away (not
/// replaced by a newer channel, not the server draining): its contacts see it within a second,
/// and its files leave results. A heartbeat or a new channel puts it back online.
struct OfflineWhenGone {
    state: Arc<AppState>,
    peer: crate::db::PeerRef,
    key: PeerId,
}

impl Drop for OfflineWhenGone {
    fn drop(&mut self) {
        if !self.state.lifecycle.draining.is_cancelled()
            && !self.state.firewall.control.is_attached(&self.key)
        {
            self.state.presence.mark_offline(self.peer);
        }
    }
}

/// Ask a firewalled source to connect (reverse connection or relay).
///
/// `POST /api/v1/transfers`: a downloader that accepts connections asks a firewalled source to
/// connect to it. The downloader's address is verified first (connect-back on its port, signed
/// with its key); only then does the source get a ticket naming that address.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::TRANSFERS,
    tag = "transfers",
    request_body = TransferRequest,
    responses((status = 202, description = "The source was asked to connect (or to meet at the relay).", body = TransferResponse), ApiErrors),
    security((), ("account" = []), ("peer_session" = []))
)]
pub async fn transfer(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<TransferResponse>), ApiError> {
    let request: TransferRequest = json_body(body)?;
    check_token(&request.token)?;
    let scope = caller.scope(&state, "download").await?;
    if !may_fetch(&state, &scope, request.hash, request.source).await? {
        return Err(ApiError::not_found("the source does not list this content"));
    }
    if request.port == 0 {
        return Err(ApiError::bad_request("port must not be 0"));
    }
    let ip = client_ip(&state, remote, &headers);
    if !state.guards.transfers.allow(&peer_bucket(ip)) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many transfer requests from this address; try again in a minute",
        ));
    }
    if !state.firewall.control.is_attached(&request.source) {
        return Err(source_unreachable());
    }
    let addr = SocketAddr::new(ip, request.port);
    match state
        .guards
        .prober
        .connect_back(addr, request.downloader, request.transport)
        .await
    {
        Ok(()) => {}
        Err(ProbeError::RateLimited) => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!(
                    "too many connect-back probes to {}; use the relay, or try again in a minute",
                    addr.ip()
                ),
            );
            error.retry_after = Some(60);
            return Err(error);
        }
        Err(e) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::AddressUnverified,
                format!("your address {addr} could not be verified ({e}); use the relay"),
            ));
        }
    }
    let ticket = send_ticket(
        &state,
        TicketKind::Reverse,
        request.source,
        request.downloader,
        Some(addr.to_string()),
        &request.token,
        request.hash,
    )?;
    info!(source = %request.source.fmt_short(), downloader = %addr, "reverse connection requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(TransferResponse {
            ticket_id: ticket.id,
            expires_in_secs: state.config.relay.ticket_ttl_secs,
        }),
    ))
}

/// Parameters of a relay request.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RelayParams {
    /// The peer that holds the content (it was asked over its control channel).
    source: PeerId,
    /// The content to fetch through the relay.
    hash: FileHash,
    /// The downloader's peer id (the key its TLS session is pinned to).
    downloader: PeerId,
    /// The ticket's token from `POST /api/v1/transfers`.
    token: String,
}

fn wants_relay_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(RELAY_PROTOCOL))
}

fn switching_protocols() -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(RELAY_PROTOCOL));
    response
}

fn take_upgrade(request: &mut Request) -> Result<OnUpgrade, ApiError> {
    if !wants_relay_upgrade(request.headers()) {
        return Err(ApiError::bad_request(format!(
            "send Connection: upgrade and Upgrade: {RELAY_PROTOCOL}"
        )));
    }
    request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| ApiError::bad_request("this connection cannot be upgraded"))
}

/// Downloader end of a relayed transfer.
///
/// `GET /api/v1/relay?source&hash&downloader&token` with `Upgrade: peerdex-relay`: the downloader's
/// end of a relay session. The source is asked (with a ticket) to connect its end; once it does,
/// both get `101` and the server forwards bytes between them within the quotas.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::RELAY,
    tag = "transfers",
    params(RelayParams),
    responses((status = 101, description = "Upgraded (`Upgrade: peerdex-relay`): the connection is spliced to the source's once it accepts."), ApiErrors),
    security((), ("account" = []), ("peer_session" = []))
)]
pub async fn relay(
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    caller: Caller,
    ApiQuery(params): ApiQuery<RelayParams>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let scope = caller.scope(&state, "download").await?;
    check_token(&params.token)?;
    let upgrade = take_upgrade(&mut request)?;
    let ip: IpAddr = client_ip(&state, remote, request.headers());
    if !state.guards.transfers.allow(&peer_bucket(ip)) {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many relay requests from this address; try again in a minute",
        ));
    }
    let permit = match state.firewall.relay.admit(params.source, ip) {
        Ok(permit) => permit,
        Err(refusal) => {
            let temporary = !matches!(refusal, RelayRefusal::Disabled);
            let mut response = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RelayUnavailable,
                refusal.to_string(),
            )
            .into_response();
            if temporary {
                // Full, not off: worth asking again shortly.
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            return Ok(response);
        }
    };
    if !state.firewall.control.is_attached(&params.source) {
        return Err(source_unreachable());
    }
    // Only for content the source lists, within the caller's scope: the relay carries transfers,
    // not arbitrary tunnels, and never content the caller could not fetch directly.
    let listed = may_fetch(&state, &scope, params.hash, params.source).await?;
    if !listed {
        return Err(ApiError::not_found("the source does not list this content"));
    }
    let ticket = send_ticket(
        &state,
        TicketKind::Relay,
        params.source,
        params.downloader,
        None,
        &params.token,
        params.hash,
    )?;
    // If the downloader goes away while waiting, the guard forgets the session.
    let (arrival, _waiting) = state
        .firewall
        .relay
        .wait_for_source(&ticket.id, params.source);
    let source_upgrade =
        match tokio::time::timeout(state.firewall.relay.ticket_ttl(), arrival).await {
            Ok(Ok(upgrade)) => upgrade,
            _ => {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorCode::SourceUnreachable,
                    "the source did not connect to the relay in time",
                ));
            }
        };
    let span = info_span!("relay", source = %params.source.fmt_short(), downloader = %ip);
    let relay = state.firewall.relay.clone();
    let shutdown = state.lifecycle.shutdown.clone();
    state.lifecycle.tasks.spawn(
        relay
            .splice(upgrade, source_upgrade, permit, shutdown)
            .instrument(span),
    );
    Ok(switching_protocols())
}

/// Source end of a relayed transfer.
///
/// `GET /api/v1/relay/{id}/accept` with `Upgrade: peerdex-relay`: the source's end of relay
/// session `id`, authenticated as the peer the ticket named.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::RELAY_ACCEPT,
    tag = "transfers",
    params(("id" = String, Path, description = "The relay ticket's id.")),
    responses((status = 101, description = "Upgraded: this connection is spliced to the waiting downloader's."), ApiErrors),
    security(("peer_session" = []))
)]
pub async fn relay_accept(
    State(state): State<Arc<AppState>>,
    auth: Authed,
    ApiPath(id): ApiPath<String>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let upgrade = take_upgrade(&mut request)?;
    if !state
        .firewall
        .relay
        .source_arrived(&id, auth.0.key, upgrade)
    {
        warn!(peer = %auth.0.key.fmt_short(), "relay accept for an unknown or expired session");
        return Err(ApiError::not_found(
            "no relay session waits for this peer under that id",
        ));
    }
    Ok(switching_protocols())
}
