//! `/admin`: the administration page for admins and moderators signed in on the pages
//! (PROTOCOL §14): live counts, accounts (disable, enable), invites, groups and their members,
//! bans, the quarantine and the audit log.
//!
//! Every read and every change calls the admin API's own handler with the page's caller, so
//! the page may do exactly what that account may do over the API (moderators: bans and the
//! quarantine; roles and groups are for admins), and every change lands in the audit log the
//! same way. Changes are form posts (from this server's own pages only: the page router checks
//! the origin of every post), each answered with a redirect back.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::body::Bytes;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use peerdex_shared::units::ago;
use serde::Deserialize;

use super::accounts::{self, PageCaller};
use super::pages::{Chrome, chrome, error_page, page};
use super::{ApiError, Caller, reports};
use crate::state::AppState;

/// Audit log entries shown.
const AUDIT_SHOWN: usize = 50;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn since(at: i64) -> String {
    ago(now().saturating_sub(at).max(0) as u64)
}

struct AccountLine {
    name: String,
    role: String,
    groups: String,
    devices: usize,
    disabled: bool,
    actions: String,
}

struct BanLine {
    id: i64,
    what: String,
    until: String,
    reason: String,
}

struct QuarantineLine {
    peer: String,
    nickname: String,
    reason: String,
}

struct AuditLine {
    when: String,
    text: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    query: String,
    chrome: Chrome,
    said: Option<String>,
    invite: Option<String>,
    stats: String,
    accounts: Vec<AccountLine>,
    groups: Vec<(String, String)>,
    bans: Vec<BanLine>,
    quarantine: Vec<QuarantineLine>,
    audit: Vec<AuditLine>,
}

/// What the page says after a change.
#[derive(Deserialize, Default)]
pub struct AdminParams {
    said: Option<String>,
    invite: Option<String>,
}

/// `GET /admin`.
pub async fn admin_page(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    params: Result<Query<AdminParams>, QueryRejection>,
) -> Response {
    let params = params.map(|Query(p)| p).unwrap_or_default();
    let frame = || chrome(&state, &caller);
    let s = || State(state.clone());
    let (accounts, bans, quarantine, audit) = tokio::join!(
        accounts::admin_accounts(s(), caller.clone()),
        accounts::admin_bans(s(), caller.clone()),
        reports::admin_quarantine(s(), caller.clone()),
        accounts::admin_audit(s(), caller.clone()),
    );
    let (accounts, bans, quarantine, audit) = match (accounts, bans, quarantine, audit) {
        (Ok(a), Ok(b), Ok(q), Ok(l)) => (a.0, b.0, q.0, l.0),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return error_page(frame(), String::new(), &e);
        }
    };
    // Groups are for admins only; a moderator's page goes without them.
    let groups = accounts::admin_groups(s(), caller.clone())
        .await
        .map(|g| g.0)
        .unwrap_or_default();
    let state2 = state.clone();
    let stats = match super::run_blocking(move || state2.counts()).await {
        Ok(Ok(c)) => format!(
            "{} people online · {} files ({} distinct) shared by {} peers",
            state.presence.snapshot().count(),
            c.entries,
            c.contents,
            c.peers
        ),
        _ => String::new(),
    };
    let view = AdminPage {
        query: String::new(),
        chrome: frame(),
        said: params.said,
        invite: params.invite,
        stats,
        accounts: accounts
            .iter()
            .map(|a| AccountLine {
                actions: format!("/admin/accounts/{}", super::pages::encoded(&a.name)),
                name: a.name.clone(),
                role: format!("{:?}", a.role).to_lowercase(),
                groups: a.groups.join(", "),
                devices: a.devices.len(),
                disabled: a.disabled,
            })
            .collect(),
        groups: groups
            .iter()
            .map(|g| (g.name.clone(), g.members.join(", ")))
            .collect(),
        bans: bans
            .iter()
            .map(|b| BanLine {
                id: b.id,
                what: format!("{:?} {}", b.kind, b.value).to_lowercase(),
                // Whole units only from two of them on, so a fresh 1h ban reads "60 min left",
                // not "1 h" one second and "59 min" the next.
                until: match b.until.map(|until| until - now()) {
                    Some(left) if left >= 2 * 86_400 => format!("{} days left", left / 86_400),
                    Some(left) if left >= 2 * 3600 => format!("{} h left", left / 3600),
                    Some(left) => format!("{} min left", ((left + 59) / 60).max(1)),
                    None => "permanent".to_owned(),
                },
                reason: b.reason.clone(),
            })
            .collect(),
        quarantine: quarantine
            .iter()
            .map(|q| QuarantineLine {
                peer: q.peer.to_string(),
                nickname: q.nickname.clone(),
                reason: format!(
                    "{} ({} reporters, {})",
                    q.reason,
                    q.reporters,
                    since(q.since)
                ),
            })
            .collect(),
        audit: audit
            .iter()
            .rev()
            .take(AUDIT_SHOWN)
            .map(|row| AuditLine {
                when: since(row.at),
                text: format!(
                    "{} {} {}{}",
                    row.actor,
                    row.action,
                    row.target,
                    if row.reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", row.reason)
                    }
                ),
            })
            .collect(),
    };
    page(StatusCode::OK, view.render())
}

/// A change's outcome as the answer: back to the page saying `said`, or the error as a page.
fn done(state: &AppState, caller: &Caller, outcome: Result<(), ApiError>, said: &str) -> Response {
    match outcome {
        Ok(()) => {
            Redirect::to(&format!("/admin?said={}", super::pages::encoded(said))).into_response()
        }
        Err(e) => error_page(chrome(state, caller), String::new(), &e),
    }
}

fn json(value: serde_json::Value) -> Result<Bytes, axum::extract::rejection::BytesRejection> {
    Ok(Bytes::from(value.to_string()))
}

/// `POST /admin/accounts/{name}/{disable|enable}`.
pub async fn account_action(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        other => {
            return done(
                &state,
                &caller,
                Err(ApiError::bad_request(format!(
                    "{other:?} is not disable or enable"
                ))),
                "",
            );
        }
    };
    let outcome = accounts::admin_account(
        State(state.clone()),
        caller.clone(),
        super::ApiPath(name.clone()),
        json(serde_json::json!({ "disabled": disabled })),
    )
    .await
    .map(|_| ());
    done(&state, &caller, outcome, &format!("{name}: {action}d"))
}

/// The invite form.
#[derive(Deserialize)]
pub struct InviteForm {
    uses: Option<String>,
    expires: Option<String>,
    group: Option<String>,
}

/// `POST /admin/invites` (`uses`, `expires`, `group`): makes an invite and shows its code.
pub async fn create_invite(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    form: Result<Form<InviteForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return done(
            &state,
            &caller,
            Err(ApiError::bad_request(
                "an invite takes uses, expires, group",
            )),
            "",
        );
    };
    let uses = match form
        .uses
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        None => 1,
        Some(text) => match text.parse::<u32>() {
            Ok(uses) => uses,
            Err(_) => {
                return done(
                    &state,
                    &caller,
                    Err(ApiError::bad_request(format!(
                        "uses {text:?} is not a number"
                    ))),
                    "",
                );
            }
        },
    };
    let mut body = serde_json::json!({ "uses": uses });
    if let Some(expires) = form
        .expires
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
    {
        body["expires"] = expires.into();
    }
    if let Some(group) = form
        .group
        .map(|g| g.trim().to_owned())
        .filter(|g| !g.is_empty())
    {
        body["groups"] = serde_json::json!([group]);
    }
    match accounts::create_invite(State(state.clone()), caller.clone(), json(body)).await {
        Ok((_, invite)) => Redirect::to(&format!(
            "/admin?invite={}",
            super::pages::encoded(&invite.0.code)
        ))
        .into_response(),
        Err(e) => error_page(chrome(&state, &caller), String::new(), &e),
    }
}

/// A form with one name.
#[derive(Deserialize)]
pub struct NameForm {
    name: String,
}

/// `POST /admin/groups` (`name`): a new group.
pub async fn create_group(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    form: Result<Form<NameForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return done(
            &state,
            &caller,
            Err(ApiError::bad_request("a group needs a name")),
            "",
        );
    };
    let name = form.name.trim().to_owned();
    let outcome = accounts::admin_create_group(
        State(state.clone()),
        caller.clone(),
        json(serde_json::json!({ "name": name })),
    )
    .await
    .map(|_| ());
    done(&state, &caller, outcome, &format!("group {name} made"))
}

/// `POST /admin/groups/{group}/members` (`name`): adds an account to a group.
pub async fn add_member(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    Path(group): Path<String>,
    form: Result<Form<NameForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return done(
            &state,
            &caller,
            Err(ApiError::bad_request("say whom to add")),
            "",
        );
    };
    let name = form.name.trim().to_owned();
    let outcome = accounts::admin_add_group_member(
        State(state.clone()),
        caller.clone(),
        super::ApiPath((group.clone(), name.clone())),
    )
    .await
    .map(|_| ());
    done(
        &state,
        &caller,
        outcome,
        &format!("{name} added to {group}"),
    )
}

/// The ban form.
#[derive(Deserialize)]
pub struct BanForm {
    kind: String,
    value: String,
    duration: Option<String>,
    reason: Option<String>,
}

/// `POST /admin/bans` (`kind`, `value`, `duration`, `reason`).
pub async fn add_ban(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    form: Result<Form<BanForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return done(
            &state,
            &caller,
            Err(ApiError::bad_request("a ban needs kind and value")),
            "",
        );
    };
    let mut body = serde_json::json!({
        "kind": form.kind.trim(),
        "value": form.value.trim(),
        "reason": form.reason.unwrap_or_default().trim(),
    });
    if let Some(duration) = form
        .duration
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
    {
        body["duration"] = duration.into();
    }
    let outcome = accounts::admin_add_ban(State(state.clone()), caller.clone(), json(body))
        .await
        .map(|_| ());
    done(
        &state,
        &caller,
        outcome,
        &format!("{} {} banned", form.kind.trim(), form.value.trim()),
    )
}

/// `POST /admin/bans/{id}/remove`.
pub async fn remove_ban(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
) -> Response {
    let outcome =
        accounts::admin_remove_ban(State(state.clone()), caller.clone(), super::ApiPath(id))
            .await
            .map(|_| ());
    done(&state, &caller, outcome, &format!("ban {id} lifted"))
}

/// `POST /admin/quarantine/{peer}/clear`.
pub async fn clear_quarantine(
    State(state): State<Arc<AppState>>,
    PageCaller(caller): PageCaller,
    Path(peer): Path<String>,
) -> Response {
    let outcome = reports::admin_clear_quarantine(
        State(state.clone()),
        caller.clone(),
        super::ApiPath(peer.clone()),
    )
    .await
    .map(|_| ());
    done(&state, &caller, outcome, "quarantine cleared")
}
