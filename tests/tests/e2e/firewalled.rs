//! Peers that accept no connections (`peerdex agent --no-listen`): reached by reverse
//! connection or through the relay, and mixed with direct sources.

use std::path::Path;

use peerdex_download::DownloadError;
use peerdex_shared::pieces::PIECE_SIZE;
use peerdex_tests::*;

const P: usize = PIECE_SIZE as usize;

/// Starts an agent sharing `name` with `bytes`, accepting connections or not.
async fn agent_with(
    server: &TestServer,
    root: &Path,
    listen: bool,
    name: &str,
    bytes: &[u8],
) -> TestAgent {
    write_file(root, name, bytes);
    let agent = TestAgent::start(&server.url, &[root], |c| {
        if !listen {
            c.listen = None;
        }
    })
    .await;
    agent.wait_synced().await;
    if !listen {
        agent.wait_control_channel().await;
    }
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firewalled_agent_serves_by_reverse_connection() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(3 * P + 11, 31);
    let agent = agent_with(
        &server,
        &dir.path().join("share"),
        false,
        "behind nat.bin",
        &bytes,
    )
    .await;
    let status = agent.status();
    assert_eq!(status.serving, None);
    assert_eq!(
        status.server.reachability,
        Some(peerdex_shared::api::Reachability::Firewalled)
    );
    let hash = content_hash(&bytes);
    let out = dir.path().join("out");
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("behind nat.bin")).unwrap(), bytes);
    assert_eq!(report.sources_used.len(), 1);
    assert!(
        report.sources_used[0].ends_with("via reverse connection"),
        "{report:?}"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_firewalled_peers_meet_through_the_relay() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(2 * P + 5, 32);
    let agent = agent_with(
        &server,
        &dir.path().join("share"),
        false,
        "relayed.bin",
        &bytes,
    )
    .await;
    let hash = content_hash(&bytes);
    let out = dir.path().join("out");
    // The downloader accepts no connections either.
    let report = download_into(&server.url, hash, &out, |o| o.accept_connections = false)
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("relayed.bin")).unwrap(), bytes);
    assert!(report.sources_used[0].ends_with("via relay"), "{report:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_over_quota_is_refused_with_a_clear_message() {
    let server = TestServer::start_with(|c| c.relay.max_sessions = 0).await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(1000, 33);
    let agent = agent_with(
        &server,
        &dir.path().join("share"),
        false,
        "quota.bin",
        &bytes,
    )
    .await;
    let failed = download_into(
        &server.url,
        content_hash(&bytes),
        &dir.path().join("out"),
        |o| {
            o.accept_connections = false;
            // Full is temporary: the source is retried, then given up with the reason.
            o.busy_limit = std::time::Duration::from_secs(3);
        },
    )
    .await;
    let Err(DownloadError::NoSource { dropped, .. }) = failed else {
        panic!("expected no source, got {failed:?}");
    };
    let reason = &dropped[0].1;
    assert!(
        reason.contains("relay is full") && reason.contains("relay.max_sessions"),
        "{reason}"
    );
    // Turned off entirely: said so.
    let off = TestServer::start_with(|c| c.relay.enabled = false).await;
    let agent_off = agent_with(
        &off,
        &dir.path().join("share2"),
        false,
        "off.bin",
        b"relay off",
    )
    .await;
    let failed = download_into(
        &off.url,
        content_hash(b"relay off"),
        &dir.path().join("out"),
        |o| {
            o.accept_connections = false;
        },
    )
    .await;
    assert!(format!("{:?}", failed.unwrap_err()).contains("relay is turned off"));
    agent.stop().await;
    agent_off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_mixes_direct_and_firewalled_sources() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(12 * P + 3, 34);
    // Both send at 4 MiB/s so that each gets a share of the pieces.
    let open = {
        write_file(&dir.path().join("open"), "mixed.bin", &bytes);
        let agent = TestAgent::start(&server.url, &[&dir.path().join("open")], |c| {
            c.upload.max_rate = 4 << 20;
            c.upload.min_rate = 1;
        })
        .await;
        agent.wait_synced().await;
        agent
    };
    let hidden = {
        write_file(&dir.path().join("hidden"), "mixed.bin", &bytes);
        let agent = TestAgent::start(&server.url, &[&dir.path().join("hidden")], |c| {
            c.listen = None;
            c.upload.max_rate = 4 << 20;
            c.upload.min_rate = 1;
        })
        .await;
        agent.wait_synced().await;
        agent.wait_control_channel().await;
        agent
    };
    let hash = content_hash(&bytes);
    wait_for_sources(&server, hash, 2).await;
    let out = dir.path().join("out");
    let report = download_into(&server.url, hash, &out, |o| o.max_sources = 2)
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("mixed.bin")).unwrap(), bytes);
    let routes: Vec<&str> = report
        .sources_used
        .iter()
        .map(|s| s.rsplit(" via ").next().unwrap())
        .collect();
    assert!(
        routes.contains(&"direct") && routes.contains(&"reverse connection"),
        "{report:?}"
    );
    open.stop().await;
    hidden.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_ipv6_are_advertised_and_used() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    }
    let server = TestServer::start_with(|c| c.listen = "[::1]:0".parse().unwrap()).await;
    assert!(server.url.starts_with("http://[::1]:"), "{}", server.url);
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(P + 7, 35);
    write_file(&dir.path().join("share"), "six.bin", &bytes);
    let agent = TestAgent::start(&server.url, &[&dir.path().join("share")], |c| {
        c.listen = Some("[::1]:0".parse().unwrap());
    })
    .await;
    agent.wait_synced().await;
    let hash = content_hash(&bytes);
    let client = server.client();
    let source = wait_until(
        "the IPv6 address to be verified",
        std::time::Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let found = client.sources(&hash).await.map_err(|e| e.to_string())?;
                match found.sources.first() {
                    Some(s) if s.reachability == peerdex_shared::api::Reachability::Reachable => {
                        Ok(s.clone())
                    }
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    let advertised = source.addr.unwrap();
    assert!(advertised.starts_with("[::1]:"), "{advertised}");
    assert_eq!(
        agent.status().server.advertised_addr.as_deref(),
        Some(advertised.as_str())
    );
    // The agent hears the verdict over its control channel, not at its next heartbeat (30 s).
    wait_until(
        "the agent to learn it is reachable",
        std::time::Duration::from_secs(10),
        || {
            let seen = agent.status().server.reachability;
            async move {
                if seen == Some(peerdex_shared::api::Reachability::Reachable) {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            }
        },
    )
    .await;
    let out = dir.path().join("out");
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("six.bin")).unwrap(), bytes);
    assert!(
        report.sources_used[0].contains("[::1]") && report.sources_used[0].ends_with("via direct"),
        "{report:?}"
    );
    agent.stop().await;
}
