//! The agent: turns shared folders into a live, searchable share and serves the bytes.
//!
//! Data flow: `scan` walks the shares into the `catalog` (SQLite in the state directory); `hash`
//! hashes what is new or changed; `sync` sends the difference to the index server; `watch`
//! turns file events into targeted rescans; `serve` answers other peers from the catalog;
//! `control` answers `peerdex status`. Every long-running part stops on one cancellation token
//! and is awaited by [`AgentHandle::shutdown`].

pub mod catalog;
pub mod channel;
pub mod config;
pub mod control;
pub mod hash;
pub mod progress;
pub mod scan;
pub mod serve;
pub mod slots;
pub mod sync;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use peerdex_shared::PeerId;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use crate::Identity;
use catalog::{Catalog, ShareCounts};
pub use config::AgentConfig;
use config::Share;
use progress::{Progress, ProgressSnapshot};
use scan::Scanner;
use serve::{FileServer, UploadInfo};
use sync::{LinkStatus, SharedLink, Syncer};

/// File name of the key in the state directory.
pub const KEY_FILE: &str = "peer.key";

/// One share in the status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShareStatus {
    /// Name.
    pub name: String,
    /// Folder.
    pub root: PathBuf,
    /// Counts from the catalog.
    #[serde(flatten)]
    pub counts: ShareCounts,
}

/// Uploads in the status.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UploadStatus {
    /// Slots configured.
    pub slots: usize,
    /// Uploads running.
    pub active: Vec<UploadInfo>,
    /// Requests waiting for a slot.
    pub queued: usize,
    /// Content bytes sent since start.
    pub bytes_sent: u64,
    /// Uploads completed since start.
    pub completed: u64,
    /// Requests refused for lack of a slot since start.
    pub refused: u64,
}

/// What `peerdex status` shows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AgentStatus {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our nickname.
    pub nick: String,
    /// Where the file server listens (none: inbound connections are not accepted).
    pub serving: Option<SocketAddr>,
    /// Where `peerdex get` puts files while this agent runs.
    pub download_dir: PathBuf,
    /// The index server connection.
    pub server: LinkStatus,
    /// Catalog changes not yet confirmed by the server (0: the server's list is current).
    pub unsynced_changes: u64,
    /// Shares and their counts.
    pub shares: Vec<ShareStatus>,
    /// Scan and hash progress.
    pub progress: ProgressSnapshot,
    /// Uploads.
    pub uploads: UploadStatus,
}

/// A running agent.
pub struct AgentHandle {
    /// Address of the file server, when listening.
    pub serve_addr: Option<SocketAddr>,
    /// Our peer id.
    pub peer_id: PeerId,
    status: Arc<dyn Fn() -> AgentStatus + Send + Sync>,
    stop: CancellationToken,
    tasks: TaskTracker,
    hasher: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
}

impl std::fmt::Debug for AgentHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentHandle")
            .field("serve_addr", &self.serve_addr)
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl AgentHandle {
    /// The agent's status now.
    pub fn status(&self) -> AgentStatus {
        (self.status)()
    }

    /// Stops every part (logging out of the server) and waits for them.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Some(hasher) = self.hasher.take() {
            let _ = tokio::task::spawn_blocking(move || hasher.join()).await;
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Starts the agent: opens the state, binds the file server and control socket, and spawns the
/// scanner, hasher, watcher and server sync.
pub async fn start(config: AgentConfig) -> anyhow::Result<AgentHandle> {
    std::fs::create_dir_all(&config.state)
        .with_context(|| format!("creating state directory {}", config.state.display()))?;
    let identity = Identity::load_or_create(&config.state.join(KEY_FILE))?;
    let peer_id = identity.peer_id();
    let nick = config
        .nick
        .clone()
        .unwrap_or_else(|| format!("peer-{}", &peer_id.to_string()[..8]));
    let (control_listener, socket) = control::bind(&config.state).await?;
    let catalog = Arc::new(
        Catalog::open(&config.state)
            .with_context(|| format!("opening the catalog in {}", config.state.display()))?,
    );
    let names: Vec<String> = config.shares.iter().map(|s| s.name.clone()).collect();
    let unshared = catalog.retain_shares(&names)?;
    if unshared > 0 {
        info!(
            files = unshared,
            "files of unshared folders will be removed from the index"
        );
    }
    let listener = match config.listen {
        Some(addr) => Some(match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            // `[::]` on a system without IPv6: the same port on every IPv4 address.
            Err(_) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
                let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                TcpListener::bind(v4)
                    .await
                    .with_context(|| format!("cannot listen on {addr} or {v4}"))?
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }),
        None => None,
    };
    let serve_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let progress = Arc::new(Progress::default());
    let changed = Arc::new(Notify::new());
    let wake_hasher = Arc::new(Notify::new());
    let (rescan_tx, rescan_rx) = mpsc::unbounded_channel::<(String, String)>();
    let roots: HashMap<String, Share> = config
        .shares
        .iter()
        .map(|s| (s.name.clone(), s.clone()))
        .collect();

    let files = FileServer::new(
        catalog.clone(),
        roots.clone(),
        identity.clone(),
        config.upload.clone(),
        rescan_tx.clone(),
    );
    if let Some(listener) = listener {
        tasks.spawn(files.clone().serve(listener, stop.clone()));
    }

    let hasher = {
        let inputs = hash::HashLoop {
            catalog: catalog.clone(),
            roots,
            threads: config.hash_threads(),
            progress: progress.clone(),
            wake: wake_hasher.clone(),
            changed: changed.clone(),
            rescan: rescan_tx.clone(),
        };
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("peerdex-hash".into())
            .spawn(move || {
                if let Err(e) = hash::run(inputs, stop) {
                    error!(error = %e, "hashing stopped");
                }
            })
            .context("starting the hash thread")?
    };

    let link: SharedLink = Arc::new(Mutex::new(LinkStatus::default()));
    let (sessions, session_updates) = tokio::sync::watch::channel(None);
    tasks.spawn(
        channel::Channel::new(
            config.server.clone(),
            session_updates,
            files.clone(),
            link.clone(),
        )
        .run(stop.clone())
        .instrument(info_span!("control")),
    );
    let syncer = Syncer {
        url: config.server.clone(),
        identity: identity.clone(),
        nick: nick.clone(),
        port: serve_addr.map_or(0, |a| a.port()),
        catalog: catalog.clone(),
        changed: changed.clone(),
        link: link.clone(),
        sessions,
    };
    tasks.spawn(syncer.run(stop.clone()).instrument(info_span!("sync")));

    let scanner = Arc::new(
        Scanner::new(catalog.clone(), progress.clone(), config.walk_threads())
            .with_stop(stop.clone()),
    );
    tasks.spawn(
        scan_loop(
            ScanLoop {
                scanner,
                shares: config.shares.clone(),
                config: config.clone(),
                progress: progress.clone(),
                wake_hasher,
                changed,
                rescan_tx,
                rescan_rx,
                catalog: catalog.clone(),
            },
            stop.clone(),
        )
        .instrument(info_span!("scan")),
    );
    tasks.spawn(progress::report(
        progress.clone(),
        Duration::from_secs(10),
        stop.clone(),
    ));

    let status: Arc<dyn Fn() -> AgentStatus + Send + Sync> = {
        let shares = config.shares.clone();
        let download_dir = config.download_dir.clone();
        let slots = config.upload.slots;
        let catalog = catalog.clone();
        Arc::new(move || {
            let reader = catalog.reader();
            let counts: HashMap<String, ShareCounts> = reader
                .as_ref()
                .ok()
                .and_then(|r| Catalog::counts(r).ok())
                .map(|c| c.into_iter().collect())
                .unwrap_or_default();
            let unsynced_changes = reader
                .as_ref()
                .ok()
                .and_then(|r| Catalog::pending_count(r).ok())
                .unwrap_or(0);
            let (_, queued) = files.slot_usage();
            AgentStatus {
                peer_id,
                nick: nick.clone(),
                serving: serve_addr,
                download_dir: download_dir.clone(),
                server: link.lock().map(|l| l.clone()).unwrap_or_default(),
                unsynced_changes,
                shares: shares
                    .iter()
                    .map(|s| ShareStatus {
                        name: s.name.clone(),
                        root: s.root.clone(),
                        counts: counts.get(&s.name).cloned().unwrap_or_default(),
                    })
                    .collect(),
                progress: progress.snapshot(),
                uploads: UploadStatus {
                    slots,
                    active: files.stats.active(),
                    queued,
                    bytes_sent: files.stats.bytes_sent.load(Ordering::Relaxed),
                    completed: files.stats.completed.load(Ordering::Relaxed),
                    refused: files.stats.refused.load(Ordering::Relaxed),
                },
            }
        })
    };
    tasks.spawn(control::serve(
        control_listener,
        status.clone(),
        stop.clone(),
    ));

    Ok(AgentHandle {
        serve_addr,
        peer_id,
        status,
        stop,
        tasks,
        hasher: Some(hasher),
        socket,
    })
}

struct ScanLoop {
    scanner: Arc<Scanner>,
    shares: Vec<Share>,
    config: AgentConfig,
    progress: Arc<Progress>,
    wake_hasher: Arc<Notify>,
    changed: Arc<Notify>,
    rescan_tx: mpsc::UnboundedSender<(String, String)>,
    rescan_rx: mpsc::UnboundedReceiver<(String, String)>,
    catalog: Arc<Catalog>,
}

/// Initial full scan, then targeted rescans from events and periodic full rescans.
async fn scan_loop(mut state: ScanLoop, stop: CancellationToken) {
    let full_scan = |state: &ScanLoop| {
        let scanner = state.scanner.clone();
        let shares = state.shares.clone();
        let progress = state.progress.clone();
        let catalog = state.catalog.clone();
        async move {
            progress.scanning.store(true, Ordering::Relaxed);
            let started = Instant::now();
            let outcome = tokio::task::spawn_blocking(move || {
                for share in &shares {
                    match scanner.scan(share, "", true) {
                        Ok(report) => info!(
                            share = %share.name,
                            dirs = report.dirs,
                            files = report.files,
                            changed = report.changed,
                            unshareable_names = report.unshareable_names,
                            unreadable_dirs = report.unreadable_dirs,
                            "scan finished"
                        ),
                        Err(e) => error!(share = %share.name, error = %e, "scan failed"),
                    }
                }
                let _ = catalog.collect_garbage();
            })
            .await;
            if outcome.is_err() {
                error!("the scan task panicked");
            }
            progress.scanning.store(false, Ordering::Relaxed);
            info!(elapsed = ?started.elapsed(), "all shares scanned");
        }
    };
    full_scan(&state).await;
    state.wake_hasher.notify_one();
    state.changed.notify_one();

    let mut watching = None;
    let mut interval = Duration::from_secs(state.config.scan.rescan_interval_secs.max(1));
    if state.config.scan.watch {
        match watch::watch(&state.shares, state.rescan_tx.clone()) {
            Ok(w) => watching = Some(w),
            Err(e) => {
                interval = Duration::from_secs(state.config.scan.poll_interval_secs.max(1));
                warn!(
                    error = %e,
                    poll_every = ?interval,
                    "cannot watch the shares for changes (on Linux, raise fs.inotify.max_user_watches); \
                     falling back to rescanning them periodically"
                );
            }
        }
    }
    let debounce = Duration::from_millis(state.config.scan.debounce_ms);
    let mut next_full = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next_full) => {
                full_scan(&state).await;
                next_full = tokio::time::Instant::now() + interval;
            }
            first = state.rescan_rx.recv() => {
                let Some(first) = first else { break };
                // Debounce: a burst of events (a copy, an unpacked archive) becomes one rescan.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(debounce) => {}
                }
                let mut paths = BTreeSet::from([first]);
                while let Ok(more) = state.rescan_rx.try_recv() {
                    paths.insert(more);
                }
                let scanner = state.scanner.clone();
                let shares = state.shares.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for (name, rel) in paths {
                        let Some(share) = shares.iter().find(|s| s.name == name) else {
                            continue;
                        };
                        if let Err(e) = scanner.rescan_path(share, &rel) {
                            error!(share = %name, path = %rel, error = %e, "rescan failed");
                        }
                    }
                })
                .await;
            }
        }
        state.wake_hasher.notify_one();
        state.changed.notify_one();
    }
    drop(watching);
}
