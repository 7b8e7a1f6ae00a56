//! Requests ("ask", PROTOCOL §10.7): who a request reached (kept so that only they may answer,
//! and never shown to the asker), offers, closing.

use peerdex_shared::FileHash;
use peerdex_shared::social::{AskInfo, Event, EventEnvelope};

use super::accounts::AccountRef;
use super::social::{SocialError, record_event_in};
use super::*;

fn ask_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AskInfo> {
    Ok(AskInfo {
        id: r.get::<_, i64>(0)?.max(0) as u64,
        text: r.get(1)?,
        reached: r.get::<_, i64>(2)?.max(0) as u64,
        capped: r.get(3)?,
        expires_at: r.get::<_, i64>(4)?.max(0) as u64,
        cancelled: r.get(5)?,
        offers: r.get::<_, i64>(6)?.max(0) as u64,
    })
}

const ASK_COLUMNS: &str = "q.id, q.text, q.reached, q.capped, q.expires_at, q.cancelled,
    (SELECT coalesce(sum(offers), 0) FROM request_recipients r WHERE r.request = q.id)";

impl Db {
    /// `asker`'s accepted contacts, and with `depth` 2 their accepted contacts too (never the
    /// asker), in no particular order.
    pub fn contacts_within(&self, asker: AccountRef, depth: u8) -> DbResult<Vec<AccountRef>> {
        self.read(|conn| {
            let sql = if depth >= 2 {
                "SELECT contact FROM contacts WHERE owner = ?1 AND status = 'accepted'
                 UNION
                 SELECT c2.contact FROM contacts c1 JOIN contacts c2 ON c2.owner = c1.contact
                  WHERE c1.owner = ?1 AND c1.status = 'accepted' AND c2.status = 'accepted'
                    AND c2.contact != ?1"
            } else {
                "SELECT contact FROM contacts WHERE owner = ?1 AND status = 'accepted'"
            };
            Ok(conn
                .prepare_cached(sql)?
                .query_map([asker], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Stores `asker`'s request and its first `cap` recipients (those who blocked the asker are
    /// left out), with a `request` event for each, in one transaction. Returns the request and
    /// the events to push.
    pub fn create_request(
        &self,
        asker: AccountRef,
        text: &str,
        expires_at: i64,
        mut recipients: Vec<AccountRef>,
        cap: usize,
    ) -> DbResult<(AskInfo, Vec<(AccountRef, EventEnvelope)>)> {
        self.write(|tx| {
            let from: String =
                tx.query_row("SELECT name FROM accounts WHERE id = ?1", [asker], |r| {
                    r.get(0)
                })?;
            recipients.sort_unstable();
            recipients.dedup();
            let mut kept = Vec::new();
            for account in recipients {
                if account == asker {
                    continue;
                }
                let blocked = tx
                    .prepare_cached("SELECT 1 FROM blocks WHERE owner = ?1 AND blocked = ?2")?
                    .exists([account, asker])?;
                if !blocked {
                    kept.push(account);
                }
            }
            let capped = kept.len() > cap;
            kept.truncate(cap);
            let now = unix_now();
            let id: i64 = tx.query_row(
                "INSERT INTO requests (account, text, reached, capped, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![asker, text, kept.len() as i64, capped, now, expires_at],
                |r| r.get(0),
            )?;
            let mut events = Vec::with_capacity(kept.len());
            for account in kept {
                tx.prepare_cached(
                    "INSERT INTO request_recipients (request, account) VALUES (?1, ?2)",
                )?
                .execute(params![id, account])?;
                let event = Event::Request {
                    request: id.max(0) as u64,
                    from: from.clone(),
                    text: text.to_string(),
                    expires_at: expires_at.max(0) as u64,
                };
                events.push((account, record_event_in(tx, account, event)?));
            }
            let info = tx.query_row(
                &format!("SELECT {ASK_COLUMNS} FROM requests q WHERE q.id = ?1"),
                [id],
                ask_from_row,
            )?;
            Ok((info, events))
        })
    }

    /// `asker`'s requests, newest first.
    pub fn requests_of(&self, asker: AccountRef) -> DbResult<Vec<AskInfo>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ASK_COLUMNS} FROM requests q WHERE q.account = ?1 ORDER BY q.id DESC
                     LIMIT 200"
                ))?
                .query_map([asker], ask_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// `offerer` (whom request `id` reached, while it is open) offers `hash`, which one of its
    /// devices shares. Returns the asker and the durable `offer` event made for it.
    pub fn offer(
        &self,
        offerer: AccountRef,
        id: u64,
        hash: &FileHash,
        note: Option<&str>,
    ) -> Result<(AccountRef, EventEnvelope), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let id = i64::try_from(id).unwrap_or(-1);
            let open: Option<(AccountRef, i64, bool)> = tx
                .prepare_cached(
                    "SELECT q.account, q.expires_at, q.cancelled FROM requests q
                     JOIN request_recipients r ON r.request = q.id
                     WHERE q.id = ?1 AND r.account = ?2",
                )?
                .query_row(params![id, offerer], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((asker, expires_at, cancelled)) = open else {
                return Err(SocialError::NotFound(format!("no request {id} reached you")));
            };
            let blocked = tx
                .prepare_cached("SELECT 1 FROM blocks WHERE owner = ?1 AND blocked = ?2")?
                .exists([asker, offerer])?;
            if blocked {
                return Err(SocialError::Blocked("the asker".into()));
            }
            if cancelled || expires_at <= unix_now() {
                return Err(SocialError::Invalid(format!(
                    "request {id} is closed; it takes no more offers"
                )));
            }
            // Only what one of the offerer's devices lists: an offer is a file, not a hope.
            let copy: Option<(String, i64)> = tx
                .prepare_cached(
                    "SELECT f.path, c.size FROM contents c JOIN files f ON f.content = c.id
                     JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen
                     JOIN account_devices d ON d.peer_key = p.peer_key
                     WHERE c.hash = ?1 AND d.account = ?2
                       AND f.acl NOT IN (SELECT id FROM acls WHERE kind = 'takedown') LIMIT 1",
                )?
                .query_row(params![hash.as_bytes(), offerer], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let Some((path, size)) = copy else {
                return Err(SocialError::NotFound(format!(
                    "none of your devices shares {hash}; share it first"
                )));
            };
            tx.execute(
                "UPDATE request_recipients SET offers = offers + 1 WHERE request = ?1 AND account = ?2",
                params![id, offerer],
            )?;
            let from: String =
                tx.query_row("SELECT name FROM accounts WHERE id = ?1", [offerer], |r| {
                    r.get(0)
                })?;
            let event = Event::Offer {
                request: id.max(0) as u64,
                from,
                hash: *hash,
                size: size.max(0) as u64,
                name: path.rsplit('/').next().unwrap_or(&path).to_string(),
                note: note.map(str::to_owned),
            };
            Ok((asker, record_event_in(tx, asker, event)?))
        })
    }

    /// Closes `asker`'s request `id`; returns the accounts it reached, and the asker's name.
    pub fn close_request(
        &self,
        asker: AccountRef,
        id: u64,
    ) -> Result<(Vec<AccountRef>, String), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let id = i64::try_from(id).unwrap_or(-1);
            if tx.execute(
                "UPDATE requests SET cancelled = 1 WHERE id = ?1 AND account = ?2 AND cancelled = 0",
                params![id, asker],
            )? == 0
            {
                return Err(SocialError::NotFound(format!("you have no open request {id}")));
            }
            let reached = tx
                .prepare_cached("SELECT account FROM request_recipients WHERE request = ?1")?
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let name: String =
                tx.query_row("SELECT name FROM accounts WHERE id = ?1", [asker], |r| {
                    r.get(0)
                })?;
            Ok((reached, name))
        })
    }
}
