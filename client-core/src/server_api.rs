//! Typed HTTP client for the index server's API (see `docs/PROTOCOL.md`).

use peerdex_shared::api::{
    AccountInfo, BrowseResponse, ChallengeResponse, CreateAccountRequest, DeltaOp, DeviceProof,
    ErrorBody, ErrorCode, FolderListing, FolderResponse, HeartbeatResponse, ListEntry,
    LoginRequest, LoginResponse, PeerTransport, RegisterRequest, RegisterResponse, SearchResponse,
    SourcesResponse, StatsResponse, SyncResponse, TransferRequest, TransferResponse,
};
use peerdex_shared::folder::FolderId;
use peerdex_shared::identity::{login_message, registration_message};
use peerdex_shared::peer::RELAY_PROTOCOL;
use peerdex_shared::routes::{self, fill};
use peerdex_shared::social::{
    AskInfo, AskRequest, ContactsResponse, JoinedRoom, Message, MessagesResponse, OfferRequest,
    Room, RoomLine, SendMessageRequest, Wish, WishCreated, WishRequest,
};
use peerdex_shared::{FileHash, PeerId};
use reqwest::StatusCode;

use crate::identity::Identity;

/// Errors talking to the index server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Could not reach the server or read its answer (the message has every cause: a refused
    /// connection, a certificate not trusted, a fingerprint not the pinned one).
    /// (Not a `source`: the message already says every cause once.)
    #[error("cannot reach the index server: {}", causes(.0))]
    Transport(reqwest::Error),
    /// The TLS trust settings cannot be used.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsSetupError),
    /// A password would cross the network in clear: the server is `http://` and not on this
    /// host.
    #[error(
        "not sending a password in clear to {0}: use the server's https:// address \
         (or set PEERDEX_ALLOW_PLAIN_AUTH=1 on a network you trust)"
    )]
    InsecureTransport(String),
    /// The server answered with an error.
    #[error("server said {status}: {}", body.error)]
    Server {
        /// HTTP status.
        status: StatusCode,
        /// The error body.
        body: ErrorBody,
    },
    /// A call that needs a session was made before registering.
    #[error("not registered with the server")]
    NotRegistered,
    /// The server URL cannot be used.
    #[error("bad server URL: {0}")]
    BadUrl(String),
}

impl From<reqwest::Error> for ApiError {
    fn from(error: reqwest::Error) -> Self {
        ApiError::Transport(error)
    }
}

/// An error and its causes, `a: b: c`, each said once; a certificate refused by the pin is
/// said in its own words (rustls would print its debug form).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(wrong) = crate::tls::wrong_fingerprint(e) {
            return wrong.to_string();
        }
        next = e.source();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

impl ApiError {
    /// The server's error code, when the server answered.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::Server { body, .. } => Some(body.code),
            _ => None,
        }
    }
}

/// Checks that `base` is an `http(s)://HOST[:PORT]` URL, with a message that says how to fix it.
fn check_url(base: &str) -> Result<(), ApiError> {
    let bad = |why: String| Err(ApiError::BadUrl(format!("{base:?} {why}")));
    // `localhost:7700` would parse as the scheme "localhost".
    if !base.contains("://") {
        return bad(format!("has no scheme; write http://{base}"));
    }
    let url = match reqwest::Url::parse(base) {
        Ok(url) => url,
        Err(e) => return bad(format!("is not a URL ({e})")),
    };
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return bad(format!(
                "has the scheme {other:?}; index servers speak https:// or http://"
            ));
        }
    }
    if url.host().is_none() {
        return bad("has no host".into());
    }
    Ok(())
}

/// Why a relay upgrade did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The server could not be reached or did not speak HTTP.
    #[error("{0}")]
    Connect(String),
    /// The server answered something else than `101`.
    #[error("relay refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, when the relay is only full for now.
        retry_after: Option<u64>,
        /// The server's message.
        message: String,
    },
}

/// An HTTP/1 client connection on `io` whose driver runs in the background and lets a `101`
/// answer take the connection over.
async fn upgradable_http1<I>(
    io: I,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, RelayError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, driver) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| RelayError::Connect(e.to_string()))?;
    tokio::spawn(driver.with_upgrades());
    Ok(sender)
}

/// Search filters, as query parameters.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SearchQuery {
    /// Query text.
    pub q: String,
    /// Extension filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ext: Option<String>,
    /// Kind filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Minimum size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_size: Option<u64>,
    /// Maximum size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    /// Lowest bitrate, kbit/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_bitrate: Option<u32>,
    /// Shortest duration, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<u32>,
    /// Longest duration, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<u32>,
    /// `1`: lossless audio only; `0`: lossy only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lossless: Option<u8>,
    /// Only files tagged with this year.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year: Option<u32>,
    /// Page size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Page offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// A connection to one index server, optionally registered as a peer.
#[derive(Debug, Clone)]
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
    session: Option<(PeerId, String)>,
    /// The account token (`peerdex login`), sent with searches, sources, browse and transfer
    /// requests so the server answers within the account's scopes.
    account: Option<String>,
    /// What our file server speaks, as registration announces it.
    transport: PeerTransport,
}

async fn decode<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ApiError> {
    if response.status().is_success() {
        return Ok(response.json().await?);
    }
    Err(error_of(response).await)
}

/// The error a non-2xx answer carries (its JSON body, or its status as text).
async fn error_of(response: reqwest::Response) -> ApiError {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| {
        let message = if text.is_empty() {
            status.to_string()
        } else {
            text
        };
        ErrorBody::new(ErrorCode::Internal, message)
    });
    ApiError::Server { status, body }
}

async fn expect_empty(response: reqwest::Response) -> Result<(), ApiError> {
    if response.status().is_success() {
        return Ok(());
    }
    decode::<serde_json::Value>(response).await.map(|_| ())
}

/// `name` as one URL path segment: unreserved characters as they are, every other byte
/// percent-encoded (account names may hold any letter).
fn path_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Encodes entries or operations as a newline-delimited JSON body.
pub fn ndjson<T: serde::Serialize>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * 160);
    for item in items {
        // Serializing our own wire types cannot fail.
        if serde_json::to_writer(&mut out, item).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

/// How long an idle pooled connection to the index server may be reused. The server closes a
/// keep-alive connection that sends nothing for `http.header_read_timeout_secs` (10 s by
/// default); a request written into a connection the server is closing at that moment fails
/// with "connection closed before message completed" and is not retried. Staying well below
/// the server's limit means a connection that might be closing is never picked: a stalled
/// client (a suspended laptop, a starved runtime) opens a new one instead.
pub const IDLE_CONNECTION_REUSE: std::time::Duration = std::time::Duration::from_secs(4);

impl ServerClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:7700`); refuses a URL that
    /// cannot name an index server (no scheme, another scheme, no host).
    pub fn new(base: &str) -> Result<ServerClient, ApiError> {
        check_url(base)?;
        // No overall timeout (a full list of a million entries takes a while), but a server
        // that stops answering mid-request is given up on.
        let tls = crate::tls::client_config()?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            .pool_idle_timeout(IDLE_CONNECTION_REUSE)
            .tls_backend_preconfigured(rustls::ClientConfig::clone(&tls))
            .build()?;
        Ok(ServerClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            session: None,
            account: None,
            transport: PeerTransport::Tls,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn session(&self) -> Result<&(PeerId, String), ApiError> {
        self.session.as_ref().ok_or(ApiError::NotRegistered)
    }

    /// Announces `transport` (TLS unless told otherwise) for our file server at registration.
    pub fn with_transport(mut self, transport: PeerTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Uses an existing session token (for tests and for resuming).
    pub fn with_session(mut self, peer: PeerId, token: String) -> Self {
        self.session = Some((peer, token));
        self
    }

    /// Sends `token` (an account token from [`ServerClient::login`]) with viewer requests.
    pub fn with_account_token(mut self, token: Option<String>) -> Self {
        self.account = token;
        self
    }

    /// The account token in use, if any.
    pub fn account_token(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// Adds the account token, when there is one.
    fn as_viewer(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.account {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Refuses to send a password to a plain-HTTP server off this host, unless the user
    /// allowed it (`PEERDEX_ALLOW_PLAIN_AUTH=1`).
    fn password_channel(&self) -> Result<(), ApiError> {
        let Ok(url) = reqwest::Url::parse(&self.base) else {
            return Ok(());
        };
        let host = url.host_str().unwrap_or_default();
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let allowed = std::env::var("PEERDEX_ALLOW_PLAIN_AUTH").is_ok_and(|v| v.trim() == "1");
        if url.scheme() == "http" && !loopback && !allowed {
            return Err(ApiError::InsecureTransport(self.base.clone()));
        }
        Ok(())
    }

    /// Creates an account.
    pub async fn create_account(
        &self,
        request: &CreateAccountRequest,
    ) -> Result<AccountInfo, ApiError> {
        self.password_channel()?;
        decode(
            self.http
                .post(self.url(routes::ACCOUNTS))
                .json(request)
                .send()
                .await?,
        )
        .await
    }

    /// Signs in as `name`, linking `identity` (this device's key) to the account; keeps the
    /// token for later viewer requests.
    pub async fn login(
        &mut self,
        name: &str,
        password: &str,
        identity: &Identity,
    ) -> Result<LoginResponse, ApiError> {
        self.password_channel()?;
        let challenge: ChallengeResponse =
            decode(self.http.post(self.url(routes::CHALLENGE)).send().await?).await?;
        let peer_id = identity.peer_id();
        let message = login_message(&challenge.nonce, &peer_id, name);
        let request = LoginRequest {
            name: name.to_string(),
            password: password.to_string(),
            device: Some(DeviceProof {
                peer_id,
                nonce: challenge.nonce,
                signature: identity.sign(&message),
            }),
        };
        let response: LoginResponse = decode(
            self.http
                .post(self.url(routes::LOGIN))
                .json(&request)
                .send()
                .await?,
        )
        .await?;
        self.account = Some(response.token.clone());
        Ok(response)
    }

    /// Revokes the account token.
    pub async fn account_logout(&self) -> Result<(), ApiError> {
        let token = self.account.as_deref().ok_or(ApiError::NotRegistered)?;
        expect_empty(
            self.http
                .delete(self.url(routes::LOGIN))
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// The signed-in account.
    pub async fn whoami(&self) -> Result<AccountInfo, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(routes::WHOAMI)))
                .send()
                .await?,
        )
        .await
    }

    /// Makes an invite (`body`: `uses`, `expires`, `groups`); answers its JSON.
    pub async fn create_invite(
        &self,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        decode(
            self.as_viewer(self.http.post(self.url(routes::INVITES)))
                .json(body)
                .send()
                .await?,
        )
        .await
    }

    /// Makes an API key (`body`: `scopes`, `label`); answers its JSON (`key`, `scopes`).
    pub async fn create_api_key(
        &self,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        decode(
            self.as_viewer(self.http.post(self.url(routes::API_KEYS)))
                .json(body)
                .send()
                .await?,
        )
        .await
    }

    /// The session token, once registered.
    pub fn session_token(&self) -> Option<&str> {
        self.session.as_ref().map(|(_, t)| t.as_str())
    }

    /// Proves possession of `identity` and claims `nickname`; `port` is where this peer serves
    /// files (0: none). Keeps the session for later calls.
    pub async fn register(
        &mut self,
        identity: &Identity,
        nickname: &str,
        port: u16,
    ) -> Result<RegisterResponse, ApiError> {
        let challenge: ChallengeResponse =
            decode(self.http.post(self.url(routes::CHALLENGE)).send().await?).await?;
        let peer_id = identity.peer_id();
        let message = registration_message(&challenge.nonce, &peer_id, nickname, port);
        let request = RegisterRequest {
            peer_id,
            nickname: nickname.to_string(),
            port,
            nonce: challenge.nonce,
            signature: identity.sign(&message),
            transport: self.transport,
        };
        let response: RegisterResponse = decode(
            self.http
                .post(self.url(routes::REGISTER))
                .json(&request)
                .send()
                .await?,
        )
        .await?;
        self.session = Some((peer_id, response.session_token.clone()));
        Ok(response)
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(&self) -> Result<HeartbeatResponse, ApiError> {
        let (peer, token) = self.session()?;
        let url = self.url(&fill(routes::HEARTBEAT, peer));
        decode(self.http.post(url).bearer_auth(token).send().await?).await
    }

    /// Reports how the sources of one download did, signed by `identity` (the session's key).
    pub async fn report_transfer(
        &self,
        identity: &crate::Identity,
        report: &peerdex_shared::api::TransferReport,
    ) -> Result<peerdex_shared::api::ReportResponse, ApiError> {
        let (peer, token) = self.session()?;
        // A report is plain data; serializing it cannot fail.
        let body = serde_json::to_vec(report).unwrap_or_default();
        let signature = identity.sign(&peerdex_shared::identity::report_message(&body));
        let url = self.url(&fill(routes::REPORTS, peer));
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(peerdex_shared::api::SIGNATURE_HEADER, signature.to_string())
            .body(body)
            .send()
            .await?;
        decode(response).await
    }

    /// Tells the server which partial downloads we serve (replacing the last announcement).
    pub async fn announce_partials(
        &self,
        partials: &[peerdex_shared::api::PartialEntry],
    ) -> Result<(), ApiError> {
        let (peer, token) = self.session()?;
        let body = peerdex_shared::api::PartialsAnnouncement {
            partials: partials.to_vec(),
        };
        let url = self.url(&fill(routes::PARTIALS, peer));
        expect_empty(
            self.http
                .put(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await?,
        )
        .await
    }

    /// Ends the session: the peer goes offline at once.
    pub async fn logout(&self) -> Result<(), ApiError> {
        let (peer, token) = self.session()?;
        let url = self.url(&fill(routes::SESSION, peer));
        expect_empty(self.http.delete(url).bearer_auth(token).send().await?).await
    }

    /// Uploads a full list body (NDJSON, optionally compressed with `content_encoding`).
    pub async fn upload_full_body(
        &self,
        version: u64,
        body: impl Into<reqwest::Body>,
        content_encoding: Option<&str>,
    ) -> Result<SyncResponse, ApiError> {
        let (peer, token) = self.session()?;
        let url = self.url(&fill(routes::LIST, peer));
        let mut request = self
            .http
            .put(url)
            .bearer_auth(token)
            .query(&[("version", version)]);
        if let Some(encoding) = content_encoding {
            request = request.header(reqwest::header::CONTENT_ENCODING, encoding);
        }
        decode(request.body(body).send().await?).await
    }

    /// Uploads a full list.
    pub async fn upload_full(
        &self,
        version: u64,
        entries: &[ListEntry],
    ) -> Result<SyncResponse, ApiError> {
        self.upload_full_body(version, ndjson(entries), None).await
    }

    /// Uploads a delta from `base` to `version`.
    pub async fn upload_delta(
        &self,
        base: u64,
        version: u64,
        ops: &[DeltaOp],
    ) -> Result<SyncResponse, ApiError> {
        let (peer, token) = self.session()?;
        let url = self.url(&fill(routes::LIST_DELTA, peer));
        let request = self
            .http
            .post(url)
            .bearer_auth(token)
            .query(&[("base", base), ("version", version)])
            .body(ndjson(ops));
        decode(request.send().await?).await
    }

    /// Deletes this peer's list from the server.
    pub async fn delete_list(&self) -> Result<(), ApiError> {
        let (peer, token) = self.session()?;
        let url = self.url(&fill(routes::LIST, peer));
        expect_empty(self.http.delete(url).bearer_auth(token).send().await?).await
    }

    /// Searches.
    pub async fn search(&self, query: &SearchQuery) -> Result<SearchResponse, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(routes::SEARCH)))
                .query(query)
                .send()
                .await?,
        )
        .await
    }

    /// Online sources of one content.
    pub async fn sources(&self, hash: &FileHash) -> Result<SourcesResponse, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(&fill(routes::SOURCES, hash))))
                .send()
                .await?,
        )
        .await
    }

    /// One page of a peer's files.
    pub async fn browse(
        &self,
        nickname: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<BrowseResponse, ApiError> {
        let mut request = self
            .as_viewer(self.http.get(self.url(&fill(routes::BROWSE, nickname))))
            .query(&[("limit", limit)]);
        if let Some(after) = after {
            request = request.query(&[("after", after)]);
        }
        decode(request.send().await?).await
    }

    /// One level of a peer's share: `path` is `SHARE/FOLDER` (`""`: its shares).
    pub async fn browse_folders(
        &self,
        nickname: &str,
        path: &str,
        offset: u64,
        limit: u64,
    ) -> Result<FolderListing, ApiError> {
        decode(
            self.as_viewer(
                self.http
                    .get(self.url(&fill(routes::BROWSE_FOLDERS, nickname))),
            )
            .query(&[("path", path)])
            .query(&[("offset", offset), ("limit", limit)])
            .send()
            .await?,
        )
        .await
    }

    /// A folder identity: its files and who holds them.
    pub async fn folder(&self, id: &FolderId) -> Result<FolderResponse, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(&fill(routes::FOLDER, id))))
                .send()
                .await?,
        )
        .await
    }

    /// Asks a firewalled source to connect to us (a reverse connection, PROTOCOL §8).
    pub async fn transfer(&self, request: &TransferRequest) -> Result<TransferResponse, ApiError> {
        decode(
            self.as_viewer(self.http.post(self.url(routes::TRANSFERS)))
                .json(request)
                .send()
                .await?,
        )
        .await
    }

    /// Opens a relay connection (PROTOCOL §8.4): a request to `path` (and query) with
    /// `Upgrade: peerdex-relay`, answered `101`, after which the connection carries the peers'
    /// bytes both ways. `bearer` authenticates the source's end. Also returns the server's
    /// address, which the source counts the connection against.
    pub async fn relay_upgrade(
        &self,
        path: &str,
        bearer: Option<&str>,
        connect_timeout: std::time::Duration,
    ) -> Result<(hyper::upgrade::Upgraded, std::net::SocketAddr), RelayError> {
        use http_body_util::BodyExt;
        let (host, port) = self
            .host_port()
            .map_err(|e| RelayError::Connect(e.to_string()))?;
        let stream = tokio::time::timeout(
            connect_timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| RelayError::Connect("the index server did not answer".into()))?
        .map_err(|e| RelayError::Connect(format!("index server: {e}")))?;
        let server_addr = stream
            .peer_addr()
            .map_err(|e| RelayError::Connect(e.to_string()))?;
        let mut sender = if self.base.starts_with("https://") {
            let tls =
                crate::tls::client_config().map_err(|e| RelayError::Connect(e.to_string()))?;
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| RelayError::Connect(format!("index server name: {e}")))?;
            let stream = tokio::time::timeout(
                connect_timeout,
                tokio_rustls::TlsConnector::from(tls).connect(name, stream),
            )
            .await
            .map_err(|_| RelayError::Connect("the index server's TLS did not answer".into()))?
            .map_err(|e| RelayError::Connect(format!("index server TLS: {}", causes(&e))))?;
            upgradable_http1(stream).await?
        } else {
            upgradable_http1(stream).await?
        };
        let mut request = hyper::Request::get(path)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::CONNECTION, "upgrade")
            .header(hyper::header::UPGRADE, RELAY_PROTOCOL);
        // The source's end authenticates as its peer; the downloader's as its account, if any.
        if let Some(token) = bearer.or(self.account.as_deref()) {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| RelayError::Connect(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| RelayError::Connect(e.to_string()))?;
        if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
            let status = response.status();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            // The error body is bounded by the server's own error answers; read a little.
            let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| status.to_string());
            return Err(RelayError::Refused {
                status: status.as_u16(),
                retry_after,
                message,
            });
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| RelayError::Connect(format!("relay: {e}")))?;
        Ok((upgraded, server_addr))
    }

    /// Opens this peer's control channel (PROTOCOL §8.2): a response that never ends, one JSON
    /// message per line. Needs a session.
    pub async fn control_stream(&self) -> Result<reqwest::Response, ApiError> {
        let (peer, token) = self.session()?;
        let response = self
            .http
            .get(self.url(&fill(routes::CONTROL, peer)))
            .bearer_auth(token)
            .send()
            .await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(error_of(response).await)
        }
    }

    /// The server's host and port, for connections made without this client (the relay).
    pub fn host_port(&self) -> Result<(String, u16), ApiError> {
        let url = reqwest::Url::parse(&self.base).map_err(|e| ApiError::BadUrl(e.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| ApiError::BadUrl("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| ApiError::BadUrl("no port".into()))?;
        Ok((host, port))
    }

    /// The session, once registered: (peer id, bearer token).
    pub fn session_info(&self) -> Option<(PeerId, String)> {
        self.session.clone()
    }

    /// Contacts and open requests (PROTOCOL §10.2).
    pub async fn contacts(&self) -> Result<ContactsResponse, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(routes::CONTACTS)))
                .send()
                .await?,
        )
        .await
    }

    /// Asks `name` to be a contact (or accepts their request): true when now mutual.
    pub async fn add_contact(&self, name: &str) -> Result<bool, ApiError> {
        let response = self
            .as_viewer(
                self.http
                    .put(self.url(&fill(routes::CONTACT, path_segment(name)))),
            )
            .send()
            .await?;
        let mutual = response.status() == reqwest::StatusCode::OK;
        expect_empty(response).await.map(|()| mutual)
    }

    /// Accepts (`true`) or declines `name`'s contact request.
    pub async fn answer_contact(&self, name: &str, accept: bool) -> Result<(), ApiError> {
        let route = if accept {
            routes::CONTACT_ACCEPT
        } else {
            routes::CONTACT_DECLINE
        };
        expect_empty(
            self.as_viewer(self.http.post(self.url(&fill(route, path_segment(name)))))
                .send()
                .await?,
        )
        .await
    }

    /// Ends a contact or withdraws a request.
    pub async fn remove_contact(&self, name: &str) -> Result<(), ApiError> {
        expect_empty(
            self.as_viewer(
                self.http
                    .delete(self.url(&fill(routes::CONTACT, path_segment(name)))),
            )
            .send()
            .await?,
        )
        .await
    }

    /// The names this account blocked.
    pub async fn blocks(&self) -> Result<Vec<String>, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(routes::BLOCKS)))
                .send()
                .await?,
        )
        .await
    }

    /// Blocks (`true`) or unblocks `name`.
    pub async fn set_block(&self, name: &str, blocked: bool) -> Result<(), ApiError> {
        let url = self.url(&fill(routes::BLOCK, path_segment(name)));
        let request = if blocked {
            self.http.put(url)
        } else {
            self.http.delete(url)
        };
        expect_empty(self.as_viewer(request).send().await?).await
    }

    /// Sends a private message.
    pub async fn send_message(&self, to: &str, body: &str) -> Result<Message, ApiError> {
        decode(
            self.as_viewer(self.http.post(self.url(routes::MESSAGES)))
                .json(&SendMessageRequest {
                    to: to.to_string(),
                    body: body.to_string(),
                })
                .send()
                .await?,
        )
        .await
    }

    /// Messages to this account (`unread` only), or the conversation `with` someone.
    pub async fn messages(
        &self,
        unread: bool,
        with: Option<&str>,
        limit: Option<u32>,
    ) -> Result<MessagesResponse, ApiError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if unread {
            query.push(("unread", "true".into()));
        }
        if let Some(with) = with {
            query.push(("with", with.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        decode(
            self.as_viewer(self.http.get(self.url(routes::MESSAGES)))
                .query(&query)
                .send()
                .await?,
        )
        .await
    }

    /// Marks message `id` read; answers it.
    pub async fn read_message(&self, id: u64) -> Result<Message, ApiError> {
        decode(
            self.as_viewer(self.http.post(self.url(&fill(routes::MESSAGE_READ, id))))
                .send()
                .await?,
        )
        .await
    }

    /// Adds a wish; answers it with what matches now.
    pub async fn add_wish(&self, request: &WishRequest) -> Result<WishCreated, ApiError> {
        decode(
            self.as_viewer(self.http.post(self.url(routes::WISHES)))
                .json(request)
                .send()
                .await?,
        )
        .await
    }

    /// This account's wishes.
    pub async fn wishes(&self) -> Result<Vec<Wish>, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(routes::WISHES)))
                .send()
                .await?,
        )
        .await
    }

    /// Removes wish `id`.
    pub async fn remove_wish(&self, id: u64) -> Result<(), ApiError> {
        expect_empty(
            self.as_viewer(self.http.delete(self.url(&fill(routes::WISH, id))))
                .send()
                .await?,
        )
        .await
    }

    /// Rooms this account may see.
    pub async fn rooms(&self) -> Result<Vec<Room>, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(routes::ROOMS)))
                .send()
                .await?,
        )
        .await
    }

    /// Joins room `name` (opening it with `access` when there is none); answers its last lines.
    pub async fn join_room(
        &self,
        name: &str,
        access: Option<&str>,
    ) -> Result<JoinedRoom, ApiError> {
        decode(
            self.as_viewer(
                self.http
                    .post(self.url(&fill(routes::ROOM_JOIN, path_segment(name)))),
            )
            .json(&serde_json::json!({ "access": access }))
            .send()
            .await?,
        )
        .await
    }

    /// Leaves room `name`.
    pub async fn leave_room(&self, name: &str) -> Result<(), ApiError> {
        expect_empty(
            self.as_viewer(
                self.http
                    .post(self.url(&fill(routes::ROOM_LEAVE, path_segment(name)))),
            )
            .send()
            .await?,
        )
        .await
    }

    /// Says `body` in room `name`.
    pub async fn say(&self, name: &str, body: &str) -> Result<RoomLine, ApiError> {
        decode(
            self.as_viewer(
                self.http
                    .post(self.url(&fill(routes::ROOM_LINES, path_segment(name)))),
            )
            .json(&serde_json::json!({ "body": body }))
            .send()
            .await?,
        )
        .await
    }

    /// Room `name`'s last lines (at most `limit`).
    pub async fn room_log(
        &self,
        name: &str,
        limit: Option<u32>,
    ) -> Result<Vec<RoomLine>, ApiError> {
        let mut request = self.as_viewer(
            self.http
                .get(self.url(&fill(routes::ROOM_LINES, path_segment(name)))),
        );
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit)]);
        }
        decode(request.send().await?).await
    }

    /// An operator's `action` (`invite`, `kick`, `mute`, `unmute`, `op`) on `target` in `room`.
    pub async fn moderate_room(
        &self,
        room: &str,
        action: &str,
        target: &str,
        duration: Option<&str>,
    ) -> Result<(), ApiError> {
        expect_empty(
            self.as_viewer(
                self.http
                    .post(self.url(&fill(routes::ROOM_MODERATE, path_segment(room)))),
            )
            .json(&serde_json::json!({ "action": action, "name": target, "duration": duration }))
            .send()
            .await?,
        )
        .await
    }

    /// Sends a request to contacts or holders of matching files.
    pub async fn ask(&self, request: &AskRequest) -> Result<AskInfo, ApiError> {
        decode(
            self.as_viewer(self.http.post(self.url(routes::REQUESTS)))
                .json(request)
                .send()
                .await?,
        )
        .await
    }

    /// This account's requests, newest first.
    pub async fn requests(&self) -> Result<Vec<AskInfo>, ApiError> {
        decode(
            self.as_viewer(self.http.get(self.url(routes::REQUESTS)))
                .send()
                .await?,
        )
        .await
    }

    /// Closes request `id`.
    pub async fn close_request(&self, id: u64) -> Result<(), ApiError> {
        expect_empty(
            self.as_viewer(self.http.delete(self.url(&fill(routes::REQUEST, id))))
                .send()
                .await?,
        )
        .await
    }

    /// Offers `hash` (shared by one of this account's devices) for request `id`.
    pub async fn offer(
        &self,
        id: u64,
        hash: &FileHash,
        note: Option<&str>,
    ) -> Result<(), ApiError> {
        expect_empty(
            self.as_viewer(self.http.post(self.url(&fill(routes::REQUEST_OFFERS, id))))
                .json(&OfferRequest {
                    hash: *hash,
                    note: note.map(str::to_owned),
                })
                .send()
                .await?,
        )
        .await
    }

    /// Reports what this agent did for its account (a `download` event), with the peer's
    /// session.
    pub async fn report_event(
        &self,
        event: &peerdex_shared::social::Event,
    ) -> Result<(), ApiError> {
        let (_, token) = self.session()?;
        expect_empty(
            self.http
                .post(self.url(routes::EVENTS))
                .bearer_auth(token)
                .json(event)
                .send()
                .await?,
        )
        .await
    }

    /// Opens the account's event stream (server-sent events, PROTOCOL §10.1), after durable
    /// event `after` when given. The response never ends on its own.
    pub async fn event_stream(&self, after: Option<u64>) -> Result<reqwest::Response, ApiError> {
        let mut request = self
            .as_viewer(self.http.get(self.url(routes::EVENTS)))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        let response = request.send().await?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(error_of(response).await)
        }
    }

    /// Server-wide counts.
    pub async fn stats(&self) -> Result<StatsResponse, ApiError> {
        decode(self.http.get(self.url(routes::STATS)).send().await?).await
    }
}
