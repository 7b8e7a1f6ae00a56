//! Scan and hash progress: counters the scanner and hasher bump, which `peerdex status` reads
//! and which are shown as a progress bar on a terminal or as periodic log lines otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Live counters of the scanner and hasher.
#[derive(Debug, Default)]
pub struct Progress {
    /// A scan is running.
    pub scanning: AtomicBool,
    /// Folders read since the agent started.
    pub dirs_scanned: AtomicU64,
    /// Files seen since the agent started.
    pub files_seen: AtomicU64,
    /// Files waiting for a hash.
    pub hash_files_pending: AtomicU64,
    /// Bytes waiting for a hash.
    pub hash_bytes_pending: AtomicU64,
    /// Files hashed since the agent started.
    pub files_hashed: AtomicU64,
    /// Bytes read for hashing since the agent started.
    pub bytes_hashed: AtomicU64,
    /// Names the scanner left out because they cannot be shared, by (share, folder).
    unshareable: Mutex<BTreeMap<(String, String), Vec<Unshareable>>>,
}

/// A file or folder left out of a share because its name cannot be shared.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Unshareable {
    /// The share.
    pub share: String,
    /// Its path within the share (not UTF-8 bytes shown as U+FFFD).
    pub path: String,
    /// Why it cannot be shared.
    pub reason: String,
}

/// Most unshareable names remembered (the rest are counted by the scan's log line).
const MAX_UNSHAREABLE: usize = 1000;

/// A snapshot of [`Progress`], as `peerdex status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProgressSnapshot {
    /// A scan is running.
    pub scanning: bool,
    /// Folders read since start.
    pub dirs_scanned: u64,
    /// Files seen since start.
    pub files_seen: u64,
    /// Files waiting for a hash.
    pub hash_files_pending: u64,
    /// Bytes waiting for a hash.
    pub hash_bytes_pending: u64,
    /// Files hashed since start.
    pub files_hashed: u64,
    /// Bytes hashed since start.
    pub bytes_hashed: u64,
}

impl Progress {
    /// Adds files to the hash queue.
    pub fn queue_hashing(&self, files: u64, bytes: u64) {
        self.hash_files_pending.fetch_add(files, Ordering::Relaxed);
        self.hash_bytes_pending.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sets the hash queue to what the catalog says (the counters drift when files change
    /// while queued).
    pub fn set_pending(&self, files: u64, bytes: u64) {
        self.hash_files_pending.store(files, Ordering::Relaxed);
        self.hash_bytes_pending.store(bytes, Ordering::Relaxed);
    }

    /// Records one hashed file.
    pub fn hashed(&self, bytes: u64) {
        self.files_hashed.fetch_add(1, Ordering::Relaxed);
        saturating_sub(&self.hash_files_pending, 1);
        saturating_sub(&self.hash_bytes_pending, bytes);
    }

    /// Bytes read so far (also counted while a large file is still being hashed).
    pub fn add_bytes_hashed(&self, bytes: u64) {
        self.bytes_hashed.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records the names of `dir` in `share` that could not be shared, replacing what an
    /// earlier scan of that folder found.
    pub fn unshareable_in(&self, share: &str, dir: &str, names: Vec<Unshareable>) {
        let mut all = self.unshareable.lock().unwrap_or_else(|p| p.into_inner());
        let key = (share.to_owned(), dir.to_owned());
        if names.is_empty() {
            all.remove(&key);
            return;
        }
        let held: usize = all.values().map(Vec::len).sum();
        if held < MAX_UNSHAREABLE {
            let room = MAX_UNSHAREABLE - held;
            all.insert(key, names.into_iter().take(room).collect());
        }
    }

    /// Forgets the unshareable names of shares not in `shares` (unshared folders).
    pub fn retain_unshareable(&self, shares: &[String]) {
        self.unshareable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(share, _), _| shares.contains(share));
    }

    /// Every unshareable name found, by share and path.
    pub fn unshareable(&self) -> Vec<Unshareable> {
        let all = self.unshareable.lock().unwrap_or_else(|p| p.into_inner());
        all.values().flatten().cloned().collect()
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            scanning: self.scanning.load(Ordering::Relaxed),
            dirs_scanned: self.dirs_scanned.load(Ordering::Relaxed),
            files_seen: self.files_seen.load(Ordering::Relaxed),
            hash_files_pending: self.hash_files_pending.load(Ordering::Relaxed),
            hash_bytes_pending: self.hash_bytes_pending.load(Ordering::Relaxed),
            files_hashed: self.files_hashed.load(Ordering::Relaxed),
            bytes_hashed: self.bytes_hashed.load(Ordering::Relaxed),
        }
    }
}

fn saturating_sub(counter: &AtomicU64, amount: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(amount))
    });
}

/// Shows progress until `stop`: a bar on a terminal (files and bytes hashed, rate, ETA), a log
/// line every `log_every` otherwise, and only while there is work.
pub async fn report(progress: Arc<Progress>, log_every: Duration, stop: CancellationToken) {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} hashing {msg} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let tick = if terminal {
        Duration::from_millis(200)
    } else {
        log_every
    };
    let mut last_logged = (u64::MAX, u64::MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(tick) => {}
        }
        let now = progress.snapshot();
        let busy = now.scanning || now.hash_files_pending > 0;
        match &bar {
            Some(bar) if busy => {
                // The bar covers this session's work: what is done plus what is still queued.
                bar.set_length(now.bytes_hashed + now.hash_bytes_pending);
                bar.set_position(now.bytes_hashed);
                bar.set_message(format!(
                    "{} files, {} queued{}",
                    now.files_hashed,
                    now.hash_files_pending,
                    if now.scanning { ", scanning" } else { "" }
                ));
            }
            Some(bar) => bar.finish_and_clear(),
            None if busy || (now.files_hashed, now.files_seen) != last_logged => {
                if busy || last_logged.0 != u64::MAX {
                    info!(
                        scanning = now.scanning,
                        files_seen = now.files_seen,
                        files_hashed = now.files_hashed,
                        bytes_hashed = now.bytes_hashed,
                        files_queued = now.hash_files_pending,
                        bytes_queued = now.hash_bytes_pending,
                        "scan progress"
                    );
                }
                last_logged = (now.files_hashed, now.files_seen);
            }
            None => {}
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}
