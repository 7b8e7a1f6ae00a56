//! The engine against peers on loopback and a fixed [`SourceFinder`]: no index server. Each fake
//! peer serves one content from memory (ranges and piece proofs, as PROTOCOL §6 says) and can be
//! slow, busy for a while, or gone.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use peerdex_client::ServerClient;
use peerdex_client::server_api::ApiError;
use peerdex_shared::api::{Reachability, SizeClaim, Source, SourcesResponse};
use peerdex_shared::peer::{self, parse_blob_path};
use peerdex_shared::pieces::{
    PIECE_SIZE, PieceCv, build_proof, encode_cvs, piece_count, piece_cv, piece_range,
};
use peerdex_shared::{FileHash, PeerId};
use tokio_util::sync::CancellationToken;

use super::*;

const P: usize = PIECE_SIZE as usize;

fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn hash_of(bytes: &[u8]) -> FileHash {
    FileHash::from_bytes(*blake3::hash(bytes).as_bytes())
}

/// How a fake peer behaves.
#[derive(Default, Clone)]
struct Behaviour {
    /// Pause before each 64 KiB of an answer.
    delay_per_chunk: Duration,
    /// Answer this many range requests with `503` (queue position 2) first.
    busy_first: usize,
}

/// A peer serving one content from memory.
struct FakePeer {
    addr: std::net::SocketAddr,
    id: PeerId,
    /// Piece indexes of every range asked for.
    asked: Arc<Mutex<Vec<u64>>>,
    requests: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

async fn answer(
    request: Request<hyper::body::Incoming>,
    bytes: Arc<Vec<u8>>,
    cvs: Arc<Vec<PieceCv>>,
    behaviour: Behaviour,
    asked: Arc<Mutex<Vec<u64>>>,
    busy_left: Arc<AtomicUsize>,
) -> Response<Body> {
    let len = bytes.len() as u64;
    let Some((_, pieces)) = parse_blob_path(request.uri().path()) else {
        return Response::builder().status(404).body(full("")).unwrap();
    };
    if pieces {
        let query = request.uri().query().unwrap_or("");
        let number = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse::<u64>().ok())
        };
        let count = piece_count(len);
        let first = number("first").unwrap_or(0);
        let end = (first + number("count").unwrap_or(count)).min(count);
        let proof = build_proof(&cvs, first, end).unwrap();
        return Response::new(full(encode_cvs(&proof)));
    }
    if busy_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header(hyper::header::RETRY_AFTER, "1")
            .header(peer::header::QUEUE_POSITION, "2")
            .body(full(""))
            .unwrap();
    }
    let range = request
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .unwrap_or((0, len - 1));
    let (start, end) = (range.0, (range.1 + 1).min(len));
    asked
        .lock()
        .unwrap()
        .extend(start / PIECE_SIZE..end.div_ceil(PIECE_SIZE));
    let slice = bytes[start as usize..end as usize].to_vec();
    let delay = behaviour.delay_per_chunk;
    let chunks = frames(slice, delay);
    Response::builder()
        .status(206)
        .header(
            hyper::header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", end - 1),
        )
        .header(hyper::header::CONTENT_LENGTH, end - start)
        .body(StreamBody::new(chunks).boxed())
        .unwrap()
}

/// The bytes as 64 KiB frames, each after `delay`.
fn frames(
    bytes: Vec<u8>,
    delay: Duration,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send {
    let frames: Vec<Bytes> = bytes
        .chunks(64 * 1024)
        .map(Bytes::copy_from_slice)
        .collect();
    futures_util::stream::unfold(frames.into_iter(), move |mut rest| async move {
        let next = rest.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok(Frame::data(next)), rest))
    })
}

impl FakePeer {
    async fn start(bytes: &[u8], behaviour: Behaviour) -> FakePeer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(bytes.to_vec());
        let cvs: Arc<Vec<PieceCv>> = Arc::new(
            (0..piece_count(bytes.len() as u64))
                .map(|i| {
                    let r = piece_range(bytes.len() as u64, i);
                    piece_cv(i, &bytes[r.start as usize..r.end as usize])
                })
                .collect(),
        );
        let asked = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let busy_left = Arc::new(AtomicUsize::new(behaviour.busy_first));
        let stop = CancellationToken::new();
        let (seen, count, halt) = (asked.clone(), requests.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                    () = halt.cancelled() => return,
                };
                let (bytes, cvs, behaviour, seen, count, busy_left) = (
                    bytes.clone(),
                    cvs.clone(),
                    behaviour.clone(),
                    seen.clone(),
                    count.clone(),
                    busy_left.clone(),
                );
                let service = hyper::service::service_fn(move |request| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let answered = answer(
                        request,
                        bytes.clone(),
                        cvs.clone(),
                        behaviour.clone(),
                        seen.clone(),
                        busy_left.clone(),
                    );
                    async move { Ok::<_, Infallible>(answered.await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        FakePeer {
            addr,
            id: peerdex_client::Identity::generate().unwrap().peer_id(),
            asked,
            requests,
            stop,
        }
    }

    fn source(&self, nickname: &str) -> Source {
        Source {
            peer_id: self.id,
            nickname: nickname.into(),
            addr: Some(self.addr.to_string()),
            reachability: Reachability::Reachable,
            // The fake peers speak plain HTTP (public content).
            transport: peerdex_shared::api::PeerTransport::Plain,
            share: "s".into(),
            path: "file.bin".into(),
            grant: None,
        }
    }

    fn asked(&self) -> Vec<u64> {
        self.asked.lock().unwrap().clone()
    }
}

/// A finder with fixed answers: the first one, then each next one when asked again (the last
/// one repeats).
struct FixedFinder {
    answers: Mutex<Vec<SourcesResponse>>,
    calls: AtomicUsize,
}

impl FixedFinder {
    fn new(answers: Vec<SourcesResponse>) -> Arc<FixedFinder> {
        Arc::new(FixedFinder {
            answers: Mutex::new(answers),
            calls: AtomicUsize::new(0),
        })
    }
}

impl SourceFinder for FixedFinder {
    fn find<'a>(&'a self, _hash: &'a FileHash) -> Found<'a> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut answers = self.answers.lock().unwrap();
        let answer = if answers.len() > 1 {
            answers.remove(0)
        } else {
            answers[0].clone()
        };
        Box::pin(async move { Ok::<_, ApiError>(answer) })
    }

    fn broker(&self) -> Option<&ServerClient> {
        None
    }
}

fn answer_of(hash: FileHash, size: u64, sources: Vec<Source>) -> SourcesResponse {
    SourcesResponse {
        hash,
        size,
        sources,
        name: "file.bin".into(),
        other_sizes: Vec::new(),
        partial_sources: Vec::new(),
    }
}

async fn fetch(
    finder: Arc<dyn SourceFinder>,
    hash: FileHash,
    dir: &std::path::Path,
    progress: Arc<DownloadProgress>,
) -> Result<DownloadReport, DownloadError> {
    let options = DownloadOptions {
        stall_timeout: Duration::from_secs(10),
        accept_connections: false,
        ..DownloadOptions::default()
    };
    let request = DownloadRequest {
        hash,
        name: None,
        destination: Destination::Dir(dir.to_owned()),
    };
    download(
        finder,
        &request,
        &options,
        progress,
        CancellationToken::new(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sources_share_the_pieces() {
    let bytes = content(12 * P + 5, 1);
    let hash = hash_of(&bytes);
    let (a, b) = (
        FakePeer::start(&bytes, Behaviour::default()).await,
        FakePeer::start(&bytes, Behaviour::default()).await,
    );
    let finder = FixedFinder::new(vec![answer_of(
        hash,
        bytes.len() as u64,
        vec![a.source("a"), b.source("b")],
    )]);
    let dir = tempfile::tempdir().unwrap();
    let report = fetch(finder, hash, dir.path(), Arc::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("file.bin")).unwrap(), bytes);
    assert_eq!(report.sources_used.len(), 2, "{report:?}");
    assert!(!a.asked().is_empty() && !b.asked().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_game_races_what_a_slow_source_holds() {
    let bytes = content(10 * P, 2);
    let hash = hash_of(&bytes);
    let fast = FakePeer::start(&bytes, Behaviour::default()).await;
    // About 6 s per piece: whatever it claims, the fast one finishes first.
    let slow = FakePeer::start(
        &bytes,
        Behaviour {
            delay_per_chunk: Duration::from_millis(400),
            ..Behaviour::default()
        },
    )
    .await;
    let finder = FixedFinder::new(vec![answer_of(
        hash,
        bytes.len() as u64,
        vec![slow.source("slow"), fast.source("fast")],
    )]);
    let dir = tempfile::tempdir().unwrap();
    fetch(finder, hash, dir.path(), Arc::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("file.bin")).unwrap(), bytes);
    // Some piece the slow source was asked for was raced on the fast one.
    let (slow_asked, fast_asked) = (slow.asked(), fast.asked());
    assert!(
        slow_asked.iter().any(|p| fast_asked.contains(p)),
        "slow {slow_asked:?}, fast {fast_asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_source_is_waited_for_with_its_queue_position_shown() {
    let bytes = content(3 * P + 1, 3);
    let hash = hash_of(&bytes);
    let busy = FakePeer::start(
        &bytes,
        Behaviour {
            busy_first: 2,
            ..Behaviour::default()
        },
    )
    .await;
    let finder = FixedFinder::new(vec![answer_of(
        hash,
        bytes.len() as u64,
        vec![busy.source("busy")],
    )]);
    let dir = tempfile::tempdir().unwrap();
    let progress = Arc::new(DownloadProgress::default());
    let seen_queue = Arc::new(Mutex::new(None));
    let watcher = {
        let (progress, seen) = (progress.clone(), seen_queue.clone());
        tokio::spawn(async move {
            for _ in 0..200 {
                if let Some(queued) = progress.queued() {
                    *seen.lock().unwrap() = Some(queued);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    let report = fetch(finder, hash, dir.path(), progress.clone())
        .await
        .unwrap();
    watcher.await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("file.bin")).unwrap(), bytes);
    assert!(report.sources_dropped.is_empty(), "{report:?}");
    // The proof, two busy answers, then the range.
    assert!(busy.requests.load(Ordering::SeqCst) >= 4);
    assert_eq!(
        seen_queue.lock().unwrap().as_deref(),
        Some("number 2 in busy's queue")
    );
    assert_eq!(progress.queued(), None, "cleared once bytes flowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_no_source_is_left_the_finder_is_asked_again() {
    let bytes = content(2 * P + 7, 4);
    let hash = hash_of(&bytes);
    // A source whose port is closed, then (on the second answer) one that works.
    let gone = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        Source {
            peer_id: peerdex_client::Identity::generate().unwrap().peer_id(),
            nickname: "gone".into(),
            addr: Some(addr.to_string()),
            reachability: Reachability::Reachable,
            // The fake peers speak plain HTTP (public content).
            transport: peerdex_shared::api::PeerTransport::Plain,
            share: "s".into(),
            path: "file.bin".into(),
            grant: None,
        }
    };
    let good = FakePeer::start(&bytes, Behaviour::default()).await;
    let size = bytes.len() as u64;
    let finder = FixedFinder::new(vec![
        answer_of(hash, size, vec![gone.clone()]),
        answer_of(hash, size, vec![gone, good.source("good")]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let report = fetch(finder.clone(), hash, dir.path(), Arc::default())
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("file.bin")).unwrap(), bytes);
    assert!(finder.calls.load(Ordering::SeqCst) >= 2);
    assert!(
        report
            .sources_dropped
            .iter()
            .any(|(s, _)| s.starts_with("gone")),
        "{report:?}"
    );
    assert_eq!(report.sources_used.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_no_source_proves_gives_way_to_the_next_claimed_size() {
    let bytes = content(4 * P + 3, 5);
    let hash = hash_of(&bytes);
    let peer = FakePeer::start(&bytes, Behaviour::default()).await;
    let size = bytes.len() as u64;
    // The best-ranked claim is a lie (two pieces more): its proof cannot verify.
    let mut found = answer_of(
        hash,
        size + 2 * PIECE_SIZE,
        vec![peer.source("claims-more")],
    );
    found.other_sizes = vec![SizeClaim {
        size,
        sources_online: 1,
        sources: vec![peer.source("real")],
        name: "file.bin".into(),
    }];
    let finder = FixedFinder::new(vec![found]);
    let dir = tempfile::tempdir().unwrap();
    let progress = Arc::new(DownloadProgress::default());
    let report = fetch(finder, hash, dir.path(), progress.clone())
        .await
        .unwrap();
    assert_eq!(report.size, size);
    assert_eq!(std::fs::read(dir.path().join("file.bin")).unwrap(), bytes);
    let notes = progress.take_notes();
    assert!(
        notes.iter().any(|n| n.contains("was not proven")),
        "{notes:?}"
    );
    // The refuted attempt left nothing behind.
    let left: HashMap<_, _> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| (e.unwrap().file_name(), ()))
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
}
