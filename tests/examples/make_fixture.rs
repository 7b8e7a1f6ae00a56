//! Writes the compatibility fixture of `tests/fixtures/v0`: an index server's data directory and
//! an agent's state directory as the binaries of the time left them, so that later versions can
//! prove they open them (`e2e::compat`). Run once per schema generation, never again for the same
//! one (the point is that the files come from the old code):
//!
//! `cargo run -p peerdex-tests --example make_fixture -- tests/fixtures/v0`
//!
//! The shared files themselves are not stored: they are pseudo-random bytes the test writes again
//! (`peerdex_tests::compat_share`), with the same modification times.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use peerdex_client::Identity;
use peerdex_tests::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let out = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: make_fixture DIR"));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let folder = tempfile::tempdir().unwrap();
    let share = folder.path().join(COMPAT_SHARE);
    compat_share(&share);

    let server = TestServer::start_in(&out.join("server"), |_| {}).await;
    // An agent with its own list, and a bare peer with a list of version 7.
    let mut config = agent_config(&server.url, &out.join("agent-state"), &[share.as_path()]);
    config.nick = Some("fixture".into());
    let agent = TestAgent::start_with(config).await;
    agent.wait_synced().await;
    let raw = Identity::load_or_create(&out.join("raw-peer.key")).unwrap();
    let mut peer = TestPeer::with_identity(&server.url, "Ｆｕｌｌ", 0, raw);
    peer.register().await;
    peer.client
        .upload_full(
            7,
            &[
                entry("Queen/Bohemian Rhapsody.mp3", 4_000_000, "bohemian"),
                entry("Queen/Innuendo.mp3", 3_000_000, "innuendo"),
            ],
        )
        .await
        .unwrap();
    // Before NFKC case folding, `full` and `Ｆｕｌｌ` were two names: the later one is kept as a
    // second nickname row, which the migration must resolve.
    let other = Identity::load_or_create(&out.join("other-peer.key")).unwrap();
    let mut late = TestPeer::with_identity(&server.url, "full", 0, other);
    late.register().await;
    server.wait_for_hits("bohemian", 1).await;
    wait_until("the agent's files", Duration::from_secs(10), || async {
        let n = server.search("fixture").await.hits.len();
        (n == 3).then_some(()).ok_or(n.to_string())
    })
    .await;
    agent.stop().await;
    server.stop().await;
    for db in [
        out.join("server/peerdex.sqlite3"),
        out.join("agent-state/catalog.sqlite3"),
    ] {
        checkpoint(&db);
    }
    let _ = std::fs::remove_dir_all(out.join("agent-state/downloads"));
    println!("fixture written to {}", out.display());
}

/// Folds the WAL into the database file, so the fixture is one file per database.
fn checkpoint(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    conn.pragma_update(None, "journal_mode", "DELETE").unwrap();
    drop(conn);
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(side);
    }
}
