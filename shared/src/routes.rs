//! The index server's routes (PROTOCOL §3, §8), written once: the server's router declares these
//! patterns, and clients fill in their one `{…}` placeholder with [`fill`].

use std::fmt::Display;

/// Liveness.
pub const HEALTHZ: &str = "/healthz";
/// Prometheus metrics (PROTOCOL §13).
pub const METRICS: &str = "/metrics";
/// A nonce for registration.
pub const CHALLENGE: &str = "/api/v1/challenge";
/// Registration.
pub const REGISTER: &str = "/api/v1/register";
/// A peer's heartbeat.
pub const HEARTBEAT: &str = "/api/v1/peers/{peer}/heartbeat";
/// A peer's session (logout).
pub const SESSION: &str = "/api/v1/peers/{peer}/session";
/// A peer's whole list (upload, delete).
pub const LIST: &str = "/api/v1/peers/{peer}/list";
/// A downloader's report of how the sources of one download did (PROTOCOL §11.3).
pub const REPORTS: &str = "/api/v1/peers/{peer}/reports";
/// The verified pieces of the downloads a peer serves while it downloads them (`PUT`,
/// PROTOCOL §11.4).
pub const PARTIALS: &str = "/api/v1/peers/{peer}/partials";
/// A delta of a peer's list.
pub const LIST_DELTA: &str = "/api/v1/peers/{peer}/list/delta";
/// A peer's control channel.
pub const CONTROL: &str = "/api/v1/peers/{peer}/control";
/// Keyword search.
pub const SEARCH: &str = "/api/v1/search";
/// The sources of one content.
pub const SOURCES: &str = "/api/v1/contents/{hash}/sources";
/// A peer's files, by nickname.
pub const BROWSE: &str = "/api/v1/peers/by-nick/{nick}/files";
/// `GET`: one folder of a peer's share, its subfolders and files (PROTOCOL §3.12a).
pub const BROWSE_FOLDERS: &str = "/api/v1/peers/by-nick/{nick}/folders";
/// `GET`: a folder identity, its files and who holds them (PROTOCOL §3.12b).
pub const FOLDER: &str = "/api/v1/folders/{id}";
/// Server-wide counts.
pub const STATS: &str = "/api/v1/stats";
/// A reverse-connection request.
pub const TRANSFERS: &str = "/api/v1/transfers";
/// The downloader's end of a relay session.
pub const RELAY: &str = "/api/v1/relay";
/// The source's end of relay session `{id}`.
pub const RELAY_ACCEPT: &str = "/api/v1/relay/{id}/accept";
/// Account creation.
pub const ACCOUNTS: &str = "/api/v1/accounts";
/// Sign in (`POST`) and out (`DELETE`, revokes the bearer token).
pub const LOGIN: &str = "/api/v1/login";
/// The signed-in account.
pub const WHOAMI: &str = "/api/v1/whoami";
/// API keys for scripts (`POST`, with a sign-in).
pub const API_KEYS: &str = "/api/v1/apikeys";
/// Invites (admins; members within their quota).
pub const INVITES: &str = "/api/v1/invites";
/// Admin: every account.
pub const ADMIN_ACCOUNTS: &str = "/api/v1/admin/accounts";
/// Admin: one account (`POST` a change of role or state).
pub const ADMIN_ACCOUNT: &str = "/api/v1/admin/accounts/{name}";
/// Admin: groups (`GET` all, `POST` create).
pub const ADMIN_GROUPS: &str = "/api/v1/admin/groups";
/// Admin: group membership (`PUT` add, `DELETE` remove), `{group}/{name}`.
pub const ADMIN_GROUP_MEMBER: &str = "/api/v1/admin/groups/{group}/members/{name}";
/// Admin: the audit log.
pub const ADMIN_AUDIT: &str = "/api/v1/admin/audit";
/// Moderation: bans in force (`GET`), a new ban (`POST`).
pub const ADMIN_BANS: &str = "/api/v1/admin/bans";
/// Moderation: lift ban `{id}` (`DELETE`).
pub const ADMIN_BAN: &str = "/api/v1/admin/bans/{id}";
/// Quarantined sources (admins): `GET` lists them with the reasons.
pub const ADMIN_QUARANTINE: &str = "/api/v1/admin/quarantine";
/// One quarantined source (admins): `DELETE` clears it.
pub const ADMIN_QUARANTINE_PEER: &str = "/api/v1/admin/quarantine/{peer}";
/// Moderation: take a content down (`POST`).
pub const ADMIN_TAKEDOWNS: &str = "/api/v1/admin/takedowns";
/// Live events of the signed-in account (server-sent events).
pub const EVENTS: &str = "/api/v1/events";
/// Contacts and open contact requests (`GET`).
pub const CONTACTS: &str = "/api/v1/contacts";
/// One contact: `PUT` asks (or accepts their request), `DELETE` removes or withdraws.
pub const CONTACT: &str = "/api/v1/contacts/{name}";
/// Accept a contact request (`POST`).
pub const CONTACT_ACCEPT: &str = "/api/v1/contacts/{name}/accept";
/// Decline a contact request (`POST`).
pub const CONTACT_DECLINE: &str = "/api/v1/contacts/{name}/decline";
/// Blocked accounts (`GET`).
pub const BLOCKS: &str = "/api/v1/blocks";
/// Block (`PUT`) or unblock (`DELETE`) an account.
pub const BLOCK: &str = "/api/v1/blocks/{name}";
/// Private messages: `POST` sends, `GET` lists.
pub const MESSAGES: &str = "/api/v1/messages";
/// Mark message `{id}` read (`POST`).
pub const MESSAGE_READ: &str = "/api/v1/messages/{id}/read";
/// Wishes: `POST` adds one, `GET` lists them.
pub const WISHES: &str = "/api/v1/wishes";
/// Wish `{id}` (`DELETE` removes it).
pub const WISH: &str = "/api/v1/wishes/{id}";
/// Rooms you may see (`GET`).
pub const ROOMS: &str = "/api/v1/rooms";
/// Join room `{room}`, creating it if there is none (`POST`).
pub const ROOM_JOIN: &str = "/api/v1/rooms/{room}/join";
/// Leave room `{room}` (`POST`).
pub const ROOM_LEAVE: &str = "/api/v1/rooms/{room}/leave";
/// Room `{room}`'s lines: `POST` says one, `GET` the last ones.
pub const ROOM_LINES: &str = "/api/v1/rooms/{room}/lines";
/// An operator's action in room `{room}` (`POST` `{"action", "name", "duration"?}`).
pub const ROOM_MODERATE: &str = "/api/v1/rooms/{room}/moderate";
/// Requests ("ask"): `POST` asks, `GET` lists yours.
pub const REQUESTS: &str = "/api/v1/requests";
/// Your request `{id}` (`DELETE` closes it).
pub const REQUEST: &str = "/api/v1/requests/{id}";
/// Offers for request `{id}` (`POST` offers a file).
pub const REQUEST_OFFERS: &str = "/api/v1/requests/{id}/offers";

/// `pattern` with its `{…}` placeholder replaced by `value`.
pub fn fill(pattern: &str, value: impl Display) -> String {
    match (pattern.find('{'), pattern.find('}')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{value}{}", &pattern[..open], &pattern[close + 1..])
        }
        _ => pattern.to_owned(),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header value (how clients send session,
/// account, API-key and local web client tokens alike).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    authorization.strip_prefix("Bearer ").map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled() {
        assert_eq!(fill(HEARTBEAT, "ab12"), "/api/v1/peers/ab12/heartbeat");
        assert_eq!(fill(RELAY_ACCEPT, 7), "/api/v1/relay/7/accept");
        assert_eq!(fill(SEARCH, "x"), SEARCH);
        for pattern in [
            HEARTBEAT,
            SESSION,
            LIST,
            LIST_DELTA,
            CONTROL,
            SOURCES,
            BROWSE,
            RELAY_ACCEPT,
        ] {
            assert_eq!(pattern.matches('{').count(), 1, "{pattern}");
        }
    }
}
