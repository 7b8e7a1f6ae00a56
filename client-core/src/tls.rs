//! How this process trusts `https://` index servers (PROTOCOL §12.1): the system's roots, plus
//! an extra CA file, or instead a pinned certificate fingerprint for a self-hosted server with a
//! self-signed certificate.
//!
//! Trust is the user's setting, like a crypto provider: set once at the binary's edge
//! ([`configure`], from `--ca-file`, `--server-fingerprint` or the config file) and used by every
//! connection to an index server this process opens, whichever part of the program opens it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// What makes an index server's certificate acceptable.
#[derive(Debug, Clone, Default)]
pub struct ServerTrust {
    /// Certificates (PEM) trusted as roots besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The server certificate's SHA-256 fingerprint: only that certificate is accepted (its
    /// names and dates are not checked; the pin is the trust).
    pub fingerprint: Option<Fingerprint>,
}

/// A certificate's SHA-256 fingerprint, as `openssl x509 -fingerprint -sha256` prints it
/// (with or without colons, either case, optionally prefixed `sha256:`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(cert: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: Vec<String> = self.0.iter().map(|b| format!("{b:02X}")).collect();
        f.write_str(&hex.join(":"))
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = TlsSetupError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let text = text
            .strip_prefix("sha256:")
            .or_else(|| text.strip_prefix("SHA256:"))
            .unwrap_or(text);
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&hex, &mut bytes).map_err(|_| {
            TlsSetupError::Fingerprint(format!(
                "{text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)"
            ))
        })?;
        Ok(Fingerprint(bytes))
    }
}

/// Why the trust settings cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file is missing, unreadable or holds no certificate.
    #[error("CA file {path}: {why}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// The fingerprint is not one.
    #[error("server fingerprint: {0}")]
    Fingerprint(String),
    /// Trust was configured twice with different settings.
    #[error("TLS trust settings were already set")]
    AlreadySet,
}

/// A certificate other than the pinned one: the message names the one presented, so an
/// operator who renewed the certificate sees what to pin.
#[derive(Clone, thiserror::Error)]
#[error("the server's certificate has the fingerprint {presented}, not the pinned {pinned}")]
pub struct WrongFingerprint {
    /// The pin.
    pub pinned: Fingerprint,
    /// What the server presented.
    pub presented: Fingerprint,
}

/// The [`WrongFingerprint`] an error is, if it is one (a `rustls::Error` carrying it, or an I/O
/// error wrapping that).
pub fn wrong_fingerprint(error: &(dyn std::error::Error + 'static)) -> Option<WrongFingerprint> {
    let rustls_error = match error.downcast_ref::<std::io::Error>() {
        Some(io) => io.get_ref()?.downcast_ref::<rustls::Error>()?,
        None => error.downcast_ref::<rustls::Error>()?,
    };
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = rustls_error
    else {
        return None;
    };
    other.0.downcast_ref::<WrongFingerprint>().cloned()
}

/// The message, also in debug form: rustls prints the error it carries with `{:?}`.
impl std::fmt::Debug for WrongFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

static TRUST: OnceLock<ServerTrust> = OnceLock::new();
static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, TlsSetupError>> = OnceLock::new();

/// Sets this process's trust for index servers, once, before the first connection; reads the
/// CA file now so that a bad one is reported at start.
pub fn configure(trust: ServerTrust) -> Result<(), TlsSetupError> {
    if let Some(path) = &trust.ca_file {
        read_ca_file(path)?;
    }
    // Too late once a connection used the defaults: say so rather than ignore the setting.
    if CONFIG.get().is_some() || TRUST.set(trust).is_err() {
        return Err(TlsSetupError::AlreadySet);
    }
    Ok(())
}

/// The TLS client configuration of connections to index servers (built at first use).
pub fn client_config() -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    CONFIG
        .get_or_init(|| build(TRUST.get_or_init(ServerTrust::default)))
        .clone()
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let fail = |why: String| TlsSetupError::CaFile {
        path: path.display().to_string(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn build(trust: &ServerTrust) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsSetupError::Fingerprint(e.to_string()))?;
    let mut config = if let Some(pinned) = trust.fingerprint {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pinned,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        // Unreadable system certificates are skipped: the CA file may be all that is needed.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(path) = &trust.ca_file {
            roots.add_parsable_certificates(read_ca_file(path)?);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts exactly one certificate, by fingerprint, whose key must sign the handshake.
#[derive(Debug)]
struct Pinned {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = Fingerprint::of(end_entity);
        if presented != self.pinned {
            let wrong = WrongFingerprint {
                pinned: self.pinned,
                presented,
            };
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(wrong))),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fingerprints_parse_as_openssl_prints_them() {
        let fp = Fingerprint::of(b"certificate");
        let printed = fp.to_string();
        assert_eq!(printed.len(), 32 * 3 - 1);
        assert_eq!(printed.parse::<Fingerprint>().unwrap(), fp);
        let bare = printed.replace(':', "").to_lowercase();
        assert_eq!(bare.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(format!("sha256:{bare}").parse::<Fingerprint>().unwrap(), fp);
        assert!("ab:cd".parse::<Fingerprint>().is_err());
    }
}
