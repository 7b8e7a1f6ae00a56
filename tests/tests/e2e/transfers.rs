//! Downloads the agent owns (issue 20): the transfer queue survives a kill, waits for a source
//! that went away, shows queue positions; downloaders' reports quarantine a lying source and
//! do not quarantine an honest one.

use std::process::{Command, Stdio};
use std::time::Duration;

use peerdex_agent::transfers::{TransferState, TransferView};
use peerdex_agent::{Destination, NewTransfer, Stored};
use peerdex_shared::FileHash;
use peerdex_shared::api::{OutcomeKind, SourceOutcome, TransferReport};
use peerdex_tests::*;

use super::cli::{BIN, peerdex_in, spawn_agent, succeeded};
use super::download::corrupt_in_place;

const P: usize = 1 << 20;

/// Queues `hash` in `agent`'s transfer queue, into its download folder.
fn queue(agent: &TestAgent, hash: FileHash) -> u64 {
    let new = NewTransfer {
        hash,
        name: None,
        destination: Destination::Dir(agent.config.download_dir.clone()),
        label: String::new(),
        priority: 0,
        force: false,
        wish: None,
    };
    agent.handle.transfers().add(&[new]).unwrap()[0]
}

fn view(agent: &TestAgent, id: u64) -> TransferView {
    agent
        .handle
        .transfers()
        .list(100)
        .unwrap()
        .into_iter()
        .find(|t| t.row.id == id)
        .unwrap()
}

/// Waits until transfer `id` of `agent` is as `wanted` says (`what` names it for the timeout).
async fn wait_for_view(
    agent: &TestAgent,
    id: u64,
    what: &str,
    wanted: impl Fn(&TransferView) -> bool,
) -> TransferView {
    wait_until(what, Duration::from_secs(30), || {
        let view = view(agent, id);
        let ok = wanted(&view);
        async move {
            if ok {
                Ok(view)
            } else {
                Err(format!("{:?} {:?}", view.status, view.row.reason))
            }
        }
    })
    .await
}

/// Waits until transfer `id` of `agent` is done.
async fn wait_done(agent: &TestAgent, id: u64, within: Duration) -> TransferView {
    wait_until("the transfer to finish", within, || {
        let view = view(agent, id);
        async move {
            match view.row.state {
                Stored::Done => Ok(view),
                Stored::Failed | Stored::Cancelled => panic!("transfer ended: {view:?}"),
                _ => Err(format!("{:?} {:?}", view.status, view.row.reason)),
            }
        }
    })
    .await
}

/// `peerdex agent` as a child process, on state directory `me` of `dir`, downloading into
/// `dir/downloads` (not shared).
struct CliAgent {
    state: std::path::PathBuf,
    config: std::path::PathBuf,
    downloads: std::path::PathBuf,
    child: std::process::Child,
}

impl CliAgent {
    fn start(dir: &std::path::Path, server: &str) -> CliAgent {
        let (state, config, downloads) = (
            dir.join("me"),
            dir.join("me.toml"),
            dir.join("my downloads"),
        );
        let mut file = peerdex_agent::config::ConfigFile::default();
        file.download.dir = Some(downloads.clone());
        file.download.share = Some(false);
        file.save(&config).unwrap();
        let (child, _) = spawn_agent(&state, &config, server);
        CliAgent {
            state,
            config,
            downloads,
            child,
        }
    }
}

/// A downloading agent with nothing shared, and `retry_max_secs` as given.
async fn downloader(server: &TestServer, retry_max_secs: u64) -> TestAgent {
    let agent = TestAgent::start(&server.url, &[], |c| {
        c.download.retry_max_secs = Some(retry_max_secs);
    })
    .await;
    agent.wait_synced().await;
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_handed_to_the_agent_survives_a_kill_and_resumes_from_verified_pieces() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(6 * P + 7, 71);
    let source = slow_agent_sharing(&server, dir.path(), "long talk.mp4", &bytes).await;
    let hash = content_hash(&bytes);
    let CliAgent {
        state,
        config,
        downloads,
        child: mut agent,
    } = CliAgent::start(dir.path(), &server.url);

    // `get` hands the download to the running agent and returns at once.
    let out = succeeded(peerdex_in(
        dir.path(),
        &state,
        &["get", "--server", &server.url, &hash.to_string()],
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("queued 1: "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for_written_pieces(&downloads.join("long talk.mp4.peerdex-state"), 2).await;
    // The list shows it downloading, from the source, with a rate.
    let out = succeeded(peerdex_in(dir.path(), &state, &["transfers", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["downloads"][0]["status"], "downloading", "{list}");

    // Killed mid-download, as a reboot would.
    agent.kill().unwrap();
    agent.wait().unwrap();
    // Every whole piece already in the partial file, recorded in the state file or not.
    let part = std::fs::read(downloads.join("long talk.mp4.peerdex-part")).unwrap();
    let written = bytes
        .chunks(P)
        .zip(part.chunks(P))
        .filter(|(want, got)| want == got && want.len() == P)
        .count() as u64;
    assert!(written >= 2, "{written}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_before = source.status().uploads.bytes_sent;
    let (mut agent, _) = spawn_agent(&state, &config, &server.url);
    // It resumes by itself; `get --wait` is not needed, `transfers` shows it finish.
    wait_until("the download to finish", Duration::from_secs(60), || {
        let out = peerdex_in(dir.path(), &state, &["transfers", "--json"]);
        async move {
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if list["downloads"][0]["state"] == "done" {
                Ok(())
            } else {
                Err(list["downloads"][0]["status"].to_string())
            }
        }
    })
    .await;
    assert_eq!(
        std::fs::read(downloads.join("long talk.mp4")).unwrap(),
        bytes
    );
    // No piece that was written before the kill was fetched again, even those the state file
    // had not recorded yet: the second run fetched only the rest.
    let sent_after = source.status().uploads.bytes_sent - sent_before;
    assert!(
        sent_after <= bytes.len() as u64 - written * P as u64,
        "the resumed run fetched {sent_after} of {} bytes; {written} pieces were there",
        bytes.len()
    );
    // It is kept in the history.
    let out = succeeded(peerdex_in(dir.path(), &state, &["transfers"]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("done") && table.contains("long talk.mp4"),
        "{table}"
    );
    agent.kill().unwrap();
    agent.wait().unwrap();
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_waits_while_its_only_source_is_offline_and_completes_when_it_returns() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(2 * P + 3, 72);
    write_file(&share, "rare.flac", &bytes);
    let source = TestAgent::start(&server.url, &[&share], |_| {}).await;
    source.wait_synced().await;
    let hash = content_hash(&bytes);
    wait_for_sources(&server, hash, 1).await;
    // The only source goes offline (logs out).
    let (source_config, state_guard) = source.stop().await;
    let me = downloader(&server, 1).await;
    let id = queue(&me, hash);
    let waiting = wait_for_view(&me, id, "the transfer to wait", |v| {
        v.status == TransferState::Waiting
    })
    .await;
    assert_eq!(waiting.row.reason, "no online peer has it");
    let waits = waiting.waits_for.clone().unwrap();
    assert!(waits.contains("their side"), "{waits}");
    // `peerdex status` says what it waits for.
    let status = me.status();
    assert_eq!(status.downloads.len(), 1);
    assert!(status.downloads[0].waits_for.is_some());

    // The source comes back: the transfer completes with no action from the user.
    let source = TestAgent::start_with(source_config).await;
    let done = wait_done(&me, id, Duration::from_secs(60)).await;
    assert_eq!(
        std::fs::read(done.row.path.as_ref().unwrap()).unwrap(),
        bytes
    );
    assert!(done.row.attempts >= 2, "{done:?}");
    source.stop().await;
    drop(state_guard);
    me.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaders_see_their_place_in_a_busy_sources_queue_change() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(3 * P, 73);
    write_file(&share, "popular.iso", &bytes);
    // One upload slot, 1 MiB/s: a download takes about three seconds.
    let source = TestAgent::start(&server.url, &[&share], |c| {
        c.upload.slots = 1;
        c.upload.per_peer = 1;
        c.upload.max_rate = 1 << 20;
        c.upload.min_rate = 1;
    })
    .await;
    source.wait_synced().await;
    let hash = content_hash(&bytes);
    wait_for_sources(&server, hash, 1).await;
    let first = downloader(&server, 1).await;
    let second = downloader(&server, 1).await;
    let third = downloader(&server, 1).await;
    let a = queue(&first, hash);
    wait_for_view(&first, a, "the first download to start", |v| {
        v.status == TransferState::Downloading
    })
    .await;
    // The source counts the upload against the downloader's key, and says so.
    let uploads = source.status().uploads.active;
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    let key = first.handle.peer_id.to_string();
    assert_eq!(uploads[0].peer, format!("peer {}", &key[..12]));
    let b = queue(&second, hash);
    let position =
        |agent: &TestAgent, id: u64| view(agent, id).remote_queue.and_then(|q| q.position);
    wait_until("the second to be queued", Duration::from_secs(30), || {
        let p = position(&second, b);
        async move { (p == Some(1)).then_some(()).ok_or(format!("{p:?}")) }
    })
    .await;
    let c = queue(&third, hash);
    wait_until(
        "the third to be queued behind",
        Duration::from_secs(30),
        || {
            let p = position(&third, c);
            async move { (p == Some(2)).then_some(()).ok_or(format!("{p:?}")) }
        },
    )
    .await;
    assert_eq!(view(&third, c).status, TransferState::QueuedRemotely);
    // The first finishes; the second gets the slot and the third moves up.
    wait_done(&first, a, Duration::from_secs(60)).await;
    wait_until("the third to move up", Duration::from_secs(60), || {
        let p = position(&third, c);
        let moved = p == Some(1) || view(&third, c).status == TransferState::Downloading;
        async move { moved.then_some(()).ok_or(format!("{p:?}")) }
    })
    .await;
    wait_done(&second, b, Duration::from_secs(60)).await;
    wait_done(&third, c, Duration::from_secs(60)).await;
    for agent in [first, second, third, source] {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_two_downloaders_caught_lying_is_not_offered_to_a_third() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(6 * P + 11, 74);
    let hash = content_hash(&bytes);
    let honest_share = dir.path().join("honest");
    write_file(&honest_share, "album.zip", &bytes);
    let liar_share = dir.path().join("liar");
    let liar_file = write_file(&liar_share, "album.zip", &bytes);
    // The honest source is slow, so the liar gets pieces to send.
    let honest = TestAgent::start(&server.url, &[&honest_share], |c| {
        c.upload.max_rate = 2 << 20;
        c.upload.min_rate = 1;
    })
    .await;
    let liar = TestAgent::start(&server.url, &[&liar_share], |_| {}).await;
    honest.wait_synced().await;
    liar.wait_synced().await;
    wait_for_sources(&server, hash, 2).await;
    // From now on the liar sends a flipped bit in every piece.
    for piece in 0..7u64 {
        corrupt_in_place(&liar_file, piece * P as u64 + 5);
    }
    let liar_id = liar.handle.peer_id;
    for _ in 0..2 {
        let me = downloader(&server, 1).await;
        let id = queue(&me, hash);
        let done = wait_done(&me, id, Duration::from_secs(90)).await;
        assert_eq!(
            std::fs::read(done.row.path.as_ref().unwrap()).unwrap(),
            bytes
        );
        assert_eq!(
            done.row.avoid,
            vec![liar_id],
            "the liar was caught: {:?}",
            done.row
        );
        me.stop().await;
    }
    // Reports are in: the liar is no longer offered for this content.
    wait_until(
        "the liar to be quarantined",
        Duration::from_secs(10),
        || {
            let client = server.client();
            async move {
                let found = client.sources(&hash).await.map_err(|e| e.to_string())?;
                let names: Vec<String> = found
                    .sources
                    .iter()
                    .map(|s| s.peer_id.to_string())
                    .collect();
                if found.sources.len() == 1 && found.sources[0].peer_id == honest.handle.peer_id {
                    Ok(())
                } else {
                    Err(format!("{names:?}"))
                }
            }
        },
    )
    .await;
    // The operator sees why, and can clear it.
    let db = operator_db(&server);
    let quarantined = db.quarantine_list().unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].peer, liar_id);
    assert_eq!(quarantined[0].hash, Some(hash));
    assert!(
        quarantined[0]
            .reason
            .contains("failing verification to 2 downloaders"),
        "{}",
        quarantined[0].reason
    );
    let admin = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_peerdex-server-under-test"))
            .arg("--data")
            .arg(&server.data)
            .arg("admin")
            .args(args)
            .output()
            .unwrap()
    };
    let out = admin(&["quarantine", "list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(&liar_id.to_string()));
    let out = admin(&["quarantine", "clear", &liar_id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_sources(&server, hash, 2).await;
    for agent in [honest, liar] {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_downloader_lying_about_an_honest_source_does_not_get_it_quarantined() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(P + 1, 75);
    let hash = content_hash(&bytes);
    write_file(&share, "honest.bin", &bytes);
    let honest = TestAgent::start(&server.url, &[&share], |_| {}).await;
    honest.wait_synced().await;
    wait_for_sources(&server, hash, 1).await;
    let accuser = TestPeer::join(&server.url, "accuser").await;
    let report = TransferReport {
        hash,
        size: bytes.len() as u64,
        sources: vec![SourceOutcome {
            peer: honest.handle.peer_id,
            kind: OutcomeKind::BadData,
            bytes: 0,
            piece: Some(0),
            rate: None,
            detail: "trust me".into(),
        }],
    };
    // However often it says so, one reporter is one voice.
    for _ in 0..5 {
        let answer = accuser
            .client
            .report_transfer(&accuser.identity, &report)
            .await
            .unwrap();
        assert_eq!(answer.recorded, 1);
    }
    // Linked to an account now, the same key is still the same voice.
    sign_up(&server, "accuser", &accuser.identity).await;
    let answer = accuser
        .client
        .report_transfer(&accuser.identity, &report)
        .await
        .unwrap();
    assert_eq!(answer.recorded, 1);
    // A report not signed by the session's key is refused.
    let other = peerdex_client::Identity::generate().unwrap();
    assert!(
        accuser
            .client
            .report_transfer(&other, &report)
            .await
            .is_err()
    );
    // A report about a peer that does not list the content is ignored.
    let mut stranger = report.clone();
    stranger.sources[0].peer = other.peer_id();
    let answer = accuser
        .client
        .report_transfer(&accuser.identity, &stranger)
        .await
        .unwrap();
    assert_eq!((answer.recorded, answer.ignored), (0, 1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let found = server.client().sources(&hash).await.unwrap();
    assert_eq!(found.sources.len(), 1, "still offered");
    assert!(operator_db(&server).quarantine_list().unwrap().is_empty());
    // A real download from it still works, and reports it verified.
    let me = downloader(&server, 1).await;
    let id = queue(&me, hash);
    wait_done(&me, id, Duration::from_secs(30)).await;
    me.stop().await;
    honest.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_wait_follows_the_agents_download_and_pause_resume_cancel_work() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(5 * P + 1, 76);
    let source = slow_agent_sharing(&server, dir.path(), "lecture.ogg", &bytes).await;
    let hash = content_hash(&bytes);
    let CliAgent {
        state,
        config: _,
        downloads,
        child: mut agent,
    } = CliAgent::start(dir.path(), &server.url);
    let run = |args: &[&str]| peerdex_in(dir.path(), &state, args);

    succeeded(run(&["get", "--server", &server.url, &hash.to_string()]));
    wait_for_written_pieces(&downloads.join("lecture.ogg.peerdex-state"), 1).await;
    let out = succeeded(run(&["transfers", "pause", "1"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused"));
    let out = run(&["transfers", "resume", "7"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no transfer 7"));
    let out = succeeded(run(&["transfers", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["downloads"][0]["state"], "paused", "{list}");
    // A paused transfer keeps its partial file.
    assert!(downloads.join("lecture.ogg.peerdex-part").exists());
    succeeded(run(&["transfers", "resume", "1"]));
    // `get --wait` of another copy would refuse the existing file: follow this one instead.
    let child = Command::new(BIN)
        .current_dir(dir.path())
        .arg("--state")
        .arg(&state)
        .arg("--config")
        .arg(state.join("none.toml"))
        // A relative folder is the command's, not the agent's.
        .args([
            "get",
            "--wait",
            "--json",
            "--server",
            &server.url,
            "--dir",
            "second",
        ])
        .arg(hash.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["queued"], true);
    assert_eq!(lines[1]["state"], "done", "{lines:?}");
    assert_eq!(
        std::fs::read(dir.path().join("second/lecture.ogg")).unwrap(),
        bytes
    );
    wait_until("the first to finish too", Duration::from_secs(60), || {
        let done = downloads.join("lecture.ogg").exists();
        async move { done.then_some(()).ok_or("not yet".to_string()) }
    })
    .await;
    // A finished one cannot be cancelled; a running one can, and its partial file goes.
    let out = run(&["transfers", "cancel", "1"]);
    assert!(!out.status.success());
    let again = dir.path().join("again");
    succeeded(run(&[
        "get",
        "--server",
        &server.url,
        "--dir",
        "again",
        &hash.to_string(),
    ]));
    wait_for_written_pieces(&again.join("lecture.ogg.peerdex-state"), 1).await;
    let out = succeeded(run(&["transfers", "cancel", "3"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled"));
    wait_until("the partial file to go", Duration::from_secs(30), || {
        let left = again.join("lecture.ogg.peerdex-part").exists()
            || again.join("lecture.ogg.peerdex-state").exists();
        async move { (!left).then_some(()).ok_or("still there".to_string()) }
    })
    .await;
    let out = succeeded(run(&["transfers", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cancelled = list["downloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == 3)
        .unwrap();
    assert_eq!(cancelled["state"], "cancelled", "{list}");
    assert!(!again.join("lecture.ogg").exists());
    agent.kill().unwrap();
    agent.wait().unwrap();
    source.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_still_downloading_serves_its_verified_pieces_to_a_third() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(10 * P + 5, 77);
    let hash = content_hash(&bytes);
    let share = dir.path().join("source");
    write_file(&share, "new release.flac", &bytes);
    // Slow enough that the download is still running many seconds later.
    let source = TestAgent::start(&server.url, &[&share], |c| {
        c.upload.max_rate = 400 << 10;
        c.upload.min_rate = 1;
    })
    .await;
    source.wait_synced().await;
    // A downloader whose downloads are shared (the default outside tests).
    let state = dir.path().join("partial-holder");
    let downloads = dir.path().join("holder downloads");
    let mut file = peerdex_agent::config::ConfigFile::default();
    file.download.dir = Some(downloads.clone());
    file.download.share = Some(true);
    file.download.retry_max_secs = Some(1);
    let config = peerdex_agent::AgentConfig::from_parts(
        server.url.clone(),
        Some("early-bird".into()),
        Some("127.0.0.1:0".parse().unwrap()),
        state,
        &[],
        &file,
    )
    .unwrap();
    let holder = TestAgent::start_with(config).await;
    holder.wait_synced().await;
    let id = queue(&holder, hash);
    wait_for_written_pieces(&downloads.join("new release.flac.peerdex-state"), 2).await;
    // The index lists it as a partial source, with the pieces it holds.
    let client = server.client();
    let partial = wait_until("the partial source", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            let found = client.sources(&hash).await.map_err(|e| e.to_string())?;
            match found.partial_sources.first() {
                Some(p) if p.pieces.held() >= 2 => Ok(p.clone()),
                _ => Err(format!("{:?}", found.partial_sources)),
            }
        }
    })
    .await;
    assert_eq!(partial.source.nickname, "early-bird");
    assert_eq!(partial.size, bytes.len() as u64);
    // The only full source goes away; the holder's download waits.
    let (mut source_config, guard) = source.stop().await;
    wait_for_view(&holder, id, "the holder to wait", |v| {
        v.status == TransferState::Waiting
    })
    .await;
    let held =
        peerdex_download::part::PartState::load(&downloads.join("new release.flac.peerdex-state"))
            .unwrap()
            .unwrap();
    // A third peer gets every piece the holder has, verified, and nothing else.
    let out = dir.path().join("third");
    let failed = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap_err();
    assert_eq!(failed.exit_code(), 4, "{failed}");
    let got = peerdex_download::part::PartState::load(&out.join("new release.flac.peerdex-state"))
        .unwrap()
        .unwrap();
    assert_eq!(
        got.done, held.done,
        "the third peer has exactly the holder's pieces"
    );
    assert!(got.done_count() >= 2);
    // The source returns (at full speed now): everyone completes.
    source_config.upload.max_rate = 0;
    let source = TestAgent::start_with(source_config).await;
    wait_done(&holder, id, Duration::from_secs(60)).await;
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert!(report.pieces_reused >= 2, "{report:?}");
    assert_eq!(std::fs::read(out.join("new release.flac")).unwrap(), bytes);
    source.stop().await;
    drop(guard);
    holder.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reporter_whose_accusations_others_contradict_loses_its_weight() {
    let server = TestServer::start().await;
    let honest = TestPeer::join(&server.url, "honest").await;
    let contents: Vec<_> = ["x", "y", "z"]
        .iter()
        .map(|n| entry(&format!("{n}.bin"), 100, n))
        .collect();
    honest.client.upload_full(1, &contents).await.unwrap();
    let hashes: Vec<FileHash> = contents.iter().map(|e| e.hash).collect();
    let outcome = |hash: FileHash, kind: OutcomeKind| TransferReport {
        hash,
        size: 100,
        sources: vec![SourceOutcome {
            peer: honest.identity.peer_id(),
            kind,
            bytes: if kind == OutcomeKind::Verified {
                100
            } else {
                0
            },
            piece: None,
            rate: None,
            detail: String::new(),
        }],
    };
    let say = |peer: &TestPeer, report: TransferReport| {
        let (client, identity) = (peer.client.clone(), peer.identity.clone());
        async move { client.report_transfer(&identity, &report).await.unwrap() }
    };
    let slanderer = TestPeer::join(&server.url, "slanderer").await;
    let witnesses = [
        TestPeer::join(&server.url, "w1").await,
        TestPeer::join(&server.url, "w2").await,
    ];
    // Twice the slanderer says bad data where two others downloaded the same, verified.
    for &hash in &hashes[..2] {
        say(&slanderer, outcome(hash, OutcomeKind::BadData)).await;
        for witness in &witnesses {
            say(witness, outcome(hash, OutcomeKind::Verified)).await;
        }
    }
    // Now it and one other accuse the honest peer about a third content: with its word
    // discounted, one voice is not enough.
    let other = TestPeer::join(&server.url, "other").await;
    say(&slanderer, outcome(hashes[2], OutcomeKind::BadData)).await;
    say(&other, outcome(hashes[2], OutcomeKind::BadData)).await;
    assert!(operator_db(&server).quarantine_list().unwrap().is_empty());
    // A second credible voice is.
    let another = TestPeer::join(&server.url, "another").await;
    say(&another, outcome(hashes[2], OutcomeKind::BadData)).await;
    let quarantined = operator_db(&server).quarantine_list().unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].hash, Some(hashes[2]));
    assert_eq!(quarantined[0].reporters, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_already_there_is_done_if_it_is_the_content_and_refused_if_not() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    let bytes = pseudo_random(P + 9, 78);
    let hash = content_hash(&bytes);
    write_file(&share, "there.bin", &bytes);
    let source = TestAgent::start(&server.url, &[&share], |_| {}).await;
    source.wait_synced().await;
    wait_for_sources(&server, hash, 1).await;
    let me = downloader(&server, 1).await;
    // The content is already where it goes (a run finished just before a crash recorded it).
    write_file(&me.config.download_dir, "there.bin", &bytes);
    let id = queue(&me, hash);
    let done = wait_done(&me, id, Duration::from_secs(30)).await;
    assert_eq!(
        done.row.path,
        Some(me.config.download_dir.join("there.bin"))
    );
    // Other bytes under that name are never replaced without `force`.
    write_file(&me.config.download_dir, "there.bin", b"something else");
    let id = queue(&me, hash);
    let failed = wait_for_view(&me, id, "the transfer to fail", |v| {
        v.row.state == Stored::Failed
    })
    .await;
    assert!(
        failed.row.reason.contains("already exists"),
        "{}",
        failed.row.reason
    );
    assert_eq!(failed.row.error_code, Some(1));
    assert!(failed.waits_for.unwrap().contains("your side"));
    me.stop().await;
    source.stop().await;
}
