//! Hashing files with BLAKE3 and keeping the piece hashes that let downloaders verify each piece.
//!
//! A file larger than one piece is hashed piece by piece (each piece is a BLAKE3 subtree), with
//! the pieces spread over the hash threads; the piece CVs are then merged into the root, so one
//! read yields both the content hash and the verification data. Smaller files are hashed whole,
//! several at a time. The stat taken when the file was queued is checked before and after: a file
//! that changed while being read is not recorded.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use peerdex_shared::FileHash;
use peerdex_shared::pieces::{
    PIECE_SIZE, PieceCv, piece_count, piece_cv, piece_range, root_from_cvs,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn};

use peerdex_shared::api::MediaTags;

use super::catalog::{Catalog, CatalogError, Change, FileRecord, Hashed, Stat};
use super::config::Share;
use super::events::Events;
use super::progress::Progress;

/// Why a file was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The file changed (or vanished) since it was queued: rescan it.
    #[error("file changed while it was being hashed")]
    Changed,
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The agent is stopping.
    #[error("stopped")]
    Stopped,
}

/// A file's hash and piece CVs, or why there are none.
pub type HashOutcome = Result<(FileHash, Vec<PieceCv>), HashError>;

/// A file's hash, piece CVs and tags, or why there are none.
type TaggedOutcome = Result<(FileHash, Vec<PieceCv>, MediaTags), HashError>;

/// Files taken from the catalog and recorded per transaction.
const HASH_BATCH: usize = 2048;

/// Files at least this large are split over all hash threads.
const SPLIT_THRESHOLD: u64 = 4 * PIECE_SIZE;

/// Opens a shared file for reading: never a FIFO or device (whose open could block forever),
/// and, unless the share follows symlinks, not through a symlink as the last component.
pub fn open_shared(path: &Path, follow_symlinks: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut flags = libc::O_NONBLOCK;
    if !follow_symlinks {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ))
    }
}

fn check(file: &File, expected: &Stat) -> Result<(), HashError> {
    if Stat::of(&file.metadata()?).same_version(expected) {
        Ok(())
    } else {
        Err(HashError::Changed)
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), HashError> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            HashError::Changed
        } else {
            HashError::Io(e)
        }
    })
}

/// Hashes the file at `path`, which must still have `expected` stat. Returns the content hash
/// and, for files of two or more pieces, the CV of every piece.
pub fn hash_file(
    path: &Path,
    expected: &Stat,
    follow_symlinks: bool,
    threads: usize,
    progress: &Progress,
    stop: &CancellationToken,
) -> HashOutcome {
    let file = open_checked(path, expected, follow_symlinks)?;
    let result = hash_pieces(&file, expected.size, threads, progress, stop)?;
    // A write that kept the size but landed during the read shows in the mtime.
    check(&file, expected)?;
    Ok(result)
}

/// Opens a queued file and checks it still has the stat it was queued with.
fn open_checked(path: &Path, expected: &Stat, follow_symlinks: bool) -> Result<File, HashError> {
    let file = match open_shared(path, follow_symlinks) {
        Ok(file) => file,
        // Gone, or replaced by a symlink or something that is not a file: rescan it.
        Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => {
            return Err(HashError::Changed);
        }
        Err(e) => return Err(e.into()),
    };
    check(&file, expected)?;
    Ok(file)
}

/// [`hash_file`], then the file's tags while its pages are still cached; both only if the
/// file kept its stat throughout.
fn hash_and_tag(
    path: &Path,
    expected: &Stat,
    follow_symlinks: bool,
    threads: usize,
    progress: &Progress,
    stop: &CancellationToken,
) -> TaggedOutcome {
    let file = open_checked(path, expected, follow_symlinks)?;
    let (hash, cvs) = hash_pieces(&file, expected.size, threads, progress, stop)?;
    let name = path.file_name().map(|n| n.to_string_lossy());
    let tags = match name {
        Some(name) if super::tags::has_tags(&name) => super::tags::read_tags(&file, &name),
        _ => MediaTags::default(),
    };
    check(&file, expected)?;
    Ok((hash, cvs, tags))
}

/// The tags of a file hashed before tags were read, if it kept its stat.
fn tag_file(path: &Path, expected: &Stat, follow_symlinks: bool) -> Result<MediaTags, HashError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name.filter(|n| super::tags::has_tags(n)) else {
        return Ok(MediaTags::default());
    };
    let file = open_checked(path, expected, follow_symlinks)?;
    let tags = super::tags::read_tags(&file, &name);
    check(&file, expected)?;
    Ok(tags)
}

/// The hash and piece CVs of the first `len` bytes of `file`, piece ranges spread over
/// `threads` threads for large files.
fn hash_pieces(
    file: &File,
    len: u64,
    threads: usize,
    progress: &Progress,
    stop: &CancellationToken,
) -> HashOutcome {
    let count = piece_count(len);
    if count == 1 {
        let mut buf = vec![0u8; len as usize];
        read_exact_at(file, &mut buf, 0)?;
        progress.add_bytes_hashed(len);
        return Ok((
            FileHash::from_bytes(*blake3::hash(&buf).as_bytes()),
            Vec::new(),
        ));
    }
    let threads = if len >= SPLIT_THRESHOLD {
        threads.max(1)
    } else {
        1
    };
    let next = AtomicU64::new(0);
    let cvs = Mutex::new(vec![[0u8; 32]; count as usize]);
    std::thread::scope(|scope| -> Result<(), HashError> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<(), HashError> {
                    let mut buf = vec![0u8; PIECE_SIZE as usize];
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= count {
                            return Ok(());
                        }
                        if stop.is_cancelled() {
                            return Err(HashError::Stopped);
                        }
                        let range = piece_range(len, index);
                        let piece = &mut buf[..(range.end - range.start) as usize];
                        read_exact_at(file, piece, range.start)?;
                        let cv = piece_cv(index, piece);
                        progress.add_bytes_hashed(piece.len() as u64);
                        if let Ok(mut cvs) = cvs.lock() {
                            cvs[index as usize] = cv;
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| HashError::Io(std::io::Error::other("a hash thread panicked")))??;
        }
        Ok(())
    })?;
    let cvs = cvs.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok((root_from_cvs(&cvs), cvs))
}

/// The hashing loop's inputs.
pub struct HashLoop {
    /// Where unhashed files are found and hashes recorded.
    pub catalog: Arc<Catalog>,
    /// The shares now.
    pub shares: super::LiveShares,
    /// Threads to hash with.
    pub threads: usize,
    /// Counters.
    pub progress: Arc<Progress>,
    /// Wakes it (`hash_wanted`); it tells of recorded hashes (`catalog_changed`) and sends
    /// files that changed while being hashed for a rescan.
    pub events: Arc<Events>,
}

/// The hashing loop: takes unhashed files from the catalog in batches, hashes them and records
/// the results, until `stop`.
pub fn run(inputs: HashLoop, stop: CancellationToken) -> Result<(), CatalogError> {
    let HashLoop {
        catalog,
        shares,
        threads,
        progress,
        events,
    } = inputs;
    let reader = catalog.reader()?;
    let (files, bytes) = reader.unhashed_totals()?;
    progress.set_pending(files, bytes);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| CatalogError::Corrupt(format!("cannot start the hash thread: {e}")))?;
    while !stop.is_cancelled() {
        let batch = reader.unhashed(HASH_BATCH)?;
        if batch.is_empty() {
            // Files hashed before tags were read: their tags, without hashing them again.
            let untagged = reader.untagged(HASH_BATCH)?;
            if !untagged.is_empty() {
                let roots = super::shares_by_name(&shares.borrow());
                let changed = tag_backlog(&catalog, &roots, &events, untagged, threads, &stop)?;
                if changed > 0 {
                    events.catalog_changed.notify_one();
                }
                continue;
            }
            let (files, bytes) = reader.unhashed_totals()?;
            progress.set_pending(files, bytes);
            // Sleep until a scan queues work; the timeout covers a notification that raced.
            runtime.block_on(async {
                tokio::select! {
                    () = events.hash_wanted.notified() => {}
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            });
            continue;
        }
        let span = info_span!("hash_batch", files = batch.len());
        let _guard = span.enter();
        let roots = super::shares_by_name(&shares.borrow());
        let outcome = hash_batch(&roots, &batch, threads, &progress, &stop);
        let mut hashed = Vec::new();
        let mut changed = Vec::new();
        for (file, result) in batch.into_iter().zip(outcome) {
            match result {
                Some(Ok((hash, cvs, tags))) => {
                    progress.hashed(file.stat.size);
                    hashed.push(Hashed {
                        file,
                        hash,
                        cvs,
                        tags,
                    });
                }
                Some(Err(HashError::Changed)) => changed.push(file),
                Some(Err(HashError::Stopped)) | None => {}
                Some(Err(HashError::Io(e))) => {
                    warn!(share = %file.key.share, path = %file.key.rel_path(), error = %e,
                        "cannot read file; leaving it out of the share");
                    progress.hashed(file.stat.size);
                    catalog.reject(&file.key.share, &file.key.rel_path())?;
                }
            }
        }
        if catalog.record_hashes(&hashed)? > 0 {
            events.catalog_changed.notify_one();
        } else if !changed.is_empty() {
            // Only files that keep changing (being written, or a flaky network filesystem):
            // give them a moment instead of spinning.
            runtime.block_on(async {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            });
        }
        requeue_changed(&catalog, &roots, &events, changed)?;
    }
    Ok(())
}

/// Files that changed since they were queued: their new stat (or their removal) is recorded
/// straight away, so the next batch does not pick them up with the old one, and they are
/// rescanned.
fn requeue_changed(
    catalog: &Catalog,
    roots: &HashMap<String, Share>,
    events: &Events,
    changed: Vec<FileRecord>,
) -> Result<(), CatalogError> {
    for file in changed {
        debug!(path = %file.key.rel_path(), "changed while being read; rescanning");
        let path = roots
            .get(&file.key.share)
            .map(|share| share.root.join(file.key.rel_path()));
        let change = match path.map(std::fs::symlink_metadata) {
            Some(Ok(meta)) if meta.is_file() => Change::Upsert(file.key.clone(), Stat::of(&meta)),
            _ => Change::Remove(file.key.clone()),
        };
        catalog.apply(&[change])?;
        events.rescan(&file.key.share, file.key.rel_path());
    }
    Ok(())
}

/// Reads the tags of a batch of files hashed before tags were read, several at a time, and
/// records them. Returns how many rows got new tags.
fn tag_backlog(
    catalog: &Catalog,
    roots: &HashMap<String, Share>,
    events: &Events,
    batch: Vec<FileRecord>,
    threads: usize,
    stop: &CancellationToken,
) -> Result<usize, CatalogError> {
    let span = info_span!("tag_backlog", files = batch.len());
    let _guard = span.enter();
    let results: Vec<Mutex<Option<Result<MediaTags, HashError>>>> =
        batch.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                while !stop.is_cancelled() {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = batch.get(i) else {
                        return;
                    };
                    let result = match roots.get(&file.key.share) {
                        Some(share) => tag_file(
                            &share.root.join(file.key.rel_path()),
                            &file.stat,
                            share.rules.follow_symlinks,
                        ),
                        None => Err(HashError::Changed),
                    };
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    let mut read = Vec::new();
    let mut changed = Vec::new();
    for (file, slot) in batch.into_iter().zip(results) {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(Ok(tags)) => read.push((file, tags)),
            Some(Err(HashError::Changed)) => changed.push(file),
            // Unreadable now: it is shared without tags (they are read again if it changes).
            Some(Err(HashError::Io(_))) => read.push((file, MediaTags::default())),
            Some(Err(HashError::Stopped)) | None => {}
        }
    }
    let recorded = catalog.record_tags(&read)?;
    requeue_changed(catalog, roots, events, changed)?;
    Ok(recorded)
}

/// Hashes a batch: small files several at a time, large ones each over all threads. `None` for
/// files skipped because of `stop`.
fn hash_batch(
    roots: &HashMap<String, Share>,
    batch: &[FileRecord],
    threads: usize,
    progress: &Progress,
    stop: &CancellationToken,
) -> Vec<Option<TaggedOutcome>> {
    let hash_one = |file: &FileRecord, threads: usize| {
        if stop.is_cancelled() {
            return None;
        }
        let Some(share) = roots.get(&file.key.share) else {
            return Some(Err(HashError::Changed));
        };
        Some(hash_and_tag(
            &share.root.join(file.key.rel_path()),
            &file.stat,
            share.rules.follow_symlinks,
            threads,
            progress,
            stop,
        ))
    };
    let results: Vec<Mutex<Option<_>>> = batch.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = batch.get(i) else {
                        return;
                    };
                    if file.stat.size >= SPLIT_THRESHOLD {
                        continue; // done below, with every thread
                    }
                    let result = hash_one(file, 1);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = result;
                    }
                }
            });
        }
    });
    for (i, file) in batch.iter().enumerate() {
        if file.stat.size >= SPLIT_THRESHOLD {
            let result = hash_one(file, threads);
            if let Ok(mut slot) = results[i].lock() {
                *slot = result;
            }
        }
    }
    results
        .into_iter()
        .map(|slot| slot.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_blake3_and_pieces_verify() {
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::default();
        let p = PIECE_SIZE as usize;
        for len in [0, 1, p, p + 1, 5 * p + 3] {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &bytes).unwrap();
            let stat = Stat::of(&std::fs::metadata(&path).unwrap());
            let (hash, cvs) =
                hash_file(&path, &stat, false, 2, &progress, &CancellationToken::new()).unwrap();
            assert_eq!(
                hash.as_bytes(),
                blake3::hash(&bytes).as_bytes(),
                "len {len}"
            );
            assert_eq!(cvs.len(), if len > p { len.div_ceil(p) } else { 0 });
        }
    }

    #[test]
    fn a_file_changed_since_queued_is_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"before").unwrap();
        let stat = Stat::of(&std::fs::metadata(&path).unwrap());
        std::fs::write(&path, b"after, longer").unwrap();
        assert!(matches!(
            hash_file(
                &path,
                &stat,
                false,
                1,
                &Progress::default(),
                &CancellationToken::new()
            ),
            Err(HashError::Changed)
        ));
    }
}
