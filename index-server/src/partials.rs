//! Partial sources (PROTOCOL §11.4): the verified pieces of downloads in progress that their
//! agents serve. Kept in memory only: an announcement is about a moment (it changes every few
//! seconds and means nothing once the peer is offline), and an agent announces again when it
//! registers, so a restarted server learns them again within seconds.

use std::collections::HashMap;
use std::sync::RwLock;

use peerdex_shared::FileHash;
use peerdex_shared::api::PartialEntry;

use crate::db::PeerRef;

/// Every peer's current announcement.
#[derive(Debug, Default)]
pub struct PartialBook {
    inner: RwLock<Book>,
}

#[derive(Debug, Default)]
struct Book {
    by_peer: HashMap<PeerRef, Vec<PartialEntry>>,
    by_hash: HashMap<FileHash, Vec<PeerRef>>,
}

impl PartialBook {
    /// Replaces what `peer` serves with `entries` (none: it forgets the peer).
    pub fn replace(&self, peer: PeerRef, entries: Vec<PartialEntry>) {
        let mut book = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = book.by_peer.remove(&peer) {
            for entry in old {
                if let Some(peers) = book.by_hash.get_mut(&entry.hash) {
                    peers.retain(|p| *p != peer);
                    if peers.is_empty() {
                        book.by_hash.remove(&entry.hash);
                    }
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        for entry in &entries {
            let peers = book.by_hash.entry(entry.hash).or_default();
            if !peers.contains(&peer) {
                peers.push(peer);
            }
        }
        book.by_peer.insert(peer, entries);
    }

    /// The peers serving pieces of `hash`, with their announcement of it.
    pub fn holders(&self, hash: &FileHash) -> Vec<(PeerRef, PartialEntry)> {
        let book = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let Some(peers) = book.by_hash.get(hash) else {
            return Vec::new();
        };
        peers
            .iter()
            .filter_map(|peer| {
                let entry = book.by_peer.get(peer)?.iter().find(|e| e.hash == *hash)?;
                Some((*peer, entry.clone()))
            })
            .collect()
    }

    /// Whether `peer` serves pieces of `hash`.
    pub fn serves(&self, peer: PeerRef, hash: &FileHash) -> bool {
        let book = self.inner.read().unwrap_or_else(|p| p.into_inner());
        book.by_peer
            .get(&peer)
            .is_some_and(|entries| entries.iter().any(|e| e.hash == *hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_shared::pieces::PieceSet;

    fn entry(n: u8) -> PartialEntry {
        PartialEntry {
            hash: FileHash::from_bytes([n; 32]),
            size: 3 << 20,
            name: format!("f{n}"),
            pieces: PieceSet::from_done(&[true, false, true]),
        }
    }

    #[test]
    fn an_announcement_replaces_the_last_one() {
        let book = PartialBook::default();
        book.replace(PeerRef(1), vec![entry(1), entry(2)]);
        book.replace(PeerRef(2), vec![entry(2)]);
        assert_eq!(book.holders(&entry(2).hash).len(), 2);
        book.replace(PeerRef(1), vec![entry(3)]);
        assert!(book.holders(&entry(1).hash).is_empty());
        assert_eq!(book.holders(&entry(2).hash).len(), 1);
        assert!(book.serves(PeerRef(1), &entry(3).hash));
        book.replace(PeerRef(1), Vec::new());
        assert!(!book.serves(PeerRef(1), &entry(3).hash));
    }
}
