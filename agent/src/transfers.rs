//! The agent's transfer queue: downloads the agent owns, kept in the catalog so they survive a
//! restart, run a few at a time by priority, and wait (rather than fail) while no source can
//! deliver.
//!
//! Each run is one call of the download engine; the engine resumes from the verified pieces
//! an earlier run left, so a restart, a pause or a source that vanished costs no verified byte.
//! A run that found no source puts the transfer to `waiting` and asks again on a backoff
//! schedule (at most `download.retry_max_secs` apart), and at once when a contact comes online.
//! After each run the sources' outcomes are reported to the index server, signed by our key
//! (PROTOCOL §11.3); a source that sent bad data is never used for that transfer again.
//!
//! The verified pieces of unfinished downloads are served to other downloaders (§11.4): every
//! few seconds the queue announces, for each download headed into the public part of the
//! `downloads` share, the pieces its state file records as written, and the file server reads
//! the state file again on each request, so it never sends a piece not yet verified.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerdex_client::server_api::ApiError;
use peerdex_client::{Identity, ServerClient};
use peerdex_download::part::PartPaths;
use peerdex_download::{
    DownloadError, DownloadOptions, DownloadProgress, DownloadRequest, Phase, RemoteQueue,
    SourceFinder,
};
use peerdex_shared::api::{OutcomeKind, TransferReport};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::catalog::{Catalog, Destination, NewTransfer, Stored, TransferRow};
use super::link::{Session, unix_now};

/// How the queue runs, from the `[download]` section of the config file.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Downloads running at once.
    pub max_active: usize,
    /// Longest pause between two asks for the sources of a waiting transfer.
    pub retry_max: Duration,
    /// Sources one download uses at once.
    pub max_sources: usize,
    /// Finished transfers kept as history.
    pub history: usize,
    /// Whether firewalled sources may connect to us (we accept inbound connections).
    pub accept_connections: bool,
    /// Serve the verified pieces of unfinished downloads (`download.share_partial`).
    pub share_partial: bool,
}

/// How often partial downloads are announced (when they changed).
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// How often an unchanged announcement is repeated.
const REANNOUNCE_EVERY: Duration = Duration::from_secs(60);

/// The unfinished downloads whose verified pieces we serve: hash → the file's final path.
#[derive(Debug, Default)]
pub struct PartialShelf {
    files: Mutex<HashMap<peerdex_shared::FileHash, PathBuf>>,
}

/// A partial download opened for serving.
pub struct OpenPartial {
    /// The partial file.
    pub file: std::fs::File,
    /// Its state: size, piece hashes and the pieces verified and written.
    pub state: peerdex_download::part::PartState,
    /// The file name, for the upload list.
    pub name: String,
}

impl PartialShelf {
    /// Opens the partial download of `hash`, if we serve one with proven piece hashes. The
    /// state file is read now: what it marks done was verified and written before.
    pub fn open(&self, hash: &peerdex_shared::FileHash) -> Option<OpenPartial> {
        let path = locked(&self.files).get(hash).cloned()?;
        let paths = PartPaths::beside(&path);
        let state = peerdex_download::part::PartState::load(&paths.state).ok()??;
        // The piece hashes must prove the content (the engine checked them; the file may not
        // be what the engine wrote).
        let proven = state.cvs.as_ref().is_some_and(|cvs| {
            cvs.len() >= 2 && peerdex_shared::pieces::root_from_cvs(cvs) == *hash
        });
        if state.hash != *hash || !proven {
            return None;
        }
        let file = std::fs::File::open(&paths.data).ok()?;
        if file.metadata().ok()?.len() != state.size {
            return None;
        }
        Some(OpenPartial {
            file,
            state,
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }

    fn set(&self, files: HashMap<peerdex_shared::FileHash, PathBuf>) {
        *locked(&self.files) = files;
    }
}

/// First pause before asking again for a waiting transfer; each next one doubles.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Window over which rates are computed.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// What a transfer is doing, as `peerdex transfers` shows it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TransferState {
    /// Waiting for one of our download slots (`download.max_active`).
    Queued,
    /// Asking for sources and connecting to them.
    Connecting,
    /// Checking the pieces kept from an earlier run.
    Verifying,
    /// Every source is busy: we are in a source's upload queue.
    QueuedRemotely,
    /// Pieces are arriving.
    Downloading,
    /// No source can deliver now; asked again on a schedule.
    Waiting,
    /// Paused by the user.
    Paused,
    /// Complete and verified.
    Done,
    /// Failed (see the reason); `retry` runs it again.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl TransferState {
    /// Every state, in the order the table explains them.
    pub const ALL: [TransferState; 10] = [
        TransferState::Queued,
        TransferState::Connecting,
        TransferState::Verifying,
        TransferState::QueuedRemotely,
        TransferState::Downloading,
        TransferState::Waiting,
        TransferState::Paused,
        TransferState::Done,
        TransferState::Failed,
        TransferState::Cancelled,
    ];

    /// The word the table shows.
    pub fn word(self) -> &'static str {
        match self {
            TransferState::Queued => "queued",
            TransferState::Connecting => "connecting",
            TransferState::Verifying => "verifying",
            TransferState::QueuedRemotely => "queued-remotely",
            TransferState::Downloading => "downloading",
            TransferState::Waiting => "waiting",
            TransferState::Paused => "paused",
            TransferState::Done => "done",
            TransferState::Failed => "failed",
            TransferState::Cancelled => "cancelled",
        }
    }
}

/// One source of a running transfer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SourceView {
    /// Its nickname.
    pub nickname: String,
    /// Its key.
    pub peer: peerdex_shared::PeerId,
    /// Whether it is sending now.
    pub active: bool,
    /// Verified bytes it delivered in this run.
    pub verified: u64,
    /// Bytes per second over the last seconds.
    pub rate: u64,
    /// Why it was dropped, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// One transfer as `peerdex transfers` shows it: the stored row and what it does now.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TransferView {
    /// The stored row.
    #[serde(flatten)]
    pub row: TransferRow,
    /// What it does now.
    pub status: TransferState,
    /// The file name, once known.
    pub file_name: Option<String>,
    /// Verified bytes.
    pub verified: u64,
    /// Bytes of the content, once known.
    pub total: Option<u64>,
    /// Bytes per second over the last seconds (0 when idle).
    pub rate: u64,
    /// Seconds left at that rate.
    pub eta_secs: Option<u64>,
    /// Our place in a source's upload queue, while queued remotely.
    pub remote_queue: Option<RemoteQueue>,
    /// The sources of the current run.
    pub sources: Vec<SourceView>,
    /// Seconds until the sources of a waiting transfer are asked for again.
    pub next_try_secs: Option<u64>,
    /// What it waits for and on whose side, for a transfer that is not moving.
    pub waits_for: Option<String>,
}

/// A user's action on one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "value")]
pub enum Action {
    /// Stop it, keeping its verified pieces.
    Pause,
    /// Queue a paused transfer again.
    Resume,
    /// Stop it and remove its partial file.
    Cancel,
    /// Run a failed, cancelled or waiting transfer again now.
    Retry,
    /// Change its priority (higher runs first).
    Priority(i64),
}

/// Why an action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// No transfer has this id.
    #[error("no transfer {0}")]
    Unknown(u64),
    /// The action does not apply in this state.
    #[error("transfer {id} is {state}: {action} does not apply")]
    NotApplicable {
        /// The transfer.
        id: u64,
        /// Its state.
        state: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] super::catalog::CatalogError),
}

/// Rate samples of one counter.
#[derive(Debug, Default)]
struct Rate {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl Rate {
    fn update(&mut self, now: Instant, value: u64) -> u64 {
        self.samples.push_back((now, value));
        while self.samples.len() > 2
            && self
                .samples
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        let Some(&(since, before)) = self.samples.front() else {
            return 0;
        };
        let secs = now.duration_since(since).as_secs_f64();
        if secs < 0.2 {
            return 0;
        }
        (value.saturating_sub(before) as f64 / secs) as u64
    }
}

/// A transfer being run now.
struct Running {
    progress: Arc<DownloadProgress>,
    cancel: CancellationToken,
    /// What the user asked it to become when it stops (pause, cancel).
    stop_as: Mutex<Option<Stored>>,
    rate: Mutex<Rate>,
    source_rates: Mutex<HashMap<peerdex_shared::PeerId, Rate>>,
}

/// When a waiting transfer is asked for again.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    waits: u32,
}

/// The queue.
pub struct TransferQueue {
    catalog: Arc<Catalog>,
    settings: QueueSettings,
    shares: super::LiveShares,
    shelf: Arc<PartialShelf>,
    identity: Identity,
    url: String,
    sessions: watch::Receiver<Option<Session>>,
    running: Mutex<HashMap<u64, Arc<Running>>>,
    retries: Mutex<HashMap<u64, Retry>>,
    wake: Notify,
    /// Verified bytes of all downloads since start, by route (metrics).
    pub route_bytes: peerdex_download::RouteBytes,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl TransferQueue {
    /// A queue over the catalog's transfers, downloading as `identity`.
    pub fn new(
        catalog: Arc<Catalog>,
        settings: QueueSettings,
        identity: Identity,
        url: String,
        sessions: watch::Receiver<Option<Session>>,
        shares: super::LiveShares,
        shelf: Arc<PartialShelf>,
    ) -> Arc<TransferQueue> {
        Arc::new(TransferQueue {
            catalog,
            settings,
            shares,
            shelf,
            identity,
            url,
            sessions,
            running: Mutex::new(HashMap::new()),
            retries: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            route_bytes: Default::default(),
        })
    }

    /// A client of the index server that searches, browses and finds sources as this agent's
    /// account may, and one that reports as this peer (none while signed out of the server).
    pub fn server_clients(&self) -> Result<(ServerClient, Option<ServerClient>), ApiError> {
        let client = ServerClient::new(&self.url)?;
        // The session token also makes searches and sources see what the account may.
        Ok(match self.sessions.borrow().as_ref() {
            Some(s) => {
                let reporter = client.with_session(s.peer, s.token.clone());
                (
                    reporter.clone().with_account_token(Some(s.token.clone())),
                    Some(reporter),
                )
            }
            None => (client, None),
        })
    }

    /// How this agent downloads: its key, its source limit, never from itself.
    pub fn download_options(&self) -> DownloadOptions {
        DownloadOptions {
            max_sources: self.settings.max_sources.max(1),
            exclude_peer: Some(self.identity.peer_id()),
            identity: Some(self.identity.clone()),
            accept_connections: self.settings.accept_connections,
            ..DownloadOptions::default()
        }
    }

    /// Queues downloads (blocking: writes the catalog); returns their ids. A wish's match
    /// already queued is not queued twice.
    pub fn add(&self, transfers: &[NewTransfer]) -> Result<Vec<u64>, ActionError> {
        let mut ids = Vec::with_capacity(transfers.len());
        for new in transfers {
            if new.wish.is_some() {
                let known = self.catalog.read(|r| r.transfers(usize::MAX))?;
                if let Some(row) = known
                    .iter()
                    .find(|row| row.request.wish == new.wish && row.request.hash == new.hash)
                {
                    ids.push(row.id);
                    continue;
                }
            }
            let id = self.catalog.add_transfer(new, unix_now())?;
            info!(id, hash = %new.hash.fmt_short(), "download queued");
            ids.push(id);
        }
        self.wake.notify_one();
        Ok(ids)
    }

    /// A holder may have come back (a contact came online): every waiting transfer asks for
    /// its sources now.
    pub fn sources_may_have_returned(&self) {
        let now = Instant::now();
        for retry in locked(&self.retries).values_mut() {
            retry.at = now;
        }
        self.wake.notify_one();
    }

    /// Applies a user's action (blocking: writes the catalog).
    pub fn act(&self, id: u64, action: Action) -> Result<TransferView, ActionError> {
        let mut row = self
            .catalog
            .read(|r| r.transfer(id))?
            .ok_or(ActionError::Unknown(id))?;
        let running = locked(&self.running).get(&id).cloned();
        let refuse = |row: &TransferRow, action: &'static str| ActionError::NotApplicable {
            id,
            state: self.view(row).status.word(),
            action,
        };
        match action {
            Action::Pause => {
                if row.state.finished() || row.state == Stored::Paused {
                    return Err(refuse(&row, "pause"));
                }
                if let Some(running) = &running {
                    *locked(&running.stop_as) = Some(Stored::Paused);
                    running.cancel.cancel();
                }
                row.state = Stored::Paused;
                row.reason = "paused by you".into();
            }
            Action::Resume => {
                if row.state != Stored::Paused {
                    return Err(refuse(&row, "resume"));
                }
                // A run still winding down after the pause ends as queued, and runs again.
                if let Some(running) = &running {
                    *locked(&running.stop_as) = None;
                }
                row.state = Stored::Queued;
                row.reason.clear();
            }
            Action::Cancel => {
                if row.state.finished() {
                    return Err(refuse(&row, "cancel"));
                }
                if let Some(running) = &running {
                    *locked(&running.stop_as) = Some(Stored::Cancelled);
                    running.cancel.cancel();
                } else {
                    remove_partial(&row);
                }
                row.state = Stored::Cancelled;
                row.reason = "cancelled by you".into();
                row.finished_at = Some(unix_now());
            }
            Action::Retry => {
                if matches!(row.state, Stored::Done | Stored::Paused) || running.is_some() {
                    return Err(refuse(&row, "retry"));
                }
                row.state = Stored::Queued;
                row.reason.clear();
                row.finished_at = None;
                locked(&self.retries).remove(&id);
            }
            Action::Priority(priority) => {
                self.catalog.set_transfer_priority(id, priority)?;
                row.request.priority = priority;
                self.wake.notify_one();
                return Ok(self.view(&row));
            }
        }
        self.catalog.save_transfer(&row)?;
        self.wake.notify_one();
        Ok(self.view(&row))
    }

    /// Every open transfer and the `history` latest finished ones, as they are now (blocking).
    pub fn list(&self, history: usize) -> Result<Vec<TransferView>, ActionError> {
        let rows = self.catalog.read(|r| r.transfers(history))?;
        Ok(rows.iter().map(|row| self.view(row)).collect())
    }

    /// What `row` does now.
    fn view(&self, row: &TransferRow) -> TransferView {
        let running = locked(&self.running).get(&row.id).cloned();
        let retry = locked(&self.retries).get(&row.id).copied();
        let mut view = TransferView {
            row: row.clone(),
            status: match row.state {
                Stored::Queued => TransferState::Queued,
                Stored::Waiting => TransferState::Waiting,
                Stored::Paused => TransferState::Paused,
                Stored::Done => TransferState::Done,
                Stored::Failed => TransferState::Failed,
                Stored::Cancelled => TransferState::Cancelled,
            },
            file_name: row
                .path
                .as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned()),
            verified: row.bytes_done,
            total: row.size,
            rate: 0,
            eta_secs: None,
            remote_queue: None,
            sources: Vec::new(),
            next_try_secs: None,
            waits_for: None,
        };
        if let Some(running) = running.filter(|_| row.state == Stored::Queued) {
            let progress = &running.progress;
            let now = Instant::now();
            let total = progress.total.load(Ordering::Relaxed);
            let verified = progress.verified.load(Ordering::Relaxed);
            let moved = verified.saturating_sub(progress.resumed.load(Ordering::Relaxed));
            view.rate = locked(&running.rate).update(now, moved);
            view.verified = verified;
            if total > 0 {
                view.total = Some(total);
            }
            view.file_name = progress.name().or(view.file_name);
            view.remote_queue = progress.remote_queue();
            let mut rates = locked(&running.source_rates);
            view.sources = progress
                .sources()
                .iter()
                .map(|tally| SourceView {
                    nickname: tally.nickname.clone(),
                    peer: tally.peer,
                    active: tally.active.load(Ordering::Relaxed),
                    verified: tally.verified.load(Ordering::Relaxed),
                    rate: rates
                        .entry(tally.peer)
                        .or_default()
                        .update(now, tally.received.load(Ordering::Relaxed)),
                    dropped: tally
                        .outcome()
                        .filter(|o| o.kind != OutcomeKind::Verified)
                        .map(|o| o.detail),
                })
                .collect();
            let active = progress.active_sources.load(Ordering::Relaxed);
            view.status = match progress.phase() {
                Phase::Verifying => TransferState::Verifying,
                Phase::Finding | Phase::Proving => TransferState::Connecting,
                Phase::Fetching | Phase::Finishing => {
                    let sending = view.sources.iter().any(|s| s.active && s.rate > 0);
                    if view.remote_queue.is_some() && !sending {
                        TransferState::QueuedRemotely
                    } else if active == 0 {
                        TransferState::Connecting
                    } else {
                        TransferState::Downloading
                    }
                }
            };
            if view.rate > 0 {
                view.eta_secs = Some(total.saturating_sub(verified) / view.rate.max(1));
            }
        }
        view.next_try_secs = retry
            .filter(|_| row.state == Stored::Waiting)
            .map(|r| r.at.saturating_duration_since(Instant::now()).as_secs());
        view.waits_for = match view.status {
            TransferState::Queued => Some(format!(
                "a free download slot (your side: {} run at once, download.max_active)",
                self.settings.max_active
            )),
            TransferState::Waiting => Some(format!("a source (their side): {}", row.reason)),
            TransferState::QueuedRemotely => view.remote_queue.as_ref().map(|q| match q.position {
                Some(n) => format!("an upload slot at {} (their side): number {n}", q.peer),
                None => format!("an upload slot at {} (their side)", q.peer),
            }),
            TransferState::Paused => Some("you (your side): it is paused".into()),
            TransferState::Failed => Some(format!("you (your side): {}", row.reason)),
            _ => None,
        };
        view
    }

    /// Where `row`'s file goes, once known (a folder destination needs the name).
    fn final_path(&self, row: &TransferRow) -> Option<PathBuf> {
        if let Some(path) = &row.path {
            return Some(path.clone());
        }
        let running = locked(&self.running).get(&row.id).cloned()?;
        match &row.request.destination {
            Destination::File(file) => Some(file.clone()),
            Destination::Dir(dir) => running.progress.name().map(|name| dir.join(name)),
        }
    }

    /// Whether a file at `path` would be shared publicly: it lies in the `downloads` share and
    /// that share's rules make it public.
    fn shared_publicly(&self, path: &std::path::Path) -> bool {
        let shares = self.shares.borrow().clone();
        let Some(share) = shares
            .iter()
            .find(|s| s.name == super::config::DOWNLOADS_SHARE)
        else {
            return false;
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        let Ok(parent) = std::fs::canonicalize(parent) else {
            return false;
        };
        let Ok(rel) = parent
            .join(name)
            .strip_prefix(&share.root)
            .map(|r| r.to_owned())
        else {
            return false;
        };
        share
            .rules
            .visibility_of(&rel.to_string_lossy())
            .is_public()
    }

    /// The partial downloads to announce now (blocking: reads state files), and the shelf the
    /// file server serves them from.
    fn partials(&self) -> Vec<peerdex_shared::api::PartialEntry> {
        let rows = self.catalog.read(|r| r.transfers(0));
        let rows = rows.unwrap_or_default();
        let mut shelf = HashMap::new();
        let mut entries = Vec::new();
        for row in rows {
            let Some(path) = self.final_path(&row) else {
                continue;
            };
            if !self.shared_publicly(&path) {
                continue;
            }
            let paths = PartPaths::beside(&path);
            let Ok(Some(state)) = peerdex_download::part::PartState::load(&paths.state) else {
                continue;
            };
            if state.hash != row.request.hash || state.cvs.is_none() || state.done_count() == 0 {
                continue;
            }
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            entries.push(peerdex_shared::api::PartialEntry {
                hash: state.hash,
                size: state.size,
                name,
                pieces: peerdex_shared::pieces::PieceSet::from_done(&state.done),
            });
            shelf.insert(state.hash, path);
        }
        entries.truncate(peerdex_shared::api::MAX_PARTIALS);
        shelf.retain(|hash, _| entries.iter().any(|e| e.hash == *hash));
        self.shelf.set(shelf);
        entries
    }

    /// Announces the partial downloads we serve whenever they (or the session) change.
    async fn announce_partials(self: Arc<Self>, stop: CancellationToken) {
        let mut sent: Option<(String, Vec<peerdex_shared::api::PartialEntry>, Instant)> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(ANNOUNCE_EVERY) => {}
            }
            // The shelf follows the downloads and the shares even while the server is away.
            let this = self.clone();
            let Ok(entries) = tokio::task::spawn_blocking(move || this.partials()).await else {
                continue;
            };
            let Some(session) = self.sessions.borrow().clone() else {
                continue;
            };
            // Said again now and then: a restarted server keeps sessions but not announcements.
            let unchanged = sent.as_ref().is_some_and(|(token, last, at)| {
                *token == session.token && *last == entries && at.elapsed() < REANNOUNCE_EVERY
            });
            // Nothing to say to a server that never heard of any.
            if unchanged || (sent.is_none() && entries.is_empty()) {
                continue;
            }
            let Ok(client) = ServerClient::new(&self.url) else {
                return;
            };
            let client = client.with_session(session.peer, session.token.clone());
            match client.announce_partials(&entries).await {
                Ok(()) => {
                    debug!(partials = entries.len(), "partial downloads announced");
                    sent = Some((session.token.clone(), entries, Instant::now()));
                }
                Err(e) => debug!(error = %e, "could not announce partial downloads"),
            }
        }
    }

    /// Tells the account's event stream (PROTOCOL §11.2) when a download changes state or
    /// moves in a source's upload queue. Needs a session linked to an account; without one the
    /// server refuses and nothing else happens.
    async fn publish_changes(self: Arc<Self>, stop: CancellationToken) {
        type Shown = (TransferState, Option<RemoteQueue>);
        let mut shown: HashMap<u64, Shown> = HashMap::new();
        // What the list shows when the agent starts is not news.
        let mut baseline = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let Some(session) = self.sessions.borrow().clone() else {
                continue;
            };
            let this = self.clone();
            let Ok(Ok(views)) = tokio::task::spawn_blocking(move || this.list(20)).await else {
                continue;
            };
            let Ok(client) = ServerClient::new(&self.url) else {
                return;
            };
            let client = client.with_session(session.peer, session.token.clone());
            for view in views {
                let now = (view.status, view.remote_queue.clone());
                let before = shown.insert(view.row.id, now.clone());
                if baseline || before.as_ref() == Some(&now) {
                    continue;
                }
                let event = peerdex_shared::social::Event::Transfer {
                    transfer: view.row.id,
                    hash: view.row.request.hash,
                    name: view.file_name.clone().unwrap_or_default(),
                    state: serde_json::to_value(view.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    peer: now.1.as_ref().map(|q| q.peer.clone()),
                    position: now.1.as_ref().and_then(|q| q.position),
                };
                if let Err(e) = client.report_event(&event).await {
                    debug!(error = %e, "could not publish a transfer's change");
                }
            }
            baseline = false;
        }
    }

    /// Runs transfers until `stop`: at most `max_active` at once, highest priority first;
    /// waiting ones when their retry is due.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.settings.share_partial {
            tokio::spawn(self.clone().announce_partials(stop.clone()));
        }
        tokio::spawn(self.clone().publish_changes(stop.clone()));
        // Transfers that were running when the agent stopped are queued ones now: they resume.
        loop {
            let next = self.start_due(&stop).await;
            let pause = next
                .unwrap_or(Duration::from_secs(5))
                .min(Duration::from_secs(5));
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        // Stop the runs; each keeps its transfer queued for the next start.
        let running: Vec<Arc<Running>> = locked(&self.running).values().cloned().collect();
        for run in running {
            run.cancel.cancel();
        }
        for _ in 0..100 {
            if locked(&self.running).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts what may start now; returns when the next waiting transfer is due.
    async fn start_due(self: &Arc<Self>, stop: &CancellationToken) -> Option<Duration> {
        let rows = match self.catalog.call(|c| c.read(|r| r.transfers(0))).await {
            Ok(rows) => rows,
            Err(e) => {
                warn!(error = %e, "cannot read the transfer queue");
                return Some(Duration::from_secs(5));
            }
        };
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        for row in rows {
            if locked(&self.running).len() >= self.settings.max_active.max(1) {
                break;
            }
            if locked(&self.running).contains_key(&row.id) {
                continue;
            }
            match row.state {
                Stored::Queued => {}
                Stored::Waiting => {
                    let due = locked(&self.retries).get(&row.id).map(|r| r.at);
                    if let Some(at) = due.filter(|at| *at > now) {
                        let wait = at - now;
                        next = Some(next.map_or(wait, |n| n.min(wait)));
                        continue;
                    }
                }
                _ => continue,
            }
            self.start(row, stop);
        }
        next
    }

    fn start(self: &Arc<Self>, row: TransferRow, stop: &CancellationToken) {
        let running = Arc::new(Running {
            progress: Arc::new(DownloadProgress::counting_routes_in(
                self.route_bytes.clone(),
            )),
            cancel: stop.child_token(),
            stop_as: Mutex::new(None),
            rate: Mutex::new(Rate::default()),
            source_rates: Mutex::new(HashMap::new()),
        });
        locked(&self.running).insert(row.id, running.clone());
        let this = self.clone();
        let span = info_span!("transfer", id = row.id, hash = %row.request.hash.fmt_short());
        tokio::spawn(
            async move {
                let id = row.id;
                this.run_one(row, &running).await;
                locked(&this.running).remove(&id);
                this.wake.notify_one();
            }
            .instrument(span),
        );
    }

    /// One run of the engine for `row`, and what it leaves the row as.
    async fn run_one(&self, row: TransferRow, running: &Running) {
        // The user may have paused or cancelled it since the queue was read.
        let id = row.id;
        let mut row = match self.catalog.call(move |c| c.read(|r| r.transfer(id))).await {
            Ok(Some(current)) if matches!(current.state, Stored::Queued | Stored::Waiting) => {
                current
            }
            _ => return,
        };
        row.attempts += 1;
        if row.state == Stored::Waiting {
            // Shown as connecting while it runs; waiting again if it finds no source.
            row.state = Stored::Queued;
        }
        self.save(&row).await;
        let Ok((client, reporter)) = self.server_clients() else {
            row.state = Stored::Failed;
            row.reason = format!("the index server URL {:?} cannot be used", self.url);
            self.save(&row).await;
            return;
        };
        let finder: Arc<dyn SourceFinder> = Arc::new(client);
        let options = DownloadOptions {
            force: row.request.force,
            avoid_peers: row.avoid.clone(),
            ..self.download_options()
        };
        let request = DownloadRequest {
            hash: row.request.hash,
            name: row.request.name.clone(),
            destination: match &row.request.destination {
                Destination::Dir(dir) => peerdex_download::Destination::Dir(dir.clone()),
                Destination::File(file) => peerdex_download::Destination::File(file.clone()),
            },
        };
        if let Destination::Dir(dir) = &row.request.destination
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            warn!(error = %e, dir = %dir.display(), "cannot make the download folder");
        }
        let outcome = peerdex_download::download(
            finder,
            &request,
            &options,
            running.progress.clone(),
            running.cancel.clone(),
        )
        .await;
        let progress = &running.progress;
        let total = progress.total.load(Ordering::Relaxed);
        if total > 0 {
            row.size = Some(total);
        }
        row.bytes_done = progress.verified.load(Ordering::Relaxed);
        if row.path.is_none() {
            row.path = match (&row.request.destination, progress.name()) {
                (Destination::File(file), _) => Some(file.clone()),
                (Destination::Dir(dir), Some(name)) => Some(dir.join(name)),
                (Destination::Dir(_), None) => None,
            };
        }
        let outcomes = progress.outcomes();
        for outcome in &outcomes {
            if outcome.kind == OutcomeKind::BadData && !row.avoid.contains(&outcome.peer) {
                row.avoid.push(outcome.peer);
            }
        }
        if let (Some(reporter), false) = (&reporter, outcomes.is_empty()) {
            let report = TransferReport {
                hash: row.request.hash,
                size: row.size.unwrap_or(0),
                sources: outcomes,
            };
            if let Err(e) = reporter.report_transfer(&self.identity, &report).await {
                debug!(error = %e, "could not report the sources' outcomes");
            }
        }
        // The file is already there: a run that finished just before the agent was stopped (or
        // killed) before it recorded so. If it is exactly the content, the transfer is done.
        let outcome = match outcome {
            Err(DownloadError::Exists(path)) if !row.request.force => {
                let (hash, at) = (row.request.hash, path.clone());
                let same = tokio::task::spawn_blocking(move || {
                    peerdex_download::holds_content(&at, &hash, None)
                })
                .await
                .unwrap_or(false);
                if same {
                    row.path = Some(path.clone());
                    Ok(peerdex_download::DownloadReport {
                        hash: row.request.hash,
                        size: std::fs::metadata(&path).map_or(0, |m| m.len()),
                        path: Some(path),
                        elapsed_secs: 0.0,
                        bytes_fetched: 0,
                        pieces_fetched: 0,
                        pieces_reused: 0,
                        sources_used: Vec::new(),
                        sources_dropped: Vec::new(),
                    })
                } else {
                    Err(DownloadError::Exists(path))
                }
            }
            other => other,
        };
        let stop_as = *locked(&running.stop_as);
        // What the user asked for wins over how the run ended, unless it completed.
        let outcome = match (outcome, stop_as) {
            (Ok(report), _) => Ok(report),
            (Err(_), Some(_)) => Err(DownloadError::Interrupted),
            (Err(e), None) => Err(e),
        };
        match outcome {
            Ok(report) => {
                info!(path = ?report.path, bytes = report.size, "download done");
                row.state = Stored::Done;
                row.reason.clear();
                row.error_code = None;
                row.size = Some(report.size);
                row.bytes_done = report.size;
                row.path = report.path.clone().or(row.path);
                row.finished_at = Some(unix_now());
                locked(&self.retries).remove(&row.id);
                if let (Some(wish), Some(reporter)) = (row.request.wish, &reporter) {
                    let event = peerdex_shared::social::Event::Download {
                        wish,
                        hash: row.request.hash,
                        name: row.request.name.clone().unwrap_or_default(),
                        ok: true,
                        detail: report
                            .path
                            .as_ref()
                            .map_or_else(String::new, |p| p.display().to_string()),
                    };
                    if let Err(e) = reporter.report_event(&event).await {
                        warn!(error = %e, "could not report the download to the server");
                    }
                }
            }
            Err(DownloadError::Interrupted) => match stop_as {
                Some(Stored::Cancelled) => {
                    remove_partial(&row);
                    row.state = Stored::Cancelled;
                    row.reason = "cancelled by you".into();
                    row.finished_at = Some(unix_now());
                }
                Some(state) => {
                    row.state = state;
                    row.reason = "paused by you".into();
                }
                // The agent is stopping: queued again at the next start.
                None => row.state = Stored::Queued,
            },
            Err(error) => {
                let waiting = matches!(
                    error,
                    DownloadError::NotFound(_)
                        | DownloadError::NoSource { .. }
                        | DownloadError::Verification(_)
                        | DownloadError::Server(_)
                );
                row.reason = match &error {
                    DownloadError::NotFound(_) => "no online peer has it".to_owned(),
                    other => other.to_string(),
                };
                row.error_code = Some(error.exit_code());
                if waiting {
                    let mut retries = locked(&self.retries);
                    let waits = retries.get(&row.id).map_or(0, |r| r.waits + 1);
                    let pause = (FIRST_RETRY * 2u32.saturating_pow(waits.min(16)))
                        .min(self.settings.retry_max.max(FIRST_RETRY));
                    retries.insert(
                        row.id,
                        Retry {
                            at: Instant::now() + pause,
                            waits,
                        },
                    );
                    info!(reason = %row.reason, retry_in = ?pause, "download waits for a source");
                    row.state = Stored::Waiting;
                } else {
                    warn!(error = %error, "download failed");
                    row.state = Stored::Failed;
                    row.finished_at = Some(unix_now());
                    if let (Some(wish), Some(reporter)) = (row.request.wish, &reporter) {
                        let event = peerdex_shared::social::Event::Download {
                            wish,
                            hash: row.request.hash,
                            name: row.request.name.clone().unwrap_or_default(),
                            ok: false,
                            detail: row.reason.clone(),
                        };
                        if let Err(e) = reporter.report_event(&event).await {
                            warn!(error = %e, "could not report the download to the server");
                        }
                    }
                }
            }
        }
        self.save(&row).await;
        if row.state.finished() {
            let keep = self.settings.history;
            let _ = self
                .catalog
                .call(move |c| c.trim_transfer_history(keep))
                .await;
        }
    }

    async fn save(&self, row: &TransferRow) {
        // A user's action may have changed the row meanwhile: their state wins unless this
        // run ended it.
        let row = row.clone();
        if let Err(e) = self.catalog.call(move |c| c.save_transfer(&row)).await {
            warn!(error = %e, "cannot record the transfer");
        }
    }
}

/// Removes what a cancelled transfer left: its partial and state files.
fn remove_partial(row: &TransferRow) {
    let Some(path) = &row.path else { return };
    let paths = PartPaths::beside(path);
    for file in [&paths.data, &paths.state] {
        let _ = std::fs::remove_file(file);
    }
}
