//! The OpenAPI 3.1 document of the index server's API (`GET /api/openapi.json`), generated from
//! the handlers' `#[utoipa::path]` attributes and the wire types' schemas, and the Swagger UI
//! that shows it (`/api/docs`, vendored: nothing is fetched at build time or in the browser).
//!
//! The document and the router come from the same [`OpenApiRouter`](utoipa_axum::router::OpenApiRouter)
//! calls (`http::api_routes`), so a route cannot be served without being documented.

use std::collections::BTreeMap;

use peerdex_shared::api::{ErrorBody, ErrorCode};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};

/// Where the document is served.
pub const DOCUMENT: &str = "/api/openapi.json";
/// Where the Swagger UI is served.
pub const VIEWER: &str = "/api/docs";

/// The document's frame: title, version, tags and security schemes. Paths come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "peerdex index server",
        description = "The API of a peerdex index server: peers register and keep their file \
                       lists in sync; anyone allowed searches, browses, and finds the peers that \
                       hold a file; accounts, contacts, messages, rooms, requests and wishes. \
                       docs/PROTOCOL.md is the prose reference; the peer file protocol (between \
                       agents) is not part of this document.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorCode)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "peers", description = "Registration, presence and file lists of peers (agents)."),
        (name = "search", description = "Search, sources, browsing and folders."),
        (name = "transfers", description = "Reverse connections and relays for firewalled peers, and reports of how transfers went."),
        (name = "accounts", description = "Accounts, sign-in, invites and API keys."),
        (name = "admin", description = "Administration: accounts, groups, bans, takedowns, quarantine, audit log."),
        (name = "social", description = "Events, contacts, blocks, messages, wishes, rooms and requests."),
        (name = "server", description = "Health and statistics."),
    )
)]
pub struct ApiDoc;

/// The two bearer tokens the API knows.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        add_error_responses(components);
        components.add_security_scheme(
            PEER_SESSION,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The session token a peer gets from `POST /api/v1/register`; it acts \
                         for that peer only.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            ACCOUNT,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An account token from `POST /api/v1/login`, or an API key from \
                         `POST /api/v1/apikeys` (limited to its scopes). A peer session token \
                         is accepted too, for the account its key is linked to.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Security scheme: a peer's session token.
pub const PEER_SESSION: &str = "peer_session";
/// Security scheme: an account token or API key.
pub const ACCOUNT: &str = "account";

/// The error answers every operation may give, each with an [`ErrorBody`]. Which ones a given
/// operation gives depends on the server's settings (guests, registration, limits), so all of
/// them are listed for all operations; the `code` field tells them apart.
pub struct ApiErrors;

/// The statuses of [`ApiErrors`] with what each means.
const ERROR_STATUSES: [(&str, &str); 14] = [
    (
        "400",
        "The request is malformed: a bad parameter, bad JSON, a hostile query.",
    ),
    (
        "401",
        "No credentials, or credentials that are not valid (or were revoked).",
    ),
    (
        "403",
        "Authenticated, but not allowed: another peer's data, a scope, a ban, a role.",
    ),
    (
        "404",
        "Nothing at that address, or nothing the caller may see.",
    ),
    ("408", "The request took longer than the server allows."),
    (
        "409",
        "A conflict: a name taken, a list version that is not the server's.",
    ),
    ("413", "A size limit was exceeded; `limit` names it."),
    (
        "415",
        "The body's content type or encoding is not one the server reads.",
    ),
    (
        "422",
        "An entry of a list is invalid; `line` and `path` name it.",
    ),
    (
        "429",
        "Too many requests; `Retry-After` says when to try again.",
    ),
    ("500", "The server failed; the message says where."),
    (
        "503",
        "The server cannot take this now (relay full, source unreachable, shutting down).",
    ),
    ("504", "The source did not connect back in time."),
    (
        "507",
        "The server's disk is full: writes are refused, reads keep working.",
    ),
];

/// The name of the shared response component for an error status.
fn error_response_name(status: &str) -> String {
    format!("Error{status}")
}

impl IntoResponses for ApiErrors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        ERROR_STATUSES
            .iter()
            .map(|(status, _)| {
                let name = error_response_name(status);
                (
                    (*status).to_owned(),
                    RefOr::Ref(Ref::from_response_name(name)),
                )
            })
            .collect()
    }
}

/// Adds the error responses [`ApiErrors`] refers to, each an [`ErrorBody`].
fn add_error_responses(components: &mut utoipa::openapi::Components) {
    for (status, description) in ERROR_STATUSES {
        let response = peerdex_shared::openapi::error_response(description);
        components
            .responses
            .insert(error_response_name(status), RefOr::T(response));
    }
}
