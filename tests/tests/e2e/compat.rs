//! Data directories from older versions open with the current code (issue 16): the checked-in
//! fixture of `tests/fixtures/v0` was written by the binaries of before schema versions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use peerdex_client::{Identity, ServerClient};
use peerdex_shared::api::ErrorCode;
use peerdex_tests::*;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/v0")
}

/// Copies a folder tree (the fixture is never opened in place).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn user_version(path: &Path) -> u32 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_from_before_schema_versions_opens_with_every_answer_intact() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let database = dir.path().join("server/peerdex.sqlite3");
    assert_eq!(user_version(&database), 0);
    let server = TestServer::start_in(&dir.path().join("server"), |_| {}).await;
    assert_eq!(
        user_version(&database),
        peerdex_sqlite::latest(peerdex_server::schema::MIGRATIONS)
    );
    // The migration that rewrote nickname keys kept a copy of the file as it was.
    assert!(peerdex_sqlite::backup_path(&database, 2).exists());

    // The bare peer's list and version are as they were.
    let raw = Identity::load_or_create(&dir.path().join("raw-peer.key")).unwrap();
    let mut full = TestPeer::with_identity(&server.url, "Ｆｕｌｌ", 0, raw);
    let answer = full.register().await;
    assert_eq!((answer.list_version, answer.entries), (Some(7), 2));
    let found = server.wait_for_hits("queen", 2).await;
    let mut queen = names(&found);
    queen.sort();
    assert_eq!(queen, ["Bohemian Rhapsody.mp3", "Innuendo.mp3"]);
    // `full` and `Ｆｕｌｌ` are one name now: it stays with the peer that registered first.
    let other = Identity::load_or_create(&dir.path().join("other-peer.key")).unwrap();
    let err = ServerClient::new(&server.url)
        .unwrap()
        .register(&other, "full", 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NicknameTaken), "{err}");
    let page = server.client().browse("full", None, 10).await.unwrap();
    assert_eq!(page.nickname, "Ｆｕｌｌ");

    // The agent's list is there, at its version, before the agent comes back.
    let page = server.client().browse("fixture", None, 10).await.unwrap();
    assert_eq!((page.entries, page.files.len()), (3, 3));

    // The agent resumes on its old state, from the version both sides hold: its list is not
    // uploaded again. (The files are written again here, so their inodes are new and the agent
    // hashes them once more; whether a delta goes out meanwhile depends on timing.)
    let folder = tempfile::tempdir().unwrap();
    let share = folder.path().join(COMPAT_SHARE);
    compat_share(&share);
    let state = dir.path().join("agent-state");
    let mut config = agent_config(&server.url, &state, &[&share]);
    config.nick = Some("fixture".into());
    let agent = TestAgent::start_with(config).await;
    let status = agent.wait_synced().await;
    assert_eq!(status.server.full_uploads, 0, "{status:?}");
    assert!(status.server.list_version >= Some(1), "{status:?}");
    assert_eq!(
        user_version(&state.join(peerdex_agent::CATALOG_FILE)),
        peerdex_sqlite::latest(peerdex_agent::CATALOG_MIGRATIONS)
    );
    let found = server.wait_for_hits("fixture", 3).await;
    let mut names = names(&found);
    names.sort();
    assert_eq!(
        names,
        [
            "01 fixture opening.flac",
            "02 fixture closing.flac",
            "fixture readme.txt"
        ]
    );
    // The two-piece file still downloads from the agent, proven by its piece hashes.
    let opening = found
        .hits
        .iter()
        .find(|h| h.name.starts_with("01"))
        .unwrap()
        .hash;
    let out = dir.path().join("out");
    download_into(&server.url, opening, &out, |_| {})
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(out.join("01 fixture opening.flac")).unwrap(),
        pseudo_random(1_048_600, 61)
    );
    agent.stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(30), server.stop()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_from_a_newer_version_are_refused_and_left_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture(), dir.path());
    let database = dir.path().join("server/peerdex.sqlite3");
    let catalog = dir
        .path()
        .join("agent-state")
        .join(peerdex_agent::CATALOG_FILE);
    for file in [&database, &catalog] {
        rusqlite::Connection::open(file)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
    }
    let (server_before, catalog_before) = (
        std::fs::read(&database).unwrap(),
        std::fs::read(&catalog).unwrap(),
    );
    let config = test_config(&dir.path().join("server"));
    let Err(error) = peerdex_server::Server::bind(config).await else {
        panic!("a newer database was opened");
    };
    let said = format!("{error:#}");
    assert!(
        said.contains("schema version 99") && said.contains("newer peerdex"),
        "{said}"
    );
    assert_eq!(std::fs::read(&database).unwrap(), server_before);

    let config = agent_config("http://127.0.0.1:9", &dir.path().join("agent-state"), &[]);
    let error = peerdex_agent::start(config).await.unwrap_err();
    let said = format!("{error:#}");
    assert!(said.contains("schema version 99"), "{said}");
    assert_eq!(std::fs::read(&catalog).unwrap(), catalog_before);
}
