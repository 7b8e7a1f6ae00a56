//! Hostile input (issue 6, first part): malformed and oversized requests to the index server and
//! slow or idle connections to an agent's file server. Every case ends in a clear answer or a
//! closed connection; afterwards the server is healthy and another peer's list is intact.

use std::time::Duration;

use peerdex_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A deadline for answers that must come "at once": far above normal latency, so it only
/// catches hangs, not slowness (timing belongs in benchmarks).
const HANG: Duration = Duration::from_secs(10);

/// Sends raw bytes and returns the status code of the answer (0 when the connection closed
/// without one).
async fn raw_status(base: &str, request: &[u8]) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before reading everything we send.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within {HANG:?}");
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_to_the_index_server_get_clear_answers() {
    let server = TestServer::start().await;
    // A bystander whose list must survive everything below.
    let bystander = TestPeer::join_announcing(&server.url, "bystander", 0).await;
    bystander
        .client
        .upload_full(1, &[entry("safe/Untouched Song.mp3", 1, "untouched")])
        .await
        .unwrap();
    server.wait_for_hits("untouched", 1).await;

    let http = peerdex_tests::http();
    let url = |path: &str| format!("{}{path}", server.url);
    let search = |q: &str| {
        let http = http.clone();
        let url = url("/api/v1/search");
        let q = q.to_owned();
        async move {
            let response = tokio::time::timeout(HANG, http.get(url).query(&[("q", q)]).send())
                .await
                .expect("search answered")
                .unwrap();
            response.status().as_u16()
        }
    };
    // Hostile queries: tokenized, never parsed, so they are plain searches or clear 400s.
    let nested = format!("{}a{}", "(".repeat(5000), ")".repeat(5000));
    let words = vec!["word"; 1000].join(" ");
    let long = "x".repeat(10 * 1024);
    for q in [
        "- *",
        "a:(^",
        "*",
        "\"",
        "-",
        "\"unclosed",
        "%00",
        "%25%32%35",
        "a\u{0}b",
    ] {
        let status = search(q).await;
        assert!(status == 200 || status == 400, "{q:?} → {status}");
    }
    for q in [nested.as_str(), words.as_str(), long.as_str()] {
        let status = search(q).await;
        assert!(
            status == 200 || status == 400,
            "{} bytes → {status}",
            q.len()
        );
    }
    for (query, want) in [
        ("q=x&limit=999999999999", 200),
        ("q=x&offset=99999999", 400),
        ("q=x&limit=-1", 400),
        ("q=x&min_size=abc", 400),
        ("q=x&kind=spaceship", 400),
    ] {
        let response = http
            .get(url(&format!("/api/v1/search?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), want, "{query}");
        if want == 400 {
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(
                !body["error"].as_str().unwrap_or("").is_empty(),
                "{query}: {body}"
            );
        }
    }

    // Malformed, oversized and deeply nested JSON.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"{not json".to_vec()),
        ("deeply nested", deep.into_bytes()),
        ("oversized", vec![b' '; 2 << 20]),
        ("invalid utf-8", vec![0xff, 0xfe, 0xfd]),
    ];
    // Each body on its own connection: after answering the oversized one early the server
    // closes its connection, and a pooled client could send the next body into that close.
    let fresh = peerdex_tests::http_builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for (what, body) in bodies {
        let sent = tokio::time::timeout(
            HANG,
            fresh
                .post(url("/api/v1/register"))
                .header("content-type", "application/json")
                .body(body)
                .send(),
        )
        .await
        .expect("register answered");
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                assert!(
                    status == 400 || status == 413 || status == 422,
                    "{what} → {status}"
                );
            }
            // The server may answer 413 and close before the client has finished sending a
            // body that large; the client then sees the connection closed.
            Err(e) if what == "oversized" => assert!(e.is_request(), "{what}: {e}"),
            Err(e) => panic!("{what}: {e}"),
        }
    }

    // Protocol abuse: huge URI, too many headers, garbage instead of HTTP.
    let huge_uri = format!(
        "GET /api/v1/search?q={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(200_000)
    );
    let status = raw_status(&server.url, huge_uri.as_bytes()).await;
    assert!(
        status == 414 || status == 431 || status == 400 || status == 0,
        "huge URI → {status}"
    );
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..500 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let status = raw_status(&server.url, many.as_bytes()).await;
    assert!(
        status == 431 || status == 400 || status == 0,
        "500 headers → {status}"
    );
    let status = raw_status(&server.url, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    assert!(status == 400 || status == 0, "garbage → {status}");

    // Afterwards: healthy, and the bystander's list is intact and searchable.
    let health = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let result = server.search("untouched").await;
    assert_eq!(names(&result), ["Untouched Song.mp3"]);
    drop(bystander);
}

/// A connection from 127.0.0.2: on loopback, but counted as another peer than 127.0.0.1.
async fn attacker_connect(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind("127.0.0.2:0".parse().unwrap())?;
    socket.connect(addr.parse().unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_do_not_block_the_file_server() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "wanted.txt", b"still served");
    let agent = TestAgent::start(&server.url, &[&share], |c| {
        c.upload.header_read_timeout_secs = 2;
    })
    .await;
    agent.wait_synced().await;
    let addr = agent.url.trim_start_matches("https://").to_owned();

    // Slowloris from another peer (127.0.0.2 is loopback too, but another address): sockets
    // that trickle a header byte by byte, and sockets that send nothing.
    let mut tricklers = Vec::new();
    for _ in 0..10 {
        let addr = addr.clone();
        tricklers.push(tokio::spawn(async move {
            let Ok(mut stream) = attacker_connect(&addr).await else {
                return;
            };
            for byte in b"GET /peerdex/v1/blobs/".iter().cycle().take(60) {
                if stream.write_all(&[*byte]).await.is_err() {
                    return; // closed by the server: expected
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(attacker_connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A normal request is still served meanwhile.
    let hash = content_hash(b"still served");
    let served = tokio::time::timeout(
        HANG,
        agent
            .http()
            .get(format!("{}/peerdex/v1/blobs/{hash}", agent.url))
            .send(),
    )
    .await
    .expect("served while slow clients hold connections")
    .unwrap();
    assert_eq!(served.bytes().await.unwrap().as_ref(), b"still served");

    // Connections that send nothing are closed after the header timeout.
    for mut socket in silent {
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(HANG, socket.read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "an idle connection stayed open"
        );
    }
    // An idle keep-alive connection is closed too.
    let mut keep_alive = peer_stream(agent.handle.serve_addr.unwrap(), agent.handle.peer_id).await;
    keep_alive
        .write_all(format!("GET /peerdex/v1/blobs/{hash} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let done = tokio::time::timeout(HANG, keep_alive.read_to_end(&mut answer)).await;
    assert!(
        done.is_ok(),
        "the idle keep-alive connection was not closed"
    );
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    for trickler in tricklers {
        let _ = tokio::time::timeout(HANG, trickler).await;
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_on_the_server_refuses_writes_and_recovers() {
    let Some(disk) = SmallDisk::mount(24 << 20) else {
        eprintln!(
            "cannot mount a small filesystem here (needs root); server disk-full test not run"
        );
        return;
    };
    let data = disk.path.join("data");
    let server = TestServer::start_in(&data, |_| {}).await;
    let alice = TestPeer::join_announcing(&server.url, "alice", 0).await;
    alice
        .client
        .upload_full(1, &[entry("kept/Before The Storm.mp3", 1, "before")])
        .await
        .unwrap();
    server.wait_for_hits("storm", 1).await;

    let bob = TestPeer::join_announcing(&server.url, "bob", 0).await;
    // Fill what is left of the disk.
    let filler = disk.path.join("filler");
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 20];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
    }
    // Registering is a write too: refused with the same clear answer.
    let refused = peerdex_client::ServerClient::new(&server.url)
        .unwrap()
        .register(&peerdex_client::Identity::generate().unwrap(), "carol", 0)
        .await;
    assert!(
        matches!(refused, Err(peerdex_client::server_api::ApiError::Server { status, .. }) if status.as_u16() == 507)
    );
    let big: Vec<_> = (0..20_000)
        .map(|i| {
            entry(
                &format!("bob/Long Name Number {i} of a big list.mp3"),
                i,
                &format!("b{i}"),
            )
        })
        .collect();
    let refused = bob.client.upload_full(1, &big).await;
    let error = refused.expect_err("a full disk cannot take a list");
    let code = match &error {
        peerdex_client::server_api::ApiError::Server { status, .. } => status.as_u16(),
        other => panic!("expected an answer, got {other}"),
    };
    assert!(code == 507 || code == 503, "{error}");

    // Earlier data is intact and the server still answers.
    assert_eq!(
        peerdex_tests::http()
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        names(&server.search("storm").await),
        ["Before The Storm.mp3"]
    );

    // Space comes back: the same upload goes through.
    std::fs::remove_file(&filler).unwrap();
    let stored = bob.client.upload_full(1, &big[..1000]).await.unwrap();
    assert_eq!(stored.entries, 1000);
    server.wait_for_hits("\"number 999\"", 1).await;
    server.stop().await;
}

/// How a fake source misbehaves.
#[derive(Clone, Copy, PartialEq)]
enum Lie {
    /// Sends half of each range, then closes.
    ShortRead,
    /// Sends other bytes of the right length.
    OtherFile,
}

/// A peer that answers the server's probe and piece proofs correctly, then lies about ranges.
async fn lying_peer(server: &TestServer, nick: &str, bytes: Vec<u8>, lie: Lie) -> TestPeer {
    use http_body_util::Full;
    use peerdex_shared::pieces::{build_proof, encode_cvs, piece_count, piece_cv, piece_range};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let identity = peerdex_client::Identity::generate().unwrap();
    let responder = identity.clone();
    let bytes = std::sync::Arc::new(bytes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (identity, bytes) = (responder.clone(), bytes.clone());
            let service = hyper::service::service_fn(
                move |request: hyper::Request<hyper::body::Incoming>| {
                    let (identity, bytes) = (identity.clone(), bytes.clone());
                    async move {
                        let path = request.uri().path().to_owned();
                        let len = bytes.len() as u64;
                        let response = if path == peerdex_shared::peer::CONNECT_BACK_PATH {
                            let answer = peerdex_client::connect_back::answer(&identity, &request);
                            let (parts, body) = answer.into_parts();
                            hyper::Response::from_parts(parts, body)
                        } else if path.ends_with("/pieces") {
                            let count = piece_count(len);
                            let cvs: Vec<_> = (0..count)
                                .map(|i| {
                                    let r = piece_range(len, i);
                                    piece_cv(i, &bytes[r.start as usize..r.end as usize])
                                })
                                .collect();
                            let proof = build_proof(&cvs, 0, count).unwrap();
                            hyper::Response::new(Full::new(bytes::Bytes::from(encode_cvs(&proof))))
                        } else {
                            let range = request.headers()[hyper::header::RANGE]
                                .to_str()
                                .unwrap()
                                .to_owned();
                            let (start, end) = range
                                .trim_start_matches("bytes=")
                                .split_once('-')
                                .map(|(a, b)| {
                                    (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap() + 1)
                                })
                                .unwrap();
                            let mut body = bytes[start as usize..end as usize].to_vec();
                            match lie {
                                Lie::ShortRead => body.truncate(body.len() / 2),
                                Lie::OtherFile => {
                                    body.iter_mut().for_each(|b| *b = b.wrapping_add(1))
                                }
                            }
                            hyper::Response::builder()
                                .status(206)
                                .header("content-range", format!("bytes {start}-{}/{len}", end - 1))
                                .header("content-length", end - start)
                                .body(Full::new(bytes::Bytes::from(body)))
                                .unwrap()
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    let mut peer = TestPeer::with_identity(&server.url, nick, port, identity);
    peer.register().await;
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_that_short_read_or_send_another_file_are_dropped_and_named() {
    for lie in [Lie::ShortRead, Lie::OtherFile] {
        let server = TestServer::start().await;
        let dir = tempfile::tempdir().unwrap();
        let bytes = pseudo_random(8 << 20, 41);
        let hash = content_hash(&bytes);
        write_file(&dir.path().join("share"), "genuine.bin", &bytes);
        // The honest agent is slow (2 MiB/s), so the liar gets runs to answer.
        let honest = TestAgent::start(&server.url, &[&dir.path().join("share")], |c| {
            c.upload.max_rate = 2 << 20;
            c.upload.min_rate = 1;
        })
        .await;
        honest.wait_synced().await;
        let liar = lying_peer(&server, "liar", bytes.clone(), lie).await;
        let mut listed = entry("x/genuine.bin", bytes.len() as u64, "unused");
        listed.hash = hash;
        liar.client.upload_full(1, &[listed]).await.unwrap();
        wait_for_sources(&server, hash, 2).await;

        let out = dir.path().join("out");
        let report = download_into(&server.url, hash, &out, |o| o.max_sources = 2)
            .await
            .unwrap();
        assert_eq!(std::fs::read(out.join("genuine.bin")).unwrap(), bytes);
        let named = report
            .sources_dropped
            .iter()
            .find(|(source, _)| source.starts_with("liar"))
            .map(|(_, why)| why.clone())
            .unwrap_or_default();
        match lie {
            Lie::ShortRead => assert!(named.contains("unreachable"), "{report:?}"),
            Lie::OtherFile => assert!(named.contains("does not match"), "{report:?}"),
        }
        honest.stop().await;
    }
}
