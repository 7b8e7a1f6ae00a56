//! Connect-back: before a peer is advertised as reachable, dial the address others would be told
//! to dial and check that whoever answers there holds the peer's key.
//!
//! The server only ever dials the IP it saw the request come from, so it cannot be pointed at a
//! third party's host. Every dial, whatever asked for it (a registration, a reverse-connection
//! request), goes through one [`Prober`] and its per-target-IP rate limit, so the server cannot be
//! used to hammer a host either. Redirects are not followed and the answer is read with a size
//! cap and a deadline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use peerdex_shared::PeerId;
use peerdex_shared::api::{ConnectBackAnswer, PeerTransport};
use peerdex_shared::identity::connect_back_message;
use peerdex_shared::peer::CONNECT_BACK_PATH;
use peerdex_shared::tls;

use crate::limits::{IpRateLimiter, random_hex};

/// Largest answer read from a probed peer.
const MAX_ANSWER_BYTES: usize = 4096;

/// Why a probe did not verify the peer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The target IP had its share of probes this minute (`probe.per_ip_per_minute`); nothing
    /// was dialled.
    #[error("too many connect-back probes to this address; try again in a minute")]
    RateLimited,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// Could not connect or speak HTTP.
    #[error("connection failed: {0}")]
    Connect(String),
    /// Answered, but not with a valid signed answer for this peer.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

/// The only way the server dials out: connect-back probes, rate-limited per target IP.
pub struct Prober {
    per_ip: IpRateLimiter,
    timeout: Duration,
}

impl Prober {
    /// At most `per_ip_per_minute` probes per target IP, each given `timeout`.
    pub fn new(per_ip_per_minute: u32, timeout: Duration) -> Prober {
        Prober {
            per_ip: IpRateLimiter::new(per_ip_per_minute),
            timeout,
        }
    }

    /// Dials `addr` and checks that it answers the challenge signed by `peer` (over TLS, the
    /// handshake itself must be signed by `peer`'s key), unless the target IP is over its rate
    /// ([`ProbeError::RateLimited`], nothing dialled).
    pub async fn connect_back(
        &self,
        addr: SocketAddr,
        peer: PeerId,
        transport: PeerTransport,
    ) -> Result<(), ProbeError> {
        let ip: IpAddr = addr.ip().to_canonical();
        if !self.per_ip.allow(&ip) {
            return Err(ProbeError::RateLimited);
        }
        tokio::time::timeout(self.timeout, probe(addr, peer, transport))
            .await
            .map_err(|_| ProbeError::Timeout)?
    }
}

async fn probe(addr: SocketAddr, peer: PeerId, transport: PeerTransport) -> Result<(), ProbeError> {
    let nonce = random_hex::<16>().ok_or_else(|| ProbeError::Connect("no randomness".into()))?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let (mut sender, driver) = match transport {
        PeerTransport::Plain => {
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ProbeError::Connect(e.to_string()))?;
            (
                sender,
                tokio::spawn(async move { connection.await.map(drop) }),
            )
        }
        PeerTransport::Tls => {
            let connector = tokio_rustls::TlsConnector::from(tls::peer_client_config(peer));
            let stream = connector
                .connect(tls::peer_server_name(), stream)
                .await
                .map_err(|e| match tls::wrong_key_of(&e) {
                    Some(wrong) => ProbeError::BadAnswer(wrong.to_string()),
                    None => ProbeError::Connect(format!("TLS: {e}")),
                })?;
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| ProbeError::Connect(e.to_string()))?;
            (
                sender,
                tokio::spawn(async move { connection.await.map(drop) }),
            )
        }
    };
    let request = hyper::Request::get(format!("{CONNECT_BACK_PATH}?nonce={nonce}"))
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| ProbeError::BadAnswer(format!("reading body: {e}")))?
        .to_bytes();
    driver.abort();
    if !status.is_success() {
        return Err(ProbeError::BadAnswer(format!("status {status}")));
    }
    let answer: ConnectBackAnswer =
        serde_json::from_slice(&body).map_err(|e| ProbeError::BadAnswer(e.to_string()))?;
    if answer.peer_id != peer {
        return Err(ProbeError::BadAnswer("answered by another peer id".into()));
    }
    let message = connect_back_message(&nonce, &peer, &addr.to_string());
    peer.verify(&message, &answer.signature)
        .map_err(|e| ProbeError::BadAnswer(e.to_string()))
}

/// Dials a peer that just registered back, in the background, and records whether it proved
/// its key there (`reachable`) or not (`firewalled`); the agent hears the verdict on its control
/// channel at once rather than at its next heartbeat. Awaited on shutdown (`state.lifecycle.tasks`).
pub fn verify_in_background(
    state: &std::sync::Arc<crate::state::AppState>,
    peer: &crate::db::PeerRow,
    ip: IpAddr,
) {
    use peerdex_shared::api::{ControlMessage, Reachability};
    use tracing::{info, warn};

    let addr = SocketAddr::new(ip, peer.port);
    let (state2, key, id, port) = (state.clone(), peer.key, peer.id, peer.port);
    let transport = peer.transport;
    let span = tracing::info_span!("connect_back", peer = %key.fmt_short(), %addr);
    let task = async move {
        let verdict = tokio::select! {
            result = state2.guards.prober.connect_back(addr, key, transport) => match result {
                Ok(()) => Reachability::Reachable,
                Err(e) => {
                    info!(error = %e, "connect-back failed; peer listed as firewalled");
                    Reachability::Firewalled
                }
            },
            () = state2.lifecycle.shutdown.cancelled() => return,
        };
        let db = state2.store.db.clone();
        let ip_text = ip.to_string();
        let recorded =
            tokio::task::spawn_blocking(move || db.set_reachability(id, &ip_text, port, verdict))
                .await;
        match recorded {
            Ok(Ok(_)) => {
                info!(?verdict, "connect-back done");
                state2.firewall.control.send(
                    &key,
                    ControlMessage::Reachability {
                        reachability: verdict,
                    },
                );
            }
            Ok(Err(e)) => warn!(error = %e, "recording connect-back result failed"),
            Err(e) => warn!(error = %e, "recording connect-back result failed"),
        }
    };
    state
        .lifecycle
        .tasks
        .spawn(tracing::Instrument::instrument(task, span));
}
