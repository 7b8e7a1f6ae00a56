//! The agent's control channel: one long-lived request to the index server
//! (`GET /api/v1/peers/{id}/control`) over which the server sends pings and tickets. A ticket asks
//! the agent to open a connection for one downloader: dial the downloader's verified address
//! (reverse connection) or connect to the server's relay, then serve the ticket's content there.
//!
//! The agent never dials an address that did not come in a ticket signed by the server's key
//! (learned at registration), addressed to this peer and not expired; dials per destination are
//! rate-limited, so the server cannot be used to point peers at a victim either.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use peerdex_shared::api::{ControlMessage, ErrorCode, Ticket, TicketKind};
use peerdex_shared::identity::ticket_message;
use peerdex_shared::peer::REVERSE_PREAMBLE;
use peerdex_shared::routes::{self, fill};
use peerdex_shared::{PeerId, PeerSignature};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::link::{Backoff, Link, Session, unix_now};
use super::serve::FileServer;
use peerdex_client::ServerClient;
use peerdex_client::server_api::ApiError;

/// Dials (or relay connections) allowed per destination per minute.
const DIALS_PER_MINUTE: usize = 10;

/// Longest line accepted on the control channel.
const MAX_LINE: usize = 64 * 1024;

/// Latest expiry accepted on a ticket, from now (longer ones are not the server's doing).
const MAX_TICKET_LIFE: u64 = 600;

/// Clock difference tolerated between the server and this agent, seconds.
const CLOCK_SKEW: u64 = 60;

/// Connections opened on tickets at once.
const MAX_TICKET_CONNECTIONS: usize = 16;

/// Ticket ids remembered so that none is used twice.
const SEEN_TICKETS: usize = 4096;

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The server gave no key at registration.
    #[error("the server has no ticket key")]
    NoServerKey,
    /// Not signed by the server's key (forged or altered).
    #[error("the ticket's signature is not the server's")]
    BadSignature,
    /// Addressed to another peer.
    #[error("the ticket is for another peer")]
    NotForUs,
    /// Past its expiry.
    #[error("the ticket has expired")]
    Expired,
    /// Valid for implausibly long.
    #[error("the ticket's expiry is too far ahead")]
    TooLong,
    /// A reverse ticket without a usable address.
    #[error("the ticket has no usable address")]
    BadAddress,
    /// Too many dials to this destination lately.
    #[error("too many connections to {0} in the last minute")]
    RateLimited(String),
    /// This ticket was already used.
    #[error("the ticket was already used")]
    Replayed,
}

/// Checks that `ticket` came from the server (its signature), is for `me`, and is current.
/// Returns the address to dial for reverse tickets.
pub fn check_ticket(
    ticket: &Ticket,
    signature: &PeerSignature,
    server_key: Option<&PeerId>,
    me: &PeerId,
    now: u64,
) -> Result<Option<SocketAddr>, TicketError> {
    let key = server_key.ok_or(TicketError::NoServerKey)?;
    key.verify(&ticket_message(ticket), signature)
        .map_err(|_| TicketError::BadSignature)?;
    if ticket.source != *me {
        return Err(TicketError::NotForUs);
    }
    // The server's clock and ours may differ a little; a ticket is used once anyway.
    if ticket.expires_at + CLOCK_SKEW < now {
        return Err(TicketError::Expired);
    }
    if ticket.expires_at > now + MAX_TICKET_LIFE + CLOCK_SKEW {
        return Err(TicketError::TooLong);
    }
    match ticket.kind {
        TicketKind::Reverse => ticket
            .addr
            .as_deref()
            .and_then(|a| a.parse().ok())
            .map(Some)
            .ok_or(TicketError::BadAddress),
        TicketKind::Relay => Ok(None),
    }
}

/// Dials per destination in the last minute, and the tickets already used.
#[derive(Default)]
struct DialLimiter {
    recent: Mutex<HashMap<String, Vec<Instant>>>,
    seen: Mutex<std::collections::VecDeque<String>>,
}

impl DialLimiter {
    /// Records `id`; false when it was used before.
    fn first_use(&self, id: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.iter().any(|s| s == id) {
            return false;
        }
        if seen.len() >= SEEN_TICKETS {
            seen.pop_front();
        }
        seen.push_back(id.to_owned());
        true
    }

    fn allow(&self, destination: &str) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        recent.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < Duration::from_secs(60));
            !times.is_empty()
        });
        let times = recent.entry(destination.to_owned()).or_default();
        if times.len() >= DIALS_PER_MINUTE {
            return false;
        }
        times.push(now);
        true
    }
}

/// What a ticket's connection serves, and to whom.
fn on_ticket(ticket: &Ticket) -> super::serve::OnTicket {
    super::serve::OnTicket {
        hash: ticket.hash,
        downloader: ticket.downloader,
    }
}

/// Everything the control channel needs.
pub struct Channel {
    /// Index server URL.
    pub url: String,
    /// Sessions published by the sync loop.
    pub sessions: watch::Receiver<Option<Session>>,
    /// Where tickets are served.
    pub files: Arc<FileServer>,
    /// The link to the server, shared with the sync loop.
    pub link: Arc<Link>,
    /// Connections opened on tickets at once (each is an outbound connection).
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Downloads of wishes' matches (`auto_download`).
    pub auto: Option<AutoDownloads>,
}

/// Downloads the agent makes by itself: matches of its account's wishes that asked for it, put
/// in its transfer queue like any other download.
pub struct AutoDownloads {
    /// The agent's queue.
    pub queue: Arc<crate::transfers::TransferQueue>,
    /// Where they go.
    pub dir: std::path::PathBuf,
}

impl AutoDownloads {
    /// Queues `hash` (a match of wish `wish`); the queue reports how it went as a `download`
    /// event of the account.
    fn fetch(&self, wish: u64, hash: peerdex_shared::FileHash, name: String) {
        let new = crate::catalog::NewTransfer {
            hash,
            name: Some(name),
            destination: crate::catalog::Destination::Dir(self.dir.clone()),
            label: format!("wish {wish}"),
            priority: 0,
            force: false,
            wish: Some(wish),
        };
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = queue.add(&[new]) {
                warn!(error = %e, "cannot queue a wish's match");
            }
        });
    }
}

impl Channel {
    /// A control channel for the agent.
    pub fn new(
        url: String,
        files: Arc<FileServer>,
        link: Arc<Link>,
        auto: Option<AutoDownloads>,
    ) -> Channel {
        Channel {
            url,
            sessions: link.sessions(),
            files,
            link,
            connections: Arc::new(tokio::sync::Semaphore::new(MAX_TICKET_CONNECTIONS)),
            auto,
        }
    }
}

/// Why the control channel dropped.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("a control message is too long")]
    LineTooLong,
}

impl Channel {
    /// Keeps the control channel open until `stop`, reconnecting with backoff.
    pub async fn run(mut self, stop: CancellationToken) {
        let dials = Arc::new(DialLimiter::default());
        let mut backoff = Backoff::new();
        loop {
            let session = loop {
                if let Some(session) = self.sessions.borrow_and_update().clone() {
                    break session;
                }
                tokio::select! {
                    changed = self.sessions.changed() => if changed.is_err() { return },
                    () = stop.cancelled() => return,
                }
            };
            let mut renewed = self.sessions.clone();
            let mut opened = false;
            let outcome = tokio::select! {
                outcome = self.listen(&session, &dials, &stop, &mut opened) => outcome,
                // A new session (re-registration): the old token is void; reopen with the new.
                _ = renewed.changed() => Ok(()),
                () = stop.cancelled() => return,
            };
            self.set_open(false);
            if opened {
                backoff.reset();
                // The server may be gone: the sync loop checks now rather than at its next
                // heartbeat.
                self.link.check_server();
            }
            match outcome {
                Ok(()) => backoff.reset(),
                Err(ChannelError::Api(e)) if e.code() == Some(ErrorCode::Unauthorized) => {
                    // The session is gone: wait for the sync loop to register again.
                    tokio::select! {
                        _ = self.sessions.changed() => {}
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        () = stop.cancelled() => return,
                    }
                    continue;
                }
                Err(e) => debug!(error = %e, "control channel closed"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.step()) => {}
                () = stop.cancelled() => return,
            }
        }
    }

    fn set_open(&self, open: bool) {
        self.link.control_channel(open);
    }

    /// One control stream: reads messages until it ends.
    async fn listen(
        &self,
        session: &Session,
        dials: &Arc<DialLimiter>,
        stop: &CancellationToken,
        opened: &mut bool,
    ) -> Result<(), ChannelError> {
        // The server pings every 15 s; the client's read timeout (a minute of silence) ends a
        // dead connection.
        let client =
            ServerClient::new(&self.url)?.with_session(session.peer, session.token.clone());
        let mut response = client.control_stream().await?;
        info!("control channel open");
        *opened = true;
        self.set_open(true);
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match serde_json::from_slice::<ControlMessage>(&line) {
                    Ok(message) => self.handle(message, session, dials, stop),
                    Err(e) => debug!(error = %e, "ignoring an unknown control message"),
                }
            }
            if pending.len() > MAX_LINE {
                return Err(ChannelError::LineTooLong);
            }
        }
        Ok(())
    }

    /// Acts on one message: tickets are checked, then served on their own task.
    fn handle(
        &self,
        message: ControlMessage,
        session: &Session,
        dials: &Arc<DialLimiter>,
        stop: &CancellationToken,
    ) {
        let (ticket, signature) = match message {
            ControlMessage::Connect { ticket, signature } => (ticket, signature),
            ControlMessage::Reachability { reachability } => {
                self.link.reachability(reachability);
                return;
            }
            ControlMessage::Ping => return,
            ControlMessage::Event { event } => {
                // The account's events reach the agent too; it logs them for its user,
                // fetches the matches of wishes that asked for it, and, when a contact comes
                // online, asks again for the sources of waiting downloads.
                info!(kind = event.event.kind(), id = event.id, "event");
                if let (peerdex_shared::social::Event::Presence { online: true, .. }, Some(auto)) =
                    (&event.event, &self.auto)
                {
                    auto.queue.sources_may_have_returned();
                }
                if let peerdex_shared::social::Event::WishHit {
                    wish,
                    hash,
                    name,
                    auto_download: true,
                    ..
                } = &event.event
                    && let Some(auto) = &self.auto
                {
                    auto.fetch(*wish, *hash, name.clone());
                }
                return;
            }
        };
        let checked = check_ticket(
            &ticket,
            &signature,
            session.server_key.as_ref(),
            &session.peer,
            unix_now(),
        )
        .and_then(|addr| {
            if !dials.first_use(&ticket.id) {
                return Err(TicketError::Replayed);
            }
            // Reverse: per address dialled. Relay: per downloader, so requests naming one
            // downloader cannot use up everyone's relay connections.
            let destination = match addr {
                Some(addr) => addr.ip().to_string(),
                None => format!("relay for {}", ticket.downloader.fmt_short()),
            };
            if dials.allow(&destination) {
                Ok(addr)
            } else {
                Err(TicketError::RateLimited(destination))
            }
        });
        let addr = match checked {
            Ok(addr) => addr,
            Err(e) => {
                warn!(error = %e, ticket = %ticket.id, "refusing a ticket");
                return;
            }
        };
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            warn!(ticket = %ticket.id, "too many ticket connections open; refusing");
            return;
        };
        let files = self.files.clone();
        let (url, token, stop) = (self.url.clone(), session.token.clone(), stop.clone());
        let span = info_span!("ticket", kind = ?ticket.kind, hash = %ticket.hash.fmt_short());
        tokio::spawn(
            async move {
                let served = match addr {
                    Some(addr) => reverse(files, &ticket, addr, stop).await,
                    None => relay(files, &ticket, &url, &token, stop).await,
                };
                if let Err(e) = served {
                    warn!(error = %e, "could not open the connection a ticket asked for");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Dials the downloader, announces the ticket's token, then serves the ticket's content.
async fn reverse(
    files: Arc<FileServer>,
    ticket: &Ticket,
    addr: SocketAddr,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connection timed out"))??;
    let _ = stream.set_nodelay(true);
    stream
        .write_all(format!("{REVERSE_PREAMBLE}{}\n", ticket.token).as_bytes())
        .await?;
    debug!(%addr, "reverse connection open");
    files
        .serve_io(stream, addr, Some(on_ticket(ticket)), stop)
        .await;
    Ok(())
}

/// Connects our end of the relay session, then serves the ticket's content through it.
async fn relay(
    files: Arc<FileServer>,
    ticket: &Ticket,
    url: &str,
    token: &str,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let client = ServerClient::new(url).map_err(std::io::Error::other)?;
    let (upgraded, server_addr) = client
        .relay_upgrade(
            &fill(routes::RELAY_ACCEPT, &ticket.id),
            Some(token),
            Duration::from_secs(10),
        )
        .await
        .map_err(std::io::Error::other)?;
    debug!("relay connection open");
    files
        .serve_io(
            TokioIo::new(upgraded),
            server_addr,
            Some(on_ticket(ticket)),
            stop,
        )
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use peerdex_shared::FileHash;

    fn ticket(source: PeerId, expires_at: u64) -> Ticket {
        Ticket {
            id: "id".into(),
            kind: TicketKind::Reverse,
            source,
            downloader: PeerId::from_bytes([9; 32]),
            addr: Some("127.0.0.1:4000".into()),
            token: "tok".into(),
            hash: FileHash::from_bytes([5; 32]),
            expires_at,
        }
    }

    fn sign(key: &SigningKey, ticket: &Ticket) -> PeerSignature {
        PeerSignature(key.sign(&ticket_message(ticket)).to_bytes())
    }

    #[test]
    fn only_current_tickets_signed_by_the_server_for_us_are_accepted() {
        let server = SigningKey::from_bytes(&[1; 32]);
        let server_key = PeerId::from_bytes(server.verifying_key().to_bytes());
        let me = PeerId::from_bytes([2; 32]);
        let now = 1_000_000;
        let good = ticket(me, now + 15);
        let addr = check_ticket(&good, &sign(&server, &good), Some(&server_key), &me, now);
        assert_eq!(addr, Ok(Some("127.0.0.1:4000".parse().unwrap())));

        let forger = SigningKey::from_bytes(&[3; 32]);
        let forged = check_ticket(&good, &sign(&forger, &good), Some(&server_key), &me, now);
        assert_eq!(forged, Err(TicketError::BadSignature));
        let mut redirected = good.clone();
        redirected.addr = Some("10.0.0.1:80".into());
        let altered = check_ticket(
            &redirected,
            &sign(&server, &good),
            Some(&server_key),
            &me,
            now,
        );
        assert_eq!(altered, Err(TicketError::BadSignature));
        let expired = ticket(me, now - CLOCK_SKEW - 1);
        assert_eq!(
            check_ticket(
                &expired,
                &sign(&server, &expired),
                Some(&server_key),
                &me,
                now
            ),
            Err(TicketError::Expired)
        );
        // A little clock skew is tolerated.
        let late = ticket(me, now - 5);
        assert!(check_ticket(&late, &sign(&server, &late), Some(&server_key), &me, now).is_ok());
        let forever = ticket(me, now + 100_000);
        assert_eq!(
            check_ticket(
                &forever,
                &sign(&server, &forever),
                Some(&server_key),
                &me,
                now
            ),
            Err(TicketError::TooLong)
        );
        let other = ticket(PeerId::from_bytes([4; 32]), now + 15);
        assert_eq!(
            check_ticket(&other, &sign(&server, &other), Some(&server_key), &me, now),
            Err(TicketError::NotForUs)
        );
        assert_eq!(
            check_ticket(&good, &sign(&server, &good), None, &me, now),
            Err(TicketError::NoServerKey)
        );
    }

    #[test]
    fn dials_per_destination_are_limited_and_tickets_used_once() {
        let limiter = DialLimiter::default();
        assert!(limiter.first_use("t1"));
        assert!(!limiter.first_use("t1"));
        assert!(limiter.first_use("t2"));
        for _ in 0..DIALS_PER_MINUTE {
            assert!(limiter.allow("10.0.0.1"));
        }
        assert!(!limiter.allow("10.0.0.1"));
        assert!(limiter.allow("10.0.0.2"));
    }
}
