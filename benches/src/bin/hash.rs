//! The agent's file hashing (BLAKE3 root plus 1 MiB piece hashes, read with `pread`) against
//! BLAKE3 over the same bytes already in memory, the ceiling for one thread.
//!
//! `cargo run --release -p peerdex-benches --bin hash -- [MIB] [ROUNDS]`
//!
//! Writes a MIB-MiB file to a temp dir (page cache warm), then alternates ROUNDS times:
//! `blake3::hash` of the bytes in memory (one thread), and the agent's `hash_file` with one and
//! with two threads. Reports medians in GiB/s and ratios. The issue-7 bench adds `b3sum`.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use peerdex::agent::catalog::Stat;
use peerdex::agent::hash::hash_file;
use peerdex::agent::progress::Progress;
use tokio_util::sync::CancellationToken;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(1024, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let bytes = peerdex_tests::pseudo_random(mib << 20, 7);
    std::fs::write(&path, &bytes).unwrap();
    let stat = Stat::of(&std::fs::metadata(&path).unwrap());
    let expected = blake3::hash(&bytes);
    let progress = Progress::default();
    let stop = CancellationToken::new();
    let gib = (mib as f64) / 1024.0;

    let (mut memory, mut one, mut two) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        assert_eq!(blake3::hash(&bytes), expected);
        memory.push(started.elapsed());
        for (threads, times) in [(1, &mut one), (2, &mut two)] {
            let started = Instant::now();
            let (hash, cvs) = hash_file(&path, &stat, false, threads, &progress, &stop).unwrap();
            times.push(started.elapsed());
            assert_eq!(hash.as_bytes(), expected.as_bytes());
            assert_eq!(cvs.len(), mib.max(2));
        }
    }
    let rate = |d: Duration| gib / d.as_secs_f64();
    let (memory, one, two) = (median(memory), median(one), median(two));
    println!("file: {mib} MiB in page cache, rounds: {rounds}");
    println!(
        "blake3::hash in memory, 1 thread (baseline): {:.2} GiB/s",
        rate(memory)
    );
    println!(
        "agent hash_file, 1 thread: {:.2} GiB/s ({:.2}x the baseline)",
        rate(one),
        memory.as_secs_f64() / one.as_secs_f64()
    );
    println!(
        "agent hash_file, 2 threads: {:.2} GiB/s ({:.2}x the baseline)",
        rate(two),
        memory.as_secs_f64() / two.as_secs_f64()
    );
}
