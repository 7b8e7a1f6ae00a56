//! The peer wire protocol (PROTOCOL §6, §8): what an agent's file server and a downloader must
//! agree on. Routes, header names and limits live here once; both sides build from these.
//!
//! Goals: content is named only by its hash (no path from a request is ever used), every byte is
//! verifiable against that hash (`crate::pieces`), and a peer cannot make the other side buffer,
//! wait or dial more than the limits below. Non-goals: authentication of plain connections (an
//! address is proven by the index server's connect-back), several ranges per request.

use std::net::IpAddr;

use crate::FileHash;

/// Prefix of the content routes: `/peerdex/v1/blobs/{hash}` and `…/{hash}/pieces`.
pub const BLOB_PREFIX: &str = "/peerdex/v1/blobs/";

/// The route that answers the index server's connect-back probe.
pub const CONNECT_BACK_PATH: &str = "/peerdex/v1/connect-back";

/// Most pieces one proof request covers (64 GiB of content); larger ranges are clamped.
pub const MAX_PROOF_PIECES: u64 = 65_536;

/// The first line a source sends on a reverse connection, before speaking HTTP as the server:
/// `PEERDEX-REVERSE <token>\n`.
pub const REVERSE_PREAMBLE: &str = "PEERDEX-REVERSE ";

/// The `Upgrade` protocol name of relay connections.
pub const RELAY_PROTOCOL: &str = "peerdex-relay";

/// Suffix of a download's partial file, beside its destination. Agents never share such files.
pub const PART_SUFFIX: &str = ".peerdex-part";

/// Suffix of a download's state file, beside its destination. Agents never share such files.
pub const STATE_SUFFIX: &str = ".peerdex-state";

/// Header names of the file server's requests and answers.
pub mod header {
    /// On a `503`: the request's place in the upload queue (1 = next).
    pub const QUEUE_POSITION: &str = "x-peerdex-queue-position";
    /// On a proof: the file's size in bytes.
    pub const SIZE: &str = "x-peerdex-size";
    /// On a proof: the piece size in bytes.
    pub const PIECE_SIZE: &str = "x-peerdex-piece-size";
    /// On a proof: the number of pieces.
    pub const PIECES: &str = "x-peerdex-pieces";
    /// On a proof: the pieces it covers, `A-E` with `E` exclusive.
    pub const PROOF_RANGE: &str = "x-peerdex-proof-range";
    /// Request: a grant for non-public content, `DOWNLOADER EXPIRES_AT SIGNATURE` (see
    /// [`crate::api::Grant::header_value`]); the source is the peer asked, the hash the one in
    /// the path.
    pub const GRANT: &str = "x-peerdex-grant";
    /// Request: the downloader's signature over [`crate::identity::grant_use_message`].
    pub const GRANT_PROOF: &str = "x-peerdex-grant-proof";
    /// Request: `PEER_ID MINUTE SIGNATURE`, the downloader's key and its signature over
    /// [`crate::identity::downloader_message`] (see [`super::downloader_header`]).
    pub const DOWNLOADER: &str = "x-peerdex-downloader";
}

/// Minutes a downloader header's minute may be off from the source's clock.
pub const DOWNLOADER_SKEW_MINUTES: u64 = 3;

/// The current Unix minute (the time unit of downloader headers).
pub fn unix_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// The value of [`header::DOWNLOADER`].
pub fn downloader_header(
    downloader: &crate::PeerId,
    minute: u64,
    signature: &crate::PeerSignature,
) -> String {
    format!("{downloader} {minute} {signature}")
}

/// Reads a [`header::DOWNLOADER`] value sent to `source` for `hash`: the downloader's key when
/// the signature is its own, for this source and content, and the minute is current.
pub fn verify_downloader_header(
    value: &str,
    source: &crate::PeerId,
    hash: &FileHash,
    now_minute: u64,
) -> Option<crate::PeerId> {
    let mut parts = value.split(' ');
    let downloader: crate::PeerId = parts.next()?.parse().ok()?;
    let minute: u64 = parts.next()?.parse().ok()?;
    let signature: crate::PeerSignature = parts.next()?.parse().ok()?;
    if parts.next().is_some() || minute.abs_diff(now_minute) > DOWNLOADER_SKEW_MINUTES {
        return None;
    }
    downloader
        .verify(
            &crate::identity::downloader_message(source, &downloader, hash, minute),
            &signature,
        )
        .ok()?;
    Some(downloader)
}

/// The route of a content.
pub fn blob_path(hash: &FileHash) -> String {
    format!("{BLOB_PREFIX}{hash}")
}

/// The route of the proof for pieces `first .. first + count` of a content.
pub fn pieces_path(hash: &FileHash, first: u64, count: u64) -> String {
    format!("{BLOB_PREFIX}{hash}/pieces?first={first}&count={count}")
}

/// Reads `/peerdex/v1/blobs/{hash}[/pieces]`: exactly 64 hex digits of either case. Returns the
/// hash and whether the proof was asked for; anything else is `None` (the 404 of an unknown
/// hash).
pub fn parse_blob_path(path: &str) -> Option<(FileHash, bool)> {
    let rest = path.strip_prefix(BLOB_PREFIX)?;
    let (hash, pieces) = match rest.split_once('/') {
        None => (rest, false),
        Some((hash, "pieces")) => (hash, true),
        Some(_) => return None,
    };
    if hash.len() != 64 {
        return None;
    }
    hash.parse().ok().map(|h| (h, pieces))
}

/// Whether a source's answer (untrusted headers) to a request for bytes `start..end` is exactly
/// that range: a `206` whose `Content-Range` starts at `start` and ends at `end - 1`, or a whole
/// file of `end` bytes when `start` is 0. Anything else would put bytes at the wrong offsets.
pub fn range_answer_ok(
    status: u16,
    content_range: Option<&str>,
    content_length: Option<&str>,
    start: u64,
    end: u64,
) -> bool {
    if end <= start {
        return false;
    }
    let expected = format!("bytes {start}-{}/", end - 1);
    let range_ok = status == 206 && content_range.is_some_and(|v| v.starts_with(&expected));
    let length = content_length.and_then(|v| v.trim().parse::<u64>().ok());
    let whole_file_ok = status == 200 && start == 0 && length == Some(end);
    range_ok || whole_file_ok
}

/// The address that counts as one peer for per-peer limits, on both sides: an IPv4 address (also
/// when written IPv4-mapped), or an IPv6 /64 (one host can hold a whole /64 and rotate in it).
pub fn peer_bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ipv6_peers_are_counted_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_bucket(a), peer_bucket(b));
        assert_ne!(peer_bucket(a), peer_bucket(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(peer_bucket(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn blob_paths_are_exact_and_round_trip() {
        let hash: FileHash = "ab".repeat(32).parse().unwrap();
        assert_eq!(parse_blob_path(&blob_path(&hash)), Some((hash, false)));
        let proof = pieces_path(&hash, 3, 9);
        let (route, query) = proof.split_once('?').unwrap();
        assert_eq!(parse_blob_path(route), Some((hash, true)));
        assert_eq!(query, "first=3&count=9");
        let hex = "ab".repeat(32);
        for bad in [
            format!("{BLOB_PREFIX}{hex}/"),
            format!("{BLOB_PREFIX}{hex}/../../etc/passwd"),
            format!("{BLOB_PREFIX}..%2f..%2fetc%2fpasswd"),
            format!("{BLOB_PREFIX}{}", &hex[..63]),
            format!("{BLOB_PREFIX}{hex}%00"),
            "/etc/passwd".to_owned(),
        ] {
            assert!(parse_blob_path(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn range_answers_must_be_exactly_the_range_asked() {
        assert!(range_answer_ok(206, Some("bytes 10-19/100"), None, 10, 20));
        assert!(!range_answer_ok(206, Some("bytes 0-19/100"), None, 10, 20));
        assert!(range_answer_ok(200, None, Some("20"), 0, 20));
        assert!(!range_answer_ok(200, None, Some("20"), 10, 20));
        assert!(!range_answer_ok(206, None, None, 5, 5));
    }
}
