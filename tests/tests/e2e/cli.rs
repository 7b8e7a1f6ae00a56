//! The `peerdex` binary as a user runs it: config edits, the agent in the foreground, status.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use peerdex_tests::*;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_peerdex-under-test");

pub(crate) fn peerdex(state: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--state")
        .arg(state)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// Starts `peerdex agent` and waits for its "serving on" line.
pub(crate) fn spawn_agent(state: &Path, config: &Path, server: &str) -> (Child, String) {
    let mut child = Command::new(BIN)
        .arg("--state")
        .arg(state)
        .arg("--config")
        .arg(config)
        .args([
            "agent",
            "--server",
            server,
            "--listen",
            "127.0.0.1:0",
            "--nick",
            "cli-agent",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = first_line_after(&mut child, "serving on ");
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_then_run_the_agent_then_stop_it() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("conf/config.toml");
    let music = dir.path().join("Music");
    write_file(&music, "album/anthem.mp3", b"anthem");
    let elsewhere = dir.path().join("Other");
    std::fs::create_dir_all(&elsewhere).unwrap();

    // `share` and `unshare` edit the config file.
    succeeded(peerdex(
        &state,
        &config,
        &["share", music.to_str().unwrap(), "--exclude", "*.iso"],
    ));
    let out = peerdex(&state, &config, &["share", elsewhere.to_str().unwrap()]);
    assert!(out.status.success());
    let out = peerdex(&state, &config, &["unshare", elsewhere.to_str().unwrap()]);
    assert!(out.status.success());
    let out = peerdex(&state, &config, &["unshare", "/no/such/folder"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not shared"));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("Music") && text.contains("*.iso") && !text.contains("Other"),
        "{text}"
    );

    // No agent yet: status says so.
    let out = peerdex(&state, &config, &["status"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent is running"));

    // Downloads go to (and are shared from) a folder of the test, not the user's.
    let mut file = peerdex_agent::config::ConfigFile::load(&config).unwrap();
    file.download.dir = Some(dir.path().join("dl"));
    file.save(&config).unwrap();
    let (child, serving) = spawn_agent(&state, &config, &server.url);
    assert!(serving.starts_with("https://127.0.0.1:"), "{serving}");
    wait_until(
        "the shared file in the index",
        Duration::from_secs(30),
        || async {
            let hits = server.search("anthem").await.hits;
            if hits.len() == 1 {
                Ok(())
            } else {
                Err(format!("{} hits", hits.len()))
            }
        },
    )
    .await;

    // Status over the control socket.
    let out = succeeded(peerdex(&state, &config, &["status", "--json"]));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["nick"], "cli-agent");
    assert_eq!(status["shares"][0]["name"], "Music");
    assert_eq!(status["shares"][0]["files"], 1);
    assert_eq!(status["serving"], serving.trim_start_matches("https://"));
    let human = peerdex(&state, &config, &["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("Music"));

    // A second agent on the same state directory refuses to start.
    let second = Command::new(BIN)
        .arg("--state")
        .arg(&state)
        .arg("--config")
        .arg(&config)
        .args(["agent", "--server", &server.url, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));

    // SIGTERM: a clean exit 0, and the peer is offline at once (it logged out).
    let status = stop_with("-TERM", child);
    assert!(status.success(), "{status:?}");
    let page = server.client().browse("cli-agent", None, 10).await.unwrap();
    assert!(!page.online);
    assert_eq!(
        page.entries, 1,
        "the list stays on the server for the next start"
    );
}

/// Sends `signal` (`"-TERM"`, `"-INT"`) to `child` and waits (30 s at most) for it to exit.
pub(crate) fn stop_with(signal: &str, child: Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for_exit(child, Duration::from_secs(30))
}

pub(crate) fn wait_for_exit(mut child: Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < timeout, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `peerdex ARGS` in `cwd` with a state dir and no config file; stdout piped.
pub(crate) fn spawn_in(cwd: &Path, state: &Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .current_dir(cwd)
        .arg("--state")
        .arg(state)
        .args(["--config", "/nonexistent/none.toml"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Asserts that a command succeeded, showing its errors otherwise.
pub(crate) fn succeeded(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `peerdex` with a state dir and no config file, from `cwd`.
pub(crate) fn peerdex_in(cwd: &Path, state: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(cwd)
        .arg("--state")
        .arg(state)
        .arg("--config")
        .arg(state.join("none.toml"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_then_get_by_row_by_hash_and_to_stdout() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(3 * (1 << 20) + 17, 21);
    write_file(&share, "Live Concert.flac", &bytes);
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    server.wait_for_hits("concert", 1).await;
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    // --json: one document with every field, including sources with addresses.
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["search", "--server", &server.url, "--json", "concert"],
    ));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hash = content_hash(&bytes).to_string();
    assert_eq!(found["hits"][0]["hash"], hash.as_str());
    assert_eq!(found["hits"][0]["size"], bytes.len());
    assert_eq!(found["hits"][0]["name"], "Live Concert.flac");
    assert!(found["hits"][0]["sources"][0]["addr"].is_string());
    // The table, with size filters.
    let out = peerdex_in(
        &work,
        &me,
        &[
            "search",
            "--server",
            &server.url,
            "--min-size",
            "1MiB",
            "concert",
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        table.contains("Live Concert.flac") && table.contains("3.0 MiB"),
        "{table}"
    );
    let out = peerdex_in(
        &work,
        &me,
        &[
            "search",
            "--server",
            &server.url,
            "--max-size",
            "1MB",
            "concert",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no results"));
    let out = peerdex_in(
        &work,
        &me,
        &["search", "--server", &server.url, "--min-size", "lots", "x"],
    );
    assert_eq!(out.status.code(), Some(2), "a bad size is a usage error");

    // Row 1 of the last search, into the current folder (the last search was "no results":
    // search again first).
    peerdex_in(&work, &me, &["search", "--server", &server.url, "concert"]);
    let out = succeeded(peerdex_in(&work, &me, &["get", "--json", "1"]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["hash"], hash.as_str());
    assert_eq!(report["size"], bytes.len());
    assert_eq!(report["sources_used"].as_array().unwrap().len(), 1);
    assert_eq!(
        std::fs::read(work.join("Live Concert.flac")).unwrap(),
        bytes
    );

    // The same again: refused without --force, with its own exit code; by hash with --force.
    let out = peerdex_in(&work, &me, &["get", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let other = dir.path().join("other");
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &[
            "get",
            "--server",
            &server.url,
            "--dir",
            other.to_str().unwrap(),
            &hash,
        ],
    ));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        summary.starts_with(&hash) && summary.contains("from 1 source"),
        "{summary}"
    );
    assert_eq!(
        std::fs::read(other.join("Live Concert.flac")).unwrap(),
        bytes
    );

    // --stdout: the bytes, in order, on standard output.
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["get", "--server", &server.url, "--stdout", &hash],
    ));
    assert_eq!(out.stdout, bytes);

    // Browse: every file of a peer, paginated by the server, as JSON.
    let nick = agent.status().nick;
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["browse", "--server", &server.url, "--all", "--json", &nick],
    ));
    let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listing["online"], true);
    assert_eq!(listing["files"][0]["path"], "Live Concert.flac");
    assert_eq!(listing["files"][0]["hash"], hash.as_str());
    let out = peerdex_in(
        &work,
        &me,
        &["browse", "--server", &server.url, "--all", &nick],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Live Concert.flac"));

    // A reader that goes away early (a closed player) is an error, not a success.
    let mut early = spawn_in(
        &work,
        &me,
        &["get", "--server", &server.url, "--stdout", &hash],
    );
    let mut first = [0u8; 10];
    std::io::Read::read_exact(early.stdout.as_mut().unwrap(), &mut first).unwrap();
    assert_eq!(first, bytes[..10]);
    drop(early.stdout.take());
    let status = wait_for_exit(early, Duration::from_secs(30));
    assert!(!status.success(), "{status:?}");

    // Unknown content: "not found".
    let unknown = content_hash(b"nobody shares this").to_string();
    let out = peerdex_in(&work, &me, &["get", "--server", &server.url, &unknown]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = peerdex_in(&work, &me, &["get", "9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 1 rows"));

    // The only source is gone but still listed (it announced a dead port): "no source reachable".
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let ghost = TestPeer::join_announcing(&server.url, "ghost", dead_port).await;
    let mut ghost_entry = entry("ghost/only here.bin", 5, "ghost");
    ghost_entry.hash = content_hash(b"ghost bytes");
    ghost.client.upload_full(1, &[ghost_entry]).await.unwrap();
    let ghost_hash = content_hash(b"ghost bytes").to_string();
    let out = peerdex_in(&work, &me, &["get", "--server", &server.url, &ghost_hash]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ghost"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_land_in_the_running_agents_folder_and_become_shared() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "shared poem.txt", b"roses are red");
    let source = TestAgent::start(&server.url, &[&share], |_| {}).await;
    source.wait_synced().await;
    // A second agent with nothing shared but its download folder.
    let state = dir.path().join("mine");
    let downloads = dir.path().join("my downloads");
    let file = peerdex_agent::config::ConfigFile {
        download: peerdex_agent::config::DownloadConfig {
            dir: Some(downloads.clone()),
            share: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    let config = peerdex_agent::AgentConfig::from_parts(
        server.url.clone(),
        Some("collector".into()),
        Some("127.0.0.1:0".parse().unwrap()),
        state.clone(),
        &[],
        &file,
    )
    .unwrap();
    let mine = TestAgent::start_with(config).await;
    let hash = content_hash(b"roses are red");
    // With the agent running, `get` hands the download to it; `--wait` follows it to the end.
    let out = succeeded(peerdex_in(
        dir.path(),
        &state,
        &["get", "--wait", "--server", &server.url, &hash.to_string()],
    ));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("queued 1: "), "{said}");
    assert!(said.contains("shared poem.txt"), "{said}");
    assert_eq!(
        std::fs::read(downloads.join("shared poem.txt")).unwrap(),
        b"roses are red"
    );
    // Once complete it is shared: the server lists the collector as a second source.
    wait_for_sources(&server, hash, 2).await;
    mine.stop().await;
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_no_listen_is_reached_through_the_relay() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("Nat");
    write_file(&share, "behind.txt", b"shared from behind a NAT");
    let state = dir.path().join("agent-state");
    let config = dir.path().join("agent.toml");
    let mut file = peerdex_agent::config::ConfigFile::default();
    file.download.share = Some(false);
    file.save(&config).unwrap();
    let child = Command::new(BIN)
        .arg("--state")
        .arg(&state)
        .arg("--config")
        .arg(&config)
        .args(["agent", "--server", &server.url, "--no-listen", "--share"])
        .arg(&share)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // No "serving on" line: the agent accepts nothing. Its status says so.
    let status = wait_until(
        "the agent's control channel",
        Duration::from_secs(30),
        || {
            let out = peerdex(&state, &config, &["status", "--json"]);
            async move {
                let status: serde_json::Value =
                    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
                if status["server"]["control_channel"] == true
                    && status["shares"][0]["hashed_files"] == 1
                {
                    Ok(status)
                } else {
                    Err(format!("{status}"))
                }
            }
        },
    )
    .await;
    assert!(status["serving"].is_null());
    let hash = content_hash(b"shared from behind a NAT").to_string();
    wait_for_sources(&server, content_hash(b"shared from behind a NAT"), 1).await;
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["get", "--server", &server.url, "--no-listen", &hash],
    ));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(summary.contains("via relay"), "{summary}");
    assert_eq!(
        std::fs::read(work.join("behind.txt")).unwrap(),
        b"shared from behind a NAT"
    );
    assert!(stop_with("-TERM", child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_killed_with_sigkill_resumes_with_what_it_had() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(8 * (1 << 20) + 3, 37);
    // 1 MiB/s, so the download is still running when it is killed.
    let agent = slow_agent_sharing(&server, dir.path(), "long.bin", &bytes).await;
    let hash = content_hash(&bytes).to_string();
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut child = spawn_in(&work, &me, &["get", "--server", &server.url, &hash]);
    // Wait until the state file records some written pieces, then kill -9.
    wait_for_written_pieces(&work.join("long.bin.peerdex-state"), 2).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!work.join("long.bin").exists());
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["get", "--server", &server.url, "--json", &hash],
    ));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["pieces_reused"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(
        report["pieces_reused"].as_u64().unwrap() + report["pieces_fetched"].as_u64().unwrap(),
        9
    );
    assert_eq!(std::fs::read(work.join("long.bin")).unwrap(), bytes);
    agent.stop().await;
}
