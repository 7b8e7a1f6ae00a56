//! Folders of the stored lists (PROTOCOL §5.3): one row per folder of each list generation, with
//! its direct files' counts, its content id (folder identity v1, from the significant files
//! directly in it) and a summary of their tags. Computed here, at ingest, from the entries the
//! server already holds: a full upload computes every folder of the new generation before it
//! becomes active, a delta recomputes the folders it touched. Folders with only subfolders get a
//! row too, so a share can be browsed one level at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use peerdex_shared::folder::{FolderId, content_id, is_audio, is_significant};

use super::*;

/// A file directly in a folder, as folders are computed from.
#[derive(Debug, Clone)]
pub struct FolderFile {
    /// File name (the last path component).
    pub name: String,
    /// Content row.
    pub content: ContentRef,
    /// Content hash.
    pub hash: FileHash,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (Unix seconds).
    pub mtime: i64,
    /// Its scope.
    pub acl: AclRef,
    /// Its tags.
    pub tags: MediaTags,
}

/// A folder of a peer's active list, as stored.
#[derive(Debug, Clone)]
pub struct FolderRow {
    /// Owner.
    pub peer: PeerRef,
    /// Share.
    pub share: String,
    /// Path within the share (`""` for the share's root).
    pub path: String,
    /// Files directly in it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Its identity, when it holds a significant file.
    pub content_id: Option<FolderId>,
    /// Significant files (those the identity is made of) and their bytes.
    pub id_files: u64,
    /// Bytes of those.
    pub id_bytes: u64,
    /// The scope all its direct files share (`None`: mixed, or no files).
    pub acl: Option<AclRef>,
    /// The album most of its audio files name.
    pub album: Option<String>,
    /// The (album) artist most of its audio files name.
    pub artist: Option<String>,
    /// The year most of them name.
    pub year: Option<u32>,
    /// Total duration of its files, seconds.
    pub duration_secs: Option<u64>,
    /// Whether all its audio is lossless (`None` without audio).
    pub lossless: Option<bool>,
}

/// The folder a path within a share is in (`""` for the share's root).
pub fn parent_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The value most of `values` have, if it is held by at least half of `of`.
fn common<T: Eq + std::hash::Hash + Clone>(
    values: impl Iterator<Item = T>,
    of: usize,
) -> Option<T> {
    let mut counts: HashMap<T, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .filter(|(_, n)| of > 0 && n * 2 >= of)
        .map(|(v, _)| v)
}

/// The row of a folder with these direct files.
fn summarize(peer: PeerRef, share: &str, path: &str, files: &[FolderFile]) -> FolderRow {
    let with_audio = files.iter().any(|f| is_audio(&f.name));
    let significant: Vec<&FolderFile> = files
        .iter()
        .filter(|f| is_significant(&f.name, with_audio))
        .collect();
    let audio: Vec<&FolderFile> = files.iter().filter(|f| is_audio(&f.name)).collect();
    let mut acls = files.iter().map(|f| f.acl);
    let first = acls.next();
    let acl = first.filter(|a| acls.all(|b| b == *a));
    let durations: Vec<u64> = significant
        .iter()
        .filter_map(|f| f.tags.duration_secs.map(u64::from))
        .collect();
    FolderRow {
        peer,
        share: share.to_string(),
        path: path.to_string(),
        files: files.len() as u64,
        bytes: files.iter().map(|f| f.size).sum(),
        content_id: content_id(significant.iter().map(|f| (f.hash, f.size))),
        id_files: significant.len() as u64,
        id_bytes: significant.iter().map(|f| f.size).sum(),
        acl,
        album: common(
            audio.iter().filter_map(|f| f.tags.album.clone()),
            audio.len(),
        ),
        artist: common(
            audio.iter().filter_map(|f| {
                f.tags
                    .album_artist
                    .clone()
                    .or_else(|| f.tags.artist.clone())
            }),
            audio.len(),
        ),
        year: common(audio.iter().filter_map(|f| f.tags.year), audio.len()),
        duration_secs: (!durations.is_empty()).then(|| durations.iter().sum()),
        lossless: (!audio.is_empty()).then(|| audio.iter().all(|f| f.tags.lossless == Some(true))),
    }
}

fn insert_folder(tx: &Connection, generation: Generation, row: &FolderRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR REPLACE INTO folders (peer, gen, share, path, files, bytes, content_id,
             id_files, id_bytes, acl, album, artist, year, duration, lossless)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        row.peer,
        generation,
        row.share,
        row.path,
        row.files as i64,
        row.bytes as i64,
        row.content_id.map(|id| id.as_bytes().to_vec()),
        row.id_files as i64,
        row.id_bytes as i64,
        row.acl,
        row.album,
        row.artist,
        row.year,
        row.duration_secs.map(|d| d as i64),
        row.lossless,
    ])?;
    Ok(())
}

/// Every ancestor of `path` (not `path` itself), the share's root `""` included.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let current = rest?;
        if current.is_empty() {
            rest = None;
            return None;
        }
        let parent = parent_dir(current);
        rest = Some(parent);
        Some(parent)
    })
}

/// Computes every folder of a generation (it must hold no folder rows yet, or stale ones).
pub(super) fn rebuild_folders(
    tx: &Connection,
    peer: PeerRef,
    generation: Generation,
) -> DbResult<()> {
    tx.prepare_cached("DELETE FROM folders WHERE peer = ?1 AND gen = ?2")?
        .execute(params![peer, generation])?;
    // Sorted: the rows then go into the folders table in key order (appends, not random
    // inserts), 0.5 s instead of 0.75 s for a list of 100,000 one-file folders.
    let mut by_dir: BTreeMap<(String, String), Vec<FolderFile>> = BTreeMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT f.share, f.path, f.content, c.hash, f.size, f.mtime, f.acl, f.tags FROM files f
             JOIN contents c ON c.id = f.content WHERE f.peer = ?1 AND f.gen = ?2",
        )?;
        let mut rows = stmt.query(params![peer, generation])?;
        while let Some(r) = rows.next()? {
            let share: String = r.get(0)?;
            let (path, file) = folder_file(r, 1)?;
            let dir = parent_dir(&path).to_string();
            by_dir.entry((share, dir)).or_default().push(file);
        }
    }
    let mut empty: BTreeSet<(String, String)> = BTreeSet::new();
    for (share, dir) in by_dir.keys() {
        for parent in ancestors(dir) {
            let key = (share.clone(), parent.to_string());
            if !by_dir.contains_key(&key) && !empty.insert(key) {
                break; // its ancestors are in already
            }
        }
    }
    let none = Vec::new();
    let mut rows: Vec<(&(String, String), &Vec<FolderFile>)> = by_dir.iter().collect();
    rows.extend(empty.iter().map(|key| (key, &none)));
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for ((share, dir), files) in rows {
        insert_folder(tx, generation, &summarize(peer, share, dir, files))?;
    }
    Ok(())
}

/// A file's path and [`FolderFile`] from the columns `path, content, hash, size, mtime, acl,
/// tags` starting at `at`.
fn folder_file(r: &rusqlite::Row<'_>, at: usize) -> DbResult<(String, FolderFile)> {
    let path: String = r.get(at)?;
    let file = FolderFile {
        name: path.rsplit('/').next().unwrap_or(&path).to_string(),
        content: r.get(at + 1)?,
        hash: FileHash::from_bytes(blob32(r.get(at + 2)?)?),
        size: r.get::<_, i64>(at + 3)? as u64,
        mtime: r.get(at + 4)?,
        acl: r.get(at + 5)?,
        tags: MediaTags::from_stored(r.get(at + 6)?),
    };
    Ok((path, file))
}

/// The files directly in one folder of a generation.
fn direct_files(
    tx: &Connection,
    peer: PeerRef,
    generation: Generation,
    share: &str,
    dir: &str,
) -> DbResult<Vec<FolderFile>> {
    let (lo, hi) = subtree_bounds(dir);
    let mut stmt = tx.prepare_cached(
        "SELECT f.path, f.content, c.hash, f.size, f.mtime, f.acl, f.tags FROM files f
         JOIN contents c ON c.id = f.content
         WHERE f.peer = ?1 AND f.gen = ?2 AND f.share = ?3 AND f.path > ?4 AND f.path < ?5
           AND instr(substr(f.path, length(?4) + 1), '/') = 0",
    )?;
    let mut rows = stmt.query(params![peer, generation, share, lo, hi])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(folder_file(r, 0)?.1);
    }
    Ok(out)
}

/// The key range of the entries under folder `dir` of a share: `(lo, hi)` with `lo` the prefix
/// itself (`""` for the root, whose range is everything).
fn subtree_bounds(dir: &str) -> (String, String) {
    if dir.is_empty() {
        (String::new(), "\u{10ffff}".to_string())
    } else {
        // '/' + 1 is '0': every path starting with "dir/" sorts before "dir0".
        (format!("{dir}/"), format!("{dir}0"))
    }
}

/// Recomputes the folders a delta touched (each `(share, folder)`), creating their ancestors
/// and dropping folders left with no file and no subfolder.
pub(super) fn refresh_folders(
    tx: &Connection,
    peer: PeerRef,
    generation: Generation,
    touched: &BTreeSet<(String, String)>,
) -> DbResult<()> {
    for (share, dir) in touched {
        let files = direct_files(tx, peer, generation, share, dir)?;
        let mut current = dir.as_str();
        if files.is_empty() {
            // Gone unless a subfolder remains; then the same question for its parent.
            loop {
                let (lo, hi) = subtree_bounds(current);
                let below: bool = tx
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM folders WHERE peer = ?1 AND gen = ?2
                         AND share = ?3 AND path > ?4 AND path < ?5 AND path != '')",
                    )?
                    .query_row(params![peer, generation, share, lo, hi], |r| r.get(0))?;
                let here = !direct_files(tx, peer, generation, share, current)?.is_empty();
                if below || here {
                    break;
                }
                tx.prepare_cached(
                    "DELETE FROM folders WHERE peer = ?1 AND gen = ?2 AND share = ?3 AND path = ?4",
                )?
                .execute(params![peer, generation, share, current])?;
                if current.is_empty() {
                    break;
                }
                current = parent_dir(current);
            }
            continue;
        }
        insert_folder(tx, generation, &summarize(peer, share, dir, &files))?;
        for parent in ancestors(dir) {
            let added = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO folders (peer, gen, share, path, files, bytes)
                     VALUES (?1, ?2, ?3, ?4, 0, 0)",
                )?
                .execute(params![peer, generation, share, parent])?;
            if added == 0 {
                break;
            }
        }
    }
    Ok(())
}

fn folder_row(r: &rusqlite::Row<'_>) -> DbResult<FolderRow> {
    let id: Option<Vec<u8>> = r.get(6)?;
    Ok(FolderRow {
        peer: r.get(0)?,
        share: r.get(1)?,
        path: r.get(2)?,
        files: r.get::<_, i64>(3)? as u64,
        bytes: r.get::<_, i64>(4)? as u64,
        content_id: id.map(blob32).transpose()?.map(FolderId::from_bytes),
        id_files: r.get::<_, i64>(7)? as u64,
        id_bytes: r.get::<_, i64>(8)? as u64,
        acl: r.get(9)?,
        album: r.get(10)?,
        artist: r.get(11)?,
        year: r.get(12)?,
        duration_secs: r.get::<_, Option<i64>>(13)?.map(|d| d as u64),
        lossless: r.get(14)?,
    })
}

const FOLDER_COLUMNS: &str = "fo.peer, fo.share, fo.path, fo.files, fo.bytes, fo.gen,
    fo.content_id, fo.id_files, fo.id_bytes, fo.acl, fo.album, fo.artist, fo.year, fo.duration,
    fo.lossless";

impl Db {
    /// The tags of files of peers' active lists, in the order asked (none for a file without
    /// tags or gone). One reader for all: a page of hits asks for its shown copies at once.
    pub fn files_tags(&self, files: &[(PeerRef, &str, &str)]) -> DbResult<Vec<MediaTags>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT f.tags FROM peers p JOIN files f
                 ON f.peer = p.id AND f.gen = p.active_gen AND f.share = ?2 AND f.path = ?3
                 WHERE p.id = ?1",
            )?;
            let mut out = Vec::with_capacity(files.len());
            for (peer, share, path) in files {
                let tags: Option<Option<String>> = stmt
                    .query_row(params![peer, share, path], |r| r.get(0))
                    .optional()?;
                out.push(MediaTags::from_stored(tags.flatten()));
            }
            Ok(out)
        })
    }

    /// The folders of peers' active lists at (share, path), in the order asked, with one reader.
    pub fn folders_at(&self, places: &[(PeerRef, &str, &str)]) -> DbResult<Vec<Option<FolderRow>>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {FOLDER_COLUMNS} FROM folders fo
                 JOIN peers p ON p.id = fo.peer AND fo.gen = p.active_gen
                 WHERE fo.peer = ?1 AND fo.share = ?2 AND fo.path = ?3"
            ))?;
            let mut out = Vec::with_capacity(places.len());
            for (peer, share, path) in places {
                let mut rows = stmt.query(params![peer, share, path])?;
                out.push(rows.next()?.map(folder_row).transpose()?);
            }
            Ok(out)
        })
    }

    /// The folder of a peer's active list at (share, path).
    pub fn folder(&self, peer: PeerRef, share: &str, path: &str) -> DbResult<Option<FolderRow>> {
        Ok(self.folders_at(&[(peer, share, path)])?.pop().flatten())
    }

    /// Every active folder with this identity, in every peer's list (at most `limit`).
    pub fn folders_with_id(&self, id: &FolderId, limit: usize) -> DbResult<Vec<FolderRow>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {FOLDER_COLUMNS} FROM folders fo
                 JOIN peers p ON p.id = fo.peer AND fo.gen = p.active_gen
                 WHERE fo.content_id = ?1 LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![id.as_bytes().as_slice(), limit as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(folder_row(r)?);
            }
            Ok(out)
        })
    }

    /// The files directly in a folder of a peer's active list.
    pub fn folder_files(&self, peer: PeerRef, share: &str, dir: &str) -> DbResult<Vec<FolderFile>> {
        self.read(|conn| {
            let generation: Option<Generation> = conn
                .prepare_cached("SELECT active_gen FROM peers WHERE id = ?1")?
                .query_row([peer], |r| r.get(0))
                .optional()?;
            match generation {
                Some(generation) => direct_files(conn, peer, generation, share, dir),
                None => Ok(Vec::new()),
            }
        })
    }

    /// The subfolders directly in a folder of a peer's active list (`share` `None`: the peer's
    /// shares, as folders with path `""`), sorted, that hold a file `visible` lets through.
    pub fn subfolders(
        &self,
        peer: PeerRef,
        share: Option<&str>,
        dir: &str,
        visible: &dyn Fn(AclRef) -> bool,
    ) -> DbResult<Vec<FolderRow>> {
        self.read(|conn| {
            let mut out = Vec::new();
            {
                let (sql, lo, hi) = match share {
                    None => (
                        format!(
                            "SELECT {FOLDER_COLUMNS} FROM folders fo
                             JOIN peers p ON p.id = fo.peer AND fo.gen = p.active_gen
                             WHERE fo.peer = ?1 AND fo.path = '' AND ?2 = ?3 ORDER BY fo.share"
                        ),
                        String::new(),
                        String::new(),
                    ),
                    Some(_) => {
                        let (lo, hi) = subtree_bounds(dir);
                        (
                            format!(
                                "SELECT {FOLDER_COLUMNS} FROM folders fo
                                 JOIN peers p ON p.id = fo.peer AND fo.gen = p.active_gen
                                 WHERE fo.peer = ?1 AND fo.share = ?4 AND fo.path > ?2
                                   AND fo.path < ?3 AND fo.path != ''
                                   AND instr(substr(fo.path, length(?2) + 1), '/') = 0
                                 ORDER BY fo.path"
                            ),
                            lo,
                            hi,
                        )
                    }
                };
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = match share {
                    None => stmt.query(params![peer, lo, hi])?,
                    Some(share) => stmt.query(params![peer, lo, hi, share])?,
                };
                while let Some(r) = rows.next()? {
                    out.push(folder_row(r)?);
                }
            }
            // A folder is shown only if the viewer sees a file somewhere under it.
            let mut shown = Vec::with_capacity(out.len());
            for folder in out {
                if folder.acl.is_some_and(visible) && folder.files > 0 {
                    shown.push(folder);
                    continue;
                }
                let (lo, hi) = subtree_bounds(&folder.path);
                let mut stmt = conn.prepare_cached(
                    "SELECT f.acl FROM files f JOIN peers p ON p.id = f.peer AND f.gen = p.active_gen
                     WHERE f.peer = ?1 AND f.share = ?2 AND f.path > ?3 AND f.path < ?4",
                )?;
                let mut rows = stmt.query(params![peer, folder.share, lo, hi])?;
                let mut any = false;
                while let Some(r) = rows.next()? {
                    if visible(r.get(0)?) {
                        any = true;
                        break;
                    }
                }
                if any {
                    shown.push(folder);
                }
            }
            Ok(shown)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_reach_the_root() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), ["a/b", "a", ""]);
        assert_eq!(ancestors("a").collect::<Vec<_>>(), [""]);
        assert_eq!(ancestors("").count(), 0);
    }
}
