//! The agent's local JSON API (PROTOCOL §15.4): what scripts (and the pages' own script) read
//! and change, with the web client's token as `Authorization: Bearer`. Its OpenAPI 3.1
//! document is served at `/api/openapi.json` (and shown by the vendored Swagger UI at
//! `/api/docs`), made by the same calls that route it.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use peerdex_shared::api::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Web;
use super::pages::{PageError, blocking, queue_download, transfer_lines};
use crate::control::Controls;
use crate::transfers::{Action, ActionError, TransferView};
use crate::{AgentStatus, TransferList};

/// Where the document is served.
pub(super) const DOCUMENT: &str = "/api/openapi.json";
/// Where the Swagger UI is served.
pub(super) const VIEWER: &str = "/api/docs";

/// The document's frame; paths come from [`routes`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "peerdex agent",
        description = "The local API of a running peerdex agent (on `ui_listen`, loopback only): \
                       its status, and its transfer queue. Every request needs the web client's \
                       token (the `ui-token` file in the state directory; `peerdex ui --json` \
                       prints it) as a bearer token, and a `Host` that names this endpoint.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorCode, TransferCommand)),
    modifiers(&TokenScheme),
    tags((name = "agent", description = "Status and the transfer queue."))
)]
struct AgentApiDoc;

struct TokenScheme;

impl utoipa::Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                "ui_token",
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "The web client's per-install token (or its sign-in cookie, for \
                             the agent's own pages).",
                        ))
                        .build(),
                ),
            );
    }
}

/// The API's routes and its document.
pub(super) fn routes() -> (Router<Arc<Web>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(AgentApiDoc::openapi())
        .routes(routes!(status))
        .routes(routes!(transfers, queue))
        .routes(routes!(act))
        .split_for_parts()
}

/// The OpenAPI document of the agent's local API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    routes().1
}

/// An API error: its status and the JSON body every error has.
pub(super) struct JsonError(StatusCode, ErrorBody);

impl JsonError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        JsonError(status, ErrorBody::new(code, message))
    }

    /// 401: no token, or not this agent's.
    pub(super) fn sign_in_required() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "send the web client's token as a bearer token (peerdex ui --json prints it)",
        )
    }

    /// 403: a change made with the cookie from another site's page.
    pub(super) fn cross_site() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "this change did not come from the agent's own pages",
        )
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<PageError> for JsonError {
    fn from(error: PageError) -> Self {
        match error {
            // What the server could not find is not found here either; the rest is the
            // server's trouble (or the way to it).
            PageError::Server(peerdex_client::server_api::ApiError::Server { status, body })
                if status == StatusCode::NOT_FOUND =>
            {
                Self::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!("the index server: {}", body.error),
                )
            }
            PageError::Server(e) => Self::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::Unavailable,
                format!("the index server: {e}"),
            ),
            PageError::Other(status, _, message) => {
                let code = match status {
                    StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
                    StatusCode::NOT_FOUND => ErrorCode::NotFound,
                    StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
                    _ => ErrorCode::Internal,
                };
                Self::new(status, code, message)
            }
        }
    }
}

/// The error answers of the agent's API, each with an [`ErrorBody`].
struct AgentErrors;

impl utoipa::IntoResponses for AgentErrors {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use utoipa::openapi::RefOr;
        [
            (
                "400",
                "The request is malformed: a bad hash, id, action or body.",
            ),
            ("401", "No token, or not this agent's."),
            (
                "403",
                "A change made with the cookie from another site's page.",
            ),
            (
                "404",
                "No such transfer, or the index server knows no such folder.",
            ),
            (
                "409",
                "The action does not apply to the transfer in its state.",
            ),
            (
                "500",
                "The agent failed (its catalog could not be read or written).",
            ),
            ("502", "The index server could not be asked, or refused."),
        ]
        .into_iter()
        .map(|(status, description)| {
            let response = peerdex_shared::openapi::error_response(description);
            (status.to_owned(), RefOr::T(response))
        })
        .collect()
    }
}

/// `Path<T>` whose rejection is a [`JsonError`] (400), like every other API error.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = JsonError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, JsonError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| {
                JsonError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    format!("invalid path: {}", e.body_text()),
                )
            })
    }
}

/// The agent's status.
///
/// What `peerdex status --json` prints: the peer, its link to the index server, shares with
/// their scan and hash progress, uploads, and the transfers waiting or running.
#[utoipa::path(
    get,
    path = "/api/status",
    tag = "agent",
    responses((status = 200, description = "The status.", body = AgentStatus), AgentErrors),
    security(("ui_token" = []))
)]
async fn status(State(web): State<Arc<Web>>) -> Result<Json<AgentStatus>, JsonError> {
    Ok(Json(blocking(&web, |c| c.status()).await?))
}

/// The transfer queue.
///
/// What `peerdex transfers --json` prints: downloads (running and queued, then the last 50
/// finished) and uploads.
#[utoipa::path(
    get,
    path = "/api/transfers",
    tag = "agent",
    responses((status = 200, description = "Downloads and uploads.", body = TransferList), AgentErrors),
    security(("ui_token" = []))
)]
async fn transfers(State(web): State<Arc<Web>>) -> Result<Json<TransferList>, JsonError> {
    // The same list as the transfers page.
    Ok(Json(transfer_lines(&web).await?))
}

/// What to download: a content (`hash`, optionally the file `name`), or every file of a
/// folder (`folder`, its identity). Either goes into the agent's download folder.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct QueueRequest {
    /// The content's hash.
    #[serde(default)]
    hash: Option<peerdex_shared::FileHash>,
    /// The file name to use (sanitized; default: the name its sources use).
    #[serde(default)]
    name: Option<String>,
    /// A folder's identity: every file of the folder is queued, into a folder of its name.
    #[serde(default)]
    folder: Option<peerdex_shared::folder::FolderId>,
}

/// The transfers a [`QueueRequest`] added.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Queued {
    /// Their ids, as `GET /api/transfers` and the actions name them.
    ids: Vec<u64>,
}

/// Queue a download.
///
/// The agent fetches it whenever its sources are online, resumes it after restarts, and keeps
/// it in the transfer list.
#[utoipa::path(
    post,
    path = "/api/transfers",
    tag = "agent",
    request_body = QueueRequest,
    responses((status = 201, description = "Queued.", body = Queued), AgentErrors),
    security(("ui_token" = []))
)]
async fn queue(
    State(web): State<Arc<Web>>,
    body: Result<Json<QueueRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<Queued>), JsonError> {
    let Json(request) = body.map_err(|e| {
        JsonError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("invalid body: {}", e.body_text()),
        )
    })?;
    let ids = queue_download(
        &web,
        request.hash.map(|h| h.to_string()),
        request.name,
        request.folder.map(|f| f.to_string()),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(Queued { ids })))
}

/// What can be done to a download.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum TransferCommand {
    /// Stop it, keeping its verified pieces.
    Pause,
    /// Queue a paused download again.
    Resume,
    /// Stop it and remove its partial file.
    Cancel,
    /// Run a failed, cancelled or waiting download again now.
    Retry,
}

/// Pause, resume, cancel or retry a download.
#[utoipa::path(
    post,
    path = "/api/transfers/{id}/{command}",
    tag = "agent",
    params(
        ("id" = u64, Path, description = "The download's id."),
        ("command" = TransferCommand, Path, description = "What to do."),
    ),
    responses((status = 200, description = "The download as it is now.", body = TransferView), AgentErrors),
    security(("ui_token" = []))
)]
async fn act(
    State(web): State<Arc<Web>>,
    ApiPath((id, command)): ApiPath<(u64, TransferCommand)>,
) -> Result<Json<TransferView>, JsonError> {
    let action = match command {
        TransferCommand::Pause => Action::Pause,
        TransferCommand::Resume => Action::Resume,
        TransferCommand::Cancel => Action::Cancel,
        TransferCommand::Retry => Action::Retry,
    };
    match blocking(&web, move |c| c.transfer_action(id, action)).await? {
        Ok(view) => Ok(Json(view)),
        Err(e) => Err(match e.downcast_ref::<ActionError>() {
            Some(ActionError::Unknown(_)) => {
                JsonError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, e.to_string())
            }
            Some(_) => JsonError::new(StatusCode::CONFLICT, ErrorCode::BadRequest, e.to_string()),
            None => JsonError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                format!("{e:#}"),
            ),
        }),
    }
}
