//! What downloading peers tell the index: reports on their sources and the admin's view of
//! the quarantine they lead to (PROTOCOL §11.3), and the verified pieces they serve while they
//! download (§11.4).

use super::ApiPath;
use super::openapi::ApiErrors;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use peerdex_shared::PeerSignature;
use peerdex_shared::api::{
    MAX_PARTIALS, MAX_REPORT_SOURCES, PartialsAnnouncement, ReportResponse, SIGNATURE_HEADER,
    TransferReport,
};
use peerdex_shared::identity::report_message;
use peerdex_shared::pieces::piece_count;
use tracing::{info, warn};

use super::accounts::Caller;
use super::{ApiError, Authed, run_blocking};
use crate::db::QuarantineRow;
use crate::state::AppState;

/// Longest report body accepted.
const MAX_REPORT_BYTES: usize = 64 * 1024;

/// Report how the sources of a download behaved.
///
/// `POST /api/v1/peers/{id}/reports`: the reporting peer's session, and its key's signature over
/// the exact body.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::REPORTS,
    tag = "transfers",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex."), ("x-peerdex-signature" = String, Header, description = "The reporting peer's Ed25519 signature over the exact body, in hex.")),
    request_body = TransferReport,
    responses((status = 200, description = "The report is counted.", body = ReportResponse), ApiErrors),
    security(("peer_session" = []))
)]
pub async fn post_report(
    State(state): State<Arc<AppState>>,
    ApiPath(peer): ApiPath<String>,
    authed: Authed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ReportResponse>, ApiError> {
    let peer = authed.require_self(&peer)?;
    if body.len() > MAX_REPORT_BYTES {
        return Err(ApiError::limit(
            "report_bytes",
            format!("a report is at most {MAX_REPORT_BYTES} bytes"),
        ));
    }
    let signature: PeerSignature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ApiError::unauthorized(format!(
                "a report carries the reporter's signature over its body in {SIGNATURE_HEADER}"
            ))
        })?;
    peer.key
        .verify(&report_message(&body), &signature)
        .map_err(|_| ApiError::unauthorized("the report's signature is not the peer's"))?;
    let report: TransferReport = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid report: {e}")))?;
    if report.sources.len() > MAX_REPORT_SOURCES {
        return Err(ApiError::limit(
            "report_sources",
            format!("a report names at most {MAX_REPORT_SOURCES} sources"),
        ));
    }
    let (db, key, rules) = (
        state.store.db.clone(),
        peer.key,
        state.config.quarantine.rules(),
    );
    let partial: Vec<crate::db::PeerRef> = state
        .partials
        .holders(&report.hash)
        .into_iter()
        .map(|(peer, _)| peer)
        .collect();
    let (response, quarantined) = run_blocking(move || {
        let account = db.account_of_device(&key)?.map(|a| a.id.0);
        db.record_report(&key, account, &report, &partial, &rules)
    })
    .await??;
    for row in quarantined {
        warn!(source = %row.peer, hash = ?row.hash, reason = %row.reason, "source quarantined");
    }
    Ok(Json(response))
}

/// List quarantined sources.
///
/// `GET /api/v1/admin/quarantine` (admins and moderators).
#[utoipa::path(
    get,
    path = peerdex_shared::routes::ADMIN_QUARANTINE,
    tag = "admin",
    responses((status = 200, description = "The peers in quarantine and why.", body = Vec<QuarantineRow>), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_quarantine(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<QuarantineRow>>, ApiError> {
    caller.require_role(true)?;
    let db = state.store.db.clone();
    Ok(Json(run_blocking(move || db.quarantine_list()).await??))
}

/// Release a source from quarantine.
///
/// `DELETE /api/v1/admin/quarantine/{peer}` (admins and moderators).
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::ADMIN_QUARANTINE_PEER,
    tag = "admin",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex.")),
    responses((status = 204, description = "The peer is out of quarantine."), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_clear_quarantine(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(peer): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.require_role(true)?.name.clone();
    let key: peerdex_shared::PeerId = peer
        .parse()
        .map_err(|e| ApiError::bad_request(format!("invalid peer id: {e}")))?;
    let db = state.store.db.clone();
    let name = actor.clone();
    if run_blocking(move || db.clear_quarantine(&name, &key)).await?? {
        info!(%key, %actor, "quarantine cleared");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("{key} is not quarantined")))
    }
}

/// Announce the partial downloads this peer serves.
///
/// `PUT /api/v1/peers/{id}/partials`: replaces the partial downloads the peer serves.
#[utoipa::path(
    put,
    path = peerdex_shared::routes::PARTIALS,
    tag = "transfers",
    params(("peer" = peerdex_shared::PeerId, Path, description = "The peer's id: its Ed25519 key in hex.")),
    request_body = PartialsAnnouncement,
    responses((status = 204, description = "The partial copies are recorded."), ApiErrors),
    security(("peer_session" = []))
)]
pub async fn put_partials(
    State(state): State<Arc<AppState>>,
    ApiPath(peer): ApiPath<String>,
    authed: Authed,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let peer = authed.require_self(&peer)?;
    let announcement: PartialsAnnouncement = super::json_body(body)?;
    if announcement.partials.len() > MAX_PARTIALS {
        return Err(ApiError::limit(
            "partials",
            format!("an announcement names at most {MAX_PARTIALS} downloads"),
        ));
    }
    for entry in &announcement.partials {
        if entry.pieces.count != piece_count(entry.size) {
            return Err(ApiError::bad_request(format!(
                "{}: {} bytes are {} pieces, not {}",
                entry.hash,
                entry.size,
                piece_count(entry.size),
                entry.pieces.count
            )));
        }
        if entry.name.contains('/') {
            return Err(ApiError::bad_request(format!(
                "{}: a file name has no `/`",
                entry.hash
            )));
        }
        peerdex_shared::validate::validate_relative_path(
            &entry.name,
            &state.config.limits.path_limits(),
        )
        .map_err(|e| ApiError::bad_request(format!("{}: invalid name: {e}", entry.hash)))?;
    }
    state.presence.touch(peer.id);
    // Nothing an admin took down is offered, partial or not.
    let db = state.store.db.clone();
    let hashes: Vec<peerdex_shared::FileHash> =
        announcement.partials.iter().map(|e| e.hash).collect();
    let down = run_blocking(move || -> Result<Vec<bool>, crate::db::DbError> {
        hashes.iter().map(|h| db.taken_down(h)).collect()
    })
    .await??;
    let mut partials = announcement.partials;
    let mut flags = down.into_iter();
    partials.retain(|_| !flags.next().unwrap_or(false));
    state.partials.replace(peer.id, partials);
    Ok(StatusCode::NO_CONTENT)
}
