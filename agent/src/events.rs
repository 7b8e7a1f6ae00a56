//! The agent's inner signals: how one part tells another that there is work for it. Every
//! task gets the one [`Events`] and sees from its field names what it may wake.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

/// A path of a share to look at again: a file event, a file that changed while it was hashed,
/// or one that no longer matched its hash when a peer asked for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RescanPath {
    /// Share name.
    pub share: String,
    /// Path within the share (`""`: its root).
    pub rel: String,
}

/// The signals between the scan loop, the hash thread, the sync loop and the file server.
#[derive(Debug)]
pub struct Events {
    /// The catalog changed: the sync loop sends the difference to the index server.
    pub catalog_changed: Notify,
    /// Files wait for a hash: the hash thread wakes.
    pub hash_wanted: Notify,
    /// Paths for the scan loop to rescan (it debounces bursts).
    rescans: mpsc::UnboundedSender<RescanPath>,
}

impl Events {
    /// The signals, and the receiving end of the rescan queue (for the scan loop).
    pub fn new() -> (Arc<Events>, mpsc::UnboundedReceiver<RescanPath>) {
        let (rescans, receiver) = mpsc::unbounded_channel();
        let events = Events {
            catalog_changed: Notify::new(),
            hash_wanted: Notify::new(),
            rescans,
        };
        (Arc::new(events), receiver)
    }

    /// Queues `rel` of `share` for a rescan. Lost only when the scan loop has stopped, and then
    /// the agent is stopping.
    pub fn rescan(&self, share: &str, rel: String) {
        let _ = self.rescans.send(RescanPath {
            share: share.to_owned(),
            rel,
        });
    }

    /// Work was queued that both the hash thread and the sync loop may have to act on.
    pub fn scanned(&self) {
        self.hash_wanted.notify_one();
        self.catalog_changed.notify_one();
    }
}
