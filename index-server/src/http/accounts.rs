//! Accounts over HTTP (PROTOCOL §9): who a request comes from ([`Caller`]), creating accounts,
//! signing in and out, invites, and the admin routes.

use super::ApiPath;
use super::openapi::ApiErrors;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use peerdex_shared::PeerId;
use peerdex_shared::api::{
    AccountInfo, CreateAccountRequest, ErrorCode, LoginRequest, LoginResponse, Role,
};
use peerdex_shared::identity::login_message;
use peerdex_shared::validate::{nickname_key, validate_nickname};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{ApiError, client_ip, json_body, rate_limited, run_blocking};
use crate::accounts::{
    decoy_hash, hash_password, new_secret, parse_duration, secret_hash, verify_password,
};
use crate::config::Registration;
use crate::db::{AccountError, AccountRow, AuditRow, GroupRow};
use crate::scope::Scope;
use crate::search::{GrantSigner, Viewer};
use crate::state::AppState;

/// Who sent a request: a guest, or an account and the device its token was made on.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The account (`None`: a guest).
    pub account: Option<AccountRow>,
    /// The device the credentials belong to: the key linked at login, or the peer whose
    /// session token was sent.
    pub device: Option<PeerId>,
    /// The bearer token's hash, when it is an account token (for logout).
    pub(crate) token_hash: Option<[u8; 32]>,
    /// What the credentials may do: `all` (a sign-in, a peer session, a guest's public reads)
    /// or an API key's comma list of [`API_KEY_SCOPES`].
    scopes: String,
}

/// What an API key may be allowed: read (whoami, browse), search, download (sources, reverse
/// connections, relay), social (invites), admin (the admin routes).
pub const API_KEY_SCOPES: [&str; 5] = ["read", "search", "download", "social", "admin"];

/// The bearer token of a request, if it sent one.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(peerdex_shared::routes::bearer_token)
}

/// Whether credentials in this request crossed the network in clear: plain HTTP (neither our
/// TLS nor a trusted proxy's `X-Forwarded-Proto: https`) from a client off loopback, and the
/// operator did not allow that (`tls.allow_plain_auth`).
fn sent_in_clear(state: &AppState, parts: &Parts) -> bool {
    if state.config.tls.allow_plain_auth || over_https(state, parts) {
        return false;
    }
    let Some(ConnectInfo(remote)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return false;
    };
    !client_ip(state, *remote, &parts.headers).is_loopback()
}

/// Refuses a request that would carry a password in clear (what [`CredentialsChannel`] does,
/// for handlers that answer with a page).
pub(crate) fn refuse_in_clear(state: &AppState, parts: &Parts) -> Result<(), ApiError> {
    if sent_in_clear(state, parts) {
        Err(insecure_transport())
    } else {
        Ok(())
    }
}

/// Whether the request came over HTTPS: our own TLS, or a trusted proxy's
/// `X-Forwarded-Proto: https`.
pub(crate) fn over_https(state: &AppState, parts: &Parts) -> bool {
    if parts
        .extensions
        .get::<crate::server::ConnectionSecurity>()
        .is_some_and(|s| s.tls)
    {
        return true;
    }
    let Some(ConnectInfo(remote)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return false;
    };
    state.is_trusted_proxy(remote.ip().to_canonical())
        && parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn insecure_transport() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::InsecureTransport,
        "this server takes passwords and account tokens only over HTTPS (or from its own \
         host): use its https:// address, or its operator sets tls.allow_plain_auth",
    )
}

/// A request that may carry a password: refused when it came in clear from off loopback.
pub struct CredentialsChannel;

impl FromRequestParts<Arc<AppState>> for CredentialsChannel {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        refuse_in_clear(state, parts)?;
        Ok(CredentialsChannel)
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    /// No credentials: a guest. Credentials that are not valid are refused, never taken for a
    /// guest: a client whose token was revoked must learn it.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).map(str::to_owned);
        Caller::of_token(state, parts, token.as_deref()).await
    }
}

/// The cookie the server's pages keep an account's token in (set by `POST /signin`).
pub const PAGE_COOKIE: &str = "peerdex_session";

/// The value of the pages' session cookie in `Cookie`.
pub(crate) fn page_cookie(headers: &HeaderMap) -> Option<&str> {
    let values = headers.get_all(header::COOKIE).iter();
    peerdex_shared::web::cookie(values.filter_map(|v| v.to_str().ok()), PAGE_COOKIE)
        .filter(|value| !value.is_empty())
}

/// Who views a page: the account whose token the session cookie holds, else a guest. A cookie
/// that no longer names a session (revoked, expired) is a guest, not an error: the page then
/// offers to sign in again.
pub struct PageCaller(pub Caller);

impl FromRequestParts<Arc<AppState>> for PageCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let token = page_cookie(&parts.headers).map(str::to_owned);
        match Caller::of_token(state, parts, token.as_deref()).await {
            Ok(caller) => Ok(PageCaller(caller)),
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                Ok(PageCaller(Caller::of_token(state, parts, None).await?))
            }
            Err(e) => Err(e),
        }
    }
}

impl Caller {
    /// A guest: no account, public reads.
    pub(crate) fn guest() -> Caller {
        Caller {
            scopes: "all".into(),
            ..Caller::default()
        }
    }

    /// The caller a request with `token` (or none: a guest) stands for.
    async fn of_token(
        state: &Arc<AppState>,
        parts: &Parts,
        token: Option<&str>,
    ) -> Result<Caller, ApiError> {
        let Some(token) = token else {
            return Ok(Caller::guest());
        };
        let hash = secret_hash(token);
        let db = state.store.db.clone();
        let caller = run_blocking(move || -> Result<Option<Caller>, crate::db::DbError> {
            if let Some(owner) = db.token_owner(&hash)? {
                return Ok(Some(Caller {
                    account: Some(owner.account),
                    device: owner.device,
                    token_hash: Some(hash),
                    scopes: owner.scopes,
                }));
            }
            // A peer's session token: the peer, and the account its key is linked to.
            let Some(peer) = db.peer_by_session(&hash)? else {
                return Ok(None);
            };
            Ok(Some(Caller {
                account: db.account_of_device(&peer.key)?,
                device: Some(peer.key),
                token_hash: None,
                scopes: "all".into(),
            }))
        })
        .await??
        .ok_or_else(|| {
            ApiError::unauthorized("unknown or revoked token; sign in again (peerdex login)")
        })?;
        if caller.account.as_ref().is_some_and(|a| a.disabled) {
            return Err(ApiError::unauthorized("this account is disabled"));
        }
        // An anonymous peer's session token only changes its own list; one that stands for an
        // account must not travel in clear.
        if caller.account.is_some() && sent_in_clear(state, parts) {
            return Err(insecure_transport());
        }
        Ok(caller)
    }
}

impl Caller {
    /// The viewer's scope for `what` it asks (`search`, `read`, `download`), refusing guests
    /// where the server takes none and API keys not allowed `what`.
    pub async fn scope(&self, state: &Arc<AppState>, what: &str) -> Result<Arc<Scope>, ApiError> {
        self.require_scope(what)?;
        if self.account.is_none() && !state.config.accounts.guests {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::SignInRequired,
                "this server serves signed-in accounts only; sign in with peerdex login",
            ));
        }
        let (db, account) = (state.store.db.clone(), self.account.clone());
        Ok(run_blocking(move || db.scope_of(account.as_ref())).await??)
    }

    /// The viewer for results: its scope, and grants made out to its device.
    pub fn viewer<'a>(&self, state: &'a AppState, scope: &'a Scope) -> Viewer<'a> {
        Viewer {
            scope,
            grants: self.device.map(|device| GrantSigner {
                key: &state.firewall.server_key,
                device,
                expires_at: super::unix_now_secs() + state.config.accounts.grant_ttl_secs,
            }),
        }
    }

    /// Refuses the request unless the credentials may do `what` (one of [`API_KEY_SCOPES`]).
    pub fn require_scope(&self, what: &str) -> Result<(), ApiError> {
        if self.scopes == "all" || self.scopes.split(',').any(|s| s == what) {
            Ok(())
        } else {
            Err(forbidden(&format!(
                "this API key may not {what}; make one with --scope {what}"
            )))
        }
    }

    /// The signed-in account, refusing guests.
    pub(crate) fn require_account(&self) -> Result<&AccountRow, ApiError> {
        self.account
            .as_ref()
            .ok_or_else(|| ApiError::unauthorized("sign in first (peerdex login)"))
    }

    /// The account, if it is an admin (or, with `moderator_ok`, a moderator).
    pub(crate) fn require_role(&self, moderator_ok: bool) -> Result<&AccountRow, ApiError> {
        self.require_scope("admin")?;
        let account = self.require_account()?;
        match account.role {
            Role::Admin => Ok(account),
            Role::Moderator if moderator_ok => Ok(account),
            _ => Err(forbidden("this needs an admin account")),
        }
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::NameTaken(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::NameTaken, e.to_string())
            }
            AccountError::BadInvite => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InviteRequired,
                e.to_string(),
            ),
            AccountError::NoAccount(_) | AccountError::NoGroup(_) => {
                ApiError::not_found(e.to_string())
            }
            AccountError::GroupExists(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::NameTaken, e.to_string())
            }
            AccountError::Db(e) => e.into(),
        }
    }
}

/// Hashes on a blocking thread, a bounded number at once (each takes the configured memory).
async fn hash_blocking(state: &Arc<AppState>, password: String) -> Result<String, ApiError> {
    let _slot = state
        .guards
        .password_slots
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    let config = state.config.accounts.clone();
    run_blocking(move || hash_password(&config, &password))
        .await?
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn verify_blocking(
    state: &Arc<AppState>,
    phc: String,
    password: String,
) -> Result<bool, ApiError> {
    let _slot = state
        .guards
        .password_slots
        .acquire()
        .await
        .map_err(ApiError::internal)?;
    run_blocking(move || verify_password(&phc, &password)).await
}

/// Create an account.
///
/// `POST /api/v1/accounts`.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ACCOUNTS,
    tag = "accounts",
    request_body = CreateAccountRequest,
    responses((status = 201, description = "The account exists.", body = AccountInfo), ApiErrors)
)]
pub async fn create_account(
    _channel: CredentialsChannel,
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AccountInfo>), ApiError> {
    let request: CreateAccountRequest = json_body(body)?;
    validate_nickname(&request.name)
        .map_err(|e| ApiError::bad_request(format!("account name {e}")))?;
    let ip = client_ip(&state, remote, &headers);
    refuse_banned(
        &state,
        crate::db::BanSubject {
            account: Some(request.name.clone()),
            ip: Some(ip),
            nick: Some(request.name.clone()),
            peer: None,
        },
    )
    .await?;
    match state.config.accounts.registration {
        Registration::Closed => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::RegistrationClosed,
                "this server takes no new accounts",
            ));
        }
        Registration::Invite if request.invite.is_none() => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::InviteRequired,
                "this server takes new accounts by invite only; pass --invite CODE",
            ));
        }
        _ => {}
    }
    let ip = client_ip(&state, remote, &headers);
    if !state.guards.new_accounts.allow(&ip) {
        return Err(rate_limited(
            "too many new accounts from this address; try again later",
        ));
    }
    let phc = hash_blocking(&state, request.password).await?;
    let invite = request.invite.as_deref().map(secret_hash);
    let (db, name, ip_text) = (state.store.db.clone(), request.name, ip.to_string());
    let (account, info) = run_blocking(move || -> Result<_, ApiError> {
        let account = db.create_account(&name, &phc, &ip_text, invite.as_ref())?;
        let info = db.account_info(&account)?;
        Ok((account, info))
    })
    .await??;
    info!(account = %account.name, %ip, "account created");
    Ok((StatusCode::CREATED, Json(info)))
}

/// Sign in (and link this device).
///
/// `POST /api/v1/login`.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::LOGIN,
    tag = "accounts",
    request_body = LoginRequest,
    responses((status = 200, description = "Signed in: an account token (and the device linked, with a proof).", body = LoginResponse), ApiErrors)
)]
pub async fn login(
    _channel: CredentialsChannel,
    State(state): State<Arc<AppState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<LoginResponse>, ApiError> {
    let request: LoginRequest = json_body(body)?;
    let ip = client_ip(&state, remote, &headers);
    sign_in(&state, ip, request).await.map(Json)
}

/// Checks a name and password (and a device proof, when given) and makes a session token:
/// what `POST /api/v1/login` and the pages' sign-in form do. Failed attempts count against
/// the name and the address alike.
pub(crate) async fn sign_in(
    state: &Arc<AppState>,
    ip: std::net::IpAddr,
    request: LoginRequest,
) -> Result<LoginResponse, ApiError> {
    let key = nickname_key(&request.name);
    let guards = &state.guards;
    if let Some(wait) = guards
        .failed_logins_by_name
        .exhausted(&key)
        .or_else(|| guards.failed_logins_by_ip.exhausted(&ip))
    {
        let mut error = rate_limited("too many failed sign-ins; wait before trying again");
        error.retry_after = Some(u16::try_from(wait.max(1)).unwrap_or(u16::MAX));
        return Err(error);
    }
    let db = state.store.db.clone();
    let name = request.name.clone();
    let account = run_blocking(move || db.account_by_name(&name)).await??;
    let phc = match &account {
        Some(a) => a.pass_phc.clone(),
        None => decoy_hash(&state.config.accounts),
    };
    let matches = verify_blocking(state, phc, request.password).await?;
    let account = match account {
        Some(account) if matches && !account.disabled => account,
        other => {
            guards.failed_logins_by_name.allow(&key);
            guards.failed_logins_by_ip.allow(&ip);
            info!(name = %request.name, %ip, "failed sign-in");
            return Err(if other.is_some_and(|a| a.disabled && matches) {
                ApiError::unauthorized("this account is disabled")
            } else {
                ApiError::unauthorized("wrong account name or password")
            });
        }
    };
    refuse_banned(
        state,
        crate::db::BanSubject {
            account: Some(account.name.clone()),
            peer: request.device.as_ref().map(|d| d.peer_id),
            ip: Some(ip),
            nick: None,
        },
    )
    .await?;
    let device = match &request.device {
        Some(proof) => {
            if !guards.nonces.consume(&proof.nonce) {
                return Err(ApiError::unauthorized(
                    "unknown, used or expired nonce; ask for a new challenge",
                ));
            }
            proof
                .peer_id
                .verify(
                    &login_message(&proof.nonce, &proof.peer_id, &account.name),
                    &proof.signature,
                )
                .map_err(|e| ApiError::unauthorized(format!("device proof refused: {e}")))?;
            Some(proof.peer_id)
        }
        None => None,
    };
    let (secret, hash) = new_secret("pdxs_").ok_or_else(|| ApiError::internal("no randomness"))?;
    let db = state.store.db.clone();
    let max_devices = state.config.accounts.max_devices_per_account as usize;
    let info = run_blocking(move || -> Result<AccountInfo, ApiError> {
        if let Some(device) = &device {
            let devices = db.devices_of(account.id)?;
            if !devices.contains(device) && devices.len() >= max_devices {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::LimitExceeded,
                    format!(
                        "this account has {} devices, the most allowed (max_devices_per_account)",
                        devices.len()
                    ),
                ));
            }
            db.link_device(account.id, device)?;
        }
        db.insert_token(&hash, account.id, device.as_ref(), "session", "all")?;
        Ok(db.account_info(&account)?)
    })
    .await??;
    info!(account = %info.name, %ip, device = ?request.device.as_ref().map(|d| d.peer_id.fmt_short()), "signed in");
    Ok(LoginResponse {
        token: secret,
        account: info,
    })
}

/// Sign out (revoke this token).
///
/// `DELETE /api/v1/login`: revokes the token the request carries.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::LOGIN,
    tag = "accounts",
    responses((status = 204, description = "The token is revoked."), ApiErrors),
    security(("account" = []))
)]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    let hash = caller
        .token_hash
        .ok_or_else(|| ApiError::unauthorized("send the account token to revoke"))?;
    let db = state.store.db.clone();
    run_blocking(move || db.revoke_token(&hash)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// The account signed in.
///
/// `GET /api/v1/whoami`.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::WHOAMI,
    tag = "accounts",
    responses((status = 200, description = "The caller's account.", body = AccountInfo), ApiErrors),
    security(("account" = []))
)]
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<AccountInfo>, ApiError> {
    caller.require_scope("read")?;
    let account = caller.require_account()?.clone();
    let db = state.store.db.clone();
    Ok(Json(
        run_blocking(move || db.account_info(&account)).await??,
    ))
}

/// `POST /api/v1/invites` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    /// Accounts the invite can create (default 1).
    #[serde(default)]
    pub uses: Option<u32>,
    /// How long it is valid, such as `7d` (default: no expiry for admins, 7 days for members).
    #[serde(default)]
    pub expires: Option<String>,
    /// Groups the new accounts join (admins only).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `POST /api/v1/invites` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InviteResponse {
    /// The code, shown once.
    pub code: String,
    /// Uses.
    pub uses: u32,
    /// Unix time it expires, if it does.
    pub expires_at: Option<i64>,
    /// Groups joined with it.
    pub groups: Vec<String>,
}

/// The Unix time `text` (`30m`, `12h`, `7d`, `2w`) from now: when an invite or a ban ends.
fn ends_after(text: &str) -> Result<i64, ApiError> {
    let secs = parse_duration(text).ok_or_else(|| {
        ApiError::bad_request(format!("invalid duration {text:?}; use 30m, 12h, 7d or 2w"))
    })?;
    Ok(crate::db::unix_now().saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)))
}

/// Makes an invite for `actor` (the operator CLI and the API share it).
pub fn make_invite(
    db: &crate::db::Db,
    actor: &str,
    uses: u32,
    expires: Option<&str>,
    groups: Vec<String>,
) -> Result<InviteResponse, ApiError> {
    if uses == 0 || uses > 10_000 {
        return Err(ApiError::bad_request("uses must be between 1 and 10000"));
    }
    let expires_at = expires.map(ends_after).transpose()?;
    let (code, hash) = new_secret("pdxi_").ok_or_else(|| ApiError::internal("no randomness"))?;
    db.create_invite(actor, &hash, uses, expires_at, &groups)?;
    Ok(InviteResponse {
        code,
        uses,
        expires_at,
        groups,
    })
}

/// Make an invite.
///
/// `POST /api/v1/invites`: admins make any invite; members make single-use invites without
/// groups, within `invites_per_member` live ones.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::INVITES,
    tag = "accounts",
    request_body = InviteRequest,
    responses((status = 201, description = "The invite's code.", body = InviteResponse), ApiErrors),
    security(("account" = []))
)]
pub async fn create_invite(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<InviteResponse>), ApiError> {
    let request: InviteRequest = json_body(body)?;
    caller.require_scope("social")?;
    let account = caller.require_account()?.clone();
    let quota = state.config.accounts.invites_per_member;
    let db = state.store.db.clone();
    let response = run_blocking(move || -> Result<InviteResponse, ApiError> {
        if account.role != Role::Admin {
            if !request.groups.is_empty() || request.uses.unwrap_or(1) != 1 {
                return Err(forbidden(
                    "members make single-use invites without groups; ask an admin",
                ));
            }
            if db.live_invites_by(&account.name)? >= u64::from(quota) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::LimitExceeded,
                    format!("you have {quota} live invites, the most allowed (invites_per_member)"),
                ));
            }
        }
        let expires = request
            .expires
            .or_else(|| (account.role != Role::Admin).then(|| "7d".to_string()));
        make_invite(
            &db,
            &account.name,
            request.uses.unwrap_or(1),
            expires.as_deref(),
            request.groups,
        )
    })
    .await??;
    Ok((StatusCode::CREATED, Json(response)))
}

/// List accounts.
///
/// `GET /api/v1/admin/accounts`.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::ADMIN_ACCOUNTS,
    tag = "admin",
    responses((status = 200, description = "Every account.", body = Vec<AccountInfo>), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_accounts(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<AccountInfo>>, ApiError> {
    caller.require_role(true)?;
    let db = state.store.db.clone();
    let infos = run_blocking(move || -> Result<Vec<AccountInfo>, ApiError> {
        let mut out = Vec::new();
        for account in db.accounts()? {
            out.push(db.account_info(&account)?);
        }
        Ok(out)
    })
    .await??;
    Ok(Json(infos))
}

/// `POST /api/v1/admin/accounts/{name}` body: what to change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    /// Disable (`true`) or enable (`false`).
    #[serde(default)]
    pub disabled: Option<bool>,
    /// New role (admins only).
    #[serde(default)]
    pub role: Option<Role>,
    /// Mute for a duration (`30m`, `12h`, `7d`, `permanent`), or `off` to lift a mute
    /// (moderators may).
    #[serde(default)]
    pub mute: Option<String>,
    /// Why (kept in the audit log).
    #[serde(default)]
    pub reason: String,
}

/// When a mute of `duration` ends (`None` or `permanent`: never, stored as `i64::MAX`).
pub fn mute_until(duration: Option<&str>) -> Result<i64, ApiError> {
    match duration {
        None | Some("permanent") => Ok(i64::MAX),
        Some(text) => ends_after(text),
    }
}

/// Disable, enable, mute or change the role of an account.
///
/// `POST /api/v1/admin/accounts/{name}`.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ADMIN_ACCOUNT,
    tag = "admin",
    params(("name" = String, Path, description = "An account name.")),
    request_body = AccountChange,
    responses((status = 204, description = "The account is changed."), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_account(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let change: AccountChange = json_body(body)?;
    let actor = caller.require_role(change.role.is_none())?.name.clone();
    apply_account_change(&state, actor, name, change).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Applies a change of state or role, and puts a disabled account's devices offline at once.
pub async fn apply_account_change(
    state: &Arc<AppState>,
    actor: String,
    name: String,
    change: AccountChange,
) -> Result<(), ApiError> {
    // An admin who disables, mutes or demotes their own account locks themselves out of the
    // very page and API that would undo it; another admin (or `peerdex-server admin`) may.
    let own = peerdex_shared::validate::nickname_key(&actor)
        == peerdex_shared::validate::nickname_key(&name);
    let demotes = change.role.is_some_and(|role| role != Role::Admin);
    let mutes = change.mute.as_deref().is_some_and(|mute| mute != "off");
    if own && (change.disabled == Some(true) || demotes || mutes) {
        return Err(forbidden(
            "you cannot disable, mute or demote your own account; another admin can \
             (or the operator: peerdex-server admin account …)",
        ));
    }
    if let Some(mute) = change.mute.as_deref() {
        let until = match mute {
            "off" => None,
            other => Some(mute_until(Some(other))?),
        };
        let (db, actor, name, reason) = (
            state.store.db.clone(),
            actor.clone(),
            name.clone(),
            change.reason.clone(),
        );
        let account = run_blocking(move || db.set_mute(&actor, &name, until, &reason)).await??;
        crate::social::notify(
            state,
            account,
            peerdex_shared::social::Event::Moderation {
                action: if until.is_some() { "mute" } else { "unmute" }.into(),
                reason: change.reason.clone(),
                until: until.filter(|&u| u != i64::MAX).map(|u| u.max(0) as u64),
            },
        )
        .await?;
    }
    let db = state.store.db.clone();
    let (devices, disabled) = run_blocking(move || -> Result<_, ApiError> {
        let mut devices = Vec::new();
        let mut disabled = None;
        if let Some(role) = change.role {
            db.set_role(&actor, &name, role)?;
        }
        if let Some(disable) = change.disabled {
            let row = db.set_disabled(&actor, &name, disable, &change.reason)?;
            if disable {
                devices = db.devices_of(row.id)?;
                disabled = Some(row.id);
            }
        }
        Ok((devices, disabled))
    })
    .await??;
    if let Some(account) = disabled {
        state.events.disconnect(account);
    }
    for device in devices {
        state.disconnect_peer(&device).await?;
    }
    Ok(())
}

/// List groups.
///
/// `GET /api/v1/admin/groups`.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::ADMIN_GROUPS,
    tag = "admin",
    responses((status = 200, description = "Every group with its members.", body = Vec<GroupRow>), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_groups(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<GroupRow>>, ApiError> {
    caller.require_role(true)?;
    let db = state.store.db.clone();
    Ok(Json(run_blocking(move || db.groups()).await??))
}

/// `POST /api/v1/admin/groups` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupCreate {
    /// The new group's name (the rules of nicknames).
    pub name: String,
}

/// Create a group.
///
/// `POST /api/v1/admin/groups`.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ADMIN_GROUPS,
    tag = "admin",
    request_body = GroupCreate,
    responses((status = 201, description = "The group exists."), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_create_group(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: GroupCreate = json_body(body)?;
    let actor = caller.require_role(false)?.name.clone();
    validate_nickname(&request.name)
        .map_err(|e| ApiError::bad_request(format!("group name {e}")))?;
    let db = state.store.db.clone();
    run_blocking(move || db.create_group(&actor, &request.name)).await??;
    Ok(StatusCode::CREATED)
}

/// Add an account to a group.
///
/// `PUT /api/v1/admin/groups/{group}/members/{name}`: adds the account to the group.
#[utoipa::path(
    put,
    path = peerdex_shared::routes::ADMIN_GROUP_MEMBER,
    tag = "admin",
    params(("group" = String, Path, description = "A group name."), ("name" = String, Path, description = "An account name.")),
    responses((status = 204, description = "The account is a member."), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_add_group_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((group, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    set_group_member(&state, &caller, group, name, true).await
}

/// Remove an account from a group.
///
/// `DELETE /api/v1/admin/groups/{group}/members/{name}`: removes the account from the group.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::ADMIN_GROUP_MEMBER,
    tag = "admin",
    params(("group" = String, Path, description = "A group name."), ("name" = String, Path, description = "An account name.")),
    responses((status = 204, description = "The account is not a member."), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_remove_group_member(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath((group, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    set_group_member(&state, &caller, group, name, false).await
}

async fn set_group_member(
    state: &Arc<AppState>,
    caller: &Caller,
    group: String,
    name: String,
    member: bool,
) -> Result<StatusCode, ApiError> {
    let actor = caller.require_role(false)?.name.clone();
    let db = state.store.db.clone();
    run_blocking(move || db.set_member(&actor, &group, &name, member)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// The audit log.
///
/// `GET /api/v1/admin/audit`.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::ADMIN_AUDIT,
    tag = "admin",
    responses((status = 200, description = "The newest 1000 administrative actions.", body = Vec<AuditRow>), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_audit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    caller.require_role(true)?;
    let db = state.store.db.clone();
    Ok(Json(run_blocking(move || db.audit_log(1000)).await??))
}

/// Refuses the request when a ban in force covers `subject` (403, saying until when and why).
pub async fn refuse_banned(
    state: &Arc<AppState>,
    subject: crate::db::BanSubject,
) -> Result<(), ApiError> {
    let db = state.store.db.clone();
    match run_blocking(move || db.ban_covering(&subject)).await?? {
        None => Ok(()),
        Some(ban) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::Banned,
            match ban.until {
                Some(until) => format!(
                    "banned until {} (in {} s): {}",
                    until,
                    (until - crate::db::unix_now()).max(0),
                    if ban.reason.is_empty() {
                        "no reason given"
                    } else {
                        &ban.reason
                    }
                ),
                None => format!(
                    "banned: {}",
                    if ban.reason.is_empty() {
                        "no reason given"
                    } else {
                        &ban.reason
                    }
                ),
            },
        )),
    }
}

/// `POST /api/v1/admin/bans` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    /// `account`, `peer`, `ip` or `nick`.
    pub kind: String,
    /// The account name, peer id, address or network, or nickname pattern.
    pub value: String,
    /// How long: `30m`, `12h`, `7d`; absent: permanent.
    #[serde(default)]
    pub duration: Option<String>,
    /// Why (kept in the audit log and told to the banned).
    #[serde(default)]
    pub reason: String,
}

/// Adds a ban and puts what it covers offline at once (the operator CLI and the API share it;
/// the CLI cannot reach a running server's live sessions, which end at their next request).
pub fn add_ban(
    db: &crate::db::Db,
    actor: &str,
    request: &BanRequest,
) -> Result<crate::db::BanRow, ApiError> {
    let kind = crate::db::BanKind::parse(&request.kind).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown ban kind {:?}; use account, peer, ip or nick",
            request.kind
        ))
    })?;
    let value = crate::db::check_ban_value(kind, request.value.trim())
        .map_err(|e| ApiError::bad_request(format!("ban value {:?}: {e}", request.value)))?;
    let until = request.duration.as_deref().map(ends_after).transpose()?;
    let ban = db.add_ban(actor, kind, &value, until, &request.reason)?;
    if kind == crate::db::BanKind::Account
        && let Some(account) = db.account_by_name(&value)?
    {
        db.revoke_tokens_of(account.id)?;
    }
    Ok(ban)
}

/// The online peers a ban covers.
fn peers_covered(
    state: &AppState,
    ban: &crate::db::BanRow,
) -> Result<Vec<PeerId>, crate::db::DbError> {
    let db = &state.store.db;
    let mut out = Vec::new();
    for peer in db.all_peers()? {
        if !state.presence.is_online(peer.id) {
            continue;
        }
        let account = db.account_of_device(&peer.key)?;
        let ip = peer.ip.as_deref().and_then(|ip| ip.parse().ok());
        let subject = crate::db::BanSubject {
            account: account.map(|a| a.name),
            peer: Some(peer.key),
            ip,
            nick: Some(peer.nickname.clone()),
        };
        if ban.covers(&subject) {
            out.push(peer.key);
        }
    }
    Ok(out)
}

/// Puts offline at once what a ban covers: the online `covered` peers (session, control
/// channel, presence) and, for an account ban, the account's event streams.
async fn disconnect_covered(
    state: &Arc<AppState>,
    ban: &crate::db::BanRow,
    covered: Vec<PeerId>,
) -> Result<(), ApiError> {
    for peer in covered {
        state.disconnect_peer(&peer).await?;
    }
    if ban.kind == crate::db::BanKind::Account {
        let (db, name) = (state.store.db.clone(), ban.value.clone());
        if let Some(account) = run_blocking(move || db.account_by_name(&name)).await?? {
            state.events.disconnect(account.id);
        }
    }
    Ok(())
}

/// Enforces a ban made elsewhere (the operator's `peerdex-server admin ban add`, which writes
/// to the database from another process) on live sessions.
pub async fn enforce_ban(state: &Arc<AppState>, ban: crate::db::BanRow) -> Result<(), ApiError> {
    let (state2, ban2) = (state.clone(), ban.clone());
    let covered = run_blocking(move || peers_covered(&state2, &ban2)).await??;
    disconnect_covered(state, &ban, covered).await
}

/// Ban an account, key, address or nickname.
///
/// `POST /api/v1/admin/bans` (admins and moderators).
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ADMIN_BANS,
    tag = "admin",
    request_body = BanRequest,
    responses((status = 201, description = "The ban is in force, on live sessions too.", body = crate::db::BanRow), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_add_ban(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<crate::db::BanRow>), ApiError> {
    let request: BanRequest = json_body(body)?;
    let actor = caller.require_role(true)?.name.clone();
    let own_account = request.kind == "account"
        && peerdex_shared::validate::nickname_key(&request.value)
            == peerdex_shared::validate::nickname_key(&actor);
    let own_device = request.kind == "peer"
        && caller
            .device
            .is_some_and(|device| request.value.trim() == device.to_string());
    if own_account || own_device {
        return Err(forbidden(
            "you cannot ban your own account or device; another admin can \
             (or the operator: peerdex-server admin ban …)",
        ));
    }
    let state2 = state.clone();
    let (ban, covered) = run_blocking(move || -> Result<_, ApiError> {
        let ban = add_ban(&state2.store.db, &actor, &request)?;
        let covered = peers_covered(&state2, &ban)?;
        Ok((ban, covered))
    })
    .await??;
    disconnect_covered(&state, &ban, covered).await?;
    info!(kind = ?ban.kind, value = %ban.value, until = ?ban.until, "ban added");
    Ok((StatusCode::CREATED, Json(ban)))
}

/// List bans in force.
///
/// `GET /api/v1/admin/bans`.
#[utoipa::path(
    get,
    path = peerdex_shared::routes::ADMIN_BANS,
    tag = "admin",
    responses((status = 200, description = "The bans in force.", body = Vec<crate::db::BanRow>), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_bans(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Vec<crate::db::BanRow>>, ApiError> {
    caller.require_role(true)?;
    let db = state.store.db.clone();
    Ok(Json(run_blocking(move || db.active_bans()).await??))
}

/// Lift a ban.
///
/// `DELETE /api/v1/admin/bans/{id}`.
#[utoipa::path(
    delete,
    path = peerdex_shared::routes::ADMIN_BAN,
    tag = "admin",
    params(("id" = i64, Path, description = "The ban's id.")),
    responses((status = 204, description = "The ban is lifted."), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_remove_ban(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    let actor = caller.require_role(true)?.name.clone();
    let db = state.store.db.clone();
    if run_blocking(move || db.remove_ban(&actor, id)).await?? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no ban {id}")))
    }
}

/// `POST /api/v1/admin/takedowns` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakedownRequest {
    /// The content.
    pub hash: peerdex_shared::FileHash,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// Take a content down.
///
/// `POST /api/v1/admin/takedowns` (admins and moderators): search, sources and tickets stop
/// offering the content, now and for copies listed later.
#[utoipa::path(
    post,
    path = peerdex_shared::routes::ADMIN_TAKEDOWNS,
    tag = "admin",
    request_body = TakedownRequest,
    responses((status = 201, description = "The content is offered nowhere from now on."), ApiErrors),
    security(("account" = []))
)]
pub async fn admin_takedown(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let request: TakedownRequest = json_body(body)?;
    let actor = caller.require_role(true)?.name.clone();
    let db = state.store.db.clone();
    run_blocking(move || db.take_down(&actor, &request.hash, &request.reason)).await??;
    state.store.nudger.nudge();
    Ok(StatusCode::CREATED)
}

/// `POST /api/v1/apikeys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    /// What it may do: some of [`API_KEY_SCOPES`].
    pub scopes: Vec<String>,
    /// A name to recognise it by.
    #[serde(default)]
    pub label: Option<String>,
}

/// `POST /api/v1/apikeys` response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiKeyResponse {
    /// The key (`pdx_…`), shown once; send it as a bearer token.
    pub key: String,
    /// What it may do.
    pub scopes: Vec<String>,
}

/// Make an API key for scripts.
///
/// `POST /api/v1/apikeys`: a key for scripts, made with a sign-in (not with another key), stored
/// hashed, limited to the scopes asked for (an `admin` key only for admins).
#[utoipa::path(
    post,
    path = peerdex_shared::routes::API_KEYS,
    tag = "accounts",
    request_body = ApiKeyRequest,
    responses((status = 201, description = "The key, shown once.", body = ApiKeyResponse), ApiErrors),
    security(("account" = []))
)]
pub async fn create_api_key(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ApiKeyResponse>), ApiError> {
    let request: ApiKeyRequest = json_body(body)?;
    let account = caller.require_account()?.clone();
    if caller.scopes != "all" {
        return Err(forbidden(
            "make API keys with a sign-in, not with another key",
        ));
    }
    let mut scopes = request.scopes;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(ApiError::bad_request(format!(
            "name what the key may do: {}",
            API_KEY_SCOPES.join(", ")
        )));
    }
    if let Some(bad) = scopes
        .iter()
        .find(|s| !API_KEY_SCOPES.contains(&s.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "unknown scope {bad:?}; use {}",
            API_KEY_SCOPES.join(", ")
        )));
    }
    if scopes.iter().any(|s| s == "admin") && account.role == Role::Member {
        return Err(forbidden("only admins and moderators may make admin keys"));
    }
    let (key, hash) = new_secret("pdx_").ok_or_else(|| ApiError::internal("no randomness"))?;
    let (db, text, device) = (state.store.db.clone(), scopes.join(","), caller.device);
    run_blocking(move || db.insert_token(&hash, account.id, device.as_ref(), "apikey", &text))
        .await??;
    Ok((StatusCode::CREATED, Json(ApiKeyResponse { key, scopes })))
}
