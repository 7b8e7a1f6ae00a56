//! The indexer thread, sole owner of the `IndexWriter`: replays `index_ops` from SQLite and
//! commits on a timer with the last applied sequence as the commit payload.

use super::*;

/// Settings of the indexer thread.
#[derive(Debug, Clone, Copy)]
pub struct IndexerConfig {
    /// Longest time a change waits for its commit.
    pub commit_interval: Duration,
    /// Writer memory budget, bytes.
    pub writer_memory_bytes: usize,
}

/// Handle to the running indexer thread.
pub struct Indexer {
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    nudge: std::sync::mpsc::SyncSender<()>,
    progress: IndexProgress,
}

/// What the indexer last committed, readable from any thread (metrics).
#[derive(Clone, Default)]
pub struct IndexProgress {
    committed_seq: Arc<std::sync::atomic::AtomicI64>,
    committed_at_ms: Arc<std::sync::atomic::AtomicI64>,
}

impl IndexProgress {
    fn committed(&self, seq: i64) {
        self.committed_seq.store(seq, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.committed_at_ms.store(now, Ordering::Relaxed);
    }

    /// The sequence of the last index operation committed.
    pub fn committed_seq(&self) -> i64 {
        self.committed_seq.load(Ordering::Relaxed)
    }

    /// Unix time of the last commit (or of the start), seconds.
    pub fn committed_at_secs(&self) -> f64 {
        self.committed_at_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

impl Indexer {
    /// Starts the indexer thread, resuming after `watermark` (rebuilding everything when `None`).
    pub fn start(
        index: SearchIndex,
        db: Arc<Db>,
        watermark: Option<i64>,
        config: IndexerConfig,
        wishes: Option<crate::wishes::WishWatch>,
    ) -> Result<Indexer, IndexError> {
        // tantivy wants at least 15 MB per writer thread: fewer threads on a small budget.
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(2);
        let threads = (config.writer_memory_bytes / 15_000_000).clamp(1, cores);
        let writer: IndexWriter = index
            .index
            .writer_with_num_threads(threads, config.writer_memory_bytes)?;
        let mut policy = LogMergePolicy::default();
        // Lists change by delete + add: merge away deleted documents instead of keeping them forever.
        policy.set_del_docs_ratio_before_merge(0.3);
        writer.set_merge_policy(Box::new(policy));
        let applied = match watermark {
            Some(seq) => seq,
            None => {
                let peers = db.queue_full_reindex()?;
                info!(peers, "building the search index from the database");
                writer.delete_all_documents()?;
                0
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (nudge, nudged) = std::sync::mpsc::sync_channel(1);
        let progress = IndexProgress::default();
        progress.committed(applied);
        let worker = Worker {
            progress: progress.clone(),
            index,
            db,
            writer,
            applied,
            committed: applied,
            dirty: watermark.is_none(),
            config,
            wishes,
        };
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("indexer".into())
            .spawn(move || worker.run(nudged, stop_flag))?;
        Ok(Indexer {
            thread: Some(thread),
            stop,
            nudge,
            progress,
        })
    }

    /// What the indexer last committed.
    pub fn progress(&self) -> IndexProgress {
        self.progress.clone()
    }

    /// A cheap handle that wakes the indexer after a write.
    pub fn nudger(&self) -> Nudger {
        Nudger(self.nudge.clone())
    }

    /// Applies what is pending, commits, and stops the thread.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.nudge.try_send(());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            error!("indexer thread panicked");
        }
    }
}

/// Wakes the indexer; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Nudger(std::sync::mpsc::SyncSender<()>);

impl Nudger {
    /// Tells the indexer there are new operations.
    pub fn nudge(&self) {
        let _ = self.0.try_send(());
    }
}

struct Worker {
    index: SearchIndex,
    db: Arc<Db>,
    writer: IndexWriter,
    applied: i64,
    committed: i64,
    dirty: bool,
    config: IndexerConfig,
    /// Standing searches, matched against each batch before it is committed.
    wishes: Option<crate::wishes::WishWatch>,
    progress: IndexProgress,
}

const OPS_PER_READ: i64 = 1000;

impl Worker {
    fn run(mut self, nudged: Receiver<()>, stop: Arc<AtomicBool>) {
        let mut last_commit = Instant::now();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            if let Err(e) = self.drain(&stop) {
                error!(error = %e, "indexing failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            let due = last_commit.elapsed() >= self.config.commit_interval;
            if self.dirty && (due || stopping) {
                self.verify_wishes();
                match self.commit() {
                    Ok(()) => last_commit = Instant::now(),
                    Err(e) => error!(error = %e, "index commit failed; retrying"),
                }
            }
            if stopping {
                break;
            }
            let wait = if self.dirty {
                self.config
                    .commit_interval
                    .saturating_sub(last_commit.elapsed())
            } else {
                Duration::from_secs(5)
            };
            match nudged.recv_timeout(wait) {
                Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop.store(true, Ordering::SeqCst),
            }
        }
        if let Err(e) = self.writer.wait_merging_threads() {
            warn!(error = %e, "index merge did not finish cleanly");
        }
        info!(seq = self.committed, "indexer stopped");
    }

    fn drain(&mut self, stop: &AtomicBool) -> Result<(), IndexError> {
        loop {
            let ops = self.db.index_ops_after(self.applied, OPS_PER_READ)?;
            let Some(&(last, _)) = ops.last() else {
                return Ok(());
            };
            for (_, op) in &ops {
                if self.apply(*op)? {
                    self.verify_wishes();
                }
            }
            self.applied = last;
            self.dirty = true;
            // The whole backlog is applied before the next commit: a crash mid-rebuild replays it
            // from the last watermark (correct, but repeats the work).
            if stop.load(Ordering::SeqCst) || (ops.len() as i64) < OPS_PER_READ {
                return Ok(());
            }
        }
    }

    /// Applies one operation; true when enough entries wait for wish verification to do it now.
    fn apply(&mut self, op: IndexOp) -> Result<bool, IndexError> {
        let fields = self.index.fields;
        let mut verify_now = false;
        match op {
            IndexOp::ReindexPeer { peer } => {
                self.writer
                    .delete_term(Term::from_field_u64(fields.peer, peer.as_u64()));
                let (index, writer, wishes) = (&self.index, &self.writer, &mut self.wishes);
                let mut added = 0u64;
                self.db
                    .for_each_active_file(peer, |doc| -> Result<(), IndexError> {
                        added += 1;
                        writer.add_document(index.document(&doc))?;
                        if let Some(wishes) = wishes.as_mut() {
                            verify_now |= wishes.offer(&doc);
                        }
                        Ok(())
                    })?;
                debug!(peer = peer.0, added, "reindexed peer");
            }
            IndexOp::FileChanged { file, .. } => {
                self.writer
                    .delete_term(Term::from_field_u64(fields.file, file.as_u64()));
                if let Some(doc) = self.db.active_file(file)? {
                    self.writer.add_document(self.index.document(&doc))?;
                    if let Some(wishes) = self.wishes.as_mut() {
                        verify_now = wishes.offer(&doc);
                    }
                }
            }
        }
        Ok(verify_now)
    }

    /// Matches the entries held for wishes; a failure is logged (their matches are then not
    /// reported, the entries are indexed all the same).
    fn verify_wishes(&mut self) {
        if let Some(wishes) = self.wishes.as_mut()
            && let Err(e) = wishes.verify(&self.db)
        {
            warn!(error = %e, "matching new entries against wishes failed");
        }
    }

    fn commit(&mut self) -> Result<(), IndexError> {
        let payload = serde_json::to_string(&Watermark {
            schema: SCHEMA_VERSION,
            seq: self.applied,
        })
        .unwrap_or_default();
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.index.reader.reload()?;
        self.committed = self.applied;
        self.dirty = false;
        self.progress.committed(self.committed);
        // Only now is it safe to forget the log: the commit above is durable.
        self.db.trim_index_ops(self.committed)?;
        debug!(
            seq = self.committed,
            docs = self.index.num_docs(),
            "index committed"
        );
        Ok(())
    }
}
