//! What media tags cost search (issue 19): the search bench's corpus and query stream, in
//! process, on two on-disk indexes of the same N entries built in the same run: one without
//! tags (as before), one with every music file tagged (artist, album, title, genre, year, track,
//! duration, bitrate, lossless). Each query goes to both in turn (the order alternates), so noise
//! falls on both alike. Reports the index part of a search, p50/p95/p99 per index, and each
//! index's size on disk; then tag queries (`artist:`, `--min-bitrate`, `--lossless`) on the
//! tagged index.
//!
//! `cargo run --release -p peerdex-benches --example media_search -- DIR [ENTRIES] [QUERIES]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use peerdex_benches::corpus::{Corpus, CorpusConfig};
use peerdex_benches::dir_bytes;
use peerdex_server::db::{AclRef, ContentRef, FileDoc, FileRef, PeerRef};
use peerdex_server::index::{MediaFilters, OnlineFilter, SearchIndex, SearchSpec};
use peerdex_server::query::{self, QueryLimits};
use peerdex_server::scope::Scope;
use peerdex_shared::FileKind;

struct Everyone;

impl OnlineFilter for Everyone {
    fn contains(&self, _peer: PeerRef) -> bool {
        true
    }
}

const PEERS: u64 = 1000;

fn docs(corpus: &Corpus, entries: u64, tags: bool) -> Vec<FileDoc> {
    let per_peer = (entries / PEERS).max(1) as usize;
    let mut contents = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(entries as usize);
    for peer in 0..PEERS {
        for entry in corpus.peer_list_with(peer, per_peer, tags) {
            let next = contents.len() as i64;
            let content = *contents.entry((entry.hash, entry.size)).or_insert(next);
            out.push(FileDoc {
                id: FileRef(out.len() as i64),
                peer: PeerRef(peer as i64),
                content: ContentRef(content),
                share: entry.share,
                path: entry.path,
                size: entry.size,
                acl: AclRef::PUBLIC,
                tags: entry.tags,
            });
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn report(label: &str, mut times: Vec<Duration>) -> Duration {
    times.sort();
    let (p50, p95, p99) = (
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 0.99),
    );
    println!(
        "{label:<28} p50 {:>7.3} ms  p95 {:>7.3} ms  p99 {:>7.3} ms",
        p50.as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    p50
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("DIR"));
    let entries: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let queries: u64 = args.next().map_or(Ok(5000), |s| s.parse())?;
    let corpus = Corpus::new(CorpusConfig {
        seed: 7,
        catalogue: (entries / 20).max(1000),
        ..CorpusConfig::default()
    });
    let mut indexes = Vec::new();
    for tags in [false, true] {
        let started = Instant::now();
        let docs = docs(&corpus, entries, tags);
        let n = docs.len();
        let path = dir.join(if tags { "tagged" } else { "plain" });
        let index = SearchIndex::build_from(&path, docs)?;
        let bytes = dir_bytes(&path);
        println!(
            "{:<7} index: {n} entries, built in {:.0} s, {:.1} MiB on disk ({:.0} bytes/entry)",
            if tags { "tagged" } else { "plain" },
            started.elapsed().as_secs_f64(),
            bytes as f64 / (1 << 20) as f64,
            bytes as f64 / n as f64
        );
        indexes.push(index);
    }
    let online: Arc<dyn OnlineFilter> = Arc::new(Everyone);
    let scope = Arc::new(Scope::public_only());
    let limits = QueryLimits {
        max_query_bytes: 512,
        max_terms: 16,
    };
    let spec_of = |text: &str, kind: Option<&str>, ext: Option<&str>, min_size, media| {
        Ok::<_, anyhow::Error>(SearchSpec {
            plan: query::parse(text, &limits)?,
            ext: ext.map(str::to_owned),
            kind: kind.and_then(FileKind::parse),
            min_size,
            max_size: None,
            media,
            max_prefix_expansions: 256,
            want: 20,
            scope: scope.clone(),
        })
    };
    let mut rng = corpus.query_stream(0);
    let mut times = [Vec::new(), Vec::new()];
    let mut hits = [0usize, 0usize];
    for n in 0..queries as usize {
        let q = corpus.query(&mut rng);
        let spec = spec_of(&q.text, q.kind, q.ext, q.min_size, MediaFilters::default())?;
        for turn in 0..2 {
            let i = (n + turn) % 2;
            let started = Instant::now();
            let found = indexes[i].search(&spec, online.clone())?;
            times[i].push(started.elapsed());
            hits[i] += found.groups.len();
        }
    }
    println!("{queries} queries of the search bench's stream, index part only, want 20:");
    let [plain, tagged] = times;
    let a = report("plain index", plain);
    let b = report("tagged index", tagged);
    println!(
        "tagged / plain p50: {:.2}x; results {} vs {}",
        b.as_secs_f64() / a.as_secs_f64(),
        hits[0],
        hits[1]
    );
    // Tag queries on the tagged index: artist words and filters.
    let mut rng = corpus.query_stream(1);
    let mut kinds: [(&str, Vec<Duration>); 3] = [
        ("artist:WORD", Vec::new()),
        ("WORD --min-bitrate 256", Vec::new()),
        ("WORD --lossless", Vec::new()),
    ];
    for _ in 0..queries / 3 {
        let q = corpus.query(&mut rng);
        let Some(word) = q.text.split_whitespace().next() else {
            continue;
        };
        let specs = [
            spec_of(
                &format!("artist:{word}"),
                None,
                None,
                None,
                MediaFilters::default(),
            ),
            spec_of(
                word,
                None,
                None,
                None,
                MediaFilters {
                    min_bitrate: Some(256),
                    ..MediaFilters::default()
                },
            ),
            spec_of(
                word,
                None,
                None,
                None,
                MediaFilters {
                    lossless: Some(true),
                    ..MediaFilters::default()
                },
            ),
        ];
        for ((_, times), spec) in kinds.iter_mut().zip(specs) {
            let Ok(spec) = spec else { continue };
            let started = Instant::now();
            indexes[1].search(&spec, online.clone())?;
            times.push(started.elapsed());
        }
    }
    for (label, times) in kinds {
        if !times.is_empty() {
            report(label, times);
        }
    }
    Ok(())
}
