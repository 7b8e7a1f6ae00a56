//! The server's web pages (no scripts): `/` searches, `/u/{nick}` is a page per sharer with
//! its folders, one page of a folder at a time. Every page is a plain GET URL, so it can be
//! bookmarked and shared, and back and forward work; search works without JavaScript.
//!
//! The pages call the same functions as the API (`run_search`, `list_folder`), with the same
//! [`Caller`]: what a page shows is exactly what that caller's API answer holds, scopes
//! included. A browser sends no credentials here, so pages show what guests may see.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use peerdex_shared::api::{BrowseEntry, FolderHit, FolderListing, SearchHit, SearchResponse};
use peerdex_shared::units::{ago, human_size};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use super::accounts::PageCaller;
use super::{ApiError, Caller, FolderListParams, SearchParams, list_folder, run_search};
use crate::state::AppState;

/// Results on one search page.
const PAGE_HITS: u64 = 25;
/// Entries on one page of a folder: the DOM of a huge share stays small.
const PAGE_ENTRIES: u64 = 200;
/// Sharers named per result.
const SHARERS_SHOWN: usize = 5;

/// What every page sends: no script may run, nothing is loaded from elsewhere, no page may
/// frame ours, no referrer leaks a search to another site.
pub fn security_headers(response: &mut Response) {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

pub(crate) fn page(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
    let mut response = match rendered {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("page failed to render: {e}"),
        )
            .into_response(),
    };
    security_headers(&mut response);
    response
}

/// What frames every page: who is signed in (the header offers to sign in or out) and the
/// footer's line.
pub(crate) struct Chrome {
    pub(crate) viewer: Option<String>,
    /// An admin or moderator: the header links to `/admin`.
    pub(crate) admin: bool,
    pub(crate) footer: String,
}

pub(crate) fn chrome(state: &AppState, caller: &Caller) -> Chrome {
    let online = state.presence.snapshot().count();
    Chrome {
        viewer: caller.account.as_ref().map(|a| a.name.clone()),
        admin: caller
            .account
            .as_ref()
            .is_some_and(|a| a.role != peerdex_shared::api::Role::Member),
        footer: format!(
            "peerdex index · {online} {} online · files travel between people, never through this server",
            if online == 1 { "person" } else { "people" }
        ),
    }
}

pub(crate) fn encoded(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// `/u/NICK`, and a folder of it.
fn peer_url(nick: &str, path: Option<&str>, offset: u64) -> String {
    let mut url = format!("/u/{}", encoded(nick));
    let mut sep = '?';
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        url.push_str(&format!("?path={}", encoded(path)));
        sep = '&';
    }
    if offset > 0 {
        url.push_str(&format!("{sep}offset={offset}"));
    }
    url
}

fn search_url(query: &str, offset: u64) -> String {
    if offset == 0 {
        format!("/?q={}", encoded(query))
    } else {
        format!("/?q={}&offset={offset}", encoded(query))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    query: String,
    chrome: Chrome,
    heading: String,
    message: String,
}

/// An API error as a page, with its status.
pub(crate) fn error_page(chrome: Chrome, query: String, error: &ApiError) -> Response {
    let (status, message) = (error.status, error.body.error.clone());
    let heading = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::UNAUTHORIZED => "Sign-in required",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::BAD_REQUEST => "That did not work",
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => "Busy",
        _ => "Something went wrong",
    }
    .to_owned();
    page(
        status,
        ErrorPage {
            query,
            chrome,
            heading,
            message,
        }
        .render(),
    )
}

/// One result as the page shows it.
struct HitView {
    name: String,
    size: String,
    kind: String,
    folder: String,
    media: Option<String>,
    sources: String,
    /// (nickname, page URL)
    sharers: Vec<(String, String)>,
    hash: String,
    locked: bool,
}

impl HitView {
    fn of(hit: &SearchHit) -> HitView {
        let mut sharers: Vec<(String, String)> = Vec::new();
        for source in &hit.sources {
            if sharers.len() == SHARERS_SHOWN {
                break;
            }
            if !sharers.iter().any(|(n, _)| *n == source.nickname) {
                sharers.push((source.nickname.clone(), peer_url(&source.nickname, None, 0)));
            }
        }
        HitView {
            name: hit.name.clone(),
            size: human_size(hit.size),
            kind: format!("{:?}", hit.kind).to_lowercase(),
            folder: hit.folder.clone(),
            media: hit.tags.summary_line(),
            sources: match hit.sources_online {
                1 => "1 person online".to_owned(),
                n => format!("{n} people online"),
            },
            sharers,
            hash: hit.hash.to_string(),
            locked: hit.locked,
        }
    }
}

struct FolderHitView {
    name: String,
    meta: String,
    where_: String,
}

impl FolderHitView {
    fn of(hit: &FolderHit) -> FolderHitView {
        FolderHitView {
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
    chrome: Chrome,
    notice: Option<String>,
    stats: String,
    count: String,
    first: u64,
    hits: Vec<HitView>,
    folders: Vec<FolderHitView>,
    prev: Option<String>,
    next: Option<String>,
}

/// Query parameters of the search page: the words and where the page starts.
#[derive(Deserialize)]
pub struct SearchPageParams {
    q: Option<String>,
    offset: Option<u64>,
}

/// `GET /`: the search form, and with `q` a page of results.
pub async fn search_page(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    params: Result<Query<SearchPageParams>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return error_page(
            chrome(&state, &caller),
            String::new(),
            &ApiError::bad_request("this page takes q (the words) and offset (a number)"),
        );
    };
    let query = params.q.unwrap_or_default().trim().to_owned();
    let offset = params.offset.unwrap_or(0);
    let mut view = SearchPage {
        query: query.clone(),
        chrome: chrome(&state, &caller),
        notice: None,
        stats: String::new(),
        count: String::new(),
        first: offset + 1,
        hits: Vec::new(),
        folders: Vec::new(),
        prev: None,
        next: None,
    };
    if query.is_empty() {
        let state2 = state.clone();
        if let Ok(Ok(counts)) = super::run_blocking(move || state2.counts()).await {
            view.stats = format!(
                "{} files, {} distinct, shared by {} people.",
                counts.entries, counts.contents, counts.peers
            );
        }
        return page(StatusCode::OK, view.render());
    }
    let frame = chrome(&state, &caller);
    let found = run_search(
        &state,
        caller,
        SearchParams {
            q: Some(query.clone()),
            limit: Some(PAGE_HITS),
            offset: Some(offset),
            ..Default::default()
        },
    )
    .await;
    let result: SearchResponse = match found {
        Ok(result) => result,
        // A query the server refuses (too long, only stop words) is said on the page itself.
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            view.notice = Some(e.body.error);
            return page(StatusCode::BAD_REQUEST, view.render());
        }
        Err(e) => return error_page(frame, query, &e),
    };
    view.count = result.count_line(&query);
    view.hits = result.hits.iter().map(HitView::of).collect();
    view.folders = result.folders.iter().map(FolderHitView::of).collect();
    if offset > 0 {
        view.prev = Some(search_url(&query, offset.saturating_sub(PAGE_HITS)));
    }
    let shown = offset + result.hits.len() as u64;
    if result.hits.len() as u64 == PAGE_HITS && (shown < result.total || !result.total_exact) {
        view.next = Some(search_url(&query, shown));
    }
    page(StatusCode::OK, view.render())
}

struct DirView {
    name: String,
    url: String,
    meta: String,
}

struct FileView {
    name: String,
    size: String,
    media: Option<String>,
    hash: String,
    short: String,
}

#[derive(Template)]
#[template(path = "peer.html")]
struct PeerPage {
    query: String,
    chrome: Chrome,
    nick: String,
    online: bool,
    presence: String,
    totals: String,
    /// (label, URL) from the sharer's top to this folder.
    crumbs: Vec<(String, String)>,
    summary: Option<String>,
    folders: Vec<DirView>,
    files: Vec<FileView>,
    prev: Option<String>,
    next: Option<String>,
    /// The account of the sharer, for a signed-in viewer who is someone else: the page offers
    /// to add it as a contact and to write to it.
    owner: Option<String>,
    /// What the last action from this page did.
    said: Option<String>,
    /// This page's own address, where its forms come back to.
    back: String,
}

/// Query parameters of a sharer's page: the folder and where its page starts.
#[derive(Deserialize)]
pub struct PeerPageParams {
    path: Option<String>,
    offset: Option<u64>,
    said: Option<String>,
}

fn file_view(entry: &BrowseEntry) -> FileView {
    let name = entry
        .path
        .rsplit('/')
        .next()
        .unwrap_or(&entry.path)
        .to_owned();
    let hash = entry.hash.to_string();
    FileView {
        media: entry.tags.display().filter(|shown| *shown != name),
        name,
        size: human_size(entry.size),
        short: hash.chars().take(12).collect(),
        hash,
    }
}

/// `GET /u/{nick}`: a sharer's card and one page of one of its folders (`path`), as the
/// viewer may see them.
pub async fn peer_page(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    Path(nick): Path<String>,
    params: Result<Query<PeerPageParams>, QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return error_page(
            chrome(&state, &caller),
            String::new(),
            &ApiError::bad_request("this page takes path (a folder) and offset (a number)"),
        );
    };
    let offset = params.offset.unwrap_or(0);
    let path = params.path.unwrap_or_default().trim_matches('/').to_owned();
    // One scope for the card and the listing.
    let scope = match caller.scope(&state, "read").await {
        Ok(scope) => scope,
        Err(e) => return error_page(chrome(&state, &caller), String::new(), &e),
    };
    let card = match peer_card(&state, scope.clone(), &nick).await {
        Ok(card) => card,
        Err(e) => return error_page(chrome(&state, &caller), String::new(), &e),
    };
    let listing: FolderListing = match list_folder(
        &state,
        scope,
        nick.clone(),
        FolderListParams {
            path: Some(path.clone()),
            offset: Some(offset),
            limit: Some(PAGE_ENTRIES),
        },
    )
    .await
    {
        Ok(listing) => listing,
        Err(e) => return error_page(chrome(&state, &caller), String::new(), &e),
    };
    let nick = listing.nickname.clone();
    let mut crumbs = vec![(nick.clone(), peer_url(&nick, None, 0))];
    let mut walked = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(part);
        crumbs.push((part.to_owned(), peer_url(&nick, Some(&walked), 0)));
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
            let mut meta = match f.files {
                0 => String::new(),
                n => format!("{n} files, {}", human_size(f.bytes)),
            };
            let title = f.summary.title("");
            if !title.is_empty() {
                meta = if meta.is_empty() {
                    title
                } else {
                    format!("{title} · {meta}")
                };
            }
            DirView {
                url: peer_url(&nick, Some(&full), 0),
                name,
                meta,
            }
        })
        .collect();
    let summary = listing
        .folder
        .as_ref()
        .map(|f| f.summary.title(""))
        .filter(|t| !t.is_empty());
    let here = (!path.is_empty()).then_some(path.as_str());
    let owner = match &caller.account {
        Some(viewer) => {
            let (db, nick, viewer) = (state.store.db.clone(), nick.clone(), viewer.name.clone());
            super::run_blocking(move || -> Result<Option<String>, crate::db::DbError> {
                let Some(peer) = db.peer_by_nickname(&nick)? else {
                    return Ok(None);
                };
                Ok(db
                    .account_of_device(&peer.key)?
                    .map(|a| a.name)
                    .filter(|name| *name != viewer))
            })
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
        }
        None => None,
    };
    let view = PeerPage {
        owner,
        said: params.said,
        back: peer_url(&nick, here, offset),
        query: String::new(),
        chrome: chrome(&state, &caller),
        online: listing.online,
        presence: if listing.online {
            "online now".to_owned()
        } else {
            match card.last_seen {
                Some(secs) => format!("offline, last seen {}", ago(secs.max(0) as u64)),
                None => "offline".to_owned(),
            }
        },
        totals: match card.files {
            1 => "shares 1 file you may see".to_owned(),
            n => format!("shares {n} files you may see"),
        },
        crumbs,
        summary,
        folders,
        files: listing.files.iter().map(file_view).collect(),
        prev: (offset > 0).then(|| peer_url(&nick, here, offset.saturating_sub(PAGE_ENTRIES))),
        next: listing.next_offset.map(|next| peer_url(&nick, here, next)),
        nick,
    };
    page(StatusCode::OK, view.render())
}

struct Card {
    files: u64,
    /// Seconds since it was last seen, when known.
    last_seen: Option<i64>,
}

async fn peer_card(
    state: &Arc<AppState>,
    scope: Arc<crate::scope::Scope>,
    nick: &str,
) -> Result<Card, ApiError> {
    peerdex_shared::validate::validate_nickname(nick)
        .map_err(|e| ApiError::bad_request(format!("nickname {e}")))?;
    let (state2, nick) = (state.clone(), nick.to_owned());
    super::run_blocking(move || -> Result<Card, ApiError> {
        let db = &state2.store.db;
        let peer = db
            .peer_by_nickname(&nick)?
            .ok_or_else(|| ApiError::not_found(format!("no one here is called {nick:?}")))?;
        Ok(Card {
            files: db.visible_entries(peer.id, &scope)?,
            last_seen: state2
                .presence
                .last_seen(peer.id)
                .map(|at| (crate::db::unix_now() - at).max(0)),
        })
    })
    .await?
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage {
    query: String,
    chrome: Chrome,
    name: String,
    error: Option<String>,
}

/// `GET /signin`: the sign-in form.
pub async fn signin_form(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
) -> Response {
    page(
        StatusCode::OK,
        SignInPage {
            query: String::new(),
            chrome: chrome(&state, &caller),
            name: String::new(),
            error: None,
        }
        .render(),
    )
}

/// What the sign-in form posts.
#[derive(Deserialize)]
pub struct SignInForm {
    name: String,
    password: String,
}

/// Whether a form post comes from one of our own pages: its `Origin` names the host it was
/// sent to, or (a browser that sends no origin, or `null`) `Sec-Fetch-Site` says same-origin.
fn from_our_pages(headers: &axum::http::HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    peerdex_shared::web::same_origin(text("origin"), text("host"), text("sec-fetch-site"), true)
}

/// Refuses any page request that changes something (not GET or HEAD) unless it comes from one
/// of this server's own pages (CSRF): the page router's one check for every form post.
pub(crate) async fn only_our_forms(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let changes = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if changes && !from_our_pages(request.headers()) {
        return error_page(
            chrome(&state, &Caller::guest()),
            String::new(),
            &ApiError::new(
                StatusCode::FORBIDDEN,
                peerdex_shared::api::ErrorCode::Forbidden,
                "this form did not come from this server's own pages",
            ),
        );
    }
    next.run(request).await
}

fn session_cookie(value: &str, secure: bool, clear: bool) -> HeaderValue {
    let mut cookie = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Strict",
        super::accounts::PAGE_COOKIE
    );
    if secure {
        cookie.push_str("; Secure");
    }
    if clear {
        cookie.push_str("; Max-Age=0");
    }
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
}

/// `POST /signin` (`name`, `password`): signs the browser in to the account (a session token
/// in an `HttpOnly`, `SameSite=Strict` cookie) and goes to the search page; the pages then show
/// what the account may see. Wrong credentials show the form again with the reason.
pub async fn signin(
    State(state): State<Arc<AppState>>,
    axum::extract::ConnectInfo(remote): axum::extract::ConnectInfo<std::net::SocketAddr>,
    parts: axum::http::request::Parts,
    form: Result<axum::Form<SignInForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let guest = Caller::guest();
    let Ok(axum::Form(form)) = form else {
        return error_page(
            chrome(&state, &guest),
            String::new(),
            &ApiError::bad_request("signing in needs name and password"),
        );
    };
    let secure = super::accounts::over_https(&state, &parts);
    let ip = super::client_ip(&state, remote, &parts.headers);
    let request = peerdex_shared::api::LoginRequest {
        name: form.name.trim().to_owned(),
        password: form.password,
        device: None,
    };
    let refused = match super::accounts::refuse_in_clear(&state, &parts) {
        Ok(()) => super::accounts::sign_in(&state, ip, request).await,
        Err(e) => Err(e),
    };
    match refused {
        Ok(signed_in) => {
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            response.headers_mut().insert(
                header::SET_COOKIE,
                session_cookie(&signed_in.token, secure, false),
            );
            security_headers(&mut response);
            response
        }
        // The form again, with the reason: for wrong credentials that is the page asked for
        // (200: a browser logs any 4xx page as an error); a refusal keeps its status.
        Err(e) => page(
            if e.status == StatusCode::UNAUTHORIZED {
                StatusCode::OK
            } else {
                e.status
            },
            SignInPage {
                query: String::new(),
                chrome: chrome(&state, &guest),
                name: form.name,
                error: Some(e.body.error),
            }
            .render(),
        ),
    }
}

/// `POST /signout`: revokes the page session and forgets the cookie.
pub async fn signout(
    State(state): State<Arc<AppState>>,
    parts: axum::http::request::Parts,
    PageCaller(caller): PageCaller,
) -> Response {
    if let Some(hash) = caller.token_hash {
        let db = state.store.db.clone();
        if let Ok(Err(e)) = super::run_blocking(move || db.revoke_token(&hash)).await {
            tracing::warn!(error = %e, "could not revoke a page session");
        }
    }
    let secure = super::accounts::over_https(&state, &parts);
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", secure, true));
    security_headers(&mut response);
    response
}

/// A form on a sharer's page: who, what, and the page to go back to.
#[derive(Deserialize)]
pub struct PersonForm {
    to: String,
    #[serde(default)]
    body: String,
    back: String,
}

/// Where an action from a sharer's page returns: that page (never another site), saying
/// `said`.
fn back_to(back: &str, said: &str) -> Response {
    let back = if back.starts_with("/u/") && !back.contains("//") {
        back
    } else {
        "/"
    };
    let sep = if back.contains('?') { '&' } else { '?' };
    axum::response::Redirect::to(&format!("{back}{sep}said={}", encoded(said))).into_response()
}

/// `POST /contact` (`to`, `back`): asks the sharer's account to be a contact (the API's
/// `PUT /api/v1/contacts/{name}`, with the page's caller).
pub async fn ask_contact(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    form: Result<axum::Form<PersonForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return error_page(
            chrome(&state, &caller),
            String::new(),
            &ApiError::bad_request("this form takes to, body and back"),
        );
    };
    match super::social::add_contact(
        State(state.clone()),
        caller.clone(),
        super::ApiPath(form.to.clone()),
    )
    .await
    {
        Ok(_) => back_to(&form.back, &format!("asked {} to be your contact", form.to)),
        Err(e) => error_page(chrome(&state, &caller), String::new(), &e),
    }
}

/// `POST /message` (`to`, `body`, `back`): a private message to the sharer's account (the
/// API's `POST /api/v1/messages`).
pub async fn write_message(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    form: Result<axum::Form<PersonForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(form)) = form else {
        return error_page(
            chrome(&state, &caller),
            String::new(),
            &ApiError::bad_request("this form takes to, body and back"),
        );
    };
    let body = serde_json::json!({ "to": form.to, "body": form.body }).to_string();
    match super::social::send_message(State(state.clone()), caller.clone(), Ok(body.into())).await {
        Ok(_) => back_to(&form.back, &format!("message sent to {}", form.to)),
        Err(e) => error_page(chrome(&state, &caller), String::new(), &e),
    }
}

/// A file of the pages, embedded in the binary, cached by browsers for an hour.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response();
    security_headers(&mut response);
    response
}

/// `GET /static/peerdex.css`.
pub async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", peerdex_shared::web::STYLESHEET)
}

/// `GET /static/favicon.svg`.
pub async fn favicon() -> Response {
    asset("image/svg+xml", peerdex_shared::web::FAVICON)
}
