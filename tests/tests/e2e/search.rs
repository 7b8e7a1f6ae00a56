//! Keyword search: operators, scripts, filters, grouping by content, hostile queries.

use peerdex_client::server_api::SearchQuery;
use peerdex_shared::FileKind;
use peerdex_shared::api::DeltaOp;
use peerdex_tests::{TestPeer, TestServer, entry, hash_of, names};
use reqwest::StatusCode;

async fn library() -> (TestServer, TestPeer, TestPeer) {
    let server = TestServer::start().await;
    let alice = TestPeer::join(&server.url, "alice").await;
    let bob = TestPeer::join(&server.url, "bob").await;
    alice
        .client
        .upload_full(
            1,
            &[
                entry(
                    "Beatles/Abbey Road/Come Together.mp3",
                    7_000_000,
                    "come-together",
                ),
                entry("Beatles/Let It Be/Let It Be.flac", 30_000_000, "let-it-be"),
                entry("Beyoncé/I Am Sasha Fierce/Halo.mp3", 6_000_000, "halo"),
                entry("아이유/좋은 날.mp3", 5_000_000, "good-day"),
                entry("ジブリ/千と千尋の神隠し.mkv", 900_000_000, "spirited-away"),
                entry("Кино/Группа крови.mp3", 8_000_000, "kino"),
                entry("Live/Queen Live at Wembley.mp4", 700_000_000, "wembley"),
                entry("Docs/Beat Generation.pdf", 100_000, "beat-pdf"),
            ],
        )
        .await
        .unwrap();
    bob.client
        .upload_full(
            1,
            &[
                // Same content as Alice's, under other names: one result with two sources.
                entry("incoming/come_together.mp3", 7_000_000, "come-together"),
                entry("old/Come Together.mp3", 7_000_000, "come-together"),
                entry("Live/Let It Be (Live).mp3", 9_000_000, "let-it-be-live"),
            ],
        )
        .await
        .unwrap();
    server.wait_for_hits("together", 1).await;
    server.wait_for_hits("let", 2).await;
    (server, alice, bob)
}

#[tokio::test]
async fn operators_scripts_and_grouping() {
    let (server, _alice, _bob) = library().await;

    // Grouped by hash: three entries on two peers, one row.
    let together = server.search("come together").await;
    assert_eq!(together.hits.len(), 1);
    let hit = &together.hits[0];
    assert_eq!(hit.hash, hash_of("come-together"));
    assert_eq!(hit.sources_online, 2, "two peers, one source each");
    let nicks: std::collections::BTreeSet<_> =
        hit.sources.iter().map(|s| s.nickname.as_str()).collect();
    assert_eq!(nicks.into_iter().collect::<Vec<_>>(), ["alice", "bob"]);
    assert!(hit.sources.iter().all(|s| {
        s.addr
            .as_deref()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    }));
    assert_eq!(hit.kind, FileKind::Audio);

    // Prefix: "beat" finds Beatles and Beat.
    let beat = server.search("beat").await;
    let mut got = names(&beat);
    got.sort();
    assert_eq!(
        got,
        ["Beat Generation.pdf", "Come Together.mp3", "Let It Be.flac"]
    );
    // Exclusion and phrase.
    assert_eq!(
        names(&server.search("let it be -live").await),
        ["Let It Be.flac"]
    );
    assert_eq!(
        names(&server.search("\"be live\"").await),
        ["Let It Be (Live).mp3"]
    );
    assert!(server.search("\"be it\"").await.hits.is_empty());
    // Folder words match too, all words must match.
    assert_eq!(
        names(&server.search("abbey together").await),
        ["Come Together.mp3"]
    );
    assert!(server.search("abbey halo").await.hits.is_empty());
    // Accent-, case- and script-insensitive.
    assert_eq!(names(&server.search("BEYONCE").await), ["Halo.mp3"]);
    assert_eq!(names(&server.search("아이유").await), ["좋은 날.mp3"]);
    assert_eq!(names(&server.search("좋은").await), ["좋은 날.mp3"]);
    assert_eq!(
        names(&server.search("千尋").await),
        ["千と千尋の神隠し.mkv"]
    );
    assert_eq!(
        names(&server.search("神隠し").await),
        ["千と千尋の神隠し.mkv"]
    );
    assert_eq!(names(&server.search("кино").await), ["Группа крови.mp3"]);
    assert_eq!(names(&server.search("крови").await), ["Группа крови.mp3"]);
}

#[tokio::test]
async fn filters_and_ranking() {
    let (server, _alice, _bob) = library().await;
    let query = |q: &str| SearchQuery {
        q: q.into(),
        ..Default::default()
    };
    let audio = server
        .search_with(SearchQuery {
            kind: Some("audio".into()),
            ..query("let")
        })
        .await;
    assert_eq!(names(&audio).len(), 2);
    let flac = server
        .search_with(SearchQuery {
            ext: Some(".FLAC".into()),
            ..query("let")
        })
        .await;
    assert_eq!(names(&flac), ["Let It Be.flac"]);
    let small = server
        .search_with(SearchQuery {
            max_size: Some(10_000_000),
            ..query("let")
        })
        .await;
    assert_eq!(names(&small), ["Let It Be (Live).mp3"]);
    let big = server
        .search_with(SearchQuery {
            min_size: Some(10_000_000),
            ..query("live")
        })
        .await;
    assert_eq!(names(&big), ["Queen Live at Wembley.mp4"]);
    let video = server
        .search_with(SearchQuery {
            kind: Some("video".into()),
            ..query("live")
        })
        .await;
    assert_eq!(video.hits[0].kind, FileKind::Video);

    // With equal relevance, more sources rank first; the most common name is shown.
    let together = server.search("together").await;
    assert_eq!(together.hits[0].sources_online, 2);
    assert_eq!(together.hits[0].name, "Come Together.mp3");
    // Pagination.
    let page = server
        .search_with(SearchQuery {
            limit: Some(1),
            offset: Some(1),
            ..query("let")
        })
        .await;
    assert_eq!(
        (page.total, page.hits.len(), page.limit, page.offset),
        (2, 1, 1, 1)
    );
}

#[tokio::test]
async fn hostile_queries_get_clear_answers() {
    let (server, _alice, _bob) = library().await;
    let http = peerdex_tests::http();
    let get = |q: String| http.get(format!("{}/api/v1/search?{q}", server.url)).send();
    let long_text = format!("q={}", "x".repeat(10_000));
    let many_words = format!(
        "q={}",
        (0..1000)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join("+")
    );
    let seventeen_words = format!(
        "q={}",
        (0..17)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join("+")
    );
    let nested = format!("q={}beat{}", "%28".repeat(100), "%29".repeat(100));
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("q=-+*".into(), StatusCode::BAD_REQUEST, "no word"),
        ("q=".into(), StatusCode::BAD_REQUEST, "no word"),
        ("".into(), StatusCode::BAD_REQUEST, "no word"),
        ("q=a:(%5E".into(), StatusCode::OK, ""),
        (nested, StatusCode::OK, ""),
        (long_text, StatusCode::BAD_REQUEST, "max_query_bytes"),
        (many_words, StatusCode::BAD_REQUEST, "max_query_bytes"),
        (seventeen_words, StatusCode::BAD_REQUEST, "max_query_terms"),
        ("q=%FF%FE".into(), StatusCode::BAD_REQUEST, "no word"),
        ("q=%00beat%00".into(), StatusCode::OK, ""),
        ("q=beat&limit=99999999999".into(), StatusCode::OK, ""),
        (
            "q=beat&limit=-1".into(),
            StatusCode::BAD_REQUEST,
            "invalid query",
        ),
        (
            "q=beat&offset=18446744073709551615".into(),
            StatusCode::BAD_REQUEST,
            "max_offset",
        ),
        (
            "q=beat&offset=99999999999999999999999".into(),
            StatusCode::BAD_REQUEST,
            "invalid query",
        ),
        (
            "q=beat&kind=music".into(),
            StatusCode::BAD_REQUEST,
            "unknown kind",
        ),
        (
            "q=beat&ext=../x".into(),
            StatusCode::BAD_REQUEST,
            "extension",
        ),
        (
            "q=beat&min_size=10&max_size=5".into(),
            StatusCode::BAD_REQUEST,
            "min_size",
        ),
        ("q=%22%22%22".into(), StatusCode::BAD_REQUEST, "no word"),
    ];
    for (params, want, text) in cases {
        let started = std::time::Instant::now();
        let response = get(params.clone()).await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, want, "{}: {body}", &params[..params.len().min(80)]);
        if !text.is_empty() {
            assert!(
                body["error"].as_str().unwrap().contains(text),
                "{}: {body}",
                &params[..params.len().min(80)]
            );
        }
        if status == StatusCode::OK {
            assert!(body["limit"].as_u64().unwrap() <= 100, "limit is clamped");
        }
        // Generous bound: this guards against hangs, not a benchmark.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{params:.60} took {:?}",
            started.elapsed()
        );
    }
    let health = peerdex_tests::http()
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(server.search("beatles").await.hits.len(), 2);
}

#[tokio::test]
async fn sources_and_stats_endpoints() {
    let (server, _alice, _bob) = library().await;
    let client = server.client();
    let sources = client.sources(&hash_of("come-together")).await.unwrap();
    assert_eq!(sources.size, 7_000_000);
    assert_eq!(sources.sources.len(), 2);
    let missing = client
        .sources(&hash_of("nobody-has-this"))
        .await
        .unwrap_err();
    assert_eq!(
        missing.code(),
        Some(peerdex_shared::api::ErrorCode::NotFound)
    );
    let stats = client.stats().await.unwrap();
    assert_eq!(
        (stats.peers_online, stats.peers_known, stats.entries),
        (2, 2, 11)
    );
    assert_eq!(stats.distinct_contents, 9);
    let r = peerdex_tests::http()
        .get(format!("{}/api/v1/contents/not-a-hash/sources", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = peerdex_tests::http()
        .get(format!("{}/api/v1/peers/by-nick/nobody/files", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = peerdex_tests::http()
        .get(format!("{}/no/such/route", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Results are built from cached holders: every list or peer change must show in the very next
/// answer, before the index has committed anything.
#[tokio::test]
async fn sources_follow_list_and_peer_changes_at_once() {
    let (server, alice, mut bob) = library().await;
    let client = server.client();
    let come_together = hash_of("come-together");
    let nicks = |s: &peerdex_shared::api::SourcesResponse| -> Vec<String> {
        let mut n: Vec<String> = s.sources.iter().map(|s| s.nickname.clone()).collect();
        n.sort();
        n
    };
    // Asked twice: the second answer comes from the cache and must be the same.
    for _ in 0..2 {
        let sources = client.sources(&come_together).await.unwrap();
        assert_eq!(nicks(&sources), ["alice", "bob"]);
        let hit = server.search("together").await.hits.remove(0);
        assert_eq!(
            (hit.sources_online, hit.name.as_str()),
            (2, "Come Together.mp3")
        );
    }

    // A new nickname shows at once.
    bob.nick = "robert".into();
    bob.register().await;
    let sources = client.sources(&come_together).await.unwrap();
    assert_eq!(nicks(&sources), ["alice", "robert"]);

    // Bob deletes both his copies: one source left, with Alice's name for it.
    let ops = [
        DeltaOp::Remove {
            share: "music".into(),
            path: "incoming/come_together.mp3".into(),
        },
        DeltaOp::Remove {
            share: "music".into(),
            path: "old/Come Together.mp3".into(),
        },
    ];
    bob.client.upload_delta(1, 2, &ops).await.unwrap();
    let sources = client.sources(&come_together).await.unwrap();
    assert_eq!(nicks(&sources), ["alice"]);
    let hit = server.search("together").await.hits.remove(0);
    assert_eq!(
        (hit.sources_online, hit.name.as_str()),
        (1, "Come Together.mp3")
    );

    // Alice replaces her list: nobody holds it any more.
    alice
        .client
        .upload_full(2, &[entry("Other/Song.mp3", 1, "other")])
        .await
        .unwrap();
    let missing = client.sources(&come_together).await.unwrap_err();
    assert_eq!(
        missing.code(),
        Some(peerdex_shared::api::ErrorCode::NotFound)
    );
}
