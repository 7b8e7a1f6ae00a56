//! Walking shares: compares each folder's listing with its catalog rows and records what was
//! added, changed or removed. A folder whose files all kept their size, mtime and inode costs
//! one directory read, one `lstat` per entry and one indexed query; no file is opened.
//!
//! Folders are walked by a few threads sharing a stack of folders to visit, so memory holds the
//! folders waiting to be read, never the share's file list.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use peerdex_shared::validate::{PathLimits, validate_relative_path};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::catalog::{Catalog, CatalogError, CatalogReader, Change, FileKey, Stat, join};
use super::config::Share;
use super::progress::{Progress, Unshareable};

/// What one scan did.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// Folders read.
    pub dirs: u64,
    /// Files seen.
    pub files: u64,
    /// Files new or changed (queued for hashing).
    pub changed: u64,
    /// Entries left out because their names cannot be shared (not UTF-8, control
    /// characters, too long).
    pub unshareable_names: u64,
    /// Folders that could not be read (left as they were in the catalog).
    pub unreadable_dirs: u64,
}

/// Scans folders of shares into the catalog.
pub struct Scanner {
    catalog: Arc<Catalog>,
    progress: Arc<Progress>,
    threads: usize,
    limits: PathLimits,
    stop: CancellationToken,
}

struct Job {
    rel: String,
    /// Descend into every subfolder (a full scan) or only into new ones.
    recursive: bool,
    /// (dev, inode) of the folders above, to stop symlink loops.
    ancestors: Arc<Vec<(u64, u64)>>,
}

struct Queue {
    jobs: Vec<Job>,
    active: usize,
    report: ScanReport,
    error: Option<CatalogError>,
}

impl Scanner {
    /// A scanner writing into `catalog` with `threads` walkers.
    pub fn new(catalog: Arc<Catalog>, progress: Arc<Progress>, threads: usize) -> Scanner {
        Scanner {
            catalog,
            progress,
            threads: threads.max(1),
            limits: PathLimits::default(),
            stop: CancellationToken::new(),
        }
    }

    /// Makes scans stop early (between folders) when `stop` is cancelled.
    pub fn with_stop(mut self, stop: CancellationToken) -> Scanner {
        self.stop = stop;
        self
    }

    /// False when the share's folder looks unmounted: it is empty and on another device than
    /// at the last scan. A mount point left empty must not look like a share whose files were
    /// all deleted.
    fn root_is_trustworthy(&self, share: &Share) -> Result<bool, CatalogError> {
        let Ok(meta) = std::fs::metadata(&share.root) else {
            return Ok(false);
        };
        if !meta.is_dir() {
            return Ok(false);
        }
        let dev = Stat::of(&meta).dev as i64;
        let key = format!("root_dev:{}", share.name);
        let known = self.catalog.meta(&key)?;
        let empty = std::fs::read_dir(&share.root).is_ok_and(|mut d| d.next().is_none());
        if known.is_some_and(|known| known != dev) && empty {
            return Ok(false);
        }
        if known != Some(dev) {
            self.catalog.set_meta(&key, dev)?;
        }
        Ok(true)
    }

    /// Scans the whole share: every folder is read.
    pub fn scan_share(&self, share: &Share) -> Result<ScanReport, CatalogError> {
        self.scan_from(share, "", true)
    }

    /// Scans the folder `rel` of `share` and the subfolders new to the catalog; known
    /// subfolders are not read (a change inside them comes with its own event).
    fn scan_folder(&self, share: &Share, rel: &str) -> Result<ScanReport, CatalogError> {
        self.scan_from(share, rel, false)
    }

    fn scan_from(
        &self,
        share: &Share,
        rel: &str,
        recursive: bool,
    ) -> Result<ScanReport, CatalogError> {
        if !self.root_is_trustworthy(share)? {
            warn!(share = %share.name, root = %share.root.display(),
                "share folder is missing or looks unmounted; keeping its files as they were");
            return Ok(ScanReport {
                unreadable_dirs: 1,
                ..ScanReport::default()
            });
        }
        let queue = Mutex::new(Queue {
            jobs: vec![Job {
                rel: rel.to_owned(),
                recursive,
                ancestors: Arc::new(Vec::new()),
            }],
            active: 0,
            report: ScanReport::default(),
            error: None,
        });
        let ready = Condvar::new();
        std::thread::scope(|scope| {
            for _ in 0..self.threads {
                scope.spawn(|| self.worker(share, &queue, &ready));
            }
        });
        let queue = queue.into_inner().unwrap_or_else(|p| p.into_inner());
        match queue.error {
            Some(e) => Err(e),
            None => Ok(queue.report),
        }
    }

    fn worker(&self, share: &Share, queue: &Mutex<Queue>, ready: &Condvar) {
        let reader = match self.catalog.reader() {
            Ok(r) => r,
            Err(e) => {
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                q.error.get_or_insert(e);
                ready.notify_all();
                return;
            }
        };
        loop {
            let job = {
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if q.error.is_some() || self.stop.is_cancelled() {
                        ready.notify_all();
                        return;
                    }
                    if let Some(job) = q.jobs.pop() {
                        q.active += 1;
                        break job;
                    }
                    if q.active == 0 {
                        ready.notify_all();
                        return;
                    }
                    q = ready.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let outcome = self.visit(share, &reader, &job);
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            q.active -= 1;
            match outcome {
                Ok((children, report)) => {
                    q.jobs.extend(children);
                    let r = &mut q.report;
                    r.dirs += report.dirs;
                    r.files += report.files;
                    r.changed += report.changed;
                    r.unshareable_names += report.unshareable_names;
                    r.unreadable_dirs += report.unreadable_dirs;
                }
                Err(e) => {
                    q.error.get_or_insert(e);
                }
            }
            ready.notify_all();
        }
    }

    /// Reads one folder, records its changes and returns the subfolders to visit.
    fn visit(
        &self,
        share: &Share,
        reader: &CatalogReader,
        job: &Job,
    ) -> Result<(Vec<Job>, ScanReport), CatalogError> {
        let mut report = ScanReport::default();
        let path = if job.rel.is_empty() {
            share.root.clone()
        } else {
            share.root.join(&job.rel)
        };
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !job.rel.is_empty() => {
                self.catalog.apply(&[Change::RemoveDir {
                    share: share.name.clone(),
                    dir: job.rel.clone(),
                }])?;
                return Ok((Vec::new(), report));
            }
            Err(e) => {
                warn!(share = %share.name, dir = %path.display(), error = %e,
                    "cannot read folder; keeping its files as they were");
                report.unreadable_dirs = 1;
                return Ok((Vec::new(), report));
            }
        };
        report.dirs = 1;
        self.progress.dirs_scanned.fetch_add(1, Ordering::Relaxed);
        let mut files: HashMap<String, Stat> = HashMap::new();
        let mut dirs: Vec<(String, (u64, u64))> = Vec::new();
        // A listing cut short by an I/O error must not turn the unlisted files into deletions.
        let mut complete = true;
        let mut unshareable = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    warn!(share = %share.name, dir = %path.display(), error = %e,
                        "reading folder failed part way; keeping its other files as they were");
                    complete = false;
                    break;
                }
            };
            let name = match entry.file_name().into_string() {
                Ok(name) => name,
                Err(raw) => {
                    report.unshareable_names += 1;
                    debug!(dir = %path.display(), "skipping a name that is not UTF-8");
                    unshareable.push(Unshareable {
                        share: share.name.clone(),
                        path: join(&job.rel, &raw.to_string_lossy()),
                        reason: "is not valid UTF-8".into(),
                    });
                    continue;
                }
            };
            let rel = join(&job.rel, &name);
            if let Err(e) = validate_relative_path(&rel, &self.limits) {
                report.unshareable_names += 1;
                debug!(share = %share.name, path = %rel, "skipping a name that cannot be shared");
                unshareable.push(Unshareable {
                    share: share.name.clone(),
                    path: rel,
                    reason: e.to_string(),
                });
                continue;
            }
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) => {
                    complete &= e.kind() == std::io::ErrorKind::NotFound;
                    continue;
                }
            };
            let meta = if file_type.is_symlink() {
                if !share.rules.follow_symlinks {
                    continue;
                }
                match self.symlink_target(share, &entry.path()) {
                    Some(meta) => meta,
                    None => continue,
                }
            } else {
                match entry.metadata() {
                    Ok(meta) => meta,
                    Err(e) => {
                        // Gone since the listing is a removal; anything else is unknown.
                        complete &= e.kind() == std::io::ErrorKind::NotFound;
                        continue;
                    }
                }
            };
            if meta.is_dir() {
                if share.rules.admits(&rel, &name, true) {
                    let stat = Stat::of(&meta);
                    dirs.push((name, (stat.dev, stat.inode)));
                }
            } else if meta.is_file() && share.rules.admits(&rel, &name, false) {
                files.insert(name, Stat::of(&meta));
            }
        }
        report.files = files.len() as u64;
        if complete {
            self.progress
                .unshareable_in(&share.name, &job.rel, unshareable);
        }
        self.progress
            .files_seen
            .fetch_add(files.len() as u64, Ordering::Relaxed);

        let mut changes = Vec::new();
        for row in reader.children(&share.name, &job.rel)? {
            match files.remove(&row.name) {
                Some(stat) if stat.same_version(&row.stat) && !row.gone => {}
                Some(stat) => changes.push(Change::Upsert(
                    FileKey {
                        share: share.name.clone(),
                        dir: job.rel.clone(),
                        name: row.name,
                    },
                    stat,
                )),
                None if row.gone || !complete => {}
                None => changes.push(Change::Remove(FileKey {
                    share: share.name.clone(),
                    dir: job.rel.clone(),
                    name: row.name,
                })),
            }
        }
        for (name, stat) in files {
            changes.push(Change::Upsert(
                FileKey {
                    share: share.name.clone(),
                    dir: job.rel.clone(),
                    name,
                },
                stat,
            ));
        }
        let known: HashSet<String> = reader
            .child_dirs(&share.name, &job.rel)?
            .into_iter()
            .collect();
        let on_disk: HashSet<String> = dirs.iter().map(|(n, _)| join(&job.rel, n)).collect();
        for gone in known.difference(&on_disk).filter(|_| complete) {
            changes.push(Change::RemoveDir {
                share: share.name.clone(),
                dir: gone.clone(),
            });
        }
        let mut children = Vec::new();
        for (name, id) in dirs {
            let rel = join(&job.rel, &name);
            let new = !known.contains(&rel);
            if new {
                changes.push(Change::Dir {
                    share: share.name.clone(),
                    dir: rel.clone(),
                });
            }
            if !(new || job.recursive) {
                continue;
            }
            let ancestors = if share.rules.follow_symlinks {
                if job.ancestors.contains(&id) {
                    debug!(share = %share.name, dir = %rel, "skipping a symlink loop");
                    continue;
                }
                let mut chain = (*job.ancestors).clone();
                chain.push(id);
                Arc::new(chain)
            } else {
                job.ancestors.clone()
            };
            children.push(Job {
                rel,
                recursive: true,
                ancestors,
            });
        }
        let (queued_files, queued_bytes) = self.catalog.apply(&changes)?;
        report.changed = queued_files;
        if queued_files > 0 {
            self.progress.queue_hashing(queued_files, queued_bytes);
        }
        Ok((children, report))
    }

    /// The metadata of a symlink's target, when it resolves to somewhere inside the share.
    fn symlink_target(&self, share: &Share, link: &Path) -> Option<std::fs::Metadata> {
        let target = std::fs::canonicalize(link).ok()?;
        if !target.starts_with(&share.root) {
            debug!(share = %share.name, link = %link.display(), "symlink leads out of the share");
            return None;
        }
        std::fs::metadata(&target).ok()
    }

    /// Rescans what an event at `rel` may have changed: the folder itself when it is one,
    /// otherwise the nearest existing folder above it. Known subfolders are not descended into
    /// (a change inside them has its own event); new ones are scanned whole.
    pub fn rescan_path(&self, share: &Share, rel: &str) -> Result<ScanReport, CatalogError> {
        if !self.inside_share(share, rel) {
            debug!(share = %share.name, path = %rel, "event behind a symlink; ignored");
            return Ok(ScanReport::default());
        }
        let path = share.root.join(rel);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            self.record_ancestors(share, rel)?;
            return self.scan_folder(share, rel);
        }
        let mut dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        while !dir.is_empty()
            && !std::fs::symlink_metadata(share.root.join(&dir)).is_ok_and(|m| m.is_dir())
        {
            dir = dir.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        }
        self.record_ancestors(share, &dir)?;
        self.scan_folder(share, &dir)
    }

    /// Whether the folders on the way to `rel` are real folders of the share: no symlink among
    /// them, or, when the share follows symlinks, none leading out of it.
    fn inside_share(&self, share: &Share, rel: &str) -> bool {
        let parent = rel.rsplit_once('/').map_or("", |(d, _)| d);
        if parent.is_empty() {
            return true;
        }
        if share.rules.follow_symlinks {
            return std::fs::canonicalize(share.root.join(parent))
                .map_or(true, |p| p.starts_with(&share.root));
        }
        let mut path = share.root.clone();
        for part in parent.split('/') {
            path.push(part);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => return false,
                Ok(_) => {}
                Err(_) => return true, // gone: the rescan of the nearest folder notices
            }
        }
        true
    }

    fn record_ancestors(&self, share: &Share, rel: &str) -> Result<(), CatalogError> {
        let mut changes = Vec::new();
        let mut prefix = String::new();
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            prefix = join(&prefix, part);
            changes.push(Change::Dir {
                share: share.name.clone(),
                dir: prefix.clone(),
            });
        }
        self.catalog.apply(&changes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ShareConfig, ShareRules};

    fn setup(follow_symlinks: bool) -> (tempfile::TempDir, Share, Arc<Catalog>, Scanner) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("share");
        std::fs::create_dir_all(root.join("music")).unwrap();
        std::fs::write(root.join("music/a.mp3"), b"a").unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret.txt"), b"secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
        let config = ShareConfig {
            path: root.clone(),
            name: None,
            exclude: vec![],
            follow_symlinks,
            include_hidden: false,
            visibility: Default::default(),
            scopes: Vec::new(),
        };
        let share = Share {
            name: "share".into(),
            root: std::fs::canonicalize(&root).unwrap(),
            rules: ShareRules::new(&config).unwrap(),
        };
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let catalog = Arc::new(Catalog::open(&state).unwrap());
        let scanner = Scanner::new(catalog.clone(), Arc::new(Progress::default()), 2);
        (dir, share, catalog, scanner)
    }

    fn files(catalog: &Catalog) -> u64 {
        catalog
            .read(|r| r.counts())
            .unwrap()
            .iter()
            .map(|(_, c)| c.files)
            .sum()
    }

    #[test]
    fn symlinks_out_of_the_share_are_never_followed() {
        for follow in [false, true] {
            let (_dir, share, catalog, scanner) = setup(follow);
            let report = scanner.scan_share(&share).unwrap();
            assert_eq!(report.files, 1, "follow_symlinks = {follow}");
            // An event reported behind the symlink (as a watcher following links would).
            scanner.rescan_path(&share, "link/secret.txt").unwrap();
            scanner.rescan_path(&share, "link").unwrap();
            assert_eq!(files(&catalog), 1, "follow_symlinks = {follow}");
        }
    }

    #[test]
    fn a_missing_share_folder_deletes_nothing() {
        let (dir, share, catalog, scanner) = setup(false);
        scanner.scan_share(&share).unwrap();
        std::fs::rename(&share.root, dir.path().join("moved away")).unwrap();
        let report = scanner.scan_share(&share).unwrap();
        assert_eq!(report.unreadable_dirs, 1);
        assert_eq!(files(&catalog), 1);
    }

    #[test]
    fn deletions_and_new_folders_are_found_without_a_full_rescan() {
        let (_dir, share, catalog, scanner) = setup(false);
        scanner.scan_share(&share).unwrap();
        std::fs::create_dir_all(share.root.join("new/deeper")).unwrap();
        std::fs::write(share.root.join("new/deeper/b.mp3"), b"b").unwrap();
        scanner.rescan_path(&share, "new").unwrap();
        assert_eq!(files(&catalog), 2);
        std::fs::remove_dir_all(share.root.join("music")).unwrap();
        scanner.rescan_path(&share, "music/a.mp3").unwrap();
        assert_eq!(files(&catalog), 1);
        // Nothing changed: a rescan writes nothing and queues nothing.
        let report = scanner.scan_share(&share).unwrap();
        assert_eq!(report.changed, 0);
    }
}
