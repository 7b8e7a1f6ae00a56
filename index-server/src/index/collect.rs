//! Collecting results: the top-k collector that groups matches by content, checks filters
//! on fast fields and lets tantivy prune, and the budgeted count that runs after it.

use super::*;

/// Best score and number of matching entries per content id.
pub(super) type GroupMap = HashMap<u64, (Score, u32)>;

/// The number a kind is stored as in the `kind` fast field.
pub(super) fn kind_code(kind: FileKind) -> u64 {
    FileKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u64
}

/// ACL ids stay below this (`db::accounts::acl_for` refuses more): far more than any server has,
/// and a bound that keeps the ACL column narrow.
pub(crate) const MAX_ACLS: u64 = (1 << 24) - 1;

/// Which documents of a segment a scope lists, one bit each (built once per segment and
/// scope, see [`SegmentColumns::owner`]).
pub(super) type ListedMap = Arc<Vec<u64>>;

/// Builds the map of the documents of `acl` that `scope` lists.
pub(super) fn listed_map(acl: &Column<u64>, scope: &Scope) -> ListedMap {
    let docs = acl.num_docs();
    let mut bits = vec![0u64; (docs as usize).div_ceil(64)];
    for doc in 0..docs {
        if acl
            .first(doc)
            .is_some_and(|acl| scope.lists(AclRef::from_u64(acl)))
        {
            bits[doc as usize / 64] |= 1 << (doc % 64);
        }
    }
    Arc::new(bits)
}

/// Who may see a segment's documents: their peers and, where any is not public, the map of
/// those the viewer's scope lists.
pub(super) struct OwnerColumns {
    peer: Column<u64>,
    /// `None` when every document of the segment is public: nothing to check per document.
    listed: Option<ListedMap>,
}

impl OwnerColumns {
    pub(super) fn new(peer: Column<u64>, listed: Option<ListedMap>) -> OwnerColumns {
        OwnerColumns { peer, listed }
    }

    /// Whether `doc`'s ACL is listed for the viewer (always, in an all-public segment).
    #[inline]
    pub(super) fn listed(&self, doc: DocId) -> bool {
        self.listed.as_ref().is_none_or(|bits| {
            bits.get(doc as usize / 64)
                .is_some_and(|w| w & (1 << (doc % 64)) != 0)
        })
    }

    /// Whether `doc`'s peer is online.
    #[inline]
    pub(super) fn online(&self, doc: DocId, online: &dyn OnlineFilter) -> bool {
        self.peer
            .first(doc)
            .is_some_and(|peer| online.contains(PeerRef::from_u64(peer)))
    }

    /// Whether each document of a block (at most `COLLECT_BLOCK_BUFFER_LEN`) counts for this
    /// search: its ACL listed, its peer online. Each column read once for the whole block.
    pub(super) fn visible_block(
        &self,
        docs: &[DocId],
        online: &dyn OnlineFilter,
        shown: &mut [bool],
    ) {
        let mut values = [None; COLLECT_BLOCK_BUFFER_LEN];
        let n = docs.len().min(values.len()).min(shown.len());
        let (docs, values, shown) = (&docs[..n], &mut values[..n], &mut shown[..n]);
        for (shown, &doc) in shown.iter_mut().zip(docs.iter()) {
            *shown = self.listed(doc);
        }
        self.peer.first_vals(docs, values);
        for (shown, peer) in shown.iter_mut().zip(values.iter()) {
            *shown = *shown && peer.is_some_and(|peer| online.contains(PeerRef::from_u64(peer)));
        }
    }
}

/// Filters on media tags (PROTOCOL §3.9): a file without the tag does not pass a filter on it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaFilters {
    /// Lowest bitrate, kbit/s.
    pub min_bitrate: Option<u32>,
    /// Shortest duration, seconds.
    pub min_duration: Option<u32>,
    /// Longest duration, seconds.
    pub max_duration: Option<u32>,
    /// Only lossless (or only lossy) audio.
    pub lossless: Option<bool>,
    /// Only files tagged with this year.
    pub year: Option<u32>,
}

impl MediaFilters {
    /// Whether no filter is set.
    pub fn is_empty(&self) -> bool {
        *self == MediaFilters::default()
    }
}

/// The media columns of a segment.
pub(super) struct MediaColumns {
    pub(super) bitrate: Column<u64>,
    pub(super) duration: Column<u64>,
    pub(super) year: Column<u64>,
    pub(super) lossless: Column<u64>,
}

/// A search's filters, checked per document on fast fields.
#[derive(Debug, Clone, Default)]
pub(super) struct Filters {
    pub(super) ext: Option<String>,
    pub(super) kind: Option<u64>,
    pub(super) min_size: Option<u64>,
    pub(super) max_size: Option<u64>,
    pub(super) media: MediaFilters,
}

impl Filters {
    pub(super) fn of(spec: &SearchSpec) -> Filters {
        Filters {
            ext: spec.ext.clone(),
            kind: spec.kind.map(kind_code),
            min_size: spec.min_size,
            max_size: spec.max_size,
            media: MediaFilters {
                year: spec.media.year.or(spec.plan.year),
                ..spec.media
            },
        }
    }

    /// The filters bound to one segment's columns.
    pub(super) fn for_segment(&self, columns: &SegmentColumns) -> tantivy::Result<SegmentFilters> {
        let mut impossible = false;
        let ext = match &self.ext {
            None => None,
            Some(ext) => {
                let found = match &columns.ext {
                    Some(column) => column
                        .dictionary()
                        .term_ord(ext.as_bytes())?
                        .map(|ord| (column.ords().clone(), ord)),
                    None => None,
                };
                // No document of this segment has the extension.
                impossible = found.is_none();
                found
            }
        };
        let kind = self.kind.map(|code| (columns.kind.clone(), code));
        let size = if self.min_size.is_some() || self.max_size.is_some() {
            let range = self.min_size.unwrap_or(0)..=self.max_size.unwrap_or(u64::MAX);
            Some((columns.size.clone(), range))
        } else {
            None
        };
        let media = &self.media;
        let range = |column: &Column<u64>, min: Option<u32>, max: Option<u32>| {
            (min.is_some() || max.is_some()).then(|| {
                let range = u64::from(min.unwrap_or(0))..=max.map_or(u64::MAX, u64::from);
                (column.clone(), range)
            })
        };
        let ranges: Vec<_> = [
            range(&columns.media.bitrate, media.min_bitrate, None),
            range(
                &columns.media.duration,
                media.min_duration,
                media.max_duration,
            ),
            range(&columns.media.year, media.year, media.year),
            media.lossless.map(|l| {
                let v = u64::from(l);
                (columns.media.lossless.clone(), v..=v)
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        // A segment without a value in range for some filter holds nothing that passes.
        impossible |= ranges.iter().any(|(column, range)| {
            column.max_value() < *range.start() || column.min_value() > *range.end()
        });
        Ok(SegmentFilters {
            impossible,
            ext,
            kind,
            size,
            ranges,
        })
    }
}

/// [`Filters`] against one segment's columns.
pub(super) struct SegmentFilters {
    /// No document of the segment can pass.
    pub(super) impossible: bool,
    pub(super) ext: Option<(Column<u64>, u64)>,
    pub(super) kind: Option<(Column<u64>, u64)>,
    pub(super) size: Option<(Column<u64>, std::ops::RangeInclusive<u64>)>,
    /// Media filters: the column and the values that pass.
    pub(super) ranges: Vec<(Column<u64>, std::ops::RangeInclusive<u64>)>,
}

impl SegmentFilters {
    pub(super) fn pass(&self, doc: DocId) -> bool {
        !self.impossible
            && self
                .ext
                .as_ref()
                .is_none_or(|(ords, ord)| ords.first(doc) == Some(*ord))
            && self
                .kind
                .as_ref()
                .is_none_or(|(kinds, code)| kinds.first(doc) == Some(*code))
            && self
                .size
                .as_ref()
                .is_none_or(|(sizes, range)| sizes.first(doc).is_some_and(|s| range.contains(&s)))
            && self
                .ranges
                .iter()
                .all(|(column, range)| column.first(doc).is_some_and(|v| range.contains(&v)))
    }
}

/// Groups kept before the worst are dropped, at least: result sets this small (or up to twice
/// the page) are counted exactly. Nothing is pruned until the first drop, so a larger floor costs
/// every search: at 10M entries, 256 instead of 40 made the index part of a search 1.2-1.5×
/// slower.
pub(super) const MIN_KEEP: usize = 40;

/// Hashes content ids (dense row ids, not chosen by peers) with one multiplication: the count
/// inserts thousands per search, and SipHash or sorting cost more than the rest of the count.
#[derive(Default)]
pub(super) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Documents a search's count may look at once its best groups are known: result sets up to
/// about this many entries get an exact total, larger ones a lower bound. Measured in
/// instructions at 1M entries (BENCHMARKS.md): 1,024 adds a fifth to the index part of a search,
/// 4,096 two fifths (the postings are decoded again, and each segment needs a new scorer).
pub(super) const COUNT_BUDGET_DOCS: usize = 1024;

pub(super) fn sorted(groups: GroupMap) -> Vec<Group> {
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|(content, (score, matches))| Group {
            content: ContentRef::from_u64(content),
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
    groups
}

/// Collects the best `want` groups by content: each group's score is its best document's.
pub(super) struct GroupByContent {
    /// Columns by segment ordinal.
    pub(super) columns: Vec<Arc<SegmentColumns>>,
    pub(super) online: Arc<dyn OnlineFilter>,
    /// Whose search it is: documents outside its listed scopes are not matched.
    pub(super) scope: Arc<Scope>,
    pub(super) filters: Filters,
    pub(super) want: usize,
    pub(super) keep: usize,
    /// The score a document must beat, learnt from the segments already searched.
    pub(super) floor: Mutex<Score>,
}

/// The best groups found so far and the score a new document must beat to matter.
pub(super) struct TopGroups {
    pub(super) groups: GroupMap,
    pub(super) want: usize,
    pub(super) keep: usize,
    pub(super) threshold: Score,
    /// Whether groups were dropped (so the count of groups is a lower bound).
    pub(super) pruned: bool,
}

impl TopGroups {
    pub(super) fn offer(&mut self, content: u64, score: Score) {
        if score <= self.threshold {
            return;
        }
        let group = self.groups.entry(content).or_insert((score, 0));
        group.0 = group.0.max(score);
        group.1 += 1;
        if self.groups.len() > self.keep {
            self.shrink();
        }
    }

    /// Keeps the best `want` groups; a document must now beat the worst of them.
    pub(super) fn shrink(&mut self) {
        let mut scores: Vec<Score> = self.groups.values().map(|g| g.0).collect();
        let nth = self.want.clamp(1, scores.len()) - 1;
        let (_, cutoff, _) = scores.select_nth_unstable_by(nth, |a, b| b.total_cmp(a));
        let cutoff = *cutoff;
        // Fewer than `want` groups score above the cutoff: drop ties at it down to `want`.
        let at_least_cutoff = scores.iter().filter(|&&score| score >= cutoff).count();
        let mut ties_to_drop = at_least_cutoff.saturating_sub(self.want);
        self.groups.retain(|_, g| {
            if g.0 < cutoff {
                false
            } else if g.0 == cutoff && ties_to_drop > 0 {
                ties_to_drop -= 1;
                false
            } else {
                true
            }
        });
        self.threshold = cutoff;
        self.pruned = true;
    }
}

pub(super) struct GroupSegment {
    pub(super) online: Arc<dyn OnlineFilter>,
    pub(super) filters: SegmentFilters,
    pub(super) owner: OwnerColumns,
    pub(super) content: Column<u64>,
    pub(super) top: TopGroups,
}

impl GroupSegment {
    pub(super) fn offer(&mut self, doc: DocId, score: Score) -> Score {
        // Visibility after the filters (cheaper and often more selective), before the content:
        // a document the viewer may not see costs no read of its content.
        if self.filters.pass(doc)
            && self.owner.listed(doc)
            && self.owner.online(doc, &*self.online)
            && let Some(content) = self.content.first(doc)
        {
            self.top.offer(content, score);
        }
        self.top.threshold
    }
}

impl Collector for GroupByContent {
    type Fruit = TopGroups;
    type Child = GroupSegment;

    fn for_segment(&self, ord: u32, segment: &SegmentReader) -> tantivy::Result<GroupSegment> {
        let opened;
        let columns = match self.columns.get(ord as usize) {
            Some(columns) => &**columns,
            None => {
                opened = SegmentColumns::open(segment)?;
                &opened
            }
        };
        let floor = *self.floor.lock().unwrap_or_else(|p| p.into_inner());
        Ok(GroupSegment {
            online: self.online.clone(),
            filters: self.filters.for_segment(columns)?,
            owner: columns.owner(&self.scope),
            content: columns.content.clone(),
            top: TopGroups {
                groups: GroupMap::new(),
                want: self.want,
                keep: self.keep,
                threshold: floor,
                pruned: floor > Score::MIN,
            },
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    /// Like the default, but lets the query skip documents that cannot beat the threshold
    /// (block-max WAND for term unions and intersections).
    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<TopGroups> {
        let mut segment = self.for_segment(segment_ord, reader)?;
        if segment.filters.impossible {
            return Ok(segment.harvest());
        }
        let alive = reader.alive_bitset();
        weight.for_each_pruning(segment.top.threshold, reader, &mut |doc, score| {
            if alive.is_some_and(|a| a.is_deleted(doc)) {
                return segment.top.threshold;
            }
            segment.offer(doc, score)
        })?;
        let top = segment.harvest();
        let mut floor = self.floor.lock().unwrap_or_else(|p| p.into_inner());
        *floor = floor.max(top.threshold);
        Ok(top)
    }

    fn merge_fruits(&self, fruits: Vec<TopGroups>) -> tantivy::Result<TopGroups> {
        let mut merged = TopGroups {
            groups: GroupMap::new(),
            want: self.want,
            keep: self.keep,
            threshold: Score::MIN,
            pruned: false,
        };
        for fruit in fruits {
            merged.pruned |= fruit.pruned;
            for (content, (score, n)) in fruit.groups {
                let e = merged.groups.entry(content).or_insert((score, 0));
                e.0 = e.0.max(score);
                e.1 += n;
            }
        }
        Ok(merged)
    }
}

impl SegmentCollector for GroupSegment {
    type Fruit = TopGroups;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.offer(doc, score);
    }

    fn harvest(self) -> TopGroups {
        self.top
    }
}
