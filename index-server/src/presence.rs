//! Who is online: last heartbeat per peer, in memory, persisted to SQLite in batches.
//!
//! Searches take a snapshot ([`OnlineSet`]) so offline peers' files disappear from results the
//! moment their timeout passes, with no index change at all.

use std::sync::{Mutex, RwLock};

use crate::db::{PeerRef, unix_now};
use crate::index::OnlineFilter;

/// Last-seen times by peer id: positive while heartbeats count, negated once the peer said
/// goodbye (offline at once, last seen then).
pub struct Presence {
    last_seen: RwLock<Vec<i64>>,
    /// Peers seen since the last persist, so only those are written back.
    dirty: Mutex<Vec<PeerRef>>,
    offline_after: i64,
}

impl Presence {
    /// Starts from persisted times (so a restart does not mark everyone offline).
    pub fn new(persisted: &[(PeerRef, i64)], offline_after_secs: u64) -> Presence {
        let presence = Presence {
            last_seen: RwLock::new(Vec::new()),
            dirty: Mutex::new(Vec::new()),
            offline_after: offline_after_secs as i64,
        };
        for &(peer, at) in persisted {
            presence.set(peer, at);
        }
        presence
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        presence
    }

    fn set(&self, peer: PeerRef, at: i64) {
        let Ok(index) = usize::try_from(peer.0) else {
            return;
        };
        let mut seen = self.last_seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() <= index {
            seen.resize(index + 1, 0);
        }
        seen[index] = at;
        drop(seen);
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(peer);
    }

    /// Records a heartbeat (or registration) now.
    pub fn touch(&self, peer: PeerRef) {
        self.set(peer, unix_now());
    }

    /// Marks a peer offline at once (it said goodbye). The time is kept, negated: it is still
    /// when the peer was last seen (for contacts, and for the retention of its list).
    pub fn mark_offline(&self, peer: PeerRef) {
        self.set(peer, -unix_now());
    }

    /// Whether a peer is online now.
    pub fn is_online(&self, peer: PeerRef) -> bool {
        let cutoff = unix_now() - self.offline_after;
        let seen = self.last_seen.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(peer.0)
            .ok()
            .and_then(|i| seen.get(i))
            .is_some_and(|&at| at > 0 && at >= cutoff)
    }

    /// When a peer was last seen (heartbeat, registration, control-channel ping or goodbye);
    /// `None` for a peer never seen.
    pub fn last_seen(&self, peer: PeerRef) -> Option<i64> {
        let seen = self.last_seen.read().unwrap_or_else(|p| p.into_inner());
        usize::try_from(peer.0)
            .ok()
            .and_then(|i| seen.get(i).copied())
            .map(i64::abs)
            .filter(|&at| at > 0)
    }

    /// A snapshot of who is online now.
    pub fn snapshot(&self) -> OnlineSet {
        let cutoff = unix_now() - self.offline_after;
        let seen = self.last_seen.read().unwrap_or_else(|p| p.into_inner());
        let mut bits = vec![0u64; seen.len().div_ceil(64)];
        let mut count = 0;
        for (peer, &at) in seen.iter().enumerate() {
            if at > 0 && at >= cutoff {
                bits[peer / 64] |= 1 << (peer % 64);
                count += 1;
            }
        }
        OnlineSet { bits, count }
    }

    /// The heartbeat times to write back to SQLite since the last call.
    pub fn take_dirty(&self) -> Vec<(PeerRef, i64)> {
        let peers = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        let seen = self.last_seen.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<(PeerRef, i64)> = peers
            .into_iter()
            .filter_map(|p| Some((p, *seen.get(usize::try_from(p.0).ok()?)?)))
            .collect();
        out.sort_unstable();
        out.dedup_by_key(|(p, _)| *p);
        out
    }
}

/// Online peers at one instant, as a bitset over peer ids.
#[derive(Debug, Clone)]
pub struct OnlineSet {
    bits: Vec<u64>,
    count: u64,
}

impl OnlineSet {
    /// How many peers are online.
    pub fn count(&self) -> u64 {
        self.count
    }
}

impl OnlineFilter for OnlineSet {
    fn contains(&self, peer: PeerRef) -> bool {
        usize::try_from(peer.0)
            .ok()
            .and_then(|p| self.bits.get(p / 64).map(|w| w & (1 << (p % 64)) != 0))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_and_offline() {
        let now = unix_now();
        let presence = Presence::new(&[(PeerRef(3), now), (PeerRef(70), now - 1000)], 90);
        assert!(presence.is_online(PeerRef(3)));
        assert!(!presence.is_online(PeerRef(70)));
        let snap = presence.snapshot();
        assert!(
            snap.contains(PeerRef(3))
                && !snap.contains(PeerRef(70))
                && !snap.contains(PeerRef(4))
                && !snap.contains(PeerRef(10_000))
        );
        assert_eq!(snap.count(), 1);
        presence.touch(PeerRef(70));
        presence.mark_offline(PeerRef(3));
        assert!(presence.is_online(PeerRef(70)) && !presence.is_online(PeerRef(3)));
        // A goodbye keeps when the peer was last seen (for contacts and list retention).
        assert!(presence.last_seen(PeerRef(3)).is_some_and(|at| at >= now));
        assert_eq!(presence.last_seen(PeerRef(4)), None);
        let dirty = presence.take_dirty();
        assert_eq!(
            dirty.iter().map(|d| d.0).collect::<Vec<_>>(),
            [PeerRef(3), PeerRef(70)]
        );
        assert!(presence.take_dirty().is_empty());
    }
}
