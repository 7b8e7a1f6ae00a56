//! What every request handler can reach: configuration, store, index, presence and guards.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db::{Counts, Db};
use crate::index::{IndexProgress, Nudger, SearchIndex};
use crate::limits::{IpRateLimiter, NonceStore, RateLimiter};
use crate::presence::Presence;
use crate::probe::Prober;
use crate::transfers::{ControlHub, Relay, ServerKey};

/// How long a registration nonce stays valid.
pub const NONCE_TTL: Duration = Duration::from_secs(120);

/// How long store-wide counts are cached.
pub const STATS_TTL: Duration = Duration::from_secs(5);

/// Shared state of the running server, grouped by concern: each handler shows by its field
/// path what it touches.
pub struct AppState {
    /// Effective configuration.
    pub config: Config,
    /// The source of truth and the search index derived from it.
    pub store: Store,
    /// Who is online.
    pub presence: Arc<Presence>,
    /// Guards against abuse and overload.
    pub guards: Guards,
    /// Background work and shutdown.
    pub lifecycle: Lifecycle,
    /// Help for firewalled peers: tickets, control channels, relay.
    pub firewall: Firewall,
    /// Cached store-wide counts.
    pub stats_cache: Mutex<Option<(Instant, Counts)>>,
    /// Standing searches (also held by the indexer, which matches them at ingest).
    pub wishes: Arc<crate::wishes::WishBook>,
    /// Open event streams of accounts.
    pub events: Arc<crate::events::EventHub>,
    /// Verified pieces that downloading peers serve.
    pub partials: crate::partials::PartialBook,
    /// Prometheus series (`/metrics`).
    pub metrics: crate::metrics::Metrics,
}

/// The store and the index.
pub struct Store {
    /// The store (source of truth).
    pub db: Arc<Db>,
    /// The search index (derived).
    pub index: SearchIndex,
    /// Wakes the indexer after writes.
    pub nudger: Nudger,
    /// What the indexer last committed.
    pub progress: IndexProgress,
}

/// Rate limits, nonces and the search queue.
pub struct Guards {
    /// Outstanding registration nonces.
    pub nonces: NonceStore,
    /// Challenges and registrations per client IP.
    pub registrations: IpRateLimiter,
    /// Every connect-back dial, rate-limited per target IP.
    pub prober: Prober,
    /// Reverse-connection and relay requests per downloader IP.
    pub transfers: IpRateLimiter,
    /// Searches allowed to run at once.
    pub search_slots: Semaphore,
    /// Failed sign-ins per account name key.
    pub failed_logins_by_name: RateLimiter<String>,
    /// Failed sign-ins per client IP.
    pub failed_logins_by_ip: IpRateLimiter,
    /// New accounts per client IP.
    pub new_accounts: IpRateLimiter,
    /// Password hashing runs at most this many at once (each takes `argon2_memory_kib`).
    pub password_slots: Semaphore,
    /// Messages per sending account.
    pub messages_by_sender: RateLimiter<crate::db::AccountRef>,
    /// Live transfer events per account (an agent reporting its downloads' changes).
    pub transfer_events: RateLimiter<crate::db::AccountRef>,
    /// Messages server-wide.
    pub messages_global: RateLimiter<()>,
    /// Requests per asking account.
    pub requests: RateLimiter<crate::db::AccountRef>,
    /// Room lines per speaking account.
    pub room_lines: RateLimiter<crate::db::AccountRef>,
    /// Contact requests per asking account.
    pub contact_requests: RateLimiter<crate::db::AccountRef>,
}

/// Background tasks and the two stages of shutdown.
pub struct Lifecycle {
    /// Background tasks spawned by requests (probes), awaited on shutdown.
    pub tasks: TaskTracker,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Cancelled when shutdown starts: long-lived streams (control channels, relays) end so that
    /// in-flight requests can drain.
    pub draining: CancellationToken,
}

/// What firewalled peers need from the server.
pub struct Firewall {
    /// The server's own key, which signs tickets.
    pub server_key: ServerKey,
    /// Open control channels of agents.
    pub control: Arc<ControlHub>,
    /// The relay of last resort.
    pub relay: Arc<Relay>,
}

impl AppState {
    /// Store-wide counts, cached for [`STATS_TTL`]. Blocking (reads SQLite on a miss).
    pub fn counts(&self) -> Result<Counts, crate::db::DbError> {
        let cached = *self.stats_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, counts)) = cached
            && at.elapsed() < STATS_TTL
        {
            return Ok(counts);
        }
        let counts = self.store.db.counts()?;
        *self.stats_cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), counts));
        Ok(counts)
    }

    /// Puts a peer offline at once: its session ends, its control channel closes (the agent
    /// sees it within a second) and it leaves presence, so its files leave results.
    pub async fn disconnect_peer(
        &self,
        key: &peerdex_shared::PeerId,
    ) -> Result<(), crate::http::ApiError> {
        self.firewall.control.detach(key);
        let (db, key) = (self.store.db.clone(), *key);
        let peer = crate::http::run_blocking(move || -> Result<_, crate::db::DbError> {
            let peer = db.peer_by_key(&key)?;
            if let Some(peer) = &peer {
                db.end_session(peer.id)?;
            }
            Ok(peer)
        })
        .await??;
        if let Some(peer) = peer {
            self.presence.mark_offline(peer.id);
        }
        Ok(())
    }

    /// Whether `ip` is one of the configured trusted proxies.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&ip))
    }
}
