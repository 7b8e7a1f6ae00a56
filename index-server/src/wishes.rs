//! Standing searches evaluated at ingest (PROTOCOL §10.5), the way Lucene's Monitor does it:
//!
//! 1. **Presearch.** Each wish is filed under one key: the longest term of its required
//!    clauses, cut to the indexed prefix length (a word matching as a prefix or whole shares its
//!    first characters with every term it matches). The indexer looks up the prefixes of each
//!    new entry's terms and keeps the entry only if some wish is filed under one of them, so with
//!    no wish the cost is nothing and with many it is a few hash lookups per term.
//! 2. **Verify.** Before each index commit, the kept entries go into a small in-memory index
//!    built like the real one, and each candidate wish runs there as the search it is, with the
//!    wisher's scope: a wish and a search cannot disagree about what matches.
//! 3. **Report once.** Matches are recorded per wish and content with the `wish_hit` event in
//!    one transaction, before the commit: a crash replays the batch and reports nothing twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use peerdex_shared::FileKind;
use peerdex_shared::social::EventEnvelope;
use tracing::{debug, warn};

use crate::db::{AccountRef, ContentRef, Db, FileDoc, PeerRef, WishMatch, WishRow};
use crate::index::{OnlineFilter, SearchIndex, SearchSpec};
use crate::query::{self, Clause, QueryLimits, QueryPlan};
use crate::text::{self, MAX_INDEXED_PREFIX_CHARS};

/// A wish ready to run.
#[derive(Debug, Clone)]
pub struct StandingWish {
    /// As stored.
    pub row: WishRow,
    /// Its parsed query.
    pub plan: QueryPlan,
}

impl StandingWish {
    /// Parses a stored wish (`None` if its query no longer parses under `limits`).
    pub fn new(row: WishRow, limits: &QueryLimits) -> Option<StandingWish> {
        let plan = query::parse(&row.query, limits).ok()?;
        Some(StandingWish { row, plan })
    }

    /// The search it stands for, for a viewer of `scope`, asking for `want` groups, with the
    /// search's own cap on prefix expansions (`search.max_prefix_expansions`).
    pub fn spec(
        &self,
        scope: Arc<crate::scope::Scope>,
        want: usize,
        max_prefix_expansions: u32,
    ) -> SearchSpec {
        SearchSpec {
            plan: self.plan.clone(),
            ext: self.row.ext.clone(),
            kind: self.row.kind.as_deref().and_then(FileKind::parse),
            min_size: self.row.min_size,
            max_size: self.row.max_size,
            media: Default::default(),
            max_prefix_expansions,
            want,
            scope,
        }
    }
}

/// `term` cut to the prefix length the presearch looks up.
fn cut(term: &str) -> String {
    term.chars().take(MAX_INDEXED_PREFIX_CHARS).collect()
}

/// The key a wish is filed under: of its required terms (cut to the indexed prefix length), the
/// one the fewest entries hold now by `docs_with` (the rarest, so the presearch lets few entries
/// through), the longest among equals (with an empty index: the longest, Elasticsearch's rule).
/// `None` when it has no required term (it is then tried on every batch).
pub fn key_of(plan: &QueryPlan, docs_with: &dyn Fn(&str) -> u64) -> Option<String> {
    plan.required
        .iter()
        .flat_map(Clause::terms)
        .map(cut)
        .map(|key| (docs_with(&key), std::cmp::Reverse(key.chars().count()), key))
        .min()
        .map(|(_, _, key)| key)
}

#[derive(Default)]
struct Book {
    wishes: HashMap<i64, Arc<StandingWish>>,
    by_key: HashMap<String, Vec<i64>>,
    keyless: Vec<i64>,
}

/// Every standing wish, filed for presearch; shared by the HTTP handlers (which add and remove)
/// and the indexer (which matches).
#[derive(Default)]
pub struct WishBook {
    book: RwLock<Book>,
}

impl WishBook {
    /// The wishes stored in `db`, keyed by their rarest term in `index`.
    pub fn load(
        db: &Db,
        limits: &QueryLimits,
        index: &SearchIndex,
    ) -> crate::db::DbResult<Arc<WishBook>> {
        let book = Arc::new(WishBook::default());
        for row in db.all_wishes()? {
            let id = row.id;
            match StandingWish::new(row, limits) {
                Some(wish) => book.insert(wish, &|key| index.docs_with_prefix(key)),
                None => warn!(wish = id, "a stored wish no longer parses; it is left out"),
            }
        }
        Ok(book)
    }

    /// Files a wish under its rarest term by `docs_with` (see [`key_of`]).
    pub fn insert(&self, wish: StandingWish, docs_with: &dyn Fn(&str) -> u64) {
        let key = key_of(&wish.plan, docs_with);
        let mut book = self.book.write().unwrap_or_else(|p| p.into_inner());
        let id = wish.row.id;
        match key {
            Some(key) => book.by_key.entry(key).or_default().push(id),
            None => book.keyless.push(id),
        }
        book.wishes.insert(id, Arc::new(wish));
    }

    /// Removes a wish.
    pub fn remove(&self, id: i64) {
        let mut book = self.book.write().unwrap_or_else(|p| p.into_inner());
        if book.wishes.remove(&id).is_some() {
            book.keyless.retain(|w| *w != id);
            book.by_key.retain(|_, ids| {
                ids.retain(|w| *w != id);
                !ids.is_empty()
            });
        }
    }

    /// How many wishes are filed.
    pub fn filed(&self) -> usize {
        self.book
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .wishes
            .len()
    }

    /// Adds to `out` the wishes whose key is a prefix of one of `text`'s terms; returns whether
    /// the text may match any wish at all (keyless wishes count).
    pub fn presearch(&self, text: &str, out: &mut HashSet<i64>) -> bool {
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        if book.wishes.is_empty() {
            return false;
        }
        let mut found = !book.keyless.is_empty();
        for term in text::tokenize(text) {
            for (chars, (end, c)) in term.char_indices().enumerate() {
                if chars >= MAX_INDEXED_PREFIX_CHARS {
                    break;
                }
                if let Some(ids) = book.by_key.get(&term[..end + c.len_utf8()]) {
                    out.extend(ids.iter().copied());
                    found = true;
                }
            }
        }
        found
    }

    /// The wishes among `ids`, plus every keyless one.
    fn candidates(&self, ids: &HashSet<i64>) -> Vec<Arc<StandingWish>> {
        let book = self.book.read().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .chain(book.keyless.iter())
            .filter_map(|id| book.wishes.get(id).map(|w| (*id, w.clone())))
            .collect::<HashMap<i64, _>>()
            .into_values()
            .collect()
    }
}

/// Everyone counts as online in a batch: its entries were just listed by their peers.
struct Listed;

impl OnlineFilter for Listed {
    fn contains(&self, _peer: PeerRef) -> bool {
        true
    }
}

/// Entries worth verifying (some wish's key matched), and which wishes to verify.
pub struct WishWatch {
    /// The wishes.
    pub book: Arc<WishBook>,
    pending: Vec<FileDoc>,
    candidates: HashSet<i64>,
    sink: tokio::sync::mpsc::UnboundedSender<(AccountRef, EventEnvelope)>,
    max_prefix_expansions: u32,
}

/// Entries held for verification before a batch is verified early (bounds the memory index).
pub const MAX_PENDING: usize = 20_000;

impl WishWatch {
    /// Watches new entries for `book`'s wishes, searching as the search route does
    /// (`max_prefix_expansions`); new matches' events go to `sink`.
    pub fn new(
        book: Arc<WishBook>,
        sink: tokio::sync::mpsc::UnboundedSender<(AccountRef, EventEnvelope)>,
        max_prefix_expansions: u32,
    ) -> WishWatch {
        WishWatch {
            book,
            pending: Vec::new(),
            candidates: HashSet::new(),
            sink,
            max_prefix_expansions,
        }
    }

    /// Offers a new or changed entry; true when enough are held to verify now.
    pub fn offer(&mut self, doc: &FileDoc) -> bool {
        let tagged = self.book.presearch(&doc.tag_text(), &mut self.candidates);
        if self.book.presearch(&doc.path, &mut self.candidates) || tagged {
            self.pending.push(doc.clone());
        }
        self.pending.len() >= MAX_PENDING
    }

    /// Verifies the held entries against the candidate wishes, records new matches and sends
    /// their events. Call before the index commit that makes the entries searchable.
    pub fn verify(&mut self, db: &Db) -> Result<usize, crate::index::IndexError> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let docs = std::mem::take(&mut self.pending);
        let candidates = std::mem::take(&mut self.candidates);
        let wishes = self.book.candidates(&candidates);
        if wishes.is_empty() {
            return Ok(0);
        }
        match self.match_batch(db, &docs, &wishes) {
            Ok(reported) => Ok(reported),
            Err(e) => {
                // Kept for the next try (the entries are indexed all the same): a failure of
                // the store must not lose a match.
                if self.pending.len() + docs.len() <= 10 * MAX_PENDING {
                    self.pending.extend(docs);
                    self.candidates.extend(candidates);
                }
                Err(e)
            }
        }
    }

    fn match_batch(
        &self,
        db: &Db,
        docs: &[FileDoc],
        wishes: &[Arc<StandingWish>],
    ) -> Result<usize, crate::index::IndexError> {
        let started = std::time::Instant::now();
        let ram = SearchIndex::in_ram(docs)?;
        let mut by_content: HashMap<ContentRef, Vec<&FileDoc>> = HashMap::new();
        for doc in docs {
            by_content.entry(doc.content).or_default().push(doc);
        }
        let owners: HashMap<PeerRef, AccountRef> = db.linked_devices()?.into_iter().collect();
        let mut matches = Vec::new();
        let mut scopes: HashMap<AccountRef, Option<Arc<crate::scope::Scope>>> = HashMap::new();
        for wish in wishes {
            let account = wish.row.account;
            let scope = match scopes.get(&account) {
                Some(scope) => scope.clone(),
                None => {
                    let row = db.account(account)?;
                    let scope = match row.filter(|a| !a.disabled) {
                        Some(row) => Some(db.scope_of(Some(&row))?),
                        None => None,
                    };
                    scopes.insert(account, scope.clone());
                    scope
                }
            };
            let Some(scope) = scope else { continue };
            let found = ram.search(
                &wish.spec(scope.clone(), docs.len(), self.max_prefix_expansions),
                Arc::new(Listed),
            )?;
            for group in found.groups {
                // A copy the wisher may see, not on one of the wisher's own devices.
                let copy = by_content.get(&group.content).and_then(|copies| {
                    copies
                        .iter()
                        .find(|d| scope.lists(d.acl) && owners.get(&d.peer) != Some(&account))
                });
                if let Some(doc) = copy {
                    matches.push(WishMatch {
                        wish: wish.row.id,
                        doc: (*doc).clone(),
                    });
                }
            }
        }
        let events = db.record_wish_matches(&matches)?;
        let reported = events.len();
        for event in events {
            // The server is shutting down if nobody listens: the events wait in SQLite.
            let _ = self.sink.send(event);
        }
        debug!(
            entries = docs.len(),
            wishes = wishes.len(),
            reported,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "wishes verified"
        );
        Ok(reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(q: &str) -> QueryPlan {
        query::parse(
            q,
            &QueryLimits {
                max_query_bytes: 512,
                max_terms: 16,
            },
        )
        .unwrap_or_default()
    }

    #[test]
    fn the_key_is_the_rarest_required_term_then_the_longest_cut_to_the_prefix_length() {
        let none = |_: &str| 0;
        assert_eq!(
            key_of(&plan("xyzzy flac -live"), &none).as_deref(),
            Some("xyzzy")
        );
        assert_eq!(
            key_of(&plan("\"ok computer\" radiohead"), &none).as_deref(),
            Some("radiohead")
        );
        assert_eq!(
            key_of(&plan("extraordinarily"), &none).as_deref(),
            Some("extraordin")
        );
        // "track" is in every entry, the number in a few: the number is the key.
        let counts = |key: &str| if key == "track" { 1_000_000 } else { 3 };
        assert_eq!(
            key_of(&plan("track 4242"), &counts).as_deref(),
            Some("4242")
        );
        assert_eq!(key_of(&plan("-live"), &none), None);
    }

    #[test]
    fn presearch_finds_wishes_by_a_prefix_of_any_term_and_nothing_else() {
        let book = WishBook::default();
        for (id, q) in [(1, "xyzzy flac"), (2, "beat"), (3, "extraordinarily long")] {
            book.insert(
                StandingWish {
                    row: WishRow {
                        id,
                        account: AccountRef(1),
                        query: q.into(),
                        ext: None,
                        kind: None,
                        min_size: None,
                        max_size: None,
                        auto_download: false,
                        created_at: 0,
                    },
                    plan: plan(q),
                },
                &|_| 0,
            );
        }
        let mut out = HashSet::new();
        assert!(book.presearch("Music/The Beatles/Xyzzy - Song.flac", &mut out));
        assert_eq!(out, HashSet::from([1, 2]));
        out.clear();
        assert!(book.presearch("extraordinarily.txt", &mut out));
        assert_eq!(out, HashSet::from([3]));
        out.clear();
        assert!(!book.presearch("nothing to see.txt", &mut out));
        book.remove(2);
        out.clear();
        assert!(!book.presearch("beatles.mp3", &mut out));
        assert_eq!(book.filed(), 2);
    }
}
