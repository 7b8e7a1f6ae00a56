//! `peerdex account create`, `login`, `logout`, `whoami` and `invite create`: the account this
//! device signs in to (PROTOCOL §9). The token is kept in the state directory
//! (`peerdex_client::login`) and sent with searches, browsing and downloads.

use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use peerdex_agent::KEY_FILE;
use peerdex_agent::config::ConfigFile;
use peerdex_client::login::SavedLogin;
use peerdex_client::{Identity, ServerClient};
use peerdex_shared::api::{AccountInfo, CreateAccountRequest};

use super::resolve_server;

fn say(text: &str) -> anyhow::Result<()> {
    Ok(super::emit(text)?)
}

/// `peerdex account …`.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account on the index server (then `peerdex login`)
    Create(CreateArgs),
}

/// `peerdex account create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Account name (letters, digits, `_`, `-`, `.`; compared without case)
    name: String,
    /// Invite code (needed on an invite-only server)
    #[arg(long)]
    invite: Option<String>,
    /// Read the password from the first line of standard input
    #[arg(long)]
    password_stdin: bool,
    /// Index server URL [default: from the config file, else http://127.0.0.1:7700]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
}

/// `peerdex login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Account name
    name: String,
    /// Read the password from the first line of standard input
    #[arg(long)]
    password_stdin: bool,
    /// Index server URL [default: from the config file, else http://127.0.0.1:7700]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
}

/// `peerdex whoami`.
#[derive(Debug, Args)]
pub struct WhoamiArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `peerdex invite …`.
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Make an invite code (admins: any; members: single-use, within the server's quota)
    Create {
        /// Accounts it can create
        #[arg(long)]
        uses: Option<u32>,
        /// How long it is valid: 30m, 12h, 7d, 2w
        #[arg(long)]
        expires: Option<String>,
        /// A group the new accounts join (repeatable; admins only)
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `peerdex apikey …`.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Make an API key for scripts (shown once; send it as `Authorization: Bearer KEY`, or set
    /// PEERDEX_API_KEY for peerdex itself)
    Create {
        /// What it may do, comma-separated: read, search, download, social, admin
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// A name to recognise it by
        #[arg(long)]
        label: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if !from_stdin {
        bail!("give the password on standard input with --password-stdin");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

fn describe(info: &AccountInfo) -> String {
    let mut text = format!("{} ({})", info.name, info.role.as_str());
    if !info.groups.is_empty() {
        text.push_str(&format!(", groups: {}", info.groups.join(", ")));
    }
    text.push_str(&format!(", {} device(s)", info.devices.len()));
    if info.disabled {
        text.push_str(", disabled");
    }
    text
}

/// Runs `peerdex account create`.
pub async fn create(args: CreateArgs, file: &ConfigFile) -> anyhow::Result<()> {
    let server = resolve_server(args.server, file, None);
    let password = read_password(args.password_stdin)?;
    let client = ServerClient::new(&server)?;
    let info = client
        .create_account(&CreateAccountRequest {
            name: args.name,
            password,
            invite: args.invite,
        })
        .await
        .with_context(|| format!("creating the account on {server}"))?;
    say(&format!(
        "created account {}; sign in with: peerdex login {} --password-stdin\n",
        info.name, info.name
    ))
}

/// Runs `peerdex login`: signs in, links this device's key, saves the token.
pub async fn login(args: LoginArgs, file: &ConfigFile, state: &Path) -> anyhow::Result<()> {
    let server = resolve_server(args.server, file, None);
    let password = read_password(args.password_stdin)?;
    let identity = Identity::load_or_create(&state.join(KEY_FILE))?;
    let mut client = ServerClient::new(&server)?;
    let answer = client
        .login(&args.name, &password, &identity)
        .await
        .with_context(|| format!("signing in to {server}"))?;
    SavedLogin {
        server: server.clone(),
        name: answer.account.name.clone(),
        token: answer.token,
    }
    .save(state)?;
    say(&format!(
        "signed in to {server} as {}; this device ({}) is linked to the account\n",
        describe(&answer.account),
        identity.peer_id().fmt_short()
    ))
}

/// Runs `peerdex logout`: revokes the token on the server and forgets it.
pub async fn logout(state: &Path) -> anyhow::Result<()> {
    let Some(saved) = SavedLogin::load(state)? else {
        return say("not signed in\n");
    };
    let client = ServerClient::new(&saved.server)?.with_account_token(Some(saved.token.clone()));
    // A token the server no longer knows is as good as revoked.
    if let Err(e) = client.account_logout().await
        && e.code() != Some(peerdex_shared::api::ErrorCode::Unauthorized)
    {
        return Err(e).context("revoking the token on the index server (it is kept)");
    }
    SavedLogin::remove(state)?;
    say(&format!(
        "signed out of {} ({})\n",
        saved.server, saved.name
    ))
}

fn signed_in(state: &Path) -> anyhow::Result<(SavedLogin, ServerClient)> {
    let saved = SavedLogin::load(state)?
        .context("not signed in; run peerdex login NAME --password-stdin")?;
    let client = ServerClient::new(&saved.server)?.with_account_token(Some(saved.token.clone()));
    Ok((saved, client))
}

/// Runs `peerdex whoami`.
pub async fn whoami(args: WhoamiArgs, state: &Path) -> anyhow::Result<()> {
    let (saved, client) = signed_in(state)?;
    let info = client
        .whoami()
        .await
        .with_context(|| format!("asking {} who this is", saved.server))?;
    if args.json {
        say(&format!("{}\n", serde_json::to_string_pretty(&info)?))
    } else {
        say(&format!("{} on {}\n", describe(&info), saved.server))
    }
}

/// Runs `peerdex invite create`.
pub async fn invite(command: InviteCommand, state: &Path) -> anyhow::Result<()> {
    let InviteCommand::Create {
        uses,
        expires,
        groups,
        json,
    } = command;
    let (saved, client) = signed_in(state)?;
    let body = serde_json::json!({ "uses": uses, "expires": expires, "groups": groups });
    let invite = client
        .create_invite(&body)
        .await
        .with_context(|| format!("making an invite on {}", saved.server))?;
    if json {
        say(&format!("{}\n", serde_json::to_string_pretty(&invite)?))
    } else {
        say(&format!(
            "{}\n",
            invite.get("code").and_then(|c| c.as_str()).unwrap_or("")
        ))
    }
}

/// Runs `peerdex apikey create`.
pub async fn api_key(command: ApiKeyCommand, state: &Path) -> anyhow::Result<()> {
    let ApiKeyCommand::Create {
        scopes,
        label,
        json,
    } = command;
    let (saved, client) = signed_in(state)?;
    let body = serde_json::json!({ "scopes": scopes, "label": label });
    let key = client
        .create_api_key(&body)
        .await
        .with_context(|| format!("making an API key on {}", saved.server))?;
    if json {
        say(&format!("{}\n", serde_json::to_string_pretty(&key)?))
    } else {
        say(&format!(
            "{}\n",
            key.get("key").and_then(|c| c.as_str()).unwrap_or("")
        ))
    }
}
