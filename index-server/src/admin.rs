//! `peerdex-server admin …`: the operator's commands on the data directory, beside (or without)
//! a running server. They act as the actor `operator` in the audit log.
//!
//! A running server sees what these commands change at its next request, except its cached
//! scopes, which it re-reads within [`crate::db::SCOPE_CACHE_SECS`] seconds.

use std::io::Write;

use anyhow::{Context, anyhow};
use clap::{Args, Subcommand};
use peerdex_shared::api::Role;
use serde::Serialize;

use crate::config::Config;
use crate::db::Db;
use crate::http::ApiError;

/// Who the operator's actions are recorded as.
pub const OPERATOR: &str = "operator";

/// `peerdex-server admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Invites: `invite create [--uses N] [--expires 7d] [--group G]…`
    #[command(subcommand)]
    Invite(InviteCommand),
    /// Accounts: `account list|disable|enable|role`
    #[command(subcommand)]
    Account(AccountCommand),
    /// Groups: `group create|add|remove|list`
    #[command(subcommand)]
    Group(GroupCommand),
    /// Bans: `ban add KIND VALUE [--for 30m] [--reason R]`, `ban list`, `ban remove ID`
    #[command(subcommand)]
    Ban(BanCommand),
    /// Take a content down by hash: search, sources and tickets stop offering it
    Takedown {
        /// The content hash
        hash: peerdex_shared::FileHash,
        /// Why (kept in the audit log)
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The audit log, newest first
    Audit(AuditArgs),
    /// Sources quarantined for serving data that failed verification: `quarantine list`,
    /// `quarantine clear PEER_ID`
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

/// `admin quarantine …`.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// Quarantined sources, with why and since when
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Offer a source again (its bad-data reports are forgotten)
    Clear {
        /// The source's peer id
        peer: peerdex_shared::PeerId,
    },
}

/// `admin ban …`.
#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// Ban an account, a peer key, an IP address or network, or nicknames matching a pattern
    Add {
        /// account, peer, ip or nick
        kind: String,
        /// The account name, peer id, address or network (203.0.113.0/24), or pattern (spam*)
        value: String,
        /// How long: 30m, 12h, 7d, 2w (default: permanent)
        #[arg(long = "for")]
        duration: Option<String>,
        /// Why (kept in the audit log and told to the banned)
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Bans in force
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Lift a ban
    Remove {
        /// The ban's id (from `ban list`)
        id: i64,
    },
}

/// `admin invite …`.
#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Make an invite code (printed once)
    Create {
        /// Accounts it can create
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid: 30m, 12h, 7d, 2w (default: until used up)
        #[arg(long)]
        expires: Option<String>,
        /// A group the new accounts join (repeatable)
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `admin account …`.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Every account with role, groups and devices
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it cannot sign in, its tokens are revoked, its devices cannot register
    Disable {
        /// Account name
        name: String,
        /// Why (kept in the audit log)
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Enable a disabled account
    Enable {
        /// Account name
        name: String,
    },
    /// Set an account's role: member, moderator or admin
    Role {
        /// Account name
        name: String,
        /// member, moderator or admin
        role: String,
    },
    /// Mute an account: it may not send messages (signing in and sharing still work)
    Mute {
        /// Account name
        name: String,
        /// How long: 30m, 12h, 7d, 2w (default: until unmuted)
        #[arg(long = "for")]
        duration: Option<String>,
        /// Why (kept in the audit log, shown to the account)
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift a mute
    Unmute {
        /// Account name
        name: String,
    },
}

/// `admin group …`.
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group
    Create {
        /// Group name
        name: String,
    },
    /// Add an account to a group
    Add {
        /// Group name
        group: String,
        /// Account name
        account: String,
    },
    /// Remove an account from a group (takes effect on its next request)
    Remove {
        /// Group name
        group: String,
        /// Account name
        account: String,
    },
    /// Every group with its members
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `admin audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Most entries shown
    #[arg(long, default_value_t = 100)]
    limit: i64,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

fn api(e: ApiError) -> anyhow::Error {
    anyhow!(e.body.error)
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

fn print_line(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}

/// Runs an admin command against the data directory of `config`.
pub fn run(config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data)
        .with_context(|| format!("creating {}", config.data.display()))?;
    let path = config.data.join(crate::server::DB_FILE);
    let db = Db::open(&path).with_context(|| format!("opening {}", path.display()))?;
    match command {
        AdminCommand::Invite(InviteCommand::Create {
            uses,
            expires,
            groups,
            json,
        }) => {
            let invite =
                crate::http::accounts::make_invite(&db, OPERATOR, uses, expires.as_deref(), groups)
                    .map_err(api)?;
            if json {
                print_json(&invite)?;
            } else {
                print_line(&invite.code)?;
            }
        }
        AdminCommand::Account(AccountCommand::List { json }) => {
            let mut infos = Vec::new();
            for account in db.accounts()? {
                infos.push(db.account_info(&account)?);
            }
            if json {
                print_json(&infos)?;
            } else {
                for info in infos {
                    print_line(&format!(
                        "{}\t{}{}\tgroups: {}\tdevices: {}",
                        info.name,
                        info.role.as_str(),
                        if info.disabled { " (disabled)" } else { "" },
                        info.groups.join(","),
                        info.devices.len()
                    ))?;
                }
            }
        }
        AdminCommand::Account(AccountCommand::Disable { name, reason }) => {
            db.set_disabled(OPERATOR, &name, true, &reason)?;
            print_line(&format!("disabled {name}"))?;
        }
        AdminCommand::Account(AccountCommand::Enable { name }) => {
            db.set_disabled(OPERATOR, &name, false, "")?;
            print_line(&format!("enabled {name}"))?;
        }
        AdminCommand::Account(AccountCommand::Role { name, role }) => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow!("unknown role {role:?}; use member, moderator or admin"))?;
            db.set_role(OPERATOR, &name, role)?;
            print_line(&format!("{name} is now {}", role.as_str()))?;
        }
        AdminCommand::Account(AccountCommand::Mute {
            name,
            duration,
            reason,
        }) => {
            let until = crate::http::accounts::mute_until(duration.as_deref())
                .map_err(|e| anyhow!("{}", e.body.error))?;
            db.set_mute(OPERATOR, &name, Some(until), &reason)
                .map_err(|e| anyhow!("{e}"))?;
            print_line(&format!("muted {name}"))?;
        }
        AdminCommand::Account(AccountCommand::Unmute { name }) => {
            db.set_mute(OPERATOR, &name, None, "")
                .map_err(|e| anyhow!("{e}"))?;
            print_line(&format!("unmuted {name}"))?;
        }
        AdminCommand::Group(GroupCommand::Create { name }) => {
            peerdex_shared::validate::validate_nickname(&name)
                .map_err(|e| anyhow!("group name {e}"))?;
            db.create_group(OPERATOR, &name)?;
            print_line(&format!("created group {name}"))?;
        }
        AdminCommand::Group(GroupCommand::Add { group, account }) => {
            db.set_member(OPERATOR, &group, &account, true)?;
            print_line(&format!("added {account} to {group}"))?;
        }
        AdminCommand::Group(GroupCommand::Remove { group, account }) => {
            db.set_member(OPERATOR, &group, &account, false)?;
            print_line(&format!("removed {account} from {group}"))?;
        }
        AdminCommand::Group(GroupCommand::List { json }) => {
            let groups = db.groups()?;
            if json {
                print_json(&groups)?;
            } else {
                for group in groups {
                    print_line(&format!("{}\t{}", group.name, group.members.join(",")))?;
                }
            }
        }
        AdminCommand::Ban(BanCommand::Add {
            kind,
            value,
            duration,
            reason,
        }) => {
            let request = crate::http::accounts::BanRequest {
                kind,
                value,
                duration,
                reason,
            };
            let ban = crate::http::accounts::add_ban(&db, OPERATOR, &request).map_err(api)?;
            print_line(&format!(
                "ban {}: {:?} {} {}",
                ban.id,
                ban.kind,
                ban.value,
                ban.until
                    .map_or("permanently".to_string(), |u| format!("until {u}"))
            ))?;
        }
        AdminCommand::Ban(BanCommand::List { json }) => {
            let bans = db.active_bans()?;
            if json {
                print_json(&bans)?;
            } else {
                for ban in bans {
                    print_line(&format!(
                        "{}\t{:?}\t{}\t{}\t{}\t{}",
                        ban.id,
                        ban.kind,
                        ban.value,
                        ban.until.map_or("permanent".to_string(), |u| u.to_string()),
                        ban.actor,
                        ban.reason
                    ))?;
                }
            }
        }
        AdminCommand::Ban(BanCommand::Remove { id }) => {
            if !db.remove_ban(OPERATOR, id)? {
                return Err(anyhow!("no ban {id}"));
            }
            print_line(&format!("lifted ban {id}"))?;
        }
        AdminCommand::Takedown { hash, reason } => {
            let files = db.take_down(OPERATOR, &hash, &reason)?;
            print_line(&format!("took {hash} down ({files} listed copies)"))?;
        }
        AdminCommand::Quarantine(QuarantineCommand::List { json }) => {
            let rows = db.quarantine_list()?;
            if json {
                print_json(&rows)?;
            } else {
                for row in rows {
                    let what = row
                        .hash
                        .map_or_else(|| "every content".to_owned(), |h| h.to_string());
                    print_line(&format!(
                        "{}	{}	{what}	{}	since {}",
                        row.peer, row.nickname, row.reason, row.since
                    ))?;
                }
            }
        }
        AdminCommand::Quarantine(QuarantineCommand::Clear { peer }) => {
            if !db.clear_quarantine(OPERATOR, &peer)? {
                return Err(anyhow!("{peer} is not quarantined"));
            }
            print_line(&format!("cleared the quarantine of {peer}"))?;
        }
        AdminCommand::Audit(AuditArgs { limit, json }) => {
            let rows = db.audit_log(limit.clamp(1, 100_000))?;
            if json {
                print_json(&rows)?;
            } else {
                for row in rows {
                    print_line(&format!(
                        "{}\t{}\t{}\t{}\t{}",
                        row.at, row.actor, row.action, row.target, row.reason
                    ))?;
                }
            }
        }
    }
    Ok(())
}
