//! The social routes (PROTOCOL §10): the event stream, contacts, blocks and private messages.
//! Every route needs a signed-in account (or an API key with the `social` scope).

use super::openapi::ApiErrors;
use super::{ApiPath, ApiQuery};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use peerdex_shared::api::ErrorCode;
use peerdex_shared::social::{
    ContactState, ContactsResponse, Event, EventEnvelope, MessagesResponse, ReceiptState,
    SendMessageRequest,
};
use serde::Deserialize;

use super::{ApiError, Caller, json_body, rate_limited, run_blocking};
use crate::db::{AccountRow, BanSubject, ContactOutcome, SocialError};
use crate::events::Subscription;
use crate::social::{self, notify};
use crate::state::AppState;

/// Durable events replayed at most per connection; a client further behind reconnects from the
/// last one it got and is given the next batch.
pub const REPLAY_LIMIT: u32 = 1000;

impl From<SocialError> for ApiError {
    fn from(e: SocialError) -> Self {
        match e {
            SocialError::NoAccount(_) | SocialError::NotFound(_) => {
                ApiError::not_found(e.to_string())
            }
            SocialError::Blocked(_) | SocialError::YouBlocked(_) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Blocked, e.to_string())
            }
            SocialError::Invalid(_) => ApiError::bad_request(e.to_string()),
            SocialError::Muted(_) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Muted, e.to_string())
            }
            SocialError::NotAllowed(_) => {
                ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, e.to_string())
            }
            SocialError::TooMany(_) => {
                let mut error = ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::LimitExceeded,
                    e.to_string(),
                );
                error.body.limit = Some("max_wishes_per_account".into());
                error
            }
            SocialError::Db(e) => e.into(),
        }
    }
}

/// The signed-in account, allowed the `social` scope, not banned.
async fn member(state: &Arc<AppState>, caller: &Caller) -> Result<AccountRow, ApiError> {
    caller.require_scope("social")?;
    let account = caller.require_account()?.clone();
    super::accounts::refuse_banned(
        state,
        BanSubject {
            account: Some(account.name.clone()),
            peer: caller.device,
            ip: None,
            nick: None,
        },
    )
    .await?;
    Ok(account)
}

/// Takes one of `account`'s tokens from `limiter`, or refuses with 429, `message` and
/// `Retry-After` (when the next token comes).
fn take_token(
    limiter: &crate::limits::RateLimiter<crate::db::AccountRef>,
    account: crate::db::AccountRef,
    message: &str,
) -> Result<(), ApiError> {
    if limiter.allow(&account) {
        return Ok(());
    }
    let mut e = rate_limited(message);
    e.retry_after = Some(limiter.exhausted(&account).unwrap_or(1).clamp(1, 3600) as u16);
    Err(e)
}

// ---- events ----------------------------------------------------------------------------------

/// `GET /api/v1/events` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Like `Last-Event-ID`, for clients that cannot set headers.
    pub after: Option<u64>,
}

fn sse(envelope: &EventEnvelope) -> SseEvent {
    let event = SseEvent::default()
        .event(envelope.event.kind())
        .data(serde_json::to_string(envelope).unwrap_or_default());
    match envelope.id {
        Some(id) => event.id(id.to_string()),
        None => event,
    }
}

/// Stream events (server-sent events).
///
/// `GET /api/v1/events`: server-sent events for the account. With `Last-Event-ID` (or
/// `?after=`), the durable events after that id come first; without, the messages not yet
/// delivered anywhere. Then live events, until the client leaves or the server drains.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::EVENTS,
    tag = "social",
    params(EventsQuery, ("last-event-id" = Option<u64>, Header, description = "Resume after this event id (durable kinds are replayed).")),
    responses((status = 200, description = "Server-sent events, one per event, with keep-alives, until the client goes away.", body = String, content_type = "text/event-stream"), ApiErrors),
    security(("account" = []))
)]
pub async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let account = member(&state, &caller).await?;
    let after = match headers
        .get("last-event-id")
        .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()))
    {
        Some(None) => {
            return Err(ApiError::bad_request(
                "Last-Event-ID must be the id of an event of this stream",
            ));
        }
        Some(Some(id)) => Some(id),
        None => query.after,
    };
    // Subscribe before reading the log: an event recorded in between is in both, and the
    // stream skips live events it already replayed.
    let subscription = state.events.subscribe(account.id).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            e.to_string(),
        )
    })?;
    let db = state.store.db.clone();
    let id = account.id;
    let replay = run_blocking(move || match after {
        Some(after) => db.events_after(id, after, REPLAY_LIMIT),
        None => db.undelivered_events(id, REPLAY_LIMIT),
    })
    .await??;
    let messages: Vec<u64> = replay
        .iter()
        .filter_map(|e| match &e.event {
            Event::Message { message } => Some(message.id),
            _ => None,
        })
        .collect();
    let ids: Vec<u64> = replay.iter().filter_map(|e| e.id).collect();
    let db = state.store.db.clone();
    run_blocking(move || db.mark_events_delivered(id, &ids)).await??;
    social::delivered(&state, account.id, messages).await?;
    // A full batch means more are waiting: the stream ends after it, and the client reconnects
    // from its last id for the next batch.
    let more_waiting = replay.len() >= REPLAY_LIMIT as usize;
    let replayed = replay.iter().filter_map(|e| e.id).collect();
    let stream = EventStream {
        replay: replay.into(),
        subscription,
        replayed,
        more_waiting,
        draining: state.lifecycle.draining.clone(),
    };
    let stream = futures_util::stream::unfold(stream, |mut s| async move {
        let envelope = s.next().await?;
        Some((Ok(sse(&envelope)), s))
    });
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new().interval(Duration::from_secs(state.config.social.keepalive_secs)),
    ))
}

struct EventStream {
    replay: VecDeque<EventEnvelope>,
    subscription: Subscription,
    /// Ids sent from the log: the same events arriving live are skipped. (Live events may come
    /// slightly out of id order, so only these, not every lower id, are skipped.)
    replayed: std::collections::HashSet<u64>,
    /// The replay was cut at [`REPLAY_LIMIT`]: end after it.
    more_waiting: bool,
    draining: tokio_util::sync::CancellationToken,
}

impl EventStream {
    async fn next(&mut self) -> Option<EventEnvelope> {
        if let Some(next) = self.replay.pop_front() {
            return Some(next);
        }
        if self.more_waiting {
            return None;
        }
        loop {
            let envelope = tokio::select! {
                envelope = self.subscription.events.recv() => envelope?,
                () = self.draining.cancelled() => return None,
            };
            if envelope.id.is_some_and(|id| self.replayed.remove(&id)) {
                continue;
            }
            return Some(envelope);
        }
    }
}

/// Report an agent's event to its account.
///
/// `POST /api/v1/events`: an agent reports what it did for its account (`download` events,
/// durable, and live `transfer` events, with the peer's session); the account's clients get
/// them like any other event.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::EVENTS,
    tag = "social",
    request_body = Event,
    responses((status = 204, description = "The event reached the account's clients."), ApiErrors),
    security(("peer_session" = []))
)]
pub async fn report(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let event: Event = json_body(body)?;
    let (name, detail) = match &event {
        Event::Download { name, detail, .. } => (name, detail.as_str()),
        Event::Transfer { name, state, .. } => (name, state.as_str()),
        _ => {
            return Err(ApiError::bad_request(
                "agents report download and transfer events only",
            ));
        }
    };
    if name.len() > 1024 || detail.len() > 4096 {
        return Err(ApiError::limit(
            "max_json_bytes",
            "a download report's name is at most 1024 bytes, its detail 4096",
        ));
    }
    if caller.device.is_none() {
        return Err(ApiError::unauthorized(
            "report with the agent's peer session",
        ));
    }
    let account = member(&state, &caller).await?;
    // Transfer events come in bursts (a folder's files) and must not eat the budget of the
    // account's messages.
    let limiter = match event {
        Event::Transfer { .. } => &state.guards.transfer_events,
        _ => &state.guards.messages_by_sender,
    };
    if !limiter.allow(&account.id) {
        return Err(rate_limited("too many reports; try again later"));
    }
    notify(&state, account.id, event).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- contacts ----------------------------------------------------------------------------------

/// List contacts and requests.
///
/// `GET /api/v1/contacts`.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::CONTACTS,
    tag = "social",
    responses((status = 200, description = "Contacts with presence, and requests both ways.", body = ContactsResponse), ApiErrors),
    security(("account" = []))
)]
pub async fn contacts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<ContactsResponse>, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    let rows = run_blocking(move || db.contacts_of(account.id)).await??;
    let seen = social::presence_of(&state).await?;
    let contacts = rows
        .into_iter()
        .map(|(id, mut contact)| {
            if contact.state == ContactState::Accepted {
                contact.online = seen.online.contains(&id);
                contact.last_seen = seen.last.get(&id).map(|&at| at.max(0) as u64);
            }
            contact
        })
        .collect();
    Ok(Json(ContactsResponse { contacts }))
}

/// Ask someone to be a contact.
///
/// `PUT /api/v1/contacts/{name}`: asks them; if they asked already, both are contacts now.
#[utoipa::path(
    put,
    path = peerdex_shared::routes::CONTACT,
    tag = "social",
    params(("name" = String, Path, description = "An account name.")),
    responses((status = 202, description = "Asked: they see a request."), (status = 200, description = "Contacts now (they had asked), or nothing changed."), ApiErrors),
    security(("account" = []))
)]
pub async fn add_contact(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = member(&state, &caller).await?;
    if !state.guards.contact_requests.allow(&account.id) {
        return Err(rate_limited(
            "too many contact requests (social.contact_requests_per_hour); try again later",
        ));
    }
    let db = state.store.db.clone();
    let me = account.id;
    let (outcome, them, their_name) = run_blocking(move || db.request_contact(me, &name)).await??;
    match outcome {
        ContactOutcome::Requested => {
            notify(
                &state,
                them,
                Event::ContactRequest {
                    from: account.name.clone(),
                },
            )
            .await?;
            Ok(StatusCode::ACCEPTED)
        }
        ContactOutcome::Accepted => {
            accepted(&state, &account, them, their_name).await?;
            Ok(StatusCode::OK)
        }
        ContactOutcome::Unchanged => Ok(StatusCode::OK),
    }
}

/// Tells both sides of a new contact (each side's other clients too).
async fn accepted(
    state: &Arc<AppState>,
    account: &AccountRow,
    them: crate::db::AccountRef,
    their_name: String,
) -> Result<(), ApiError> {
    notify(
        state,
        them,
        Event::ContactAccepted {
            name: account.name.clone(),
        },
    )
    .await?;
    notify(
        state,
        account.id,
        Event::ContactAccepted { name: their_name },
    )
    .await?;
    Ok(())
}

/// Accept a contact request.
///
/// `POST /api/v1/contacts/{name}/accept`.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::CONTACT_ACCEPT,
    tag = "social",
    params(("name" = String, Path, description = "An account name.")),
    responses((status = 204, description = "Contacts now."), ApiErrors),
    security(("account" = []))
)]
pub async fn accept_contact(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    let me = account.id;
    let (them, their_name) = run_blocking(move || db.accept_contact(me, &name)).await??;
    accepted(&state, &account, them, their_name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Decline a contact request.
///
/// `POST /api/v1/contacts/{name}/decline`.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::CONTACT_DECLINE,
    tag = "social",
    params(("name" = String, Path, description = "An account name.")),
    responses((status = 204, description = "The request is declined."), ApiErrors),
    security(("account" = []))
)]
pub async fn decline_contact(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    end_contact(&state, &caller, name, true).await
}

/// End a contact or withdraw a request.
///
/// `DELETE /api/v1/contacts/{name}`: ends the contact, or withdraws a request.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::CONTACT,
    tag = "social",
    params(("name" = String, Path, description = "An account name.")),
    responses((status = 204, description = "Not contacts any more."), ApiErrors),
    security(("account" = []))
)]
pub async fn remove_contact(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    end_contact(&state, &caller, name, false).await
}

/// Declines their request (`decline`) or ends whatever stands between the two; they are told.
async fn end_contact(
    state: &Arc<AppState>,
    caller: &Caller,
    name: String,
    decline: bool,
) -> Result<StatusCode, ApiError> {
    let account = member(state, caller).await?;
    let db = state.store.db.clone();
    let me = account.id;
    let (them, _) = run_blocking(move || {
        if decline {
            db.decline_contact(me, &name)
        } else {
            db.remove_contact(me, &name)
        }
    })
    .await??;
    notify(
        state,
        them,
        Event::ContactRemoved {
            name: account.name.clone(),
        },
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- blocks ------------------------------------------------------------------------------------

/// List blocked accounts.
///
/// `GET /api/v1/blocks`: the names blocked.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::BLOCKS,
    tag = "social",
    responses((status = 200, description = "The accounts the caller blocks.", body = Vec<String>), ApiErrors),
    security(("account" = []))
)]
pub async fn blocks(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<String>>, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    Ok(Json(run_blocking(move || db.blocks_of(account.id)).await??))
}

/// Block an account.
///
/// `PUT /api/v1/blocks/{name}`.
#[utoipa::path(
    put,
    path = peerdex_shared::routes::BLOCK,
    tag = "social",
    params(("name" = String, Path, description = "An account name.")),
    responses((status = 204, description = "Blocked: no messages, requests or offers from them."), ApiErrors),
    security(("account" = []))
)]
pub async fn block(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    run_blocking(move || db.block(account.id, &name)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Unblock an account.
///
/// `DELETE /api/v1/blocks/{name}`.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::BLOCK,
    tag = "social",
    params(("name" = String, Path, description = "An account name.")),
    responses((status = 204, description = "Not blocked."), ApiErrors),
    security(("account" = []))
)]
pub async fn unblock(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    run_blocking(move || db.unblock(account.id, &name)).await??;
    Ok(StatusCode::NO_CONTENT)
}

// ---- messages ----------------------------------------------------------------------------------

/// Send a private message.
///
/// `POST /api/v1/messages`: stores the message, pushes it if the recipient is online.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::MESSAGES,
    tag = "social",
    request_body = SendMessageRequest,
    responses((status = 201, description = "Stored, and delivered if they are online.", body = peerdex_shared::social::Message), ApiErrors),
    security(("account" = []))
)]
pub async fn send_message(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<peerdex_shared::social::Message>), ApiError> {
    let request: SendMessageRequest = json_body(body)?;
    let account = member(&state, &caller).await?;
    check_text(&state, &account, &request.body)?;
    take_token(
        &state.guards.messages_by_sender,
        account.id,
        &format!(
            "too many messages: at most {} a minute (social.messages_per_minute)",
            state.config.social.messages_per_minute
        ),
    )?;
    if !state.guards.messages_global.allow(&()) {
        let mut e = rate_limited("the server is taking too many messages; try again shortly");
        e.retry_after = Some(5);
        return Err(e);
    }
    let db = state.store.db.clone();
    let history = state.config.social.history_per_conversation;
    let stored =
        run_blocking(move || db.store_message(account.id, &request.to, &request.body, history))
            .await??;
    let message = stored.message.clone();
    social::deliver(&state, stored).await?;
    Ok((StatusCode::CREATED, Json(message)))
}

/// `GET /api/v1/messages` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessagesQuery {
    /// Only messages not read yet.
    #[serde(default)]
    pub unread: bool,
    /// The conversation with this account (both directions).
    pub with: Option<String>,
    /// At most this many, the newest (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// Read messages.
///
/// `GET /api/v1/messages`: messages to the account (or one conversation), oldest first. What
/// it lists counts as delivered.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::MESSAGES,
    tag = "social",
    params(MessagesQuery),
    responses((status = 200, description = "The newest messages to and from the caller.", body = MessagesResponse), ApiErrors),
    security(("account" = []))
)]
pub async fn messages(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessagesResponse>, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    let me = account.id;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = run_blocking(move || db.messages_of(me, query.unread, query.with.as_deref(), limit))
        .await??;
    let undelivered: Vec<u64> = rows
        .iter()
        .filter(|m| m.recipient == me && m.message.delivered_at.is_none())
        .map(|m| m.message.id)
        .collect();
    social::delivered(&state, me, undelivered).await?;
    Ok(Json(MessagesResponse {
        messages: rows.into_iter().map(|m| m.message).collect(),
    }))
}

/// Mark a message read.
///
/// `POST /api/v1/messages/{id}/read`: marks a message read; answers it.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::MESSAGE_READ,
    tag = "social",
    params(("id" = String, Path, description = "The message's id.")),
    responses((status = 200, description = "The message, marked read (the sender gets a receipt).", body = peerdex_shared::social::Message), ApiErrors),
    security(("account" = []))
)]
pub async fn read_message(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<peerdex_shared::social::Message>, ApiError> {
    let account = member(&state, &caller).await?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a message id")))?;
    let db = state.store.db.clone();
    let (stored, newly) = run_blocking(move || db.mark_read(account.id, id)).await??;
    if newly {
        social::receipt(&state, &stored, ReceiptState::Read).await?;
    }
    Ok(Json(stored.message))
}

// ---- wishes ------------------------------------------------------------------------------------

/// Add a wish (a standing search).
///
/// `POST /api/v1/wishes`: a standing search. What matches now is answered once and taken as
/// reported; later matches come as `wish_hit` events, the moment their list is committed.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::WISHES,
    tag = "social",
    request_body = peerdex_shared::social::WishRequest,
    responses((status = 201, description = "The wish stands; matches listed from now on are pushed.", body = peerdex_shared::social::WishCreated), ApiErrors),
    security(("account" = []))
)]
pub async fn add_wish(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<peerdex_shared::social::WishCreated>), ApiError> {
    let request: peerdex_shared::social::WishRequest = json_body(body)?;
    let account = member(&state, &caller).await?;
    let scope = caller.scope(&state, "search").await?;
    let filters = super::search_filters(
        &state.config.search,
        &request.query,
        request.ext.as_deref(),
        request.kind.as_deref(),
        request.min_size,
        request.max_size,
        crate::index::MediaFilters::default(),
    )?;
    let broad = state.config.social.max_wish_matches;
    let spec = filters.spec(broad + 1, scope.clone());
    let online = Arc::new(state.presence.snapshot());
    let search_request = crate::search::SearchRequest {
        spec,
        offset: 0,
        limit: 20,
        max_sources: state.config.search.max_sources,
    };
    let state2 = state.clone();
    let page = run_blocking(move || {
        let viewer = caller.viewer(&state2, &scope);
        crate::search::search(
            &state2.store.db,
            &state2.store.index,
            online,
            viewer,
            &search_request,
        )
    })
    .await??;
    if page.matched.len() > broad {
        return Err(ApiError::bad_request(format!(
            "this wish matches more than {broad} contents already (social.max_wish_matches); \
             make it narrower"
        )));
    }
    let row = crate::db::WishRow {
        id: 0,
        account: account.id,
        query: request.query.clone(),
        ext: filters.ext.clone(),
        kind: filters.kind.map(|k| k.as_str().to_owned()),
        min_size: request.min_size,
        max_size: request.max_size,
        auto_download: request.auto_download,
        created_at: 0,
    };
    let db = state.store.db.clone();
    let most = state.config.social.max_wishes_per_account;
    let matched = page.matched.clone();
    let row = run_blocking(move || db.create_wish(&row, &matched, most)).await??;
    let limits = crate::query::QueryLimits {
        max_query_bytes: state.config.search.max_query_bytes,
        max_terms: state.config.search.max_query_terms,
    };
    let wish = peerdex_shared::social::Wish {
        id: row.id.max(0) as u64,
        query: row.query.clone(),
        ext: row.ext.clone(),
        kind: row.kind.clone(),
        min_size: row.min_size,
        max_size: row.max_size,
        auto_download: row.auto_download,
        created_at: row.created_at.max(0) as u64,
        hits: page.matched.len() as u64,
    };
    if let Some(standing) = crate::wishes::StandingWish::new(row, &limits) {
        let index = &state.store.index;
        state
            .wishes
            .insert(standing, &|key| index.docs_with_prefix(key));
    }
    Ok((
        StatusCode::CREATED,
        Json(peerdex_shared::social::WishCreated {
            wish,
            matches: page.hits,
            total: page.matched.len() as u64,
        }),
    ))
}

/// List wishes.
///
/// `GET /api/v1/wishes`.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::WISHES,
    tag = "social",
    responses((status = 200, description = "The caller's wishes.", body = Vec<peerdex_shared::social::Wish>), ApiErrors),
    security(("account" = []))
)]
pub async fn wishes(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<peerdex_shared::social::Wish>>, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    Ok(Json(run_blocking(move || db.wishes_of(account.id)).await??))
}

/// Remove a wish.
///
/// `DELETE /api/v1/wishes/{id}`.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::WISH,
    tag = "social",
    params(("id" = String, Path, description = "The wish's id.")),
    responses((status = 204, description = "The wish is gone."), ApiErrors),
    security(("account" = []))
)]
pub async fn remove_wish(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = member(&state, &caller).await?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a wish id")))?;
    let db = state.store.db.clone();
    run_blocking(move || db.delete_wish(account.id, id)).await??;
    state.wishes.remove(i64::try_from(id).unwrap_or(-1));
    Ok(StatusCode::NO_CONTENT)
}

// ---- rooms -------------------------------------------------------------------------------------

/// Tells `members` what happened in `room` (live events).
async fn tell_room(
    state: &Arc<AppState>,
    members: Vec<crate::db::AccountRef>,
    event: Event,
) -> Result<(), ApiError> {
    notify_each(state, members, &event).await;
    Ok(())
}

/// Tells each of `accounts` (best effort: one that fails is logged, the others still get it).
async fn notify_each(state: &Arc<AppState>, accounts: Vec<crate::db::AccountRef>, event: &Event) {
    for account in accounts {
        if let Err(e) = notify(state, account, event.clone()).await {
            tracing::warn!(error = %e.body.error, "an event was not sent");
        }
    }
}

fn room_event(room: &str, what: &str, name: &str) -> Event {
    Event::Room {
        room: room.to_string(),
        what: what.to_string(),
        name: name.to_string(),
        line: None,
    }
}

fn checked_room_name(name: &str) -> Result<(), ApiError> {
    peerdex_shared::validate::validate_nickname(name)
        .map_err(|e| ApiError::bad_request(format!("room name {e}")))
}

/// `POST /api/v1/rooms/{room}/join` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// For a new room: `public` (default), `private` or `group:NAME`.
    #[serde(default)]
    pub access: Option<String>,
}

/// List rooms.
///
/// `GET /api/v1/rooms`: the rooms the account may see.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::ROOMS,
    tag = "social",
    responses((status = 200, description = "The rooms the caller may see.", body = Vec<peerdex_shared::social::Room>), ApiErrors),
    security(("account" = []))
)]
pub async fn rooms(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<peerdex_shared::social::Room>>, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    Ok(Json(run_blocking(move || db.rooms_for(account.id)).await??))
}

/// Join or open a room.
///
/// `POST /api/v1/rooms/{room}/join`: joins (or opens) a room; answers its last lines.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ROOM_JOIN,
    tag = "social",
    params(("room" = String, Path, description = "The room's name.")),
    request_body(content = Option<JoinRequest>, description = "Optional: an empty body joins with the defaults"),
    responses((status = 200, description = "Joined: the room's last lines.", body = peerdex_shared::social::JoinedRoom), ApiErrors),
    security(("account" = []))
)]
pub async fn join_room(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<peerdex_shared::social::JoinedRoom>, ApiError> {
    let request: JoinRequest = match body {
        Ok(bytes) if bytes.is_empty() => JoinRequest::default(),
        other => json_body(other)?,
    };
    let account = member(&state, &caller).await?;
    checked_room_name(&name)?;
    let access = match request.access.as_deref() {
        None => None,
        Some(text) => Some(crate::db::RoomAccess::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid room access {text:?}; use public, private or group:NAME"
            ))
        })?),
    };
    let db = state.store.db.clone();
    let history = state.config.social.room_history;
    let me = account.id;
    let room_name = name.clone();
    let (room, members, lines) =
        run_blocking(move || db.join_room(me, &room_name, access, history)).await??;
    let others: Vec<_> = members.into_iter().filter(|m| *m != me).collect();
    tell_room(
        &state,
        others,
        room_event(&room.name, "join", &account.name),
    )
    .await?;
    let db = state.store.db.clone();
    let listed = run_blocking(move || db.rooms_for(me)).await??;
    let room = listed
        .into_iter()
        .find(|r| r.name == room.name)
        .ok_or_else(|| ApiError::not_found(format!("no room named {name:?}")))?;
    Ok(Json(peerdex_shared::social::JoinedRoom {
        room,
        history: lines,
    }))
}

/// Leave a room.
///
/// `POST /api/v1/rooms/{room}/leave`.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ROOM_LEAVE,
    tag = "social",
    params(("room" = String, Path, description = "The room's name.")),
    responses((status = 204, description = "Left."), ApiErrors),
    security(("account" = []))
)]
pub async fn leave_room(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    let me = account.id;
    let (room, members) = run_blocking(move || db.leave_room(me, &name)).await??;
    tell_room(
        &state,
        members,
        room_event(&room.name, "leave", &account.name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/rooms/{room}/lines` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SayRequest {
    /// The line.
    pub body: String,
}

/// Say a line in a room.
///
/// `POST /api/v1/rooms/{room}/lines`: says a line; every member's stream gets it.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ROOM_LINES,
    tag = "social",
    params(("room" = String, Path, description = "The room's name.")),
    request_body = SayRequest,
    responses((status = 201, description = "The line, sent to the room's members.", body = peerdex_shared::social::RoomLine), ApiErrors),
    security(("account" = []))
)]
pub async fn say(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<peerdex_shared::social::RoomLine>), ApiError> {
    let request: SayRequest = json_body(body)?;
    let account = member(&state, &caller).await?;
    check_text(&state, &account, &request.body)?;
    take_token(
        &state.guards.room_lines,
        account.id,
        &format!(
            "too many lines: at most {} a minute (social.room_lines_per_minute)",
            state.config.social.room_lines_per_minute
        ),
    )?;
    let db = state.store.db.clone();
    let history = state.config.social.room_history;
    let me = account.id;
    let (room, line, members) =
        run_blocking(move || db.say_in_room(me, &name, &request.body, history)).await??;
    tell_room(
        &state,
        members,
        Event::Room {
            room: room.name.clone(),
            what: "line".into(),
            name: account.name.clone(),
            line: Some(line.clone()),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(line)))
}

/// `GET /api/v1/rooms/{room}/lines` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// At most this many, the newest (default and most: `social.room_history`).
    pub limit: Option<u32>,
}

/// A room's last lines.
///
/// `GET /api/v1/rooms/{room}/lines`: the last lines, oldest first (members only).
#[utoipa::path(
    get,
    path = peerdex_shared::routes::ROOM_LINES,
    tag = "social",
    params(("room" = String, Path, description = "The room's name."), LogQuery),
    responses((status = 200, description = "The room's newest lines, oldest first.", body = Vec<peerdex_shared::social::RoomLine>), ApiErrors),
    security(("account" = []))
)]
pub async fn room_log(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> Result<Json<Vec<peerdex_shared::social::RoomLine>>, ApiError> {
    let account = member(&state, &caller).await?;
    let most = state.config.social.room_history;
    let limit = query.limit.unwrap_or(most).clamp(1, most);
    let db = state.store.db.clone();
    Ok(Json(
        run_blocking(move || db.room_log(account.id, &name, limit)).await??,
    ))
}

/// `POST /api/v1/rooms/{room}/moderate` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModerateRequest {
    /// `invite`, `kick`, `mute`, `unmute` or `op`.
    pub action: String,
    /// The account acted on.
    pub name: String,
    /// For `mute`: `10m`, `1h`, … (default: until unmuted).
    #[serde(default)]
    pub duration: Option<String>,
}

/// Invite, kick, mute or set roles in a room.
///
/// `POST /api/v1/rooms/{room}/moderate`: the owner or an operator invites, kicks, mutes,
/// unmutes, or (the owner) makes an operator.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ROOM_MODERATE,
    tag = "social",
    params(("room" = String, Path, description = "The room's name.")),
    request_body = ModerateRequest,
    responses((status = 204, description = "Done."), ApiErrors),
    security(("account" = []))
)]
pub async fn moderate_room(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: ModerateRequest = json_body(body)?;
    let account = member(&state, &caller).await?;
    let (action, until) = match request.action.as_str() {
        "mute" => (
            "mute",
            Some(super::accounts::mute_until(request.duration.as_deref())?),
        ),
        "unmute" => ("mute", None),
        "invite" | "kick" | "op" => (request.action.as_str(), None),
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action {other:?}; use invite, kick, mute, unmute or op"
            )));
        }
    };
    let action = action.to_string();
    let db = state.store.db.clone();
    let (me, target) = (account.id, request.name.clone());
    let act = action.clone();
    let (room, _, told) =
        run_blocking(move || db.moderate_room(me, &name, &act, &target, until)).await??;
    tell_room(
        &state,
        told,
        room_event(&room.name, &request.action, &request.name),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Refuses a text (message or line) that is muted, too long, empty or holds control characters.
fn check_text(state: &AppState, account: &AccountRow, body: &str) -> Result<(), ApiError> {
    if account.is_muted() {
        let until = account.muted_until.unwrap_or(i64::MAX);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Muted,
            if until == i64::MAX {
                "a moderator muted this account: it may not send messages".to_string()
            } else {
                format!(
                    "a moderator muted this account for {} s more: it may not send messages",
                    (until - crate::db::unix_now()).max(0)
                )
            },
        ));
    }
    let limit = state.config.social.max_message_bytes;
    if body.len() > limit {
        return Err(ApiError::limit(
            "max_message_bytes",
            format!(
                "the text is {} bytes; the limit is {limit} (social.max_message_bytes)",
                body.len()
            ),
        ));
    }
    if body.trim().is_empty() {
        return Err(ApiError::bad_request("the text is empty"));
    }
    if body
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::bad_request(
            "the text holds control characters (only newlines and tabs are allowed)",
        ));
    }
    Ok(())
}

// ---- requests ("ask") --------------------------------------------------------------------------

/// Contents looked at to find the holders of a `holders` request.
const HOLDER_CONTENTS: usize = 1000;

/// Ask contacts or holders for something.
///
/// `POST /api/v1/requests`: asks contacts (depth 1 or 2) or every online holder of matching
/// files, in real time. The answer says how many it reached, never whom.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::REQUESTS,
    tag = "social",
    request_body = peerdex_shared::social::AskRequest,
    responses((status = 201, description = "Asked: contacts (or holders) get a request event.", body = peerdex_shared::social::AskInfo), ApiErrors),
    security(("account" = []))
)]
pub async fn ask(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<peerdex_shared::social::AskInfo>), ApiError> {
    let request: peerdex_shared::social::AskRequest = json_body(body)?;
    let account = member(&state, &caller).await?;
    check_text(&state, &account, &request.text)?;
    let ttl = match request.open_for.as_deref() {
        None => 86_400,
        Some(text) => crate::accounts::parse_duration(text)
            .filter(|s| (60..=30 * 86_400).contains(s))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid duration {text:?}; use 30m, 12h or 7d (1m to 30d)"
                ))
            })?,
    };
    if request.holders.is_some() && request.depth.is_some() {
        return Err(ApiError::bad_request(
            "ask either holders of files (holders) or contacts (depth), not both",
        ));
    }
    let depth = request.depth.unwrap_or(1);
    if !(1..=2).contains(&depth) {
        return Err(ApiError::bad_request(
            "depth is 1 (contacts) or 2 (their contacts too)",
        ));
    }
    if !state.guards.requests.allow(&account.id) {
        return Err(rate_limited(&format!(
            "too many requests: at most {} an hour (social.requests_per_hour)",
            state.config.social.requests_per_hour
        )));
    }
    let recipients = match &request.holders {
        Some(query) => holders_of(&state, &caller, query).await?,
        None => {
            let db = state.store.db.clone();
            let me = account.id;
            run_blocking(move || db.contacts_within(me, depth)).await??
        }
    };
    let db = state.store.db.clone();
    let cap = state.config.social.max_request_recipients;
    let me = account.id;
    let expires_at = crate::db::unix_now().saturating_add(ttl as i64);
    let text = request.text.clone();
    let (info, events) =
        run_blocking(move || db.create_request(me, &text, expires_at, recipients, cap)).await??;
    for (recipient, envelope) in events {
        // Recorded already: a push that fails waits for the recipient's next connection.
        if let Err(e) = social::push(&state, recipient, envelope).await {
            tracing::warn!(error = %e.body.error, "a request waits for its recipient");
        }
    }
    Ok((StatusCode::CREATED, Json(info)))
}

/// The accounts of online peers holding contents that match `query`, among the copies the
/// asker may see (scopes hold: a request never reaches someone through a file the asker could
/// not have found).
async fn holders_of(
    state: &Arc<AppState>,
    caller: &Caller,
    query: &str,
) -> Result<Vec<crate::db::AccountRef>, ApiError> {
    let scope = caller.scope(state, "search").await?;
    let filters = super::search_filters(
        &state.config.search,
        query,
        None,
        None,
        None,
        None,
        Default::default(),
    )?;
    let spec = filters.spec(HOLDER_CONTENTS, scope.clone());
    let online = Arc::new(state.presence.snapshot());
    let state2 = state.clone();
    run_blocking(move || -> Result<Vec<crate::db::AccountRef>, ApiError> {
        use crate::index::OnlineFilter;
        let found = state2.store.index.search(&spec, online.clone())?;
        let contents: Vec<_> = found.groups.iter().map(|g| g.content).collect();
        let owners: std::collections::HashMap<_, _> =
            state2.store.db.linked_devices()?.into_iter().collect();
        let mut accounts = Vec::new();
        for holders in state2.store.db.holders_of(&contents)? {
            for &(peer, _, acl) in &holders.copies {
                if online.contains(peer)
                    && scope.lists(acl)
                    && let Some(account) = owners.get(&peer)
                {
                    accounts.push(*account);
                }
            }
        }
        Ok(accounts)
    })
    .await?
}

/// List requests.
///
/// `GET /api/v1/requests`: your requests, newest first.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::REQUESTS,
    tag = "social",
    responses((status = 200, description = "Open requests the caller made or may answer.", body = Vec<peerdex_shared::social::AskInfo>), ApiErrors),
    security(("account" = []))
)]
pub async fn requests(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<peerdex_shared::social::AskInfo>>, ApiError> {
    let account = member(&state, &caller).await?;
    let db = state.store.db.clone();
    Ok(Json(
        run_blocking(move || db.requests_of(account.id)).await??,
    ))
}

fn request_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a request id")))
}

/// Close a request.
///
/// `DELETE /api/v1/requests/{id}`: closes your request; those it reached are told.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::REQUEST,
    tag = "social",
    params(("id" = String, Path, description = "The request's id.")),
    responses((status = 204, description = "Closed."), ApiErrors),
    security(("account" = []))
)]
pub async fn close_request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let account = member(&state, &caller).await?;
    let id = request_id(&id)?;
    let db = state.store.db.clone();
    let (reached, from) = run_blocking(move || db.close_request(account.id, id)).await??;
    notify_each(&state, reached, &Event::RequestClosed { request: id, from }).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Offer a file for a request.
///
/// `POST /api/v1/requests/{id}/offers`: offers a file you share to the asker, who gets an
/// `offer` event and can download it directly.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::REQUEST_OFFERS,
    tag = "social",
    params(("id" = String, Path, description = "The request's id.")),
    request_body = peerdex_shared::social::OfferRequest,
    responses((status = 201, description = "The asker gets an offer event."), ApiErrors),
    security(("account" = []))
)]
pub async fn offer(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: peerdex_shared::social::OfferRequest = json_body(body)?;
    let account = member(&state, &caller).await?;
    if let Some(note) = &request.note {
        check_text(&state, &account, note)?;
    }
    let id = request_id(&id)?;
    let db = state.store.db.clone();
    let (asker, envelope) =
        run_blocking(move || db.offer(account.id, id, &request.hash, request.note.as_deref()))
            .await??;
    social::push(&state, asker, envelope).await?;
    Ok(StatusCode::CREATED)
}
