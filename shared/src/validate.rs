//! Rules for names that come from peers: share names, relative paths and nicknames.
//!
//! A path in a file list is untrusted input that other peers will later turn into file names on
//! their disks, so the rules are strict: relative, `/`-separated, no `.`/`..`/empty components, no
//! backslashes, drive prefixes, NUL or other control characters.

use std::fmt;

/// Size limits applied to paths; the server makes them configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathLimits {
    /// Longest accepted path, in bytes of UTF-8.
    pub max_path_bytes: usize,
    /// Most components (folders plus the file name).
    pub max_depth: usize,
    /// Longest single component, in bytes (most filesystems stop at 255).
    pub max_component_bytes: usize,
}

impl Default for PathLimits {
    fn default() -> Self {
        Self {
            max_path_bytes: 1024,
            max_depth: 32,
            max_component_bytes: 255,
        }
    }
}

/// Why a name or path was refused. The `Display` text is what users see in error bodies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Nothing was given.
    #[error("is empty")]
    Empty,
    /// Over the byte limit named.
    #[error("is {len} bytes, over the limit of {limit} ({limit_name})")]
    TooLong {
        /// Actual length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
        /// The configuration name of the limit.
        limit_name: &'static str,
    },
    /// More components than allowed.
    #[error("has {depth} components, over the limit of {limit} (max_depth)")]
    TooDeep {
        /// Actual number of components.
        depth: usize,
        /// The limit.
        limit: usize,
    },
    /// Starts with `/`: only relative paths are accepted.
    #[error("is absolute; paths must be relative to the share")]
    Absolute,
    /// Contains a backslash, which some systems treat as a separator.
    #[error("contains a backslash")]
    Backslash,
    /// Starts with a Windows drive prefix such as `C:`.
    #[error("starts with a drive prefix")]
    DrivePrefix,
    /// Contains a NUL or another control character.
    #[error("contains control character U+{0:04X}")]
    ControlChar(u32),
    /// Contains an invisible formatting character (Unicode category Cf, such as the
    /// right-to-left override U+202E, which can disguise an extension).
    #[error("contains invisible formatting character U+{0:04X}")]
    FormatChar(u32),
    /// Contains an empty, `.` or `..` component.
    #[error("has a {0} component")]
    BadComponent(BadComponent),
    /// A character that is not allowed in this kind of name.
    #[error("contains {0:?}, which is not allowed here")]
    BadChar(char),
}

/// Which kind of forbidden path component was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadComponent {
    /// `a//b` or a trailing slash.
    Empty,
    /// `.`
    Dot,
    /// `..`
    DotDot,
}

impl fmt::Display for BadComponent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadComponent::Empty => "empty",
            BadComponent::Dot => "'.'",
            BadComponent::DotDot => "'..'",
        })
    }
}

/// Whether `c` is an invisible formatting character that names must not carry: Unicode's
/// format category (Cf: bidirectional overrides and isolates, zero-width spaces, the byte order
/// mark, ...), except the zero-width joiner and non-joiner, which some scripts and emoji need.
/// Bidirectional controls make `evil\u{202E}gpj.exe` display as `evilexe.jpg`.
pub fn is_invisible_format(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    !matches!(c, '\u{200C}' | '\u{200D}') && c.general_category() == GeneralCategory::Format
}

fn check_controls(text: &str) -> Result<(), NameError> {
    for c in text.chars() {
        if c.is_control() {
            return Err(NameError::ControlChar(c as u32));
        }
        if is_invisible_format(c) {
            return Err(NameError::FormatChar(c as u32));
        }
    }
    Ok(())
}

fn has_drive_prefix(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// Checks a path relative to a share (`"Artist/Album/01 Song.mp3"`).
pub fn validate_relative_path(path: &str, limits: &PathLimits) -> Result<(), NameError> {
    if path.is_empty() {
        return Err(NameError::Empty);
    }
    if path.len() > limits.max_path_bytes {
        return Err(NameError::TooLong {
            len: path.len(),
            limit: limits.max_path_bytes,
            limit_name: "max_path_bytes",
        });
    }
    check_controls(path)?;
    if path.starts_with('/') {
        return Err(NameError::Absolute);
    }
    if path.contains('\\') {
        return Err(NameError::Backslash);
    }
    if has_drive_prefix(path) {
        return Err(NameError::DrivePrefix);
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        match component {
            "" => return Err(NameError::BadComponent(BadComponent::Empty)),
            "." => return Err(NameError::BadComponent(BadComponent::Dot)),
            ".." => return Err(NameError::BadComponent(BadComponent::DotDot)),
            c if c.len() > limits.max_component_bytes => {
                return Err(NameError::TooLong {
                    len: c.len(),
                    limit: limits.max_component_bytes,
                    limit_name: "max_component_bytes",
                });
            }
            _ => {}
        }
    }
    if depth > limits.max_depth {
        return Err(NameError::TooDeep {
            depth,
            limit: limits.max_depth,
        });
    }
    Ok(())
}

/// Longest share name, in bytes.
pub const MAX_SHARE_NAME_BYTES: usize = 64;

/// Checks the name of a share (a single path component such as `"music"`).
pub fn validate_share_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_SHARE_NAME_BYTES {
        return Err(NameError::TooLong {
            len: name.len(),
            limit: MAX_SHARE_NAME_BYTES,
            limit_name: "share name",
        });
    }
    check_controls(name)?;
    if name == "." || name == ".." {
        return Err(NameError::BadComponent(if name == "." {
            BadComponent::Dot
        } else {
            BadComponent::DotDot
        }));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | '\\' | ':')) {
        return Err(NameError::BadChar(c));
    }
    Ok(())
}

/// Longest nickname, in characters.
pub const MAX_NICKNAME_CHARS: usize = 32;

/// Checks a nickname: 1–32 letters or digits of any script, plus `_`, `-` and `.` inside.
pub fn validate_nickname(nick: &str) -> Result<(), NameError> {
    if nick.is_empty() {
        return Err(NameError::Empty);
    }
    let chars = nick.chars().count();
    if chars > MAX_NICKNAME_CHARS {
        return Err(NameError::TooLong {
            len: chars,
            limit: MAX_NICKNAME_CHARS,
            limit_name: "nickname characters",
        });
    }
    check_controls(nick)?;
    if let Some(c) = nick
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(NameError::BadChar(c));
    }
    if nick.starts_with('.') || nick.starts_with('-') {
        return Err(NameError::BadChar(nick.chars().next().unwrap_or('.')));
    }
    Ok(())
}

/// The form under which nicknames are compared for uniqueness: compatibility-normalised and
/// case-folded (NFKC_Casefold), so `Alice`, `alice` and full-width `ａｌｉｃｅ` are one name.
pub fn nickname_key(nick: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    // Folding can leave text unnormalised (and NFKC can expose new case pairs): NFKC, fold, NFKC.
    let folded = caseless::default_case_fold_str(&nick.nfkc().collect::<String>());
    folded.nfkc().collect()
}

/// Which field of a list entry is invalid, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {error}")]
pub struct EntryError {
    /// `"share"`, `"path"` or `"tags.<name>"`.
    pub field: &'static str,
    /// What is wrong with it.
    pub error: NameError,
}

/// Checks every field of a list entry that came from a peer.
pub fn validate_entry(
    entry: &crate::api::ListEntry,
    limits: &PathLimits,
) -> Result<(), EntryError> {
    validate_share_name(&entry.share).map_err(|error| EntryError {
        field: "share",
        error,
    })?;
    validate_relative_path(&entry.path, limits).map_err(|error| EntryError {
        field: "path",
        error,
    })?;
    for (name, value) in entry.tags.texts() {
        let field = match name {
            "artist" => "tags.artist",
            "album_artist" => "tags.album_artist",
            "title" => "tags.title",
            "album" => "tags.album",
            _ => "tags.genre",
        };
        if let Some(value) = value {
            if value.len() > crate::api::MAX_TAG_BYTES {
                let error = NameError::TooLong {
                    len: value.len(),
                    limit: crate::api::MAX_TAG_BYTES,
                    limit_name: "tag bytes",
                };
                return Err(EntryError { field, error });
            }
            check_controls(value).map_err(|error| EntryError { field, error })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str) -> Result<(), NameError> {
        validate_relative_path(path, &PathLimits::default())
    }

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a.mp3",
            "Music/Beyoncé/Halo.flac",
            "음악/아이유/좋은 날.mp3",
            "..hidden/x",
            "a/...b",
            "x..y",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn refuses_traversal_and_oddities() {
        let table: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("/etc/passwd", NameError::Absolute),
            ("../x", NameError::BadComponent(BadComponent::DotDot)),
            ("a/../../x", NameError::BadComponent(BadComponent::DotDot)),
            ("a/..", NameError::BadComponent(BadComponent::DotDot)),
            ("./a", NameError::BadComponent(BadComponent::Dot)),
            ("a//b", NameError::BadComponent(BadComponent::Empty)),
            ("a/", NameError::BadComponent(BadComponent::Empty)),
            ("a\\..\\b", NameError::Backslash),
            ("C:/Windows", NameError::DrivePrefix),
            ("c:x", NameError::DrivePrefix),
            ("a\0b", NameError::ControlChar(0)),
            ("a\nb", NameError::ControlChar(10)),
            ("a\u{7f}", NameError::ControlChar(0x7f)),
            ("a\u{85}", NameError::ControlChar(0x85)),
            ("evil\u{202e}gpj.exe", NameError::FormatChar(0x202e)),
            ("a\u{200b}b", NameError::FormatChar(0x200b)),
            ("\u{feff}a", NameError::FormatChar(0xfeff)),
            ("a\u{2066}b\u{2069}", NameError::FormatChar(0x2066)),
        ];
        for (path, want) in table {
            assert_eq!(check(path).as_ref(), Err(want), "{path:?}");
        }
    }

    #[test]
    fn enforces_limits() {
        let limits = PathLimits {
            max_path_bytes: 20,
            max_depth: 3,
            max_component_bytes: 5,
        };
        assert!(matches!(
            validate_relative_path(&"a".repeat(21), &limits),
            Err(NameError::TooLong {
                limit_name: "max_path_bytes",
                ..
            })
        ));
        assert!(matches!(
            validate_relative_path("abcdef", &limits),
            Err(NameError::TooLong {
                limit_name: "max_component_bytes",
                ..
            })
        ));
        assert_eq!(
            validate_relative_path("a/b/c/d", &limits),
            Err(NameError::TooDeep { depth: 4, limit: 3 })
        );
        assert_eq!(validate_relative_path("a/b/c", &limits), Ok(()));
    }

    #[test]
    fn share_names_and_nicknames() {
        assert_eq!(validate_share_name("music"), Ok(()));
        assert_eq!(validate_share_name("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(
            validate_share_name(".."),
            Err(NameError::BadComponent(BadComponent::DotDot))
        );
        assert_eq!(validate_nickname("Alice_99"), Ok(()));
        assert_eq!(validate_nickname("아이유"), Ok(()));
        assert_eq!(validate_nickname("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(validate_nickname("-x"), Err(NameError::BadChar('-')));
        assert!(validate_nickname(&"x".repeat(33)).is_err());
        assert_eq!(nickname_key("ALICE"), nickname_key("alice"));
        // Full-width and other compatibility forms are the same name.
        assert_eq!(nickname_key("ａｌｉｃｅ"), "alice");
        assert_eq!(nickname_key("Ａｌｉｃｅ"), nickname_key("alice"));
        assert_eq!(nickname_key("Straße"), nickname_key("STRASSE"));
        assert_ne!(nickname_key("alice"), nickname_key("alice2"));
    }

    #[test]
    fn joiners_some_scripts_need_are_kept() {
        // Persian uses the zero-width non-joiner; emoji sequences the joiner.
        assert_eq!(check("می\u{200c}خواهم.mp3"), Ok(()));
        assert_eq!(check("👩\u{200d}💻.png"), Ok(()));
        assert_eq!(
            validate_share_name("Mu\u{202e}sic"),
            Err(NameError::FormatChar(0x202e))
        );
    }
}
