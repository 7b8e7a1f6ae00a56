//! The social layer's wire types (PROTOCOL §10): contacts, private messages, and the events of
//! `GET /api/v1/events`.
//!
//! An account is the social identity: contacts, messages and events name accounts, never peers.

use serde::{Deserialize, Serialize};

/// Where a contact stands, seen from the account asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ContactState {
    /// Both accepted: mutual contacts.
    Accepted,
    /// They asked; you have not answered.
    Incoming,
    /// You asked; they have not answered.
    Outgoing,
}

/// One entry of `GET /api/v1/contacts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contact {
    /// Their account name.
    pub name: String,
    /// Where the contact stands.
    pub state: ContactState,
    /// Whether one of their devices is online (accepted contacts only; false otherwise).
    pub online: bool,
    /// Unix time they were last seen online (accepted contacts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// `GET /api/v1/contacts` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContactsResponse {
    /// Accepted contacts and open requests both ways, by name.
    pub contacts: Vec<Contact>,
}

/// `POST /api/v1/messages` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendMessageRequest {
    /// The recipient's account name.
    pub to: String,
    /// The text (UTF-8, at most `social.max_message_bytes`).
    pub body: String,
}

/// A private message, as its sender and recipient see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Message {
    /// Id, increasing in the order messages were sent.
    pub id: u64,
    /// Sender's account name.
    pub from: String,
    /// Recipient's account name.
    pub to: String,
    /// The text.
    pub body: String,
    /// Unix time the server took it.
    pub sent_at: u64,
    /// Unix time it reached one of the recipient's clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
    /// Unix time the recipient read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<u64>,
}

/// `GET /api/v1/messages` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessagesResponse {
    /// Messages, oldest first.
    pub messages: Vec<Message>,
}

/// What a receipt says happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// It reached one of the recipient's clients.
    Delivered,
    /// The recipient read it.
    Read,
}

/// `POST /api/v1/wishes` body: a standing search (the filters of `GET /api/v1/search`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WishRequest {
    /// The query, as for search.
    pub query: String,
    /// Only this extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
    /// Only this kind (`audio`, `video`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// At least this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// At most this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Have the wisher's running agent download each new match.
    #[serde(default)]
    pub auto_download: bool,
}

/// A wish as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Wish {
    /// Id.
    pub id: u64,
    /// The query.
    pub query: String,
    /// Filters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
    /// Kind filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Smallest size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// Largest size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Whether the wisher's agent downloads new matches.
    pub auto_download: bool,
    /// Unix time it was made.
    pub created_at: u64,
    /// Matches it has reported (the starting ones included).
    pub hits: u64,
}

/// `POST /api/v1/wishes` response: the wish, and what matches it now (reported once: only
/// later matches come as `wish_hit` events).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WishCreated {
    /// The new wish.
    pub wish: Wish,
    /// The best current matches, as search returns them.
    pub matches: Vec<crate::api::SearchHit>,
    /// How many contents match now (all are taken as already seen).
    pub total: u64,
}

/// A member's role in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RoomRole {
    /// Made the room; cannot be kicked or muted.
    Owner,
    /// May invite, kick and mute.
    Operator,
    /// Says and reads.
    Member,
}

/// A room as `GET /api/v1/rooms` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Room {
    /// Its name.
    pub name: String,
    /// `public`, `private` or `group:NAME`.
    pub access: String,
    /// How many members it has.
    pub members: u64,
    /// Your role, if you are in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoomRole>,
}

/// One line said in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomLine {
    /// Id, increasing in the order lines were said.
    pub id: u64,
    /// Who said it.
    pub from: String,
    /// What.
    pub body: String,
    /// Unix time.
    pub at: u64,
}

/// `POST /api/v1/rooms/{room}/join` response: the room and its last lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JoinedRoom {
    /// The room.
    pub room: Room,
    /// Its last lines (`social.room_history`), oldest first.
    pub history: Vec<RoomLine>,
}

/// `POST /api/v1/requests` body: a question or request for what you are looking for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AskRequest {
    /// What you ask, in words.
    pub text: String,
    /// Who: every online person holding files that match this query (only files you could
    /// find count). Without it: your contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<String>,
    /// With contacts: 1 (your contacts, the default) or 2 (and their contacts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u8>,
    /// How long it stays open: `30m`, `1h`, `7d` (default 1 day).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub open_for: Option<String>,
}

/// A request as its asker sees it (`POST` and `GET /api/v1/requests`). Whom it reached is not
/// said: only how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AskInfo {
    /// Id.
    pub id: u64,
    /// The text.
    pub text: String,
    /// How many people it reached.
    pub reached: u64,
    /// Whether more matched than `social.max_request_recipients` (the others were not asked).
    #[serde(default)]
    pub capped: bool,
    /// Offers received.
    pub offers: u64,
    /// Unix time it closes.
    pub expires_at: u64,
    /// Whether the asker closed it.
    #[serde(default)]
    pub cancelled: bool,
}

/// `POST /api/v1/requests/{id}/offers` body: an answer with a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OfferRequest {
    /// A content you share.
    pub hash: crate::FileHash,
    /// A word to go with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What happened, in an [`EventEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// An accepted contact came online or went offline (live only, never replayed).
    Presence {
        /// Their account name.
        name: String,
        /// Whether they are online now.
        online: bool,
        /// Unix time they were last seen online.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<u64>,
    },
    /// Someone asks to be your contact.
    ContactRequest {
        /// Their account name.
        from: String,
    },
    /// A contact request was accepted (by them, or by you from another client).
    ContactAccepted {
        /// The other account's name.
        name: String,
    },
    /// A contact, or a request to or from them, is gone (removed or declined).
    ContactRemoved {
        /// The other account's name.
        name: String,
    },
    /// A private message for you.
    Message {
        /// The message.
        message: Message,
    },
    /// What happened to a message you sent (when: the envelope's `at`).
    Receipt {
        /// The message id.
        message: u64,
        /// Its recipient.
        to: String,
        /// Delivered or read.
        state: ReceiptState,
    },
    /// A new match of one of your wishes: a content you have not been told about before, just
    /// listed by someone (PROTOCOL §10.5).
    WishHit {
        /// The wish's id.
        wish: u64,
        /// The wish's query, as written.
        query: String,
        /// The content.
        hash: crate::FileHash,
        /// Its size.
        size: u64,
        /// The file name of the copy that matched.
        name: String,
        /// Its share and folder.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        folder: String,
        /// Nickname of the peer that listed it.
        from: String,
        /// Whether the wish asked for it to be downloaded by the wisher's agent.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        auto_download: bool,
    },
    /// Someone asks you (as a contact, a contact's contact, or a holder of matching files).
    Request {
        /// The request's id (answer with `peerdex offer ID HASH`, or a message).
        request: u64,
        /// Who asks.
        from: String,
        /// What.
        text: String,
        /// Unix time it closes.
        expires_at: u64,
    },
    /// An answer to your request: a file someone offers.
    Offer {
        /// Your request.
        request: u64,
        /// Who offers.
        from: String,
        /// The content (`peerdex get HASH`).
        hash: crate::FileHash,
        /// Its size.
        size: u64,
        /// Its name on their side.
        name: String,
        /// Their note.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// A request you were asked was closed by its asker.
    RequestClosed {
        /// The request.
        request: u64,
        /// Who asked.
        from: String,
    },
    /// Your agent downloaded a wish's match (or could not), as the wish asked
    /// (`auto_download`); reported by the agent.
    Download {
        /// The wish.
        wish: u64,
        /// The content.
        hash: crate::FileHash,
        /// Its name.
        name: String,
        /// Whether it is complete and verified.
        ok: bool,
        /// Where it is, or why it failed.
        detail: String,
    },
    /// One of your agent's downloads changed state or moved in a source's upload queue (live
    /// only; reported by the agent, PROTOCOL §11.2).
    Transfer {
        /// The transfer's id in the agent's list (`peerdex transfers`).
        transfer: u64,
        /// The content.
        hash: crate::FileHash,
        /// The file name, once known.
        name: String,
        /// `queued`, `connecting`, `verifying`, `queued_remotely`, `downloading`, `waiting`,
        /// `paused`, `done`, `failed` or `cancelled`.
        state: String,
        /// For `queued_remotely`: the source whose queue it waits in.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer: Option<String>,
        /// For `queued_remotely`: its place there (1 = next).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        position: Option<u64>,
    },
    /// Something happened in a room you are in (live only: `room log` has the history).
    Room {
        /// The room.
        room: String,
        /// `line`, `join`, `leave`, `kick`, `mute`, `unmute`, `invite`, `op`.
        what: String,
        /// Who it is about (the speaker, the one who joined, was kicked…).
        name: String,
        /// The line, for `line`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<RoomLine>,
    },
    /// A moderator acted on your account (mute, ban).
    Moderation {
        /// What: `mute`, `unmute`, `ban`.
        action: String,
        /// Why, as the moderator gave it.
        reason: String,
        /// Unix time it ends (none: until lifted).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<u64>,
    },
}

impl Event {
    /// The SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Presence { .. } => "presence",
            Event::ContactRequest { .. } => "contact_request",
            Event::ContactAccepted { .. } => "contact_accepted",
            Event::ContactRemoved { .. } => "contact_removed",
            Event::Message { .. } => "message",
            Event::Receipt { .. } => "receipt",
            Event::WishHit { .. } => "wish_hit",
            Event::Room { .. } => "room",
            Event::Download { .. } => "download",
            Event::Transfer { .. } => "transfer",
            Event::Request { .. } => "request",
            Event::Offer { .. } => "offer",
            Event::RequestClosed { .. } => "request_closed",
            Event::Moderation { .. } => "moderation",
        }
    }

    /// Whether the event is kept and replayed after `Last-Event-ID` (everything but presence,
    /// which only matters now, and room events, whose history is the room's log).
    pub fn is_durable(&self) -> bool {
        !matches!(
            self,
            Event::Presence { .. } | Event::Room { .. } | Event::Transfer { .. }
        )
    }
}

/// One event of the stream: the SSE `data:` line, as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventEnvelope {
    /// Durable events' id (also the SSE `id:`), increasing per account; none for live-only ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Unix time the server made it.
    pub at: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_flat_json_with_a_type() {
        let envelope = EventEnvelope {
            id: Some(7),
            at: 100,
            event: Event::Message {
                message: Message {
                    id: 3,
                    from: "ann".into(),
                    to: "bob".into(),
                    body: "hi".into(),
                    sent_at: 99,
                    delivered_at: None,
                    read_at: None,
                },
            },
        };
        let json = serde_json::to_value(&envelope).unwrap_or_default();
        assert_eq!(json["type"], "message");
        assert_eq!(json["id"], 7);
        assert_eq!(json["message"]["from"], "ann");
        let back: EventEnvelope = serde_json::from_value(json).unwrap_or_else(|_| EventEnvelope {
            id: None,
            at: 0,
            event: Event::ContactRemoved { name: "x".into() },
        });
        assert_eq!(back, envelope);
        assert!(
            !Event::Presence {
                name: "a".into(),
                online: true,
                last_seen: None
            }
            .is_durable()
        );
    }
}
