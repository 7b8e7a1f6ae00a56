//! Lists: full uploads in generations, deltas, dropped and expired lists, cleanup of what they leave.

use super::*;

impl Db {
    /// Starts a full upload: returns the staging generation its entries go to.
    pub fn begin_full_upload(&self, peer: PeerRef) -> DbResult<Generation> {
        self.write(|tx| {
            let generation: Generation = tx
                .query_row(
                    "UPDATE peers SET next_gen = next_gen + 1 WHERE id = ?1 RETURNING next_gen - 1",
                    [peer],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or(DbError::UnknownPeer)?;
            tx.execute(
                "INSERT INTO staging_gens (peer, gen) VALUES (?1, ?2)",
                params![peer, generation],
            )?;
            Ok(generation)
        })
    }

    /// Writes a batch of validated entries (with their 1-based line numbers) to a staging generation.
    pub fn insert_staged(
        &self,
        peer: PeerRef,
        generation: Generation,
        batch: &[(u64, ListEntry)],
    ) -> DbResult<()> {
        let _turn = self
            .bulk
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        self.write(|tx| {
            for (line, entry) in batch {
                insert_file(tx, peer, generation, entry).map_err(|e| match e {
                    e if is_unique_violation(&e) => DbError::DuplicatePath {
                        line: *line,
                        share: entry.share.clone(),
                        path: entry.path.clone(),
                    },
                    e => DbError::from(e),
                })?;
            }
            Ok(())
        })?;
        if batch.iter().any(|(_, e)| !e.visibility.is_public()) {
            // New ACLs may have been interned: viewers' cached scopes must learn of them.
            self.acls_changed();
        }
        Ok(())
    }

    /// Makes a staging generation the peer's list, in one transaction.
    pub fn commit_full_upload(
        &self,
        peer: PeerRef,
        generation: Generation,
        version: u64,
        entries: u64,
    ) -> DbResult<()> {
        self.write(|tx| {
            let was_staging = tx.execute(
                "DELETE FROM staging_gens WHERE peer = ?1 AND gen = ?2",
                params![peer, generation],
            )? == 1;
            if !was_staging {
                return Err(DbError::Superseded);
            }
            let old: Generation =
                tx.query_row("SELECT active_gen FROM peers WHERE id = ?1", [peer], |r| {
                    r.get(0)
                })?;
            if old > generation {
                // A later upload committed first; this one is already out of date.
                mark_stale(tx, peer, generation)?;
                return Err(DbError::Superseded);
            }
            super::folders::rebuild_folders(tx, peer, generation)?;
            tx.execute(
                "UPDATE peers SET active_gen = ?2, list_version = ?3, entries = ?4 WHERE id = ?1",
                params![peer, generation, version as i64, entries as i64],
            )?;
            if old > Generation(0) {
                mark_stale(tx, peer, old)?;
            }
            push_op(tx, IndexOp::ReindexPeer { peer })?;
            Ok(())
        })?;
        self.holders.forget_all_contents();
        Ok(())
    }

    /// Abandons a staging generation; its rows are deleted later.
    pub fn abort_full_upload(&self, peer: PeerRef, generation: Generation) -> DbResult<()> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM staging_gens WHERE peer = ?1 AND gen = ?2",
                params![peer, generation],
            )?;
            mark_stale(tx, peer, generation)?;
            Ok(())
        })
    }

    /// Applies a delta atomically: all operations or none. Returns the new entry count.
    pub fn apply_delta(
        &self,
        peer: PeerRef,
        base: u64,
        version: u64,
        ops: &[(u64, DeltaOp)],
        max_entries: u64,
    ) -> DbResult<u64> {
        let mut touched = Vec::with_capacity(ops.len());
        let mut folders = std::collections::BTreeSet::new();
        let entries = self.write(|tx| {
            let (server, generation, mut entries): (Option<i64>, Generation, i64) = tx
                .query_row(
                    "SELECT list_version, active_gen, entries FROM peers WHERE id = ?1",
                    [peer],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?
                .ok_or(DbError::UnknownPeer)?;
            let server = server.map(|v| v as u64);
            if server != Some(base) {
                return Err(DbError::VersionMismatch { base, server });
            }
            for (line, op) in ops {
                let conflict = |share: &str, path: &str, reason| DbError::DeltaConflict {
                    line: *line,
                    share: share.to_string(),
                    path: path.to_string(),
                    reason,
                };
                let (share, path) = match op {
                    DeltaOp::Add(e) | DeltaOp::Change(e) => (&e.share, &e.path),
                    DeltaOp::Remove { share, path } => (share, path),
                };
                folders.insert((share.clone(), super::folders::parent_dir(path).to_string()));
                let file = match op {
                    DeltaOp::Add(entry) => {
                        entries += 1;
                        match insert_file(tx, peer, generation, entry) {
                            Ok((id, content)) => {
                                touched.push(content);
                                id
                            }
                            Err(e) if is_unique_violation(&e) => {
                                return Err(conflict(&entry.share, &entry.path, "adds a path the server already has"));
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    DeltaOp::Change(entry) => {
                        let old: Option<ContentRef> = tx
                            .prepare_cached(
                                "SELECT content FROM files WHERE peer = ?1 AND gen = ?2 AND share = ?3 AND path = ?4",
                            )?
                            .query_row(params![peer, generation, entry.share, entry.path], |r| r.get(0))
                            .optional()?;
                        touched.extend(old);
                        let content = upsert_content(tx, &entry.hash, entry.size)?;
                        touched.push(content);
                        let acl = acl_of(tx, peer, entry)?;
                        tx.prepare_cached(
                            "UPDATE files SET size = ?5, mtime = ?6, content = ?7, tags = ?8, acl = ?9
                             WHERE peer = ?1 AND gen = ?2 AND share = ?3 AND path = ?4 RETURNING id",
                        )?
                        .query_row(
                            params![peer, generation, entry.share, entry.path, entry.size as i64,
                                    entry.mtime, content, entry.tags.to_stored(), acl],
                            |r| r.get(0),
                        )
                        .optional()?
                        .ok_or_else(|| conflict(&entry.share, &entry.path, "changes a path the server does not have"))?
                    }
                    DeltaOp::Remove { share, path } => {
                        entries -= 1;
                        let (id, content): (FileRef, ContentRef) = tx.prepare_cached(
                            "DELETE FROM files WHERE peer = ?1 AND gen = ?2 AND share = ?3 AND path = ?4 RETURNING id, content",
                        )?
                        .query_row(params![peer, generation, share, path], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?
                        .ok_or_else(|| conflict(share, path, "removes a path the server does not have"))?;
                        touched.push(content);
                        id
                    }
                };
                push_op(tx, IndexOp::FileChanged { peer, file })?;
            }
            if entries as u64 > max_entries {
                return Err(DbError::TooManyEntries { entries: entries as u64, limit: max_entries });
            }
            super::folders::refresh_folders(tx, peer, generation, &folders)?;
            tx.execute(
                "UPDATE peers SET list_version = ?2, entries = ?3 WHERE id = ?1",
                params![peer, version as i64, entries],
            )?;
            Ok(entries as u64)
        })?;
        self.holders.forget_contents(&touched);
        if ops.iter().any(|(_, op)| matches!(op, DeltaOp::Add(e) | DeltaOp::Change(e) if !e.visibility.is_public())) {
            self.acls_changed();
        }
        Ok(entries)
    }

    /// Drops a peer's list entirely (the peer asked, or it was offline past retention).
    pub fn drop_list(&self, peer: PeerRef) -> DbResult<()> {
        self.write(|tx| drop_list_in(tx, peer))?;
        self.holders.forget_all_contents();
        Ok(())
    }

    /// Drops the lists of peers not seen since `cutoff` (Unix seconds). Returns how many.
    pub fn expire_lists(&self, cutoff: i64) -> DbResult<usize> {
        self.write(|tx| {
            let peers: Vec<PeerRef> = tx
                .prepare(
                    "SELECT id FROM peers WHERE list_version IS NOT NULL AND abs(last_seen) < ?1",
                )?
                .query_map([cutoff], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for &peer in &peers {
                drop_list_in(tx, peer)?;
            }
            Ok(peers.len())
        })
        .inspect(|&dropped| {
            if dropped > 0 {
                self.holders.forget_all_contents();
            }
        })
    }

    /// Deletes up to `limit` rows of one abandoned or replaced generation. Returns the rows
    /// deleted, at least 1 when any work was done (even if only the generation's marker was
    /// removed); 0 means there is nothing left to clean.
    pub fn delete_stale_batch(&self, limit: i64) -> DbResult<usize> {
        self.write(|tx| {
            let Some((peer, generation)): Option<(i64, i64)> = tx
                .query_row("SELECT peer, gen FROM stale_gens LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
            else {
                return Ok(0);
            };
            let deleted = tx.execute(
                "DELETE FROM files WHERE id IN (SELECT id FROM files WHERE peer = ?1 AND gen = ?2 LIMIT ?3)",
                params![peer, generation, limit],
            )?;
            if (deleted as i64) < limit {
                tx.execute("DELETE FROM folders WHERE peer = ?1 AND gen = ?2", params![peer, generation])?;
                tx.execute("DELETE FROM stale_gens WHERE peer = ?1 AND gen = ?2", params![peer, generation])?;
            }
            Ok(deleted.max(1))
        })
    }

    /// Deletes contents no longer referenced by any file row, in batches. Returns rows deleted.
    pub fn delete_orphan_contents(&self, limit: i64) -> DbResult<usize> {
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM contents WHERE id IN (SELECT c.id FROM contents c
                 WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.content = c.id) LIMIT ?1)",
                [limit],
            )?)
        })
    }
}

fn drop_list_in(tx: &Connection, peer: PeerRef) -> DbResult<()> {
    let generation: Generation = tx
        .query_row("SELECT active_gen FROM peers WHERE id = ?1", [peer], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or(DbError::UnknownPeer)?;
    if generation > Generation(0) {
        mark_stale(tx, peer, generation)?;
    }
    tx.execute(
        "UPDATE peers SET active_gen = 0, list_version = NULL, entries = 0 WHERE id = ?1",
        [peer],
    )?;
    push_op(tx, IndexOp::ReindexPeer { peer })?;
    Ok(())
}

/// Queues a generation's rows for deletion (by `Db::delete_stale_batch`, a little at a time).
fn mark_stale(tx: &Connection, peer: PeerRef, generation: Generation) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT OR IGNORE INTO stale_gens (peer, gen) VALUES (?1, ?2)")?
        .execute(params![peer, generation])?;
    Ok(())
}

fn upsert_content(tx: &Connection, hash: &FileHash, size: u64) -> rusqlite::Result<ContentRef> {
    tx.prepare_cached(
        "INSERT INTO contents (hash, size) VALUES (?1, ?2)
         ON CONFLICT (hash, size) DO UPDATE SET size = excluded.size RETURNING id",
    )?
    .query_row(params![hash.as_bytes(), size as i64], |r| r.get(0))
}

/// The ACL an entry is stored with: its visibility's, or nobody's if its content is taken down.
fn acl_of(tx: &Connection, peer: PeerRef, entry: &ListEntry) -> rusqlite::Result<AclRef> {
    if moderation::is_taken_down(tx, &entry.hash)? {
        return moderation::takedown_acl(tx);
    }
    accounts::acl_for(tx, peer, &entry.visibility)
}

/// Inserts an entry; returns its file id and content id.
fn insert_file(
    tx: &Connection,
    peer: PeerRef,
    generation: Generation,
    entry: &ListEntry,
) -> rusqlite::Result<(FileRef, ContentRef)> {
    let content = upsert_content(tx, &entry.hash, entry.size)?;
    let acl = acl_of(tx, peer, entry)?;
    let file = tx
        .prepare_cached(
            "INSERT INTO files (peer, gen, share, path, size, mtime, content, tags, acl)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
        )?
        .query_row(
            params![
                peer,
                generation,
                entry.share,
                entry.path,
                entry.size as i64,
                entry.mtime,
                content,
                entry.tags.to_stored(),
                acl
            ],
            |r| r.get(0),
        )?;
    Ok((file, content))
}
