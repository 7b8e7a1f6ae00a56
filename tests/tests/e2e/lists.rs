//! Full and delta list sync, and bad lists.

use std::io::Write;

use peerdex_client::server_api::{ApiError, ndjson};
use peerdex_shared::api::{DeltaOp, ErrorCode};
use peerdex_tests::{TestPeer, TestServer, entry, names};
use reqwest::StatusCode;

#[tokio::test]
async fn delta_sync_adds_changes_and_removes() {
    let server = TestServer::start().await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    let v1 = [
        entry("Beatles/Help.mp3", 10, "help"),
        entry("Beatles/Yesterday.mp3", 11, "yesterday"),
        entry("Beatles/Something.mp3", 12, "something"),
    ];
    assert_eq!(alice.client.upload_full(1, &v1).await.unwrap().entries, 3);
    server.wait_for_hits("beatles", 3).await;

    let ops = [
        DeltaOp::Add(entry("Beatles/Let It Be.mp3", 13, "letitbe")),
        DeltaOp::Change(entry("Beatles/Help.mp3", 99, "help-remaster")),
        DeltaOp::Remove {
            share: "music".into(),
            path: "Beatles/Something.mp3".into(),
        },
    ];
    let synced = alice.client.upload_delta(1, 2, &ops).await.unwrap();
    assert_eq!((synced.version, synced.entries), (2, 3));
    // The added song shows only once the delta's index operations are committed.
    server.wait_for_hits("let it be", 1).await;
    let result = server.wait_for_hits("beatles", 3).await;
    let mut got = names(&result);
    got.sort();
    assert_eq!(got, ["Help.mp3", "Let It Be.mp3", "Yesterday.mp3"]);
    let help = result.hits.iter().find(|h| h.name == "Help.mp3").unwrap();
    assert_eq!(help.size, 99);
    assert_eq!(help.hash, peerdex_tests::hash_of("help-remaster"));

    // A delta against a version the server does not hold: 409 telling the agent to resend in full.
    let err = alice.client.upload_delta(1, 3, &ops).await.unwrap_err();
    let ApiError::Server { status, body } = &err else {
        panic!("{err}")
    };
    assert_eq!(*status, StatusCode::CONFLICT);
    assert_eq!(body.code, ErrorCode::VersionMismatch);
    assert_eq!(body.server_version, Some(2));
    assert!(body.error.contains("full list"), "{}", body.error);
    // A delta that does not fit the list (removing a path the server lacks) is refused whole.
    let bad = [
        DeltaOp::Add(entry("Beatles/Girl.mp3", 1, "girl")),
        DeltaOp::Remove {
            share: "music".into(),
            path: "Beatles/Nope.mp3".into(),
        },
    ];
    let err = alice.client.upload_delta(2, 3, &bad).await.unwrap_err();
    let ApiError::Server { status, body } = &err else {
        panic!("{err}")
    };
    assert_eq!((*status, body.line), (StatusCode::CONFLICT, Some(2)));
    assert!(server.search("girl").await.hits.is_empty());
    // A full upload resets the version.
    alice.client.upload_full(7, &v1[..1]).await.unwrap();
    server.wait_for_hits("beatles", 1).await;
}

/// Sends a raw full-list body and returns (status, error body).
async fn put_raw(
    peer: &TestPeer,
    server: &TestServer,
    body: Vec<u8>,
    encoding: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let url = format!(
        "{}/api/v1/peers/{}/list?version=5",
        server.url,
        peer.identity.peer_id()
    );
    let mut request = peerdex_tests::http()
        .put(url)
        .bearer_auth(peer.client.session_token().unwrap())
        .body(body);
    if let Some(e) = encoding {
        request = request.header("content-encoding", e);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test]
async fn bad_lists_get_precise_errors_and_lose_nothing() {
    let server = TestServer::start_with(|c| {
        c.limits.max_entries_per_peer = 50;
        c.limits.max_line_bytes = 2048;
        c.limits.max_depth = 8;
    })
    .await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    let bob = TestPeer::join_announcing(&server.url, "bob", 0).await;
    alice
        .client
        .upload_full(1, &[entry("keep/Alice Original.mp3", 1, "alice-orig")])
        .await
        .unwrap();
    bob.client
        .upload_full(1, &[entry("bob/Bob Song.flac", 2, "bob-song")])
        .await
        .unwrap();
    server.wait_for_hits("original", 1).await;
    server.wait_for_hits("bob song", 1).await;

    let good = |path: &str| serde_json::to_string(&entry(path, 1, path)).unwrap();
    let hash = "ab".repeat(32);
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        ("traversal", format!("{}\n{}\n", good("ok.mp3"), good("../../etc/passwd")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "'..'"),
        ("absolute", format!("{}\n", good("/etc/passwd")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "absolute"),
        ("backslash", format!("{}\n", good("a\\b.mp3")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "backslash"),
        ("drive", format!("{}\n", good("C:/x.mp3")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "drive"),
        ("nul", format!("{}\n", good("a\0b.mp3")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "U+0000"),
        ("too deep", format!("{}\n", good("a/b/c/d/e/f/g/h/i.mp3")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "max_depth"),
        ("empty component", format!("{}\n", good("a//b.mp3")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "empty"),
        ("bad hash", b"{\"share\":\"m\",\"path\":\"x\",\"size\":1,\"mtime\":1,\"hash\":\"zz\"}\n".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "invalid hash"),
        ("negative size", format!("{{\"share\":\"m\",\"path\":\"x\",\"size\":-1,\"mtime\":1,\"hash\":\"{hash}\"}}\n").into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "line 1"),
        ("unknown field", format!("{{\"share\":\"m\",\"path\":\"x\",\"size\":1,\"mtime\":1,\"hash\":\"{hash}\",\"ip\":\"1.2.3.4\"}}\n").into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "unknown field"),
        ("bad share", format!("{{\"share\":\"a/b\",\"path\":\"x\",\"size\":1,\"mtime\":1,\"hash\":\"{hash}\"}}\n").into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "share"),
        ("malformed json", b"{\"share\": [[[[[[\n".to_vec(), StatusCode::UNPROCESSABLE_ENTITY, "line 1"),
        ("deep json", format!("{}{}\n", "[".repeat(5000), "]".repeat(5000)).into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "max_line_bytes"),
        ("invalid utf-8", [good("ok.mp3").as_bytes(), b"\n{\"share\":\"m\",\"path\":\"\xff\xfe\"}\n"].concat(), StatusCode::UNPROCESSABLE_ENTITY, "line 2"),
        ("duplicate path", format!("{}\n{}\n", good("same.mp3"), good("same.mp3")).into_bytes(), StatusCode::UNPROCESSABLE_ENTITY, "duplicate"),
        ("long line", format!("{}\n", good(&"x".repeat(3000))).into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "max_line_bytes"),
        ("too many entries", (0..51).map(|i| good(&format!("f{i}.mp3")) + "\n").collect::<String>().into_bytes(), StatusCode::PAYLOAD_TOO_LARGE, "max_entries_per_peer"),
    ];
    for (name, body, want_status, want_text) in cases {
        let (status, error) = put_raw(&alice, &server, body, None).await;
        assert_eq!(status, want_status, "{name}: {error}");
        let message = error["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(want_text),
            "{name}: message {message:?} should mention {want_text:?}"
        );
        assert!(
            error["line"].as_u64().is_some() || name == "malformed json",
            "{name}: no line in {error}"
        );
    }
    // A corrupt gzip body and an unknown encoding.
    let (status, _) = put_raw(&alice, &server, b"not gzip at all".to_vec(), Some("gzip")).await;
    assert!(status.is_client_error(), "{status}");
    let (status, _) = put_raw(&alice, &server, b"".to_vec(), Some("br")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Nothing of either peer's list was lost.
    let result = server.search("original").await;
    assert_eq!(names(&result), ["Alice Original.mp3"]);
    assert_eq!(names(&server.search("bob song").await), ["Bob Song.flac"]);
    let browse = server.client().browse("alice", None, 10).await.unwrap();
    assert_eq!(browse.entries, 1);
    assert_eq!(browse.files.len(), 1);
    // And the server is healthy.
    let health = peerdex_tests::http()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn compressed_list_of_many_entries_streams_in_batches() {
    let server = TestServer::start().await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    let entries: Vec<_> = (0..12_000)
        .map(|i| {
            entry(
                &format!("Artist {}/Album {}/Track {i:05}.mp3", i % 50, i % 7),
                1000 + i,
                &format!("c{i}"),
            )
        })
        .collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&ndjson(&entries)).unwrap();
    let body = gz.finish().unwrap();
    let synced = alice
        .client
        .upload_full_body(3, body, Some("gzip"))
        .await
        .unwrap();
    assert_eq!(synced.entries, 12_000);
    let result = server.wait_for_hits("track 00042", 1).await;
    assert_eq!(result.hits[0].size, 1042);
    let stats = server.client().stats().await.unwrap();
    assert_eq!((stats.entries, stats.distinct_contents), (12_000, 12_000));
    // Browse pages through the list with a cursor.
    let client = server.client();
    let mut seen = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let page = client
            .browse("alice", cursor.as_deref(), 1000)
            .await
            .unwrap();
        seen += page.files.len();
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, 12_000);
}

#[tokio::test]
async fn bodies_over_the_size_limit_get_413_naming_it() {
    let server = TestServer::start_with(|c| c.limits.max_list_bytes = 10_000).await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    alice
        .client
        .upload_full(1, &[entry("keep/Small.mp3", 1, "small")])
        .await
        .unwrap();
    server.wait_for_hits("small", 1).await;
    let entries: Vec<_> = (0..200)
        .map(|i| entry(&format!("big/File {i}.mp3"), i, &format!("b{i}")))
        .collect();
    let body = ndjson(&entries);
    assert!(body.len() > 10_000);

    // With Content-Length.
    let (status, error) = put_raw(&alice, &server, body.clone(), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["limit"], "max_list_bytes");
    // Without (chunked): refused once the stream passes the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let url = format!(
        "{}/api/v1/peers/{}/list?version=5",
        server.url,
        alice.identity.peer_id()
    );
    let response = peerdex_tests::http()
        .put(url)
        .bearer_auth(alice.client.session_token().unwrap())
        .body(streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["limit"], "max_list_bytes");
    // A small compressed body that inflates past the limit (a compression bomb).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'\n'; 1_000_000]).unwrap();
    let (status, error) = put_raw(&alice, &server, gz.finish().unwrap(), Some("gzip")).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{error}");
    assert_eq!(error["limit"], "max_list_bytes");

    assert_eq!(names(&server.search("small").await), ["Small.mp3"]);
}
