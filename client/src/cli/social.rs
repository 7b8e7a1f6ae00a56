//! `peerdex contact`, `msg`, `inbox`, `read`, `block`, `unblock` and `events`: the people side
//! of peerdex (PROTOCOL §10). They act as the signed-in account (`peerdex login`), or as
//! `PEERDEX_API_KEY` with the `social` scope.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use peerdex_agent::config::ConfigFile;
use peerdex_client::ServerClient;
use peerdex_client::login::SavedLogin;
use peerdex_shared::api::ErrorCode;
use peerdex_shared::social::{
    Contact, ContactState, Event, EventEnvelope, Message, ReceiptState, RoomLine, RoomRole,
};
use peerdex_shared::units::ago_since;

use super::{api_key_from_env, emit, resolve_server, visible};

/// The file in the state directory holding the id of the last durable event `peerdex events`
/// printed, so the next run starts after it.
pub const EVENTS_CURSOR_FILE: &str = "events.cursor";

/// `peerdex contact …`.
#[derive(Debug, Subcommand)]
pub enum ContactCommand {
    /// Ask someone to be your contact (if they asked you already, you are contacts now)
    Add {
        /// Their account name
        name: String,
    },
    /// Accept a contact request
    Accept {
        /// Their account name
        name: String,
    },
    /// Decline a contact request
    Decline {
        /// Their account name
        name: String,
    },
    /// End a contact (both sides), or withdraw your request
    Remove {
        /// Their account name
        name: String,
    },
    /// Your contacts (online or last seen) and open requests both ways
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// Where the social commands find the server and credentials.
#[derive(Debug, Args)]
pub struct SocialServer {
    /// Index server URL, with PEERDEX_API_KEY [default: the server signed in to]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
}

/// `peerdex msg`.
#[derive(Debug, Args)]
pub struct MsgArgs {
    /// Recipient's account name
    name: String,
    /// The message [default: standard input]
    text: Vec<String>,
    /// Print the message as sent, as JSON
    #[arg(long)]
    json: bool,
}

/// `peerdex inbox`.
#[derive(Debug, Args)]
pub struct InboxArgs {
    /// Only messages not read yet
    #[arg(long)]
    unread: bool,
    /// The conversation with this account (both directions)
    #[arg(long)]
    with: Option<String>,
    /// At most this many, the newest
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `peerdex read`.
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The message id (from `peerdex inbox`)
    id: u64,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `peerdex wish …`.
#[derive(Debug, Subcommand)]
pub enum WishCommand {
    /// Add a standing search: what matches now is shown once, later matches arrive as
    /// `wish_hit` events (`peerdex events`) the moment someone lists them
    Add(WishAddArgs),
    /// Your wishes, with how many matches each reported
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Remove a wish
    Rm {
        /// The wish id (from `peerdex wish list`)
        id: u64,
    },
}

/// `peerdex wish add`.
#[derive(Debug, Args)]
pub struct WishAddArgs {
    /// The query, as for `peerdex search` (words, "phrases", -exclusions)
    #[arg(required = true)]
    query: Vec<String>,
    /// Only files with this extension
    #[arg(long)]
    ext: Option<String>,
    /// Only this kind: audio, video, image, document, archive, other
    #[arg(long)]
    kind: Option<String>,
    /// Smallest size (e.g. 700M)
    #[arg(long, value_parser = super::search::parse_size)]
    min_size: Option<u64>,
    /// Largest size
    #[arg(long, value_parser = super::search::parse_size)]
    max_size: Option<u64>,
    /// Have your running agent download each new match into its download folder
    #[arg(long)]
    auto_download: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Runs `peerdex wish …`.
pub async fn wish(
    command: WishCommand,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    match command {
        WishCommand::Add(args) => {
            let query = args.query.join(" ");
            let created = client
                .add_wish(&peerdex_shared::social::WishRequest {
                    query: query.clone(),
                    ext: args.ext,
                    kind: args.kind,
                    min_size: args.min_size,
                    max_size: args.max_size,
                    auto_download: args.auto_download,
                })
                .await
                .with_context(|| format!("adding the wish {query:?}"))?;
            if args.json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&created)?))?;
            } else {
                let mut text = format!(
                    "wish #{} added; {} match(es) now{}\n",
                    created.wish.id,
                    created.total,
                    if created.total > 0 { ":" } else { "" }
                );
                for hit in &created.matches {
                    text.push_str(&format!(
                        "  {}\t{}\t{}\n",
                        hit.hash,
                        super::human_size(hit.size),
                        visible(&hit.name)
                    ));
                }
                text.push_str("new matches come as events: peerdex events\n");
                emit(&text)?;
            }
        }
        WishCommand::List { json } => {
            let wishes = client.wishes().await.context("listing wishes")?;
            emit_list(json, &wishes, "no wishes: peerdex wish add QUERY\n", |w| {
                format!(
                    "#{}\t{}\t{} match(es){}\n",
                    w.id,
                    visible(&w.query),
                    w.hits,
                    if w.auto_download {
                        ", auto-download"
                    } else {
                        ""
                    }
                )
            })?;
        }
        WishCommand::Rm { id } => {
            client
                .remove_wish(id)
                .await
                .with_context(|| format!("removing wish {id}"))?;
            emit(&format!("removed wish #{id}\n"))?;
        }
    }
    Ok(())
}

/// `peerdex ask`.
#[derive(Debug, Args)]
pub struct AskArgs {
    /// What you ask, in words
    #[arg(required_unless_present_any = ["cancel", "list"])]
    text: Vec<String>,
    /// Ask your contacts (the default)
    #[arg(long, conflicts_with_all = ["holders", "depth"])]
    contacts: bool,
    /// 2: ask your contacts and their contacts
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2), conflicts_with = "holders")]
    depth: Option<u8>,
    /// Ask every online person holding files that match this query
    #[arg(long)]
    holders: Option<String>,
    /// How long it stays open: 30m, 1h, 7d [default: 1d]
    #[arg(long = "for")]
    open_for: Option<String>,
    /// Close one of your requests instead
    #[arg(long, conflicts_with_all = ["text", "list"])]
    cancel: Option<u64>,
    /// List your requests instead (how many each reached, offers)
    #[arg(long)]
    list: bool,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// Runs `peerdex ask`.
pub async fn ask(
    args: AskArgs,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    if let Some(id) = args.cancel {
        client
            .close_request(id)
            .await
            .with_context(|| format!("closing request {id}"))?;
        emit(&format!("closed request #{id}\n"))?;
        return Ok(());
    }
    if args.list {
        let asks = client.requests().await.context("listing your requests")?;
        emit_list(args.json, &asks, "no requests yet\n", |a| {
            format!(
                "#{}\t{}\treached {}{}\t{} offer(s){}\n",
                a.id,
                visible(&a.text),
                a.reached,
                if a.capped { " (capped)" } else { "" },
                a.offers,
                if a.cancelled { ", closed" } else { "" }
            )
        })?;
        return Ok(());
    }
    let text = args.text.join(" ");
    let info = client
        .ask(&peerdex_shared::social::AskRequest {
            text: text.clone(),
            holders: args.holders,
            depth: args.depth,
            open_for: args.open_for,
        })
        .await
        .context("sending the request")?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&info)?))?;
    } else {
        emit(&format!(
            "request #{} reached {} {}{}; offers and answers come as events (peerdex events)\n",
            info.id,
            info.reached,
            if info.reached == 1 {
                "person"
            } else {
                "people"
            },
            if info.capped {
                " (the most one request may reach; make it narrower to reach the right ones)"
            } else {
                ""
            }
        ))?;
    }
    Ok(())
}

/// Runs `peerdex offer REQUEST HASH`.
pub async fn offer(
    request: u64,
    hash: peerdex_shared::FileHash,
    note: Option<String>,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    client
        .offer(request, &hash, note.as_deref())
        .await
        .with_context(|| format!("offering {hash} for request {request}"))?;
    emit(&format!("offered {hash} for request #{request}\n"))?;
    Ok(())
}

/// `peerdex room …`.
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Join a room (opening it, as its owner, if there is none); prints its last lines
    Join {
        /// The room
        room: String,
        /// A new room only its invited members see
        #[arg(long, conflicts_with = "group")]
        private: bool,
        /// A new room only this group's members see
        #[arg(long)]
        group: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Leave a room
    Leave {
        /// The room
        room: String,
    },
    /// Rooms you may see, with members and your role
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Say something in a room (the text from the arguments, or standard input)
    Say {
        /// The room
        room: String,
        /// The line
        text: Vec<String>,
    },
    /// A room's last lines
    Log {
        /// The room
        room: String,
        /// At most this many
        #[arg(long)]
        limit: Option<u32>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Invite someone into a private room (owner and operators)
    Invite {
        /// The room
        room: String,
        /// Their account name
        name: String,
    },
    /// Put someone out of a room (owner and operators)
    Kick {
        /// The room
        room: String,
        /// Their account name
        name: String,
    },
    /// Mute someone in a room (owner and operators)
    Mute {
        /// The room
        room: String,
        /// Their account name
        name: String,
        /// How long: 10m, 1h, 7d (default: until unmuted)
        #[arg(long = "for")]
        duration: Option<String>,
    },
    /// Lift a mute
    Unmute {
        /// The room
        room: String,
        /// Their account name
        name: String,
    },
    /// Make a member an operator (owner)
    Op {
        /// The room
        room: String,
        /// Their account name
        name: String,
    },
}

fn line_text(room: Option<&str>, line: &RoomLine) -> String {
    let body: Vec<String> = line.body.lines().map(visible).collect();
    match room {
        Some(room) => format!(
            "[{}] <{}> {}\n",
            visible(room),
            visible(&line.from),
            body.join(" / ")
        ),
        None => format!(
            "{}\t<{}> {}\n",
            ago_since(line.at),
            visible(&line.from),
            body.join(" / ")
        ),
    }
}

/// Runs `peerdex room …`.
pub async fn room(
    command: RoomCommand,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    match command {
        RoomCommand::Join {
            room,
            private,
            group,
            json,
        } => {
            let access = match (private, group) {
                (true, _) => Some("private".to_string()),
                (false, Some(group)) => Some(format!("group:{group}")),
                (false, None) => None,
            };
            let joined = client
                .join_room(&room, access.as_deref())
                .await
                .with_context(|| format!("joining {room}"))?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&joined)?))?;
            } else {
                let mut text = format!(
                    "joined {} ({}, {} member(s))\n",
                    visible(&joined.room.name),
                    joined.room.access,
                    joined.room.members
                );
                for line in &joined.history {
                    text.push_str(&line_text(None, line));
                }
                emit(&text)?;
            }
        }
        RoomCommand::Leave { room } => {
            client
                .leave_room(&room)
                .await
                .with_context(|| format!("leaving {room}"))?;
            emit(&format!("left {room}\n"))?;
        }
        RoomCommand::List { json } => {
            let rooms = client.rooms().await.context("listing rooms")?;
            emit_list(
                json,
                &rooms,
                "no rooms yet: peerdex room join NAME opens one\n",
                |r| {
                    format!(
                        "{}\t{}\t{} member(s){}\n",
                        visible(&r.name),
                        r.access,
                        r.members,
                        match r.role {
                            Some(RoomRole::Owner) => ", yours",
                            Some(RoomRole::Operator) => ", operator",
                            Some(RoomRole::Member) => ", joined",
                            None => "",
                        }
                    )
                },
            )?;
        }
        RoomCommand::Say { room, text } => {
            let body = words_or_stdin(&text, "line")?;
            client
                .say(&room, &body)
                .await
                .with_context(|| format!("saying it in {room}"))?;
        }
        RoomCommand::Log { room, limit, json } => {
            let lines = client
                .room_log(&room, limit)
                .await
                .with_context(|| format!("reading {room}"))?;
            emit_list(json, &lines, "", |l| line_text(None, l))?;
        }
        RoomCommand::Invite { room, name } => {
            client
                .moderate_room(&room, "invite", &name, None)
                .await
                .with_context(|| format!("inviting {name} into {room}"))?;
            emit(&format!("invited {name} into {room}\n"))?;
        }
        RoomCommand::Kick { room, name } => {
            client
                .moderate_room(&room, "kick", &name, None)
                .await
                .with_context(|| format!("kicking {name} out of {room}"))?;
            emit(&format!("{name} is out of {room}\n"))?;
        }
        RoomCommand::Mute {
            room,
            name,
            duration,
        } => {
            client
                .moderate_room(&room, "mute", &name, duration.as_deref())
                .await
                .with_context(|| format!("muting {name} in {room}"))?;
            emit(&format!("muted {name} in {room}\n"))?;
        }
        RoomCommand::Unmute { room, name } => {
            client
                .moderate_room(&room, "unmute", &name, None)
                .await
                .with_context(|| format!("unmuting {name} in {room}"))?;
            emit(&format!("unmuted {name} in {room}\n"))?;
        }
        RoomCommand::Op { room, name } => {
            client
                .moderate_room(&room, "op", &name, None)
                .await
                .with_context(|| format!("making {name} an operator of {room}"))?;
            emit(&format!("{name} is an operator of {room}\n"))?;
        }
    }
    Ok(())
}

/// `peerdex events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print one JSON object per line (NDJSON)
    #[arg(long)]
    json: bool,
    /// Start after this durable event id [default: after the last one printed here before]
    #[arg(long)]
    after: Option<u64>,
}

/// The client for social commands: `PEERDEX_API_KEY` on the given (or configured) server, else
/// the saved sign-in on its server.
fn client(state: &Path, file: &ConfigFile, flag: Option<String>) -> anyhow::Result<ServerClient> {
    if let Some(key) = api_key_from_env() {
        let server = resolve_server(flag, file, None);
        return Ok(ServerClient::new(&server)?.with_account_token(Some(key)));
    }
    let saved = SavedLogin::load(state)?
        .context("not signed in; run peerdex login NAME --password-stdin")?;
    if let Some(flag) = flag
        && flag.trim_end_matches('/') != saved.server.trim_end_matches('/')
    {
        bail!(
            "signed in to {}, not {flag}; sign in there first (or set PEERDEX_API_KEY)",
            saved.server
        );
    }
    Ok(ServerClient::new(&saved.server)?.with_account_token(Some(saved.token)))
}

/// The words given, or else standard input (up to 1 MiB, without the final newline).
fn words_or_stdin(words: &[String], what: &str) -> anyhow::Result<String> {
    if !words.is_empty() {
        return Ok(words.join(" "));
    }
    let mut text = String::new();
    std::io::stdin()
        .lock()
        .take(1 << 20)
        .read_to_string(&mut text)
        .with_context(|| format!("reading the {what} from standard input"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

/// Prints `items` as pretty JSON, `empty` when there are none, or one `line` each.
fn emit_list<T: serde::Serialize>(
    json: bool,
    items: &[T],
    empty: &str,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        emit(&format!("{}\n", serde_json::to_string_pretty(items)?))?;
    } else if items.is_empty() {
        emit(empty)?;
    } else {
        emit(&items.iter().map(line).collect::<String>())?;
    }
    Ok(())
}

/// How long ago `at` (Unix seconds) was, in words.
fn contact_line(contact: &Contact) -> String {
    let state = match contact.state {
        ContactState::Accepted if contact.online => "online".to_string(),
        ContactState::Accepted => match contact.last_seen {
            Some(at) => format!("offline, last seen {}", ago_since(at)),
            None => "offline, never seen".to_string(),
        },
        ContactState::Incoming => format!(
            "asks to be your contact: peerdex contact accept {}",
            contact.name
        ),
        ContactState::Outgoing => "asked, no answer yet".to_string(),
    };
    format!("{}\t{state}\n", visible(&contact.name))
}

/// Runs `peerdex contact …`.
pub async fn contact(
    command: ContactCommand,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    match command {
        ContactCommand::Add { name } => {
            let mutual = client
                .add_contact(&name)
                .await
                .with_context(|| format!("asking {name} to be your contact"))?;
            if mutual {
                emit(&format!("{name} and you are contacts\n"))?;
            } else {
                emit(&format!(
                    "asked {name}; they see it and can answer with peerdex contact accept\n"
                ))?;
            }
        }
        ContactCommand::Accept { name } => {
            client
                .answer_contact(&name, true)
                .await
                .with_context(|| format!("accepting {name}"))?;
            emit(&format!("{name} and you are contacts\n"))?;
        }
        ContactCommand::Decline { name } => {
            client
                .answer_contact(&name, false)
                .await
                .with_context(|| format!("declining {name}"))?;
            emit(&format!("declined {name}\n"))?;
        }
        ContactCommand::Remove { name } => {
            client
                .remove_contact(&name)
                .await
                .with_context(|| format!("removing {name}"))?;
            emit(&format!("{name} is no longer a contact\n"))?;
        }
        ContactCommand::List { json } => {
            let contacts = client.contacts().await.context("listing contacts")?;
            emit_list(
                json,
                &contacts.contacts,
                "no contacts yet: peerdex contact add NAME\n",
                contact_line,
            )?;
        }
    }
    Ok(())
}

/// Runs `peerdex block NAME` (`blocked`) or `peerdex unblock NAME`.
pub async fn block(
    name: String,
    blocked: bool,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    client
        .set_block(&name, blocked)
        .await
        .with_context(|| format!("{} {name}", if blocked { "blocking" } else { "unblocking" }))?;
    emit(&if blocked {
        format!("blocked {name}: no messages or contact requests from them\n")
    } else {
        format!("unblocked {name}\n")
    })?;
    Ok(())
}

/// Runs `peerdex msg NAME [TEXT…]`.
pub async fn msg(
    args: MsgArgs,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let body = words_or_stdin(&args.text, "message")?;
    let client = client(state, file, server.server)?;
    let sent = client
        .send_message(&args.name, &body)
        .await
        .with_context(|| format!("sending a message to {}", args.name))?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string(&sent)?))?;
    } else {
        let how = if sent.delivered_at.is_some() {
            "delivered"
        } else {
            "kept until they come online"
        };
        emit(&format!(
            "sent #{} to {} ({how})\n",
            sent.id,
            visible(&sent.to)
        ))?;
    }
    Ok(())
}

fn first_line(body: &str) -> String {
    let line = body.lines().next().unwrap_or("");
    let mut short: String = line.chars().take(60).collect();
    if short.len() < line.len() || body.lines().nth(1).is_some() {
        short.push('…');
    }
    visible(&short)
}

/// Runs `peerdex inbox`.
pub async fn inbox(
    args: InboxArgs,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    let messages = client
        .messages(args.unread, args.with.as_deref(), Some(args.limit))
        .await
        .context("listing messages")?;
    if args.json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&messages.messages)?
        ))?;
        return Ok(());
    }
    if messages.messages.is_empty() {
        emit(if args.unread {
            "no unread messages\n"
        } else {
            "no messages\n"
        })?;
        return Ok(());
    }
    let mut text = String::new();
    for m in &messages.messages {
        let unread = if m.read_at.is_none() && args.with.as_deref() != Some(m.from.as_str()) {
            " [unread]"
        } else {
            ""
        };
        text.push_str(&format!(
            "#{}\t{} → {}\t{}{unread}\t{}\n",
            m.id,
            visible(&m.from),
            visible(&m.to),
            ago_since(m.sent_at),
            first_line(&m.body)
        ));
    }
    text.push_str("read one with: peerdex read ID\n");
    emit(&text)?;
    Ok(())
}

/// Runs `peerdex read ID`: shows the message and marks it read.
pub async fn read(
    args: ReadArgs,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    let message: Message = client
        .read_message(args.id)
        .await
        .with_context(|| format!("reading message {}", args.id))?;
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&message)?))?;
    } else {
        let body: String = message
            .body
            .lines()
            .map(|l| format!("{}\n", visible(l)))
            .collect();
        emit(&format!(
            "#{} from {} to {}, {}\n\n{body}",
            message.id,
            visible(&message.from),
            visible(&message.to),
            ago_since(message.sent_at)
        ))?;
    }
    Ok(())
}

/// One event as a line for people.
fn describe(envelope: &EventEnvelope) -> String {
    match &envelope.event {
        Event::Presence {
            name, online: true, ..
        } => format!("{} is online", visible(name)),
        Event::Presence {
            name, last_seen, ..
        } => format!(
            "{} went offline{}",
            visible(name),
            last_seen.map_or(String::new(), |at| format!(
                " (last seen {})",
                ago_since(at)
            ))
        ),
        Event::ContactRequest { from } => format!(
            "{} asks to be your contact: peerdex contact accept {}",
            visible(from),
            visible(from)
        ),
        Event::ContactAccepted { name } => format!("{} and you are contacts", visible(name)),
        Event::ContactRemoved { name } => format!("{} is not a contact (any more)", visible(name)),
        Event::Message { message } => format!(
            "message #{} from {}: {}",
            message.id,
            visible(&message.from),
            first_line(&message.body)
        ),
        Event::Receipt { message, to, state } => format!(
            "message #{message} to {} was {}",
            visible(to),
            match state {
                ReceiptState::Delivered => "delivered",
                ReceiptState::Read => "read",
            }
        ),
        Event::WishHit {
            wish,
            query,
            hash,
            size,
            name,
            from,
            ..
        } => format!(
            "wish #{wish} ({}): {} ({}) from {}: peerdex get {}",
            visible(query),
            visible(name),
            super::human_size(*size),
            visible(from),
            hash
        ),
        Event::Request {
            request,
            from,
            text,
            ..
        } => format!(
            "request #{request} from {}: {} (answer: peerdex offer {request} HASH, or peerdex msg {})",
            visible(from),
            visible(text),
            visible(from)
        ),
        Event::Offer {
            request,
            from,
            hash,
            size,
            name,
            note,
        } => format!(
            "offer for request #{request} from {}: {} ({}){}: peerdex get {hash}",
            visible(from),
            visible(name),
            super::human_size(*size),
            note.as_deref()
                .map_or(String::new(), |n| format!(" \"{}\"", visible(n)))
        ),
        Event::Transfer {
            transfer,
            name,
            state,
            peer,
            position,
            ..
        } => {
            let place = match (peer, position) {
                (Some(peer), Some(n)) => format!(" (number {n} at {})", visible(peer)),
                (Some(peer), None) => format!(" (at {})", visible(peer)),
                _ => String::new(),
            };
            format!(
                "transfer {transfer} {}: {}{place}",
                visible(name),
                visible(state)
            )
        }
        Event::Download {
            name, ok, detail, ..
        } => {
            if *ok {
                format!(
                    "downloaded {} (a wish's match): {}",
                    visible(name),
                    visible(detail)
                )
            } else {
                format!(
                    "could not download {} (a wish's match): {}",
                    visible(name),
                    visible(detail)
                )
            }
        }
        Event::RequestClosed { request, from } => {
            format!("{} closed request #{request}", visible(from))
        }
        Event::Room {
            room,
            what,
            name,
            line,
        } => match line {
            Some(line) => line_text(Some(room), line).trim_end().to_string(),
            None => format!("[{}] {} {what}", visible(room), visible(name)),
        },
        Event::Moderation {
            action,
            reason,
            until,
        } => format!(
            "a moderator: {action}{}{}",
            until.map_or(String::new(), |u| format!(" until {u}")),
            if reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", visible(reason))
            }
        ),
    }
}

/// The cursor of `who` (server and account), if the file holds one for them: event ids are
/// the server's, so another account's or server's cursor would skip events.
fn load_cursor(state: &Path, who: &str) -> Option<u64> {
    let text = std::fs::read_to_string(state.join(EVENTS_CURSOR_FILE)).ok()?;
    let (owner, id) = text.trim().rsplit_once(' ')?;
    (owner == who).then(|| id.parse().ok()).flatten()
}

fn save_cursor(state: &Path, who: &str, id: u64) {
    let path = state.join(EVENTS_CURSOR_FILE);
    let temp = state.join(format!("{EVENTS_CURSOR_FILE}.tmp"));
    // Losing the cursor only replays events again: not worth failing the command for.
    if std::fs::write(&temp, format!("{who} {id}\n")).is_ok() {
        let _ = std::fs::rename(&temp, &path);
    }
}

/// Runs `peerdex events`: prints events as they come, reconnecting (from the last durable
/// event printed) when the stream drops, until interrupted.
pub async fn events(
    args: EventsArgs,
    server: SocialServer,
    state: &Path,
    file: &ConfigFile,
) -> anyhow::Result<()> {
    let client = client(state, file, server.server)?;
    // (An API key without the `read` scope cannot ask: its cursor is kept under "api-key".)
    let me = client
        .whoami()
        .await
        .map_or_else(|_| "api-key".to_string(), |a| a.name);
    let who = format!("{} {me}", client.base());
    let mut after = args.after.or_else(|| load_cursor(state, &who));
    let mut backoff = Duration::from_millis(500);
    loop {
        let response = match client.event_stream(after).await {
            Ok(response) => response,
            Err(e)
                if e.code() == Some(ErrorCode::Unauthorized)
                    || e.code() == Some(ErrorCode::Forbidden)
                    || e.code() == Some(ErrorCode::Banned) =>
            {
                return Err(e).context("opening the event stream");
            }
            Err(e) => {
                tracing::warn!(error = %e, "event stream unavailable; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let mut stream = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream broke off; reconnecting");
                    break;
                }
            };
            let Ok(envelope) = serde_json::from_str::<EventEnvelope>(&event.data) else {
                tracing::debug!(kind = %event.event, "skipping an event this version does not know");
                continue;
            };
            if args.json {
                emit(&format!("{}\n", serde_json::to_string(&envelope)?))?;
            } else {
                emit(&format!("{}\n", describe(&envelope)))?;
            }
            // Live events may come slightly out of id order: the cursor only moves forward.
            if let Some(id) = envelope.id
                && after.is_none_or(|a| id > a)
            {
                after = Some(id);
                save_cursor(state, &who, id);
            }
        }
        tokio::time::sleep(backoff).await;
    }
}
