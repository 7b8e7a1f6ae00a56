//! Where a search's time goes at scale, by kind of query: runs the search bench's query stream
//! in-process against an existing data directory (made by the `search` bench; stop its server
//! first) and splits each search into the index part and the holders part (SQLite, or the holders
//! cache once a content was looked up; the first pass over the stream fills it). It also says
//! how many queries repeat an earlier one, and their share of the time, and what tantivy's own
//! top-documents collector takes for the same queries (the engine's floor).
//!
//! `cargo run --release -p peerdex-benches --example search_breakdown -- /tmp/pdx-10m 10000000`

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use peerdex_benches::corpus::{Corpus, CorpusConfig};
use peerdex_server::index::{OnlineFilter, SearchIndex, SearchSpec};
use peerdex_server::query::{self, QueryLimits};
use peerdex_shared::FileKind;

struct Everyone;

impl OnlineFilter for Everyone {
    fn contains(&self, _peer: peerdex_server::db::PeerRef) -> bool {
        true
    }
}

#[derive(Default)]
struct Category {
    queries: u64,
    index: Duration,
    sources: Duration,
    source_rows: u64,
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().context("usage: DATA ENTRIES [QUERIES]")?);
    let entries: u64 = args.next().context("ENTRIES is missing")?.parse()?;
    let queries: u64 = args.next().map_or(Ok(2000), |s| s.parse())?;
    let corpus = Corpus::new(CorpusConfig {
        seed: 7,
        catalogue: (entries / 20).max(1000),
        ..CorpusConfig::default()
    });
    let (index, _) = SearchIndex::open(&dir.join("server/index"))?;
    let db = peerdex_server::db::Db::open(&dir.join("server/peerdex.sqlite3"))?;
    let online: Arc<dyn OnlineFilter> = Arc::new(Everyone);
    let mut rng = corpus.query_stream(0);
    let mut categories: BTreeMap<String, Category> = BTreeMap::new();
    let mut distinct = HashSet::new();
    // Queries seen before in the stream, and their time: what a cache of results could save.
    let mut repeated = (0u64, Duration::ZERO);
    // The same queries through tantivy's own top-documents collector: the engine's floor.
    let mut engine_only = Duration::ZERO;
    // Picking the copy each hit is shown by (the most common name among matching copies).
    let mut shown = Duration::ZERO;
    for _ in 0..queries {
        let q = corpus.query(&mut rng);
        let repeat = !distinct.insert(format!("{q:?}"));
        let limits = QueryLimits {
            max_query_bytes: 512,
            max_terms: 16,
        };
        let spec = SearchSpec {
            plan: query::parse(&q.text, &limits)?,
            ext: q.ext.map(str::to_owned),
            kind: q.kind.and_then(FileKind::parse),
            min_size: q.min_size,
            max_size: None,
            media: Default::default(),
            max_prefix_expansions: 256,
            want: 20,
            scope: std::sync::Arc::new(peerdex_server::scope::Scope::public_only()),
        };
        let started = Instant::now();
        let found = index.search(&spec, online.clone())?;
        let searched = Instant::now();
        let page: Vec<_> = found.groups.iter().map(|g| g.content).collect();
        let holders = db.holders_of(&page)?;
        let resolved = Instant::now();
        for h in &holders {
            std::hint::black_box(peerdex_server::search::shown_place(
                h,
                |peer, _| online.contains(peer),
                Some(&spec.plan),
            ));
        }
        shown += resolved.elapsed();
        let resolved = Instant::now();
        index.top_documents_only(&spec)?;
        engine_only += resolved.elapsed();
        let filter = match (q.kind, q.ext, q.min_size) {
            (Some(_), _, _) => "kind",
            (_, Some(_), _) => "ext",
            (_, _, Some(_)) => "size",
            _ => "-",
        };
        let page = if found.groups.len() < 20 {
            "short"
        } else {
            "full"
        };
        let words = q.text.split(' ').count();
        let c = categories
            .entry(format!("{words} word(s), filter {filter}, {page} page"))
            .or_default();
        c.queries += 1;
        c.index += searched - started;
        c.sources += resolved - searched;
        c.source_rows += holders.iter().map(|h| h.copies.len() as u64).sum::<u64>();
        if repeat {
            repeated.0 += 1;
            repeated.1 += resolved - started;
        }
    }
    println!("{} distinct queries of {queries}", distinct.len());
    println!("| queries | n | index, mean | sources, mean | source rows per query |");
    println!("|---|---|---|---|---|");
    let ms = |d: Duration, n: u64| d.as_secs_f64() * 1e3 / n as f64;
    let (mut index_total, mut sources_total) = (Duration::ZERO, Duration::ZERO);
    for (name, c) in &categories {
        index_total += c.index;
        sources_total += c.sources;
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {} |",
            c.queries,
            ms(c.index, c.queries),
            ms(c.sources, c.queries),
            c.source_rows / c.queries
        );
    }
    println!(
        "| all | {queries} | {:.2} ms | {:.2} ms | |",
        ms(index_total, queries),
        ms(sources_total, queries)
    );
    println!(
        "choosing the copy each hit is shown by: {:.3} ms per query",
        ms(shown, queries)
    );
    println!(
        "tantivy's top {} documents alone (no grouping, filters or online check, whole words \
         only): {:.2} ms per query",
        20,
        ms(engine_only, queries)
    );
    println!(
        "repeated queries: {} of {queries} ({:.0}%), {:.0}% of the index and holders time",
        repeated.0,
        repeated.0 as f64 * 100.0 / queries as f64,
        repeated.1.as_secs_f64() * 100.0 / (index_total + sources_total).as_secs_f64()
    );
    Ok(())
}
