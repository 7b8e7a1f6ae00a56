//! The search service, between the HTTP handlers and the store and index: a page of results
//! for a query ([`search`]) and the sources of one content ([`sources`]), with the policy of
//! what they say: which copy a hit is shown by, which sources it lists and in what order, and
//! how claimed sizes of one hash are ranked (PROTOCOL §3.10, §3.11). No HTTP type here; handlers
//! only translate requests and answers.

use peerdex_shared::FileKind;
use peerdex_shared::api::{Reachability, SearchHit, Source};
use peerdex_shared::kind::extension_of;

use std::collections::HashMap;
use std::sync::Arc;

use peerdex_shared::FileHash;
use peerdex_shared::api::{SizeClaim, SourcesResponse};

use peerdex_shared::PeerId;
use peerdex_shared::api::{
    FolderEntry, FolderHit, FolderHolder, FolderResponse, FolderSummary, Grant, MediaTags,
};
use peerdex_shared::folder::FolderId;

use crate::db::{AclRef, ContentRef, Db, DbError, FolderFile, FolderRow, PeerRef};
use crate::holders::{Holders, PeerCard, Place};
use crate::index::{IndexError, OnlineFilter, SearchIndex, SearchSpec};
use crate::query::QueryPlan;
use crate::scope::Scope;
use crate::transfers::ServerKey;

/// Who is asking: what they may see and download, and the device grants for non-public sources
/// are made out to.
#[derive(Clone, Copy)]
pub struct Viewer<'a> {
    /// The viewer's scope.
    pub scope: &'a Scope,
    /// How to sign grants for non-public sources (`None`: no device to make them out to; such
    /// sources are listed without one).
    pub grants: Option<GrantSigner<'a>>,
}

/// Signs grants for one device.
#[derive(Clone, Copy)]
pub struct GrantSigner<'a> {
    /// The server's key.
    pub key: &'a ServerKey,
    /// The device that will download.
    pub device: PeerId,
    /// Unix time the grants expire.
    pub expires_at: u64,
}

impl Viewer<'_> {
    /// Whether a copy is shown at all: online, and within the viewer's listed scopes.
    fn lists<O: OnlineFilter + ?Sized>(&self, online: &O, peer: PeerRef, acl: AclRef) -> bool {
        online.contains(peer) && self.scope.lists(acl)
    }

    /// Whether a copy may be offered as a source.
    fn downloads<O: OnlineFilter + ?Sized>(&self, online: &O, peer: PeerRef, acl: AclRef) -> bool {
        online.contains(peer) && self.scope.downloads(acl)
    }

    fn grant(&self, source: PeerId, hash: FileHash, acl: AclRef) -> Option<Grant> {
        if acl == AclRef::PUBLIC {
            return None;
        }
        let signer = self.grants?;
        Some(
            signer
                .key
                .grant(source, signer.device, hash, signer.expires_at),
        )
    }
}

/// A page of results to find.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The query and filters (`spec.want` is `offset + limit`).
    pub spec: SearchSpec,
    /// Results to skip.
    pub offset: u64,
    /// Results on the page.
    pub limit: u64,
    /// Most sources listed per hit.
    pub max_sources: usize,
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct SearchPage {
    /// Distinct contents matching (exact when `total_exact`, else a lower bound).
    pub total: u64,
    /// Whether `total` counts every match.
    pub total_exact: bool,
    /// The page, best first.
    pub hits: Vec<SearchHit>,
    /// Every content the index found (up to `spec.want`), best first.
    pub matched: Vec<ContentRef>,
    /// Folders of the page that match the query.
    pub folders: Vec<FolderHit>,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The store failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Runs a search (blocking: call from a blocking thread): the index finds the best groups of
/// online copies, the store gives their holders, and each becomes a hit shown by a copy that
/// matched.
pub fn search(
    db: &Db,
    index: &SearchIndex,
    online: Arc<crate::presence::OnlineSet>,
    viewer: Viewer<'_>,
    request: &SearchRequest,
) -> Result<SearchPage, SearchError> {
    let found = index.search(&request.spec, online.clone())?;
    let page: Vec<ContentRef> = found
        .groups
        .iter()
        .skip(request.offset as usize)
        .take(request.limit as usize)
        .map(|g| g.content)
        .collect();
    let scores: HashMap<ContentRef, f32> =
        found.groups.iter().map(|g| (g.content, g.score)).collect();
    let mut hits = Vec::with_capacity(page.len());
    let mut owners = Vec::with_capacity(page.len());
    let page = db.holders_of(&page)?;
    for holders in &page {
        let score = scores.get(&holders.content).copied().unwrap_or(0.0);
        if let Some((hit, owner)) = hit_and_owner(
            db,
            holders,
            score,
            &*online,
            viewer,
            request.max_sources,
            Some(&request.spec.plan),
        )? {
            // Only kinds the agent reads tags of can have any: others cost no lookup.
            let tagged = matches!(
                hit.kind,
                FileKind::Audio | FileKind::Video | FileKind::Document
            );
            owners.push(owner.filter(|_| tagged));
            hits.push(hit);
        }
    }
    let wanted: Vec<(usize, (PeerRef, &str, &str))> = owners
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.as_ref().map(|(p, s, f)| (i, (*p, &**s, &**f))))
        .collect();
    let places: Vec<(PeerRef, &str, &str)> = wanted.iter().map(|(_, p)| *p).collect();
    for ((i, _), tags) in wanted.iter().zip(db.files_tags(&places)?) {
        hits[*i].tags = tags;
    }
    let folders = folder_hits(db, &page, &*online, viewer, &request.spec.plan)?;
    Ok(SearchPage {
        total: found.total,
        total_exact: found.total_exact,
        hits,
        matched: found.groups.iter().map(|g| g.content).collect(),
        folders,
    })
}

/// Most other sizes listed beside the best one.
const MAX_OTHER_SIZES: usize = 8;

/// Every size online peers claim for `hash`, best evidence first, each with up to
/// `max_sources` sources (blocking). `None` when no online peer has it.
pub fn sources(
    db: &Db,
    online: &crate::presence::OnlineSet,
    viewer: Viewer<'_>,
    hash: &FileHash,
    max_sources: usize,
) -> Result<Option<SourcesResponse>, DbError> {
    let ids = db.contents_with_hash(hash)?;
    let mut claims = Vec::new();
    for holders in db.holders_of(&ids)? {
        // A size the viewer may not download from is, to it, a size nobody claims.
        claims.extend(
            claim(db, &holders, online, viewer, max_sources)?.filter(|c| !c.hit.sources.is_empty()),
        );
    }
    // Peers may disagree on the size of a hash (a liar, a damaged list): best evidence first.
    claims.sort_by(Claim::rank);
    let mut claims = claims.into_iter().map(|c| c.hit);
    let Some(best) = claims.next() else {
        return Ok(None);
    };
    Ok(Some(SourcesResponse {
        hash: *hash,
        size: best.size,
        sources: best.sources,
        name: best.name,
        other_sizes: claims
            .take(MAX_OTHER_SIZES)
            .map(|hit| SizeClaim {
                size: hit.size,
                sources_online: hit.sources_online,
                sources: hit.sources,
                name: hit.name,
            })
            .collect(),
        partial_sources: Vec::new(),
    }))
}

/// Adds to `found` the peers serving verified pieces of `hash` while they download it
/// (`holders`, from the partial book): online, not quarantined, not already a full source, and
/// only for a viewer who may download public content (partials are announced for public
/// downloads only). With no full source, the partial sources alone are the answer.
pub fn with_partial_sources(
    db: &Db,
    online: &crate::presence::OnlineSet,
    viewer: Viewer<'_>,
    hash: &FileHash,
    found: Option<SourcesResponse>,
    holders: Vec<(PeerRef, peerdex_shared::api::PartialEntry)>,
) -> Result<Option<SourcesResponse>, DbError> {
    if holders.is_empty()
        || !viewer.scope.downloads(crate::db::AclRef::PUBLIC)
        || db.taken_down(hash)?
    {
        return Ok(found);
    }
    let standing = db.standing();
    let mut partial = Vec::new();
    for (peer, entry) in holders {
        if !online.contains(peer) || !standing.offers(peer, hash) || entry.pieces.held() == 0 {
            continue;
        }
        let Some(card) = db.peer_card(peer)? else {
            continue;
        };
        let full = found.as_ref().is_some_and(|f| {
            f.sources
                .iter()
                .chain(f.other_sizes.iter().flat_map(|c| &c.sources))
                .any(|s| s.peer_id == card.key)
        });
        if full {
            continue;
        }
        partial.push(peerdex_shared::api::PartialSource {
            source: Source {
                peer_id: card.key,
                nickname: card.nickname.clone(),
                addr: advertised(card.ip.as_deref(), card.port),
                reachability: card.reachability,
                transport: card.transport,
                share: String::new(),
                path: entry.name.clone(),
                grant: None,
            },
            size: entry.size,
            pieces: entry.pieces,
        });
    }
    if partial.is_empty() {
        return Ok(found);
    }
    // Those holding more first.
    partial.sort_by_key(|p| std::cmp::Reverse(p.pieces.held()));
    Ok(Some(match found {
        Some(mut found) => {
            found.partial_sources = partial;
            found
        }
        None => {
            // Sizes are claims here too: the one most partial holders download first (then
            // the smaller), the others as other sizes, so one liar's size cannot hide the rest.
            let mut sizes: Vec<(u64, u64, String)> = Vec::new();
            for p in &partial {
                match sizes.iter_mut().find(|(size, ..)| *size == p.size) {
                    Some(entry) => entry.1 += 1,
                    None => sizes.push((p.size, 1, p.source.path.clone())),
                }
            }
            sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let (size, _, name) = sizes[0].clone();
            SourcesResponse {
                hash: *hash,
                size,
                sources: Vec::new(),
                name,
                other_sizes: sizes[1..]
                    .iter()
                    .take(MAX_OTHER_SIZES)
                    .map(|(size, holders, name)| SizeClaim {
                        size: *size,
                        sources_online: *holders,
                        sources: Vec::new(),
                        name: name.clone(),
                    })
                    .collect(),
                partial_sources: partial,
            }
        }
    }))
}

/// The address advertised for a peer: its observed IP and announced port (none for port 0).
pub fn advertised(ip: Option<&str>, port: u16) -> Option<String> {
    let ip: std::net::IpAddr = ip?.parse().ok()?;
    (port != 0).then(|| std::net::SocketAddr::new(ip, port).to_string())
}

/// A source as the API lists it.
pub fn to_source(card: &PeerCard, place: &Place, grant: Option<Grant>) -> Source {
    Source {
        peer_id: card.key,
        nickname: card.nickname.clone(),
        addr: advertised(card.ip.as_deref(), card.port),
        reachability: card.reachability,
        transport: card.transport,
        share: place.share.to_string(),
        path: place.path.to_string(),
        grant,
    }
}

/// Whether the viewer may fetch `hash` from the peer with key `source`: the source holds a copy
/// within the viewer's scope (for tickets and relays, which bypass the sources page).
pub fn may_fetch(
    db: &Db,
    scope: &Scope,
    hash: &FileHash,
    source: &PeerId,
) -> Result<bool, DbError> {
    let ids = db.contents_with_hash(hash)?;
    let standing = db.standing();
    for holders in db.holders_of(&ids)? {
        let mut last = None;
        for &(peer, _, acl) in &holders.copies {
            if !scope.downloads(acl) || last == Some(peer) || !standing.offers(peer, hash) {
                continue;
            }
            last = Some(peer);
            if db.peer_card(peer)?.is_some_and(|card| card.key == *source) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// How many copies' paths a hit checks against the query to find one that matched, at most.
const MAX_MATCH_CHECKS: usize = 64;

/// The copy a hit is shown by: the most common file name among the online copies whose path
/// matches `plan` (the smallest of equally common names), else the most common name among all
/// online copies. So a row never shows the name of a copy the query did not find.
pub fn shown_place<'h>(
    holders: &'h Holders,
    listed: impl Fn(PeerRef, AclRef) -> bool,
    plan: Option<&QueryPlan>,
) -> Option<&'h Place> {
    let mut name_counts = vec![0u32; holders.names.len()];
    for &(peer, place, acl) in &holders.copies {
        if listed(peer, acl) {
            name_counts[holders.places[place as usize].name as usize] += 1;
        }
    }
    // More common first, then the smaller name.
    let better = |a: u32, b: u32| {
        name_counts[b as usize]
            .cmp(&name_counts[a as usize])
            .then_with(|| holders.names[a as usize].cmp(&holders.names[b as usize]))
    };
    let first_online = |name: u32| {
        holders
            .copies
            .iter()
            .filter(|&&(peer, _, acl)| listed(peer, acl))
            .map(|&(_, place, _)| &holders.places[place as usize])
            .find(|place| place.name == name)
    };
    let most_common = (0..holders.names.len() as u32)
        .filter(|&n| name_counts[n as usize] > 0)
        .min_by(|&a, &b| better(a, b))?;
    let Some(plan) = plan else {
        return first_online(most_common);
    };
    // Names by how common they are; within a name, each distinct place once, until one matches.
    let mut names: Vec<u32> = (0..holders.names.len() as u32)
        .filter(|&n| name_counts[n as usize] > 0)
        .collect();
    names.sort_by(|&a, &b| better(a, b));
    let mut checked = vec![false; holders.places.len()];
    let mut checks = 0;
    for name in names {
        for &(peer, place, acl) in &holders.copies {
            let index = place as usize;
            if checked[index] || holders.places[index].name != name || !listed(peer, acl) {
                continue;
            }
            if checks == MAX_MATCH_CHECKS {
                return first_online(most_common);
            }
            checked[index] = true;
            checks += 1;
            if plan.matches(&holders.places[index].path) {
                return Some(&holders.places[index]);
            }
        }
    }
    first_online(most_common)
}

/// The share and folder of a place, without the file name.
pub fn folder_of(place: &Place) -> String {
    match place.path.rsplit_once('/') {
        Some((dir, _)) => format!("{}/{dir}", place.share),
        None => place.share.to_string(),
    }
}

/// A result row from a content and its copies: the copies the viewer sees listed, sources from
/// those it may download (one source per online peer, its first such path, reachable ones first),
/// shown by the copy [`shown_place`] picks. `None` when the viewer sees no copy.
pub fn to_hit<O: OnlineFilter + ?Sized>(
    db: &Db,
    holders: &Holders,
    score: f32,
    online: &O,
    viewer: Viewer<'_>,
    max_sources: usize,
    plan: Option<&QueryPlan>,
) -> Result<Option<SearchHit>, DbError> {
    Ok(hit_and_owner(db, holders, score, online, viewer, max_sources, plan)?.map(|(hit, _)| hit))
}

/// The copy a hit is shown by: its peer, share and path.
type ShownCopy = (PeerRef, Box<str>, Box<str>);

/// [`to_hit`], and which copy the hit shows (its tags are read for the whole page at once);
/// the hit's `tags` are left empty.
fn hit_and_owner<O: OnlineFilter + ?Sized>(
    db: &Db,
    holders: &Holders,
    score: f32,
    online: &O,
    viewer: Viewer<'_>,
    max_sources: usize,
    plan: Option<&QueryPlan>,
) -> Result<Option<(SearchHit, Option<ShownCopy>)>, DbError> {
    let (mut reachable, mut others) = (Vec::new(), Vec::new());
    let mut sources_online = 0u64;
    let mut last_peer = None;
    // Quarantined sources are not offered; the others go reliable (as downloaders reported)
    // first.
    let standing = db.standing();
    // Copies are ordered by peer, then path: a peer's first copy is its source.
    for &(peer, place, acl) in &holders.copies {
        if !viewer.downloads(online, peer, acl)
            || last_peer == Some(peer)
            || !standing.offers(peer, &holders.hash)
        {
            continue;
        }
        last_peer = Some(peer);
        sources_online += 1;
        if reachable.len() >= max_sources {
            // The page of sources is all reachable peers; the rest are only counted.
            continue;
        }
        let Some(card) = db.peer_card(peer)? else {
            continue;
        };
        let place = &holders.places[place as usize];
        if card.reachability == Reachability::Reachable {
            reachable.push((peer, card, place, acl));
        } else if others.len() < max_sources {
            others.push((peer, card, place, acl));
        }
    }
    for list in [&mut reachable, &mut others] {
        list.sort_by_key(|(peer, ..)| std::cmp::Reverse(standing.reliability(*peer).rank()));
    }
    let Some(shown) = shown_place(holders, |peer, acl| viewer.lists(online, peer, acl), plan)
    else {
        return Ok(None);
    };
    let name = shown
        .path
        .rsplit('/')
        .next()
        .unwrap_or(&shown.path)
        .to_string();
    let ext = extension_of(&name);
    let kind = FileKind::from_extension(&ext);
    let owner = holders
        .copies
        .iter()
        .find(|&&(peer, place, acl)| {
            std::ptr::eq(&holders.places[place as usize], shown) && viewer.lists(online, peer, acl)
        })
        .map(|&(peer, _, _)| (peer, shown.share.clone(), shown.path.clone()));
    let hit = SearchHit {
        hash: holders.hash,
        size: holders.size,
        kind,
        ext,
        folder: folder_of(shown),
        name,
        score,
        sources_online,
        sources: reachable
            .iter()
            .chain(&others)
            .take(max_sources)
            .map(|(_, card, place, acl)| {
                to_source(card, place, viewer.grant(card.key, holders.hash, *acl))
            })
            .collect(),
        locked: sources_online == 0,
        tags: MediaTags::default(),
    };
    Ok(Some((hit, owner)))
}

/// One size claimed for a hash, with the evidence for it (PROTOCOL §3.11).
pub struct Claim {
    /// The hit of this size: its sources, online count and name.
    pub hit: SearchHit,
    /// Online holders whose address the server verified: a liar must run real, reachable hosts.
    reachable_online: u64,
    /// Every peer whose stored list holds it, online or not: a size with a history.
    holders_known: u64,
    /// The earliest registration among its online holders: a new key has no history.
    oldest_registration: i64,
}

impl Claim {
    /// Better evidence first; a full tie goes to the smaller size, never to row order.
    pub fn rank(a: &Claim, b: &Claim) -> std::cmp::Ordering {
        b.reachable_online
            .cmp(&a.reachable_online)
            .then(b.hit.sources_online.cmp(&a.hit.sources_online))
            .then(b.holders_known.cmp(&a.holders_known))
            .then(a.oldest_registration.cmp(&b.oldest_registration))
            .then(a.hit.size.cmp(&b.hit.size))
    }
}

/// The claim `holders` (one size of a hash) makes, over its online holders.
pub fn claim<O: OnlineFilter + ?Sized>(
    db: &Db,
    holders: &Holders,
    online: &O,
    viewer: Viewer<'_>,
    max_sources: usize,
) -> Result<Option<Claim>, DbError> {
    let Some(hit) = to_hit(db, holders, 0.0, online, viewer, max_sources, None)? else {
        return Ok(None);
    };
    let mut peers: Vec<PeerRef> = holders.copies.iter().map(|&(peer, _, _)| peer).collect();
    peers.dedup();
    let (mut reachable_online, mut oldest_registration) = (0, i64::MAX);
    let standing = db.standing();
    let offered = |peer: PeerRef| {
        standing.offers(peer, &holders.hash)
            && holders
                .copies
                .iter()
                .any(|&(p, _, acl)| p == peer && viewer.downloads(online, p, acl))
    };
    for &peer in peers.iter().filter(|&&p| offered(p)) {
        if let Some(card) = db.peer_card(peer)? {
            reachable_online += u64::from(card.reachability == Reachability::Reachable);
            oldest_registration = oldest_registration.min(card.registered_at);
        }
    }
    Ok(Some(Claim {
        hit,
        reachable_online,
        holders_known: peers.len() as u64,
        oldest_registration,
    }))
}

/// Most folders a page of results lists.
const MAX_FOLDER_HITS: usize = 5;

/// Copies per hit whose folders are looked at for folder results.
const FOLDERS_PER_HIT: usize = 2;

/// Fewest significant files a folder result has: a folder of one file is that file's hit again.
const MIN_FOLDER_FILES: u64 = 2;

/// How a folder is shown: its last path component, or the share's name for a share's root.
fn folder_name(row: &FolderRow) -> String {
    match row.path.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => row.share.clone(),
    }
}

/// What a folder row says of its files together.
pub fn summary_of(row: &FolderRow) -> FolderSummary {
    FolderSummary {
        album: row.album.clone(),
        artist: row.artist.clone(),
        year: row.year,
        duration_secs: row.duration_secs,
        lossless: row.lossless,
    }
}

/// The significant files of a folder copy (those its identity is made of).
fn identity_files(db: &Db, row: &FolderRow) -> Result<Vec<FolderFile>, DbError> {
    let files = db.folder_files(row.peer, &row.share, &row.path)?;
    Ok(
        peerdex_shared::folder::significant(&files, |f| f.name.as_str())
            .cloned()
            .collect(),
    )
}

/// Who holds the files of one identity, as the viewer may download them: per online peer, how
/// many of the files it holds; and per file, how many online peers hold it.
struct Holdings {
    per_peer: Vec<(PeerRef, u64)>,
    per_file: HashMap<ContentRef, u64>,
    distinct: u64,
}

fn holdings<O: OnlineFilter + ?Sized>(
    db: &Db,
    files: &[FolderFile],
    online: &O,
    viewer: Viewer<'_>,
) -> Result<Holdings, DbError> {
    let mut contents: Vec<ContentRef> = files.iter().map(|f| f.content).collect();
    contents.sort();
    contents.dedup();
    let mut per_peer: HashMap<PeerRef, u64> = HashMap::new();
    let mut per_file = HashMap::new();
    for holders in db.holders_of(&contents)? {
        let mut peers: Vec<PeerRef> = holders
            .copies
            .iter()
            .filter(|&&(peer, _, acl)| viewer.downloads(online, peer, acl))
            .map(|&(peer, _, _)| peer)
            .collect();
        peers.dedup();
        per_file.insert(holders.content, peers.len() as u64);
        for peer in peers {
            *per_peer.entry(peer).or_default() += 1;
        }
    }
    let mut per_peer: Vec<(PeerRef, u64)> = per_peer.into_iter().collect();
    per_peer.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(Holdings {
        per_peer,
        per_file,
        distinct: contents.len() as u64,
    })
}

/// The search result of one folder copy: its identity and who holds it. `None` without one.
fn folder_hit<O: OnlineFilter + ?Sized>(
    db: &Db,
    row: &FolderRow,
    online: &O,
    viewer: Viewer<'_>,
) -> Result<Option<(FolderHit, Vec<FolderFile>, Holdings)>, DbError> {
    let Some(id) = row.content_id else {
        return Ok(None);
    };
    let files = identity_files(db, row)?;
    let held = holdings(db, &files, online, viewer)?;
    let complete = held
        .per_peer
        .iter()
        .filter(|(_, n)| *n == held.distinct)
        .count() as u64;
    let hit = FolderHit {
        id,
        name: folder_name(row),
        folder: if row.path.is_empty() {
            row.share.clone()
        } else {
            format!("{}/{}", row.share, row.path)
        },
        summary: summary_of(row),
        files: row.id_files,
        bytes: row.id_bytes,
        peers_online: held.per_peer.len() as u64,
        complete,
        partial: held.per_peer.len() as u64 - complete,
    };
    Ok(Some((hit, files, held)))
}

/// Whether the viewer may see every file of a folder copy (and so the copy as a release).
fn lists_all<O: OnlineFilter + ?Sized>(
    online: &O,
    viewer: Viewer<'_>,
    row: &FolderRow,
    files: &[FolderFile],
) -> bool {
    match row.acl {
        Some(acl) => viewer.lists(online, row.peer, acl),
        None => files.iter().all(|f| viewer.lists(online, row.peer, f.acl)),
    }
}

/// The folders of a page of results that match the query (PROTOCOL §3.9): for the copies the
/// viewer sees of each hit, their folder, kept when its path or its shared album and artist
/// match `plan`; one result per identity, most complete copies first.
pub fn folder_hits<O: OnlineFilter + ?Sized>(
    db: &Db,
    page: &[Arc<Holders>],
    online: &O,
    viewer: Viewer<'_>,
    plan: &QueryPlan,
) -> Result<Vec<FolderHit>, DbError> {
    // The folders of the first copies the viewer sees of each hit, read at once.
    let mut looked = std::collections::HashSet::new();
    let mut candidates: Vec<(PeerRef, &str, &str)> = Vec::new();
    for holders in page {
        let mut taken = 0;
        for &(peer, place, acl) in &holders.copies {
            if taken == FOLDERS_PER_HIT {
                break;
            }
            if !viewer.lists(online, peer, acl) {
                continue;
            }
            let place = &holders.places[place as usize];
            let dir = crate::db::parent_dir(&place.path);
            if looked.insert((peer, &*place.share, dir)) {
                taken += 1;
                candidates.push((peer, &place.share, dir));
            }
        }
    }
    let mut seen_ids = std::collections::HashSet::new();
    let mut hits = Vec::new();
    for row in db.folders_at(&candidates)? {
        if hits.len() == MAX_FOLDER_HITS {
            break;
        }
        let Some(row) = row else { continue };
        let Some(id) = row.content_id else { continue };
        if row.id_files < MIN_FOLDER_FILES || seen_ids.contains(&id) {
            continue;
        }
        let tags_text = format!(
            "{} {}",
            row.album.as_deref().unwrap_or(""),
            row.artist.as_deref().unwrap_or("")
        );
        if !plan.matches(&format!("{}/{}", row.share, row.path)) && !plan.matches(&tags_text) {
            continue;
        }
        if let Some((hit, files, _)) = folder_hit(db, &row, online, viewer)?
            && lists_all(online, viewer, &row, &files)
        {
            seen_ids.insert(id);
            let contents: std::collections::BTreeSet<ContentRef> =
                files.iter().map(|f| f.content).collect();
            hits.push((hit, contents));
        }
    }
    // A folder holding only part of another one found here is a partial copy of that release
    // (counted there as partial), not a release of its own.
    let subsets: Vec<bool> = hits
        .iter()
        .map(|(_, mine)| {
            hits.iter()
                .any(|(_, other)| mine.len() < other.len() && mine.is_subset(other))
        })
        .collect();
    let mut hits: Vec<FolderHit> = hits
        .into_iter()
        .zip(subsets)
        .filter(|(_, subset)| !subset)
        .map(|((hit, _), _)| hit)
        .collect();
    hits.sort_by(|a, b| {
        b.complete
            .cmp(&a.complete)
            .then(b.peers_online.cmp(&a.peers_online))
    });
    Ok(hits)
}

/// A folder identity as a download needs it (blocking): the copy shown (the most common name
/// among online copies the viewer sees whole, the smallest of equals), its files, and who holds
/// them. `None` when no such copy is online.
pub fn folder<O: OnlineFilter + ?Sized>(
    db: &Db,
    id: &FolderId,
    online: &O,
    viewer: Viewer<'_>,
    max_holders: usize,
) -> Result<Option<FolderResponse>, DbError> {
    let mut copies = Vec::new();
    for row in db.folders_with_id(id, 256)? {
        if !online.contains(row.peer) {
            continue;
        }
        let files = identity_files(db, &row)?;
        if lists_all(online, viewer, &row, &files) {
            copies.push((row, files));
        }
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (row, _) in &copies {
        *counts.entry(folder_name(row)).or_default() += 1;
    }
    let Some((row, _)) = copies.iter().min_by(|(a, _), (b, _)| {
        let (na, nb) = (folder_name(a), folder_name(b));
        counts[&nb].cmp(&counts[&na]).then(na.cmp(&nb))
    }) else {
        return Ok(None);
    };
    let Some((hit, files, held)) = folder_hit(db, row, online, viewer)? else {
        return Ok(None);
    };
    let mut holders = Vec::new();
    for &(peer, files_held) in held.per_peer.iter().take(max_holders) {
        if let Some(card) = db.peer_card(peer)? {
            holders.push(FolderHolder {
                peer_id: card.key,
                nickname: card.nickname.clone(),
                files_held,
            });
        }
    }
    let entries = files
        .into_iter()
        .map(|f| FolderEntry {
            sources_online: held.per_file.get(&f.content).copied().unwrap_or(0),
            name: f.name,
            hash: f.hash,
            size: f.size,
            tags: f.tags,
        })
        .collect();
    Ok(Some(FolderResponse {
        hit,
        entries,
        holders,
    }))
}
