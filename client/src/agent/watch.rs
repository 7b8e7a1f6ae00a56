//! Watching shares for changes (inotify and friends, through `notify`), debounced, so that an
//! added, changed, renamed or deleted file is rescanned within a couple of seconds.
//!
//! Events only name paths; what changed is found by rescanning them (see
//! [`super::scan::Scanner::rescan_path`]), so a lost or merged event cannot corrupt anything.

use std::path::{Component, Path};
use std::time::Duration;

use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::config::Share;

/// A live watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
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

/// Watches every share and sends `(share name, path)` of changed entries to `changes`.
/// Fails when the system cannot watch them (e.g. the inotify watch limit is reached); the
/// caller then falls back to periodic rescans.
pub fn watch(
    shares: &[Share],
    debounce: Duration,
    changes: mpsc::UnboundedSender<(String, String)>,
) -> Result<Watch, notify_debouncer_mini::notify::Error> {
    let targets = shares.to_vec();
    let mut debouncer = new_debouncer(debounce, move |result: DebounceEventResult| {
        match result {
            Ok(events) => {
                for event in events {
                    let Some(share) = targets.iter().find(|s| event.path.starts_with(&s.root))
                    else {
                        continue;
                    };
                    let Some(rel) = relative(share, &event.path) else {
                        continue;
                    };
                    let is_dir = event.path.is_dir();
                    if !rel.is_empty() && !share.rules.admits_path(&rel, is_dir) {
                        continue; // e.g. a download in progress, or a hidden folder
                    }
                    debug!(share = %share.name, path = %rel, "file event");
                    let _ = changes.send((share.name.clone(), rel));
                }
            }
            Err(e) => warn!(error = %e, "file watcher error; the periodic rescan will catch up"),
        }
    })?;
    for share in shares {
        debouncer
            .watcher()
            .watch(&share.root, RecursiveMode::Recursive)?;
    }
    Ok(Watch {
        _debouncer: debouncer,
    })
}
