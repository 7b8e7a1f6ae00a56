//! Command line of `peerdex-server`: flags and environment over the config file over defaults.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use crate::config::Config;
use crate::server::Server;

/// The peerdex index server: peers register and publish their file lists, anyone searches them.
#[derive(Debug, Parser)]
#[command(name = "peerdex-server", version, about)]
pub struct Args {
    /// Address to listen on (port 0: any free port) [default: 0.0.0.0:7700]
    #[arg(long, env = "PEERDEX_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Data directory for the database and search index [default: ./peerdex-data]
    #[arg(long, env = "PEERDEX_DATA")]
    pub data: Option<PathBuf>,
    /// TOML configuration file (every limit and interval; see docs/CONFIG.md). Its own variable:
    /// PEERDEX_CONFIG is the agent's
    #[arg(long, env = "PEERDEX_SERVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
    /// Operator commands on the data directory (without them: run the server)
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands of `peerdex-server`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Administer accounts, invites and groups in the data directory (the server may be running)
    #[command(subcommand)]
    Admin(crate::admin::AdminCommand),
    /// Print the OpenAPI 3.1 document of the server's API (what `GET /api/openapi.json` serves)
    Openapi,
}

impl Args {
    /// The effective configuration: flags and env override the file, the file overrides defaults.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data) = self.data {
            config.data = data;
        }
        config.validate()?;
        Ok(config)
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed stderr (a log pipe that went away) must not panic the server.
        .log_internal_errors(false)
        .try_init();
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutdown signal received");
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::bind(config).await?;
    let url = server.url()?;
    // The one line on stdout: scripts and tests wait for it.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {url}").context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    drop(stdout);
    server.run(shutdown_signal()).await
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> ExitCode {
    let mut args = Args::parse();
    init_tracing();
    let print_only = args.print_config;
    let command = args.command.take();
    let result = args.into_config().and_then(|config| {
        if let Some(Command::Admin(admin)) = command {
            return crate::admin::run(&config, admin);
        }
        if let Some(Command::Openapi) = command {
            let text = crate::http::openapi_document()
                .to_pretty_json()
                .context("rendering the OpenAPI document")?;
            return print(&format!("{text}\n"));
        }
        if print_only {
            let text = toml::to_string_pretty(&config).context("rendering config")?;
            return print(&text);
        }
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(serve(config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peerdex-server: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
