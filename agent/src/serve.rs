//! The agent's file server: other peers download shared content from it by hash over HTTP/1.1.
//!
//! Routes (see `docs/PROTOCOL.md`, "Peer file server"):
//! - `GET`/`HEAD /peerdex/v1/blobs/{hash}`: the content, with one byte range at most.
//! - `GET /peerdex/v1/blobs/{hash}/pieces?first=A&count=K`: the proof for pieces `A..A+K`.
//! - `GET /peerdex/v1/connect-back?nonce=N`: the index server's reachability probe.
//!
//! Only content in the catalog is served, never a path taken from a request: the hash is looked
//! up, and the file it was read from is opened and checked to be the same file (inode, size,
//! mtime) before a byte is sent. Anything that is not exactly a known hash gets the same 404.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use peerdex_shared::api::Grant;
use peerdex_shared::identity::{grant_message, grant_use_message};
use peerdex_shared::peer::{
    self, CONNECT_BACK_PATH, MAX_PROOF_PIECES, parse_blob_path, peer_bucket,
};
use peerdex_shared::pieces::{PIECE_SIZE, build_proof, encode_cvs, piece_count};
use peerdex_shared::{FileHash, PeerId, PeerSignature};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::LiveShares;
use super::catalog::{Catalog, CatalogReader, FileRecord, Stat};
use super::config::UploadConfig;
use super::events::Events;
use super::hash::open_shared;
use super::link::Session;
use super::slots::{Bandwidth, Downloader, Refusal, SlotGuard, SlotLimits, Slots};
use peerdex_client::Identity;

/// Bytes read from disk and handed to the socket at a time.
const CHUNK: usize = 256 * 1024;

type ResponseBody = BoxBody<Bytes, std::io::Error>;

/// An upload in progress, as `peerdex status` lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct UploadInfo {
    /// Who downloads: its key (short) when it proved it, else its address.
    pub peer: String,
    /// Content.
    pub hash: FileHash,
    /// Path within its share.
    pub path: String,
    /// Bytes sent so far.
    pub sent: u64,
    /// Seconds since the upload began (for its rate).
    #[serde(default)]
    pub elapsed_secs: f64,
    /// When it began (not sent).
    #[serde(skip, default = "Instant::now")]
    pub started: Instant,
    /// Bytes to send.
    pub length: u64,
}

/// Whether every piece that bytes `start..end` of a `len`-byte content touch is held.
fn pieces_held(held: &[bool], len: u64, start: u64, end: u64) -> bool {
    if start >= end {
        return len == 0 || held.iter().all(|h| *h);
    }
    let first = start / PIECE_SIZE;
    let last = (end - 1) / PIECE_SIZE;
    (first..=last).all(|i| held.get(i as usize) == Some(&true))
}

/// Whether the pieces that bytes `start..end` touch, read from `file`, match their proven
/// piece hashes.
fn partial_pieces_verify(
    file: &std::fs::File,
    hash: &FileHash,
    len: u64,
    cvs: &[peerdex_shared::pieces::PieceCv],
    start: u64,
    end: u64,
) -> bool {
    use std::os::unix::fs::FileExt;
    if start >= end {
        return false;
    }
    (start / PIECE_SIZE..=(end - 1) / PIECE_SIZE).all(|i| {
        let piece = peerdex_shared::pieces::piece_range(len, i);
        let mut bytes = vec![0u8; (piece.end - piece.start) as usize];
        file.read_exact_at(&mut bytes, piece.start).is_ok()
            && cvs.get(i as usize).is_some_and(|cv| {
                peerdex_shared::pieces::verify_piece(hash, len, i, Some(cv), &bytes).is_ok()
            })
    })
}

/// A connection opened on a ticket (reverse or relayed): it serves the ticket's content only,
/// and its requests count against the ticket's downloader.
#[derive(Debug, Clone, Copy)]
pub struct OnTicket {
    /// The only content served.
    pub hash: FileHash,
    /// Who asked for the connection (the server checked its key).
    pub downloader: PeerId,
}

/// Counters of the file server.
#[derive(Debug, Default)]
pub struct ServeStats {
    /// Bytes of content sent.
    pub bytes_sent: AtomicU64,
    /// Uploads that sent their whole range.
    pub completed: AtomicU64,
    /// Requests refused for lack of a slot.
    pub refused: AtomicU64,
    /// Uploads dropped for being too slow.
    pub dropped_slow: AtomicU64,
    active: Mutex<HashMap<u64, UploadInfo>>,
    next_id: AtomicU64,
}

impl ServeStats {
    /// Uploads in progress.
    pub fn active(&self) -> Vec<UploadInfo> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .values()
            .cloned()
            .map(|mut upload| {
                upload.elapsed_secs = upload.started.elapsed().as_secs_f64();
                upload
            })
            .collect()
    }
}

/// Everything a request handler needs.
pub struct FileServer {
    catalog: Arc<Catalog>,
    shares: LiveShares,
    identity: Identity,
    config: UploadConfig,
    slots: Arc<Slots>,
    bandwidth: Option<Bandwidth>,
    events: Arc<Events>,
    /// The current session with the index server: its key signs grants for non-public files.
    sessions: tokio::sync::watch::Receiver<Option<Session>>,
    /// Counters for status.
    pub stats: ServeStats,
    /// Unfinished downloads whose verified pieces we serve (PROTOCOL §11.4).
    partials: Arc<super::transfers::PartialShelf>,
    /// TLS with our key certificate on every connection; `None` with `upload.plain_http`.
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for FileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileServer").finish_non_exhaustive()
    }
}

fn json_error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn full(bytes: Bytes) -> ResponseBody {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

fn not_found() -> Response<ResponseBody> {
    json_error(StatusCode::NOT_FOUND, "no such content")
}

/// A byte range to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// What a `Range` header asks of a `len`-byte file.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) Range header: the whole file.
    Full,
    /// One satisfiable range.
    Partial(ByteRange),
    /// Nothing satisfiable, or more than one range.
    Unsatisfiable,
}

/// Reads a `Range` header (untrusted) against a file of `len` bytes.
pub fn parse_range(header: Option<&HeaderValue>, len: u64) -> RangeRequest {
    let Some(spec) = header
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().strip_prefix("bytes="))
    else {
        return RangeRequest::Full; // absent, or a unit we do not know: ignored, as HTTP says
    };
    if spec.contains(',') {
        // One range per request: many overlapping ranges were a denial of service elsewhere.
        return RangeRequest::Unsatisfiable;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let parse = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let range = match (first.trim().is_empty(), parse(first), parse(last)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) if n > 0 => ByteRange {
            start: len.saturating_sub(n),
            end: len,
        },
        (true, _, _) => return RangeRequest::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => ByteRange { start, end: len },
        (false, Some(start), Some(end)) if end >= start => ByteRange {
            start,
            end: end.saturating_add(1).min(len),
        },
        _ => return RangeRequest::Full,
    };
    if range.start >= len {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(range)
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl FileServer {
    /// A file server over `catalog`.
    pub fn new(
        catalog: Arc<Catalog>,
        shares: LiveShares,
        identity: Identity,
        config: UploadConfig,
        events: Arc<Events>,
        sessions: tokio::sync::watch::Receiver<Option<Session>>,
        partials: Arc<super::transfers::PartialShelf>,
    ) -> Result<Arc<FileServer>, peerdex_shared::tls::CertificateError> {
        let tls = if config.plain_http {
            warn!("upload.plain_http is set: serving public content only, in clear");
            None
        } else {
            Some(tokio_rustls::TlsAcceptor::from(
                identity.tls_server_config()?,
            ))
        };
        let slots = Slots::new(SlotLimits {
            slots: config.slots,
            per_peer: config.per_peer,
            queue_len: config.queue_len,
            hold: Duration::from_secs(config.queue_hold_secs),
        });
        let bandwidth = (config.max_rate > 0).then(|| Bandwidth::new(config.max_rate));
        Ok(Arc::new(FileServer {
            catalog,
            shares,
            identity,
            config,
            slots,
            bandwidth,
            events,
            sessions,
            stats: ServeStats::default(),
            partials,
            tls,
        }))
    }

    /// Whether the request carries a valid grant for `hash` from us: signed by the index
    /// server's key, not expired, and presented by its downloader (the proof).
    fn granted<B>(&self, request: &Request<B>, hash: FileHash) -> bool {
        let Some(server_key) = self.sessions.borrow().as_ref().and_then(|s| s.server_key) else {
            return false;
        };
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let Some(grant) = header(peer::header::GRANT)
            .and_then(|v| Grant::from_header(&v, self.identity.peer_id(), hash))
        else {
            return false;
        };
        let Some(proof) =
            header(peer::header::GRANT_PROOF).and_then(|v| v.parse::<PeerSignature>().ok())
        else {
            return false;
        };
        grant.expires_at >= super::link::unix_now()
            && server_key
                .verify(
                    &grant_message(&grant.source, &grant.downloader, &hash, grant.expires_at),
                    &grant.signature,
                )
                .is_ok()
            && grant
                .downloader
                .verify(&grant_use_message(&grant.signature), &proof)
                .is_ok()
    }

    /// The files of `files` this request may have: all with a grant (or on a ticket's
    /// connection, which the server only opens for those it would grant), else the public ones.
    /// What is left out is answered like a hash we do not have.
    fn permitted(&self, mut files: Vec<FileRecord>, granted: bool) -> Vec<FileRecord> {
        // In clear, nothing but public content, whatever the request carries.
        if granted && self.tls.is_some() {
            return files;
        }
        let shares = self.shares.borrow().clone();
        files.retain(|file| {
            shares
                .iter()
                .find(|s| s.name == file.key.share)
                .is_some_and(|s| s.rules.visibility_of(&file.key.rel_path()).is_public())
        });
        files
    }

    /// (uploads running, requests queued).
    pub fn slot_usage(&self) -> (usize, usize) {
        self.slots.usage()
    }

    /// Runs a catalog query on a pooled reader, off the async threads; `None` (logged) when the
    /// catalog fails.
    async fn with_reader<T: Send + 'static>(
        self: &Arc<Self>,
        query: impl FnOnce(&CatalogReader) -> Result<T, super::catalog::CatalogError> + Send + 'static,
    ) -> Option<T> {
        match self.catalog.call(move |c| c.read(query)).await {
            Ok(value) => Some(value),
            Err(e) => {
                warn!(error = %e, "catalog lookup failed");
                None
            }
        }
    }

    /// Serves `listener` until `shutdown`.
    ///
    /// With `max_connections` open, a new connection takes the place of the one that has been
    /// idle (between requests, or never sending one) longest: idle keep-alive connections from
    /// many addresses must not lock out a peer that wants to download. Only when every open
    /// connection is busy is the new one closed.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let connections = Arc::new(tokio::sync::Semaphore::new(self.config.max_connections));
        let per_peer = Arc::new(PeerConnections::default());
        let open = Arc::new(OpenConnections::default());
        loop {
            let (stream, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            let permit = match connections.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    let Some(idle) = open.longest_idle() else {
                        debug!(%remote, "connection limit reached, none idle; closing");
                        continue;
                    };
                    debug!(%remote, "connection limit reached; closing the longest idle one");
                    idle.close.cancel();
                    // Its task ends at once and gives its place back.
                    let freed = tokio::time::timeout(
                        Duration::from_secs(1),
                        connections.clone().acquire_owned(),
                    )
                    .await;
                    match freed {
                        Ok(Ok(permit)) => permit,
                        _ => continue,
                    }
                }
            };
            let Some(peer_permit) = per_peer
                .clone()
                .acquire(peer_bucket(remote.ip()), MAX_CONNECTIONS_PER_PEER)
            else {
                debug!(%remote, "per-peer connection limit reached; closing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            let tracked = open.add(shutdown.child_token());
            let open = open.clone();
            tokio::spawn(async move {
                server
                    .clone()
                    .serve_stream(stream, remote, None, tracked.clone())
                    .await;
                open.remove(&tracked);
                drop(permit);
                drop(peer_permit);
            });
        }
    }

    /// Serves HTTP on one connection, however it was opened: accepted on our port, dialled by us
    /// on a ticket (reverse connection), or through the index server's relay. `only` restricts it
    /// to one content (the ticket's); `remote` is who the slots count it against.
    pub async fn serve_io<S>(
        self: Arc<Self>,
        stream: S,
        remote: SocketAddr,
        only: Option<OnTicket>,
        shutdown: CancellationToken,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let tracked = Arc::new(OpenConnection::new(0, shutdown.child_token()));
        self.serve_stream(stream, remote, only, tracked).await;
    }

    /// Runs our side of the TLS handshake on `stream` (we are the TLS server on every route,
    /// also when we dialled), then serves HTTP on it.
    async fn serve_stream<S>(
        self: Arc<Self>,
        stream: S,
        remote: SocketAddr,
        only: Option<OnTicket>,
        tracked: Arc<OpenConnection>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Some(tls) = self.tls.clone() else {
            self.serve_connection(TokioIo::new(stream), remote, only, tracked)
                .await;
            return;
        };
        let handshake = Duration::from_secs(self.config.header_read_timeout_secs);
        let accepted = tokio::select! {
            accepted = tokio::time::timeout(handshake, tls.accept(stream)) => accepted,
            () = tracked.close.cancelled() => return,
        };
        match accepted {
            Ok(Ok(stream)) => {
                self.serve_connection(TokioIo::new(stream), remote, only, tracked)
                    .await;
            }
            // Plain HTTP, a scanner, a peer that gave up: nothing was said in clear.
            Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
            Err(_) => debug!(%remote, "TLS handshake timed out"),
        }
    }

    /// [`FileServer::serve_io`] for a connection whose idleness `tracked` records (and whose
    /// `close` token ends it).
    async fn serve_connection<I>(
        self: Arc<Self>,
        io: I,
        remote: SocketAddr,
        only: Option<OnTicket>,
        tracked: Arc<OpenConnection>,
    ) where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let connection_token = tracked.close.clone();
        let server = self.clone();
        let token = connection_token.clone();
        let service = hyper::service::service_fn(move |request| {
            let server = server.clone();
            let token = token.clone();
            let busy = Busy::start(tracked.clone());
            async move {
                let response = server.handle(request, remote, only, token).await;
                // The connection is busy until the body is sent (or dropped).
                Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }.boxed()))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(self.config.header_read_timeout_secs))
            .max_buf_size(MAX_HEADER_BYTES)
            .max_headers(MAX_HEADERS)
            .serve_connection(io, service);
        async move {
            tokio::select! {
                result = connection => if let Err(e) = result {
                    debug!(error = %e, "connection ended with an error");
                },
                () = connection_token.cancelled() => {}
            }
        }
        .instrument(info_span!("peer_connection", %remote))
        .await;
    }

    async fn handle<B>(
        self: Arc<Self>,
        request: Request<B>,
        remote: SocketAddr,
        only: Option<OnTicket>,
        connection: CancellationToken,
    ) -> Response<ResponseBody> {
        // hyper bounds its read buffer, but a head that arrives in one read is parsed whole.
        let head_bytes: usize = request.uri().to_string().len()
            + request
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if head_bytes > MAX_HEADER_BYTES {
            return json_error(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers are too large",
            );
        }
        let path = request.uri().path();
        // On a ticket's connection (reverse or relayed) only the ticket's content is served: no
        // signatures for whoever is on the other end.
        if path == CONNECT_BACK_PATH && only.is_none() {
            let answer = peerdex_client::connect_back::answer(&self.identity, &request);
            let (parts, body) = answer.into_parts();
            return Response::from_parts(parts, body.map_err(|never| match never {}).boxed());
        }
        let Some((hash, pieces)) = parse_blob_path(path) else {
            return not_found();
        };
        // A connection opened on a ticket serves that ticket's content only.
        if only.is_some_and(|only| only.hash != hash) {
            return not_found();
        }
        let span = info_span!("upload", peer = %remote.ip(), hash = %hash.fmt_short());
        let granted = only.is_some() || self.granted(&request, hash);
        // Slots count per downloader key: the ticket's, or the one the request proves.
        let downloader = match only {
            Some(ticket) => Downloader::Key(ticket.downloader),
            None => request
                .headers()
                .get(peer::header::DOWNLOADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    peer::verify_downloader_header(
                        v,
                        &self.identity.peer_id(),
                        &hash,
                        peer::unix_minute(),
                    )
                })
                .map_or(Downloader::Net(peer_bucket(remote.ip())), Downloader::Key),
        };
        // A direct connection's network has a cap of its own (keys are free to make).
        let net = only.is_none().then(|| peer_bucket(remote.ip()));
        async move {
            match (request.method(), pieces) {
                (&Method::GET, true) => self.pieces(hash, request.uri().query(), granted).await,
                (&Method::GET | &Method::HEAD, false) => {
                    self.blob(&request, hash, granted, (downloader, net), connection)
                        .await
                }
                _ => {
                    let mut response =
                        json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                    response
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn pieces(
        self: &Arc<Self>,
        hash: FileHash,
        query: Option<&str>,
        granted: bool,
    ) -> Response<ResponseBody> {
        let lookup = self
            .with_reader(move |conn| {
                let files = conn.servable(&hash)?;
                let cvs = conn.piece_cvs(&hash)?;
                Ok((files, cvs))
            })
            .await;
        let Some((files, cvs)) = lookup else {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "catalog unavailable");
        };
        let files = self.permitted(files, granted);
        let (size, cvs) = match files.first() {
            Some(file) => (file.stat.size, cvs),
            // A download of ours not finished: its proven piece hashes.
            None => match self.open_partial(hash).await {
                Some(partial) => (partial.state.size, partial.state.cvs),
                None => return not_found(),
            },
        };
        let count = piece_count(size);
        let number = |name: &str, default: u64| match query_param(query, name) {
            None => Some(default),
            Some(v) => v.parse::<u64>().ok(),
        };
        let (Some(first), Some(asked)) = (number("first", 0), number("count", count)) else {
            return json_error(StatusCode::BAD_REQUEST, "first and count must be numbers");
        };
        let end = first.saturating_add(asked.min(MAX_PROOF_PIECES)).min(count);
        if first >= end {
            return json_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                &format!("the file has {count} pieces"),
            );
        }
        let body = if count == 1 {
            Vec::new() // a single piece is checked against the content hash itself
        } else {
            match cvs.map(|cvs| build_proof(&cvs, first, end)) {
                Some(Ok(proof)) => encode_cvs(&proof),
                _ => {
                    warn!(hash = %hash.fmt_short(), "piece hashes missing or damaged");
                    return json_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "piece hashes unavailable",
                    );
                }
            }
        };
        let mut response = Response::new(full(Bytes::from(body)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(peer::header::SIZE, HeaderValue::from(size));
        headers.insert(peer::header::PIECE_SIZE, HeaderValue::from(PIECE_SIZE));
        headers.insert(peer::header::PIECES, HeaderValue::from(count));
        if let Ok(value) = HeaderValue::from_str(&format!("{first}-{end}")) {
            headers.insert(peer::header::PROOF_RANGE, value);
        }
        response
    }

    /// The partial download of `hash` we serve, opened (off the async threads).
    async fn open_partial(
        self: &Arc<Self>,
        hash: FileHash,
    ) -> Option<super::transfers::OpenPartial> {
        let shelf = self.partials.clone();
        tokio::task::spawn_blocking(move || shelf.open(&hash))
            .await
            .ok()
            .flatten()
    }

    /// Opens the first catalog file for `hash` that is still exactly the file that was hashed.
    /// Files that changed are queued for a rescan.
    fn open_verified(&self, files: &[FileRecord]) -> Result<(std::fs::File, FileRecord), bool> {
        let mut changed = false;
        // The shares now: a file of a share removed since the lookup is not served.
        let shares = self.shares.borrow().clone();
        for file in files {
            let Some(share) = shares.iter().find(|s| s.name == file.key.share) else {
                continue;
            };
            let rel = file.key.rel_path();
            let opened =
                open_shared(&share.root.join(&rel), share.rules.follow_symlinks).and_then(|f| {
                    let stat = Stat::of(&f.metadata()?);
                    Ok((f, stat))
                });
            match opened {
                // Same inode, size and mtime: the file that was hashed, even if a symlink or
                // a renamed folder now sits somewhere on the way to it.
                Ok((f, stat)) if stat.same_version(&file.stat) => return Ok((f, file.clone())),
                _ => {
                    changed = true;
                    self.events.rescan(&file.key.share, rel);
                }
            }
        }
        Err(changed)
    }

    async fn blob<B>(
        self: &Arc<Self>,
        request: &Request<B>,
        hash: FileHash,
        granted: bool,
        (peer, net): (Downloader, Option<IpAddr>),
        connection: CancellationToken,
    ) -> Response<ResponseBody> {
        let Some(files) = self.with_reader(move |conn| conn.servable(&hash)).await else {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "catalog unavailable");
        };
        let files = self.permitted(files, granted);
        // What is sent: a shared file, or the verified pieces of a download of ours.
        let (file, len, label, held) = if files.is_empty() {
            let Some(partial) = self.open_partial(hash).await else {
                return not_found();
            };
            let held = (partial.state.done, partial.state.cvs.unwrap_or_default());
            (
                partial.file,
                partial.state.size,
                format!("{} (partial)", partial.name),
                Some(held),
            )
        } else {
            let server = self.clone();
            let opened = tokio::task::spawn_blocking(move || server.open_verified(&files)).await;
            match opened {
                Ok(Ok((file, servable))) => (
                    file,
                    servable.stat.size,
                    format!("{}/{}", servable.key.share, servable.key.rel_path()),
                    None,
                ),
                Ok(Err(true)) => {
                    return json_error(
                        StatusCode::CONFLICT,
                        "the file changed since it was hashed; it is being rescanned",
                    );
                }
                _ => return not_found(),
            }
        };
        let (status, range) = match parse_range(request.headers().get(header::RANGE), len) {
            RangeRequest::Full => (StatusCode::OK, ByteRange { start: 0, end: len }),
            RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
            RangeRequest::Unsatisfiable => {
                let mut response = json_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range not satisfiable (one range within the file)",
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return response;
            }
        };
        // Of a partial download, only pieces marked written and verified again now are sent
        // (a mark may outlive its bytes: a crash before they reached the disk).
        if let Some((done, cvs)) = held {
            let verified = match file.try_clone() {
                Ok(reader) if pieces_held(&done, len, range.start, range.end) => {
                    let (start, end) = (range.start, range.end);
                    tokio::task::spawn_blocking(move || {
                        partial_pieces_verify(&reader, &hash, len, &cvs, start, end)
                    })
                    .await
                    .unwrap_or(false)
                }
                _ => false,
            };
            if !verified {
                return json_error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "those pieces are not downloaded yet (ask for the pieces the index lists)",
                );
            }
        }
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::ETAG, format!("\"{hash}\""))
            .header(header::CONTENT_LENGTH, range.end - range.start);
        if status == StatusCode::PARTIAL_CONTENT {
            builder = builder.header(
                header::CONTENT_RANGE,
                format!("bytes {}-{}/{len}", range.start, range.end - 1),
            );
        }
        if request.method() == Method::HEAD || range.start == range.end {
            return builder
                .body(full(Bytes::new()))
                .unwrap_or_else(|_| json_error(StatusCode::INTERNAL_SERVER_ERROR, "response"));
        }
        let slot = match self.slots.acquire(peer, net, hash) {
            Ok(slot) => slot,
            Err(refusal) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                let (message, position) = match refusal {
                    Refusal::Queued(n) => (
                        format!("all upload slots are busy; you are number {n} in the queue"),
                        Some(n),
                    ),
                    Refusal::QueueFull => (
                        "all upload slots are busy and the queue is full".to_owned(),
                        None,
                    ),
                };
                let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, &message);
                let retry = 1 + position.unwrap_or(self.config.queue_len) / self.config.slots;
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry.min(60) as u64));
                if let Some(n) = position {
                    headers.insert(peer::header::QUEUE_POSITION, HeaderValue::from(n as u64));
                }
                return response;
            }
        };
        let (tx, rx) = mpsc::channel(4);
        let id = self.stats.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut active) = self.stats.active.lock() {
            active.insert(
                id,
                UploadInfo {
                    peer: peer.to_string(),
                    hash,
                    path: label,
                    sent: 0,
                    elapsed_secs: 0.0,
                    started: Instant::now(),
                    length: range.end - range.start,
                },
            );
        }
        let server = self.clone();
        tokio::spawn(
            async move {
                server
                    .send_file(file, range, tx, id, connection, slot)
                    .await;
            }
            .instrument(tracing::Span::current()),
        );
        builder
            .body(ChannelBody { rx }.boxed())
            .unwrap_or_else(|_| json_error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
    }

    /// Reads `range` of `file` and feeds it to the response body, holding `slot` until done.
    /// A reader slower than the configured minimum rate has its connection closed.
    async fn send_file(
        self: Arc<Self>,
        file: std::fs::File,
        range: ByteRange,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
        id: u64,
        connection: CancellationToken,
        slot: SlotGuard,
    ) {
        let file = Arc::new(file);
        let window = Duration::from_secs(self.config.min_rate_window_secs.max(1));
        let min_bytes = self.config.min_rate.saturating_mul(window.as_secs());
        let mut offset = range.start;
        let mut window_sending = Duration::ZERO;
        let mut window_bytes = 0u64;
        let mut complete = false;
        while offset < range.end {
            let want = (range.end - offset).min(CHUNK as u64) as usize;
            let reader = file.clone();
            let read = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; want];
                reader
                    .read_exact_at(&mut buf, offset)
                    .map(|()| Bytes::from(buf))
            })
            .await;
            let chunk = match read {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    warn!(error = %e, "reading a shared file failed mid-upload");
                    let _ = tx.send(Err(e)).await;
                    break;
                }
                Err(_) => break,
            };
            if let Some(bandwidth) = &self.bandwidth {
                let wait = bandwidth.take(chunk.len() as u64);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            let n = chunk.len() as u64;
            let started = Instant::now();
            match tokio::time::timeout(window, tx.send(Ok(chunk))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break, // the peer went away
                Err(_) => {
                    self.drop_slow(&connection);
                    break;
                }
            }
            window_sending += started.elapsed();
            window_bytes += n;
            offset += n;
            self.stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
            if let Ok(mut active) = self.stats.active.lock()
                && let Some(info) = active.get_mut(&id)
            {
                info.sent = offset - range.start;
            }
            if window_sending >= window {
                if window_bytes < min_bytes {
                    self.drop_slow(&connection);
                    break;
                }
                window_sending = Duration::ZERO;
                window_bytes = 0;
            }
            complete = offset == range.end;
        }
        if complete {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut active) = self.stats.active.lock() {
            active.remove(&id);
        }
        drop(slot);
    }

    fn drop_slow(&self, connection: &CancellationToken) {
        self.stats.dropped_slow.fetch_add(1, Ordering::Relaxed);
        debug!("peer reads slower than the minimum rate; closing its connection");
        connection.cancel();
    }
}

/// Most connections one peer address may hold open.
const MAX_CONNECTIONS_PER_PEER: usize = 16;

/// Largest request head (request line and headers), bytes.
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Most header fields in one request.
const MAX_HEADERS: usize = 64;

/// One open connection, as the eviction of idle connections sees it.
struct OpenConnection {
    id: u64,
    /// Requests whose response is not yet sent.
    busy: AtomicUsize,
    /// When it last became idle (or was accepted).
    idle_since: Mutex<Instant>,
    /// Ends the connection.
    close: CancellationToken,
}

impl OpenConnection {
    fn new(id: u64, close: CancellationToken) -> OpenConnection {
        OpenConnection {
            id,
            busy: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            close,
        }
    }
}

/// The connections accepted on the file server's port.
#[derive(Default)]
struct OpenConnections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<OpenConnection>>>,
}

impl OpenConnections {
    fn add(&self, close: CancellationToken) -> Arc<OpenConnection> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let connection = Arc::new(OpenConnection::new(id, close));
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, connection.clone());
        connection
    }

    fn remove(&self, connection: &OpenConnection) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&connection.id);
    }

    /// The connection that has been idle longest, if any is idle (and not already closing).
    fn longest_idle(&self) -> Option<Arc<OpenConnection>> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.values()
            .filter(|c| c.busy.load(Ordering::Relaxed) == 0 && !c.close.is_cancelled())
            .min_by_key(|c| *c.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
            .cloned()
    }
}

/// Marks a connection busy from a request's start until its response body is gone.
struct Busy(Arc<OpenConnection>);

impl Busy {
    fn start(connection: Arc<OpenConnection>) -> Busy {
        connection.busy.fetch_add(1, Ordering::Relaxed);
        Busy(connection)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its connection marked busy while it is sent.
struct Tracked {
    body: ResponseBody,
    _busy: Busy,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Open connections per peer address.
#[derive(Debug, Default)]
struct PeerConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a peer; released on drop.
struct PeerPermit {
    table: Arc<PeerConnections>,
    peer: IpAddr,
}

impl PeerConnections {
    fn acquire(self: Arc<Self>, peer: IpAddr, max: usize) -> Option<PeerPermit> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(peer).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        drop(open);
        Some(PeerPermit { table: self, peer })
    }
}

impl Drop for PeerPermit {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

/// A response body fed by the task reading the file.
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|result| result.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(header: &str, len: u64) -> RangeRequest {
        parse_range(Some(&HeaderValue::from_str(header).unwrap()), len)
    }

    #[test]
    fn ranges() {
        let r = |start, end| RangeRequest::Partial(ByteRange { start, end });
        assert_eq!(range("bytes=0-9", 100), r(0, 10));
        assert_eq!(range("bytes=90-", 100), r(90, 100));
        assert_eq!(range("bytes=-10", 100), r(90, 100));
        assert_eq!(range("bytes=-1000", 100), r(0, 100));
        assert_eq!(range("bytes=50-1000", 100), r(50, 100));
        assert_eq!(range("bytes=100-", 100), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=0-0", 0), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=0-1,5-9", 100), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=-0", 100), RangeRequest::Unsatisfiable);
        assert_eq!(range("bytes=9-0", 100), RangeRequest::Full);
        assert_eq!(range("items=0-1", 100), RangeRequest::Full);
        assert_eq!(range("bytes=+1-2", 100), RangeRequest::Full);
        assert_eq!(parse_range(None, 100), RangeRequest::Full);
    }
}
