//! Keeping the index server's copy of the list equal to the catalog.
//!
//! On (re)connection the agent registers and compares the list version the server holds with
//! the one the catalog last saw confirmed: equal means only pending changes travel, as deltas;
//! anything else (first contact, a server that lost or rolled back its data) means one full
//! upload. Afterwards catalog changes are sent as deltas a moment after they happen, and
//! heartbeats keep the peer online. A server that is down or restarting is retried with
//! exponential backoff and jitter while the agent keeps serving peers.

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use peerdex_shared::api::{DeltaOp, ErrorCode, ListEntry};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::catalog::{Catalog, CatalogError, FullUpload, Verdict};
use super::config::Share;
use super::events::Events;
use super::link::{Backoff, Link, Session};
use peerdex_client::server_api::ApiError;
use peerdex_client::{Identity, ServerClient};

/// Most operations in one delta upload.
const DELTA_BATCH: usize = 5_000;

/// Wait after a change before sending it, so a burst travels as one delta.
const SETTLE: Duration = Duration::from_secs(1);

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Catalog(#[from] super::catalog::CatalogError),
    #[error("the catalog task failed")]
    Task,
    /// The server will not take this list as it is (e.g. more entries than it allows).
    #[error("the server refuses the list: {0}")]
    Refused(String),
}

impl SyncError {
    /// The session is gone (server restarted with a wiped database, or logged us out).
    fn needs_register(&self) -> bool {
        matches!(
            self,
            SyncError::Api(e) if matches!(e.code(), Some(ErrorCode::Unauthorized | ErrorCode::Forbidden))
        )
    }

    /// An answer to registration that no retry can change: the nickname belongs to another key,
    /// or the URL cannot work. The agent stops with the reason instead of retrying forever. (An
    /// invalid nickname never gets this far: the config checks it with the server's own rules.)
    /// A 400 is not taken as permanent: a body cut short in transit gets one too.
    fn permanent(&self, nick: &str) -> Option<String> {
        let SyncError::Api(e) = self else {
            return None;
        };
        match e {
            ApiError::BadUrl(why) => Some(format!("bad server URL: {why}")),
            ApiError::Server { body, .. } => match body.code {
                ErrorCode::NicknameTaken => Some(format!(
                    "the index server refuses the nickname {nick:?}: it belongs to another peer \
                     (pick another with --nick or `nick = \"...\"` in the config file)"
                )),
                _ => None,
            },
            _ => None,
        }
    }
}

/// How long to wait before retrying after a server that refuses the list as it is.
const REFUSED_RETRY: Duration = Duration::from_secs(3600);

/// Time given to a session to log out after `stop`, before it is abandoned.
const LOGOUT_GRACE: Duration = Duration::from_secs(5);

/// Everything the sync loop needs.
pub struct Syncer {
    /// Server URL.
    pub url: String,
    /// Our key.
    pub identity: Identity,
    /// Nickname to claim.
    pub nick: String,
    /// Port of our file server (0: none).
    pub port: u16,
    /// What the file server on `port` speaks.
    pub transport: peerdex_shared::api::PeerTransport,
    /// The catalog.
    pub catalog: Arc<Catalog>,
    /// `catalog_changed` says there is something to send.
    pub events: Arc<Events>,
    /// Where a failure no retry can mend is reported (it stops the agent).
    pub failure: super::Failure,
    /// The link to the server: status, sessions for the control channel, checks on demand.
    pub link: Arc<Link>,
    /// The shares now: each entry is sent with the visibility its share's rules give it.
    pub shares: super::LiveShares,
}

/// Catalog meta key: the fingerprint of the visibility settings the server's list was sent with.
const SCOPE_FINGERPRINT: &str = "scope_fingerprint";

/// A fingerprint of every share's visibility settings; 0 when every file is public (as before
/// scopes, so an older catalog needs no new upload).
fn scope_fingerprint(shares: &[Share]) -> i64 {
    if shares.iter().all(|s| s.rules.all_public()) {
        return 0;
    }
    let mut texts: Vec<String> = shares
        .iter()
        .map(|s| format!("{}\n{}\n", s.name, s.rules.scope_text()))
        .collect();
    texts.sort();
    let hash = blake3::hash(texts.concat().as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash.as_bytes()[..8]);
    // Never 0: that is the all-public fingerprint.
    i64::from_le_bytes(bytes) | 1
}

/// `entry` with the visibility its share gives it (public for a share that is gone: the next
/// scan removes the entry).
fn with_visibility(shares: &[Share], mut entry: ListEntry) -> ListEntry {
    if let Some(share) = shares.iter().find(|s| s.name == entry.share) {
        entry.visibility = share.rules.visibility_of(&entry.path).clone();
    }
    entry
}

/// Runs a blocking catalog call off the async threads.
async fn blocking<T: Send + 'static>(
    catalog: &Arc<Catalog>,
    call: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, SyncError> {
    Ok(catalog.call(call).await?)
}

impl Syncer {
    /// Runs until `stop`, then logs out so that the peer goes offline at once.
    pub async fn run(self, stop: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let mut registered = false;
            let session = self.session(&stop, &mut registered);
            let outcome = tokio::select! {
                outcome = session => outcome,
                // A call in flight when stopping (a stalled server) is abandoned after a grace.
                () = async { stop.cancelled().await; tokio::time::sleep(LOGOUT_GRACE).await } => Ok(()),
            };
            if stop.is_cancelled() {
                return;
            }
            if registered {
                backoff.reset();
            }
            if !registered
                && let Err(e) = &outcome
                && let Some(reason) = e.permanent(&self.nick)
            {
                self.link.went_offline(reason.clone());
                error!(server = %self.url, error = %reason, "stopping: retrying cannot help");
                self.failure.fail(reason);
                return;
            }
            let delay = match outcome {
                Ok(()) => return,
                // Only a session that got as far as registering is re-registered at once; a
                // refused registration backs off like any other error.
                Err(e) if registered && e.needs_register() => {
                    info!(error = %e, "session ended; registering again");
                    Duration::ZERO
                }
                Err(e) => {
                    let delay = match e {
                        SyncError::Refused(_) => REFUSED_RETRY,
                        _ => backoff.step(),
                    };
                    warn!(server = %self.url, error = %e, retry_in = ?delay, "index server unavailable");
                    self.link.went_offline(e.to_string());
                    delay
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One session: register, sync, then heartbeat and send deltas until an error or `stop`.
    async fn session(
        &self,
        stop: &CancellationToken,
        registered: &mut bool,
    ) -> Result<(), SyncError> {
        let mut client = ServerClient::new(&self.url)?.with_transport(self.transport);
        let answer = client
            .register(&self.identity, &self.nick, self.port)
            .instrument(info_span!("register", server = %self.url))
            .await?;
        *registered = true;
        self.link.registered(
            &answer,
            Session {
                peer: self.identity.peer_id(),
                token: client.session_token().unwrap_or_default().to_owned(),
                server_key: answer.server_key,
            },
        );
        info!(
            server = %self.url,
            peer = %self.identity.peer_id().fmt_short(),
            nick = %self.nick,
            server_version = ?answer.list_version,
            "registered with the index server"
        );
        self.sync(&client, answer.list_version).await?;
        let mut interval = Duration::from_secs(answer.heartbeat_interval_secs.max(1));
        let mut next_heartbeat = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    // Best effort: the server also notices the silence after a while.
                    let _ = tokio::time::timeout(Duration::from_secs(2), client.logout()).await;
                    self.link.logged_out();
                    return Ok(());
                }
                () = async {
                    tokio::select! {
                        () = tokio::time::sleep_until(next_heartbeat) => {}
                        () = self.link.check_requested() => {}
                    }
                } => {
                    let beat = client.heartbeat().await?;
                    interval = Duration::from_secs(beat.heartbeat_interval_secs.max(1));
                    next_heartbeat = tokio::time::Instant::now() + interval;
                    self.link.reachability(beat.reachability);
                    let held = blocking(&self.catalog, Catalog::list_version).await?;
                    if beat.list_version != held {
                        warn!(server_version = ?beat.list_version, "server holds another list version; resyncing");
                        self.sync(&client, beat.list_version).await?;
                    }
                }
                () = self.events.catalog_changed.notified() => {
                    tokio::select! {
                        () = stop.cancelled() => continue,
                        () = tokio::time::sleep(SETTLE) => {}
                    }
                    let held = blocking(&self.catalog, Catalog::list_version).await?;
                    self.sync(&client, held).await?;
                }
            }
        }
    }

    /// Brings the server from `server_version` to the catalog: deltas when the server holds the
    /// version the catalog last confirmed, a full upload otherwise.
    async fn sync(
        &self,
        client: &ServerClient,
        server_version: Option<u64>,
    ) -> Result<(), SyncError> {
        let local = blocking(&self.catalog, Catalog::list_version).await?;
        let shares = self.shares.borrow().clone();
        let fingerprint = scope_fingerprint(&shares);
        let told = blocking(&self.catalog, |c| c.meta(SCOPE_FINGERPRINT)).await?;
        let mut version = match (server_version, local) {
            // A change of visibility settings changes entries the catalog sees as unchanged:
            // the whole list goes again.
            (Some(server), Some(local)) if server == local && told.unwrap_or(0) == fingerprint => {
                server
            }
            _ => {
                let next = server_version.unwrap_or(0).max(local.unwrap_or(0)) + 1;
                self.full_upload(client, next).await?;
                blocking(&self.catalog, move |c| {
                    c.set_meta(SCOPE_FINGERPRINT, fingerprint)
                })
                .await?;
                next
            }
        };
        // Bounded: each round either sends a batch, clears rows with nothing to send, rejects
        // one entry the server refused, or falls back to a full upload.
        for _ in 0..10_000 {
            let pending =
                blocking(&self.catalog, |c| c.read(|r| r.pending_ops(DELTA_BATCH))).await?;
            if pending.is_empty() {
                break;
            }
            let shares = self.shares.borrow().clone();
            let ops: Vec<DeltaOp> = pending
                .iter()
                .filter_map(|p| p.op.clone())
                .map(|op| match op {
                    DeltaOp::Add(e) => DeltaOp::Add(with_visibility(&shares, e)),
                    DeltaOp::Change(e) => DeltaOp::Change(with_visibility(&shares, e)),
                    remove => remove,
                })
                .collect();
            if ops.is_empty() {
                blocking(&self.catalog, move |c| c.mark_synced(&pending, version)).await?;
                continue;
            }
            let result = client
                .upload_delta(version, version + 1, &ops)
                .instrument(info_span!("delta", base = version, ops = ops.len()))
                .await;
            match result {
                Ok(done) => {
                    version = done.version;
                    let count = ops.len() as u64;
                    blocking(&self.catalog, move |c| c.mark_synced(&pending, version)).await?;
                    debug!(ops = count, version, "delta accepted");
                    self.link.uploaded_delta(count, version);
                }
                Err(ApiError::Server { body, .. })
                    if body.code == ErrorCode::InvalidEntry && body.line.is_some() =>
                {
                    let index = body.line.unwrap_or(1).saturating_sub(1) as usize;
                    match ops.get(index) {
                        Some(DeltaOp::Add(e) | DeltaOp::Change(e)) => {
                            let (share, path) = (e.share.clone(), e.path.clone());
                            warn!(%share, %path, reason = %body.error, "server refused a file; leaving it out");
                            blocking(&self.catalog, move |c| c.reject(&share, &path)).await?;
                        }
                        // A removal the server cannot take (its rules changed): only a full
                        // upload brings the two lists back together.
                        _ => {
                            warn!(reason = %body.error, "server refused a removal; sending the full list");
                            version += 1;
                            self.full_upload(client, version).await?;
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.code(),
                        Some(ErrorCode::VersionMismatch | ErrorCode::LimitExceeded)
                    ) =>
                {
                    // The server's list moved on (or the delta is too large for it): resend all.
                    warn!(error = %e, "delta not accepted; sending the full list");
                    let server = match &e {
                        ApiError::Server { body, .. } => body.server_version,
                        _ => None,
                    };
                    version = server.unwrap_or(version).max(version) + 1;
                    self.full_upload(client, version).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.link.in_sync(version);
        Ok(())
    }

    /// Sends every shared entry as version `version`, gzip-compressed, streamed from the catalog.
    async fn full_upload(&self, client: &ServerClient, version: u64) -> Result<(), SyncError> {
        // Bounded: each failed round rejects one entry the server refused.
        for _ in 0..1_000 {
            let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            let (verdict_tx, verdict_rx) = oneshot::channel::<Verdict>();
            let catalog = self.catalog.clone();
            let shares = self.shares.borrow().clone();
            let producer = tokio::task::spawn_blocking(move || {
                // Both callbacks below write to the encoder and the channel, one after the other.
                let sender = RefCell::new(Some(body_tx));
                let encoder = RefCell::new(GzEncoder::new(Vec::new(), Compression::fast()));
                let flush = || {
                    let chunk = std::mem::take(encoder.borrow_mut().get_mut());
                    chunk.is_empty()
                        || sender
                            .borrow()
                            .as_ref()
                            .is_some_and(|tx| tx.blocking_send(Ok(Bytes::from(chunk))).is_ok())
                };
                let mut sent = 0u64;
                let outcome = catalog.full_upload(
                    version,
                    |entry| {
                        sent += 1;
                        let entry = with_visibility(&shares, entry);
                        let mut encoder_ref = encoder.borrow_mut();
                        if serde_json::to_writer(&mut *encoder_ref, &entry).is_err()
                            || encoder_ref.write_all(b"\n").is_err()
                        {
                            return false;
                        }
                        let full = encoder_ref.get_ref().len() >= 256 * 1024;
                        drop(encoder_ref);
                        !full || flush()
                    },
                    || {
                        let finished = encoder.borrow_mut().try_finish().is_ok() && flush();
                        // Closing the channel ends the request body.
                        sender.borrow_mut().take();
                        if finished {
                            verdict_rx.blocking_recv().unwrap_or(Verdict::Failed)
                        } else {
                            Verdict::Failed
                        }
                    },
                );
                outcome.map(|outcome| (outcome, sent))
            });
            let stream = futures_util::stream::unfold(body_rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let result = client
                .upload_full_body(version, reqwest::Body::wrap_stream(stream), Some("gzip"))
                .instrument(info_span!("full_upload", version))
                .await;
            let verdict = match &result {
                Ok(_) => Verdict::Accepted,
                Err(ApiError::Server { body, .. }) if body.code == ErrorCode::InvalidEntry => {
                    body.line.map_or(Verdict::Failed, Verdict::RefusedLine)
                }
                Err(_) => Verdict::Failed,
            };
            let _ = verdict_tx.send(verdict);
            let (outcome, sent) = producer.await.map_err(|_| SyncError::Task)??;
            match (outcome, result) {
                (FullUpload::Done, Ok(done)) => {
                    info!(entries = done.entries, version, "full list uploaded");
                    self.link.uploaded_full(sent, version);
                    return Ok(());
                }
                (FullUpload::Refused(Some((share, path))), Err(ApiError::Server { body, .. })) => {
                    warn!(%share, %path, reason = %body.error, "server refused a file; leaving it out");
                }
                (_, Err(e)) if e.code() == Some(ErrorCode::LimitExceeded) => {
                    return Err(SyncError::Refused(e.to_string()));
                }
                (_, Err(e)) => return Err(e.into()),
                (_, Ok(_)) => return Err(SyncError::Task),
            }
        }
        Err(SyncError::Task)
    }
}
