//! Accounts, their devices and tokens, invites, groups, the interned visibility scopes (ACLs)
//! and the audit log.
//!
//! A viewer's [`Scope`] (the ACLs it may download from and the ones it sees listed) is computed
//! from these tables and cached per account until the next write that could change it: every
//! such write bumps `scope_epoch`, so a membership change applies on the next request without
//! touching the index.

use std::sync::atomic::Ordering;

use peerdex_shared::api::{AccountInfo, Role};
use peerdex_shared::scope::{Audience, Visibility};

use super::*;
use crate::scope::{AclBits, Scope};

row_id!(
    /// An account's row id.
    AccountRef
);
row_id!(
    /// An interned visibility scope; 0 ([`AclRef::PUBLIC`]) is public.
    AclRef
);

/// How long a cached scope is trusted without a change seen in this process: the operator's
/// CLI writes from another process, and a running server picks its changes up within this.
pub const SCOPE_CACHE_SECS: u64 = 2;

impl AclRef {
    /// Public: every file of before scopes, and every file without a `visibility`.
    pub const PUBLIC: AclRef = AclRef(0);
}

/// An account, as stored.
#[derive(Debug, Clone)]
pub struct AccountRow {
    /// Row id.
    pub id: AccountRef,
    /// Name as registered.
    pub name: String,
    /// Argon2id PHC string.
    pub pass_phc: String,
    /// Role.
    pub role: Role,
    /// Disabled accounts cannot sign in, and their devices cannot register.
    pub disabled: bool,
    /// Unix time of creation.
    pub created_at: i64,
    /// Unix time a moderator's mute ends (`i64::MAX`: until lifted); muted accounts send no
    /// messages.
    pub muted_until: Option<i64>,
}

impl AccountRow {
    /// Whether a mute is in force now.
    pub fn is_muted(&self) -> bool {
        self.muted_until.is_some_and(|until| until > unix_now())
    }
}

const ACCOUNT_COLUMNS: &str = "id, name, pass_phc, role, disabled, created_at, muted_until";

fn account_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<AccountRow> {
    let role: String = row.get(3)?;
    Ok(AccountRow {
        id: row.get(0)?,
        name: row.get(1)?,
        pass_phc: row.get(2)?,
        role: Role::parse(&role).unwrap_or(Role::Member),
        disabled: row.get(4)?,
        created_at: row.get(5)?,
        muted_until: row.get(6)?,
    })
}

/// What signs a request in: the account, the device the token was made on, and what it may do.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    /// The account.
    pub account: AccountRow,
    /// The device linked when the token was made (`None`: a login without a device).
    pub device: Option<PeerId>,
    /// What the token may do: `all`, or a comma list (`read,search,download,social,admin`).
    pub scopes: String,
}

/// An invite, as the operator sees it after creating it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InviteRow {
    /// Row id.
    pub id: i64,
    /// Who made it.
    pub creator: String,
    /// Uses left.
    pub uses_left: i64,
    /// Unix time it expires, if it does.
    pub expires_at: Option<i64>,
    /// Groups the new account joins.
    pub groups: Vec<String>,
}

/// A group and its members' names.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct GroupRow {
    /// Group name.
    pub name: String,
    /// Members' account names.
    pub members: Vec<String>,
}

/// One audit log entry.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditRow {
    /// Unix time.
    pub at: i64,
    /// Who did it (an account name, or `operator` for the data-directory CLI).
    pub actor: String,
    /// What (`invite.create`, `group.add`, `account.disable`, …).
    pub action: String,
    /// On what.
    pub target: String,
    /// Why, as given.
    pub reason: String,
}

/// Why an account could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The name (after case folding) is taken.
    #[error("account name {0:?} is taken")]
    NameTaken(String),
    /// The invite is unknown, used up or expired.
    #[error("the invite is unknown, used up or expired")]
    BadInvite,
    /// No such account.
    #[error("no account is called {0:?}")]
    NoAccount(String),
    /// No such group.
    #[error("no group is called {0:?}")]
    NoGroup(String),
    /// The group exists.
    #[error("group {0:?} exists")]
    GroupExists(String),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<rusqlite::Error> for AccountError {
    fn from(e: rusqlite::Error) -> Self {
        AccountError::Db(e.into())
    }
}

fn split_names(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Records an audit entry in the caller's transaction.
pub(super) fn audit_in(
    tx: &Connection,
    actor: &str,
    action: &str,
    target: &str,
    reason: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit_log (at, actor, action, target, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![unix_now(), actor, action, target, reason],
    )?;
    Ok(())
}

fn account_id_in(tx: &Connection, name: &str) -> Result<AccountRef, AccountError> {
    tx.query_row(
        "SELECT id FROM accounts WHERE name_key = ?1",
        [nickname_key(name)],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| AccountError::NoAccount(name.to_string()))
}

fn group_id_in(tx: &Connection, name: &str) -> Result<i64, AccountError> {
    tx.query_row(
        "SELECT id FROM groups WHERE name_key = ?1",
        [nickname_key(name)],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| AccountError::NoGroup(name.to_string()))
}

/// The ACL of `visibility` for a file of `peer`, interned (created on first use).
pub(super) fn acl_for(
    tx: &Connection,
    peer: PeerRef,
    visibility: &Visibility,
) -> rusqlite::Result<AclRef> {
    let (locked, kind, target) = match visibility {
        Visibility::Public => return Ok(AclRef::PUBLIC),
        // Hidden files belong to the owner's account alone; contacts' files to the owner and
        // its accepted contacts. Both name the owner's account (none: nobody sees them).
        Visibility::Hidden
        | Visibility::Scoped {
            audience: Audience::Contacts,
            ..
        } => {
            let owner: Option<i64> = tx
                .prepare_cached(
                    "SELECT d.account FROM account_devices d JOIN peers p ON p.peer_key = d.peer_key
                     WHERE p.id = ?1",
                )?
                .query_row([peer], |r| r.get(0))
                .optional()?;
            let locked = matches!(visibility, Visibility::Scoped { locked: true, .. });
            let kind = if matches!(visibility, Visibility::Hidden) {
                "owner"
            } else {
                "contacts"
            };
            (
                locked,
                kind,
                owner.map_or_else(String::new, |o| o.to_string()),
            )
        }
        Visibility::Scoped { locked, audience } => match audience {
            Audience::Members => (*locked, "members", String::new()),
            Audience::Group(group) => (*locked, "group", group.clone()),
            Audience::Users(users) => (*locked, "users", users.join(",")),
            Audience::Contacts => unreachable!("matched above"),
        },
    };
    let spec = format!("{}{kind}:{target}", if locked { "locked:" } else { "" });
    if let Some(id) = tx
        .prepare_cached("SELECT id FROM acls WHERE spec = ?1")?
        .query_row([&spec], |r| r.get(0))
        .optional()?
    {
        return Ok(id);
    }
    let id: AclRef = tx
        .prepare_cached(
            "INSERT INTO acls (spec, locked, kind, target) VALUES (?1, ?2, ?3, ?4) RETURNING id",
        )?
        .query_row(params![spec, locked, kind, target], |r| r.get(0))?;
    if id.as_u64() >= crate::index::MAX_ACLS {
        // The index packs ACL ids in 24 bits; the insert is rolled back with the transaction.
        return Err(rusqlite::Error::IntegralValueOutOfRange(0, id.0));
    }
    if let Visibility::Scoped {
        audience: Audience::Users(users),
        ..
    } = visibility
    {
        for user in users {
            tx.execute(
                "INSERT OR IGNORE INTO acl_users (name_key, acl) VALUES (?1, ?2)",
                params![user, id],
            )?;
        }
    }
    Ok(id)
}

impl Db {
    pub(super) fn scopes_changed(&self) {
        self.scope_epoch.fetch_add(1, Ordering::Release);
    }

    /// Creates an account. With `invite`, the invite's hash must name a live invite: one use is
    /// taken and its groups joined, in the same transaction.
    pub fn create_account(
        &self,
        name: &str,
        pass_phc: &str,
        ip: &str,
        invite: Option<&[u8; 32]>,
    ) -> Result<AccountRow, AccountError> {
        let out = self.write_with::<_, AccountError>(|tx| {
            let groups = match invite {
                Some(hash) => {
                    let groups: Option<String> = tx
                        .query_row(
                            "UPDATE invites SET uses_left = uses_left - 1
                             WHERE code_hash = ?1 AND uses_left > 0
                               AND (expires_at IS NULL OR expires_at > ?2)
                             RETURNING groups",
                            params![hash, unix_now()],
                            |r| r.get(0),
                        )
                        .optional()?;
                    split_names(&groups.ok_or(AccountError::BadInvite)?)
                }
                None => Vec::new(),
            };
            let id: Option<AccountRef> = tx
                .query_row(
                    "INSERT INTO accounts (name, name_key, pass_phc, created_at, created_ip)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name_key) DO NOTHING RETURNING id",
                    params![name, nickname_key(name), pass_phc, unix_now(), ip],
                    |r| r.get(0),
                )
                .optional()?;
            let id = id.ok_or_else(|| AccountError::NameTaken(name.to_string()))?;
            for group in groups {
                // A group deleted since the invite was made is skipped.
                tx.execute(
                    "INSERT OR IGNORE INTO group_members (grp, account)
                     SELECT id, ?2 FROM groups WHERE name_key = ?1",
                    params![nickname_key(&group), id],
                )?;
            }
            Ok(tx.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [id],
                account_from_row,
            )?)
        })?;
        self.scopes_changed();
        Ok(out)
    }

    /// The account with row id `id`.
    pub fn account(&self, id: AccountRef) -> DbResult<Option<AccountRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"
                ))?
                .query_row([id], account_from_row)
                .optional()?)
        })
    }

    /// The account called `name` (compared by its name key).
    pub fn account_by_name(&self, name: &str) -> DbResult<Option<AccountRow>> {
        let key = nickname_key(name);
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name_key = ?1"
                ))?
                .query_row([key], account_from_row)
                .optional()?)
        })
    }

    /// Stores a token (its hash) for `account`, made on `device`.
    pub fn insert_token(
        &self,
        hash: &[u8; 32],
        account: AccountRef,
        device: Option<&PeerId>,
        kind: &str,
        scopes: &str,
    ) -> DbResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO tokens (hash, account, kind, scopes, label, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    hash,
                    account,
                    kind,
                    scopes,
                    device.map(|d| d.to_string()),
                    unix_now()
                ],
            )?;
            Ok(())
        })
    }

    /// Who a token hash belongs to (`None`: unknown or revoked).
    pub fn token_owner(&self, hash: &[u8; 32]) -> DbResult<Option<TokenOwner>> {
        self.read(|conn| {
            let row = conn
                .prepare_cached(
                    "SELECT a.id, a.name, a.pass_phc, a.role, a.disabled, a.created_at, a.muted_until,
                            t.label, t.scopes
                     FROM tokens t JOIN accounts a ON a.id = t.account WHERE t.hash = ?1",
                )?
                .query_row([hash], |r| {
                    Ok((
                        account_from_row(r)?,
                        r.get::<_, Option<String>>(7)?,
                        r.get::<_, String>(8)?,
                    ))
                })
                .optional()?;
            Ok(row.map(|(account, device, scopes)| TokenOwner {
                account,
                device: device.and_then(|d| d.parse().ok()),
                scopes,
            }))
        })
    }

    /// Revokes a token. Returns whether it existed.
    pub fn revoke_token(&self, hash: &[u8; 32]) -> DbResult<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM tokens WHERE hash = ?1", [hash])? > 0))
    }

    /// Revokes every token of an account.
    pub fn revoke_tokens_of(&self, account: AccountRef) -> DbResult<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM tokens WHERE account = ?1", [account])?;
            Ok(())
        })
    }

    /// Links a device key to an account (moving it from another account if it was linked).
    pub fn link_device(&self, account: AccountRef, key: &PeerId) -> DbResult<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO account_devices (peer_key, account, linked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (peer_key) DO UPDATE SET account = excluded.account, linked_at = excluded.linked_at",
                params![key.as_bytes(), account, unix_now()],
            )?;
            Ok(())
        })?;
        self.scopes_changed();
        Ok(())
    }

    /// The account a device key is linked to.
    pub fn account_of_device(&self, key: &PeerId) -> DbResult<Option<AccountRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT a.id, a.name, a.pass_phc, a.role, a.disabled, a.created_at, a.muted_until
                     FROM account_devices d JOIN accounts a ON a.id = d.account WHERE d.peer_key = ?1",
                )?
                .query_row([key.as_bytes()], account_from_row)
                .optional()?)
        })
    }

    /// What its owner and admins see of an account.
    pub fn account_info(&self, account: &AccountRow) -> DbResult<AccountInfo> {
        let id = account.id;
        let (groups, devices) = self.read(|conn| {
            let groups = conn
                .prepare_cached(
                    "SELECT g.name FROM group_members m JOIN groups g ON g.id = m.grp
                     WHERE m.account = ?1 ORDER BY g.name_key",
                )?
                .query_map([id], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            let devices = conn
                .prepare_cached(
                    "SELECT peer_key FROM account_devices WHERE account = ?1 ORDER BY linked_at",
                )?
                .query_map([id], |r| r.get::<_, Vec<u8>>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok((groups, devices))
        })?;
        Ok(AccountInfo {
            name: account.name.clone(),
            role: account.role,
            groups,
            devices: devices
                .into_iter()
                .map(|k| blob32(k).map(PeerId::from_bytes))
                .collect::<DbResult<_>>()?,
            disabled: account.disabled,
            created_at: account.created_at,
        })
    }

    /// Every account, by name.
    pub fn accounts(&self) -> DbResult<Vec<AccountRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name_key"
                ))?
                .query_map([], account_from_row)?
                .collect::<Result<_, _>>()?)
        })
    }

    /// Disables (or enables) an account, with an audit entry.
    pub fn set_disabled(
        &self,
        actor: &str,
        name: &str,
        disabled: bool,
        reason: &str,
    ) -> Result<AccountRow, AccountError> {
        let row = self.write_with::<_, AccountError>(|tx| {
            let id = account_id_in(tx, name)?;
            tx.execute(
                "UPDATE accounts SET disabled = ?2 WHERE id = ?1",
                params![id, disabled],
            )?;
            if disabled {
                // Every token dies with the account's access.
                tx.execute("DELETE FROM tokens WHERE account = ?1", [id])?;
            }
            let action = if disabled {
                "account.disable"
            } else {
                "account.enable"
            };
            audit_in(tx, actor, action, name, reason)?;
            Ok(tx.query_row(
                &format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = ?1"),
                [id],
                account_from_row,
            )?)
        })?;
        self.scopes_changed();
        Ok(row)
    }

    /// The peers (device keys) linked to an account.
    pub fn devices_of(&self, account: AccountRef) -> DbResult<Vec<PeerId>> {
        self.read(|conn| {
            conn.prepare_cached("SELECT peer_key FROM account_devices WHERE account = ?1")?
                .query_map([account], |r| r.get::<_, Vec<u8>>(0))?
                .map(|k| blob32(k?).map(PeerId::from_bytes))
                .collect()
        })
    }

    /// Sets an account's role, with an audit entry.
    pub fn set_role(&self, actor: &str, name: &str, role: Role) -> Result<(), AccountError> {
        self.write_with::<_, AccountError>(|tx| {
            let id = account_id_in(tx, name)?;
            tx.execute(
                "UPDATE accounts SET role = ?2 WHERE id = ?1",
                params![id, role.as_str()],
            )?;
            audit_in(tx, actor, "account.role", name, role.as_str())?;
            Ok(())
        })
    }

    /// Stores an invite (its code's hash). Its groups must exist.
    pub fn create_invite(
        &self,
        actor: &str,
        code_hash: &[u8; 32],
        uses: u32,
        expires_at: Option<i64>,
        groups: &[String],
    ) -> Result<i64, AccountError> {
        self.write_with::<_, AccountError>(|tx| {
            for group in groups {
                group_id_in(tx, group)?;
            }
            let id = tx.query_row(
                "INSERT INTO invites (code_hash, creator, uses_left, expires_at, groups, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![code_hash, actor, uses, expires_at, groups.join(","), unix_now()],
                |r| r.get(0),
            )?;
            let what = format!(
                "invite {id}: {uses} uses{}{}",
                expires_at.map_or(String::new(), |t| format!(", expires {t}")),
                if groups.is_empty() {
                    String::new()
                } else {
                    format!(", groups {}", groups.join(","))
                }
            );
            audit_in(tx, actor, "invite.create", &what, "")?;
            Ok(id)
        })
    }

    /// Invites made by `creator` that are still usable.
    pub fn live_invites_by(&self, creator: &str) -> DbResult<u64> {
        let creator = creator.to_string();
        self.read(|conn| {
            Ok(conn.query_row(
                "SELECT COUNT(*) FROM invites WHERE creator = ?1 AND uses_left > 0
                 AND (expires_at IS NULL OR expires_at > ?2)",
                params![creator, unix_now()],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// Creates a group.
    pub fn create_group(&self, actor: &str, name: &str) -> Result<(), AccountError> {
        self.write_with::<_, AccountError>(|tx| {
            let created = tx.execute(
                "INSERT INTO groups (name, name_key, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name_key) DO NOTHING",
                params![name, nickname_key(name), unix_now()],
            )?;
            if created == 0 {
                return Err(AccountError::GroupExists(name.to_string()));
            }
            audit_in(tx, actor, "group.create", name, "")?;
            Ok(())
        })?;
        self.scopes_changed();
        Ok(())
    }

    /// Adds an account to a group (or removes it, with `member = false`).
    pub fn set_member(
        &self,
        actor: &str,
        group: &str,
        account: &str,
        member: bool,
    ) -> Result<(), AccountError> {
        self.write_with::<_, AccountError>(|tx| {
            let grp = group_id_in(tx, group)?;
            let id = account_id_in(tx, account)?;
            if member {
                tx.execute(
                    "INSERT OR IGNORE INTO group_members (grp, account) VALUES (?1, ?2)",
                    params![grp, id],
                )?;
            } else {
                tx.execute(
                    "DELETE FROM group_members WHERE grp = ?1 AND account = ?2",
                    params![grp, id],
                )?;
            }
            let action = if member { "group.add" } else { "group.remove" };
            audit_in(tx, actor, action, &format!("{group}: {account}"), "")?;
            Ok(())
        })?;
        self.scopes_changed();
        Ok(())
    }

    /// Every group with its members.
    pub fn groups(&self) -> DbResult<Vec<GroupRow>> {
        self.read(|conn| {
            let mut out: Vec<GroupRow> = Vec::new();
            let mut stmt = conn.prepare_cached(
                "SELECT g.name, a.name FROM groups g
                 LEFT JOIN group_members m ON m.grp = g.id LEFT JOIN accounts a ON a.id = m.account
                 ORDER BY g.name_key, a.name_key",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })?;
            for row in rows {
                let (group, member) = row?;
                if out.last().is_none_or(|g| g.name != group) {
                    out.push(GroupRow {
                        name: group,
                        members: Vec::new(),
                    });
                }
                if let (Some(member), Some(last)) = (member, out.last_mut()) {
                    last.members.push(member);
                }
            }
            Ok(out)
        })
    }

    /// Appends to the audit log.
    pub fn audit(&self, actor: &str, action: &str, target: &str, reason: &str) -> DbResult<()> {
        self.write(|tx| Ok(audit_in(tx, actor, action, target, reason)?))
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit_log(&self, limit: i64) -> DbResult<Vec<AuditRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT at, actor, action, target, reason FROM audit_log ORDER BY id DESC LIMIT ?1",
                )?
                .query_map([limit], |r| {
                    Ok(AuditRow {
                        at: r.get(0)?,
                        actor: r.get(1)?,
                        action: r.get(2)?,
                        target: r.get(3)?,
                        reason: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?)
        })
    }

    /// What `account` may see and download (guests: `None`), cached until scopes change.
    pub fn scope_of(&self, account: Option<&AccountRow>) -> DbResult<Arc<Scope>> {
        let epoch = self.scope_epoch.load(Ordering::Acquire);
        let key = account.filter(|a| !a.disabled).map(|a| a.id);
        if let Some((at, computed, scope)) = self
            .scopes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && *at == epoch
            && computed.elapsed().as_secs() < SCOPE_CACHE_SECS
        {
            return Ok(scope.clone());
        }
        let name_key = account.map(|a| nickname_key(&a.name));
        let scope = self.read(|conn| {
            let mut download = AclBits::default();
            let mut listed = AclBits::default();
            let mut stmt = conn.prepare_cached(
                // A guest's NULLs make the test NULL: coalesce says no.
                "SELECT id, locked, coalesce(
                    (kind = 'members' AND ?1 IS NOT NULL)
                    OR (kind = 'group' AND target IN (SELECT g.name_key FROM groups g
                        JOIN group_members m ON m.grp = g.id WHERE m.account = ?1))
                    OR (kind = 'users' AND id IN (SELECT acl FROM acl_users WHERE name_key = ?2))
                    OR (kind = 'owner' AND target = CAST(?1 AS TEXT))
                    OR (kind = 'contacts' AND (target = CAST(?1 AS TEXT) OR target IN
                        (SELECT CAST(owner AS TEXT) FROM contacts
                         WHERE contact = ?1 AND status = 'accepted'))), 0)
                 FROM acls",
            )?;
            let rows = stmt.query_map(params![key, name_key], |r| {
                Ok((
                    r.get::<_, AclRef>(0)?,
                    r.get::<_, bool>(1)?,
                    r.get::<_, bool>(2)?,
                ))
            })?;
            for row in rows {
                let (acl, locked, allowed) = row?;
                if allowed {
                    download.insert(acl);
                    listed.insert(acl);
                } else if locked {
                    listed.insert(acl);
                }
            }
            Ok(Scope::new(key, download, listed))
        })?;
        let scope = Arc::new(scope);
        let mut cache = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, (epoch, std::time::Instant::now(), scope.clone()));
        Ok(scope)
    }

    /// Notes that scopes may have changed (a list upload interned a new ACL).
    pub fn acls_changed(&self) {
        self.scopes_changed();
    }
}
