//! Live events for accounts (PROTOCOL §10.1): who listens, and fan-out.
//!
//! Each open `GET /api/v1/events` stream is a bounded queue. Publishing never waits: a stream
//! whose queue is full is dropped (its client reconnects with `Last-Event-ID` and the durable
//! events it missed are replayed from the `events` table), so one reader that never reads costs
//! the server one full queue, not unbounded memory. Agents get the same events on their control
//! channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use peerdex_shared::social::EventEnvelope;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::db::AccountRef;

/// Events queued per stream before a slow reader is dropped.
pub const STREAM_QUEUE: usize = 256;

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefusal {
    /// `social.max_event_streams` are open.
    #[error("the server has {0} event streams open, its limit (social.max_event_streams)")]
    Full(usize),
    /// The account has `social.max_event_streams_per_account` open.
    #[error("this account has {0} event streams open, the limit per account")]
    AccountFull(usize),
}

struct Listener {
    id: u64,
    tx: mpsc::Sender<EventEnvelope>,
}

/// The open event streams, by account.
pub struct EventHub {
    listeners: Mutex<HashMap<AccountRef, Vec<Listener>>>,
    next_id: AtomicU64,
    slots: Arc<Semaphore>,
    max_streams: usize,
    per_account: usize,
}

/// One open stream: its queue, and its place in the hub (released on drop).
pub struct Subscription {
    /// Events for the stream, in order.
    pub events: mpsc::Receiver<EventEnvelope>,
    hub: Arc<EventHub>,
    account: AccountRef,
    id: u64,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut listeners = self.hub.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = listeners.get_mut(&self.account) {
            list.retain(|l| l.id != self.id);
            if list.is_empty() {
                listeners.remove(&self.account);
            }
        }
    }
}

impl EventHub {
    /// A hub allowing `max_streams` streams in all and `per_account` per account.
    pub fn new(max_streams: usize, per_account: usize) -> Arc<EventHub> {
        Arc::new(EventHub {
            listeners: Mutex::default(),
            next_id: AtomicU64::new(1),
            slots: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            per_account,
        })
    }

    /// Opens a stream for `account`.
    pub fn subscribe(self: &Arc<Self>, account: AccountRef) -> Result<Subscription, StreamRefusal> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| StreamRefusal::Full(self.max_streams))?;
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let list = listeners.entry(account).or_default();
        list.retain(|l| !l.tx.is_closed());
        if list.len() >= self.per_account {
            return Err(StreamRefusal::AccountFull(self.per_account));
        }
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        list.push(Listener { id, tx });
        Ok(Subscription {
            events: rx,
            hub: self.clone(),
            account,
            id,
            _slot: slot,
        })
    }

    /// Queues `event` on every stream of `account`; returns how many took it. A stream whose
    /// queue is full is closed (the client replays what it missed after reconnecting).
    pub fn publish(&self, account: AccountRef, event: &EventEnvelope) -> usize {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = listeners.get_mut(&account) else {
            return 0;
        };
        let mut took = 0;
        list.retain(|l| match l.tx.try_send(event.clone()) {
            Ok(()) => {
                took += 1;
                true
            }
            Err(_) => false,
        });
        if list.is_empty() {
            listeners.remove(&account);
        }
        took
    }

    /// Ends every stream of `account` (banned or disabled: it must not hear more).
    pub fn disconnect(&self, account: AccountRef) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&account);
    }

    /// Whether `account` has a stream open.
    pub fn is_listening(&self, account: AccountRef) -> bool {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&account)
            .is_some_and(|l| l.iter().any(|l| !l.tx.is_closed()))
    }

    /// How many streams are open.
    pub fn open_streams(&self) -> usize {
        self.max_streams - self.slots.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peerdex_shared::social::Event;

    fn event(n: u64) -> EventEnvelope {
        EventEnvelope {
            id: Some(n),
            at: 0,
            event: Event::ContactRequest { from: "a".into() },
        }
    }

    #[test]
    fn a_reader_that_never_reads_is_dropped_not_buffered_forever() {
        let hub = EventHub::new(4, 2);
        let account = AccountRef(1);
        let mut reader = hub.subscribe(account).unwrap_or_else(|e| panic!("{e}"));
        let stalled = hub.subscribe(account).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hub.subscribe(account).err(),
            Some(StreamRefusal::AccountFull(2))
        );
        for n in 0..STREAM_QUEUE as u64 {
            assert_eq!(hub.publish(account, &event(n)), 2);
            assert!(reader.events.try_recv().is_ok());
        }
        // The stalled stream's queue is full now: the next event drops it, the reader goes on.
        assert_eq!(hub.publish(account, &event(999)), 1);
        assert_eq!(hub.publish(AccountRef(2), &event(1)), 0);
        drop(stalled);
        drop(reader);
        assert!(!hub.is_listening(account));
        assert_eq!(hub.open_streams(), 0);
    }

    #[test]
    fn the_server_wide_cap_holds() {
        let hub = EventHub::new(1, 5);
        let _one = hub
            .subscribe(AccountRef(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            hub.subscribe(AccountRef(2)).err(),
            Some(StreamRefusal::Full(1))
        );
    }
}
