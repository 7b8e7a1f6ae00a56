//! Crashes and restarts: nothing acknowledged is lost, the index holds nothing SQLite does not.

use std::time::Duration;

use peerdex_client::ServerClient;
use peerdex_client::server_api::SearchQuery;
use peerdex_server::db::Db;
use peerdex_server::index::SearchIndex;
use peerdex_server::server::{DB_FILE, INDEX_DIR};
use peerdex_tests::{ServerProcess, TestAgent, TestPeer, TestServer, entry, wait_until};

const BINARY: &str = env!("CARGO_BIN_EXE_peerdex-server-under-test");

async fn count_hits(url: &str, q: &str) -> Result<u64, String> {
    let client = ServerClient::new(url).unwrap();
    let query = SearchQuery {
        q: q.into(),
        limit: Some(100),
        ..Default::default()
    };
    client
        .search(&query)
        .await
        .map(|r| r.total)
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn kill_9_during_uploads_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Per peer, the lists it may hold now: the last acknowledged upload, plus any attempted after
    // it (an upload can be committed and then lose its answer to the kill).
    let mut candidates: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    let mut peers: Vec<(String, peerdex_client::Identity)> = Vec::new();
    for round in 0..5u64 {
        let server = ServerProcess::spawn(BINARY.as_ref(), &data, None);
        // Upload from two peers concurrently; kill -9 while uploads are still going.
        let mut tasks = Vec::new();
        for p in 0..2 {
            let nick = format!("peer{p}");
            if peers.len() <= p {
                peers.push((nick.clone(), peerdex_client::Identity::generate().unwrap()));
            }
            let identity = peers[p].1.clone();
            let url = server.url.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = ServerClient::new(&url).unwrap();
                // (marker, acknowledged) in the order sent.
                let mut sent = Vec::new();
                if client.register(&identity, &nick, 0).await.is_err() {
                    return (nick, sent);
                }
                for upload in 0..1000u64 {
                    let marker = format!("r{round}p{p}u{upload}");
                    let entries: Vec<_> = (0..200)
                        .map(|i| {
                            entry(
                                &format!("{marker}/file {i}.mp3"),
                                i,
                                &format!("{marker}-{i}"),
                            )
                        })
                        .collect();
                    match client.upload_full(round * 10_000 + upload, &entries).await {
                        Ok(_) => sent.push((marker, true)),
                        Err(_) => {
                            sent.push((marker, false));
                            break;
                        }
                    }
                }
                (nick, sent)
            }));
        }
        tokio::time::sleep(Duration::from_millis(300 + 250 * round)).await;
        server.kill9();
        for task in tasks {
            let (nick, sent) = task.await.unwrap();
            let list = candidates.entry(nick).or_default();
            for (marker, acknowledged) in sent {
                if acknowledged {
                    list.clear();
                }
                list.push(marker);
            }
        }
        let db = Db::open(&data.join(DB_FILE)).unwrap();
        assert_eq!(
            db.integrity_check().unwrap(),
            "ok",
            "after kill -9 in round {round}"
        );
    }
    let acknowledged = candidates.len();
    assert!(acknowledged > 0, "no upload was acknowledged at all");

    // Restart: each peer's last acknowledged list (or a later one whose answer the kill cut
    // off) is searchable, with all its entries.
    let server = ServerProcess::spawn(BINARY.as_ref(), &data, None);
    for (nick, markers) in &candidates {
        let mut client = ServerClient::new(&server.url).unwrap();
        let identity = &peers.iter().find(|(n, _)| n == nick).unwrap().1;
        client.register(identity, nick, 0).await.unwrap(); // come back online
        let found = wait_until(
            &format!("one of {markers:?} to be searchable"),
            Duration::from_secs(30),
            || {
                let (url, markers) = (server.url.clone(), markers.clone());
                async move {
                    let mut seen = Vec::new();
                    for marker in &markers {
                        let hits = count_hits(&url, marker).await?;
                        if hits == 200 {
                            return Ok(marker.clone());
                        }
                        seen.push(format!("{marker}: {hits} hits"));
                    }
                    Err(seen.join(", "))
                }
            },
        )
        .await;
        // Only that one: the server holds one list per peer.
        for other in markers.iter().filter(|m| **m != found) {
            assert_eq!(count_hits(&server.url, other).await.unwrap(), 0, "{other}");
        }
    }
    // A graceful stop commits everything; then the index holds exactly what SQLite holds.
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    let db = Db::open(&data.join(DB_FILE)).unwrap();
    let expected = db.counts().unwrap().entries;
    let (index, watermark) = SearchIndex::open(&data.join(INDEX_DIR)).unwrap();
    assert!(watermark.is_some());
    assert_eq!(
        index.num_docs(),
        expected,
        "index documents vs SQLite entries"
    );
    assert_eq!(expected, 200 * acknowledged as u64);
}

#[tokio::test]
async fn index_rebuilds_from_database_when_lost() {
    let server = TestServer::start().await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    alice
        .client
        .upload_full(1, &[entry("x/Rebuild Me.mp3", 1, "rebuild")])
        .await
        .unwrap();
    server.wait_for_hits("rebuild", 1).await;
    let data = server.data.clone();
    let guard = server.stop().await;
    std::fs::remove_dir_all(data.join(INDEX_DIR)).unwrap();
    let server = TestServer::start_in(&data, |_| {}).await;
    let mut alice = alice;
    alice.client = server.client();
    alice.register().await;
    server.wait_for_hits("rebuild", 1).await;
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_by_agents_twenty_times_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Short heartbeats, so agents notice each restart quickly.
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[presence]\nheartbeat_interval_secs = 1\noffline_after_secs = 3\n\
         [index]\ncommit_interval_ms = 100\nwriter_memory_bytes = 15000000\n",
    )
    .unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let mut agents = Vec::new();
    for a in 0..3 {
        let share = dir.path().join(format!("share{a}"));
        std::fs::create_dir_all(&share).unwrap();
        agents.push((
            share,
            TestAgent::start(&url, &[&dir.path().join(format!("share{a}"))], |_| {}).await,
        ));
    }
    let mut added = 0u64;
    for round in 0..20u64 {
        let server = ServerProcess::spawn_on(BINARY.as_ref(), &data, Some(&config), &listen);
        // Changes keep coming while the server is up; it dies at a different moment each round.
        for (a, (share, _)) in agents.iter().enumerate() {
            for f in 0..5 {
                let name = format!("agent{a} round{round} file{f} token{a}x.txt");
                peerdex_tests::write_file(share, &name, name.as_bytes());
                added += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(200 + (round * 137) % 900)).await;
        server.kill9();
        let db = Db::open(&data.join(DB_FILE)).unwrap();
        assert_eq!(
            db.integrity_check().unwrap(),
            "ok",
            "after kill -9 in round {round}"
        );
    }

    // Back for good: every agent catches up, and the server holds exactly what they share.
    let server = ServerProcess::spawn_on(BINARY.as_ref(), &data, Some(&config), &listen);
    for (_, agent) in &agents {
        agent.wait_synced().await;
    }
    let expected: u64 = added;
    wait_until(
        "every file in the index",
        Duration::from_secs(60),
        || async {
            let stats = ServerClient::new(&url)
                .unwrap()
                .stats()
                .await
                .map_err(|e| e.to_string())?;
            if stats.entries == expected {
                Ok(())
            } else {
                Err(format!("{} of {expected}", stats.entries))
            }
        },
    )
    .await;
    for a in 0..3 {
        let token = format!("token{a}x");
        wait_until(
            &format!("{token} searchable"),
            Duration::from_secs(30),
            || {
                let (url, token) = (url.clone(), token.clone());
                async move {
                    match count_hits(&url, &token).await? {
                        100 => Ok(()),
                        n => Err(format!("{n} hits")),
                    }
                }
            },
        )
        .await;
    }
    for (_, agent) in agents {
        agent.stop().await;
    }
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    let db = Db::open(&data.join(DB_FILE)).unwrap();
    let (index, _) = SearchIndex::open(&data.join(INDEX_DIR)).unwrap();
    assert_eq!(
        index.num_docs(),
        db.counts().unwrap().entries,
        "index documents vs SQLite entries"
    );
}
