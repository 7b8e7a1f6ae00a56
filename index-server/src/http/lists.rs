//! Full and delta list uploads: newline-delimited JSON bodies, read as a stream.
//!
//! A body is decompressed on the fly (`Content-Encoding: gzip` or `zstd`), cut into lines no longer
//! than `max_line_bytes`, and counted against `max_list_bytes` after decompression, so neither a
//! million-entry list nor a compression bomb can make the server hold more than one batch.

use std::sync::Arc;
use std::time::Duration;

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::{StreamExt, TryStreamExt};
use peerdex_shared::api::{DeltaOp, ErrorCode, ListEntry, SyncResponse};
use peerdex_shared::validate::{
    NameError, PathLimits, validate_entry, validate_relative_path, validate_share_name,
};
use tokio::io::{AsyncRead, BufReader};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;
use tracing::{debug, info};

use super::error::ApiError;
use super::run_blocking;
use crate::db::{Generation, PeerRef, PeerRow};
use crate::state::AppState;

/// Entries written per staging transaction.
const BATCH: usize = 2000;

/// After a rejected entry, how much of the rest of the body is read (and dropped) so the client
/// is done sending and sees the error instead of a reset connection.
const DRAIN_AFTER_ERROR_BYTES: u64 = 64 << 20;

/// Lines of a list body with their 1-based numbers; blank lines are skipped.
struct Lines {
    framed: FramedRead<Box<dyn AsyncRead + Send + Unpin>, LinesCodec>,
    line: u64,
    bytes: u64,
    max_bytes: u64,
    idle: Duration,
}

fn too_large(max_bytes: u64) -> ApiError {
    ApiError::limit(
        "max_list_bytes",
        format!("list body exceeds {max_bytes} bytes (max_list_bytes)"),
    )
}

fn decoder(
    headers: &HeaderMap,
    body: Body,
    max_bytes: u64,
) -> Result<Box<dyn AsyncRead + Send + Unpin>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes) {
        return Err(too_large(max_bytes));
    }
    // The raw (possibly compressed) bytes count too, for bodies sent without a length.
    let mut raw_bytes = 0u64;
    let stream = body
        .into_data_stream()
        .map_err(std::io::Error::other)
        .and_then(move |chunk| {
            raw_bytes += chunk.len() as u64;
            futures_util::future::ready(if raw_bytes > max_bytes {
                Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    "raw body over max_list_bytes",
                ))
            } else {
                Ok(chunk)
            })
        });
    let raw = BufReader::with_capacity(256 * 1024, StreamReader::new(stream));
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    Ok(match encoding.as_deref() {
        None | Some("identity") => Box::new(raw),
        Some("gzip") | Some("x-gzip") => Box::new(GzipDecoder::new(raw)),
        Some("zstd") => Box::new(ZstdDecoder::new(raw)),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::BadRequest,
                format!("unsupported content-encoding {other:?}; use gzip, zstd or none"),
            ));
        }
    })
}

impl Lines {
    fn new(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Lines, ApiError> {
        let limits = &state.config.limits;
        Ok(Lines {
            framed: FramedRead::new(
                decoder(headers, body, limits.max_list_bytes)?,
                LinesCodec::new_with_max_length(limits.max_line_bytes),
            ),
            line: 0,
            bytes: 0,
            max_bytes: limits.max_list_bytes,
            idle: crate::config::secs(state.config.http.body_idle_timeout_secs),
        })
    }

    /// The next non-blank line, `None` at the end of the body.
    async fn next(&mut self) -> Result<Option<(u64, String)>, ApiError> {
        loop {
            let next = tokio::time::timeout(self.idle, self.framed.next())
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        ErrorCode::BadRequest,
                        format!("list body stalled after line {}", self.line),
                    )
                })?;
            let Some(result) = next else { return Ok(None) };
            self.line += 1;
            let text = result.map_err(|e| match e {
                LinesCodecError::MaxLineLengthExceeded => ApiError::limit(
                    "max_line_bytes",
                    format!(
                        "line {} is longer than {} bytes (max_line_bytes)",
                        self.line,
                        self.framed.decoder().max_length()
                    ),
                )
                .at_line(self.line),
                LinesCodecError::Io(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                    too_large(self.max_bytes).at_line(self.line)
                }
                LinesCodecError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    ApiError::invalid_entry(
                        self.line,
                        None,
                        format!(
                            "line {}: not valid UTF-8 (or a corrupt compressed body): {e}",
                            self.line
                        ),
                    )
                }
                LinesCodecError::Io(e) => ApiError::bad_request(format!("reading list body: {e}")),
            })?;
            self.bytes += text.len() as u64 + 1;
            if self.bytes > self.max_bytes {
                return Err(ApiError::limit(
                    "max_list_bytes",
                    format!(
                        "list body exceeds {} bytes (max_list_bytes) at line {}",
                        self.max_bytes, self.line
                    ),
                )
                .at_line(self.line));
            }
            if !text.trim().is_empty() {
                return Ok(Some((self.line, text)));
            }
        }
    }

    /// Reads and drops the rest of the body, within a cap, after an error.
    async fn drain(&mut self) {
        let cap = self.bytes.saturating_add(DRAIN_AFTER_ERROR_BYTES);
        while self.bytes < cap {
            match tokio::time::timeout(self.idle, self.framed.next()).await {
                Ok(Some(Ok(text))) => self.bytes += text.len() as u64 + 1,
                _ => break,
            }
        }
    }
}

fn parse_line<T: serde::de::DeserializeOwned>(line: u64, text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        ApiError::invalid_entry(line, None, format!("line {line}: invalid entry: {e}"))
    })
}

fn check_entry(line: u64, entry: &ListEntry, limits: &PathLimits) -> Result<(), ApiError> {
    validate_entry(entry, limits).map_err(|e| {
        let message = format!("line {line}: {e}: {:?}", entry.path);
        let mut err = ApiError::invalid_entry(line, Some(&entry.path), message);
        err.body.limit = match e.error {
            NameError::TooLong { limit_name, .. } => Some(limit_name.to_string()),
            NameError::TooDeep { .. } => Some("max_depth".to_string()),
            _ => None,
        };
        err
    })
}

/// Receives a full list and makes it the peer's list in one step; on any error the previous list
/// stays as it was.
pub async fn full_upload(
    state: &Arc<AppState>,
    peer: &PeerRow,
    version: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<SyncResponse, ApiError> {
    let mut lines = Lines::new(state, headers, body)?;
    let db = state.store.db.clone();
    let peer_id = peer.id;
    let generation = run_blocking(move || db.begin_full_upload(peer_id)).await??;
    let received = receive_full(state, peer_id, generation, &mut lines).await;
    let result = match received {
        Ok(entries) => {
            let db = state.store.db.clone();
            run_blocking(move || db.commit_full_upload(peer_id, generation, version, entries))
                .await?
                .map(|()| entries)
                .map_err(ApiError::from)
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(entries) => {
            state.store.nudger.nudge();
            state.metrics.ingested("list", entries);
            info!(peer = %peer.key.fmt_short(), version, entries, "full list stored");
            Ok(SyncResponse { version, entries })
        }
        Err(e) => {
            let db = state.store.db.clone();
            // Best effort: on a crash here, startup recovery abandons the generation instead.
            let _ = run_blocking(move || db.abort_full_upload(peer_id, generation)).await;
            lines.drain().await;
            debug!(peer = %peer.key.fmt_short(), error = %e.body.error, "full list rejected");
            Err(e)
        }
    }
}

async fn receive_full(
    state: &Arc<AppState>,
    peer: PeerRef,
    generation: Generation,
    lines: &mut Lines,
) -> Result<u64, ApiError> {
    let limits = state.config.limits.path_limits();
    let max_entries = state.config.limits.max_entries_per_peer;
    let mut batch = Vec::with_capacity(BATCH);
    let mut entries = 0u64;
    loop {
        let next = lines.next().await?;
        let at_end = next.is_none();
        if let Some((line, text)) = next {
            let entry: ListEntry = parse_line(line, &text)?;
            check_entry(line, &entry, &limits)?;
            entries += 1;
            if entries > max_entries {
                return Err(ApiError::limit(
                    "max_entries_per_peer",
                    format!("list has more than {max_entries} entries (max_entries_per_peer) at line {line}"),
                )
                .at_line(line));
            }
            batch.push((line, entry));
        }
        if batch.len() >= BATCH || (at_end && !batch.is_empty()) {
            let db = state.store.db.clone();
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            run_blocking(move || db.insert_staged(peer, generation, &full)).await??;
        }
        if at_end {
            return Ok(entries);
        }
    }
}

/// Applies a delta atomically against the version the server holds.
pub async fn delta_upload(
    state: &Arc<AppState>,
    peer: &PeerRow,
    base: u64,
    version: u64,
    headers: &HeaderMap,
    body: Body,
) -> Result<SyncResponse, ApiError> {
    if version <= base {
        return Err(ApiError::bad_request(format!(
            "version ({version}) must be greater than base ({base})"
        )));
    }
    if peer.list_version != Some(base) {
        // Refuse before reading a possibly large body that cannot apply.
        return Err(crate::db::DbError::VersionMismatch {
            base,
            server: peer.list_version,
        }
        .into());
    }
    let mut lines = Lines::new(state, headers, body)?;
    let ops = match read_delta(state, &mut lines).await {
        Ok(ops) => ops,
        Err(e) => {
            lines.drain().await;
            return Err(e);
        }
    };
    let count = ops.len();
    let db = state.store.db.clone();
    let (peer_id, max) = (peer.id, state.config.limits.max_entries_per_peer);
    let entries = run_blocking(move || db.apply_delta(peer_id, base, version, &ops, max)).await??;
    state.store.nudger.nudge();
    state.metrics.ingested("delta", count as u64);
    info!(peer = %peer.key.fmt_short(), base, version, ops = count, entries, "delta applied");
    Ok(SyncResponse { version, entries })
}

async fn read_delta(state: &AppState, lines: &mut Lines) -> Result<Vec<(u64, DeltaOp)>, ApiError> {
    let limits = state.config.limits.path_limits();
    let max_ops = state.config.limits.max_delta_ops;
    let mut ops = Vec::new();
    while let Some((line, text)) = lines.next().await? {
        let op: DeltaOp = parse_line(line, &text)?;
        match &op {
            DeltaOp::Add(entry) | DeltaOp::Change(entry) => check_entry(line, entry, &limits)?,
            DeltaOp::Remove { share, path } => {
                validate_share_name(share).map_err(|e| {
                    ApiError::invalid_entry(line, Some(path), format!("line {line}: share {e}"))
                })?;
                validate_relative_path(path, &limits).map_err(|e| {
                    ApiError::invalid_entry(
                        line,
                        Some(path),
                        format!("line {line}: path {e}: {path:?}"),
                    )
                })?;
            }
        }
        if ops.len() as u64 >= max_ops {
            return Err(ApiError::limit(
                "max_delta_ops",
                format!("delta has more than {max_ops} operations (max_delta_ops); upload the full list instead"),
            )
            .at_line(line));
        }
        ops.push((line, op));
    }
    Ok(ops)
}
