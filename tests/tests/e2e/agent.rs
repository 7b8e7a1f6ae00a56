//! The agent end to end: real folders are scanned, hashed and kept in sync with a real server.

use std::time::Duration;

use peerdex_tests::*;

/// Search hits of `q` as (name, path of the first source).
async fn hits(server: &TestServer, q: &str) -> Vec<(String, String)> {
    server
        .search(q)
        .await
        .hits
        .into_iter()
        .map(|h| (h.name, h.sources[0].path.clone()))
        .collect()
}

/// Waits until searching `q` finds exactly the files at `paths`.
async fn wait_for_paths(server: &TestServer, q: &str, paths: &[&str]) {
    let mut want: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
    want.sort();
    wait_until(
        &format!("search {q:?} to find {want:?}"),
        Duration::from_secs(20),
        || async {
            let mut got: Vec<String> = hits(server, q).await.into_iter().map(|h| h.1).collect();
            got.sort();
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_scan_of_a_nested_tree_is_searchable() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("Library");
    // 6 artists × 5 albums × 8 tracks = 240 files, three folders deep.
    for artist in 0..6 {
        for album in 0..5 {
            for track in 0..8 {
                let rel = format!("artist{artist}/album{album}/track{track} melody.mp3");
                write_file(&share, &rel, format!("{artist}-{album}-{track}").as_bytes());
            }
        }
    }
    write_file(&share, "가수/노래 melody.flac", b"korean");
    write_file(&share, "Café/déjà melody.ogg", b"accents");
    // Never shared: hidden files and folders, downloads in progress, temporaries.
    write_file(&share, ".secret melody.mp3", b"hidden");
    write_file(&share, ".cache/cached melody.mp3", b"hidden folder");
    write_file(&share, "artist0/unfinished melody.mp3.part", b"partial");
    write_file(&share, "artist0/melody.tmp", b"temporary");

    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    let status = agent.wait_synced().await;
    assert_eq!(status.shares[0].name, "Library");
    assert_eq!(status.shares[0].counts.files, 242);
    let result = wait_until(
        "every track in the index",
        Duration::from_secs(20),
        || async {
            let stats = server.client().stats().await.unwrap();
            if stats.entries == 242 {
                Ok(stats)
            } else {
                Err(format!("{stats:?}"))
            }
        },
    )
    .await;
    assert_eq!(result.distinct_contents, 242);
    wait_for_paths(
        &server,
        "track7 album4 artist5",
        &["artist5/album4/track7 melody.mp3"],
    )
    .await;
    wait_for_paths(&server, "노래", &["가수/노래 melody.flac"]).await;
    wait_for_paths(&server, "deja", &["Café/déjà melody.ogg"]).await;
    for hidden in ["secret", "cached", "unfinished"] {
        assert!(
            hits(&server, hidden).await.is_empty(),
            "{hidden} was shared"
        );
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_modified_renamed_and_deleted_files_reach_the_index() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "keep.txt", b"keep");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;

    let added = write_file(&share, "new/folder/sunrise.ogg", b"first version");
    wait_for_paths(&server, "sunrise", &["new/folder/sunrise.ogg"]).await;

    // Modified: the index now has the new content's hash.
    std::fs::write(&added, b"second version, longer").unwrap();
    let new_hash = content_hash(b"second version, longer");
    wait_until(
        "the new content in the index",
        Duration::from_secs(20),
        || async {
            let result = server.search("sunrise").await;
            match result.hits.as_slice() {
                [hit] if hit.hash == new_hash => Ok(()),
                other => Err(format!(
                    "{:?}",
                    other.iter().map(|h| h.hash).collect::<Vec<_>>()
                )),
            }
        },
    )
    .await;

    // Renamed file, then renamed folder.
    std::fs::rename(&added, share.join("new/folder/sunset.ogg")).unwrap();
    wait_for_paths(&server, "sunset", &["new/folder/sunset.ogg"]).await;
    assert!(hits(&server, "sunrise").await.is_empty());
    std::fs::rename(share.join("new"), share.join("moved")).unwrap();
    wait_for_paths(&server, "sunset", &["moved/folder/sunset.ogg"]).await;

    // Deleted file, then a deleted folder with its contents.
    write_file(&share, "moved/other dusk.ogg", b"dusk");
    wait_for_paths(&server, "dusk", &["moved/other dusk.ogg"]).await;
    std::fs::remove_file(share.join("moved/other dusk.ogg")).unwrap();
    wait_for_paths(&server, "dusk", &[]).await;
    std::fs::remove_dir_all(share.join("moved")).unwrap();
    wait_for_paths(&server, "sunset", &[]).await;
    wait_for_paths(&server, "keep", &["keep.txt"]).await;

    // Reading files is not a change: serving one triggers no rescan (regression: open and
    // close-after-read events once made the agent rescan forever).
    let before = agent.status().progress.dirs_scanned;
    let keep = content_hash(b"keep");
    let served = agent
        .http()
        .get(format!("{}/peerdex/v1/blobs/{keep}", agent.url))
        .send()
        .await
        .unwrap();
    assert_eq!(served.bytes().await.unwrap().as_ref(), b"keep");
    tokio::time::sleep(Duration::from_millis(1500)).await; // several debounce periods
    assert_eq!(
        agent.status().progress.dirs_scanned,
        before,
        "a read caused rescans"
    );

    // The renames re-read nothing: only the two versions of the file and the dusk file
    // were hashed after the first scan.
    let status = agent.status();
    assert_eq!(status.progress.files_hashed, 4, "{:?}", status.progress);
    assert_eq!(
        status.server.full_uploads, 1,
        "later changes travel as deltas"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_an_unchanged_share_reads_and_uploads_nothing() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    for i in 0..50 {
        write_file(
            &share,
            &format!("d{}/file{i}.bin", i % 5),
            &pseudo_random(3000 + i, i as u64),
        );
    }
    write_file(&share, "big.bin", &pseudo_random(3 << 20, 99));
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    let first = agent.wait_synced().await;
    assert_eq!(first.progress.files_hashed, 51);
    let peer = first.peer_id;
    let (config, state) = agent.stop().await;
    // The version the server holds once the first run is over (what the restart must keep):
    // read from the server's own database, not from the agent's last status snapshot.
    let held = || {
        operator_db(&server)
            .peer_by_key(&peer)
            .unwrap()
            .expect("the agent's peer is known")
            .list_version
    };
    let version = held();
    assert!(version.is_some(), "the server holds the first run's list");

    let agent = TestAgent::start_with(config).await;
    let status = wait_until("the agent back online", Duration::from_secs(20), || {
        let status = agent.status();
        async move {
            if status.server.online && !status.progress.scanning && status.progress.dirs_scanned > 0
            {
                Ok(status)
            } else {
                Err(format!("{status:?}"))
            }
        }
    })
    .await;
    assert_eq!(status.progress.files_seen, 51);
    assert_eq!(status.progress.bytes_hashed, 0, "no file was read again");
    assert_eq!(status.server.full_uploads, 0, "no list was uploaded");
    assert_eq!(status.server.delta_uploads, 0, "{status:?}");
    assert_eq!(status.server.list_version, version);
    assert_eq!(held(), version, "the server's copy did not move");
    agent.stop().await;
    drop(state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_resyncs_after_the_server_restarts() {
    let server = TestServer::start().await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "before restart.txt", b"before");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    wait_for_paths(&server, "before", &["before restart.txt"]).await;
    let data = server.data.clone();
    let guard = server.stop().await;

    // While the server is down the agent keeps working and notices changes.
    write_file(&share, "during outage.txt", b"during");
    wait_until(
        "the agent to notice the outage",
        Duration::from_secs(30),
        || {
            let status = agent.status();
            async move {
                let queued = status.progress.files_hashed >= 2;
                if !status.server.online && queued {
                    Ok(())
                } else {
                    Err(format!("{:?}", status.server))
                }
            }
        },
    )
    .await;

    let server = TestServer::start_in(&data, |c| c.listen = addr.parse().unwrap()).await;
    wait_for_paths(&server, "during outage", &["during outage.txt"]).await;
    wait_for_paths(&server, "before", &["before restart.txt"]).await;
    let status = agent.status();
    assert_eq!(
        status.server.full_uploads, 1,
        "resynced by version, not by a full upload"
    );
    agent.stop().await;
    server.stop().await;
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_the_list_gets_it_again_in_full() {
    // Short heartbeats: the agent notices the new server at its next heartbeat.
    let server = TestServer::start_with(|c| {
        c.presence.heartbeat_interval_secs = 1;
        c.presence.offline_after_secs = 3;
    })
    .await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "precious.txt", b"precious");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    server.stop().await;

    // A new server with an empty data directory on the same address.
    let fresh = TestServer::start_with(|c| c.listen = addr.parse().unwrap()).await;
    wait_for_paths(&fresh, "precious", &["precious.txt"]).await;
    assert_eq!(agent.status().server.full_uploads, 2);
    agent.stop().await;
}
