//! The load test of issue 6: N agents with thousands of files each, M clients searching, some
//! agents reconnecting. The assertion is zero errors; latencies go to BENCHMARKS.md (from
//! `benches/src/bin/load.rs`, not from this test).

use std::time::Duration;

use peerdex_tests::load::{LoadConfig, run};
use peerdex_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_agents_and_fifty_searching_clients_see_no_errors() {
    // Every simulated agent comes from 127.0.0.1: lift the per-IP registration limit.
    let server = TestServer::start_with(|c| {
        c.probe.registrations_per_ip_per_minute = 1_000_000;
    })
    .await;
    let report = run(
        &server.url,
        LoadConfig {
            agents: 200,
            files_per_agent: 1000,
            clients: 50,
            duration: Duration::from_secs(30),
            reconnect_one_in: 10,
        },
    )
    .await;
    eprintln!("{}", report.summary());
    assert!(
        report.errors.is_empty(),
        "{:?}",
        &report.errors[..report.errors.len().min(10)]
    );
    for op in ["register", "upload", "search", "heartbeat", "reconnect"] {
        assert!(report.percentiles(op).is_some(), "no {op} happened");
    }
    // Every list arrived whole.
    let stats = server.client().stats().await.unwrap();
    assert_eq!(stats.entries, 200 * 1000);
    assert_eq!(stats.peers_online, 200);
}

/// The load test's one error in CI: a searching client, starved by its loaded runtime for as
/// long as the server's keep-alive limit, wrote its next search into a connection the server
/// was closing at that moment ("connection closed before message completed"; such a request is
/// not retried). Clients reuse an idle connection only well inside the server's limit, so a
/// connection idle that long is replaced instead of raced. The race itself cannot be forced
/// from here; this pins the relation between the two settings.
#[test]
fn clients_reuse_idle_connections_only_well_inside_the_servers_keep_alive_limit() {
    let server_limit =
        Duration::from_secs(peerdex_server::config::HttpConfig::default().header_read_timeout_secs);
    let client_reuse = peerdex_client::server_api::IDLE_CONNECTION_REUSE;
    assert!(
        client_reuse * 2 <= server_limit,
        "clients reuse idle connections for {client_reuse:?}, the server closes them after {server_limit:?}"
    );
}
