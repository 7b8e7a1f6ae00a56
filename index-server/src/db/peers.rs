//! Peers: registration, sessions, reachability, last seen.

use super::*;

impl Db {
    /// Registers a peer (or re-registers a known key): claims the nickname, records the observed
    /// address, installs a new session (replacing the old one) and resets reachability.
    pub fn register(
        &self,
        key: &PeerId,
        nickname: &str,
        ip: &str,
        port: u16,
        transport: PeerTransport,
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
                "INSERT INTO peers (peer_key, nickname, session_hash, ip, port, reachability, registered_at, transport)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (peer_key) DO UPDATE SET nickname = excluded.nickname,
                     session_hash = excluded.session_hash, ip = excluded.ip, port = excluded.port,
                     reachability = excluded.reachability, transport = excluded.transport
                 RETURNING id",
                params![key.as_bytes(), nickname, session_hash, ip, port, reachability_code(initial), unix_now(), transport_code(transport)],
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

    /// A peer by key.
    pub fn peer_by_key(&self, key: &PeerId) -> DbResult<Option<PeerRow>> {
        self.read(|conn| {
            conn.prepare_cached(&format!(
                "SELECT {PEER_COLUMNS} FROM peers WHERE peer_key = ?1"
            ))?
            .query_row([key.as_bytes()], peer_from_row)
            .optional()?
            .map(finish_peer)
            .transpose()
        })
    }

    /// A peer by internal id.
    pub fn peer(&self, id: PeerRef) -> DbResult<Option<PeerRow>> {
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
    pub fn end_session(&self, peer: PeerRef) -> DbResult<()> {
        self.write(|tx| {
            tx.execute("UPDATE peers SET session_hash = NULL WHERE id = ?1", [peer])?;
            Ok(())
        })
    }

    /// Records a connect-back result, unless the peer re-registered with another address since.
    pub fn set_reachability(
        &self,
        peer: PeerRef,
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
    pub fn persist_last_seen(&self, seen: &[(PeerRef, i64)]) -> DbResult<()> {
        if seen.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut stmt = tx.prepare_cached("UPDATE peers SET last_seen = ?2 WHERE id = ?1")?;
            for (peer, at) in seen {
                stmt.execute(params![peer, at])?;
            }
            Ok(())
        })
    }

    /// Last persisted heartbeat of every peer, to restore presence after a restart.
    pub fn all_last_seen(&self) -> DbResult<Vec<(PeerRef, i64)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id, last_seen FROM peers WHERE last_seen != 0")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}
