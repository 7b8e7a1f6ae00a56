//! The agent's tag reader against mutagen (Python) on the same generated library, same run.
//!
//! `cargo run --release -p peerdex-benches --bin tags -- [FILES] [ROUNDS]`
//! `cargo run --release -p peerdex-benches --bin tags -- --print DIR` (the tags of each file, JSON)
//!
//! Generates FILES tagged files (half MP3, half FLAC; two short tones encoded once by `ffmpeg`,
//! then copied and re-tagged by mutagen, so every file has its own tags and bytes), then reads
//! every file's tags ROUNDS times alternately with the agent's reader (one thread, as one hash
//! thread does) and with `mutagen.File` in one Python process (one thread), with the page cache
//! warm. Prints files/s of each and the ratio, medians. Needs `ffmpeg` and `python3 -m pip install
//! mutagen` (`.ci/run` installs both); without them it says so and exits 2.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peerdex_agent::bench::read_tags_at;

/// Writes the tagged library with mutagen: `count` files under `dir/Artist N/Album M/`.
const GENERATE: &str = r#"
import os, shutil, sys
from mutagen.easyid3 import EasyID3
from mutagen.flac import FLAC
src_mp3, src_flac, out, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for i in range(count):
    album_dir = os.path.join(out, f"Artist {i // 120}", f"Album {i // 12}")
    os.makedirs(album_dir, exist_ok=True)
    flac = i % 2 == 1
    path = os.path.join(album_dir, f"{i % 12 + 1:02d} Track {i}.{'flac' if flac else 'mp3'}")
    shutil.copyfile(src_flac if flac else src_mp3, path)
    tags = FLAC(path) if flac else EasyID3()
    tags["artist"] = f"Artist {i // 120} Motörhead"
    tags["album"] = f"Album {i // 12}"
    tags["title"] = f"Track {i} 千と千尋"
    tags["tracknumber"] = str(i % 12 + 1)
    tags["date"] = str(1960 + i % 60)
    tags["genre"] = "Rock"
    if flac:
        tags.save()
    else:
        tags.save(path)
"#;

/// Reads every file with mutagen, like the agent does (tags and stream info), and prints the
/// seconds taken.
const READ: &str = r#"
import sys, time
import mutagen
paths = [l.rstrip("\n") for l in open(sys.argv[1], encoding="utf-8")]
start = time.perf_counter()
n = 0
for p in paths:
    f = mutagen.File(p, easy=True)
    if f is not None and f.info.length > 0 and f.get("artist"):
        n += 1
print(time.perf_counter() - start, n)
"#;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ffmpeg(args: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
        ])
        .args(args)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg failed");
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print") {
        let mut files = Vec::new();
        files_under(Path::new(&args[1]), &mut files);
        for path in files {
            let tags = read_tags_at(&path).unwrap();
            println!(
                "{} {}",
                path.display(),
                serde_json::to_string(&tags).unwrap()
            );
        }
        return;
    }
    let count: usize = args.first().map_or(10_000, |a| a.parse().unwrap());
    let rounds: usize = args.get(1).map_or(5, |a| a.parse().unwrap());
    if !have("ffmpeg", &["-version"]) || !have("python3", &["-c", "import mutagen"]) {
        eprintln!("SKIPPED: the tags bench needs ffmpeg and mutagen (see .ci/run)");
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let (mp3, flac) = (dir.path().join("src.mp3"), dir.path().join("src.flac"));
    ffmpeg(&["-ac", "2", "-b:a", "192k"], &mp3);
    ffmpeg(&["-ac", "2"], &flac);
    let library = dir.path().join("library");
    let started = Instant::now();
    let status = Command::new("python3")
        .args(["-c", GENERATE])
        .arg(&mp3)
        .arg(&flac)
        .arg(&library)
        .arg(count.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "generating the library failed");
    let mut files = Vec::new();
    files_under(&library, &mut files);
    assert_eq!(files.len(), count);
    let bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    eprintln!(
        "generated {count} tagged files ({} MiB) in {:.1}s",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );
    let list = dir.path().join("files.txt");
    let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
    std::fs::write(&list, text).unwrap();

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..=rounds {
        let started = Instant::now();
        let mut tagged = 0;
        for path in &files {
            let tags = read_tags_at(path).unwrap();
            if tags.artist.is_some() && tags.duration_secs.is_some() {
                tagged += 1;
            }
        }
        let agent = started.elapsed();
        assert_eq!(tagged, count, "the agent's reader missed tags");
        let out = Command::new("python3")
            .args(["-c", READ])
            .arg(&list)
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut parts = text.split_whitespace();
        let secs: f64 = parts.next().unwrap().parse().unwrap();
        let read: usize = parts.next().unwrap().parse().unwrap();
        assert_eq!(read, count, "mutagen missed tags");
        // Round 0 warms the page cache for both.
        if round > 0 {
            ours.push(agent);
            theirs.push(Duration::from_secs_f64(secs));
        }
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let rate = |d: Duration| count as f64 / d.as_secs_f64();
    println!(
        "tag extraction, {count} files (MP3 + FLAC), 1 thread, medians of {rounds}: \
         agent {:.0} files/s, mutagen {:.0} files/s, ratio {:.2}x",
        rate(ours),
        rate(theirs),
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
