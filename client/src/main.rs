//! `peerdex`: the agent and command-line client. At this stage: identity and search.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use peerdex::server_api::SearchQuery;
use peerdex::{Identity, ServerClient};

/// Share folders with your peers and find what they share.
#[derive(Debug, Parser)]
#[command(name = "peerdex", version, about)]
struct Cli {
    /// State directory (key, catalog) [default: $XDG_STATE_HOME/peerdex or ~/.local/state/peerdex]
    #[arg(long, env = "PEERDEX_STATE", global = true)]
    state: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this peer's id (its public key), creating the key on first use
    Id,
    /// Search the index server
    Search {
        /// Index server URL
        #[arg(long, env = "PEERDEX_SERVER", default_value = "http://127.0.0.1:7700")]
        server: String,
        /// Only files with this extension
        #[arg(long)]
        ext: Option<String>,
        /// Only files of this kind (audio, video, image, document, archive, other)
        #[arg(long)]
        kind: Option<String>,
        /// Most results
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Print the server's JSON answer
        #[arg(long)]
        json: bool,
        /// Words to search for (`-word` excludes, `"a b"` is a phrase)
        #[arg(required = true)]
        words: Vec<String>,
    },
}

fn state_dir(flag: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = flag {
        return Ok(dir);
    }
    if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("peerdex"));
    }
    let home = std::env::var_os("HOME").context("no HOME; pass --state")?;
    Ok(PathBuf::from(home).join(".local/state/peerdex"))
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Id => {
            let path = state_dir(cli.state)?.join("peer.key");
            let identity = Identity::load_or_create(&path)?;
            println!("{}", identity.peer_id());
        }
        Command::Search {
            server,
            ext,
            kind,
            limit,
            json,
            words,
        } => {
            let client = ServerClient::new(&server)?;
            let query = SearchQuery {
                q: words.join(" "),
                ext,
                kind,
                limit: Some(limit),
                ..Default::default()
            };
            let result = client
                .search(&query)
                .await
                .with_context(|| format!("searching {server}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                for (row, hit) in result.hits.iter().enumerate() {
                    println!(
                        "{:>3}  {}  {}  {} source(s)  {}",
                        row + 1,
                        hit.name,
                        human_size(hit.size),
                        hit.sources_online,
                        hit.hash.fmt_short()
                    );
                }
                println!("{} of {} result(s)", result.hits.len(), result.total);
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
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
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerdex: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
