//! Upload slots: how many files the agent sends at once, to whom, and in what order the others
//! wait.
//!
//! A request gets a slot when one is free, its peer is under the per-peer cap, and no request
//! that waited longer could take that slot. Otherwise it is put in (or keeps) its place in the
//! queue and is told its position; a queued request that does not ask again within the hold
//! time loses its place. A peer at its cap does not hold up the peers behind it, so one greedy
//! peer queueing many files cannot starve the others.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerdex_shared::{FileHash, PeerId};

/// Who a request counts against: the downloader's key when it proved it (a signed header, or
/// the ticket of a reverse or relayed connection), else its network (IPv6 /64). Relayed
/// connections all arrive from the server's address, so a key is what tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Downloader {
    /// A proven key.
    Key(PeerId),
    /// An address (its IPv6 /64 bucket).
    Net(IpAddr),
}

impl std::fmt::Display for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Downloader::Key(key) => write!(f, "peer {}", &key.to_string()[..12]),
            Downloader::Net(ip) => write!(f, "{ip}"),
        }
    }
}

/// Slot settings.
#[derive(Debug, Clone, Copy)]
pub struct SlotLimits {
    /// Concurrent uploads.
    pub slots: usize,
    /// Concurrent uploads per downloader (its key, else its address).
    pub per_peer: usize,
    /// Longest queue.
    pub queue_len: usize,
    /// How long a queued request keeps its place without asking again.
    pub hold: Duration,
}

/// Most requests one peer may have waiting in the queue.
pub const MAX_QUEUED_PER_PEER: usize = 16;

/// Downloaders one network (address, or IPv6 /64) counts as at most on direct connections:
/// keys are free to make, so one host signing with many keys gets this many peers' share, no
/// more (a household behind one address still gets several).
pub const KEYS_PER_NETWORK: usize = 4;

#[derive(Debug)]
struct Waiting {
    peer: Downloader,
    net: Option<IpAddr>,
    hash: FileHash,
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct State {
    active: usize,
    per_peer: HashMap<Downloader, usize>,
    per_net: HashMap<IpAddr, usize>,
    queue: VecDeque<Waiting>,
}

/// The slot table.
#[derive(Debug)]
pub struct Slots {
    limits: SlotLimits,
    state: Mutex<State>,
}

/// A held slot; freed on drop.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<Slots>,
    peer: Downloader,
    net: Option<IpAddr>,
}

/// Why no slot was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// In the queue at this 1-based position.
    Queued(usize),
    /// The queue is full too.
    QueueFull,
}

/// What a request got: a slot, or its place in the queue.
pub type SlotResult = Result<SlotGuard, Refusal>;

impl Slots {
    /// An empty slot table.
    pub fn new(limits: SlotLimits) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a slot for `peer` to download `hash`; `net` is the address of a direct
    /// connection (none on a ticket's), which also has a cap.
    pub fn acquire(
        self: &Arc<Self>,
        peer: Downloader,
        net: Option<IpAddr>,
        hash: FileHash,
    ) -> SlotResult {
        let now = Instant::now();
        let mut state = self.lock();
        let hold = self.limits.hold;
        state
            .queue
            .retain(|w| now.duration_since(w.last_seen) < hold);
        let free = self.limits.slots.saturating_sub(state.active);
        let net_cap = self.limits.per_peer * KEYS_PER_NETWORK;
        let under_cap = |state: &State, p: &Downloader, n: &Option<IpAddr>| {
            state.per_peer.get(p).copied().unwrap_or(0) < self.limits.per_peer
                && n.is_none_or(|n| state.per_net.get(&n).copied().unwrap_or(0) < net_cap)
        };
        let mine = state
            .queue
            .iter()
            .position(|w| w.peer == peer && w.hash == hash);
        if free > 0 && under_cap(&state, &peer, &net) {
            // Only requests ahead of this one that could use a free slot now take precedence.
            let ahead = mine.unwrap_or(state.queue.len());
            let eligible_ahead = state
                .queue
                .iter()
                .take(ahead)
                .filter(|w| under_cap(&state, &w.peer, &w.net))
                .count();
            if eligible_ahead < free {
                if let Some(i) = mine {
                    state.queue.remove(i);
                }
                state.active += 1;
                *state.per_peer.entry(peer).or_insert(0) += 1;
                if let Some(net) = net {
                    *state.per_net.entry(net).or_insert(0) += 1;
                }
                return Ok(SlotGuard {
                    slots: self.clone(),
                    peer,
                    net,
                });
            }
        }
        let queued_by_peer = state.queue.iter().filter(|w| w.peer == peer).count();
        let queued_by_net = net.map_or(0, |n| {
            state.queue.iter().filter(|w| w.net == Some(n)).count()
        });
        match mine {
            Some(i) => {
                state.queue[i].last_seen = now;
                Err(Refusal::Queued(i + 1))
            }
            // One peer cannot fill the queue for everyone else.
            None if state.queue.len() >= self.limits.queue_len
                || queued_by_peer >= MAX_QUEUED_PER_PEER
                || queued_by_net >= MAX_QUEUED_PER_PEER * KEYS_PER_NETWORK =>
            {
                Err(Refusal::QueueFull)
            }
            None => {
                state.queue.push_back(Waiting {
                    peer,
                    net,
                    hash,
                    last_seen: now,
                });
                Err(Refusal::Queued(state.queue.len()))
            }
        }
    }

    /// (uploads running, requests queued).
    pub fn usage(&self) -> (usize, usize) {
        let state = self.lock();
        (state.active, state.queue.len())
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut state = self.slots.lock();
        state.active = state.active.saturating_sub(1);
        if let Some(n) = state.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_peer.remove(&self.peer);
            }
        }
        if let Some(net) = self.net
            && let Some(n) = state.per_net.get_mut(&net)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.per_net.remove(&net);
            }
        }
    }
}

/// The upload rate limit shared by all uploads (one second of burst).
pub type Bandwidth = peerdex_shared::rate::TokenBucket;

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(slots: usize, per_peer: usize) -> SlotLimits {
        SlotLimits {
            slots,
            per_peer,
            queue_len: 3,
            hold: Duration::from_secs(60),
        }
    }

    fn ip(n: u8) -> Downloader {
        Downloader::Net(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn downloaders_behind_one_address_are_told_apart_by_key() {
        // Relayed downloads all come from the server's address: by key, each has its own cap.
        let slots = Slots::new(limits(2, 1));
        let relay = IpAddr::from([10, 0, 0, 9]);
        let alice = Downloader::Key(PeerId::from_bytes([1; 32]));
        let bob = Downloader::Key(PeerId::from_bytes([2; 32]));
        let _a = slots.acquire(alice, None, h(1)).unwrap();
        assert!(slots.acquire(bob, None, h(1)).is_ok(), "bob is not alice");
        // By address they would have shared one cap.
        let slots = Slots::new(limits(2, 1));
        let _a = slots.acquire(Downloader::Net(relay), None, h(1)).unwrap();
        assert!(slots.acquire(Downloader::Net(relay), None, h(2)).is_err());
        // And one key is one downloader whatever address it comes from.
        let slots = Slots::new(limits(2, 1));
        let _a = slots.acquire(alice, None, h(1)).unwrap();
        assert!(slots.acquire(alice, None, h(2)).is_err());
    }

    #[test]
    fn one_host_signing_with_many_keys_gets_a_few_peers_share_and_no_more() {
        let slots = Slots::new(limits(8, 1));
        let host = Some(IpAddr::from([10, 0, 0, 7]));
        let mut held = Vec::new();
        for n in 0..KEYS_PER_NETWORK as u8 {
            let key = Downloader::Key(PeerId::from_bytes([n + 1; 32]));
            held.push(slots.acquire(key, host, h(n)).unwrap());
        }
        let another = Downloader::Key(PeerId::from_bytes([99; 32]));
        assert!(
            slots.acquire(another, host, h(9)).is_err(),
            "the host is at its cap"
        );
        // Others still get the free slots.
        assert!(
            slots
                .acquire(ip(1), Some(IpAddr::from([10, 0, 0, 1])), h(9))
                .is_ok()
        );
    }

    fn h(n: u8) -> FileHash {
        FileHash::from_bytes([n; 32])
    }

    #[test]
    fn queued_requests_go_first_and_keep_their_place() {
        let slots = Slots::new(limits(1, 1));
        let a = slots.acquire(ip(1), None, h(1)).unwrap();
        assert_eq!(
            slots.acquire(ip(2), None, h(2)).unwrap_err(),
            Refusal::Queued(1)
        );
        assert_eq!(
            slots.acquire(ip(3), None, h(3)).unwrap_err(),
            Refusal::Queued(2)
        );
        assert_eq!(
            slots.acquire(ip(2), None, h(2)).unwrap_err(),
            Refusal::Queued(1)
        );
        drop(a);
        // The newcomer and the second in line wait for the first in line.
        assert_eq!(
            slots.acquire(ip(3), None, h(3)).unwrap_err(),
            Refusal::Queued(2)
        );
        assert_eq!(
            slots.acquire(ip(4), None, h(4)).unwrap_err(),
            Refusal::Queued(3)
        );
        assert_eq!(
            slots.acquire(ip(5), None, h(5)).unwrap_err(),
            Refusal::QueueFull
        );
        let b = slots.acquire(ip(2), None, h(2)).unwrap();
        assert_eq!(slots.usage(), (1, 2));
        drop(b);
        assert!(slots.acquire(ip(3), None, h(3)).is_ok());
    }

    #[test]
    fn a_greedy_peer_does_not_hold_up_others() {
        let slots = Slots::new(limits(2, 1));
        let _greedy = slots.acquire(ip(1), None, h(1)).unwrap();
        // More files from the same peer wait, at its cap...
        assert!(matches!(
            slots.acquire(ip(1), None, h(2)),
            Err(Refusal::Queued(1))
        ));
        assert!(matches!(
            slots.acquire(ip(1), None, h(3)),
            Err(Refusal::Queued(2))
        ));
        // ...but another peer gets the free slot at once.
        assert!(slots.acquire(ip(2), None, h(4)).is_ok());
    }
}
