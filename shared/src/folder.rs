//! Folder identity, version 1 (PROTOCOL §5.3): what makes two peers' copies of an album "the same
//! release" whatever they named the folder and its files.
//!
//! A folder's **content id** depends only on the hashes and sizes of the significant files
//! directly in it: names, paths, timestamps and junk (thumbnails, finder files, playlists, rip
//! logs, and cover images beside audio) do not count. The server computes it from the lists it
//! holds, so a peer cannot claim an id its list disagrees with.

use crate::kind::{FileKind, extension_of};
use crate::{FileHash, peer};

/// Version of the algorithm below (the junk list is part of it).
pub const FOLDER_ID_VERSION: u32 = 1;

/// The key-derivation context of version 1's content id.
pub const CONTENT_ID_CONTEXT: &str = "peerdex dirid v1 content";

/// A folder's content id: 32 bytes, 64 hex characters on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolderId([u8; 32]);

crate::hash::hex_id!(FolderId, "folder id");

/// File names that never count, compared ASCII-case-insensitively.
const JUNK_NAMES: [&str; 4] = ["thumbs.db", "ehthumbs.db", "desktop.ini", "folder.ini"];

/// Extensions that never count: playlists, cue sheets and rip logs name or describe files, so
/// they differ between copies of the same tracks.
const JUNK_EXTENSIONS: [&str; 8] = ["m3u", "m3u8", "pls", "cue", "log", "nfo", "sfv", "md5"];

/// Whether a file named `name` counts towards its folder's identity, in a folder that holds
/// audio (`with_audio`: images there are cover art and do not count).
pub fn is_significant(name: &str, with_audio: bool) -> bool {
    if name.starts_with('.')
        || name.ends_with(peer::PART_SUFFIX)
        || name.ends_with(peer::STATE_SUFFIX)
        || JUNK_NAMES
            .iter()
            .any(|junk| name.eq_ignore_ascii_case(junk))
    {
        return false;
    }
    let ext = extension_of(name);
    if JUNK_EXTENSIONS.contains(&ext.as_str()) {
        return false;
    }
    !(with_audio && FileKind::from_extension(&ext) == FileKind::Image)
}

/// Whether a file named `name` is audio (which makes images beside it cover art).
pub fn is_audio(name: &str) -> bool {
    FileKind::from_extension(&extension_of(name)) == FileKind::Audio
}

/// The significant files among `files` (name, hash, size) of one folder, in the given order.
pub fn significant<'a, T>(
    files: &'a [T],
    name: impl Fn(&T) -> &str + 'a,
) -> impl Iterator<Item = &'a T> + 'a {
    let with_audio = files.iter().any(|f| is_audio(name(f)));
    files
        .iter()
        .filter(move |f| is_significant(name(f), with_audio))
}

/// The content id of a folder whose significant files have these (hash, size) pairs, in any
/// order: `blake3::derive_key(CONTENT_ID_CONTEXT, enc)` where `enc` is the count as u64
/// little-endian followed by each `hash ‖ size as u64 little-endian`, sorted by those 40 bytes
/// (duplicates kept). `None` for a folder with no significant file.
pub fn content_id(files: impl IntoIterator<Item = (FileHash, u64)>) -> Option<FolderId> {
    let mut records: Vec<[u8; 40]> = files
        .into_iter()
        .map(|(hash, size)| {
            let mut record = [0u8; 40];
            record[..32].copy_from_slice(hash.as_bytes());
            record[32..].copy_from_slice(&size.to_le_bytes());
            record
        })
        .collect();
    if records.is_empty() {
        return None;
    }
    records.sort_unstable();
    let mut hasher = blake3::Hasher::new_derive_key(CONTENT_ID_CONTEXT);
    hasher.update(&(records.len() as u64).to_le_bytes());
    for record in &records {
        hasher.update(record);
    }
    Some(FolderId(*hasher.finalize().as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn h(byte: u8) -> FileHash {
        FileHash::from_bytes([byte; 32])
    }

    /// The golden vector of version 1: changing it breaks every stored id.
    #[test]
    fn golden_vector() {
        let id = content_id([(h(2), 7), (h(1), 5)]).unwrap();
        let mut enc = Vec::new();
        enc.extend_from_slice(&2u64.to_le_bytes());
        enc.extend_from_slice(&[1; 32]);
        enc.extend_from_slice(&5u64.to_le_bytes());
        enc.extend_from_slice(&[2; 32]);
        enc.extend_from_slice(&7u64.to_le_bytes());
        assert_eq!(
            id.as_bytes(),
            &blake3::derive_key("peerdex dirid v1 content", &enc)
        );
        assert_eq!(
            id.to_string(),
            "3ade4795d1476e33667c0e4d88efdda52fd6a728525ac71ba45137fcccdd0d91"
        );
    }

    #[test]
    fn order_free_multiset_and_empty() {
        let a = content_id([(h(1), 5), (h(2), 7)]);
        assert_eq!(a, content_id([(h(2), 7), (h(1), 5)]));
        assert_ne!(a, content_id([(h(1), 5), (h(2), 7), (h(2), 7)]));
        assert_ne!(a, content_id([(h(1), 5), (h(2), 8)]));
        assert_eq!(content_id([]), None);
    }

    #[test]
    fn junk_does_not_count() {
        for junk in [
            "Thumbs.db",
            ".DS_Store",
            "._01.flac",
            "desktop.ini",
            "album.m3u8",
            "rip.log",
            "x.cue",
            "a.mp3.peerdex-part",
        ] {
            assert!(!is_significant(junk, true), "{junk}");
        }
        assert!(!is_significant("cover.jpg", true));
        assert!(is_significant("cover.jpg", false));
        assert!(is_significant("01 Airbag.mp3", true));
        let files = ["01.flac", "folder.jpg", "notes.txt"];
        let kept: Vec<_> = significant(&files, |f| f).collect();
        assert_eq!(kept, [&"01.flac", &"notes.txt"]);
    }
}
