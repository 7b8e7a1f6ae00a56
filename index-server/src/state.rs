//! What every request handler can reach: configuration, store, index, presence and guards.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::{Counts, Db};
use crate::index::{Nudger, SearchIndex};
use crate::limits::{IpRateLimiter, NonceStore};
use crate::presence::Presence;
use crate::probe::Prober;
use crate::transfers::{ControlHub, Relay, ServerKey};

/// How long a registration nonce stays valid.
pub const NONCE_TTL: Duration = Duration::from_secs(120);

/// How long store-wide counts are cached.
pub const STATS_TTL: Duration = Duration::from_secs(5);

/// Shared state of the running server.
pub struct AppState {
    /// Effective configuration.
    pub config: Config,
    /// The store (source of truth).
    pub db: Arc<Db>,
    /// The search index (derived).
    pub index: SearchIndex,
    /// Wakes the indexer after writes.
    pub nudger: Nudger,
    /// Who is online.
    pub presence: Arc<Presence>,
    /// Outstanding registration nonces.
    pub nonces: NonceStore,
    /// Challenges and registrations per client IP.
    pub registrations: IpRateLimiter,
    /// Every connect-back dial, rate-limited per target IP.
    pub prober: Prober,
    /// Searches allowed to run at once.
    pub search_slots: Semaphore,
    /// Cached store-wide counts.
    pub stats_cache: Mutex<Option<(Instant, Counts)>>,
    /// Background tasks spawned by requests (probes), awaited on shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Cancelled when shutdown starts: long-lived streams (control channels, relays) end so that
    /// in-flight requests can drain.
    pub draining: CancellationToken,
    /// The server's own key, which signs tickets.
    pub server_key: ServerKey,
    /// Open control channels of agents.
    pub control: Arc<ControlHub>,
    /// The relay of last resort.
    pub relay: Arc<Relay>,
    /// Reverse-connection requests per downloader IP.
    pub transfers: IpRateLimiter,
}

impl AppState {
    /// Whether `ip` is one of the configured trusted proxies.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }
}
