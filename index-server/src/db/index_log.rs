//! The index log: what the indexer replays into tantivy, and the rows it reads back.

use super::*;

impl Db {
    /// Index operations after `seq`, oldest first, at most `limit`.
    pub fn index_ops_after(&self, seq: i64, limit: i64) -> DbResult<Vec<(i64, IndexOp)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, op, peer, file FROM index_ops WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )?;
            let rows = stmt.query_map([seq, limit], |r| {
                let (seq, op, peer, file): (i64, i64, PeerRef, Option<FileRef>) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                Ok((
                    seq,
                    match (op, file) {
                        (OP_FILE_CHANGED, Some(file)) => IndexOp::FileChanged { peer, file },
                        _ => IndexOp::ReindexPeer { peer },
                    },
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// The sequence of the newest index operation logged (0 when none is left).
    pub fn last_index_op(&self) -> DbResult<i64> {
        self.read(|conn| {
            Ok(
                conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM index_ops", [], |r| {
                    r.get(0)
                })?,
            )
        })
    }

    /// Forgets index operations the index has committed.
    pub fn trim_index_ops(&self, through_seq: i64) -> DbResult<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM index_ops WHERE seq <= ?1", [through_seq])?;
            Ok(())
        })
    }

    /// Queues a full rebuild: one `ReindexPeer` for every peer with a list.
    pub fn queue_full_reindex(&self) -> DbResult<usize> {
        self.write(|tx| {
            Ok(tx.execute(
                "INSERT INTO index_ops (op, peer) SELECT ?1, id FROM peers WHERE list_version IS NOT NULL",
                [OP_REINDEX_PEER],
            )?)
        })
    }

    /// Streams the active list of a peer to `each` (for indexing), until `each` fails: its
    /// error is returned as it is, beside the store's own.
    pub fn for_each_active_file<E: From<DbError>>(
        &self,
        peer: PeerRef,
        mut each: impl FnMut(FileDoc) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut failed = None;
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.id, f.content, f.share, f.path, f.size, f.acl, f.tags FROM files f JOIN peers p
                 ON p.id = f.peer AND f.gen = p.active_gen WHERE f.peer = ?1",
            )?;
            let mut rows = stmt.query([peer])?;
            while let Some(r) = rows.next()? {
                let doc = FileDoc {
                    id: r.get(0)?,
                    peer,
                    content: r.get(1)?,
                    share: r.get(2)?,
                    path: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    acl: r.get(5)?,
                    tags: MediaTags::from_stored(r.get(6)?),
                };
                if let Err(e) = each(doc) {
                    failed = Some(e);
                    break;
                }
            }
            Ok(())
        })?;
        failed.map_or(Ok(()), Err)
    }

    /// A file row, if it still belongs to its peer's active list.
    pub fn active_file(&self, file: FileRef) -> DbResult<Option<FileDoc>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT f.id, f.peer, f.content, f.share, f.path, f.size, f.acl, f.tags FROM files f JOIN peers p
                     ON p.id = f.peer AND f.gen = p.active_gen WHERE f.id = ?1",
                )?
                .query_row([file], |r| {
                    Ok(FileDoc {
                        id: r.get(0)?,
                        peer: r.get(1)?,
                        content: r.get(2)?,
                        share: r.get(3)?,
                        path: r.get(4)?,
                        size: r.get::<_, i64>(5)? as u64,
                        acl: r.get(6)?,
                        tags: MediaTags::from_stored(r.get(7)?),
                    })
                })
                .optional()?)
        })
    }
}
