//! TLS between peers (PROTOCOL §12): every peer connection is TLS 1.3, and a peer's certificate
//! carries its Ed25519 key (its peer id), as a Syncthing device certificate does. No certificate
//! authority is involved: whoever dials a source knows, from the index server's answer, the key
//! that source must hold, and accepts the connection only if the handshake is signed by it.
//!
//! The certificate is a container. What the client checks is the handshake signature
//! (`CertificateVerify`), verified against the *expected* key, never against whatever key the
//! certificate claims; the certificate's own key is read only to name a wrong one in errors.
//! Names, dates and the certificate's self-signature are not looked at.
//!
//! Pure: builds `rustls` configurations; the I/O is the caller's (tokio-rustls).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, SubjectPublicKeyInfoDer,
    UnixTime,
};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::PeerId;

/// The ALPN protocol peers speak inside TLS: HTTP/1.1 as PROTOCOL §6 describes it.
pub const PEER_ALPN: &[u8] = b"peerdex/1";

/// The first byte of a TLS record carrying a handshake (a `ClientHello`): how a port that also
/// takes other first lines (the reverse preamble, plain HTTP) tells TLS apart.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// DER of an Ed25519 SubjectPublicKeyInfo (RFC 8410) up to the 32 key bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// DER of an Ed25519 PKCS#8 v1 private key (RFC 8410) up to the 32 seed bytes.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Why a peer certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the peer certificate: {0}")]
pub struct CertificateError(String);

/// The source answered with a key other than the one the index server named for it: someone
/// else is at that address, or in the middle.
#[derive(Debug, Clone, thiserror::Error)]
#[error("presented the key {}, not {} as the index server says", presented_text(.presented), .expected.fmt_short())]
pub struct WrongPeerKey {
    /// The key the index server named.
    pub expected: PeerId,
    /// The key its certificate carries (`None`: not an Ed25519 certificate at all).
    pub presented: Option<PeerId>,
}

fn presented_text(presented: &Option<PeerId>) -> String {
    presented.map_or_else(|| "of no Ed25519 peer".to_owned(), |key| key.fmt_short())
}

/// The SubjectPublicKeyInfo of `key`.
pub fn peer_spki(key: &PeerId) -> Vec<u8> {
    let mut spki = ED25519_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(key.as_bytes());
    spki
}

/// The Ed25519 key a certificate carries, if it is one.
pub fn presented_peer(cert: &CertificateDer<'_>) -> Option<PeerId> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let key = spki.as_ref().strip_prefix(&ED25519_SPKI_PREFIX)?;
    let bytes: [u8; 32] = key.try_into().ok()?;
    Some(PeerId::from_bytes(bytes))
}

/// The peer's certificate and private key, from its Ed25519 secret key: self-signed, valid
/// from 1975 to 4096, its subject the peer id. The same secret always gives the same key.
pub fn peer_certificate(
    secret: &[u8; 32],
    peer: &PeerId,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), CertificateError> {
    let mut pkcs8 = ED25519_PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(secret);
    let pkcs8 = PrivatePkcs8KeyDer::from(pkcs8);
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(|e| CertificateError(e.to_string()))?;
    if key.public_key_raw() != peer.as_bytes() {
        return Err(CertificateError("the secret key is not this peer's".into()));
    }
    let mut params = rcgen::CertificateParams::default();
    params.not_before = rcgen::date_time_ymd(1975, 1, 1);
    params.not_after = rcgen::date_time_ymd(4096, 1, 1);
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, format!("peerdex peer {peer}"));
    params.distinguished_name = name;
    let cert = params
        .self_signed(&key)
        .map_err(|e| CertificateError(e.to_string()))?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// The crypto peers use: ring's, with AES-128-GCM first (the fastest of TLS 1.3's suites where
/// the CPU has AES instructions, and the one the benchmarks compare).
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| suite.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// The TLS configuration of a peer's file server (and of a downloader's reverse port, which
/// answers the index server's probe): TLS 1.3 only, our certificate, no client certificates.
pub fn peer_server_config(
    secret: &[u8; 32],
    peer: &PeerId,
) -> Result<Arc<rustls::ServerConfig>, CertificateError> {
    let (cert, key) = peer_certificate(secret, peer)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| CertificateError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| CertificateError(e.to_string()))?;
    // `http/1.1` too, for tools (curl, browsers' fetch) that talk to a file server by hand.
    config.alpn_protocols = vec![PEER_ALPN.to_vec(), b"http/1.1".to_vec()];
    // Our order of suites, not the client's: AES-128-GCM first (openssl offers AES-256 first).
    config.ignore_client_order = true;
    // Connections are few and long; resumption would only add state.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The TLS configuration for dialling (or answering, on a reverse connection) the peer whose
/// key is `expected`: TLS 1.3 only, and the handshake must be signed by that key.
pub fn peer_client_config(expected: PeerId) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let verifier = Arc::new(PinnedPeer {
        expected,
        spki: peer_spki(&expected),
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13]);
    // The ring provider supports TLS 1.3, so this cannot fail; a config without the pin is
    // never an option, so there is no fallback either.
    let mut config = match builder {
        Ok(builder) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
        Err(e) => unreachable!("ring supports TLS 1.3: {e}"),
    };
    config.alpn_protocols = vec![PEER_ALPN.to_vec()];
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The server name given to rustls when dialling a peer (not sent: SNI is off, and the
/// verifier checks the key, not a name).
pub fn peer_server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
}

/// The [`WrongPeerKey`] behind a failed handshake, if that is why it failed.
pub fn wrong_key_of(error: &std::io::Error) -> Option<WrongPeerKey> {
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) =
        error.get_ref()?.downcast_ref::<rustls::Error>()?
    else {
        return None;
    };
    other.0.downcast_ref::<WrongPeerKey>().cloned()
}

/// Accepts only a handshake signed by one Ed25519 key.
#[derive(Debug)]
struct PinnedPeer {
    expected: PeerId,
    spki: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Refused early with a name for what was presented; the signature check below is what
        // makes it safe.
        let presented = presented_peer(end_entity);
        if presented != Some(self.expected) {
            let wrong = WrongPeerKey {
                expected: self.expected,
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        _cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if dss.scheme != SignatureScheme::ED25519 {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(self.spki.as_slice()),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ed25519_dalek::SigningKey;

    fn peer(seed: u8) -> ([u8; 32], PeerId) {
        let secret = [seed; 32];
        let public = SigningKey::from_bytes(&secret).verifying_key().to_bytes();
        (secret, PeerId::from_bytes(public))
    }

    #[test]
    fn the_certificate_carries_the_peer_key() {
        let (secret, id) = peer(7);
        let (cert, _) = peer_certificate(&secret, &id).unwrap();
        assert_eq!(presented_peer(&cert), Some(id));
        // Deterministic key, so the same peer id on every start.
        let (again, _) = peer_certificate(&secret, &id).unwrap();
        assert_eq!(presented_peer(&again), Some(id));
        let (_, other) = peer(8);
        assert!(peer_certificate(&secret, &other).is_err());
    }

    /// Runs a handshake in memory between a server holding `server` and a client expecting
    /// `expected`; the client's error, if any.
    fn handshake(server: u8, expected: PeerId) -> Result<(), rustls::Error> {
        let (secret, id) = peer(server);
        let server_config = peer_server_config(&secret, &id).unwrap();
        let mut server = rustls::ServerConnection::new(server_config).unwrap();
        let mut client =
            rustls::ClientConnection::new(peer_client_config(expected), peer_server_name())
                .unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                server.read_tls(&mut buf.as_slice()).unwrap();
                if let Err(e) = server.process_new_packets() {
                    let mut alert = Vec::new();
                    let _ = server.write_tls(&mut alert);
                    return Err(e);
                }
            }
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                client.read_tls(&mut buf.as_slice()).unwrap();
                client.process_new_packets()?;
            }
            if !client.is_handshaking() && !server.is_handshaking() {
                assert_eq!(client.alpn_protocol(), Some(PEER_ALPN));
                assert_eq!(
                    client.negotiated_cipher_suite().map(|s| s.suite()),
                    Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
                );
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn the_client_accepts_only_the_expected_key() {
        let (_, id) = peer(7);
        handshake(7, id).unwrap();
        let err = handshake(9, id).unwrap_err();
        let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = err else {
            panic!("{err:?}");
        };
        let wrong = other.0.downcast_ref::<WrongPeerKey>().unwrap();
        assert_eq!(wrong.expected, id);
        assert_eq!(wrong.presented, Some(peer(9).1));
    }

    #[test]
    fn only_ed25519_certificates_name_a_peer() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(presented_peer(cert.der()), None);
        assert_eq!(
            presented_peer(&CertificateDer::from(vec![0x30, 0x00])),
            None
        );
    }
}
