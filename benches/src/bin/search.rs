//! Search under load on a large index: thousands of simulated peers, concurrent searching
//! clients, churn, and the server's memory and disk per entry.
//!
//! `cargo build --release -p peerdex-server && cargo run --release -p peerdex-benches --bin search
//! -- --entries 1000000 --peers 1000 --data /tmp/pdx-1m`
//!
//! 1. Runs the release `peerdex-server` as a child process on a data directory under `--data`.
//!    The first time, `--peers` simulated peers register and upload lists drawn from the
//!    synthetic corpus (`peerdex_benches::corpus`), `--entries` in total. Later runs reuse the
//!    directory (the peers' keys are kept next to it).
//! 2. Restarts the server (so its memory is that of serving, not of ingesting), brings every peer
//!    online with a reconnect (an unchanged list: no upload), and keeps them online with
//!    heartbeats at the server's interval for the whole run.
//! 3. For each client count (`--clients 1,16,64`): closed-loop searches (a client sends its next
//!    query when the previous answer is read) for `--seconds`, after a short warm-up.
//!    Reports QPS and p50/p95/p99, and the server's CPU time over the same window: cores busy
//!    and CPU per search (what capacity on this machine comes down to).
//! 4. Churn at `--churn-clients` clients: peers log out and come back (reconnect with an unchanged
//!    list) at `--churn-per-sec`; the p99 is compared with the same clients without churn.
//! 5. The server's resident memory (anonymous and file-backed) and the data directory's size,
//!    per entry.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use peerdex_benches::corpus::{Corpus, CorpusConfig, Query};
use peerdex_benches::dir_bytes;
use peerdex_client::server_api::SearchQuery;
use peerdex_client::{Identity, ServerClient};
use peerdex_tests::ServerProcess;
use tokio::sync::Semaphore;

#[derive(Parser, Debug)]
struct Args {
    /// Entries in the index, over all peers.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Simulated peers holding them.
    #[arg(long, default_value_t = 1_000)]
    peers: u64,
    /// Directory for the server's data and the peers' keys (reused when it matches).
    #[arg(long)]
    data: PathBuf,
    /// Concurrent searching clients, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    clients: Vec<usize>,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Clients searching during the churn run (and its no-churn reference).
    #[arg(long, default_value_t = 16)]
    churn_clients: usize,
    /// Peers going offline (and coming back 5 s later) per second during churn; 0 skips churn.
    #[arg(long, default_value_t = 20)]
    churn_per_sec: u64,
    /// The server binary (default: `peerdex-server` next to this program).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Seed of the synthetic corpus.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Compare the search page (`/?q=`) with the API: each client count runs the API and then
    /// the page on the same query stream, words only, 25 results (the page's size).
    #[arg(long)]
    page: bool,
}

/// What a run's clients ask for.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// `GET /api/v1/search` as the corpus's query says (filters included), 20 results.
    Api,
    /// `GET /api/v1/search`, words only, 25 results: the page's search.
    ApiAsPage,
    /// `GET /?q=`: the HTML search page.
    Page,
}

/// What the data directory holds, so a later run with other parameters does not reuse it.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Marker {
    entries: u64,
    peers: u64,
    seed: u64,
}

const CONFIG: &str = r#"
[probe]
registrations_per_ip_per_minute = 1000000
[index]
commit_interval_ms = 1000
"#;

fn corpus(seed: u64, entries: u64) -> Corpus {
    Corpus::new(CorpusConfig {
        seed,
        // The catalogue of popular items grows with the index, as in a real network.
        catalogue: (entries / 20).max(1_000),
        ..CorpusConfig::default()
    })
}

fn list_len(args: &Args, peer: u64) -> usize {
    // Spread the remainder over the first peers.
    (args.entries / args.peers + u64::from(peer < args.entries % args.peers)) as usize
}

struct Peer {
    index: u64,
    identity: Identity,
    client: ServerClient,
}

impl Peer {
    fn nick(&self) -> String {
        format!("sim{}", self.index)
    }
}

fn load_peers(args: &Args, base: &ServerClient) -> anyhow::Result<Vec<Peer>> {
    let keys = args.data.join("peers");
    std::fs::create_dir_all(&keys)?;
    (0..args.peers)
        .map(|index| {
            let identity = Identity::load_or_create(&keys.join(format!("{index}.key")))
                .with_context(|| format!("key of peer {index}"))?;
            Ok(Peer {
                index,
                identity,
                client: base.clone(),
            })
        })
        .collect()
}

/// Registers every peer; uploads its list when the server does not hold it (first run).
async fn bring_online(args: &Args, peers: &mut [Peer], corpus: &Arc<Corpus>) -> anyhow::Result<()> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    let (uploaded, entries) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    for peer in peers.iter_mut() {
        let mut client = peer.client.clone();
        let (identity, nick, index) = (peer.identity.clone(), peer.nick(), peer.index);
        let (gate, corpus, uploaded, entries) = (
            gate.clone(),
            corpus.clone(),
            uploaded.clone(),
            entries.clone(),
        );
        let len = list_len(args, index);
        tasks.spawn(async move {
            let _turn = gate.acquire_owned().await?;
            let answer = client.register(&identity, &nick, 0).await?;
            if answer.list_version != Some(1) || answer.entries != len as u64 {
                let list = corpus.peer_list(index, len);
                client.upload_full(1, &list).await?;
                uploaded.fetch_add(1, Ordering::Relaxed);
                let total = entries.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
                if index % 100 == 99 {
                    eprintln!("uploaded {total} entries");
                }
            }
            anyhow::Ok((index, client))
        });
    }
    while let Some(done) = tasks.join_next().await {
        let (index, client) = done??;
        peers[index as usize].client = client;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (uploaded, entries) = (
        uploaded.load(Ordering::Relaxed),
        entries.load(Ordering::Relaxed),
    );
    if uploaded > 0 {
        println!(
            "| ingest: {uploaded} peers uploaded {entries} entries (to 2xx) | {elapsed:.1} s, {:.0} entries/s |",
            entries as f64 / elapsed
        );
    } else {
        println!(
            "| reconnect of {} peers with unchanged lists (4 at a time) | {elapsed:.1} s, {:.1} ms each |",
            peers.len(),
            elapsed * 1e3 * 4.0 / peers.len() as f64
        );
    }
    Ok(())
}

/// Heartbeats every peer once per `interval`, spread evenly, until `stop`.
fn heartbeats(peers: Arc<Vec<Peer>>, interval: Duration, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let gap = interval / peers.len().max(1) as u32;
        let mut tick = tokio::time::interval(gap.max(Duration::from_micros(100)));
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let client = peers[i % peers.len()].client.clone();
            tokio::spawn(async move {
                // A peer logged out by churn answers 401 until it is back: expected.
                let _ = client.heartbeat().await;
            });
            i += 1;
        }
    });
}

fn to_request(q: &Query) -> SearchQuery {
    SearchQuery {
        q: q.text.clone(),
        kind: q.kind.map(str::to_owned),
        ext: q.ext.map(str::to_owned),
        min_size: q.min_size,
        limit: Some(20),
        ..SearchQuery::default()
    }
}

struct RunResult {
    latencies: Vec<Duration>,
    errors: u64,
    empty: u64,
    elapsed: Duration,
    /// CPU time the server used while latencies were recorded.
    server_cpu: Duration,
}

impl RunResult {
    fn at(&self, q: f64) -> f64 {
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i].as_secs_f64() * 1e3
    }

    fn row(&self, label: &str) -> String {
        format!(
            "| {label} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.0} % | {:.2} | {:.2} ms |",
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            self.at(0.50),
            self.at(0.95),
            self.at(0.99),
            self.errors,
            self.empty as f64 * 100.0 / self.latencies.len().max(1) as f64,
            self.server_cpu.as_secs_f64() / self.elapsed.as_secs_f64(),
            self.server_cpu.as_secs_f64() * 1e3 / self.latencies.len() as f64,
        )
    }
}

/// What every search run shares: the server (URL and process id), the corpus and the timing.
struct Runs<'a> {
    url: &'a str,
    server: u32,
    corpus: &'a Arc<Corpus>,
    warmup: Duration,
    measure: Duration,
}

/// `clients` closed-loop clients for `warmup` (not recorded) then `measure`; `run` picks their
/// query streams.
async fn search_run(
    runs: &Runs<'_>,
    clients: usize,
    run: u64,
    target: Target,
) -> anyhow::Result<RunResult> {
    let Runs {
        url,
        server,
        corpus,
        warmup,
        measure,
    } = *runs;
    let start = Instant::now();
    let (record_from, deadline) = (start + warmup, start + warmup + measure);
    let server_cpu = tokio::spawn(async move {
        tokio::time::sleep_until(record_from.into()).await;
        let before = cpu_time(server);
        tokio::time::sleep_until(deadline.into()).await;
        cpu_time(server).saturating_sub(before)
    });
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let client = ServerClient::new(url)?;
        let pages = peerdex_tests::http();
        let page_url = format!("{url}/");
        let corpus = corpus.clone();
        tasks.spawn(async move {
            let mut stream = corpus.query_stream(run * 1000 + c as u64);
            let (mut latencies, mut errors, mut empty) = (Vec::new(), 0u64, 0u64);
            loop {
                let mut request = to_request(&corpus.query(&mut stream));
                if target != Target::Api {
                    request = SearchQuery {
                        q: request.q,
                        limit: Some(25),
                        ..SearchQuery::default()
                    };
                }
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                let answer: anyhow::Result<bool> = match target {
                    Target::Page => {
                        async {
                            let response = pages
                                .get(&page_url)
                                .query(&[("q", &request.q)])
                                .send()
                                .await?
                                .error_for_status()?;
                            Ok(response.text().await?.contains("Nothing found"))
                        }
                        .await
                    }
                    _ => client
                        .search(&request)
                        .await
                        .map(|a| a.hits.is_empty())
                        .map_err(anyhow::Error::from),
                };
                if sent >= record_from {
                    match answer {
                        Ok(nothing) => {
                            latencies.push(sent.elapsed());
                            empty += u64::from(nothing);
                        }
                        Err(e) => {
                            errors += 1;
                            if errors <= 3 {
                                eprintln!("search {:?}: {e}", request.q);
                            }
                        }
                    }
                }
            }
            (latencies, errors, empty)
        });
    }
    let mut result = RunResult {
        latencies: Vec::new(),
        errors: 0,
        empty: 0,
        elapsed: measure,
        server_cpu: Duration::ZERO,
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors, empty) = done?;
        result.latencies.extend(latencies);
        result.errors += errors;
        result.empty += empty;
    }
    result.server_cpu = server_cpu.await?;
    if result.latencies.is_empty() {
        bail!("no search answered in {measure:?}");
    }
    result.latencies.sort();
    Ok(result)
}

/// Peers log out and come back 5 s later, `per_sec` of them per second, until `stop`.
fn churn(
    peers: Arc<Vec<Peer>>,
    per_sec: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / per_sec.max(1) as u32);
        let mut next = 0usize;
        let cycles = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            // Walk the peers with a stride so neighbours (similar lists) do not leave together.
            let peer = &peers[(next * 7919) % peers.len()];
            next += 1;
            let (mut client, identity, nick) =
                (peer.client.clone(), peer.identity.clone(), peer.nick());
            let cycles = cycles.clone();
            tasks.spawn(async move {
                if client.logout().await.is_ok() {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    if client.register(&identity, &nick, 0).await.is_ok() {
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        cycles.load(Ordering::Relaxed)
    })
}

/// CPU time (user and system, all threads) process `pid` has used so far; zero if unreadable.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3, the state;
    // utime and stime are fields 14 and 15, in clock ticks (USER_HZ, 100 on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A process's memory in bytes: `[Pss_Anon, Pss_File, VmHWM]`. Proportional set sizes, because
/// SQLite's readers each map the same database file: plain RSS would count a page once per reader.
fn memory_of(pid: u32) -> [u64; 3] {
    let read = |file: &str, key: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    [
        read("smaps_rollup", "Pss_Anon:"),
        read("smaps_rollup", "Pss_File:"),
        read("status", "VmHWM:"),
    ]
}

fn memory_row(label: &str, pid: u32, entries: u64) {
    let [anon, file, peak] = memory_of(pid);
    let mib = |b: u64| b as f64 / 1048576.0;
    println!(
        "| server memory {label} | heap (anonymous) {:.0} MiB, {:.0} B/entry; mapped files (page cache) {:.0} MiB, {:.0} B/entry; peak RSS {:.0} MiB |",
        mib(anon),
        anon as f64 / entries as f64,
        mib(file),
        file as f64 / entries as f64,
        mib(peak)
    );
}

fn server_binary(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.server {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("bench has no folder")?
            .join("peerdex-server"),
    };
    if !path.exists() {
        bail!(
            "{} is missing: build it first with `cargo build --release -p peerdex-server`",
            path.display()
        );
    }
    Ok(path)
}

async fn wait_searchable(base: &ServerClient, corpus: &Corpus, args: &Args) -> anyhow::Result<()> {
    // The last peer's last unique item is among the last documents indexed.
    let last = args.peers - 1;
    let list = corpus.peer_list(last, list_len(args, last));
    let probe = list.last().context("empty list")?;
    let name = probe.path.rsplit('/').next().unwrap_or(&probe.path);
    let words: String = name
        .rsplit_once('.')
        .map_or(name, |(stem, _)| stem)
        .to_lowercase();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3600) {
        let answer = base
            .search(&SearchQuery {
                q: format!("\"{words}\""),
                limit: Some(100),
                ..SearchQuery::default()
            })
            .await?;
        if answer.hits.iter().any(|h| h.hash == probe.hash) {
            println!(
                "| searchable (tantivy committed) after the last upload | {:.1} s |",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the last upload did not become searchable within an hour")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.peers == 0 || args.entries < args.peers {
        bail!("need at least one peer and one entry per peer");
    }
    let binary = server_binary(&args)?;
    std::fs::create_dir_all(&args.data)?;
    let data = args.data.join("server");
    let config = args.data.join("server.toml");
    std::fs::write(&config, CONFIG)?;
    let marker_path = args.data.join("corpus.json");
    let marker = Marker {
        entries: args.entries,
        peers: args.peers,
        seed: args.seed,
    };
    let reuse = std::fs::read(&marker_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Marker>(&b).ok())
        .is_some_and(|m| m == marker);
    if !reuse && data.exists() {
        std::fs::remove_dir_all(&data)?;
        std::fs::remove_dir_all(args.data.join("peers")).ok();
    }
    let corpus = Arc::new(corpus(args.seed, args.entries));
    println!(
        "peerdex search bench: {} entries, {} peers, seed {}, {} vocabulary words",
        args.entries,
        args.peers,
        args.seed,
        corpus.vocabulary().len()
    );
    println!("| figure | result |\n|---|---|");

    if !reuse {
        let server = ServerProcess::spawn(&binary, &data, Some(&config));
        let base = ServerClient::new(&server.url)?;
        let mut peers = load_peers(&args, &base)?;
        bring_online(&args, &mut peers, &corpus).await?;
        wait_searchable(&base, &corpus, &args).await?;
        memory_row("after ingest", server.child.id(), args.entries);
        let status = server.terminate();
        if !status.success() {
            bail!("server exited with {status} after ingest");
        }
        std::fs::write(&marker_path, serde_json::to_vec(&marker)?)?;
    }

    let server = ServerProcess::spawn(&binary, &data, Some(&config));
    let pid = server.child.id();
    let base = ServerClient::new(&server.url)?;
    let stats = base.stats().await?;
    if stats.entries != args.entries {
        bail!(
            "the server holds {} entries, expected {}",
            stats.entries,
            args.entries
        );
    }
    println!(
        "| entries / distinct contents / peers | {} / {} / {} |",
        stats.entries, stats.distinct_contents, stats.peers_known
    );
    let disk = dir_bytes(&data);
    println!(
        "| data directory (SQLite + tantivy) | {:.1} MiB, {:.0} B/entry |",
        disk as f64 / 1048576.0,
        disk as f64 / args.entries as f64
    );
    let mut peers = load_peers(&args, &base)?;
    bring_online(&args, &mut peers, &corpus).await?;
    let peers = Arc::new(peers);
    let stop = Arc::new(AtomicBool::new(false));
    heartbeats(peers.clone(), Duration::from_secs(30), stop.clone());
    memory_row("with all peers online", pid, args.entries);

    println!(
        "\n| clients | QPS | p50 | p95 | p99 | errors | empty answers | server cores busy | server CPU per search |\n|---|---|---|---|---|---|---|---|---|"
    );
    let runs = Runs {
        url: &server.url,
        server: pid,
        corpus: &corpus,
        warmup: Duration::from_secs(3),
        measure: Duration::from_secs(args.seconds),
    };
    let mut reference = None;
    for (run, &clients) in args.clients.iter().enumerate() {
        if args.page {
            for (target, label) in [(Target::ApiAsPage, "API"), (Target::Page, "page")] {
                let result = search_run(&runs, clients, run as u64, target).await?;
                println!("{}", result.row(&format!("{clients}, {label}")));
            }
            continue;
        }
        let result = search_run(&runs, clients, run as u64, Target::Api).await?;
        println!("{}", result.row(&clients.to_string()));
        if clients == args.churn_clients {
            reference = Some(result);
        }
    }
    if args.churn_per_sec > 0 {
        let reference = match reference {
            Some(r) => r,
            None => search_run(&runs, args.churn_clients, 100, Target::Api).await?,
        };
        let churn_stop = Arc::new(AtomicBool::new(false));
        let churning = churn(peers.clone(), args.churn_per_sec, churn_stop.clone());
        let during = search_run(&runs, args.churn_clients, 101, Target::Api).await?;
        churn_stop.store(true, Ordering::Relaxed);
        let cycles = churning.await?;
        println!(
            "{}",
            during.row(&format!(
                "{} with churn ({} peers/s offline and back)",
                args.churn_clients, args.churn_per_sec
            ))
        );
        println!(
            "\nchurn: {cycles} peers went offline and came back; p99 {:.2} ms vs {:.2} ms without churn: {:.2}×",
            during.at(0.99),
            reference.at(0.99),
            during.at(0.99) / reference.at(0.99)
        );
    }
    memory_row("after the search runs", pid, args.entries);
    stop.store(true, Ordering::Relaxed);
    let status = server.terminate();
    if !status.success() {
        bail!("server exited with {status}");
    }
    Ok(())
}
