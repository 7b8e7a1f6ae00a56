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
use rusqlite::Connection;
use tracing::{debug, warn};

use super::catalog::{Catalog, CatalogError, Change, FileKey, Stat, join};
use super::config::Share;
use super::progress::Progress;

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
        }
    }

    /// Scans the folder `rel` of `share` (`""`: the whole share). With `recursive` false only
    /// the folder itself and subfolders new to the catalog are read.
    pub fn scan(
        &self,
        share: &Share,
        rel: &str,
        recursive: bool,
    ) -> Result<ScanReport, CatalogError> {
        if !std::fs::metadata(&share.root).is_ok_and(|m| m.is_dir()) {
            // An unmounted disk must not look like a share whose files were all deleted.
            warn!(share = %share.name, root = %share.root.display(),
                "share folder is missing; keeping its files as they were");
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
                    if q.error.is_some() {
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
        reader: &Connection,
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
        for entry in entries {
            let Ok(entry) = entry else {
                continue;
            };
            let Ok(name) = entry.file_name().into_string() else {
                report.unshareable_names += 1;
                debug!(dir = %path.display(), "skipping a name that is not UTF-8");
                continue;
            };
            let rel = join(&job.rel, &name);
            if validate_relative_path(&rel, &self.limits).is_err() {
                report.unshareable_names += 1;
                debug!(share = %share.name, path = %rel, "skipping a name that cannot be shared");
                continue;
            }
            let Ok(file_type) = entry.file_type() else {
                continue;
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
                    Err(_) => continue, // vanished since the listing
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
        self.progress
            .files_seen
            .fetch_add(files.len() as u64, Ordering::Relaxed);

        let mut changes = Vec::new();
        for row in Catalog::children(reader, &share.name, &job.rel)? {
            match files.remove(&row.name) {
                Some(stat) if stat == row.stat && !row.gone => {}
                Some(stat) => changes.push(Change::Upsert(
                    FileKey {
                        share: share.name.clone(),
                        dir: job.rel.clone(),
                        name: row.name,
                    },
                    stat,
                )),
                None if row.gone => {}
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
        let known: HashSet<String> = Catalog::child_dirs(reader, &share.name, &job.rel)?
            .into_iter()
            .collect();
        let on_disk: HashSet<String> = dirs.iter().map(|(n, _)| join(&job.rel, n)).collect();
        for gone in known.difference(&on_disk) {
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
    /// otherwise the nearest existing folder above it (without its known subfolders).
    pub fn rescan_path(&self, share: &Share, rel: &str) -> Result<ScanReport, CatalogError> {
        let path = share.root.join(rel);
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            self.record_ancestors(share, rel)?;
            return self.scan(share, rel, true);
        }
        let mut dir = rel.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        while !dir.is_empty() && !share.root.join(&dir).is_dir() {
            dir = dir.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        }
        self.record_ancestors(share, &dir)?;
        self.scan(share, &dir, false)
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
