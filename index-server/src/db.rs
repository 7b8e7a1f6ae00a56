//! SQLite: the source of truth for peers, nicknames, file lists and the index change log.
//!
//! One writer connection behind a mutex (every write transaction is `BEGIN IMMEDIATE`) and a small
//! pool of read connections; WAL mode lets reads run beside the writer. Callers run these blocking
//! functions on blocking threads. This module knows nothing of HTTP or tantivy.
//!
//! Lists are stored in *generations*: a full upload writes its entries under a fresh generation in
//! many short transactions, then one transaction makes it the peer's active generation. A rejected
//! or interrupted upload never touches the active list. Old and abandoned generations are deleted
//! later in small batches by [`Db::delete_stale_batch`].
//!
//! Every change to what search should see also appends a row to `index_ops`, in the same
//! transaction; the indexer replays that log into tantivy (see `index`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use peerdex_shared::api::{DeltaOp, ListEntry, MediaTags, Reachability};
use peerdex_shared::validate::nickname_key;
use peerdex_shared::{FileHash, PeerId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::holders::{HolderCache, Holders, PeerCard};

/// Errors of the store. The variants a caller acts on are typed; SQLite's own are wrapped.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The nickname is bound to another key.
    #[error("nickname {0:?} belongs to another peer")]
    NicknameTaken(String),
    /// A delta was based on a version the server does not hold.
    #[error("delta is based on version {base} but the server holds {}", server.map_or("no list".to_string(), |v| format!("version {v}")))]
    VersionMismatch {
        /// The delta's base.
        base: u64,
        /// What the server holds (`None`: no list).
        server: Option<u64>,
    },
    /// A delta operation does not fit the server's list (so the two have diverged).
    #[error("line {line}: {reason}: {share}/{path}")]
    DeltaConflict {
        /// 1-based line of the operation.
        line: u64,
        /// Share of the entry.
        share: String,
        /// Path of the entry.
        path: String,
        /// What did not fit.
        reason: &'static str,
    },
    /// The same path appears twice in one list.
    #[error("line {line}: duplicate path {share}/{path}")]
    DuplicatePath {
        /// 1-based line of the second occurrence.
        line: u64,
        /// Share of the entry.
        share: String,
        /// Path of the entry.
        path: String,
    },
    /// The list would exceed `max_entries_per_peer`.
    #[error("list would have {entries} entries, over the limit of {limit} (max_entries_per_peer)")]
    TooManyEntries {
        /// Entries the list would have.
        entries: u64,
        /// The limit.
        limit: u64,
    },
    /// A newer full upload of the same peer replaced this one before it finished.
    #[error("a newer upload of this peer's list replaced this one")]
    Superseded,
    /// No such peer.
    #[error("unknown peer")]
    UnknownPeer,
    /// The disk (or the database's size limit) is full.
    #[error("database disk is full")]
    DiskFull,
    /// Any other SQLite failure.
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// Stored JSON did not parse (a bug or a damaged file).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The file's schema is newer than this build, or could not be migrated.
    #[error(transparent)]
    Schema(#[from] peerdex_sqlite::SchemaError),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => DbError::DiskFull,
            _ => DbError::Sqlite(e),
        }
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

/// Result alias of this module.
pub type DbResult<T> = Result<T, DbError>;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn reachability_from(code: i64) -> Reachability {
    match code {
        1 => Reachability::Reachable,
        2 => Reachability::Firewalled,
        _ => Reachability::Pending,
    }
}

fn reachability_code(r: Reachability) -> i64 {
    match r {
        Reachability::Pending => 0,
        Reachability::Reachable => 1,
        Reachability::Firewalled => 2,
    }
}

fn blob32(bytes: Vec<u8>) -> DbResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| DbError::Corrupt("key or hash is not 32 bytes".into()))
}

/// A registered peer, as stored.
#[derive(Debug, Clone)]
pub struct PeerRow {
    /// Internal numeric id (also the index's peer field).
    pub id: i64,
    /// Public key.
    pub key: PeerId,
    /// Current nickname.
    pub nickname: String,
    /// Observed IP at the last registration.
    pub ip: Option<String>,
    /// Announced port (0: none).
    pub port: u16,
    /// Connect-back state.
    pub reachability: Reachability,
    /// Version of the stored list, if any.
    pub list_version: Option<u64>,
    /// Entries in the stored list.
    pub entries: u64,
    /// Last heartbeat persisted (Unix seconds).
    pub last_seen: i64,
}

const PEER_COLUMNS: &str =
    "id, peer_key, nickname, ip, port, reachability, list_version, entries, last_seen";

fn peer_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(PeerRowRaw, Vec<u8>)> {
    Ok((
        PeerRowRaw {
            id: row.get(0)?,
            nickname: row.get(2)?,
            ip: row.get(3)?,
            port: row.get(4)?,
            reachability: row.get(5)?,
            list_version: row.get(6)?,
            entries: row.get(7)?,
            last_seen: row.get(8)?,
        },
        row.get(1)?,
    ))
}

struct PeerRowRaw {
    id: i64,
    nickname: String,
    ip: Option<String>,
    port: i64,
    reachability: i64,
    list_version: Option<i64>,
    entries: i64,
    last_seen: i64,
}

fn finish_peer((raw, key): (PeerRowRaw, Vec<u8>)) -> DbResult<PeerRow> {
    Ok(PeerRow {
        id: raw.id,
        key: PeerId::from_bytes(blob32(key)?),
        nickname: raw.nickname,
        ip: raw.ip,
        port: u16::try_from(raw.port).unwrap_or(0),
        reachability: reachability_from(raw.reachability),
        list_version: raw.list_version.map(|v| v as u64),
        entries: raw.entries as u64,
        last_seen: raw.last_seen,
    })
}

/// One change for the indexer to mirror into tantivy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexOp {
    /// Replace everything indexed for this peer with its active list (or nothing).
    ReindexPeer {
        /// Peer id.
        peer: i64,
    },
    /// Re-read one file row: drop its document and re-add it if it is still active.
    FileChanged {
        /// Peer id.
        peer: i64,
        /// File row id.
        file: i64,
    },
}

const OP_REINDEX_PEER: i64 = 1;
const OP_FILE_CHANGED: i64 = 2;

fn push_op(tx: &Connection, op: IndexOp) -> rusqlite::Result<()> {
    let (code, peer, file) = match op {
        IndexOp::ReindexPeer { peer } => (OP_REINDEX_PEER, peer, None),
        IndexOp::FileChanged { peer, file } => (OP_FILE_CHANGED, peer, Some(file)),
    };
    tx.prepare_cached("INSERT INTO index_ops (op, peer, file) VALUES (?1, ?2, ?3)")?
        .execute(params![code, peer, file])?;
    Ok(())
}

/// What the indexer needs to build one document.
#[derive(Debug, Clone)]
pub struct FileDoc {
    /// File row id.
    pub id: i64,
    /// Owner.
    pub peer: i64,
    /// Content id.
    pub content: i64,
    /// Share name.
    pub share: String,
    /// Path within the share.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A row of a browse listing.
#[derive(Debug, Clone)]
pub struct BrowseRow {
    /// Share name.
    pub share: String,
    /// Path.
    pub path: String,
    /// Size.
    pub size: u64,
    /// Modification time.
    pub mtime: i64,
    /// Hash.
    pub hash: FileHash,
}

/// Store-wide counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Registered peers.
    pub peers: u64,
    /// Entries of active lists.
    pub entries: u64,
    /// Distinct contents of active lists.
    pub contents: u64,
}

/// The database: one writer, a pool of readers.
pub struct Db {
    writer: Mutex<Connection>,
    /// Taken by bulk list batches before the writer, so that at most one of them waits for it:
    /// registrations and other short writes are not starved by many uploads at once.
    bulk: Mutex<()>,
    readers: Mutex<Vec<Connection>>,
    path: std::path::PathBuf,
    /// Holders of contents and peers' cards for search results; writes below invalidate it.
    holders: HolderCache,
}

/// Default budget of the holders cache (see [`Db::with_holders_cache`]).
pub const DEFAULT_HOLDERS_CACHE_BYTES: usize = 64 << 20;

const MAX_IDLE_READERS: usize = 16;

/// What a connection is for: the one writer keeps a large private page cache; readers keep a
/// smaller one each and read through the operating system's page cache (see `open_connection`).
#[derive(Clone, Copy)]
enum Role {
    Writer,
    Reader,
}

fn open_connection(path: &Path, role: Role) -> DbResult<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // WAL + NORMAL survives a process crash (kill -9); only power loss can drop the last commits.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    match role {
        Role::Writer => conn.pragma_update(None, "cache_size", -32_000)?,
        Role::Reader => {
            // No `mmap_size`: with the file mapped, every write (a peer registering) made the
            // readers unmap and fault pages back in, and search throughput halved under churn.
            conn.pragma_update(None, "cache_size", -8_000)?;
        }
    }
    Ok(conn)
}

impl Db {
    /// Opens (creating if needed) the database file and recovers from an unclean stop: uploads
    /// that were in progress are abandoned (their generations queued for deletion).
    ///
    /// The schema is brought to the current version first (`schema.rs`); a file of a newer
    /// version is refused before anything is written to it.
    pub fn open(path: &Path) -> DbResult<Db> {
        peerdex_sqlite::refuse_newer(path, crate::schema::MIGRATIONS)?;
        let mut conn = open_connection(path, Role::Writer)?;
        peerdex_sqlite::migrate(path, &mut conn, crate::schema::MIGRATIONS)?;
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT OR IGNORE INTO stale_gens (peer, gen) SELECT peer, gen FROM staging_gens;
             DELETE FROM staging_gens;
             COMMIT;",
        )?;
        Ok(Db {
            writer: Mutex::new(conn),
            bulk: Mutex::new(()),
            readers: Mutex::new(Vec::new()),
            path: path.to_owned(),
            holders: HolderCache::new(DEFAULT_HOLDERS_CACHE_BYTES),
        })
    }

    /// Sets the memory budget of the holders cache, in bytes.
    pub fn with_holders_cache(mut self, budget: usize) -> Db {
        self.holders = HolderCache::new(budget);
        self
    }

    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> DbResult<T>) -> DbResult<T> {
        let mut conn = self
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on a pooled read connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> DbResult<T>) -> DbResult<T> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.path, Role::Reader)?,
        };
        let out = f(&conn);
        let mut idle = self
            .readers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    /// Registers a peer (or re-registers a known key): claims the nickname, records the observed
    /// address, installs a new session (replacing the old one) and resets reachability.
    pub fn register(
        &self,
        key: &PeerId,
        nickname: &str,
        ip: &str,
        port: u16,
        session_hash: &[u8; 32],
    ) -> DbResult<PeerRow> {
        let nick_key = nickname_key(nickname);
        let initial = if port == 0 {
            Reachability::Firewalled
        } else {
            Reachability::Pending
        };
        self.write(|tx| {
            let owner: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT p.peer_key FROM nicknames n JOIN peers p ON p.id = n.peer WHERE n.nick_key = ?1",
                    [&nick_key],
                    |r| r.get(0),
                )
                .optional()?;
            if owner.is_some_and(|owner| owner != key.as_bytes()) {
                return Err(DbError::NicknameTaken(nickname.to_string()));
            }
            let id: i64 = tx.query_row(
                "INSERT INTO peers (peer_key, nickname, session_hash, ip, port, reachability, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (peer_key) DO UPDATE SET nickname = excluded.nickname,
                     session_hash = excluded.session_hash, ip = excluded.ip, port = excluded.port,
                     reachability = excluded.reachability
                 RETURNING id",
                params![key.as_bytes(), nickname, session_hash, ip, port, reachability_code(initial), unix_now()],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO nicknames (nick_key, peer) VALUES (?1, ?2)",
                params![nick_key, id],
            )?;
            let raw = tx.query_row(
                &format!("SELECT {PEER_COLUMNS} FROM peers WHERE id = ?1"),
                [id],
                peer_from_row,
            )?;
            finish_peer(raw)
        })
        .inspect(|row| self.holders.forget_peer(row.id))
    }

    /// The peer owning a session token hash.
    pub fn peer_by_session(&self, session_hash: &[u8; 32]) -> DbResult<Option<PeerRow>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {PEER_COLUMNS} FROM peers WHERE session_hash = ?1"
            ))?
            .query_row([session_hash], peer_from_row)
            .optional()?
            .map(finish_peer)
            .transpose()
        })
    }

    /// A peer by internal id.
    pub fn peer(&self, id: i64) -> DbResult<Option<PeerRow>> {
        self.read(|conn| {
            conn.prepare_cached(&format!("SELECT {PEER_COLUMNS} FROM peers WHERE id = ?1"))?
                .query_row([id], peer_from_row)
                .optional()?
                .map(finish_peer)
                .transpose()
        })
    }

    /// A peer by nickname (case-insensitive; also finds the key behind an older nickname).
    pub fn peer_by_nickname(&self, nickname: &str) -> DbResult<Option<PeerRow>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {PEER_COLUMNS} FROM peers WHERE id = (SELECT peer FROM nicknames WHERE nick_key = ?1)"
            ))?
            .query_row([nickname_key(nickname)], peer_from_row)
            .optional()?
            .map(finish_peer)
            .transpose()
        })
    }

    /// Ends a peer's session (its token stops working).
    pub fn end_session(&self, peer: i64) -> DbResult<()> {
        self.write(|tx| {
            tx.execute("UPDATE peers SET session_hash = NULL WHERE id = ?1", [peer])?;
            Ok(())
        })
    }

    /// Records a connect-back result, unless the peer re-registered with another address since.
    pub fn set_reachability(
        &self,
        peer: i64,
        ip: &str,
        port: u16,
        r: Reachability,
    ) -> DbResult<bool> {
        let changed = self.write(|tx| {
            let n = tx.execute(
                "UPDATE peers SET reachability = ?1 WHERE id = ?2 AND ip = ?3 AND port = ?4",
                params![reachability_code(r), peer, ip, port],
            )?;
            Ok(n == 1)
        })?;
        self.holders.forget_peer(peer);
        Ok(changed)
    }

    /// Persists heartbeat times (batched by the presence tracker).
    pub fn persist_last_seen(&self, seen: &[(i64, i64)]) -> DbResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached("UPDATE peers SET last_seen = ?2 WHERE id = ?1")?;
            for (peer, at) in seen {
                stmt.execute([peer, at])?;
            }
            Ok(())
        })
    }

    /// Last persisted heartbeat of every peer, to restore presence after a restart.
    pub fn all_last_seen(&self) -> DbResult<Vec<(i64, i64)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id, last_seen FROM peers WHERE last_seen > 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Starts a full upload: returns the staging generation its entries go to.
    pub fn begin_full_upload(&self, peer: i64) -> DbResult<i64> {
        self.write(|tx| {
            let generation: i64 = tx
                .query_row(
                    "UPDATE peers SET next_gen = next_gen + 1 WHERE id = ?1 RETURNING next_gen - 1",
                    [peer],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(DbError::UnknownPeer)?;
            tx.execute(
                "INSERT INTO staging_gens (peer, gen) VALUES (?1, ?2)",
                [peer, generation],
            )?;
            Ok(generation)
        })
    }

    /// Writes a batch of validated entries (with their 1-based line numbers) to a staging generation.
    pub fn insert_staged(
        &self,
        peer: i64,
        generation: i64,
        batch: &[(u64, ListEntry)],
    ) -> DbResult<()> {
        let _turn = self
            .bulk
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.write(|tx| {
            for (line, entry) in batch {
                insert_file(tx, peer, generation, entry).map_err(|e| match e {
                    e if is_unique_violation(&e) => DbError::DuplicatePath {
                        line: *line,
                        share: entry.share.clone(),
                        path: entry.path.clone(),
                    },
                    e => DbError::from(e),
                })?;
            }
            Ok(())
        })
    }

    /// Makes a staging generation the peer's list, in one transaction.
    pub fn commit_full_upload(
        &self,
        peer: i64,
        generation: i64,
        version: u64,
        entries: u64,
    ) -> DbResult<()> {
        self.write(|tx| {
            let was_staging = tx.execute(
                "DELETE FROM staging_gens WHERE peer = ?1 AND gen = ?2",
                [peer, generation],
            )? == 1;
            if !was_staging {
                return Err(DbError::Superseded);
            }
            let old: i64 =
                tx.query_row("SELECT active_gen FROM peers WHERE id = ?1", [peer], |r| {
                    r.get(0)
                })?;
            if old > generation {
                // A later upload committed first; this one is already out of date.
                tx.execute(
                    "INSERT OR IGNORE INTO stale_gens (peer, gen) VALUES (?1, ?2)",
                    [peer, generation],
                )?;
                return Err(DbError::Superseded);
            }
            tx.execute(
                "UPDATE peers SET active_gen = ?2, list_version = ?3, entries = ?4 WHERE id = ?1",
                params![peer, generation, version as i64, entries as i64],
            )?;
            if old > 0 {
                tx.execute(
                    "INSERT OR IGNORE INTO stale_gens (peer, gen) VALUES (?1, ?2)",
                    [peer, old],
                )?;
            }
            push_op(tx, IndexOp::ReindexPeer { peer })?;
            Ok(())
        })?;
        self.holders.forget_all_contents();
        Ok(())
    }

    /// Abandons a staging generation; its rows are deleted later.
    pub fn abort_full_upload(&self, peer: i64, generation: i64) -> DbResult<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM staging_gens WHERE peer = ?1 AND gen = ?2",
                [peer, generation],
            )?;
            tx.execute(
                "INSERT OR IGNORE INTO stale_gens (peer, gen) VALUES (?1, ?2)",
                [peer, generation],
            )?;
            Ok(())
        })
    }

    /// Applies a delta atomically: all operations or none. Returns the new entry count.
    pub fn apply_delta(
        &self,
        peer: i64,
        base: u64,
        version: u64,
        ops: &[(u64, DeltaOp)],
        max_entries: u64,
    ) -> DbResult<u64> {
        let mut touched = Vec::with_capacity(ops.len());
        let entries = self.write(|tx| {
            let (server, generation, mut entries): (Option<i64>, i64, i64) = tx
                .query_row(
                    "SELECT list_version, active_gen, entries FROM peers WHERE id = ?1",
                    [peer],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?
                .ok_or(DbError::UnknownPeer)?;
            let server = server.map(|v| v as u64);
            if server != Some(base) {
                return Err(DbError::VersionMismatch { base, server });
            }
            for (line, op) in ops {
                let conflict = |share: &str, path: &str, reason| DbError::DeltaConflict {
                    line: *line,
                    share: share.to_string(),
                    path: path.to_string(),
                    reason,
                };
                let file = match op {
                    DeltaOp::Add(entry) => {
                        entries += 1;
                        match insert_file(tx, peer, generation, entry) {
                            Ok((id, content)) => {
                                touched.push(content);
                                id
                            }
                            Err(e) if is_unique_violation(&e) => {
                                return Err(conflict(&entry.share, &entry.path, "adds a path the server already has"));
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    DeltaOp::Change(entry) => {
                        let old: Option<i64> = tx
                            .prepare_cached(
                                "SELECT content FROM files WHERE peer = ?1 AND gen = ?2 AND share = ?3 AND path = ?4",
                            )?
                            .query_row(params![peer, generation, entry.share, entry.path], |r| r.get(0))
                            .optional()?;
                        touched.extend(old);
                        let content = upsert_content(tx, &entry.hash, entry.size)?;
                        touched.push(content);
                        tx.prepare_cached(
                            "UPDATE files SET size = ?5, mtime = ?6, content = ?7, tags = ?8
                             WHERE peer = ?1 AND gen = ?2 AND share = ?3 AND path = ?4 RETURNING id",
                        )?
                        .query_row(
                            params![peer, generation, entry.share, entry.path, entry.size as i64,
                                    entry.mtime, content, tags_json(&entry.tags)],
                            |r| r.get(0),
                        )
                        .optional()?
                        .ok_or_else(|| conflict(&entry.share, &entry.path, "changes a path the server does not have"))?
                    }
                    DeltaOp::Remove { share, path } => {
                        entries -= 1;
                        let (id, content): (i64, i64) = tx.prepare_cached(
                            "DELETE FROM files WHERE peer = ?1 AND gen = ?2 AND share = ?3 AND path = ?4 RETURNING id, content",
                        )?
                        .query_row(params![peer, generation, share, path], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?
                        .ok_or_else(|| conflict(share, path, "removes a path the server does not have"))?;
                        touched.push(content);
                        id
                    }
                };
                push_op(tx, IndexOp::FileChanged { peer, file })?;
            }
            if entries as u64 > max_entries {
                return Err(DbError::TooManyEntries { entries: entries as u64, limit: max_entries });
            }
            tx.execute(
                "UPDATE peers SET list_version = ?2, entries = ?3 WHERE id = ?1",
                params![peer, version as i64, entries],
            )?;
            Ok(entries as u64)
        })?;
        self.holders.forget_contents(&touched);
        Ok(entries)
    }

    /// Drops a peer's list entirely (the peer asked, or it was offline past retention).
    pub fn drop_list(&self, peer: i64) -> DbResult<()> {
        self.write(|tx| drop_list_in(tx, peer))?;
        self.holders.forget_all_contents();
        Ok(())
    }

    /// Drops the lists of peers not seen since `cutoff` (Unix seconds). Returns how many.
    pub fn expire_lists(&self, cutoff: i64) -> DbResult<usize> {
        self.write(|tx| {
            let peers: Vec<i64> = tx
                .prepare("SELECT id FROM peers WHERE list_version IS NOT NULL AND last_seen < ?1")?
                .query_map([cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for &peer in &peers {
                drop_list_in(tx, peer)?;
            }
            Ok(peers.len())
        })
        .inspect(|&dropped| {
            if dropped > 0 {
                self.holders.forget_all_contents();
            }
        })
    }

    /// Deletes up to `limit` rows of one abandoned or replaced generation. Returns the rows
    /// deleted, at least 1 when any work was done (even if only the generation's marker was
    /// removed); 0 means there is nothing left to clean.
    pub fn delete_stale_batch(&self, limit: i64) -> DbResult<usize> {
        self.write(|tx| {
            let Some((peer, generation)): Option<(i64, i64)> = tx
                .query_row("SELECT peer, gen FROM stale_gens LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
            else {
                return Ok(0);
            };
            let deleted = tx.execute(
                "DELETE FROM files WHERE id IN (SELECT id FROM files WHERE peer = ?1 AND gen = ?2 LIMIT ?3)",
                params![peer, generation, limit],
            )?;
            if (deleted as i64) < limit {
                tx.execute("DELETE FROM stale_gens WHERE peer = ?1 AND gen = ?2", [peer, generation])?;
            }
            Ok(deleted.max(1))
        })
    }

    /// Deletes contents no longer referenced by any file row, in batches. Returns rows deleted.
    pub fn delete_orphan_contents(&self, limit: i64) -> DbResult<usize> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM contents WHERE id IN (SELECT c.id FROM contents c
                 WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.content = c.id) LIMIT ?1)",
                [limit],
            )?)
        })
    }

    /// Index operations after `seq`, oldest first, at most `limit`.
    pub fn index_ops_after(&self, seq: i64, limit: i64) -> DbResult<Vec<(i64, IndexOp)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, op, peer, file FROM index_ops WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map([seq, limit], |r| {
                let (seq, op, peer, file): (i64, i64, i64, Option<i64>) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                Ok((
                    seq,
                    match (op, file) {
                        (OP_FILE_CHANGED, Some(file)) => IndexOp::FileChanged { peer, file },
                        _ => IndexOp::ReindexPeer { peer },
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Forgets index operations the index has committed.
    pub fn trim_index_ops(&self, through_seq: i64) -> DbResult<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM index_ops WHERE seq <= ?1", [through_seq])?;
            Ok(())
        })
    }

    /// Queues a full rebuild: one `ReindexPeer` for every peer with a list.
    pub fn queue_full_reindex(&self) -> DbResult<usize> {
        self.write(|tx| {
            Ok(tx.execute(
                "INSERT INTO index_ops (op, peer) SELECT ?1, id FROM peers WHERE list_version IS NOT NULL",
                [OP_REINDEX_PEER],
            )?)
        })
    }

    /// Streams the active list of a peer to `each` (for indexing).
    pub fn for_each_active_file(
        &self,
        peer: i64,
        mut each: impl FnMut(FileDoc) -> DbResult<()>,
    ) -> DbResult<()> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.id, f.content, f.share, f.path, f.size FROM files f JOIN peers p
                 ON p.id = f.peer AND f.gen = p.active_gen WHERE f.peer = ?1",
            )?;
            let mut rows = stmt.query([peer])?;
            while let Some(r) = rows.next()? {
                each(FileDoc {
                    id: r.get(0)?,
                    peer,
                    content: r.get(1)?,
                    share: r.get(2)?,
                    path: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                })?;
            }
            Ok(())
        })
    }

    /// A file row, if it still belongs to its peer's active list.
    pub fn active_file(&self, file: i64) -> DbResult<Option<FileDoc>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT f.id, f.peer, f.content, f.share, f.path, f.size FROM files f JOIN peers p
                     ON p.id = f.peer AND f.gen = p.active_gen WHERE f.id = ?1",
                )?
                .query_row([file], |r| {
                    Ok(FileDoc {
                        id: r.get(0)?,
                        peer: r.get(1)?,
                        content: r.get(2)?,
                        share: r.get(3)?,
                        path: r.get(4)?,
                        size: r.get::<_, i64>(5)? as u64,
                    })
                })
                .optional()?)
        })
    }

    /// For each content id that exists, its hash, size and every active copy (online or not),
    /// in the order asked. Served from the holders cache; misses are read and cached.
    pub fn holders_of(&self, contents: &[i64]) -> DbResult<Vec<Arc<Holders>>> {
        let (cached, seen) = self.holders.contents(contents);
        let missing: Vec<i64> = contents
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(&id, _)| id)
            .collect();
        if missing.is_empty() {
            return Ok(cached.into_iter().flatten().collect());
        }
        let read = self.read(|conn| {
            let mut content_stmt =
                conn.prepare_cached("SELECT hash, size FROM contents WHERE id = ?1")?;
            let mut copies_stmt = conn.prepare_cached(
                "SELECT f.peer, f.share, f.path
                 FROM files f JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen
                 WHERE f.content = ?1",
            )?;
            let mut read = Vec::with_capacity(missing.len());
            for &content in &missing {
                let Some((hash, size)): Option<(Vec<u8>, i64)> = content_stmt
                    .query_row([content], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?
                else {
                    continue;
                };
                let rows = copies_stmt
                    .query_map([content], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<Vec<_>, _>>()?;
                let hash = FileHash::from_bytes(blob32(hash)?);
                read.push(Arc::new(Holders::new(content, hash, size as u64, rows)));
            }
            Ok(read)
        })?;
        self.holders.fill_contents(seen, &read);
        let mut read: std::collections::HashMap<i64, Arc<Holders>> =
            read.into_iter().map(|h| (h.content, h)).collect();
        Ok(contents
            .iter()
            .zip(cached)
            .filter_map(|(id, cached)| cached.or_else(|| read.remove(id)))
            .collect())
    }

    /// What a search result shows about a peer (cached; `None` if there is no such peer).
    pub fn peer_card(&self, peer: i64) -> DbResult<Option<Arc<PeerCard>>> {
        let seen = match self.holders.peer(peer) {
            Ok(card) => return Ok(Some(card)),
            Err(seen) => seen,
        };
        let card = self.read(|conn| {
            conn.prepare_cached(
                "SELECT peer_key, nickname, ip, port, reachability, registered_at FROM peers
                 WHERE id = ?1",
            )?
            .query_row([peer], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)?,
                    r.get(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .optional()?
            .map(|(key, nickname, ip, port, reachability, registered_at)| {
                Ok::<_, DbError>(PeerCard {
                    key: PeerId::from_bytes(blob32(key)?),
                    nickname,
                    ip,
                    port: u16::try_from(port).unwrap_or(0),
                    reachability: reachability_from(reachability),
                    registered_at,
                })
            })
            .transpose()
        })?;
        let card = card.map(Arc::new);
        if let Some(card) = &card {
            self.holders.fill_peer(seen, peer, card.clone());
        }
        Ok(card)
    }

    /// Content ids with this hash (one per distinct claimed size).
    pub fn contents_with_hash(&self, hash: &FileHash) -> DbResult<Vec<i64>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT id FROM contents WHERE hash = ?1")?;
            let rows = stmt.query_map([hash.as_bytes()], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// One page of a peer's active list, sorted by share and path, after the given position.
    pub fn browse(
        &self,
        peer: i64,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> DbResult<Vec<BrowseRow>> {
        self.read(|conn| {
            let (share, path) = after.unwrap_or(("", ""));
            let mut stmt = conn.prepare_cached(
                "SELECT f.share, f.path, f.size, f.mtime, c.hash FROM files f
                 JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen
                 JOIN contents c ON c.id = f.content
                 WHERE f.peer = ?1 AND (f.share, f.path) > (?2, ?3)
                 ORDER BY f.share, f.path LIMIT ?4",
            )?;
            let mut rows = stmt.query(params![peer, share, path, limit])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(BrowseRow {
                    share: r.get(0)?,
                    path: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    mtime: r.get(3)?,
                    hash: FileHash::from_bytes(blob32(r.get(4)?)?),
                });
            }
            Ok(out)
        })
    }

    /// Store-wide counts (a scan of the file index: callers cache it).
    pub fn counts(&self) -> DbResult<Counts> {
        self.read(|conn| {
            let (peers, entries): (i64, i64) = conn.query_row(
                "SELECT COUNT(*), COALESCE(SUM(entries), 0) FROM peers",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let contents: i64 = conn.query_row(
                "SELECT COUNT(DISTINCT f.content) FROM files f JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen",
                [],
                |r| r.get(0),
            )?;
            Ok(Counts { peers: peers as u64, entries: entries as u64, contents: contents as u64 })
        })
    }

    /// Runs SQLite's own consistency check; `Ok("ok")` when healthy.
    pub fn integrity_check(&self) -> DbResult<String> {
        self.read(|conn| Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
    }
}

fn drop_list_in(tx: &Connection, peer: i64) -> DbResult<()> {
    let generation: i64 = tx
        .query_row("SELECT active_gen FROM peers WHERE id = ?1", [peer], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or(DbError::UnknownPeer)?;
    if generation > 0 {
        tx.execute(
            "INSERT OR IGNORE INTO stale_gens (peer, gen) VALUES (?1, ?2)",
            [peer, generation],
        )?;
    }
    tx.execute(
        "UPDATE peers SET active_gen = 0, list_version = NULL, entries = 0 WHERE id = ?1",
        [peer],
    )?;
    push_op(tx, IndexOp::ReindexPeer { peer })?;
    Ok(())
}

fn tags_json(tags: &MediaTags) -> Option<String> {
    (!tags.is_empty()).then(|| serde_json::to_string(tags).unwrap_or_default())
}

fn upsert_content(tx: &Connection, hash: &FileHash, size: u64) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO contents (hash, size) VALUES (?1, ?2)
         ON CONFLICT (hash, size) DO UPDATE SET size = excluded.size RETURNING id",
    )?
    .query_row(params![hash.as_bytes(), size as i64], |r| r.get(0))
}

/// Inserts an entry; returns its file id and content id.
fn insert_file(
    tx: &Connection,
    peer: i64,
    generation: i64,
    entry: &ListEntry,
) -> rusqlite::Result<(i64, i64)> {
    let content = upsert_content(tx, &entry.hash, entry.size)?;
    let file = tx
        .prepare_cached(
            "INSERT INTO files (peer, gen, share, path, size, mtime, content, tags)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
        )?
        .query_row(
            params![
                peer,
                generation,
                entry.share,
                entry.path,
                entry.size as i64,
                entry.mtime,
                content,
                tags_json(&entry.tags)
            ],
            |r| r.get(0),
        )?;
    Ok((file, content))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, byte: u8) -> ListEntry {
        ListEntry {
            share: "m".into(),
            path: path.into(),
            size: 10,
            mtime: 1,
            hash: FileHash::from_bytes([byte; 32]),
            tags: MediaTags::default(),
        }
    }

    fn setup() -> (tempfile::TempDir, Db, i64) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let peer = db
            .register(
                &PeerId::from_bytes([1; 32]),
                "alice",
                "127.0.0.1",
                0,
                &[9; 32],
            )
            .unwrap();
        (dir, db, peer.id)
    }

    fn full(db: &Db, peer: i64, version: u64, entries: &[ListEntry]) {
        let generation = db.begin_full_upload(peer).unwrap();
        let batch: Vec<_> = entries
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, e)| (i as u64 + 1, e))
            .collect();
        db.insert_staged(peer, generation, &batch).unwrap();
        db.commit_full_upload(peer, generation, version, batch.len() as u64)
            .unwrap();
    }

    #[test]
    fn delta_versioning() {
        let (_dir, db, peer) = setup();
        full(&db, peer, 1, &[entry("a", 1), entry("b", 2)]);
        // Wrong base: refused, nothing changes.
        let err = db
            .apply_delta(peer, 7, 8, &[(1, DeltaOp::Add(entry("c", 3)))], 100)
            .unwrap_err();
        assert!(
            matches!(
                err,
                DbError::VersionMismatch {
                    base: 7,
                    server: Some(1)
                }
            ),
            "{err}"
        );
        // A delta that does not fit the list is refused whole.
        let ops = [
            (1, DeltaOp::Add(entry("c", 3))),
            (
                2,
                DeltaOp::Remove {
                    share: "m".into(),
                    path: "zzz".into(),
                },
            ),
        ];
        assert!(matches!(
            db.apply_delta(peer, 1, 2, &ops, 100),
            Err(DbError::DeltaConflict { line: 2, .. })
        ));
        assert_eq!(db.peer(peer).unwrap().unwrap().list_version, Some(1));
        // A good delta applies and moves the version.
        let ops = [
            (1, DeltaOp::Add(entry("c", 3))),
            (2, DeltaOp::Change(entry("a", 4))),
            (
                3,
                DeltaOp::Remove {
                    share: "m".into(),
                    path: "b".into(),
                },
            ),
        ];
        assert_eq!(db.apply_delta(peer, 1, 2, &ops, 100).unwrap(), 2);
        let page = db.browse(peer, None, 10).unwrap();
        let names: Vec<_> = page
            .iter()
            .map(|r| (r.path.as_str(), r.hash.as_bytes()[0]))
            .collect();
        assert_eq!(names, [("a", 4), ("c", 3)]);
        // Entry cap is enforced on deltas too.
        let ops = [(1, DeltaOp::Add(entry("d", 5)))];
        assert!(matches!(
            db.apply_delta(peer, 2, 3, &ops, 2),
            Err(DbError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn failed_full_upload_keeps_previous_list() {
        let (_dir, db, peer) = setup();
        full(&db, peer, 1, &[entry("a", 1)]);
        let generation = db.begin_full_upload(peer).unwrap();
        let dup = [(1, entry("x", 1)), (2, entry("x", 2))];
        assert!(matches!(
            db.insert_staged(peer, generation, &dup),
            Err(DbError::DuplicatePath { line: 2, .. })
        ));
        db.abort_full_upload(peer, generation).unwrap();
        let page = db.browse(peer, None, 10).unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].path, "a");
        while db.delete_stale_batch(1).unwrap() > 0 {}
        assert_eq!(db.browse(peer, None, 10).unwrap().len(), 1);
    }

    #[test]
    fn nicknames_stay_bound_to_their_key() {
        let (_dir, db, _) = setup();
        let bob = PeerId::from_bytes([2; 32]);
        assert!(matches!(
            db.register(&bob, "ALICE", "127.0.0.1", 0, &[8; 32]),
            Err(DbError::NicknameTaken(_))
        ));
        // Alice renames; her old name stays hers.
        db.register(
            &PeerId::from_bytes([1; 32]),
            "alice2",
            "127.0.0.1",
            0,
            &[7; 32],
        )
        .unwrap();
        assert!(matches!(
            db.register(&bob, "alice", "127.0.0.1", 0, &[8; 32]),
            Err(DbError::NicknameTaken(_))
        ));
        assert_eq!(
            db.peer_by_nickname("Alice").unwrap().unwrap().nickname,
            "alice2"
        );
    }
}
