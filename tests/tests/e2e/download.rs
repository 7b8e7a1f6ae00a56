//! Downloads from real agents on loopback: exact bytes, several sources, failing and lying
//! sources, resume, and hostile names.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use peerdex_download::{
    Destination, DownloadError, DownloadOptions, DownloadProgress, DownloadRequest, download,
};
use peerdex_shared::pieces::PIECE_SIZE;
use peerdex_tests::*;
use tokio_util::sync::CancellationToken;

const P: usize = PIECE_SIZE as usize;

/// Starts one agent per folder, each sharing `files` (name, bytes) in it.
async fn agents_sharing(
    server: &TestServer,
    root: &Path,
    count: usize,
    files: &[(&str, &[u8])],
    tweak: impl Fn(usize, &mut peerdex_agent::AgentConfig),
) -> Vec<TestAgent> {
    let mut agents = Vec::new();
    for i in 0..count {
        let share = root.join(format!("share{i}"));
        for (name, bytes) in files {
            write_file(&share, name, bytes);
        }
        let agent = TestAgent::start(&server.url, &[&share], |c| tweak(i, c)).await;
        agent.wait_synced().await;
        agents.push(agent);
    }
    agents
}

/// Starts downloading `hash` into `out` in the background; returns the task and its progress.
fn start_download(
    server: &TestServer,
    hash: peerdex_shared::FileHash,
    out: &Path,
    options: DownloadOptions,
    cancel: CancellationToken,
) -> (
    tokio::task::JoinHandle<Result<peerdex_download::DownloadReport, DownloadError>>,
    Arc<DownloadProgress>,
) {
    let progress = Arc::new(DownloadProgress::default());
    let (client, out, shown) = (server.client(), out.to_owned(), progress.clone());
    let task = tokio::spawn(async move {
        download(
            Arc::new(client),
            &DownloadRequest {
                hash,
                name: None,
                destination: Destination::Dir(out),
            },
            &options,
            shown,
            cancel,
        )
        .await
    });
    (task, progress)
}

/// Waits until at least `bytes` of the download are verified.
async fn wait_for_verified(progress: &DownloadProgress, bytes: u64) {
    wait_until("part of the file", Duration::from_secs(30), || async {
        let done = progress.verified.load(std::sync::atomic::Ordering::Relaxed);
        if done >= bytes {
            Ok(())
        } else {
            Err(format!("{done} bytes"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_match_the_source_byte_for_byte() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sizes = [0, 1, P - 1, P, P + 1, 2 * P - 1, 2 * P + 1, 5 * P + 3];
    let contents: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .map(|&len| {
            (
                format!("file-{len}.bin"),
                pseudo_random(len, len as u64 + 3),
            )
        })
        .collect();
    let files: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let agents = agents_sharing(&server, dir.path(), 1, &files, |_, _| {}).await;
    let out = dir.path().join("out");
    for (name, bytes) in &contents {
        let hash = content_hash(bytes);
        let report = download_into(&server.url, hash, &out, |_| {})
            .await
            .unwrap();
        assert_eq!(report.size, bytes.len() as u64);
        assert_eq!(report.path.as_deref(), Some(out.join(name).as_path()));
        assert_eq!(&std::fs::read(out.join(name)).unwrap(), bytes, "{name}");
        assert_eq!(report.pieces_reused, 0);
    }
    // Nothing but the finished files is left behind.
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("peerdex"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    // An existing file is not overwritten without force.
    let (name, bytes) = &contents[1];
    let again = download_into(&server.url, content_hash(bytes), &out, |_| {}).await;
    assert!(matches!(again, Err(DownloadError::Exists(_))), "{again:?}");
    std::fs::write(out.join(name), b"something else").unwrap();
    download_into(&server.url, content_hash(bytes), &out, |o| o.force = true)
        .await
        .unwrap();
    assert_eq!(&std::fs::read(out.join(name)).unwrap(), bytes);
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_sources_share_the_work() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(12 * P + 77, 11);
    let agents = agents_sharing(&server, dir.path(), 3, &[("movie.mkv", &bytes)], |_, _| {}).await;
    let hash = content_hash(&bytes);
    wait_for_sources(&server, hash, 3).await;
    let report = download_into(&server.url, hash, &dir.path().join("out"), |o| {
        o.max_sources = 3
    })
    .await
    .unwrap();
    assert!(report.sources_used.len() >= 2, "{:?}", report.sources_used);
    assert_eq!(
        std::fs::read(dir.path().join("out/movie.mkv")).unwrap(),
        bytes
    );
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_vanishes_mid_transfer_is_dropped() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(16 * P, 12);
    // Both sources send at 2 MiB/s, so the transfer is still running when one goes away.
    let mut agents = agents_sharing(&server, dir.path(), 2, &[("album.zip", &bytes)], |_, c| {
        c.upload.max_rate = 2 << 20;
        c.upload.min_rate = 1;
    })
    .await;
    let hash = content_hash(&bytes);
    wait_for_sources(&server, hash, 2).await;
    let out = dir.path().join("out");
    let options = DownloadOptions {
        stall_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let (running, progress) =
        start_download(&server, hash, &out, options, CancellationToken::new());
    wait_for_verified(&progress, 4 * PIECE_SIZE).await;
    agents.remove(0).stop().await;
    let report = running.await.unwrap().unwrap();
    assert_eq!(std::fs::read(out.join("album.zip")).unwrap(), bytes);
    assert_eq!(
        report.sources_dropped.len(),
        1,
        "{:?}",
        report.sources_dropped
    );
    for agent in agents {
        agent.stop().await;
    }
}

/// Corrupts the shared file of `agent` without changing its size, mtime or inode, so the agent
/// serves wrong bytes as if they were its content: a lying peer.
pub(crate) fn corrupt_in_place(path: &Path, offset: u64) {
    let modified = std::fs::metadata(path).unwrap().modified().unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut byte = [0u8; 1];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut byte, offset)
        .unwrap();
    file.write_all_at(&[byte[0] ^ 0x01], offset).unwrap();
    file.set_modified(modified).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_sending_wrong_bytes_is_named_and_the_file_is_still_right() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(8 * P + 5, 13);
    let agents = agents_sharing(&server, dir.path(), 2, &[("disk.iso", &bytes)], |_, _| {}).await;
    let hash = content_hash(&bytes);
    wait_for_sources(&server, hash, 2).await;
    // The first agent now sends a flipped bit in every piece.
    let liar = dir.path().join("share0/disk.iso");
    for piece in 0..9 {
        corrupt_in_place(&liar, piece * PIECE_SIZE + 1);
    }
    let liar_label = agents[0].url.trim_start_matches("https://").to_owned();
    let report = download_into(&server.url, hash, &dir.path().join("out"), |o| {
        o.max_sources = 2
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("out/disk.iso")).unwrap(),
        bytes
    );
    let named = report
        .sources_dropped
        .iter()
        .any(|(source, why)| source.contains(&liar_label) && why.contains("does not match"));
    assert!(named, "{:?}", report.sources_dropped);

    // When every source lies, the download fails as a verification failure.
    corrupt_in_place(&dir.path().join("share1/disk.iso"), 7);
    for piece in 1..9 {
        corrupt_in_place(&dir.path().join("share1/disk.iso"), piece * PIECE_SIZE + 3);
    }
    let failed = download_into(&server.url, hash, &dir.path().join("out2"), |_| {}).await;
    let error = failed.unwrap_err();
    assert_eq!(error.exit_code(), 5, "{error}");
    assert!(
        !dir.path().join("out2/disk.iso").exists(),
        "nothing unverified gets the name"
    );
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_resumes_with_only_the_missing_pieces() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(12 * P + 9, 14);
    let agents = agents_sharing(&server, dir.path(), 1, &[("talk.mp4", &bytes)], |_, c| {
        c.upload.max_rate = 3 << 20;
        c.upload.min_rate = 1;
    })
    .await;
    let hash = content_hash(&bytes);
    let out = dir.path().join("out");
    let cancel = CancellationToken::new();
    let (running, progress) = start_download(
        &server,
        hash,
        &out,
        DownloadOptions::default(),
        cancel.clone(),
    );
    wait_for_verified(&progress, 4 * PIECE_SIZE).await;
    cancel.cancel();
    let interrupted = running.await.unwrap();
    assert!(
        matches!(interrupted, Err(DownloadError::Interrupted)),
        "{interrupted:?}"
    );
    assert_eq!(interrupted.unwrap_err().exit_code(), 130);
    assert!(!out.join("talk.mp4").exists());
    let part = out.join("talk.mp4.peerdex-part");
    assert!(part.exists() && out.join("talk.mp4.peerdex-state").exists());

    // Damage one finished piece on disk: the resume must notice and fetch it again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&part)
        .unwrap()
        .write_all_at(b"garbage", 10)
        .unwrap();
    let report = download_into(&server.url, hash, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(out.join("talk.mp4")).unwrap(), bytes);
    assert!(report.pieces_reused >= 3, "{report:?}");
    assert_eq!(
        report.pieces_reused + report.pieces_fetched,
        13,
        "{report:?}"
    );
    assert!(!part.exists() && !out.join("talk.mp4.peerdex-state").exists());
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_from_peers_cannot_leave_the_output_folder() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "..sneaky.mp3", b"sneaky");
    write_file(&share, "CON.txt", b"device name");
    let agent = TestAgent::start(&server.url, &[&share], |c| {
        let config = peerdex_agent::config::ShareConfig {
            path: c.shares[0].root.clone(),
            name: None,
            exclude: vec![],
            follow_symlinks: false,
            include_hidden: true,
            visibility: Default::default(),
            scopes: Vec::new(),
        };
        c.shares[0].rules = peerdex_agent::config::ShareRules::new(&config).unwrap();
    })
    .await;
    agent.wait_synced().await;
    let out = dir.path().join("nest/out");
    download_into(&server.url, content_hash(b"sneaky"), &out, |_| {})
        .await
        .unwrap();
    download_into(&server.url, content_hash(b"device name"), &out, |_| {})
        .await
        .unwrap();
    // A name given by a search row (a lying server) is sanitized the same way.
    let options = DownloadOptions::default();
    download(
        Arc::new(server.client()),
        &DownloadRequest {
            hash: content_hash(b"sneaky"),
            name: Some("../../escaped.mp3".into()),
            destination: Destination::Dir(out.clone()),
        },
        &options,
        Arc::new(DownloadProgress::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["_CON.txt", "_sneaky.mp3", "escaped.mp3"]);
    assert!(!dir.path().join("escaped.mp3").exists());
    assert!(!dir.path().join("nest/escaped.mp3").exists());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_stalls_is_dropped_and_the_others_finish() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(6 * P + 1, 15);
    // The honest source is slow enough (1 MiB/s) for the stall to be noticed before the end.
    let agents = agents_sharing(&server, dir.path(), 1, &[("slow.bin", &bytes)], |_, c| {
        c.upload.max_rate = 1 << 20;
        c.upload.min_rate = 1;
    })
    .await;
    let hash = content_hash(&bytes);
    // A peer with a verified address that never answers a download, listing the same content.
    let peer = TestPeer::join_stalling(&server.url, "staller").await;
    let mut listed = entry("x/slow.bin", bytes.len() as u64, "unused");
    listed.hash = hash;
    peer.client.upload_full(1, &[listed]).await.unwrap();
    wait_for_sources(&server, hash, 2).await;

    let report = download_into(&server.url, hash, &dir.path().join("out"), |o| {
        o.max_sources = 2;
        o.stall_timeout = Duration::from_secs(2);
    })
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("out/slow.bin")).unwrap(),
        bytes
    );
    assert_eq!(report.sources_used.len(), 1, "{report:?}");
    let dropped = report
        .sources_dropped
        .iter()
        .any(|(source, why)| source.starts_with("staller") && why.contains("stalled"));
    assert!(dropped, "{:?}", report.sources_dropped);
    for agent in agents {
        agent.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_the_partial_download_for_resuming() {
    let Some(disk) = SmallDisk::mount(4 << 20) else {
        eprintln!("cannot mount a small filesystem here (needs root); disk-full test not run");
        return;
    };
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(3 * P, 36);
    let agents = agents_sharing(&server, dir.path(), 1, &[("big.bin", &bytes)], |_, _| {}).await;
    let hash = content_hash(&bytes);
    // Leave less room than the file needs.
    let filler = disk.path.join("filler");
    std::fs::write(&filler, vec![0u8; 2 << 20]).unwrap();
    let failed = download_into(&server.url, hash, &disk.path, |_| {}).await;
    let error = failed.unwrap_err();
    assert_eq!(error.exit_code(), 6, "{error}");
    assert!(error.to_string().contains("disk full"), "{error}");
    assert!(
        !disk.path.join("big.bin").exists(),
        "nothing unverified gets the name"
    );
    assert!(
        disk.path.join("big.bin.peerdex-part").exists(),
        "the partial download is kept"
    );
    // Space comes back: the same download resumes and completes.
    std::fs::remove_file(&filler).unwrap();
    let report = download_into(&server.url, hash, &disk.path, |_| {})
        .await
        .unwrap();
    assert_eq!(std::fs::read(disk.path.join("big.bin")).unwrap(), bytes);
    assert!(
        report.pieces_reused + report.pieces_fetched == 3,
        "{report:?}"
    );
    for agent in agents {
        agent.stop().await;
    }
}
