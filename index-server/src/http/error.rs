//! The one error type of the HTTP layer: a status plus an [`ErrorBody`], rendered as JSON.
//!
//! Bad input gets a 4xx with a message that names the problem; internal failures are logged with
//! their detail and answered with a bare 500 so nothing internal leaks.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use peerdex_shared::api::{ErrorBody, ErrorCode};
use tracing::error;

use crate::db::DbError;
use crate::index::IndexError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: ErrorBody,
    /// Seconds to send as `Retry-After` (rate limits).
    pub retry_after: Option<u16>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
            retry_after: None,
        }
    }

    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// 401 with a message.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }

    /// 413 naming the limit that was exceeded.
    pub fn limit(limit: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::LimitExceeded,
            message,
        );
        e.body.limit = Some(limit.to_string());
        e
    }

    /// 422 naming the offending line and, when known, its path.
    pub fn invalid_entry(line: u64, path: Option<&str>, message: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::InvalidEntry,
            message,
        );
        e.body.line = Some(line);
        e.body.path = path.map(str::to_string);
        e
    }

    /// 500 after logging what went wrong.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal server error",
        )
    }

    /// Attaches the line number of the list entry that caused the error.
    pub fn at_line(mut self, line: u64) -> Self {
        self.body.line = Some(line);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        let message = e.to_string();
        match e {
            DbError::NicknameTaken(_) => {
                Self::new(StatusCode::CONFLICT, ErrorCode::NicknameTaken, message)
            }
            DbError::VersionMismatch { server, .. } => {
                let mut err = Self::new(
                    StatusCode::CONFLICT,
                    ErrorCode::VersionMismatch,
                    format!("{message}; upload the full list"),
                );
                err.body.server_version = server;
                err
            }
            DbError::DeltaConflict {
                line, share, path, ..
            } => {
                let mut err = Self::new(
                    StatusCode::CONFLICT,
                    ErrorCode::VersionMismatch,
                    format!("{message}; upload the full list"),
                );
                err.body.line = Some(line);
                err.body.path = Some(format!("{share}/{path}"));
                err
            }
            DbError::Superseded => {
                Self::new(StatusCode::CONFLICT, ErrorCode::VersionMismatch, message)
            }
            DbError::DuplicatePath {
                line,
                ref share,
                ref path,
            } => Self::invalid_entry(line, Some(&format!("{share}/{path}")), message),
            DbError::TooManyEntries { .. } => Self::limit("max_entries_per_peer", message),
            DbError::UnknownPeer => Self::not_found(message),
            DbError::DiskFull => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                ErrorCode::Unavailable,
                "the server's disk is full; earlier data is intact, retry later",
            ),
            DbError::Sqlite(_) | DbError::Corrupt(_) | DbError::Schema(_) => {
                Self::internal(message)
            }
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        Self::internal(e)
    }
}

impl From<crate::search::SearchError> for ApiError {
    fn from(e: crate::search::SearchError) -> Self {
        match e {
            crate::search::SearchError::Index(e) => e.into(),
            crate::search::SearchError::Db(e) => e.into(),
        }
    }
}
