//! File names from peers are untrusted: they become one safe file name inside the output folder.

use peerdex_shared::peer::{PART_SUFFIX, STATE_SUFFIX};

/// Longest file name produced, in bytes (most file systems allow 255).
const MAX_NAME_BYTES: usize = 200;

/// Names Windows reserves for devices, whatever the extension.
const RESERVED: [&str; 22] = [
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Turns a name received from a peer into a single path component that is safe everywhere: no
/// separators, no `..`, no control or invisible formatting characters, no leading dot, no device
/// names, bounded length.
/// `fallback` (e.g. the content hash) is used when nothing usable is left.
pub fn sanitize_file_name(name: &str, fallback: &str) -> String {
    // Only the last component of whatever path was sent.
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut clean: String = last
        .chars()
        // Bidirectional overrides and other invisible formatting would disguise the name.
        .filter(|c| !peerdex_shared::validate::is_invisible_format(*c))
        .map(|c| match c {
            '<' | '>' | ':' | '"' | '|' | '?' | '*' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    // Trailing dots and spaces are dropped by Windows; leading dots hide files (or spell `..`).
    clean = clean.trim_end_matches(['.', ' ']).trim_start().to_owned();
    if clean.starts_with('.') {
        clean = format!("_{}", clean.trim_start_matches('.'));
    }
    if clean.is_empty() || clean == "_" {
        clean = fallback.to_owned();
    }
    let stem = clean.split('.').next().unwrap_or("");
    if RESERVED
        .iter()
        .any(|r| r.eq_ignore_ascii_case(stem.trim_end()))
    {
        clean = format!("_{clean}");
    }
    let mut clean = truncate_keeping_extension(&clean, MAX_NAME_BYTES);
    // Our own partial and state files must not be named by a peer.
    if clean.ends_with(PART_SUFFIX) || clean.ends_with(STATE_SUFFIX) {
        clean.push('_');
    }
    clean
}

fn truncate_keeping_extension(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_owned();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() <= 16 => (stem, format!(".{ext}")),
        _ => (name, String::new()),
    };
    let mut end = max.saturating_sub(ext.len());
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ext}", &stem[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_one_safe_component() {
        let cases = [
            ("../../etc/passwd", "passwd"),
            ("..", "HASH"),
            (".", "HASH"),
            ("", "HASH"),
            ("...", "HASH"),
            ("..\\..\\windows\\system.ini", "system.ini"),
            ("/absolute/path.mp3", "path.mp3"),
            ("C:\\evil.exe", "evil.exe"),
            ("a\0b\nc.txt", "a_b_c.txt"),
            (".bashrc", "_bashrc"),
            ("..hidden", "_hidden"),
            ("CON", "_CON"),
            ("nul.txt", "_nul.txt"),
            ("Com1.mp3", "_Com1.mp3"),
            ("song.mp3. . ", "song.mp3"),
            ("what?.mp3", "what_.mp3"),
            ("노래.flac", "노래.flac"),
            ("Déjà vu.ogg", "Déjà vu.ogg"),
            ("song.mp3.peerdex-part", "song.mp3.peerdex-part_"),
            ("evil\u{202e}gpj.exe", "evilgpj.exe"),
            ("\u{feff}\u{200b}.bashrc", "_bashrc"),
            ("می\u{200c}خواهم.mp3", "می\u{200c}خواهم.mp3"),
        ];
        for (input, expected) in cases {
            assert_eq!(sanitize_file_name(input, "HASH"), expected, "{input:?}");
        }
    }

    #[test]
    fn long_names_keep_their_extension_and_utf8() {
        let long = format!("{}.mp3", "가".repeat(200));
        let clean = sanitize_file_name(&long, "x");
        assert!(clean.len() <= MAX_NAME_BYTES);
        assert!(clean.ends_with(".mp3"));
        assert!(clean.starts_with('가'));
    }
}
