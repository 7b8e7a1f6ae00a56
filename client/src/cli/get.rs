//! `peerdex get`: downloads rows of the last search or browse, hashes or hash prefixes, with a
//! progress bar on a terminal and one summary line per file; the exit code says how the first
//! failure failed.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use peerdex_shared::FileHash;
use peerdex_shared::folder::FolderId;
use tokio_util::sync::CancellationToken;

use super::search::LastSearch;
use super::{emit, human_size, resolve_server};
use peerdex_agent::KEY_FILE;
use peerdex_agent::config::ConfigFile;
use peerdex_client::Identity;
use peerdex_download::{
    Destination, DownloadError, DownloadOptions, DownloadProgress, DownloadReport, DownloadRequest,
    SourceFinder, download,
};

/// Shortest hash prefix accepted in place of a full hash.
const MIN_PREFIX: usize = 8;

/// `peerdex get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Index server URL [default: from the config file, else the one of the last search, else
    /// http://127.0.0.1:7700]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
    /// Where to write, as curl does: with one download the file to write (an existing folder
    /// means into it); with several, the folder to put them in
    #[arg(short = 'o', long, conflicts_with_all = ["dir", "stdout"])]
    output: Option<PathBuf>,
    /// Folder to download into [default: the running agent's download folder, else the
    /// current folder]
    #[arg(long, conflicts_with = "stdout")]
    dir: Option<PathBuf>,
    /// Write the content to standard output, in order, as it is verified (one download only)
    #[arg(long)]
    stdout: bool,
    /// Replace an existing file
    #[arg(long)]
    pub(super) force: bool,
    /// Sources to download from at once
    #[arg(long, default_value_t = 4)]
    max_sources: usize,
    /// Drop a source that sends nothing for this many seconds
    #[arg(long, default_value_t = 20)]
    stall_timeout: u64,
    /// Print each finished download's report as a JSON line
    #[arg(long)]
    pub(super) json: bool,
    /// Accept no connections from firewalled sources (reach them through the relay instead)
    #[arg(long)]
    no_listen: bool,
    /// Download a whole folder by its id (as `search --json` and `browse --json` show it)
    #[arg(long, value_name = "ID")]
    folder: Vec<FolderId>,
    /// Files of a folder downloaded at once (in the foreground)
    #[arg(long, default_value_t = 3)]
    parallel_files: usize,
    /// With an agent running: follow the queued downloads until they finish (their exit
    /// code is this command's), instead of returning at once
    #[arg(long)]
    pub(super) wait: bool,
    /// Download in this process even when an agent is running (as without one)
    #[arg(long)]
    foreground: bool,
    /// With an agent running: the downloads' priority in its queue (higher runs first)
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(super) priority: i64,
    /// Rows of the last search or browse (`F1` for a folder row of a search), content hashes,
    /// or unique prefixes of at least 8 hex digits of a hash that listing showed
    #[arg(required_unless_present = "folder", value_name = "ROW|HASH")]
    targets: Vec<String>,
}

/// One thing to download.
struct Target {
    what: Fetch,
    name: Option<String>,
    /// It came from the remembered listing (a row or a prefix).
    listed: bool,
}

/// A file or a whole folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fetch {
    File(FileHash),
    Folder(FolderId),
}

/// The listing a row or prefix refers to, or why there is none.
fn listing<'a>(
    what: &str,
    last: &'a anyhow::Result<Option<LastSearch>>,
) -> anyhow::Result<&'a LastSearch> {
    match last {
        Ok(Some(last)) => Ok(last),
        Ok(None) => {
            bail!("{what}: there is no earlier search or browse; search first, or give a hash")
        }
        Err(e) => bail!("{what}: {e:#}"),
    }
}

fn resolve_one(text: &str, last: &anyhow::Result<Option<LastSearch>>) -> anyhow::Result<Target> {
    if let Ok(hash) = text.parse::<FileHash>() {
        return Ok(Target {
            what: Fetch::File(hash),
            name: None,
            listed: false,
        });
    }
    let is_hex = !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
    let folder_label = text.len() > 1
        && text.starts_with(['F', 'f'])
        && text[1..].bytes().all(|b| b.is_ascii_digit());
    let is_row = text.parse::<usize>().is_ok() && !(is_hex && text.len() >= MIN_PREFIX);
    if folder_label || is_row {
        let listed = listing(&format!("row {text}"), last)?;
        if let Some(folder) = listed.folder_row(text) {
            return Ok(Target {
                what: Fetch::Folder(folder.id),
                name: Some(folder.name.clone()),
                listed: true,
            });
        }
        if folder_label {
            bail!(
                "row {text}: the last listing ({:?}) has {} folder rows",
                listed.query,
                listed.folders.len()
            );
        }
    }
    if let Ok(row) = text.parse::<usize>()
        && !(is_hex && text.len() >= MIN_PREFIX)
    {
        let last = listing(&format!("row {row}"), last)?;
        let hit = last.row(row).with_context(|| {
            format!(
                "row {row}: the last listing ({:?}) has {} rows ({})",
                last.query,
                last.hits.len(),
                last.rows()
            )
        })?;
        return Ok(Target {
            what: Fetch::File(hit.hash),
            name: Some(hit.name.clone()),
            listed: true,
        });
    }
    if !is_hex || text.len() < MIN_PREFIX || text.len() >= 64 {
        bail!(
            "{text:?} is neither a row number, a 64-digit hash, nor a hash prefix of at least \
             {MIN_PREFIX} hex digits"
        );
    }
    let prefix = text.to_ascii_lowercase();
    let last = listing(&format!("hash prefix {text}"), last)?;
    let mut matching = last
        .hits
        .iter()
        .filter(|h| h.hash.to_string().starts_with(&prefix));
    let Some(hit) = matching.next() else {
        bail!(
            "hash prefix {text}: no row of the last listing ({:?}) has such a hash; give the \
             full hash",
            last.query
        );
    };
    if matching.any(|other| other.hash != hit.hash) {
        bail!("hash prefix {text} is ambiguous in the last listing; give more digits");
    }
    Ok(Target {
        what: Fetch::File(hit.hash),
        name: Some(hit.name.clone()),
        listed: true,
    })
}

fn resolve(
    targets: &[String],
    last: &anyhow::Result<Option<LastSearch>>,
) -> anyhow::Result<Vec<Target>> {
    targets.iter().map(|t| resolve_one(t, last)).collect()
}

/// Where the downloads go, by the flags (curl's `-o` rule), else the running agent's download
/// folder, else the current folder.
fn destination(
    args: &GetArgs,
    count: usize,
    state: &Path,
    agent_dir: Option<PathBuf>,
) -> anyhow::Result<Destination> {
    if args.stdout {
        if count != 1 {
            bail!("--stdout takes exactly one download");
        }
        return Ok(Destination::Stdout(state.join("downloads-in-progress")));
    }
    if let Some(path) = &args.output {
        if path.is_dir() {
            return Ok(Destination::Dir(path.clone()));
        }
        if count == 1 {
            return Ok(Destination::File(path.clone()));
        }
        if path.exists() {
            bail!(
                "-o {}: with {count} downloads, -o names the folder to put them in, and this is \
                 a file",
                path.display()
            );
        }
        return Ok(Destination::Dir(path.clone()));
    }
    if let Some(dir) = &args.dir {
        return Ok(Destination::Dir(dir.clone()));
    }
    if let Some(dir) = agent_dir {
        return Ok(Destination::Dir(dir));
    }
    Ok(Destination::Dir(
        std::env::current_dir().context("no current folder; pass --dir DIR")?,
    ))
}

fn summary(report: &DownloadReport) -> String {
    let rate = report.size as f64 / report.elapsed_secs.max(1e-6);
    let place = report
        .path
        .as_ref()
        .map_or("standard output".to_owned(), |p| p.display().to_string());
    let mut line = format!(
        "{} {} -> {place}: {} in {:.1} s, {}/s, from {} source(s)",
        report.hash,
        report.size,
        human_size(report.size),
        report.elapsed_secs,
        human_size(rate as u64),
        report.sources_used.len()
    );
    if !report.sources_used.is_empty() {
        line.push_str(&format!(" ({})", report.sources_used.join(", ")));
    }
    if report.pieces_reused > 0 {
        line.push_str(&format!(
            ", {} piece(s) kept from before",
            report.pieces_reused
        ));
    }
    line
}

/// Transfer rate over the last few seconds, of bytes moved by this run only (pieces kept from
/// an earlier run arrive at once and would inflate it).
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(5);

    fn new() -> Rate {
        Rate {
            samples: VecDeque::new(),
        }
    }

    /// Records `moved` bytes so far; returns bytes per second over the window.
    fn update(&mut self, moved: u64) -> Option<f64> {
        let now = Instant::now();
        self.samples.push_back((now, moved));
        while self
            .samples
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Self::WINDOW)
        {
            self.samples.pop_front();
        }
        let (since, before) = *self.samples.front()?;
        let secs = now.duration_since(since).as_secs_f64();
        (secs >= 0.5).then(|| moved.saturating_sub(before) as f64 / secs)
    }
}

/// `4.1 MiB/s eta 12s`, or `queued` while nothing moves.
pub(super) fn speed_and_eta(rate: Option<f64>, left: u64) -> String {
    match rate {
        Some(rate) if rate >= 1.0 => {
            let eta = (left as f64 / rate).ceil() as u64;
            let eta = if eta >= 3600 {
                format!("{}h{:02}m", eta / 3600, eta % 3600 / 60)
            } else if eta >= 60 {
                format!("{}m{:02}s", eta / 60, eta % 60)
            } else {
                format!("{eta}s")
            };
            format!("{}/s eta {eta}", human_size(rate as u64))
        }
        _ => "--/s".to_owned(),
    }
}

/// The progress bar: the message (name and state) takes what the fixed parts leave, cut to fit.
pub(super) fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{wide_msg} [{bar:20}] {bytes:>9}/{total_bytes:9} {prefix}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Shows progress until `done`: a bar fitted to the terminal's width on a terminal, a log line
/// every 10 s otherwise (visible with `RUST_LOG=info`); notes (dropped sources) either way.
async fn show_progress(progress: Arc<DownloadProgress>, label: String, done: CancellationToken) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(bar_style());
        bar
    });
    let mut rate = Rate::new();
    let mut last_log = Instant::now();
    loop {
        let stop = tokio::select! {
            () = done.cancelled() => true,
            () = tokio::time::sleep(Duration::from_millis(150)) => false,
        };
        let total = progress.total.load(Ordering::Relaxed);
        let verified = progress.verified.load(Ordering::Relaxed);
        let moved = verified.saturating_sub(progress.resumed.load(Ordering::Relaxed));
        let speed = rate.update(moved);
        let name = progress.name().unwrap_or_else(|| label.clone());
        let state = match progress.queued() {
            Some(queued) => format!("queued: {queued}"),
            None => format!(
                "{} source(s)",
                progress.active_sources.load(Ordering::Relaxed)
            ),
        };
        if bar.is_none() && last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(file = %name, verified, total, state = %state, "download progress");
        }
        for note in progress.take_notes() {
            match &bar {
                Some(bar) => bar.println(format!("peerdex: {note}")),
                None => {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "peerdex: {note}");
                }
            }
        }
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(verified);
            bar.set_message(format!("{name} ({state})"));
            bar.set_prefix(speed_and_eta(speed, total.saturating_sub(verified)));
        }
        if stop {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// The status of an agent running on `state`, if one answers.
async fn running_agent(state: &Path) -> Option<peerdex_agent::AgentStatus> {
    if !peerdex_agent::control::is_running(state) {
        return None;
    }
    tokio::time::timeout(Duration::from_secs(5), peerdex_agent::control::query(state))
        .await
        .ok()?
        .ok()
}

/// Runs `peerdex get`; returns the exit code.
pub async fn get(args: GetArgs, file: &ConfigFile, state: PathBuf) -> anyhow::Result<u8> {
    let last = LastSearch::load(&state);
    let mut targets = resolve(&args.targets, &last)?;
    targets.extend(args.folder.iter().map(|&id| Target {
        what: Fetch::Folder(id),
        name: None,
        listed: false,
    }));
    let listed_on = last
        .as_ref()
        .ok()
        .and_then(|l| l.as_ref())
        .map(|l| l.server.clone());
    let server = resolve_server(args.server.clone(), file, listed_on.as_deref());
    if let Some(listed_on) = &listed_on
        && *listed_on != server
        && targets.iter().any(|t| t.listed)
    {
        tracing::warn!(
            "the rows come from a listing of {listed_on}; asking {server} for their sources"
        );
    }
    let client = super::server_client(&server, Some(&state))?;
    let finder: Arc<dyn SourceFinder> = Arc::new(client.clone());
    if args.stdout && targets.iter().any(|t| matches!(t.what, Fetch::Folder(_))) {
        bail!("--stdout takes one file, not a folder");
    }
    // A folder is always laid out in a folder of its own.
    let any_folder = targets.iter().any(|t| matches!(t.what, Fetch::Folder(_)));
    let count = if any_folder {
        targets.len().max(2)
    } else {
        targets.len()
    };
    let agent = running_agent(&state).await;
    let destination = destination(
        &args,
        count,
        &state,
        agent.as_ref().map(|a| a.download_dir.clone()),
    )?;
    if let Some(agent) = agent.filter(|_| !args.stdout && !args.foreground) {
        if agent.server.url.trim_end_matches('/') == server.trim_end_matches('/') {
            return super::transfers::hand_to_agent(
                &state,
                &client,
                targets.into_iter().map(|t| (t.what, t.name)).collect(),
                &destination,
                &args,
            )
            .await;
        }
        tracing::warn!(
            "the running agent uses {}, not {server}: downloading in the foreground",
            agent.server.url
        );
    }
    // Our key (shared with a local agent): never download from ourselves, and prove our
    // address with it when firewalled sources connect back.
    let key = state.join(KEY_FILE);
    let identity = key
        .exists()
        .then(|| Identity::load_or_create(&key).ok())
        .flatten();
    let options = DownloadOptions {
        max_sources: args.max_sources.max(1),
        stall_timeout: Duration::from_secs(args.stall_timeout.max(1)),
        force: args.force,
        exclude_peer: identity.as_ref().map(|i| i.peer_id()),
        identity,
        accept_connections: !args.no_listen,
        ..DownloadOptions::default()
    };
    let cancel = CancellationToken::new();
    let interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            // First Ctrl-C: stop cleanly, keeping what was downloaded. A second one: now.
            interrupt.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let mut exit = 0u8;
    for target in targets {
        let hash = match target.what {
            Fetch::File(hash) => hash,
            Fetch::Folder(id) => {
                let Destination::Dir(base) = &destination else {
                    bail!("a folder downloads into a folder, not a file");
                };
                let code = get_folder(
                    &client,
                    finder.clone(),
                    id,
                    base,
                    &args,
                    &options,
                    cancel.clone(),
                )
                .await?;
                if code == DownloadError::Interrupted.exit_code() {
                    exit = code;
                    break;
                }
                if exit == 0 {
                    exit = code;
                }
                continue;
            }
        };
        let progress = Arc::new(DownloadProgress::default());
        let shown = CancellationToken::new();
        let label = target
            .name
            .clone()
            .unwrap_or_else(|| hash.fmt_short().to_string());
        let display = tokio::spawn(show_progress(progress.clone(), label, shown.clone()));
        let request = DownloadRequest {
            hash,
            name: target.name.clone(),
            destination: destination.clone(),
        };
        let outcome = download(finder.clone(), &request, &options, progress, cancel.clone()).await;
        shown.cancel();
        let _ = display.await;
        match outcome {
            Ok(report) => {
                let line = if args.json {
                    serde_json::to_string(&report)?
                } else {
                    summary(&report)
                };
                // With --stdout the content owns standard output.
                if args.stdout {
                    use std::io::Write as _;
                    let _ = writeln!(std::io::stderr(), "{line}");
                } else {
                    emit(&format!("{line}\n"))?;
                }
            }
            Err(e) => {
                use std::io::Write as _;
                let _ = writeln!(
                    std::io::stderr(),
                    "peerdex: error: {}: {e}",
                    hash.fmt_short()
                );
                if matches!(e, DownloadError::Interrupted) {
                    exit = e.exit_code();
                    break;
                }
                if exit == 0 {
                    exit = e.exit_code();
                }
            }
        }
    }
    Ok(exit)
}

/// What downloading a folder identity takes: its files, the folder they go into (named after
/// the release) and which of them are still to fetch.
pub(super) struct FolderPlan {
    /// The index server's answer for the folder.
    pub folder: peerdex_shared::api::FolderResponse,
    /// The release's title.
    pub title: String,
    /// Where its files go.
    pub dir: PathBuf,
    /// Files to fetch, with their sanitized names.
    pub todo: Vec<(peerdex_shared::api::FolderEntry, String)>,
    /// Files already there from an earlier run (checked by hash).
    pub kept: usize,
}

impl FolderPlan {
    /// Looks folder `id` up and checks what is already in its folder under `base`.
    pub(super) async fn of(
        client: &peerdex_client::server_api::ServerClient,
        id: FolderId,
        base: &Path,
        force: bool,
    ) -> anyhow::Result<FolderPlan> {
        let folder = client
            .folder(&id)
            .await
            .with_context(|| format!("looking up folder {}", id.fmt_short()))?;
        let title = super::search::release_title(&folder.hit.summary, &folder.hit.name);
        let dir = base.join(peerdex_download::names::sanitize_file_name(
            &title,
            &id.fmt_short(),
        ));
        let mut todo = Vec::new();
        let mut kept = 0usize;
        for entry in &folder.entries {
            let name =
                peerdex_download::names::sanitize_file_name(&entry.name, &entry.hash.fmt_short());
            if !force
                && peerdex_download::holds_content(&dir.join(&name), &entry.hash, Some(entry.size))
            {
                kept += 1;
                continue;
            }
            todo.push((entry.clone(), name));
        }
        Ok(FolderPlan {
            folder,
            title,
            dir,
            todo,
            kept,
        })
    }
}

/// `peerdex get --folder ID` (or a folder row): every file of the folder identity, each from
/// all the peers that hold it, verified like single files, into one folder named after the
/// release, with one progress display. Files already there from an earlier run are checked and
/// kept; partial ones resume. Returns the exit code (the first failure's).
async fn get_folder(
    client: &peerdex_client::server_api::ServerClient,
    finder: Arc<dyn SourceFinder>,
    id: FolderId,
    base: &Path,
    args: &GetArgs,
    options: &DownloadOptions,
    cancel: CancellationToken,
) -> anyhow::Result<u8> {
    let FolderPlan {
        folder,
        title,
        dir,
        todo,
        kept,
    } = FolderPlan::of(client, id, base, args.force).await?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let total: u64 = folder.entries.iter().map(|e| e.size).sum();
    let progresses: Vec<Arc<DownloadProgress>> = todo
        .iter()
        .map(|_| Arc::new(DownloadProgress::default()))
        .collect();
    let done_bytes: u64 = total - todo.iter().map(|(e, _)| e.size).sum::<u64>();
    let shown = CancellationToken::new();
    let display = tokio::spawn(show_folder_progress(
        progresses.clone(),
        format!("{title} ({} files)", folder.entries.len()),
        total,
        done_bytes,
        shown.clone(),
    ));
    let parallel = args.parallel_files.max(1);
    let results = {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(todo.iter().zip(progresses.iter()).map(
            |((entry, name), progress)| {
                let request = DownloadRequest {
                    hash: entry.hash,
                    name: Some(name.clone()),
                    destination: Destination::Dir(dir.clone()),
                };
                let (finder, options, cancel, progress) = (
                    finder.clone(),
                    options.clone(),
                    cancel.clone(),
                    progress.clone(),
                );
                async move {
                    let outcome = download(finder, &request, &options, progress, cancel).await;
                    (entry.clone(), outcome)
                }
            },
        ))
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await
    };
    shown.cancel();
    let _ = display.await;
    let mut exit = 0u8;
    let mut fetched = 0usize;
    let mut sources = std::collections::BTreeSet::new();
    for (entry, outcome) in results {
        match outcome {
            Ok(report) => {
                fetched += 1;
                sources.extend(report.sources_used.iter().cloned());
                if args.json {
                    emit(&format!("{}\n", serde_json::to_string(&report)?))?;
                }
            }
            Err(e) => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "peerdex: error: {}: {e}", entry.name);
                if exit == 0 || matches!(e, DownloadError::Interrupted) {
                    exit = e.exit_code();
                }
            }
        }
    }
    let failed = todo.len() - fetched;
    let line = format!(
        "folder {} -> {}: {} files ({}), {fetched} fetched from {} peer(s), {kept} already \
         there, {failed} failed",
        id,
        dir.display(),
        folder.entries.len(),
        human_size(total),
        sources.len(),
    );
    if args.json {
        let summary = serde_json::json!({
            "folder": id, "path": dir, "files": folder.entries.len(), "bytes": total,
            "fetched": fetched, "kept": kept, "failed": failed,
            "sources_used": sources,
        });
        emit(&format!("{summary}\n"))?;
    } else {
        emit(&format!("{line}\n"))?;
    }
    Ok(exit)
}

/// One progress display for a folder: the bytes verified over all its files.
async fn show_folder_progress(
    progresses: Vec<Arc<DownloadProgress>>,
    label: String,
    total: u64,
    done_before: u64,
    done: CancellationToken,
) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(bar_style());
        bar.set_message(label.clone());
        bar
    });
    let mut rate = Rate::new();
    let mut last_log = Instant::now();
    loop {
        let stop = tokio::select! {
            () = done.cancelled() => true,
            () = tokio::time::sleep(Duration::from_millis(150)) => false,
        };
        let verified: u64 = done_before
            + progresses
                .iter()
                .map(|p| p.verified.load(Ordering::Relaxed))
                .sum::<u64>();
        let resumed: u64 = progresses
            .iter()
            .map(|p| p.resumed.load(Ordering::Relaxed))
            .sum();
        let speed = rate.update(verified.saturating_sub(resumed + done_before));
        for progress in &progresses {
            for note in progress.take_notes() {
                match &bar {
                    Some(bar) => bar.println(format!("peerdex: {note}")),
                    None => {
                        use std::io::Write as _;
                        let _ = writeln!(std::io::stderr(), "peerdex: {note}");
                    }
                }
            }
        }
        match &bar {
            Some(bar) => {
                bar.set_position(verified.min(total));
                bar.set_prefix(speed_and_eta(speed, total.saturating_sub(verified)));
            }
            None if last_log.elapsed() >= Duration::from_secs(10) => {
                last_log = Instant::now();
                tracing::info!(folder = %label, verified, total, "download progress");
            }
            None => {}
        }
        if stop {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_only_bytes_moved_now() {
        let mut rate = Rate::new();
        // 3 MiB kept from before arrive at once as "verified"; the caller passes moved bytes
        // (verified minus resumed), so they never show as speed.
        assert_eq!(rate.update(0), None);
        let start = Instant::now();
        rate.samples[0].0 = start - Duration::from_secs(2);
        let speed = rate.update(2 << 20).unwrap();
        assert!((speed - f64::from(1 << 20)).abs() < 1024.0, "{speed}");
        assert_eq!(
            speed_and_eta(Some(f64::from(1 << 20)), 3 << 20),
            "1.0 MiB/s eta 3s"
        );
        assert_eq!(
            speed_and_eta(Some(1024.0), 90 * 1024),
            "1.0 KiB/s eta 1m30s"
        );
        assert_eq!(speed_and_eta(None, 5), "--/s");
    }

    #[test]
    fn rows_hashes_and_prefixes_resolve_against_the_last_listing() {
        let hash: FileHash = "ab".repeat(32).parse().unwrap();
        let other: FileHash = "ac".repeat(32).parse().unwrap();
        let last = Ok(Some(LastSearch {
            server: "http://x:7700".into(),
            query: "q".into(),
            first_row: 21,
            hits: vec![
                super::super::search::RememberedHit {
                    hash,
                    size: 1,
                    name: "one".into(),
                },
                super::super::search::RememberedHit {
                    hash: other,
                    size: 2,
                    name: "two".into(),
                },
            ],
            folders: Vec::new(),
        }));
        let hash_of = |t: Target| match t.what {
            Fetch::File(h) => h,
            Fetch::Folder(_) => panic!("a folder"),
        };
        assert_eq!(hash_of(resolve_one("22", &last).unwrap()), other);
        assert!(
            resolve_one("1", &last).is_err(),
            "rows of page 2 start at 21"
        );
        assert_eq!(hash_of(resolve_one("abababab", &last).unwrap()), hash);
        assert_eq!(hash_of(resolve_one("ACACACAC", &last).unwrap()), other);
        assert!(resolve_one("abab", &last).is_err(), "too short");
        assert!(resolve_one("deadbeef", &last).is_err(), "not listed");
        assert_eq!(
            hash_of(resolve_one(&hash.to_string(), &Ok(None)).unwrap()),
            hash
        );
        assert!(resolve_one("F1", &last).is_err(), "no folder rows");
    }
}
