//! The agent's web client over HTTP (the browser tests drive it in Chromium): who may use it
//! (token, cookie, `Host`, `Origin`), the `peerdex ui` command, the JSON for scripts, and the
//! bytes of a download and of a stream played while it downloads.

use std::time::Duration;

use peerdex_tests::*;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, HOST, LOCATION, ORIGIN, SET_COOKIE};

/// What an HTML form posts.
const FORM: &str = "application/x-www-form-urlencoded";

/// `peerdex ARGS` on the agent's state directory (no config file).
fn peerdex_cli(state: &std::path::Path, args: &[&str]) -> std::process::Output {
    super::cli::peerdex(state, &state.join("no-config.toml"), args)
}

/// A client that follows no redirects (so the tests see them) and keeps no connections.
fn plain_http() -> reqwest::Client {
    http_builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_needs_its_token_its_own_host_and_its_own_origin() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "notes.txt", b"some notes");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    let addr = agent.handle.ui_addr.expect("the web client listens");
    let base = format!("http://{addr}");
    let token = peerdex_agent::web::load_or_create_token(&agent.config.state).unwrap();
    let http = plain_http();

    // Without the token: a page that says how to sign in; metrics stay open to loopback.
    for path in [
        "/",
        "/transfers",
        "/search?q=notes",
        "/api/status",
        "/events",
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(r.text().await.unwrap().contains("peerdex ui"), "{path}");
    }
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .get(format!("{base}/login?token=not-the-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The sign-in address sets an HttpOnly, SameSite=Strict cookie for this port only.
    let r = http
        .get(peerdex_agent::web::sign_in_url(addr, &token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/");
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    let cookie_name = format!("peerdex_ui_{}", addr.port());
    assert!(set.starts_with(&format!("{cookie_name}={token}")), "{set}");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = format!("{cookie_name}={token}");
    let home = http
        .get(format!("{base}/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(home.status(), StatusCode::OK);
    assert!(home.text().await.unwrap().contains("Connected to"));

    // DNS rebinding: a name that resolves to 127.0.0.1 is still not our host.
    let r = http
        .get(format!("{base}/"))
        .header(COOKIE, &cookie)
        .header(HOST, format!("rebind.example:{}", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // A change sent by another site's page with the user's cookie is refused (CSRF), and so is
    // one that says no origin at all; from our own page it is taken.
    let hash = FileHashOf::bytes(b"some notes");
    let form = format!("hash={hash}&name=notes.txt");
    for origin in [Some("http://evil.example"), Some("null"), None] {
        let mut request = http
            .post(format!("{base}/downloads"))
            .header(COOKIE, &cookie)
            .header(CONTENT_TYPE, FORM)
            .body(form.clone());
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{origin:?}");
    }
    let transfers: serde_json::Value = http
        .get(format!("{base}/api/transfers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        transfers["downloads"].as_array().map(Vec::len),
        Some(0),
        "{transfers}"
    );
    let r = http
        .post(format!("{base}/transfers/1/pause"))
        .header(COOKIE, &cookie)
        .header(ORIGIN, &base)
        .send()
        .await
        .unwrap();
    // Taken (there is no transfer 1 yet: the agent's own words, as a page).
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("1"));

    // Scripts use the token as a bearer token, without cookie or origin.
    let status: serde_json::Value = http
        .get(format!("{base}/api/status"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["peer_id"], agent.handle.peer_id.to_string());
    let r = http
        .get(format!("{base}/api/status"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Hostile input gets a clear page, never a crash.
    for (path, status) in [
        ("/content/nothex", StatusCode::BAD_REQUEST),
        ("/play/zz", StatusCode::BAD_REQUEST),
        ("/search?offset=abc&q=x", StatusCode::BAD_REQUEST),
        ("/no/such/page", StatusCode::NOT_FOUND),
        ("/transfers/99/file", StatusCode::NOT_FOUND),
    ] {
        let r = http
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let r = http
        .post(format!("{base}/transfers/1/explode"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    agent.stop().await;
}

/// The hex hash of some bytes, as the pages and forms write it.
struct FileHashOf;

impl FileHashOf {
    fn bytes(bytes: &[u8]) -> String {
        peerdex_shared::FileHash::from_bytes(*blake3::hash(bytes).as_bytes()).to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peerdex_ui_prints_the_sign_in_address_and_says_when_there_is_none() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "a.txt", b"a");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    let addr = agent.handle.ui_addr.unwrap();
    let state = agent.config.state.clone();
    let out = peerdex_cli(&state, &["ui", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = peerdex_agent::web::load_or_create_token(&state).unwrap();
    assert_eq!(
        printed["url"],
        peerdex_agent::web::sign_in_url(addr, &token)
    );
    assert_eq!(printed["address"], addr.to_string());
    let out = peerdex_cli(&state, &["ui"]);
    let line = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        line.trim(),
        peerdex_agent::web::sign_in_url(addr, &token),
        "{line}"
    );
    // The address works.
    let r = plain_http().get(line.trim()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    agent.stop().await;

    // No agent running: exit 1 and a message that says so.
    let out = peerdex_cli(&state, &["ui"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no agent is running"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn play_streams_the_verified_bytes_in_order_and_a_queued_download_lands_whole() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("Music");
    // Several pieces, so the stream is written piece by piece as they are verified.
    let song = pseudo_random(5 << 20, 7);
    write_file(&share, "Artist/Song.mp3", &song);
    let alice = TestAgent::start(&server.url, &[&share], |c| c.nick = Some("alice".into())).await;
    alice.wait_synced().await;
    let bob_dir = tempfile::tempdir().unwrap();
    let bob_share = bob_dir.path().join("empty");
    std::fs::create_dir_all(&bob_share).unwrap();
    let bob = TestAgent::start(&server.url, &[&bob_share], |c| c.nick = Some("bob".into())).await;
    bob.wait_synced().await;
    server.wait_for_hits("song", 1).await;
    let base = format!("http://{}", bob.handle.ui_addr.unwrap());
    let token = peerdex_agent::web::load_or_create_token(&bob.config.state).unwrap();
    let http = plain_http();
    let hash = FileHashOf::bytes(&song);

    let r = http
        .get(format!("{base}/play/{hash}?name=Song.mp3"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "audio/mpeg");
    let played = r.bytes().await.unwrap();
    assert_eq!(played.len(), song.len());
    assert!(played == song, "the stream is the content, in order");
    // A stream keeps nothing: no file in the downloads, no partial left behind.
    let leftovers: Vec<_> = walk(&bob.config.state.join("streams"));
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!bob.config.download_dir.join("Song.mp3").exists());

    // Download it into the queue from the content page's form, and open the finished file.
    let r = http
        .post(format!("{base}/downloads"))
        .bearer_auth(&token)
        .header(CONTENT_TYPE, FORM)
        .body(format!("hash={hash}&name=Song.mp3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/transfers");
    let id = wait_until("the download to finish", Duration::from_secs(60), || {
        let http = http.clone();
        let (base, token) = (base.clone(), token.clone());
        async move {
            let list: serde_json::Value = http
                .get(format!("{base}/api/transfers"))
                .bearer_auth(&token)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            let first = &list["downloads"][0];
            if first["status"] == "done" {
                Ok(first["id"].as_u64().unwrap())
            } else {
                Err(list.to_string())
            }
        }
    })
    .await;
    let on_disk = std::fs::read(bob.config.download_dir.join("Song.mp3")).unwrap();
    assert!(on_disk == song, "the downloaded file is the content");
    let opened = http
        .get(format!("{base}/transfers/{id}/file"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status(), StatusCode::OK);
    assert!(opened.bytes().await.unwrap() == song);
    bob.stop().await;
    alice.stop().await;
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(next) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The settings page shows what runs and saves changes to the config file for the next start;
/// a share's visibility changes in place (and the index hides it at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_are_saved_for_the_next_start_and_a_shares_visibility_changes_at_once() {
    use peerdex_agent::config::{ConfigFile, ShareConfig};
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let share = root.path().join("Lab");
    write_file(&share, "results-2026.csv", b"secret results");
    let config = root.path().join("agent.toml");
    ConfigFile::edit(&config, |file| {
        file.share(ShareConfig {
            path: share.clone(),
            name: Some("lab".into()),
            exclude: vec!["*.tmp".into()],
            follow_symlinks: false,
            include_hidden: false,
            visibility: Default::default(),
            scopes: Vec::new(),
        })
    })
    .unwrap();
    let agent = TestAgent::start(&server.url, &[&share], |c| {
        c.nick = Some("carol".into());
        c.shares_file = Some(config.clone());
    })
    .await;
    agent.wait_synced().await;
    server.wait_for_hits("results", 1).await;
    let base = format!("http://{}", agent.handle.ui_addr.unwrap());
    let token = peerdex_agent::web::load_or_create_token(&agent.config.state).unwrap();
    let http = plain_http();
    let post = |path: &str, form: String| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .header(CONTENT_TYPE, FORM)
            .body(form)
            .send()
    };

    let page = http
        .get(format!("{base}/settings"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("carol"), "{html}");
    assert!(html.contains(&agent.handle.peer_id.to_string()));
    assert!(html.contains(&config.display().to_string()));

    // Mistakes are named, and nothing is written.
    let before = std::fs::read_to_string(&config).unwrap();
    for (form, says) in [
        (
            "nick=bad%20nick%20%E2%80%AE&download_dir=%2Ftmp%2Fd&max_active=3&slots=4&max_rate_kib=0",
            "nickname",
        ),
        (
            "nick=carol&download_dir=relative%2Fdir&max_active=3&slots=4&max_rate_kib=0",
            "full path",
        ),
        (
            "nick=carol&download_dir=%2Ftmp%2Fd&max_active=0&slots=4&max_rate_kib=0",
            "Downloads at once",
        ),
        (
            "nick=carol&download_dir=%2Ftmp%2Fd&max_active=3&slots=999&max_rate_kib=0",
            "Upload slots",
        ),
        (
            "nick=carol&download_dir=%2Ftmp%2Fd&max_active=3&slots=4&max_rate_kib=-5",
            "Upload rate",
        ),
    ] {
        let r = post("/settings", form.to_owned()).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{form}");
        assert!(r.text().await.unwrap().contains(says), "{form}");
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    let downloads = root.path().join("Incoming");
    // (A temporary directory's path has no character a form would need to escape.)
    let form = format!(
        "nick=carol2&download_dir={}&max_active=5&slots=2&max_rate_kib=512",
        downloads.display()
    );
    let r = post("/settings", form).await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/settings?saved=1");
    let saved = ConfigFile::load(&config).unwrap();
    assert_eq!(saved.nick.as_deref(), Some("carol2"));
    assert_eq!(saved.download.dir.as_deref(), Some(downloads.as_path()));
    assert_eq!(saved.download.max_active, Some(5));
    assert_eq!(saved.upload.slots, 2);
    assert_eq!(saved.upload.max_rate, 512 * 1024);
    // The share's own settings survived the edit.
    assert_eq!(saved.shares.len(), 1);
    assert_eq!(saved.shares[0].exclude, vec!["*.tmp".to_owned()]);
    // The page says what runs and what comes at the next start.
    let html = http
        .get(format!("{base}/settings?saved=1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("next start"), "{html}");
    assert!(html.contains("saved: carol2"), "{html}");
    assert!(html.contains("saved: 512 KiB/s"), "{html}");

    // Visibility: hidden from everyone else, at once; its exclusions kept.
    let r = post(
        "/shares/visibility",
        "name=lab&visibility=nonsense:x".to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(
        "/shares/visibility",
        "name=nobody&visibility=hidden".to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(
        "/shares/visibility",
        "name=lab&visibility=hidden".to_owned(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let saved = ConfigFile::load(&config).unwrap();
    assert_eq!(saved.shares[0].visibility.to_string(), "hidden");
    assert_eq!(saved.shares[0].exclude, vec!["*.tmp".to_owned()]);
    wait_until(
        "the index to hide the share",
        Duration::from_secs(30),
        || {
            let server = &server;
            async move {
                let found = server.search("results").await;
                if found.hits.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} hits", found.hits.len()))
                }
            }
        },
    )
    .await;
    let shares = http
        .get(format!("{base}/shares?changed=lab"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(shares.contains("value=\"hidden\""), "{shares}");
}

/// The search page's filters reach the index server and stay in the form; a wrong one is
/// named on the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_search_page_filters_by_extension_and_size_and_names_a_wrong_filter() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "report small.txt", b"a small report");
    write_file(&share, "report big.bin", &pseudo_random(2_500_000, 7));
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    server.wait_for_hits("report", 2).await;
    let base = format!("http://{}", agent.handle.ui_addr.unwrap());
    let token = peerdex_agent::web::load_or_create_token(&agent.config.state).unwrap();
    let http = plain_http();
    let page = |query: &'static str| {
        let request = http
            .get(format!("{base}/search?q=report&{query}"))
            .bearer_auth(&token);
        async move {
            let r = request.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, html) = page("min_mb=1&max_mb=&ext=&min_bitrate=&lossless=").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("report big.bin") && !html.contains("report small.txt"),
        "{html}"
    );
    assert!(
        html.contains("id=\"min_mb\" name=\"min_mb\" value=\"1\""),
        "{html}"
    );
    let (_, html) = page("ext=.TXT").await;
    assert!(
        html.contains("report small.txt") && !html.contains("report big.bin"),
        "{html}"
    );
    let (status, html) = page("min_mb=lots").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("Smallest size must be a whole number"),
        "{html}"
    );
    let (status, html) = page("lossless=maybe").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("lossless is 1, 0 or empty"), "{html}");
}
