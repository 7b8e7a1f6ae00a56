//! The `peerdex` command line: parses flags, merges them over the config file, and runs one
//! command. `main.rs` only calls [`main`].
//!
//! Output goes to standard output in one locked write per block, so pipes and `head` work: a
//! reader that goes away (`BrokenPipe`) ends the command quietly with status 0, as ripgrep does.
//! Logs go to standard error.

mod account;
mod get;
mod search;
mod social;
mod transfers;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

use peerdex_agent::config::{
    AgentConfig, ConfigFile, DEFAULT_LISTEN, ShareConfig, default_config_path, default_state_dir,
};
use peerdex_agent::{self as agent, AgentStatus, KEY_FILE};
use peerdex_client::Identity;
pub use peerdex_client::units::human_size;

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
    /// Extra CA certificates (PEM) to trust for an https:// index server, besides the system's
    /// [config: ca_file]
    #[arg(long, env = "PEERDEX_CA_FILE", global = true, value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Accept only the https:// index server certificate with this SHA-256 fingerprint (for a
    /// self-signed server; `openssl x509 -noout -fingerprint -sha256` prints it)
    /// [config: server_fingerprint]
    #[arg(
        long,
        env = "PEERDEX_SERVER_FINGERPRINT",
        global = true,
        value_name = "SHA256"
    )]
    server_fingerprint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print this peer's id (its public key), creating the key on first use
    Id,
    /// Run the agent: share folders, keep the index server in sync, serve files to peers
    ///
    /// Exit codes: 0 stopped by SIGINT/SIGTERM (logged out), 1 could not start, or stopped
    /// because the index server refuses it for good (a nickname of another peer, an invalid
    /// nickname): the message says why.
    Agent(AgentArgs),
    /// Add a folder to the shares in the config file (a running agent shares it at once)
    Share(ShareArgs),
    /// Remove a folder (or share name) from the shares in the config file (a running agent stops
    /// serving it at once)
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
    /// Print the address of the running agent's web client, which signs this browser in
    /// (`--open` opens it in the default browser)
    ///
    /// Exit codes: 0 printed, 1 no agent is running or its web client is off (`ui_listen`).
    Ui {
        /// Print the OpenAPI 3.1 document of the agent's local API instead (what
        /// `GET /api/openapi.json` on `ui_listen` serves); needs no running agent
        #[arg(long, conflicts_with_all = ["open", "json"])]
        openapi: bool,
        /// Open the address in the default browser too (xdg-open)
        #[arg(long)]
        open: bool,
        /// Print the address as JSON (`{"url": …, "address": …, "token": …}`; the token is the
        /// bearer token of the agent's local API)
        #[arg(long)]
        json: bool,
    },
    /// Search the index server
    Search(search::SearchArgs),
    /// List a peer's shared files, numbered: `peerdex get ROW` downloads a row
    Browse(search::BrowseArgs),
    /// Download files (rows of the last search or browse, hashes or hash prefixes) directly from
    /// the peers that have them
    ///
    /// Exit codes: 0 complete and verified, 3 not found, 4 no source reachable, 5 verification
    /// failed, 6 disk full, 130 interrupted (partial downloads are kept for resuming), 1 other.
    ///
    /// With an agent running on the state directory, the downloads go to its transfer queue
    /// and the command returns (`--wait` follows them; `--foreground` downloads here instead).
    Get(get::GetArgs),
    /// The running agent's downloads and uploads: `transfers [--json]`,
    /// `transfers pause|resume|cancel|retry ID`, `transfers priority ID N`
    Transfers(transfers::TransfersArgs),
    /// Accounts on the index server: `account create NAME [--invite CODE] --password-stdin`
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// Sign in to an account, linking this device's key (the token is kept in the state dir)
    Login(account::LoginArgs),
    /// Sign out: revoke and forget the token
    Logout,
    /// Show the account this device is signed in to
    Whoami(account::WhoamiArgs),
    /// Invite codes: `invite create [--uses N] [--expires 7d] [--group G]`
    #[command(subcommand)]
    Invite(account::InviteCommand),
    /// API keys for scripts: `apikey create --scope search,download`
    #[command(subcommand)]
    Apikey(account::ApiKeyCommand),
    /// Contacts: `contact add|accept|decline|remove NAME`, `contact list [--json]`
    Contact {
        #[command(subcommand)]
        command: social::ContactCommand,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Send a private message: `msg NAME TEXT` (or the text on standard input)
    Msg {
        #[command(flatten)]
        args: social::MsgArgs,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Messages to you, oldest first (`--unread`, `--with NAME`)
    Inbox {
        #[command(flatten)]
        args: social::InboxArgs,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Show a message and mark it read
    Read {
        #[command(flatten)]
        args: social::ReadArgs,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Block an account: no messages or contact requests from them; any contact ends
    Block {
        /// Their account name
        name: String,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Lift a block
    Unblock {
        /// Their account name
        name: String,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Ask your contacts (`--depth 2`: and theirs) or every holder of matching files
    /// (`--holders QUERY`), in real time; answers come as events. `--list`, `--cancel ID`
    Ask {
        #[command(flatten)]
        args: social::AskArgs,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Answer a request with a file you share: `offer REQUEST_ID HASH [--note TEXT]`
    Offer {
        /// The request id (from the `request` event)
        request: u64,
        /// The content's hash
        hash: peerdex_shared::FileHash,
        /// A word to go with it
        #[arg(long)]
        note: Option<String>,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Rooms: `room join|leave|say|log ROOM`, `room list`, and for operators
    /// `room invite|kick|mute|unmute|op ROOM NAME`
    Room {
        #[command(subcommand)]
        command: social::RoomCommand,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Standing searches: `wish add QUERY [--kind K --min-size S] [--auto-download]`,
    /// `wish list`, `wish rm ID`
    Wish {
        #[command(subcommand)]
        command: social::WishCommand,
        #[command(flatten)]
        server: social::SocialServer,
    },
    /// Print live events (contacts online, messages, requests, receipts) as they come, until
    /// interrupted; NDJSON with --json. Starts after the last durable event printed before.
    Events {
        #[command(flatten)]
        args: social::EventsArgs,
        #[command(flatten)]
        server: social::SocialServer,
    },
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
    /// Loopback address of the local web endpoint (web client and /metrics), or `off` [default: from the
    /// config file, else 127.0.0.1:7702]
    #[arg(long, value_name = "ADDR|off")]
    ui_listen: Option<String>,
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
    /// Who may see and download it: public (default), hidden, members, group:NAME,
    /// users:[a, b], each also as locked:… (listed to all, downloadable by them only)
    #[arg(long, default_value = "public")]
    visibility: peerdex_shared::scope::Visibility,
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

/// The index server a command talks to, by one rule for every command: `--server` (or
/// `PEERDEX_SERVER`, which the flag reads) > the config file's `server` > the server of the last
/// search or browse (for `get`, which downloads its rows) > the default.
fn resolve_server(flag: Option<String>, file: &ConfigFile, last_listing: Option<&str>) -> String {
    flag.or_else(|| file.server.clone())
        .or_else(|| last_listing.map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned())
}

/// An API key from `PEERDEX_API_KEY`, which takes the place of a saved sign-in.
pub(crate) fn api_key_from_env() -> Option<String> {
    std::env::var("PEERDEX_API_KEY")
        .ok()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
}

/// A client of `server` that sends `PEERDEX_API_KEY`, else this device's saved sign-in for that
/// server, if any (a damaged sign-in file is reported and ignored: results are then a guest's).
fn server_client(
    server: &str,
    state: Option<&Path>,
) -> anyhow::Result<peerdex_client::ServerClient> {
    if let Some(key) = api_key_from_env() {
        return Ok(peerdex_client::ServerClient::new(server)?.with_account_token(Some(key)));
    }
    let token = match state.map(|s| peerdex_client::login::SavedLogin::token_for(s, server)) {
        Some(Ok(token)) => token,
        Some(Err(e)) => {
            warn!("{e}");
            None
        }
        None => None,
    };
    Ok(peerdex_client::ServerClient::new(server)?.with_account_token(token))
}

/// `text` with control and invisible formatting characters written as `\u{…}`, so a name from
/// a peer cannot reorder or hide what the terminal shows (`evil\u{202e}gpj.exe`).
pub(crate) fn visible(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || peerdex_shared::validate::is_invisible_format(c) {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

/// Writes `text` to standard output at once, through one lock.
pub(crate) fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Merges flags over the config file into what the agent runs with.
fn agent_config(
    args: AgentArgs,
    state: PathBuf,
    file: &ConfigFile,
    file_path: &Path,
) -> anyhow::Result<AgentConfig> {
    let from_flags = !args.shares.is_empty();
    let shares: Vec<ShareConfig> = if from_flags {
        args.shares.into_iter().map(ShareConfig::new).collect()
    } else {
        file.shares.clone()
    };
    let listen = if args.no_listen {
        None
    } else {
        Some(match args.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().context("default listen address")?,
        })
    };
    let server = resolve_server(args.server, file, None);
    let args_ui_listen = args.ui_listen;
    let mut config = AgentConfig::from_parts(
        server,
        args.nick.or_else(|| file.nick.clone()),
        listen,
        state,
        &shares,
        file,
    )?;
    if let Some(ui) = &args_ui_listen {
        config.ui_listen = agent::config::parse_ui_listen(ui)?;
    }
    // `peerdex share` edits this file; the running agent then reads its shares from it again.
    config.shares_file = (!from_flags).then(|| file_path.to_owned());
    Ok(config)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
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

async fn run_agent(config: AgentConfig) -> anyhow::Result<()> {
    if config.shares.is_empty() {
        warn!("no folders shared: pass --share DIR or run `peerdex share DIR`");
    }
    let handle = agent::start(config).await?;
    if let Some(addr) = handle.serve_addr {
        // Scripts and tests wait for this line. A closed stdout must not stop the agent, nor
        // skip the logout below.
        let scheme = if handle.tls { "https" } else { "http" };
        if let Err(e) = emit(&format!("serving on {scheme}://{addr}\n")) {
            warn!(error = %e, "cannot write to standard output");
        }
    }
    info!(peer = %handle.peer_id, "agent running");
    let failure = tokio::select! {
        () = shutdown_signal() => None,
        reason = handle.failed() => Some(reason),
    };
    info!("shutting down");
    handle.shutdown().await;
    match failure {
        Some(reason) => bail!("{reason}"),
        None => Ok(()),
    }
}

fn status_text(status: &AgentStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let link = &status.server;
    let _ = writeln!(out, "peer      {} ({})", status.peer_id, status.nick);
    let connection = if link.online {
        "online".to_owned()
    } else {
        match &link.last_error {
            Some(e) => format!("offline ({e})"),
            None => "connecting".to_owned(),
        }
    };
    let _ = writeln!(out, "server    {} {connection}", link.url);
    if let Some(error) = &status.catalog_error {
        let _ = writeln!(
            out,
            "catalog   cannot be read ({error}): the counts below are not known"
        );
    }
    if let Some(reach) = link.reachability {
        let addr = link.advertised_addr.as_deref().unwrap_or("no address");
        let _ = writeln!(
            out,
            "          {addr}, {}",
            format!("{reach:?}").to_lowercase()
        );
    }
    let _ = writeln!(
        out,
        "list      version {}, {} changes to send; {} full and {} delta uploads since start",
        link.list_version.map_or("-".to_owned(), |v| v.to_string()),
        status.unsynced_changes,
        link.full_uploads,
        link.delta_uploads
    );
    let _ = match status.serving {
        Some(addr) => writeln!(out, "serving   http://{addr}"),
        None => writeln!(out, "serving   no (inbound connections off)"),
    };
    if let Some(ui) = status.ui {
        let _ = writeln!(
            out,
            "local     http://{ui}/ (web client: `peerdex ui`; metrics at /metrics)"
        );
    }
    let _ = writeln!(
        out,
        "control   {}",
        if link.control_channel {
            "open (firewalled downloads go by reverse connection or relay)"
        } else {
            "closed (peers that cannot dial us cannot download from us)"
        }
    );
    let _ = writeln!(out, "shares");
    for share in &status.shares {
        let _ = writeln!(
            out,
            "  {}  {}  {} files  {}  ({} hashed)",
            share.name,
            share.root.display(),
            share.counts.files,
            human_size(share.counts.bytes),
            share.counts.hashed_files
        );
    }
    if !status.unshareable.is_empty() {
        let _ = writeln!(
            out,
            "not shared ({} names that cannot be shared; rename them to share them)",
            status.unshareable.len()
        );
        for name in &status.unshareable {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                visible(&name.share),
                visible(&name.path),
                name.reason
            );
        }
    }
    let p = &status.progress;
    let _ = writeln!(
        out,
        "hashing   {} files ({}) queued{}; {} files ({}) hashed since start",
        p.hash_files_pending,
        human_size(p.hash_bytes_pending),
        if p.scanning { ", scanning" } else { "" },
        p.files_hashed,
        human_size(p.bytes_hashed)
    );
    let u = &status.uploads;
    let _ = writeln!(
        out,
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
        let _ = writeln!(out, "  {}  {}  {percent}%", upload.peer, upload.path);
    }
    let _ = writeln!(out, "downloads {} open", status.downloads.len());
    for download in &status.downloads {
        let _ = writeln!(out, "  {}", transfers::download_line(download));
        if let Some(waits) = &download.waits_for {
            let _ = writeln!(out, "      waits for {waits}");
        }
    }
    out
}

/// Opens `url` in the desktop's default browser; says so on standard error when it cannot
/// (the address was printed anyway).
fn open_in_browser(url: &str) {
    let opened = std::process::Command::new("xdg-open")
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match opened {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!("peerdex: xdg-open failed ({status}); open the address above"),
        Err(e) => eprintln!("peerdex: cannot run xdg-open ({e}); open the address above"),
    }
}

/// After `share` or `unshare` changed the config file: makes a running agent serve the new
/// shares now, and says what happened.
async fn apply_to_running_agent(state: &Path) -> String {
    if !agent::control::is_running(state) {
        return "no agent is running; it shares them when it starts".to_owned();
    }
    match agent::control::reload_shares(state).await {
        Ok(change) => {
            let mut said = "the running agent now shares: ".to_owned();
            said.push_str(&change.shares.join(", "));
            if change.shares.is_empty() {
                said.push_str("nothing");
            }
            said
        }
        Err(e) => format!("{e:#}"),
    }
}

/// Sets how this process trusts `https://` index servers: flags over the config file (read here
/// only for these two settings; a config file that cannot be read is the command's to report).
fn configure_server_trust(cli: &Cli) -> anyhow::Result<()> {
    let file = config_path(cli.config.clone())
        .ok()
        .and_then(|path| ConfigFile::load(&path).ok())
        .unwrap_or_default();
    let fingerprint = cli
        .server_fingerprint
        .clone()
        .or(file.server_fingerprint)
        .map(|text| text.parse::<peerdex_client::tls::Fingerprint>())
        .transpose()?;
    peerdex_client::tls::configure(peerdex_client::tls::ServerTrust {
        ca_file: cli.ca_file.clone().or(file.ca_file),
        fingerprint,
    })?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    configure_server_trust(&cli)?;
    match cli.command {
        Command::Id => {
            let path = state_dir(cli.state)?.join(KEY_FILE);
            let identity = Identity::load_or_create(&path)?;
            emit(&format!("{}\n", identity.peer_id()))?;
        }
        Command::Agent(args) => {
            let path = config_path(cli.config)?;
            let file = ConfigFile::load(&path)?;
            let state = state_dir(cli.state)?;
            run_agent(agent_config(args, state, &file, &path)?).await?;
        }
        Command::Share(args) => {
            let path = config_path(cli.config)?;
            let said = ConfigFile::edit(&path, |file| {
                let name = file.share(ShareConfig {
                    path: args.dir,
                    name: args.name,
                    exclude: args.exclude,
                    follow_symlinks: args.follow_symlinks,
                    include_hidden: args.include_hidden,
                    visibility: args.visibility,
                    scopes: Vec::new(),
                })?;
                Ok(format!("sharing {name:?} (in {})", path.display()))
            })?;
            let agent = apply_to_running_agent(&state_dir(cli.state)?).await;
            emit(&format!("{said}; {agent}\n"))?;
        }
        Command::Unshare { target } => {
            let path = config_path(cli.config)?;
            let said = ConfigFile::edit(&path, |file| {
                if !file.unshare(&target) {
                    bail!(
                        "{} is not shared (see {})",
                        target.display(),
                        path.display()
                    );
                }
                Ok(format!("no longer sharing {}", target.display()))
            })?;
            let agent = apply_to_running_agent(&state_dir(cli.state)?).await;
            emit(&format!("{said}; {agent}\n"))?;
        }
        Command::Status { json } => {
            let status = agent::control::query(&state_dir(cli.state)?).await?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&status)?))?;
            } else {
                emit(&status_text(&status))?;
            }
        }
        Command::Ui { openapi: true, .. } => {
            let document = agent::web::openapi_document()
                .to_pretty_json()
                .context("rendering the OpenAPI document")?;
            emit(&format!("{document}\n"))?;
        }
        Command::Ui { open, json, .. } => {
            let state = state_dir(cli.state)?;
            let status = agent::control::query(&state).await?;
            let Some(address) = status.ui else {
                bail!(
                    "the running agent's web client is off (ui_listen = \"off\", or its port was taken: see the agent's log)"
                );
            };
            let token = agent::web::load_or_create_token(&state).with_context(|| {
                format!("reading the web client's token in {}", state.display())
            })?;
            let url = agent::web::sign_in_url(address, &token);
            if json {
                // The token too: scripts send it as a bearer token to the agent's local API.
                let document = serde_json::json!({
                    "url": url,
                    "address": address.to_string(),
                    "token": token,
                });
                emit(&format!("{document}\n"))?;
            } else {
                emit(&format!("{url}\n"))?;
            }
            if open {
                open_in_browser(&url);
            }
        }
        Command::Search(args) => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            // Remember the rows for `peerdex get ROW` (best effort without a state dir).
            search::search(args, &file, state_dir(cli.state).ok()).await?;
        }
        Command::Browse(args) => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            search::browse(args, &file, state_dir(cli.state).ok()).await?;
        }
        Command::Get(args) => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            return get::get(args, &file, state_dir(cli.state)?).await;
        }
        Command::Transfers(args) => transfers::transfers(args, &state_dir(cli.state)?).await?,
        Command::Account(account::AccountCommand::Create(args)) => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            account::create(args, &file).await?;
        }
        Command::Login(args) => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            account::login(args, &file, &state_dir(cli.state)?).await?;
        }
        Command::Logout => account::logout(&state_dir(cli.state)?).await?,
        Command::Whoami(args) => account::whoami(args, &state_dir(cli.state)?).await?,
        Command::Invite(command) => account::invite(command, &state_dir(cli.state)?).await?,
        Command::Apikey(command) => account::api_key(command, &state_dir(cli.state)?).await?,
        Command::Contact { command, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::contact(command, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Msg { args, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::msg(args, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Inbox { args, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::inbox(args, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Read { args, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::read(args, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Block { name, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::block(name, true, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Unblock { name, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::block(name, false, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Ask { args, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::ask(args, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Offer {
            request,
            hash,
            note,
            server,
        } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::offer(request, hash, note, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Room { command, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::room(command, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Wish { command, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::wish(command, server, &state_dir(cli.state)?, &file).await?;
        }
        Command::Events { args, server } => {
            let file = ConfigFile::load(&config_path(cli.config)?)?;
            social::events(args, server, &state_dir(cli.state)?, &file).await?;
        }
    }
    Ok(0)
}

/// Whether an error is standard output closed by its reader (`peerdex search … | head`).
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Makes `peerdex search beatles -live` mean what it says: once a query word was given, the
/// first argument that starts with `-` but is no flag of `search` begins the exclusions, so a
/// `--` is put before it. Flags still work anywhere before it (`search beatles --json -live`).
fn words_after_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let mut command = Cli::command();
    // Building propagates the global flags into the subcommands.
    command.build();
    let takes_value = |arg: &clap::Arg| arg.get_num_args().is_some_and(|n| n.takes_values());
    let Some(search) = command.find_subcommand("search") else {
        return args;
    };
    // Its own flags and the global ones.
    let flags: Vec<&clap::Arg> = search
        .get_arguments()
        .filter(|a| !a.is_positional())
        .collect();
    let long = |name: &str| {
        flags
            .iter()
            .find(|a| a.get_long() == Some(name))
            .map(|a| takes_value(a))
    };
    let short = |c: char| {
        flags
            .iter()
            .find(|a| a.get_short() == Some(c))
            .map(|a| takes_value(a))
    };
    let text: Vec<Option<&str>> = args.iter().map(|a| a.to_str()).collect();
    // Skip the global flags before the subcommand.
    let mut i = 1;
    while let Some(Some(arg)) = text.get(i) {
        match arg.strip_prefix("--") {
            Some(name) if !name.contains('=') && long(name) == Some(true) => i += 2,
            Some(_) => i += 1,
            None => break,
        }
    }
    if text.get(i) != Some(&Some("search")) {
        return args;
    }
    i += 1;
    let mut seen_word = false;
    while let Some(arg) = text.get(i) {
        let Some(arg) = arg else {
            seen_word = true;
            i += 1;
            continue;
        };
        if *arg == "--" {
            return args;
        }
        let known = if let Some(name) = arg.strip_prefix("--") {
            let (name, inline) = match name.split_once('=') {
                Some((name, _)) => (name, true),
                None => (name, false),
            };
            long(name).map(|value| value && !inline)
        } else if let Some(cluster) = arg.strip_prefix('-').filter(|c| !c.is_empty()) {
            let mut chars = cluster.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => short(c),
                _ => None,
            }
        } else {
            seen_word = true;
            i += 1;
            continue;
        };
        match known {
            Some(takes) => i += if takes { 2 } else { 1 },
            None if seen_word => {
                let mut fixed = args;
                fixed.insert(i, "--".into());
                return fixed;
            }
            // Before any word: clap reports the unknown flag.
            None => return args,
        }
    }
    args
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(words_after_flags(std::env::args_os().collect()));
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
        // A log pipe that went away (`agent 2>&1 | tee log`, then Ctrl-C) must never panic the
        // agent or keep it from logging out.
        .log_internal_errors(false)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "peerdex: error: starting the async runtime: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "peerdex: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(args: &str) -> String {
        let args = args.split(' ').map(std::ffi::OsString::from).collect();
        words_after_flags(args)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn words_starting_with_a_dash_after_the_first_word_are_query_words() {
        assert_eq!(
            fixed("peerdex search beatles -live"),
            "peerdex search beatles -- -live"
        );
        assert_eq!(
            fixed("peerdex --state s search --kind audio beatles --json -live --x"),
            "peerdex --state s search --kind audio beatles --json -- -live --x"
        );
        assert_eq!(
            fixed("peerdex search beatles --limit 5 --min-size=3MB -live"),
            "peerdex search beatles --limit 5 --min-size=3MB -- -live"
        );
        // Nothing to do: no such word, an explicit `--`, or another command.
        assert_eq!(
            fixed("peerdex search beatles abbey"),
            "peerdex search beatles abbey"
        );
        assert_eq!(fixed("peerdex search a -- -b"), "peerdex search a -- -b");
        assert_eq!(fixed("peerdex get -o x 1"), "peerdex get -o x 1");
        // Before any word an unknown flag stays a usage error.
        assert_eq!(
            fixed("peerdex search --bogus x"),
            "peerdex search --bogus x"
        );
        let parsed = Cli::try_parse_from(words_after_flags(
            "peerdex search beatles -live --json"
                .split(' ')
                .map(Into::into)
                .collect(),
        ))
        .unwrap();
        let Command::Search(search) = parsed.command else {
            panic!("not a search");
        };
        assert_eq!(search.words(), ["beatles", "-live", "--json"]);
    }
}
