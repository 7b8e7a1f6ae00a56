//! HTTPS terminated by the server itself (`[tls] cert`/`key`): TLS 1.2 and 1.3 with ring's
//! suites (AEAD only, forward secret), the certificate read from PEM files and read again on
//! SIGHUP, so a renewed certificate takes effect without a restart or a dropped connection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// The server's TLS: its acceptor, and the certificate it can reload.
pub struct Terminator {
    certificate: Arc<Reloadable>,
    acceptor: TlsAcceptor,
}

impl Terminator {
    /// Loads `cert` (a PEM chain, leaf first) and `key` (a PEM private key).
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Terminator> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(Reloadable {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(read_pair(cert, key, &provider)?)),
            provider: provider.clone(),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Terminator {
            certificate,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the certificate and key files again; on error the current pair stays in use.
    pub fn reload(&self) -> anyhow::Result<()> {
        let pair = read_pair(
            &self.certificate.cert,
            &self.certificate.key,
            &self.certificate.provider,
        )?;
        *self
            .certificate
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(pair);
        Ok(())
    }

    /// The acceptor that wraps each accepted connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

/// A certificate and key read from files, swapped whole on reload.
#[derive(Debug)]
struct Reloadable {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn read_pair(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).with_context(|| {
        format!(
            "the key {} does not go with the certificate {}",
            key.display(),
            cert.display()
        )
    })
}
