//! Talking to one source peer's file server: piece proofs and byte ranges (PROTOCOL §6), with
//! every failure sorted into what the downloader should do about it.

use std::time::Duration;

use bytes::Bytes;
use peerdex_shared::api::Source;
use peerdex_shared::pieces::{CV_LEN, PieceCv, decode_cvs, proof_len, verify_proof};
use peerdex_shared::{FileHash, PeerId};
use reqwest::StatusCode;

/// Most pieces asked for in one proof request (the server's cap).
pub const PROOF_BATCH: u64 = 65_536;

/// A peer that holds the content, as the downloader uses it.
#[derive(Debug, Clone)]
pub struct PeerSource {
    /// Its key.
    pub peer_id: PeerId,
    /// `nick (IP:port)`, for messages.
    pub label: String,
    /// `http://IP:port`.
    pub base: String,
}

impl PeerSource {
    /// A source from the index server's answer; `None` when it has no address to dial.
    pub fn from_api(source: &Source) -> Option<PeerSource> {
        let addr = source.addr.as_deref()?;
        Some(PeerSource {
            peer_id: source.peer_id,
            label: format!("{} ({addr})", source.nickname),
            base: format!("http://{addr}"),
        })
    }

    fn blob_url(&self, hash: &FileHash) -> String {
        format!("{}/peerdex/v1/blobs/{hash}", self.base)
    }
}

/// Why a request to a source failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    /// All its upload slots are busy: ask again after the delay.
    #[error("busy (queue position {position:?})")]
    Busy {
        /// From `Retry-After`.
        retry_after: Duration,
        /// From `X-Peerdex-Queue-Position`.
        position: Option<u64>,
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
    /// Some other HTTP answer.
    #[error("answered {0}")]
    Refused(StatusCode),
    /// The download stopped for a local reason (cancelled, disk full, output closed): not the
    /// source's fault.
    #[error("stopped")]
    LocalStop,
}

impl SourceError {
    fn from_reqwest(e: &reqwest::Error) -> SourceError {
        if e.is_timeout() {
            SourceError::Stalled
        } else {
            SourceError::Unreachable(e.to_string())
        }
    }
}

fn classify(response: &reqwest::Response) -> Option<SourceError> {
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
            SourceError::Busy {
                retry_after: Duration::from_secs(header("retry-after").unwrap_or(5).clamp(1, 60)),
                position: header("x-peerdex-queue-position"),
            }
        }
        StatusCode::NOT_FOUND | StatusCode::CONFLICT | StatusCode::RANGE_NOT_SATISFIABLE => {
            SourceError::Gone(status)
        }
        other => SourceError::Refused(other),
    })
}

/// Fetches and verifies the hashes of every piece of the content (`count` ≥ 2 pieces).
pub async fn fetch_piece_hashes(
    http: &reqwest::Client,
    source: &PeerSource,
    hash: &FileHash,
    size: u64,
    count: u64,
) -> Result<Vec<PieceCv>, SourceError> {
    let mut all = Vec::with_capacity(count as usize);
    let mut first = 0;
    while first < count {
        let end = (first + PROOF_BATCH).min(count);
        let url = format!(
            "{}/pieces?first={first}&count={}",
            source.blob_url(hash),
            end - first
        );
        let response = http
            .get(url)
            .send()
            .await
            .map_err(|e| SourceError::from_reqwest(&e))?;
        if let Some(e) = classify(&response) {
            return Err(e);
        }
        // Read no more than the proof can be: a peer cannot make us buffer an endless body.
        let expected = proof_len(count, first, end)
            .map_err(|e| SourceError::BadData(format!("piece hashes: {e}")))?
            * CV_LEN;
        if response
            .content_length()
            .is_some_and(|n| n > expected as u64)
        {
            return Err(SourceError::BadData("piece hashes: answer too long".into()));
        }
        let mut body = Vec::with_capacity(expected);
        let mut response = response;
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| SourceError::from_reqwest(&e))?
        {
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
    response: reqwest::Response,
}

impl RangeStream {
    /// Asks `source` for bytes `start..end` (end exclusive, non-empty).
    pub async fn open(
        http: &reqwest::Client,
        source: &PeerSource,
        hash: &FileHash,
        start: u64,
        end: u64,
    ) -> Result<RangeStream, SourceError> {
        let response = http
            .get(source.blob_url(hash))
            .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1))
            .send()
            .await
            .map_err(|e| SourceError::from_reqwest(&e))?;
        if let Some(e) = classify(&response) {
            return Err(e);
        }
        // A full-file answer to a range request would put bytes at the wrong offsets.
        let expected = format!("bytes {start}-{}/", end - 1);
        let range_ok = response
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with(&expected));
        let whole_file_ok = response.status() == StatusCode::OK && start == 0;
        if !(range_ok || whole_file_ok && response.content_length() == Some(end)) {
            return Err(SourceError::BadData(format!(
                "answered range {start}-{} with {:?}",
                end - 1,
                response.headers().get(reqwest::header::CONTENT_RANGE)
            )));
        }
        Ok(RangeStream { response })
    }

    /// The next chunk of bytes; `None` at the end of the response.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, SourceError> {
        self.response
            .chunk()
            .await
            .map_err(|e| SourceError::from_reqwest(&e))
    }
}
