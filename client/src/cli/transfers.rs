//! The agent's transfer list on the command line: `peerdex get` handing downloads to a running
//! agent (and following them with `--wait`), and `peerdex transfers` listing and steering them.

use std::collections::HashMap;
use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget};
use peerdex_agent::control;
use peerdex_agent::transfers::{Action, TransferState, TransferView};
use peerdex_agent::{NewTransfer, Stored, TransferList};
use peerdex_client::server_api::ServerClient;
use peerdex_download::Destination;

use super::get::{Fetch, FolderPlan, GetArgs, bar_style, speed_and_eta};
use super::{emit, human_size};

/// `peerdex transfers` arguments.
#[derive(Debug, Args)]
pub struct TransfersArgs {
    #[command(subcommand)]
    command: Option<TransferCommand>,
    /// Print the list as JSON
    #[arg(long, global = true)]
    json: bool,
    /// Finished downloads to show
    #[arg(long, default_value_t = 20)]
    history: usize,
}

/// What to do with one download.
#[derive(Debug, Subcommand)]
enum TransferCommand {
    /// Stop a download, keeping what was verified
    Pause { id: u64 },
    /// Queue a paused download again
    Resume { id: u64 },
    /// Stop a download and remove its partial file
    Cancel { id: u64 },
    /// Run a failed, cancelled or waiting download again now
    Retry { id: u64 },
    /// Set a download's priority (higher runs first)
    Priority {
        id: u64,
        #[arg(allow_negative_numbers = true)]
        priority: i64,
    },
}

/// Queues `targets` in the agent running on `state`; with `--wait`, follows them to the end.
/// Returns the exit code.
pub(super) async fn hand_to_agent(
    state: &Path,
    client: &ServerClient,
    targets: Vec<(Fetch, Option<String>)>,
    destination: &Destination,
    args: &GetArgs,
) -> anyhow::Result<u8> {
    // The agent runs in its own folder: relative paths are the command line's.
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let destination = &match destination {
        Destination::Dir(dir) => Destination::Dir(absolute(dir)),
        Destination::File(file) => Destination::File(absolute(file)),
        streamed => streamed.clone(),
    };
    let mut new = Vec::new();
    let mut kept = 0usize;
    for (what, name) in targets {
        match what {
            Fetch::File(hash) => new.push(NewTransfer {
                hash,
                name,
                destination: match destination {
                    Destination::Dir(dir) => peerdex_agent::Destination::Dir(dir.clone()),
                    Destination::File(file) => peerdex_agent::Destination::File(file.clone()),
                    Destination::Stdout(_) | Destination::Stream { .. } => {
                        anyhow::bail!("--stdout downloads in the foreground")
                    }
                },
                label: String::new(),
                priority: args.priority,
                force: args.force,
                wish: None,
            }),
            Fetch::Folder(id) => {
                let Destination::Dir(base) = destination else {
                    anyhow::bail!("a folder downloads into a folder, not a file");
                };
                let plan = FolderPlan::of(client, id, base, args.force).await?;
                kept += plan.kept;
                for (entry, name) in plan.todo {
                    new.push(NewTransfer {
                        hash: entry.hash,
                        name: Some(name),
                        destination: peerdex_agent::Destination::Dir(plan.dir.clone()),
                        label: plan.title.clone(),
                        priority: args.priority,
                        force: args.force,
                        wish: None,
                    });
                }
            }
        }
    }
    if kept > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "peerdex: {kept} file(s) already there, kept"
        );
    }
    let ids = control::add_transfers(state, new.clone()).await?;
    for (id, transfer) in ids.iter().zip(&new) {
        if args.json {
            let line = serde_json::json!({
                "id": id, "hash": transfer.hash, "queued": true,
                "destination": transfer.destination,
            });
            emit(&format!("{line}\n"))?;
        } else {
            let name = transfer
                .name
                .clone()
                .unwrap_or_else(|| transfer.hash.fmt_short().to_string());
            emit(&format!("queued {id}: {name}\n"))?;
        }
    }
    if !args.wait {
        if !args.json && !ids.is_empty() {
            let _ = writeln!(
                std::io::stderr(),
                "peerdex: the agent downloads them; `peerdex transfers` shows how they go"
            );
        }
        return Ok(0);
    }
    follow(state, &ids, args.json).await
}

/// Follows downloads `ids` until each is done, failed or cancelled: one progress bar on a
/// terminal, a line per change of state either way. Returns the exit code (the first failure's;
/// 130 when interrupted, the downloads going on in the agent).
async fn follow(state: &Path, ids: &[u64], json: bool) -> anyhow::Result<u8> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(bar_style());
        bar
    });
    let say = |line: String| match &bar {
        Some(bar) => bar.println(line),
        None => {
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    };
    let mut seen: HashMap<u64, (TransferState, Option<String>)> = HashMap::new();
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    let finished = loop {
        let list = control::transfers(state, usize::MAX).await?;
        let mine: Vec<&TransferView> = list
            .downloads
            .iter()
            .filter(|t| ids.contains(&t.row.id))
            .collect();
        for view in &mine {
            let now = (view.status, view.waits_for.clone());
            if seen.get(&view.row.id) != Some(&now) {
                let name = display_name(view);
                let mut line = format!("peerdex: {} {name}: {}", view.row.id, view.status.word());
                if let Some(waits) = &view.waits_for {
                    line.push_str(&format!(", waits for {waits}"));
                }
                say(line);
                seen.insert(view.row.id, now);
            }
        }
        if let Some(bar) = &bar {
            let total: u64 = mine.iter().filter_map(|t| t.total).sum();
            let verified: u64 = mine.iter().map(|t| t.verified).sum();
            let rate: u64 = mine.iter().map(|t| t.rate).sum();
            let open = mine.iter().filter(|t| !t.row.state.finished()).count();
            bar.set_length(total);
            bar.set_position(verified);
            let message = match mine.iter().find(|t| !t.row.state.finished()) {
                Some(t) if mine.len() == 1 => format!("{} ({})", display_name(t), t.status.word()),
                _ => format!("{open} of {} open", mine.len()),
            };
            bar.set_message(message);
            bar.set_prefix(speed_and_eta(
                (rate > 0).then_some(rate as f64),
                total.saturating_sub(verified),
            ));
        }
        // A finished one the agent's history no longer holds counts as finished too.
        if mine.iter().all(|t| t.row.state.finished()) {
            let gone = ids.len() - mine.len();
            if gone > 0 {
                say(format!(
                    "peerdex: {gone} finished download(s) already left the agent's history \
                     (download.history)"
                ));
            }
            break mine.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut interrupt => {
                if let Some(bar) = &bar {
                    bar.finish_and_clear();
                }
                let _ = writeln!(
                    std::io::stderr(),
                    "peerdex: stopped following; the agent goes on (`peerdex transfers`)"
                );
                return Ok(130);
            }
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut exit = 0u8;
    for view in &finished {
        if json {
            emit(&format!("{}\n", serde_json::to_string(view)?))?;
        }
        match view.row.state {
            Stored::Done => {
                if !json {
                    let place = view
                        .row
                        .path
                        .as_ref()
                        .map_or(String::new(), |p| p.display().to_string());
                    emit(&format!(
                        "{} {} -> {place}: {}\n",
                        view.row.request.hash,
                        view.row.size.unwrap_or(0),
                        human_size(view.row.size.unwrap_or(0))
                    ))?;
                }
            }
            _ => {
                let _ = writeln!(
                    std::io::stderr(),
                    "peerdex: error: {}: {}",
                    view.row.request.hash.fmt_short(),
                    view.row.reason
                );
                if exit == 0 {
                    exit = view.row.error_code.unwrap_or(1).max(1);
                }
            }
        }
    }
    Ok(exit)
}

fn display_name(view: &TransferView) -> String {
    view.file_name
        .clone()
        .or_else(|| view.row.request.name.clone())
        .unwrap_or_else(|| view.row.request.hash.fmt_short().to_string())
}

/// `peerdex transfers`: the list, or one action.
pub(super) async fn transfers(args: TransfersArgs, state: &Path) -> anyhow::Result<()> {
    let (id, action) = match args.command {
        None => {
            let list = control::transfers(state, args.history).await?;
            if args.json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&list)?))?;
            } else {
                emit(&table(&list))?;
            }
            return Ok(());
        }
        Some(TransferCommand::Pause { id }) => (id, Action::Pause),
        Some(TransferCommand::Resume { id }) => (id, Action::Resume),
        Some(TransferCommand::Cancel { id }) => (id, Action::Cancel),
        Some(TransferCommand::Retry { id }) => (id, Action::Retry),
        Some(TransferCommand::Priority { id, priority }) => (id, Action::Priority(priority)),
    };
    let view = control::transfer_action(state, id, action).await?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string(&view)?))?;
    } else {
        emit(&format!(
            "{} {}: {}\n",
            view.row.id,
            display_name(&view),
            view.status.word()
        ))?;
    }
    Ok(())
}

/// One line of a download in the table.
pub(super) fn download_line(view: &TransferView) -> String {
    let progress = match view.total {
        Some(total) if total > 0 => format!(
            "{:>3}% of {}",
            view.verified.saturating_mul(100) / total,
            human_size(total)
        ),
        _ => "-".to_owned(),
    };
    let rate = if view.rate > 0 {
        speed_and_eta(
            Some(view.rate as f64),
            view.total.unwrap_or(0).saturating_sub(view.verified),
        )
    } else {
        String::new()
    };
    let sources: Vec<String> = view
        .sources
        .iter()
        .filter(|s| s.active)
        .map(|s| format!("{} {}/s", s.nickname, human_size(s.rate)))
        .collect();
    let mut line = format!(
        "{:>4}  {:<15} {:>16}  {:<22} {}",
        view.row.id,
        view.status.word(),
        progress,
        rate,
        display_name(view)
    );
    if view.row.request.priority != 0 {
        line.push_str(&format!("  [priority {}]", view.row.request.priority));
    }
    if !sources.is_empty() {
        line.push_str(&format!("  from {}", sources.join(", ")));
    }
    line
}

fn table(list: &TransferList) -> String {
    let mut out = String::new();
    let open = list
        .downloads
        .iter()
        .filter(|t| !t.row.state.finished())
        .count();
    out.push_str(&format!(
        "downloads: {open} open ({} at once), {} finished shown\n",
        list.max_active,
        list.downloads.len() - open
    ));
    if !list.downloads.is_empty() {
        out.push_str(&format!(
            "{:>4}  {:<15} {:>16}  {:<22} NAME\n",
            "ID", "STATE", "PROGRESS", "RATE"
        ));
    }
    for view in &list.downloads {
        out.push_str(&download_line(view));
        out.push('\n');
        if let Some(waits) = &view.waits_for {
            out.push_str(&format!("      waits for {waits}\n"));
        }
    }
    out.push_str(&format!(
        "uploads: {} running, {} queued\n",
        list.uploads.len(),
        list.uploads_queued
    ));
    for upload in &list.uploads {
        let percent = (upload.sent * 100)
            .checked_div(upload.length)
            .unwrap_or(100);
        let rate = (upload.sent as f64 / upload.elapsed_secs.max(0.001)) as u64;
        out.push_str(&format!(
            "      {}  {percent:>3}%  {}/s  {}\n",
            upload.peer,
            human_size(rate),
            upload.path
        ));
    }
    out
}
