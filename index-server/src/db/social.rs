//! The social layer's store (PROTOCOL §10): contacts, blocks, private messages, mutes, and the
//! durable event log that `GET /api/v1/events` replays after `Last-Event-ID`.

use peerdex_shared::social::{Contact, ContactState, Event, EventEnvelope, Message};

use super::accounts::{AccountError, AccountRef, audit_in};
use super::*;

/// Why a social action was refused.
#[derive(Debug, thiserror::Error)]
pub enum SocialError {
    /// No account has that name.
    #[error("no account named {0:?}")]
    NoAccount(String),
    /// The other account blocked this one.
    #[error("{0} does not accept this from you")]
    Blocked(String),
    /// This account blocked the other one.
    #[error("you blocked {0}; unblock them first (peerdex unblock {0})")]
    YouBlocked(String),
    /// Nothing to act on (no such request, contact or message).
    #[error("{0}")]
    NotFound(String),
    /// The request makes no sense (yourself as a contact).
    #[error("{0}")]
    Invalid(String),
    /// Muted where it tried to speak.
    #[error("{0}")]
    Muted(String),
    /// Not allowed (not an operator of the room).
    #[error("{0}")]
    NotAllowed(String),
    /// A per-account limit is reached.
    #[error("{0}")]
    TooMany(String),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for SocialError {
    fn from(e: rusqlite::Error) -> Self {
        SocialError::Db(e.into())
    }
}

impl From<AccountError> for SocialError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::NoAccount(name) => SocialError::NoAccount(name),
            AccountError::Db(e) => SocialError::Db(e),
            other => SocialError::Invalid(other.to_string()),
        }
    }
}

/// What asking for a contact did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactOutcome {
    /// A request now waits for the other side.
    Requested,
    /// They had asked already: now mutual contacts.
    Accepted,
    /// Nothing changed (already asked, or already contacts).
    Unchanged,
}

/// A message as stored, with the row ids its delivery needs.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The wire form.
    pub message: Message,
    /// Sender's account.
    pub sender: AccountRef,
    /// Recipient's account.
    pub recipient: AccountRef,
}

fn account_named(tx: &Connection, name: &str) -> Result<(AccountRef, String), SocialError> {
    tx.query_row(
        "SELECT id, name FROM accounts WHERE name_key = ?1",
        [nickname_key(name)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?
    .ok_or_else(|| SocialError::NoAccount(name.to_string()))
}

fn blocks(tx: &Connection, owner: AccountRef, blocked: AccountRef) -> rusqlite::Result<bool> {
    tx.prepare_cached("SELECT 1 FROM blocks WHERE owner = ?1 AND blocked = ?2")?
        .exists([owner, blocked])
}

fn secs(at: Option<i64>) -> Option<u64> {
    at.map(|at| at.max(0) as u64)
}

const MESSAGE_COLUMNS: &str = "m.id, s.name, r.name, m.body, m.sent_at, m.delivered_at, \
     m.read_at, m.sender, m.recipient FROM messages m JOIN accounts s ON s.id = m.sender \
     JOIN accounts r ON r.id = m.recipient";

fn message_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        message: Message {
            id: r.get::<_, i64>(0)?.max(0) as u64,
            from: r.get(1)?,
            to: r.get(2)?,
            body: r.get(3)?,
            sent_at: r.get::<_, i64>(4)?.max(0) as u64,
            delivered_at: secs(r.get(5)?),
            read_at: secs(r.get(6)?),
        },
        sender: r.get(7)?,
        recipient: r.get(8)?,
    })
}

impl Db {
    /// Asks `name` to be `me`'s contact; if they asked `me` already, both are contacts now.
    pub fn request_contact(
        &self,
        me: AccountRef,
        name: &str,
    ) -> Result<(ContactOutcome, AccountRef, String), SocialError> {
        let outcome = self.write_with::<_, SocialError>(|tx| {
            let (them, their_name) = account_named(tx, name)?;
            if them == me {
                return Err(SocialError::Invalid("you cannot add yourself".into()));
            }
            if blocks(tx, me, them)? {
                return Err(SocialError::YouBlocked(their_name));
            }
            if blocks(tx, them, me)? {
                return Err(SocialError::Blocked(their_name));
            }
            let status: Option<String> = tx
                .query_row(
                    "SELECT status FROM contacts WHERE owner = ?1 AND contact = ?2",
                    [them, me],
                    |r| r.get(0),
                )
                .optional()?;
            let now = unix_now();
            let outcome = match status.as_deref() {
                Some("accepted") => ContactOutcome::Unchanged,
                Some(_) => {
                    make_mutual(tx, me, them, now)?;
                    ContactOutcome::Accepted
                }
                None => {
                    let added = tx.execute(
                        "INSERT OR IGNORE INTO contacts (owner, contact, status, since)
                         VALUES (?1, ?2, 'requested', ?3)",
                        params![me, them, now],
                    )?;
                    if added == 1 {
                        ContactOutcome::Requested
                    } else {
                        ContactOutcome::Unchanged
                    }
                }
            };
            Ok((outcome, them, their_name))
        })?;
        if outcome.0 == ContactOutcome::Accepted {
            self.scopes_changed();
        }
        Ok(outcome)
    }

    /// Accepts `name`'s request to be `me`'s contact.
    pub fn accept_contact(
        &self,
        me: AccountRef,
        name: &str,
    ) -> Result<(AccountRef, String), SocialError> {
        let out = self.write_with::<_, SocialError>(|tx| {
            let (them, their_name) = account_named(tx, name)?;
            let asked = tx
                .prepare_cached(
                    "SELECT 1 FROM contacts WHERE owner = ?1 AND contact = ?2
                     AND status = 'requested'",
                )?
                .exists([them, me])?;
            if !asked {
                return Err(SocialError::NotFound(format!(
                    "{their_name} has not asked to be your contact"
                )));
            }
            make_mutual(tx, me, them, unix_now())?;
            Ok((them, their_name))
        })?;
        self.scopes_changed();
        Ok(out)
    }

    /// Declines `name`'s request.
    pub fn decline_contact(
        &self,
        me: AccountRef,
        name: &str,
    ) -> Result<(AccountRef, String), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let (them, their_name) = account_named(tx, name)?;
            let gone = tx.execute(
                "DELETE FROM contacts WHERE owner = ?1 AND contact = ?2 AND status = 'requested'",
                [them, me],
            )?;
            if gone == 0 {
                return Err(SocialError::NotFound(format!(
                    "{their_name} has not asked to be your contact"
                )));
            }
            Ok((them, their_name))
        })
    }

    /// Ends a contact (both sides) or withdraws a request `me` made.
    pub fn remove_contact(
        &self,
        me: AccountRef,
        name: &str,
    ) -> Result<(AccountRef, String), SocialError> {
        let out = self.write_with::<_, SocialError>(|tx| {
            let (them, their_name) = account_named(tx, name)?;
            let gone = tx.execute(
                "DELETE FROM contacts WHERE (owner = ?1 AND contact = ?2)
                 OR (owner = ?2 AND contact = ?1 AND status = 'accepted')",
                [me, them],
            )?;
            if gone == 0 {
                return Err(SocialError::NotFound(format!(
                    "{their_name} is not your contact"
                )));
            }
            Ok((them, their_name))
        })?;
        // Files shared with "contacts" stop being visible to them at the next request.
        self.scopes_changed();
        Ok(out)
    }

    /// `me`'s contacts and open requests both ways, by name; `online` and `last_seen` are left
    /// for the caller (presence is in memory).
    pub fn contacts_of(&self, me: AccountRef) -> DbResult<Vec<(AccountRef, Contact)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT a.id, a.name, CASE WHEN c.status = 'accepted' THEN 0 ELSE 2 END
                   FROM contacts c JOIN accounts a ON a.id = c.contact WHERE c.owner = ?1
                 UNION ALL
                 SELECT a.id, a.name, 1 FROM contacts c JOIN accounts a ON a.id = c.owner
                  WHERE c.contact = ?1 AND c.status = 'requested'
                 ORDER BY 2",
            )?;
            let rows = stmt.query_map([me], |r| {
                let state = match r.get::<_, i64>(2)? {
                    0 => ContactState::Accepted,
                    1 => ContactState::Incoming,
                    _ => ContactState::Outgoing,
                };
                Ok((
                    r.get::<_, AccountRef>(0)?,
                    Contact {
                        name: r.get(1)?,
                        state,
                        online: false,
                        last_seen: None,
                    },
                ))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The accounts that accepted `account` as a contact (who watch its presence).
    pub fn accepted_contacts(&self, account: AccountRef) -> DbResult<Vec<AccountRef>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT contact FROM contacts WHERE owner = ?1 AND status = 'accepted'",
                )?
                .query_map([account], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Every linked device's peer row id and account, for presence by account.
    pub fn linked_devices(&self) -> DbResult<Vec<(PeerRef, AccountRef)>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT p.id, d.account FROM account_devices d
                     JOIN peers p ON p.peer_key = d.peer_key",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// An account's name by id.
    pub fn account_name(&self, account: AccountRef) -> DbResult<Option<String>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT name FROM accounts WHERE id = ?1")?
                .query_row([account], |r| r.get(0))
                .optional()?)
        })
    }

    /// `me` blocks `name`: no messages or contact requests from them, and any contact ends.
    pub fn block(&self, me: AccountRef, name: &str) -> Result<String, SocialError> {
        let name = self.write_with::<_, SocialError>(|tx| {
            let (them, their_name) = account_named(tx, name)?;
            if them == me {
                return Err(SocialError::Invalid("you cannot block yourself".into()));
            }
            tx.execute(
                "INSERT OR IGNORE INTO blocks (owner, blocked, since) VALUES (?1, ?2, ?3)",
                params![me, them, unix_now()],
            )?;
            tx.execute(
                "DELETE FROM contacts WHERE (owner = ?1 AND contact = ?2)
                 OR (owner = ?2 AND contact = ?1)",
                [me, them],
            )?;
            Ok(their_name)
        })?;
        self.scopes_changed();
        Ok(name)
    }

    /// Lifts `me`'s block of `name`.
    pub fn unblock(&self, me: AccountRef, name: &str) -> Result<String, SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let (them, their_name) = account_named(tx, name)?;
            if tx.execute(
                "DELETE FROM blocks WHERE owner = ?1 AND blocked = ?2",
                [me, them],
            )? == 0
            {
                return Err(SocialError::NotFound(format!(
                    "you have not blocked {their_name}"
                )));
            }
            Ok(their_name)
        })
    }

    /// The names `me` blocked.
    pub fn blocks_of(&self, me: AccountRef) -> DbResult<Vec<String>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT a.name FROM blocks b JOIN accounts a ON a.id = b.blocked
                     WHERE b.owner = ?1 ORDER BY a.name",
                )?
                .query_map([me], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Stores a message from `sender` to `to`, keeping the newest `history` of that pair.
    pub fn store_message(
        &self,
        sender: AccountRef,
        to: &str,
        body: &str,
        history: u32,
    ) -> Result<StoredMessage, SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let (recipient, their_name) = account_named(tx, to)?;
            if blocks(tx, recipient, sender)? {
                return Err(SocialError::Blocked(their_name));
            }
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO messages (sender, recipient, body, sent_at)
                     VALUES (?1, ?2, ?3, ?4) RETURNING id",
                )?
                .query_row(params![sender, recipient, body, unix_now()], |r| r.get(0))?;
            // A bounded history per conversation (each direction counts its own).
            tx.execute(
                "DELETE FROM messages WHERE sender = ?1 AND recipient = ?2 AND id <=
                   (SELECT id FROM messages WHERE sender = ?1 AND recipient = ?2
                    ORDER BY id DESC LIMIT 1 OFFSET ?3)",
                params![sender, recipient, history],
            )?;
            Ok(tx.query_row(
                &format!("SELECT {MESSAGE_COLUMNS} WHERE m.id = ?1"),
                [id],
                message_from_row,
            )?)
        })
    }

    /// Messages to `me`, oldest first: all, unread only, or those to and from `with`.
    pub fn messages_of(
        &self,
        me: AccountRef,
        unread: bool,
        with: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, SocialError> {
        self.read(|conn| {
            let with = match with {
                None => None,
                Some(name) => match conn
                    .query_row(
                        "SELECT id FROM accounts WHERE name_key = ?1",
                        [nickname_key(name)],
                        |r| r.get::<_, AccountRef>(0),
                    )
                    .optional()?
                {
                    Some(id) => Some(id),
                    None => return Ok(Err(SocialError::NoAccount(name.to_string()))),
                },
            };
            let sql = format!(
                "SELECT {MESSAGE_COLUMNS} WHERE
                   ((?2 IS NULL AND m.recipient = ?1) OR (m.recipient = ?1 AND m.sender = ?2)
                    OR (m.sender = ?1 AND m.recipient = ?2))
                   AND (?3 = 0 OR (m.read_at IS NULL AND m.recipient = ?1))
                 ORDER BY m.id DESC LIMIT ?4"
            );
            let mut rows = conn
                .prepare_cached(&sql)?
                .query_map(params![me, with, unread, limit], message_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.reverse();
            Ok(Ok(rows))
        })?
    }

    /// Marks `ids` (messages to `recipient`) delivered now; returns those that were not yet.
    pub fn mark_delivered(
        &self,
        recipient: AccountRef,
        ids: &[u64],
    ) -> DbResult<Vec<StoredMessage>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| {
            let now = unix_now();
            let mut newly = Vec::new();
            for &id in ids {
                let changed = tx
                    .prepare_cached(
                        "UPDATE messages SET delivered_at = ?3 WHERE id = ?1 AND recipient = ?2
                         AND delivered_at IS NULL",
                    )?
                    .execute(params![id as i64, recipient, now])?;
                if changed == 1 {
                    tx.prepare_cached(
                        "UPDATE events SET delivered = 1 WHERE account = ?1 AND kind = 'message'
                         AND subject = ?2",
                    )?
                    .execute(params![recipient, id as i64])?;
                    newly.push(tx.query_row(
                        &format!("SELECT {MESSAGE_COLUMNS} WHERE m.id = ?1"),
                        [id as i64],
                        message_from_row,
                    )?);
                }
            }
            Ok(newly)
        })
    }

    /// Marks message `id` to `me` read; returns it, and whether it was unread until now.
    pub fn mark_read(&self, me: AccountRef, id: u64) -> Result<(StoredMessage, bool), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let id = i64::try_from(id).unwrap_or(-1);
            let now = unix_now();
            let changed = tx.execute(
                "UPDATE messages SET read_at = ?3, delivered_at = coalesce(delivered_at, ?3)
                 WHERE id = ?1 AND recipient = ?2 AND read_at IS NULL",
                params![id, me, now],
            )?;
            let message = tx
                .query_row(
                    &format!("SELECT {MESSAGE_COLUMNS} WHERE m.id = ?1 AND m.recipient = ?2"),
                    params![id, me],
                    message_from_row,
                )
                .optional()?
                .ok_or_else(|| SocialError::NotFound(format!("no message {id} for you")))?;
            Ok((message, changed == 1))
        })
    }

    /// Keeps a durable event for `account`; returns it with its id.
    pub fn record_event(&self, account: AccountRef, event: Event) -> DbResult<EventEnvelope> {
        self.write(|tx| Ok(record_event_in(tx, account, event)?))
    }

    /// Notes that durable events of `account` reached one of its clients: they are not
    /// replayed to a client that connects without `Last-Event-ID`.
    pub fn mark_events_delivered(&self, account: AccountRef, ids: &[u64]) -> DbResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE events SET delivered = 1 WHERE account = ?1 AND id = ?2 AND delivered = 0",
            )?;
            for &id in ids {
                stmt.execute(params![account, i64::try_from(id).unwrap_or(-1)])?;
            }
            Ok(())
        })
    }

    /// `account`'s durable events after id `after`, oldest first (at most `limit`).
    pub fn events_after(
        &self,
        account: AccountRef,
        after: u64,
        limit: u32,
    ) -> DbResult<Vec<EventEnvelope>> {
        self.read(|conn| {
            events_from(
                conn.prepare_cached(
                    "SELECT id, at, body FROM events WHERE account = ?1 AND id > ?2
                     ORDER BY id LIMIT ?3",
                )?
                .query_map(
                    params![account, i64::try_from(after).unwrap_or(i64::MAX), limit],
                    event_row,
                )?,
            )
        })
    }

    /// The durable events of `account` that reached none of its clients yet, oldest first (at
    /// most `limit`): what a client connecting without `Last-Event-ID` is given first.
    pub fn undelivered_events(
        &self,
        account: AccountRef,
        limit: u32,
    ) -> DbResult<Vec<EventEnvelope>> {
        self.read(|conn| {
            events_from(
                conn.prepare_cached(
                    "SELECT id, at, body FROM events WHERE account = ?1 AND delivered = 0
                     ORDER BY id LIMIT ?2",
                )?
                .query_map(params![account, limit], event_row)?,
            )
        })
    }

    /// Drops messages and events older than `retention_secs`.
    pub fn prune_social(&self, retention_secs: u64) -> DbResult<()> {
        let cutoff = unix_now().saturating_sub(i64::try_from(retention_secs).unwrap_or(i64::MAX));
        self.write(|tx| {
            tx.execute("DELETE FROM messages WHERE sent_at < ?1", [cutoff])?;
            tx.execute("DELETE FROM events WHERE at < ?1", [cutoff])?;
            Ok(())
        })
    }

    /// Mutes `name` until `until` (`None`: lifts the mute), with an audit entry.
    pub fn set_mute(
        &self,
        actor: &str,
        name: &str,
        until: Option<i64>,
        reason: &str,
    ) -> Result<AccountRef, SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let (id, their_name) = account_named(tx, name)?;
            tx.execute(
                "UPDATE accounts SET muted_until = ?2, mute_reason = ?3 WHERE id = ?1",
                params![id, until, reason],
            )?;
            let action = if until.is_some() {
                "account.mute"
            } else {
                "account.unmute"
            };
            audit_in(tx, actor, action, &their_name, reason)?;
            Ok(id)
        })
    }
}

fn make_mutual(
    tx: &Connection,
    me: AccountRef,
    them: AccountRef,
    now: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO contacts (owner, contact, status, since) VALUES (?1, ?2, 'accepted', ?3),
         (?2, ?1, 'accepted', ?3)
         ON CONFLICT (owner, contact) DO UPDATE SET status = 'accepted', since = excluded.since",
        params![me, them, now],
    )?;
    Ok(())
}

type EventRow = (i64, i64, String);

fn event_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EventRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn events_from(
    rows: impl Iterator<Item = rusqlite::Result<EventRow>>,
) -> DbResult<Vec<EventEnvelope>> {
    let mut out = Vec::new();
    for row in rows {
        let (id, at, body) = row?;
        // A row this server wrote; one it cannot read (from a newer build) is skipped.
        if let Ok(event) = serde_json::from_str::<Event>(&body) {
            out.push(EventEnvelope {
                id: Some(id.max(0) as u64),
                at: at.max(0) as u64,
                event,
            });
        }
    }
    Ok(out)
}

/// Keeps a durable event in `tx` (the caller's transaction, so the event exists exactly when
/// what it reports does).
pub(super) fn record_event_in(
    tx: &Connection,
    account: AccountRef,
    event: Event,
) -> rusqlite::Result<EventEnvelope> {
    let at = unix_now();
    let body = serde_json::to_string(&event).unwrap_or_default();
    let subject = match &event {
        Event::Message { message } => i64::try_from(message.id).ok(),
        _ => None,
    };
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO events (account, kind, subject, body, at) VALUES (?1, ?2, ?3, ?4, ?5)
             RETURNING id",
        )?
        .query_row(params![account, event.kind(), subject, body, at], |r| {
            r.get(0)
        })?;
    Ok(EventEnvelope {
        id: Some(id.max(0) as u64),
        at: at.max(0) as u64,
        event,
    })
}
