//! The agent's file hashing (BLAKE3 root plus 1 MiB piece hashes, read with `pread`) against
//! `b3sum` with the same thread count, and against BLAKE3 over the same bytes already in memory.
//!
//! `cargo run --release -p peerdex-benches --bin hash -- [MIB] [ROUNDS] [SMALL_FILES]`
//!
//! Large file: a MIB-MiB file in the page cache, hashed alternately ROUNDS times by
//! `blake3::hash` in memory (1 thread), `b3sum --num-threads 1` and `--num-threads 2`, and the
//! agent's `hash_file` with 1 and 2 threads. Small files: SMALL_FILES files of 1–16 KiB, hashed by
//! `b3sum` (one process over all of them, 1 thread) and by `hash_file` one by one (1 thread),
//! in files/s. Medians. `b3sum` comes from `benches/install-baselines.sh`; without it the bench
//! says so and reports the rest.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerdex_agent::bench::Progress;
use peerdex_agent::bench::Stat;
use peerdex_agent::bench::hash_file;
use tokio_util::sync::CancellationToken;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn b3sum_available() -> bool {
    Command::new("b3sum")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `b3sum --num-threads N` over `files` and returns the wall time.
fn b3sum(threads: usize, files: &[PathBuf]) -> Duration {
    let started = Instant::now();
    let status = Command::new("b3sum")
        .args(["--num-threads", &threads.to_string()])
        .args(files)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    started.elapsed()
}

fn hash_all(files: &[(PathBuf, Stat)], threads: usize) -> Duration {
    let progress = Progress::default();
    let stop = CancellationToken::new();
    let started = Instant::now();
    for (path, stat) in files {
        hash_file(path, stat, false, threads, &progress, &stop).unwrap();
    }
    started.elapsed()
}

fn stat_of(path: &Path) -> Stat {
    Stat::of(&std::fs::metadata(path).unwrap())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(1024, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let small: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let has_b3sum = b3sum_available();
    let dir = tempfile::tempdir().unwrap();

    // Large file.
    let path = dir.path().join("big.bin");
    let bytes = peerdex_tests::pseudo_random(mib << 20, 7);
    std::fs::write(&path, &bytes).unwrap();
    let big = vec![(path.clone(), stat_of(&path))];
    let expected = blake3::hash(&bytes);
    let gib = (mib as f64) / 1024.0;
    let mut times: Vec<(&str, Vec<Duration>)> = vec![
        ("blake3::hash in memory, 1 thread", vec![]),
        ("b3sum --num-threads 1", vec![]),
        ("b3sum --num-threads 2", vec![]),
        ("agent hash_file, 1 thread", vec![]),
        ("agent hash_file, 2 threads", vec![]),
    ];
    for _ in 0..rounds {
        let started = Instant::now();
        assert_eq!(blake3::hash(&bytes), expected);
        times[0].1.push(started.elapsed());
        if has_b3sum {
            times[1].1.push(b3sum(1, std::slice::from_ref(&path)));
            times[2].1.push(b3sum(2, std::slice::from_ref(&path)));
        }
        times[3].1.push(hash_all(&big, 1));
        times[4].1.push(hash_all(&big, 2));
    }
    drop(bytes);
    println!("large file: {mib} MiB in page cache, rounds: {rounds} (medians)");
    let b3_one = (!times[1].1.is_empty()).then(|| median(times[1].1.clone()));
    let b3_two = (!times[2].1.is_empty()).then(|| median(times[2].1.clone()));
    for (name, samples) in &times {
        if samples.is_empty() {
            println!("  {name}: b3sum not installed (run benches/install-baselines.sh)");
            continue;
        }
        let m = median(samples.clone());
        let versus = match (*name, b3_one, b3_two) {
            ("agent hash_file, 1 thread", Some(b), _)
            | ("agent hash_file, 2 threads", _, Some(b)) => {
                format!(
                    ", {:.2}x b3sum with the same threads",
                    b.as_secs_f64() / m.as_secs_f64()
                )
            }
            _ => String::new(),
        };
        println!("  {name}: {:.2} GiB/s{versus}", gib / m.as_secs_f64());
    }

    // Many small files.
    let small_dir = dir.path().join("small");
    std::fs::create_dir(&small_dir).unwrap();
    let files: Vec<(PathBuf, Stat)> = (0..small)
        .map(|i| {
            let path = small_dir.join(format!("f{i}.bin"));
            std::fs::write(
                &path,
                peerdex_tests::pseudo_random(1024 + (i * 977) % (15 * 1024), i as u64),
            )
            .unwrap();
            let stat = stat_of(&path);
            (path, stat)
        })
        .collect();
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        if has_b3sum {
            theirs.push(b3sum(1, &paths));
        }
        ours.push(hash_all(&files, 1));
    }
    println!("small files: {small} files of 1–16 KiB in page cache (medians)");
    let rate = |d: Duration| small as f64 / d.as_secs_f64();
    let ours = median(ours);
    if theirs.is_empty() {
        println!("  b3sum: not installed (run benches/install-baselines.sh)");
        println!("  agent hash_file, 1 thread: {:.0} files/s", rate(ours));
    } else {
        let theirs = median(theirs);
        println!(
            "  b3sum, 1 thread, one process: {:.0} files/s",
            rate(theirs)
        );
        println!(
            "  agent hash_file, 1 thread: {:.0} files/s, {:.2}x b3sum",
            rate(ours),
            theirs.as_secs_f64() / ours.as_secs_f64()
        );
    }
}
