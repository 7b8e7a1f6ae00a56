//! The `peerdex` command line: parses flags, merges them over the config file, and runs one
//! command. `main.rs` only calls [`main`].

mod get;
mod search;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

use crate::Identity;
use crate::agent::config::{
    AgentConfig, ConfigFile, DEFAULT_LISTEN, ShareConfig, default_config_path, default_state_dir,
};
use crate::agent::{self, AgentStatus, KEY_FILE};
pub use crate::units::human_size;

/// Index server used when none is configured.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";

/// Share folders with your peers and find what they share.
#[derive(Debug, Parser)]
#[command(name = "peerdex", version, about)]
struct Cli {
    /// State directory (key, catalog, control socket) [default: platform state dir/peerdex]
    #[arg(long, env = "PEERDEX_STATE", global = true)]
    state: Option<PathBuf>,
    /// Config file [default: platform config dir/peerdex/config.toml]
    #[arg(long, env = "PEERDEX_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this peer's id (its public key), creating the key on first use
    Id,
    /// Run the agent: share folders, keep the index server in sync, serve files to peers
    Agent(AgentArgs),
    /// Add a folder to the shares in the config file
    Share(ShareArgs),
    /// Remove a folder (or share name) from the shares in the config file
    Unshare {
        /// The folder, or the share's name
        target: PathBuf,
    },
    /// Show the running agent's status
    Status {
        /// Print the status as JSON
        #[arg(long)]
        json: bool,
    },
    /// Search the index server
    Search(search::SearchArgs),
    /// List a peer's shared files
    Browse(search::BrowseArgs),
    /// Download files (rows of the last search, or hashes) directly from the peers that have them
    ///
    /// Exit codes: 0 complete and verified, 3 not found, 4 no source reachable, 5 verification
    /// failed, 6 disk full, 130 interrupted (partial downloads are kept for resuming), 1 other.
    Get(get::GetArgs),
}

#[derive(Debug, Args)]
struct AgentArgs {
    /// Index server URL [default: from the config file, else http://127.0.0.1:7700]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
    /// Folder to share (repeatable); replaces the shares of the config file
    #[arg(long = "share", value_name = "DIR")]
    shares: Vec<PathBuf>,
    /// Address of the file server, e.g. 0.0.0.0:7701 or 127.0.0.1:0 [default: [::]:7701, IPv6 and IPv4]
    #[arg(long, conflicts_with = "no_listen")]
    listen: Option<SocketAddr>,
    /// Accept no inbound connections (as a peer behind NAT)
    #[arg(long)]
    no_listen: bool,
    /// Nickname on the index server [default: peer-<first hex digits of the peer id>]
    #[arg(long)]
    nick: Option<String>,
}

#[derive(Debug, Args)]
struct ShareArgs {
    /// The folder to share
    dir: PathBuf,
    /// Name other peers see [default: the folder's name]
    #[arg(long)]
    name: Option<String>,
    /// Glob of files or folders to leave out (repeatable), e.g. '*.iso' or 'private/**'
    #[arg(long)]
    exclude: Vec<String>,
    /// Follow symbolic links (never out of the share)
    #[arg(long)]
    follow_symlinks: bool,
    /// Share hidden files and folders too
    #[arg(long)]
    include_hidden: bool,
}

fn state_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(dir) => Ok(dir),
        None => default_state_dir(),
    }
}

fn config_path(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(path) => Ok(path),
        None => default_config_path(),
    }
}

/// Merges flags over the config file into what the agent runs with.
fn agent_config(args: AgentArgs, state: PathBuf, file: &ConfigFile) -> anyhow::Result<AgentConfig> {
    let shares: Vec<ShareConfig> = if args.shares.is_empty() {
        file.shares.clone()
    } else {
        args.shares
            .into_iter()
            .map(|path| ShareConfig {
                path,
                name: None,
                exclude: Vec::new(),
                follow_symlinks: false,
                include_hidden: false,
            })
            .collect()
    };
    let listen = if args.no_listen {
        None
    } else {
        Some(match args.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        })
    };
    let server = args
        .server
        .or_else(|| file.server.clone())
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    AgentConfig::from_parts(
        server,
        args.nick.or_else(|| file.nick.clone()),
        listen,
        state,
        &shares,
        file,
    )
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn run_agent(config: AgentConfig) -> anyhow::Result<()> {
    if config.shares.is_empty() {
        warn!("no folders shared: pass --share DIR or run `peerdex share DIR`");
    }
    let handle = agent::start(config).await?;
    if let Some(addr) = handle.serve_addr {
        let mut out = std::io::stdout();
        // Scripts and tests wait for this line.
        writeln!(out, "serving on http://{addr}").context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    info!(peer = %handle.peer_id, "agent running");
    shutdown_signal().await;
    info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

fn print_status(status: &AgentStatus) {
    let link = &status.server;
    println!("peer      {} ({})", status.peer_id, status.nick);
    let connection = if link.online {
        "online".to_owned()
    } else {
        match &link.last_error {
            Some(e) => format!("offline ({e})"),
            None => "connecting".to_owned(),
        }
    };
    println!("server    {} {connection}", link.url);
    if let Some(reach) = link.reachability {
        let addr = link.advertised_addr.as_deref().unwrap_or("no address");
        println!("          {addr}, {}", format!("{reach:?}").to_lowercase());
    }
    println!(
        "list      version {}, {} changes to send; {} full and {} delta uploads since start",
        link.list_version.map_or("-".to_owned(), |v| v.to_string()),
        status.unsynced_changes,
        link.full_uploads,
        link.delta_uploads
    );
    match status.serving {
        Some(addr) => println!("serving   http://{addr}"),
        None => println!("serving   no (inbound connections off)"),
    }
    println!(
        "control   {}",
        if link.control_channel {
            "open (firewalled downloads go by reverse connection or relay)"
        } else {
            "closed (peers that cannot dial us cannot download from us)"
        }
    );
    println!("shares");
    for share in &status.shares {
        println!(
            "  {}  {}  {} files  {}  ({} hashed)",
            share.name,
            share.root.display(),
            share.counts.files,
            human_size(share.counts.bytes),
            share.counts.hashed_files
        );
    }
    let p = &status.progress;
    println!(
        "hashing   {} files ({}) queued{}; {} files ({}) hashed since start",
        p.hash_files_pending,
        human_size(p.hash_bytes_pending),
        if p.scanning { ", scanning" } else { "" },
        p.files_hashed,
        human_size(p.bytes_hashed)
    );
    let u = &status.uploads;
    println!(
        "uploads   {}/{} slots busy, {} queued, {} sent, {} completed",
        u.active.len(),
        u.slots,
        u.queued,
        human_size(u.bytes_sent),
        u.completed
    );
    for upload in &u.active {
        let percent = (upload.sent * 100)
            .checked_div(upload.length)
            .unwrap_or(100);
        println!("  {}  {}  {percent}%", upload.peer, upload.path);
    }
}

fn edit_config(
    path: &Path,
    edit: impl FnOnce(&mut ConfigFile) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut file = ConfigFile::load(path)?;
    edit(&mut file)?;
    file.save(path)
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Id => {
            let path = state_dir(cli.state)?.join(KEY_FILE);
            let identity = Identity::load_or_create(&path)?;
            println!("{}", identity.peer_id());
        }
        Command::Agent(args) => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            let state = state_dir(cli.state)?;
            run_agent(agent_config(args, state, &file)?).await?;
        }
        Command::Share(args) => {
            let path = config_path(cli.config)?;
            edit_config(&path, |file| {
                let name = file.share(ShareConfig {
                    path: args.dir,
                    name: args.name,
                    exclude: args.exclude,
                    follow_symlinks: args.follow_symlinks,
                    include_hidden: args.include_hidden,
                })?;
                println!(
                    "sharing {name:?} (in {}); a running agent picks it up when restarted",
                    path.display()
                );
                Ok(())
            })?;
        }
        Command::Unshare { target } => {
            let path = config_path(cli.config)?;
            edit_config(&path, |file| {
                if !file.unshare(&target) {
                    bail!(
                        "{} is not shared (see {})",
                        target.display(),
                        path.display()
                    );
                }
                println!("no longer sharing {}", target.display());
                Ok(())
            })?;
        }
        Command::Status { json } => {
            let status = agent::control::query(&state_dir(cli.state)?).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
        }
        Command::Search(args) => {
            // Remember the rows for `peerdex get ROW` (best effort without a state dir).
            search::search(args, state_dir(cli.state).ok()).await?;
        }
        Command::Browse(args) => search::browse(args).await?,
        Command::Get(args) => return get::get(args, state_dir(cli.state)?).await,
    }
    Ok(0)
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Agent(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("peerdex: error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("peerdex: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
