//! Server configuration: every limit and interval in one place, loadable from TOML.
//!
//! Precedence is command-line flag > environment variable > config file > built-in default; the
//! first two are resolved by `cli`, this module owns the file format and the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;
use peerdex_shared::validate::PathLimits;
use serde::{Deserialize, Serialize};

/// Full server configuration. Every field has a default, so an empty file is valid.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory holding `peerdex.sqlite3` and `index/`.
    pub data: PathBuf,
    /// Proxies whose `X-Forwarded-For` is believed. Empty: the header is ignored.
    pub trusted_proxies: Vec<IpNet>,
    /// Size limits on file lists.
    pub limits: Limits,
    /// Heartbeats, offline detection and retention.
    pub presence: PresenceConfig,
    /// Search caps and concurrency.
    pub search: SearchConfig,
    /// Connect-back probing of peer addresses.
    pub probe: ProbeConfig,
    /// Indexing cadence.
    pub index: IndexConfig,
    /// HTTP connection handling.
    pub http: HttpConfig,
    /// Reverse connections and the relay for peers that accept no connections.
    pub relay: RelayConfig,
    /// Accounts, invites, guests and grants.
    pub accounts: AccountsConfig,
    /// Contacts, messages and event streams.
    pub social: SocialConfig,
    /// Downloaders' reports on their sources, and the quarantine of sources that lie.
    pub quarantine: QuarantineConfig,
    /// HTTPS terminated by the server, and credentials over plain HTTP.
    pub tls: TlsConfig,
    /// The Prometheus endpoint `/metrics`.
    pub metrics: MetricsConfig,
}

/// Who may read `/metrics` (PROTOCOL §13).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Bearer token that lets clients off loopback scrape. Without one, only loopback clients
    /// (after `trusted_proxies`) can, and others get 404.
    pub token: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            token: None,
        }
    }
}

/// HTTPS (PROTOCOL §12.1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. With `key`: the server speaks only HTTPS.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Take passwords and account tokens over plain HTTP from clients that are not on
    /// loopback (behind a proxy that terminates TLS without saying so in `X-Forwarded-Proto`,
    /// or on a trusted network). Off: such requests are refused.
    pub allow_plain_auth: bool,
}

/// How downloaders' reports quarantine sources (PROTOCOL §11.3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuarantineConfig {
    /// Distinct downloaders (accounts, else keys) that must report bad data from a source for
    /// a content before it is no longer offered for it.
    pub reporters: u32,
    /// Contents a source may be quarantined for before it is offered for none.
    pub contents_for_all: u32,
    /// Source outcomes one reporter may report per hour; more are ignored.
    pub reports_per_hour: u32,
    /// Reports are forgotten after this many days (quarantines stay until cleared).
    pub retention_days: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            reporters: 2,
            contents_for_all: 3,
            reports_per_hour: 600,
            retention_days: 90,
        }
    }
}

impl QuarantineConfig {
    /// The rules the database applies.
    pub fn rules(&self) -> crate::db::QuarantineRules {
        crate::db::QuarantineRules {
            reporters: self.reporters,
            contents_for_all: self.contents_for_all,
            reports_per_hour: self.reports_per_hour,
            retention_days: self.retention_days,
        }
    }
}

/// Contacts, private messages and the event stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocialConfig {
    /// Longest private message, bytes of UTF-8.
    pub max_message_bytes: usize,
    /// Messages one account may send per minute.
    pub messages_per_minute: u32,
    /// Messages the whole server accepts per minute.
    pub messages_per_minute_global: u32,
    /// Messages kept per conversation and direction (older ones are dropped).
    pub history_per_conversation: u32,
    /// Messages and durable events older than this are dropped, days.
    pub retention_days: u64,
    /// Contact requests one account may send per hour.
    pub contact_requests_per_hour: u32,
    /// Event streams open at once, server-wide.
    pub max_event_streams: usize,
    /// Event streams one account may have open at once.
    pub max_event_streams_per_account: usize,
    /// Seconds between keep-alive comments on an event stream.
    pub keepalive_secs: u64,
    /// Wishes one account may have.
    pub max_wishes_per_account: u32,
    /// A new wish matching more contents than this already is refused as too broad.
    pub max_wish_matches: usize,
    /// Lines kept per room, and replayed on join.
    pub room_history: u32,
    /// Lines one account may say per minute, all rooms together.
    pub room_lines_per_minute: u32,
    /// Requests (`ask`) one account may send per hour.
    pub requests_per_hour: u32,
    /// People one request reaches at most (the rest are not asked, and the asker is told).
    pub max_request_recipients: usize,
}

impl Default for SocialConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 4096,
            messages_per_minute: 30,
            messages_per_minute_global: 6000,
            history_per_conversation: 1000,
            retention_days: 365,
            contact_requests_per_hour: 60,
            max_event_streams: 10_000,
            max_event_streams_per_account: 8,
            keepalive_secs: 15,
            max_wishes_per_account: 100,
            max_wish_matches: 1000,
            room_history: 50,
            room_lines_per_minute: 20,
            requests_per_hour: 10,
            max_request_recipients: 200,
        }
    }
}

/// Who may join: `open` (anyone may create an account), `invite` (only with an invite code) or
/// `closed` (nobody; the operator's CLI still can).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone may create an account.
    Open,
    /// Only with a live invite code.
    Invite,
    /// No new accounts over the API.
    Closed,
}

/// Accounts and access.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Who may create an account.
    pub registration: Registration,
    /// Whether clients without an account may search, browse and download public content.
    pub guests: bool,
    /// Argon2id memory cost, KiB (OWASP: 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations (OWASP: 2).
    pub argon2_iterations: u32,
    /// Failed sign-ins allowed per account and per address per minute; then 429 with Retry-After.
    pub failed_logins_per_minute: u32,
    /// New accounts per client address per hour.
    pub accounts_per_ip_per_hour: u32,
    /// Devices (keys) one account may link.
    pub max_devices_per_account: u32,
    /// Live invites a member (not an admin) may have at once; 0: members cannot invite.
    pub invites_per_member: u32,
    /// How long a grant for non-public content is valid, seconds.
    pub grant_ttl_secs: u64,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            registration: Registration::Open,
            guests: true,
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            failed_logins_per_minute: 5,
            accounts_per_ip_per_hour: 10,
            max_devices_per_account: 8,
            invites_per_member: 0,
            grant_ttl_secs: 600,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7700)),
            data: PathBuf::from("peerdex-data"),
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
            presence: PresenceConfig::default(),
            search: SearchConfig::default(),
            probe: ProbeConfig::default(),
            index: IndexConfig::default(),
            http: HttpConfig::default(),
            relay: RelayConfig::default(),
            accounts: AccountsConfig::default(),
            social: SocialConfig::default(),
            quarantine: QuarantineConfig::default(),
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Helping firewalled peers: control channels, tickets, and the relay of last resort.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Forward bytes between two peers that cannot reach each other.
    pub enabled: bool,
    /// Relayed transfers at once, server-wide.
    pub max_sessions: usize,
    /// Relayed transfers at once per source peer and per downloader address.
    pub max_sessions_per_peer: usize,
    /// Bandwidth of one relayed transfer, bytes per second.
    pub bytes_per_sec: u64,
    /// Bandwidth of all relayed transfers together, bytes per second.
    pub total_bytes_per_sec: u64,
    /// How long a ticket (a request to a firewalled peer to connect) is valid, seconds.
    pub ticket_ttl_secs: u64,
    /// Keep-alive interval on control channels, seconds.
    pub control_ping_secs: u64,
    /// Reverse-connection requests per downloader address per minute.
    pub transfers_per_ip_per_minute: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_sessions: 16,
            max_sessions_per_peer: 2,
            bytes_per_sec: 2 * 1024 * 1024,
            total_bytes_per_sec: 8 * 1024 * 1024,
            ticket_ttl_secs: 15,
            control_ping_secs: 15,
            transfers_per_ip_per_minute: 60,
        }
    }
}

/// Limits on what a peer may upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most entries in one peer's list.
    pub max_entries_per_peer: u64,
    /// Most operations in one delta upload (bigger changes are sent as a full list).
    pub max_delta_ops: u64,
    /// Longest path, in bytes.
    pub max_path_bytes: usize,
    /// Most path components.
    pub max_depth: usize,
    /// Longest path component, in bytes.
    pub max_component_bytes: usize,
    /// Largest list body after decompression, in bytes.
    pub max_list_bytes: u64,
    /// Longest line (one entry) of a list body, in bytes.
    pub max_line_bytes: usize,
    /// Largest body of the other (JSON) endpoints, in bytes.
    pub max_json_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let paths = PathLimits::default();
        Self {
            max_entries_per_peer: 1_000_000,
            max_delta_ops: 100_000,
            max_path_bytes: paths.max_path_bytes,
            max_depth: paths.max_depth,
            max_component_bytes: paths.max_component_bytes,
            max_list_bytes: 1 << 30,
            max_line_bytes: 8 * 1024,
            max_json_bytes: 64 * 1024,
        }
    }
}

impl Limits {
    /// The path part of the limits, as the shared validator wants them.
    pub fn path_limits(&self) -> PathLimits {
        PathLimits {
            max_path_bytes: self.max_path_bytes,
            max_depth: self.max_depth,
            max_component_bytes: self.max_component_bytes,
        }
    }
}

/// Presence settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Interval peers are told to heartbeat at, seconds.
    pub heartbeat_interval_secs: u64,
    /// A peer silent this long is offline, seconds.
    pub offline_after_secs: u64,
    /// An offline peer's list is purged after this long, seconds.
    pub retention_secs: u64,
    /// How often offline lists are looked for and purged, seconds.
    pub purge_interval_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_secs: 30,
            offline_after_secs: 90,
            retention_secs: 7 * 24 * 3600,
            purge_interval_secs: 600,
        }
    }
}

/// Search settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Longest query text, bytes.
    pub max_query_bytes: usize,
    /// Most words and phrases in a query.
    pub max_query_terms: usize,
    /// Largest page size; larger `limit`s are clamped.
    pub max_limit: u64,
    /// Largest `offset`; deeper pages get 400.
    pub max_offset: u64,
    /// Most sources listed per result.
    pub max_sources: usize,
    /// Searches running at once; others wait their turn.
    pub concurrency: usize,
    /// Most distinct terms a prefix word may expand to.
    pub max_prefix_expansions: u32,
    /// Memory for holders of recently found contents (who holds what, under which path), MiB.
    pub holders_cache_mib: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            max_query_bytes: 512,
            max_query_terms: 16,
            max_limit: 100,
            max_offset: 1000,
            max_sources: 20,
            concurrency: 2 * std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_prefix_expansions: 256,
            holders_cache_mib: 64,
        }
    }
}

/// Connect-back probe settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// Give up on a probe after this long, milliseconds.
    pub timeout_ms: u64,
    /// Probes allowed per target IP per minute (burst of the same size).
    pub per_ip_per_minute: u32,
    /// Registrations (and challenges) allowed per client IP per minute.
    pub registrations_per_ip_per_minute: u32,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 5000,
            per_ip_per_minute: 20,
            registrations_per_ip_per_minute: 60,
        }
    }
}

/// Index settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Longest wait between a change and its tantivy commit, milliseconds.
    pub commit_interval_ms: u64,
    /// Memory budget of the tantivy writer, bytes.
    pub writer_memory_bytes: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            commit_interval_ms: 500,
            writer_memory_bytes: 64 << 20,
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Time allowed to send the request headers, seconds.
    pub header_read_timeout_secs: u64,
    /// Longest pause while reading a list body, seconds.
    pub body_idle_timeout_secs: u64,
    /// Time allowed for a non-upload request, seconds.
    pub request_timeout_secs: u64,
    /// Most connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// On shutdown, how long in-flight requests get to finish, seconds.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_idle_timeout_secs: 30,
            request_timeout_secs: 30,
            max_connections: 4096,
            shutdown_grace_secs: 20,
        }
    }
}

/// Seconds as a `Duration`.
pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

impl Config {
    /// Reads a TOML config file.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Refuses settings that cannot work, with the name of the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        let checks: [(bool, &str); 22] = [
            (
                self.metrics
                    .token
                    .as_ref()
                    .is_none_or(|t| t.trim().len() >= 16),
                "metrics.token must be at least 16 characters (or left out: loopback only)",
            ),
            (
                self.tls.cert.is_some() == self.tls.key.is_some(),
                "tls.cert and tls.key go together: set both (HTTPS) or neither",
            ),
            (
                self.social.requests_per_hour > 0 && self.social.max_request_recipients > 0,
                "social.requests_per_hour and social.max_request_recipients must be > 0",
            ),
            (
                self.social.room_history > 0 && self.social.room_lines_per_minute > 0,
                "social.room_history and social.room_lines_per_minute must be > 0",
            ),
            (
                self.social.max_wishes_per_account > 0
                    && (1..=100_000).contains(&self.social.max_wish_matches),
                "social.max_wishes_per_account must be > 0, social.max_wish_matches 1..=100000",
            ),
            (
                self.social.max_message_bytes > 0 && self.social.history_per_conversation > 0,
                "social.max_message_bytes and social.history_per_conversation must be > 0",
            ),
            (
                self.social.messages_per_minute > 0
                    && self.social.messages_per_minute_global > 0
                    && self.social.contact_requests_per_hour > 0,
                "social.messages_per_minute, messages_per_minute_global and \
                 contact_requests_per_hour must be > 0",
            ),
            (
                self.social.max_event_streams > 0 && self.social.max_event_streams_per_account > 0,
                "social.max_event_streams and social.max_event_streams_per_account must be > 0",
            ),
            (
                self.social.keepalive_secs > 0 && self.social.retention_days > 0,
                "social.keepalive_secs and social.retention_days must be > 0",
            ),
            (
                self.accounts.argon2_memory_kib >= 8 && self.accounts.argon2_iterations >= 1,
                "accounts.argon2_memory_kib must be >= 8 and accounts.argon2_iterations >= 1",
            ),
            (
                self.accounts.grant_ttl_secs > 0,
                "accounts.grant_ttl_secs must be > 0",
            ),
            (
                self.accounts.max_devices_per_account > 0,
                "accounts.max_devices_per_account must be > 0",
            ),
            (
                self.limits.max_entries_per_peer > 0,
                "limits.max_entries_per_peer must be > 0",
            ),
            (
                self.limits.max_line_bytes >= 256,
                "limits.max_line_bytes must be >= 256",
            ),
            (
                self.limits.max_path_bytes > 0,
                "limits.max_path_bytes must be > 0",
            ),
            (
                self.presence.heartbeat_interval_secs > 0,
                "presence.heartbeat_interval_secs must be > 0",
            ),
            (
                self.presence.offline_after_secs > self.presence.heartbeat_interval_secs,
                "presence.offline_after_secs must exceed heartbeat_interval_secs",
            ),
            (
                self.search.concurrency > 0,
                "search.concurrency must be > 0",
            ),
            (self.search.max_limit > 0, "search.max_limit must be > 0"),
            (
                self.index.writer_memory_bytes >= 15_000_000,
                "index.writer_memory_bytes must be >= 15000000",
            ),
            (
                self.relay.ticket_ttl_secs > 0,
                "relay.ticket_ttl_secs must be > 0",
            ),
            (
                self.relay.control_ping_secs > 0 && self.relay.control_ping_secs < 60,
                "relay.control_ping_secs must be between 1 and 59 (agents give up after 60 s of silence)",
            ),
        ];
        for (ok, message) in checks {
            anyhow::ensure!(ok, "invalid configuration: {message}");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_file_keeps_defaults() {
        let config: Config =
            toml::from_str("listen = \"127.0.0.1:0\"\n[limits]\nmax_entries_per_peer = 10\n")
                .unwrap();
        assert_eq!(config.limits.max_entries_per_peer, 10);
        assert_eq!(config.limits.max_depth, 32);
        assert_eq!(config.presence.offline_after_secs, 90);
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<Config>("lisen = \"x\"").is_err());
    }
}
