//! Accounts and visibility scopes (issue 17): who may see and download what, on every path the
//! index speaks (search hits and totals, browse, sources, tickets) and at the agent itself
//! (grants), plus invites, sign-in limits, revocable tokens and disabled accounts.

use std::path::Path;
use std::time::Duration;

use peerdex_client::{Identity, ServerClient};
use peerdex_shared::api::{CreateAccountRequest, ErrorCode, Role};
use peerdex_shared::peer::{blob_path, header};
use peerdex_tests::*;

fn code(error: &peerdex_client::server_api::ApiError) -> Option<ErrorCode> {
    error.code()
}

/// A raw request to an agent's file server, with optional grant headers.
async fn fetch(
    agent: &TestAgent,
    hash: &peerdex_shared::FileHash,
    headers: &[(&str, String)],
) -> u16 {
    let mut request = agent
        .http()
        .get(format!("{}{}", agent.url, blob_path(hash)));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap().status().as_u16()
}

fn grant_headers(
    grant: &peerdex_shared::api::Grant,
    holder: &Identity,
) -> Vec<(&'static str, String)> {
    let proof = holder.sign(&peerdex_shared::identity::grant_use_message(
        &grant.signature,
    ));
    vec![
        (header::GRANT, grant.header_value()),
        (header::GRANT_PROOF, proof.to_string()),
    ]
}

struct Lab {
    server: TestServer,
    agent: TestAgent,
    admin: ServerClient,
    bob: ServerClient,
    bob_key: Identity,
    carol: ServerClient,
    carol_key: Identity,
    secret: peerdex_shared::FileHash,
    _dir: tempfile::TempDir,
}

/// Alice shares `lab/` with `visibility` and `open/` publicly; bob is in group `lab`, carol is
/// not; admin is an admin.
async fn lab(visibility: &str) -> Lab {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (lab_dir, open_dir) = (dir.path().join("lab"), dir.path().join("open"));
    let secret_bytes = pseudo_random(300_000, 17);
    write_file(&lab_dir, "results/quasarzeta run.bin", &secret_bytes);
    write_file(&open_dir, "quasarzeta poster.txt", b"public poster");

    let admin = sign_up(&server, "admin", &Identity::generate().unwrap()).await;
    operator_db(&server)
        .set_role("operator", "admin", Role::Admin)
        .unwrap();
    let state = dir.path().join("alice-state");
    std::fs::create_dir_all(&state).unwrap();
    let alice_key = Identity::load_or_create(&state.join(peerdex_agent::KEY_FILE)).unwrap();
    sign_up(&server, "alice", &alice_key).await;
    let (bob_key, carol_key) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let bob = sign_up(&server, "bob", &bob_key).await;
    let carol = sign_up(&server, "carol", &carol_key).await;
    let db = operator_db(&server);
    db.create_group("operator", "lab").unwrap();
    db.set_member("operator", "lab", "bob", true).unwrap();

    let mut config = agent_config(&server.url, &state, &[&lab_dir, &open_dir]);
    let visibility: peerdex_shared::scope::Visibility = visibility.parse().unwrap();
    config.shares[0].rules =
        peerdex_agent::config::ShareRules::new(&peerdex_agent::config::ShareConfig {
            visibility,
            ..peerdex_agent::config::ShareConfig::new(lab_dir.clone())
        })
        .unwrap();
    let agent = TestAgent::start_with(config).await;
    agent.wait_synced().await;
    server.wait_for_hits("poster", 1).await;
    Lab {
        server,
        agent,
        admin,
        bob,
        bob_key,
        carol,
        carol_key,
        secret: content_hash(&secret_bytes),
        _dir: dir,
    }
}

/// Waits until the agent's control channel to the server is closed.
async fn wait_for_closed_control_channel(agent: &TestAgent, within: Duration) {
    wait_until("the control channel to close", within, || {
        let open = agent.status().server.control_channel;
        async move {
            if open {
                Err("open".to_string())
            } else {
                Ok(())
            }
        }
    })
    .await
}

async fn search(client: &ServerClient, q: &str) -> peerdex_shared::api::SearchResponse {
    client
        .search(&peerdex_client::server_api::SearchQuery {
            q: q.into(),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_share_does_not_exist_for_outsiders_and_is_served_to_members_only_with_a_grant() {
    let lab = lab("group:lab").await;
    let guest = lab.server.client();
    // Outsiders: the word only in the group's files finds the public poster alone, and the
    // total counts it alone.
    for outsider in [&lab.carol, &guest] {
        let found = search(outsider, "quasarzeta").await;
        assert_eq!(names(&found), ["quasarzeta poster.txt"], "{found:?}");
        assert_eq!(found.total, 1);
        let found = search(outsider, "run").await;
        assert_eq!((found.hits.len(), found.total), (0, 0), "{found:?}");
        let error = outsider.sources(&lab.secret).await.unwrap_err();
        assert_eq!(code(&error), Some(ErrorCode::NotFound), "{error}");
        let page = outsider
            .browse(&lab.agent.status().nick, None, 100)
            .await
            .unwrap();
        assert_eq!(page.files.len(), 1, "{:?}", page.files);
        assert_eq!(page.entries, 1, "browse must not count hidden files");
    }
    // The member sees both, with a grant made out to his device.
    let found = search(&lab.bob, "quasarzeta").await;
    assert_eq!(found.total, 2, "{found:?}");
    let sources = lab.bob.sources(&lab.secret).await.unwrap();
    let grant = sources.sources[0]
        .grant
        .clone()
        .expect("a grant for a group file");
    assert_eq!(grant.downloader, lab.bob_key.peer_id());
    assert_eq!(grant.hash, lab.secret);

    // The agent: no grant, another hash, another downloader, a forged or an expired grant: 404.
    let url = &lab.agent;
    assert_eq!(fetch(url, &lab.secret, &[]).await, 404);
    assert_eq!(
        fetch(url, &lab.secret, &grant_headers(&grant, &lab.bob_key)).await,
        200
    );
    let other = content_hash(b"public poster");
    assert_eq!(
        fetch(url, &other, &[]).await,
        200,
        "public files need no grant"
    );
    assert_eq!(
        fetch(url, &lab.secret, &grant_headers(&grant, &lab.carol_key)).await,
        404
    );
    let key = peerdex_server::transfers::ServerKey::load_or_create(&lab.server.data).unwrap();
    let forger =
        peerdex_server::transfers::ServerKey::load_or_create(tempfile::tempdir().unwrap().path())
            .unwrap();
    let source = grant.source;
    let forged = forger.grant(source, lab.bob_key.peer_id(), lab.secret, grant.expires_at);
    assert_eq!(
        fetch(url, &lab.secret, &grant_headers(&forged, &lab.bob_key)).await,
        404
    );
    let expired = key.grant(source, lab.bob_key.peer_id(), lab.secret, 1_000);
    assert_eq!(
        fetch(url, &lab.secret, &grant_headers(&expired, &lab.bob_key)).await,
        404
    );
    let for_carol = key.grant(
        source,
        lab.carol_key.peer_id(),
        lab.secret,
        grant.expires_at,
    );
    assert_eq!(
        fetch(url, &lab.secret, &grant_headers(&for_carol, &lab.bob_key)).await,
        404
    );
    let for_other_hash = key.grant(source, lab.bob_key.peer_id(), other, grant.expires_at);
    let moved = grant_headers(&for_other_hash, &lab.bob_key);
    assert_eq!(fetch(url, &lab.secret, &moved).await, 404);

    // A reverse connection or relay for it is refused to the outsider like a missing file.
    let transfer = peerdex_shared::api::TransferRequest {
        source,
        hash: lab.secret,
        downloader: lab.carol_key.peer_id(),
        port: 9,
        token: "t0k".into(),
        transport: peerdex_shared::api::PeerTransport::Tls,
    };
    let error = lab.carol.transfer(&transfer).await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::NotFound), "{error}");

    // The member downloads it through the engine, which sends the grant.
    let out = tempfile::tempdir().unwrap();
    let report = peerdex_download::download(
        std::sync::Arc::new(lab.bob.clone()),
        &peerdex_download::DownloadRequest {
            hash: lab.secret,
            name: None,
            destination: peerdex_download::Destination::Dir(out.path().to_owned()),
        },
        &peerdex_download::DownloadOptions {
            identity: Some(lab.bob_key.clone()),
            stall_timeout: Duration::from_secs(5),
            ..Default::default()
        },
        std::sync::Arc::new(peerdex_download::DownloadProgress::default()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        content_hash(&std::fs::read(report.path.unwrap()).unwrap()),
        lab.secret
    );

    // Removed from the group, he stops seeing it at his next request.
    let url = format!("{}/api/v1/admin/groups/lab/members/bob", lab.server.url);
    let removed = peerdex_tests::http()
        .delete(url)
        .bearer_auth(lab.admin.account_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status().as_u16(), 204);
    let found = search(&lab.bob, "quasarzeta").await;
    assert_eq!(found.total, 1, "{found:?}");
    let error = lab.bob.sources(&lab.secret).await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::NotFound));
    // And the audit log says who did it.
    let audit = operator_db(&lab.server).audit_log(10).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "admin" && a.action == "group.remove" && a.target == "lab: bob"),
        "{audit:?}"
    );
    lab.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_files_are_listed_to_all_but_downloadable_by_their_scope_only() {
    let lab = lab("locked:group:lab").await;
    let found = search(&lab.carol, "run").await;
    assert_eq!(found.total, 1, "{found:?}");
    assert!(found.hits[0].locked, "{found:?}");
    assert!(found.hits[0].sources.is_empty());
    assert_eq!(found.hits[0].sources_online, 0);
    let error = lab.carol.sources(&lab.secret).await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::NotFound));
    let found = search(&lab.bob, "run").await;
    assert!(!found.hits[0].locked);
    assert_eq!(found.hits[0].sources.len(), 1);
    lab.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_files_are_for_the_sharers_own_account_only() {
    let lab = lab("hidden").await;
    for other in [&lab.bob, &lab.carol, &lab.admin] {
        assert_eq!(search(other, "run").await.total, 0);
    }
    // Alice's other device (a new key linked to her account) sees it.
    let mut laptop = lab.server.client();
    laptop
        .login("alice", "alice password", &Identity::generate().unwrap())
        .await
        .unwrap();
    assert_eq!(search(&laptop, "run").await.total, 1);
    lab.agent.stop().await;
}

fn with_invites(config: &mut peerdex_server::config::Config) {
    config.accounts.registration = peerdex_server::config::Registration::Invite;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_used_up_expired_or_on_a_closed_server_are_refused() {
    let server = TestServer::start_with(with_invites).await;
    let db = operator_db(&server);
    db.create_group("operator", "family").unwrap();
    let invite = peerdex_server::http::accounts::make_invite(
        &db,
        "operator",
        1,
        None,
        vec!["family".into()],
    )
    .unwrap();
    let create = |name: &str, invite: Option<String>| {
        let client = server.client();
        let request = CreateAccountRequest {
            name: name.into(),
            password: "long enough".into(),
            invite,
        };
        async move { client.create_account(&request).await }
    };
    let error = create("nobody", None).await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::InviteRequired), "{error}");
    let made = create("dana", Some(invite.code.clone())).await.unwrap();
    assert_eq!(made.groups, ["family"], "the invite's group is joined");
    let error = create("erin", Some(invite.code.clone())).await.unwrap_err();
    assert_eq!(
        code(&error),
        Some(ErrorCode::InviteRequired),
        "used twice: {error}"
    );
    let expired =
        peerdex_server::http::accounts::make_invite(&db, "operator", 5, Some("1s"), vec![])
            .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let error = create("erin", Some(expired.code)).await.unwrap_err();
    assert_eq!(
        code(&error),
        Some(ErrorCode::InviteRequired),
        "expired: {error}"
    );
    let error = create("erin", Some("pdxi_made-up".into()))
        .await
        .unwrap_err();
    assert_eq!(
        code(&error),
        Some(ErrorCode::InviteRequired),
        "unknown: {error}"
    );
    let good =
        peerdex_server::http::accounts::make_invite(&db, "operator", 5, None, vec![]).unwrap();
    let data = server.data.clone();
    drop(db);
    let dir = server.stop().await;
    let closed = TestServer::start_in(&data, |c| {
        c.accounts.registration = peerdex_server::config::Registration::Closed;
    })
    .await;
    let error = closed
        .client()
        .create_account(&CreateAccountRequest {
            name: "erin".into(),
            password: "long enough".into(),
            invite: Some(good.code),
        })
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::RegistrationClosed), "{error}");
    closed.stop().await;
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_limited_and_tokens_are_revocable_and_passwords_never_stored() {
    let server = TestServer::start().await;
    let key = Identity::generate().unwrap();
    let client = sign_up(&server, "frank", &key).await;
    assert_eq!(client.whoami().await.unwrap().devices, [key.peer_id()]);
    for _ in 0..5 {
        let error = server
            .client()
            .login("frank", "wrong password", &key)
            .await
            .unwrap_err();
        assert_eq!(code(&error), Some(ErrorCode::Unauthorized), "{error}");
    }
    // Locked out now, even with the right password; Retry-After says for how long.
    let response = peerdex_tests::http()
        .post(format!("{}/api/v1/login", server.url))
        .json(&serde_json::json!({ "name": "frank", "password": "frank password" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert!(response.headers().get("retry-after").is_some());
    // Logging out revokes the token.
    client.account_logout().await.unwrap();
    let error = client.whoami().await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Unauthorized), "{error}");
    // The password is an Argon2id hash, and appears nowhere in the data directory.
    let phc = operator_db(&server)
        .account_by_name("frank")
        .unwrap()
        .unwrap()
        .pass_phc;
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    for entry in std::fs::read_dir(&server.data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(14).any(|w| w == b"frank password"),
                "{} holds the password",
                path.display()
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_account_is_offline_at_once_and_its_device_cannot_register() {
    let lab = lab("public").await;
    let nick = lab.agent.status().nick;
    assert_eq!(search(&lab.carol, "run").await.total, 1);
    let response = peerdex_tests::http()
        .post(format!("{}/api/v1/admin/accounts/alice", lab.server.url))
        .bearer_auth(lab.admin.account_token().unwrap())
        .json(&serde_json::json!({ "disabled": true, "reason": "spam" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    // Her files leave results at once (the server put her device offline).
    assert_eq!(search(&lab.carol, "run").await.total, 0);
    wait_for_closed_control_channel(&lab.agent, Duration::from_secs(5)).await;
    // Her key cannot register again.
    let alice_key =
        Identity::load_or_create(&lab.agent.config.state.join(peerdex_agent::KEY_FILE)).unwrap();
    let error = ServerClient::new(&lab.server.url)
        .unwrap()
        .register(&alice_key, &nick, 0)
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Forbidden), "{error}");
    assert_eq!(search(&lab.carol, "run").await.total, 0);
    let audit = operator_db(&lab.server).audit_log(5).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "account.disable" && a.reason == "spam"),
        "{audit:?}"
    );
    lab.agent.stop().await;
}

/// `peerdex account create`, `login`, `whoami`, `logout`, and the operator's `peerdex-server
/// admin` commands, as the README's "private communities" section runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_only_community_from_the_command_line() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let server_bin = Path::new(env!("CARGO_BIN_EXE_peerdex-server-under-test"));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[accounts]\nregistration = \"invite\"\nargon2_memory_kib = 64\nargon2_iterations = 1\n",
    )
    .unwrap();
    let admin = |args: &[&str]| {
        let out = Command::new(server_bin)
            .arg("--data")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .arg("admin")
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    admin(&["group", "create", "lab"]);
    let code = admin(&[
        "invite",
        "create",
        "--uses",
        "1",
        "--expires",
        "7d",
        "--group",
        "lab",
    ]);
    let code = code.trim().to_string();
    assert!(code.starts_with("pdxi_"), "{code}");
    let mut child = Command::new(server_bin)
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = first_line_after(&mut child, "listening on ");
    let state = dir.path().join("state");
    let none = dir.path().join("none.toml");
    let cli = |args: &[&str], stdin: &str| {
        let mut child = Command::new(crate::cli::BIN)
            .arg("--state")
            .arg(&state)
            .arg("--config")
            .arg(&none)
            .args(args)
            .env("PEERDEX_SERVER", &url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let refused = cli(
        &["account", "create", "gina", "--password-stdin"],
        "gina's secret\n",
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("invite"),
        "{refused:?}"
    );
    let made = cli(
        &[
            "account",
            "create",
            "gina",
            "--invite",
            &code,
            "--password-stdin",
        ],
        "gina's secret\n",
    );
    assert!(made.status.success(), "{made:?}");
    let login = cli(&["login", "gina", "--password-stdin"], "gina's secret\n");
    assert!(login.status.success(), "{login:?}");
    let who = cli(&["whoami", "--json"], "");
    assert!(who.status.success(), "{who:?}");
    let info: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(info["name"], "gina");
    assert_eq!(info["groups"], serde_json::json!(["lab"]));
    assert_eq!(info["devices"].as_array().unwrap().len(), 1);
    let listed = admin(&["group", "list"]);
    assert!(listed.contains("lab\tgina"), "{listed}");
    let out = cli(&["logout"], "");
    assert!(out.status.success(), "{out:?}");
    let who = cli(&["whoami"], "");
    assert!(!who.status.success(), "signed out: {who:?}");
    assert!(!state.join("account.json").exists());
    let audit = admin(&["audit"]);
    assert!(
        audit.contains("invite.create") && audit.contains("group.create"),
        "{audit}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

async fn admin_post(lab: &Lab, path: &str, body: serde_json::Value) -> reqwest::Response {
    peerdex_tests::http()
        .post(format!("{}{path}", lab.server.url))
        .bearer_auth(lab.admin.account_token().unwrap())
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_takes_effect_on_the_live_session_and_on_every_later_attempt_until_it_ends() {
    let lab = lab("public").await;
    let nick = lab.agent.status().nick;
    assert_eq!(search(&lab.carol, "run").await.total, 1);
    let response = admin_post(
        &lab,
        "/api/v1/admin/bans",
        serde_json::json!({ "kind": "account", "value": "alice", "duration": "3s", "reason": "flooding" }),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    // At once: her files are gone and her agent's control channel is closed.
    assert_eq!(search(&lab.carol, "run").await.total, 0);
    wait_for_closed_control_channel(&lab.agent, Duration::from_secs(2)).await;
    // Her key cannot register, nor can she sign in, while the ban lasts; the answer says why.
    let alice_key =
        Identity::load_or_create(&lab.agent.config.state.join(peerdex_agent::KEY_FILE)).unwrap();
    let error = ServerClient::new(&lab.server.url)
        .unwrap()
        .register(&alice_key, &nick, 0)
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Banned), "{error}");
    assert!(error.to_string().contains("flooding"), "{error}");
    let error = lab
        .server
        .client()
        .login("alice", "alice password", &alice_key)
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Banned), "{error}");
    // When it ends, her agent comes back by itself.
    lab.server
        .wait_for_hits_within("run", 1, Duration::from_secs(30))
        .await;
    let audit = operator_db(&lab.server).audit_log(10).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "admin" && a.action == "ban.add" && a.reason == "flooding"),
        "{audit:?}"
    );
    // A network ban refuses new registrations from it.
    let response = admin_post(
        &lab,
        "/api/v1/admin/bans",
        serde_json::json!({ "kind": "ip", "value": "127.0.0.0/8" }),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    let error = ServerClient::new(&lab.server.url)
        .unwrap()
        .register(&Identity::generate().unwrap(), "newcomer", 0)
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Banned), "{error}");
    // Members cannot ban.
    let response = peerdex_tests::http()
        .post(format!("{}/api/v1/admin/bans", lab.server.url))
        .bearer_auth(lab.carol.account_token().unwrap())
        .json(&serde_json::json!({ "kind": "account", "value": "bob" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    lab.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_down_content_is_offered_nowhere_now_or_when_listed_again() {
    let lab = lab("public").await;
    assert_eq!(search(&lab.carol, "run").await.total, 1);
    let response = admin_post(
        &lab,
        "/api/v1/admin/takedowns",
        serde_json::json!({ "hash": lab.secret.to_string(), "reason": "copyright" }),
    )
    .await;
    assert_eq!(response.status().as_u16(), 201);
    wait_until(
        "the takedown to reach the index",
        Duration::from_secs(10),
        || {
            let carol = lab.carol.clone();
            async move {
                let total = search(&carol, "run").await.total;
                if total == 0 {
                    Ok(())
                } else {
                    Err(format!("{total} hits"))
                }
            }
        },
    )
    .await;
    for viewer in [&lab.carol, &lab.bob, &lab.admin] {
        let error = viewer.sources(&lab.secret).await.unwrap_err();
        assert_eq!(code(&error), Some(ErrorCode::NotFound), "{error}");
    }
    // A new copy listed by someone else is taken down too.
    let peer = TestPeer::join(&lab.server.url, "reuploader").await;
    let mut entry = entry("again/quasarzeta run.bin", 300_000, "x");
    entry.hash = lab.secret;
    peer.client.upload_full(1, &[entry]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(search(&lab.carol, "run").await.total, 0);
    let audit = operator_db(&lab.server).audit_log(5).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "content.takedown" && a.reason == "copyright")
    );
    lab.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_do_only_what_their_scopes_allow() {
    let lab = lab("group:lab").await;
    let make = |client: &ServerClient, scopes: serde_json::Value| {
        let client = client.clone();
        async move {
            client
                .create_api_key(&serde_json::json!({ "scopes": scopes }))
                .await
        }
    };
    let key = make(&lab.bob, serde_json::json!(["search"])).await.unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("pdx_"), "{key}");
    let script = lab.server.client().with_account_token(Some(key.clone()));
    // It searches as bob (his scopes hold), but may not fetch sources, read or make keys.
    assert_eq!(search(&script, "quasarzeta").await.total, 2);
    let error = script.sources(&lab.secret).await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Forbidden), "{error}");
    let error = script.whoami().await.unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Forbidden), "{error}");
    let error = make(&script, serde_json::json!(["search"]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Forbidden), "{error}");
    // A member cannot make an admin key; an admin's read key cannot make invites or ban.
    let error = make(&lab.bob, serde_json::json!(["admin"]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Forbidden), "{error}");
    let error = make(&lab.bob, serde_json::json!(["fly"]))
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::BadRequest), "{error}");
    let read = make(&lab.admin, serde_json::json!(["read"])).await.unwrap();
    let reader = lab
        .server
        .client()
        .with_account_token(Some(read["key"].as_str().unwrap().to_string()));
    let error = reader
        .create_invite(&serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(code(&error), Some(ErrorCode::Forbidden), "{error}");
    let response = peerdex_tests::http()
        .get(format!("{}/api/v1/admin/audit", lab.server.url))
        .bearer_auth(read["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // The key is stored hashed.
    let db = operator_db(&lab.server);
    let stored = db
        .token_owner(&peerdex_server::accounts::secret_hash(&key))
        .unwrap();
    assert_eq!(stored.unwrap().scopes, "search");
    lab.agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_from_the_operators_cli_takes_the_live_session_offline_too() {
    let lab = lab("group:lab").await;
    lab.agent.wait_control_channel().await;
    // What `peerdex-server admin ban add account alice` does: a row written by another process.
    operator_db(&lab.server)
        .add_ban(
            "operator",
            peerdex_server::db::BanKind::Account,
            "alice",
            None,
            "from the cli",
        )
        .unwrap();
    wait_for_closed_control_channel(&lab.agent, Duration::from_secs(10)).await;
    let found = search(&lab.bob, "poster").await;
    assert_eq!(found.total, 0, "her files left results: {found:?}");
}

/// Found by the OpenAPI conformance run: an admin's token could disable (and so revoke)
/// its own account, leaving nobody able to undo it through the API or the admin page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_can_disable_mute_demote_or_ban_their_own_account() {
    let server = TestServer::start().await;
    let boss = sign_up(&server, "boss", &Identity::generate().unwrap()).await;
    operator_db(&server)
        .set_role("operator", "boss", Role::Admin)
        .unwrap();
    let _carol = sign_up(&server, "carol", &Identity::generate().unwrap()).await;
    let token = boss.account_token().unwrap().to_owned();
    let change = |name: &str, body: serde_json::Value| {
        let url = format!("{}/api/v1/admin/accounts/{name}", server.url);
        let token = token.clone();
        async move {
            http()
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    for body in [
        serde_json::json!({"disabled": true}),
        serde_json::json!({"role": "member"}),
        serde_json::json!({"mute": "30m"}),
    ] {
        // Another spelling of the same name is the same account.
        let answer = change("BOSS", body.clone()).await;
        assert_eq!(answer.status(), 403, "{body}");
        let error: peerdex_shared::api::ErrorBody = answer.json().await.unwrap();
        assert_eq!(error.code, ErrorCode::Forbidden);
        assert!(error.error.contains("your own account"), "{}", error.error);
    }
    // Nor ban it.
    let ban = http()
        .post(format!("{}/api/v1/admin/bans", server.url))
        .bearer_auth(&token)
        .json(&serde_json::json!({"kind": "account", "value": "Boss"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ban.status(), 403);
    // Still an admin, still signed in, and still able to act on others.
    let me = boss.whoami().await.unwrap();
    assert_eq!(me.role, Role::Admin);
    assert!(!me.disabled);
    assert_eq!(
        change("carol", serde_json::json!({"disabled": true}))
            .await
            .status(),
        204
    );
    // Re-stating one's own admin role changes nothing and is allowed.
    assert_eq!(
        change("boss", serde_json::json!({"role": "admin"}))
            .await
            .status(),
        204
    );
}
