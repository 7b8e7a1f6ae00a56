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
