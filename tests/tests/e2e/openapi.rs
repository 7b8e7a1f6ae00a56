//! The OpenAPI document of the index server's API (issue 21): generated from the handlers,
//! committed as `docs/openapi.json`, valid OpenAPI 3.1 (openapi-spec-validator), describing every
//! API route, shown by the vendored Swagger UI, and true of the live server (a bounded
//! schemathesis run: no 5xx, no undocumented status or content type, bodies as documented).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use peerdex_client::Identity;
use peerdex_shared::api::Role;
use peerdex_tests::*;
use serde_json::Value;

fn committed_document() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

fn generated_document() -> Value {
    serde_json::to_value(peerdex_server::http::openapi_document()).unwrap()
}

/// The `/api/v1` paths of `shared/src/routes.rs` (every API route the server and clients name).
fn api_route_constants() -> Vec<String> {
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/src/routes.rs"),
    )
    .unwrap();
    source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub const "))
        .filter_map(|rest| rest.split('"').nth(1))
        .filter(|path| path.starts_with("/api/v1/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_committed_document_is_the_one_the_code_generates() {
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(committed_document()).unwrap()).unwrap();
    assert!(
        committed == generated_document(),
        "docs/openapi.json is not what the code generates: run \
         `cargo run -q -p peerdex-server -- openapi > docs/openapi.json` and review the diff"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_valid_openapi_and_describes_every_api_route() {
    let server = TestServer::start().await;
    let answer = http()
        .get(format!("{}/api/openapi.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let served: Value = answer.json().await.unwrap();
    assert!(served == generated_document());
    assert_eq!(served["openapi"], "3.1.0");

    // An independent validator of the OpenAPI 3.1 specification.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&served).unwrap()).unwrap();
    let out = std::process::Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect(
            "openapi-spec-validator is installed (.ci/run: pip install openapi-spec-validator)",
        );
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Every API route is described, and each operation says what it answers on success and
    // how its errors look.
    let paths = served["paths"].as_object().unwrap();
    for route in api_route_constants() {
        assert!(paths.contains_key(&route), "{route} is not in the document");
    }
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let responses = operation["responses"].as_object().unwrap();
            assert!(
                responses
                    .keys()
                    .any(|status| status.starts_with('2') || status == "101"),
                "{method} {path} documents no success"
            );
            assert_eq!(
                responses["400"]["$ref"], "#/components/responses/Error400",
                "{method} {path}"
            );
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no summary"
            );
        }
    }
    assert!(operations >= 60, "only {operations} operations");

    // The viewer is served from the binary and points at the document; nothing is fetched
    // from elsewhere.
    let page = http()
        .get(format!("{}/api/docs/", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    assert!(
        !html.contains("https://"),
        "the viewer loads something remote: {html}"
    );
    let initializer = http()
        .get(format!("{}/api/docs/swagger-initializer.js", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/api/openapi.json"), "{initializer}");
    let bundle = http()
        .get(format!("{}/api/docs/swagger-ui-bundle.js", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
}

/// schemathesis generates requests from the document (its examples, boundary values of every
/// schema, then random ones) and checks each answer against it. Left out: the list uploads
/// (NDJSON bodies it cannot generate; `lists.rs` and `hostile.rs` cover them), the long-lived
/// and upgraded routes (control channel, event stream, relay), and the two sign-outs (they
/// would end the run's own session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_server_answers_as_its_document_says() {
    let server = TestServer::start().await;
    // Something to find, browse and fetch.
    let alice = TestPeer::join(&server.url, "alice").await;
    alice
        .client
        .upload_full(
            1,
            &[
                entry("Music/Moon River.mp3", 4_000_000, "moon river"),
                entry("Music/Blue Moon.flac", 30_000_000, "blue moon"),
                entry("Docs/report.pdf", 120_000, "report"),
            ],
        )
        .await
        .unwrap();
    server.wait_for_hits("moon", 2).await;
    // An admin's token, so the account, social and admin routes are reached, not just refused.
    let boss = sign_up(&server, "boss", &Identity::generate().unwrap()).await;
    operator_db(&server)
        .set_role("operator", "boss", Role::Admin)
        .unwrap();
    let token = boss.account_token().unwrap().to_owned();

    // Path parameters that name something real, so that full answers are checked too.
    let parameters = format!(
        "\"path.nick\" = \"alice\"\n\"path.hash\" = \"{}\"\n",
        hash_of("moon river")
    );
    let excluded = [
        "put_list",
        "post_delta",
        "control",
        "relay",
        "relay_accept",
        "events",
        "logout",
        "end_session",
    ];
    let tested = schemathesis(
        &format!("{}/api/openapi.json", server.url),
        &token,
        &excluded,
        &parameters,
    )
    .await;
    assert!(tested >= 50, "schemathesis tested only {tested} operations");
}

/// Runs a bounded schemathesis conformance check of the live API described at `document`,
/// sending `token` as a bearer token, leaving out the `excluded` operation ids, with fixed
/// values for some parameters (`parameters`: TOML lines like `"path.nick" = "alice"`). Panics
/// with schemathesis's report when an answer contradicts the document; answers how many
/// operations it tested.
pub async fn schemathesis(
    document: &str,
    token: &str,
    excluded: &[&str],
    parameters: &str,
) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, format!("[parameters]\n{parameters}")).unwrap();
    let log = dir.path().join("schemathesis.log");
    let mut command = std::process::Command::new("schemathesis");
    command
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(document)
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "10",
            "--seed",
            "21",
            "--no-shrink",
            "--request-timeout",
            "30",
        ])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"));
    for operation in excluded {
        command.args(["--exclude-operation-id", operation]);
    }
    let output = std::fs::File::create(&log).unwrap();
    let mut run = command
        .stdin(Stdio::null())
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .expect("schemathesis is installed (.ci/run: pip install schemathesis)");
    let status = wait_until("schemathesis to finish", Duration::from_secs(600), || {
        let status = run.try_wait().unwrap();
        async move { status.ok_or_else(|| "still running".to_owned()) }
    })
    .await;
    let report = std::fs::read_to_string(&log).unwrap();
    eprintln!("{report}");
    assert!(
        status.success(),
        "schemathesis found answers that contradict the document:\n{report}"
    );
    // It really ran the operations (a document it could not load would not test any).
    report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count of tested operations in:\n{report}"))
}

/// The agent's local API: its document is committed, valid and served; scripts queue,
/// list and steer downloads with the token; errors are JSON; and the live agent answers as
/// its document says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_local_api_queues_and_steers_downloads_as_its_document_says() {
    let generated = serde_json::to_value(peerdex_agent::web::openapi_document()).unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/agent-openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(
        committed == generated,
        "docs/agent-openapi.json is not what the code generates: run \
         `cargo run -q -p peerdex -- ui --openapi > docs/agent-openapi.json`"
    );

    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    write_file(&share, "notes.txt", b"some notes");
    let agent = TestAgent::start(&server.url, &[&share], |_| {}).await;
    agent.wait_synced().await;
    let base = format!(
        "http://{}",
        agent.handle.ui_addr.expect("the web client listens")
    );
    let token = peerdex_agent::web::load_or_create_token(&agent.config.state).unwrap();
    let http = http();

    // Without the token: a JSON error, like every error of the API.
    let r = http
        .get(format!("{base}/api/transfers"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let error: peerdex_shared::api::ErrorBody = r.json().await.unwrap();
    assert_eq!(error.code, peerdex_shared::api::ErrorCode::Unauthorized);

    let served: Value = http
        .get(format!("{base}/api/openapi.json"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(served == generated);
    let file = dir.path().join("agent-openapi.json");
    std::fs::write(&file, serde_json::to_vec(&served).unwrap()).unwrap();
    let out = std::process::Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect("openapi-spec-validator is installed (.ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A script queues a content nobody has: it waits; it can be paused and resumed.
    let wanted = hash_of("not shared by anyone");
    let r = http
        .post(format!("{base}/api/transfers"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "hash": wanted, "name": "wanted.bin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let queued: Value = r.json().await.unwrap();
    let id = queued["ids"][0].as_u64().unwrap();
    let list: Value = http
        .get(format!("{base}/api/transfers"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        list["downloads"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id && d["hash"] == wanted.to_string()),
        "{list}"
    );
    let paused: Value = http
        .post(format!("{base}/api/transfers/{id}/pause"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["state"], "paused", "{paused}");
    // Mistakes are named, in JSON.
    for (path, status) in [
        (format!("/api/transfers/{id}/explode"), 400),
        ("/api/transfers/999999/pause".to_owned(), 404),
        (format!("/api/transfers/{id}/pause"), 409),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        let _: peerdex_shared::api::ErrorBody = r.json().await.unwrap();
    }
    let r = http
        .post(format!("{base}/api/transfers"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "hash": "not a hash" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The live agent against its own document.
    let tested = schemathesis(&format!("{base}/api/openapi.json"), &token, &[], "").await;
    assert_eq!(tested, 4);
}
