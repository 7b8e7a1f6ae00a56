//! Delivering the social layer's events (PROTOCOL §10): durable events are kept before they are
//! pushed, pushes reach every open stream and control channel of the account, and a watcher turns
//! devices' presence into accounts' presence for their contacts.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use peerdex_shared::api::ControlMessage;
use peerdex_shared::social::{Event, EventEnvelope, ReceiptState};
use tracing::{debug, warn};

use crate::db::{AccountRef, Db, DbError, StoredMessage, unix_now};
use crate::http::{ApiError, run_blocking};
use crate::state::AppState;

/// How often presence is turned into events: a contact's change reaches watchers within this
/// (plus the time its device takes to be seen offline).
pub const PRESENCE_TICK: Duration = Duration::from_millis(500);

/// Keeps `event` for `account` when it is durable, then pushes it to the account's streams and
/// agents. Returns the event as sent and how many streams or agents took it.
pub async fn notify(
    state: &Arc<AppState>,
    account: AccountRef,
    event: Event,
) -> Result<(EventEnvelope, usize), ApiError> {
    let db = state.store.db.clone();
    let (envelope, devices) = run_blocking(move || -> Result<_, DbError> {
        let envelope = if event.is_durable() {
            db.record_event(account, event)?
        } else {
            EventEnvelope {
                id: None,
                at: unix_now().max(0) as u64,
                event,
            }
        };
        Ok((envelope, db.devices_of(account)?))
    })
    .await??;
    let took = publish(state, account, &envelope, &devices);
    if took > 0
        && let Some(id) = envelope.id
    {
        let db = state.store.db.clone();
        run_blocking(move || db.mark_events_delivered(account, &[id])).await??;
    }
    Ok((envelope, took))
}

/// Pushes an event to the account's open streams and to its devices' control channels;
/// returns how many took it.
fn publish(
    state: &AppState,
    account: AccountRef,
    envelope: &EventEnvelope,
    devices: &[peerdex_shared::PeerId],
) -> usize {
    let mut took = state.events.publish(account, envelope);
    for device in devices {
        let message = ControlMessage::Event {
            event: Box::new(envelope.clone()),
        };
        if state.firewall.control.send(device, message) {
            took += 1;
        }
    }
    took
}

/// Pushes an event that is already recorded (durable) to the account's streams and agents,
/// marking it delivered when one took it.
pub async fn push(
    state: &Arc<AppState>,
    account: AccountRef,
    envelope: EventEnvelope,
) -> Result<(), ApiError> {
    let db = state.store.db.clone();
    let devices = run_blocking(move || db.devices_of(account)).await??;
    if publish(state, account, &envelope, &devices) > 0
        && let Some(id) = envelope.id
    {
        let db = state.store.db.clone();
        run_blocking(move || db.mark_events_delivered(account, &[id])).await??;
    }
    Ok(())
}

/// Pushes the `wish_hit` events the indexer recorded (already durable) to the wishers' streams
/// and agents, until the indexer stops.
pub async fn push_wish_hits(
    state: Arc<AppState>,
    mut hits: tokio::sync::mpsc::UnboundedReceiver<(AccountRef, EventEnvelope)>,
) {
    while let Some((account, envelope)) = hits.recv().await {
        if let Err(e) = push(&state, account, envelope).await {
            debug!(error = %e.body.error, "a wish hit waits for its owner's next connection");
        }
    }
}

/// Pushes a message to its recipient; once one of their clients took it, it is delivered and
/// the sender gets a receipt.
pub async fn deliver(state: &Arc<AppState>, stored: StoredMessage) -> Result<(), ApiError> {
    let recipient = stored.recipient;
    let id = stored.message.id;
    let (_, took) = notify(
        state,
        recipient,
        Event::Message {
            message: stored.message,
        },
    )
    .await?;
    if took > 0 {
        delivered(state, recipient, vec![id]).await?;
    }
    Ok(())
}

/// Marks messages to `recipient` delivered and sends their senders receipts (once each).
pub async fn delivered(
    state: &Arc<AppState>,
    recipient: AccountRef,
    ids: Vec<u64>,
) -> Result<(), ApiError> {
    let db = state.store.db.clone();
    let newly = run_blocking(move || db.mark_delivered(recipient, &ids)).await??;
    for message in newly {
        receipt(state, &message, ReceiptState::Delivered).await?;
    }
    Ok(())
}

/// Tells a message's sender what happened to it.
pub async fn receipt(
    state: &Arc<AppState>,
    message: &StoredMessage,
    what: ReceiptState,
) -> Result<(), ApiError> {
    notify(
        state,
        message.sender,
        Event::Receipt {
            message: message.message.id,
            to: message.message.to.clone(),
            state: what,
        },
    )
    .await?;
    Ok(())
}

/// Accounts online now (one of their devices is), with when each account was last seen.
fn accounts_seen(state: &AppState, devices: &[(crate::db::PeerRef, AccountRef)]) -> Seen {
    let mut seen = Seen::default();
    for &(peer, account) in devices {
        if state.presence.is_online(peer) {
            seen.online.insert(account);
        }
        if let Some(at) = state.presence.last_seen(peer) {
            let last = seen.last.entry(account).or_insert(at);
            *last = (*last).max(at);
        }
    }
    seen
}

/// Presence by account at one instant.
#[derive(Default)]
pub struct Seen {
    /// Accounts with a device online.
    pub online: HashSet<AccountRef>,
    /// Latest time any device of each account was seen.
    pub last: HashMap<AccountRef, i64>,
}

/// Presence of accounts, from their devices (for `GET /api/v1/contacts`).
pub async fn presence_of(state: &Arc<AppState>) -> Result<Seen, ApiError> {
    let db = state.store.db.clone();
    let devices = run_blocking(move || db.linked_devices()).await??;
    Ok(accounts_seen(state, &devices))
}

/// Watches accounts come online and go offline, and tells their accepted contacts who have a
/// stream or agent open. Runs until shutdown.
pub async fn watch_presence(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(PRESENCE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Starts from who is online now: a restart does not announce everyone.
    let mut online: Option<HashSet<AccountRef>> = None;
    // Bans written by the operator's CLI (another process) are enforced on live sessions here;
    // those of before the start already keep their subjects out.
    let mut last_ban: Option<i64> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = state.lifecycle.shutdown.cancelled() => return,
        }
        enforce_new_bans(&state, &mut last_ban).await;
        let db = state.store.db.clone();
        let devices = match run_blocking(move || db.linked_devices()).await {
            Ok(Ok(devices)) => devices,
            Ok(Err(e)) => {
                warn!(error = %e, "reading linked devices failed");
                continue;
            }
            Err(_) => continue,
        };
        let now = accounts_seen(&state, &devices);
        let Some(before) = online.replace(now.online.clone()) else {
            continue;
        };
        let changed: Vec<(AccountRef, bool)> = now
            .online
            .difference(&before)
            .map(|&a| (a, true))
            .chain(before.difference(&now.online).map(|&a| (a, false)))
            .collect();
        for (account, is_online) in changed {
            if let Err(e) = announce(&state, &state.store.db, account, is_online, &now).await {
                debug!(error = %e.body.error, "presence event not sent");
            }
        }
    }
}

/// Enforces bans added since `last` (by id) on live sessions; the API enforces its own at once,
/// and doing it again is harmless.
async fn enforce_new_bans(state: &Arc<AppState>, last: &mut Option<i64>) {
    let db = state.store.db.clone();
    let Ok(Ok(latest)) = run_blocking(move || db.latest_ban_id()).await else {
        return;
    };
    let since = match *last {
        None => {
            *last = Some(latest);
            return;
        }
        Some(since) if latest <= since => return,
        Some(since) => since,
    };
    *last = Some(latest);
    let db = state.store.db.clone();
    let Ok(Ok(bans)) = run_blocking(move || db.active_bans()).await else {
        return;
    };
    for ban in bans.into_iter().filter(|b| b.id > since) {
        if let Err(e) = crate::http::accounts::enforce_ban(state, ban).await {
            warn!(error = %e.body.error, "enforcing a ban on live sessions failed");
        }
    }
}

async fn announce(
    state: &Arc<AppState>,
    db: &Arc<Db>,
    account: AccountRef,
    online: bool,
    seen: &Seen,
) -> Result<(), ApiError> {
    let db = db.clone();
    let (name, watchers) = run_blocking(move || -> Result<_, DbError> {
        Ok((db.account_name(account)?, db.accepted_contacts(account)?))
    })
    .await??;
    let Some(name) = name else {
        return Ok(());
    };
    let last_seen = seen.last.get(&account).map(|&at| at.max(0) as u64);
    for watcher in watchers {
        notify(
            state,
            watcher,
            Event::Presence {
                name: name.clone(),
                online,
                last_seen,
            },
        )
        .await?;
    }
    Ok(())
}
