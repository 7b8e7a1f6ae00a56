//! The agent's link to the index server, which the sync loop and the control channel share: the
//! session the sync loop opens (and the channel listens with), the status `peerdex status` shows,
//! the prod that makes the sync loop check on the server, and one backoff for both loops' retries.
//! `sync` and `channel` depend on this module, never on each other.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use peerdex_shared::PeerId;
use peerdex_shared::api::{Reachability, RegisterResponse};
use tokio::sync::{Notify, watch};

/// What the sync loop learned at registration, needed to open the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Our peer id.
    pub peer: PeerId,
    /// Bearer token.
    pub token: String,
    /// The server's key, which signs tickets.
    pub server_key: Option<PeerId>,
}

/// The connection to the index server, as `peerdex status` shows it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LinkStatus {
    /// Server URL.
    pub url: String,
    /// Registered and heartbeating.
    pub online: bool,
    /// The last error talking to the server, if the last attempt failed.
    pub last_error: Option<String>,
    /// Whether the server could connect back to our file server.
    pub reachability: Option<Reachability>,
    /// Address the server advertises for us.
    pub advertised_addr: Option<String>,
    /// List version the server holds.
    pub list_version: Option<u64>,
    /// Full list uploads since start.
    pub full_uploads: u64,
    /// Delta uploads since start.
    pub delta_uploads: u64,
    /// Entries sent since start.
    pub entries_sent: u64,
    /// Unix time of the last successful sync.
    pub last_sync: Option<u64>,
    /// The control channel (how the server reaches us for reverse connections and relays) is
    /// open.
    pub control_channel: bool,
}

/// The link: status, current session, and the prod to check the server.
pub struct Link {
    status: Mutex<LinkStatus>,
    sessions: watch::Sender<Option<Session>>,
    check: Notify,
}

impl Link {
    /// A link to the server at `url`, not yet registered.
    pub fn new(url: &str) -> Link {
        Link {
            status: Mutex::new(LinkStatus {
                url: url.to_owned(),
                ..LinkStatus::default()
            }),
            sessions: watch::channel(None).0,
            check: Notify::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut LinkStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The status now.
    pub fn snapshot(&self) -> LinkStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registered: online with a new session, which the control channel picks up.
    pub fn registered(&self, answer: &RegisterResponse, session: Session) {
        self.sessions.send_replace(Some(session));
        self.update(|l| {
            l.online = true;
            l.last_error = None;
            l.reachability = Some(answer.reachability);
            l.advertised_addr = answer.advertised_addr.clone();
        });
    }

    /// The server could not be reached or refused us.
    pub fn went_offline(&self, error: String) {
        self.update(|l| {
            l.online = false;
            l.last_error = Some(error);
        });
    }

    /// Logged out on purpose: no session, offline, no error.
    pub fn logged_out(&self) {
        self.sessions.send_replace(None);
        self.update(|l| l.online = false);
    }

    /// The server's verdict on our address.
    pub fn reachability(&self, reachability: Reachability) {
        self.update(|l| l.reachability = Some(reachability));
    }

    /// A full list of `entries` entries was accepted as `version`.
    pub fn uploaded_full(&self, entries: u64, version: u64) {
        self.update(|l| {
            l.full_uploads += 1;
            l.entries_sent += entries;
            l.list_version = Some(version);
            l.last_sync = Some(unix_now());
        });
    }

    /// A delta of `ops` operations was accepted as `version`.
    pub fn uploaded_delta(&self, ops: u64, version: u64) {
        self.update(|l| {
            l.delta_uploads += 1;
            l.entries_sent += ops;
            l.list_version = Some(version);
            l.last_sync = Some(unix_now());
        });
    }

    /// The server holds `version` of our list (nothing needed sending).
    pub fn in_sync(&self, version: u64) {
        self.update(|l| l.list_version = Some(version));
    }

    /// The control channel opened or closed.
    pub fn control_channel(&self, open: bool) {
        self.update(|l| l.control_channel = open);
    }

    /// Sessions as the sync loop publishes them (`None` after logout).
    pub fn sessions(&self) -> watch::Receiver<Option<Session>> {
        self.sessions.subscribe()
    }

    /// Asks the sync loop to check on the server now (the control channel dropped, so the server
    /// may be gone): `peerdex status` must not call a stopped server online until the next
    /// heartbeat.
    pub fn check_server(&self) {
        self.check.notify_one();
    }

    /// Resolves when [`Link::check_server`] was called.
    pub async fn check_requested(&self) {
        self.check.notified().await;
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Exponential backoff with jitter, 1 s to 60 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    /// Starts at a second.
    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// Back to a second (after a success).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The next delay: the current one ±25 %, then doubled for the time after.
    pub fn step(&mut self) -> Duration {
        let mut byte = [0u8; 1];
        let _ = getrandom::fill(&mut byte);
        let jitter = 0.75 + f64::from(byte[0]) / 255.0 * 0.5;
        let delay = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}
