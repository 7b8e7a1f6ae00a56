//! What standing wishes cost ingest, how fast a match reaches its wisher, and what open event
//! streams cost (issue 18).
//!
//! `cargo run --release -p peerdex-benches --bin wishes -- [ENTRIES] [WISHES] [RUNS] [STREAMS]`
//!
//! 1. Ingest: a server holding one peer's list of ENTRIES synthetic entries takes a second
//!    peer's list of ENTRIES new ones, to searchable, with WISHES standing wishes (100 accounts;
//!    half match one new entry each, half match nothing) and without any, alternating run by run
//!    (the baseline is the same run).
//! 2. Latency: a wisher with an open event stream; a delta adds one matching entry; time from
//!    the delta's answer (its list commit) to the `wish_hit` event, 50 times.
//! 3. Streams: STREAMS accounts each with an event stream open, in a ring of contacts, while
//!    their devices come online and go offline; process CPU and memory per stream.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use peerdex_benches::synthetic_from;
use peerdex_client::server_api::ndjson;
use peerdex_client::{Identity, ServerClient};
use peerdex_server::db::Db;
use peerdex_shared::api::DeltaOp;
use peerdex_shared::social::{EventEnvelope, WishRequest};
use peerdex_tests::{TestPeer, TestServer, entry, sign_up};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Process CPU time so far (user + system), seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Resident memory now, bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

type Events = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

async fn open(client: &ServerClient) -> Events {
    let response = client.event_stream(None).await.unwrap();
    Box::pin(eventsource_stream::Eventsource::eventsource(
        response.bytes_stream(),
    ))
}

/// A server already holding one peer's list of `entries`, `wishes` wishes made over the API by
/// 100 accounts (half ask for one entry of the list ingested next, half for words nobody has),
/// then another peer's list of `entries` new entries: the time to searchable.
async fn ingest_run(entries: u64, wishes: u64) -> (f64, Option<TestServer>) {
    let server = TestServer::start_with(|c| {
        c.index.commit_interval_ms = 500;
        c.social.max_wishes_per_account = u32::MAX;
        c.accounts.accounts_per_ip_per_hour = u32::MAX;
        c.probe.registrations_per_ip_per_minute = u32::MAX;
    })
    .await;
    let first = TestPeer::join_announcing(&server.url, "first", 0).await;
    first
        .client
        .upload_full_body(1, ndjson(&synthetic_from(0, entries)), None)
        .await
        .unwrap();
    server
        .wait_for_hits_within(
            &format!("track {}", entries - 1),
            1,
            Duration::from_secs(600),
        )
        .await;
    let mut wishers = Vec::new();
    for a in 0..(wishes.min(100)) {
        wishers.push(
            sign_up(
                &server,
                &format!("wisher{a}"),
                &Identity::generate().unwrap(),
            )
            .await,
        );
    }
    for w in 0..wishes {
        let query = if w % 2 == 0 {
            format!("track {}", entries + (w * 7919) % entries)
        } else {
            format!("zqx{w} missing")
        };
        wishers[(w % 100) as usize]
            .add_wish(&WishRequest {
                query,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let body = ndjson(&synthetic_from(entries, entries));
    let second = TestPeer::join_announcing(&server.url, "second", 0).await;
    let start = Instant::now();
    second.client.upload_full_body(1, body, None).await.unwrap();
    server
        .wait_for_hits_within(
            &format!("track {}", 2 * entries - 1),
            1,
            Duration::from_secs(600),
        )
        .await;
    let searchable = start.elapsed().as_secs_f64();
    if wishes > 0 {
        // Every wish asking for a new entry must have reported it, once.
        let db = Db::open(&server.data.join(peerdex_server::server::DB_FILE)).unwrap();
        let reported: i64 = db
            .read(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM events WHERE kind = 'wish_hit'",
                    [],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        eprintln!(
            "wish hits reported: {reported} (wishes asking for a new entry: {})",
            wishes.div_ceil(2)
        );
        assert_eq!(
            reported as u64,
            wishes.div_ceil(2),
            "each matching wish reports once"
        );
        std::mem::forget(first);
        std::mem::forget(second);
        (searchable, Some(server))
    } else {
        server.stop().await;
        (searchable, None)
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let wishes: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let runs: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(3);
    let streams: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(1000);

    // 1. Ingest with and without wishes, alternating.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut kept = None;
    for run in 0..runs {
        let (plain, _) = ingest_run(entries, 0).await;
        without.push(plain);
        let (wished, server) = ingest_run(entries, wishes).await;
        with.push(wished);
        if let Some(old) = kept.replace(server) {
            drop(old);
        }
        eprintln!("run {run}: without {plain:.2} s, with {wished:.2} s");
    }
    let server = kept.flatten().unwrap();
    let (with_m, without_m) = (median(with), median(without));
    println!("entries: {entries}, wishes: {wishes}, runs: {runs} (medians)");
    println!(
        "full upload to searchable, no wishes:   {without_m:.2} s ({:.0} entries/s)",
        entries as f64 / without_m
    );
    println!(
        "full upload to searchable, {wishes} wishes: {with_m:.2} s ({:.0} entries/s)",
        entries as f64 / with_m
    );
    println!(
        "ingest throughput with wishes:          {:.2}x of without",
        without_m / with_m
    );

    // 2. Latency from a delta's commit to the wisher's event.
    let wisher = sign_up(&server, "latency", &Identity::generate().unwrap()).await;
    wisher
        .add_wish(&WishRequest {
            query: "latencyprobe".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = open(&wisher).await;
    let peer = TestPeer::join_announcing(&server.url, "prober", 0).await;
    peer.client.upload_full(1, &[]).await.unwrap();
    let mut latencies = Vec::new();
    for k in 0..50u64 {
        let op = DeltaOp::Add(entry(
            &format!("probes/latencyprobe {k}.mp3"),
            1000 + k,
            &format!("probe{k}"),
        ));
        peer.client.upload_delta(k + 1, k + 2, &[op]).await.unwrap();
        let committed = Instant::now();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(30), events.next())
                .await
                .expect("a wish hit within 30 s")
                .unwrap()
                .unwrap();
            let envelope: EventEnvelope = serde_json::from_str(&event.data).unwrap();
            if matches!(
                envelope.event,
                peerdex_shared::social::Event::WishHit { .. }
            ) {
                break;
            }
        }
        latencies.push(committed.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "delta commit to wish_hit event:         p50 {:.0} ms, p99 {:.0} ms (commit interval 500 ms)",
        median(latencies.clone()),
        percentile(latencies, 0.99)
    );
    drop(events);
    server.stop().await;

    // 3. Event streams with presence churn.
    let server = TestServer::start_with(|c| {
        c.social.max_event_streams = streams + 16;
        c.accounts.accounts_per_ip_per_hour = u32::MAX;
        c.probe.registrations_per_ip_per_minute = u32::MAX;
        c.http.max_connections = streams * 2 + 64;
    })
    .await;
    let db = Db::open(&server.data.join(peerdex_server::server::DB_FILE)).unwrap();
    let mut clients = Vec::new();
    let mut keys = Vec::new();
    for i in 0..streams {
        let key = Identity::generate().unwrap();
        let client = sign_up(&server, &format!("s{i}"), &key).await;
        clients.push(client);
        keys.push(key);
    }
    // A ring of contacts: each account watches the next.
    for i in 0..streams {
        let me = db.account_by_name(&format!("s{i}")).unwrap().unwrap().id;
        let next = format!("s{}", (i + 1) % streams);
        db.request_contact(me, &next).unwrap();
        let them = db.account_by_name(&next).unwrap().unwrap().id;
        db.accept_contact(them, &format!("s{i}")).unwrap();
    }
    let before = rss_bytes();
    let mut opened = Vec::new();
    for client in &clients {
        opened.push(open(client).await);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    for mut stream in opened {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = stream.next().await {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    // Churn: a tenth of the devices come online, then go offline, over and over.
    let churners = (streams / 10).max(1);
    let cpu_start = cpu_secs();
    let started = Instant::now();
    let mut flips = 0u64;
    while started.elapsed() < Duration::from_secs(20) {
        let mut peers = Vec::new();
        for (i, key) in keys.iter().take(churners).enumerate() {
            let mut peer = TestPeer::with_identity(&server.url, &format!("d{i}"), 0, key.clone());
            peer.register().await;
            peers.push(peer);
            flips += 1;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        for peer in &peers {
            let _ = peer.client.logout().await;
        }
        drop(peers);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu = cpu_secs() - cpu_start;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{streams} event streams open: {:.1} KiB each (process RSS delta, client side included)",
        (after.saturating_sub(before)) as f64 / streams as f64 / 1024.0
    );
    println!(
        "presence churn: {flips} device sessions in {elapsed:.0} s, {} events delivered, \
         process CPU {:.1} % of one core ({:.0} µs per event)",
        received.load(std::sync::atomic::Ordering::Relaxed),
        cpu / elapsed * 100.0,
        cpu * 1e6 / received.load(std::sync::atomic::Ordering::Relaxed).max(1) as f64
    );
    server.stop().await;
}
