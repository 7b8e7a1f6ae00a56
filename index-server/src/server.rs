//! The server as a value: open the data directory, bind, run until a shutdown future resolves.
//!
//! `Server::bind` does everything that can fail at start-up (database, index, socket) so the
//! caller can print the address only once the server is really ready. `Server::run` accepts
//! connections with hyper's HTTP/1 builder (header read timeout, connection cap), runs the
//! maintenance loop, and on shutdown lets in-flight requests finish, commits pending index work
//! and persists presence.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;
use tracing::{debug, info, warn};

use peerdex_shared::social::EventEnvelope;

use crate::config::{Config, secs};
use crate::db::AccountRef;
use crate::db::{Db, unix_now};
use crate::index::{Indexer, IndexerConfig, SearchIndex};
use crate::limits::{IpRateLimiter, NonceStore, RateLimiter};
use crate::presence::Presence;
use crate::state::{AppState, Firewall, Guards, Lifecycle, NONCE_TTL, Store};
use crate::transfers::{ControlHub, Relay, ServerKey};

/// A bound, ready-to-run index server.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    indexer: Indexer,
    /// HTTPS, when `[tls]` names a certificate.
    tls: Option<Arc<crate::tls::Terminator>>,
    /// New wish matches from the indexer, to push to the wishers.
    wish_events: tokio::sync::mpsc::UnboundedReceiver<(AccountRef, EventEnvelope)>,
}

/// Name of the SQLite file in the data directory.
pub const DB_FILE: &str = "peerdex.sqlite3";
/// Name of the tantivy directory in the data directory.
pub const INDEX_DIR: &str = "index";

impl Server {
    /// Opens the data directory (recovering from any crash), starts the indexer and binds.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        config.validate()?;
        std::fs::create_dir_all(&config.data)
            .with_context(|| format!("creating data directory {}", config.data.display()))?;
        let db_path = config.data.join(DB_FILE);
        let db = Arc::new(
            Db::open(&db_path)
                .with_context(|| format!("opening database {}", db_path.display()))?
                .with_holders_cache(config.search.holders_cache_mib.saturating_mul(1 << 20)),
        );
        let index_path = config.data.join(INDEX_DIR);
        let (index, watermark) = SearchIndex::open(&index_path)
            .with_context(|| format!("opening search index {}", index_path.display()))?;
        let wishes = crate::wishes::WishBook::load(
            &db,
            &crate::query::QueryLimits {
                max_query_bytes: config.search.max_query_bytes,
                max_terms: config.search.max_query_terms,
            },
            &index,
        )
        .context("loading wishes")?;
        let (wish_sink, wish_events) = tokio::sync::mpsc::unbounded_channel();
        let indexer = Indexer::start(
            index.clone(),
            db.clone(),
            watermark,
            IndexerConfig {
                commit_interval: Duration::from_millis(config.index.commit_interval_ms),
                writer_memory_bytes: config.index.writer_memory_bytes,
            },
            Some(crate::wishes::WishWatch::new(
                wishes.clone(),
                wish_sink,
                config.search.max_prefix_expansions,
            )),
        )
        .context("starting the indexer")?;
        let presence = Arc::new(Presence::new(
            &db.all_last_seen().context("loading presence")?,
            config.presence.offline_after_secs,
        ));
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(cert), Some(key)) => Some(Arc::new(crate::tls::Terminator::load(cert, key)?)),
            _ => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let relay = Relay::new(config.relay.clone());
        let metrics = crate::metrics::Metrics::new(crate::metrics::SharedCounters {
            relay_bytes: relay.bytes.clone(),
            relay_sessions: relay.sessions.clone(),
            holders_hits: db.holders_cache().hits.clone(),
            holders_misses: db.holders_cache().misses.clone(),
        });
        let state = Arc::new(AppState {
            metrics,
            store: Store {
                nudger: indexer.nudger(),
                progress: indexer.progress(),
                db,
                index,
            },
            presence,
            guards: Guards {
                nonces: NonceStore::new(NONCE_TTL),
                registrations: IpRateLimiter::new(config.probe.registrations_per_ip_per_minute),
                prober: crate::probe::Prober::new(
                    config.probe.per_ip_per_minute,
                    Duration::from_millis(config.probe.timeout_ms),
                ),
                transfers: IpRateLimiter::new(config.relay.transfers_per_ip_per_minute),
                search_slots: Semaphore::new(config.search.concurrency),
                failed_logins_by_name: RateLimiter::new(config.accounts.failed_logins_per_minute),
                failed_logins_by_ip: IpRateLimiter::new(
                    config.accounts.failed_logins_per_minute.saturating_mul(4),
                ),
                new_accounts: IpRateLimiter::per_hour(config.accounts.accounts_per_ip_per_hour),
                password_slots: Semaphore::new(2),
                messages_by_sender: RateLimiter::new(config.social.messages_per_minute),
                transfer_events: RateLimiter::new(TRANSFER_EVENTS_PER_MINUTE),
                messages_global: RateLimiter::new(config.social.messages_per_minute_global),
                contact_requests: RateLimiter::per_hour(config.social.contact_requests_per_hour),
                room_lines: RateLimiter::new(config.social.room_lines_per_minute),
                requests: RateLimiter::per_hour(config.social.requests_per_hour),
            },
            lifecycle: Lifecycle {
                tasks: TaskTracker::new(),
                shutdown: CancellationToken::new(),
                draining: CancellationToken::new(),
            },
            firewall: Firewall {
                server_key: ServerKey::load_or_create(&config.data)?,
                control: Arc::new(ControlHub::default()),
                relay,
            },
            stats_cache: Mutex::new(None),
            wishes,
            events: crate::events::EventHub::new(
                config.social.max_event_streams,
                config.social.max_event_streams_per_account,
            ),
            partials: Default::default(),
            config,
        });
        Ok(Server {
            listener,
            state,
            indexer,
            tls,
            wish_events,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The URL clients reach it at: `https://` when it terminates TLS.
    pub fn url(&self) -> anyhow::Result<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Server {
            listener,
            state,
            indexer,
            tls,
            wish_events,
        } = self;
        let reloader = tls.clone().map(|tls| tokio::spawn(reload_on_sighup(tls)));
        let wish_push = tokio::spawn(crate::social::push_wish_hits(state.clone(), wish_events));
        let maintenance = tokio::spawn(maintenance(state.clone()));
        let presence_watch = tokio::spawn(crate::social::watch_presence(state.clone()));
        let router = crate::http::router(state.clone());
        // Relay connections are upgraded, so hyper-util's graceful helper (which cannot watch
        // upgradeable connections) is replaced by a drain signal and a tracker.
        let connections = TaskTracker::new();
        let connection_slots = Arc::new(Semaphore::new(state.config.http.max_connections));
        let header_timeout = secs(state.config.http.header_read_timeout_secs);
        tokio::pin!(shutdown);
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Typically out of file descriptors: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
                debug!(%remote, "connection limit reached; closing new connection");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let secure = ConnectionSecurity { tls: tls.is_some() };
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(remote));
                    request.extensions_mut().insert(secure);
                    router.clone().call(request)
                });
            let lifecycle = (
                state.lifecycle.draining.clone(),
                state.lifecycle.shutdown.clone(),
            );
            let acceptor = tls.as_ref().map(|tls| tls.acceptor());
            connections.spawn(async move {
                match acceptor {
                    None => {
                        serve_connection(
                            TokioIo::new(stream),
                            service,
                            header_timeout,
                            lifecycle,
                            remote,
                        )
                        .await
                    }
                    // The handshake gets the time the request headers would get.
                    Some(acceptor) => {
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                serve_connection(
                                    TokioIo::new(stream),
                                    service,
                                    header_timeout,
                                    lifecycle,
                                    remote,
                                )
                                .await
                            }
                            Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                            Err(_) => debug!(%remote, "TLS handshake timed out"),
                        }
                    }
                }
                drop(slot);
            });
        }
        drop(listener);
        if let Some(reloader) = reloader {
            reloader.abort();
        }
        info!("shutting down: finishing in-flight requests");
        let grace = secs(state.config.http.shutdown_grace_secs);
        state.lifecycle.draining.cancel();
        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "in-flight requests did not finish in time; closing them"
            );
        }
        state.lifecycle.shutdown.cancel();
        state.lifecycle.tasks.close();
        state.lifecycle.tasks.wait().await;
        let _ = maintenance.await;
        let _ = presence_watch.await;
        wish_push.abort();
        persist_presence(&state).await;
        tokio::task::spawn_blocking(move || indexer.shutdown())
            .await
            .context("stopping the indexer")?;
        info!("shutdown complete");
        Ok(())
    }
}

/// Whether a request arrived over the server's own TLS (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSecurity {
    /// The connection is HTTPS, terminated here.
    pub tls: bool,
}

/// Serves HTTP/1 on one accepted connection (plain or TLS) until it ends, or gracefully past
/// the drain signal, or at once at shutdown.
async fn serve_connection<I, S>(
    io: I,
    service: S,
    header_timeout: Duration,
    (draining, abort): (CancellationToken, CancellationToken),
    remote: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming> + Send,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = draining.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                // Past the grace period: close it.
                () = abort.cancelled() => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// Reads the certificate files again at each SIGHUP (a renewal), keeping the old pair when the
/// new one does not load.
async fn reload_on_sighup(tls: Arc<crate::tls::Terminator>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
    else {
        warn!("cannot watch SIGHUP; certificate reloads need a restart");
        return;
    };
    while hangups.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "SIGHUP: TLS certificate not reloaded; keeping the current one")
            }
        }
    }
}

async fn persist_presence(state: &Arc<AppState>) {
    let seen = state.presence.take_dirty();
    let db = state.store.db.clone();
    match tokio::task::spawn_blocking(move || db.persist_last_seen(&seen)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "persisting presence failed"),
        Err(e) => warn!(error = %e, "persisting presence failed"),
    }
}

/// How often presence is persisted and stale rows are cleaned.
const MAINTENANCE_TICK: Duration = Duration::from_secs(2);
/// Rows deleted per cleanup transaction.
const CLEANUP_BATCH: i64 = 5000;
/// Cleanup transactions per tick, so a huge cleanup never starves the writers.
const CLEANUP_BATCHES_PER_TICK: usize = 20;

/// Live `transfer` events one account's agents may post per minute.
const TRANSFER_EVENTS_PER_MINUTE: u32 = 600;

/// Background upkeep: persist heartbeats, delete replaced generations, purge expired lists.
async fn maintenance(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(MAINTENANCE_TICK);
    let purge_every = secs(state.config.presence.purge_interval_secs);
    let mut last_purge = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.lifecycle.shutdown.cancelled() => return,
        }
        persist_presence(&state).await;
        let db = state.store.db.clone();
        let cleaned = tokio::task::spawn_blocking(move || {
            let mut total = 0;
            for _ in 0..CLEANUP_BATCHES_PER_TICK {
                match db.delete_stale_batch(CLEANUP_BATCH) {
                    Ok(0) => break,
                    Ok(n) => total += n,
                    Err(e) => {
                        warn!(error = %e, "cleaning replaced lists failed");
                        break;
                    }
                }
            }
            total
        })
        .await
        .unwrap_or(0);
        if cleaned > 0 {
            debug!(rows = cleaned, "cleaned replaced list generations");
        }
        if last_purge.elapsed() >= purge_every {
            last_purge = tokio::time::Instant::now();
            let cutoff = unix_now() - state.config.presence.retention_secs as i64;
            let db = state.store.db.clone();
            let social_retention = state.config.social.retention_days.saturating_mul(86_400);
            let report_retention = state.config.quarantine.retention_days;
            let purged = tokio::task::spawn_blocking(move || {
                let purged = db.expire_lists(cutoff);
                let _ = db.delete_orphan_contents(100_000);
                if let Err(e) = db.prune_social(social_retention) {
                    warn!(error = %e, "dropping old messages and events failed");
                }
                if let Err(e) = db.purge_reports(report_retention) {
                    warn!(error = %e, "dropping old source reports failed");
                }
                purged
            })
            .await;
            match purged {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    info!(peers = n, "purged lists of peers offline past retention");
                    state.store.nudger.nudge();
                }
                Ok(Err(e)) => warn!(error = %e, "purging expired lists failed"),
                Err(e) => warn!(error = %e, "purging expired lists failed"),
            }
        }
    }
}
