//! Watching shares for changes (inotify and friends, through `notify`), so that an added, changed,
//! renamed or deleted file is rescanned within a couple of seconds. The scan loop debounces the
//! paths sent from here.
//!
//! Events only name paths; what changed is found by rescanning them (see
//! [`super::scan::Scanner::rescan_path`]), so a lost or merged event cannot corrupt anything.
//! Reads are not changes: open/read/close-without-write events are dropped, or the agent's own
//! scanning and serving would trigger rescans forever. Symlinks are not followed by the watcher.

use std::path::{Component, Path};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tracing::{debug, warn};

use super::config::Share;
use super::events::Events;

/// A live watch; dropping it stops watching.
pub struct Watch {
    _watcher: RecommendedWatcher,
}

/// The path of `path` within `share`, `/`-separated; `None` outside it or not UTF-8.
pub fn relative(share: &Share, path: &Path) -> Option<String> {
    let rest = path.strip_prefix(&share.root).ok()?;
    let mut parts = Vec::new();
    for component in rest.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// Whether an event can mean that a file or folder changed.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Watches every share whose folder exists and queues changed entries for a rescan
/// through `events`; also returns the shares whose folder does not exist (they cannot be watched yet).
/// Fails when the system cannot watch them (e.g. the inotify watch limit is reached); the
/// caller then falls back to periodic rescans.
pub fn watch(shares: &[Share], events: Arc<Events>) -> Result<(Watch, Vec<Share>), notify::Error> {
    let targets = shares.to_vec();
    let handler = move |result: notify::Result<Event>| match result {
        Ok(event) if is_change(&event.kind) => {
            for path in &event.paths {
                let Some(share) = targets.iter().find(|s| path.starts_with(&s.root)) else {
                    continue;
                };
                let Some(rel) = relative(share, path) else {
                    continue;
                };
                let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
                if !rel.is_empty() && !share.rules.admits_path(&rel, is_dir) {
                    continue; // e.g. a download in progress, or a hidden folder
                }
                debug!(share = %share.name, path = %rel, kind = ?event.kind, "file event");
                events.rescan(&share.name, rel);
            }
        }
        Ok(_) => {}
        Err(e) => warn!(error = %e, "file watcher error; the periodic rescan will catch up"),
    };
    let config = notify::Config::default().with_follow_symlinks(false);
    let mut watcher = RecommendedWatcher::new(handler, config)?;
    let mut missing = Vec::new();
    for share in shares {
        if !share.root.is_dir() {
            missing.push(share.clone());
            continue;
        }
        match watcher.watch(&share.root, RecursiveMode::Recursive) {
            Ok(()) => {}
            // Removed between the check and the watch.
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {
                missing.push(share.clone())
            }
            Err(e) => return Err(e),
        }
    }
    Ok((Watch { _watcher: watcher }, missing))
}
