//! Agent settings: the TOML config file (edited by `peerdex share` / `peerdex unshare`), and the
//! validated [`AgentConfig`] the agent runs with once command-line flags are applied over it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use globset::{Glob, GlobSet, GlobSetBuilder};
use peerdex_shared::peer::{PART_SUFFIX, STATE_SUFFIX};
use peerdex_shared::scope::Visibility;
use peerdex_shared::validate::validate_share_name;
use serde::{Deserialize, Serialize};

/// Default address of the agent's file server: every IPv6 and IPv4 address (IPv4 only where
/// the system has no IPv6).
pub const DEFAULT_LISTEN: &str = "[::]:7701";

/// The config file as written on disk. Every field is optional so that a file holding only
/// `[[share]]` tables is valid.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Index server URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Extra CA certificates (PEM) trusted for an `https://` server, besides the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprint of the `https://` server's certificate: only that one is accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_fingerprint: Option<String>,
    /// Nickname to claim on the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nick: Option<String>,
    /// Address of the file server (`IP:PORT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Loopback address of the agent's local web endpoint (`/metrics`), or `off`
    /// [default: 127.0.0.1:7702].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui_listen: Option<String>,
    /// Shared folders.
    #[serde(rename = "share", skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<ShareConfig>,
    /// Upload slots and limits.
    pub upload: UploadConfig,
    /// Scanning, hashing and watching.
    pub scan: ScanConfig,
    /// Where `peerdex get` puts files while this agent runs.
    pub download: DownloadConfig,
}

/// The agent's download folder.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadConfig {
    /// The folder [default: the platform download folder + `/peerdex`, else `downloads` in the
    /// state directory].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Share what is downloaded (as the share `downloads`) once it is complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<bool>,
    /// Downloads the agent runs at once [default: 3]; more wait in its queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_active: Option<usize>,
    /// Longest pause, in seconds, between two asks for the sources of a waiting download
    /// [default: 10].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_max_secs: Option<u64>,
    /// Sources one download uses at once [default: 4].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sources: Option<usize>,
    /// Finished downloads kept in the transfer list [default: 500].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<usize>,
    /// Serve the verified pieces of downloads not finished yet to other downloaders, for
    /// downloads into the public part of the `downloads` share [default: true].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_partial: Option<bool>,
}

/// Name of the share holding downloads.
pub const DOWNLOADS_SHARE: &str = "downloads";

/// One shared folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareConfig {
    /// The folder.
    pub path: PathBuf,
    /// Name shown to other peers [default: the folder's name].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Glob patterns of files and folders to leave out, matched against the path within the
    /// share (`**/*.iso`) and against the bare name (`*.iso`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Follow symbolic links (never to a target outside the share).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_symlinks: bool,
    /// Share hidden files and folders (names starting with `.`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_hidden: bool,
    /// Who may see and download the share's files (see `peerdex_shared::scope`): `public`
    /// (default), `hidden`, `members`, `group:NAME`, `users:[a, b]`, each also `locked:…`.
    #[serde(default, skip_serializing_if = "Visibility::is_public")]
    pub visibility: Visibility,
    /// Visibility of folders and files inside the share, by glob; the last matching rule wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<ScopeRule>,
}

/// The visibility of the files a glob matches inside a share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeRule {
    /// Glob matched against each file's path within the share and against its folders'
    /// (`private` covers `private/a/b.txt`).
    pub path: String,
    /// Their visibility.
    pub visibility: Visibility,
}

impl ShareConfig {
    /// A share of `path` with the default settings.
    pub fn new(path: PathBuf) -> ShareConfig {
        ShareConfig {
            path,
            name: None,
            exclude: Vec::new(),
            follow_symlinks: false,
            include_hidden: false,
            visibility: Visibility::Public,
            scopes: Vec::new(),
        }
    }
}

/// Upload slots, queue and connection limits of the file server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Concurrent uploads.
    pub slots: usize,
    /// Concurrent uploads to one requesting address.
    pub per_peer: usize,
    /// Requests remembered in the waiting queue.
    pub queue_len: usize,
    /// Seconds a queued request keeps its place without asking again.
    pub queue_hold_secs: u64,
    /// Total upload rate in bytes per second (0: unlimited).
    pub max_rate: u64,
    /// A transfer slower than this (bytes/s, averaged over `min_rate_window_secs`) is dropped.
    pub min_rate: u64,
    /// Window for `min_rate`.
    pub min_rate_window_secs: u64,
    /// Time allowed to send request headers, and the idle timeout between requests.
    pub header_read_timeout_secs: u64,
    /// Open connections at most; more are closed on accept.
    pub max_connections: usize,
    /// Debugging only: the file server speaks plain HTTP instead of TLS, and then serves only
    /// public content (PROTOCOL §12.2).
    pub plain_http: bool,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            slots: 4,
            per_peer: 2,
            queue_len: 256,
            queue_hold_secs: 60,
            max_rate: 0,
            min_rate: 4096,
            min_rate_window_secs: 30,
            header_read_timeout_secs: 10,
            max_connections: 256,
            plain_http: false,
        }
    }
}

/// Scanning and hashing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// Full rescan interval: the backstop for changes the watcher missed.
    pub rescan_interval_secs: u64,
    /// Rescan interval used instead when the shares cannot be watched.
    pub poll_interval_secs: u64,
    /// Watch the shares for changes.
    pub watch: bool,
    /// Quiet time before a burst of file events is acted on.
    pub debounce_ms: u64,
    /// Threads hashing files (0: one per core).
    pub hash_threads: usize,
    /// Threads walking folders (0: one per core).
    pub walk_threads: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            rescan_interval_secs: 3600,
            poll_interval_secs: 60,
            watch: true,
            debounce_ms: 1000,
            hash_threads: 0,
            walk_threads: 0,
        }
    }
}

/// Where the config file lives: `$PEERDEX_CONFIG`, or `peerdex/config.toml` in the platform
/// config directory.
pub fn default_config_path() -> anyhow::Result<PathBuf> {
    let dir = dirs::config_dir().context("no config directory on this system; pass --config")?;
    Ok(dir.join("peerdex").join("config.toml"))
}

/// Where state (key, catalog, control socket) lives by default.
pub fn default_state_dir() -> anyhow::Result<PathBuf> {
    let dir = dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .context("no state directory on this system; pass --state")?;
    Ok(dir.join("peerdex"))
}

impl ConfigFile {
    /// Reads the file; a missing file is an empty config.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(e).with_context(|| format!("reading config file {}", path.display())),
        }
    }

    /// Writes the file atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = toml::to_string_pretty(self).context("encoding the config")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating config directory {}", dir.display()))?;
        }
        let temp = path.with_extension("toml.tmp");
        std::fs::write(&temp, text).with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, path).with_context(|| format!("replacing {}", path.display()))?;
        Ok(())
    }

    /// Reads the file at `path`, changes it with `edit` and writes it back; returns what `edit`
    /// returned (nothing is written when it fails).
    pub fn edit<T>(
        path: &Path,
        edit: impl FnOnce(&mut ConfigFile) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut file = ConfigFile::load(path)?;
        let said = edit(&mut file)?;
        file.save(path)?;
        Ok(said)
    }

    /// Adds a share (or replaces the one with the same folder); returns its name.
    pub fn share(&mut self, share: ShareConfig) -> anyhow::Result<String> {
        let canonical = canonical_dir(&share.path)?;
        let share = ShareConfig {
            path: canonical.clone(),
            ..share
        };
        let name = share_name(&share)?;
        self.shares
            .retain(|s| canonical_or_same(&s.path) != canonical);
        if let Some(other) = self
            .shares
            .iter()
            .find(|s| share_name(s).ok() == Some(name.clone()))
        {
            bail!(
                "a share named {name:?} already exists ({}); pick another with --name",
                other.path.display()
            );
        }
        self.shares.push(share);
        Ok(name)
    }

    /// Removes the share of `path` (a folder or a share name); false when there is none.
    pub fn unshare(&mut self, path_or_name: &Path) -> bool {
        let target = canonical_or_same(path_or_name);
        let before = self.shares.len();
        self.shares.retain(|s| {
            canonical_or_same(&s.path) != target
                && share_name(s).ok().as_deref() != path_or_name.to_str()
        });
        self.shares.len() != before
    }
}

fn canonical_or_same(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

fn canonical_dir(path: &Path) -> anyhow::Result<PathBuf> {
    let canonical =
        std::fs::canonicalize(path).with_context(|| format!("cannot share {}", path.display()))?;
    if !canonical.is_dir() {
        bail!("cannot share {}: not a folder", path.display());
    }
    Ok(canonical)
}

/// The share's name: configured, or the folder's own name.
pub fn share_name(share: &ShareConfig) -> anyhow::Result<String> {
    let name = match &share.name {
        Some(name) => name.clone(),
        None => share
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "share {} has no usable folder name; give it one with name = \"...\"",
                    share.path.display()
                )
            })?,
    };
    validate_share_name(&name).with_context(|| format!("share name {name:?} is not valid"))?;
    Ok(name)
}

/// Which files of a share are shared.
#[derive(Debug, Clone)]
pub struct ShareRules {
    exclude: GlobSet,
    /// Follow symbolic links that stay inside the share.
    pub follow_symlinks: bool,
    include_hidden: bool,
    /// The share's visibility.
    visibility: Visibility,
    /// Folder and file rules, in order.
    scopes: Vec<(globset::GlobMatcher, Visibility)>,
    /// The visibility settings as text: what the server was told, to notice a change.
    scope_text: String,
}

/// Names of files that are never shared: downloads in progress, editor and office temporaries.
const TEMPORARY_SUFFIXES: [&str; 10] = [
    ".part",
    STATE_SUFFIX,
    ".partial",
    ".crdownload",
    ".download",
    ".tmp",
    ".temp",
    ".swp",
    PART_SUFFIX,
    "~",
];

impl ShareRules {
    /// Rules from a share's settings.
    pub fn new(share: &ShareConfig) -> anyhow::Result<ShareRules> {
        let mut builder = GlobSetBuilder::new();
        for pattern in &share.exclude {
            let glob = Glob::new(pattern)
                .with_context(|| format!("exclude pattern {pattern:?} is not a valid glob"))?;
            builder.add(glob);
        }
        let mut scopes = Vec::new();
        let mut scope_text = share.visibility.to_string();
        for rule in &share.scopes {
            let glob = Glob::new(&rule.path)
                .with_context(|| format!("scope path {:?} is not a valid glob", rule.path))?;
            scopes.push((glob.compile_matcher(), rule.visibility.clone()));
            scope_text.push_str(&format!("\n{} = {}", rule.path, rule.visibility));
        }
        Ok(ShareRules {
            exclude: builder.build().context("building exclude patterns")?,
            follow_symlinks: share.follow_symlinks,
            include_hidden: share.include_hidden,
            visibility: share.visibility.clone(),
            scopes,
            scope_text,
        })
    }

    /// The visibility of the file at `rel`: the last scope rule matching it or one of its
    /// folders, else the share's.
    pub fn visibility_of(&self, rel: &str) -> &Visibility {
        let mut found = &self.visibility;
        for (glob, visibility) in &self.scopes {
            let mut matched = glob.is_match(rel);
            let mut prefix = rel;
            while !matched && let Some((parent, _)) = prefix.rsplit_once('/') {
                matched = glob.is_match(parent);
                prefix = parent;
            }
            if matched {
                found = visibility;
            }
        }
        found
    }

    /// The visibility settings as text (changes when any of them changes).
    pub fn scope_text(&self) -> &str {
        &self.scope_text
    }

    /// Whether every file of the share is public.
    pub fn all_public(&self) -> bool {
        self.visibility.is_public() && self.scopes.iter().all(|(_, v)| v.is_public())
    }

    /// Whether the entry `name` at `rel` (its path within the share) is shared; `is_dir` for
    /// folders, whose contents are skipped with them.
    pub fn admits(&self, rel: &str, name: &str, is_dir: bool) -> bool {
        if !self.include_hidden && name.starts_with('.') {
            return false;
        }
        if !is_dir {
            let lower = name.to_ascii_lowercase();
            if TEMPORARY_SUFFIXES.iter().any(|s| lower.ends_with(s)) || lower.starts_with("~$") {
                return false;
            }
        }
        !(self.exclude.is_match(rel) || self.exclude.is_match(name))
    }

    /// Whether every component of `rel` is admitted (for paths reported by the watcher).
    pub fn admits_path(&self, rel: &str, is_dir: bool) -> bool {
        let parts: Vec<&str> = rel.split('/').collect();
        let mut prefix = String::new();
        for (i, part) in parts.iter().enumerate() {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            let last = i + 1 == parts.len();
            if !self.admits(&prefix, part, !last || is_dir) {
                return false;
            }
        }
        true
    }
}

/// A share ready to scan.
#[derive(Debug, Clone)]
pub struct Share {
    /// Name other peers see.
    pub name: String,
    /// Canonical path of the folder.
    pub root: PathBuf,
    /// What is shared in it.
    pub rules: ShareRules,
}

/// Everything the agent runs with, validated.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Index server URL.
    pub server: String,
    /// Nickname (`None`: derived from the peer id).
    pub nick: Option<String>,
    /// File server address; `None` accepts no inbound connection (firewalled).
    pub listen: Option<SocketAddr>,
    /// State directory: key, catalog, control socket.
    pub state: PathBuf,
    /// Shared folders.
    pub shares: Vec<Share>,
    /// Upload settings.
    pub upload: UploadConfig,
    /// Scan settings.
    pub scan: ScanConfig,
    /// Where downloads land while the agent runs.
    pub download_dir: PathBuf,
    /// The config file the shares were read from: the running agent reads them again from it
    /// when `peerdex share` or `unshare` changed it. `None` when the shares came from the command
    /// line (`--share`), which a config file edit does not change.
    pub shares_file: Option<PathBuf>,
    /// Settings of the config file that shape the shares (downloads shared or not).
    pub download: DownloadConfig,
    /// The local web endpoint's loopback address; `None`: none.
    pub ui_listen: Option<SocketAddr>,
}

/// Where the local web endpoint listens unless the config says otherwise.
pub const DEFAULT_UI_LISTEN: &str = "127.0.0.1:7702";

/// Reads a `ui_listen` setting: `off`, or a loopback `IP:PORT` (the endpoint has no password:
/// only this machine may reach it).
pub fn parse_ui_listen(text: &str) -> anyhow::Result<Option<SocketAddr>> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr: SocketAddr = text
        .parse()
        .with_context(|| format!("ui_listen {text:?} is not IP:PORT or off"))?;
    if !addr.ip().is_loopback() {
        bail!(
            "ui_listen {addr} is not a loopback address (127.0.0.1 or [::1]): the agent's local endpoint is for this machine only"
        );
    }
    Ok(Some(addr))
}

impl AgentConfig {
    /// Validates the file's shares and settings into a runnable config.
    pub fn from_parts(
        server: String,
        nick: Option<String>,
        listen: Option<SocketAddr>,
        state: PathBuf,
        share_configs: &[ShareConfig],
        file: &ConfigFile,
    ) -> anyhow::Result<AgentConfig> {
        peerdex_client::ServerClient::new(&server)
            .with_context(|| format!("index server {server:?}"))?;
        if let Some(nick) = &nick {
            peerdex_shared::validate::validate_nickname(nick)
                .with_context(|| format!("nickname {nick:?} is not valid"))?;
        }
        if file.upload.slots == 0 || file.upload.per_peer == 0 {
            bail!("upload.slots and upload.per_peer must be at least 1");
        }
        let (shares, download_dir) = resolve_shares(share_configs, &file.download, &state)?;
        let ui_listen = parse_ui_listen(file.ui_listen.as_deref().unwrap_or(DEFAULT_UI_LISTEN))?;
        Ok(AgentConfig {
            ui_listen,
            server,
            nick,
            listen,
            state,
            shares,
            upload: file.upload.clone(),
            scan: file.scan.clone(),
            download_dir,
            shares_file: None,
            download: file.download.clone(),
        })
    }

    /// Threads to hash with.
    pub fn hash_threads(&self) -> usize {
        threads_or_cores(self.scan.hash_threads)
    }

    /// Threads to walk folders with.
    pub fn walk_threads(&self) -> usize {
        threads_or_cores(self.scan.walk_threads)
    }
}

/// The shares an agent runs with, validated: the configured folders plus, when downloads are
/// shared, the download folder (as the share `downloads`). Also returns the download folder.
pub fn resolve_shares(
    share_configs: &[ShareConfig],
    download: &DownloadConfig,
    state: &Path,
) -> anyhow::Result<(Vec<Share>, PathBuf)> {
    let mut shares: Vec<Share> = Vec::new();
    for config in share_configs {
        // A folder that is missing now (an unmounted disk) is kept: its files stay in the
        // catalog and the index, and the scanner picks it up when it is back.
        let root = canonical_dir(&config.path).unwrap_or_else(|e| {
            tracing::warn!(share = %config.path.display(), error = %format!("{e:#}"),
                "shared folder unavailable; it is shared once it is there, and files already \
                 shared from it stay as they were");
            config.path.clone()
        });
        let name = share_name(config)?;
        if let Some(other) = shares.iter().find(|s| s.name == name) {
            bail!(
                "two shares are named {name:?} ({} and {}); set name = \"...\" on one",
                other.root.display(),
                root.display()
            );
        }
        shares.push(Share {
            name,
            root,
            rules: ShareRules::new(config)?,
        });
    }
    let download_dir = match &download.dir {
        Some(dir) => dir.clone(),
        None => dirs::download_dir()
            .map(|d| d.join("peerdex"))
            .unwrap_or_else(|| state.join("downloads")),
    };
    // Downloads become shared once complete (partial files are never shared), unless the
    // folder is already inside a share or sharing them is turned off.
    let inside_a_share = shares.iter().any(|s| download_dir.starts_with(&s.root));
    if download.share.unwrap_or(true) && !inside_a_share {
        std::fs::create_dir_all(&download_dir)
            .with_context(|| format!("creating download folder {}", download_dir.display()))?;
        let root = canonical_dir(&download_dir)?;
        if shares.iter().any(|s| s.name == DOWNLOADS_SHARE) {
            bail!("a share is named {DOWNLOADS_SHARE:?}; rename it or set download.share = false");
        }
        let config = ShareConfig {
            name: Some(DOWNLOADS_SHARE.into()),
            ..ShareConfig::new(root.clone())
        };
        shares.push(Share {
            name: DOWNLOADS_SHARE.into(),
            root,
            rules: ShareRules::new(&config)?,
        });
    }
    Ok((shares, download_dir))
}

fn threads_or_cores(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(path: &Path) -> ShareConfig {
        ShareConfig {
            path: path.to_owned(),
            name: None,
            exclude: vec![],
            follow_symlinks: false,
            include_hidden: false,
            visibility: Default::default(),
            scopes: Vec::new(),
        }
    }

    #[test]
    fn share_and_unshare_edit_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let music = dir.path().join("Music");
        std::fs::create_dir(&music).unwrap();
        let file = dir.path().join("conf/config.toml");
        let mut config = ConfigFile::load(&file).unwrap();
        assert_eq!(config.share(share(&music)).unwrap(), "Music");
        config.save(&file).unwrap();
        let mut again = ConfigFile::load(&file).unwrap();
        assert_eq!(again.shares.len(), 1);
        // Sharing the same folder again replaces it; another folder with the same name clashes.
        again.share(share(&music)).unwrap();
        assert_eq!(again.shares.len(), 1);
        let other = dir.path().join("x/Music");
        std::fs::create_dir_all(&other).unwrap();
        assert!(again.share(share(&other)).is_err());
        assert!(again.unshare(&music));
        assert!(!again.unshare(&music));
        assert!(again.shares.is_empty());
    }

    #[test]
    fn every_setting_survives_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let music = dir.path().join("Music");
        std::fs::create_dir(&music).unwrap();
        let file = dir.path().join("config.toml");
        let mut config = ConfigFile {
            server: Some("http://x:7700".into()),
            nick: Some("n".into()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let mut music_share = share(&music);
        music_share.exclude = vec!["*.iso".into(), "private/**".into()];
        config.share(music_share).unwrap();
        config.download.dir = Some(dir.path().join("dl"));
        config.download.share = Some(false);
        config.save(&file).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(ConfigFile::load(&file).unwrap(), config, "{text}");
    }

    #[test]
    fn a_bad_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "servr = 'x'\n").unwrap();
        let error = format!("{:#}", ConfigFile::load(&file).unwrap_err());
        assert!(error.contains("config.toml"), "{error}");
    }

    #[test]
    fn rules_skip_hidden_temporary_and_excluded() {
        let mut config = share(Path::new("/x"));
        config.exclude = vec!["*.iso".into(), "private/**".into()];
        let rules = ShareRules::new(&config).unwrap();
        assert!(rules.admits("a/song.mp3", "song.mp3", false));
        assert!(!rules.admits(".git", ".git", true));
        assert!(!rules.admits("a/movie.mkv.part", "movie.mkv.part", false));
        assert!(!rules.admits("a/~$doc.docx", "~$doc.docx", false));
        assert!(!rules.admits("big.iso", "big.iso", false));
        assert!(!rules.admits_path("private/a.txt", false));
        assert!(!rules.admits_path("a/.cache/x.bin", false));
        assert!(rules.admits_path("a/b/c.txt", false));
        assert!(
            ShareRules::new(&ShareConfig {
                exclude: vec!["[".into()],
                ..config
            })
            .is_err()
        );
    }
}
