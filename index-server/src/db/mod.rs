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

use peerdex_shared::api::{DeltaOp, ListEntry, MediaTags, PeerTransport, Reachability};
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

/// Declares a row id of the store as its own type, so a peer, a content, a file row and a list
/// generation cannot be passed for one another.
macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub i64);

        impl $name {
            /// As the index's fast fields and the presence bitmap store it (row ids are positive).
            pub fn as_u64(self) -> u64 {
                self.0 as u64
            }

            /// From the index's fast field.
            pub fn from_u64(value: u64) -> $name {
                $name(value as i64)
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                self.0.to_sql()
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(
                value: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                i64::column_result(value).map($name)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

row_id!(
    /// A peer's row id in the store (its key is a [`PeerId`]): what lists, presence and the
    /// index refer to a peer by.
    PeerRef
);
row_id!(
    /// A content's row id: one (hash, size) pair, whoever holds it. Search groups by it.
    ContentRef
);
row_id!(
    /// A file row: one entry of one peer's list (share, path, content).
    FileRef
);
row_id!(
    /// One of a peer's list generations: a full upload stages a new one and makes it current
    /// in one transaction.
    Generation
);

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

fn transport_from(code: i64) -> PeerTransport {
    if code == 1 {
        PeerTransport::Tls
    } else {
        PeerTransport::Plain
    }
}

fn transport_code(t: PeerTransport) -> i64 {
    i64::from(t.is_tls())
}

fn blob32(bytes: Vec<u8>) -> DbResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| DbError::Corrupt("key or hash is not 32 bytes".into()))
}

/// A registered peer, as stored.
#[derive(Debug, Clone)]
pub struct PeerRow {
    /// Row id (also the index's peer field).
    pub id: PeerRef,
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
    /// What its file server speaks.
    pub transport: PeerTransport,
    /// Version of the stored list, if any.
    pub list_version: Option<u64>,
    /// Entries in the stored list.
    pub entries: u64,
    /// Last heartbeat persisted (Unix seconds).
    pub last_seen: i64,
}

const PEER_COLUMNS: &str =
    "id, peer_key, nickname, ip, port, reachability, list_version, entries, last_seen, transport";

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
            transport: row.get(9)?,
        },
        row.get(1)?,
    ))
}

struct PeerRowRaw {
    id: PeerRef,
    nickname: String,
    ip: Option<String>,
    port: i64,
    reachability: i64,
    list_version: Option<i64>,
    entries: i64,
    last_seen: i64,
    transport: i64,
}

fn finish_peer((raw, key): (PeerRowRaw, Vec<u8>)) -> DbResult<PeerRow> {
    Ok(PeerRow {
        id: raw.id,
        key: PeerId::from_bytes(blob32(key)?),
        nickname: raw.nickname,
        ip: raw.ip,
        port: u16::try_from(raw.port).unwrap_or(0),
        reachability: reachability_from(raw.reachability),
        transport: transport_from(raw.transport),
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
        /// The peer.
        peer: PeerRef,
    },
    /// Re-read one file row: drop its document and re-add it if it is still active.
    FileChanged {
        /// The peer.
        peer: PeerRef,
        /// File row id.
        file: FileRef,
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
    pub id: FileRef,
    /// Owner.
    pub peer: PeerRef,
    /// Content id.
    pub content: ContentRef,
    /// Share name.
    pub share: String,
    /// Path within the share.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Its visibility scope.
    pub acl: AclRef,
    /// Its media tags.
    pub tags: MediaTags,
}

impl FileDoc {
    /// The words of its text tags, as one text (empty without tags).
    pub fn tag_text(&self) -> String {
        let mut text = String::new();
        for value in self.tags.texts().into_iter().filter_map(|(_, v)| v) {
            text.push_str(value);
            text.push('\n');
        }
        text
    }
}

/// Computes the folders of every active list (the migration that adds folders).
pub(crate) fn rebuild_all_folders(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let lists: Vec<(PeerRef, Generation)> = tx
        .prepare("SELECT id, active_gen FROM peers WHERE active_gen > 0")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (peer, generation) in lists {
        folders::rebuild_folders(tx, peer, generation).map_err(|e| match e {
            DbError::Sqlite(e) => e,
            other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
        })?;
    }
    Ok(())
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
    /// Tags.
    pub tags: MediaTags,
}

/// Store-wide counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Registered peers.
    pub peers: u64,
    /// Public entries of active lists.
    pub entries: u64,
    /// Distinct contents of public entries of active lists.
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
    /// Bumped by every write that may change what a viewer may see (`accounts`).
    scope_epoch: std::sync::atomic::AtomicU64,
    /// The quarantine and sources' reliability, as last read (`reports`).
    standing: reports::StandingCache,
    /// Viewers' scopes with the epoch they were computed at.
    #[allow(clippy::type_complexity)]
    scopes: Mutex<
        std::collections::HashMap<
            Option<AccountRef>,
            (u64, std::time::Instant, Arc<crate::scope::Scope>),
        >,
    >,
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
            scope_epoch: Default::default(),
            standing: Default::default(),
            scopes: Default::default(),
        })
    }

    /// Sets the memory budget of the holders cache, in bytes.
    /// The holders cache (its hit counters are exported as metrics).
    pub fn holders_cache(&self) -> &HolderCache {
        &self.holders
    }

    /// Replaces the holders cache with one of `budget` bytes.
    pub fn with_holders_cache(mut self, budget: usize) -> Db {
        self.holders = HolderCache::new(budget);
        self
    }

    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> DbResult<T>) -> DbResult<T> {
        self.write_with(f)
    }

    /// [`Db::write`] for a caller with its own error type: any error rolls the transaction back.
    fn write_with<T, E: From<DbError>>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(DbError::from)?;
        let out = f(&tx)?;
        tx.commit().map_err(DbError::from)?;
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
}

mod accounts;
mod folders;
mod index_log;
mod lists;
mod moderation;
mod reports;
mod requests;
mod rooms;
mod social;
mod wishes;

pub use accounts::{
    AccountError, AccountRef, AccountRow, AclRef, AuditRow, GroupRow, InviteRow, SCOPE_CACHE_SECS,
    TokenOwner,
};
pub use folders::{FolderFile, FolderRow, parent_dir};
pub use moderation::{BanKind, BanRow, BanSubject, check_ban_value};
pub use reports::{QuarantineRow, QuarantineRules, Reliability, Standing, VERSION_6};
pub use rooms::{RoomAccess, RoomRow};
pub use social::{ContactOutcome, SocialError, StoredMessage};
pub use wishes::{WishMatch, WishRow};
mod peers;
mod reads;

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
            visibility: Default::default(),
        }
    }

    fn setup() -> (tempfile::TempDir, Db, PeerRef) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let peer = db
            .register(
                &PeerId::from_bytes([1; 32]),
                "alice",
                "127.0.0.1",
                0,
                PeerTransport::Tls,
                &[9; 32],
            )
            .unwrap();
        (dir, db, peer.id)
    }

    fn full(db: &Db, peer: PeerRef, version: u64, entries: &[ListEntry]) {
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
    fn a_list_is_kept_for_the_retention_after_a_goodbye_not_purged_at_once() {
        let (_dir, db, peer) = setup();
        full(&db, peer, 1, &[entry("a", 1)]);
        // What presence persists for a peer that logged out an hour ago: its time, negated.
        let now = unix_now();
        db.persist_last_seen(&[(peer, -(now - 3600))]).unwrap();
        assert_eq!(db.expire_lists(now - 7200).unwrap(), 0, "within retention");
        assert_eq!(db.all_last_seen().unwrap(), [(peer, -(now - 3600))]);
        assert_eq!(db.expire_lists(now - 60).unwrap(), 1, "past retention");
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
        let page = db
            .browse(peer, None, 10, &crate::scope::Scope::public_only())
            .unwrap();
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
        let page = db
            .browse(peer, None, 10, &crate::scope::Scope::public_only())
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].path, "a");
        while db.delete_stale_batch(1).unwrap() > 0 {}
        assert_eq!(
            db.browse(peer, None, 10, &crate::scope::Scope::public_only())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn nicknames_stay_bound_to_their_key() {
        let (_dir, db, _) = setup();
        let bob = PeerId::from_bytes([2; 32]);
        assert!(matches!(
            db.register(&bob, "ALICE", "127.0.0.1", 0, PeerTransport::Tls, &[8; 32]),
            Err(DbError::NicknameTaken(_))
        ));
        // Alice renames; her old name stays hers.
        db.register(
            &PeerId::from_bytes([1; 32]),
            "alice2",
            "127.0.0.1",
            0,
            PeerTransport::Tls,
            &[7; 32],
        )
        .unwrap();
        assert!(matches!(
            db.register(&bob, "alice", "127.0.0.1", 0, PeerTransport::Tls, &[8; 32]),
            Err(DbError::NicknameTaken(_))
        ));
        assert_eq!(
            db.peer_by_nickname("Alice").unwrap().unwrap().nickname,
            "alice2"
        );
    }
}
