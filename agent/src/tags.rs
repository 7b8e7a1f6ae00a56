//! Reading media tags from shared files: audio tags and properties (lofty), the title and author
//! of HTML, Markdown and PDF documents.
//!
//! Tags are read once per file version, by the hash thread right after it hashed the file (its
//! pages are then still cached), or from the catalog's backlog for files hashed before tags were
//! read. Files come from anyone, so a read is bounded: at most [`READ_BUDGET`] bytes are read
//! (a reader that counts), tag items are capped at [`TAG_ALLOCATION_LIMIT`] bytes, cover art is
//! skipped, and a panic inside the tag library is caught and turns into "no tags".

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Once;

use lofty::config::{GlobalOptions, ParseOptions, ParsingMode};
use lofty::file::FileType;
use lofty::prelude::{Accessor, AudioFile, ItemKey, TaggedFileExt};
use lofty::probe::Probe;
use peerdex_shared::api::{MediaTags, clean_tag_text};
use peerdex_shared::kind::extension_of;

/// Most bytes one file's tag read may read, whatever the file declares.
pub const READ_BUDGET: u64 = 8 << 20;

/// Largest single tag item the tag library may allocate.
pub const TAG_ALLOCATION_LIMIT: usize = 1 << 20;

/// How a file's tags are read, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// Audio (and MP4-family video) through lofty.
    Lofty,
    /// `<title>` and `<meta name="author">` of an HTML page.
    Html,
    /// The first `# heading` (or a front matter `title:`) of a Markdown file.
    Markdown,
    /// The Info dictionary of a PDF.
    Pdf,
}

fn reader_for(name: &str) -> Option<Reader> {
    match extension_of(name).as_str() {
        "mp3" | "flac" | "ogg" | "oga" | "opus" | "m4a" | "m4b" | "aac" | "wav" | "aiff"
        | "aif" | "ape" | "wv" | "mpc" | "spx" | "mp4" | "m4v" | "mov" => Some(Reader::Lofty),
        "html" | "htm" => Some(Reader::Html),
        "md" | "markdown" => Some(Reader::Markdown),
        "pdf" => Some(Reader::Pdf),
        _ => None,
    }
}

/// Whether files named like this carry tags the agent reads.
pub fn has_tags(name: &str) -> bool {
    reader_for(name).is_some()
}

/// The tags of an open file named `name` (empty when it has none, is not of a kind with tags,
/// or cannot be parsed). Never panics, never reads more than [`READ_BUDGET`] bytes.
pub fn read_tags(file: &File, name: &str) -> MediaTags {
    let Some(reader) = reader_for(name) else {
        return MediaTags::default();
    };
    let capped = Capped {
        file,
        budget: READ_BUDGET,
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match reader {
        Reader::Lofty => lofty_tags(capped),
        Reader::Html => html_tags(&head(capped, 64 << 10)),
        Reader::Markdown => markdown_tags(&head(capped, 16 << 10)),
        Reader::Pdf => pdf_tags(file),
    }));
    match outcome {
        Ok(tags) => tags,
        Err(_) => {
            tracing::warn!(
                name,
                "the tag reader panicked on this file; sharing it without tags"
            );
            MediaTags::default()
        }
    }
}

/// A file read through a budget: reads past it fail, so no declared size makes a read unbounded.
struct Capped<'a> {
    file: &'a File,
    budget: u64,
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.budget == 0 {
            return Err(std::io::Error::other("tag read budget spent"));
        }
        let want = buf.len().min(self.budget.min(usize::MAX as u64) as usize);
        let n = self.file.read(&mut buf[..want])?;
        self.budget -= n as u64;
        Ok(n)
    }
}

impl Seek for Capped<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Up to `limit` bytes from the start, as text (invalid UTF-8 replaced).
fn head(mut capped: Capped<'_>, limit: u64) -> String {
    let mut bytes = Vec::new();
    let _ = capped.seek(SeekFrom::Start(0));
    let _ = (&mut capped).take(limit).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn apply_limits() {
    thread_local! {
        static APPLIED: Once = const { Once::new() };
    }
    // lofty's global options are per thread.
    APPLIED.with(|once| {
        once.call_once(|| {
            lofty::config::apply_global_options(
                GlobalOptions::new().allocation_limit(TAG_ALLOCATION_LIMIT),
            );
        });
    });
}

fn lofty_tags(mut capped: Capped<'_>) -> MediaTags {
    apply_limits();
    if capped.seek(SeekFrom::Start(0)).is_err() {
        return MediaTags::default();
    }
    let options = ParseOptions::new()
        .read_cover_art(false)
        .parsing_mode(ParsingMode::Relaxed)
        .max_junk_bytes(4096);
    let probe = Probe::new(BufReader::new(capped)).options(options);
    let Ok(tagged) = probe.guess_file_type().and_then(|p| {
        p.read()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
    }) else {
        return MediaTags::default();
    };
    let mut tags = MediaTags::default();
    let props = tagged.properties();
    let secs = props.duration().as_secs_f64().round();
    if secs >= 1.0 && secs < f64::from(u32::MAX) {
        tags.duration_secs = Some(secs as u32);
    }
    tags.bitrate_kbps = props.audio_bitrate().filter(|&b| b > 0);
    tags.sample_rate = props.sample_rate().filter(|&r| r > 0);
    tags.channels = props.channels().filter(|&c| c > 0);
    tags.bit_depth = props.bit_depth().filter(|&b| b > 0);
    let lossless = match tagged.file_type() {
        FileType::Flac | FileType::Wav | FileType::Aiff | FileType::Ape | FileType::WavPack => true,
        // ALAC in MP4 has a bit depth; AAC has none.
        FileType::Mp4 => tags.bit_depth.is_some(),
        _ => false,
    };
    if tags.duration_secs.is_some() || tags.sample_rate.is_some() {
        tags.lossless = Some(lossless);
    }
    if let Some(tag) = tagged.primary_tag().or_else(|| tagged.first_tag()) {
        tags.artist = tag.artist().as_deref().and_then(clean_tag_text);
        tags.title = tag.title().as_deref().and_then(clean_tag_text);
        tags.album = tag.album().as_deref().and_then(clean_tag_text);
        tags.genre = tag.genre().as_deref().and_then(clean_tag_text);
        tags.album_artist = tag
            .get_string(ItemKey::AlbumArtist)
            .and_then(clean_tag_text)
            .filter(|a| tags.artist.as_deref() != Some(a.as_str()));
        tags.track = tag.track().filter(|&t| t > 0 && t < 10_000);
        tags.year = tag
            .date()
            .map(|d| u32::from(d.year))
            .filter(|&y| (1000..=9999).contains(&y));
    }
    tags
}

/// Text between the end of the tag that `open` starts and `close`, case-insensitively.
fn between<'a>(text: &'a str, lower: &str, open: &str, close: &str) -> Option<&'a str> {
    let start = lower.find(open)?;
    let after = start + lower[start..].find('>')? + 1;
    let end = after + lower[after..].find(close)?;
    text.get(after..end)
}

/// Decodes the few HTML entities titles use.
fn unescape_html(text: &str) -> String {
    text.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
}

fn html_tags(text: &str) -> MediaTags {
    let lower = text.to_ascii_lowercase();
    let mut tags = MediaTags {
        title: between(text, &lower, "<title", "</title")
            .map(unescape_html)
            .and_then(|t| clean_tag_text(&t)),
        ..MediaTags::default()
    };
    if let Some(at) = lower.find("name=\"author\"") {
        // The tag around the attribute: its `content="…"`.
        let start = lower[..at].rfind('<').unwrap_or(at);
        let end = at + lower[at..].find('>').unwrap_or(lower.len() - at);
        let tag_lower = &lower[start..end];
        if let Some(c) = tag_lower.find("content=\"") {
            let value_start = start + c + "content=\"".len();
            if let Some(len) = lower[value_start..].find('"') {
                tags.artist = text
                    .get(value_start..value_start + len)
                    .map(unescape_html)
                    .and_then(|a| clean_tag_text(&a));
            }
        }
    }
    tags
}

fn markdown_tags(text: &str) -> MediaTags {
    let mut tags = MediaTags::default();
    let mut lines = text.lines();
    if text.starts_with("---") {
        lines.next();
        for line in lines.by_ref() {
            if line.trim() == "---" {
                break;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            match key.trim().to_ascii_lowercase().as_str() {
                "title" => tags.title = clean_tag_text(value),
                "author" => tags.artist = clean_tag_text(value),
                _ => {}
            }
        }
    }
    if tags.title.is_none() {
        tags.title = lines
            .find_map(|line| line.strip_prefix("# "))
            .and_then(|t| clean_tag_text(t.trim_end_matches('#')));
    }
    tags
}

/// Bytes of a PDF's start and end searched for the Info dictionary.
const PDF_WINDOW: u64 = 256 << 10;

fn pdf_tags(file: &File) -> MediaTags {
    let mut tags = MediaTags::default();
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return tags;
    };
    let mut window = Vec::new();
    let mut read_at = |offset: u64, n: u64| {
        let mut f = file;
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.take(n).read_to_end(&mut window);
        }
    };
    read_at(0, PDF_WINDOW.min(len));
    if len > PDF_WINDOW {
        read_at(len.saturating_sub(PDF_WINDOW).max(PDF_WINDOW), PDF_WINDOW);
    }
    if !window.starts_with(b"%PDF-") {
        return tags;
    }
    tags.title = pdf_string(&window, b"/Title").and_then(|t| clean_tag_text(&t));
    tags.artist = pdf_string(&window, b"/Author").and_then(|t| clean_tag_text(&t));
    tags
}

/// The value of `key` in an uncompressed dictionary: a literal `(…)` or hex `<…>` string, in
/// PDFDocEncoding (read as Latin-1) or UTF-16BE with a byte-order mark.
fn pdf_string(bytes: &[u8], key: &[u8]) -> Option<String> {
    let at = bytes.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &bytes[at..];
    let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &rest[start..];
    let raw: Vec<u8> = match rest.first()? {
        b'(' => {
            let mut out = Vec::new();
            let mut depth = 0usize;
            let mut i = 1;
            while i < rest.len() && out.len() < 4096 {
                match rest[i] {
                    b'\\' if i + 1 < rest.len() => {
                        i += 1;
                        out.push(match rest[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                    }
                    b'(' => {
                        depth += 1;
                        out.push(b'(');
                    }
                    b')' if depth == 0 => break,
                    b')' => {
                        depth -= 1;
                        out.push(b')');
                    }
                    other => out.push(other),
                }
                i += 1;
            }
            out
        }
        b'<' => {
            let end = rest.iter().position(|&b| b == b'>')?;
            let digits: Vec<u8> = rest[1..end]
                .iter()
                .copied()
                .filter(u8::is_ascii_hexdigit)
                .collect();
            digits
                .chunks(2)
                .filter_map(|pair| {
                    let text = std::str::from_utf8(pair).ok()?;
                    u8::from_str_radix(&format!("{text:0<2}"), 16).ok()
                })
                .collect()
        }
        _ => return None,
    };
    if let Some(utf16) = raw.strip_prefix(&[0xfe, 0xff]) {
        let units: Vec<u16> = utf16
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect();
        return Some(String::from_utf16_lossy(&units));
    }
    Some(raw.iter().map(|&b| char::from(b)).collect())
}

/// Opens `path` and reads its tags (for tests and benchmarks).
pub fn read_tags_at(path: &Path) -> std::io::Result<MediaTags> {
    let file = File::open(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(read_tags(&file, &name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tags_of(name: &str, bytes: &[u8]) -> MediaTags {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        read_tags_at(&path).unwrap()
    }

    #[test]
    fn documents_give_title_and_author() {
        let html = tags_of(
            "a.html",
            b"<html><head><TITLE>Caf&amp;e \xc3\xa9 notes</TITLE>\
              <meta name=\"author\" content=\"Ada L.\"></head></html>",
        );
        assert_eq!(html.title.as_deref(), Some("Caf&e é notes"));
        assert_eq!(html.artist.as_deref(), Some("Ada L."));
        let md = tags_of(
            "n.md",
            b"---\ntitle: \"Field Guide\"\nauthor: Kim\n---\n# Other\n",
        );
        assert_eq!(md.title.as_deref(), Some("Field Guide"));
        assert_eq!(md.artist.as_deref(), Some("Kim"));
        let md = tags_of("n.md", b"intro\n# Release notes\n");
        assert_eq!(md.title.as_deref(), Some("Release notes"));
        let pdf = tags_of(
            "p.pdf",
            b"%PDF-1.4\n1 0 obj << /Title (Annual \\(draft\\) report) \
              /Author <FEFF00C5006B0065> >> endobj\n%%EOF",
        );
        assert_eq!(pdf.title.as_deref(), Some("Annual (draft) report"));
        assert_eq!(pdf.artist.as_deref(), Some("Åke"));
    }

    #[test]
    fn malformed_media_gives_no_tags_and_no_panic() {
        let mut huge_frame =
            b"ID3\x04\x00\x00\x7f\x7f\x7f\x7fTIT2\x7f\x7f\x7f\x7f\x00\x00".to_vec();
        huge_frame.extend(std::iter::repeat_n(0xffu8, 4096));
        for (name, bytes) in [
            ("empty.flac", Vec::new()),
            ("trunc.mp3", b"ID3\x03\x00".to_vec()),
            ("huge.mp3", huge_frame),
            (
                "random.m4a",
                (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            ),
            ("zero.ogg", b"OggS\x00".to_vec()),
            ("bad.pdf", b"%PDF-1.7 /Title (unterminated".to_vec()),
        ] {
            let tags = tags_of(name, &bytes);
            assert!(
                tags.artist.is_none() && tags.album.is_none(),
                "{name}: {tags:?}"
            );
        }
    }

    #[test]
    fn only_known_kinds_are_read() {
        assert!(has_tags("01 Song.FLAC"));
        assert!(has_tags("talk.pdf"));
        assert!(!has_tags("photo.jpg"));
        assert!(!has_tags("archive.zip"));
    }
}
