//! Request and response bodies of the index server's HTTP API (see `docs/PROTOCOL.md`).
//!
//! File lists travel as newline-delimited JSON (one [`ListEntry`] or [`DeltaOp`] per line) so
//! that neither side ever has to hold a million-entry list in memory.

use serde::{Deserialize, Serialize};

use crate::scope::Visibility;
use crate::{FileHash, FileKind, PeerId, PeerSignature};

/// `POST /api/v1/challenge`: a fresh single-use nonce to sign for registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChallengeResponse {
    /// Opaque nonce to put in the registration message.
    pub nonce: String,
    /// Seconds the nonce stays valid.
    pub expires_in_secs: u64,
}

/// `POST /api/v1/register` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// The peer's public key.
    pub peer_id: PeerId,
    /// The nickname claimed; bound to this key once taken.
    pub nickname: String,
    /// TCP port of the peer's file server, on the address the server sees the request come from.
    /// `0` means the peer accepts no inbound connections (it will be listed as firewalled).
    pub port: u16,
    /// The nonce from [`ChallengeResponse`].
    pub nonce: String,
    /// Signature over [`crate::identity::registration_message`].
    pub signature: PeerSignature,
    /// What the file server on `port` speaks (absent: plain HTTP, as agents before TLS).
    #[serde(default)]
    pub transport: PeerTransport,
}

/// What a peer's file server (or a downloader's reverse port) speaks (PROTOCOL §12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum PeerTransport {
    /// HTTP/1.1 in clear: agents from before TLS, or the debugging switch. Public content only.
    #[default]
    Plain,
    /// TLS 1.3 with the peer's key certificate (the default).
    Tls,
}

impl PeerTransport {
    /// Whether connections are TLS.
    pub fn is_tls(self) -> bool {
        self == PeerTransport::Tls
    }
}

/// Whether other peers can connect to a peer directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// The connect-back probe has not finished yet.
    Pending,
    /// The server connected to the advertised address and the peer proved its key there.
    Reachable,
    /// The probe failed (or was not possible): transfers need a reverse connection or relay.
    Firewalled,
}

/// `POST /api/v1/register` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// Bearer token for the calls that change this peer's state.
    pub session_token: String,
    /// The peer id, echoed.
    pub peer_id: PeerId,
    /// Version of the peer's list the server holds (`null`: none yet, upload in full).
    pub list_version: Option<u64>,
    /// Number of entries in that list.
    pub entries: u64,
    /// How often to heartbeat.
    pub heartbeat_interval_secs: u64,
    /// After this long without a heartbeat the peer is offline.
    pub offline_after_secs: u64,
    /// The address the server will advertise (observed IP, announced port), if any.
    pub advertised_addr: Option<String>,
    /// State of the connect-back probe.
    pub reachability: Reachability,
    /// The server's own public key: tickets it sends over the control channel are signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_key: Option<PeerId>,
}

/// Media tags of an entry, read by the agent from the file's own metadata (audio tags, a
/// container's header, a document's title and author). Absent fields are unknown: nothing is
/// guessed from file names. Texts are NFC, without control characters, at most
/// [`MAX_TAG_BYTES`] bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MediaTags {
    /// Performer (audio) or author (documents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// The album's artist, when the tags name one apart from the track's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album_artist: Option<String>,
    /// Track, film or document title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Track number within the album (or disc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<u32>,
    /// Year of release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<u32>,
    /// Genre, as the tags spell it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genre: Option<String>,
    /// Duration in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u32>,
    /// Audio bitrate in kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<u32>,
    /// Sample rate in Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Audio channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<u8>,
    /// Bits per sample, for lossless formats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_depth: Option<u8>,
    /// Whether the audio is lossless (FLAC, ALAC, WAV, AIFF, WavPack, APE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossless: Option<bool>,
    /// Video width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Video height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

impl MediaTags {
    /// True when no tag is set.
    pub fn is_empty(&self) -> bool {
        *self == MediaTags::default()
    }

    /// The form both sides store tags in (SQLite text): JSON, `None` when there are none.
    pub fn to_stored(&self) -> Option<String> {
        (!self.is_empty()).then(|| serde_json::to_string(self).unwrap_or_default())
    }

    /// Tags from their stored form; a value this build cannot read counts as none.
    pub fn from_stored(stored: Option<String>) -> MediaTags {
        stored
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default()
    }

    /// The text tags by field name, as validation and indexing see them.
    pub fn texts(&self) -> [(&'static str, Option<&str>); 5] {
        [
            ("artist", self.artist.as_deref()),
            ("album_artist", self.album_artist.as_deref()),
            ("title", self.title.as_deref()),
            ("album", self.album.as_deref()),
            ("genre", self.genre.as_deref()),
        ]
    }

    /// "Artist – Title (Album, Year)" from what is known, or `None` without a title.
    pub fn display(&self) -> Option<String> {
        let title = self.title.as_deref()?;
        let mut out = match self.artist.as_deref().or(self.album_artist.as_deref()) {
            Some(artist) => format!("{artist} \u{2013} {title}"),
            None => title.to_string(),
        };
        match (self.album.as_deref(), self.year) {
            (Some(album), Some(year)) => out.push_str(&format!(" ({album}, {year})")),
            (Some(album), None) => out.push_str(&format!(" ({album})")),
            (None, Some(year)) => out.push_str(&format!(" ({year})")),
            (None, None) => {}
        }
        Some(out)
    }

    /// "Artist – Title (Album, 1997) · 3:05 · 320 kbit/s · lossless": the display line and the
    /// audio facts, as pages show a file; `None` when the tags say none of it.
    pub fn summary_line(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(shown) = self.display() {
            parts.push(shown);
        }
        if let Some(secs) = self.duration_secs {
            parts.push(crate::units::clock(u64::from(secs)));
        }
        if let Some(kbps) = self.bitrate_kbps {
            parts.push(format!("{kbps} kbit/s"));
        }
        if self.lossless == Some(true) {
            parts.push("lossless".to_owned());
        }
        (!parts.is_empty()).then(|| parts.join(" \u{b7} "))
    }
}

/// A tag text as it may travel: NFC, control characters (NUL included) and surrounding
/// whitespace dropped, cut to [`MAX_TAG_BYTES`] on a character boundary; `None` when nothing is
/// left. Agents clean what a file says with this before sending it.
pub fn clean_tag_text(raw: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    let nfc: String = raw
        .nfc()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut text = nfc.trim();
    if text.len() > MAX_TAG_BYTES {
        let mut end = MAX_TAG_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = text[..end].trim_end();
    }
    (!text.is_empty()).then(|| text.to_string())
}

/// Longest accepted media tag text, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// One shared file, as a line of a full list upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ListEntry {
    /// Name of the share the file is in.
    pub share: String,
    /// Path relative to the share root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// BLAKE3 hash of the content.
    pub hash: FileHash,
    /// Optional media tags.
    #[serde(default, skip_serializing_if = "MediaTags::is_empty")]
    pub tags: MediaTags,
    /// Who may see and download it (`public` when absent; see [`crate::scope`]).
    #[serde(default, skip_serializing_if = "Visibility::is_public")]
    pub visibility: Visibility,
}

/// One line of a delta upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum DeltaOp {
    /// A file that the server's version of the list does not have.
    Add(ListEntry),
    /// A file whose size, mtime, hash or tags changed (same share and path).
    Change(ListEntry),
    /// A file that is gone.
    Remove {
        /// Share name.
        share: String,
        /// Path within the share.
        path: String,
    },
}

/// Response to a full or delta list upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SyncResponse {
    /// The version the server now holds.
    pub version: u64,
    /// Entries in the list after the upload.
    pub entries: u64,
}

/// `POST /api/v1/peers/{id}/heartbeat` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// When to send the next one.
    pub heartbeat_interval_secs: u64,
    /// The list version the server holds, so an agent notices a server that lost its list.
    pub list_version: Option<u64>,
    /// State of the connect-back probe.
    pub reachability: Reachability,
}

/// One peer that holds a content, as shown in search results.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    /// The peer's key.
    pub peer_id: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// `IP:port` to connect to; `null` when the peer announced no port.
    pub addr: Option<String>,
    /// Whether the address was verified by connect-back.
    pub reachability: Reachability,
    /// What the peer's file server speaks, on every route (absent: plain, servers before TLS).
    #[serde(default)]
    pub transport: PeerTransport,
    /// Share the file is in.
    pub share: String,
    /// Path of the file within the share.
    pub path: String,
    /// For a non-public copy: the server's permission for the asking device to fetch it from
    /// this peer, sent to the peer with the request (absent for public copies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

/// A short-lived permission, signed by the index server, for one downloader to fetch one
/// non-public content from one source (see [`crate::identity::grant_message`]). The source
/// checks it before serving; without it a non-public hash is answered like an unknown one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Grant {
    /// The peer that may serve.
    pub source: PeerId,
    /// The device (key) that may fetch.
    pub downloader: PeerId,
    /// The content.
    pub hash: FileHash,
    /// Unix time after which the grant is void.
    pub expires_at: u64,
    /// The server's signature.
    pub signature: PeerSignature,
}

impl Grant {
    /// The value of the [`crate::peer::header::GRANT`] request header.
    pub fn header_value(&self) -> String {
        format!("{} {} {}", self.downloader, self.expires_at, self.signature)
    }

    /// Reads a [`crate::peer::header::GRANT`] header sent to `source` for `hash`.
    pub fn from_header(value: &str, source: PeerId, hash: FileHash) -> Option<Grant> {
        let mut parts = value.split_ascii_whitespace();
        let downloader = parts.next()?.parse().ok()?;
        let expires_at = parts.next()?.parse().ok()?;
        let signature = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Grant {
            source,
            downloader,
            hash,
            expires_at,
            signature,
        })
    }
}

/// One distinct content in search results, with the online peers that hold it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchHit {
    /// Content hash.
    pub hash: FileHash,
    /// Size in bytes.
    pub size: u64,
    /// The file name shown: the most common name among the online copies whose path matched
    /// the query (among all online copies when none did, as for the sources endpoint).
    pub name: String,
    /// Where that copy is: its share and folder (`"Music/Beatles/Abbey Road"`), without the file
    /// name; empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub folder: String,
    /// Lowercase extension of that name.
    pub ext: String,
    /// Kind derived from the extension.
    pub kind: FileKind,
    /// Relevance score (higher is better; comparable within one response only).
    pub score: f32,
    /// How many online peers hold it.
    pub sources_online: u64,
    /// Up to `max_sources` of those peers, reachable ones first.
    pub sources: Vec<Source>,
    /// Listed to the viewer but downloadable only by its scope's audience (a `locked:` scope
    /// the viewer is outside): `sources` is empty and `sources_online` is 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
    /// The media tags of the copy shown (empty when it has none).
    #[serde(default, skip_serializing_if = "MediaTags::is_empty")]
    pub tags: MediaTags,
}

/// What a folder's files say together: the album and artist most of its audio files name, the
/// year, the total duration, whether all of it is lossless.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderSummary {
    /// Album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Album artist (or the artist most tracks name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// Year.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<u32>,
    /// Total duration of its files, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<u64>,
    /// Whether all of its audio is lossless (absent without audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lossless: Option<bool>,
}

impl FolderSummary {
    /// "Album (1997) — Artist" from the shared tags, else `name`.
    pub fn title(&self, name: &str) -> String {
        let Some(album) = &self.album else {
            return name.to_owned();
        };
        let mut title = album.clone();
        if let Some(year) = self.year {
            title.push_str(&format!(" ({year})"));
        }
        if let Some(artist) = &self.artist {
            title.push_str(&format!(" \u{2014} {artist}"));
        }
        title
    }
}

/// A folder (a release: an album, a box set's disc, a book's chapters) in search results: one
/// folder identity, however its copies are named, and how many online peers hold it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderHit {
    /// The folder identity (PROTOCOL §5.3).
    pub id: crate::folder::FolderId,
    /// The name of the copy shown (its last path component; the share's name for a root).
    pub name: String,
    /// Where that copy is: share and path.
    pub folder: String,
    /// Tags its files share.
    #[serde(flatten)]
    pub summary: FolderSummary,
    /// Files of the identity (junk left out).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Online peers holding at least one of its files (that the viewer may see).
    pub peers_online: u64,
    /// Of those, peers holding every file.
    pub complete: u64,
    /// Of those, peers holding some but not all.
    pub partial: u64,
}

impl FolderHit {
    /// "12 files, 80.1 MiB, 45:10 · on 3 people, 2 complete", as pages show a folder result.
    pub fn meta_line(&self) -> String {
        let mut meta = format!(
            "{} files, {}",
            self.files,
            crate::units::human_size(self.bytes)
        );
        if let Some(secs) = self.summary.duration_secs {
            meta.push_str(&format!(", {}", crate::units::clock(secs)));
        }
        meta.push_str(&format!(
            " \u{b7} on {} {}, {} complete",
            self.peers_online,
            if self.peers_online == 1 {
                "person"
            } else {
                "people"
            },
            self.complete
        ));
        meta
    }
}

/// One file of a folder identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderEntry {
    /// The name it has in the copy shown.
    pub name: String,
    /// Content hash.
    pub hash: FileHash,
    /// Size in bytes.
    pub size: u64,
    /// Its tags in that copy.
    #[serde(default, skip_serializing_if = "MediaTags::is_empty")]
    pub tags: MediaTags,
    /// Online peers holding it (that the viewer may download from).
    pub sources_online: u64,
}

/// A peer holding files of a folder identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderHolder {
    /// The peer's key.
    pub peer_id: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// How many of the identity's files it holds.
    pub files_held: u64,
}

/// `GET /api/v1/folders/{id}` response: what a folder download fetches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderResponse {
    /// The folder as a search shows it.
    #[serde(flatten)]
    pub hit: FolderHit,
    /// Its files, in the order and with the names of the copy shown.
    pub entries: Vec<FolderEntry>,
    /// Online holders, those with the most files first (at most the sources cap).
    pub holders: Vec<FolderHolder>,
}

/// A subfolder in a folder listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrowseFolder {
    /// Share name.
    pub share: String,
    /// Path within the share (`""` for the share itself).
    pub path: String,
    /// Files directly in it.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Its identity, when it holds files that make one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<crate::folder::FolderId>,
    /// Tags its files share.
    #[serde(flatten)]
    pub summary: FolderSummary,
}

/// `GET /api/v1/peers/by-nick/{nick}/folders` response: one level of a peer's share.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FolderListing {
    /// The peer browsed.
    pub peer_id: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// Whether it is online now.
    pub online: bool,
    /// The folder listed, `SHARE/PATH` (`""`: the list of shares).
    pub path: String,
    /// This folder itself (absent at the top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<BrowseFolder>,
    /// Subfolders on this page, sorted by name.
    pub folders: Vec<BrowseFolder>,
    /// Files directly in it on this page, sorted by name, after the subfolders.
    pub files: Vec<BrowseEntry>,
    /// Pass as `offset` for the next page; `null` on the last page.
    pub next_offset: Option<u64>,
}

fn exact_by_default() -> bool {
    true
}

/// `GET /api/v1/search` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SearchResponse {
    /// Distinct contents matching, online only (before pagination): exact when `total_exact`,
    /// otherwise a lower bound.
    pub total: u64,
    /// Whether `total` counts every match. A search stops counting once it has the best
    /// `offset + limit` results, and words are matched as prefixes only when whole words do not
    /// fill the page.
    #[serde(default = "exact_by_default")]
    pub total_exact: bool,
    /// Offset used.
    pub offset: u64,
    /// Limit used (after clamping).
    pub limit: u64,
    /// Results, best first.
    pub hits: Vec<SearchHit>,
    /// Folders (releases) of this page's results whose name, path or shared tags match the
    /// query, most complete copies first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderHit>,
}

impl SearchResponse {
    /// "12 results", "40+ results", or that nothing was found for `query`.
    pub fn count_line(&self, query: &str) -> String {
        match (self.total, self.total_exact) {
            (0, _) => format!("Nothing found for \u{201c}{query}\u{201d} among the people online."),
            (1, true) => "1 result".to_owned(),
            (n, true) => format!("{n} results"),
            (n, false) => format!("{n}+ results"),
        }
    }
}

/// `GET /api/v1/contents/{hash}/sources` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourcesResponse {
    /// Content hash.
    pub hash: FileHash,
    /// Size in bytes: the claimed size with the best evidence (PROTOCOL §3.11). A size claim is
    /// not proof: the downloader proves it with the piece hashes.
    pub size: u64,
    /// Online peers that hold it at that size.
    pub sources: Vec<Source>,
    /// The file name most of them use (the smallest of equally common names): what a downloader
    /// names the file. Empty from servers that predate it.
    #[serde(default)]
    pub name: String,
    /// Other sizes online peers claim for the same hash, best evidence first, each with its own
    /// sources: a downloader whose proof fails at `size` tries these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_sizes: Vec<SizeClaim>,
    /// Online peers downloading it that serve the verified pieces they hold (PROTOCOL §11.4):
    /// ask each only for its pieces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial_sources: Vec<PartialSource>,
}

/// A peer that holds some verified pieces of a content it is still downloading.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartialSource {
    /// The peer, as a source.
    #[serde(flatten)]
    pub source: Source,
    /// The size it downloads the content at.
    pub size: u64,
    /// The pieces it holds, verified.
    pub pieces: crate::pieces::PieceSet,
}

/// One content of a `PUT /api/v1/peers/{id}/partials` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartialEntry {
    /// The content.
    pub hash: FileHash,
    /// Its size.
    pub size: u64,
    /// The file name being written.
    pub name: String,
    /// The verified pieces held.
    pub pieces: crate::pieces::PieceSet,
}

/// `PUT /api/v1/peers/{id}/partials` body: every partial download the peer serves now (it
/// replaces the previous announcement).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PartialsAnnouncement {
    /// The partial downloads.
    pub partials: Vec<PartialEntry>,
}

/// Most partial downloads one announcement may name.
pub const MAX_PARTIALS: usize = 256;

/// One size claimed for a content hash, and the online peers that claim it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SizeClaim {
    /// Size in bytes.
    pub size: u64,
    /// How many online peers claim it.
    pub sources_online: u64,
    /// Up to the sources cap of those peers, reachable ones first.
    pub sources: Vec<Source>,
    /// The file name most of them use.
    #[serde(default)]
    pub name: String,
}

/// A file in a browse listing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrowseEntry {
    /// Share name.
    pub share: String,
    /// Path within the share.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (Unix seconds).
    pub mtime: i64,
    /// Content hash.
    pub hash: FileHash,
    /// Kind from the extension.
    pub kind: FileKind,
    /// Its tags.
    #[serde(default, skip_serializing_if = "MediaTags::is_empty")]
    pub tags: MediaTags,
}

/// `GET /api/v1/peers/by-nick/{nick}/files` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BrowseResponse {
    /// The peer browsed.
    pub peer_id: PeerId,
    /// Its nickname.
    pub nickname: String,
    /// Whether it is online now.
    pub online: bool,
    /// Total entries in its list.
    pub entries: u64,
    /// This page, sorted by share then path.
    pub files: Vec<BrowseEntry>,
    /// Pass as `after` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/stats` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsResponse {
    /// Peers that heartbeat recently.
    pub peers_online: u64,
    /// Peers registered and not yet purged.
    pub peers_known: u64,
    /// File entries of all stored lists.
    pub entries: u64,
    /// Distinct contents among those entries.
    pub distinct_contents: u64,
}

/// A peer's JSON answer to the server's connect-back probe, `GET /peerdex/v1/connect-back?nonce=N`
/// sent to the peer's advertised address.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectBackAnswer {
    /// The peer answering.
    pub peer_id: PeerId,
    /// Signature over [`crate::identity::connect_back_message`].
    pub signature: PeerSignature,
}

/// What a ticket asks the source peer to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TicketKind {
    /// Dial the downloader's verified address (`addr`) and serve the content there.
    Reverse,
    /// Connect to the index server's relay endpoint for this ticket and serve the content there.
    Relay,
}

/// A short-lived permission, signed by the index server, for a source peer to open one
/// connection for one downloader and one content (see [`crate::identity::ticket_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Ticket {
    /// Random id (also the relay session id).
    pub id: String,
    /// Reverse connection or relay.
    pub kind: TicketKind,
    /// The peer asked to serve.
    pub source: PeerId,
    /// The downloader's key (proven by the connect-back probe for reverse connections).
    pub downloader: PeerId,
    /// Where to dial, for reverse connections: the downloader's verified `IP:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Chosen by the downloader and sent first on the connection, so it knows which request the
    /// connection answers.
    pub token: String,
    /// The only content the connection may serve.
    pub hash: FileHash,
    /// Unix time after which the ticket is void.
    pub expires_at: u64,
}

/// A message from the index server on a peer's control channel
/// (`GET /api/v1/peers/{id}/control`, one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ControlMessage {
    /// Keep-alive; also tells the agent it is online.
    Ping,
    /// Whether others can connect to the peer directly: sent when the channel opens and when a
    /// connect-back probe finishes.
    Reachability {
        /// The server's verdict.
        reachability: Reachability,
    },
    /// Open a connection as the ticket says (reverse dial or relay) and serve its content there.
    Connect {
        /// What to do.
        ticket: Box<Ticket>,
        /// The server's signature over [`crate::identity::ticket_message`].
        signature: PeerSignature,
    },
    /// An event of the account the peer's key is linked to (the same as `GET /api/v1/events`).
    Event {
        /// The event.
        event: Box<crate::social::EventEnvelope>,
    },
}

/// How one source of a download did, as its downloader reports it (PROTOCOL §11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// It delivered verified bytes and was not dropped.
    Verified,
    /// It sent data that failed verification against the content hash.
    BadData,
    /// It stopped sending, or sent too slowly.
    Stalled,
    /// It refused: busy for too long, no longer has the file, or another error answer.
    Refused,
    /// It could not be reached by any route.
    Unreachable,
}

/// One source's outcome in a [`TransferReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceOutcome {
    /// The source.
    pub peer: PeerId,
    /// How it ended.
    pub kind: OutcomeKind,
    /// Bytes it delivered that verified.
    pub bytes: u64,
    /// For `bad_data`: the piece that failed (when a piece, not the piece hashes, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piece: Option<u64>,
    /// Its rate while it sent, bytes/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// What happened, for people (the downloader's words; not evidence).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// `POST /api/v1/peers/{id}/reports` body: what each source of one download did. The body is
/// signed by the reporting peer's key (header `x-peerdex-signature`, over
/// [`crate::identity::report_message`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferReport {
    /// The content.
    pub hash: FileHash,
    /// The size downloaded (or tried).
    pub size: u64,
    /// One entry per source.
    pub sources: Vec<SourceOutcome>,
}

/// Header of a signed request body: the signer's signature, hex.
pub const SIGNATURE_HEADER: &str = "x-peerdex-signature";

/// Most sources one report may name.
pub const MAX_REPORT_SOURCES: usize = 64;

/// `POST /api/v1/peers/{id}/reports` response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReportResponse {
    /// Source outcomes recorded.
    pub recorded: u64,
    /// Source outcomes ignored (the source does not list the content, or the reporter's rate
    /// limit was reached).
    pub ignored: u64,
}

/// `POST /api/v1/transfers` body: a downloader asks a firewalled source to connect to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferRequest {
    /// The source peer.
    pub source: PeerId,
    /// The content.
    pub hash: FileHash,
    /// The downloader's key; the server verifies it answers on `port` (connect-back).
    pub downloader: PeerId,
    /// The port the downloader listens on, at the address the server sees the request come from.
    pub port: u16,
    /// Echoed to the downloader as the first line of the connection.
    pub token: String,
    /// What the downloader's port speaks to the connect-back probe (absent: plain).
    #[serde(default)]
    pub transport: PeerTransport,
}

/// `POST /api/v1/transfers` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferResponse {
    /// The ticket sent to the source.
    pub ticket_id: String,
    /// Seconds the source has to connect.
    pub expires_in_secs: u64,
}

/// An account's role on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An ordinary account.
    Member,
    /// May moderate (bans, takedowns) but not change roles.
    Moderator,
    /// Everything, including roles and server-wide settings.
    Admin,
}

impl Role {
    /// The role named `text` (`member`, `moderator`, `admin`).
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "member" => Some(Role::Member),
            "moderator" | "mod" => Some(Role::Moderator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name, as [`Role::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Moderator => "moderator",
            Role::Admin => "admin",
        }
    }
}

/// `POST /api/v1/accounts`: create an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// Account name (the rules of nicknames; unique after case folding).
    pub name: String,
    /// Password, at least 8 characters.
    pub password: String,
    /// Invite code (required when the server's `registration` is `invite`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// `POST /api/v1/login`: sign in, optionally linking this device's key to the account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Account name.
    pub name: String,
    /// Password.
    pub password: String,
    /// The device to link: its key, a fresh challenge nonce and its signature over
    /// [`crate::identity::login_message`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<DeviceProof>,
}

/// Proof that the one logging in holds a device key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeviceProof {
    /// The device's key.
    pub peer_id: PeerId,
    /// A nonce from `POST /api/v1/challenge`.
    pub nonce: String,
    /// Signature over [`crate::identity::login_message`].
    pub signature: PeerSignature,
}

/// `POST /api/v1/login` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// Bearer token for account requests (`Authorization: Bearer …`); revoke it with
    /// `DELETE /api/v1/login`.
    pub token: String,
    /// Who signed in.
    pub account: AccountInfo,
}

/// An account as its owner and admins see it (`GET /api/v1/whoami`, admin listings).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountInfo {
    /// Account name, as registered.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Groups the account is in (names).
    pub groups: Vec<String>,
    /// Linked device keys.
    pub devices: Vec<PeerId>,
    /// Whether it is disabled (cannot sign in; its devices are offline).
    #[serde(default)]
    pub disabled: bool,
    /// Unix time of creation.
    pub created_at: i64,
}

/// Machine-readable error codes carried in [`ErrorBody::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed (bad JSON, bad parameter).
    BadRequest,
    /// No or invalid credentials.
    Unauthorized,
    /// Authenticated, but not allowed to act on this peer.
    Forbidden,
    /// Nothing at that address.
    NotFound,
    /// The nickname belongs to another key.
    NicknameTaken,
    /// The delta's base version is not the one the server holds: upload the full list.
    VersionMismatch,
    /// A size limit was exceeded; `limit` names it.
    LimitExceeded,
    /// An entry in a list is invalid; `line` and `path` name it.
    InvalidEntry,
    /// Too many requests; retry later.
    RateLimited,
    /// The server cannot take writes now (e.g. disk full).
    Unavailable,
    /// The relay is full (its concurrency or a per-peer quota) or turned off.
    RelayUnavailable,
    /// The source peer has no control channel open, so it cannot be asked to connect.
    SourceUnreachable,
    /// The downloader's address could not be verified by connect-back: it cannot be dialled.
    AddressUnverified,
    /// The account name is taken.
    NameTaken,
    /// Registration needs an invite, or the invite is unknown, used up or expired.
    InviteRequired,
    /// The server takes no new accounts.
    RegistrationClosed,
    /// The server serves signed-in accounts only (`guests = false`).
    SignInRequired,
    /// A ban covers the account, key, address or nickname; the message says until when and why.
    Banned,
    /// The recipient blocked the sender.
    Blocked,
    /// A moderator muted the account: it may not send messages until the mute ends.
    Muted,
    /// A password or account token over plain HTTP from off loopback: use `https://` (PROTOCOL
    /// §12.1).
    InsecureTransport,
    /// Something went wrong on the server; details are in its log.
    Internal,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Human-readable message, lowercase, no trailing period.
    pub error: String,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// For `limit_exceeded`: the name of the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    /// For list errors: 1-based line number of the offending entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// For list errors: the offending path, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For `version_mismatch`: the version the server holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<u64>,
}

impl ErrorBody {
    /// An error with a code and a message, and none of the optional details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            error: message.into(),
            code,
            limit: None,
            line: None,
            path: None,
            server_version: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_ops_are_tagged() {
        let op: DeltaOp =
            serde_json::from_str(r#"{"op":"remove","share":"m","path":"a.mp3"}"#).unwrap();
        assert_eq!(
            op,
            DeltaOp::Remove {
                share: "m".into(),
                path: "a.mp3".into()
            }
        );
        let entry = format!(
            r#"{{"op":"add","share":"m","path":"a.mp3","size":1,"mtime":2,"hash":"{}"}}"#,
            "00".repeat(32)
        );
        assert!(matches!(
            serde_json::from_str(&entry).unwrap(),
            DeltaOp::Add(_)
        ));
    }

    #[test]
    fn list_entries_refuse_unknown_fields() {
        let line = format!(
            r#"{{"share":"m","path":"a","size":1,"mtime":2,"hash":"{}","evil":1}}"#,
            "00".repeat(32)
        );
        assert!(serde_json::from_str::<ListEntry>(&line).is_err());
    }
}
