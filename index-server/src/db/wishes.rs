//! Wishes (standing searches) and the contents each has reported, so that a match is reported
//! once, across restarts and reconnects (PROTOCOL §10.5).

use peerdex_shared::FileHash;
use peerdex_shared::social::{Event, EventEnvelope, Wish};

use super::accounts::AccountRef;
use super::social::{SocialError, record_event_in};
use super::*;

/// A wish as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WishRow {
    /// Row id.
    pub id: i64,
    /// Whose it is.
    pub account: AccountRef,
    /// The query, as written.
    pub query: String,
    /// Extension filter.
    pub ext: Option<String>,
    /// Kind filter (`FileKind` name).
    pub kind: Option<String>,
    /// Smallest size.
    pub min_size: Option<u64>,
    /// Largest size.
    pub max_size: Option<u64>,
    /// Whether the wisher's agent downloads new matches.
    pub auto_download: bool,
    /// Unix time it was made.
    pub created_at: i64,
}

/// A new match found at ingest: which wish, and the copy that matched.
#[derive(Debug, Clone)]
pub struct WishMatch {
    /// The wish.
    pub wish: i64,
    /// The copy.
    pub doc: FileDoc,
}

const WISH_COLUMNS: &str =
    "id, account, query, ext, kind, min_size, max_size, auto_download, created_at";

fn wish_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WishRow> {
    Ok(WishRow {
        id: r.get(0)?,
        account: r.get(1)?,
        query: r.get(2)?,
        ext: r.get(3)?,
        kind: r.get(4)?,
        min_size: r.get::<_, Option<i64>>(5)?.map(|v| v.max(0) as u64),
        max_size: r.get::<_, Option<i64>>(6)?.map(|v| v.max(0) as u64),
        auto_download: r.get(7)?,
        created_at: r.get(8)?,
    })
}

fn to_wish(row: &WishRow, hits: i64) -> Wish {
    Wish {
        id: row.id.max(0) as u64,
        query: row.query.clone(),
        ext: row.ext.clone(),
        kind: row.kind.clone(),
        min_size: row.min_size,
        max_size: row.max_size,
        auto_download: row.auto_download,
        created_at: row.created_at.max(0) as u64,
        hits: hits.max(0) as u64,
    }
}

fn size_sql(size: Option<u64>) -> Option<i64> {
    size.map(|s| i64::try_from(s).unwrap_or(i64::MAX))
}

impl Db {
    /// Stores a wish of `row.account` (at most `max_per_account`), with the contents that match
    /// it now taken as already reported. Returns it with its id.
    pub fn create_wish(
        &self,
        row: &WishRow,
        seen: &[ContentRef],
        max_per_account: u32,
    ) -> Result<WishRow, SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let count: i64 = tx.query_row(
                "SELECT count(*) FROM wishes WHERE account = ?1",
                [row.account],
                |r| r.get(0),
            )?;
            if count >= i64::from(max_per_account) {
                return Err(SocialError::TooMany(format!(
                    "you have {count} wishes, the most an account may have \
                     (social.max_wishes_per_account); remove one first (peerdex wish rm ID)"
                )));
            }
            let now = unix_now();
            let id: i64 = tx.query_row(
                "INSERT INTO wishes (account, query, ext, kind, min_size, max_size,
                   auto_download, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                params![
                    row.account,
                    row.query,
                    row.ext,
                    row.kind,
                    size_sql(row.min_size),
                    size_sql(row.max_size),
                    row.auto_download,
                    now
                ],
                |r| r.get(0),
            )?;
            let mut seen_stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO wish_hits (wish, content, at) VALUES (?1, ?2, ?3)",
            )?;
            for content in seen {
                seen_stmt.execute(params![id, content, now])?;
            }
            Ok(WishRow {
                id,
                created_at: now,
                ..row.clone()
            })
        })
    }

    /// `account`'s wishes, oldest first, with how many matches each reported.
    pub fn wishes_of(&self, account: AccountRef) -> DbResult<Vec<Wish>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {WISH_COLUMNS}, (SELECT count(*) FROM wish_hits h WHERE h.wish = w.id)
                 FROM wishes w WHERE account = ?1 ORDER BY id"
            ))?;
            let rows = stmt.query_map([account], |r| Ok((wish_from_row(r)?, r.get(9)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (row, hits) = row?;
                out.push(to_wish(&row, hits));
            }
            Ok(out)
        })
    }

    /// Every wish (to build the matcher at start).
    pub fn all_wishes(&self) -> DbResult<Vec<WishRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare(&format!("SELECT {WISH_COLUMNS} FROM wishes ORDER BY id"))?
                .query_map([], wish_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Removes `account`'s wish `id` and what it reported.
    pub fn delete_wish(&self, account: AccountRef, id: u64) -> Result<(), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let id = i64::try_from(id).unwrap_or(-1);
            if tx.execute(
                "DELETE FROM wishes WHERE id = ?1 AND account = ?2",
                params![id, account],
            )? == 0
            {
                return Err(SocialError::NotFound(format!("you have no wish {id}")));
            }
            tx.execute("DELETE FROM wish_hits WHERE wish = ?1", [id])?;
            Ok(())
        })
    }

    /// Records new matches, each once per wish and content: only a match not reported before
    /// becomes a durable `wish_hit` event, in the same transaction. Returns those events.
    pub fn record_wish_matches(
        &self,
        matches: &[WishMatch],
    ) -> DbResult<Vec<(AccountRef, EventEnvelope)>> {
        if matches.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let now = unix_now();
            let mut out = Vec::new();
            for m in matches {
                let inserted = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO wish_hits (wish, content, at) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![m.wish, m.doc.content, now])?;
                if inserted == 0 {
                    continue;
                }
                let Some(wish) = tx
                    .prepare_cached(&format!("SELECT {WISH_COLUMNS} FROM wishes WHERE id = ?1"))?
                    .query_row([m.wish], wish_from_row)
                    .optional()?
                else {
                    continue;
                };
                let hash: Vec<u8> = tx
                    .prepare_cached("SELECT hash FROM contents WHERE id = ?1")?
                    .query_row([m.doc.content], |r| r.get(0))?;
                let from: String = tx
                    .prepare_cached("SELECT nickname FROM peers WHERE id = ?1")?
                    .query_row([m.doc.peer], |r| r.get(0))
                    .optional()?
                    .unwrap_or_default();
                let (folder, name) = match m.doc.path.rsplit_once('/') {
                    Some((folder, name)) => (format!("{}/{folder}", m.doc.share), name.to_owned()),
                    None => (m.doc.share.clone(), m.doc.path.clone()),
                };
                let event = Event::WishHit {
                    wish: wish.id.max(0) as u64,
                    query: wish.query.clone(),
                    hash: FileHash::from_bytes(blob32(hash)?),
                    size: m.doc.size,
                    name,
                    folder,
                    from,
                    auto_download: wish.auto_download,
                };
                out.push((wish.account, record_event_in(tx, wish.account, event)?));
            }
            Ok(out)
        })
    }
}
