//! `/metrics`: the Prometheus text format checked by promtool, the series an operator watches,
//! and who may read them.

use std::io::Write;
use std::process::{Command, Stdio};

use peerdex_tests::{TestPeer, TestServer, entry, http};
use reqwest::StatusCode;

/// Runs `promtool check metrics` on `text`; panics with its report when it objects.
pub fn promtool_accepts(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (.ci/run installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- the text ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The example dashboard's queries: valid PromQL (promtool checks them as recording rules) over
/// series that exist in `scrapes` (a series the code renamed would leave a panel empty).
fn dashboard_queries_are_valid_and_name_existing_series(scrapes: &[&str]) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/peerdex.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let concrete = expr
            .replace("$__rate_interval", "1m")
            .replace("$server", "peerdex-server")
            .replace("$agent", "peerdex-agent");
        rules.push_str(&format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(&concrete).unwrap()
        ));
        for name in concrete
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("peerdex_") || w.starts_with("process_"))
        {
            assert!(
                scrapes
                    .iter()
                    .any(|text| text.lines().any(|l| l.starts_with(name))),
                "the dashboard queries {name}, which no scrape has"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is installed");
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}\n{rules}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server's `/metrics`, from loopback.
async fn scrape(server: &TestServer) -> String {
    http()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the one sample whose line starts with `series` (name and labels), if any.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_searches_ingest_and_peers_in_promtool_valid_text() {
    let server = TestServer::start().await;
    let alice = TestPeer::join(&server.url, "alice-metrics").await;
    alice
        .client
        .upload_full(
            1,
            &[
                entry("Albums/Blue Train.flac", 40_000_000, "blue-train"),
                entry("Albums/Kind of Blue.flac", 50_000_000, "kind-of-blue"),
                entry("Docs/Notes.txt", 100, "notes"),
            ],
        )
        .await
        .unwrap();
    server.wait_for_hits("blue", 2).await;
    for _ in 0..3 {
        server.search("train").await;
    }

    let response = http()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    promtool_accepts(&text);

    let searches = sample(&text, "peerdex_searches_total{outcome=\"ok\"}").unwrap();
    assert!(searches >= 4.0, "{searches} searches counted");
    let answered = sample(
        &text,
        "peerdex_http_requests_total{route=\"/api/v1/search\",method=\"GET\",status=\"200\"}",
    )
    .unwrap();
    assert!(answered >= 4.0, "{answered} search requests counted");
    assert_eq!(
        sample(&text, "peerdex_ingest_entries_total{kind=\"list\"}"),
        Some(3.0)
    );
    assert_eq!(sample(&text, "peerdex_peers{state=\"online\"}"), Some(1.0));
    assert_eq!(
        sample(&text, "peerdex_peers{state=\"registered\"}"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "peerdex_index_documents"), Some(3.0));
    assert_eq!(sample(&text, "peerdex_index_pending_operations"), Some(0.0));
    assert!(sample(&text, "peerdex_search_duration_seconds_count").unwrap() >= 4.0);
    assert!(
        sample(
            &text,
            "peerdex_http_request_duration_seconds_count{route=\"/api/v1/search\"}"
        )
        .unwrap()
            >= 4.0
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, "process_open_fds").unwrap() > 3.0);
    // Labels never carry what users chose: no peer key, nickname, path or query.
    for private in [
        alice.identity.peer_id().to_string(),
        "alice-metrics".to_owned(),
        "train".to_owned(),
        "Blue".to_owned(),
    ] {
        assert!(!text.contains(&private), "{private:?} leaked into /metrics");
    }

    // Paths that match no route share one label, whatever was sent.
    for path in ["/nope/1", "/nope/2", "/api/v1/whatever"] {
        let r = http()
            .get(format!("{}{path}", server.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    let text = scrape(&server).await;
    assert_eq!(
        sample(
            &text,
            "peerdex_http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"
        ),
        Some(3.0)
    );
    assert!(!text.contains("/nope"));
}

/// A client that is not on loopback: the server believes our `X-Forwarded-For` because the
/// test makes loopback a trusted proxy.
async fn scrape_from_afar(server: &TestServer, token: Option<&str>) -> StatusCode {
    let mut request = http()
        .get(format!("{}/metrics", server.url))
        .header("x-forwarded-for", "203.0.113.7");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn metrics_off_loopback_need_the_token_and_are_hidden_without_one() {
    // A proxy on this machine that is not trusted forwards an outside client: not local.
    let behind_proxy = TestServer::start().await;
    assert_eq!(
        scrape_from_afar(&behind_proxy, None).await,
        StatusCode::NOT_FOUND
    );

    let open = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // No token configured: the endpoint does not exist for remote clients.
    assert_eq!(scrape_from_afar(&open, None).await, StatusCode::NOT_FOUND);
    assert_eq!(
        scrape_from_afar(&open, Some("guess-guess-guess-guess")).await,
        StatusCode::NOT_FOUND
    );

    let token = "s3cret-scrape-token-0123456789";
    let guarded = TestServer::start_with(|c| {
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.metrics.token = Some(token.to_owned());
    })
    .await;
    assert_eq!(
        scrape_from_afar(&guarded, None).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        scrape_from_afar(&guarded, Some("wrong-token-wrong-token")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        scrape_from_afar(&guarded, Some(token)).await,
        StatusCode::OK
    );

    let off = TestServer::start_with(|c| c.metrics.enabled = false).await;
    let r = http()
        .get(format!("{}/metrics", off.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Scrapes an agent's local endpoint with `host` as the `Host` header.
async fn scrape_agent(
    agent: &peerdex_tests::TestAgent,
    host: Option<&str>,
) -> (StatusCode, String) {
    let addr = agent
        .handle
        .ui_addr
        .expect("the test agent listens on ui_listen");
    let mut request = http().get(format!("http://{addr}/metrics"));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_metrics_count_shares_hashing_uploads_and_downloads_by_route() {
    use peerdex_agent::{Destination, NewTransfer};
    use peerdex_tests::{TestAgent, content_hash, pseudo_random, wait_until, write_file};
    use std::time::Duration;

    let server = TestServer::start().await;
    let share = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(3 << 20, 21);
    write_file(share.path(), "Mix/tape.bin", &bytes);
    write_file(share.path(), "Mix/notes.txt", b"side A, side B");
    let source = TestAgent::start(&server.url, &[share.path()], |_| {}).await;
    source.wait_synced().await;
    let downloader = TestAgent::start(&server.url, &[], |_| {}).await;
    downloader.wait_synced().await;

    let (status, text) = scrape_agent(&source, None).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    promtool_accepts(&text);
    assert_eq!(sample(&text, "peerdex_agent_shared_files"), Some(2.0));
    assert_eq!(sample(&text, "peerdex_agent_hashed_files_total"), Some(2.0));
    assert_eq!(
        sample(&text, "peerdex_agent_hashed_bytes_total"),
        Some((bytes.len() + 14) as f64)
    );
    assert_eq!(sample(&text, "peerdex_agent_server_online"), Some(1.0));
    assert_eq!(
        sample(&text, "peerdex_agent_list_entries_sent_total"),
        Some(2.0)
    );
    assert_eq!(sample(&text, "peerdex_agent_upload_bytes_total"), Some(0.0));

    let hash = content_hash(&bytes);
    let id = downloader
        .handle
        .transfers()
        .add(&[NewTransfer {
            hash,
            name: None,
            destination: Destination::Dir(downloader.config.download_dir.clone()),
            label: String::new(),
            priority: 0,
            force: false,
            wish: None,
        }])
        .unwrap()[0];
    wait_until("the download to finish", Duration::from_secs(30), || {
        let done = downloader
            .handle
            .transfers()
            .list(usize::MAX)
            .unwrap()
            .into_iter()
            .any(|v| v.row.id == id && v.row.state == peerdex_agent::Stored::Done);
        async move {
            if done {
                Ok(())
            } else {
                Err("not yet".to_owned())
            }
        }
    })
    .await;

    let (_, text) = scrape_agent(&downloader, Some("localhost:0")).await;
    // A Host with the wrong port is not ours: refused (see below); scrape with the right one.
    assert!(text.contains("only requests to localhost"), "{text}");
    let port = downloader.handle.ui_addr.unwrap().port();
    let (status, text) = scrape_agent(&downloader, Some(&format!("localhost:{port}"))).await;
    assert_eq!(status, StatusCode::OK);
    promtool_accepts(&text);
    assert_eq!(
        sample(
            &text,
            "peerdex_agent_download_bytes_total{route=\"direct\"}"
        ),
        Some(bytes.len() as f64)
    );
    assert_eq!(
        sample(&text, "peerdex_agent_download_bytes_total{route=\"relay\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "peerdex_agent_downloads{state=\"done\"}"),
        Some(1.0)
    );
    let (_, text) = scrape_agent(&source, None).await;
    assert_eq!(
        sample(&text, "peerdex_agent_upload_bytes_total"),
        Some(bytes.len() as f64)
    );
    assert_eq!(
        sample(&text, "peerdex_agent_uploads_completed_total"),
        Some(1.0)
    );
    let server_text = scrape(&server).await;
    dashboard_queries_are_valid_and_name_existing_series(&[&server_text, &text]);
}

#[tokio::test]
async fn the_agents_local_endpoint_refuses_rebound_hosts() {
    let server = TestServer::start().await;
    let agent = peerdex_tests::TestAgent::start(&server.url, &[], |_| {}).await;
    let port = agent.handle.ui_addr.unwrap().port();
    for host in [
        format!("attacker.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        "localhost".to_owned(),
    ] {
        let (status, _) = scrape_agent(&agent, Some(&host)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "Host: {host}");
    }
    let (status, _) = scrape_agent(&agent, Some(&format!("127.0.0.1:{port}"))).await;
    assert_eq!(status, StatusCode::OK);
}
