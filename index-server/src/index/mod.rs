//! The tantivy index: a derived, rebuildable search structure over the active file lists.
//!
//! One document per active file entry, with no stored fields (SQLite holds the data): the words of
//! its folder path and name, the words of its text tags (all together, and per tag for `artist:`
//! queries), and the prefixes of both (so a prefix search is one posting list); as fast fields
//! its extension, kind and size and its media numbers (bitrate, duration, year, lossless) for
//! filters, the owning peer and its ACL (who may see it), and the content id used to group
//! results by hash. Filters are checked on fast fields while collecting, so the word query
//! alone drives the search and keeps its top-k pruning.
//!
//! The indexer thread is the only owner of the `IndexWriter`. It replays SQLite's `index_ops` log
//! and commits on a timer with the last applied sequence number as the commit payload, so after a
//! crash it resumes exactly where the last commit stopped: the index never holds a document that
//! SQLite does not, and nothing acknowledged is missed. Every operation re-reads the current state
//! from SQLite, so replaying one twice is harmless.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerdex_shared::FileKind;
use peerdex_shared::kind::extension_of;
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::columnar::{Column, StrColumn};
use tantivy::directory::MmapDirectory;
use tantivy::index::SegmentId;
use tantivy::indexer::LogMergePolicy;
use tantivy::query::{
    BooleanQuery, EnableScoring, Occur, PhrasePrefixQuery, PhraseQuery, Query, TermQuery, Weight,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    COLLECT_BLOCK_BUFFER_LEN, DocId, DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Score,
    SegmentReader, TERMINATED, TantivyDocument, Term,
};
use tracing::{debug, error, info, warn};

use crate::db::{AclRef, ContentRef, Db, DbError, FileDoc, IndexOp, PeerRef};
use crate::query::{Clause, QueryPlan};
use crate::scope::Scope;
use crate::text::{PREFIX_TOKENIZER_NAME, PeerdexTokenizer, TOKENIZER_NAME, prefix_is_indexed};

mod collect;
mod indexer;
mod queries;

pub(crate) use collect::MAX_ACLS;
pub use collect::MediaFilters;
use collect::*;
pub use indexer::{IndexProgress, Indexer, IndexerConfig, Nudger};

/// Bump when the schema or tokenizer changes: an index of another version is rebuilt from SQLite.
const SCHEMA_VERSION: u32 = 6;

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
    acl: Field,
    text: Field,
    prefix: Field,
    /// Every text tag's words.
    tags: Field,
    artist: Field,
    album: Field,
    title: Field,
    genre: Field,
    bitrate: Field,
    duration: Field,
    year: Field,
    lossless: Field,
}

impl Fields {
    /// The index field of one tag.
    fn of_tag(&self, tag: crate::query::TagField) -> Field {
        use crate::query::TagField;
        match tag {
            TagField::Artist => self.artist,
            TagField::Album => self.album,
            TagField::Title => self.title,
            TagField::Genre => self.genre,
        }
    }
}

fn build_schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER_NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    // Basic postings: a prefix stands for several words, so its frequency means little.
    let prefix_options = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(PREFIX_TOKENIZER_NAME)
            .set_index_option(IndexRecordOption::Basic),
    );
    let fields = Fields {
        file: b.add_u64_field("file", INDEXED),
        peer: b.add_u64_field("peer", INDEXED | FAST),
        content: b.add_u64_field("content", FAST),
        size: b.add_u64_field("size", FAST),
        ext: b.add_text_field("ext", TextOptions::default().set_fast("raw")),
        kind: b.add_u64_field("kind", FAST),
        acl: b.add_u64_field("acl", FAST),
        text: b.add_text_field("text", text_options.clone()),
        prefix: b.add_text_field("prefix", prefix_options),
        // No length norms: a word's score here depends on how rare it is, not on how many tags
        // the file has (see `lone_word_query`).
        tags: b.add_text_field(
            "tags",
            TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(TOKENIZER_NAME)
                    .set_index_option(IndexRecordOption::WithFreqs)
                    .set_fieldnorms(false),
            ),
        ),
        artist: b.add_text_field("artist", text_options.clone()),
        album: b.add_text_field("album", text_options.clone()),
        title: b.add_text_field("title", text_options.clone()),
        genre: b.add_text_field("genre", text_options),
        bitrate: b.add_u64_field("bitrate", FAST),
        duration: b.add_u64_field("duration", FAST),
        year: b.add_u64_field("year", FAST),
        lossless: b.add_u64_field("lossless", FAST),
    };
    (b.build(), fields)
}

/// The open index: shared by the indexer (writes) and searches (reads).
#[derive(Clone)]
pub struct SearchIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    columns: Arc<Mutex<HashMap<SegmentId, Arc<SegmentColumns>>>>,
}

/// The fast-field columns of one segment. Opening a column reads every block header of it (tens
/// of thousands in a large segment), so they are opened once per segment, not once per search.
struct SegmentColumns {
    peer: Column<u64>,
    acl: Column<u64>,
    content: Column<u64>,
    size: Column<u64>,
    kind: Column<u64>,
    /// The extension's dictionary and per-document term ordinals (absent in an empty segment).
    ext: Option<StrColumn>,
    /// Media numbers (absent for documents without tags).
    media: MediaColumns,
    /// Maps of the documents each recent set of listed ACLs lets through, newest last.
    listed: Mutex<Vec<(crate::scope::AclBits, ListedMap)>>,
}

/// Listed-document maps kept per segment: one per distinct set of visible ACLs in recent use.
const LISTED_MAPS_PER_SEGMENT: usize = 32;

impl SegmentColumns {
    /// The columns that say who may see a document, for `scope`. A segment holding non-public
    /// files gets the map of the documents the scope lists, built on first use (one pass over
    /// the ACL column) and kept: each search then tests a bit per document.
    fn owner(&self, scope: &Scope) -> OwnerColumns {
        if self.acl.max_value() == 0 {
            return OwnerColumns::new(self.peer.clone(), None);
        }
        let mut maps = self.listed.lock().unwrap_or_else(|p| p.into_inner());
        let map = match maps
            .iter()
            .position(|(bits, _)| bits.same_as(scope.listed()))
        {
            Some(i) => {
                let entry = maps.remove(i);
                let map = entry.1.clone();
                maps.push(entry);
                map
            }
            None => {
                let map = listed_map(&self.acl, scope);
                if maps.len() >= LISTED_MAPS_PER_SEGMENT {
                    maps.remove(0);
                }
                maps.push((scope.listed().clone(), map.clone()));
                map
            }
        };
        OwnerColumns::new(self.peer.clone(), Some(map))
    }

    fn open(segment: &SegmentReader) -> tantivy::Result<SegmentColumns> {
        let fast = segment.fast_fields();
        Ok(SegmentColumns {
            peer: fast.u64("peer")?,
            acl: fast.u64("acl")?,
            content: fast.u64("content")?,
            size: fast.u64("size")?,
            kind: fast.u64("kind")?,
            ext: fast.str("ext")?,
            media: MediaColumns {
                bitrate: fast.u64("bitrate")?,
                duration: fast.u64("duration")?,
                year: fast.u64("year")?,
                lossless: fast.u64("lossless")?,
            },
            listed: Mutex::default(),
        })
    }
}

/// Set of online peer ids, snapshotted per search.
pub trait OnlineFilter: Send + Sync + 'static {
    /// Whether the peer is online.
    fn contains(&self, peer: PeerRef) -> bool;
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
    /// Filters on media tags.
    pub media: MediaFilters,
    /// Most terms a prefix may expand to.
    pub max_prefix_expansions: u32,
    /// Groups the caller needs (offset + limit): the search keeps only the best this many.
    pub want: usize,
    /// Who is asking: only files it may see are matched and counted.
    pub scope: Arc<Scope>,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// The best groups, at most [`SearchSpec::want`], best first.
    pub groups: Vec<Group>,
    /// Distinct contents matching (online peers only): the exact count when `total_exact`, else
    /// a lower bound (the search stopped counting once it knew the best groups).
    pub total: u64,
    /// Whether `total` counts every match.
    pub total_exact: bool,
}

/// One group of matching documents: a content and how well it matched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    /// Content id.
    pub content: ContentRef,
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
        Ok((SearchIndex::with_index(index, fields)?, watermark))
    }

    /// An open index over `index`: the tokenizers registered, a reader reloaded by hand.
    fn with_index(index: Index, fields: Fields) -> Result<SearchIndex, IndexError> {
        index.tokenizers().register(
            TOKENIZER_NAME,
            TextAnalyzer::from(PeerdexTokenizer::default()),
        );
        index.tokenizers().register(
            PREFIX_TOKENIZER_NAME,
            TextAnalyzer::from(PeerdexTokenizer::prefixes()),
        );
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(SearchIndex {
            index,
            reader,
            fields,
            columns: Arc::default(),
        })
    }

    /// How many documents hold a term starting with `prefix` (as the prefix field indexes it;
    /// the exact term where prefixes are not indexed). Cheap: one dictionary lookup per
    /// segment. Picks the rarest key of a wish.
    pub fn docs_with_prefix(&self, prefix: &str) -> u64 {
        let searcher = self.reader.searcher();
        let field = if prefix_is_indexed(prefix) {
            self.fields.prefix
        } else {
            self.fields.text
        };
        searcher
            .doc_freq(&Term::from_field_text(field, prefix))
            .unwrap_or(0)
    }

    /// A small index in memory holding exactly `docs`, built and searched like the real one:
    /// standing searches (wishes) run on it against a batch of new entries, so a wish and a
    /// search can never disagree about what matches.
    pub fn in_ram(docs: &[FileDoc]) -> Result<SearchIndex, IndexError> {
        let (schema, fields) = build_schema();
        let ram = SearchIndex::with_index(Index::create_in_ram(schema), fields)?;
        let mut writer: IndexWriter = ram.index.writer_with_num_threads(1, 15_000_000)?;
        for doc in docs {
            writer.add_document(ram.document(doc))?;
        }
        writer.commit()?;
        ram.reader.reload()?;
        Ok(ram)
    }

    /// An index in `dir` (emptied first) holding exactly `docs`, committed, for benchmarks
    /// that compare index layouts without a database.
    #[doc(hidden)]
    pub fn build_from(
        dir: &Path,
        docs: impl IntoIterator<Item = FileDoc>,
    ) -> Result<SearchIndex, IndexError> {
        let _ = std::fs::remove_dir_all(dir);
        let (index, _) = SearchIndex::open(dir)?;
        let mut writer: IndexWriter = index.index.writer_with_num_threads(2, 512 << 20)?;
        for doc in docs {
            writer.add_document(index.document(&doc))?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        index.reader.reload()?;
        Ok(index)
    }

    /// Runs a search (blocking: call from a blocking thread). Returns the best `spec.want`
    /// contents of online peers, best first: by score, then by number of matching entries.
    ///
    /// Whole words are looked for first, with top-k pruning (documents that cannot reach the
    /// best `want` groups are skipped, not scored). Only when they do not fill the page are words
    /// also matched as prefixes, and those matches rank after the whole-word ones.
    pub fn search(
        &self,
        spec: &SearchSpec,
        online: Arc<dyn OnlineFilter>,
    ) -> Result<SearchOutcome, IndexError> {
        let searcher = self.reader.searcher();
        let columns = self.columns_of(&searcher)?;
        let want = spec.want.max(1);
        let collect = |allow_prefix| {
            let query = self.build_query(&searcher, spec, allow_prefix);
            self.collect(&searcher, &columns, &*query, spec, &online)
        };
        let whole = collect(false)?;
        let any_prefix = spec
            .plan
            .required
            .iter()
            .any(|c| matches!(c, Clause::Word { prefix: true, .. }));
        let (mut groups, total, total_exact) = if !any_prefix || whole.groups.len() >= want {
            let total = whole.groups.len();
            // Unless no word could match as a prefix, there may be prefix-only matches uncounted.
            let total_exact = !whole.pruned && !any_prefix;
            (sorted(whole.groups), total, total_exact)
        } else {
            let wide = collect(true)?;
            let total = wide.groups.len().max(whole.groups.len());
            let prefix_only: GroupMap = wide
                .groups
                .into_iter()
                .filter(|(content, _)| !whole.groups.contains_key(content))
                .collect();
            let mut groups = sorted(whole.groups);
            groups.extend(sorted(prefix_only));
            (groups, total, !wide.pruned)
        };
        groups.truncate(want);
        let (mut total, mut total_exact) = (total as u64, total_exact);
        if !total_exact {
            // The best groups are known but not how many there are: count on, within a budget.
            let (counted, complete) = self.count_groups(&searcher, &columns, spec, &online)?;
            total = total.max(counted);
            total_exact = complete;
        }
        Ok(SearchOutcome {
            groups,
            total,
            total_exact,
        })
    }

    /// Distinct contents (of online peers, passing the filters) among the documents matching
    /// `spec`, words also as prefixes, looking at [`COUNT_BUDGET_DOCS`] documents at most.
    /// Returns the count and whether every matching document was looked at (the count is exact);
    /// otherwise it is a lower bound.
    fn count_groups(
        &self,
        searcher: &tantivy::Searcher,
        columns: &[Arc<SegmentColumns>],
        spec: &SearchSpec,
        online: &Arc<dyn OnlineFilter>,
    ) -> Result<(u64, bool), IndexError> {
        let query = self.build_query(searcher, spec, true);
        let weight = query.weight(EnableScoring::disabled_from_searcher(searcher))?;
        let filters = Filters::of(spec);
        let budget = COUNT_BUDGET_DOCS;
        let mut seen: HashSet<u64, BuildHasherDefault<IdHasher>> =
            HashSet::with_capacity_and_hasher(budget, BuildHasherDefault::default());
        let mut looked = 0;
        let mut complete = true;
        let mut docs = [0 as DocId; COLLECT_BLOCK_BUFFER_LEN];
        let mut shown = [false; COLLECT_BLOCK_BUFFER_LEN];
        let mut contents = [None; COLLECT_BLOCK_BUFFER_LEN];
        'segments: for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            let opened;
            let columns = match columns.get(ord) {
                Some(columns) => &**columns,
                None => {
                    opened = SegmentColumns::open(segment)?;
                    &opened
                }
            };
            let filters = filters.for_segment(columns)?;
            if filters.impossible {
                continue;
            }
            let alive = segment.alive_bitset();
            let owner = columns.owner(&spec.scope);
            let mut scorer = weight.scorer(segment, 1.0)?;
            while scorer.doc() != TERMINATED {
                if looked >= budget {
                    // Matches are left (in this segment, so perhaps in others too).
                    complete = false;
                    break 'segments;
                }
                // A block of documents at a time, their columns read together.
                let n = scorer.fill_buffer(&mut docs);
                if n == 0 {
                    break;
                }
                looked += n;
                owner.visible_block(&docs[..n], &**online, &mut shown[..n]);
                columns.content.first_vals(&docs[..n], &mut contents[..n]);
                for i in 0..n {
                    if shown[i]
                        && let Some(content) = contents[i]
                        && !alive.is_some_and(|a| a.is_deleted(docs[i]))
                        && filters.pass(docs[i])
                    {
                        seen.insert(content);
                    }
                }
            }
        }
        Ok((seen.len() as u64, complete))
    }

    /// The columns of each segment of `searcher`, by segment ordinal: cached ones, plus those of
    /// segments new since the last search. Segments merged away are forgotten.
    fn columns_of(
        &self,
        searcher: &tantivy::Searcher,
    ) -> Result<Vec<Arc<SegmentColumns>>, IndexError> {
        let mut cache = self.columns.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(searcher.segment_readers().len());
        for segment in searcher.segment_readers() {
            let columns = match cache.get(&segment.segment_id()) {
                Some(columns) => columns.clone(),
                None => {
                    let columns = Arc::new(SegmentColumns::open(segment)?);
                    cache.insert(segment.segment_id(), columns.clone());
                    columns
                }
            };
            out.push(columns);
        }
        if cache.len() > out.len() {
            let live: Vec<SegmentId> = searcher
                .segment_readers()
                .iter()
                .map(|s| s.segment_id())
                .collect();
            cache.retain(|id, _| live.contains(id));
        }
        Ok(out)
    }

    fn collect(
        &self,
        searcher: &tantivy::Searcher,
        columns: &[Arc<SegmentColumns>],
        query: &dyn Query,
        spec: &SearchSpec,
        online: &Arc<dyn OnlineFilter>,
    ) -> Result<TopGroups, IndexError> {
        let want = spec.want.max(1);
        let collector = GroupByContent {
            columns: columns.to_vec(),
            online: online.clone(),
            scope: spec.scope.clone(),
            filters: Filters::of(spec),
            want,
            keep: (want * 2).max(MIN_KEEP),
            floor: Mutex::new(Score::MIN),
        };
        Ok(searcher.search(query, &collector)?)
    }

    /// The engine's floor for `spec`, for benchmarks: tantivy's own best `want` documents for
    /// the whole-word query (block-max pruning, no grouping, filters or online check). Returns
    /// how many it found.
    #[doc(hidden)]
    pub fn top_documents_only(&self, spec: &SearchSpec) -> Result<usize, IndexError> {
        let searcher = self.reader.searcher();
        let query = self.build_query(&searcher, spec, false);
        let top = TopDocs::with_limit(spec.want.max(1)).order_by_score();
        Ok(searcher.search(&*query, &top)?.len())
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
        d.add_u64(self.fields.file, doc.id.as_u64());
        d.add_u64(self.fields.peer, doc.peer.as_u64());
        d.add_u64(self.fields.content, doc.content.as_u64());
        d.add_u64(self.fields.size, doc.size);
        d.add_text(self.fields.ext, &ext);
        d.add_u64(self.fields.kind, kind_code(kind));
        d.add_u64(self.fields.acl, doc.acl.as_u64());
        d.add_text(self.fields.text, &doc.path);
        d.add_text(self.fields.prefix, &doc.path);
        let tags = &doc.tags;
        if !tags.is_empty() {
            let text = doc.tag_text();
            if !text.is_empty() {
                // Tag words are words of the file: found by the same term queries as paths.
                d.add_text(self.fields.text, &text);
                d.add_text(self.fields.tags, &text);
                d.add_text(self.fields.prefix, &text);
            }
            for (field, value) in [
                (self.fields.artist, &tags.artist),
                (self.fields.artist, &tags.album_artist),
                (self.fields.album, &tags.album),
                (self.fields.title, &tags.title),
                (self.fields.genre, &tags.genre),
            ] {
                if let Some(value) = value {
                    d.add_text(field, value);
                }
            }
            for (field, value) in [
                (self.fields.bitrate, tags.bitrate_kbps),
                (self.fields.duration, tags.duration_secs),
                (self.fields.year, tags.year),
                (self.fields.lossless, tags.lossless.map(u32::from)),
            ] {
                if let Some(value) = value {
                    d.add_u64(field, u64::from(value));
                }
            }
        }
        d
    }

    /// Whether any document holds `term` in its tags (one dictionary lookup per segment):
    /// without one, a word is looked for in paths alone, as one term query.
    fn in_any_tag(&self, searcher: &tantivy::Searcher, term: &str) -> bool {
        searcher
            .doc_freq(&Term::from_field_text(self.fields.tags, term))
            .is_ok_and(|n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::db::FileRef;
    use crate::query::{QueryLimits, parse};
    use crate::scope::AclBits;

    struct Everyone;
    impl OnlineFilter for Everyone {
        fn contains(&self, _peer: PeerRef) -> bool {
            true
        }
    }

    struct EvenPeers;
    impl OnlineFilter for EvenPeers {
        fn contains(&self, peer: PeerRef) -> bool {
            peer.0 % 2 == 0
        }
    }

    /// An on-disk index of `n` documents over three commits (several segments, some deletes).
    fn index_of(dir: &Path, n: i64) -> SearchIndex {
        let (index, _) = SearchIndex::open(dir).unwrap();
        let mut writer: IndexWriter = index.index.writer_with_num_threads(1, 15_000_000).unwrap();
        for id in 0..n {
            // Contents repeat (grouping), path lengths vary (scores differ), and one word in
            // seven is "love", one in three "lovely" (a prefix-only match for "love").
            let content = id % (n / 3).max(1);
            let words = ["night"; 12][..(id % 11 + 1) as usize].join(" ");
            let love = match id % 21 {
                0 => "love lovely",
                x if x % 7 == 0 => "love",
                x if x % 3 == 0 => "lovely",
                _ => "quiet",
            };
            let doc = FileDoc {
                id: FileRef(id),
                peer: PeerRef(id % 10),
                content: ContentRef(content),
                share: "s".into(),
                path: format!("{words} {love} {id}.mp3"),
                size: 1000 + id as u64,
                acl: AclRef::PUBLIC,
                tags: Default::default(),
            };
            writer.add_document(index.document(&doc)).unwrap();
            if id % (n / 3).max(1) == 0 {
                writer.commit().unwrap();
            }
        }
        // Deleted documents must not be found.
        writer.delete_term(Term::from_field_u64(index.fields.file, 7));
        writer.commit().unwrap();
        index.reader.reload().unwrap();
        index
    }

    fn spec(q: &str, want: usize) -> SearchSpec {
        SearchSpec {
            plan: parse(
                q,
                &QueryLimits {
                    max_query_bytes: 512,
                    max_terms: 16,
                },
            )
            .unwrap(),
            ext: None,
            kind: None,
            min_size: None,
            max_size: None,
            media: MediaFilters::default(),
            max_prefix_expansions: 256,
            want,
            scope: Arc::new(Scope::public_only()),
        }
    }

    #[test]
    fn scopes_hide_hits_and_totals_in_mixed_and_all_public_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = SearchIndex::open(dir.path()).unwrap();
        let mut writer: IndexWriter = index.index.writer_with_num_threads(1, 15_000_000).unwrap();
        // Segment 1 mixes public files with ACLs 7 and 8; segment 2 is all public (its ACL
        // column is never read). Peer 1 is offline, whatever the ACL.
        for (id, peer, acl) in [(1, 2, 0), (2, 2, 7), (3, 2, 8), (4, 1, 7), (5, 4, 1 << 23)] {
            let doc = FileDoc {
                id: FileRef(id),
                peer: PeerRef(peer),
                content: ContentRef(id),
                share: "s".into(),
                path: format!("secret plans {id}.pdf"),
                size: 10,
                acl: AclRef(acl),
                tags: Default::default(),
            };
            writer.add_document(index.document(&doc)).unwrap();
        }
        writer.commit().unwrap();
        let doc = FileDoc {
            id: FileRef(6),
            peer: PeerRef(2),
            content: ContentRef(6),
            share: "s".into(),
            path: "secret plans 6.pdf".into(),
            size: 10,
            acl: AclRef::PUBLIC,
            tags: Default::default(),
        };
        writer.add_document(index.document(&doc)).unwrap();
        writer.commit().unwrap();
        index.reader.reload().unwrap();
        let (mut download, mut listed) = (AclBits::default(), AclBits::default());
        download.insert(AclRef(7));
        listed.insert(AclRef(7));
        listed.insert(AclRef(1 << 23));
        let member = Arc::new(Scope::new(None, download, listed));
        let found = |scope: &Arc<Scope>, q: &str, want: usize| {
            let mut spec = spec(q, want);
            spec.scope = scope.clone();
            let out = index.search(&spec, Arc::new(EvenPeers)).unwrap();
            let mut ids: Vec<i64> = out.groups.iter().map(|g| g.content.0).collect();
            ids.sort();
            (ids, out.total)
        };
        let guest = Arc::new(Scope::public_only());
        assert_eq!(found(&guest, "secret", 20), (vec![1, 6], 2));
        assert_eq!(found(&member, "secret", 20), (vec![1, 2, 5, 6], 4));
        // A page of one: the total comes from the budgeted count, which checks scopes too.
        assert_eq!(found(&guest, "secret", 1).1, 2);
        assert_eq!(found(&member, "secret", 1).1, 4);
        // Prefix matches are filtered the same way.
        assert_eq!(found(&guest, "secr", 20), (vec![1, 6], 2));
    }

    #[test]
    fn tags_are_searched_ranked_and_filtered() {
        use peerdex_shared::api::MediaTags;
        let dir = tempfile::tempdir().unwrap();
        let (index, _) = SearchIndex::open(dir.path()).unwrap();
        let mut writer: IndexWriter = index.index.writer_with_num_threads(1, 15_000_000).unwrap();
        let tagged = |artist: &str, album: &str, kbps: u32, lossless: bool, year: u32| MediaTags {
            artist: Some(artist.into()),
            album: Some(album.into()),
            title: Some("Airbag".into()),
            bitrate_kbps: Some(kbps),
            duration_secs: Some(284),
            lossless: Some(lossless),
            year: Some(year),
            ..MediaTags::default()
        };
        let docs = [
            // Only the folder name says radiohead.
            (1, "radiohead stuff/notes.txt", MediaTags::default()),
            (
                2,
                "misc/track01.mp3",
                tagged("Radiohead", "OK Computer", 320, false, 1997),
            ),
            (
                3,
                "misc/track02.mp3",
                tagged("Radiohead", "OK Computer", 128, false, 1997),
            ),
            (
                4,
                "rips/01.flac",
                tagged("Motörhead", "Ace of Spades", 900, true, 1980),
            ),
        ];
        for (id, path, tags) in docs {
            let doc = FileDoc {
                id: FileRef(id),
                peer: PeerRef(2),
                content: ContentRef(id),
                share: "s".into(),
                path: path.into(),
                size: 10,
                acl: AclRef::PUBLIC,
                tags,
            };
            writer.add_document(index.document(&doc)).unwrap();
        }
        writer.commit().unwrap();
        index.reader.reload().unwrap();
        let ids = |spec: &SearchSpec| -> Vec<i64> {
            let out = index.search(spec, Arc::new(Everyone)).unwrap();
            out.groups.iter().map(|g| g.content.0).collect()
        };
        // Tag words are found, and rank above the same word in a folder name only.
        let found = ids(&spec("radiohead", 20));
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(found.last(), Some(&1), "{found:?}");
        // Folded like paths: accents and case.
        assert_eq!(ids(&spec("motorhead", 20)), [4]);
        assert_eq!(ids(&spec("artist:MOTORHEAD", 20)), [4]);
        let mut sorted = ids(&spec("album:\"ok computer\"", 20));
        sorted.sort();
        assert_eq!(sorted, [2, 3]);
        assert!(ids(&spec("artist:stuff", 20)).is_empty());
        let mut with = spec("radiohead", 20);
        with.media.min_bitrate = Some(256);
        assert_eq!(ids(&with), [2]);
        let mut with = spec("airbag", 20);
        with.media.lossless = Some(true);
        assert_eq!(ids(&with), [4]);
        let mut sorted = ids(&spec("airbag year:1997", 20));
        sorted.sort();
        assert_eq!(sorted, [2, 3]);
        let mut with = spec("airbag", 20);
        with.media.max_duration = Some(100);
        assert!(ids(&with).is_empty());
        // Prefixes of tag words match too.
        assert_eq!(ids(&spec("motorh", 20)), [4]);
    }

    /// Every group, scored by the plain collector: the reference the pruned search must match.
    fn exhaustive(index: &SearchIndex, spec: &SearchSpec, allow_prefix: bool) -> Vec<Group> {
        let searcher = index.reader.searcher();
        // No cached columns: each segment opens its own (the path a cache miss takes).
        let collector = GroupByContent {
            columns: Vec::new(),
            online: Arc::new(Everyone),
            scope: spec.scope.clone(),
            filters: Filters::of(spec),
            want: usize::MAX / 4,
            keep: usize::MAX / 2,
            floor: Mutex::new(Score::MIN),
        };
        let query = index.build_query(&searcher, spec, allow_prefix);
        let weight = query
            .weight(tantivy::query::EnableScoring::enabled_from_searcher(
                &searcher,
            ))
            .unwrap();
        let mut fruits = Vec::new();
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            let mut segment = collector.for_segment(ord as u32, reader).unwrap();
            weight
                .for_each(reader, &mut |doc, score| {
                    if !reader.alive_bitset().is_some_and(|a| a.is_deleted(doc)) {
                        segment.collect(doc, score);
                    }
                })
                .unwrap();
            fruits.push(segment.harvest());
        }
        sorted(collector.merge_fruits(fruits).unwrap().groups)
    }

    #[test]
    fn pruned_search_finds_the_same_best_groups_as_scoring_everything() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_of(dir.path(), 3_000);
        for want in [1, 5, 20, 300] {
            let spec = spec("\"night love\"", want);
            let found = index.search(&spec, Arc::new(Everyone)).unwrap();
            let reference = exhaustive(&index, &spec, false);
            assert_eq!(found.groups.len(), want.min(reference.len()));
            // Same contents in the same order, up to ties at equal scores.
            for (got, expected) in found.groups.iter().zip(&reference) {
                assert_eq!(got.score, expected.score, "want {want}");
            }
            let best: Vec<i64> = found.groups.iter().map(|g| g.content.0).collect();
            assert!(!best.contains(&7), "a deleted document was found");
        }
        // Single term (block-max WAND on one posting list), with many groups dropped.
        let spec_night = spec("night", 10);
        let found = index.search(&spec_night, Arc::new(Everyone)).unwrap();
        let reference = exhaustive(&index, &spec_night, false);
        let scores = |g: &[Group]| g.iter().map(|g| g.score).collect::<Vec<_>>();
        assert_eq!(scores(&found.groups), scores(&reference[..10]));
        // Groups were dropped, and the count went on within its budget: a real lower bound.
        let everything = exhaustive(&index, &spec_night, true).len() as u64;
        assert!(reference.len() > 10 && everything >= reference.len() as u64);
        assert!(!found.total_exact);
        assert!(
            found.total > 40 && found.total <= everything,
            "{}",
            found.total
        );
    }

    #[test]
    fn counts_under_the_budget_are_exact_though_groups_were_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_of(dir.path(), COUNT_BUDGET_DOCS as i64 / 2);
        let spec = spec("night", 10);
        let found = index.search(&spec, Arc::new(Everyone)).unwrap();
        let everything = exhaustive(&index, &spec, true).len() as u64;
        assert!(
            everything > 2 * MIN_KEEP as u64,
            "groups must have been dropped"
        );
        assert_eq!((found.total, found.total_exact), (everything, true));
    }

    #[test]
    fn counts_past_the_budget_are_real_lower_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * COUNT_BUDGET_DOCS as i64;
        let index = index_of(dir.path(), n);
        // "mp3" is in every document: far more matches than the count may look at.
        let spec = spec("mp3", 20);
        let found = index.search(&spec, Arc::new(Everyone)).unwrap();
        let everything = exhaustive(&index, &spec, true).len() as u64;
        assert!(!found.total_exact);
        assert!(
            found.total > 20 * 4 && found.total <= everything,
            "{} of {everything}",
            found.total
        );
    }

    #[test]
    fn small_results_are_counted_exactly_and_prefixes_come_after_whole_words() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_of(dir.path(), 300);
        // "love" fills no page of 100: prefix matches ("lovely") are added after whole words.
        let found = index
            .search(&spec("love", 100), Arc::new(Everyone))
            .unwrap();
        let whole = exhaustive(&index, &spec("love", 100), false);
        let wide = exhaustive(&index, &spec("love", 100), true);
        assert!(wide.len() > whole.len());
        assert!(found.total >= wide.len().min(100) as u64);
        // Fewer than twice the page: nothing was dropped, so the count is exact.
        assert!(found.total_exact);
        assert_eq!(found.total as usize, wide.len());
        let first: Vec<i64> = found.groups[..whole.len()]
            .iter()
            .map(|g| g.content.0)
            .collect();
        let mut expected: Vec<i64> = whole.iter().map(|g| g.content.0).collect();
        let mut sorted_first = first.clone();
        sorted_first.sort();
        expected.sort();
        assert_eq!(sorted_first, expected, "whole-word matches rank first");
        // A word that cannot be a prefix ("quiet" in a phrase) is counted exactly.
        let quiet = index
            .search(&spec("\"quiet\"", 1000), Arc::new(Everyone))
            .unwrap();
        assert!(quiet.total_exact);
        assert_eq!(
            quiet.total as usize,
            exhaustive(&index, &spec("\"quiet\"", 1000), false).len()
        );
    }

    #[test]
    fn filters_are_checked_while_collecting() {
        let dir = tempfile::tempdir().unwrap();
        // Contents are `id % 100`; sizes are `1000 + id`; every name ends in `.mp3`.
        let index = index_of(dir.path(), 300);
        let everyone: Arc<dyn OnlineFilter> = Arc::new(Everyone);
        let count = |edit: &dyn Fn(&mut SearchSpec)| {
            let mut s = spec("night", 300);
            edit(&mut s);
            let found = index.search(&s, everyone.clone()).unwrap();
            assert!(found.total_exact);
            let mut contents: Vec<i64> = found.groups.iter().map(|g| g.content.0).collect();
            contents.sort_unstable();
            contents
        };
        assert_eq!(count(&|_| {}).len(), 100);
        assert_eq!(
            count(&|s| s.min_size = Some(1250)),
            (50..100).collect::<Vec<_>>()
        );
        assert_eq!(
            count(&|s| {
                s.min_size = Some(1010);
                s.max_size = Some(1019);
            }),
            (10..20).collect::<Vec<_>>()
        );
        assert_eq!(count(&|s| s.ext = Some("mp3".into())).len(), 100);
        assert!(count(&|s| s.ext = Some("flac".into())).is_empty());
        assert_eq!(count(&|s| s.kind = Some(FileKind::Audio)).len(), 100);
        assert!(count(&|s| s.kind = Some(FileKind::Video)).is_empty());
        // Prefix matches are filtered too ("nig" is found through the prefix field).
        let mut prefixed = spec("nig", 300);
        prefixed.min_size = Some(1290);
        let found = index.search(&prefixed, everyone.clone()).unwrap();
        assert_eq!(found.groups.len(), 10);
    }

    #[test]
    fn cached_columns_follow_new_and_merged_segments() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_of(dir.path(), 300);
        // Every group of "night" (100 contents, fewer than twice the page): none is dropped, so
        // every match is counted.
        let before = index
            .search(&spec("night", 100), Arc::new(Everyone))
            .unwrap();
        assert_eq!(before.groups.len(), 100);
        let segments = || index.reader.searcher().segment_readers().len();
        assert_eq!(index.columns.lock().unwrap().len(), segments());

        // A new segment: its documents' contents and peers come from its own columns.
        let mut writer: IndexWriter = index.index.writer_with_num_threads(1, 15_000_000).unwrap();
        let doc = FileDoc {
            id: FileRef(1000),
            peer: PeerRef(4),
            content: ContentRef(777),
            share: "s".into(),
            path: "sunrise.flac".into(),
            size: 5,
            acl: AclRef::PUBLIC,
            tags: Default::default(),
        };
        writer.add_document(index.document(&doc)).unwrap();
        writer.commit().unwrap();
        index.reader.reload().unwrap();
        let found = index
            .search(&spec("sunrise", 5), Arc::new(Everyone))
            .unwrap();
        assert_eq!(found.groups.len(), 1);
        assert_eq!(found.groups[0].content, ContentRef(777));

        // Merged into one segment: the old segments' columns are forgotten.
        let ids = index.index.searchable_segment_ids().unwrap();
        writer.merge(&ids).wait().unwrap();
        writer.commit().unwrap();
        writer.wait_merging_threads().unwrap();
        index.reader.reload().unwrap();
        assert_eq!(segments(), 1);
        let after = index
            .search(&spec("night", 100), Arc::new(Everyone))
            .unwrap();
        // Scores move with the corpus statistics; the groups and their matches do not.
        let groups = |o: &SearchOutcome| -> Vec<(i64, u32)> {
            let mut groups: Vec<(i64, u32)> =
                o.groups.iter().map(|g| (g.content.0, g.matches)).collect();
            groups.sort();
            groups
        };
        assert_eq!(groups(&after), groups(&before));
        assert_eq!(index.columns.lock().unwrap().len(), 1);
        let found = index
            .search(&spec("sunrise", 5), Arc::new(Everyone))
            .unwrap();
        assert_eq!(found.groups[0].content, ContentRef(777));
    }

    #[test]
    fn offline_peers_are_left_out_before_pruning() {
        let dir = tempfile::tempdir().unwrap();
        let index = index_of(dir.path(), 3_000);
        let found = index
            .search(&spec("night", 20), Arc::new(EvenPeers))
            .unwrap();
        assert_eq!(found.groups.len(), 20);
        // Contents are id % 1000 and peers id % 10: an online peer's content is even.
        assert!(found.groups.iter().all(|g| g.content.0 % 2 == 0));
    }

    #[test]
    fn top_groups_keep_the_best_and_break_ties_down_to_want() {
        let mut top = TopGroups {
            groups: GroupMap::new(),
            want: 3,
            keep: 8,
            threshold: Score::MIN,
            pruned: false,
        };
        for content in 0..100u64 {
            top.offer(content, (content % 10) as f32);
        }
        assert!(top.pruned);
        let mut kept: Vec<(u64, f32)> = top.groups.iter().map(|(c, g)| (*c, g.0)).collect();
        kept.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert!(kept.len() <= top.keep);
        assert!(kept.iter().take(3).all(|(_, s)| *s == 9.0), "{kept:?}");
        // Below the threshold nothing enters.
        let before = top.groups.len();
        top.offer(1_000, top.threshold);
        assert_eq!(top.groups.len(), before);
    }
}
