//! Chat rooms (PROTOCOL §10.6): who may see and join a room, its members and operators, mutes,
//! and a bounded history replayed on join.

use peerdex_shared::social::{Room, RoomLine, RoomRole};

use super::accounts::AccountRef;
use super::social::SocialError;
use super::*;

/// Who may see and join a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomAccess {
    /// Every signed-in account.
    Public,
    /// Members and those the owner or an operator invited.
    Private,
    /// Members of one group (by name key).
    Group(String),
}

impl RoomAccess {
    /// Parses `public`, `private` or `group:NAME`.
    pub fn parse(text: &str) -> Option<RoomAccess> {
        match text {
            "public" => Some(RoomAccess::Public),
            "private" => Some(RoomAccess::Private),
            other => other
                .strip_prefix("group:")
                .filter(|g| !g.is_empty())
                .map(|g| RoomAccess::Group(nickname_key(g))),
        }
    }

    fn as_text(&self) -> String {
        match self {
            RoomAccess::Public => "public".into(),
            RoomAccess::Private => "private".into(),
            RoomAccess::Group(g) => format!("group:{g}"),
        }
    }
}

/// A room as stored.
#[derive(Debug, Clone)]
pub struct RoomRow {
    /// Row id.
    pub id: i64,
    /// Name as created.
    pub name: String,
    /// Access.
    pub access: RoomAccess,
}

fn role_text(role: RoomRole) -> &'static str {
    match role {
        RoomRole::Owner => "owner",
        RoomRole::Operator => "operator",
        RoomRole::Member => "member",
    }
}

fn role_of(text: &str) -> RoomRole {
    match text {
        "owner" => RoomRole::Owner,
        "operator" => RoomRole::Operator,
        _ => RoomRole::Member,
    }
}

/// Whether `account` may see `room` (and so join it, for public and group rooms).
fn may_see(tx: &Connection, room: &RoomRow, account: AccountRef) -> rusqlite::Result<bool> {
    Ok(match &room.access {
        RoomAccess::Public => true,
        RoomAccess::Group(group) => tx
            .prepare_cached(
                "SELECT 1 FROM groups g JOIN group_members m ON m.grp = g.id
                 WHERE g.name_key = ?1 AND m.account = ?2",
            )?
            .exists(params![group, account])?,
        RoomAccess::Private => {
            member_role(tx, room.id, account)?.is_some()
                || tx
                    .prepare_cached("SELECT 1 FROM room_invites WHERE room = ?1 AND account = ?2")?
                    .exists(params![room.id, account])?
        }
    })
}

fn member_role(
    tx: &Connection,
    room: i64,
    account: AccountRef,
) -> rusqlite::Result<Option<RoomRole>> {
    tx.prepare_cached("SELECT role FROM room_members WHERE room = ?1 AND account = ?2")?
        .query_row(params![room, account], |r| r.get::<_, String>(0))
        .optional()
        .map(|r| r.as_deref().map(role_of))
}

fn room_named(tx: &Connection, name: &str) -> rusqlite::Result<Option<RoomRow>> {
    tx.prepare_cached("SELECT id, name, access FROM rooms WHERE name_key = ?1")?
        .query_row([nickname_key(name)], |r| {
            let access: String = r.get(2)?;
            Ok(RoomRow {
                id: r.get(0)?,
                name: r.get(1)?,
                access: RoomAccess::parse(&access).unwrap_or(RoomAccess::Private),
            })
        })
        .optional()
}

/// The room `name` if `account` may see it; otherwise as if it did not exist.
fn visible_room(tx: &Connection, name: &str, account: AccountRef) -> Result<RoomRow, SocialError> {
    match room_named(tx, name)? {
        Some(room) if may_see(tx, &room, account)? => Ok(room),
        _ => Err(SocialError::NotFound(format!("no room named {name:?}"))),
    }
}

fn lines_of(tx: &Connection, room: i64, limit: u32) -> rusqlite::Result<Vec<RoomLine>> {
    let mut lines = tx
        .prepare_cached(
            "SELECT l.id, a.name, l.body, l.at FROM room_lines l JOIN accounts a ON a.id = l.account
             WHERE l.room = ?1 ORDER BY l.id DESC LIMIT ?2",
        )?
        .query_map(params![room, limit], |r| {
            Ok(RoomLine {
                id: r.get::<_, i64>(0)?.max(0) as u64,
                from: r.get(1)?,
                body: r.get(2)?,
                at: r.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    lines.reverse();
    Ok(lines)
}

/// Members who may still see the room (one removed from a group loses its room at once).
fn members_of(tx: &Connection, room: &RoomRow) -> rusqlite::Result<Vec<AccountRef>> {
    let all: Vec<AccountRef> = tx
        .prepare_cached("SELECT account FROM room_members WHERE room = ?1")?
        .query_map([room.id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(all.len());
    for account in all {
        if may_see(tx, room, account)? {
            out.push(account);
        }
    }
    Ok(out)
}

impl Db {
    /// Joins room `name` (creating it with `access`, `account` its owner, when there is none).
    /// Returns the room, its members (for events) and its last `history` lines.
    pub fn join_room(
        &self,
        account: AccountRef,
        name: &str,
        access: Option<RoomAccess>,
        history: u32,
    ) -> Result<(RoomRow, Vec<AccountRef>, Vec<RoomLine>), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let now = unix_now();
            let room = match room_named(tx, name)? {
                Some(room) => {
                    if !may_see(tx, &room, account)? {
                        // A private room one was not invited to does not exist for them.
                        return Err(SocialError::NotFound(format!("no room named {name:?}")));
                    }
                    room
                }
                None => {
                    let access = access.unwrap_or(RoomAccess::Public);
                    if let RoomAccess::Group(group) = &access {
                        let member = tx
                            .prepare_cached(
                                "SELECT 1 FROM groups g JOIN group_members m ON m.grp = g.id
                                 WHERE g.name_key = ?1 AND m.account = ?2",
                            )?
                            .exists(params![group, account])?;
                        if !member {
                            return Err(SocialError::Invalid(format!(
                                "you are not in group {group}: only its members may open its room"
                            )));
                        }
                    }
                    let id: i64 = tx.query_row(
                        "INSERT INTO rooms (name, name_key, access, owner, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                        params![name, nickname_key(name), access.as_text(), account, now],
                        |r| r.get(0),
                    )?;
                    tx.execute(
                        "INSERT INTO room_members (room, account, role, joined_at)
                         VALUES (?1, ?2, 'owner', ?3)",
                        params![id, account, now],
                    )?;
                    RoomRow {
                        id,
                        name: name.to_string(),
                        access,
                    }
                }
            };
            tx.execute(
                "INSERT OR IGNORE INTO room_members (room, account, role, joined_at)
                 VALUES (?1, ?2, 'member', ?3)",
                params![room.id, account, now],
            )?;
            let members = members_of(tx, &room)?;
            Ok((room.clone(), members, lines_of(tx, room.id, history)?))
        })
    }

    /// Leaves room `name`; returns it and the members left.
    pub fn leave_room(
        &self,
        account: AccountRef,
        name: &str,
    ) -> Result<(RoomRow, Vec<AccountRef>), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let room = visible_room(tx, name, account)?;
            if tx.execute(
                "DELETE FROM room_members WHERE room = ?1 AND account = ?2",
                params![room.id, account],
            )? == 0
            {
                return Err(SocialError::NotFound(format!("you are not in {name}")));
            }
            Ok((room.clone(), members_of(tx, &room)?))
        })
    }

    /// The rooms `account` may see, with their member counts and its role where it is in them.
    pub fn rooms_for(&self, account: AccountRef) -> DbResult<Vec<Room>> {
        self.read(|conn| {
            let rooms: Vec<RoomRow> = conn
                .prepare_cached("SELECT id, name, access FROM rooms ORDER BY name_key")?
                .query_map([], |r| {
                    let access: String = r.get(2)?;
                    Ok(RoomRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        access: RoomAccess::parse(&access).unwrap_or(RoomAccess::Private),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut out = Vec::new();
            for room in rooms {
                if !may_see(conn, &room, account)? {
                    continue;
                }
                let members = members_of(conn, &room)?.len();
                out.push(Room {
                    name: room.name.clone(),
                    access: room.access.as_text(),
                    members: members as u64,
                    role: member_role(conn, room.id, account)?,
                });
            }
            Ok(out)
        })
    }

    /// Says `body` in room `name` as `account` (a member, not muted there), keeping the last
    /// `history` lines. Returns the line and the members to tell.
    pub fn say_in_room(
        &self,
        account: AccountRef,
        name: &str,
        body: &str,
        history: u32,
    ) -> Result<(RoomRow, RoomLine, Vec<AccountRef>), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let room = visible_room(tx, name, account)?;
            let muted: Option<Option<i64>> = tx
                .prepare_cached(
                    "SELECT muted_until FROM room_members WHERE room = ?1 AND account = ?2",
                )?
                .query_row(params![room.id, account], |r| r.get(0))
                .optional()?;
            let now = unix_now();
            match muted {
                None => return Err(SocialError::Invalid(format!("join {name} first"))),
                Some(Some(until)) if until > now => {
                    return Err(SocialError::Muted(format!(
                        "an operator of {name} muted you for {} s more",
                        until - now
                    )));
                }
                Some(_) => {}
            }
            let id: i64 = tx.query_row(
                "INSERT INTO room_lines (room, account, body, at) VALUES (?1, ?2, ?3, ?4)
                 RETURNING id",
                params![room.id, account, body, now],
                |r| r.get(0),
            )?;
            tx.execute(
                "DELETE FROM room_lines WHERE room = ?1 AND id <=
                   (SELECT id FROM room_lines WHERE room = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![room.id, history],
            )?;
            let from: String =
                tx.query_row("SELECT name FROM accounts WHERE id = ?1", [account], |r| {
                    r.get(0)
                })?;
            let line = RoomLine {
                id: id.max(0) as u64,
                from,
                body: body.to_string(),
                at: now.max(0) as u64,
            };
            Ok((room.clone(), line, members_of(tx, &room)?))
        })
    }

    /// The last `limit` lines of room `name`, for a member.
    pub fn room_log(
        &self,
        account: AccountRef,
        name: &str,
        limit: u32,
    ) -> Result<Vec<RoomLine>, SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let room = visible_room(tx, name, account)?;
            if member_role(tx, room.id, account)?.is_none() {
                return Err(SocialError::Invalid(format!("join {name} first")));
            }
            Ok(lines_of(tx, room.id, limit)?)
        })
    }

    /// An owner or operator of room `name` acts on member `target`: `invite` (private rooms),
    /// `kick` (out, and uninvited), `mute` until `until` (`None`: lift), or `op` (owner only).
    /// Returns the room, the target's id and the members to tell.
    pub fn moderate_room(
        &self,
        actor: AccountRef,
        name: &str,
        action: &str,
        target: &str,
        until: Option<i64>,
    ) -> Result<(RoomRow, AccountRef, Vec<AccountRef>), SocialError> {
        self.write_with::<_, SocialError>(|tx| {
            let room = visible_room(tx, name, actor)?;
            let role = member_role(tx, room.id, actor)?;
            if !matches!(role, Some(RoomRole::Owner | RoomRole::Operator)) {
                return Err(SocialError::NotAllowed(format!(
                    "only the owner and operators of {name} may {action}"
                )));
            }
            let them: AccountRef = tx
                .query_row(
                    "SELECT id FROM accounts WHERE name_key = ?1",
                    [nickname_key(target)],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| SocialError::NoAccount(target.to_string()))?;
            let their_role = member_role(tx, room.id, them)?;
            if their_role == Some(RoomRole::Owner) && action != "invite" {
                return Err(SocialError::NotAllowed(format!(
                    "the owner of {name} cannot be {action}ed"
                )));
            }
            match action {
                "invite" => {
                    if room.access != RoomAccess::Private {
                        return Err(SocialError::Invalid(format!(
                            "{name} is not private: anyone who may see it can join"
                        )));
                    }
                    let blocked = tx
                        .prepare_cached("SELECT 1 FROM blocks WHERE owner = ?1 AND blocked = ?2")?
                        .exists([them, actor])?;
                    if blocked {
                        return Err(SocialError::Blocked(target.to_string()));
                    }
                    tx.execute(
                        "INSERT OR IGNORE INTO room_invites (room, account) VALUES (?1, ?2)",
                        params![room.id, them],
                    )?;
                }
                "kick" => {
                    tx.execute(
                        "DELETE FROM room_members WHERE room = ?1 AND account = ?2",
                        params![room.id, them],
                    )?;
                    tx.execute(
                        "DELETE FROM room_invites WHERE room = ?1 AND account = ?2",
                        params![room.id, them],
                    )?;
                }
                "mute" => {
                    if their_role.is_none() {
                        return Err(SocialError::NotFound(format!("{target} is not in {name}")));
                    }
                    tx.execute(
                        "UPDATE room_members SET muted_until = ?3 WHERE room = ?1 AND account = ?2",
                        params![room.id, them, until],
                    )?;
                }
                "op" => {
                    if role != Some(RoomRole::Owner) || their_role.is_none() {
                        return Err(SocialError::NotAllowed(format!(
                            "only the owner of {name} may make a member an operator"
                        )));
                    }
                    tx.execute(
                        "UPDATE room_members SET role = ?3 WHERE room = ?1 AND account = ?2",
                        params![room.id, them, role_text(RoomRole::Operator)],
                    )?;
                }
                other => return Err(SocialError::Invalid(format!("unknown action {other:?}"))),
            }
            let mut told = members_of(tx, &room)?;
            if !told.contains(&them) {
                told.push(them);
            }
            Ok((room.clone(), them, told))
        })
    }
}
