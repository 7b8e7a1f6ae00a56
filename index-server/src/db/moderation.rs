//! Bans (account, peer key, IP network, nickname pattern; timed or permanent) and content
//! takedowns.
//!
//! A takedown gives every copy of a hash the `takedown` ACL, which no viewer may see or fetch, so
//! search, totals, browse, sources and tickets stop offering it through the one scope check
//! every path already makes (and copies uploaded later get it too).

use std::net::IpAddr;

use globset::GlobBuilder;
use ipnet::IpNet;

use super::accounts::{AccountError, AclRef};
use super::*;

/// What a ban applies to.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum BanKind {
    /// An account, by name.
    Account,
    /// A peer key (device).
    Peer,
    /// An IP address or network (`203.0.113.0/24`).
    Ip,
    /// Nicknames matching a glob (`spam*`), compared NFKC case-folded.
    Nick,
}

impl BanKind {
    /// The kind named `text`.
    pub fn parse(text: &str) -> Option<BanKind> {
        match text {
            "account" => Some(BanKind::Account),
            "peer" | "key" => Some(BanKind::Peer),
            "ip" | "cidr" => Some(BanKind::Ip),
            "nick" => Some(BanKind::Nick),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            BanKind::Account => "account",
            BanKind::Peer => "peer",
            BanKind::Ip => "ip",
            BanKind::Nick => "nick",
        }
    }
}

/// A ban as stored.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct BanRow {
    /// Row id (to lift it).
    pub id: i64,
    /// What it applies to.
    pub kind: BanKind,
    /// The account name key, peer id, network or nickname pattern.
    pub value: String,
    /// Unix time it ends (`None`: permanent).
    pub until: Option<i64>,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When.
    pub created_at: i64,
}

/// Who or what a request comes from, to check against bans.
#[derive(Debug, Clone, Default)]
pub struct BanSubject {
    /// The account name.
    pub account: Option<String>,
    /// The device key.
    pub peer: Option<PeerId>,
    /// The client address.
    pub ip: Option<IpAddr>,
    /// The nickname claimed.
    pub nick: Option<String>,
}

impl BanRow {
    /// Whether the ban covers `subject`.
    pub fn covers(&self, subject: &BanSubject) -> bool {
        match self.kind {
            BanKind::Account => subject
                .account
                .as_ref()
                .is_some_and(|a| nickname_key(a) == self.value),
            BanKind::Peer => subject.peer.is_some_and(|p| p.to_string() == self.value),
            BanKind::Ip => match (subject.ip, self.value.parse::<IpNet>()) {
                (Some(ip), Ok(net)) => net.contains(&ip.to_canonical()),
                (Some(ip), Err(_)) => self.value.parse::<IpAddr>().is_ok_and(|b| b == ip),
                _ => false,
            },
            BanKind::Nick => subject.nick.as_ref().is_some_and(|n| {
                GlobBuilder::new(&self.value)
                    .build()
                    .is_ok_and(|g| g.compile_matcher().is_match(nickname_key(n)))
            }),
        }
    }
}

/// Why a ban's value is not one.
pub fn check_ban_value(kind: BanKind, value: &str) -> Result<String, String> {
    match kind {
        BanKind::Account | BanKind::Nick if value.is_empty() => Err("empty value".into()),
        BanKind::Account => Ok(nickname_key(value)),
        BanKind::Nick => GlobBuilder::new(&nickname_key(value))
            .build()
            .map(|g| g.glob().to_string())
            .map_err(|e| format!("not a valid pattern: {e}")),
        BanKind::Peer => value
            .parse::<PeerId>()
            .map(|p| p.to_string())
            .map_err(|e| format!("not a peer id: {e}")),
        BanKind::Ip => value
            .parse::<IpNet>()
            .map(|n| n.to_string())
            .or_else(|_| {
                value
                    .parse::<IpAddr>()
                    .map(|ip| IpNet::from(ip).to_string())
            })
            .map_err(|_| "not an IP address or network".to_string()),
    }
}

fn ban_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BanRow> {
    let kind: String = r.get(1)?;
    Ok(BanRow {
        id: r.get(0)?,
        kind: BanKind::parse(&kind).unwrap_or(BanKind::Account),
        value: r.get(2)?,
        until: r.get(3)?,
        reason: r.get(4)?,
        actor: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// Interns the ACL that nobody may see: what taken-down content carries.
pub(super) fn takedown_acl(tx: &Connection) -> rusqlite::Result<AclRef> {
    tx.prepare_cached(
        "INSERT INTO acls (spec, locked, kind, target) VALUES ('takedown:', 0, 'takedown', '')
         ON CONFLICT (spec) DO UPDATE SET spec = excluded.spec RETURNING id",
    )?
    .query_row([], |r| r.get(0))
}

/// Whether `hash` is taken down.
pub(super) fn is_taken_down(tx: &Connection, hash: &FileHash) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT 1 FROM takedowns WHERE hash = ?1")?
        .query_row([hash.as_bytes()], |_| Ok(()))
        .optional()?
        .is_some())
}

impl Db {
    /// Adds a ban (its value already checked with [`check_ban_value`]), with an audit entry.
    pub fn add_ban(
        &self,
        actor: &str,
        kind: BanKind,
        value: &str,
        until: Option<i64>,
        reason: &str,
    ) -> DbResult<BanRow> {
        self.write(|tx| {
            let id: i64 = tx.query_row(
                "INSERT INTO bans (kind, value, until, reason, actor, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
                params![kind.as_str(), value, until, reason, actor, unix_now()],
                |r| r.get(0),
            )?;
            let target = format!(
                "{} {value}{}",
                kind.as_str(),
                until.map_or(" (permanent)".to_string(), |u| format!(" until {u}"))
            );
            tx.execute(
                "INSERT INTO audit_log (at, actor, action, target, reason) VALUES (?1, ?2, 'ban.add', ?3, ?4)",
                params![unix_now(), actor, target, reason],
            )?;
            Ok(tx.query_row(
                "SELECT id, kind, value, until, reason, actor, created_at FROM bans WHERE id = ?1",
                [id],
                ban_from_row,
            )?)
        })
    }

    /// Every peer ever registered (to find the live sessions a new ban covers).
    pub fn all_peers(&self) -> DbResult<Vec<PeerRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!("SELECT {PEER_COLUMNS} FROM peers"))?;
            let rows = stmt
                .query_map([], peer_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(finish_peer).collect()
        })
    }

    /// Lifts a ban. Returns whether it existed.
    pub fn remove_ban(&self, actor: &str, id: i64) -> DbResult<bool> {
        self.write(|tx| {
            let removed = tx.execute("DELETE FROM bans WHERE id = ?1", [id])? > 0;
            if removed {
                tx.execute(
                    "INSERT INTO audit_log (at, actor, action, target, reason) VALUES (?1, ?2, 'ban.remove', ?3, '')",
                    params![unix_now(), actor, id.to_string()],
                )?;
            }
            Ok(removed)
        })
    }

    /// Bans in force now.
    pub fn active_bans(&self) -> DbResult<Vec<BanRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT id, kind, value, until, reason, actor, created_at FROM bans
                     WHERE until IS NULL OR until > ?1 ORDER BY id",
                )?
                .query_map([unix_now()], ban_from_row)?
                .collect::<Result<_, _>>()?)
        })
    }

    /// The highest ban id so far (0: none).
    pub fn latest_ban_id(&self) -> DbResult<i64> {
        self.read(|conn| {
            Ok(conn.query_row("SELECT coalesce(max(id), 0) FROM bans", [], |r| r.get(0))?)
        })
    }

    /// The first ban in force that covers `subject`.
    pub fn ban_covering(&self, subject: &BanSubject) -> DbResult<Option<BanRow>> {
        Ok(self
            .active_bans()?
            .into_iter()
            .find(|ban| ban.covers(subject)))
    }

    /// Takes a content down: every copy of `hash`, now and later, gets the ACL nobody may see.
    pub fn take_down(
        &self,
        actor: &str,
        hash: &FileHash,
        reason: &str,
    ) -> Result<u64, AccountError> {
        let mut touched = Vec::new();
        let files = self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO takedowns (hash, reason, actor, at) VALUES (?1, ?2, ?3, ?4)",
                params![hash.as_bytes(), reason, actor, unix_now()],
            )?;
            let acl = takedown_acl(tx)?;
            let rows: Vec<(FileRef, PeerRef, ContentRef)> = tx
                .prepare(
                    "UPDATE files SET acl = ?2 WHERE content IN (SELECT id FROM contents WHERE hash = ?1)
                     RETURNING id, peer, content",
                )?
                .query_map(params![hash.as_bytes(), acl], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            for &(file, peer, content) in &rows {
                push_op(tx, IndexOp::FileChanged { peer, file })?;
                touched.push(content);
            }
            tx.execute(
                "INSERT INTO audit_log (at, actor, action, target, reason) VALUES (?1, ?2, 'content.takedown', ?3, ?4)",
                params![unix_now(), actor, hash.to_string(), reason],
            )?;
            Ok(rows.len() as u64)
        })?;
        touched.sort();
        touched.dedup();
        self.holders.forget_contents(&touched);
        self.acls_changed();
        Ok(files)
    }
}
