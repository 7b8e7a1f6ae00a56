//! The index server database's schema history. Each migration runs once, in its own
//! transaction, when `Db::open` finds the file at an older version (`peerdex_sqlite`); a file of
//! a newer version is refused untouched. Add a step at the end, never change one that shipped.

use peerdex_shared::validate::nickname_key;
use peerdex_sqlite::Migration;
use rusqlite::{Transaction, params};

/// Every version, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "adopt the schema of before versions were recorded",
        rewrites_data: false,
        apply: |tx| tx.execute_batch(VERSION_1),
    },
    Migration {
        version: 2,
        description: "nickname keys are NFKC case-folded",
        rewrites_data: true,
        apply: fold_nickname_keys,
    },
];

/// The tables of version 1: the schema as it was before versions were recorded, so that adopting
/// a version-0 file creates nothing it has and changes no row.
const VERSION_1: &str = "
CREATE TABLE IF NOT EXISTS peers (
    id INTEGER PRIMARY KEY,
    peer_key BLOB NOT NULL UNIQUE,
    nickname TEXT NOT NULL,
    session_hash BLOB UNIQUE,
    ip TEXT,
    port INTEGER NOT NULL DEFAULT 0,
    reachability INTEGER NOT NULL DEFAULT 0,
    list_version INTEGER,
    active_gen INTEGER NOT NULL DEFAULT 0,
    next_gen INTEGER NOT NULL DEFAULT 1,
    entries INTEGER NOT NULL DEFAULT 0,
    last_seen INTEGER NOT NULL DEFAULT 0,
    registered_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nicknames (
    nick_key TEXT PRIMARY KEY,
    peer INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS contents (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL,
    size INTEGER NOT NULL,
    UNIQUE (hash, size)
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    peer INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    share TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    content INTEGER NOT NULL,
    tags TEXT,
    UNIQUE (peer, gen, share, path)
);
CREATE INDEX IF NOT EXISTS files_content ON files (content);
CREATE TABLE IF NOT EXISTS staging_gens (peer INTEGER NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (peer, gen)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stale_gens (peer INTEGER NOT NULL, gen INTEGER NOT NULL, PRIMARY KEY (peer, gen)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    op INTEGER NOT NULL,
    peer INTEGER NOT NULL,
    file INTEGER
);
";

/// Recomputes every nickname key with [`nickname_key`] (NFKC case folding; version 1 only
/// lowercased). Two nicknames that become one key (`full` and `Ｆｕｌｌ`) were claimed by two
/// keys: the name stays with the peer that registered first, and the other loses the
/// reservation (its current nickname is kept as it is shown, but a later registration with it is
/// refused as taken).
fn fold_nickname_keys(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(String, i64, i64)> = {
        let mut stmt = tx.prepare(
            "SELECT n.nick_key, n.peer, coalesce(p.registered_at, 0) FROM nicknames n
             LEFT JOIN peers p ON p.id = n.peer ORDER BY 3, 2",
        )?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?
    };
    tx.execute("DELETE FROM nicknames", [])?;
    let mut insert =
        tx.prepare("INSERT OR IGNORE INTO nicknames (nick_key, peer) VALUES (?1, ?2)")?;
    // Earliest registration first: it keeps a key that two old keys fold into.
    for (old, peer, _) in rows {
        insert.execute(params![nickname_key(&old), peer])?;
    }
    Ok(())
}
