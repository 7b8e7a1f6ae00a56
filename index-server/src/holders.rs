//! Who holds each content, and how to reach each peer, cached in memory for search results.
//!
//! A hit on popular content is held by thousands of peers, and every search must count the online
//! ones, pick the most common name among their copies and list the reachable ones first. Reading
//! those rows from SQLite on every search was half of a search's time. The cache keeps, per
//! content, its copies as `(peer, place)` pairs with the places (share and path) interned, and,
//! per peer, what a source needs (key, nickname, address, reachability).
//!
//! Correctness rests on one rule: every write that changes holders or a peer's card invalidates
//! after it commits, and a fill only lands if no invalidation happened since it started reading
//! (each part has a change counter, bumped under the same lock the fill checks it under). So a
//! cached entry is never older than the last committed write that concerns it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, RwLock};

use peerdex_shared::api::Reachability;
use peerdex_shared::{FileHash, PeerId};

use crate::db::{AclRef, ContentRef, PeerRef};

/// A content and every active copy of it.
#[derive(Debug)]
pub struct Holders {
    /// Content id.
    pub content: ContentRef,
    /// Hash.
    pub hash: FileHash,
    /// Size.
    pub size: u64,
    /// Distinct places of the copies.
    pub places: Vec<Place>,
    /// Distinct file names (last path component) of the places.
    pub names: Vec<Box<str>>,
    /// Every active copy as (peer, index into `places`, its scope), ordered by peer, then path.
    pub copies: Vec<(PeerRef, u32, AclRef)>,
}

/// Where a copy sits on its peer.
#[derive(Debug)]
pub struct Place {
    /// Share name.
    pub share: Box<str>,
    /// Path within the share.
    pub path: Box<str>,
    /// Index into [`Holders::names`].
    pub name: u32,
}

impl Holders {
    /// Builds the entry from `(peer, share, path, acl)` rows in any order.
    pub fn new(
        content: ContentRef,
        hash: FileHash,
        size: u64,
        rows: impl IntoIterator<Item = (PeerRef, String, String, AclRef)>,
    ) -> Holders {
        let mut places: Vec<Place> = Vec::new();
        let mut names: Vec<Box<str>> = Vec::new();
        let mut place_ids: HashMap<(String, String), u32> = HashMap::new();
        let mut name_ids: HashMap<Box<str>, u32> = HashMap::new();
        let mut copies = Vec::new();
        for (peer, share, path, acl) in rows {
            // Most copies of popular content share a place: look it up without copying strings.
            let place = match place_ids.entry((share, path)) {
                Entry::Occupied(known) => *known.get(),
                Entry::Vacant(new) => {
                    let (share, path) = new.key();
                    let name: Box<str> = path.rsplit('/').next().unwrap_or(path).into();
                    let name = *name_ids.entry(name.clone()).or_insert_with(|| {
                        names.push(name);
                        (names.len() - 1) as u32
                    });
                    places.push(Place {
                        share: share.as_str().into(),
                        path: path.as_str().into(),
                        name,
                    });
                    *new.insert((places.len() - 1) as u32)
                }
            };
            copies.push((peer, place, acl));
        }
        copies.sort_by(|a, b| {
            (a.0, &places[a.1 as usize].path).cmp(&(b.0, &places[b.1 as usize].path))
        });
        Holders {
            content,
            hash,
            size,
            places,
            names,
            copies,
        }
    }

    /// Heap bytes this entry takes, roughly (for the cache's budget).
    fn bytes(&self) -> usize {
        let strings: usize = self
            .places
            .iter()
            .map(|p| p.share.len() + p.path.len())
            .sum::<usize>()
            + self.names.iter().map(|n| n.len()).sum::<usize>();
        std::mem::size_of::<Holders>()
            + strings
            + self.places.len() * std::mem::size_of::<Place>()
            + self.names.len() * std::mem::size_of::<Box<str>>()
            + self.copies.len() * std::mem::size_of::<(PeerRef, u32, AclRef)>()
    }
}

/// What a search result shows about a peer that holds a copy.
#[derive(Debug, Clone)]
pub struct PeerCard {
    /// Peer key.
    pub key: PeerId,
    /// Nickname.
    pub nickname: String,
    /// Observed IP.
    pub ip: Option<String>,
    /// Announced port.
    pub port: u16,
    /// Connect-back state.
    pub reachability: Reachability,
    /// What its file server speaks.
    pub transport: peerdex_shared::api::PeerTransport,
    /// Unix time the key first registered (its history on this server).
    pub registered_at: i64,
}

struct ContentPart {
    changes: u64,
    entries: HashMap<ContentRef, Arc<Holders>>,
    bytes: usize,
}

struct PeerPart {
    changes: u64,
    /// By peer id (ids are dense: SQLite row ids).
    cards: Vec<Option<Arc<PeerCard>>>,
}

/// Most peer ids with a card slot; cards of larger ids are not cached (read each time).
const MAX_PEER_SLOTS: usize = 1 << 24;

/// The cache. Its methods never touch SQLite: [`crate::db::Db`] reads and fills.
pub struct HolderCache {
    contents: Mutex<ContentPart>,
    peers: RwLock<PeerPart>,
    budget: usize,
    /// Contents found in the cache, and not (exported as metrics).
    pub hits: prometheus_client::metrics::counter::Counter,
    /// Contents looked up and not found in the cache.
    pub misses: prometheus_client::metrics::counter::Counter,
}

impl HolderCache {
    /// An empty cache keeping at most about `budget` bytes of holders.
    pub fn new(budget: usize) -> HolderCache {
        HolderCache {
            contents: Mutex::new(ContentPart {
                changes: 0,
                entries: HashMap::new(),
                bytes: 0,
            }),
            peers: RwLock::new(PeerPart {
                changes: 0,
                cards: Vec::new(),
            }),
            budget,
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    fn content_part(&self) -> std::sync::MutexGuard<'_, ContentPart> {
        self.contents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached entry of each content (`None` where missing), and the change counter a fill
    /// of the missing ones must present to [`HolderCache::fill_contents`].
    pub fn contents(&self, ids: &[ContentRef]) -> (Vec<Option<Arc<Holders>>>, u64) {
        let part = self.content_part();
        let found: Vec<_> = ids.iter().map(|id| part.entries.get(id).cloned()).collect();
        let hits = found.iter().filter(|f| f.is_some()).count() as u64;
        self.hits.inc_by(hits);
        self.misses.inc_by(ids.len() as u64 - hits);
        (found, part.changes)
    }

    /// Stores entries read since `seen`, unless holders changed meanwhile.
    pub fn fill_contents(&self, seen: u64, entries: &[Arc<Holders>]) {
        let mut part = self.content_part();
        if part.changes != seen {
            return;
        }
        for entry in entries {
            let bytes = entry.bytes();
            if bytes > self.budget / 4 {
                continue;
            }
            // Over budget: drop arbitrary entries (the popular ones come straight back).
            if part.bytes + bytes > self.budget {
                let target = self.budget / 2;
                let mut freed = 0;
                let mut victims = Vec::new();
                for (id, old) in &part.entries {
                    if part.bytes - freed <= target {
                        break;
                    }
                    freed += old.bytes();
                    victims.push(*id);
                }
                for id in victims {
                    part.entries.remove(&id);
                }
                part.bytes -= freed;
            }
            if let Some(old) = part.entries.insert(entry.content, entry.clone()) {
                part.bytes -= old.bytes();
            }
            part.bytes += bytes;
        }
    }

    /// Forgets these contents (their holders changed).
    pub fn forget_contents(&self, ids: &[ContentRef]) {
        let mut part = self.content_part();
        part.changes += 1;
        for id in ids {
            if let Some(old) = part.entries.remove(id) {
                part.bytes -= old.bytes();
            }
        }
    }

    /// Forgets every content (a whole list changed).
    pub fn forget_all_contents(&self) {
        let mut part = self.content_part();
        part.changes += 1;
        part.entries.clear();
        part.bytes = 0;
    }

    /// The cached card of a peer, or the change counter a fill must present.
    pub fn peer(&self, peer: PeerRef) -> Result<Arc<PeerCard>, u64> {
        let part = self.peers.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(peer.0)
            .ok()
            .and_then(|i| part.cards.get(i))
            .and_then(Option::clone)
            .ok_or(part.changes)
    }

    /// Stores a card read since `seen`, unless a card changed meanwhile.
    pub fn fill_peer(&self, seen: u64, peer: PeerRef, card: Arc<PeerCard>) {
        let Ok(index) = usize::try_from(peer.0) else {
            return;
        };
        if index >= MAX_PEER_SLOTS {
            return;
        }
        let mut part = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if part.changes != seen {
            return;
        }
        if part.cards.len() <= index {
            part.cards.resize(index + 1, None);
        }
        part.cards[index] = Some(card);
    }

    /// Forgets a peer's card (it registered again, or its reachability changed).
    pub fn forget_peer(&self, peer: PeerRef) {
        let mut part = self.peers.write().unwrap_or_else(|p| p.into_inner());
        part.changes += 1;
        if let Some(slot) = usize::try_from(peer.0)
            .ok()
            .and_then(|i| part.cards.get_mut(i))
        {
            *slot = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn holders(content: i64, copies: usize) -> Arc<Holders> {
        Arc::new(Holders::new(
            ContentRef(content),
            FileHash::from_bytes([content as u8; 32]),
            10,
            (0..copies).map(|p| {
                (
                    PeerRef(p as i64),
                    "music".into(),
                    format!("a/b/song {p}.mp3"),
                    AclRef::PUBLIC,
                )
            }),
        ))
    }

    #[test]
    fn copies_are_ordered_by_peer_then_path_and_places_interned() {
        let h = Holders::new(
            ContentRef(1),
            FileHash::from_bytes([1; 32]),
            10,
            [
                (
                    PeerRef(9),
                    "s".to_string(),
                    "x/b.mp3".to_string(),
                    AclRef::PUBLIC,
                ),
                (
                    PeerRef(2),
                    "s".to_string(),
                    "y/b.mp3".to_string(),
                    AclRef::PUBLIC,
                ),
                (
                    PeerRef(9),
                    "s".to_string(),
                    "a.mp3".to_string(),
                    AclRef::PUBLIC,
                ),
                (
                    PeerRef(2),
                    "s".to_string(),
                    "x/b.mp3".to_string(),
                    AclRef::PUBLIC,
                ),
            ],
        );
        let order: Vec<(i64, &str)> = h
            .copies
            .iter()
            .map(|&(peer, place, _)| (peer.0, &*h.places[place as usize].path))
            .collect();
        assert_eq!(
            order,
            [(2, "x/b.mp3"), (2, "y/b.mp3"), (9, "a.mp3"), (9, "x/b.mp3")]
        );
        assert_eq!(h.places.len(), 3);
        // "x/b.mp3" and "y/b.mp3" share the name "b.mp3".
        assert_eq!(h.names.len(), 2);
    }

    #[test]
    fn a_fill_that_raced_a_change_does_not_land() {
        let cache = HolderCache::new(1 << 20);
        let (found, seen) = cache.contents(&[ContentRef(1), ContentRef(2)]);
        assert!(found.iter().all(Option::is_none));
        // A write commits and invalidates while the fill was reading the old rows.
        cache.forget_contents(&[ContentRef(7)]);
        cache.fill_contents(seen, &[holders(1, 3)]);
        assert!(cache.contents(&[ContentRef(1)]).0[0].is_none());
        // A fill that started after it lands, and a later change of that content drops it.
        let (_, seen) = cache.contents(&[ContentRef(1)]);
        cache.fill_contents(seen, &[holders(1, 3), holders(2, 1)]);
        assert!(
            cache
                .contents(&[ContentRef(1), ContentRef(2)])
                .0
                .iter()
                .all(Option::is_some)
        );
        cache.forget_contents(&[ContentRef(1)]);
        let (found, _) = cache.contents(&[ContentRef(1), ContentRef(2)]);
        assert!(found[0].is_none() && found[1].is_some());
        cache.forget_all_contents();
        assert!(cache.contents(&[ContentRef(2)]).0[0].is_none());

        let card = Arc::new(PeerCard {
            key: PeerId::from_bytes([3; 32]),
            nickname: "n".into(),
            ip: None,
            port: 0,
            reachability: Reachability::Firewalled,
            transport: peerdex_shared::api::PeerTransport::Tls,
            registered_at: 0,
        });
        let seen = cache.peer(PeerRef(5)).unwrap_err();
        cache.forget_peer(PeerRef(6));
        cache.fill_peer(seen, PeerRef(5), card.clone());
        let seen = cache.peer(PeerRef(5)).unwrap_err();
        cache.fill_peer(seen, PeerRef(5), card);
        assert!(cache.peer(PeerRef(5)).is_ok());
        cache.forget_peer(PeerRef(5));
        assert!(cache.peer(PeerRef(5)).is_err());
    }

    #[test]
    fn the_cache_stays_within_its_budget() {
        let one = holders(0, 100).bytes();
        let cache = HolderCache::new(one * 10);
        for content in 0..100 {
            let (_, seen) = cache.contents(&[ContentRef(content)]);
            cache.fill_contents(seen, &[holders(content, 100)]);
            assert!(cache.content_part().bytes <= one * 10);
        }
        let (found, _) = cache.contents(&(0..100).map(ContentRef).collect::<Vec<_>>());
        let kept = found.iter().filter(|f| f.is_some()).count();
        assert!((1..=10).contains(&kept), "{kept} entries kept");
        // The last one filled is always kept; one over a quarter of the budget never is.
        assert!(found[99].is_some());
        let (_, seen) = cache.contents(&[ContentRef(500)]);
        cache.fill_contents(seen, &[holders(500, 1000)]);
        assert!(cache.contents(&[ContentRef(500)]).0[0].is_none());
    }
}
