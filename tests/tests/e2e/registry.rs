//! Registration, sessions and who may change what.

use peerdex_client::server_api::ApiError;
use peerdex_client::{Identity, ServerClient};
use peerdex_shared::api::{ErrorCode, Reachability};
use peerdex_shared::identity::registration_message;
use peerdex_tests::{TestPeer, TestServer, entry};
use reqwest::StatusCode;

fn status(e: &ApiError) -> StatusCode {
    match e {
        ApiError::Server { status, .. } => *status,
        other => panic!("expected a server error, got {other}"),
    }
}

#[tokio::test]
async fn one_peer_cannot_touch_another_peers_list() {
    let server = TestServer::start().await;
    let alice = TestPeer::join(&server.url, "alice").await;
    let bob = TestPeer::join(&server.url, "bob").await;
    alice
        .client
        .upload_full(1, &[entry("Queen/Bohemian Rhapsody.mp3", 100, "bohemian")])
        .await
        .unwrap();
    server.wait_for_hits("bohemian", 1).await;

    // Bob's valid session used against Alice's peer id: 403 on every state-changing call.
    let bob_as_alice = ServerClient::new(&server.url).unwrap().with_session(
        alice.identity.peer_id(),
        bob.client.session_token().unwrap().to_string(),
    );
    for err in [
        bob_as_alice.upload_full(2, &[]).await.unwrap_err(),
        bob_as_alice.upload_delta(1, 2, &[]).await.unwrap_err(),
        bob_as_alice.delete_list().await.unwrap_err(),
        bob_as_alice.heartbeat().await.map(|_| ()).unwrap_err(),
        bob_as_alice.logout().await.unwrap_err(),
    ] {
        assert_eq!(status(&err), StatusCode::FORBIDDEN, "{err}");
        assert_eq!(err.code(), Some(ErrorCode::Forbidden));
    }
    // No token, or a made-up one: 401.
    let http = peerdex_tests::http();
    let url = format!(
        "{}/api/v1/peers/{}/list?version=9",
        server.url,
        alice.identity.peer_id()
    );
    let r = http.put(&url).body("").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http
        .put(&url)
        .bearer_auth("0".repeat(64))
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");

    // Alice's list is untouched and still searchable.
    let result = server.search("bohemian").await;
    assert_eq!(result.hits.len(), 1);
    assert_eq!(result.hits[0].sources[0].nickname, "alice");
}

#[tokio::test]
async fn registration_needs_a_fresh_signed_nonce() {
    let server = TestServer::start().await;
    let http = peerdex_tests::http();
    let identity = Identity::generate().unwrap();
    let peer_id = identity.peer_id();
    let challenge: serde_json::Value = http
        .post(format!("{}/api/v1/challenge", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nonce = challenge["nonce"].as_str().unwrap().to_string();
    let body = |nick: &str, signature: String| serde_json::json!({ "peer_id": peer_id, "nickname": nick, "port": 0, "nonce": nonce, "signature": signature });
    let register = |b: serde_json::Value| {
        http.post(format!("{}/api/v1/register", server.url))
            .json(&b)
            .send()
    };

    // Signed by another key: refused (and the nonce is spent).
    let impostor = Identity::generate().unwrap();
    let forged = impostor
        .sign(&registration_message(&nonce, &peer_id, "carol", 0))
        .to_string();
    assert_eq!(
        register(body("carol", forged)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // A correct signature over a spent nonce (a replay): refused.
    let good = identity
        .sign(&registration_message(&nonce, &peer_id, "carol", 0))
        .to_string();
    let r = register(body("carol", good)).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("nonce"));
    // A nonce never issued: refused.
    let mut client = ServerClient::new(&server.url).unwrap();
    let ok = client.register(&identity, "carol", 0).await.unwrap();
    assert_eq!(ok.reachability, Reachability::Firewalled);
    assert_eq!(ok.list_version, None);
    // Malformed JSON and bad nicknames: 400 with a message.
    let r = http
        .post(format!("{}/api/v1/register", server.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let mut client2 = ServerClient::new(&server.url).unwrap();
    let err = client2
        .register(&Identity::generate().unwrap(), "bad name", 0)
        .await
        .unwrap_err();
    assert_eq!(status(&err), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn nicknames_stay_with_their_key() {
    let server = TestServer::start().await;
    let mut alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    let err = ServerClient::new(&server.url)
        .unwrap()
        .register(&Identity::generate().unwrap(), "ALICE", 0)
        .await
        .unwrap_err();
    assert_eq!(status(&err), StatusCode::CONFLICT);
    assert_eq!(err.code(), Some(ErrorCode::NicknameTaken));
    // The owner re-registers: fine, and the old token stops working.
    let old = alice.client.clone();
    alice.register().await;
    assert_eq!(
        status(&old.heartbeat().await.unwrap_err()),
        StatusCode::UNAUTHORIZED
    );
    alice.client.heartbeat().await.unwrap();
}

#[tokio::test]
async fn reconnect_with_unchanged_list_uploads_nothing() {
    let server = TestServer::start().await;
    let mut alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    alice
        .client
        .upload_full(41, &[entry("a/Yesterday.mp3", 5, "yesterday")])
        .await
        .unwrap();
    // The agent reconnects: the server tells it which version it holds, so it can skip the upload.
    let again = alice.register().await;
    assert_eq!(again.list_version, Some(41));
    assert_eq!(again.entries, 1);
    assert_eq!(
        alice.client.heartbeat().await.unwrap().list_version,
        Some(41)
    );
    server.wait_for_hits("yesterday", 1).await;
}

#[tokio::test]
async fn full_width_nicknames_and_disguised_file_names_are_refused() {
    let server = TestServer::start().await;
    let _alice = TestPeer::join(&server.url, "alice").await;
    // Compatibility forms and case are one name: ａｌｉｃｅ is alice, Ａlice too.
    for lookalike in ["ａｌｉｃｅ", "ＡＬＩＣＥ", "Alice"] {
        let mut client = ServerClient::new(&server.url).unwrap();
        let err = client
            .register(&Identity::generate().unwrap(), lookalike, 0)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::NicknameTaken),
            "{lookalike}: {err}"
        );
    }
    // Browsing by the look-alike finds the one peer.
    let page = server.client().browse("ａｌｉｃｅ", None, 1).await.unwrap();
    assert_eq!(page.nickname, "alice");

    // A right-to-left override would show "evil\u{202e}gpj.exe" as "evilexe.jpg".
    let bob = TestPeer::join(&server.url, "bob").await;
    for hidden in [
        "evil\u{202e}gpj.exe",
        "a\u{200b}b.mp3",
        "\u{feff}x.txt",
        "x\u{2066}.txt",
    ] {
        let err = bob
            .client
            .upload_full(1, &[entry(&format!("dir/{hidden}"), 1, "x")])
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(ErrorCode::InvalidEntry),
            "{hidden:?}: {err}"
        );
        assert!(
            err.to_string().contains("invisible formatting character"),
            "{err}"
        );
    }
    // Joiners that scripts need are fine.
    bob.client
        .upload_full(1, &[entry("dir/می\u{200c}خواهم.mp3", 1, "persian")])
        .await
        .unwrap();
}
