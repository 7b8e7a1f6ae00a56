//! The `peerdex` binary as a user runs it: config edits, the agent in the foreground, status.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use peerdex_tests::*;

const BIN: &str = env!("CARGO_BIN_EXE_peerdex-under-test");

fn peerdex(state: &Path, config: &Path, args: &[&str]) -> Output {
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
fn spawn_agent(state: &Path, config: &Path, server: &str) -> (Child, String) {
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
    let out = peerdex(
        &state,
        &config,
        &["share", music.to_str().unwrap(), "--exclude", "*.iso"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

    let (child, serving) = spawn_agent(&state, &config, &server.url);
    assert!(serving.starts_with("http://127.0.0.1:"));
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
    let out = peerdex(&state, &config, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["nick"], "cli-agent");
    assert_eq!(status["shares"][0]["name"], "Music");
    assert_eq!(status["shares"][0]["files"], 1);
    assert_eq!(status["serving"], serving.trim_start_matches("http://"));
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
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_for_exit(child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    let page = server.client().browse("cli-agent", None, 10).await.unwrap();
    assert!(!page.online);
    assert_eq!(
        page.entries, 1,
        "the list stays on the server for the next start"
    );
}

fn wait_for_exit(mut child: Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < timeout, "the agent did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}
