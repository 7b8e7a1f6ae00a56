//! Talking to one source peer's file server (PROTOCOL §6) over one HTTP/1.1 connection, however
//! it was reached: **direct** (we dial the peer), **reverse** (the peer dials us, asked by the
//! index server with a ticket), or **relay** (both dial the index server, which splices the two).
//! Whatever the route, the connection is TLS 1.3 pinned to the key the index server named for the
//! source (PROTOCOL §12.2: the relay in the middle sees only TLS records), and the bytes are
//! verified the same way; every failure is sorted into what the downloader should do about it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use peerdex_shared::api::{ErrorCode, PeerTransport, Reachability, Source, TransferRequest};
use peerdex_shared::identity::{downloader_message, grant_use_message};
use peerdex_shared::peer::{
    self, MAX_PROOF_PIECES, REVERSE_PREAMBLE, blob_path, pieces_path, range_answer_ok,
};
use peerdex_shared::pieces::{CV_LEN, PieceCv, decode_cvs, proof_len, verify_proof};
use peerdex_shared::routes;
use peerdex_shared::tls;
use peerdex_shared::{FileHash, PeerId};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OnceCell, oneshot};
use tracing::debug;

use crate::find::SourceFinder;
use peerdex_client::server_api::{ApiError, RelayError};
use peerdex_client::{Identity, ServerClient};

/// Bytes read from a source's socket at a time.
const READ_BUFFER: usize = 512 * 1024;

/// Time allowed to open a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time allowed for a relay session to be set up (the server waits for the source).
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the index server's verdict on a source whose address it is still probing.
const PENDING_WAIT: Duration = Duration::from_secs(10);

/// How often the index server is asked for that verdict meanwhile.
const PENDING_POLL: Duration = Duration::from_millis(500);

/// Connections at once on the reverse listener that are not (yet) a source's.
const MAX_INCOMING: usize = 32;

/// How a source was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// We dialled the peer's verified address.
    Direct,
    /// The peer dialled us, on the index server's ticket.
    Reverse,
    /// Through the index server's relay.
    Relay,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Route::Direct => "direct",
            Route::Reverse => "reverse connection",
            Route::Relay => "relay",
        })
    }
}

/// A peer that holds the content, as the downloader uses it.
#[derive(Debug, Clone)]
pub struct PeerSource {
    /// Its key.
    pub peer_id: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// Its advertised address, if any.
    pub addr: Option<SocketAddr>,
    /// Whether that address was verified.
    pub reachability: Reachability,
    /// What its file server speaks (TLS pinned to `peer_id`, or plain HTTP: public content only).
    pub transport: PeerTransport,
    /// `nick (IP:port)` or `nick (firewalled)`, for messages.
    pub label: String,
    /// The server's grant, for non-public content: sent with every request to this source.
    pub grant: Option<peerdex_shared::api::Grant>,
    /// For a peer still downloading the content: the verified pieces it serves (ask only for
    /// those).
    pub pieces: Option<Arc<peerdex_shared::pieces::PieceSet>>,
}

impl PeerSource {
    /// A source from the index server's answer.
    pub fn from_api(source: &Source) -> PeerSource {
        let addr: Option<SocketAddr> = source.addr.as_deref().and_then(|a| a.parse().ok());
        let place = match addr {
            Some(addr) => addr.to_string(),
            None => "firewalled".to_owned(),
        };
        PeerSource {
            peer_id: source.peer_id,
            nickname: source.nickname.clone(),
            addr,
            reachability: source.reachability,
            transport: source.transport,
            label: format!("{} ({place})", source.nickname),
            grant: source.grant.clone(),
            pieces: None,
        }
    }

    /// A peer serving the verified pieces `pieces` of a download it has not finished.
    pub fn partial(source: &peerdex_shared::api::PartialSource) -> PeerSource {
        let mut peer = PeerSource::from_api(&source.source);
        peer.label = format!("{} (partial, {} pieces)", peer.label, source.pieces.held());
        peer.pieces = Some(Arc::new(source.pieces.clone()));
        peer
    }
}

/// Why a request to a source failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// Its upload slots (or the relay) are full: ask again after the delay.
    #[error("busy: {reason}")]
    Busy {
        /// From `Retry-After`.
        retry_after: Duration,
        /// What is full, as the peer or the server said.
        reason: String,
        /// Our place in its upload queue (1 = next), when it told us.
        queue_position: Option<u64>,
    },
    /// It no longer has the content (404), or the file changed since it was hashed (409).
    #[error("no longer has the file ({0})")]
    Gone(StatusCode),
    /// Cannot connect, or the connection broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// It stopped sending.
    #[error("stalled: no data for too long")]
    Stalled,
    /// It sent bytes or hashes that do not match the content hash.
    #[error("sent data that does not match the content hash ({0})")]
    BadData(String),
    /// It sent a piece that does not match its proven piece hash.
    #[error("sent data that does not match the content hash (piece {0} does not match)")]
    BadPiece(u64),
    /// Some other HTTP answer.
    #[error("answered {0}")]
    Refused(StatusCode),
    /// Whoever answered does not hold the source's key: another host at its address, or a
    /// man in the middle. Never asked again in this download.
    #[error("is not who the index server says: {0}")]
    WrongKey(peerdex_shared::tls::WrongPeerKey),
    /// It speaks plain HTTP, and the content is not public: not fetched in clear.
    #[error("speaks plain HTTP; content that is not public is fetched only over TLS")]
    Insecure,
    /// The download stopped for a local reason (cancelled, disk full, output closed): not the
    /// source's fault.
    #[error("stopped")]
    LocalStop,
}

impl SourceError {
    /// Whether the source sent data that failed verification (it lied, or its copy is damaged).
    pub fn is_bad_data(&self) -> bool {
        matches!(self, SourceError::BadData(_) | SourceError::BadPiece(_))
    }

    /// Whether asking this source again in the same download cannot help.
    pub fn is_final(&self) -> bool {
        self.is_bad_data()
            || matches!(
                self,
                SourceError::Gone(_) | SourceError::WrongKey(_) | SourceError::Insecure
            )
    }
}

fn classify(response: &hyper::Response<Incoming>) -> Option<SourceError> {
    let status = response.status();
    if status.is_success() {
        return None;
    }
    Some(match status {
        StatusCode::SERVICE_UNAVAILABLE => {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            let queue_position = header(peer::header::QUEUE_POSITION);
            SourceError::Busy {
                retry_after: Duration::from_secs(header("retry-after").unwrap_or(5).clamp(1, 60)),
                reason: match queue_position {
                    Some(n) => format!("all upload slots in use, number {n} in the queue"),
                    None => "all upload slots in use".to_owned(),
                },
                queue_position,
            }
        }
        StatusCode::NOT_FOUND | StatusCode::CONFLICT | StatusCode::RANGE_NOT_SATISFIABLE => {
            SourceError::Gone(status)
        }
        other => SourceError::Refused(other),
    })
}

/// Bytes read from a source's socket at once under TLS.
const TLS_READ_BUFFER: usize = 256 * 1024;

/// One HTTP/1.1 connection to a source's file server.
pub struct Connection {
    sender: SendRequest<Empty<Bytes>>,
    /// How it was reached.
    pub route: Route,
    stall: Duration,
    /// The grant and its proof, as request header values, for non-public content.
    grant: Option<(String, String)>,
    /// Our key and its signature for this source and content (`peer::header::DOWNLOADER`): the
    /// source counts our requests against our key, whatever address they come from.
    downloader: Option<String>,
}

impl Connection {
    /// Speaks to `source` on `stream`, however it was reached: TLS pinned to its key when it
    /// speaks TLS, else plain HTTP for public content only.
    async fn establish<S>(
        stream: S,
        source: &PeerSource,
        route: Route,
        stall: Duration,
    ) -> Result<Connection, SourceError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if !source.transport.is_tls() {
            if source.grant.is_some() {
                return Err(SourceError::Insecure);
            }
            return Connection::handshake(TokioIo::new(stream), route, stall).await;
        }
        let connector = tokio_rustls::TlsConnector::from(tls::peer_client_config(source.peer_id));
        let secured = tokio::time::timeout(
            CONNECT_TIMEOUT,
            // rustls pulls records from its transport 4 KiB at a time: a buffer under it turns
            // those into memory copies instead of one syscall each (BENCHMARKS, issue 22).
            connector.connect(
                tls::peer_server_name(),
                tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, stream),
            ),
        )
        .await
        .map_err(|_| SourceError::Unreachable("TLS handshake timed out".into()))?
        .map_err(|e| match tls::wrong_key_of(&e) {
            Some(wrong) => SourceError::WrongKey(wrong),
            None => SourceError::Unreachable(format!("TLS handshake: {e}")),
        })?;
        Connection::handshake(TokioIo::new(secured), route, stall).await
    }

    async fn handshake<I>(io: I, route: Route, stall: Duration) -> Result<Connection, SourceError>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        // Large reads: small socket reads held loopback transfers far below what the disk and
        // BLAKE3 can take (PITFALLS).
        let (sender, driver) = hyper::client::conn::http1::Builder::new()
            .read_buf_exact_size(Some(READ_BUFFER))
            .handshake(io)
            .await
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = driver.await {
                debug!(error = %e, "peer connection ended");
            }
        });
        Ok(Connection {
            sender,
            route,
            stall,
            grant: None,
            downloader: None,
        })
    }

    async fn get(
        &mut self,
        path: &str,
        range: Option<String>,
    ) -> Result<hyper::Response<Incoming>, SourceError> {
        let mut request = hyper::Request::get(path).header(hyper::header::HOST, "peer");
        if let Some(range) = range {
            request = request.header(hyper::header::RANGE, range);
        }
        if let Some((grant, proof)) = &self.grant {
            request = request
                .header(peer::header::GRANT, grant)
                .header(peer::header::GRANT_PROOF, proof);
        }
        if let Some(downloader) = &self.downloader {
            request = request.header(peer::header::DOWNLOADER, downloader);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        let sent = async {
            self.sender
                .ready()
                .await
                .map_err(|e| SourceError::Unreachable(e.to_string()))?;
            self.sender
                .send_request(request)
                .await
                .map_err(|e| SourceError::Unreachable(e.to_string()))
        };
        tokio::time::timeout(self.stall, sent)
            .await
            .map_err(|_| SourceError::Stalled)?
    }
}

/// The next chunk of a response body, within the stall timeout; `None` at its end.
async fn next_chunk(body: &mut Incoming, stall: Duration) -> Result<Option<Bytes>, SourceError> {
    loop {
        let frame = tokio::time::timeout(stall, body.frame())
            .await
            .map_err(|_| SourceError::Stalled)?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(SourceError::Unreachable(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Fetches and verifies the hashes of every piece of the content (`count` ≥ 2 pieces).
pub async fn fetch_piece_hashes(
    conn: &mut Connection,
    hash: &FileHash,
    size: u64,
    count: u64,
) -> Result<Vec<PieceCv>, SourceError> {
    let mut all = Vec::with_capacity(count.min(1 << 20) as usize);
    let mut first = 0;
    while first < count {
        let end = (first + MAX_PROOF_PIECES).min(count);
        let path = pieces_path(hash, first, end - first);
        let mut response = conn.get(&path, None).await?;
        if let Some(e) = classify(&response) {
            return Err(e);
        }
        // Read no more than the proof can be: a peer cannot make us buffer an endless body.
        let expected = proof_len(count, first, end)
            .map_err(|e| SourceError::BadData(format!("piece hashes: {e}")))?
            * CV_LEN;
        let mut body = Vec::with_capacity(expected);
        while let Some(chunk) = next_chunk(response.body_mut(), conn.stall).await? {
            if body.len() + chunk.len() > expected {
                return Err(SourceError::BadData("piece hashes: answer too long".into()));
            }
            body.extend_from_slice(&chunk);
        }
        let proof = decode_cvs(&body)
            .ok_or_else(|| SourceError::BadData("piece hashes of a wrong length".into()))?;
        let pieces = verify_proof(hash, size, first, end, &proof)
            .map_err(|e| SourceError::BadData(format!("piece hashes: {e}")))?;
        all.extend(pieces);
        first = end;
    }
    Ok(all)
}

/// A response streaming the bytes `start..end` of the content.
pub struct RangeStream {
    body: Incoming,
    stall: Duration,
}

impl RangeStream {
    /// Asks for bytes `start..end` (end exclusive, non-empty) on `conn`.
    pub async fn open(
        conn: &mut Connection,
        hash: &FileHash,
        start: u64,
        end: u64,
    ) -> Result<RangeStream, SourceError> {
        let response = conn
            .get(&blob_path(hash), Some(format!("bytes={start}-{}", end - 1)))
            .await?;
        if let Some(e) = classify(&response) {
            return Err(e);
        }
        let header = |name: hyper::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let answered = range_answer_ok(
            response.status().as_u16(),
            header(hyper::header::CONTENT_RANGE).as_deref(),
            header(hyper::header::CONTENT_LENGTH).as_deref(),
            start,
            end,
        );
        if !answered {
            return Err(SourceError::BadData(format!(
                "answered range {start}-{} with {:?}",
                end - 1,
                response.headers().get(hyper::header::CONTENT_RANGE)
            )));
        }
        Ok(RangeStream {
            body: response.into_body(),
            stall: conn.stall,
        })
    }

    /// The next chunk of bytes; `None` at the end of the response.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        next_chunk(&mut self.body, self.stall).await
    }
}

/// Connections waiting on our reverse listener, by the token the source sends first.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<TcpStream>>>>;

/// The port firewalled sources dial back to (reverse connections). It also answers the index
/// server's connect-back probe, which verifies the address before any source is told to dial it.
pub struct ReverseListener {
    port: u16,
    waiting: Waiting,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReverseListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReverseListener {
    async fn bind(identity: Identity) -> std::io::Result<ReverseListener> {
        let listener = match TcpListener::bind("[::]:0").await {
            Ok(listener) => listener,
            Err(_) => TcpListener::bind("0.0.0.0:0").await?,
        };
        let port = listener.local_addr()?.port();
        let tls = tokio_rustls::TlsAcceptor::from(
            identity
                .tls_server_config()
                .map_err(std::io::Error::other)?,
        );
        let waiting: Waiting = Arc::default();
        let accepting = waiting.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_INCOMING));
        let task = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // Out of descriptors or similar: do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue; // too many at once: drop it
                };
                let (identity, waiting, tls) = (identity.clone(), accepting.clone(), tls.clone());
                tokio::spawn(async move {
                    route_incoming(stream, identity, waiting, tls).await;
                    drop(slot);
                });
            }
        });
        Ok(ReverseListener {
            port,
            waiting,
            task,
        })
    }

    fn expect(&self, token: &str) -> oneshot::Receiver<TcpStream> {
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token.to_owned(), tx);
        rx
    }

    fn forget(&self, token: &str) {
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token);
    }
}

/// Sorts an incoming connection: a source answering a ticket (preamble line with the token) or
/// the index server's connect-back probe (TLS with our key certificate, or plain HTTP).
async fn route_incoming(
    mut stream: TcpStream,
    identity: Identity,
    waiting: Waiting,
    tls: tokio_rustls::TlsAcceptor,
) {
    // Enough bytes to tell a source's preamble from HTTP (it may arrive in pieces).
    let mut head = [0u8; 16];
    let mut n = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while n < head.len() {
        match tokio::time::timeout_at(deadline, stream.peek(&mut head)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(got)) => n = got,
        }
        if !REVERSE_PREAMBLE
            .as_bytes()
            .starts_with(&head[..n.min(REVERSE_PREAMBLE.len())])
        {
            break; // not a preamble: HTTP
        }
        if n < head.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    if head[..n].starts_with(REVERSE_PREAMBLE.as_bytes()) {
        // Read the preamble line byte by byte, so nothing after it is consumed.
        let mut line = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            let read =
                tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut byte)).await;
            match read {
                Ok(Ok(_)) if byte[0] == b'\n' => break,
                Ok(Ok(_)) if line.len() < REVERSE_PREAMBLE.len() + 80 => line.push(byte[0]),
                _ => return,
            }
        }
        let token = String::from_utf8_lossy(&line[REVERSE_PREAMBLE.len()..]).into_owned();
        let sender = waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token.trim());
        if let Some(sender) = sender {
            let _ = sender.send(stream);
        }
        return;
    }
    let deadline = Duration::from_secs(30);
    if head[..n].first() == Some(&tls::TLS_HANDSHAKE_BYTE) {
        let answered = async {
            if let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(5), tls.accept(stream)).await
            {
                answer_probe(stream, identity).await;
            }
        };
        let _ = tokio::time::timeout(deadline, answered).await;
    } else {
        let _ = tokio::time::timeout(deadline, answer_probe(stream, identity)).await;
    }
}

/// Answers the index server's connect-back probe on one connection.
async fn answer_probe<S>(stream: S, identity: Identity)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let response = peerdex_client::connect_back::answer(&identity, &request);
        async move { Ok::<_, std::convert::Infallible>(response) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Opens connections to sources: direct when the source has a verified address, else a reverse
/// connection when ours can be verified, else the relay.
pub struct Connector {
    finder: Arc<dyn SourceFinder>,
    identity: Identity,
    stall: Duration,
    listener: OnceCell<Option<ReverseListener>>,
    /// Our address failed the server's connect-back once: reverse connections cannot work.
    unreachable: std::sync::atomic::AtomicBool,
    /// Sources whose pending address was already waited on: once is enough per download.
    awaited: Mutex<std::collections::HashSet<PeerId>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    hex::encode(bytes)
}

impl Connector {
    /// A connector that asks the finder's broker for reverse connections and relays (and the
    /// finder for verdicts on pending addresses), proving addresses with `identity`.
    pub fn new(
        finder: Arc<dyn SourceFinder>,
        identity: Identity,
        stall: Duration,
        accept_connections: bool,
    ) -> Connector {
        Connector {
            finder,
            identity,
            stall,
            listener: OnceCell::new(),
            unreachable: std::sync::atomic::AtomicBool::new(!accept_connections),
            awaited: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Connects to `source` for content `hash`, trying direct, reverse, then relay. Only an
    /// address the index server verified is dialled directly: an announced address still being
    /// probed is waited on (bounded), since a peer may announce any port of its host.
    pub async fn connect(
        &self,
        source: &PeerSource,
        hash: &FileHash,
    ) -> Result<Connection, SourceError> {
        let mut conn = self.open_route(source, hash).await?;
        // Non-public content: the server's grant, and our signature showing it is ours.
        conn.grant = source.grant.as_ref().map(|grant| {
            let proof = self.identity.sign(&grant_use_message(&grant.signature));
            (grant.header_value(), proof.to_string())
        });
        let minute = peer::unix_minute();
        let me = self.identity.peer_id();
        let signature = self
            .identity
            .sign(&downloader_message(&source.peer_id, &me, hash, minute));
        conn.downloader = Some(peer::downloader_header(&me, minute, &signature));
        Ok(conn)
    }

    async fn open_route(
        &self,
        source: &PeerSource,
        hash: &FileHash,
    ) -> Result<Connection, SourceError> {
        let mut errors = Vec::new();
        let verified = match (source.addr, source.reachability) {
            (Some(addr), Reachability::Reachable) => Some(addr),
            (Some(addr), Reachability::Pending) => self.await_verdict(source, hash, addr).await,
            _ => None,
        };
        if let Some(addr) = verified {
            match self.direct(source, addr).await {
                Ok(conn) => return Ok(conn),
                // Whoever answers there is not the source: no other route makes it so.
                Err(e @ (SourceError::WrongKey(_) | SourceError::Insecure)) => return Err(e),
                Err(e) => errors.push(format!("direct: {e}")),
            }
        }
        if !self.unreachable.load(std::sync::atomic::Ordering::Relaxed) {
            match self.reverse(source, hash).await {
                Ok(conn) => return Ok(conn),
                Err(e) => errors.push(format!("reverse: {e}")),
            }
        }
        // The server waits up to its ticket lifetime for the source; a bit more here.
        let relayed = tokio::time::timeout(RELAY_TIMEOUT, self.relay(source, hash))
            .await
            .unwrap_or_else(|_| Err(SourceError::Unreachable("the relay did not answer".into())));
        match relayed {
            Ok(conn) => Ok(conn),
            Err(busy @ SourceError::Busy { .. }) => Err(busy),
            Err(e) => {
                errors.push(format!("relay: {e}"));
                Err(SourceError::Unreachable(errors.join("; ")))
            }
        }
    }

    /// Waits, up to [`PENDING_WAIT`], for the index server's verdict on a source whose address
    /// is still being probed. Returns the address once it is verified (`None`: not verified in
    /// time, or firewalled).
    async fn await_verdict(
        &self,
        source: &PeerSource,
        hash: &FileHash,
        addr: SocketAddr,
    ) -> Option<SocketAddr> {
        let first_wait = self
            .awaited
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source.peer_id);
        let wait = if first_wait {
            PENDING_WAIT
        } else {
            PENDING_POLL
        };
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(PENDING_POLL).await;
            let Ok(found) = self.finder.find(hash).await else {
                continue;
            };
            let listed = std::iter::once(&found.sources)
                .chain(found.other_sizes.iter().map(|claim| &claim.sources))
                .flatten()
                .find(|s| s.peer_id == source.peer_id);
            match listed {
                None => return None,
                Some(s) => match s.reachability {
                    Reachability::Pending => continue,
                    // The verdict is for the address the server sees now.
                    Reachability::Reachable => {
                        return s
                            .addr
                            .as_deref()
                            .and_then(|a| a.parse().ok())
                            .filter(|a| *a == addr);
                    }
                    Reachability::Firewalled => return None,
                },
            }
        }
        debug!(source = %source.label, "address still unverified; not dialling it");
        None
    }

    async fn direct(
        &self,
        source: &PeerSource,
        addr: SocketAddr,
    ) -> Result<Connection, SourceError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| SourceError::Unreachable("connection timed out".into()))?
            .map_err(|e| SourceError::Unreachable(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Connection::establish(stream, source, Route::Direct, self.stall).await
    }

    async fn reverse(
        &self,
        source: &PeerSource,
        hash: &FileHash,
    ) -> Result<Connection, SourceError> {
        let listener = self
            .listener
            .get_or_init(|| async { ReverseListener::bind(self.identity.clone()).await.ok() })
            .await
            .as_ref()
            .ok_or_else(|| {
                SourceError::Unreachable("cannot listen for reverse connections".into())
            })?;
        let token = random_token();
        let incoming = listener.expect(&token);
        let request = TransferRequest {
            source: source.peer_id,
            hash: *hash,
            downloader: self.identity.peer_id(),
            port: listener.port,
            token: token.clone(),
            transport: PeerTransport::Tls,
        };
        let answer = match self.broker()?.transfer(&request).await {
            Ok(answer) => answer,
            Err(e) => {
                listener.forget(&token);
                if matches!(
                    e.code(),
                    Some(ErrorCode::AddressUnverified | ErrorCode::RateLimited)
                ) {
                    // Nobody can dial us: do not ask again for other sources.
                    self.unreachable
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                return Err(server_error(e));
            }
        };
        let wait = Duration::from_secs(answer.expires_in_secs.clamp(1, 60));
        let stream = match tokio::time::timeout(wait, incoming).await {
            Ok(Ok(stream)) => stream,
            _ => {
                listener.forget(&token);
                return Err(SourceError::Unreachable(
                    "the source did not connect back in time".into(),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        // The source dialled us, but it is still the TLS server: it proves its key the same way.
        Connection::establish(stream, source, Route::Reverse, self.stall).await
    }

    async fn relay(&self, source: &PeerSource, hash: &FileHash) -> Result<Connection, SourceError> {
        let path = format!(
            "{}?source={}&hash={hash}&downloader={}&token={}",
            routes::RELAY,
            source.peer_id,
            self.identity.peer_id(),
            random_token()
        );
        let (upgraded, _) = self
            .broker()?
            .relay_upgrade(&path, None, CONNECT_TIMEOUT)
            .await
            .map_err(|e| match e {
                // Full for now (not turned off): wait and ask again.
                RelayError::Refused {
                    retry_after: Some(secs),
                    message,
                    ..
                } => SourceError::Busy {
                    retry_after: Duration::from_secs(secs.clamp(1, 60)),
                    reason: format!("relay: {message}"),
                    queue_position: None,
                },
                RelayError::Refused { message, .. } => {
                    SourceError::Unreachable(format!("relay refused: {message}"))
                }
                RelayError::Connect(why) => SourceError::Unreachable(why),
            })?;
        // Inside the server's splice: the relay forwards TLS records it cannot read.
        Connection::establish(TokioIo::new(upgraded), source, Route::Relay, self.stall).await
    }
}

impl Connector {
    /// The index server that can ask a firewalled source to connect.
    fn broker(&self) -> Result<&ServerClient, SourceError> {
        self.finder.broker().ok_or_else(|| {
            SourceError::Unreachable("no index server to ask the source to connect".into())
        })
    }
}

fn server_error(e: ApiError) -> SourceError {
    SourceError::Unreachable(match e {
        ApiError::Server { body, .. } => body.error,
        other => other.to_string(),
    })
}
