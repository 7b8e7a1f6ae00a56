//! Peer identity: Ed25519 public keys as peer ids, and the exact messages peers sign.
//!
//! Every signed message starts with a distinct domain tag so a signature made for one purpose
//! (registration) can never be replayed as another (connect-back answer).

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::hash::{ParseHexError, decode_hex, hex_id, serde_as_hex};

/// A peer's identity: its Ed25519 public key, written as 64 lowercase hex characters
/// (`from_bytes` does not check that the bytes are a valid curve point; `verify` does).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 32]);

hex_id!(PeerId, "peer id");

impl PeerId {
    /// Checks that `signature` is this peer's signature over `message` (strict verification:
    /// rejects small-order keys and non-canonical signatures).
    pub fn verify(&self, message: &[u8], signature: &PeerSignature) -> Result<(), SignatureError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
        let signature = Signature::from_bytes(&signature.0);
        key.verify_strict(message, &signature)
            .map_err(|_| SignatureError::Mismatch)
    }
}

/// An Ed25519 signature, written as 128 hex characters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PeerSignature(pub [u8; 64]);

impl fmt::Display for PeerSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerSignature({}…)", hex::encode(&self.0[..5]))
    }
}

impl FromStr for PeerSignature {
    type Err = ParseHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode_hex::<64>(s).map(Self)
    }
}

serde_as_hex!(PeerSignature, "signature");

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The peer id is not a usable Ed25519 public key.
    #[error("peer id is not a valid ed25519 public key")]
    BadKey,
    /// The signature does not match the key and message.
    #[error("signature does not match the peer id")]
    Mismatch,
}

/// The message a peer signs to register: proves it holds the key for `peer_id` *now* (the nonce
/// was issued by the server moments ago) and binds the nickname and port it claims.
pub fn registration_message(nonce: &str, peer_id: &PeerId, nickname: &str, port: u16) -> Vec<u8> {
    format!("peerdex-register-v1\n{nonce}\n{peer_id}\n{nickname}\n{port}").into_bytes()
}

/// The message a peer signs to answer the server's connect-back probe. It includes the address the
/// server dialled (the `Host` header of the probe), binding the proof to that address.
pub fn connect_back_message(nonce: &str, peer_id: &PeerId, dialled: &str) -> Vec<u8> {
    format!("peerdex-connect-back-v1\n{nonce}\n{peer_id}\n{dialled}").into_bytes()
}

/// The message the index server signs to ask a peer to open a connection for a transfer (a
/// ticket, see [`crate::api::Ticket`]). It binds every field, so a ticket cannot be altered or
/// reused for another downloader, address, content or time.
pub fn ticket_message(ticket: &crate::api::Ticket) -> Vec<u8> {
    format!(
        "peerdex-ticket-v1\n{}\n{:?}\n{}\n{}\n{}\n{}\n{}\n{}",
        ticket.id,
        ticket.kind,
        ticket.source,
        ticket.downloader,
        ticket.addr.as_deref().unwrap_or("-"),
        ticket.token,
        ticket.hash,
        ticket.expires_at
    )
    .into_bytes()
}

/// The message the index server signs to let one downloader fetch one non-public content from one
/// source until a time (a grant, see [`crate::api::Grant`]).
pub fn grant_message(
    source: &PeerId,
    downloader: &PeerId,
    hash: &crate::FileHash,
    expires_at: u64,
) -> Vec<u8> {
    format!("peerdex-grant-v1\n{source}\n{downloader}\n{hash}\n{expires_at}").into_bytes()
}

/// The message a downloader signs to use a grant: proves that the holder of the grant's
/// downloader key is the one presenting it (a grant copied from a log is useless without the key).
pub fn grant_use_message(grant_signature: &PeerSignature) -> Vec<u8> {
    format!("peerdex-grant-use-v1\n{grant_signature}").into_bytes()
}

/// The message a downloader signs on its requests to a source (`x-peerdex-downloader`): names
/// its key to the source, which counts upload slots per key rather than per address (relayed
/// connections all come from the server's address). Bound to the source, the content and the
/// minute, so a copy is good for little else.
pub fn downloader_message(
    source: &PeerId,
    downloader: &PeerId,
    hash: &crate::FileHash,
    minute: u64,
) -> Vec<u8> {
    format!("peerdex-downloader-v1\n{source}\n{downloader}\n{hash}\n{minute}").into_bytes()
}

/// The message a downloader's agent signs over the exact body of a transfer report
/// (`POST /api/v1/peers/{id}/reports`), so a report is the reporter's word and no one else's.
pub fn report_message(body: &[u8]) -> Vec<u8> {
    let mut message = b"peerdex-report-v1\n".to_vec();
    message.extend_from_slice(blake3::hash(body).as_bytes());
    message
}

/// The message a device signs to be linked to an account at login: proves the key is held by the
/// one logging in now (the nonce is fresh), so nobody can claim another's device.
pub fn login_message(nonce: &str, peer_id: &PeerId, account: &str) -> Vec<u8> {
    format!("peerdex-login-v1\n{nonce}\n{peer_id}\n{account}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn sign_and_verify() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let peer = PeerId::from_bytes(key.verifying_key().to_bytes());
        let msg = registration_message("n1", &peer, "alice", 4000);
        let sig = PeerSignature(key.sign(&msg).to_bytes());
        assert_eq!(peer.verify(&msg, &sig), Ok(()));
        let other = registration_message("n1", &peer, "mallory", 4000);
        assert_eq!(peer.verify(&other, &sig), Err(SignatureError::Mismatch));
        // The same nonce signed for another purpose must not verify as a registration.
        let probe = connect_back_message("n1", &peer, "127.0.0.1:4000");
        assert_ne!(probe, msg);
    }

    #[test]
    fn peer_id_round_trip() {
        let p = PeerId::from_bytes([1; 32]);
        assert_eq!(p.to_string().parse::<PeerId>(), Ok(p));
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), p);
    }
}
