//! Ingest and search on the index server, against bare SQLite inserts of the same rows.
//!
//! `cargo run --release -p peerdex-benches --bin ingest -- [ENTRIES] [RUNS]`
//!
//! For each run: a fresh server in a temp dir, one peer, a full list of ENTRIES synthetic entries.
//! Reports the time to the 2xx (committed in SQLite) and to searchable (tantivy committed), the
//! same rows inserted with one prepared statement into a bare SQLite table (the floor for the
//! store), a delta of 1% of the entries, a reconnect with an unchanged list, and search latency.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use peerdex_benches::{dir_bytes, synthetic};
use peerdex_client::server_api::{SearchQuery, ndjson};
use peerdex_shared::api::{DeltaOp, ListEntry};
use peerdex_tests::{TestPeer, TestServer, entry};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bare_sqlite(entries: &[ListEntry]) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("bare.sqlite3")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "NORMAL").unwrap();
    conn.execute_batch("CREATE TABLE f (id INTEGER PRIMARY KEY, share TEXT, path TEXT, size INTEGER, mtime INTEGER, hash BLOB, UNIQUE (share, path))").unwrap();
    let start = Instant::now();
    let mut conn = conn;
    for chunk in entries.chunks(2000) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO f (share, path, size, mtime, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
            for e in chunk {
                stmt.execute(rusqlite::params![
                    e.share,
                    e.path,
                    e.size as i64,
                    e.mtime,
                    e.hash.as_bytes()
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    start.elapsed()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let entries = synthetic(n);
    let body = ndjson(&entries);
    let (mut ack, mut searchable, mut bare, mut delta, mut reconnect, mut search) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut disk = vec![];
    for run in 0..runs {
        // Alternate baseline and system so drift on a noisy machine hits both alike.
        bare.push(bare_sqlite(&entries).as_secs_f64());
        let server = TestServer::start_with(|c| c.index.commit_interval_ms = 500).await;
        let mut peer = TestPeer::join_announcing(&server.url, "bench", 0).await;
        let start = Instant::now();
        peer.client
            .upload_full_body(1, body.clone(), None)
            .await
            .unwrap();
        ack.push(start.elapsed().as_secs_f64());
        let last = format!("track {}", n - 1);
        // Indexing 1M entries takes tens of seconds; the bound is only against a hang.
        server
            .wait_for_hits_within(&last, 1, Duration::from_secs(600))
            .await;
        searchable.push(start.elapsed().as_secs_f64());

        let ops: Vec<DeltaOp> = (0..n / 100)
            .map(|i| {
                DeltaOp::Change(entry(
                    &entries[(i * 100) as usize].path,
                    1,
                    &format!("changed{i}"),
                ))
            })
            .collect();
        let start = Instant::now();
        peer.client.upload_delta(1, 2, &ops).await.unwrap();
        delta.push(start.elapsed().as_secs_f64());

        let start = Instant::now();
        let again = peer.register().await;
        assert_eq!(again.list_version, Some(2));
        reconnect.push(start.elapsed().as_secs_f64());

        let client = server.client();
        let queries = [
            "beatles",
            "track 12",
            "album 3 queen",
            "아이유",
            "beyonce -nirvana",
            "\"album 30\"",
        ];
        let mut lat = vec![];
        for _ in 0..20 {
            for q in queries {
                let start = Instant::now();
                client
                    .search(&SearchQuery {
                        q: q.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                lat.push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
        search.push(median(lat));
        eprintln!("run {run} done");
        let data = server.data.clone();
        let guard = server.stop().await;
        disk.push(dir_bytes(&data) as f64);
        drop(guard);
    }
    let (ack, searchable, bare) = (median(ack), median(searchable), median(bare));
    let disk = median(disk);
    println!("entries: {n}, runs: {runs} (medians)");
    println!(
        "full upload to 2xx:        {ack:.2} s  ({:.0} entries/s)",
        n as f64 / ack
    );
    println!(
        "full upload to searchable: {searchable:.2} s  ({:.0} entries/s)",
        n as f64 / searchable
    );
    println!(
        "bare SQLite inserts:       {bare:.2} s  ({:.0} rows/s)",
        n as f64 / bare
    );
    println!("ratio 2xx vs bare SQLite:  {:.2}x the time", ack / bare);
    println!("delta of {} changes:       {:.3} s", n / 100, median(delta));
    println!(
        "reconnect, unchanged list: {:.1} ms (challenge + register, no upload)",
        median(reconnect) * 1000.0
    );
    println!("search, 1 client, p50:     {:.2} ms", median(search));
    println!(
        "data directory after stop:  {:.1} MiB, {:.0} bytes/entry",
        disk / (1 << 20) as f64,
        disk / n as f64
    );
    println!(
        "peak RSS of the process:    {:.0} MiB (server and client), {:.0} bytes/entry",
        (peerdex_tests::peak_rss_bytes() as f64) / (1 << 20) as f64,
        (peerdex_tests::peak_rss_bytes() as f64) / n as f64
    );
}
