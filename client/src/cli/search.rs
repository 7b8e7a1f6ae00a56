//! `peerdex search` and `peerdex browse`: tables fitted to the terminal, JSON for scripts, and
//! the last search's rows remembered so that `peerdex get 3` fetches row 3.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use peerdex_shared::FileHash;
use peerdex_shared::api::{BrowseEntry, FolderHit, FolderSummary, SearchHit, SearchResponse};
use peerdex_shared::folder::FolderId;
use serde::{Deserialize, Serialize};

use super::{emit, human_size, resolve_server, visible};
use peerdex_agent::config::ConfigFile;
use peerdex_client::server_api::SearchQuery;

/// File in the state directory holding the last search's (or browse's) rows.
pub const LAST_SEARCH_FILE: &str = "last-search.json";

/// `peerdex search` arguments.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Index server URL [default: from the config file, else http://127.0.0.1:7700]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
    /// Only files with this extension
    #[arg(long)]
    ext: Option<String>,
    /// Only files of this kind (audio, video, image, document, archive, other)
    #[arg(long)]
    kind: Option<String>,
    /// Only files at least this large (e.g. 5MB, 1.5GiB)
    #[arg(long, value_parser = parse_size)]
    min_size: Option<u64>,
    /// Only files at most this large (e.g. 700MB)
    #[arg(long, value_parser = parse_size)]
    max_size: Option<u64>,
    /// Only audio of at least this bitrate, kbit/s (e.g. 320)
    #[arg(long, value_name = "KBPS")]
    min_bitrate: Option<u32>,
    /// Only media at least this long (seconds, or M:SS, or H:MM:SS)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    min_duration: Option<u32>,
    /// Only media at most this long (seconds, or M:SS, or H:MM:SS)
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_duration: Option<u32>,
    /// Only lossless audio (FLAC, ALAC, WAV, AIFF, APE, WavPack)
    #[arg(long)]
    lossless: bool,
    /// Only files tagged with this year
    #[arg(long)]
    year: Option<u32>,
    /// Results per page
    #[arg(long, default_value_t = 20)]
    limit: u64,
    /// Page of results to show (1 = the best `--limit` results)
    #[arg(long, conflicts_with = "offset", value_parser = clap::value_parser!(u64).range(1..))]
    page: Option<u64>,
    /// Results to skip before the first one shown
    #[arg(long)]
    offset: Option<u64>,
    /// Print the server's answer as one JSON document
    #[arg(long)]
    json: bool,
    /// Words to search for (prefixes match; `-word` excludes, `"a b"` is a phrase;
    /// `artist:`, `album:`, `title:`, `genre:` look in one tag, `year:1997` filters). Flags go
    /// before the words that start with `-`
    #[arg(required = true)]
    words: Vec<String>,
}

#[cfg(test)]
impl SearchArgs {
    /// The query words as given.
    pub fn words(&self) -> &[String] {
        &self.words
    }
}

/// `peerdex browse` arguments.
#[derive(Debug, Args)]
pub struct BrowseArgs {
    /// Index server URL [default: from the config file, else http://127.0.0.1:7700]
    #[arg(long, env = "PEERDEX_SERVER")]
    server: Option<String>,
    /// Print the listing as one JSON document
    #[arg(long)]
    json: bool,
    /// List every file the peer shares, not one folder
    #[arg(long, conflicts_with = "path")]
    all: bool,
    /// Rows per page of a folder
    #[arg(long, default_value_t = 100)]
    limit: u64,
    /// Page of the folder to show (1 = the first `--limit` rows)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    page: u64,
    /// The peer's nickname
    nick: String,
    /// The folder to list, `SHARE/FOLDER/…` [default: the peer's shares]
    path: Option<String>,
}

/// Parses a duration: seconds (`210`), `M:SS` (`3:30`) or `H:MM:SS`.
pub fn parse_duration(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a duration (use seconds, M:SS or H:MM:SS)");
    let mut secs: u32 = 0;
    let parts: Vec<&str> = text.trim().split(':').collect();
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    for (i, part) in parts.iter().enumerate() {
        let n: u32 = part.parse().map_err(|_| bad())?;
        if i > 0 && n >= 60 {
            return Err(bad());
        }
        secs = secs
            .checked_mul(60)
            .and_then(|s| s.checked_add(n))
            .ok_or_else(bad)?;
    }
    Ok(secs)
}

pub use peerdex_shared::units::clock;

/// "Album (1997) — Artist" from a folder's shared tags, else `name`.
pub fn release_title(summary: &FolderSummary, name: &str) -> String {
    summary.title(name)
}

/// One folder row: "OK Computer (1997) — Radiohead — 12 files, 540 MB, 53:21 — on 14 peers,
/// 11 complete, 3 partial".
fn folder_line(label: &str, hit: &FolderHit) -> String {
    let mut line = format!(
        "{label}  {} \u{2014} {} files, {}",
        visible(&release_title(&hit.summary, &hit.name)),
        hit.files,
        human_size(hit.bytes)
    );
    if let Some(secs) = hit.summary.duration_secs {
        line.push_str(&format!(", {}", clock(secs)));
    }
    if hit.summary.lossless == Some(true) {
        line.push_str(", lossless");
    }
    line.push_str(&format!(
        " \u{2014} on {} peer{}, {} complete",
        hit.peers_online,
        if hit.peers_online == 1 { "" } else { "s" },
        hit.complete
    ));
    if hit.partial > 0 {
        line.push_str(&format!(", {} partial", hit.partial));
    }
    line.push_str(&format!("  {}", visible(&hit.folder)));
    line
}

/// Parses a size such as `700`, `5MB`, `1.5GiB` or `2 k` (k/M/G/T are powers of 1000, KiB/MiB/
/// GiB/TiB powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 700MB, 1.5GiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
            ));
        }
    };
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(format!("{text:?} is too large"));
    }
    Ok(bytes.round() as u64)
}

/// One remembered row of the last search or browse.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RememberedHit {
    /// Content hash.
    pub hash: FileHash,
    /// Size.
    pub size: u64,
    /// Name shown.
    pub name: String,
}

/// A remembered folder row: `get` fetches the whole folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RememberedFolder {
    /// The row as shown (`F1` in a search, a number in a browse).
    pub row: String,
    /// Its identity.
    pub id: FolderId,
    /// Its name.
    pub name: String,
}

/// The last search or browse, as `peerdex get ROW` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastSearch {
    /// Server searched.
    pub server: String,
    /// What was listed (the query, or `browse NICK`).
    pub query: String,
    /// The number of the first row (rows of a later page start past 1).
    #[serde(default = "first_row")]
    pub first_row: usize,
    /// Rows, numbered from `first_row` in the table.
    pub hits: Vec<RememberedHit>,
    /// Folder rows, by their own labels.
    #[serde(default)]
    pub folders: Vec<RememberedFolder>,
}

fn first_row() -> usize {
    1
}

impl LastSearch {
    /// Reads the remembered listing from `state`; `None` when there was none.
    pub fn load(state: &Path) -> anyhow::Result<Option<LastSearch>> {
        let path = state.join(LAST_SEARCH_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .with_context(|| format!("{} is damaged; search again", path.display()))
    }

    /// The folder row labelled `row` (`F2`, or a browse's number), if the listing has one.
    pub fn folder_row(&self, row: &str) -> Option<&RememberedFolder> {
        self.folders
            .iter()
            .find(|f| f.row.eq_ignore_ascii_case(row))
    }

    /// The row numbered `row`, if the listing has it.
    pub fn row(&self, row: usize) -> Option<&RememberedHit> {
        row.checked_sub(self.first_row)
            .and_then(|i| self.hits.get(i))
    }

    /// The numbers of the rows remembered, for messages.
    pub fn rows(&self) -> String {
        match self.hits.len() {
            0 => "no rows".to_owned(),
            n => format!("rows {} to {}", self.first_row, self.first_row + n - 1),
        }
    }

    /// Remembers the listing (best effort: without it the results are still shown).
    fn remember(&self, state: Option<&Path>) {
        let Some(state) = state else {
            return;
        };
        if let Err(e) = self.save(state) {
            tracing::warn!(error = %format!("{e:#}"), "cannot remember the rows for `peerdex get ROW`");
        }
    }

    fn save(&self, state: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(state)
            .with_context(|| format!("creating state directory {}", state.display()))?;
        let path = state.join(LAST_SEARCH_FILE);
        let temp = path.with_extension("json.tmp");
        std::fs::write(&temp, serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

fn terminal_width() -> Option<usize> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, cols)| cols as usize)
}

/// The best source to show for a hit: a reachable one if any.
fn best_source(hit: &SearchHit) -> String {
    hit.sources
        .first()
        .map(|s| s.nickname.clone())
        .unwrap_or_else(|| "-".into())
}

/// Cuts `text` to `width` columns, keeping its end (`…/Abbey Road/Disc 1`): the end of a folder
/// path is what tells rows apart.
fn keep_end(text: &str, width: usize) -> String {
    if console::measure_text_width(text) <= width {
        return text.to_owned();
    }
    let mut kept: Vec<char> = Vec::new();
    let mut used = 1; // the ellipsis
    for c in text.chars().rev() {
        let w = console::measure_text_width(c.encode_utf8(&mut [0; 4]));
        if used + w > width {
            break;
        }
        used += w;
        kept.push(c);
    }
    kept.reverse();
    format!("…{}", kept.into_iter().collect::<String>())
}

/// Renders the numbered table (rows numbered from `first_row`), the name and folder columns
/// sharing what the other columns leave of `width`.
fn table(hits: &[SearchHit], first_row: usize, width: Option<usize>) -> Vec<String> {
    // Media columns only when some row has them.
    let media = hits
        .iter()
        .any(|h| h.tags.duration_secs.is_some() || h.tags.bitrate_kbps.is_some());
    let rows: Vec<[String; 5]> = hits
        .iter()
        .enumerate()
        .map(|(i, hit)| {
            let mut size = human_size(hit.size);
            if media {
                let len = hit
                    .tags
                    .duration_secs
                    .map_or("-".into(), |d| clock(u64::from(d)));
                let kbps = hit.tags.bitrate_kbps.map_or("-".into(), |b| b.to_string());
                size = format!("{size:>9}  {len:>7}  {kbps:>5}");
            }
            [
                (first_row + i).to_string(),
                size,
                hit.sources_online.to_string(),
                format!("{:?}", hit.kind).to_lowercase(),
                best_source(hit),
            ]
        })
        .collect();
    let shown_name = |hit: &SearchHit| hit.tags.display().unwrap_or_else(|| hit.name.clone());
    let widest = |col: usize, title: &str| {
        rows.iter()
            .map(|r| console::measure_text_width(&r[col]))
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let size_title = if media {
        format!("{:>9}  {:>7}  {:>5}", "SIZE", "LEN", "KBPS")
    } else {
        "SIZE".to_owned()
    };
    let (w_row, w_size, w_src, w_kind, w_best) = (
        widest(0, "#"),
        widest(1, &size_title),
        widest(2, "SRC"),
        widest(3, "KIND"),
        widest(4, "BEST SOURCE").min(24),
    );
    let fixed = w_row + w_size + w_src + w_kind + w_best + 12;
    let widest_of = |texts: &mut dyn Iterator<Item = &str>, title: &str| {
        texts
            .map(console::measure_text_width)
            .chain([title.len()])
            .max()
            .unwrap_or(title.len())
    };
    let names: Vec<String> = hits.iter().map(shown_name).collect();
    let names_widest = widest_of(&mut names.iter().map(String::as_str), "NAME");
    let folders_widest = widest_of(&mut hits.iter().map(|h| h.folder.as_str()), "FOLDER");
    let (w_name, w_folder) = match width {
        Some(width) => {
            // The name gets up to two thirds of what is left, the folder the rest.
            let room = width.saturating_sub(fixed).max(24);
            let name = names_widest.min(room * 2 / 3).max(12);
            let folder = folders_widest.min(room.saturating_sub(name)).max(8);
            let name = names_widest.min(room.saturating_sub(folder)).max(12);
            (name, folder)
        }
        None => (names_widest, folders_widest),
    };
    let pad = |text: String, w: usize| {
        let fill = w.saturating_sub(console::measure_text_width(&text));
        format!("{text}{}", " ".repeat(fill))
    };
    let cell = |text: &str, w: usize| pad(console::truncate_str(text, w, "…").into_owned(), w);
    let right = |text: &str, w: usize| format!("{text:>w$}");
    let mut out = vec![
        format!(
            "{}  {}  {}  {}  {}  {}  {}",
            right("#", w_row),
            cell("NAME", w_name),
            right(&size_title, w_size),
            right("SRC", w_src),
            cell("KIND", w_kind),
            cell("BEST SOURCE", w_best),
            cell("FOLDER", w_folder),
        )
        .trim_end()
        .to_owned(),
    ];
    for ((hit, row), name) in hits.iter().zip(&rows).zip(&names) {
        out.push(
            format!(
                "{}  {}  {}  {}  {}  {}  {}",
                right(&row[0], w_row),
                cell(&visible(name), w_name),
                right(&row[1], w_size),
                right(&row[2], w_src),
                cell(&row[3], w_kind),
                cell(&row[4], w_best),
                pad(keep_end(&visible(&hit.folder), w_folder), w_folder),
            )
            .trim_end()
            .to_owned(),
        );
    }
    out
}

/// The line under the table: which rows these are, of how many, and how to see more.
fn footer(result: &SearchResponse, first_row: usize, page: u64) -> String {
    let shown = result.hits.len() as u64;
    let last_row = first_row as u64 + shown - 1;
    let past = result.offset + shown;
    let (of, more) = if result.total_exact {
        (result.total.to_string(), result.total > past)
    } else {
        // Counting stopped early: the total is a lower bound, and a full page means more.
        (
            format!("at least {}", result.total.max(past)),
            shown == result.limit,
        )
    };
    let mut line =
        format!("rows {first_row}-{last_row} of {of}; `peerdex get ROW` downloads a row");
    if more {
        line.push_str(&format!(", `--page {}` shows more", page + 1));
    }
    line
}

/// Runs `peerdex search`.
pub async fn search(
    args: SearchArgs,
    file: &ConfigFile,
    state: Option<PathBuf>,
) -> anyhow::Result<()> {
    let server = resolve_server(args.server, file, None);
    let client = super::server_client(&server, state.as_deref())?;
    let limit = args.limit.max(1);
    let offset = match args.page {
        Some(page) => (page - 1).saturating_mul(limit),
        None => args.offset.unwrap_or(0),
    };
    let query = SearchQuery {
        q: args.words.join(" "),
        ext: args.ext,
        kind: args.kind,
        min_size: args.min_size,
        max_size: args.max_size,
        min_bitrate: args.min_bitrate,
        min_duration: args.min_duration,
        max_duration: args.max_duration,
        lossless: args.lossless.then_some(1),
        year: args.year,
        limit: Some(limit),
        offset: Some(offset),
    };
    let result = client
        .search(&query)
        .await
        .with_context(|| format!("searching {server}"))?;
    // Rows are numbered across pages: row 21 is the first of page 2.
    let first_row = result.offset as usize + 1;
    LastSearch {
        server: server.clone(),
        query: query.q.clone(),
        first_row,
        hits: result
            .hits
            .iter()
            .map(|h| RememberedHit {
                hash: h.hash,
                size: h.size,
                name: h.name.clone(),
            })
            .collect(),
        folders: result
            .folders
            .iter()
            .enumerate()
            .map(|(i, f)| RememberedFolder {
                row: format!("F{}", i + 1),
                id: f.id,
                name: release_title(&f.summary, &f.name),
            })
            .collect(),
    }
    .remember(state.as_deref());
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&result)?))?;
        return Ok(());
    }
    if result.hits.is_empty() {
        let said = if result.offset > 0 && result.total > 0 {
            format!("no results past row {}", result.offset)
        } else {
            "no results".to_owned()
        };
        emit(&format!("{said}\n"))?;
        return Ok(());
    }
    let page = result.offset / result.limit.max(1) + 1;
    let mut text = table(&result.hits, first_row, terminal_width()).join("\n");
    text.push('\n');
    text.push_str(&footer(&result, first_row, page));
    text.push('\n');
    if !result.folders.is_empty() {
        text.push_str("folders (`peerdex get F1` downloads a whole folder):\n");
        for (i, folder) in result.folders.iter().enumerate() {
            text.push_str(&folder_line(&format!("F{}", i + 1), folder));
            text.push('\n');
        }
    }
    emit(&text)?;
    Ok(())
}

/// Runs `peerdex browse`: one folder of the peer's share (its subfolders, then its files), or
/// with `--all` every file; rows are numbered and remembered for `get`.
pub async fn browse(
    args: BrowseArgs,
    file: &ConfigFile,
    state: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !args.all {
        return browse_folder(args, file, state).await;
    }
    let server = resolve_server(args.server, file, None);
    let client = super::server_client(&server, state.as_deref())?;
    let context = || format!("browsing {} on {server}", args.nick);
    let first = client
        .browse(&args.nick, None, 1000)
        .await
        .with_context(context)?;
    let (peer_id, nickname, online, entries) =
        (first.peer_id, first.nickname, first.online, first.entries);
    let mut files: Vec<BrowseEntry> = first.files;
    let mut after = first.next_cursor;
    // Bounded by the server's entry limit: each page moves the cursor forward.
    while let Some(cursor) = after {
        let page = client
            .browse(&args.nick, Some(&cursor), 1000)
            .await
            .with_context(context)?;
        if page.files.is_empty() && page.next_cursor.is_some() {
            bail!("the server returned an empty page with a cursor");
        }
        files.extend(page.files);
        after = page.next_cursor;
    }
    LastSearch {
        server: server.clone(),
        query: format!("browse {nickname}"),
        first_row: 1,
        hits: files
            .iter()
            .map(|f| RememberedHit {
                hash: f.hash,
                size: f.size,
                name: f.path.rsplit('/').next().unwrap_or(&f.path).to_owned(),
            })
            .collect(),
        folders: Vec::new(),
    }
    .remember(state.as_deref());
    if args.json {
        let document = serde_json::json!({
            "peer_id": peer_id, "nickname": nickname, "online": online,
            "entries": entries, "files": files,
        });
        emit(&format!("{}\n", serde_json::to_string_pretty(&document)?))?;
        return Ok(());
    }
    use std::fmt::Write as _;
    let mut text = format!(
        "{nickname} ({}), {entries} files\n",
        if online { "online" } else { "offline" }
    );
    let w_row = files.len().to_string().len();
    for (i, file) in files.iter().enumerate() {
        let _ = writeln!(
            text,
            "{:>w_row$}  {:>10}  {}  {}/{}",
            i + 1,
            human_size(file.size),
            file.hash.fmt_short(),
            visible(&file.share),
            visible(&file.path)
        );
    }
    if !files.is_empty() {
        text.push_str("`peerdex get ROW` (or a hash prefix) downloads a file\n");
    }
    emit(&text)?;
    Ok(())
}

/// `peerdex browse NICK [PATH]`: one level of the share, paged.
async fn browse_folder(
    args: BrowseArgs,
    file: &ConfigFile,
    state: Option<PathBuf>,
) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let server = resolve_server(args.server, file, None);
    let client = super::server_client(&server, state.as_deref())?;
    let path = args.path.clone().unwrap_or_default();
    let limit = args.limit.clamp(1, 1000);
    let offset = (args.page - 1).saturating_mul(limit);
    let listing = client
        .browse_folders(&args.nick, &path, offset, limit)
        .await
        .with_context(|| format!("browsing {} {path} on {server}", args.nick))?;
    let first_row = offset as usize + 1;
    let folders_here = listing.folders.len();
    LastSearch {
        server: server.clone(),
        query: format!("browse {} {path}", listing.nickname),
        first_row: first_row + folders_here,
        hits: listing
            .files
            .iter()
            .map(|f| RememberedHit {
                hash: f.hash,
                size: f.size,
                name: f.path.rsplit('/').next().unwrap_or(&f.path).to_owned(),
            })
            .collect(),
        folders: listing
            .folders
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                Some(RememberedFolder {
                    row: (first_row + i).to_string(),
                    id: f.id?,
                    name: f.path.rsplit('/').next().unwrap_or(&f.share).to_owned(),
                })
            })
            .collect(),
    }
    .remember(state.as_deref());
    if args.json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&listing)?))?;
        return Ok(());
    }
    let place = if listing.path.is_empty() {
        "shares".to_owned()
    } else {
        visible(&listing.path)
    };
    let mut text = format!(
        "{} ({}): {place}\n",
        listing.nickname,
        if listing.online { "online" } else { "offline" }
    );
    let rows = folders_here + listing.files.len();
    let w_row = (first_row + rows).to_string().len();
    for (i, folder) in listing.folders.iter().enumerate() {
        let name = if folder.path.is_empty() {
            folder.share.clone()
        } else {
            folder
                .path
                .rsplit('/')
                .next()
                .unwrap_or(&folder.path)
                .to_owned()
        };
        let mut line = format!("{:>w_row$}  {:>10}  {}/", first_row + i, "", visible(&name));
        if folder.files > 0 {
            let _ = write!(
                line,
                "  {} files, {}",
                folder.files,
                human_size(folder.bytes)
            );
        }
        if folder.summary.album.is_some() {
            let _ = write!(
                line,
                "  {}",
                visible(&release_title(&folder.summary, &name))
            );
        }
        text.push_str(&line);
        text.push('\n');
    }
    for (i, file) in listing.files.iter().enumerate() {
        let name = file.path.rsplit('/').next().unwrap_or(&file.path);
        let mut line = format!(
            "{:>w_row$}  {:>10}  {}  {}",
            first_row + folders_here + i,
            human_size(file.size),
            file.hash.fmt_short(),
            visible(name)
        );
        if let Some(shown) = file.tags.display() {
            let _ = write!(line, "  [{}]", visible(&shown));
        }
        text.push_str(&line);
        text.push('\n');
    }
    if rows == 0 {
        text.push_str("(empty)\n");
    } else {
        text.push_str(
            "`peerdex browse NICK SHARE/FOLDER` opens a folder; `peerdex get ROW` downloads a \
             file or a whole folder\n",
        );
    }
    if let Some(next) = listing.next_offset {
        let _ = writeln!(text, "more: `--page {}`", next / limit + 1);
    }
    emit(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_seconds_or_clock() {
        assert_eq!(parse_duration("210"), Ok(210));
        assert_eq!(parse_duration("3:30"), Ok(210));
        assert_eq!(parse_duration("1:02:03"), Ok(3723));
        assert!(parse_duration("3:75").is_err());
        assert!(parse_duration("a").is_err());
        assert!(parse_duration("1:2:3:4").is_err());
        assert_eq!(clock(3723), "1:02:03");
        assert_eq!(clock(185), "3:05");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("700"), Ok(700));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("5mb"), Ok(5_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("2 KiB"), Ok(2048));
        assert!(parse_size("five").is_err());
        assert!(parse_size("5XB").is_err());
        assert!(parse_size("1e30TB").is_err());
    }
}
