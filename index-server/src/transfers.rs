//! Helping peers that cannot accept connections: the control channels agents keep open, the
//! tickets the server signs to ask them to connect out, and the relay of last resort that splices
//! two outbound connections within the operator's quotas.
//!
//! The server never serves content itself: relayed bytes are forwarded as they are, and the
//! downloader verifies them against the content hash like any others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use peerdex_shared::api::{ControlMessage, Grant, Ticket};
use peerdex_shared::identity::{grant_message, ticket_message};
use peerdex_shared::rate::TokenBucket;
use peerdex_shared::{PeerId, PeerSignature};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::RelayConfig;

/// File name of the server's key in the data directory.
pub const SERVER_KEY_FILE: &str = "server.key";

/// Messages queued per control channel before new ones are refused.
const CONTROL_QUEUE: usize = 64;

/// The server's signing key, which peers learn at registration.
pub struct ServerKey {
    key: SigningKey,
}

impl ServerKey {
    /// Loads the key from `data`, creating it (owner-only) on first start.
    pub fn load_or_create(data: &Path) -> anyhow::Result<ServerKey> {
        use anyhow::Context;
        let path = data.join(SERVER_KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mut secret = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut secret)
                    .with_context(|| format!("{} is damaged", path.display()))?;
                Ok(ServerKey {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret)
                    .map_err(|e| anyhow::anyhow!("no randomness for the server key: {e}"))?;
                let temp = path.with_extension("key.tmp");
                {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&temp)
                        .with_context(|| format!("creating {}", temp.display()))?;
                    file.write_all(hex::encode(secret).as_bytes())?;
                    file.sync_all()?;
                }
                std::fs::rename(&temp, &path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Ok(ServerKey {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The public key.
    pub fn public(&self) -> PeerId {
        PeerId::from_bytes(self.key.verifying_key().to_bytes())
    }

    /// Signs a ticket.
    pub fn sign(&self, ticket: &Ticket) -> PeerSignature {
        PeerSignature(self.key.sign(&ticket_message(ticket)).to_bytes())
    }

    /// Makes a grant: `downloader` may fetch `hash` from `source` until `expires_at`.
    pub fn grant(
        &self,
        source: PeerId,
        downloader: PeerId,
        hash: peerdex_shared::FileHash,
        expires_at: u64,
    ) -> Grant {
        let message = grant_message(&source, &downloader, &hash, expires_at);
        Grant {
            source,
            downloader,
            hash,
            expires_at,
            signature: PeerSignature(self.key.sign(&message).to_bytes()),
        }
    }
}

/// The open control channels, one per peer (a new one replaces the old).
#[derive(Default)]
pub struct ControlHub {
    channels: Mutex<HashMap<PeerId, (u64, mpsc::Sender<ControlMessage>)>>,
    next_id: AtomicU64,
}

/// A peer's end of its control channel; detaches on drop.
pub struct ControlReceiver {
    /// Messages for the peer.
    pub messages: mpsc::Receiver<ControlMessage>,
    hub: Arc<ControlHub>,
    peer: PeerId,
    id: u64,
}

impl Drop for ControlReceiver {
    fn drop(&mut self) {
        let mut channels = self.hub.channels.lock().unwrap_or_else(|p| p.into_inner());
        if channels
            .get(&self.peer)
            .is_some_and(|(id, _)| *id == self.id)
        {
            channels.remove(&self.peer);
        }
    }
}

impl ControlHub {
    /// Opens `peer`'s control channel, replacing any earlier one.
    pub fn attach(self: &Arc<Self>, peer: PeerId) -> ControlReceiver {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, (id, tx));
        ControlReceiver {
            messages: rx,
            hub: self.clone(),
            peer,
            id,
        }
    }

    /// Closes `peer`'s control channel (logout, new session).
    pub fn detach(&self, peer: &PeerId) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    /// Whether `peer` has a control channel open.
    pub fn is_attached(&self, peer: &PeerId) -> bool {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .is_some_and(|(_, tx)| !tx.is_closed())
    }

    /// How many control channels are open.
    pub fn open_channels(&self) -> usize {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(_, tx)| !tx.is_closed())
            .count()
    }

    /// Queues a message for `peer`; false when it has no open channel (or too much queued).
    pub fn send(&self, peer: &PeerId, message: ControlMessage) -> bool {
        let channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        channels
            .get(peer)
            .is_some_and(|(_, tx)| tx.try_send(message).is_ok())
    }
}

/// Why a relay session was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayRefusal {
    /// `relay.enabled = false`.
    #[error("the relay is turned off on this server")]
    Disabled,
    /// `relay.max_sessions` reached.
    #[error("the relay is full: {0} of {0} sessions in use (relay.max_sessions); try again later")]
    Full(usize),
    /// `relay.max_sessions_per_peer` reached for the source or the downloader.
    #[error(
        "{who} already has {limit} relayed transfers (relay.max_sessions_per_peer); try again later"
    )]
    PeerQuota {
        /// "the source" or "this downloader".
        who: &'static str,
        /// The quota.
        limit: usize,
    },
}

#[derive(Default)]
struct Usage {
    total: usize,
    per_source: HashMap<PeerId, usize>,
    per_downloader: HashMap<IpAddr, usize>,
}

/// Relay sessions: quotas, sessions waiting for their source, and the global bandwidth bucket.
pub struct Relay {
    config: RelayConfig,
    usage: Mutex<Usage>,
    waiting: Mutex<HashMap<String, (PeerId, oneshot::Sender<OnUpgrade>)>>,
    global: TokenBucket,
    /// Bytes forwarded since start.
    pub bytes: prometheus_client::metrics::counter::Counter,
    /// Sessions admitted since start.
    pub sessions: prometheus_client::metrics::counter::Counter,
}

/// Removes a waiting session when its downloader goes away (or the wait ends).
pub struct WaitingGuard {
    relay: Arc<Relay>,
    id: String,
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.relay.forget(&self.id);
    }
}

/// How long a relayed connection may carry nothing before it is closed.
const RELAY_IDLE: Duration = Duration::from_secs(60);

/// Longest a relay session may last.
const RELAY_MAX_LIFE: Duration = Duration::from_secs(4 * 3600);

/// A held relay quota; released on drop.
pub struct RelayPermit {
    relay: Arc<Relay>,
    source: PeerId,
    downloader: IpAddr,
}

impl Drop for RelayPermit {
    fn drop(&mut self) {
        let mut usage = self.relay.usage.lock().unwrap_or_else(|p| p.into_inner());
        usage.total = usage.total.saturating_sub(1);
        if let Some(n) = usage.per_source.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                usage.per_source.remove(&self.source);
            }
        }
        if let Some(n) = usage.per_downloader.get_mut(&self.downloader) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                usage.per_downloader.remove(&self.downloader);
            }
        }
    }
}

impl Relay {
    /// A relay with the operator's settings.
    pub fn new(config: RelayConfig) -> Arc<Relay> {
        Arc::new(Relay {
            global: TokenBucket::new(config.total_bytes_per_sec),
            config,
            usage: Mutex::new(Usage::default()),
            waiting: Mutex::new(HashMap::new()),
            bytes: Default::default(),
            sessions: Default::default(),
        })
    }

    /// Takes a session quota for `source` and the downloader at `downloader`.
    pub fn admit(
        self: &Arc<Self>,
        source: PeerId,
        downloader: IpAddr,
    ) -> Result<RelayPermit, RelayRefusal> {
        if !self.config.enabled {
            return Err(RelayRefusal::Disabled);
        }
        let downloader = peerdex_shared::peer::peer_bucket(downloader);
        let mut usage = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        if usage.total >= self.config.max_sessions {
            return Err(RelayRefusal::Full(self.config.max_sessions));
        }
        let per_peer = self.config.max_sessions_per_peer;
        if usage.per_source.get(&source).copied().unwrap_or(0) >= per_peer {
            return Err(RelayRefusal::PeerQuota {
                who: "the source",
                limit: per_peer,
            });
        }
        if usage.per_downloader.get(&downloader).copied().unwrap_or(0) >= per_peer {
            return Err(RelayRefusal::PeerQuota {
                who: "this downloader",
                limit: per_peer,
            });
        }
        usage.total += 1;
        *usage.per_source.entry(source).or_default() += 1;
        *usage.per_downloader.entry(downloader).or_default() += 1;
        self.sessions.inc();
        Ok(RelayPermit {
            relay: self.clone(),
            source,
            downloader,
        })
    }

    /// Registers a session waiting for `source` to connect; the receiver gets its connection.
    /// The entry goes away with the guard.
    pub fn wait_for_source(
        self: &Arc<Self>,
        id: &str,
        source: PeerId,
    ) -> (oneshot::Receiver<OnUpgrade>, WaitingGuard) {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), (source, tx));
        let guard = WaitingGuard {
            relay: self.clone(),
            id: id.to_owned(),
        };
        (rx, guard)
    }

    /// Forgets a waiting session (timed out).
    pub fn forget(&self, id: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Hands the source's connection to the waiting session `id`; false when there is none for
    /// this peer.
    pub fn source_arrived(&self, id: &str, source: PeerId, upgrade: OnUpgrade) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        match waiting.remove(id) {
            Some((expected, tx)) if expected == source => tx.send(upgrade).is_ok(),
            Some(entry) => {
                waiting.insert(id.to_owned(), entry);
                false
            }
            None => false,
        }
    }

    /// How long a downloader waits for the source to connect.
    pub fn ticket_ttl(&self) -> Duration {
        Duration::from_secs(self.config.ticket_ttl_secs)
    }

    /// Forwards bytes both ways between the two upgraded connections until both directions are
    /// done, within the session's and the global bandwidth. A session idle for a minute, or older
    /// than four hours, is closed: the relay is for transfers, not a standing tunnel.
    pub async fn splice(
        self: Arc<Self>,
        downloader: OnUpgrade,
        source: OnUpgrade,
        permit: RelayPermit,
        shutdown: CancellationToken,
    ) {
        let (Ok(downloader), Ok(source)) = (downloader.await, source.await) else {
            debug!("a relay side did not complete its upgrade");
            return;
        };
        let (mut d_read, mut d_write) = tokio::io::split(TokioIo::new(downloader));
        let (mut s_read, mut s_write) = tokio::io::split(TokioIo::new(source));
        let session = Arc::new(TokenBucket::new(self.config.bytes_per_sec));
        let activity = Arc::new(Mutex::new(Instant::now()));
        let to_source =
            self.clone()
                .pump(&mut d_read, &mut s_write, session.clone(), activity.clone());
        let to_downloader = self
            .clone()
            .pump(&mut s_read, &mut d_write, session, activity.clone());
        let watchdog = async {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let idle = activity.lock().map(|a| a.elapsed()).unwrap_or_default();
                if idle > RELAY_IDLE || started.elapsed() > RELAY_MAX_LIFE {
                    return;
                }
            }
        };
        let started = Instant::now();
        let forwarded = tokio::select! {
            (up, down) = async { tokio::join!(to_source, to_downloader) } => up + down,
            () = watchdog => 0,
            () = shutdown.cancelled() => 0,
        };
        info!(bytes = forwarded, elapsed = ?started.elapsed(), "relay session ended");
        drop(permit);
    }

    async fn pump<R, W>(
        self: Arc<Self>,
        from: &mut R,
        to: &mut W,
        session: Arc<TokenBucket>,
        activity: Arc<Mutex<Instant>>,
    ) -> u64
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin,
    {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let wait = session.take(n as u64).max(self.global.take(n as u64));
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
            if let Ok(mut last) = activity.lock() {
                *last = Instant::now();
            }
            total += n as u64;
            self.bytes.inc_by(n as u64);
        }
        // Pass the half-close on: the other direction may still be sending.
        let _ = to.shutdown().await;
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(enabled: bool) -> RelayConfig {
        RelayConfig {
            enabled,
            max_sessions: 2,
            max_sessions_per_peer: 1,
            ..RelayConfig::default()
        }
    }

    #[test]
    fn quotas_refuse_with_the_limit_named() {
        let relay = Relay::new(config(true));
        let (a, b) = (PeerId::from_bytes([1; 32]), PeerId::from_bytes([2; 32]));
        let (x, y, z): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        let first = relay.admit(a, x).unwrap();
        assert!(matches!(
            relay.admit(a, y).err(),
            Some(RelayRefusal::PeerQuota {
                who: "the source",
                ..
            })
        ));
        assert!(matches!(
            relay.admit(b, x).err(),
            Some(RelayRefusal::PeerQuota {
                who: "this downloader",
                ..
            })
        ));
        let _second = relay.admit(b, y).unwrap();
        let full = relay.admit(PeerId::from_bytes([3; 32]), z).err().unwrap();
        assert_eq!(full, RelayRefusal::Full(2));
        assert!(full.to_string().contains("relay.max_sessions"));
        drop(first);
        assert!(relay.admit(a, z).is_ok());
        assert_eq!(
            Relay::new(config(false)).admit(a, x).err(),
            Some(RelayRefusal::Disabled)
        );
    }

    #[test]
    fn the_server_key_persists_and_signs_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let key = ServerKey::load_or_create(dir.path()).unwrap();
        let again = ServerKey::load_or_create(dir.path()).unwrap();
        assert_eq!(key.public(), again.public());
        let ticket = Ticket {
            id: "t".into(),
            kind: peerdex_shared::api::TicketKind::Reverse,
            source: PeerId::from_bytes([1; 32]),
            downloader: PeerId::from_bytes([2; 32]),
            addr: Some("127.0.0.1:9".into()),
            token: "tok".into(),
            hash: peerdex_shared::FileHash::from_bytes([3; 32]),
            expires_at: 1,
        };
        let signature = key.sign(&ticket);
        assert!(
            key.public()
                .verify(&ticket_message(&ticket), &signature)
                .is_ok()
        );
        let mut altered = ticket.clone();
        altered.addr = Some("10.9.9.9:9".into());
        assert!(
            key.public()
                .verify(&ticket_message(&altered), &signature)
                .is_err()
        );
    }
}
