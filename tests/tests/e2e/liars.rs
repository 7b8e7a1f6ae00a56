//! Peers that lie to the index and to downloaders (issue 15): size claims that would block a
//! download, announced ports nobody verified, and reverse-connection requests that would make
//! the server dial past its probe limit.

use std::time::Duration;

use peerdex_shared::FileHash;
use peerdex_shared::api::ListEntry;
use peerdex_tests::*;

/// Lists `hash` at `size` under `path` on `peer`'s list.
async fn claim(peer: &TestPeer, path: &str, size: u64, hash: FileHash) {
    let mut listed: ListEntry = entry(path, size, "unused");
    listed.hash = hash;
    peer.client.upload_full(1, &[listed]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_claiming_another_size_cannot_block_a_single_source_download() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The size of the report: 6 whole pieces and a short seventh.
    let bytes = pseudo_random(6_292_455, 31);
    let hash = content_hash(&bytes);
    // Two liars, registered before the honest peer, with verified addresses of their own: one
    // claims 3 MiB more, one 500 bytes less (the same number of pieces, so the piece-hash proof
    // alone would not tell the sizes apart).
    let bigger = TestPeer::join(&server.url, "bigger").await;
    claim(&bigger, "x/copy.bin", bytes.len() as u64 + (3 << 20), hash).await;
    let smaller = TestPeer::join(&server.url, "smaller").await;
    claim(&smaller, "x/copy.bin", bytes.len() as u64 - 500, hash).await;
    let share = dir.path().join("share");
    write_file(&share, "honest.bin", &bytes);
    let honest = TestAgent::start(&server.url, &[&share], |_| {}).await;
    honest.wait_synced().await;

    // The index names every claimed size, and never by the order rows were read.
    let client = server.client();
    let found = wait_until("three size claims", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            match client.sources(&hash).await {
                Ok(found) if found.other_sizes.len() == 2 => Ok(found),
                Ok(found) => Err(format!("{} other sizes", found.other_sizes.len())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    let mut sizes: Vec<u64> = std::iter::once(found.size)
        .chain(found.other_sizes.iter().map(|c| c.size))
        .collect();
    sizes.sort_unstable();
    assert_eq!(
        sizes,
        [
            bytes.len() as u64 - 500,
            bytes.len() as u64,
            bytes.len() as u64 + (3 << 20)
        ]
    );
    let again = client.sources(&hash).await.unwrap();
    assert_eq!(again.size, found.size, "the answer is stable");

    // The downloader tries each claimed size until the piece hashes and pieces prove one.
    let out = dir.path().join("out");
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(report.size, bytes.len() as u64);
    assert_eq!(std::fs::read(out.join("honest.bin")).unwrap(), bytes);
    honest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaders_never_dial_an_address_still_being_probed() {
    // Probes of the liar's port hang (the listener answers nothing), so its address stays
    // `pending` for the whole test.
    let server = TestServer::start_with(|c| c.probe.timeout_ms = 120_000).await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(3 * (1 << 20) + 9, 32);
    let hash = content_hash(&bytes);
    let share = dir.path().join("share");
    write_file(&share, "real.bin", &bytes);
    let honest = TestAgent::start(&server.url, &[&share], |_| {}).await;
    honest.wait_synced().await;

    // A peer announcing a port of its host where something else listens.
    let victim = CountingListener::bind().await;
    let liar = TestPeer::join_announcing(&server.url, "liar", victim.port).await;
    claim(&liar, "x/real.bin", bytes.len() as u64, hash).await;
    let only_the_liar = content_hash(b"only the liar lists this");
    let mut second: ListEntry = entry("x/other.bin", 24, "unused");
    second.hash = only_the_liar;
    let mut first: ListEntry = entry("x/real.bin", bytes.len() as u64, "unused");
    first.hash = hash;
    liar.client.upload_full(2, &[first, second]).await.unwrap();
    wait_for_sources(&server, hash, 2).await;
    let sources = server.client().sources(&hash).await.unwrap();
    assert!(
        sources.sources.iter().any(|s| s.nickname == "liar"
            && s.reachability == peerdex_shared::api::Reachability::Pending),
        "{sources:?}"
    );

    // The download comes from the honest peer; the announced port is never dialled.
    let out = dir.path().join("out");
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("real.bin")).unwrap(), bytes);
    assert!(report.sources_used.iter().all(|s| !s.starts_with("liar")));
    // Content only the liar lists cannot be fetched, and still nobody dials the port.
    let failed = download_into(&server.url, only_the_liar, &out, |_| {}).await;
    assert!(
        matches!(
            failed,
            Err(peerdex_download::DownloadError::NoSource { .. })
        ),
        "{failed:?}"
    );
    assert_eq!(
        victim.dialled(),
        0,
        "a downloader dialled an unverified address"
    );
    honest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_connection_requests_cannot_make_the_server_dial_past_its_probe_limit() {
    let limit = 5;
    let server = TestServer::start_with(|c| c.probe.per_ip_per_minute = limit).await;
    let dir = tempfile::tempdir().unwrap();
    // A firewalled source with its control channel open, so that transfer requests get as far
    // as verifying the requester's address.
    let share = dir.path().join("share");
    write_file(&share, "wanted.bin", b"wanted bytes");
    let source = TestAgent::start(&server.url, &[&share], |c| c.listen = None).await;
    source.wait_synced().await;
    source.wait_control_channel().await;

    // The requester's port answers no probe: every verification fails, and is asked again.
    let requester = CountingListener::bind().await;
    let http = peerdex_tests::http();
    let mut answers = Vec::new();
    for i in 0..25 {
        let body = serde_json::json!({
            "source": source.handle.peer_id, "hash": content_hash(b"wanted bytes"),
            "downloader": peerdex_client::Identity::generate().unwrap().peer_id(),
            "port": requester.port, "token": format!("t{i}"),
        });
        let response = http
            .post(format!("{}/api/v1/transfers", server.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        answers.push(response.status().as_u16());
    }
    // Whatever asked for them, the server made at most `limit` probes to this IP per minute.
    assert!(
        requester.probed() <= limit as usize,
        "{} probes for a limit of {limit}; answers {answers:?}",
        requester.probed()
    );
    assert!(answers.contains(&429), "{answers:?}");
    assert!(
        answers.iter().all(|s| *s == 409 || *s == 429),
        "{answers:?}"
    );
    source.stop().await;
}
