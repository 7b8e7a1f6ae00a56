//! A load generator for the index server: N simulated agents register and upload lists of
//! thousands of files, heartbeat, and some reconnect, while M clients search continuously.
//! It reports latency percentiles per operation and every error. Used by the e2e suite (zero
//! errors at N=200, M=50 for 30 s) and by `benches/src/bin/load.rs` (numbers for BENCHMARKS.md).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use peerdex_client::server_api::SearchQuery;
use peerdex_client::{Identity, ServerClient};
use peerdex_shared::FileHash;
use peerdex_shared::api::{ListEntry, MediaTags};

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Simulated agents.
    pub agents: usize,
    /// Files in each agent's list.
    pub files_per_agent: usize,
    /// Clients searching continuously.
    pub clients: usize,
    /// How long the searches (and heartbeats, reconnects) go on.
    pub duration: Duration,
    /// One agent in this many reconnects every few seconds.
    pub reconnect_one_in: usize,
}

/// Latencies per operation and the errors seen.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Operation name → latencies.
    pub latencies: BTreeMap<&'static str, Vec<Duration>>,
    /// Every error, with the operation.
    pub errors: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// (count, p50, p95, p99) of one operation.
    pub fn percentiles(&self, op: &str) -> Option<(usize, Duration, Duration, Duration)> {
        let mut values = self.latencies.get(op)?.clone();
        if values.is_empty() {
            return None;
        }
        values.sort();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some((values.len(), at(0.50), at(0.95), at(0.99)))
    }

    /// One line per operation: count, rate, p50/p95/p99.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for op in self.latencies.keys() {
            if let Some((n, p50, p95, p99)) = self.percentiles(op) {
                out.push_str(&format!(
                    "{op:>10}: {n:>7} ops, {:>8.0}/s, p50 {:>7.2} ms, p95 {:>7.2} ms, p99 {:>7.2} ms\n",
                    n as f64 / self.elapsed.as_secs_f64(),
                    p50.as_secs_f64() * 1e3,
                    p95.as_secs_f64() * 1e3,
                    p99.as_secs_f64() * 1e3
                ));
            }
        }
        out.push_str(&format!("errors: {}\n", self.errors.len()));
        out
    }
}

/// Shared collector.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<LoadReport>>);

impl Recorder {
    fn record<T, E: std::fmt::Display>(
        &self,
        op: &'static str,
        started: Instant,
        result: Result<T, E>,
    ) -> Option<T> {
        let elapsed = started.elapsed();
        let mut report = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(value) => {
                report.latencies.entry(op).or_default().push(elapsed);
                Some(value)
            }
            Err(e) => {
                report.errors.push(format!("{op}: {e}"));
                None
            }
        }
    }
}

const WORDS: [&str; 24] = [
    "love", "night", "summer", "blue", "river", "dance", "live", "remix", "piano", "sonata",
    "rain", "city", "dream", "fire", "gold", "heart", "moon", "ocean", "road", "star", "사랑",
    "노래", "café", "déjà",
];

/// Deterministic pseudo-random numbers (no dependency, reproducible runs).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Skewed towards small indexes (popular words are searched more).
    fn zipf_index(&mut self, len: usize) -> usize {
        let r = (self.next() % 1000) as f64 / 1000.0;
        ((r * r) * len as f64) as usize % len
    }
}

fn list(agent: usize, files: usize) -> Vec<ListEntry> {
    let mut rng = Rng(0x9E37_79B9 ^ (agent as u64 + 1));
    (0..files)
        .map(|f| {
            let a = WORDS[rng.zipf_index(WORDS.len())];
            let b = WORDS[rng.zipf_index(WORDS.len())];
            // Popular content is shared by many agents: the same hash for the same (f % 50).
            let content = if f % 10 == 0 {
                format!("popular-{}", f % 50)
            } else {
                format!("agent{agent}-file{f}")
            };
            ListEntry {
                share: "music".into(),
                path: format!("artist {}/{a} {b} {f}.mp3", agent % 40),
                size: 3_000_000 + f as u64,
                mtime: 1_700_000_000,
                hash: FileHash::from_bytes(*blake3::hash(content.as_bytes()).as_bytes()),
                tags: MediaTags::default(),
                visibility: Default::default(),
            }
        })
        .collect()
}

/// Runs the load against the server at `url`.
pub async fn run(url: &str, config: LoadConfig) -> LoadReport {
    let recorder = Recorder::default();
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut tasks = Vec::new();

    for agent in 0..config.agents {
        let (url, recorder, config) = (url.to_owned(), recorder.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(identity) = Identity::generate() else {
                return;
            };
            let Ok(mut client) = ServerClient::new(&url) else {
                return;
            };
            let nick = format!("load{agent}");
            let t = Instant::now();
            let registered = client.register(&identity, &nick, 0).await;
            if recorder.record("register", t, registered).is_none() {
                return;
            }
            let entries = list(agent, config.files_per_agent);
            let t = Instant::now();
            let uploaded = client.upload_full(1, &entries).await;
            recorder.record("upload", t, uploaded);
            let reconnects = config.reconnect_one_in > 0 && agent % config.reconnect_one_in == 0;
            let mut beat = 0u64;
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                beat += 1;
                if reconnects && beat.is_multiple_of(6) {
                    // A reconnect with an unchanged list: one registration, no upload.
                    let t = Instant::now();
                    let again = client.register(&identity, &nick, 0).await;
                    if let Some(answer) = recorder.record("reconnect", t, again)
                        && answer.list_version != Some(1)
                    {
                        recorder.record::<(), _>(
                            "reconnect",
                            t,
                            Err(format!(
                                "list version {:?} after reconnect",
                                answer.list_version
                            )),
                        );
                    }
                } else {
                    let t = Instant::now();
                    let beat = client.heartbeat().await;
                    recorder.record("heartbeat", t, beat);
                }
            }
        }));
    }

    for c in 0..config.clients {
        let (url, recorder) = (url.to_owned(), recorder.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(client) = ServerClient::new(&url) else {
                return;
            };
            let mut rng = Rng(0xC0FF_EE00 + c as u64);
            while Instant::now() < deadline {
                let words = 1 + (rng.next() % 3) as usize;
                let q: Vec<&str> = (0..words)
                    .map(|_| WORDS[rng.zipf_index(WORDS.len())])
                    .collect();
                let query = SearchQuery {
                    q: q.join(" "),
                    kind: rng.next().is_multiple_of(5).then(|| "audio".to_owned()),
                    limit: Some(20),
                    ..Default::default()
                };
                let t = Instant::now();
                let result = client.search(&query).await;
                recorder.record("search", t, result);
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            recorder
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .errors
                .push(format!("task failed: {e}"));
        }
    }
    let mut report = std::mem::take(&mut *recorder.0.lock().unwrap_or_else(|p| p.into_inner()));
    report.elapsed = started.elapsed();
    report
}
