//! Connect-back: before a peer is advertised as reachable, dial the address others would be told
//! to dial and check that whoever answers there holds the peer's key.
//!
//! The server only ever dials the IP it saw the registration come from, so it cannot be pointed
//! at a third party's host; probes per target IP are rate-limited so it cannot be used to hammer
//! one either. Redirects are not followed and the answer is read with a size cap and a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use peerdex_shared::PeerId;
use peerdex_shared::api::{CONNECT_BACK_PATH, ConnectBackAnswer};
use peerdex_shared::identity::connect_back_message;

use crate::limits::random_hex;

/// Largest answer read from a probed peer.
const MAX_ANSWER_BYTES: usize = 4096;

/// Why a probe did not verify the peer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
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

/// Dials `addr` and checks that it answers the challenge signed by `peer`.
pub async fn connect_back(
    addr: SocketAddr,
    peer: PeerId,
    timeout: Duration,
) -> Result<(), ProbeError> {
    tokio::time::timeout(timeout, probe(addr, peer))
        .await
        .map_err(|_| ProbeError::Timeout)?
}

async fn probe(addr: SocketAddr, peer: PeerId) -> Result<(), ProbeError> {
    let nonce = random_hex::<16>().ok_or_else(|| ProbeError::Connect("no randomness".into()))?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let driver = tokio::spawn(connection);
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
