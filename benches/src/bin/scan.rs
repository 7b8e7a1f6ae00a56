//! The agent's scanner: initial scan and no-change rescan of a large tree, against `find`.
//!
//! `cargo run --release -p peerdex-benches --bin scan -- [FILES] [ROUNDS] [DIR]` (walker threads:
//! `WALK_THREADS`, default 2)
//!
//! Builds a tree of FILES small files (100 per folder, two folder levels) under DIR (default: a
//! temp dir), scans it once into a fresh catalog (walk + catalog inserts, no hashing), then
//! alternates, ROUNDS times, `find DIR -printf '%s %T@\n'` with a no-change rescan by the agent's
//! scanner, and reports medians and their ratio. A no-change rescan must find no change, queue
//! nothing for hashing and so read no file contents; the bench fails if it does. Last, the peak
//! resident memory of the process, to compare across share sizes.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerdex_agent::bench::Catalog;
use peerdex_agent::bench::Progress;
use peerdex_agent::bench::Scanner;
use peerdex_agent::config::{Share, ShareConfig, ShareRules};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn build_tree(root: &Path, files: u64) {
    let started = Instant::now();
    for i in 0..files {
        let dir = root.join(format!(
            "artist{:04}/album{:02}",
            i / 10_000,
            (i / 100) % 100
        ));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(
            dir.join(format!("{:03} track {i}.mp3", i % 100)),
            i.to_le_bytes(),
        )
        .unwrap();
    }
    eprintln!("built {files} files in {:.1?}", started.elapsed());
}

fn find(root: &Path) -> Duration {
    let started = Instant::now();
    let status = Command::new("find")
        .arg(root)
        .args(["-printf", "%s %T@\n"])
        .stdout(Stdio::null())
        .status()
        .expect("find is needed as the baseline");
    assert!(status.success());
    started.elapsed()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let files: u64 = args.next().map_or(200_000, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let keep = args.next();
    let temp = tempfile::tempdir().unwrap();
    let root = match &keep {
        Some(dir) => Path::new(dir).to_owned(),
        None => temp.path().join("share"),
    };
    if !root.join("artist0000").exists() {
        build_tree(&root, files);
    }
    let state = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(state.path()).unwrap());
    let progress = Arc::new(Progress::default());
    let threads: usize = std::env::var("WALK_THREADS").map_or(2, |v| v.parse().unwrap());
    let scanner = Scanner::new(catalog, progress.clone(), threads);
    let config = ShareConfig {
        path: root.clone(),
        name: Some("bench".into()),
        exclude: vec![],
        follow_symlinks: false,
        include_hidden: false,
        visibility: Default::default(),
        scopes: Vec::new(),
    };
    let share = Share {
        name: "bench".into(),
        root: std::fs::canonicalize(&root).unwrap(),
        rules: ShareRules::new(&config).unwrap(),
    };

    // Warm the page cache for both sides.
    find(&root);
    let started = Instant::now();
    let first = scanner.scan_share(&share).unwrap();
    let initial = started.elapsed();
    assert_eq!(first.files, files);

    let mut find_times = Vec::new();
    let mut rescan_times = Vec::new();
    for _ in 0..rounds {
        find_times.push(find(&root));
        let started = Instant::now();
        let report = scanner.scan_share(&share).unwrap();
        rescan_times.push(started.elapsed());
        assert_eq!(report.files, files);
        assert_eq!(report.changed, 0, "a no-change rescan found changes");
    }
    let queued = progress
        .hash_files_pending
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        queued, files,
        "only the initial scan queues files for hashing"
    );
    let (find_median, rescan_median) = (median(find_times), median(rescan_times));
    println!("files: {files}, walk threads: {threads}, rounds: {rounds}");
    println!(
        "initial scan (walk + catalog inserts): {:.2?}, {:.0} files/s",
        initial,
        files as f64 / initial.as_secs_f64()
    );
    println!(
        "find -printf '%s %T@' (baseline, median): {:.2?}, {:.0} files/s",
        find_median,
        files as f64 / find_median.as_secs_f64()
    );
    println!(
        "no-change rescan (median): {:.2?}, {:.0} files/s; changes found 0, files queued for hashing 0",
        rescan_median,
        files as f64 / rescan_median.as_secs_f64()
    );
    println!(
        "ratio rescan / find: {:.2}x",
        rescan_median.as_secs_f64() / find_median.as_secs_f64()
    );
    // The scanner holds folders waiting to be read, never the file list: this should not grow
    // with the share (compare two sizes).
    println!(
        "peak RSS of this process (scanner + catalog): {:.0} MiB",
        peerdex_tests::peak_rss_bytes() as f64 / 1048576.0
    );
}
