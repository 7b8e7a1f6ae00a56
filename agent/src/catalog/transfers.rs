//! The transfer queue's rows (catalog version 3): every download the agent was asked to make,
//! from queued to done, kept across restarts; finished ones stay as history.

use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use peerdex_shared::{FileHash, PeerId};
use rusqlite::{OptionalExtension, params};

use super::{Catalog, CatalogError, CatalogReader, Result};

/// Version 3 of the catalog: the transfer queue.
pub(super) const VERSION_3: &str = "
CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    name TEXT,
    dest_kind TEXT NOT NULL CHECK (dest_kind IN ('dir', 'file')),
    dest BLOB NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 0,
    force INTEGER NOT NULL DEFAULT 0,
    wish INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    added_at INTEGER NOT NULL,
    finished_at INTEGER,
    size INTEGER,
    path BLOB,
    bytes_done INTEGER NOT NULL DEFAULT 0,
    error_code INTEGER,
    avoid TEXT NOT NULL DEFAULT ''
);
CREATE INDEX transfers_by_state ON transfers(state, priority DESC, id);
";

/// Where a transfer's file goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "path")]
pub enum Destination {
    /// Into this folder, under the name the sources give the file (or the requested one).
    Dir(PathBuf),
    /// Exactly this file.
    File(PathBuf),
}

/// `{"kind": "dir" | "file", "path": "…"}`, as serde writes it.
impl utoipa::PartialSchema for Destination {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .description(Some("Where a transfer's file goes."))
            .property(
                "kind",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["dir", "file"]))
                    .description(Some(
                        "`dir`: into this folder, under the sources' name (or the one asked \
                         for); `file`: exactly this file.",
                    )),
            )
            .required("kind")
            .property("path", ObjectBuilder::new().schema_type(Type::String))
            .required("path")
            .into()
    }
}
impl utoipa::ToSchema for Destination {}

/// A transfer's state as the catalog keeps it. What a running transfer does (connecting,
/// downloading, queued at a source) is not stored: after a restart it is queued again and
/// resumes from its verified pieces.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Stored {
    /// To run (or running) as soon as a download slot is free.
    Queued,
    /// No source could deliver; asked again on a schedule, and when a holder comes online.
    Waiting,
    /// Stopped by the user; kept with its verified pieces.
    Paused,
    /// Complete and verified.
    Done,
    /// Failed for a reason retrying alone does not mend (see `reason`).
    Failed,
    /// Cancelled by the user; its partial file was removed.
    Cancelled,
}

impl Stored {
    fn as_str(self) -> &'static str {
        match self {
            Stored::Queued => "queued",
            Stored::Waiting => "waiting",
            Stored::Paused => "paused",
            Stored::Done => "done",
            Stored::Failed => "failed",
            Stored::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<Stored> {
        Some(match text {
            "queued" => Stored::Queued,
            "waiting" => Stored::Waiting,
            "paused" => Stored::Paused,
            "done" => Stored::Done,
            "failed" => Stored::Failed,
            "cancelled" => Stored::Cancelled,
            _ => return None,
        })
    }

    /// Whether the transfer is over (history).
    pub fn finished(self) -> bool {
        matches!(self, Stored::Done | Stored::Failed | Stored::Cancelled)
    }
}

/// A download to add to the queue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct NewTransfer {
    /// The content.
    pub hash: FileHash,
    /// The file name to use in a folder destination (untrusted; the engine sanitizes it).
    #[serde(default)]
    pub name: Option<String>,
    /// Where it goes.
    pub destination: Destination,
    /// What it is part of, for people (a folder's release title).
    #[serde(default)]
    pub label: String,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i64,
    /// Replace an existing file at the destination.
    #[serde(default)]
    pub force: bool,
    /// The wish this download answers, for downloads the agent started by itself.
    #[serde(default)]
    pub wish: Option<u64>,
}

/// One row of the transfer queue.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TransferRow {
    /// Its id (what `peerdex transfers pause ID` names).
    pub id: u64,
    /// What was asked for.
    #[serde(flatten)]
    pub request: NewTransfer,
    /// Its state.
    pub state: Stored,
    /// Why it waits or failed, for people.
    pub reason: String,
    /// Runs so far.
    pub attempts: u64,
    /// Unix time it was queued.
    pub added_at: u64,
    /// Unix time it finished.
    pub finished_at: Option<u64>,
    /// Its size, once a source said.
    pub size: Option<u64>,
    /// Where the file is (or will be), once known.
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
    /// Verified bytes, as of the last change of state.
    pub bytes_done: u64,
    /// The exit code `peerdex get` gives its failure.
    pub error_code: Option<u8>,
    /// Sources that sent bad data for it: never used for it again.
    pub avoid: Vec<PeerId>,
}

fn path_blob(path: &std::path::Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

fn blob_path(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

const COLUMNS: &str = "id, hash, name, dest_kind, dest, label, state, reason, priority, force, \
     wish, attempts, added_at, finished_at, size, path, bytes_done, error_code, avoid";

fn row_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<std::result::Result<TransferRow, String>> {
    let hash: Vec<u8> = row.get(1)?;
    let dest_kind: String = row.get(3)?;
    let dest = blob_path(row.get(4)?);
    let state: String = row.get(6)?;
    let avoid: String = row.get(18)?;
    let Some(hash) = <[u8; 32]>::try_from(hash.as_slice())
        .ok()
        .map(FileHash::from_bytes)
    else {
        return Ok(Err("a transfer's hash is not 32 bytes".into()));
    };
    let Some(state) = Stored::parse(&state) else {
        return Ok(Err(format!("unknown transfer state {state:?}")));
    };
    let destination = if dest_kind == "file" {
        Destination::File(dest)
    } else {
        Destination::Dir(dest)
    };
    Ok(Ok(TransferRow {
        id: row.get::<_, i64>(0)? as u64,
        request: NewTransfer {
            hash,
            name: row.get(2)?,
            destination,
            label: row.get(5)?,
            priority: row.get(8)?,
            force: row.get::<_, i64>(9)? != 0,
            wish: row.get::<_, Option<i64>>(10)?.map(|w| w as u64),
        },
        state,
        reason: row.get(7)?,
        attempts: row.get::<_, i64>(11)? as u64,
        added_at: row.get::<_, i64>(12)? as u64,
        finished_at: row.get::<_, Option<i64>>(13)?.map(|t| t as u64),
        size: row.get::<_, Option<i64>>(14)?.map(|s| s as u64),
        path: row.get::<_, Option<Vec<u8>>>(15)?.map(blob_path),
        bytes_done: row.get::<_, i64>(16)? as u64,
        error_code: row.get::<_, Option<i64>>(17)?.map(|c| c as u8),
        avoid: avoid
            .split(' ')
            .filter_map(|p| p.parse::<PeerId>().ok())
            .collect(),
    }))
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<std::result::Result<TransferRow, String>>>,
) -> Result<Vec<TransferRow>> {
    rows.map(|row| row?.map_err(CatalogError::Corrupt))
        .collect()
}

impl CatalogReader {
    /// The transfers not finished, in the order they run (priority, then age), then the
    /// `history` most recently finished ones, newest first.
    pub fn transfers(&self, history: usize) -> Result<Vec<TransferRow>> {
        // One snapshot for both parts: a transfer finishing in between is listed once.
        let snapshot = self.conn.unchecked_transaction()?;
        let mut open = snapshot.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM transfers
             WHERE state IN ('queued', 'waiting', 'paused') ORDER BY priority DESC, id"
        ))?;
        let mut all = collect(open.query_map([], row_from)?)?;
        let mut done = snapshot.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM transfers
             WHERE state IN ('done', 'failed', 'cancelled') ORDER BY finished_at DESC, id DESC
             LIMIT ?1"
        ))?;
        all.extend(collect(done.query_map([history as i64], row_from)?)?);
        drop((open, done));
        snapshot.finish()?;
        Ok(all)
    }

    /// One transfer.
    pub fn transfer(&self, id: u64) -> Result<Option<TransferRow>> {
        let mut statement = self
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM transfers WHERE id = ?1"))?;
        let row = statement.query_row([id as i64], row_from).optional()?;
        row.map(|r| r.map_err(CatalogError::Corrupt)).transpose()
    }
}

impl Catalog {
    /// Queues a download; returns its id.
    pub fn add_transfer(&self, new: &NewTransfer, now: u64) -> Result<u64> {
        let (kind, dest) = match &new.destination {
            Destination::Dir(path) => ("dir", path),
            Destination::File(path) => ("file", path),
        };
        let conn = self.writer();
        conn.execute(
            "INSERT INTO transfers(hash, name, dest_kind, dest, label, state, priority, force,
                                   wish, added_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9)",
            params![
                new.hash.as_bytes().as_slice(),
                new.name,
                kind,
                path_blob(dest),
                new.label,
                new.priority,
                new.force as i64,
                new.wish.map(|w| w as i64),
                now as i64
            ],
        )?;
        Ok(conn.last_insert_rowid() as u64)
    }

    /// Writes back what changes in a transfer's row as it runs.
    pub fn save_transfer(&self, row: &TransferRow) -> Result<()> {
        let avoid: Vec<String> = row.avoid.iter().map(ToString::to_string).collect();
        self.writer().execute(
            "UPDATE transfers SET state = ?2, reason = ?3, attempts = ?4,
                 finished_at = ?5, size = ?6, path = ?7, bytes_done = ?8, error_code = ?9,
                 avoid = ?10
             WHERE id = ?1",
            params![
                row.id as i64,
                row.state.as_str(),
                row.reason,
                row.attempts as i64,
                row.finished_at.map(|t| t as i64),
                row.size.map(|s| s as i64),
                row.path.as_deref().map(path_blob),
                row.bytes_done as i64,
                row.error_code.map(i64::from),
                avoid.join(" "),
            ],
        )?;
        Ok(())
    }

    /// Sets a transfer's priority (higher runs first).
    pub fn set_transfer_priority(&self, id: u64, priority: i64) -> Result<()> {
        self.writer().execute(
            "UPDATE transfers SET priority = ?2 WHERE id = ?1",
            params![id as i64, priority],
        )?;
        Ok(())
    }

    /// Forgets finished transfers beyond the `keep` most recent.
    pub fn trim_transfer_history(&self, keep: usize) -> Result<u64> {
        let n = self.writer().execute(
            "DELETE FROM transfers WHERE state IN ('done', 'failed', 'cancelled') AND id NOT IN
                 (SELECT id FROM transfers WHERE state IN ('done', 'failed', 'cancelled')
                  ORDER BY finished_at DESC, id DESC LIMIT ?1)",
            [keep as i64],
        )?;
        Ok(n as u64)
    }
}
