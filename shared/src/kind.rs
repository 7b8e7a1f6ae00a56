//! Coarse file kinds derived from the extension, used as a search filter.

use serde::{Deserialize, Serialize};

/// What sort of file an entry is, judged by its extension alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// Music and other sound.
    Audio,
    /// Films, clips, recordings.
    Video,
    /// Pictures.
    Image,
    /// Text, books, office documents.
    Document,
    /// Compressed bundles and disk images.
    Archive,
    /// Anything else.
    Other,
}

impl FileKind {
    /// Every kind, in a stable order.
    pub const ALL: [FileKind; 6] = [
        FileKind::Audio,
        FileKind::Video,
        FileKind::Image,
        FileKind::Document,
        FileKind::Archive,
        FileKind::Other,
    ];

    /// The kind of a file with this (lowercase, dot-less) extension.
    pub fn from_extension(ext: &str) -> FileKind {
        match ext {
            "mp3" | "flac" | "ogg" | "oga" | "opus" | "m4a" | "aac" | "wav" | "wma" | "aiff"
            | "aif" | "ape" | "alac" | "mid" | "midi" | "mka" | "wv" => FileKind::Audio,
            "mp4" | "mkv" | "avi" | "mov" | "wmv" | "webm" | "m4v" | "mpg" | "mpeg" | "flv"
            | "ts" | "m2ts" | "vob" | "3gp" | "ogv" => FileKind::Video,
            "jpg" | "jpeg" | "png" | "gif" | "bmp" | "tif" | "tiff" | "webp" | "heic" | "heif"
            | "svg" | "raw" | "cr2" | "nef" | "arw" | "dng" | "psd" | "avif" => FileKind::Image,
            "pdf" | "epub" | "mobi" | "azw3" | "djvu" | "txt" | "md" | "rtf" | "doc" | "docx"
            | "odt" | "xls" | "xlsx" | "ods" | "ppt" | "pptx" | "odp" | "csv" | "tex" | "html"
            | "htm" | "cbz" | "cbr" => FileKind::Document,
            "zip" | "rar" | "7z" | "tar" | "gz" | "tgz" | "bz2" | "xz" | "zst" | "iso" | "dmg"
            | "img" | "cab" | "lz" | "lzma" => FileKind::Archive,
            _ => FileKind::Other,
        }
    }

    /// The lowercase name used on the wire and in the index.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Audio => "audio",
            FileKind::Video => "video",
            FileKind::Image => "image",
            FileKind::Document => "document",
            FileKind::Archive => "archive",
            FileKind::Other => "other",
        }
    }

    /// Parses a kind name as used on the wire (case-insensitive).
    pub fn parse(name: &str) -> Option<FileKind> {
        FileKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }
}

/// The lowercase extension of a file name (`"Song.MP3"` → `"mp3"`), or `""` when there is none.
/// Leading dots (hidden files) do not start an extension, and overlong tails are not extensions.
pub fn extension_of(name: &str) -> String {
    match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot - 1 <= 16 => name[dot + 1..].to_lowercase(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_names() {
        assert_eq!(
            FileKind::from_extension(&extension_of("Halo.MP3")),
            FileKind::Audio
        );
        assert_eq!(
            FileKind::from_extension(&extension_of("a.tar.gz")),
            FileKind::Archive
        );
        assert_eq!(extension_of(".bashrc"), "");
        assert_eq!(extension_of("README"), "");
        assert_eq!(FileKind::parse("Video"), Some(FileKind::Video));
        assert_eq!(FileKind::parse("music"), None);
    }
}
