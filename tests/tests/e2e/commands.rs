//! The `peerdex` and `peerdex-server` binaries doing what the README says (issue 15): pipes,
//! signals, one rule for the server URL, live share changes, paging, rows and hash prefixes,
//! curl's `-o`, permanent refusals, and a status that tells the truth.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use peerdex_shared::api::ListEntry;
use peerdex_tests::*;

use crate::cli::{BIN, peerdex, peerdex_in, stop_with, succeeded, wait_for_exit};

/// `peerdex --state STATE --config CONFIG ARGS` with its stdout closed before it writes: what
/// `… | head -0` does.
fn with_closed_stdout(state: &Path, config: &Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("--state")
        .arg(state)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// `count` distinct contents named `copyright` in folders of their own, on a fresh peer.
async fn many_copyrights(server: &TestServer, nick: &str, count: usize) -> TestPeer {
    let peer = TestPeer::join(&server.url, nick).await;
    let entries: Vec<ListEntry> = (0..count)
        .map(|i| {
            entry(
                &format!("Album {i:03}/copyright"),
                100 + i as u64,
                &format!("c{i}"),
            )
        })
        .collect();
    peer.client.upload_full(1, &entries).await.unwrap();
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_standard_output_ends_commands_quietly() {
    let server = TestServer::start().await;
    let _bob = many_copyrights(&server, "bob", 300).await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "a.txt", b"a");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    wait_until("bob's files", Duration::from_secs(10), || async {
        let found = server.search("copyright").await;
        (found.total >= 100)
            .then_some(())
            .ok_or(found.total.to_string())
    })
    .await;
    let config = dir.path().join("none.toml");
    let me = dir.path().join("me");
    for args in [
        vec!["browse", "--server", &server.url, "--all", "bob"],
        vec!["browse", "--server", &server.url, "--all", "--json", "bob"],
        vec![
            "search",
            "--server",
            &server.url,
            "--limit",
            "100",
            "copyright",
        ],
        vec!["search", "--server", &server.url, "--json", "copyright"],
    ] {
        let out = with_closed_stdout(&me, &config, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
    let out = with_closed_stdout(&agent.config.state, &config, &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_log_pipe_closed_still_stops_cleanly_and_logs_out() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "tee.txt", b"logged");
    let mut child = Command::new(BIN)
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--config")
        .arg(dir.path().join("none.toml"))
        .args([
            "agent",
            "--server",
            &server.url,
            "--listen",
            "127.0.0.1:0",
            "--nick",
            "teed",
            "--share",
        ])
        .arg(&share)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    first_line_after(&mut child, "serving on ");
    // `agent 2>&1 | tee log`, then Ctrl-C: tee is gone before the agent's last log lines.
    drop(child.stderr.take());
    wait_until("the agent online", Duration::from_secs(30), || async {
        match server.client().browse("teed", None, 1).await {
            Ok(page) if page.online && page.entries == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let status = stop_with("-INT", child);
    assert!(status.success(), "{status:?}");
    let page = server.client().browse("teed", None, 1).await.unwrap();
    assert!(!page.online, "the agent did not log out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_uses_the_configured_server_pages_through_results_and_shows_matching_copies() {
    let server = TestServer::start().await;
    let _carol = many_copyrights(&server, "carol", 45).await;
    let live = TestPeer::join(&server.url, "live").await;
    live.client
        .upload_full(1, &[entry("Concert Live/copyright", 7, "live one")])
        .await
        .unwrap();
    // One content under a common name on two peers and a rare one on a third.
    let mut holders = Vec::new();
    for (nick, path) in [
        ("dave", "Pop/popular.mp3"),
        ("erin", "Pop/popular.mp3"),
        ("fred", "Rare Finds/unusualword.mp3"),
    ] {
        let peer = TestPeer::join(&server.url, nick).await;
        peer.client
            .upload_full(1, &[entry(path, 4242, "shared song")])
            .await
            .unwrap();
        holders.push(peer);
    }
    wait_until("every list indexed", Duration::from_secs(10), || async {
        let found = server.search("copyright").await;
        (found.total == 46)
            .then_some(())
            .ok_or(found.total.to_string())
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("server = \"{}\"\n", server.url)).unwrap();
    let me = dir.path().join("me");
    // No --server: the config file's. Words starting with `-` after the first are exclusions.
    let out = succeeded(peerdex(&me, &config, &["search", "copyright", "-live"]));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("rows 1-20 of 45"), "{table}");
    assert!(table.contains("--page 2"), "{table}");
    assert!(
        table.contains("music/Album 0"),
        "folders are shown: {table}"
    );
    assert!(!table.contains("Concert Live"), "{table}");
    let out = succeeded(peerdex(
        &me,
        &config,
        &["search", "--page", "3", "copyright", "-live"],
    ));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("rows 41-45 of 45"), "{table}");
    assert!(
        table.lines().nth(1).unwrap().trim_start().starts_with("41"),
        "{table}"
    );
    // Rows of page 3 are numbered as shown.
    let out = peerdex(&me, &config, &["get", "20"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rows 41 to 45"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The name shown is that of a copy the query found, with its folder.
    let out = succeeded(peerdex(&me, &config, &["search", "--json", "unusualword"]));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["hits"][0]["name"], "unusualword.mp3", "{found}");
    assert_eq!(found["hits"][0]["folder"], "music/Rare Finds", "{found}");
    assert_eq!(found["hits"][0]["sources_online"], 3);
    let out = succeeded(peerdex(&me, &config, &["search", "--json", "popular"]));
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["hits"][0]["name"], "popular.mp3", "{found}");
    // Browse reads the config file too.
    let out = succeeded(peerdex(&me, &config, &["browse", "--all", "live"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Concert Live/copyright"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_agent_picks_up_share_and_unshare_at_once() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let config = dir.path().join("config.toml");
    let mut file = peerdex_agent::config::ConfigFile::default();
    file.download.share = Some(false);
    file.save(&config).unwrap();
    let first = dir.path().join("First");
    write_file(&first, "first.txt", b"first share");
    succeeded(peerdex(
        &state,
        &config,
        &["share", first.to_str().unwrap()],
    ));
    let (child, serving) = crate::cli::spawn_agent(&state, &config, &server.url);
    server.wait_for_hits("first", 1).await;

    let later = dir.path().join("Later");
    write_file(&later, "laterfile.txt", b"shared while running");
    let out = succeeded(peerdex(
        &state,
        &config,
        &["share", later.to_str().unwrap()],
    ));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("the running agent now shares: First, Later"),
        "{said}"
    );
    server.wait_for_hits("laterfile", 1).await;
    let hash = content_hash(b"shared while running");
    let blob = format!("{serving}/peerdex/v1/blobs/{hash}");
    let agent_key = peerdex_client::Identity::load_or_create(&state.join(peerdex_agent::KEY_FILE))
        .unwrap()
        .peer_id();
    let agent_http = peer_http(agent_key);
    assert_eq!(agent_http.get(&blob).send().await.unwrap().status(), 200);

    let out = succeeded(peerdex(
        &state,
        &config,
        &["unshare", later.to_str().unwrap()],
    ));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        said.contains("the running agent now shares: First"),
        "{said}"
    );
    // No longer served, and gone from search once the delta is in.
    assert_eq!(agent_http.get(&blob).send().await.unwrap().status(), 404);
    server.wait_for_hits("laterfile", 0).await;
    server.wait_for_hits("first", 1).await;
    assert!(stop_with("-TERM", child).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_refusals_stop_the_agent_with_the_reason() {
    let server = TestServer::start().await;
    let _owner = TestPeer::join(&server.url, "taken").await;
    let dir = tempfile::tempdir().unwrap();
    let agent = |server: &str, nick: &str| {
        Command::new(BIN)
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--config")
            .arg(dir.path().join("none.toml"))
            .args(["agent", "--server", server, "--listen", "127.0.0.1:0"])
            .args(["--nick", nick])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let cases = [
        (server.url.as_str(), "taken", "belongs to another peer"),
        (server.url.as_str(), "ｔａｋｅｎ", "belongs to another peer"),
        (
            server.url.as_str(),
            "bad nick",
            "nickname \"bad nick\" is not valid",
        ),
        (
            "localhost:7700",
            "fine",
            "has no scheme; write http://localhost:7700",
        ),
    ];
    for (url, nick, reason) in cases {
        let mut child = agent(url, nick);
        let mut stderr = child.stderr.take().unwrap();
        let status = wait_for_exit(child, Duration::from_secs(30));
        let mut said = String::new();
        stderr.read_to_string(&mut said).unwrap();
        assert_eq!(status.code(), Some(1), "{nick}: {said}");
        assert!(said.contains(reason), "{nick}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_paths_follow_curl_and_are_checked_before_fetching() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let one = pseudo_random(2 * (1 << 20) + 5, 41);
    write_file(&share, "one.bin", &one);
    write_file(&share, "two.bin", b"second file");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    let (h1, h2) = (
        content_hash(&one).to_string(),
        content_hash(b"second file").to_string(),
    );
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("existing")).unwrap();
    let get = |args: &[&str]| {
        let mut all = vec!["get", "--server", &server.url];
        all.extend_from_slice(args);
        peerdex_in(&work, &me, &all)
    };
    // One download: -o is the file to write.
    succeeded(get(&["-o", "song.mp3", &h1]));
    assert_eq!(std::fs::read(work.join("song.mp3")).unwrap(), one);
    // An existing folder means into it, even with --force (it is never replaced).
    succeeded(get(&["-o", "existing", "--force", &h1]));
    assert_eq!(std::fs::read(work.join("existing/one.bin")).unwrap(), one);
    // Several downloads: -o is the folder.
    succeeded(get(&["-o", "both", &h1, &h2]));
    assert_eq!(
        std::fs::read(work.join("both/two.bin")).unwrap(),
        b"second file"
    );
    let out = get(&["-o", "song.mp3", &h1, &h2]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("names the folder"));

    // Asked to write a file where a folder is, the download fails before fetching anything.
    let folder = work.join("a folder");
    std::fs::create_dir_all(&folder).unwrap();
    let failed = peerdex_download::download(
        std::sync::Arc::new(server.client()),
        &peerdex_download::DownloadRequest {
            hash: content_hash(&one),
            name: None,
            destination: peerdex_download::Destination::File(folder.clone()),
        },
        &peerdex_download::DownloadOptions {
            force: true,
            ..Default::default()
        },
        std::sync::Arc::new(peerdex_download::DownloadProgress::default()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    assert!(
        matches!(failed, Err(peerdex_download::DownloadError::NotAFile(_))),
        "{failed:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&work)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("peerdex-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_rows_and_hash_prefixes_are_what_get_takes() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "a/alpha.txt", b"alpha bytes");
    write_file(&share, "b/beta.txt", b"beta bytes");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    let nick = agent.status().nick;
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let out = succeeded(peerdex_in(
        &work,
        &me,
        &["browse", "--server", &server.url, "--all", &nick],
    ));
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Vec<&str> = listing.lines().filter(|l| l.contains("share/")).collect();
    assert!(rows[0].trim_start().starts_with("1 ") && rows[1].trim_start().starts_with("2 "));
    // The short hash browse shows is a prefix `get` takes.
    let short = content_hash(b"alpha bytes").fmt_short();
    assert!(rows[0].contains(&short), "{listing}");
    succeeded(peerdex_in(&work, &me, &["get", "2"]));
    assert_eq!(std::fs::read(work.join("beta.txt")).unwrap(), b"beta bytes");
    succeeded(peerdex_in(&work, &me, &["get", &short[..8]]));
    assert_eq!(
        std::fs::read(work.join("alpha.txt")).unwrap(),
        b"alpha bytes"
    );
    let out = peerdex_in(&work, &me, &["get", "ffffffffff"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no row of the last listing"));
    let out = peerdex_in(&work, &me, &["get", "abc"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 hex digits"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_has_its_own_config_variable_and_every_setting_is_documented() {
    let binary = Path::new(env!("CARGO_BIN_EXE_peerdex-server-under-test"));
    let dir = tempfile::tempdir().unwrap();
    // The agent's config, exported for the agent, must not break the server.
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        "server = \"http://x:7700\"\n[download]\nshare = false\n",
    )
    .unwrap();
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("data"))
        .env("PEERDEX_CONFIG", &agent_config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    first_line_after(&mut child, "listening on ");
    child.kill().unwrap();
    child.wait().unwrap();
    // Its own variable is read.
    let server_config = dir.path().join("server.toml");
    std::fs::write(&server_config, "[limits]\nmax_entries_per_peer = 7\n").unwrap();
    let out = Command::new(binary)
        .arg("--print-config")
        .env("PEERDEX_SERVER_CONFIG", &server_config)
        .output()
        .unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("max_entries_per_peer = 7"), "{printed}");

    // `--help` points at docs/CONFIG.md, which names every setting --print-config prints.
    let help = Command::new(binary).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("docs/CONFIG.md"));
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let config_md = std::fs::read_to_string(docs.join("CONFIG.md")).unwrap();
    let protocol = std::fs::read_to_string(docs.join("PROTOCOL.md")).unwrap();
    let limits = &protocol[protocol.find("### 2.6").unwrap()..protocol.find("### 2.7").unwrap()];
    let mut section = String::new();
    for line in printed.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        } else if let Some((key, _)) = line.split_once(" = ") {
            let key = format!("{section}{key}");
            assert!(
                config_md.contains(&format!("`{key}`")),
                "CONFIG.md lacks {key}"
            );
            if !section.is_empty() || key == "trusted_proxies" {
                assert!(
                    limits.contains(&format!("`{key}`")),
                    "PROTOCOL §2.6 lacks {key}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_the_truth_soon() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "fine.txt", b"fine");
    write_file(&share, "evil\u{202e}gpj.exe", b"disguised");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    // Names that cannot be shared are listed, with the reason.
    let status = agent.status();
    assert_eq!(status.unshareable.len(), 1, "{:?}", status.unshareable);
    assert_eq!(status.unshareable[0].path, "evil\u{202e}gpj.exe");
    assert!(status.unshareable[0].reason.contains("U+202E"));
    let human = succeeded(peerdex(
        &agent.config.state,
        &dir.path().join("none.toml"),
        &["status"],
    ));
    let text = String::from_utf8_lossy(&human.stdout).into_owned();
    assert!(
        text.contains("evil\\u{202e}gpj.exe"),
        "shown escaped: {text}"
    );

    // A stopped server is offline in the status within seconds, not at the next heartbeat.
    server.stop().await;
    wait_until("the server offline", Duration::from_secs(10), || {
        let online = agent.status().server.online;
        async move {
            if online {
                Err("online".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await;
    agent.stop().await;

    // A folder that does not exist is said so, not blamed on inotify limits.
    let mut child = Command::new(BIN)
        .arg("--state")
        .arg(dir.path().join("state2"))
        .arg("--config")
        .arg(dir.path().join("none.toml"))
        .args([
            "agent",
            "--server",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--share", "/nonexistent/folder"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    first_line_after(&mut child, "serving on ");
    let mut stderr = child.stderr.take().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert!(said.contains("does not exist"), "{said}");
    assert!(!said.contains("inotify"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_progress_of_a_queued_or_resumed_download_tells_what_happens() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(6 * (1 << 20) + 11, 43);
    write_file(&share, "queued.bin", &bytes);
    // One upload slot at 1 MiB/s: a second download waits in the queue.
    let agent = TestAgent::start(&server.url, &[&share], |c| {
        c.upload.slots = 1;
        c.upload.max_rate = 1 << 20;
        c.upload.min_rate = 1;
    })
    .await;
    agent.wait_synced().await;
    let hash = content_hash(&bytes);
    let start = |out: &str| {
        let progress = std::sync::Arc::new(peerdex_download::DownloadProgress::default());
        let (client, out, shown) = (server.client(), dir.path().join(out), progress.clone());
        let task = tokio::spawn(async move {
            peerdex_download::download(
                std::sync::Arc::new(client),
                &peerdex_download::DownloadRequest {
                    hash,
                    name: None,
                    destination: peerdex_download::Destination::Dir(out),
                },
                &Default::default(),
                shown,
                tokio_util::sync::CancellationToken::new(),
            )
            .await
        });
        (task, progress)
    };
    let (first, first_progress) = start("first");
    wait_until(
        "the first download running",
        Duration::from_secs(30),
        || {
            let verified = first_progress
                .verified
                .load(std::sync::atomic::Ordering::Relaxed);
            async move {
                if verified > 0 {
                    Ok(())
                } else {
                    Err("0".to_string())
                }
            }
        },
    )
    .await;
    let (second, second_progress) = start("second");
    let queued = wait_until("a queue position", Duration::from_secs(30), || {
        let queued = second_progress.queued();
        async move { queued.ok_or_else(|| "not queued".to_string()) }
    })
    .await;
    assert!(queued.starts_with("number 1 in "), "{queued}");
    assert_eq!(second_progress.name().as_deref(), Some("queued.bin"));
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(
        second_progress
            .resumed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_only_source_dies_the_error_says_what_was_kept_and_how_to_resume() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(8 * (1 << 20) + 1, 44);
    let agent = slow_agent_sharing(&server, dir.path(), "dies.bin", &bytes).await;
    let hash = content_hash(&bytes).to_string();
    let me = dir.path().join("me");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let mut child = Command::new(BIN)
        .current_dir(&work)
        .arg("--state")
        .arg(&me)
        .args(["--config", "/nonexistent/none.toml"])
        .args(["get", "--server", &server.url, &hash])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_written_pieces(&work.join("dies.bin.peerdex-state"), 2).await;
    agent.stop().await;
    let mut stderr = child.stderr.take().unwrap();
    let status = wait_for_exit(child, Duration::from_secs(60));
    let mut said = String::new();
    stderr.read_to_string(&mut said).unwrap();
    assert_eq!(status.code(), Some(4), "{said}");
    assert!(
        said.contains("kept in") && said.contains("dies.bin.peerdex-part"),
        "{said}"
    );
    assert!(
        said.contains("run the same command again to resume"),
        "{said}"
    );
    assert!(work.join("dies.bin.peerdex-part").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_document_says_what_the_server_and_client_do() {
    let server = TestServer::start().await;
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let protocol = std::fs::read_to_string(docs.join("PROTOCOL.md")).unwrap();
    let section = |from: &str, to: &str| {
        let start = protocol.find(from).unwrap();
        let end = start + protocol[start..].find(to).unwrap();
        protocol[start..end].to_owned()
    };
    // Every field of the register answer is in §3.3's table.
    let identity = peerdex_client::Identity::generate().unwrap();
    let answer: serde_json::Value = register_raw(&server.url, &identity, "doc", 0, &[], &[])
        .await
        .json()
        .await
        .unwrap();
    let register = section("### 3.3", "### 3.4");
    for field in answer.as_object().unwrap().keys() {
        assert!(
            register.contains(&format!("| `{field}` |")),
            "§3.3 lacks {field}"
        );
    }
    // §3.11 says how differing sizes are ordered, §7 that the finished file is not re-hashed.
    let sources = section("### 3.11", "### 3.12");
    assert!(sources.contains("other_sizes") && sources.contains("smaller size"));
    let downloading = section("## 7.", "## 8.");
    assert!(!downloading.contains("Hash the whole partial file"));
    assert!(downloading.contains("not hashed again"));
}
