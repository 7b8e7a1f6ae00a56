//! `peerdex search` and `peerdex browse`: tables fitted to the terminal, JSON for scripts, and
//! the last search's rows remembered so that `peerdex get 3` fetches row 3.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use peerdex_shared::FileHash;
use peerdex_shared::api::{BrowseEntry, SearchHit};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_SERVER, human_size};
use crate::ServerClient;
use crate::server_api::SearchQuery;

/// File in the state directory holding the last search's rows.
pub const LAST_SEARCH_FILE: &str = "last-search.json";

/// `peerdex search` arguments.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Index server URL
    #[arg(long, env = "PEERDEX_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
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
    /// Most results
    #[arg(long, default_value_t = 20)]
    limit: u64,
    /// Print the server's answer as one JSON document
    #[arg(long)]
    json: bool,
    /// Words to search for (prefixes match; `-word` excludes, `"a b"` is a phrase)
    #[arg(required = true)]
    words: Vec<String>,
}

/// `peerdex browse` arguments.
#[derive(Debug, Args)]
pub struct BrowseArgs {
    /// Index server URL
    #[arg(long, env = "PEERDEX_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// Print every file as one JSON document
    #[arg(long)]
    json: bool,
    /// The peer's nickname
    nick: String,
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

/// One remembered row of the last search.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RememberedHit {
    /// Content hash.
    pub hash: FileHash,
    /// Size.
    pub size: u64,
    /// Name shown.
    pub name: String,
}

/// The last search, as `peerdex get ROW` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastSearch {
    /// Server searched.
    pub server: String,
    /// Query text.
    pub query: String,
    /// Rows, 1-based in the table.
    pub hits: Vec<RememberedHit>,
}

impl LastSearch {
    /// Reads the remembered search from `state`; `None` when there was none.
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

/// Renders the numbered table, the name column taking what the other columns leave of `width`.
fn table(hits: &[SearchHit], width: Option<usize>) -> Vec<String> {
    let rows: Vec<[String; 5]> = hits
        .iter()
        .enumerate()
        .map(|(i, hit)| {
            [
                (i + 1).to_string(),
                human_size(hit.size),
                hit.sources_online.to_string(),
                format!("{:?}", hit.kind).to_lowercase(),
                best_source(hit),
            ]
        })
        .collect();
    let widest = |col: usize, title: &str| {
        rows.iter()
            .map(|r| console::measure_text_width(&r[col]))
            .chain([title.len()])
            .max()
            .unwrap_or(0)
    };
    let (w_row, w_size, w_src, w_kind, w_best) = (
        widest(0, "#"),
        widest(1, "SIZE"),
        widest(2, "SRC"),
        widest(3, "KIND"),
        widest(4, "BEST SOURCE").min(24),
    );
    let fixed = w_row + w_size + w_src + w_kind + w_best + 10;
    let names_widest = hits
        .iter()
        .map(|h| console::measure_text_width(&h.name))
        .chain(["NAME".len()])
        .max()
        .unwrap_or(4);
    let w_name = match width {
        Some(width) => width.saturating_sub(fixed).clamp(12, names_widest.max(12)),
        None => names_widest,
    };
    let cell = |text: &str, w: usize| {
        let cut = console::truncate_str(text, w, "…");
        let pad = w.saturating_sub(console::measure_text_width(&cut));
        format!("{cut}{}", " ".repeat(pad))
    };
    let right = |text: &str, w: usize| format!("{text:>w$}");
    let mut out = vec![format!(
        "{}  {}  {}  {}  {}  {}",
        right("#", w_row),
        cell("NAME", w_name),
        right("SIZE", w_size),
        right("SRC", w_src),
        cell("KIND", w_kind),
        cell("BEST SOURCE", w_best)
    )];
    for (hit, row) in hits.iter().zip(&rows) {
        out.push(
            format!(
                "{}  {}  {}  {}  {}  {}",
                right(&row[0], w_row),
                cell(&hit.name, w_name),
                right(&row[1], w_size),
                right(&row[2], w_src),
                cell(&row[3], w_kind),
                cell(&row[4], w_best)
            )
            .trim_end()
            .to_owned(),
        );
    }
    out
}

/// Runs `peerdex search`.
pub async fn search(args: SearchArgs, state: Option<PathBuf>) -> anyhow::Result<()> {
    let client = ServerClient::new(&args.server)?;
    let query = SearchQuery {
        q: args.words.join(" "),
        ext: args.ext,
        kind: args.kind,
        min_size: args.min_size,
        max_size: args.max_size,
        limit: Some(args.limit),
        offset: None,
    };
    let result = client
        .search(&query)
        .await
        .with_context(|| format!("searching {}", args.server))?;
    if let Some(state) = state {
        let remembered = LastSearch {
            server: args.server.clone(),
            query: query.q.clone(),
            hits: result
                .hits
                .iter()
                .map(|h| RememberedHit {
                    hash: h.hash,
                    size: h.size,
                    name: h.name.clone(),
                })
                .collect(),
        };
        // Not fatal: the results are still shown.
        if let Err(e) = remembered.save(&state) {
            tracing::warn!(error = %format!("{e:#}"), "cannot remember the results for `peerdex get ROW`");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    if result.hits.is_empty() {
        println!("no results");
        return Ok(());
    }
    for line in table(&result.hits, terminal_width()) {
        println!("{line}");
    }
    // A total that is a lower bound reads "20 of 1000+".
    let plus = if result.total_exact { "" } else { "+" };
    println!(
        "{} of {}{plus} result(s); `peerdex get ROW` downloads a row",
        result.hits.len(),
        result.total
    );
    Ok(())
}

/// Runs `peerdex browse`.
pub async fn browse(args: BrowseArgs) -> anyhow::Result<()> {
    let client = ServerClient::new(&args.server)?;
    let context = || format!("browsing {} on {}", args.nick, args.server);
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
    if args.json {
        let document = serde_json::json!({
            "peer_id": peer_id, "nickname": nickname, "online": online,
            "entries": entries, "files": files,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
        return Ok(());
    }
    println!(
        "{nickname} ({}), {entries} files",
        if online { "online" } else { "offline" }
    );
    for file in &files {
        println!(
            "{:>10}  {}  {}/{}",
            human_size(file.size),
            file.hash.fmt_short(),
            file.share,
            file.path
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
