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
    Migration {
        version: 3,
        description: "accounts, devices, tokens, invites, groups, visibility scopes, bans, audit log",
        rewrites_data: false,
        apply: |tx| tx.execute_batch(VERSION_3),
    },
    Migration {
        version: 4,
        description: "contacts, blocks, private messages, the durable event log, mutes, wishlists, rooms, requests",
        rewrites_data: false,
        apply: |tx| tx.execute_batch(VERSION_4),
    },
    Migration {
        version: 5,
        description: "folders of every list, with their identity (folder id v1) and tag summary",
        rewrites_data: false,
        apply: |tx| {
            tx.execute_batch(VERSION_5)?;
            crate::db::rebuild_all_folders(tx)
        },
    },
    Migration {
        version: 6,
        description: "downloaders' reports on their sources, and the quarantine",
        rewrites_data: false,
        apply: |tx| tx.execute_batch(crate::db::VERSION_6),
    },
    Migration {
        version: 7,
        description: "what each peer's file server speaks (TLS or plain HTTP)",
        rewrites_data: false,
        // 0: plain, as every peer before this version; 1: TLS.
        apply: |tx| {
            tx.execute_batch("ALTER TABLE peers ADD COLUMN transport INTEGER NOT NULL DEFAULT 0;")
        },
    },
];

/// Folders (PROTOCOL §5.3), derived from `files`: computed for every active list when this
/// version is applied, then at each upload.
const VERSION_5: &str = "
CREATE TABLE folders (
    peer INTEGER NOT NULL,
    gen INTEGER NOT NULL,
    share TEXT NOT NULL,
    path TEXT NOT NULL,
    files INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    content_id BLOB,
    id_files INTEGER NOT NULL DEFAULT 0,
    id_bytes INTEGER NOT NULL DEFAULT 0,
    acl INTEGER,
    album TEXT,
    artist TEXT,
    year INTEGER,
    duration INTEGER,
    lossless INTEGER,
    PRIMARY KEY (peer, gen, share, path)
) WITHOUT ROWID;
CREATE INDEX folders_by_content ON folders (content_id) WHERE content_id IS NOT NULL;
";

/// The social layer. A contact request is one row (`requested`); accepting makes two
/// (`accepted`, one per side), so "my contacts" is one index lookup either way.
const VERSION_4: &str = "
CREATE TABLE contacts (
    owner INTEGER NOT NULL,
    contact INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('requested', 'accepted')),
    since INTEGER NOT NULL,
    PRIMARY KEY (owner, contact)
) WITHOUT ROWID;
CREATE INDEX contacts_contact ON contacts (contact, status);
CREATE TABLE blocks (
    owner INTEGER NOT NULL,
    blocked INTEGER NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (owner, blocked)
) WITHOUT ROWID;
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    sender INTEGER NOT NULL,
    recipient INTEGER NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    delivered_at INTEGER,
    read_at INTEGER
);
CREATE INDEX messages_recipient ON messages (recipient, id);
CREATE INDEX messages_pair ON messages (sender, recipient, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    account INTEGER NOT NULL,
    kind TEXT NOT NULL,
    subject INTEGER,
    body TEXT NOT NULL,
    at INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_account ON events (account, id);
CREATE INDEX events_undelivered ON events (account, id) WHERE delivered = 0;
CREATE TABLE wishes (
    id INTEGER PRIMARY KEY,
    account INTEGER NOT NULL,
    query TEXT NOT NULL,
    ext TEXT,
    kind TEXT,
    min_size INTEGER,
    max_size INTEGER,
    auto_download INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX wishes_account ON wishes (account);
CREATE TABLE wish_hits (
    id INTEGER PRIMARY KEY,
    wish INTEGER NOT NULL,
    content INTEGER NOT NULL,
    at INTEGER NOT NULL,
    UNIQUE (wish, content)
);
CREATE TABLE rooms (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    access TEXT NOT NULL,
    owner INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE room_members (
    room INTEGER NOT NULL,
    account INTEGER NOT NULL,
    role TEXT NOT NULL,
    muted_until INTEGER,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (room, account)
) WITHOUT ROWID;
CREATE TABLE room_invites (
    room INTEGER NOT NULL,
    account INTEGER NOT NULL,
    PRIMARY KEY (room, account)
) WITHOUT ROWID;
CREATE TABLE room_lines (
    id INTEGER PRIMARY KEY,
    room INTEGER NOT NULL,
    account INTEGER NOT NULL,
    body TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX room_lines_room ON room_lines (room, id);
CREATE TABLE requests (
    id INTEGER PRIMARY KEY,
    account INTEGER NOT NULL,
    text TEXT NOT NULL,
    reached INTEGER NOT NULL,
    capped INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    cancelled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX requests_account ON requests (account);
CREATE TABLE request_recipients (
    request INTEGER NOT NULL,
    account INTEGER NOT NULL,
    offers INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (request, account)
) WITHOUT ROWID;
ALTER TABLE accounts ADD COLUMN muted_until INTEGER;
ALTER TABLE accounts ADD COLUMN mute_reason TEXT NOT NULL DEFAULT '';
";

/// Accounts and who may see what. Every existing file is public (`acl` 0), as before.
const VERSION_3: &str = "
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    pass_phc TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'member',
    disabled INTEGER NOT NULL DEFAULT 0,
    invite_quota INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    created_ip TEXT
);
CREATE TABLE account_devices (
    peer_key BLOB PRIMARY KEY,
    account INTEGER NOT NULL,
    linked_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX account_devices_account ON account_devices (account);
CREATE TABLE tokens (
    hash BLOB PRIMARY KEY,
    account INTEGER NOT NULL,
    kind TEXT NOT NULL,
    scopes TEXT NOT NULL,
    label TEXT,
    created_at INTEGER NOT NULL,
    last_used INTEGER
) WITHOUT ROWID;
CREATE INDEX tokens_account ON tokens (account);
CREATE TABLE invites (
    id INTEGER PRIMARY KEY,
    code_hash BLOB NOT NULL UNIQUE,
    creator TEXT NOT NULL,
    uses_left INTEGER NOT NULL,
    expires_at INTEGER,
    groups TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL
);
CREATE TABLE groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE group_members (
    grp INTEGER NOT NULL,
    account INTEGER NOT NULL,
    PRIMARY KEY (grp, account)
) WITHOUT ROWID;
CREATE INDEX group_members_account ON group_members (account);
CREATE TABLE acls (
    id INTEGER PRIMARY KEY,
    spec TEXT NOT NULL UNIQUE,
    locked INTEGER NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT ''
);
CREATE TABLE acl_users (
    name_key TEXT NOT NULL,
    acl INTEGER NOT NULL,
    PRIMARY KEY (name_key, acl)
) WITHOUT ROWID;
CREATE TABLE bans (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    until INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE takedowns (
    hash BLOB PRIMARY KEY,
    reason TEXT NOT NULL DEFAULT '',
    actor TEXT NOT NULL,
    at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
ALTER TABLE files ADD COLUMN acl INTEGER NOT NULL DEFAULT 0;
";

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
