//! The local control socket: a Unix socket in the state directory (owner-only) through which
//! `peerdex status` reads the running agent's status. No network port is involved.
//!
//! Protocol: connect, read one JSON [`AgentStatus`] document until the agent closes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::AgentStatus;

/// File name of the socket in the state directory.
pub const SOCKET_FILE: &str = "agent.sock";

/// Largest status document accepted by `peerdex status`.
const MAX_STATUS_BYTES: u64 = 16 * 1024 * 1024;

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

/// Answers status requests until `stop`.
pub async fn serve(
    listener: UnixListener,
    status: Arc<dyn Fn() -> AgentStatus + Send + Sync>,
    stop: CancellationToken,
) {
    loop {
        let mut stream = tokio::select! {
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
        let status = status.clone();
        tokio::spawn(async move {
            let document = tokio::task::spawn_blocking(move || status()).await;
            if let Ok(document) = document {
                let body = serde_json::to_vec(&document).unwrap_or_default();
                let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(&body)).await;
            }
        });
    }
}

/// Reads the status of the agent running on `state`.
pub async fn query(state: &Path) -> anyhow::Result<AgentStatus> {
    let path = state.join(SOCKET_FILE);
    let stream = UnixStream::connect(&path).await.with_context(|| {
        format!(
            "no agent is running with state directory {} (start one with `peerdex agent`)",
            state.display()
        )
    })?;
    let mut body = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.take(MAX_STATUS_BYTES).read_to_end(&mut body),
    )
    .await
    .context("the agent did not answer within 10 s")?
    .context("reading the agent's status")?;
    serde_json::from_slice(&body).context("the agent's status is not valid")
}
