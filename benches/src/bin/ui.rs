//! The agent's web client while the agent hashes a large share, against the same pages while it
//! is idle (the baseline, same run).
//!
//! `cargo run --release -p peerdex-benches --bin ui -- [GIB] [SMALL_FILES]`
//!
//! An index server and two agents run in this process on loopback. The idle agent shares one
//! small file; the busy one is started on a share of GIB GiB of large files plus SMALL_FILES
//! small ones, so its hash threads (2) keep both cores busy. Against each, one client asks
//! `/`, `/transfers` and `/search?q=…` in turn and times the first byte (the answer's head:
//! pages are rendered before it is sent). The busy agent is measured only while it is still
//! hashing. Prints p50 and p99 per agent and their ratios; the target is a first byte within
//! 100 ms while hashing.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use peerdex_tests::{TestAgent, TestServer, http, pseudo_random, write_file};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The pages asked, in turn.
const PATHS: [&str; 3] = ["/", "/transfers", "/search?q=song"];

/// First-byte times of each of [`PATHS`] on `agent`, asked in turn until `keep_going` says stop
/// or `limit` requests were made.
async fn measure(
    agent: &TestAgent,
    limit: usize,
    keep_going: impl Fn(&TestAgent) -> bool,
) -> Vec<Vec<Duration>> {
    let base = format!("http://{}", agent.handle.ui_addr.unwrap());
    let token = peerdex_agent::web::load_or_create_token(&agent.config.state).unwrap();
    let client = http();
    let mut times = vec![Vec::new(); PATHS.len()];
    for i in 0..limit {
        if i % PATHS.len() == 0 && !keep_going(agent) {
            break;
        }
        let url = format!("{base}{}", PATHS[i % PATHS.len()]);
        let started = Instant::now();
        let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
        times[i % PATHS.len()].push(started.elapsed());
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.bytes().await.unwrap();
    }
    for each in &mut times {
        each.sort();
    }
    times
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let gib: usize = args.next().map_or(4, |a| a.parse().unwrap());
    let small: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    let quiet = dir.path().join("quiet");
    write_file(&quiet, "song.mp3", b"a song");
    let idle = TestAgent::start(&server.url, &[&quiet], |c| c.nick = Some("idle".into())).await;
    idle.wait_synced().await;
    server.wait_for_hits("song", 1).await;

    let big = dir.path().join("big");
    let chunk = pseudo_random(64 << 20, 3);
    for i in 0..gib * 16 {
        // Each file differs in its first bytes, so each is its own content.
        let mut bytes = chunk.clone();
        bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
        write_file(&big, &format!("large/{i:03}.bin"), &bytes);
    }
    for i in 0..small {
        write_file(
            &big,
            &format!("small/{}/{i}.txt", i % 100),
            format!("small file {i}").as_bytes(),
        );
    }
    println!(
        "share: {gib} GiB in {} large files + {small} small files",
        gib * 16
    );

    let baseline = measure(&idle, 600, |_| true).await;
    let started = Instant::now();
    let busy = TestAgent::start(&server.url, &[&big], |c| c.nick = Some("busy".into())).await;
    // Wait until hashing has begun, then measure while it lasts.
    while busy.status().progress.files_hashed == 0 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hashing = measure(&busy, 2_000, |agent| {
        let status = agent.status();
        status.progress.scanning || status.progress.hash_files_pending > 0
    })
    .await;
    let hashed = busy.status().progress;
    println!(
        "while hashing: {} requests over {:.1} s; {} files, {:.1} GiB hashed so far",
        hashing.iter().map(Vec::len).sum::<usize>(),
        started.elapsed().as_secs_f64(),
        hashed.files_hashed,
        hashed.bytes_hashed as f64 / (1u64 << 30) as f64
    );
    assert!(
        hashing[0].len() >= 10,
        "hashing ended before enough requests were made; use a larger share"
    );
    println!("| page | agent | requests | first byte p50 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (i, path) in PATHS.iter().enumerate() {
        for (name, times) in [("idle", &baseline[i]), ("hashing", &hashing[i])] {
            println!(
                "| `{path}` | {name} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
                times.len(),
                ms(percentile(times, 0.5)),
                ms(percentile(times, 0.99)),
                ms(*times.last().unwrap())
            );
        }
        println!(
            "| `{path}` | ratio hashing/idle | | {:.2}x | {:.2}x | |",
            ms(percentile(&hashing[i], 0.5)) / ms(percentile(&baseline[i], 0.5)),
            ms(percentile(&hashing[i], 0.99)) / ms(percentile(&baseline[i], 0.99))
        );
    }
    busy.stop().await;
    idle.stop().await;
}
