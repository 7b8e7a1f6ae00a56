//! Offline peers vanish from results at once and come back with one heartbeat.

use std::time::Duration;

use peerdex_tests::{TestPeer, TestServer, entry, wait_until};

#[tokio::test]
async fn offline_peers_are_hidden_then_back() {
    let server = TestServer::start_with(|c| {
        c.presence.heartbeat_interval_secs = 1;
        c.presence.offline_after_secs = 2;
    })
    .await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    let bob = TestPeer::join_announcing(&server.url, "bob", 0).await;
    alice
        .client
        .upload_full(1, &[entry("Nirvana/Lithium.mp3", 1, "lithium")])
        .await
        .unwrap();
    bob.client
        .upload_full(1, &[entry("Nirvana/Lithium.mp3", 1, "lithium")])
        .await
        .unwrap();
    let hit = server.wait_for_hits("lithium", 1).await;
    assert_eq!(hit.hits[0].sources_online, 2);

    // Bob keeps heartbeating, Alice goes silent: she disappears from the sources.
    let client = server.client();
    let result = wait_until("alice to go offline", Duration::from_secs(15), || {
        let (bob, client) = (&bob, &client);
        async move {
            bob.client.heartbeat().await.unwrap();
            let r = client
                .search(&peerdex_client::server_api::SearchQuery {
                    q: "lithium".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            match r.hits.first() {
                Some(h) if h.sources_online == 1 => Ok(r),
                other => Err(format!("{:?}", other.map(|h| h.sources_online))),
            }
        }
    })
    .await;
    assert_eq!(result.hits[0].sources[0].nickname, "bob");
    // Her list is still stored: one heartbeat brings it back without any upload.
    let beat = alice.client.heartbeat().await.unwrap();
    assert_eq!(beat.list_version, Some(1));
    assert_eq!(server.search("lithium").await.hits[0].sources_online, 2);
    let browse = client.browse("alice", None, 10).await.unwrap();
    assert!(browse.online);

    // Logging out hides a peer at once; with nobody online the content is gone from results.
    alice.client.logout().await.unwrap();
    bob.client.logout().await.unwrap();
    assert!(server.search("lithium").await.hits.is_empty());
    assert_eq!(client.stats().await.unwrap().peers_online, 0);
}

#[tokio::test]
async fn lists_of_long_gone_peers_are_purged() {
    let server = TestServer::start_with(|c| {
        c.presence.heartbeat_interval_secs = 1;
        c.presence.offline_after_secs = 2;
        c.presence.retention_secs = 0;
        c.presence.purge_interval_secs = 1;
    })
    .await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    alice
        .client
        .upload_full(1, &[entry("x/Purge Me.mp3", 1, "purge")])
        .await
        .unwrap();
    server.wait_for_hits("purge", 1).await;
    alice.client.logout().await.unwrap();
    let client = server.client();
    wait_until("alice's list to be purged", Duration::from_secs(15), || {
        let client = &client;
        async move {
            let b = client.browse("alice", None, 10).await.unwrap();
            if b.entries == 0 && b.files.is_empty() {
                Ok(())
            } else {
                Err(format!("{} entries", b.entries))
            }
        }
    })
    .await;
    // The nickname stays bound; re-registering says there is no list, so the agent uploads in full.
    let mut alice = alice;
    assert_eq!(alice.register().await.list_version, None);
}
