//! Test harness: real index servers and peers on 127.0.0.1, each with its own temp directory.
//!
//! Set `TEST_LOG=1` to see the servers' tracing output.

#![allow(missing_docs, clippy::unwrap_used)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peerdex_client::server_api::SearchQuery;
use peerdex_client::{Identity, ServerClient};
use peerdex_server::Config;
use peerdex_shared::api::{ListEntry, MediaTags, SearchResponse};
use peerdex_shared::{FileHash, PeerId};
use tokio_util::sync::CancellationToken;

pub mod load;

/// Prints the servers' tracing output when `TEST_LOG` is set.
pub fn init_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
}

/// A configuration for tests: loopback, ephemeral port, fast commits.
pub fn test_config(data: &Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: data.to_owned(),
        ..Config::default()
    };
    config.index.commit_interval_ms = 100;
    config.index.writer_memory_bytes = 15_000_000;
    config.probe.timeout_ms = 2000;
    config.http.shutdown_grace_secs = 5;
    // Cheap password hashing: debug builds take seconds at OWASP's parameters (a unit test
    // checks those are the defaults).
    config.accounts.argon2_memory_kib = 64;
    config.accounts.argon2_iterations = 1;
    config
}

/// Creates account `name` (password: "`name` password") and signs in with `identity`, which
/// links that key to the account; returns the signed-in client.
pub async fn sign_up(server: &TestServer, name: &str, identity: &Identity) -> ServerClient {
    let password = format!("{name} password");
    server
        .client()
        .create_account(&peerdex_shared::api::CreateAccountRequest {
            name: name.into(),
            password: password.clone(),
            invite: None,
        })
        .await
        .unwrap();
    let mut client = server.client();
    client.login(name, &password, identity).await.unwrap();
    client
}

/// The server's database, opened beside the running server (as the operator's CLI does).
pub fn operator_db(server: &TestServer) -> peerdex_server::db::Db {
    peerdex_server::db::Db::open(&server.data.join(peerdex_server::server::DB_FILE)).unwrap()
}

/// An index server running in this process.
pub struct TestServer {
    pub url: String,
    pub data: PathBuf,
    _dir: Option<tempfile::TempDir>,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(dir.path(), tweak).await;
        server._dir = Some(dir);
        server
    }

    /// Starts on an existing data directory (to test restarts).
    pub async fn start_in(data: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        init_logging();
        let mut config = test_config(data);
        tweak(&mut config);
        let server = peerdex_server::Server::bind(config).await.unwrap();
        let url = server.url().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(server.run(async move { token.cancelled().await }));
        TestServer {
            url,
            data: data.to_owned(),
            _dir: None,
            stop,
            handle,
        }
    }

    pub fn client(&self) -> ServerClient {
        ServerClient::new(&self.url).unwrap()
    }

    /// Graceful shutdown; returns the data dir guard so a restart can reuse it.
    pub async fn stop(self) -> Option<tempfile::TempDir> {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap();
        self._dir
    }

    pub async fn search(&self, q: &str) -> SearchResponse {
        self.client()
            .search(&SearchQuery {
                q: q.into(),
                ..Default::default()
            })
            .await
            .unwrap()
    }

    pub async fn search_with(&self, query: SearchQuery) -> SearchResponse {
        self.client().search(&query).await.unwrap()
    }

    /// Waits until searching `q` gives exactly `n` distinct results.
    pub async fn wait_for_hits(&self, q: &str, n: usize) -> SearchResponse {
        self.wait_for_hits_within(q, n, Duration::from_secs(10))
            .await
    }

    /// [`TestServer::wait_for_hits`] with another bound: benchmarks index lists of millions.
    pub async fn wait_for_hits_within(
        &self,
        q: &str,
        n: usize,
        timeout: Duration,
    ) -> SearchResponse {
        let client = self.client();
        let query = SearchQuery {
            q: q.into(),
            limit: Some(100),
            ..Default::default()
        };
        wait_until(&format!("search {q:?} to give {n} hits"), timeout, || {
            let client = client.clone();
            let query = query.clone();
            async move {
                let result = client.search(&query).await.unwrap();
                if result.hits.len() == n {
                    Ok(result)
                } else {
                    Err(format!("{} hits: {:?}", result.hits.len(), names(&result)))
                }
            }
        })
        .await
    }
}

pub fn names(result: &SearchResponse) -> Vec<String> {
    result.hits.iter().map(|h| h.name.clone()).collect()
}

/// Polls `check` until it returns `Ok`, or panics after `timeout` with the last state it saw.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if start.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// An HTTP client for index servers, trusting what this process trusts (the system's roots).
pub fn http() -> reqwest::Client {
    http_builder().build().unwrap()
}

/// A builder of [`http`] clients, for tests that need other settings (no pooling, no redirects).
pub fn http_builder() -> reqwest::ClientBuilder {
    let tls = peerdex_client::tls::client_config().unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
        .pool_idle_timeout(peerdex_client::server_api::IDLE_CONNECTION_REUSE)
}

/// An HTTP client for the file server of `peer`: TLS pinned to its key, as a downloader dials.
pub fn peer_http(peer: PeerId) -> reqwest::Client {
    let mut tls = rustls::ClientConfig::clone(&peerdex_shared::tls::peer_client_config(peer));
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .build()
        .unwrap()
}

/// A TLS connection to the file server of `peer` at `addr`, for tests that write raw HTTP.
pub async fn peer_stream(
    addr: std::net::SocketAddr,
    peer: PeerId,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(peerdex_shared::tls::peer_client_config(peer))
        .connect(peerdex_shared::tls::peer_server_name(), tcp)
        .await
        .unwrap()
}

/// The client of a [`TestPeer`]: its responders speak plain HTTP, so it registers as such.
pub fn peer_client(server: &str) -> ServerClient {
    ServerClient::new(server)
        .unwrap()
        .with_transport(peerdex_shared::api::PeerTransport::Plain)
}

/// A peer: a key pair, a session with a server, and optionally a live connect-back responder.
pub struct TestPeer {
    pub identity: Identity,
    pub client: ServerClient,
    pub nick: String,
    pub port: u16,
    responder: Option<CancellationToken>,
}

impl TestPeer {
    /// A peer that accepts connections: it answers the server's connect-back probe.
    pub async fn join(server: &str, nick: &str) -> TestPeer {
        let identity = Identity::generate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let token = CancellationToken::new();
        tokio::spawn(peerdex_client::connect_back::serve(
            listener,
            identity.clone(),
            token.clone(),
        ));
        Self::registered(server, nick, port, identity, Some(token)).await
    }

    /// A peer that proves its key to the server's connect-back probe (so it is `reachable`),
    /// then never answers anything else: a source that stalls.
    pub async fn join_stalling(server: &str, nick: &str) -> TestPeer {
        let identity = Identity::generate().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let token = CancellationToken::new();
        let (stop, me) = (token.clone(), identity.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    () = stop.cancelled() => return,
                };
                let me = me.clone();
                let service = hyper::service::service_fn(move |request: hyper::Request<_>| {
                    let me = me.clone();
                    async move {
                        if request.uri().path() != peerdex_shared::peer::CONNECT_BACK_PATH {
                            std::future::pending::<()>().await;
                        }
                        Ok::<_, std::convert::Infallible>(peerdex_client::connect_back::answer(
                            &me, &request,
                        ))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Self::registered(server, nick, port, identity, Some(token)).await
    }

    /// Registers a peer with `identity` announcing `port`; `responder` stops what answers there.
    async fn registered(
        server: &str,
        nick: &str,
        port: u16,
        identity: Identity,
        responder: Option<CancellationToken>,
    ) -> TestPeer {
        let mut peer = TestPeer {
            identity,
            client: peer_client(server),
            nick: nick.into(),
            port,
            responder,
        };
        peer.register().await;
        peer
    }

    /// A peer that announces `port` but may not be listening there.
    pub async fn join_announcing(server: &str, nick: &str, port: u16) -> TestPeer {
        let identity = Identity::generate().unwrap();
        let mut peer = TestPeer {
            identity,
            client: peer_client(server),
            nick: nick.into(),
            port,
            responder: None,
        };
        peer.register().await;
        peer
    }

    /// A peer with the given key, announcing `port` (something else answers there).
    pub fn with_identity(server: &str, nick: &str, port: u16, identity: Identity) -> TestPeer {
        TestPeer {
            identity,
            client: peer_client(server),
            nick: nick.into(),
            port,
            responder: None,
        }
    }

    /// Registers (announcing plain HTTP, which its responders speak: see [`peer_client`]).
    pub async fn register(&mut self) -> peerdex_shared::api::RegisterResponse {
        self.client
            .register(&self.identity, &self.nick, self.port)
            .await
            .unwrap()
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        if let Some(token) = &self.responder {
            token.cancel();
        }
    }
}

/// A plain TCP listener standing in for the port a lying peer announces: it answers nothing and
/// counts the connections whose first request is not the index server's connect-back probe
/// (those are downloaders dialling it).
pub struct CountingListener {
    pub port: u16,
    /// Connections from anyone but the probe.
    dialled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Connections of the index server's connect-back probe.
    probed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingListener {
    pub async fn bind() -> CountingListener {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dialled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let probed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (counter, probes) = (dialled.clone(), probed.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (counter, probes) = (counter.clone(), probes.clone());
                tokio::spawn(async move {
                    let mut head = [0u8; 64];
                    let mut got = 0;
                    // A probe writes its request line at once; anything else counts.
                    let read = tokio::time::timeout(Duration::from_secs(5), async {
                        while got < head.len() {
                            match socket.read(&mut head[got..]).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got += n,
                            }
                            if head[..got].contains(&b'\n') {
                                break;
                            }
                        }
                    })
                    .await;
                    let probe =
                        read.is_ok() && head[..got].starts_with(b"GET /peerdex/v1/connect-back");
                    let count = if probe { &probes } else { &counter };
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    // Hold the connection, answer nothing.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    drop(socket);
                });
            }
        });
        CountingListener {
            port,
            dialled,
            probed,
            task,
        }
    }

    /// Connections that were not the server's probe.
    pub fn dialled(&self) -> usize {
        self.dialled.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Connections of the server's connect-back probe.
    pub fn probed(&self) -> usize {
        self.probed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for CountingListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A content hash derived from a label, so tests can say "the same content" by name.
pub fn hash_of(label: &str) -> FileHash {
    FileHash::from_bytes(*blake3::hash(label.as_bytes()).as_bytes())
}

/// A list entry in share `music` whose content is identified by `content`.
pub fn entry(path: &str, size: u64, content: &str) -> ListEntry {
    ListEntry {
        share: "music".into(),
        path: path.into(),
        size,
        mtime: 1_700_000_000,
        hash: hash_of(content),
        tags: MediaTags::default(),
        visibility: Default::default(),
    }
}

/// The real server binary as a child process.
pub struct ServerProcess {
    pub child: Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts `binary --listen 127.0.0.1:0 --data DATA` and waits for its "listening on" line.
    pub fn spawn(binary: &Path, data: &Path, config_file: Option<&Path>) -> ServerProcess {
        Self::spawn_on(binary, data, config_file, "127.0.0.1:0")
    }

    /// Like [`ServerProcess::spawn`], on a given address (to restart on the same port).
    pub fn spawn_on(
        binary: &Path,
        data: &Path,
        config_file: Option<&Path>,
        listen: &str,
    ) -> ServerProcess {
        let mut command = Command::new(binary);
        command.arg("--listen").arg(listen).arg("--data").arg(data);
        if let Some(file) = config_file {
            command.arg("--config").arg(file);
        }
        if std::env::var_os("TEST_LOG").is_none() {
            command.env("RUST_LOG", "warn").stderr(Stdio::null());
        }
        let mut child = command.stdout(Stdio::piped()).spawn().unwrap();
        let url = first_line_after(&mut child, "listening on ");
        ServerProcess { child, url }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A server left running by an early return or a panic would keep its data directory's index
/// lock, and the next run on it could not start: it is killed with its handle.
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (up to a minute) for the child's first line of stdout, which must start with `prefix`,
/// and returns the rest of it.
pub fn first_line_after(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no {prefix:?} line on stdout"));
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string()
}

/// Registers by hand over raw HTTP (challenge, sign, register), sending `headers` with both
/// requests and `extra` as additional JSON fields, to test what the server makes of them.
pub async fn register_raw(
    url: &str,
    identity: &Identity,
    nick: &str,
    port: u16,
    headers: &[(&str, &str)],
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let http = http();
    let with_headers = |mut request: reqwest::RequestBuilder| {
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    };
    let challenge: serde_json::Value = with_headers(http.post(format!("{url}/api/v1/challenge")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nonce = challenge["nonce"].as_str().unwrap();
    let message =
        peerdex_shared::identity::registration_message(nonce, &identity.peer_id(), nick, port);
    let mut body = serde_json::json!({
        "peer_id": identity.peer_id(), "nickname": nick, "port": port, "nonce": nonce,
        "signature": identity.sign(&message),
    });
    for (key, value) in extra {
        body[*key] = serde_json::Value::from(*value);
    }
    with_headers(http.post(format!("{url}/api/v1/register")))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// An agent config for tests: loopback, ephemeral port, short debounce, every share of `shares`.
pub fn agent_config(server: &str, state: &Path, shares: &[&Path]) -> peerdex_agent::AgentConfig {
    use peerdex_agent::config::{ConfigFile, ShareConfig};
    let mut file = ConfigFile::default();
    file.scan.debounce_ms = 200;
    file.scan.hash_threads = 2;
    file.scan.walk_threads = 2;
    file.download.dir = Some(state.join("downloads"));
    file.download.share = Some(false);
    file.ui_listen = Some("127.0.0.1:0".into());
    let shares: Vec<ShareConfig> = shares
        .iter()
        .map(|path| ShareConfig {
            path: path.to_path_buf(),
            name: None,
            exclude: vec![],
            follow_symlinks: false,
            include_hidden: false,
            visibility: Default::default(),
            scopes: Vec::new(),
        })
        .collect();
    peerdex_agent::AgentConfig::from_parts(
        server.to_owned(),
        None,
        Some("127.0.0.1:0".parse().unwrap()),
        state.to_owned(),
        &shares,
        &file,
    )
    .unwrap()
}

/// An agent running in this process, with its own state directory.
pub struct TestAgent {
    pub handle: peerdex_agent::AgentHandle,
    pub config: peerdex_agent::AgentConfig,
    /// `https://IP:PORT` of its file server (`http://` with `upload.plain_http`).
    pub url: String,
    _state: Option<tempfile::TempDir>,
}

impl TestAgent {
    /// Starts an agent sharing `shares` with `server`, after `tweak` edits its config.
    pub async fn start(
        server: &str,
        shares: &[&Path],
        tweak: impl FnOnce(&mut peerdex_agent::AgentConfig),
    ) -> TestAgent {
        let state = tempfile::tempdir().unwrap();
        let mut config = agent_config(server, state.path(), shares);
        tweak(&mut config);
        let mut agent = Self::start_with(config).await;
        agent._state = Some(state);
        agent
    }

    /// Starts an agent with exactly `config` (e.g. to restart on the same state directory).
    pub async fn start_with(config: peerdex_agent::AgentConfig) -> TestAgent {
        init_logging();
        let handle = peerdex_agent::start(config.clone()).await.unwrap();
        // Empty for an agent that accepts no connections (`--no-listen`).
        let url = handle
            .serve_addr
            .map(|addr| {
                let scheme = if handle.tls { "https" } else { "http" };
                format!("{scheme}://{addr}")
            })
            .unwrap_or_default();
        TestAgent {
            handle,
            config,
            url,
            _state: None,
        }
    }

    pub fn status(&self) -> peerdex_agent::AgentStatus {
        self.handle.status()
    }

    /// An HTTP client for its file server (pinned to its key).
    pub fn http(&self) -> reqwest::Client {
        peer_http(self.handle.peer_id)
    }

    /// Waits until the agent has hashed everything it found and the server holds it all.
    pub async fn wait_synced(&self) -> peerdex_agent::AgentStatus {
        wait_until(
            "the agent to hash and sync",
            Duration::from_secs(30),
            || {
                let status = self.status();
                async move {
                    let hashed: u64 = status.shares.iter().map(|s| s.counts.hashed_files).sum();
                    let files: u64 = status.shares.iter().map(|s| s.counts.files).sum();
                    let synced = status.server.online
                        && status.catalog_error.is_none()
                        && !status.progress.scanning
                        && status.progress.hash_files_pending == 0
                        && hashed == files
                        && status.unsynced_changes == 0
                        && status.server.list_version.is_some();
                    if synced {
                        Ok(status)
                    } else {
                        Err(format!("{status:?}"))
                    }
                }
            },
        )
        .await
    }

    /// Waits until the agent's control channel to the server is open.
    pub async fn wait_control_channel(&self) {
        wait_until("the control channel", Duration::from_secs(30), || {
            let open = self.status().server.control_channel;
            async move {
                if open {
                    Ok(())
                } else {
                    Err("closed".to_string())
                }
            }
        })
        .await
    }

    /// Stops the agent; returns its state directory guard so that it can be restarted.
    pub async fn stop(self) -> (peerdex_agent::AgentConfig, Option<tempfile::TempDir>) {
        self.handle.shutdown().await;
        (self.config, self._state)
    }
}

/// Writes `bytes` to `root/rel`, creating folders.
pub fn write_file(root: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Deterministic pseudo-random bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The BLAKE3 hash of `bytes`.
pub fn content_hash(bytes: &[u8]) -> FileHash {
    FileHash::from_bytes(*blake3::hash(bytes).as_bytes())
}

/// Downloads `hash` from the peers `server` knows into `dir`, with `tweak`ed options.
pub async fn download_into(
    server: &str,
    hash: FileHash,
    dir: &Path,
    tweak: impl FnOnce(&mut peerdex_download::DownloadOptions),
) -> Result<peerdex_download::DownloadReport, peerdex_download::DownloadError> {
    let mut options = peerdex_download::DownloadOptions {
        stall_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    tweak(&mut options);
    let request = peerdex_download::DownloadRequest {
        hash,
        name: None,
        destination: peerdex_download::Destination::Dir(dir.to_owned()),
    };
    peerdex_download::download(
        std::sync::Arc::new(ServerClient::new(server).unwrap()),
        &request,
        &options,
        std::sync::Arc::new(peerdex_download::DownloadProgress::default()),
        CancellationToken::new(),
    )
    .await
}

/// Waits until the server lists `n` online sources for `hash`.
pub async fn wait_for_sources(server: &TestServer, hash: FileHash, n: usize) {
    let client = server.client();
    wait_until(
        &format!("{n} sources for {hash}"),
        Duration::from_secs(30),
        || {
            let client = client.clone();
            async move {
                match client.sources(&hash).await {
                    Ok(found) if found.sources.len() == n => Ok(()),
                    Ok(found) => Err(format!("{} sources", found.sources.len())),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await
}

/// An agent sharing `name` (`bytes`) in a new folder of `root`, uploading at 1 MiB/s so that a
/// download of a few MiB is still running seconds later.
pub async fn slow_agent_sharing(
    server: &TestServer,
    root: &Path,
    name: &str,
    bytes: &[u8],
) -> TestAgent {
    let share = root.join("slow-share");
    write_file(&share, name, bytes);
    let agent = TestAgent::start(&server.url, &[&share], |c| {
        c.upload.max_rate = 1 << 20;
        c.upload.min_rate = 1;
    })
    .await;
    agent.wait_synced().await;
    agent
}

/// Waits until the download state file `state_file` records at least `pieces` written pieces.
pub async fn wait_for_written_pieces(state_file: &Path, pieces: u64) {
    wait_until(
        "pieces recorded in the state file",
        Duration::from_secs(30),
        || {
            let state = peerdex_download::part::PartState::load(state_file)
                .ok()
                .flatten();
            async move {
                match state {
                    Some(state) if state.done_count() >= pieces => Ok(()),
                    other => Err(format!("{:?}", other.map(|s| s.done_count()))),
                }
            }
        },
    )
    .await;
}

/// The name of the shared folder of the compatibility fixture (it is the share's name).
pub const COMPAT_SHARE: &str = "Fixture Share";

/// The shared folder of the compatibility fixture (`tests/fixtures/v0`), written again byte for
/// byte with the same modification times: three files, one of two pieces.
pub fn compat_share(root: &Path) {
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for (rel, len, seed) in [
        (
            "Fixture Band/First Album/01 fixture opening.flac",
            1_048_600,
            61,
        ),
        (
            "Fixture Band/First Album/02 fixture closing.flac",
            70_000,
            62,
        ),
        ("notes/fixture readme.txt", 300, 63),
    ] {
        let path = write_file(root, rel, &pseudo_random(len, seed));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
}

/// A tmpfs of `bytes` at a fresh folder, unmounted on drop; `None` where mounting is not
/// allowed (not root, no CAP_SYS_ADMIN).
pub struct SmallDisk {
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

/// Peak resident memory of this process so far (`VmHWM`), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
