//! Load on the index server: N agents upload lists while M clients search and some agents
//! reconnect; latency percentiles per operation, errors, and memory.
//!
//! `cargo run --release -p peerdex-benches --bin load -- [AGENTS] [FILES] [CLIENTS] [SECONDS]`
//!
//! The server runs in this process (so the memory figure includes the load generator's).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use peerdex_tests::TestServer;
use peerdex_tests::load::{LoadConfig, run};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |default: u64| args.next().map_or(default, |a| a.parse().unwrap());
    let (agents, files, clients, seconds) = (next(200), next(1000), next(50), next(30));
    let server = TestServer::start_with(|c| {
        c.probe.registrations_per_ip_per_minute = 1_000_000;
        c.index.commit_interval_ms = 500;
        c.index.writer_memory_bytes = 64_000_000;
    })
    .await;
    let report = run(
        &server.url,
        LoadConfig {
            agents: agents as usize,
            files_per_agent: files as usize,
            clients: clients as usize,
            duration: Duration::from_secs(seconds),
            reconnect_one_in: 10,
        },
    )
    .await;
    let stats = server.client().stats().await.unwrap();
    println!(
        "agents: {agents} × {files} files, clients: {clients}, duration: {seconds} s (release, in-process server)"
    );
    print!("{}", report.summary());
    println!(
        "entries held: {}, peers online: {}, peak RSS of the process: {:.0} MiB",
        stats.entries,
        stats.peers_online,
        (peerdex_tests::peak_rss_bytes() as f64 / (1 << 20) as f64)
    );
    for error in report.errors.iter().take(10) {
        println!("error: {error}");
    }
}
