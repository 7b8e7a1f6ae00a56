//! The pages of the agent's web client: search the index, open a result, browse a peer one
//! folder page at a time, download into the agent's transfer queue, follow the transfers live,
//! play audio while it downloads, and add or remove shares.
//!
//! The index server is asked with the agent's own session, so a page shows exactly what
//! `peerdex search` and `peerdex browse` would (scopes included). Every page is a plain GET URL;
//! every change is a form POST answered with a redirect (back and reload stay harmless). The
//! only script (`/static/agent.js`) updates the transfers table from `/events`; without it the
//! pages work the same, only not live.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use axum::Form;
use axum::body::Body;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use bytes::Bytes;
use peerdex_client::ServerClient;
use peerdex_client::server_api::{ApiError, SearchQuery};
use peerdex_download::{Destination as EngineDestination, DownloadProgress, DownloadRequest};
use peerdex_shared::api::{FolderHit, SearchHit, Source};
use peerdex_shared::kind::extension_of;
use peerdex_shared::units::human_size;
use peerdex_shared::{FileHash, FileKind};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use tracing::{debug, info, warn};

use super::Web;
use crate::catalog::{Destination, NewTransfer};
use crate::config::{ConfigFile, ShareConfig};
use crate::control::Controls;
use crate::transfers::{Action, TransferState, TransferView};

/// Results on one search page.
const PAGE_HITS: u64 = 25;
/// Entries on one page of a folder: the DOM of a huge share stays small.
const PAGE_ENTRIES: u64 = 200;
/// Sharers named per result.
const SHARERS_SHOWN: usize = 5;
/// Finished downloads listed below the running ones.
const HISTORY: usize = 50;
/// How often the live stream looks for changes.
const EVENT_TICK: Duration = Duration::from_millis(500);

pub(super) fn encoded(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

pub(super) fn render(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("page failed to render: {e}"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    query: String,
    heading: String,
    message: String,
}

pub(super) fn error_page(
    status: StatusCode,
    heading: &str,
    message: impl Into<String>,
) -> Response {
    render(
        status,
        ErrorPage {
            query: String::new(),
            heading: heading.to_owned(),
            message: message.into(),
        }
        .render(),
    )
}

/// A failed call to the index server as a page: its own status and words when it answered,
/// 502 when it could not be reached.
pub(super) fn server_error(error: &ApiError) -> Response {
    match error {
        ApiError::Server { status, body } => {
            let heading = match *status {
                StatusCode::NOT_FOUND => "Not found",
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "Not allowed",
                StatusCode::BAD_REQUEST => "That did not work",
                _ => "The index server said no",
            };
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            error_page(status, heading, body.error.clone())
        }
        other => error_page(
            StatusCode::BAD_GATEWAY,
            "The index server cannot be reached",
            other.to_string(),
        ),
    }
}

pub(super) fn bad_request(message: impl Into<String>) -> Response {
    error_page(StatusCode::BAD_REQUEST, "That did not work", message)
}

/// What a helper could not do, as the page that says so (small, unlike a [`Response`]).
pub(super) enum PageError {
    /// The index server could not be asked or said no.
    Server(ApiError),
    /// Anything else: status, heading, message.
    Other(StatusCode, &'static str, String),
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Server(e) => server_error(&e),
            PageError::Other(status, heading, message) => error_page(status, heading, message),
        }
    }
}

/// The answer to a request without the token.
pub(super) fn sign_in_required() -> Response {
    error_page(
        StatusCode::UNAUTHORIZED,
        "Sign-in required",
        "Open the address that `peerdex ui` prints (it signs this browser in).",
    )
}

/// The answer to a change that did not come from our own pages.
pub(super) fn refused_cross_site() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Not allowed",
        "This change did not come from the agent's own pages (its Origin is another site).",
    )
}

/// `404` for any other path.
pub(super) async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "Not found", "There is no such page.")
}

/// Runs a blocking call on the agent (it reads the catalog) off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    web: &Arc<Web>,
    call: impl FnOnce(&crate::AgentControls) -> T + Send + 'static,
) -> Result<T, PageError> {
    let controls = web.controls.clone();
    tokio::task::spawn_blocking(move || call(&controls))
        .await
        .map_err(|_| {
            PageError::Other(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "the agent's task failed".to_owned(),
            )
        })
}

/// The agent's status for a page (its catalog counts a moment old: [`Web::status`]).
pub(super) async fn page_status(web: &Arc<Web>) -> Result<crate::AgentStatus, PageError> {
    let web = web.clone();
    tokio::task::spawn_blocking(move || web.status())
        .await
        .map_err(|_| {
            PageError::Other(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "the agent's task failed".to_owned(),
            )
        })
}

/// A client of the index server with this agent's session.
pub(super) fn server(web: &Web) -> Result<ServerClient, PageError> {
    web.controls
        .queue
        .server_clients()
        .map(|(client, _)| client)
        .map_err(PageError::Server)
}

// ---- start page --------------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    query: String,
    connection: String,
    online: bool,
    nick: String,
    lines: Vec<String>,
}

/// `GET /`: what the agent is doing, and the search box.
pub(super) async fn home(State(web): State<Arc<Web>>) -> Response {
    let status = match page_status(&web).await {
        Ok(status) => status,
        Err(page) => return page.into_response(),
    };
    let server = &status.server;
    let connection = if server.online {
        format!("Connected to {}", server.url)
    } else {
        match &server.last_error {
            Some(error) => format!("Not connected to {}: {error}", server.url),
            None => format!("Connecting to {}", server.url),
        }
    };
    let (files, bytes, hashed) = status.shares.iter().fold((0, 0, 0), |acc, s| {
        (
            acc.0 + s.counts.files,
            acc.1 + s.counts.bytes,
            acc.2 + s.counts.hashed_files,
        )
    });
    let mut lines = Vec::new();
    if let Some(error) = &status.catalog_error {
        lines.push(format!(
            "The catalog cannot be read ({error}): the counts below are not known."
        ));
    }
    lines.push(format!(
        "Sharing {files} files ({}) in {} {}.",
        human_size(bytes),
        status.shares.len(),
        if status.shares.len() == 1 {
            "folder"
        } else {
            "folders"
        }
    ));
    if status.progress.scanning {
        lines.push(format!(
            "Looking through the shared folders: {} folders so far.",
            status.progress.dirs_scanned
        ));
    }
    if hashed < files {
        lines.push(format!(
            "Reading files: {hashed} of {files} done ({} left).",
            human_size(status.progress.hash_bytes_pending)
        ));
    }
    let active = status
        .downloads
        .iter()
        .filter(|t| !matches!(t.status, TransferState::Done | TransferState::Cancelled))
        .count();
    lines.push(format!(
        "{active} {} in the queue; {} {} to others now, {} waiting.",
        if active == 1 { "download" } else { "downloads" },
        status.uploads.active.len(),
        if status.uploads.active.len() == 1 {
            "upload"
        } else {
            "uploads"
        },
        status.uploads.queued
    ));
    render(
        StatusCode::OK,
        HomePage {
            query: String::new(),
            connection,
            online: server.online,
            nick: status.nick.clone(),
            lines,
        }
        .render(),
    )
}

// ---- search ------------------------------------------------------------------------------------

/// One result as the page shows it.
struct HitView {
    name: String,
    url: String,
    size: String,
    kind: String,
    folder: String,
    media: Option<String>,
    sources: String,
    /// (nickname, browse URL)
    sharers: Vec<(String, String)>,
    hash: String,
    locked: bool,
    playable: bool,
}

fn browse_url(nick: &str, path: &str, offset: u64) -> String {
    let mut url = format!("/browse/{}", encoded(nick));
    let mut sep = '?';
    if !path.is_empty() {
        url.push_str(&format!("?path={}", encoded(path)));
        sep = '&';
    }
    if offset > 0 {
        url.push_str(&format!("{sep}offset={offset}"));
    }
    url
}

fn content_url(hash: &FileHash, name: &str) -> String {
    format!("/content/{hash}?name={}", encoded(name))
}

fn people(n: u64) -> String {
    match n {
        1 => "1 person online".to_owned(),
        n => format!("{n} people online"),
    }
}

fn sharers(sources: &[Source]) -> Vec<(String, String)> {
    let mut shown: Vec<(String, String)> = Vec::new();
    for source in sources {
        if shown.len() == SHARERS_SHOWN {
            break;
        }
        if !shown.iter().any(|(n, _)| *n == source.nickname) {
            let folder = source.path.rsplit_once('/').map_or("", |(dir, _)| dir);
            let path = if folder.is_empty() {
                source.share.clone()
            } else {
                format!("{}/{folder}", source.share)
            };
            shown.push((
                source.nickname.clone(),
                browse_url(&source.nickname, &path, 0),
            ));
        }
    }
    shown
}

impl HitView {
    fn of(hit: &SearchHit) -> HitView {
        HitView {
            name: hit.name.clone(),
            url: content_url(&hit.hash, &hit.name),
            size: human_size(hit.size),
            kind: hit.kind.as_str().to_owned(),
            folder: hit.folder.clone(),
            media: hit.tags.summary_line(),
            sources: people(hit.sources_online),
            sharers: sharers(&hit.sources),
            hash: hit.hash.to_string(),
            locked: hit.locked,
            playable: hit.kind == FileKind::Audio && !hit.locked,
        }
    }
}

struct FolderHitView {
    id: String,
    name: String,
    meta: String,
    where_: String,
}

impl FolderHitView {
    fn of(hit: &FolderHit) -> FolderHitView {
        FolderHitView {
            id: hit.id.to_string(),
            name: hit.summary.title(&hit.name),
            meta: hit.meta_line(),
            where_: hit.folder.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "search.html")]
struct SearchPage {
    query: String,
    kinds: Vec<(&'static str, bool)>,
    filters: Filters,
    notice: Option<String>,
    count: String,
    first: u64,
    hits: Vec<HitView>,
    folders: Vec<FolderHitView>,
    prev: Option<String>,
    next: Option<String>,
}

/// Query parameters of the search page. The filters come from a form, so an empty field is
/// an empty string, not an absent one: they are read as text and checked by [`Filters`].
#[derive(Deserialize, Default)]
pub(super) struct SearchParams {
    q: Option<String>,
    kind: Option<String>,
    offset: Option<u64>,
    #[serde(default)]
    ext: String,
    #[serde(default)]
    min_mb: String,
    #[serde(default)]
    max_mb: String,
    #[serde(default)]
    min_bitrate: String,
    #[serde(default)]
    lossless: String,
}

/// The search page's filters beyond the kind, as typed (shown again in the form).
#[derive(Default, Clone)]
pub(super) struct Filters {
    /// Only this extension.
    ext: String,
    /// At least this many MB.
    min_mb: String,
    /// At most this many MB.
    max_mb: String,
    /// Audio of at least this bitrate, kbit/s.
    min_bitrate: String,
    /// `1` lossless only, `0` lossy only, empty: either.
    lossless: String,
}

/// A number typed in a filter: empty is no filter.
fn filter_number<T: std::str::FromStr>(what: &str, text: &str) -> Result<Option<T>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{what} must be a whole number, not {text:?}"))
}

impl Filters {
    /// Adds the filters to a search, or says which one is wrong.
    fn apply(&self, query: &mut SearchQuery) -> Result<(), String> {
        const MB: u64 = 1_000_000;
        let ext = self.ext.trim().trim_start_matches('.');
        query.ext = (!ext.is_empty()).then(|| ext.to_owned());
        query.min_size =
            filter_number::<u64>("Smallest size", &self.min_mb)?.map(|mb| mb.saturating_mul(MB));
        query.max_size =
            filter_number::<u64>("Largest size", &self.max_mb)?.map(|mb| mb.saturating_mul(MB));
        query.min_bitrate = filter_number("Bitrate", &self.min_bitrate)?;
        query.lossless = match self.lossless.trim() {
            "" => None,
            "1" => Some(1),
            "0" => Some(0),
            other => return Err(format!("lossless is 1, 0 or empty, not {other:?}")),
        };
        Ok(())
    }

    /// The filters as URL parameters (`&ext=…`), for the previous and next page links.
    fn url_part(&self) -> String {
        let mut part = String::new();
        for (name, value) in [
            ("ext", &self.ext),
            ("min_mb", &self.min_mb),
            ("max_mb", &self.max_mb),
            ("min_bitrate", &self.min_bitrate),
            ("lossless", &self.lossless),
        ] {
            if !value.trim().is_empty() {
                part.push_str(&format!("&{name}={}", encoded(value.trim())));
            }
        }
        part
    }
}

fn search_url(query: &str, kind: Option<&str>, filters: &Filters, offset: u64) -> String {
    let mut url = format!("/search?q={}", encoded(query));
    if let Some(kind) = kind {
        url.push_str(&format!("&kind={kind}"));
    }
    url.push_str(&filters.url_part());
    if offset > 0 {
        url.push_str(&format!("&offset={offset}"));
    }
    url
}

/// `GET /search?q=…&kind=…&offset=…`: a page of results, folders (albums) first.
pub(super) async fn search(
    State(web): State<Arc<Web>>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return bad_request("this page takes q (the words), kind and offset (a number)");
    };
    let query = params.q.unwrap_or_default().trim().to_owned();
    let kind = params
        .kind
        .as_deref()
        .filter(|k| !k.is_empty())
        .and_then(FileKind::parse);
    let offset = params.offset.unwrap_or(0);
    let filters = Filters {
        ext: params.ext,
        min_mb: params.min_mb,
        max_mb: params.max_mb,
        min_bitrate: params.min_bitrate,
        lossless: params.lossless,
    };
    let mut view = SearchPage {
        query: query.clone(),
        kinds: FileKind::ALL
            .iter()
            .map(|k| (k.as_str(), Some(*k) == kind))
            .collect(),
        filters: filters.clone(),
        notice: None,
        count: String::new(),
        first: offset + 1,
        hits: Vec::new(),
        folders: Vec::new(),
        prev: None,
        next: None,
    };
    if query.is_empty() {
        view.notice = Some("Type some words to search for.".to_owned());
        return render(StatusCode::OK, view.render());
    }
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let mut asked = SearchQuery {
        q: query.clone(),
        kind: kind.map(|k| k.as_str().to_owned()),
        limit: Some(PAGE_HITS),
        offset: Some(offset),
        ..Default::default()
    };
    if let Err(wrong) = filters.apply(&mut asked) {
        view.notice = Some(wrong);
        return render(StatusCode::BAD_REQUEST, view.render());
    }
    let result = match client.search(&asked).await {
        Ok(result) => result,
        // A query the server refuses (too long, only stop words) is said on the page itself.
        Err(ApiError::Server { status, body }) if status == StatusCode::BAD_REQUEST => {
            view.notice = Some(body.error);
            return render(StatusCode::BAD_REQUEST, view.render());
        }
        Err(e) => return server_error(&e),
    };
    view.count = result.count_line(&query);
    view.hits = result.hits.iter().map(HitView::of).collect();
    view.folders = result.folders.iter().map(FolderHitView::of).collect();
    let kind_text = kind.map(FileKind::as_str);
    if offset > 0 {
        view.prev = Some(search_url(
            &query,
            kind_text,
            &filters,
            offset.saturating_sub(PAGE_HITS),
        ));
    }
    let shown = offset + result.hits.len() as u64;
    if result.hits.len() as u64 == PAGE_HITS && (shown < result.total || !result.total_exact) {
        view.next = Some(search_url(&query, kind_text, &filters, shown));
    }
    render(StatusCode::OK, view.render())
}

// ---- one content -------------------------------------------------------------------------------

struct SourceLine {
    nick: String,
    url: String,
    path: String,
    reachability: String,
}

#[derive(Template)]
#[template(path = "content.html")]
struct ContentPage {
    query: String,
    name: String,
    hash: String,
    size: String,
    kind: String,
    sources: Vec<SourceLine>,
    other_sizes: Vec<String>,
    partial: usize,
    play_url: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct NameParam {
    name: Option<String>,
}

fn parse_hash(text: &str) -> Result<FileHash, PageError> {
    text.parse().map_err(|_| {
        PageError::Other(
            StatusCode::BAD_REQUEST,
            "That did not work",
            format!("{text:?} is not a content hash (64 hex digits)"),
        )
    })
}

/// `GET /content/{hash}?name=…`: one content, who holds it, download and play.
pub(super) async fn content(
    State(web): State<Arc<Web>>,
    Path(hash): Path<String>,
    params: Result<Query<NameParam>, QueryRejection>,
) -> Response {
    let hash = match parse_hash(&hash) {
        Ok(hash) => hash,
        Err(page) => return page.into_response(),
    };
    let asked_name = params.ok().and_then(|Query(p)| p.name).unwrap_or_default();
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let found = match client.sources(&hash).await {
        Ok(found) => found,
        Err(e) => return server_error(&e),
    };
    let name = if found.name.is_empty() {
        asked_name
    } else {
        found.name.clone()
    };
    let kind = FileKind::from_extension(&extension_of(&name));
    let sources = found
        .sources
        .iter()
        .map(|s| SourceLine {
            nick: s.nickname.clone(),
            url: sharers(std::slice::from_ref(s))
                .pop()
                .map_or_else(String::new, |(_, url)| url),
            path: format!("{}/{}", s.share, s.path),
            reachability: format!("{:?}", s.reachability).to_lowercase(),
        })
        .collect();
    let other_sizes = found
        .other_sizes
        .iter()
        .map(|claim| {
            format!(
                "{} claim {} ({} bytes); the piece hashes decide which is real",
                people(claim.sources_online),
                human_size(claim.size),
                claim.size
            )
        })
        .collect();
    render(
        StatusCode::OK,
        ContentPage {
            query: String::new(),
            play_url: (kind == FileKind::Audio)
                .then(|| format!("/play/{hash}?name={}", encoded(&name))),
            name,
            hash: hash.to_string(),
            size: format!("{} ({} bytes)", human_size(found.size), found.size),
            kind: kind.as_str().to_owned(),
            sources,
            other_sizes,
            partial: found.partial_sources.len(),
        }
        .render(),
    )
}

// ---- browse ------------------------------------------------------------------------------------

struct DirView {
    name: String,
    url: String,
    meta: String,
}

struct FileView {
    name: String,
    url: String,
    size: String,
    media: Option<String>,
    hash: String,
}

#[derive(Template)]
#[template(path = "browse.html")]
struct BrowsePage {
    query: String,
    nick: String,
    presence: String,
    online: bool,
    crumbs: Vec<(String, String)>,
    folders: Vec<DirView>,
    files: Vec<FileView>,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub(super) struct BrowseParams {
    path: Option<String>,
    offset: Option<u64>,
}

/// `GET /browse/{nick}?path=SHARE/FOLDER&offset=…`: one page of one folder of a peer.
pub(super) async fn browse(
    State(web): State<Arc<Web>>,
    Path(nick): Path<String>,
    params: Result<Query<BrowseParams>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return bad_request("this page takes path (a folder) and offset (a number)");
    };
    let path = params.path.unwrap_or_default();
    let offset = params.offset.unwrap_or(0);
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let listing = match client
        .browse_folders(&nick, &path, offset, PAGE_ENTRIES)
        .await
    {
        Ok(listing) => listing,
        Err(e) => return server_error(&e),
    };
    let mut crumbs = vec![(
        listing.nickname.clone(),
        browse_url(&listing.nickname, "", 0),
    )];
    let mut prefix = String::new();
    for part in listing.path.split('/').filter(|p| !p.is_empty()) {
        prefix = if prefix.is_empty() {
            part.to_owned()
        } else {
            format!("{prefix}/{part}")
        };
        crumbs.push((part.to_owned(), browse_url(&listing.nickname, &prefix, 0)));
    }
    let folders = listing
        .folders
        .iter()
        .map(|f| {
            let full = if f.path.is_empty() {
                f.share.clone()
            } else {
                format!("{}/{}", f.share, f.path)
            };
            let name = full.rsplit('/').next().unwrap_or(&full).to_owned();
            DirView {
                name: f.summary.title(&name),
                url: browse_url(&listing.nickname, &full, 0),
                meta: format!("{} files, {}", f.files, human_size(f.bytes)),
            }
        })
        .collect();
    let files = listing
        .files
        .iter()
        .map(|f| {
            let name = f.path.rsplit('/').next().unwrap_or(&f.path).to_owned();
            FileView {
                url: content_url(&f.hash, &name),
                media: f.tags.summary_line(),
                size: human_size(f.size),
                hash: f.hash.to_string(),
                name,
            }
        })
        .collect();
    let prev = (offset > 0).then(|| {
        browse_url(
            &listing.nickname,
            &listing.path,
            offset.saturating_sub(PAGE_ENTRIES),
        )
    });
    let next = listing
        .next_offset
        .map(|next| browse_url(&listing.nickname, &listing.path, next));
    render(
        StatusCode::OK,
        BrowsePage {
            query: String::new(),
            presence: if listing.online {
                "online".to_owned()
            } else {
                "offline: its files can be queued and come when it is back".to_owned()
            },
            online: listing.online,
            nick: listing.nickname,
            crumbs,
            folders,
            files,
            prev,
            next,
        }
        .render(),
    )
}

// ---- downloads ---------------------------------------------------------------------------------

/// The form of a Download button.
#[derive(Deserialize)]
pub(super) struct DownloadForm {
    hash: Option<String>,
    name: Option<String>,
    folder: Option<String>,
}

/// `POST /downloads` (`hash` and `name`, or `folder`: a folder identity): queues the file, or
/// every file of the folder, in the agent's transfer queue; then shows the transfers.
pub(super) async fn download(
    State(web): State<Arc<Web>>,
    form: Result<Form<DownloadForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("a download needs a hash (or a folder)");
    };
    match queue_download(&web, form.hash, form.name, form.folder).await {
        Ok(ids) => {
            info!(?ids, "queued from the web client");
            Redirect::to("/transfers").into_response()
        }
        Err(page) => page.into_response(),
    }
}

/// Queues a content (`hash`, with the file `name` to use) or every file of a folder (its
/// identity) in the agent's transfer queue, into the download folder; answers the new ids.
pub(super) async fn queue_download(
    web: &Arc<Web>,
    hash: Option<String>,
    name: Option<String>,
    folder: Option<String>,
) -> Result<Vec<u64>, PageError> {
    let refused =
        |message: String| PageError::Other(StatusCode::BAD_REQUEST, "That did not work", message);
    let download_dir = web.controls.config.download_dir.clone();
    let new = match (hash, folder) {
        (Some(hash), _) => {
            let hash = parse_hash(hash.trim())?;
            vec![NewTransfer {
                hash,
                name: name.filter(|n| !n.is_empty()),
                destination: Destination::Dir(download_dir),
                label: String::new(),
                priority: 0,
                force: false,
                wish: None,
            }]
        }
        (None, Some(folder)) => {
            let id = folder
                .parse()
                .map_err(|_| refused(format!("{folder:?} is not a folder identity")))?;
            let found = server(web)?.folder(&id).await.map_err(PageError::Server)?;
            let title = found.hit.summary.title(&found.hit.name);
            let dir = download_dir.join(peerdex_download::names::sanitize_file_name(
                &found.hit.name,
                "folder",
            ));
            found
                .entries
                .iter()
                .map(|entry| NewTransfer {
                    hash: entry.hash,
                    name: Some(entry.name.clone()),
                    destination: Destination::Dir(dir.clone()),
                    label: title.clone(),
                    priority: 0,
                    force: false,
                    wish: None,
                })
                .collect()
        }
        (None, None) => return Err(refused("a download needs a hash (or a folder)".to_owned())),
    };
    blocking(web, move |c| c.add_transfers(&new))
        .await?
        .map_err(|e| refused(format!("{e:#}")))
}

/// One transfer as the table (and the live stream) shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct TransferLine {
    id: u64,
    name: String,
    state: &'static str,
    /// 0–1000: the `<progress>` value (per mille, so small files move too).
    permille: u64,
    bytes: String,
    rate: String,
    detail: String,
    /// Its finished file can be opened.
    file: bool,
    can_pause: bool,
    can_resume: bool,
    can_cancel: bool,
    can_retry: bool,
}

impl TransferLine {
    fn of(view: &TransferView) -> TransferLine {
        let state = view.status;
        let name = view
            .file_name
            .clone()
            .or_else(|| view.row.request.name.clone())
            .unwrap_or_else(|| view.row.request.hash.fmt_short());
        let verified = view.verified;
        let permille = match view.total {
            Some(0) => 1000,
            Some(total) => (verified.saturating_mul(1000) / total).min(1000),
            None => 0,
        };
        let bytes = match view.total {
            Some(total) => format!("{} of {}", human_size(verified), human_size(total)),
            None => human_size(verified),
        };
        let rate = match (view.rate, view.eta_secs) {
            (0, _) => String::new(),
            (rate, Some(eta)) => format!(
                "{}/s, {} left",
                human_size(rate),
                peerdex_shared::units::clock(eta)
            ),
            (rate, None) => format!("{}/s", human_size(rate)),
        };
        let detail = if let Some(queue) = &view.remote_queue {
            match queue.position {
                Some(place) => format!("place {place} in {}'s queue", queue.peer),
                None => format!("in {}'s queue", queue.peer),
            }
        } else if let Some(waits) = &view.waits_for {
            waits.clone()
        } else if !view.row.reason.is_empty() {
            view.row.reason.clone()
        } else {
            let sending: Vec<&str> = view
                .sources
                .iter()
                .filter(|s| s.active)
                .map(|s| s.nickname.as_str())
                .collect();
            if sending.is_empty() {
                String::new()
            } else {
                format!("from {}", sending.join(", "))
            }
        };
        use TransferState as S;
        TransferLine {
            id: view.row.id,
            name,
            state: state.word(),
            permille,
            bytes,
            rate,
            detail,
            file: state == S::Done && view.row.path.is_some(),
            can_pause: matches!(
                state,
                S::Queued
                    | S::Connecting
                    | S::Verifying
                    | S::QueuedRemotely
                    | S::Downloading
                    | S::Waiting
            ),
            can_resume: state == S::Paused,
            can_cancel: !matches!(state, S::Done | S::Cancelled | S::Failed),
            can_retry: matches!(state, S::Failed | S::Cancelled | S::Waiting),
        }
    }
}

struct UploadLine {
    path: String,
    peer: String,
    bytes: String,
}

#[derive(Template)]
#[template(path = "transfers.html")]
struct TransfersPage {
    query: String,
    downloads: Vec<TransferLine>,
    uploads: Vec<UploadLine>,
    uploads_queued: usize,
    max_active: usize,
}

pub(super) async fn transfer_lines(web: &Arc<Web>) -> Result<crate::TransferList, PageError> {
    blocking(web, |c| c.transfers(HISTORY)).await?.map_err(|e| {
        PageError::Other(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            format!("{e:#}"),
        )
    })
}

/// `GET /transfers`: downloads (running, then finished) and uploads.
pub(super) async fn transfers(State(web): State<Arc<Web>>) -> Response {
    let list = match transfer_lines(&web).await {
        Ok(list) => list,
        Err(page) => return page.into_response(),
    };
    render(
        StatusCode::OK,
        TransfersPage {
            query: String::new(),
            downloads: list.downloads.iter().map(TransferLine::of).collect(),
            uploads: list
                .uploads
                .iter()
                .map(|u| UploadLine {
                    path: u.path.clone(),
                    peer: u.peer.clone(),
                    bytes: format!("{} of {}", human_size(u.sent), human_size(u.length)),
                })
                .collect(),
            uploads_queued: list.uploads_queued,
            max_active: list.max_active,
        }
        .render(),
    )
}

/// `POST /transfers/{id}/{pause|resume|cancel|retry}`.
pub(super) async fn transfer_action(
    State(web): State<Arc<Web>>,
    Path((id, action)): Path<(u64, String)>,
) -> Response {
    let action = match action.as_str() {
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "cancel" => Action::Cancel,
        "retry" => Action::Retry,
        other => return bad_request(format!("{other:?} is not pause, resume, cancel or retry")),
    };
    match blocking(&web, move |c| c.transfer_action(id, action)).await {
        Ok(Ok(_)) => Redirect::to("/transfers").into_response(),
        Ok(Err(e)) => bad_request(format!("{e:#}")),
        Err(page) => page.into_response(),
    }
}

/// A file from disk as the answer, `inline` for a browser to show or play it.
async fn file_response(path: PathBuf, name: &str) -> Response {
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("{} cannot be opened: {e}", path.display()),
            );
        }
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(name));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    headers.insert(header::CONTENT_DISPOSITION, disposition(name));
    response
}

/// `inline; filename*=UTF-8''…` (RFC 6266), whatever the name holds.
fn disposition(name: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("inline; filename*=UTF-8''{}", encoded(name)))
        .unwrap_or_else(|_| HeaderValue::from_static("inline"))
}

/// What a browser is told a file is, from its extension (players need it).
fn content_type(name: &str) -> HeaderValue {
    HeaderValue::from_static(match extension_of(name).as_str() {
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "ogg" | "oga" | "opus" => "audio/ogg",
        "m4a" | "mp4" | "aac" => "audio/mp4",
        "wav" => "audio/wav",
        "webm" => "video/webm",
        "txt" | "md" => "text/plain; charset=utf-8",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        _ => "application/octet-stream",
    })
}

/// `GET /transfers/{id}/file`: a finished download's file.
pub(super) async fn transfer_file(State(web): State<Arc<Web>>, Path(id): Path<u64>) -> Response {
    let list = match transfer_lines(&web).await {
        Ok(list) => list,
        Err(page) => return page.into_response(),
    };
    let found = list
        .downloads
        .iter()
        .find(|t| t.row.id == id && t.status == TransferState::Done);
    match found.and_then(|t| t.row.path.clone()) {
        Some(path) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            file_response(path, &name).await
        }
        None => error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            format!("download {id} is not a finished one"),
        ),
    }
}

/// `GET /play/{hash}?name=…`: the content's bytes in order, as they are verified: a local
/// copy when this agent has one, else a download streamed straight into the answer (a player
/// plays while the rest arrives; closing it stops the download).
pub(super) async fn play(
    State(web): State<Arc<Web>>,
    Path(hash): Path<String>,
    params: Result<Query<NameParam>, QueryRejection>,
) -> Response {
    let hash = match parse_hash(&hash) {
        Ok(hash) => hash,
        Err(page) => return page.into_response(),
    };
    let name = params
        .ok()
        .and_then(|Query(p)| p.name)
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| hash.fmt_short());
    let local = blocking(&web, move |c| {
        let shares = crate::shares_by_name(&c.shares.borrow());
        c.catalog
            .read(|r| r.servable(&hash))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|record| {
                let share = shares.get(&record.key.share)?;
                let path = share.root.join(record.key.rel_path());
                let same = std::fs::metadata(&path).is_ok_and(|m| m.len() == record.stat.size);
                same.then_some(path)
            })
            .next()
    })
    .await;
    if let Ok(Some(path)) = local {
        return file_response(path, &name).await;
    }
    let Ok(permit) = web.players.clone().try_acquire_owned() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Too many players are streaming at once; close one and try again.",
        );
    };
    let finder: Arc<dyn peerdex_download::SourceFinder> = match server(&web) {
        Ok(client) => Arc::new(client),
        Err(page) => return page.into_response(),
    };
    // A folder of its own: two players of one content never share a partial file.
    let mut nonce = [0u8; 8];
    let _ = getrandom::fill(&mut nonce);
    let work = web
        .controls
        .config
        .state
        .join("streams")
        .join(super::hex_text(&nonce));
    let (sink, chunks) = tokio::sync::mpsc::channel::<Bytes>(8);
    let request = DownloadRequest {
        hash,
        name: Some(name.clone()),
        destination: EngineDestination::Stream {
            work: work.clone(),
            sink,
        },
    };
    let options = web.controls.queue.download_options();
    let route_bytes = web.controls.queue.route_bytes.clone();
    let cancel = web.stop.child_token();
    tokio::spawn(async move {
        let _permit = permit;
        let progress = Arc::new(DownloadProgress::counting_routes_in(route_bytes));
        match peerdex_download::download(finder, &request, &options, progress, cancel).await {
            Ok(report) => debug!(bytes = report.size, "stream played to the end"),
            Err(e) => warn!(hash = %hash.fmt_short(), error = %e, "stream ended early"),
        }
        let _ = std::fs::remove_dir_all(&work);
    });
    let stream = futures_util::stream::unfold(chunks, |mut chunks| async move {
        let chunk = chunks.recv().await?;
        Some((Ok::<_, Infallible>(chunk), chunks))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type(&name));
    headers.insert(header::CONTENT_DISPOSITION, disposition(&name));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// What `/events` streams besides the transfers.
#[derive(Deserialize, Default)]
pub(super) struct EventsParams {
    /// `1`: also relay the account's contact, presence, message and wish events.
    people: Option<u8>,
}

/// `GET /events[?people=1]`: the transfers table, live: a `transfers` event with every line
/// (JSON) each time something in it changed; with `people=1` also a `people` event for each
/// contact, presence, message, receipt or wish-hit event of the account (PROTOCOL §10.1, the
/// envelope as JSON), relayed from the index server, and `{"type":"relay_open"}` each time
/// the relay (re)connects to it. One stream per tab.
pub(super) async fn events(
    State(web): State<Arc<Web>>,
    params: Result<Query<EventsParams>, QueryRejection>,
) -> Response {
    let Ok(permit) = web.event_streams.clone().try_acquire_owned() else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "Too many live pages are open; close some tabs.",
        );
    };
    let people = params.is_ok_and(|Query(p)| p.people == Some(1));
    let state = (web.clone(), permit, None::<String>, true);
    let transfers = futures_util::stream::unfold(state, |(web, permit, last, first)| async move {
        let mut first = first;
        loop {
            if !first {
                tokio::select! {
                    () = web.stop.cancelled() => return None,
                    () = tokio::time::sleep(EVENT_TICK) => {}
                }
            }
            first = false;
            let Ok(list) = transfer_lines(&web).await else {
                continue;
            };
            let lines: Vec<TransferLine> = list.downloads.iter().map(TransferLine::of).collect();
            let Ok(json) = serde_json::to_string(&lines) else {
                continue;
            };
            if last.as_deref() != Some(json.as_str()) {
                let event = Event::default().event("transfers").data(json.clone());
                return Some((Ok::<_, Infallible>(event), (web, permit, Some(json), false)));
            }
        }
    });
    let relayed = futures_util::StreamExt::flatten(futures_util::stream::iter(
        people.then(|| people_events(web)),
    ));
    Sse::new(futures_util::stream::select(transfers, relayed))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The server's account events as they arrive, read with this agent's session.
type ServerEvents = std::pin::Pin<
    Box<
        dyn futures_util::Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<reqwest::Error>,
                >,
            > + Send,
    >,
>;

/// How long the relay waits before it asks the index server for the events again.
const RELAY_RETRY: Duration = Duration::from_secs(10);

/// The account's social events, relayed as `people` events; the stream to the index server is
/// opened again (after [`RELAY_RETRY`]) when it fails or ends, e.g. while the device is signed
/// in to no account.
fn people_events(
    web: Arc<Web>,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send {
    use futures_util::StreamExt;
    use peerdex_shared::social::{Event as Social, EventEnvelope};
    futures_util::stream::unfold((web, None::<ServerEvents>), |(web, mut open)| async move {
        loop {
            let Some(stream) = open.as_mut() else {
                let opened = match server(&web) {
                    Ok(client) => client.event_stream(None).await.ok(),
                    Err(_) => None,
                };
                match opened {
                    Some(response) => {
                        let events =
                            eventsource_stream::Eventsource::eventsource(response.bytes_stream());
                        open = Some(Box::pin(events));
                        // Live from here on (presence is never replayed): the page may say so.
                        let event = Event::default()
                            .event("people")
                            .data(r#"{"type":"relay_open"}"#);
                        return Some((Ok(event), (web, open)));
                    }
                    None => tokio::select! {
                        () = web.stop.cancelled() => return None,
                        () = tokio::time::sleep(RELAY_RETRY) => {}
                    },
                }
                continue;
            };
            let next = tokio::select! {
                () = web.stop.cancelled() => return None,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let Ok(envelope) = serde_json::from_str::<EventEnvelope>(&message.data) else {
                        continue;
                    };
                    let social = matches!(
                        envelope.event,
                        Social::Presence { .. }
                            | Social::ContactRequest { .. }
                            | Social::ContactAccepted { .. }
                            | Social::ContactRemoved { .. }
                            | Social::Message { .. }
                            | Social::Receipt { .. }
                            | Social::Room { .. }
                            | Social::WishHit { .. }
                    );
                    if social {
                        let event = Event::default().event("people").data(message.data);
                        return Some((Ok(event), (web, open)));
                    }
                }
                Some(Err(_)) | None => {
                    open = None;
                    tokio::select! {
                        () = web.stop.cancelled() => return None,
                        () = tokio::time::sleep(RELAY_RETRY) => {}
                    }
                }
            }
        }
    })
}

// ---- shares ------------------------------------------------------------------------------------

struct ShareLine {
    name: String,
    root: String,
    files: String,
    visibility: String,
}

#[derive(Template)]
#[template(path = "shares.html")]
struct SharesPage {
    query: String,
    notice: Option<String>,
    editable: bool,
    shares: Vec<ShareLine>,
}

#[derive(Deserialize, Default)]
pub(super) struct SharesParams {
    added: Option<String>,
    removed: Option<String>,
    changed: Option<String>,
}

/// `GET /shares`: what is shared, with whom, and forms to change it.
pub(super) async fn shares(
    State(web): State<Arc<Web>>,
    params: Result<Query<SharesParams>, QueryRejection>,
) -> Response {
    let params = params.map(|Query(p)| p).unwrap_or_default();
    let notice = match (params.added, params.removed, params.changed) {
        (Some(name), _, _) => Some(format!(
            "Now sharing {name:?}: its files are being read and reach the index as they are."
        )),
        (None, Some(name), _) => Some(format!(
            "No longer sharing {name:?}: its files leave the index."
        )),
        (None, None, Some(name)) => Some(format!(
            "Changed who may see {name:?}: the index has the new scope now."
        )),
        (None, None, None) => None,
    };
    let status = match page_status(&web).await {
        Ok(status) => status,
        Err(page) => return page.into_response(),
    };
    let live = web.controls.shares.borrow().clone();
    let shares = status
        .shares
        .iter()
        .map(|s| {
            let visibility = live
                .iter()
                .find(|l| l.name == s.name)
                .map(|l| l.rules.scope_text())
                .filter(|text| !text.is_empty())
                .unwrap_or("public")
                .to_owned();
            ShareLine {
                name: s.name.clone(),
                root: s.root.display().to_string(),
                files: format!(
                    "{} files, {} ({} read)",
                    s.counts.files,
                    human_size(s.counts.bytes),
                    s.counts.hashed_files
                ),
                visibility,
            }
        })
        .collect();
    render(
        StatusCode::OK,
        SharesPage {
            query: String::new(),
            notice,
            editable: web.controls.config.shares_file.is_some(),
            shares,
        }
        .render(),
    )
}

/// The form that adds a share.
#[derive(Deserialize)]
pub(super) struct AddShareForm {
    path: String,
    name: Option<String>,
    visibility: Option<String>,
}

/// `POST /shares` (`path`, optional `name` and `visibility`): shares a folder now (written to
/// the config file, as `peerdex share` does).
pub(super) async fn add_share(
    State(web): State<Arc<Web>>,
    form: Result<Form<AddShareForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("sharing needs the folder's path");
    };
    let visibility = match form.visibility.as_deref().map(str::trim) {
        None | Some("") => Default::default(),
        Some(text) => match text.parse() {
            Ok(visibility) => visibility,
            Err(e) => return bad_request(format!("visibility {text:?}: {e}")),
        },
    };
    let share = ShareConfig {
        path: PathBuf::from(form.path.trim()),
        name: form
            .name
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty()),
        exclude: Vec::new(),
        follow_symlinks: false,
        include_hidden: false,
        visibility,
        scopes: Vec::new(),
    };
    edit_shares(
        &web,
        |file| file.share(share),
        |name| format!("/shares?added={}", encoded(&name)),
    )
    .await
}

/// Edits the shares in the config file (as `peerdex share` does), serves exactly those at
/// once, and redirects (303) to `then(what the edit said)`; a refused edit is a 400 page.
async fn edit_shares<T: Send + 'static>(
    web: &Arc<Web>,
    edit: impl FnOnce(&mut ConfigFile) -> anyhow::Result<T> + Send + 'static,
    then: impl FnOnce(T) -> String,
) -> Response {
    let changed = blocking(web, move |c| {
        let path = c.config.shares_file.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "this agent was started with --share: its shares come from the command line \
                 (start it without --share to change them here)"
            )
        })?;
        let said = ConfigFile::edit(&path, edit)?;
        c.reload_shares()?;
        anyhow::Ok(said)
    })
    .await;
    match changed {
        Ok(Ok(said)) => Redirect::to(&then(said)).into_response(),
        Ok(Err(e)) => bad_request(format!("{e:#}")),
        Err(page) => page.into_response(),
    }
}

/// The form that changes who may see a share.
#[derive(Deserialize)]
pub(super) struct VisibilityForm {
    name: String,
    visibility: String,
}

/// `POST /shares/visibility` (`name`, `visibility`): changes who may see and download a share's
/// files; the rest of the share's settings stay. Applied at once (the list is uploaded again
/// with the new scopes).
pub(super) async fn change_visibility(
    State(web): State<Arc<Web>>,
    form: Result<Form<VisibilityForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("say which share and who may see it");
    };
    let visibility: peerdex_shared::scope::Visibility = match form.visibility.trim().parse() {
        Ok(visibility) => visibility,
        Err(e) => return bad_request(format!("visibility {:?}: {e}", form.visibility)),
    };
    let name = form.name;
    let target = name.clone();
    edit_shares(
        &web,
        move |file| {
            let share = file
                .shares
                .iter_mut()
                .find(|s| crate::config::share_name(s).is_ok_and(|n| n == target))
                .ok_or_else(|| anyhow::anyhow!("no share is named {target:?}"))?;
            share.visibility = visibility;
            Ok(())
        },
        |()| format!("/shares?changed={}", encoded(&name)),
    )
    .await
}

/// The form that removes a share.
#[derive(Deserialize)]
pub(super) struct RemoveShareForm {
    name: String,
}

/// `POST /shares/remove` (`name`): stops sharing it (its files leave the index).
pub(super) async fn remove_share(
    State(web): State<Arc<Web>>,
    form: Result<Form<RemoveShareForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("say which share to remove");
    };
    let name = form.name;
    let target = name.clone();
    edit_shares(
        &web,
        move |file| {
            if file.unshare(std::path::Path::new(&target)) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("{target:?} is not shared"))
            }
        },
        |()| format!("/shares?removed={}", encoded(&name)),
    )
    .await
}

// ---- static files ------------------------------------------------------------------------------

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `GET /static/peerdex.css`.
pub(super) async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", peerdex_shared::web::STYLESHEET)
}

/// `GET /static/favicon.svg`.
pub(super) async fn favicon() -> Response {
    asset("image/svg+xml", peerdex_shared::web::FAVICON)
}

/// `GET /static/agent.js`: the live transfers table.
pub(super) async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/agent.js"),
    )
}
