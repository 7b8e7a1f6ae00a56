//! The agent's file server: exact bytes, piece proofs, refusals, slots and queue.

use std::time::Duration;

use peerdex_shared::FileHash;
use peerdex_shared::pieces::{
    PIECE_SIZE, decode_cvs, piece_count, piece_range, verify_piece, verify_proof,
};
use peerdex_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn blob_url(agent: &TestAgent, hash: &FileHash) -> String {
    format!("{}/peerdex/v1/blobs/{hash}", agent.url)
}

async fn get(agent: &TestAgent, url: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = agent.http().get(url);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_and_pieces_return_the_exact_bytes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let p = PIECE_SIZE as usize;
    let sizes = [0, 1, p - 1, p, p + 1, 3 * p + 5];
    let files: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let bytes = pseudo_random(len, i as u64 + 1);
            write_file(&share, &format!("f{len}.bin"), &bytes);
            bytes
        })
        .collect();
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;

    for bytes in &files {
        let len = bytes.len() as u64;
        let hash = content_hash(bytes);
        let url = blob_url(&agent, &hash);
        let whole = get(&agent, &url, None).await;
        assert_eq!(whole.status(), 200);
        assert_eq!(
            whole.headers()["etag"].to_str().unwrap(),
            format!("\"{hash}\"")
        );
        assert_eq!(whole.bytes().await.unwrap(), bytes.as_slice(), "len {len}");

        let head = agent.http().head(&url).send().await.unwrap();
        assert_eq!(head.headers()["content-length"], len.to_string().as_str());

        if len == 0 {
            let r = get(&agent, &url, Some("bytes=0-0")).await;
            assert_eq!(r.status(), 416);
            assert_eq!(r.headers()["content-range"], "bytes */0");
            continue;
        }
        let cases = [
            ("bytes=0-0".to_string(), 0..1),
            (format!("bytes={}-", len - 1), (len - 1)..len),
            ("bytes=-1".to_string(), (len - 1)..len),
            (format!("bytes=0-{}", len + 100), 0..len),
            (
                format!("bytes={}-{}", len / 2, (len / 2 + PIECE_SIZE).min(len - 1)),
                (len / 2)..((len / 2 + PIECE_SIZE + 1).min(len)),
            ),
        ];
        for (header, range) in cases {
            let r = get(&agent, &url, Some(&header)).await;
            assert_eq!(r.status(), 206, "{header}");
            assert_eq!(
                r.headers()["content-range"],
                format!("bytes {}-{}/{len}", range.start, range.end - 1).as_str()
            );
            let body = r.bytes().await.unwrap();
            assert_eq!(
                &body[..],
                &bytes[range.start as usize..range.end as usize],
                "{header}"
            );
        }
        let beyond = get(&agent, &url, Some(&format!("bytes={len}-"))).await;
        assert_eq!(beyond.status(), 416);
        assert_eq!(
            beyond.headers()["content-range"],
            format!("bytes */{len}").as_str()
        );
        let many = get(&agent, &url, Some("bytes=0-0,1-1,0-0")).await;
        assert_eq!(many.status(), 416, "one range per request");

        // Piece proofs: fetched for a range, verified against the content hash, and every piece
        // in that range verifies against them.
        let count = piece_count(len);
        if count > 1 {
            let first = 1;
            let proof = get(&agent, &format!("{url}/pieces?first={first}&count=2"), None).await;
            assert_eq!(proof.status(), 200);
            assert_eq!(
                proof.headers()["x-peerdex-pieces"],
                count.to_string().as_str()
            );
            let proof = decode_cvs(&proof.bytes().await.unwrap()).unwrap();
            let end = (first + 2).min(count);
            let cvs = verify_proof(&hash, len, first, end, &proof).unwrap();
            for (i, cv) in (first..end).zip(&cvs) {
                let r = piece_range(len, i);
                verify_piece(
                    &hash,
                    len,
                    i,
                    Some(cv),
                    &bytes[r.start as usize..r.end as usize],
                )
                .unwrap();
            }
        }
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_catalog_content_is_served() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let canary = write_file(dir.path(), "canary.txt", b"CANARY outside the share");
    write_file(&share, "shared.txt", b"shared content");
    write_file(&share, "swapped.txt", b"will become a symlink");
    write_file(&share, "sub/edited.txt", b"will be edited");
    std::os::unix::fs::symlink(&canary, share.join("link-out.txt")).unwrap();
    // Symlinks are followed when asked, but never out of the share.
    let agent = TestAgent::start(&server.url, &[&share], |c| {
        c.scan.watch = false; // so that the edits below are only noticed when served
        let share = peerdex_agent::config::ShareConfig {
            path: c.shares[0].root.clone(),
            name: None,
            exclude: vec![],
            follow_symlinks: true,
            include_hidden: false,
            visibility: Default::default(),
            scopes: Vec::new(),
        };
        c.shares[0].rules = peerdex_agent::config::ShareRules::new(&share).unwrap();
    })
    .await;
    let status = agent.wait_synced().await;
    assert_eq!(
        status.shares[0].counts.files, 3,
        "the symlink out of the share is not shared"
    );
    assert!(server.search("canary").await.hits.is_empty());
    assert!(server.search("link").await.hits.is_empty());

    // Traversal attempts are answered exactly like an unknown hash.
    let unknown = get(
        &agent,
        &blob_url(&agent, &content_hash(b"nobody has this")),
        None,
    )
    .await;
    assert_eq!(unknown.status(), 404);
    let unknown_body = unknown.text().await.unwrap();
    let canary_path = canary.to_str().unwrap();
    let attempts = [
        "/peerdex/v1/blobs/../../canary.txt".to_string(),
        "/peerdex/v1/blobs/..%2f..%2fcanary.txt".into(),
        "/peerdex/v1/blobs/%2e%2e%2f%2e%2e%2fcanary.txt".into(),
        "/peerdex/v1/blobs/%252e%252e%252fcanary.txt".into(),
        "/peerdex/v1/blobs/..%5c..%5ccanary.txt".into(),
        "/peerdex/v1/blobs/%c0%ae%c0%ae%c0%afcanary.txt".into(),
        format!("/peerdex/v1/blobs/{canary_path}"),
        format!("/peerdex/v1/blobs//{canary_path}"),
        "/peerdex/v1/blobs/canary.txt%00".into(),
        "/shared.txt".into(),
        "/../canary.txt".into(),
    ];
    for path in attempts {
        let response = raw_get(&agent, &path).await;
        assert!(response.starts_with("HTTP/1.1 404"), "{path}: {response}");
        assert!(response.ends_with(&unknown_body), "{path}: {response}");
        assert!(!response.contains("CANARY"), "{path}");
    }

    // A file swapped for a symlink to the canary after hashing is not served.
    let swapped_hash = content_hash(b"will become a symlink");
    std::fs::remove_file(share.join("swapped.txt")).unwrap();
    std::os::unix::fs::symlink(&canary, share.join("swapped.txt")).unwrap();
    let r = get(&agent, &blob_url(&agent, &swapped_hash), None).await;
    assert!(matches!(r.status().as_u16(), 404 | 409), "{}", r.status());
    assert!(!r.text().await.unwrap().contains("CANARY"));

    // A file replaced by a FIFO is refused at once instead of blocking the server.
    let fifo_hash = content_hash(b"shared content");
    std::fs::remove_file(share.join("shared.txt")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(share.join("shared.txt"))
        .status()
        .unwrap();
    assert!(made.success());
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        get(&agent, &blob_url(&agent, &fifo_hash), None),
    )
    .await
    .expect("a FIFO must not block the file server");
    assert!(matches!(r.status().as_u16(), 404 | 409), "{}", r.status());

    // A file edited after hashing: 409, and it is queued for a rehash that makes the new
    // content available.
    let old_hash = content_hash(b"will be edited");
    std::fs::write(share.join("sub/edited.txt"), b"edited afterwards!").unwrap();
    let r = get(&agent, &blob_url(&agent, &old_hash), None).await;
    assert_eq!(r.status(), 409);
    let new_hash = content_hash(b"edited afterwards!");
    wait_until(
        "the edited file to be rehashed and served",
        Duration::from_secs(20),
        || async {
            let r = get(&agent, &blob_url(&agent, &new_hash), None).await;
            if r.status() == 200 {
                Ok(())
            } else {
                Err(r.status().to_string())
            }
        },
    )
    .await;
    assert_eq!(
        get(&agent, &blob_url(&agent, &old_hash), None)
            .await
            .status(),
        404
    );
    // Other methods are refused.
    let post = agent
        .http()
        .post(blob_url(&agent, &new_hash))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    agent.stop().await;
}

/// Sends a GET with `path` exactly as written (no client-side normalisation) and returns the
/// whole response as text.
async fn raw_get(agent: &TestAgent, path: &str) -> String {
    let addr = agent.handle.serve_addr.unwrap();
    let mut stream = peer_stream(addr, agent.handle.peer_id).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_slots_queue_requests_and_slow_readers_lose_theirs() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let big = pseudo_random(24 << 20, 5);
    write_file(&share, "big.bin", &big);
    write_file(&share, "small.bin", b"small");
    let agent = TestAgent::start(&server.url, &[&share], |c| {
        c.upload.slots = 1;
        c.upload.per_peer = 1;
        c.upload.min_rate = 1 << 20;
        c.upload.min_rate_window_secs = 2;
    })
    .await;
    agent.wait_synced().await;
    let big_url = blob_url(&agent, &content_hash(&big));
    let small_url = blob_url(&agent, &content_hash(b"small"));

    // A peer starts the big download and stops reading: it holds the only slot.
    let addr = agent.url.trim_start_matches("https://").to_owned();
    let mut holder = peer_stream(agent.handle.serve_addr.unwrap(), agent.handle.peer_id).await;
    let path = big_url.trim_start_matches(&agent.url);
    holder
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    wait_until("the upload to start", Duration::from_secs(10), || async {
        let active = agent.status().uploads.active.len();
        if active == 1 {
            Ok(())
        } else {
            Err(format!("{active} active"))
        }
    })
    .await;

    // Others are told to come back, with their place in the queue.
    let busy = get(&agent, &small_url, None).await;
    assert_eq!(busy.status(), 503);
    assert!(busy.headers().contains_key("retry-after"));
    assert_eq!(busy.headers()["x-peerdex-queue-position"], "1");
    assert!(busy.text().await.unwrap().contains("queue"));
    // HEAD and piece requests need no slot.
    let head = agent.http().head(&small_url).send().await.unwrap();
    assert_eq!(head.status(), 200);

    // The holder reads far below the minimum rate: its connection is closed and the queued
    // request gets the slot.
    let served = wait_until(
        "the queued request to be served",
        Duration::from_secs(20),
        || async {
            let r = get(&agent, &small_url, None).await;
            if r.status() == 200 {
                Ok(r.bytes().await.unwrap())
            } else {
                Err(r.status().to_string())
            }
        },
    )
    .await;
    assert_eq!(&served[..], b"small");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), holder.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the slow reader's connection was closed");
    assert!(
        rest.len() < big.len(),
        "the slow reader did not get the whole file"
    );
    assert!(agent.status().uploads.active.is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cannot_lock_downloaders_out_and_huge_heads_are_refused() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(2 * (1 << 20) + 3, 45);
    write_file(&share, "wanted.bin", &bytes);
    let agent = TestAgent::start(&server.url, &[&share], |c| c.upload.max_connections = 8).await;
    agent.wait_synced().await;
    let addr = agent.url.trim_start_matches("https://").to_owned();
    // Every connection the agent allows, open and idle (as many addresses would hold them).
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let out = dir.path().join("out");
    let report = download_into(&server.url, content_hash(&bytes), &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("wanted.bin")).unwrap(), bytes);
    assert_eq!(report.sources_used.len(), 1);

    // A 100 KB header in one write is refused, not answered as if it were fine.
    let huge = format!(
        "GET /peerdex/v1/blobs/{} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        content_hash(&bytes),
        "a".repeat(100 * 1024)
    );
    let mut stream = peer_stream(agent.handle.serve_addr.unwrap(), agent.handle.peer_id).await;
    let _ = stream.write_all(huge.as_bytes()).await;
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap_or(0);
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(
        n == 0 || head.starts_with("HTTP/1.1 431"),
        "answered {head:?}"
    );
    drop(idle);
    agent.stop().await;
}
