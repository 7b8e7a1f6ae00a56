//! Reads for results and pages: holders and peer cards (through the holders cache), contents by hash, browse pages, counts.

use super::*;

impl Db {
    /// For each content id that exists, its hash, size and every active copy (online or not),
    /// in the order asked. Served from the holders cache; misses are read and cached.
    pub fn holders_of(&self, contents: &[ContentRef]) -> DbResult<Vec<Arc<Holders>>> {
        let (cached, seen) = self.holders.contents(contents);
        let missing: Vec<ContentRef> = contents
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(&id, _)| id)
            .collect();
        if missing.is_empty() {
            return Ok(cached.into_iter().flatten().collect());
        }
        let read = self.read(|conn| {
            let mut content_stmt =
                conn.prepare_cached("SELECT hash, size FROM contents WHERE id = ?1")?;
            let mut copies_stmt = conn.prepare_cached(
                "SELECT f.peer, f.share, f.path, f.acl
                 FROM files f JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen
                 WHERE f.content = ?1",
            )?;
            let mut read = Vec::with_capacity(missing.len());
            for &content in &missing {
                let Some((hash, size)): Option<(Vec<u8>, i64)> = content_stmt
                    .query_row([content], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?
                else {
                    continue;
                };
                let rows = copies_stmt
                    .query_map([content], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let hash = FileHash::from_bytes(blob32(hash)?);
                read.push(Arc::new(Holders::new(content, hash, size as u64, rows)));
            }
            Ok(read)
        })?;
        self.holders.fill_contents(seen, &read);
        let mut read: std::collections::HashMap<ContentRef, Arc<Holders>> =
            read.into_iter().map(|h| (h.content, h)).collect();
        Ok(contents
            .iter()
            .zip(cached)
            .filter_map(|(id, cached)| cached.or_else(|| read.remove(id)))
            .collect())
    }

    /// What a search result shows about a peer (cached; `None` if there is no such peer).
    pub fn peer_card(&self, peer: PeerRef) -> DbResult<Option<Arc<PeerCard>>> {
        let seen = match self.holders.peer(peer) {
            Ok(card) => return Ok(Some(card)),
            Err(seen) => seen,
        };
        let card = self.read(|conn| {
            conn.prepare_cached(
                "SELECT peer_key, nickname, ip, port, reachability, registered_at, transport FROM peers
                 WHERE id = ?1",
            )?
            .query_row([peer], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get::<_, i64>(3)?,
                    r.get(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .optional()?
            .map(|(key, nickname, ip, port, reachability, registered_at, transport)| {
                Ok::<_, DbError>(PeerCard {
                    key: PeerId::from_bytes(blob32(key)?),
                    nickname,
                    ip,
                    port: u16::try_from(port).unwrap_or(0),
                    reachability: reachability_from(reachability),
                    transport: transport_from(transport),
                    registered_at,
                })
            })
            .transpose()
        })?;
        let card = card.map(Arc::new);
        if let Some(card) = &card {
            self.holders.fill_peer(seen, peer, card.clone());
        }
        Ok(card)
    }

    /// Content ids with this hash (one per distinct claimed size).
    pub fn contents_with_hash(&self, hash: &FileHash) -> DbResult<Vec<ContentRef>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT id FROM contents WHERE hash = ?1")?;
            let rows = stmt.query_map([hash.as_bytes()], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// One page of a peer's active list that `scope` may see, sorted by share and path, after
    /// the given position.
    pub fn browse(
        &self,
        peer: PeerRef,
        after: Option<(&str, &str)>,
        limit: i64,
        scope: &crate::scope::Scope,
    ) -> DbResult<Vec<BrowseRow>> {
        self.read(|conn| {
            let (share, path) = after.unwrap_or(("", ""));
            let mut stmt = conn.prepare_cached(
                "SELECT f.share, f.path, f.size, f.mtime, c.hash, f.acl, f.tags FROM files f
                 JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen
                 JOIN contents c ON c.id = f.content
                 WHERE f.peer = ?1 AND (f.share, f.path) > (?2, ?3)
                 ORDER BY f.share, f.path",
            )?;
            let mut rows = stmt.query(params![peer, share, path])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                if out.len() as i64 >= limit {
                    break;
                }
                if !scope.lists(r.get(5)?) {
                    continue;
                }
                out.push(BrowseRow {
                    share: r.get(0)?,
                    path: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    mtime: r.get(3)?,
                    hash: FileHash::from_bytes(blob32(r.get(4)?)?),
                    tags: MediaTags::from_stored(r.get(6)?),
                });
            }
            Ok(out)
        })
    }

    /// How many entries of a peer's active list `scope` may see.
    pub fn visible_entries(&self, peer: PeerRef, scope: &crate::scope::Scope) -> DbResult<u64> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.acl, COUNT(*) FROM files f
                 JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen
                 WHERE f.peer = ?1 GROUP BY f.acl",
            )?;
            let mut rows = stmt.query([peer])?;
            let mut visible = 0u64;
            while let Some(r) = rows.next()? {
                if scope.lists(r.get(0)?) {
                    visible += r.get::<_, i64>(1)? as u64;
                }
            }
            Ok(visible)
        })
    }

    /// Store-wide counts of public files (a scan of the file index: callers cache it). Files
    /// with a scope are left out: these counts are for everyone, and must not tell a stranger
    /// that private files exist.
    pub fn counts(&self) -> DbResult<Counts> {
        self.read(|conn| {
            let peers: i64 = conn.query_row("SELECT COUNT(*) FROM peers", [], |r| r.get(0))?;
            let (entries, contents): (i64, i64) = conn.query_row(
                "SELECT COUNT(*), COUNT(DISTINCT f.content) FROM files f
                 JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen WHERE f.acl = 0",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(Counts {
                peers: peers as u64,
                entries: entries as u64,
                contents: contents as u64,
            })
        })
    }

    /// Runs SQLite's own consistency check; `Ok("ok")` when healthy.
    pub fn integrity_check(&self) -> DbResult<String> {
        self.read(|conn| Ok(conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?))
    }
}
