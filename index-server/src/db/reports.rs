//! What downloaders report about their sources (PROTOCOL §11.3), and the quarantine it leads
//! to.
//!
//! A report row is one reporter's word about one source for one content and one outcome kind:
//! repeating it changes nothing but its time, so weight comes only from distinct reporters (a
//! reporter is its account when its key is linked to one, else its key). A source that sent data
//! failing verification to `quarantine.reporters` distinct reporters is quarantined for that
//! content; one quarantined for `quarantine.contents_for_all` contents is quarantined for all.
//! Either lasts until an admin clears it. A reporter whose bad-data claims were contradicted
//! (others downloaded the same content from the same source, verified, and nobody else
//! complained) on two or more occasions is discredited: its bad-data claims count no more.
//!
//! Sources are ranked by what reporters said: the `Reliability` of each peer (distinct
//! reporters of verified downloads, of failures and of bad data, and the median rate reported).
//! Both are read through a snapshot: the quarantine at most 2 s old, so the operator CLI's
//! `admin quarantine clear`, writing from another process, takes effect within 2 s; the
//! reliability, a pass over all reports, at most every 10 s and only after new reports.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use peerdex_shared::api::{OutcomeKind, ReportResponse, TransferReport};
use peerdex_shared::{FileHash, PeerId};
use rusqlite::{OptionalExtension, params};

use super::{Db, DbResult, PeerRef, unix_now};

/// Version 6 of the schema: source reports and the quarantine.
pub const VERSION_6: &str = "
CREATE TABLE source_reports (
    reporter TEXT NOT NULL,
    reporter_key BLOB NOT NULL,
    target INTEGER NOT NULL,
    hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    bytes INTEGER NOT NULL DEFAULT 0,
    rate INTEGER,
    piece INTEGER,
    at INTEGER NOT NULL,
    PRIMARY KEY (reporter, target, hash, kind)
) WITHOUT ROWID;
CREATE INDEX source_reports_target ON source_reports (target, hash, kind);
CREATE INDEX source_reports_recent ON source_reports (reporter_key, at);
CREATE TABLE quarantine (
    peer INTEGER NOT NULL,
    hash BLOB NOT NULL,
    reason TEXT NOT NULL,
    reporters INTEGER NOT NULL,
    since INTEGER NOT NULL,
    PRIMARY KEY (peer, hash)
) WITHOUT ROWID;
";

/// How reports become a quarantine.
#[derive(Debug, Clone, Copy)]
pub struct QuarantineRules {
    /// Distinct reporters of bad data that quarantine a source for a content.
    pub reporters: u32,
    /// Contents a source is quarantined for before it is quarantined for all.
    pub contents_for_all: u32,
    /// Source outcomes one reporter may report per hour (more are ignored).
    pub reports_per_hour: u32,
    /// Reports older than this many days are forgotten.
    pub retention_days: u64,
}

/// A quarantined source, as `admin quarantine list` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QuarantineRow {
    /// The source's key.
    pub peer: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// The content it is quarantined for; `None`: every content.
    pub hash: Option<FileHash>,
    /// Why.
    pub reason: String,
    /// Distinct reporters of bad data behind it.
    pub reporters: u64,
    /// Unix time it began.
    pub since: i64,
}

/// What reporters said of one source, over all contents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reliability {
    /// Distinct reporters of verified downloads.
    pub verified: u32,
    /// Distinct reporters of stalls, refusals and unreachability.
    pub failed: u32,
    /// Distinct reporters of bad data (discredited reporters excluded).
    pub bad: u32,
    /// Median rate reported by verified downloads, bytes/s (0: none reported).
    pub rate: u64,
}

impl Reliability {
    /// The ranking key: higher first.
    pub fn rank(&self) -> (i64, u64) {
        (
            i64::from(self.verified) - i64::from(self.failed) - 4 * i64::from(self.bad),
            self.rate,
        )
    }
}

/// The quarantine and the reliability of sources, as last read.
#[derive(Debug, Default)]
pub struct Standing {
    everything: HashSet<PeerRef>,
    contents: HashSet<(PeerRef, FileHash)>,
    /// Shared between snapshots until it is computed again.
    reliability: Arc<HashMap<PeerRef, Reliability>>,
}

impl Standing {
    /// Whether `peer` may be offered as a source of `hash`.
    pub fn offers(&self, peer: PeerRef, hash: &FileHash) -> bool {
        !self.everything.contains(&peer) && !self.contents.contains(&(peer, *hash))
    }

    /// What reporters said of `peer`.
    pub fn reliability(&self, peer: PeerRef) -> Reliability {
        self.reliability.get(&peer).copied().unwrap_or_default()
    }
}

/// How long a snapshot of the standing is used before the quarantine is read again.
const STANDING_TTL: Duration = Duration::from_secs(2);

/// Least time between two computations of sources' reliability (a pass over every report),
/// and only when reports came in since.
const RELIABILITY_EVERY: Duration = Duration::from_secs(10);

/// Longest a reliability computation is used even with no new report here (the operator CLI
/// clears reports from another process).
const RELIABILITY_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// The snapshot cache.
#[derive(Debug, Default)]
pub struct StandingCache {
    inner: std::sync::Mutex<Option<Cached>>,
    /// Bumped by every report recorded in this process.
    reports: std::sync::atomic::AtomicU64,
}

#[derive(Debug)]
struct Cached {
    at: Instant,
    standing: Arc<Standing>,
    /// When reliability was computed, and at which `reports` count.
    reliability_at: Instant,
    reports_seen: u64,
}

impl StandingCache {
    /// Reads the quarantine again at the next use.
    fn invalidate(&self) {
        if let Some(cached) = self
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            cached.at = Instant::now() - STANDING_TTL;
        }
    }

    fn reported(&self) {
        self.reports
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn kind_str(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Verified => "verified",
        OutcomeKind::BadData => "bad_data",
        OutcomeKind::Stalled => "stalled",
        OutcomeKind::Refused => "refused",
        OutcomeKind::Unreachable => "unreachable",
    }
}

/// Reporters whose bad-data claims were contradicted at least twice.
fn discredited(conn: &rusqlite::Connection) -> rusqlite::Result<HashSet<String>> {
    let mut statement = conn.prepare_cached(
        "SELECT b.reporter FROM source_reports b
         WHERE b.kind = 'bad_data'
           AND (SELECT count(DISTINCT v.reporter) FROM source_reports v
                WHERE v.target = b.target AND v.hash = b.hash AND v.kind = 'verified'
                  AND v.bytes > 0 AND v.reporter != b.reporter) >= 2
           AND NOT EXISTS (SELECT 1 FROM source_reports o
                WHERE o.target = b.target AND o.hash = b.hash AND o.kind = 'bad_data'
                  AND o.reporter != b.reporter)
         GROUP BY b.reporter HAVING count(*) >= 2",
    )?;
    let rows = statement.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

impl Db {
    /// Records `report` from the peer with key `reporter_key` (`account`: the account its key
    /// is linked to), and quarantines sources as the rules say. Outcomes about sources that do
    /// not list the content, and those beyond the reporter's hourly budget, are ignored.
    /// `partial_holders`: the peers that serve pieces of the content as partial sources
    /// (they may be reported too, though they do not list it).
    pub fn record_report(
        &self,
        reporter_key: &PeerId,
        account: Option<i64>,
        report: &TransferReport,
        partial_holders: &[PeerRef],
        rules: &QuarantineRules,
    ) -> DbResult<(ReportResponse, Vec<QuarantineRow>)> {
        let reporter = match account {
            Some(account) => format!("account:{account}"),
            None => format!("peer:{reporter_key}"),
        };
        let now = unix_now();
        let outcome = self.write(|tx| {
            let mut response = ReportResponse::default();
            let mut bad_targets = Vec::new();
            let recent: i64 = tx.query_row(
                "SELECT count(*) FROM source_reports WHERE reporter_key = ?1 AND at > ?2",
                params![reporter_key.as_bytes().as_slice(), now - 3600],
                |r| r.get(0),
            )?;
            let mut budget = i64::from(rules.reports_per_hour).saturating_sub(recent);
            for source in &report.sources {
                let target: Option<i64> = tx
                    .prepare_cached(
                        "SELECT p.id FROM peers p
                         JOIN files f ON f.peer = p.id AND f.gen = p.active_gen
                         JOIN contents c ON c.id = f.content
                         WHERE p.peer_key = ?1 AND c.hash = ?2 LIMIT 1",
                    )?
                    .query_row(
                        params![source.peer.as_bytes().as_slice(), report.hash.as_bytes()],
                        |r| r.get(0),
                    )
                    .optional()?;
                let target = match target {
                    Some(target) => Some(target),
                    None => tx
                        .prepare_cached("SELECT id FROM peers WHERE peer_key = ?1")?
                        .query_row([source.peer.as_bytes().as_slice()], |r| r.get::<_, i64>(0))
                        .optional()?
                        .filter(|id| partial_holders.contains(&PeerRef(*id))),
                };
                // A device of the reporter's own account is the reporter, not a source to judge.
                let same_account = match account {
                    Some(account) => {
                        tx.prepare_cached(
                            "SELECT account FROM account_devices WHERE peer_key = ?1",
                        )?
                        .query_row([source.peer.as_bytes().as_slice()], |r| r.get::<_, i64>(0))
                        .optional()?
                            == Some(account)
                    }
                    None => false,
                };
                let Some(target) =
                    target.filter(|_| budget > 0 && source.peer != *reporter_key && !same_account)
                else {
                    response.ignored += 1;
                    continue;
                };
                budget -= 1;
                tx.prepare_cached(
                    "INSERT INTO source_reports
                         (reporter, reporter_key, target, hash, kind, bytes, rate, piece, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (reporter, target, hash, kind) DO UPDATE SET
                         bytes = max(bytes, excluded.bytes), rate = excluded.rate,
                         piece = excluded.piece, at = excluded.at",
                )?
                .execute(params![
                    reporter,
                    reporter_key.as_bytes().as_slice(),
                    target,
                    report.hash.as_bytes(),
                    kind_str(source.kind),
                    source.bytes as i64,
                    source.rate.map(|r| r as i64),
                    source.piece.map(|p| p as i64),
                    now
                ])?;
                response.recorded += 1;
                if source.kind == OutcomeKind::BadData {
                    bad_targets.push((target, source.peer, source.piece));
                }
            }
            let mut quarantined = Vec::new();
            if !bad_targets.is_empty() {
                let discredited = discredited(tx)?;
                for (target, key, piece) in bad_targets {
                    let reporters: Vec<(String, Vec<u8>)> = tx
                        .prepare_cached(
                            "SELECT reporter, reporter_key FROM source_reports
                             WHERE target = ?1 AND hash = ?2 AND kind = 'bad_data'",
                        )?
                        .query_map(params![target, report.hash.as_bytes()], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    let credible: Vec<&(String, Vec<u8>)> = reporters
                        .iter()
                        .filter(|(r, _)| !discredited.contains(r))
                        .collect();
                    // One voice per person and per key: a key that reported before and after
                    // it was linked to an account is still one voice.
                    let people: HashSet<&String> = credible.iter().map(|(r, _)| r).collect();
                    let keys: HashSet<&Vec<u8>> = credible.iter().map(|(_, k)| k).collect();
                    let credible = people.len().min(keys.len()) as i64;
                    if credible < i64::from(rules.reporters.max(1)) {
                        continue;
                    }
                    let reason = format!(
                        "sent data failing verification to {credible} downloaders{}",
                        piece.map_or(String::new(), |p| format!(" (piece {p})"))
                    );
                    let added = tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO quarantine (peer, hash, reason, reporters, since)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                        )?
                        .execute(params![target, report.hash.as_bytes(), reason, credible, now])?;
                    if added == 0 {
                        continue;
                    }
                    quarantined.push((target, key, Some(report.hash), reason, credible));
                    let contents: i64 = tx.query_row(
                        "SELECT count(*) FROM quarantine WHERE peer = ?1 AND length(hash) > 0",
                        [target],
                        |r| r.get(0),
                    )?;
                    if contents >= i64::from(rules.contents_for_all.max(1)) {
                        let reason = format!(
                            "quarantined for {contents} contents: quarantined for all until an \
                             admin clears it"
                        );
                        let added = tx.execute(
                            "INSERT OR IGNORE INTO quarantine (peer, hash, reason, reporters, since)
                             VALUES (?1, X'', ?2, ?3, ?4)",
                            params![target, reason, credible, now],
                        )?;
                        if added > 0 {
                            quarantined.push((target, key, None, reason, credible));
                        }
                    }
                    tx.execute(
                        "INSERT INTO audit_log (at, actor, action, target, reason)
                         VALUES (?1, 'server', 'source.quarantine', ?2, ?3)",
                        params![now, key.to_string(), format!("{}", report.hash)],
                    )?;
                }
            }
            Ok((response, quarantined))
        })?;
        let (response, quarantined) = outcome;
        if response.recorded > 0 {
            self.standing.reported();
        }
        if !quarantined.is_empty() {
            self.standing.invalidate();
        }
        let rows = quarantined
            .into_iter()
            .map(|(_, key, hash, reason, reporters)| QuarantineRow {
                peer: key,
                nickname: String::new(),
                hash,
                reason,
                reporters: reporters as u64,
                since: now,
            })
            .collect();
        Ok((response, rows))
    }

    /// The quarantine (at most 2 s old) and sources' reliability (computed again at most every
    /// 10 s, and only after new reports).
    pub fn standing(&self) -> Arc<Standing> {
        let mut cached = self
            .standing
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = cached.as_ref()
            && cached.at.elapsed() < STANDING_TTL
        {
            return cached.standing.clone();
        }
        let reports = self
            .standing
            .reports
            .load(std::sync::atomic::Ordering::Relaxed);
        // The last computation of reliability, if it is still good enough.
        let kept = cached.as_ref().filter(|c| {
            let age = c.reliability_at.elapsed();
            age < RELIABILITY_EVERY
                || (c.reports_seen == reports && age < RELIABILITY_AT_LEAST_EVERY)
        });
        let (reliability_at, reports_seen) = kept.map_or((Instant::now(), reports), |c| {
            (c.reliability_at, c.reports_seen)
        });
        let read = self.read_quarantine().and_then(|mut standing| {
            standing.reliability = match kept {
                Some(c) => c.standing.reliability.clone(),
                None => Arc::new(self.read_reliability()?),
            };
            Ok(standing)
        });
        let standing = Arc::new(read.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the quarantine; none applies meanwhile");
            Standing::default()
        }));
        *cached = Some(Cached {
            at: Instant::now(),
            standing: standing.clone(),
            reliability_at,
            reports_seen,
        });
        standing
    }

    fn read_quarantine(&self) -> DbResult<Standing> {
        self.read(|conn| {
            let mut standing = Standing::default();
            let mut rows = conn.prepare_cached("SELECT peer, hash FROM quarantine")?;
            for row in rows.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))? {
                let (peer, hash) = row?;
                match <[u8; 32]>::try_from(hash.as_slice()) {
                    Ok(bytes) => {
                        standing
                            .contents
                            .insert((PeerRef(peer), FileHash::from_bytes(bytes)));
                    }
                    Err(_) => {
                        standing.everything.insert(PeerRef(peer));
                    }
                }
            }
            Ok(standing)
        })
    }

    fn read_reliability(&self) -> DbResult<HashMap<PeerRef, Reliability>> {
        self.read(|conn| {
            let mut reliability: HashMap<PeerRef, Reliability> = HashMap::new();
            let discredited = discredited(conn)?;
            let mut counts = conn.prepare_cached(
                "SELECT target, kind, reporter, rate FROM source_reports ORDER BY target",
            )?;
            let mut seen: HashSet<(i64, String, String)> = HashSet::new();
            let mut rates: HashMap<i64, Vec<u64>> = HashMap::new();
            for row in counts.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                ))
            })? {
                let (target, kind, reporter, rate) = row?;
                if !seen.insert((target, kind.clone(), reporter.clone())) {
                    continue;
                }
                let entry = reliability.entry(PeerRef(target)).or_default();
                match kind.as_str() {
                    "verified" => {
                        entry.verified += 1;
                        if let Some(rate) = rate {
                            rates.entry(target).or_default().push(rate.max(0) as u64);
                        }
                    }
                    "bad_data" if !discredited.contains(&reporter) => entry.bad += 1,
                    "bad_data" => {}
                    _ => entry.failed += 1,
                }
            }
            for (target, mut list) in rates {
                list.sort_unstable();
                if let Some(entry) = reliability.get_mut(&PeerRef(target)) {
                    entry.rate = list[list.len() / 2];
                }
            }
            Ok(reliability)
        })
    }

    /// Every quarantine in force.
    pub fn quarantine_list(&self) -> DbResult<Vec<QuarantineRow>> {
        self.read(|conn| {
            let mut statement = conn.prepare_cached(
                "SELECT p.peer_key, p.nickname, q.hash, q.reason, q.reporters, q.since
                 FROM quarantine q JOIN peers p ON p.id = q.peer ORDER BY q.since, p.id",
            )?;
            let rows = statement.query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (key, nickname, hash, reason, reporters, since) = row?;
                let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) else {
                    continue;
                };
                let peer = PeerId::from_bytes(key);
                out.push(QuarantineRow {
                    peer,
                    nickname,
                    hash: <[u8; 32]>::try_from(hash.as_slice())
                        .ok()
                        .map(FileHash::from_bytes),
                    reason,
                    reporters: reporters.max(0) as u64,
                    since,
                });
            }
            Ok(out)
        })
    }

    /// Clears every quarantine of the peer with key `peer` (and forgets the bad-data reports
    /// about it, so the same reports do not quarantine it again); false when it had none.
    pub fn clear_quarantine(&self, actor: &str, peer: &PeerId) -> DbResult<bool> {
        let cleared = self.write(|tx| {
            let id: Option<i64> = tx
                .query_row(
                    "SELECT id FROM peers WHERE peer_key = ?1",
                    [peer.as_bytes().as_slice()],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(false) };
            let removed = tx.execute("DELETE FROM quarantine WHERE peer = ?1", [id])? > 0;
            if removed {
                tx.execute(
                    "DELETE FROM source_reports WHERE target = ?1 AND kind = 'bad_data'",
                    [id],
                )?;
                tx.execute(
                    "INSERT INTO audit_log (at, actor, action, target, reason)
                     VALUES (?1, ?2, 'source.clear', ?3, '')",
                    params![unix_now(), actor, peer.to_string()],
                )?;
            }
            Ok(removed)
        })?;
        self.standing.reported();
        self.standing.invalidate();
        Ok(cleared)
    }

    /// Whether an admin took `hash` down (partial sources of it are not offered either).
    pub fn taken_down(&self, hash: &FileHash) -> DbResult<bool> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT 1 FROM takedowns WHERE hash = ?1")?
                .query_row([hash.as_bytes()], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    /// Forgets reports older than the retention (quarantines stay until cleared).
    pub fn purge_reports(&self, retention_days: u64) -> DbResult<u64> {
        let cutoff = unix_now() - (retention_days.min(36_500) as i64) * 86_400;
        let n =
            self.write(|tx| Ok(tx.execute("DELETE FROM source_reports WHERE at < ?1", [cutoff])?))?;
        Ok(n as u64)
    }
}
