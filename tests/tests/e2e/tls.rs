//! Encryption on the wire (issue 22): every peer connection is TLS 1.3 pinned to the source's
//! key, whatever the route; a source presenting another key, or a man in the middle, is refused
//! and named; and the CLI reaches an `https://` index server by CA file or pinned fingerprint.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use peerdex_client::Identity;
use peerdex_shared::api::{ListEntry, PeerTransport};
use peerdex_shared::pieces::PIECE_SIZE;
use peerdex_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cli::BIN;

const P: usize = PIECE_SIZE as usize;

/// What `openssl s_client` sees at `addr`: its report, and the DER public key of the
/// certificate presented.
fn openssl_sees(addr: SocketAddr) -> (String, Vec<u8>) {
    let client = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-tls1_3"])
        .args(["-alpn", "peerdex/1", "-servername", "peer"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let report = String::from_utf8_lossy(&client.stdout).into_owned();
    let pipe = |args: &[&str], input: &[u8]| -> Vec<u8> {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let pem = pipe(&["x509", "-noout", "-pubkey"], &client.stdout);
    let der = pipe(&["pkey", "-pubin", "-outform", "DER"], &pem);
    (report, der)
}

/// Asserts that the file server at `addr` speaks TLS 1.3 with `peer`'s key, to a TLS client
/// that is not ours.
fn assert_tls13_with_key(addr: SocketAddr, peer: &Identity) {
    let (report, key) = openssl_sees(addr);
    assert!(report.contains("TLSv1.3"), "openssl saw: {report}");
    assert!(
        report.contains("TLS_AES_128_GCM_SHA256"),
        "openssl saw: {report}"
    );
    assert_eq!(
        key,
        peerdex_shared::tls::peer_spki(&peer.peer_id()),
        "the certificate carries the peer's key"
    );
}

fn agent_identity(agent: &TestAgent) -> Identity {
    Identity::load_or_create(&agent.config.state.join(peerdex_agent::KEY_FILE)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_tls_with_the_source_key() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(3 * P + 17, 71);
    let hash = content_hash(&bytes);

    // Direct: an agent that accepts connections.
    let open_share = dir.path().join("open");
    write_file(&open_share, "direct.bin", &bytes);
    let open = TestAgent::start(&server.url, &[&open_share], |_| {}).await;
    open.wait_synced().await;
    assert!(open.url.starts_with("https://"), "{}", open.url);
    let addr = open.handle.serve_addr.unwrap();
    assert_tls13_with_key(addr, &agent_identity(&open));
    let out = dir.path().join("direct");
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("direct.bin")).unwrap(), bytes);
    assert!(report.sources_used[0].ends_with("via direct"), "{report:?}");
    open.stop().await;

    // Reverse, then relay: an agent that accepts none. It is the TLS server on the connection
    // it dials, and inside the relay's splice.
    let closed_share = dir.path().join("closed");
    write_file(&closed_share, "firewalled.bin", &bytes);
    let closed = TestAgent::start(&server.url, &[&closed_share], |c| c.listen = None).await;
    closed.wait_synced().await;
    closed.wait_control_channel().await;
    let out = dir.path().join("reverse");
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("firewalled.bin")).unwrap(), bytes);
    assert!(
        report.sources_used[0].ends_with("via reverse connection"),
        "{report:?}"
    );
    let out = dir.path().join("relay");
    let report = download_into(&server.url, hash, &out, |o| o.accept_connections = false)
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("firewalled.bin")).unwrap(), bytes);
    assert!(report.sources_used[0].ends_with("via relay"), "{report:?}");
    closed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_file_server_gets_nothing_readable() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = b"a secret recipe, in clear nowhere".repeat(100);
    write_file(&share, "recipe.txt", &bytes);
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    let mut stream = TcpStream::connect(agent.handle.serve_addr.unwrap())
        .await
        .unwrap();
    let request = format!(
        "GET /peerdex/v1/blobs/{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        content_hash(&bytes)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "answered in clear: {answer:?}"
    );
    assert!(
        !answer.windows(12).any(|w| w == b"secret recip"),
        "file bytes in clear"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_http_switch_serves_public_content_in_clear_only() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(P + 3, 72);
    write_file(&share, "public.bin", &bytes);
    let agent = TestAgent::start(&server.url, &[&share], |c| c.upload.plain_http = true).await;
    agent.wait_synced().await;
    assert!(agent.url.starts_with("http://"), "{}", agent.url);
    let found = server
        .client()
        .sources(&content_hash(&bytes))
        .await
        .unwrap();
    assert_eq!(found.sources[0].transport, PeerTransport::Plain);
    let out = dir.path().join("out");
    download_into(&server.url, content_hash(&bytes), &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("public.bin")).unwrap(), bytes);
    let (report, _) = openssl_sees(agent.handle.serve_addr.unwrap());
    assert!(!report.contains("TLSv1.3"), "{report}");
    agent.stop().await;
}

/// How a [`KeySwitcher`] treats connections after the first (the index server's probe).
#[derive(Clone, Copy, PartialEq)]
enum Later {
    /// Another host now has the address: TLS with the impostor's key, nothing behind it.
    TakenOver,
    /// A man in the middle: TLS with its own key towards the downloader, and on to the owner
    /// over TLS pinned to the owner's key.
    InTheMiddle,
}

/// An address whose first connection (the index server's connect-back probe) reaches the
/// owner, and whose later connections meet the impostor's key.
struct KeySwitcher {
    port: u16,
    impostor_handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KeySwitcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The owner's honest endpoint: TLS with its key, answering the connect-back probe.
async fn owner_endpoint(owner: Identity) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(owner.tls_server_config().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, owner) = (acceptor.clone(), owner.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    let response = peerdex_client::connect_back::answer(&owner, &request);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

impl KeySwitcher {
    async fn start(owner: Identity, impostor: Identity, later: Later) -> KeySwitcher {
        let upstream = owner_endpoint(owner.clone()).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let impostor_handshakes = Arc::new(AtomicUsize::new(0));
        let counted = impostor_handshakes.clone();
        let fake = tokio_rustls::TlsAcceptor::from(impostor.tls_server_config().unwrap());
        let task = tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut stream, _)) = listener.accept().await {
                if std::mem::take(&mut first) {
                    // The probe passes through untouched, to the owner.
                    tokio::spawn(async move {
                        let mut owner = TcpStream::connect(upstream).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut stream, &mut owner).await;
                    });
                    continue;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let (fake, owner_id) = (fake.clone(), owner.peer_id());
                tokio::spawn(async move {
                    let Ok(mut decrypted) = fake.accept(stream).await else {
                        return; // the downloader refused our key: the point
                    };
                    if later == Later::InTheMiddle {
                        let tcp = TcpStream::connect(upstream).await.unwrap();
                        let connector = tokio_rustls::TlsConnector::from(
                            peerdex_shared::tls::peer_client_config(owner_id),
                        );
                        if let Ok(mut onward) = connector
                            .connect(peerdex_shared::tls::peer_server_name(), tcp)
                            .await
                        {
                            let _ =
                                tokio::io::copy_bidirectional(&mut decrypted, &mut onward).await;
                        }
                    }
                });
            }
        });
        KeySwitcher {
            port,
            impostor_handshakes,
            task,
        }
    }
}

/// Registers `owner` at the switcher's address (TLS) listing `hash`, waits until the index
/// verified the address, then downloads: the source must be refused and named.
async fn refused_source(later: Later) {
    let server = TestServer::start().await;
    let owner = Identity::generate().unwrap();
    let impostor = Identity::generate().unwrap();
    let switcher = KeySwitcher::start(owner.clone(), impostor.clone(), later).await;
    let mut peer = TestPeer::with_identity(&server.url, "owner", switcher.port, owner.clone());
    peer.client = peerdex_client::ServerClient::new(&server.url).unwrap(); // announces TLS
    peer.client
        .register(&owner, "owner", switcher.port)
        .await
        .unwrap();
    let bytes = pseudo_random(2 * P + 1, 73);
    let hash = content_hash(&bytes);
    let mut listed: ListEntry = entry("x/wanted.bin", bytes.len() as u64, "unused");
    listed.hash = hash;
    peer.client.upload_full(1, &[listed]).await.unwrap();
    let client = server.client();
    wait_until(
        "the probe to verify the owner's key at the address",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let found = client.sources(&hash).await.map_err(|e| e.to_string())?;
                match found.sources.first() {
                    Some(s) if s.reachability == peerdex_shared::api::Reachability::Reachable => {
                        Ok(())
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let failed = download_into(&server.url, hash, dir.path(), |_| {}).await;
    let Err(peerdex_download::DownloadError::NoSource { dropped, .. }) = failed else {
        panic!("downloaded from an impostor: {failed:?}");
    };
    let (label, why) = &dropped[0];
    assert!(label.starts_with("owner"), "{label}");
    assert!(
        why.contains(&impostor.peer_id().fmt_short()) && why.contains(&owner.peer_id().fmt_short()),
        "the error names both keys: {why}"
    );
    assert!(switcher.impostor_handshakes.load(Ordering::SeqCst) >= 1);
    assert!(!dir.path().join("wanted.bin").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_presenting_another_key_is_refused_and_named() {
    refused_source(Later::TakenOver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_man_in_the_middle_with_its_own_key_is_detected() {
    refused_source(Later::InTheMiddle).await;
}

/// Writes `cert.pem` and `key.pem` for 127.0.0.1, signed by `issuer` (self-signed without).
fn server_certificate(
    dir: &Path,
    issuer: Option<&rcgen::Issuer<'_, rcgen::KeyPair>>,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    std::fs::create_dir_all(dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.der().to_vec())
}

/// A CA the system does not know: its certificate in `dir/ca.pem`, and the issuer to sign with.
fn private_ca(dir: &Path) -> (std::path::PathBuf, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    (ca_file, rcgen::Issuer::new(ca_params, ca_key))
}

fn https_server(dir: &Path, cert: &Path, key: &Path) -> ServerProcess {
    std::fs::create_dir_all(dir).unwrap();
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    let server = ServerProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_peerdex-server-under-test")),
        &dir.join("data"),
        Some(&config),
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    server
}

/// `peerdex search anything --server URL` with `args` before it: (exit code, stderr).
fn search(dir: &Path, url: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(BIN)
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(dir.join("config.toml"))
        .args(args)
        .args(["search", "anything", "--server", url])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_an_https_server_by_pin_or_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = server_certificate(&dir.path().join("self"), None);
    let server = https_server(&dir.path().join("a"), &cert, &key);
    let pin = peerdex_client::tls::Fingerprint::of(&der).to_string();

    // Not trusted by the system: refused, and the message says why.
    let (code, stderr) = search(dir.path(), &server.url, &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("certificate"), "{stderr}");
    // Pinned by fingerprint: accepted.
    let (code, stderr) = search(dir.path(), &server.url, &["--server-fingerprint", &pin]);
    assert_eq!(code, 0, "{stderr}");
    // A wrong pin: refused, naming the fingerprint presented.
    let wrong = peerdex_client::tls::Fingerprint::of(b"another").to_string();
    let (code, stderr) = search(dir.path(), &server.url, &["--server-fingerprint", &wrong]);
    assert_ne!(code, 0);
    assert!(stderr.contains(&pin), "{stderr}");

    // A renewed certificate is picked up on SIGHUP: the new pin works, the old one no longer.
    let (cert2, key2, der2) = server_certificate(&dir.path().join("renewed"), None);
    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(server.child.id().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    let pin2 = peerdex_client::tls::Fingerprint::of(&der2).to_string();
    wait_until("the renewed certificate", Duration::from_secs(10), || {
        let (code, stderr) = search(dir.path(), &server.url, &["--server-fingerprint", &pin2]);
        async move { if code == 0 { Ok(()) } else { Err(stderr) } }
    })
    .await;
    let (code, _) = search(dir.path(), &server.url, &["--server-fingerprint", &pin]);
    assert_ne!(code, 0);
    server.terminate();

    // Signed by a CA the system does not know: trusted with --ca-file (or the config file).
    let (ca_file, issuer) = private_ca(dir.path());
    let (cert, key, _) = server_certificate(&dir.path().join("by-ca"), Some(&issuer));
    let server = https_server(&dir.path().join("b"), &cert, &key);
    let (code, _) = search(dir.path(), &server.url, &[]);
    assert_ne!(code, 0);
    let ca = ca_file.display().to_string();
    let (code, stderr) = search(dir.path(), &server.url, &["--ca-file", &ca]);
    assert_eq!(code, 0, "{stderr}");
    std::fs::write(
        dir.path().join("config.toml"),
        format!("ca_file = {ca:?}\n"),
    )
    .unwrap();
    let (code, stderr) = search(dir.path(), &server.url, &[]);
    assert_eq!(code, 0, "{stderr}");
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewalled_agent_and_a_downloader_meet_through_an_https_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, issuer) = private_ca(dir.path());
    let (cert, key, _) = server_certificate(&dir.path().join("cert"), Some(&issuer));
    let server = https_server(&dir.path().join("server"), &cert, &key);
    let ca = ca_file.display().to_string();

    // The agent accepts no connections: its control channel, tickets and the relay all go
    // through the HTTPS server, and the peer TLS runs inside that.
    let share = dir.path().join("share");
    let bytes = pseudo_random(2 * P + 9, 74);
    write_file(&share, "over https.bin", &bytes);
    let mut agent = Command::new(BIN)
        .arg("--state")
        .arg(dir.path().join("agent-state"))
        .arg("--config")
        .arg(dir.path().join("agent.toml"))
        .args([
            "--ca-file",
            &ca,
            "agent",
            "--server",
            &server.url,
            "--no-listen",
        ])
        .arg("--share")
        .arg(&share)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hash = content_hash(&bytes);
    let out = dir.path().join("out");
    let state = dir.path().join("me");
    let got = wait_until(
        "the download through the HTTPS server",
        Duration::from_secs(60),
        || {
            let output = Command::new(BIN)
                .arg("--state")
                .arg(&state)
                .arg("--config")
                .arg(dir.path().join("me.toml"))
                .args([
                    "--ca-file",
                    &ca,
                    "get",
                    "--foreground",
                    "--server",
                    &server.url,
                    "--dir",
                ])
                .arg(&out)
                .arg(hash.to_string())
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            async move {
                if output.status.success() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&output.stderr).into_owned())
                }
            }
        },
    )
    .await;
    let () = got;
    assert_eq!(std::fs::read(out.join("over https.bin")).unwrap(), bytes);
    let _ = agent.kill();
    let _ = agent.wait();
    server.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_account_tokens_are_refused_in_clear_off_loopback() {
    // The proxy on loopback is trusted: the client's address is the one it forwards.
    let server = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let http = peerdex_tests::http();
    let login = |forwarded: &'static str, proto: Option<&'static str>| {
        let mut request = http
            .post(format!("{}/api/v1/login", server.url))
            .header("x-forwarded-for", forwarded)
            .json(&serde_json::json!({"name": "nobody", "password": "hunter2hunter2"}));
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (status, body["code"].as_str().unwrap_or_default().to_owned())
        }
    };
    // From off loopback, in clear: refused before the password is looked at.
    assert_eq!(
        login("203.0.113.7", None).await,
        (403, "insecure_transport".to_owned())
    );
    // Behind the proxy's HTTPS, or from the server's own host: the password is checked.
    assert_eq!(login("203.0.113.7", Some("https")).await.0, 401);
    assert_eq!(login("127.0.0.1", None).await.0, 401);

    // The client refuses to send a password to an http:// server off this host.
    let mut client = peerdex_client::ServerClient::new("http://192.0.2.1:7700").unwrap();
    let refused = client
        .login("nobody", "hunter2hunter2", &Identity::generate().unwrap())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            peerdex_client::server_api::ApiError::InsecureTransport(_)
        ),
        "{refused}"
    );
}
