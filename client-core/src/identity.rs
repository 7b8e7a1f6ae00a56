//! The agent's persistent Ed25519 key pair: its public key is its peer id on every server.

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use peerdex_shared::{PeerId, PeerSignature};

/// Errors loading or creating a key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file does not hold 32 bytes of hex.
    #[error("key file {0} is damaged (expected 64 hex characters)")]
    Corrupt(String),
    /// The OS gave no randomness.
    #[error("no randomness available: {0}")]
    Random(String),
}

/// A peer's key pair.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.peer_id().fmt_short())
    }
}

impl Identity {
    /// A fresh random identity (not saved).
    pub fn generate() -> Result<Identity, IdentityError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Identity {
            key: SigningKey::from_bytes(&secret),
        })
    }

    /// Loads the key at `path`, creating it (readable only by the owner) on first use.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut secret = [0u8; 32];
                hex::decode_to_slice(text.trim(), &mut secret)
                    .map_err(|_| IdentityError::Corrupt(path.display().to_string()))?;
                Ok(Identity {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let tmp = path.with_extension("tmp");
                write_private(&tmp, hex::encode(identity.key.to_bytes()).as_bytes()).map_err(io)?;
                std::fs::rename(&tmp, path).map_err(io)?;
                Ok(identity)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The public key, as a peer id.
    pub fn peer_id(&self) -> PeerId {
        PeerId::from_bytes(self.key.verifying_key().to_bytes())
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> PeerSignature {
        PeerSignature(self.key.sign(message).to_bytes())
    }

    /// The TLS server configuration of this peer's file server and reverse port: a certificate
    /// carrying this key (PROTOCOL §12.2). Build it once per listener, not per connection.
    pub fn tls_server_config(
        &self,
    ) -> Result<std::sync::Arc<rustls::ServerConfig>, peerdex_shared::tls::CertificateError> {
        peerdex_shared::tls::peer_server_config(&self.key.to_bytes(), &self.peer_id())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/peer.key");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        std::fs::write(&path, "junk").unwrap();
        assert!(matches!(
            Identity::load_or_create(&path),
            Err(IdentityError::Corrupt(_))
        ));
    }
}
