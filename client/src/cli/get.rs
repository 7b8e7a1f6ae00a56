//! `peerdex get`: downloads rows of the last search or hashes, with a progress bar on a terminal
//! and one summary line per file; the exit code says how the first failure failed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use peerdex_shared::FileHash;
use tokio_util::sync::CancellationToken;

use super::search::LastSearch;
use super::{DEFAULT_SERVER, human_size};
use crate::agent::KEY_FILE;
use crate::download::{
    Destination, DownloadError, DownloadOptions, DownloadProgress, DownloadReport, download,
};
use crate::{Identity, ServerClient};

/// `peerdex get` arguments.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Index server URL [default: the one of the last search, else http://127.0.0.1:7700]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
    /// Folder to download into [default: the running agent's download folder, else the
    /// current folder]
    #[arg(short = 'o', long = "dir", conflicts_with_all = ["output", "stdout"])]
    dir: Option<PathBuf>,
    /// Exact file to write (one download only)
    #[arg(long, conflicts_with = "stdout")]
    output: Option<PathBuf>,
    /// Write the content to standard output, in order, as it is verified (one download only)
    #[arg(long)]
    stdout: bool,
    /// Replace an existing file
    #[arg(long)]
    force: bool,
    /// Sources to download from at once
    #[arg(long, default_value_t = 4)]
    max_sources: usize,
    /// Drop a source that sends nothing for this many seconds
    #[arg(long, default_value_t = 20)]
    stall_timeout: u64,
    /// Print each finished download's report as a JSON line
    #[arg(long)]
    json: bool,
    /// Accept no connections from firewalled sources (reach them through the relay instead)
    #[arg(long)]
    no_listen: bool,
    /// Rows of the last search, or content hashes
    #[arg(required = true, value_name = "ROW|HASH")]
    targets: Vec<String>,
}

/// One thing to download.
struct Target {
    hash: FileHash,
    name: Option<String>,
}

fn resolve(
    targets: &[String],
    last: &anyhow::Result<Option<LastSearch>>,
) -> anyhow::Result<Vec<Target>> {
    targets
        .iter()
        .map(|t| {
            if let Ok(hash) = t.parse::<FileHash>() {
                return Ok(Target { hash, name: None });
            }
            let row: usize = t
                .parse()
                .with_context(|| format!("{t:?} is neither a row number nor a 64-digit hash"))?;
            let last = match last {
                Ok(Some(last)) => last,
                Ok(None) => {
                    bail!("row {row}: there is no earlier search; search first, or give a hash")
                }
                Err(e) => bail!("row {row}: {e:#}"),
            };
            let hit = row
                .checked_sub(1)
                .and_then(|i| last.hits.get(i))
                .with_context(|| {
                    format!(
                        "row {row}: the last search ({:?}) has {} rows",
                        last.query,
                        last.hits.len()
                    )
                })?;
            Ok(Target {
                hash: hit.hash,
                name: Some(hit.name.clone()),
            })
        })
        .collect()
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

/// Shows progress until `done`: a bar on a terminal, a log line every 10 s otherwise (visible
/// with `RUST_LOG=info`); notes (dropped sources) either way.
async fn show_progress(progress: Arc<DownloadProgress>, label: String, done: CancellationToken) {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut last_log = std::time::Instant::now();
    loop {
        let stop = tokio::select! {
            () = done.cancelled() => true,
            () = tokio::time::sleep(Duration::from_millis(150)) => false,
        };
        if bar.is_none() && last_log.elapsed() >= Duration::from_secs(10) {
            last_log = std::time::Instant::now();
            tracing::info!(
                file = %label,
                verified = progress.verified.load(Ordering::Relaxed),
                total = progress.total.load(Ordering::Relaxed),
                sources = progress.active_sources.load(Ordering::Relaxed),
                "download progress"
            );
        }
        for note in progress.take_notes() {
            match &bar {
                Some(bar) => bar.println(format!("peerdex: {note}")),
                None => eprintln!("peerdex: {note}"),
            }
        }
        if let Some(bar) = &bar {
            bar.set_length(progress.total.load(Ordering::Relaxed));
            bar.set_position(progress.verified.load(Ordering::Relaxed));
            bar.set_message(format!(
                "{label} ({} sources)",
                progress.active_sources.load(Ordering::Relaxed)
            ));
        }
        if stop {
            break;
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// The download folder of an agent running on `state`, if one answers.
async fn agent_download_dir(state: &std::path::Path) -> Option<PathBuf> {
    let status = tokio::time::timeout(Duration::from_secs(2), crate::agent::control::query(state))
        .await
        .ok()?
        .ok()?;
    Some(status.download_dir)
}

/// Runs `peerdex get`; returns the exit code.
pub async fn get(args: GetArgs, state: PathBuf) -> anyhow::Result<u8> {
    let last = LastSearch::load(&state);
    let targets = resolve(&args.targets, &last)?;
    if (args.output.is_some() || args.stdout) && targets.len() != 1 {
        bail!("--output and --stdout take exactly one download");
    }
    let server = args
        .server
        .clone()
        .or_else(|| last.as_ref().ok()?.as_ref().map(|l| l.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let client = ServerClient::new(&server)?;
    let destination = if args.stdout {
        Destination::Stdout(state.join("downloads-in-progress"))
    } else if let Some(file) = &args.output {
        Destination::File(file.clone())
    } else if let Some(dir) = &args.dir {
        Destination::Dir(dir.clone())
    } else if let Some(dir) = agent_download_dir(&state).await {
        Destination::Dir(dir)
    } else {
        Destination::Dir(std::env::current_dir().context("no current folder; pass -o DIR")?)
    };
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
        let progress = Arc::new(DownloadProgress::default());
        let shown = CancellationToken::new();
        let label = target
            .name
            .clone()
            .unwrap_or_else(|| target.hash.fmt_short().to_string());
        let display = tokio::spawn(show_progress(progress.clone(), label, shown.clone()));
        let outcome = download(
            &client,
            target.hash,
            target.name.as_deref(),
            &destination,
            &options,
            progress,
            cancel.clone(),
        )
        .await;
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
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
            Err(e) => {
                eprintln!("peerdex: error: {}: {e}", target.hash.fmt_short());
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
