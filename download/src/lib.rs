//! Downloading content by hash, directly from the peers that hold it: multi-source, verified
//! piece by piece, resumable.
//!
//! The index server is asked only for sources. Each source gets a worker that claims runs of
//! missing pieces and fetches them with one range request; faster sources simply claim more.
//! Every piece is checked against the content hash (through the piece hashes proven by
//! `shared::pieces`) before it is written at its offset in `NAME.peerdex-part`; a source that
//! sends a bad byte is dropped and named, and its piece goes back to the pool. Near the end, a
//! piece still in flight is raced on an idle source. When no source is left the server is asked
//! again. Every byte of the finished file was verified against a proven piece hash before it was
//! written, so it is not hashed again: it is flushed and renamed into place, and nothing
//! unverified ever has the final name. An interrupted download leaves the part and state files;
//! running the same command again re-verifies them and fetches only what is missing.
//!
//! A size is a claim, not a fact: peers may disagree on the size of a hash. Each claimed size is
//! tried with the sources that claim it, best evidence first, until one is proven by its piece
//! hashes and pieces.

#[cfg(test)]
mod engine_tests;
mod find;
pub mod names;
pub mod part;
mod peer;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerdex_shared::api::{OutcomeKind, SizeClaim, SourceOutcome, SourcesResponse};
use peerdex_shared::pieces::{
    PieceCv, PieceSet, piece_count, piece_range, root_from_cvs, verify_piece,
};
use peerdex_shared::{FileHash, PeerId};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

pub use find::{Found, SourceFinder};
use names::sanitize_file_name;
use part::{PartPaths, PartState, StateError};
pub use peer::Route;
use peer::{Connection, Connector, PeerSource, RangeStream, SourceError, fetch_piece_hashes};
use peerdex_client::server_api::ApiError;

/// Pieces asked for in one range request while plenty remain.
const RUN_PIECES: u64 = 8;
/// Pieces per range request when a single source is left.
const LONE_SOURCE_RUN_PIECES: u64 = 64;

/// How often the state file is rewritten while pieces arrive.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Slowest transfer rate a source may keep up (bytes/s, over each stall window).
const MIN_SOURCE_RATE: u64 = 1024;

/// Largest content accepted (a lying majority could claim any size): 4 TiB.
const MAX_SIZE: u64 = 1 << 42;

/// Times the index server is asked again for sources when none is left.
const REQUERIES: u32 = 3;

/// Wait before the first of those re-asks; each next one waits twice as long.
const FIRST_REQUERY_WAIT: Duration = Duration::from_secs(1);

/// Where a download goes.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Into this folder, under the (sanitized) name peers give the file.
    Dir(PathBuf),
    /// Exactly this file.
    File(PathBuf),
    /// To standard output, in order, as pieces are verified; the partial file lives in this
    /// work folder meanwhile.
    Stdout(PathBuf),
    /// Into a channel, in order, as pieces are verified (a player in a web page reads it while
    /// the rest downloads); the partial file lives in `work` meanwhile and is removed at the
    /// end. Dropping the receiver stops the download.
    Stream {
        /// Folder for the partial file.
        work: PathBuf,
        /// Where the verified bytes go, a piece at a time.
        sink: tokio::sync::mpsc::Sender<bytes::Bytes>,
    },
}

/// Where a streamed download's verified bytes go.
#[derive(Debug, Clone)]
enum StreamTo {
    Stdout,
    Channel(tokio::sync::mpsc::Sender<bytes::Bytes>),
}

/// Download settings.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Sources used at once.
    pub max_sources: usize,
    /// A source that sends nothing for this long is dropped.
    pub stall_timeout: Duration,
    /// Longest total wait for a busy source before it is dropped.
    pub busy_limit: Duration,
    /// Replace an existing file (and a partial download of other content) at the destination.
    pub force: bool,
    /// Never download from this peer (ourselves).
    pub exclude_peer: Option<PeerId>,
    /// Never download from these peers either (they sent bad data for this content before).
    pub avoid_peers: Vec<PeerId>,
    /// Our key, to prove our address for reverse connections (a fresh one when absent).
    pub identity: Option<peerdex_client::Identity>,
    /// Let firewalled sources connect to us (reverse connections); when false, or when our
    /// address cannot be verified, they are reached through the relay.
    pub accept_connections: bool,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            max_sources: 4,
            stall_timeout: Duration::from_secs(20),
            busy_limit: Duration::from_secs(600),
            force: false,
            exclude_peer: None,
            avoid_peers: Vec::new(),
            identity: None,
            accept_connections: true,
        }
    }
}

/// What a download is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Asking the index server for sources.
    Finding,
    /// Reading back and checking the pieces an earlier run kept.
    Verifying,
    /// Fetching and checking the piece hashes.
    Proving,
    /// Fetching pieces.
    Fetching,
    /// Flushing and moving the file into place.
    Finishing,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            1 => Phase::Verifying,
            2 => Phase::Proving,
            3 => Phase::Fetching,
            4 => Phase::Finishing,
            _ => Phase::Finding,
        }
    }
}

/// Where we wait in a busy source's upload queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RemoteQueue {
    /// The source's nickname.
    pub peer: String,
    /// Our place (1 = next), when it told us.
    pub position: Option<u64>,
}

/// One source of a download as it went: what it delivered and how it ended.
#[derive(Debug)]
pub struct SourceTally {
    /// Its key.
    pub peer: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// Bytes received from it in this run (for its rate; raced pieces count twice).
    pub received: AtomicU64,
    /// Bytes of pieces it was first to deliver, verified.
    pub verified: AtomicU64,
    /// Whether a worker uses it now.
    pub active: std::sync::atomic::AtomicBool,
    /// The route of its current connection (`Route as u8 + 1`; 0 before the first).
    route: std::sync::atomic::AtomicU8,
    /// Milliseconds its workers ran.
    pub active_ms: AtomicU64,
    /// Why it was dropped, if it was.
    dropped: Mutex<Option<(OutcomeKind, Option<u64>, String)>>,
}

impl SourceTally {
    /// The route of its current connection, once it has one.
    pub fn route(&self) -> Option<peer::Route> {
        match self.route.load(Ordering::Relaxed) {
            1 => Some(peer::Route::Direct),
            2 => Some(peer::Route::Reverse),
            3 => Some(peer::Route::Relay),
            _ => None,
        }
    }

    /// What this source's outcome is, for a report to the index server: `None` when it did
    /// nothing worth reporting (never reached for a local reason).
    pub fn outcome(&self) -> Option<SourceOutcome> {
        let bytes = self.verified.load(Ordering::Relaxed);
        let (kind, piece, detail) = match locked(&self.dropped).clone() {
            Some(dropped) => dropped,
            None if bytes > 0 => (OutcomeKind::Verified, None, String::new()),
            None => return None,
        };
        let ms = self.active_ms.load(Ordering::Relaxed);
        Some(SourceOutcome {
            peer: self.peer,
            kind,
            bytes,
            piece,
            rate: (bytes > 0 && ms > 0).then(|| bytes.saturating_mul(1000) / ms),
            detail,
        })
    }
}

/// Verified bytes by the route they came over, shared by every download that holds a clone
/// (the agent counts all its downloads in one for its metrics).
#[derive(Debug, Clone, Default)]
pub struct RouteBytes(Arc<[AtomicU64; 3]>);

impl RouteBytes {
    fn add(&self, route: peer::Route, bytes: u64) {
        self.0[route as usize].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Verified bytes that came over `route`.
    pub fn get(&self, route: peer::Route) -> u64 {
        self.0[route as usize].load(Ordering::Relaxed)
    }
}

/// Live counters of a download, for a progress bar and the agent's transfer list.
#[derive(Debug, Default)]
pub struct DownloadProgress {
    /// Verified bytes by route (shared with other downloads: see `counting_routes_in`).
    route_bytes: RouteBytes,
    /// Bytes of the content.
    pub total: AtomicU64,
    /// Bytes verified so far (including pieces kept from an earlier attempt).
    pub verified: AtomicU64,
    /// Bytes of `verified` kept from an earlier attempt (not moved by this one).
    pub resumed: AtomicU64,
    /// Sources transferring now.
    pub active_sources: AtomicUsize,
    phase: std::sync::atomic::AtomicU8,
    /// The file name being written, once known.
    name: Mutex<Option<String>>,
    /// Where we wait in a source's upload queue, while no source sends.
    queued: Mutex<Option<RemoteQueue>>,
    notes: Mutex<Vec<String>>,
    sources: Mutex<Vec<Arc<SourceTally>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl DownloadProgress {
    /// Fresh counters that add their verified bytes by route to `routes` too.
    pub fn counting_routes_in(routes: RouteBytes) -> DownloadProgress {
        DownloadProgress {
            route_bytes: routes,
            ..Default::default()
        }
    }

    /// Messages for the user since the last call (dropped sources, busy sources).
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *locked(&self.notes))
    }

    /// The name of the file being written, once the download knows it.
    pub fn name(&self) -> Option<String> {
        locked(&self.name).clone()
    }

    /// Our place in a busy source's upload queue (`"number 3 in alice's queue"`), while we
    /// wait for it.
    pub fn queued(&self) -> Option<String> {
        locked(&self.queued).as_ref().map(|q| match q.position {
            Some(n) => format!("number {n} in {}'s queue", q.peer),
            None => format!("waiting for {}", q.peer),
        })
    }

    /// Our place in a busy source's upload queue, while we wait for it.
    pub fn remote_queue(&self) -> Option<RemoteQueue> {
        locked(&self.queued).clone()
    }

    /// What the download is doing now.
    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Every source this download has used or tried, in the order they were first used.
    pub fn sources(&self) -> Vec<Arc<SourceTally>> {
        locked(&self.sources).clone()
    }

    /// Each source's outcome, for a report to the index server.
    pub fn outcomes(&self) -> Vec<SourceOutcome> {
        self.sources().iter().filter_map(|s| s.outcome()).collect()
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    fn note(&self, message: String) {
        locked(&self.notes).push(message);
    }

    /// The tally of `source`, made on first use.
    fn tally(&self, source: &PeerSource) -> Arc<SourceTally> {
        let mut sources = locked(&self.sources);
        if let Some(tally) = sources.iter().find(|t| t.peer == source.peer_id) {
            return tally.clone();
        }
        let tally = Arc::new(SourceTally {
            peer: source.peer_id,
            nickname: source.nickname.clone(),
            received: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            active: std::sync::atomic::AtomicBool::new(false),
            route: std::sync::atomic::AtomicU8::new(0),
            active_ms: AtomicU64::new(0),
            dropped: Mutex::new(None),
        });
        sources.push(tally.clone());
        tally
    }

    /// Records why `source` was dropped (the first reason that is the source's doing counts).
    fn dropped(&self, source: &PeerSource, error: &SourceError) {
        let (kind, piece) = match error {
            SourceError::BadPiece(piece) => (OutcomeKind::BadData, Some(*piece)),
            SourceError::BadData(_) => (OutcomeKind::BadData, None),
            SourceError::Stalled => (OutcomeKind::Stalled, None),
            // Not the source's doing: someone else answered for it (an address taken over, a
            // man in the middle), so it is not reported as lying.
            SourceError::Unreachable(_) | SourceError::WrongKey(_) => {
                (OutcomeKind::Unreachable, None)
            }
            SourceError::Busy { .. }
            | SourceError::Gone(_)
            | SourceError::Refused(_)
            | SourceError::Insecure => (OutcomeKind::Refused, None),
            SourceError::LocalStop => return,
        };
        let tally = self.tally(source);
        let mut dropped = locked(&tally.dropped);
        // Bad data outweighs anything the source did before or after.
        if dropped.is_none() || kind == OutcomeKind::BadData {
            *dropped = Some((kind, piece, error.to_string()));
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadReport {
    /// Content hash.
    pub hash: FileHash,
    /// Size in bytes.
    pub size: u64,
    /// Where the file is (none for standard output).
    pub path: Option<PathBuf>,
    /// Time taken.
    pub elapsed_secs: f64,
    /// Bytes received from peers (more than needed when pieces were raced or refetched).
    pub bytes_fetched: u64,
    /// Pieces fetched in this run.
    pub pieces_fetched: u64,
    /// Pieces kept from an earlier, interrupted run (verified again).
    pub pieces_reused: u64,
    /// Sources that delivered pieces.
    pub sources_used: Vec<String>,
    /// Sources dropped, with the reason.
    pub sources_dropped: Vec<(String, String)>,
}

/// What an unfinished download left for the next run of the same command.
#[derive(Debug, Clone)]
pub struct Kept {
    /// The partial file.
    pub part: PathBuf,
    /// Verified bytes in it.
    pub bytes: u64,
    /// Bytes of the whole content.
    pub size: u64,
}

impl std::fmt::Display for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "; {} of {} verified and kept in {}: run the same command again to resume",
            peerdex_client::units::human_size(self.bytes),
            peerdex_client::units::human_size(self.size),
            self.part.display()
        )
    }
}

/// Why a download failed. Each kind has its own exit code ([`DownloadError::exit_code`]).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No online peer has this content.
    #[error("not found: no online peer has {0}")]
    NotFound(FileHash),
    /// Peers have it, but none could deliver it.
    #[error("no source reachable for {hash}{}{}", describe(.dropped), .kept.as_ref().map(ToString::to_string).unwrap_or_default())]
    NoSource {
        /// The content.
        hash: FileHash,
        /// Sources tried and why each was dropped.
        dropped: Vec<(String, String)>,
        /// What was verified and kept for resuming, if anything.
        kept: Option<Kept>,
    },
    /// Data did not match the content hash and no honest source was left.
    #[error("verification failed: {0}")]
    Verification(String),
    /// The disk is full; the partial download is kept for resuming.
    #[error("disk full writing {0} (the partial download is kept; free space and run again)")]
    DiskFull(PathBuf),
    /// The destination exists.
    #[error("{0} already exists (use --force to replace it)")]
    Exists(PathBuf),
    /// The destination is a folder, where a file was asked for.
    #[error("{0} is a folder: name a file, or download into the folder")]
    NotAFile(PathBuf),
    /// Interrupted; the partial download is kept for resuming.
    #[error("interrupted (the partial download is kept; run the same command to resume)")]
    Interrupted,
    /// The index server failed.
    #[error("index server: {0}")]
    Server(#[from] ApiError),
    /// A local file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No key could be made for the reverse connections this download answers.
    #[error("cannot make a key for reverse connections: {0}")]
    Identity(#[from] peerdex_client::identity::IdentityError),
    /// The partial download's state file is damaged.
    #[error("download state {}: {source}", path.display())]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        source: StateError,
    },
}

/// A source dropped during a download, and why.
type Dropped = (String, SourceError);

/// The dropped sources as the report and errors show them.
fn dropped_text(dropped: &[Dropped]) -> Vec<(String, String)> {
    dropped
        .iter()
        .map(|(source, why)| (source.clone(), why.to_string()))
        .collect()
}

fn describe(dropped: &[(String, String)]) -> String {
    if dropped.is_empty() {
        return String::new();
    }
    let list: Vec<String> = dropped
        .iter()
        .map(|(s, why)| format!("{s}: {why}"))
        .collect();
    format!(" ({})", list.join("; "))
}

impl DownloadError {
    /// The process exit code for this failure: 3 not found, 4 no source reachable,
    /// 5 verification failed, 6 disk full, 130 interrupted, 1 anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            DownloadError::NotFound(_) => 3,
            DownloadError::NoSource { .. } => 4,
            DownloadError::Verification(_) => 5,
            DownloadError::DiskFull(_) => 6,
            DownloadError::Interrupted => 130,
            _ => 1,
        }
    }

    fn io(what: &'static str, path: &Path, source: std::io::Error) -> DownloadError {
        if source.kind() == std::io::ErrorKind::StorageFull
            || source.kind() == std::io::ErrorKind::QuotaExceeded
        {
            DownloadError::DiskFull(path.to_owned())
        } else {
            DownloadError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// One piece board for all workers: what is written, what is being fetched.
struct Board {
    done: Vec<bool>,
    /// No piece below this is missing (claims start here, not at 0).
    cursor: u64,
    /// Piece → (claimed at, fetchers).
    in_flight: HashMap<u64, (Instant, u8)>,
    remaining: u64,
    active_sources: usize,
}

impl Board {
    /// The next run of missing pieces no one fetches, or, near the end, a piece in flight on one
    /// source only (to race it).
    fn claim(&mut self, held: Option<&PieceSet>) -> Option<Range<u64>> {
        let count = self.done.len() as u64;
        let has = |i: u64| held.is_none_or(|h| h.contains(i));
        let free = (self.cursor..count)
            .find(|i| !self.done[*i as usize] && !self.in_flight.contains_key(i) && has(*i));
        if let Some(first) = free {
            let unclaimed = self.remaining.saturating_sub(self.in_flight.len() as u64);
            let run = if self.active_sources <= 1 {
                // Nothing to race or share: long ranges spare a round trip and a drain of the
                // verify-and-write pipeline every few pieces.
                LONE_SOURCE_RUN_PIECES
            } else if unclaimed > RUN_PIECES * self.active_sources as u64 {
                RUN_PIECES
            } else {
                1
            };
            let mut end = first + 1;
            while end < count
                && end - first < run
                && !self.done[end as usize]
                && !self.in_flight.contains_key(&end)
                && has(end)
            {
                end += 1;
            }
            let now = Instant::now();
            for i in first..end {
                self.in_flight.insert(i, (now, 1));
            }
            return Some(first..end);
        }
        let (&oldest, _) = self
            .in_flight
            .iter()
            .filter(|(i, (_, fetchers))| *fetchers < 2 && has(**i))
            .min_by_key(|(_, (since, _))| *since)?;
        if let Some(flight) = self.in_flight.get_mut(&oldest) {
            flight.1 += 1;
        }
        Some(oldest..oldest + 1)
    }

    /// Records piece `i` as written; false when another fetch already did.
    fn finish(&mut self, i: u64) -> bool {
        self.in_flight.remove(&i);
        let slot = &mut self.done[i as usize];
        if *slot {
            return false;
        }
        *slot = true;
        self.remaining -= 1;
        while self.done.get(self.cursor as usize) == Some(&true) {
            self.cursor += 1;
        }
        true
    }

    /// Gives back the pieces of a run that were not written.
    fn release(&mut self, pieces: Range<u64>) {
        for i in pieces {
            if let Some(flight) = self.in_flight.get_mut(&i) {
                if flight.1 > 1 {
                    flight.1 -= 1;
                } else {
                    self.in_flight.remove(&i);
                }
            }
        }
    }
}

/// Everything the workers share.
struct Job {
    hash: FileHash,
    size: u64,
    cvs: Option<Arc<Vec<PieceCv>>>,
    file: Arc<File>,
    data_path: PathBuf,
    board: Mutex<Board>,
    changed: Notify,
    progress: Arc<DownloadProgress>,
    connector: Arc<Connector>,
    /// Connections opened while fetching the piece hashes, handed to that source's worker.
    warm: Mutex<HashMap<PeerId, Connection>>,
    options: DownloadOptions,
    cancel: CancellationToken,
    bytes_fetched: AtomicU64,
    pieces_fetched: AtomicU64,
    /// Fatal local error (disk full...) that ends the download.
    fatal: Mutex<Option<DownloadError>>,
}

/// How a worker ended.
enum WorkerEnd {
    /// Nothing left to fetch.
    Complete,
    /// The source was dropped.
    Dropped(SourceError),
    /// The download is being cancelled or failed locally.
    Stopped,
    /// A partial source has no piece left that we miss (it may have more later).
    Exhausted,
}

impl Job {
    /// The job of fetching what `state` lacks into `file`.
    #[allow(clippy::too_many_arguments)]
    fn new(
        state: &PartState,
        file: Arc<File>,
        paths: &PartPaths,
        progress: Arc<DownloadProgress>,
        connector: Arc<Connector>,
        warm: HashMap<PeerId, Connection>,
        options: &DownloadOptions,
        cancel: &CancellationToken,
    ) -> Job {
        let remaining = state.done.iter().filter(|d| !**d).count() as u64;
        Job {
            hash: state.hash,
            size: state.size,
            cvs: state.cvs.clone().map(Arc::new),
            file,
            data_path: paths.data.clone(),
            board: Mutex::new(Board {
                cursor: state
                    .done
                    .iter()
                    .position(|d| !d)
                    .unwrap_or(state.done.len()) as u64,
                done: state.done.clone(),
                in_flight: HashMap::new(),
                remaining,
                active_sources: 0,
            }),
            changed: Notify::new(),
            progress,
            connector,
            warm: Mutex::new(warm),
            options: options.clone(),
            cancel: cancel.child_token(),
            bytes_fetched: AtomicU64::new(0),
            pieces_fetched: AtomicU64::new(0),
            fatal: Mutex::new(None),
        }
    }

    fn board(&self) -> std::sync::MutexGuard<'_, Board> {
        locked(&self.board)
    }

    /// Records how many sources are working: the board sizes its claims by it.
    fn set_active_sources(&self, count: usize) {
        self.board().active_sources = count;
        self.progress.active_sources.store(count, Ordering::Relaxed);
    }

    fn fail(&self, error: DownloadError) {
        locked(&self.fatal).get_or_insert(error);
        self.cancel.cancel();
    }

    /// Verifies piece `i` and writes it at its offset. Ok(false): it does not match.
    async fn store(self: &Arc<Self>, i: u64, bytes: Vec<u8>) -> Result<bool, DownloadError> {
        let job = self.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let expected = job.cvs.as_ref().map(|cvs| cvs[i as usize]);
            if verify_piece(&job.hash, job.size, i, expected.as_ref(), &bytes).is_err() {
                return Ok(false);
            }
            if job.board().done[i as usize] {
                return Ok(true); // won by a racing fetch
            }
            job.file
                .write_all_at(&bytes, piece_range(job.size, i).start)
                .map_err(|e| DownloadError::io("writing", &job.data_path, e))?;
            Ok(true)
        })
        .await;
        outcome.unwrap_or_else(|_| Err(DownloadError::Interrupted))
    }

    /// Fetches `run` from `source`, storing each verified piece as it completes.
    /// `delivered` counts the pieces this fetch was first to write.
    async fn fetch_run(
        self: &Arc<Self>,
        conn: &mut Connection,
        run: Range<u64>,
        delivered: &mut u64,
        tally: &SourceTally,
    ) -> Result<(), SourceError> {
        let start = piece_range(self.size, run.start).start;
        let end = piece_range(self.size, run.end - 1).end;
        if start == end {
            // The empty file: nothing to fetch, only the hash to check.
            return match self.store(run.start, Vec::new()).await {
                Ok(true) => {
                    if self.board().finish(run.start) {
                        *delivered += 1;
                    }
                    Ok(())
                }
                Ok(false) => Err(SourceError::BadData(
                    "the empty file has another hash".into(),
                )),
                Err(e) => {
                    self.fail(e);
                    Ok(())
                }
            };
        }
        let mut stream = tokio::select! {
            opened = RangeStream::open(conn, &self.hash, start, end) => opened?,
            () = self.cancel.cancelled() => return Err(SourceError::LocalStop),
        };
        // A source dripping a byte now and then never trips the read timeout: it must also keep
        // up a minimum rate over each stall window.
        let window = self.options.stall_timeout;
        let mut window_start = Instant::now();
        let mut window_bytes = 0u64;
        let piece_len = |i: u64| {
            let r = piece_range(self.size, i);
            (r.end - r.start) as usize
        };
        // Pieces being verified and written while the next ones arrive, oldest first.
        let mut storing: VecDeque<(u64, tokio::task::JoinHandle<Result<bool, DownloadError>>)> =
            VecDeque::new();
        let mut piece = run.start;
        let mut current: Vec<u8> = Vec::with_capacity(piece_len(piece));
        let mut received = 0u64;
        loop {
            let chunk = tokio::select! {
                chunk = stream.chunk() => chunk?,
                () = self.cancel.cancelled() => return Ok(()),
            };
            let Some(chunk) = chunk else {
                break;
            };
            self.bytes_fetched
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            tally
                .received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            received += chunk.len() as u64;
            window_bytes += chunk.len() as u64;
            if window_start.elapsed() >= window {
                if window_bytes < MIN_SOURCE_RATE.saturating_mul(window.as_secs().max(1)) {
                    return Err(SourceError::Stalled);
                }
                window_start = Instant::now();
                window_bytes = 0;
            }
            let mut data: &[u8] = &chunk;
            while !data.is_empty() {
                if piece >= run.end {
                    return Err(SourceError::BadData("more bytes than asked for".into()));
                }
                let take = (piece_len(piece) - current.len()).min(data.len());
                current.extend_from_slice(&data[..take]);
                data = &data[take..];
                if current.len() == piece_len(piece) {
                    let next = if piece + 1 < run.end {
                        piece_len(piece + 1)
                    } else {
                        0
                    };
                    let bytes = std::mem::replace(&mut current, Vec::with_capacity(next));
                    let job = self.clone();
                    storing.push_back((
                        piece,
                        tokio::spawn(async move { job.store(piece, bytes).await }),
                    ));
                    piece += 1;
                    while storing.len() > 2 {
                        if let Some((i, task)) = storing.pop_front() {
                            self.settle(i, task, delivered, tally).await?;
                        }
                    }
                }
            }
        }
        while let Some((i, task)) = storing.pop_front() {
            self.settle(i, task, delivered, tally).await?;
        }
        if piece < run.end {
            return Err(SourceError::Unreachable(format!(
                "answer ended after {received} of {} bytes",
                end - start
            )));
        }
        Ok(())
    }

    /// Waits for piece `i` to be verified and written, and records it.
    async fn settle(
        &self,
        i: u64,
        task: tokio::task::JoinHandle<Result<bool, DownloadError>>,
        delivered: &mut u64,
        tally: &SourceTally,
    ) -> Result<(), SourceError> {
        match task.await.unwrap_or(Err(DownloadError::Interrupted)) {
            Ok(true) => {
                locked(&self.progress.queued).take();
                if self.board().finish(i) {
                    *delivered += 1;
                    self.pieces_fetched.fetch_add(1, Ordering::Relaxed);
                    let r = piece_range(self.size, i);
                    self.progress
                        .verified
                        .fetch_add(r.end - r.start, Ordering::Relaxed);
                    tally.verified.fetch_add(r.end - r.start, Ordering::Relaxed);
                    if let Some(route) = tally.route() {
                        self.progress.route_bytes.add(route, r.end - r.start);
                    }
                }
                self.changed.notify_waiters();
                Ok(())
            }
            Ok(false) => Err(SourceError::BadPiece(i)),
            Err(e) => {
                self.fail(e);
                Err(SourceError::LocalStop)
            }
        }
    }

    /// One source's worker: claims and fetches runs until nothing is left or the source fails.
    /// Also returns how many pieces it delivered.
    async fn work(self: Arc<Self>, source: PeerSource) -> (WorkerEnd, u64, Option<peer::Route>) {
        let mut delivered = 0;
        let mut route = None;
        let tally = self.progress.tally(&source);
        tally.active.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let end = self
            .work_loop(&source, &mut delivered, &mut route, &tally)
            .await;
        tally
            .active_ms
            .fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        tally.active.store(false, Ordering::Relaxed);
        (end, delivered, route)
    }

    async fn work_loop(
        self: &Arc<Self>,
        source: &PeerSource,
        delivered: &mut u64,
        route: &mut Option<peer::Route>,
        tally: &SourceTally,
    ) -> WorkerEnd {
        let mut busy_waited = Duration::ZERO;
        let mut conn: Option<Connection> = self
            .warm
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source.peer_id);
        loop {
            if self.cancel.is_cancelled() {
                return WorkerEnd::Stopped;
            }
            let claim = {
                let mut board = self.board();
                if board.remaining == 0 {
                    return WorkerEnd::Complete;
                }
                let claim = board.claim(source.pieces.as_deref());
                if claim.is_none()
                    && let Some(held) = &source.pieces
                    && held
                        .iter()
                        .all(|i| board.done.get(i as usize) != Some(&false))
                {
                    return WorkerEnd::Exhausted;
                }
                claim
            };
            let Some(run) = claim else {
                // Everything is claimed by others: wait for a change (a piece done or given back).
                tokio::select! {
                    () = self.changed.notified() => {}
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = self.cancel.cancelled() => return WorkerEnd::Stopped,
                }
                continue;
            };
            if conn.is_none() {
                let opened = tokio::select! {
                    opened = self.connector.connect(source, &self.hash) => opened,
                    () = self.cancel.cancelled() => Err(SourceError::LocalStop),
                };
                match opened {
                    Ok(opened) => conn = Some(opened),
                    Err(e) => {
                        self.board().release(run);
                        self.changed.notify_waiters();
                        match self.wait_if_busy(e, &mut busy_waited, source).await {
                            Some(end) => return end,
                            None => continue,
                        }
                    }
                }
            }
            let Some(open) = conn.as_mut() else {
                continue;
            };
            *route = Some(open.route);
            tally.route.store(open.route as u8 + 1, Ordering::Relaxed);
            let outcome = self.fetch_run(open, run.clone(), delivered, tally).await;
            self.board().release(run);
            self.changed.notify_waiters();
            if let Err(e) = outcome {
                // A refusal's unread body makes the connection unusable: the next run opens a
                // new one.
                conn = None;
                if let Some(end) = self.wait_if_busy(e, &mut busy_waited, source).await {
                    return end;
                }
            }
        }
    }

    /// For a busy source (its slots, or the relay, are full): waits as told and returns `None`
    /// to try again, unless it has been busy for too long. Any other error ends the worker.
    async fn wait_if_busy(
        &self,
        error: SourceError,
        busy_waited: &mut Duration,
        source: &PeerSource,
    ) -> Option<WorkerEnd> {
        let SourceError::Busy {
            retry_after,
            queue_position,
            ..
        } = &error
        else {
            return Some(match error {
                SourceError::LocalStop => WorkerEnd::Stopped,
                e => WorkerEnd::Dropped(e),
            });
        };
        let retry_after = *retry_after;
        *busy_waited += retry_after;
        if *busy_waited > self.options.busy_limit {
            return Some(WorkerEnd::Dropped(error));
        }
        *locked(&self.progress.queued) = Some(RemoteQueue {
            peer: source.nickname.clone(),
            position: *queue_position,
        });
        debug!(source = %source.label, %error, "source busy; waiting");
        tokio::select! {
            () = tokio::time::sleep(retry_after) => None,
            () = self.cancel.cancelled() => Some(WorkerEnd::Stopped),
        }
    }
}

/// The sizes claimed for a hash, best evidence first, each with the sources that claim it and
/// the name they give it. Implausible sizes are left out.
fn size_claims(found: &SourcesResponse) -> Vec<SizeClaim> {
    let best = SizeClaim {
        size: found.size,
        sources_online: found.sources.len() as u64,
        sources: found.sources.clone(),
        name: found.name.clone(),
    };
    std::iter::once(best)
        .chain(found.other_sizes.iter().cloned())
        .filter(|claim| claim.size <= MAX_SIZE)
        .collect()
}

/// The sources of `size` in an answer of the index server: the peers that claim it, then the
/// peers serving verified pieces of a download at that size.
fn claiming(found: &SourcesResponse, size: u64) -> Vec<PeerSource> {
    let full = size_claims(found)
        .into_iter()
        .find(|claim| claim.size == size)
        .map(|claim| claim.sources)
        .unwrap_or_default();
    full.iter()
        .map(PeerSource::from_api)
        .chain(
            found
                .partial_sources
                .iter()
                .filter(|p| p.size == size && !full.iter().any(|s| s.peer_id == p.source.peer_id))
                .map(PeerSource::partial),
        )
        .collect()
}

/// Where the download goes, checked before anything is fetched: a folder where a file should
/// be, or an existing file without `force`, is refused at once rather than after the transfer.
fn final_destination(
    destination: &Destination,
    file_name: &str,
    fallback: &str,
    force: bool,
) -> Result<(PathBuf, Option<StreamTo>), DownloadError> {
    let (path, stream) = match destination {
        Destination::Dir(dir) => (dir.join(file_name), None),
        Destination::File(path) => (path.clone(), None),
        Destination::Stdout(work) => (work.join(fallback), Some(StreamTo::Stdout)),
        Destination::Stream { work, sink } => {
            (work.join(fallback), Some(StreamTo::Channel(sink.clone())))
        }
    };
    if stream.is_none() {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => return Err(DownloadError::NotAFile(path)),
            Ok(_) if !force => return Err(DownloadError::Exists(path)),
            _ => {}
        }
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| DownloadError::io("creating folder", dir, e))?;
    }
    Ok((path, stream))
}

/// What to download, and where.
#[derive(Debug, Clone)]
pub struct DownloadRequest {
    /// The content.
    pub hash: FileHash,
    /// The file name to use with [`Destination::Dir`] (untrusted: it is sanitized); without it
    /// the name the sources use is taken.
    pub name: Option<String>,
    /// Where the file goes.
    pub destination: Destination,
}

/// Downloads `request.hash` from the sources `finder` names.
pub async fn download(
    finder: Arc<dyn SourceFinder>,
    request: &DownloadRequest,
    options: &DownloadOptions,
    progress: Arc<DownloadProgress>,
    cancel: CancellationToken,
) -> Result<DownloadReport, DownloadError> {
    let (hash, name, destination) = (request.hash, request.name.as_deref(), &request.destination);
    let started = Instant::now();
    progress.set_phase(Phase::Finding);
    let found = match finder.find(&hash).await {
        Ok(found) => found,
        Err(e) if e.code() == Some(peerdex_shared::api::ErrorCode::NotFound) => {
            return Err(DownloadError::NotFound(hash));
        }
        Err(e) => return Err(e.into()),
    };
    let claims = size_claims(&found);
    if claims.is_empty() {
        return Err(DownloadError::Verification(format!(
            "the size reported for {hash} ({} bytes) is implausible",
            found.size
        )));
    }
    let fallback = hash.to_string();
    let mut unproven: Vec<DownloadError> = Vec::new();
    for (attempt, claim) in claims.iter().enumerate() {
        let size = &claim.size;
        if attempt > 0 {
            progress.note(format!(
                "the size {} was not proven; trying {size} bytes, which other peers claim",
                claims[attempt - 1].size
            ));
        }
        // The name the peers of this claim use: liars do not name the file either.
        let file_name = sanitize_file_name(name.unwrap_or(&claim.name), &fallback);
        let (final_path, stream) =
            final_destination(destination, &file_name, &fallback, options.force)?;
        *locked(&progress.name) = Some(file_name);
        let paths = PartPaths::beside(&final_path);
        let span = info_span!("download", hash = %hash.fmt_short(), size);
        let result = run(RunInput {
            finder: &finder,
            hash,
            size: *size,
            sources: claiming(&found, *size),
            paths: &paths,
            stream: stream.clone(),
            options,
            progress: progress.clone(),
            cancel: cancel.clone(),
        })
        .instrument(span)
        .await;
        match result {
            Ok(outcome) => {
                return Ok(DownloadReport {
                    hash,
                    size: *size,
                    path: stream.is_none().then_some(final_path),
                    elapsed_secs: started.elapsed().as_secs_f64(),
                    bytes_fetched: outcome.bytes_fetched,
                    pieces_fetched: outcome.pieces_fetched,
                    pieces_reused: outcome.pieces_reused,
                    sources_used: outcome.used,
                    sources_dropped: dropped_text(&outcome.dropped),
                });
            }
            // No source proved this size: another claimed size may be the real one.
            Err(e @ (DownloadError::Verification(_) | DownloadError::NoSource { .. })) => {
                unproven.push(e)
            }
            Err(e) => return Err(e),
        }
    }
    // A source that could not be reached may be honest; only when every size was refuted by
    // its sources' data is the download a verification failure.
    let mut dropped = Vec::new();
    let mut kept = None;
    let mut verification = None;
    for error in unproven {
        match error {
            DownloadError::NoSource {
                dropped: more,
                kept: left,
                ..
            } => {
                dropped.extend(more);
                kept = kept.or(left);
            }
            other => verification = verification.or(Some(other)),
        }
    }
    if let Some(verification) = verification
        && dropped.is_empty()
        && kept.is_none()
    {
        return Err(verification);
    }
    Err(DownloadError::NoSource {
        hash,
        dropped,
        kept,
    })
}

struct RunInput<'a> {
    finder: &'a Arc<dyn SourceFinder>,
    hash: FileHash,
    size: u64,
    sources: Vec<PeerSource>,
    paths: &'a PartPaths,
    /// Streamed in order rather than kept as a file.
    stream: Option<StreamTo>,
    options: &'a DownloadOptions,
    progress: Arc<DownloadProgress>,
    cancel: CancellationToken,
}

/// What a finished run did.
struct RunOutcome {
    bytes_fetched: u64,
    pieces_fetched: u64,
    pieces_reused: u64,
    used: Vec<String>,
    dropped: Vec<Dropped>,
}

/// The sources of one run: those not tried yet, and those that may be tried again. When none is
/// left the index server is asked again, with growing pauses, a bounded number of times.
struct SourcePool<'a> {
    finder: &'a dyn SourceFinder,
    hash: FileHash,
    size: u64,
    options: &'a DownloadOptions,
    waiting: Vec<PeerSource>,
    /// Sources being used or already used, never offered twice at once.
    tried: HashSet<PeerId>,
    /// Sources that lied or no longer have the content: never asked again.
    refused: HashSet<PeerId>,
    requeries: u32,
    dropped: Vec<Dropped>,
    progress: Arc<DownloadProgress>,
}

impl<'a> SourcePool<'a> {
    fn new(
        finder: &'a dyn SourceFinder,
        hash: FileHash,
        size: u64,
        sources: &[PeerSource],
        options: &'a DownloadOptions,
        progress: Arc<DownloadProgress>,
    ) -> SourcePool<'a> {
        let mut pool = SourcePool {
            finder,
            hash,
            size,
            options,
            waiting: Vec::new(),
            tried: HashSet::new(),
            refused: HashSet::new(),
            requeries: 0,
            dropped: Vec::new(),
            progress,
        };
        pool.offer(sources);
        pool
    }

    fn offer(&mut self, sources: &[PeerSource]) {
        self.waiting = sources
            .iter()
            .filter(|s| {
                Some(s.peer_id) != self.options.exclude_peer
                    && !self.options.avoid_peers.contains(&s.peer_id)
                    && !self.tried.contains(&s.peer_id)
            })
            .cloned()
            .collect();
    }

    /// The next source to use, if one is waiting.
    fn take(&mut self) -> Option<PeerSource> {
        if self.waiting.is_empty() {
            return None;
        }
        let source = self.waiting.remove(0);
        self.tried.insert(source.peer_id);
        Some(source)
    }

    /// Records a dropped source. One that could not be reached, stalled or stayed busy may be
    /// asked again after the next re-ask of the server; one that lied or lost the file is not.
    fn drop_source(&mut self, source: &PeerSource, error: SourceError) {
        self.progress.dropped(source, &error);
        if error.is_final() {
            self.refused.insert(source.peer_id);
        }
        self.dropped.push((source.label.clone(), error));
    }

    /// When nothing is waiting: pauses, asks the index server again and offers the sources not
    /// in use that may be asked (again). False once the re-asks are used up.
    async fn refill(&mut self, in_use: &HashSet<PeerId>, cancel: &CancellationToken) -> bool {
        while self.waiting.is_empty() {
            if self.requeries >= REQUERIES {
                return false;
            }
            let pause = FIRST_REQUERY_WAIT * 2u32.pow(self.requeries);
            self.requeries += 1;
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => return false,
            }
            if let Ok(found) = self.finder.find(&self.hash).await {
                // Everyone not in use and not refused may be tried again.
                self.tried
                    .retain(|peer| in_use.contains(peer) || self.refused.contains(peer));
                self.offer(&claiming(&found, self.size));
            }
        }
        true
    }

    /// The error when no source is left: a verification failure when every source lied, "no
    /// source reachable" otherwise.
    fn exhausted(self, kept: Option<Kept>) -> DownloadError {
        let all_lied =
            !self.dropped.is_empty() && self.dropped.iter().all(|(_, why)| why.is_bad_data());
        let dropped = dropped_text(&self.dropped);
        if all_lied {
            DownloadError::Verification(format!(
                "every source sent data that does not match {}{}",
                self.hash,
                describe(&dropped)
            ))
        } else {
            DownloadError::NoSource {
                hash: self.hash,
                dropped,
                kept,
            }
        }
    }
}

/// One claimed size, downloaded in four stages: resume what an earlier run left
/// ([`resume`]), prove the piece hashes ([`prove_piece_hashes`]), fetch the missing pieces
/// with one worker per source ([`fetch_pieces`]), and move the file into place ([`finish`]).
async fn run(input: RunInput<'_>) -> Result<RunOutcome, DownloadError> {
    let RunInput {
        finder,
        hash,
        size,
        sources,
        paths,
        stream,
        options,
        progress,
        cancel,
    } = input;
    let streamed = stream.is_some();
    progress.total.store(size, Ordering::Relaxed);
    progress.set_phase(Phase::Verifying);
    let (mut state, file, reused) = tokio::select! {
        resumed = resume(paths, hash, size, options.force) => resumed?,
        () = cancel.cancelled() => return Err(DownloadError::Interrupted),
    };
    let resumed = done_bytes(&state);
    progress.resumed.store(resumed, Ordering::Relaxed);
    progress.verified.store(resumed, Ordering::Relaxed);

    // Sources are reached directly, by reverse connection, or through the relay (`peer.rs`).
    let identity = match &options.identity {
        Some(identity) => identity.clone(),
        None => peerdex_client::Identity::generate()?,
    };
    let connector = Arc::new(Connector::new(
        finder.clone(),
        identity,
        options.stall_timeout,
        options.accept_connections,
    ));
    let mut pool = SourcePool::new(&**finder, hash, size, &sources, options, progress.clone());
    let stage = Stage {
        hash,
        size,
        options,
        progress: &progress,
        cancel: &cancel,
    };
    progress.set_phase(Phase::Proving);
    let warm = match stage
        .prove_piece_hashes(&mut state, &mut pool, &connector)
        .await
    {
        Ok(warm) => warm,
        Err(Unproven::Stopped(error)) => return Err(error),
        Err(Unproven::NoSource) => return Err(pool.exhausted(kept(&state, paths, streamed))),
    };
    if warm.is_some() {
        save(&state, &paths.state).await;
    }
    let job = Arc::new(Job::new(
        &state,
        file.clone(),
        paths,
        progress.clone(),
        connector,
        warm.unwrap_or_default(),
        options,
        &cancel,
    ));
    progress.set_phase(Phase::Fetching);
    let used = fetch_pieces(&job, &mut pool, &mut state, paths, stream, options).await;
    if let Some(error) = locked(&job.fatal).take() {
        return Err(error);
    }
    if job.board().remaining > 0 {
        if cancel.is_cancelled() {
            return Err(DownloadError::Interrupted);
        }
        return Err(pool.exhausted(kept(&state, paths, streamed)));
    }
    progress.set_phase(Phase::Finishing);
    finish(&file, paths, streamed)?;
    Ok(RunOutcome {
        bytes_fetched: job.bytes_fetched.load(Ordering::Relaxed),
        pieces_fetched: job.pieces_fetched.load(Ordering::Relaxed),
        pieces_reused: reused,
        used,
        dropped: pool.dropped,
    })
}

/// Resumes what an earlier run left beside the destination: the state file (kept only for the
/// same content and size, with piece hashes that still prove the content), the partial file
/// (opened, locked and sized), and every piece marked written, read back and verified again.
/// Returns the state, the file and how many pieces were kept.
async fn resume(
    paths: &PartPaths,
    hash: FileHash,
    size: u64,
    force: bool,
) -> Result<(PartState, Arc<File>, u64), DownloadError> {
    let mut state = match PartState::load(&paths.state) {
        Ok(Some(mut state)) if state.hash == hash && state.size == size => {
            // Piece hashes damaged on disk would brand every honest source a liar.
            if state
                .cvs
                .as_ref()
                .is_some_and(|cvs| root_from_cvs(cvs) != hash)
            {
                state = PartState::new(hash, size);
            }
            state
        }
        // The same content at another claimed size: that claim was not proven, start afresh.
        Ok(Some(state)) if state.hash == hash => PartState::new(hash, size),
        Ok(Some(_)) if !force => {
            return Err(DownloadError::Exists(paths.data.clone()));
        }
        Ok(_) => PartState::new(hash, size),
        Err(StateError::Invalid) => PartState::new(hash, size),
        Err(source) => {
            return Err(DownloadError::State {
                path: paths.state.clone(),
                source,
            });
        }
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.data)
        .map_err(|e| DownloadError::io("opening", &paths.data, e))?;
    // One download per partial file: a second run on the same destination waits its turn.
    file.try_lock().map_err(|_| {
        DownloadError::io(
            "locking",
            &paths.data,
            std::io::Error::other("another download of this file is running"),
        )
    })?;
    file.set_len(size)
        .map_err(|e| DownloadError::io("sizing", &paths.data, e))?;
    let file = Arc::new(file);
    let reused = reverify(&file, &mut state, &paths.data).await?;
    Ok((state, file, reused))
}

/// What a failed run leaves for the next: the partial file if it holds verified pieces;
/// otherwise nothing, not even empty part and state files.
fn kept(state: &PartState, paths: &PartPaths, streamed: bool) -> Option<Kept> {
    let bytes = done_bytes(state);
    if bytes == 0 || streamed {
        let _ = std::fs::remove_file(&paths.data);
        let _ = std::fs::remove_file(&paths.state);
        return None;
    }
    Some(Kept {
        part: paths.data.clone(),
        bytes,
        size: state.size,
    })
}

/// What the stages of one run share.
struct Stage<'a> {
    hash: FileHash,
    size: u64,
    options: &'a DownloadOptions,
    progress: &'a DownloadProgress,
    cancel: &'a CancellationToken,
}

/// Why the piece hashes could not be proven.
enum Unproven {
    /// Every source was tried (and asked again) without a proof.
    NoSource,
    /// Interrupted, or a local failure.
    Stopped(DownloadError),
}

impl Stage<'_> {
    /// Fetches the piece hashes of a content of two or more pieces, proven against the content
    /// hash, from the first source that has them (a proof that verifies also proves the piece
    /// count of the claimed size). Returns the connection it used, for that source's worker;
    /// `None` when there was nothing to prove (one piece, or hashes kept from before).
    async fn prove_piece_hashes(
        &self,
        state: &mut PartState,
        pool: &mut SourcePool<'_>,
        connector: &Connector,
    ) -> Result<Option<HashMap<PeerId, Connection>>, Unproven> {
        let count = piece_count(self.size);
        if count <= 1 || state.cvs.is_some() {
            return Ok(None);
        }
        let mut busy_waited = Duration::ZERO;
        let nobody = HashSet::new();
        loop {
            if self.cancel.is_cancelled() {
                return Err(Unproven::Stopped(DownloadError::Interrupted));
            }
            let Some(source) = pool.take() else {
                if pool.refill(&nobody, self.cancel).await {
                    continue;
                }
                if self.cancel.is_cancelled() {
                    return Err(Unproven::Stopped(DownloadError::Interrupted));
                }
                return Err(Unproven::NoSource);
            };
            let fetched = tokio::select! {
                fetched = async {
                    let mut conn = connector.connect(&source, &self.hash).await?;
                    let cvs = fetch_piece_hashes(&mut conn, &self.hash, self.size, count).await?;
                    Ok::<_, SourceError>((conn, cvs))
                } => fetched,
                () = self.cancel.cancelled() => {
                    return Err(Unproven::Stopped(DownloadError::Interrupted));
                }
            };
            match fetched {
                Ok((conn, cvs)) => {
                    state.cvs = Some(cvs);
                    // The source is offered again, first, to its worker, with this connection.
                    pool.tried.remove(&source.peer_id);
                    let warm = HashMap::from([(source.peer_id, conn)]);
                    pool.waiting.insert(0, source);
                    return Ok(Some(warm));
                }
                Err(SourceError::Busy { retry_after, .. })
                    if busy_waited < self.options.busy_limit =>
                {
                    // Try the others first; wait only when every source is busy.
                    pool.tried.remove(&source.peer_id);
                    pool.waiting.push(source.clone());
                    busy_waited += retry_after.min(Duration::from_secs(1));
                    debug!(source = %source.label, "busy while asked for piece hashes");
                    tokio::time::sleep(retry_after.min(Duration::from_secs(1))).await;
                }
                Err(e) => {
                    self.progress
                        .note(format!("dropped source {}: {e}", source.label));
                    pool.drop_source(&source, e);
                }
            }
        }
    }
}

/// Fetches the missing pieces: one worker per source (up to `max_sources`), new sources as
/// workers end, the index server asked again when none is left. Saves the state file about
/// every second and once at the end. Returns the sources that delivered, with their routes.
async fn fetch_pieces(
    job: &Arc<Job>,
    pool: &mut SourcePool<'_>,
    state: &mut PartState,
    paths: &PartPaths,
    stream: Option<StreamTo>,
    options: &DownloadOptions,
) -> Vec<String> {
    let streamer = stream.map(|to| tokio::spawn(stream_in_order(job.clone(), to)));
    let mut used: Vec<String> = Vec::new();
    let mut workers: JoinSet<(PeerSource, WorkerEnd, u64, Option<peer::Route>)> = JoinSet::new();
    let mut in_use: HashSet<PeerId> = HashSet::new();
    let mut last_save = Instant::now();
    loop {
        if job.board().remaining == 0 || job.cancel.is_cancelled() {
            break;
        }
        while workers.len() < options.max_sources.max(1) {
            let Some(source) = pool.take() else {
                break;
            };
            in_use.insert(source.peer_id);
            let worker = job.clone();
            workers.spawn(async move {
                let span = info_span!("source", source = %source.label);
                let (end, delivered, route) = worker.work(source.clone()).instrument(span).await;
                (source, end, delivered, route)
            });
            job.set_active_sources(workers.len());
        }
        if workers.is_empty() {
            // Everyone was dropped: ask the server again.
            if pool.refill(&in_use, &job.cancel).await {
                continue;
            }
            break;
        }
        let finished = tokio::select! {
            finished = workers.join_next() => finished,
            () = tokio::time::sleep(SAVE_EVERY) => None,
        };
        if last_save.elapsed() >= SAVE_EVERY {
            state.done = job.board().done.clone();
            save(state, &paths.state).await;
            last_save = Instant::now();
        }
        let (source, end, delivered, route) = match finished {
            Some(Ok(done)) => done,
            Some(Err(e)) => {
                // A worker panicked: a bug, but the others go on.
                warn!(error = %e, "a download worker failed");
                continue;
            }
            None => continue,
        };
        in_use.remove(&source.peer_id);
        job.set_active_sources(workers.len());
        if let WorkerEnd::Dropped(e) = end {
            warn!(source = %source.label, error = %e, "source dropped");
            job.progress
                .note(format!("dropped source {}: {e}", source.label));
            pool.drop_source(&source, e);
        }
        if delivered > 0 {
            used.push(used_label(&source, route));
        }
    }
    job.cancel.cancel();
    while let Some(Ok((source, _, delivered, route))) = workers.join_next().await {
        if delivered > 0 {
            used.push(used_label(&source, route));
        }
    }
    job.set_active_sources(0);
    state.done = job.board().done.clone();
    save(state, &paths.state).await;
    if let Some(streamer) = streamer {
        // The streamer ends once every piece was written out (or on failure).
        let _ = streamer.await;
    }
    used
}

/// Moves the finished file into place. No read-back: every piece was verified against the
/// proven piece hashes before it was written (or re-read and verified on resume), and those
/// hashes were checked against the content hash, so the file is the content. Reading it back
/// would hash it a second time.
fn finish(file: &File, paths: &PartPaths, streamed: bool) -> Result<(), DownloadError> {
    file.sync_all()
        .map_err(|e| DownloadError::io("flushing", &paths.data, e))?;
    if streamed {
        let _ = std::fs::remove_file(&paths.data);
    } else {
        std::fs::rename(&paths.data, &paths.destination)
            .map_err(|e| DownloadError::io("renaming into place", &paths.destination, e))?;
        // Make the rename itself durable.
        let dir = match paths.destination.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if let Ok(dir) = File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    let _ = std::fs::remove_file(&paths.state);
    Ok(())
}

/// How a source that delivered is named in the report: with the route its bytes took.
fn used_label(source: &PeerSource, route: Option<peer::Route>) -> String {
    match route {
        Some(route) => format!("{} via {route}", source.label),
        None => source.label.clone(),
    }
}

fn done_bytes(state: &PartState) -> u64 {
    state
        .done
        .iter()
        .enumerate()
        .filter(|(_, d)| **d)
        .map(|(i, _)| {
            let r = piece_range(state.size, i as u64);
            r.end - r.start
        })
        .sum()
}

/// Writes the state file off the async threads (it holds every piece hash and is flushed).
async fn save(state: &PartState, path: &Path) {
    let (state, path) = (state.clone(), path.to_owned());
    let outcome = tokio::task::spawn_blocking(move || {
        if let Err(e) = state.save(&path) {
            warn!(path = %path.display(), error = %e, "cannot save the download state");
        }
    })
    .await;
    if outcome.is_err() {
        warn!("saving the download state failed");
    }
}

/// Reads back every piece an earlier run marked written and keeps only those that verify.
/// Returns how many were kept.
async fn reverify(
    file: &Arc<File>,
    state: &mut PartState,
    path: &Path,
) -> Result<u64, DownloadError> {
    if piece_count(state.size) > 1 && state.cvs.is_none() {
        state.done.iter_mut().for_each(|d| *d = false);
        return Ok(0);
    }
    // Without piece hashes only pieces marked written are worth reading (a one-piece file).
    if state.done_count() == 0 && state.cvs.is_none() {
        return Ok(0);
    }
    let file = file.clone();
    let mut checked = state.clone();
    let checked = tokio::task::spawn_blocking(move || -> std::io::Result<PartState> {
        let mut buf = Vec::new();
        for i in 0..checked.done.len() {
            let range = piece_range(checked.size, i as u64);
            // A piece written but not yet recorded when the last run was killed (the state
            // file is saved about once a second) is still in the partial file: with the piece
            // hashes known it is checked too, and kept if it verifies. The partial file is
            // sparse, so pieces never written are holes and not read.
            if !checked.done[i]
                && (checked.cvs.is_none() || !has_data(&file, range.start, range.end))
            {
                continue;
            }
            buf.resize((range.end - range.start) as usize, 0);
            file.read_exact_at(&mut buf, range.start)?;
            let cv = checked.cvs.as_ref().map(|c| c[i]);
            checked.done[i] =
                verify_piece(&checked.hash, checked.size, i as u64, cv.as_ref(), &buf).is_ok();
        }
        Ok(checked)
    })
    .await
    .map_err(|_| DownloadError::Interrupted)?
    .map_err(|e| DownloadError::io("reading back", path, e))?;
    *state = checked;
    Ok(state.done_count())
}

/// Whether the file at `path` is exactly content `hash` (read and hashed whole; a size that
/// differs from `size`, when given, answers at once): a download already done.
pub fn holds_content(path: &Path, hash: &FileHash, size: Option<u64>) -> bool {
    if size.is_some_and(|size| std::fs::metadata(path).map(|m| m.len()).ok() != Some(size)) {
        return false;
    }
    let mut hasher = blake3::Hasher::new();
    std::fs::File::open(path)
        .and_then(|mut file| std::io::copy(&mut file, &mut hasher))
        .is_ok()
        && hasher.finalize().as_bytes() == hash.as_bytes()
}

/// Whether bytes `start..end` of `file` hold data rather than a hole. A file system that does
/// not report holes says "data" everywhere, which only costs reading.
fn has_data(file: &File, start: u64, end: u64) -> bool {
    if start >= end {
        return false;
    }
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(start)) {
        Ok(at) => at < end,
        // Past the last data: a hole up to the end.
        Err(rustix::io::Errno::NXIO) => false,
        Err(_) => true,
    }
}

/// Writes the pieces to `to` in order, as they are verified.
async fn stream_in_order(job: Arc<Job>, to: StreamTo) {
    let (result, what) = match to {
        StreamTo::Stdout => (
            write_pieces_in_order(&job, tokio::io::stdout()).await,
            "standard output",
        ),
        StreamTo::Channel(sink) => (
            write_pieces_in_order(&job, ChannelWriter(sink)).await,
            "the stream's reader",
        ),
    };
    if let Err(e) = result {
        // The reader went away (a player was closed) or the output is full: stop the download.
        job.fail(DownloadError::io("writing to", Path::new(what), e));
    }
}

/// Sends each write to a channel as one chunk.
struct ChannelWriter(tokio::sync::mpsc::Sender<bytes::Bytes>);

/// The writes [`write_pieces_in_order`] makes: whole pieces, then one flush.
trait PieceWriter {
    async fn write_piece(&mut self, bytes: Vec<u8>) -> std::io::Result<()>;
    async fn finish(&mut self) -> std::io::Result<()>;
}

impl PieceWriter for tokio::io::Stdout {
    async fn write_piece(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        tokio::io::AsyncWriteExt::write_all(self, &bytes).await
    }
    async fn finish(&mut self) -> std::io::Result<()> {
        tokio::io::AsyncWriteExt::flush(self).await
    }
}

impl PieceWriter for ChannelWriter {
    async fn write_piece(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        self.0
            .send(bytes::Bytes::from(bytes))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
    async fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn write_pieces_in_order(job: &Job, mut out: impl PieceWriter) -> std::io::Result<()> {
    let count = job.board().done.len() as u64;
    let mut next = 0u64;
    while next < count {
        let ready = job.board().done[next as usize];
        if !ready {
            if job.cancel.is_cancelled() {
                return Ok(());
            }
            tokio::select! {
                () = job.changed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            continue;
        }
        let range = piece_range(job.size, next);
        let file = job.file.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start).map(|()| buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        out.write_piece(bytes).await?;
        next += 1;
    }
    // The last write's error only shows here.
    out.finish().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(count: usize, sources: usize) -> Board {
        Board {
            done: vec![false; count],
            cursor: 0,
            in_flight: HashMap::new(),
            remaining: count as u64,
            active_sources: sources,
        }
    }

    #[test]
    fn claims_take_runs_then_single_pieces_then_race_the_slowest() {
        let run = RUN_PIECES;
        let count = 2 * run + 2;
        let mut b = board(count as usize, 2);
        assert_eq!(b.claim(None), Some(0..run));
        // Few pieces left unclaimed: one at a time.
        assert_eq!(b.claim(None), Some(run..run + 1));
        for i in 0..run {
            assert!(b.finish(i));
        }
        assert_eq!(b.cursor, run);
        for i in run + 1..count {
            assert_eq!(b.claim(None), Some(i..i + 1));
        }
        // Everything is claimed: the oldest piece in flight is raced, once.
        let raced = b.claim(None).unwrap();
        assert_eq!(raced.end - raced.start, 1);
        assert!((run..count).contains(&raced.start));
        // The first fetch to finish wins; the racer's copy is not counted again.
        assert!(b.finish(raced.start));
        assert!(!b.finish(raced.start));
        // A failed run goes back to the pool.
        let last = count - 1;
        if raced.start != last {
            b.release(last..count);
            assert_eq!(b.claim(None), Some(last..count));
        }
    }

    #[test]
    fn a_partial_source_is_asked_only_for_the_pieces_it_holds() {
        // One source working: runs are as long as what it holds allows.
        let mut b = board(10, 1);
        let held = PieceSet::from_done(&[
            false, false, true, true, true, false, false, true, false, false,
        ]);
        assert_eq!(b.claim(Some(&held)), Some(2..5));
        assert_eq!(b.claim(Some(&held)), Some(7..8));
        // Its pieces are all in flight: it races one of them, never a piece it lacks.
        let raced = b.claim(Some(&held)).unwrap();
        assert!(held.contains(raced.start), "{raced:?}");
        // A full source still takes the rest from the start.
        assert_eq!(b.claim(None), Some(0..2));
    }

    #[test]
    fn a_lone_source_gets_long_ranges_to_the_end() {
        let count = LONE_SOURCE_RUN_PIECES + 3;
        let mut b = board(count as usize, 1);
        assert_eq!(b.claim(None), Some(0..LONE_SOURCE_RUN_PIECES));
        // No single-piece endgame: there is no other source to race.
        assert_eq!(b.claim(None), Some(LONE_SOURCE_RUN_PIECES..count));
    }
}
