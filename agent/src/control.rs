//! The local control socket: a Unix socket in the state directory (owner-only) through which the
//! command line talks to the running agent: `peerdex status` reads its status, `peerdex share`
//! and `unshare` make it pick up the changed config file at once. No network port is involved.
//!
//! `peerdex get` hands downloads to its transfer queue and `peerdex transfers` lists and steers
//! them.
//!
//! Protocol: connect, write one JSON [`Request`] line, read one JSON document until the agent
//! closes: an [`AgentStatus`] for `status`, a [`ShareChange`] for `reload_shares`, the ids for
//! `add_transfers`, a [`TransferList`] for `transfers`, a [`TransferView`] for
//! `transfer_action`; `{"error": …}` when the request failed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::catalog::NewTransfer;
use super::transfers::{Action, TransferView};
use super::{AgentStatus, TransferList};

/// File name of the socket in the state directory.
pub const SOCKET_FILE: &str = "agent.sock";

/// Largest answer accepted from the agent.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// Longest request line the agent reads (a folder's files queued at once).
const MAX_REQUEST_BYTES: u64 = 4 * 1024 * 1024;

/// What the command line asks the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// The agent's status.
    Status,
    /// Read the shares from the config file again and serve exactly those.
    ReloadShares,
    /// Queue downloads.
    AddTransfers {
        /// What to download.
        transfers: Vec<NewTransfer>,
    },
    /// The transfer list, with `history` finished downloads.
    Transfers {
        /// Finished downloads to include.
        history: usize,
    },
    /// Pause, resume, cancel, retry or re-prioritise one download.
    TransferAction {
        /// The download.
        id: u64,
        /// What to do.
        #[serde(flatten)]
        action: Action,
    },
}

/// How the agent's shares changed on `reload_shares`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareChange {
    /// Share names now served.
    pub shares: Vec<String>,
    /// Shares added (they are being scanned).
    pub added: Vec<String>,
    /// Shares removed (no longer served; their files leave the index).
    pub removed: Vec<String>,
}

/// What the agent does for the control socket.
pub trait Controls: Send + Sync + 'static {
    /// The status now (blocking: reads the catalog).
    fn status(&self) -> AgentStatus;
    /// Re-reads the shares from the config file and applies them (blocking).
    fn reload_shares(&self) -> anyhow::Result<ShareChange>;
    /// Queues downloads; returns their ids (blocking).
    fn add_transfers(&self, transfers: &[NewTransfer]) -> anyhow::Result<Vec<u64>>;
    /// The transfer list (blocking).
    fn transfers(&self, history: usize) -> anyhow::Result<TransferList>;
    /// Acts on one download (blocking).
    fn transfer_action(&self, id: u64, action: Action) -> anyhow::Result<TransferView>;
}

/// Binds the socket; fails when another agent is already running on this state directory.
pub async fn bind(state: &Path) -> anyhow::Result<(UnixListener, PathBuf)> {
    let path = state.join(SOCKET_FILE);
    if UnixStream::connect(&path).await.is_ok() {
        bail!(
            "another agent is already running with state directory {}",
            state.display()
        );
    }
    // A socket file left by an agent that was killed.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("creating control socket {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting control socket {}", path.display()))?;
    Ok((listener, path))
}

/// Answers requests until `stop`.
pub async fn serve(listener: UnixListener, controls: Arc<dyn Controls>, stop: CancellationToken) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!(error = %e, "control socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stop.cancelled() => return,
        };
        tokio::spawn(answer(stream, controls.clone()));
    }
}

async fn answer(stream: UnixStream, controls: Arc<dyn Controls>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let read = reader.read_line(&mut line);
    let request = match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(_)) => serde_json::from_str::<Request>(line.trim()),
        _ => return,
    };
    let body = match request {
        Ok(Request::Status) => match tokio::task::spawn_blocking(move || controls.status()).await {
            Ok(status) => serde_json::to_vec(&status).unwrap_or_default(),
            Err(_) => return,
        },
        Ok(Request::ReloadShares) => {
            let outcome = tokio::task::spawn_blocking(move || controls.reload_shares()).await;
            let document = match outcome {
                Ok(Ok(change)) => {
                    info!(added = ?change.added, removed = ?change.removed, "shares reloaded");
                    serde_json::to_value(&change).unwrap_or_default()
                }
                Ok(Err(e)) => {
                    warn!(error = %format!("{e:#}"), "reloading the shares failed");
                    serde_json::json!({ "error": format!("{e:#}") })
                }
                Err(_) => serde_json::json!({ "error": "the reload task failed" }),
            };
            document.to_string().into_bytes()
        }
        Ok(Request::AddTransfers { transfers }) => {
            document(move || controls.add_transfers(&transfers)).await
        }
        Ok(Request::Transfers { history }) => document(move || controls.transfers(history)).await,
        Ok(Request::TransferAction { id, action }) => {
            document(move || controls.transfer_action(id, action)).await
        }
        Err(e) => serde_json::json!({ "error": format!("unknown request: {e}") })
            .to_string()
            .into_bytes(),
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), write.write_all(&body)).await;
}

/// Runs a blocking control call and turns its outcome into the answer's JSON: the value, or
/// `{"error": …}`.
async fn document<T: Serialize + Send + 'static>(
    call: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Vec<u8> {
    let value = match tokio::task::spawn_blocking(call).await {
        Ok(Ok(value)) => serde_json::to_value(&value).unwrap_or_default(),
        Ok(Err(e)) => serde_json::json!({ "error": format!("{e:#}") }),
        Err(_) => serde_json::json!({ "error": "the agent's task failed" }),
    };
    value.to_string().into_bytes()
}

/// Sends `request` and reads a document answer: the outer error when the agent could not be
/// asked, the inner one the agent's own `{"error": …}`.
async fn ask_document<T: serde::de::DeserializeOwned>(
    state: &Path,
    request: Request,
) -> anyhow::Result<Result<T, String>> {
    let body = ask(state, request).await?;
    let document: serde_json::Value =
        serde_json::from_slice(&body).context("the agent's answer is not valid")?;
    if let Some(error) = document.get("error").and_then(|e| e.as_str()) {
        return Ok(Err(error.to_owned()));
    }
    Ok(Ok(
        serde_json::from_value(document).context("the agent's answer is not valid")?
    ))
}

/// Queues downloads in the agent running on `state`; returns their ids.
pub async fn add_transfers(state: &Path, transfers: Vec<NewTransfer>) -> anyhow::Result<Vec<u64>> {
    ask_document(state, Request::AddTransfers { transfers })
        .await?
        .map_err(anyhow::Error::msg)
}

/// The transfer list of the agent running on `state`.
pub async fn transfers(state: &Path, history: usize) -> anyhow::Result<TransferList> {
    ask_document(state, Request::Transfers { history })
        .await?
        .map_err(anyhow::Error::msg)
}

/// Acts on download `id` of the agent running on `state`.
pub async fn transfer_action(
    state: &Path,
    id: u64,
    action: Action,
) -> anyhow::Result<TransferView> {
    ask_document(state, Request::TransferAction { id, action })
        .await?
        .map_err(anyhow::Error::msg)
}

/// Sends `request` to the agent running on `state` and returns its answer.
async fn ask(state: &Path, request: Request) -> anyhow::Result<Vec<u8>> {
    let path = state.join(SOCKET_FILE);
    let mut stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "no agent is running with state directory {} (start one with `peerdex agent`)",
            state.display()
        )
    })?;
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    stream
        .write_all(&line)
        .await
        .context("writing to the agent")?;
    let mut body = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        stream.take(MAX_ANSWER_BYTES).read_to_end(&mut body),
    )
    .await
    .context("the agent did not answer within 30 s")?
    .context("reading the agent's answer")?;
    Ok(body)
}

/// Reads the status of the agent running on `state`.
pub async fn query(state: &Path) -> anyhow::Result<AgentStatus> {
    let body = ask(state, Request::Status).await?;
    serde_json::from_slice(&body).context("the agent's status is not valid")
}

/// Whether an agent answers on `state`'s control socket.
pub fn is_running(state: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(state.join(SOCKET_FILE)).is_ok()
}

/// Tells the agent running on `state` to serve the shares of its config file now.
pub async fn reload_shares(state: &Path) -> anyhow::Result<ShareChange> {
    ask_document(state, Request::ReloadShares)
        .await?
        .map_err(|error| anyhow::anyhow!("the running agent did not take the change: {error}"))
}
