//! Only addresses that proved to belong to the registering key are advertised as reachable.

use std::time::Duration;

use peerdex_shared::api::Reachability;
use peerdex_tests::{TestPeer, TestServer, entry, register_raw, wait_until};

async fn reachability_of(
    server: &TestServer,
    q: &str,
    nick: &str,
) -> Result<(Reachability, Option<String>), String> {
    let result = server.search(q).await;
    let source = result
        .hits
        .iter()
        .flat_map(|h| h.sources.iter())
        .find(|s| s.nickname == nick)
        .ok_or_else(|| format!("{nick} not in results"))?;
    match source.reachability {
        Reachability::Pending => Err("pending".into()),
        r => Ok((r, source.addr.clone())),
    }
}

#[tokio::test]
async fn listening_peer_is_verified_others_are_firewalled() {
    let server = TestServer::start().await;
    let honest = TestPeer::join(&server.url, "honest").await;
    honest
        .client
        .upload_full(1, &[entry("a/Reach Test.mp3", 1, "reach-honest")])
        .await
        .unwrap();

    // Announces a port where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let nobody = TestPeer::join_announcing(&server.url, "nobody", closed_port).await;
    nobody
        .client
        .upload_full(1, &[entry("a/Reach Test.mp3", 1, "reach-nobody")])
        .await
        .unwrap();

    // Announces the honest peer's port: that answer is signed by another key.
    let thief = TestPeer::join_announcing(&server.url, "thief", honest.port).await;
    thief
        .client
        .upload_full(1, &[entry("a/Reach Test.mp3", 1, "reach-thief")])
        .await
        .unwrap();

    let wait = Duration::from_secs(15);
    let (r, addr) = wait_until("honest to be probed", wait, || {
        reachability_of(&server, "reach", "honest")
    })
    .await;
    assert_eq!(r, Reachability::Reachable);
    assert_eq!(addr, Some(format!("127.0.0.1:{}", honest.port)));
    let (r, _) = wait_until("nobody to be probed", wait, || {
        reachability_of(&server, "reach", "nobody")
    })
    .await;
    assert_eq!(r, Reachability::Firewalled);
    let (r, _) = wait_until("thief to be probed", wait, || {
        reachability_of(&server, "reach", "thief")
    })
    .await;
    assert_eq!(r, Reachability::Firewalled);
    // Firewalled peers are still indexed and listed.
    assert_eq!(server.search("reach").await.hits.len(), 3);
}

#[tokio::test]
async fn claimed_addresses_are_ignored() {
    let server = TestServer::start().await;
    let identity = peerdex_client::Identity::generate().unwrap();
    let claims = [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
    ];
    let response = register_raw(
        &server.url,
        &identity,
        "mallory",
        4444,
        &claims,
        &[("ip", "203.0.113.9")],
    )
    .await;
    let response: serde_json::Value = response.json().await.unwrap();
    assert_eq!(response["advertised_addr"], "127.0.0.1:4444", "{response}");
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_used() {
    let server =
        TestServer::start_with(|c| c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]).await;
    let identity = peerdex_client::Identity::generate().unwrap();
    let forwarded = [("x-forwarded-for", "198.51.100.7, 127.0.0.1")];
    let response = register_raw(&server.url, &identity, "proxied", 0, &forwarded, &[]).await;
    assert!(response.status().is_success());
    // Port 0 advertises nothing, but the recorded IP is the forwarded one.
    let peer = peerdex_server::db::Db::open(&server.data.join(peerdex_server::server::DB_FILE))
        .unwrap()
        .peer_by_nickname("proxied")
        .unwrap()
        .unwrap();
    assert_eq!(peer.ip.as_deref(), Some("198.51.100.7"));
}
