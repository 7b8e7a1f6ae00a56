//! The tantivy index: a derived, rebuildable search structure over the active file lists.
//!
//! One document per active file entry, with no stored fields (SQLite holds the data): the words of
//! its folder path and name, its extension, kind and size for filters, and as fast fields the
//! owning peer and the content id used to group results by hash.
//!
//! The indexer thread is the only owner of the `IndexWriter`. It replays SQLite's `index_ops` log
//! and commits on a timer with the last applied sequence number as the commit payload, so after a
//! crash it resumes exactly where the last commit stopped: the index never holds a document that
//! SQLite does not, and nothing acknowledged is missed. Every operation re-reads the current state
//! from SQLite, so replaying one twice is harmless.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use peerdex_shared::FileKind;
use peerdex_shared::kind::extension_of;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::LogMergePolicy;
use tantivy::query::{
    BooleanQuery, Occur, PhrasePrefixQuery, PhraseQuery, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader, TantivyDocument,
    Term,
};
use tracing::{debug, error, info, warn};

use crate::db::{Db, DbError, FileDoc, IndexOp};
use crate::query::{Clause, QueryPlan};
use crate::text::{PeerdexTokenizer, TOKENIZER_NAME};

/// Bump when the schema or tokenizer changes: an index of another version is rebuilt from SQLite.
const SCHEMA_VERSION: u32 = 1;

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// tantivy failed.
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The store failed while the indexer read from it.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The index directory could not be used.
    #[error("index directory: {0}")]
    Io(#[from] std::io::Error),
}

/// The commit payload: how far into `index_ops` this commit reaches.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Watermark {
    schema: u32,
    seq: i64,
}

#[derive(Clone, Copy)]
struct Fields {
    file: Field,
    peer: Field,
    content: Field,
    size: Field,
    ext: Field,
    kind: Field,
    text: Field,
}

fn build_schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        file: b.add_u64_field("file", INDEXED),
        peer: b.add_u64_field("peer", INDEXED | FAST),
        content: b.add_u64_field("content", FAST),
        size: b.add_u64_field("size", INDEXED | FAST),
        ext: b.add_text_field("ext", STRING),
        kind: b.add_text_field("kind", STRING),
        text: b.add_text_field("text", text_options),
    };
    (b.build(), fields)
}

/// The open index: shared by the indexer (writes) and searches (reads).
#[derive(Clone)]
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

/// Set of online peer ids, snapshotted per search.
pub trait OnlineFilter: Send + Sync + 'static {
    /// Whether the peer with this id is online.
    fn contains(&self, peer: u64) -> bool;
}

/// A search, already parsed and bounded.
#[derive(Debug, Clone)]
pub struct SearchSpec {
    /// Words, phrases and exclusions.
    pub plan: QueryPlan,
    /// Lowercase extension filter.
    pub ext: Option<String>,
    /// Kind filter.
    pub kind: Option<FileKind>,
    /// Smallest size, bytes.
    pub min_size: Option<u64>,
    /// Largest size, bytes.
    pub max_size: Option<u64>,
    /// Most terms a prefix may expand to.
    pub max_prefix_expansions: u32,
}

/// One group of matching documents: a content and how well it matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    /// Content id.
    pub content: i64,
    /// Best score among its matching entries.
    pub score: f32,
    /// Matching entries of online peers.
    pub matches: u32,
}

impl SearchIndex {
    /// Opens the index in `dir`, creating it if missing and recreating it if it was built by
    /// another schema version. Returns the index and the watermark of its last commit (`None`
    /// when it is new and must be rebuilt from SQLite).
    pub fn open(dir: &Path) -> Result<(SearchIndex, Option<i64>), IndexError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = build_schema();
        let opened = MmapDirectory::open(dir)
            .map_err(tantivy::TantivyError::from)
            .and_then(|d| Index::open_or_create(d, schema.clone()));
        let index = match opened {
            Ok(index) => index,
            Err(e) => {
                warn!(error = %e, dir = %dir.display(), "index unusable, rebuilding it from the database");
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                Index::create_in_dir(dir, schema)?
            }
        };
        let watermark = index
            .load_metas()?
            .payload
            .and_then(|p| serde_json::from_str::<Watermark>(&p).ok());
        let (index, watermark) = match watermark {
            Some(w) if w.schema == SCHEMA_VERSION => (index, Some(w.seq)),
            Some(w) => {
                info!(
                    old = w.schema,
                    new = SCHEMA_VERSION,
                    "index schema changed, rebuilding from the database"
                );
                drop(index);
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                (Index::create_in_dir(dir, build_schema().0)?, None)
            }
            None => (index, None),
        };
        index.tokenizers().register(
            TOKENIZER_NAME,
            TextAnalyzer::from(PeerdexTokenizer::default()),
        );
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok((
            SearchIndex {
                index,
                reader,
                fields,
            },
            watermark,
        ))
    }

    fn word_query(&self, term: &str, prefix: bool, max_expansions: u32) -> Box<dyn Query> {
        let t = Term::from_field_text(self.fields.text, term);
        let exact = TermQuery::new(t.clone(), IndexRecordOption::WithFreqs);
        if !prefix {
            return Box::new(exact);
        }
        let mut starts_with = PhrasePrefixQuery::new(vec![t]);
        starts_with.set_max_expansions(max_expansions);
        // Exact matches score by BM25; words that merely start with the term still match.
        Box::new(BooleanQuery::new(vec![
            (Occur::Should, Box::new(exact) as Box<dyn Query>),
            (Occur::Should, Box::new(starts_with)),
        ]))
    }

    fn clause_query(
        &self,
        clause: &Clause,
        allow_prefix: bool,
        max_expansions: u32,
    ) -> Box<dyn Query> {
        match clause {
            Clause::Word { term, prefix } => {
                self.word_query(term, *prefix && allow_prefix, max_expansions)
            }
            Clause::Phrase(terms) => Box::new(PhraseQuery::new(
                terms
                    .iter()
                    .map(|t| Term::from_field_text(self.fields.text, t))
                    .collect(),
            )),
        }
    }

    fn build_query(&self, spec: &SearchSpec) -> BooleanQuery {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for clause in &spec.plan.required {
            clauses.push((
                Occur::Must,
                self.clause_query(clause, true, spec.max_prefix_expansions),
            ));
        }
        // Exclusions are exact: `-live` should not also hide "liverpool".
        for clause in &spec.plan.excluded {
            clauses.push((Occur::MustNot, self.clause_query(clause, false, 0)));
        }
        if let Some(ext) = &spec.ext {
            let term = Term::from_field_text(self.fields.ext, ext);
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        if let Some(kind) = spec.kind {
            let term = Term::from_field_text(self.fields.kind, kind.as_str());
            clauses.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
        if spec.min_size.is_some() || spec.max_size.is_some() {
            let bound = |v: Option<u64>| match v {
                Some(v) => std::ops::Bound::Included(Term::from_field_u64(self.fields.size, v)),
                None => std::ops::Bound::Unbounded,
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(bound(spec.min_size), bound(spec.max_size))),
            ));
        }
        BooleanQuery::new(clauses)
    }

    /// Runs a search (blocking: call from a blocking thread). Returns every matching content of
    /// online peers, best first: by score, then by number of matching entries.
    pub fn search(
        &self,
        spec: &SearchSpec,
        online: Arc<dyn OnlineFilter>,
    ) -> Result<Vec<Group>, IndexError> {
        let query = self.build_query(spec);
        let searcher = self.reader.searcher();
        let collector = GroupByContent { online };
        let groups = searcher.search(&query, &collector)?;
        let mut groups: Vec<Group> = groups
            .into_iter()
            .map(|(content, (score, matches))| Group {
                content: content as i64,
                score,
                matches,
            })
            .collect();
        groups.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.matches.cmp(&a.matches))
                .then(a.content.cmp(&b.content))
        });
        Ok(groups)
    }

    /// Documents in the last committed snapshot (for tests and stats).
    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    fn document(&self, doc: &FileDoc) -> TantivyDocument {
        let name = doc.path.rsplit('/').next().unwrap_or(&doc.path);
        let ext = extension_of(name);
        let kind = FileKind::from_extension(&ext);
        let mut d = TantivyDocument::new();
        d.add_u64(self.fields.file, doc.id as u64);
        d.add_u64(self.fields.peer, doc.peer as u64);
        d.add_u64(self.fields.content, doc.content as u64);
        d.add_u64(self.fields.size, doc.size);
        d.add_text(self.fields.ext, &ext);
        d.add_text(self.fields.kind, kind.as_str());
        d.add_text(self.fields.text, &doc.path);
        d
    }
}

type GroupMap = HashMap<u64, (Score, u32)>;

struct GroupByContent {
    online: Arc<dyn OnlineFilter>,
}

struct GroupSegment {
    online: Arc<dyn OnlineFilter>,
    peer: Column<u64>,
    content: Column<u64>,
    groups: GroupMap,
}

impl Collector for GroupByContent {
    type Fruit = GroupMap;
    type Child = GroupSegment;

    fn for_segment(&self, _ord: u32, segment: &SegmentReader) -> tantivy::Result<GroupSegment> {
        let fast = segment.fast_fields();
        Ok(GroupSegment {
            online: self.online.clone(),
            peer: fast.u64("peer")?,
            content: fast.u64("content")?,
            groups: GroupMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, fruits: Vec<GroupMap>) -> tantivy::Result<GroupMap> {
        let mut merged = GroupMap::new();
        for fruit in fruits {
            for (content, (score, n)) in fruit {
                let e = merged.entry(content).or_insert((score, 0));
                e.0 = e.0.max(score);
                e.1 += n;
            }
        }
        Ok(merged)
    }
}

impl SegmentCollector for GroupSegment {
    type Fruit = GroupMap;

    fn collect(&mut self, doc: DocId, score: Score) {
        let (Some(peer), Some(content)) = (self.peer.first(doc), self.content.first(doc)) else {
            return;
        };
        if !self.online.contains(peer) {
            return;
        }
        let e = self.groups.entry(content).or_insert((score, 0));
        e.0 = e.0.max(score);
        e.1 += 1;
    }

    fn harvest(self) -> GroupMap {
        self.groups
    }
}

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
}

impl Indexer {
    /// Starts the indexer thread, resuming after `watermark` (rebuilding everything when `None`).
    pub fn start(
        index: SearchIndex,
        db: Arc<Db>,
        watermark: Option<i64>,
        config: IndexerConfig,
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
        let worker = Worker {
            index,
            db,
            writer,
            applied,
            committed: applied,
            dirty: watermark.is_none(),
            config,
        };
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("indexer".into())
            .spawn(move || worker.run(nudged, stop_flag))?;
        Ok(Indexer {
            thread: Some(thread),
            stop,
            nudge,
        })
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
                self.apply(*op)?;
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

    fn apply(&mut self, op: IndexOp) -> Result<(), IndexError> {
        let fields = self.index.fields;
        match op {
            IndexOp::ReindexPeer { peer } => {
                self.writer
                    .delete_term(Term::from_field_u64(fields.peer, peer as u64));
                let (index, writer) = (&self.index, &self.writer);
                let mut added = 0u64;
                self.db.for_each_active_file(peer, |doc| {
                    added += 1;
                    writer
                        .add_document(index.document(&doc))
                        .map(|_| ())
                        .map_err(|e| DbError::Corrupt(format!("indexing failed: {e}")))
                })?;
                debug!(peer, added, "reindexed peer");
            }
            IndexOp::FileChanged { file, .. } => {
                self.writer
                    .delete_term(Term::from_field_u64(fields.file, file as u64));
                if let Some(doc) = self.db.active_file(file)? {
                    self.writer.add_document(self.index.document(&doc))?;
                }
            }
        }
        Ok(())
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
