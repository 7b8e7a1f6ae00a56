//! The agent's catalog: one SQLite file in the state directory that remembers every shared file
//! (path, size, mtime, inode, content hash), the piece hashes needed to verify downloads, and
//! what the index server holds, so that restarts re-read nothing and upload only what changed.
//!
//! Rows are keyed by (share, folder, name): a folder's files are one index range, so a rescan
//! compares a folder's listing with its rows in one query and writes nothing when nothing
//! changed. Each row also records the server's copy of the entry (`srv_*`): a delta is the
//! difference between the two, computed from the rows flagged `dirty`.
//!
//! Writes go through one connection behind a mutex (`BEGIN IMMEDIATE`); readers open their own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use peerdex_shared::FileHash;
use peerdex_shared::api::{DeltaOp, ListEntry, MediaTags};
use peerdex_shared::pieces::{PieceCv, decode_cvs, encode_cvs};
use peerdex_sqlite::Migration;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

mod transfers;
pub use transfers::{Destination, NewTransfer, Stored, TransferRow};

/// File name of the catalog in the state directory.
pub const CATALOG_FILE: &str = "catalog.sqlite3";

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// SQLite failed.
    #[error("catalog database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The catalog's own data is inconsistent.
    #[error("catalog is damaged: {0}")]
    Corrupt(String),
    /// The catalog's schema is newer than this build, or could not be migrated.
    #[error(transparent)]
    Schema(#[from] peerdex_sqlite::SchemaError),
}

type Result<T> = std::result::Result<T, CatalogError>;

/// What the file system says about a file: enough to tell whether it changed.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Device number.
    pub dev: u64,
}

impl Stat {
    /// From file metadata.
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            size: meta.len(),
            mtime_ns: meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec()),
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }

    /// Whether `other` describes the same file in the same version: same inode, size and mtime.
    /// The device number is left out: it can change across reboots and remounts (USB disks,
    /// NFS, btrfs subvolumes) while the files stay the same.
    pub fn same_version(&self, other: &Stat) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns && self.inode == other.inode
    }

    /// Modification time in whole seconds, as the index server stores it.
    pub fn mtime_secs(&self) -> i64 {
        mtime_secs(self.mtime_ns)
    }
}

/// A modification time in nanoseconds as whole seconds, as the index server stores it
/// (rounded down, also before 1970). SQL that needs it uses `mtime_secs_sql!`, the same rule.
fn mtime_secs(mtime_ns: i64) -> i64 {
    mtime_ns.div_euclid(1_000_000_000)
}

/// [`mtime_secs`] of the `mtime_ns` column, in SQL (whose `%` and `/` round toward zero).
macro_rules! mtime_secs_sql {
    () => {
        "((mtime_ns - ((mtime_ns % 1000000000) + 1000000000) % 1000000000) / 1000000000)"
    };
}

/// A file's key in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    /// Share name.
    pub share: String,
    /// Folder within the share (`""` at the root).
    pub dir: String,
    /// File name.
    pub name: String,
}

impl FileKey {
    /// Splits a share-relative path into folder and name.
    pub fn from_path(share: &str, rel: &str) -> FileKey {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        FileKey {
            share: share.to_owned(),
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The path within the share.
    pub fn rel_path(&self) -> String {
        join(&self.dir, &self.name)
    }
}

/// `dir/name`, or `name` at the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// A file's row as a scan compares it.
#[derive(Debug, Clone)]
pub struct ChildRow {
    /// File name.
    pub name: String,
    /// Recorded stat.
    pub stat: Stat,
    /// Deleted locally, waiting for the server to forget it.
    pub gone: bool,
}

/// A change a scan found.
#[derive(Debug, Clone)]
pub enum Change {
    /// A file is new or its stat changed: it needs hashing.
    Upsert(FileKey, Stat),
    /// A file is gone.
    Remove(FileKey),
    /// A folder and everything under it is gone.
    RemoveDir {
        /// Share name.
        share: String,
        /// The folder.
        dir: String,
    },
    /// A folder exists (so that its disappearance is noticed later).
    Dir {
        /// Share name.
        share: String,
        /// The folder.
        dir: String,
    },
}

/// A file as the catalog recorded it: waiting to be hashed (the hash must be taken at this
/// stat), or hashed (the file must still have this stat to be served).
#[derive(Debug, Clone)]
pub struct FileRecord {
    /// Its key.
    pub key: FileKey,
    /// The recorded stat.
    pub stat: Stat,
}

/// Reads a [`FileRecord`] from the columns `share, dir, name, size, mtime_ns, inode, dev`.
fn file_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    Ok(FileRecord {
        key: FileKey {
            share: row.get(0)?,
            dir: row.get(1)?,
            name: row.get(2)?,
        },
        stat: stat_from(row, 3)?,
    })
}

/// A file hashed at its recorded stat, with its piece CVs and the tags read from it.
#[derive(Debug, Clone)]
pub struct Hashed {
    /// The file as queued.
    pub file: FileRecord,
    /// Its content hash.
    pub hash: FileHash,
    /// Piece CVs (files of two or more pieces).
    pub cvs: Vec<PieceCv>,
    /// Its media tags (empty for files without any).
    pub tags: MediaTags,
}

/// One pending change to the server's copy of the list, and what the row will say it holds
/// once the server accepted it.
#[derive(Debug, Clone)]
pub struct PendingOp {
    /// The row.
    pub key: FileKey,
    /// The operation to send (`None`: nothing to send, only the dirty flag to clear).
    pub op: Option<DeltaOp>,
    /// The server's copy after the op, or none.
    pub after: Option<ServerCopy>,
}

/// What the index server holds for one file (or will, once an op is accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCopy {
    /// Content hash.
    pub hash: FileHash,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, whole seconds.
    pub mtime: i64,
    /// Tags, as the catalog stores them.
    pub tags: Option<String>,
}

/// What the server said to a full upload, as [`Catalog::full_upload`] needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the server holds the list.
    Accepted,
    /// The server refused the entry on this 1-based line.
    RefusedLine(u64),
    /// Anything else: the upload did not happen.
    Failed,
}

/// How a full upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FullUpload {
    /// The server holds every shared entry; rows are marked so.
    Done,
    /// Not accepted (transport error, server error, stopped); nothing changed.
    Aborted,
    /// The server refused this entry (share, path), now marked rejected; try again.
    Refused(Option<(String, String)>),
}

/// The rows a full upload sends, in the order it sends them.
const FULL_LIST_QUERY: &str = "SELECT share, dir, name, size, mtime_ns, hash, tags FROM files
     WHERE hash IS NOT NULL AND gone = 0 AND rejected = 0
     ORDER BY share, dir, name";

/// Counts for one share.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ShareCounts {
    /// Files found.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files hashed (and so shared).
    pub hashed_files: u64,
    /// Bytes of those.
    pub hashed_bytes: u64,
}

/// The catalog database.
pub struct Catalog {
    path: PathBuf,
    writer: Mutex<Connection>,
    /// Readers not in use, for [`Catalog::read`].
    readers: Mutex<Vec<CatalogReader>>,
}

/// Idle pooled readers kept at most.
const MAX_IDLE_READERS: usize = 8;

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Catalog({})", self.path.display())
    }
}

/// A read connection to the catalog, for one thread at a time: every read of the catalog is a
/// method here, so nothing outside this module names SQLite. Reads see the last committed state
/// and never wait for the writer.
pub struct CatalogReader {
    conn: Connection,
}

impl CatalogReader {
    /// The files recorded in one folder, sorted by name.
    pub fn children(&self, share: &str, dir: &str) -> Result<Vec<ChildRow>> {
        let reader = &self.conn;
        let mut stmt = reader.prepare_cached(
            "SELECT name, size, mtime_ns, inode, dev, gone FROM files
             WHERE share = ?1 AND dir = ?2 ORDER BY name",
        )?;
        let rows = stmt.query_map(params![share, dir], |row| {
            Ok(ChildRow {
                name: row.get(0)?,
                stat: stat_from(row, 1)?,
                gone: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The folders recorded directly under `dir`.
    pub fn child_dirs(&self, share: &str, dir: &str) -> Result<Vec<String>> {
        let reader = &self.conn;
        let mut stmt =
            reader.prepare_cached("SELECT path FROM dirs WHERE share = ?1 AND parent = ?2")?;
        let rows = stmt.query_map(params![share, dir], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// One file's recorded stat, if it is there and not gone.
    pub fn file_stat(&self, key: &FileKey) -> Result<Option<Stat>> {
        let reader = &self.conn;
        let mut stmt = reader.prepare_cached(
            "SELECT size, mtime_ns, inode, dev FROM files
             WHERE share = ?1 AND dir = ?2 AND name = ?3 AND gone = 0",
        )?;
        Ok(stmt
            .query_row(params![key.share, key.dir, key.name], |row| {
                stat_from(row, 0)
            })
            .optional()?)
    }

    /// Up to `limit` files waiting for a hash.
    pub fn unhashed(&self, limit: usize) -> Result<Vec<FileRecord>> {
        let reader = &self.conn;
        let mut stmt = reader.prepare_cached(
            "SELECT share, dir, name, size, mtime_ns, inode, dev FROM files
             WHERE hash IS NULL AND gone = 0 AND rejected = 0 ORDER BY share, dir, name LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], file_record)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Up to `limit` hashed files whose tags were never read (hashed before tags were read).
    pub fn untagged(&self, limit: usize) -> Result<Vec<FileRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT share, dir, name, size, mtime_ns, inode, dev FROM files
             WHERE hash IS NOT NULL AND tags_read = 0 AND gone = 0 AND rejected = 0
             ORDER BY share, dir, name LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], file_record)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Files and bytes waiting for a hash.
    pub fn unhashed_totals(&self) -> Result<(u64, u64)> {
        let reader = &self.conn;
        Ok(reader.query_row(
            "SELECT count(*), coalesce(sum(size), 0) FROM files
             WHERE hash IS NULL AND gone = 0 AND rejected = 0",
            [],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
        )?)
    }

    /// The files holding content `hash`, as recorded when hashed.
    pub fn servable(&self, hash: &FileHash) -> Result<Vec<FileRecord>> {
        let reader = &self.conn;
        let mut stmt = reader.prepare_cached(
            "SELECT share, dir, name, size, mtime_ns, inode, dev FROM files
             WHERE hash = ?1 AND gone = 0 LIMIT 8",
        )?;
        let rows = stmt.query_map(params![hash.as_bytes().as_slice()], file_record)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The piece CVs of content `hash` (files of two or more pieces).
    pub fn piece_cvs(&self, hash: &FileHash) -> Result<Option<Vec<PieceCv>>> {
        let reader = &self.conn;
        let blob: Option<Vec<u8>> = reader
            .prepare_cached("SELECT cvs FROM pieces WHERE hash = ?1")?
            .query_row(params![hash.as_bytes().as_slice()], |row| row.get(0))
            .optional()?;
        match blob {
            None => Ok(None),
            Some(blob) => decode_cvs(&blob)
                .map(Some)
                .ok_or_else(|| CatalogError::Corrupt(format!("piece hashes of {hash}"))),
        }
    }

    /// Up to `limit` pending changes of the server's copy.
    pub fn pending_ops(&self, limit: usize) -> Result<Vec<PendingOp>> {
        let reader = &self.conn;
        let mut stmt = reader.prepare_cached(
            "SELECT share, dir, name, size, mtime_ns, hash, gone, rejected,
                    srv_hash, srv_size, srv_mtime, tags, srv_tags
             FROM files WHERE dirty = 1 LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |row| {
            let key = FileKey {
                share: row.get(0)?,
                dir: row.get(1)?,
                name: row.get(2)?,
            };
            let size = row.get::<_, i64>(3)? as u64;
            let mtime = mtime_secs(row.get(4)?);
            let hash = hash_from(row.get(5)?);
            let gone: bool = row.get(6)?;
            let rejected: bool = row.get(7)?;
            let srv_hash = hash_from(row.get(8)?);
            let tags: Option<String> = row.get(11)?;
            let srv = srv_hash.map(|h| -> rusqlite::Result<_> {
                Ok(ServerCopy {
                    hash: h,
                    size: row.get::<_, Option<i64>>(9)?.unwrap_or(0) as u64,
                    mtime: row.get::<_, Option<i64>>(10)?.unwrap_or(0),
                    tags: row.get(12)?,
                })
            });
            let srv = srv.transpose()?;
            // What the server should hold: the local file if it is hashed and shareable.
            let local = match (hash, gone || rejected) {
                (Some(hash), false) => Some(ServerCopy {
                    hash,
                    size,
                    mtime,
                    tags,
                }),
                _ => None,
            };
            let entry = |copy: &ServerCopy| ListEntry {
                share: key.share.clone(),
                path: key.rel_path(),
                size: copy.size,
                mtime: copy.mtime,
                hash: copy.hash,
                tags: MediaTags::from_stored(copy.tags.clone()),
                // The sync loop sets it from the share's rules as it sends.
                visibility: Default::default(),
            };
            let op = match (&srv, &local) {
                (None, Some(l)) => Some(DeltaOp::Add(entry(l))),
                (Some(s), Some(l)) if s != l => Some(DeltaOp::Change(entry(l))),
                (Some(_), None) => Some(DeltaOp::Remove {
                    share: key.share.clone(),
                    path: key.rel_path(),
                }),
                _ => None,
            };
            Ok(PendingOp {
                key,
                op,
                after: local,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Files, bytes and hashed counts per share.
    pub fn counts(&self) -> Result<Vec<(String, ShareCounts)>> {
        let reader = &self.conn;
        let mut stmt = reader.prepare(
            "SELECT share, count(*), coalesce(sum(size), 0),
                    count(hash), coalesce(sum(CASE WHEN hash IS NOT NULL THEN size END), 0)
             FROM files WHERE gone = 0 GROUP BY share ORDER BY share",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get(0)?,
                ShareCounts {
                    files: row.get::<_, i64>(1)? as u64,
                    bytes: row.get::<_, i64>(2)? as u64,
                    hashed_files: row.get::<_, i64>(3)? as u64,
                    hashed_bytes: row.get::<_, i64>(4)? as u64,
                },
            ))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Rows whose server copy may differ from the file (changes not yet sent).
    pub fn pending_count(&self) -> Result<u64> {
        let reader = &self.conn;
        Ok(
            reader.query_row("SELECT count(*) FROM files WHERE dirty = 1", [], |row| {
                row.get::<_, i64>(0)
            })? as u64,
        )
    }

    /// A number kept in the catalog's `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<i64>> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// The list version the server holds, as last confirmed.
    pub fn list_version(&self) -> Result<Option<u64>> {
        Ok(self.meta("list_version")?.map(|v| v as u64))
    }
}

/// The catalog's schema history (`peerdex_sqlite`): applied on open, oldest first; a catalog of a
/// newer version is refused untouched. Add a step at the end, never change one that shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "adopt the schema of before versions were recorded",
        rewrites_data: false,
        apply: |tx| tx.execute_batch(VERSION_1),
    },
    Migration {
        version: 2,
        description: "media tags per file version, and the server's copy of them",
        rewrites_data: false,
        apply: |tx| tx.execute_batch(VERSION_2),
    },
    Migration {
        version: 3,
        description: "the transfer queue",
        rewrites_data: false,
        apply: |tx| tx.execute_batch(transfers::VERSION_3),
    },
];

/// Version 2: a file's tags (JSON of `MediaTags`, `NULL` when it has none), whether they were
/// read for the recorded version (files hashed before this version are read in the background,
/// without hashing them again) and the tags the server holds.
const VERSION_2: &str = "
ALTER TABLE files ADD COLUMN tags TEXT;
ALTER TABLE files ADD COLUMN tags_read INTEGER NOT NULL DEFAULT 0;
ALTER TABLE files ADD COLUMN srv_tags TEXT;
CREATE INDEX files_untagged ON files(share, dir, name)
    WHERE hash IS NOT NULL AND tags_read = 0 AND gone = 0 AND rejected = 0;
";

/// The tables of version 1: the schema as it was before versions were recorded.
const VERSION_1: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER);
CREATE TABLE IF NOT EXISTS files(
    share TEXT NOT NULL,
    dir TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    dev INTEGER NOT NULL,
    hash BLOB,
    gone INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    srv_hash BLOB,
    srv_size INTEGER,
    srv_mtime INTEGER,
    dirty INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY(share, dir, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_by_hash ON files(hash) WHERE hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_by_inode ON files(dev, inode);
CREATE INDEX IF NOT EXISTS files_dirty ON files(share, dir, name) WHERE dirty = 1;
CREATE INDEX IF NOT EXISTS files_unhashed ON files(share, dir, name)
    WHERE hash IS NULL AND gone = 0 AND rejected = 0;
CREATE TABLE IF NOT EXISTS dirs(
    share TEXT NOT NULL,
    path TEXT NOT NULL,
    parent TEXT NOT NULL,
    PRIMARY KEY(share, path)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dirs_by_parent ON dirs(share, parent);
CREATE TABLE IF NOT EXISTS pieces(hash BLOB PRIMARY KEY, cvs BLOB NOT NULL);
";

/// Upper bound of the keys under folder `dir` (exclusive): `'/'` + 1 is `'0'`.
fn subtree_bounds(dir: &str) -> (String, String) {
    (format!("{dir}/"), format!("{dir}0"))
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

fn hash_from(blob: Option<Vec<u8>>) -> Option<FileHash> {
    blob.and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .map(FileHash::from_bytes)
}

fn stat_from(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Stat> {
    Ok(Stat {
        size: row.get::<_, i64>(first)? as u64,
        mtime_ns: row.get(first + 1)?,
        inode: row.get::<_, i64>(first + 2)? as u64,
        dev: row.get::<_, i64>(first + 3)? as u64,
    })
}

impl Catalog {
    /// Opens (creating) the catalog in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Catalog> {
        let path = state_dir.join(CATALOG_FILE);
        peerdex_sqlite::refuse_newer(&path, MIGRATIONS)?;
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        configure(&conn)?;
        // Hash results land all over the hash index: a larger cache and rarer checkpoints let
        // a page take many updates per write-out (measured ≈2.5× faster on 1M small files).
        conn.pragma_update(None, "cache_size", -65_536)?;
        conn.pragma_update(None, "wal_autocheckpoint", 16_384)?;
        peerdex_sqlite::migrate(&path, &mut conn, MIGRATIONS)?;
        Ok(Catalog {
            path,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// A reader of its own for one thread (a scan walker, the hash thread).
    pub fn reader(&self) -> Result<CatalogReader> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        configure(&conn)?;
        Ok(CatalogReader { conn })
    }

    /// Runs `f` on a pooled reader (blocking: call from a blocking thread, or use
    /// [`Catalog::call`]).
    pub fn read<T>(&self, f: impl FnOnce(&CatalogReader) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let reader = match pooled {
            Some(reader) => reader,
            None => self.reader()?,
        };
        let out = f(&reader);
        let mut idle = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(reader);
        }
        out
    }

    /// Runs a blocking catalog call off the async threads.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Catalog) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let catalog = self.clone();
        tokio::task::spawn_blocking(move || f(&catalog))
            .await
            .map_err(|_| CatalogError::Corrupt("a catalog task failed".into()))?
    }

    /// A number kept in the catalog's `meta` table.
    pub fn meta(&self, key: &str) -> Result<Option<i64>> {
        self.read(|r| r.meta(key))
    }

    /// The list version the server holds, as last confirmed.
    pub fn list_version(&self) -> Result<Option<u64>> {
        self.read(CatalogReader::list_version)
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open (it rolls back on
        // drop), so the connection is still usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies what a scan found, in one transaction. Returns (files, bytes) newly waiting
    /// for a hash.
    pub fn apply(&self, changes: &[Change]) -> Result<(u64, u64)> {
        if changes.is_empty() {
            return Ok((0, 0));
        }
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut queued = (0u64, 0u64);
        for change in changes {
            match change {
                Change::Upsert(key, stat) => {
                    // A file renamed or moved within the shares keeps its inode, size and
                    // mtime: its hash is taken over instead of reading it again. Only for
                    // mtimes with a sub-second part: files restored from an archive with
                    // whole-second mtimes could reuse a freed inode with the same size.
                    let known: Option<(Vec<u8>, Option<String>, bool)> =
                        if stat.mtime_ns.rem_euclid(1_000_000_000) == 0 {
                            None
                        } else {
                            tx.prepare_cached(
                            "SELECT hash, tags, tags_read FROM files WHERE dev = ?1 AND inode = ?2
                             AND size = ?3 AND mtime_ns = ?4 AND hash IS NOT NULL LIMIT 1",
                        )?
                        .query_row(
                            params![
                                stat.dev as i64,
                                stat.inode as i64,
                                stat.size as i64,
                                stat.mtime_ns
                            ],
                            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                        )
                        .optional()?
                        };
                    let (known_tags, tags_read) = match &known {
                        Some((_, tags, read)) => (tags.clone(), *read),
                        None => (None, false),
                    };
                    let known = known.map(|(hash, _, _)| hash);
                    // A re-tagged file has a new stat: its old tags go with its old hash.
                    let n = tx
                        .prepare_cached(
                            "INSERT INTO files(share, dir, name, size, mtime_ns, inode, dev, hash,
                                               tags, tags_read, dirty)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1)
                             ON CONFLICT(share, dir, name) DO UPDATE SET
                                size = excluded.size, mtime_ns = excluded.mtime_ns,
                                inode = excluded.inode, dev = excluded.dev,
                                hash = excluded.hash, tags = excluded.tags,
                                tags_read = excluded.tags_read, gone = 0, rejected = 0, dirty = 1
                             WHERE gone = 1 OR size != excluded.size OR mtime_ns != excluded.mtime_ns
                                OR inode != excluded.inode",
                        )?
                        .execute(params![
                            key.share,
                            key.dir,
                            key.name,
                            stat.size as i64,
                            stat.mtime_ns,
                            stat.inode as i64,
                            stat.dev as i64,
                            known,
                            known_tags,
                            tags_read
                        ])?;
                    if n > 0 && known.is_none() {
                        queued.0 += 1;
                        queued.1 += stat.size;
                    }
                }
                Change::Remove(key) => {
                    remove_where(
                        &tx,
                        "share = ?1 AND dir = ?2 AND name = ?3",
                        params![key.share, key.dir, key.name],
                    )?;
                }
                Change::RemoveDir { share, dir } => {
                    let (lo, hi) = subtree_bounds(dir);
                    remove_where(
                        &tx,
                        "share = ?1 AND (dir = ?2 OR (dir >= ?3 AND dir < ?4))",
                        params![share, dir, lo, hi],
                    )?;
                    tx.prepare_cached(
                        "DELETE FROM dirs WHERE share = ?1
                         AND (path = ?2 OR (path >= ?3 AND path < ?4))",
                    )?
                    .execute(params![share, dir, lo, hi])?;
                }
                Change::Dir { share, dir } => {
                    let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO dirs(share, path, parent) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![share, dir, parent])?;
                }
            }
        }
        tx.commit()?;
        Ok(queued)
    }

    /// Forgets every share not in `names` (they were unshared): their files are removed from
    /// the server's list at the next sync.
    pub fn retain_shares(&self, names: &[String]) -> Result<u64> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let shares: Vec<String> = {
            let mut stmt = tx.prepare("SELECT DISTINCT share FROM files")?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut removed = 0;
        for share in shares.iter().filter(|s| !names.contains(s)) {
            removed += remove_where(&tx, "share = ?1", params![share])?;
            tx.execute("DELETE FROM dirs WHERE share = ?1", params![share])?;
        }
        tx.commit()?;
        Ok(removed)
    }

    /// Records hashes, each only if the file still has the stat it was hashed at. Returns how
    /// many were recorded.
    pub fn record_hashes(&self, results: &[Hashed]) -> Result<usize> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut recorded = 0;
        for Hashed {
            file,
            hash,
            cvs,
            tags,
        } in results
        {
            let n = tx
                .prepare_cached(
                    "UPDATE files SET hash = ?4, tags = ?8, tags_read = 1, dirty = 1
                     WHERE share = ?1 AND dir = ?2 AND name = ?3 AND gone = 0
                       AND size = ?5 AND mtime_ns = ?6 AND inode = ?7",
                )?
                .execute(params![
                    file.key.share,
                    file.key.dir,
                    file.key.name,
                    hash.as_bytes().as_slice(),
                    file.stat.size as i64,
                    file.stat.mtime_ns,
                    file.stat.inode as i64,
                    tags.to_stored()
                ])?;
            if n > 0 && !cvs.is_empty() {
                tx.prepare_cached("INSERT OR IGNORE INTO pieces(hash, cvs) VALUES (?1, ?2)")?
                    .execute(params![hash.as_bytes().as_slice(), encode_cvs(cvs)])?;
            }
            recorded += n;
        }
        tx.commit()?;
        Ok(recorded)
    }

    /// Records tags read for files hashed before tags were read, each only if the file still
    /// has the stat it was read at. A row whose tags changed becomes dirty (the server gets
    /// them with the next delta). Returns how many rows got new tags.
    pub fn record_tags(&self, results: &[(FileRecord, MediaTags)]) -> Result<usize> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut changed = 0;
        for (file, tags) in results {
            let tags = tags.to_stored();
            let args = params![
                file.key.share,
                file.key.dir,
                file.key.name,
                file.stat.size as i64,
                file.stat.mtime_ns,
                file.stat.inode as i64,
                file.stat.dev as i64,
                tags
            ];
            const ROW: &str = "share = ?1 AND dir = ?2 AND name = ?3 AND gone = 0 AND tags_read = 0
                 AND size = ?4 AND mtime_ns = ?5 AND inode = ?6 AND dev = ?7";
            changed += tx
                .prepare_cached(&format!(
                    "UPDATE files SET tags = ?8, tags_read = 1, dirty = 1
                     WHERE {ROW} AND tags IS NOT ?8"
                ))?
                .execute(args)?;
            tx.prepare_cached(&format!(
                "UPDATE files SET tags_read = 1 WHERE {ROW} AND tags IS ?8"
            ))?
            .execute(args)?;
        }
        tx.commit()?;
        Ok(changed)
    }

    /// Sets a number in the `meta` table.
    pub fn set_meta(&self, key: &str, value: i64) -> Result<()> {
        self.writer().execute(
            "INSERT INTO meta(key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Records that the server accepted `ops` and now holds `version`.
    pub fn mark_synced(&self, ops: &[PendingOp], version: u64) -> Result<()> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for op in ops {
            let (hash, size, mtime, tags) = match &op.after {
                Some(copy) => (
                    Some(copy.hash.as_bytes().to_vec()),
                    Some(copy.size as i64),
                    Some(copy.mtime),
                    copy.tags.clone(),
                ),
                None => (None, None, None, None),
            };
            // The row may have changed since the op was read: it stays dirty if it now differs
            // from what the server holds.
            tx.prepare_cached(concat!(
                "UPDATE files SET srv_hash = ?4, srv_size = ?5, srv_mtime = ?6, srv_tags = ?7,
                    dirty = NOT (gone = 0 AND rejected = 0 AND hash IS ?4 AND size IS ?5
                                 AND tags IS ?7 AND ",
                mtime_secs_sql!(),
                " = ?6
                                 OR (gone = 1 OR rejected = 1 OR hash IS NULL) AND ?4 IS NULL)
                 WHERE share = ?1 AND dir = ?2 AND name = ?3",
            ))?
            .execute(params![
                op.key.share,
                op.key.dir,
                op.key.name,
                hash,
                size,
                mtime,
                tags
            ])?;
            tx.prepare_cached(
                "DELETE FROM files WHERE share = ?1 AND dir = ?2 AND name = ?3
                 AND gone = 1 AND srv_hash IS NULL",
            )?
            .execute(params![op.key.share, op.key.dir, op.key.name])?;
        }
        set_version(&tx, version)?;
        tx.commit()?;
        Ok(())
    }

    /// Marks a file the server refused, so that it is left out of uploads until it changes.
    pub fn reject(&self, share: &str, rel: &str) -> Result<bool> {
        let key = FileKey::from_path(share, rel);
        let n = self.writer().execute(
            "UPDATE files SET rejected = 1, dirty = 1
             WHERE share = ?1 AND dir = ?2 AND name = ?3",
            params![key.share, key.dir, key.name],
        )?;
        Ok(n > 0)
    }

    /// Runs a full upload: holds the writer (so no row changes meanwhile), feeds every shared
    /// entry to `send` in key order, then asks `verdict` what the server made of them. On
    /// acceptance every row is marked as held by the server at `version`; when the server refused
    /// the entry on line `n`, that row is marked rejected (under the same lock, so line `n` is
    /// still the row that was sent).
    pub fn full_upload(
        &self,
        version: u64,
        mut send: impl FnMut(ListEntry) -> bool,
        verdict: impl FnOnce() -> Verdict,
    ) -> Result<FullUpload> {
        let mut conn = self.writer();
        {
            let mut stmt = conn.prepare(FULL_LIST_QUERY)?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let Some(hash) = hash_from(row.get(5)?) else {
                    continue;
                };
                let entry = ListEntry {
                    share: row.get(0)?,
                    path: join(&row.get::<_, String>(1)?, &row.get::<_, String>(2)?),
                    size: row.get::<_, i64>(3)? as u64,
                    mtime: mtime_secs(row.get(4)?),
                    hash,
                    tags: MediaTags::from_stored(row.get(6)?),
                    visibility: Default::default(),
                };
                if !send(entry) {
                    return Ok(FullUpload::Aborted);
                }
            }
        }
        match verdict() {
            Verdict::Accepted => {}
            Verdict::Failed => return Ok(FullUpload::Aborted),
            Verdict::RefusedLine(line) => {
                let row: Option<(String, String, String)> = conn
                    .query_row(
                        &format!("{FULL_LIST_QUERY} LIMIT 1 OFFSET ?1"),
                        params![line.saturating_sub(1) as i64],
                        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
                    .optional()?;
                let Some((share, dir, name)) = row else {
                    return Ok(FullUpload::Refused(None));
                };
                conn.execute(
                    "UPDATE files SET rejected = 1, dirty = 1
                     WHERE share = ?1 AND dir = ?2 AND name = ?3",
                    params![share, dir, name],
                )?;
                return Ok(FullUpload::Refused(Some((share, join(&dir, &name)))));
            }
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(concat!(
            "DELETE FROM files WHERE gone = 1;
             UPDATE files SET srv_hash = hash, srv_size = size, srv_tags = tags, srv_mtime = ",
            mtime_secs_sql!(),
            ", dirty = 0
             WHERE hash IS NOT NULL AND rejected = 0;
             UPDATE files SET srv_hash = NULL, srv_size = NULL, srv_mtime = NULL, srv_tags = NULL,
                dirty = 0
             WHERE hash IS NULL OR rejected = 1;",
        ))?;
        set_version(&tx, version)?;
        tx.commit()?;
        Ok(FullUpload::Done)
    }

    /// Drops piece hashes no file refers to any more.
    pub fn collect_garbage(&self) -> Result<usize> {
        Ok(self.writer().execute(
            "DELETE FROM pieces WHERE hash NOT IN
                (SELECT hash FROM files WHERE hash IS NOT NULL)",
            [],
        )?)
    }
}

/// Turns rows into tombstones: the removal reaches the server at the next sync, which then
/// deletes them. The hash is kept so that a file moved elsewhere in the shares is not re-read.
/// Returns the rows affected.
fn remove_where(
    tx: &rusqlite::Transaction<'_>,
    filter: &str,
    args: impl rusqlite::Params,
) -> Result<u64> {
    let n = tx
        .prepare_cached(&format!(
            "UPDATE files SET gone = 1, dirty = 1 WHERE {filter} AND gone = 0"
        ))?
        .execute(args)?;
    Ok(n as u64)
}

fn set_version(tx: &rusqlite::Transaction<'_>, version: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES ('list_version', ?1)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![version as i64],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(size: u64, mtime: i64) -> Stat {
        Stat {
            size,
            mtime_ns: mtime * 1_000_000_000,
            inode: 7,
            dev: 1,
        }
    }

    fn hash(label: &str) -> FileHash {
        FileHash::from_bytes(*blake3::hash(label.as_bytes()).as_bytes())
    }

    fn hash_all(catalog: &Catalog, label: &str) {
        let reader = catalog.reader().unwrap();
        let pending: Vec<_> = reader
            .unhashed(100)
            .unwrap()
            .into_iter()
            .map(|file| Hashed {
                file,
                hash: hash(label),
                cvs: vec![],
                tags: MediaTags::default(),
            })
            .collect();
        catalog.record_hashes(&pending).unwrap();
    }

    #[test]
    fn tags_read_later_travel_as_changes_and_unchanged_ones_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let key = FileKey::from_path("m", "a/01.mp3");
        catalog
            .apply(&[Change::Upsert(key.clone(), stat(10, 5))])
            .unwrap();
        // Hashed by an older build: hash recorded, tags never read.
        catalog
            .writer()
            .execute(
                "UPDATE files SET hash = ?1",
                params![hash("x").as_bytes().as_slice()],
            )
            .unwrap();
        catalog
            .writer()
            .execute("UPDATE files SET tags_read = 0", [])
            .unwrap();
        let ops = sync(&catalog, 1);
        assert!(matches!(ops[..], [Some(DeltaOp::Add(ref e))] if e.tags.is_empty()));
        let reader = catalog.reader().unwrap();
        let untagged = reader.untagged(10).unwrap();
        assert_eq!(untagged.len(), 1);
        let tags = MediaTags {
            artist: Some("Motörhead".into()),
            ..MediaTags::default()
        };
        assert_eq!(
            catalog
                .record_tags(&[(untagged[0].clone(), tags.clone())])
                .unwrap(),
            1
        );
        assert!(reader.untagged(10).unwrap().is_empty());
        let ops = sync(&catalog, 2);
        assert!(
            matches!(ops[..], [Some(DeltaOp::Change(ref e))] if e.tags == tags),
            "{ops:?}"
        );
        assert_eq!(reader.pending_count().unwrap(), 0);
        // Reading the same tags again (a file with none, say) changes nothing.
        catalog
            .writer()
            .execute("UPDATE files SET tags_read = 0", [])
            .unwrap();
        let untagged = reader.untagged(10).unwrap();
        assert_eq!(
            catalog.record_tags(&[(untagged[0].clone(), tags)]).unwrap(),
            0
        );
        assert_eq!(reader.pending_count().unwrap(), 0);
    }

    fn sync(catalog: &Catalog, version: u64) -> Vec<Option<DeltaOp>> {
        let reader = catalog.reader().unwrap();
        let ops = reader.pending_ops(100).unwrap();
        catalog.mark_synced(&ops, version).unwrap();
        ops.into_iter().map(|o| o.op).collect()
    }

    #[test]
    fn deltas_follow_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let key = FileKey::from_path("m", "a/b.mp3");
        catalog
            .apply(&[Change::Upsert(key.clone(), stat(10, 1))])
            .unwrap();
        // Not hashed yet: nothing to send.
        assert_eq!(sync(&catalog, 1), vec![None]);
        hash_all(&catalog, "one");
        assert!(matches!(sync(&catalog, 2)[..], [Some(DeltaOp::Add(_))]));
        assert!(sync(&catalog, 3).is_empty(), "clean after sync");
        // Same stat again: no change at all.
        assert_eq!(
            catalog
                .apply(&[Change::Upsert(key.clone(), stat(10, 1))])
                .unwrap(),
            (0, 0)
        );
        assert!(sync(&catalog, 3).is_empty());
        // Modified: unhashed content must not stay advertised, then it comes back changed.
        catalog
            .apply(&[Change::Upsert(key.clone(), stat(11, 2))])
            .unwrap();
        assert!(matches!(
            sync(&catalog, 4)[..],
            [Some(DeltaOp::Remove { .. })]
        ));
        hash_all(&catalog, "two");
        assert!(matches!(sync(&catalog, 5)[..], [Some(DeltaOp::Add(_))]));
        // Deleted: a tombstone until the server forgets it.
        catalog
            .apply(&[Change::RemoveDir {
                share: "m".into(),
                dir: "a".into(),
            }])
            .unwrap();
        assert!(matches!(
            sync(&catalog, 6)[..],
            [Some(DeltaOp::Remove { .. })]
        ));
        let reader = catalog.reader().unwrap();
        assert!(reader.children("m", "a").unwrap().is_empty());
        assert_eq!(catalog.list_version().unwrap(), Some(6));
    }

    #[test]
    fn a_change_during_sync_stays_dirty() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let key = FileKey::from_path("m", "x.txt");
        catalog
            .apply(&[Change::Upsert(key.clone(), stat(1, 1))])
            .unwrap();
        hash_all(&catalog, "one");
        let reader = catalog.reader().unwrap();
        let ops = reader.pending_ops(100).unwrap();
        // The file changes after the op was read but before the server answered.
        catalog
            .apply(&[Change::Upsert(key.clone(), stat(2, 2))])
            .unwrap();
        catalog.mark_synced(&ops, 1).unwrap();
        let again = reader.pending_ops(100).unwrap();
        assert!(matches!(again[0].op, Some(DeltaOp::Remove { .. })));
    }

    #[test]
    fn full_upload_marks_everything_held() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        for name in ["a", "b", "c"] {
            catalog
                .apply(&[Change::Upsert(FileKey::from_path("m", name), stat(1, 1))])
                .unwrap();
        }
        hash_all(&catalog, "x");
        let mut sent = vec![];
        let outcome = catalog
            .full_upload(
                1,
                |e| {
                    sent.push(e);
                    true
                },
                || Verdict::Failed,
            )
            .unwrap();
        assert_eq!(outcome, FullUpload::Aborted);
        assert_eq!(sent.len(), 3);
        let reader = catalog.reader().unwrap();
        assert_eq!(
            reader.pending_ops(10).unwrap().len(),
            3,
            "refused: still dirty"
        );
        // The server refuses line 2: that row, and only it, is left out of the next attempt.
        let refused = catalog
            .full_upload(1, |_| true, || Verdict::RefusedLine(2))
            .unwrap();
        assert_eq!(refused, FullUpload::Refused(Some(("m".into(), "b".into()))));
        let mut sent = vec![];
        let done = catalog
            .full_upload(
                1,
                |e| {
                    sent.push(e.path);
                    true
                },
                || Verdict::Accepted,
            )
            .unwrap();
        assert_eq!(done, FullUpload::Done);
        assert_eq!(sent, ["a", "c"]);
        assert!(reader.pending_ops(10).unwrap().is_empty());
        assert_eq!(catalog.list_version().unwrap(), Some(1));
    }

    #[test]
    fn times_before_1970_and_between_seconds_are_rounded_alike_in_rust_and_sql() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path()).unwrap();
        let times = [
            -1_500_000_000,
            -1,
            0,
            999_999_999,
            1_000_000_000,
            1_700_000_000_250_000_000,
        ];
        for (i, &mtime_ns) in times.iter().enumerate() {
            let stat = Stat {
                size: 1,
                mtime_ns,
                inode: i as u64,
                dev: 1,
            };
            assert_eq!(stat.mtime_secs(), mtime_ns.div_euclid(1_000_000_000));
            catalog
                .apply(&[Change::Upsert(
                    FileKey::from_path("m", &format!("{i}")),
                    stat,
                )])
                .unwrap();
        }
        hash_all(&catalog, "t");
        let reader = catalog.reader().unwrap();
        let ops = reader.pending_ops(100).unwrap();
        let mut sent: Vec<i64> = ops
            .iter()
            .map(|o| match &o.op {
                Some(DeltaOp::Add(entry)) => entry.mtime,
                other => panic!("{other:?}"),
            })
            .collect();
        sent.sort_unstable();
        assert_eq!(sent, [-2, -1, 0, 0, 1, 1_700_000_000]);
        // What the server was told is what the row has: nothing stays dirty.
        catalog.mark_synced(&ops, 1).unwrap();
        assert!(reader.pending_ops(100).unwrap().is_empty());
        // After a full upload too, the server's copy is rounded the same way.
        let mut uploaded = vec![];
        let done = catalog
            .full_upload(
                2,
                |e| {
                    uploaded.push(e.mtime);
                    true
                },
                || Verdict::Accepted,
            )
            .unwrap();
        assert_eq!(done, FullUpload::Done);
        uploaded.sort_unstable();
        assert_eq!(uploaded, sent);
        assert!(reader.pending_ops(100).unwrap().is_empty());
    }
}
