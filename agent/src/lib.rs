//! The agent: turns shared folders into a live, searchable share and serves the bytes.
//!
//! Data flow: `scan` walks the shares into the `catalog` (SQLite in the state directory); `hash`
//! hashes what is new or changed; `sync` sends the difference to the index server; `watch`
//! turns file events into targeted rescans; `serve` answers other peers from the catalog;
//! `control` answers `peerdex status`. Every long-running part stops on one cancellation token
//! and is awaited by [`AgentHandle::shutdown`].

mod catalog;
mod channel;
pub mod config;
pub mod control;
mod events;
mod hash;
mod link;
mod progress;
mod scan;
mod serve;
mod slots;
mod sync;
mod tags;
pub mod transfers;
mod watch;
pub mod web;

pub use catalog::{
    CATALOG_FILE, Destination, MIGRATIONS as CATALOG_MIGRATIONS, NewTransfer, ShareCounts, Stored,
    TransferRow,
};
pub use link::LinkStatus;
pub use progress::{ProgressSnapshot, Unshareable};
pub use serve::UploadInfo;

/// The agent's insides, for the benchmarks and fuzz targets only: not an API.
#[doc(hidden)]
pub mod bench {
    pub use crate::catalog::{Catalog, Stat};
    pub use crate::hash::hash_file;
    pub use crate::progress::Progress;
    pub use crate::scan::Scanner;
    pub use crate::serve::{RangeRequest, parse_range};
    pub use crate::tags::read_tags_at;
}

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use peerdex_shared::PeerId;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch as live};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, info_span, warn};

use catalog::Catalog;
pub use config::AgentConfig;
use config::{ConfigFile, Share, resolve_shares};
use control::{Controls, ShareChange};
use events::{Events, RescanPath};
use link::Link;
use peerdex_client::Identity;
use progress::Progress;
use scan::Scanner;
use serve::FileServer;
use sync::Syncer;

/// File name of the key in the state directory.
pub const KEY_FILE: &str = "peer.key";

/// One share in the status.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ShareStatus {
    /// Name.
    pub name: String,
    /// Folder.
    #[schema(value_type = String)]
    pub root: PathBuf,
    /// Counts from the catalog.
    #[serde(flatten)]
    pub counts: ShareCounts,
}

/// Uploads in the status.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AgentStatus {
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our nickname.
    pub nick: String,
    /// Where the file server listens (none: inbound connections are not accepted).
    #[schema(value_type = Option<String>)]
    pub serving: Option<SocketAddr>,
    /// Where the local web endpoint (`/metrics`) listens, if it does.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub ui: Option<SocketAddr>,
    /// Where `peerdex get` puts files while this agent runs.
    #[schema(value_type = String)]
    pub download_dir: PathBuf,
    /// The index server connection.
    pub server: LinkStatus,
    /// Catalog changes not yet confirmed by the server (0: the server's list is current).
    pub unsynced_changes: u64,
    /// Why the catalog could not be read for this status: the counts and downloads shown are
    /// then empty, not zero (absent: they were read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_error: Option<String>,
    /// Shares and their counts.
    pub shares: Vec<ShareStatus>,
    /// Files and folders left out because their names cannot be shared.
    #[serde(default)]
    pub unshareable: Vec<Unshareable>,
    /// Scan and hash progress.
    pub progress: ProgressSnapshot,
    /// Uploads.
    pub uploads: UploadStatus,
    /// Downloads not finished (queued, running, waiting, paused), with what each waits for.
    #[serde(default)]
    pub downloads: Vec<transfers::TransferView>,
}

/// What `peerdex transfers` shows.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TransferList {
    /// Downloads: open ones in the order they run, then the latest finished ones.
    pub downloads: Vec<transfers::TransferView>,
    /// Uploads running now.
    pub uploads: Vec<UploadInfo>,
    /// Requests waiting in our upload queue.
    pub uploads_queued: usize,
    /// Downloads run at once.
    pub max_active: usize,
}

/// The shares the agent serves now. The whole list is replaced when `peerdex share` or
/// `unshare` changed the config file; readers take the current list with `borrow()`.
pub type LiveShares = live::Receiver<Arc<Vec<Share>>>;

/// Shares by name, for lookups.
pub fn shares_by_name(shares: &[Share]) -> HashMap<String, Share> {
    shares.iter().map(|s| (s.name.clone(), s.clone())).collect()
}

/// A running agent.
pub struct AgentHandle {
    /// Address of the file server, when listening.
    pub serve_addr: Option<SocketAddr>,
    /// Address of the local web endpoint, when listening.
    pub ui_addr: Option<SocketAddr>,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Whether the file server speaks TLS (off only with `upload.plain_http`).
    pub tls: bool,
    controls: Arc<AgentControls>,
    stop: CancellationToken,
    failure: Failure,
    tasks: TaskTracker,
    hasher: Option<std::thread::JoinHandle<()>>,
    socket: PathBuf,
}

/// A failure no retry can mend (the server refuses our nickname, say): it stops the agent.
#[derive(Clone, Default)]
pub struct Failure {
    error: Arc<Mutex<Option<String>>>,
    failed: CancellationToken,
}

impl Failure {
    /// Records the failure (the first one counts) and wakes whoever waits for one.
    pub fn fail(&self, error: String) {
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
        self.failed.cancel();
    }

    /// Waits for a failure and returns what it was.
    pub async fn wait(&self) -> String {
        self.failed.cancelled().await;
        self.error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
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
        self.controls.status()
    }

    /// Reads the shares from the config file again and serves exactly those.
    pub fn reload_shares(&self) -> anyhow::Result<ShareChange> {
        self.controls.reload_shares()
    }

    /// The transfer queue.
    pub fn transfers(&self) -> &Arc<transfers::TransferQueue> {
        &self.controls.queue
    }

    /// Resolves when the agent hit a failure that retrying cannot mend, with the reason; it
    /// then does nothing useful and should be shut down.
    pub async fn failed(&self) -> String {
        self.failure.wait().await
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

/// What the control socket and [`AgentHandle`] reach: the parts status is read from, and the
/// live share list.
struct AgentControls {
    peer_id: PeerId,
    nick: String,
    serve_addr: Option<SocketAddr>,
    ui_addr: Option<SocketAddr>,
    config: AgentConfig,
    catalog: Arc<Catalog>,
    link: Arc<Link>,
    files: Arc<FileServer>,
    progress: Arc<Progress>,
    shares: live::Sender<Arc<Vec<Share>>>,
    /// `catalog_changed` when a reload changed the catalog (the sync loop sends the difference).
    events: Arc<Events>,
    /// Serialises reloads: two at once would both diff against the same old list.
    reloading: Mutex<()>,
    /// The downloads the agent owns.
    queue: Arc<transfers::TransferQueue>,
}

/// What the catalog says of the shares: counts per share and changes not yet sent. Reading it
/// scans the catalog (tens of ms at 200,000 files while hashing), which is why pages keep one.
#[derive(Debug, Clone, Default)]
struct CatalogCounts {
    shares: HashMap<String, ShareCounts>,
    unsynced_changes: u64,
    /// Why they could not be read (then they are empty).
    error: Option<String>,
}

impl AgentControls {
    fn catalog_counts(&self) -> CatalogCounts {
        match self.catalog.read(|r| Ok((r.counts()?, r.pending_count()?))) {
            Ok((counts, unsynced_changes)) => CatalogCounts {
                shares: counts.into_iter().collect(),
                unsynced_changes,
                error: None,
            },
            Err(e) => {
                // Said in the status, not taken for "nothing shared, nothing to send".
                warn!(error = %format!("{e:#}"), "reading the catalog's counts failed");
                CatalogCounts {
                    shares: HashMap::new(),
                    unsynced_changes: 0,
                    error: Some(format!("{e:#}")),
                }
            }
        }
    }

    /// The status with the catalog's part from `counts` (everything else read now).
    fn status_with(&self, counts: &CatalogCounts) -> AgentStatus {
        let unsynced_changes = counts.unsynced_changes;
        let mut catalog_error = counts.error.clone();
        let counts = &counts.shares;
        let downloads = match self.queue.list(0) {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "reading the transfer list failed");
                catalog_error.get_or_insert_with(|| format!("{e:#}"));
                Vec::new()
            }
        };
        let (_, queued) = self.files.slot_usage();
        let stats = &self.files.stats;
        AgentStatus {
            peer_id: self.peer_id,
            nick: self.nick.clone(),
            serving: self.serve_addr,
            ui: self.ui_addr,
            download_dir: self.config.download_dir.clone(),
            server: self.link.snapshot(),
            unsynced_changes,
            catalog_error,
            shares: self
                .shares
                .borrow()
                .iter()
                .map(|s| ShareStatus {
                    name: s.name.clone(),
                    root: s.root.clone(),
                    counts: counts.get(&s.name).cloned().unwrap_or_default(),
                })
                .collect(),
            unshareable: self.progress.unshareable(),
            progress: self.progress.snapshot(),
            uploads: UploadStatus {
                slots: self.config.upload.slots,
                active: stats.active(),
                queued,
                bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
                completed: stats.completed.load(Ordering::Relaxed),
                refused: stats.refused.load(Ordering::Relaxed),
            },
            downloads: downloads
                .into_iter()
                .filter(|t| !t.row.state.finished())
                .collect(),
        }
    }
}

impl Controls for AgentControls {
    fn status(&self) -> AgentStatus {
        self.status_with(&self.catalog_counts())
    }

    fn add_transfers(&self, new: &[NewTransfer]) -> anyhow::Result<Vec<u64>> {
        // The command line sends absolute paths; a relative one would be the agent's folder's.
        if let Some(relative) = new.iter().find(|t| match &t.destination {
            Destination::Dir(p) | Destination::File(p) => p.is_relative(),
        }) {
            anyhow::bail!(
                "the destination {:?} is relative: give the agent an absolute path",
                relative.destination
            );
        }
        Ok(self.queue.add(new)?)
    }

    fn transfers(&self, history: usize) -> anyhow::Result<TransferList> {
        let (_, queued) = self.files.slot_usage();
        Ok(TransferList {
            downloads: self.queue.list(history)?,
            uploads: self.files.stats.active(),
            uploads_queued: queued,
            max_active: self
                .config
                .download
                .max_active
                .unwrap_or(DEFAULT_MAX_ACTIVE),
        })
    }

    fn transfer_action(
        &self,
        id: u64,
        action: transfers::Action,
    ) -> anyhow::Result<transfers::TransferView> {
        Ok(self.queue.act(id, action)?)
    }

    fn reload_shares(&self) -> anyhow::Result<ShareChange> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.config.shares_file else {
            anyhow::bail!(
                "this agent was started with --share, so its shares come from the command line; \
                 restart it to share other folders"
            );
        };
        let file = ConfigFile::load(path)?;
        let (shares, _) = resolve_shares(&file.shares, &self.config.download, &self.config.state)?;
        let old: Vec<String> = self
            .shares
            .borrow()
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let names: Vec<String> = shares.iter().map(|s| s.name.clone()).collect();
        // The catalog first: a removed share's files leave it (and, by the next delta, the
        // index) before the file server and scanner see the new list.
        let removed_files = self.catalog.retain_shares(&names)?;
        self.progress.retain_unshareable(&names);
        let change = ShareChange {
            added: names.iter().filter(|n| !old.contains(n)).cloned().collect(),
            removed: old.iter().filter(|n| !names.contains(n)).cloned().collect(),
            shares: names,
        };
        self.shares.send_replace(Arc::new(shares));
        // Removed files, or changed visibility settings: the server's copy is to be brought up
        // to date (the sync loop finds out which).
        let _ = removed_files;
        self.events.catalog_changed.notify_one();
        Ok(change)
    }
}

/// Downloads run at once unless `download.max_active` says otherwise.
pub const DEFAULT_MAX_ACTIVE: usize = 3;

/// Starts the agent: opens the state, binds the file server and control socket, and spawns the
/// scanner, hasher, watcher and server sync.
pub async fn start(config: AgentConfig) -> anyhow::Result<AgentHandle> {
    let tls = !config.upload.plain_http;
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
    let ui_listener = match config.ui_listen {
        Some(addr) => web::bind(addr).await,
        None => None,
    };
    let ui_addr = ui_listener.as_ref().and_then(|l| l.local_addr().ok());

    let stop = CancellationToken::new();
    let failure = Failure::default();
    let tasks = TaskTracker::new();
    let progress = Arc::new(Progress::default());
    let (events, rescans) = Events::new();
    let (shares_tx, shares) = live::channel(Arc::new(config.shares.clone()));

    let link = Arc::new(Link::new(&config.server));
    let shelf = Arc::new(transfers::PartialShelf::default());
    let files = FileServer::new(
        catalog.clone(),
        shares.clone(),
        identity.clone(),
        config.upload.clone(),
        events.clone(),
        link.sessions(),
        shelf.clone(),
    )
    .context("making this peer's TLS certificate")?;
    if let Some(listener) = listener {
        tasks.spawn(files.clone().serve(listener, stop.clone()));
    }

    let hasher = {
        let inputs = hash::HashLoop {
            catalog: catalog.clone(),
            shares: shares.clone(),
            threads: config.hash_threads(),
            progress: progress.clone(),
            events: events.clone(),
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

    let queue = transfers::TransferQueue::new(
        catalog.clone(),
        transfers::QueueSettings {
            max_active: config
                .download
                .max_active
                .unwrap_or(DEFAULT_MAX_ACTIVE)
                .max(1),
            retry_max: Duration::from_secs(config.download.retry_max_secs.unwrap_or(10).max(1)),
            max_sources: config.download.max_sources.unwrap_or(4).max(1),
            history: config.download.history.unwrap_or(500),
            accept_connections: serve_addr.is_some(),
            share_partial: config.download.share_partial.unwrap_or(true),
        },
        identity.clone(),
        config.server.clone(),
        link.sessions(),
        shares.clone(),
        shelf,
    );
    tasks.spawn(
        queue
            .clone()
            .run(stop.clone())
            .instrument(info_span!("transfers")),
    );
    tasks.spawn(
        channel::Channel::new(
            config.server.clone(),
            files.clone(),
            link.clone(),
            Some(channel::AutoDownloads {
                queue: queue.clone(),
                dir: config.download_dir.clone(),
            }),
        )
        .run(stop.clone())
        .instrument(info_span!("control")),
    );
    let syncer = Syncer {
        url: config.server.clone(),
        identity: identity.clone(),
        nick: nick.clone(),
        port: serve_addr.map_or(0, |a| a.port()),
        transport: if config.upload.plain_http {
            peerdex_shared::api::PeerTransport::Plain
        } else {
            peerdex_shared::api::PeerTransport::Tls
        },
        catalog: catalog.clone(),
        events: events.clone(),
        link: link.clone(),
        failure: failure.clone(),
        shares: shares.clone(),
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
                shares: shares.clone(),
                config: config.clone(),
                progress: progress.clone(),
                events: events.clone(),
                rescans,
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

    let controls = Arc::new(AgentControls {
        peer_id,
        nick,
        serve_addr,
        ui_addr,
        config,
        catalog,
        link,
        files,
        progress,
        shares: shares_tx,
        events,
        reloading: Mutex::new(()),
        queue,
    });
    tasks.spawn(control::serve(
        control_listener,
        controls.clone(),
        stop.clone(),
    ));
    if let Some(listener) = ui_listener {
        let token = web::load_or_create_token(&controls.config.state)
            .context("making the web client's token (ui-token in the state directory)")?;
        let (web_controls, web_stop) = (controls.clone(), stop.clone());
        tasks.spawn(async move { web::serve(listener, web_controls, &token, web_stop).await });
    }

    Ok(AgentHandle {
        serve_addr,
        ui_addr,
        peer_id,
        tls,
        controls,
        stop,
        failure,
        tasks,
        hasher: Some(hasher),
        socket,
    })
}

struct ScanLoop {
    scanner: Arc<Scanner>,
    shares: LiveShares,
    config: AgentConfig,
    progress: Arc<Progress>,
    events: Arc<Events>,
    rescans: mpsc::UnboundedReceiver<RescanPath>,
    catalog: Arc<Catalog>,
}

impl ScanLoop {
    /// Scans `shares` in full, then collects the catalog's garbage.
    async fn full_scan(&self, shares: Vec<Share>) {
        let scanner = self.scanner.clone();
        let progress = self.progress.clone();
        let catalog = self.catalog.clone();
        progress.scanning.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = tokio::task::spawn_blocking(move || {
            for share in &shares {
                match scanner.scan_share(share) {
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
        info!(elapsed = ?started.elapsed(), "shares scanned");
    }

    /// Watches the shares that can be watched. Returns the watch and the poll interval to use:
    /// the full rescan interval when every share is watched, the poll interval otherwise.
    fn watch(&self, shares: &[Share]) -> (Option<watch::Watch>, Duration) {
        let full = Duration::from_secs(self.config.scan.rescan_interval_secs.max(1));
        let poll = Duration::from_secs(self.config.scan.poll_interval_secs.max(1));
        if !self.config.scan.watch {
            return (None, full);
        }
        match watch::watch(shares, self.events.clone()) {
            Ok((watching, missing)) if missing.is_empty() => (Some(watching), full),
            Ok((watching, missing)) => {
                // Watched once they exist: the next poll finds them and watches again.
                for share in missing {
                    warn!(share = %share.name, folder = %share.root.display(),
                        "shared folder does not exist (yet); it is shared once it is there");
                }
                (Some(watching), poll)
            }
            Err(e) => {
                warn!(
                    error = %e,
                    poll_every = ?poll,
                    "cannot watch the shares for changes (on Linux, raise fs.inotify.max_user_watches); \
                     falling back to rescanning them periodically"
                );
                (None, poll)
            }
        }
    }
}

/// Initial full scan, then targeted rescans from events, periodic full rescans, and scans of
/// shares added while running.
async fn scan_loop(mut state: ScanLoop, stop: CancellationToken) {
    let mut current: Arc<Vec<Share>> = state.shares.borrow_and_update().clone();
    state.full_scan(current.to_vec()).await;
    state.events.scanned();

    let (mut watching, mut interval) = state.watch(&current);
    let debounce = Duration::from_millis(state.config.scan.debounce_ms);
    let mut next_full = tokio::time::Instant::now() + interval;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next_full) => {
                state.full_scan(current.to_vec()).await;
                if interval < Duration::from_secs(state.config.scan.rescan_interval_secs.max(1)) {
                    // Some shares were not watched: try again (a folder may have appeared).
                    drop(watching.take());
                    (watching, interval) = state.watch(&current);
                }
                next_full = tokio::time::Instant::now() + interval;
            }
            changed = state.shares.changed() => {
                if changed.is_err() {
                    break;
                }
                let new: Arc<Vec<Share>> = state.shares.borrow_and_update().clone();
                let added: Vec<Share> = new
                    .iter()
                    .filter(|s| !current.iter().any(|c| c.name == s.name && c.root == s.root))
                    .cloned()
                    .collect();
                current = new;
                drop(watching.take());
                (watching, interval) = state.watch(&current);
                next_full = tokio::time::Instant::now() + interval;
                if !added.is_empty() {
                    state.full_scan(added).await;
                }
            }
            first = state.rescans.recv() => {
                let Some(first) = first else { break };
                // Debounce: a burst of events (a copy, an unpacked archive) becomes one rescan.
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(debounce) => {}
                }
                let mut paths = BTreeSet::from([first]);
                while let Ok(more) = state.rescans.try_recv() {
                    paths.insert(more);
                }
                let scanner = state.scanner.clone();
                let shares = current.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for RescanPath { share: name, rel } in paths {
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
        state.events.scanned();
    }
    drop(watching);
}
