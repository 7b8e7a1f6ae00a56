//! What visibility scopes cost a search (issue 17): the search bench's query stream, in process,
//! against the data directory the `search` bench made (stop its server first), in three states:
//!
//! 1. `public`: every file public (the index skips the ACL check in every segment), a guest;
//! 2. `scoped, in 20`: half the files spread over 1,000 group ACLs, a viewer in 20 groups;
//! 3. `scoped, in all`: the same index, a viewer in every group (the same results as 1, so the
//!    whole difference is the per-document ACL check);
//! 4. `public, what the viewer in 20 sees`: the files that viewer cannot see deleted, the rest
//!    public, a guest: the same results as 2 without scopes (a viewer who sees fewer whole-word
//!    matches also makes more searches look for prefixes, with or without scopes).
//!
//! State 4 deletes files: run it on a copy of the data directory.
//!
//! The index part of each search (what the filter touches) is timed; states 1–3 run each query in
//! turn, `ROUNDS` times over (so noise falls on all of them alike), and the median round is reported. The data directory is left scoped, and
//! running it again starts by making it public again.
//!
//! `cargo run --release -p peerdex-benches --example scope_filter -- /tmp/pdx-1m 1000000 [QUERIES] [ROUNDS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use peerdex_benches::corpus::{Corpus, CorpusConfig};
use peerdex_server::db::{Db, DbResult};
use peerdex_server::index::{Indexer, IndexerConfig, OnlineFilter, SearchIndex, SearchSpec};
use peerdex_server::query::{self, QueryLimits};
use peerdex_server::scope::Scope;
use peerdex_shared::FileKind;

thread_local! {
    /// The first searches of the first round (cold maps), in state order.
    static FIRST: std::cell::RefCell<Vec<Duration>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Everyone;

impl OnlineFilter for Everyone {
    fn contains(&self, _peer: peerdex_server::db::PeerRef) -> bool {
        true
    }
}

const GROUPS: u64 = 1000;

fn exec(db: &Db, sql: &str) -> DbResult<()> {
    db.read(|conn| Ok(conn.execute_batch(sql)?))
}

/// Builds the index from scratch (as a new server does: no deleted documents left in it, so
/// every state is compared on equally compact segments) and waits for the indexer.
fn reindex(dir: &std::path::Path, db: &Arc<Db>) -> anyhow::Result<SearchIndex> {
    let _ = std::fs::remove_dir_all(dir.join("server/index"));
    let (index, watermark) = SearchIndex::open(&dir.join("server/index"))?;
    let indexer = Indexer::start(
        index.clone(),
        db.clone(),
        watermark,
        IndexerConfig {
            commit_interval: Duration::from_millis(500),
            writer_memory_bytes: 256 << 20,
        },
        None,
    )?;
    let started = Instant::now();
    while !db.index_ops_after(0, 1)?.is_empty() {
        std::thread::sleep(Duration::from_millis(500));
    }
    indexer.shutdown();
    eprintln!("reindexed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(SearchIndex::open(&dir.join("server/index"))?.0)
}

fn viewer(db: &Db, name: &str) -> anyhow::Result<Arc<Scope>> {
    let account = db
        .account_by_name(name)?
        .with_context(|| format!("no account {name}"))?;
    Ok(db.scope_of(Some(&account))?)
}

/// Runs the query stream once against every `(index, scope)` state, query by query: each query
/// goes to every state in turn (in an order that rotates), so a slow moment of this noisy machine
/// falls on all states alike. Returns each state's time and matches counted.
fn run(
    states: &[(&SearchIndex, &Arc<Scope>)],
    corpus: &Corpus,
    queries: u64,
) -> anyhow::Result<Vec<(Duration, u64)>> {
    let online: Arc<dyn OnlineFilter> = Arc::new(Everyone);
    let mut rng = corpus.query_stream(0);
    let limits = QueryLimits {
        max_query_bytes: 512,
        max_terms: 16,
    };
    let mut out = vec![(Duration::ZERO, 0); states.len()];
    for n in 0..queries as usize {
        let q = corpus.query(&mut rng);
        for turn in 0..states.len() {
            let i = (n + turn) % states.len();
            let (index, scope) = states[i];
            let spec = SearchSpec {
                plan: query::parse(&q.text, &limits)?,
                ext: q.ext.map(str::to_owned),
                kind: q.kind.and_then(FileKind::parse),
                min_size: q.min_size,
                max_size: None,
                media: Default::default(),
                max_prefix_expansions: 256,
                want: 20,
                scope: scope.clone(),
            };
            let started = Instant::now();
            let found = index.search(&spec, online.clone())?;
            if n == 0 && FIRST.with(|f| f.borrow().len()) < 3 * 2 {
                // The very first search of a state also builds its segments' listed-document maps.
                FIRST.with(|f| f.borrow_mut().push(started.elapsed()));
            }
            out[i].0 += started.elapsed();
            out[i].1 += found.total;
        }
    }
    Ok(out)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn median(mut rounds: Vec<Duration>) -> Duration {
    rounds.sort();
    rounds[rounds.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(
        args.next()
            .context("usage: DATA ENTRIES [QUERIES] [ROUNDS]")?,
    );
    let entries: u64 = args.next().context("ENTRIES is missing")?.parse()?;
    let queries: u64 = args.next().map_or(Ok(2000), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(5), |s| s.parse())?;
    // `keep`: leave out state 4, which deletes files, so the directory can be run again.
    let keep = args.next().as_deref() == Some("keep");
    let corpus = Corpus::new(CorpusConfig {
        seed: 7,
        catalogue: (entries / 20).max(1000),
        ..CorpusConfig::default()
    });
    let db = Arc::new(Db::open(&dir.join("server/peerdex.sqlite3"))?);

    // 1: all public. Its index is kept aside, to run beside the scoped one round by round.
    exec(&db, "UPDATE files SET acl = 0 WHERE acl != 0")?;
    drop(reindex(&dir, &db)?);
    let public_dir = dir.join("server/index-public");
    let _ = std::fs::remove_dir_all(&public_dir);
    copy_dir(&dir.join("server/index"), &public_dir)?;
    let guest = Arc::new(Scope::public_only());

    // 2 and 3: half the files in 1,000 groups.
    if db.account_by_name("viewer20")?.is_none() {
        let mut sql = String::from("BEGIN;");
        for g in 0..GROUPS {
            sql.push_str(&format!(
                "INSERT INTO groups (name, name_key, created_at) VALUES ('g{g}', 'g{g}', 0);
                 INSERT INTO acls (spec, locked, kind, target) VALUES ('group:g{g}', 0, 'group', 'g{g}');"
            ));
        }
        sql.push_str("COMMIT;");
        exec(&db, &sql)?;
        for name in ["viewer20", "viewerall"] {
            db.create_account(name, "$argon2id$v=19$m=64,t=1,p=1$x$y", "bench", None)?;
        }
        let mut sql = String::from("BEGIN;");
        for g in 0..GROUPS {
            sql.push_str(&format!(
                "INSERT INTO group_members (grp, account) SELECT g.id, a.id FROM groups g, accounts a
                 WHERE g.name_key = 'g{g}' AND a.name_key = 'viewerall';"
            ));
            if g % (GROUPS / 20) == 0 {
                sql.push_str(&format!(
                    "INSERT INTO group_members (grp, account) SELECT g.id, a.id FROM groups g, accounts a
                     WHERE g.name_key = 'g{g}' AND a.name_key = 'viewer20';"
                ));
            }
        }
        sql.push_str("COMMIT;");
        exec(&db, &sql)?;
    }
    // Every other file goes to one of the groups' ACLs.
    exec(
        &db,
        &format!(
            "UPDATE files SET acl = (SELECT min(id) FROM acls) + (id / 2) % {GROUPS} WHERE id % 2 = 0"
        ),
    )?;
    db.acls_changed();
    let index = reindex(&dir, &db)?;
    // The viewer in all groups searches its own copy of the scoped index: a query run twice in a
    // row on one index would find its second run's caches warm.
    let copy_dir_all = dir.join("server/index-scoped-copy");
    let _ = std::fs::remove_dir_all(&copy_dir_all);
    copy_dir(&dir.join("server/index"), &copy_dir_all)?;
    let (index_copy, _) = SearchIndex::open(&copy_dir_all)?;
    let (in20, inall) = (viewer(&db, "viewer20")?, viewer(&db, "viewerall")?);
    let (mut scoped20, mut scopedall): (Vec<Duration>, Vec<Duration>) = (Vec::new(), Vec::new());
    let (mut hits20, mut hitsall) = (0, 0);
    let (public_index, _) = SearchIndex::open(&public_dir)?;
    let mut public = Vec::new();
    let mut public_hits = 0;
    for _ in 0..rounds {
        let out = run(
            &[
                (&public_index, &guest),
                (&index, &in20),
                (&index_copy, &inall),
            ],
            &corpus,
            queries,
        )?;
        public.push(out[0].0);
        public_hits = out[0].1;
        scoped20.push(out[1].0);
        hits20 = out[1].1;
        scopedall.push(out[2].0);
        hitsall = out[2].1;
    }
    drop(index);
    drop(index_copy);
    let per = |d: Duration| d.as_secs_f64() * 1e3 / queries as f64;
    let base = median(public.clone());
    println!(
        "| state | index part per search, median of {rounds} rounds of {queries} | ratio to public | matches counted |"
    );
    println!("|---|---|---|---|");
    println!(
        "| public, guest | {:.3} ms | 1.00× | {public_hits} |",
        per(base)
    );
    for (name, rounds, hits) in [
        (
            "scoped, viewer in 20 of 1,000 groups",
            scoped20.clone(),
            hits20,
        ),
        ("scoped, viewer in all 1,000 groups", scopedall, hitsall),
    ] {
        let m = median(rounds);
        println!(
            "| {name} | {:.3} ms | {:.2}× | {hits} |",
            per(m),
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    let first = FIRST.with(|f| f.borrow().clone());
    println!(
        "first search of each state (cold: builds the listed-document maps): {:?}",
        first
            .iter()
            .take(3)
            .map(|d| format!("{:.1} ms", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
    );
    if keep {
        return Ok(());
    }
    // 4: only what the viewer in 20 sees, all public.
    exec(
        &db,
        "DELETE FROM files WHERE acl != 0 AND acl NOT IN (SELECT a.id FROM acls a
           JOIN groups g ON a.target = g.name_key JOIN group_members m ON m.grp = g.id
           JOIN accounts u ON u.id = m.account WHERE u.name_key = 'viewer20');
         UPDATE files SET acl = 0 WHERE acl != 0;",
    )?;
    let index = reindex(&dir, &db)?;
    let mut visible = Vec::new();
    let mut visible_hits = 0;
    for _ in 0..rounds {
        let out = run(&[(&index, &guest)], &corpus, queries)?;
        visible.push(out[0].0);
        visible_hits = out[0].1;
    }
    let m = median(visible);
    println!(
        "| public, only the files the viewer in 20 sees | {:.3} ms | {:.2}× | {visible_hits} |",
        per(m),
        m.as_secs_f64() / base.as_secs_f64()
    );
    let m20 = median(scoped20);
    println!(
        "scoped viewer in 20 vs the same visible files without scopes: {:.2}×",
        m20.as_secs_f64() / m.as_secs_f64()
    );
    Ok(())
}
