//! The social pages of the web client: contacts (with online state and open requests), the
//! conversation with one person, and wishes. All of it lives on the index server under the
//! account this device is signed in to (`peerdex login`); without one the server's own "sign in"
//! answer is shown.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use peerdex_shared::social::{ContactState, WishRequest};
use peerdex_shared::units::ago_since;
use serde::Deserialize;

use super::Web;
use super::pages::{bad_request, encoded, render, server, server_error};

/// Messages shown in a conversation, and in the inbox.
const MESSAGES_SHOWN: u32 = 50;

struct ContactLine {
    name: String,
    url: String,
    /// `/contacts/NAME`: what its buttons post to, with `/accept` and the like.
    actions: String,
    presence: String,
    online: bool,
    incoming: bool,
    accepted: bool,
}

struct MessageLine {
    from: String,
    body: String,
    when: String,
    unread: bool,
    url: String,
}

struct WishLine {
    id: u64,
    query: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "people.html")]
struct PeoplePage {
    query: String,
    contacts: Vec<ContactLine>,
    inbox: Vec<MessageLine>,
    wishes: Vec<WishLine>,
}

fn conversation_url(name: &str) -> String {
    format!("/people/{}", encoded(name))
}

/// `GET /people`: contacts, the latest messages and the wishes.
pub(super) async fn people(State(web): State<Arc<Web>>) -> Response {
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let (contacts, inbox, wishes) = tokio::join!(
        client.contacts(),
        client.messages(false, None, Some(MESSAGES_SHOWN)),
        client.wishes()
    );
    let (contacts, inbox, wishes) = match (contacts, inbox, wishes) {
        (Ok(c), Ok(m), Ok(w)) => (c, m, w),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return server_error(&e),
    };
    let contacts = contacts
        .contacts
        .iter()
        .map(|c| ContactLine {
            url: conversation_url(&c.name),
            actions: format!("/contacts/{}", encoded(&c.name)),
            presence: match (c.state, c.online, c.last_seen) {
                (ContactState::Incoming, _, _) => "asks to be your contact".to_owned(),
                (ContactState::Outgoing, _, _) => "asked; no answer yet".to_owned(),
                (ContactState::Accepted, true, _) => "online".to_owned(),
                (ContactState::Accepted, false, Some(at)) => {
                    format!("offline, last seen {}", ago_since(at))
                }
                (ContactState::Accepted, false, None) => "offline".to_owned(),
            },
            online: c.online && c.state == ContactState::Accepted,
            incoming: c.state == ContactState::Incoming,
            accepted: c.state == ContactState::Accepted,
            name: c.name.clone(),
        })
        .collect();
    let mut inbox: Vec<MessageLine> = inbox.messages.iter().map(message_line).collect();
    // Newest first on this page.
    inbox.reverse();
    let wishes = wishes
        .iter()
        .map(|w| WishLine {
            id: w.id,
            query: w.query.clone(),
            detail: format!(
                "{} {} so far{}",
                w.hits,
                if w.hits == 1 { "match" } else { "matches" },
                if w.auto_download {
                    "; downloads each new match"
                } else {
                    ""
                }
            ),
        })
        .collect();
    render(
        StatusCode::OK,
        PeoplePage {
            query: String::new(),
            contacts,
            inbox,
            wishes,
        }
        .render(),
    )
}

fn message_line(m: &peerdex_shared::social::Message) -> MessageLine {
    MessageLine {
        url: conversation_url(&m.from),
        from: m.from.clone(),
        body: m.body.clone(),
        when: ago_since(m.sent_at),
        unread: m.read_at.is_none(),
    }
}

#[derive(Template)]
#[template(path = "conversation.html")]
struct ConversationPage {
    query: String,
    name: String,
    messages: Vec<MessageLine>,
}

/// `GET /people/{name}`: the conversation with one person, and a box to write to them.
pub(super) async fn conversation(
    State(web): State<Arc<Web>>,
    Path(name): Path<String>,
) -> Response {
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let found = match client
        .messages(false, Some(&name), Some(MESSAGES_SHOWN))
        .await
    {
        Ok(found) => found,
        Err(e) => return server_error(&e),
    };
    // Reading the conversation reads the messages in it.
    for unread in found
        .messages
        .iter()
        .filter(|m| m.read_at.is_none() && m.from == name)
    {
        let _ = client.read_message(unread.id).await;
    }
    render(
        StatusCode::OK,
        ConversationPage {
            query: String::new(),
            messages: found.messages.iter().map(message_line).collect(),
            name,
        }
        .render(),
    )
}

#[derive(Deserialize)]
pub(super) struct NameForm {
    name: String,
}

/// `POST /contacts` (`name`): asks someone to be a contact.
pub(super) async fn add_contact(
    State(web): State<Arc<Web>>,
    form: Result<Form<NameForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("say whom to add");
    };
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    match client.add_contact(form.name.trim()).await {
        Ok(_) => Redirect::to("/people").into_response(),
        Err(e) => server_error(&e),
    }
}

/// `POST /contacts/{name}/{accept|decline|remove}`.
pub(super) async fn answer_contact(
    State(web): State<Arc<Web>>,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let done = match action.as_str() {
        "accept" => client.answer_contact(&name, true).await,
        "decline" => client.answer_contact(&name, false).await,
        "remove" => client.remove_contact(&name).await,
        other => return bad_request(format!("{other:?} is not accept, decline or remove")),
    };
    match done {
        Ok(()) => Redirect::to("/people").into_response(),
        Err(e) => server_error(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct MessageForm {
    to: String,
    body: String,
}

/// `POST /messages` (`to`, `body`): sends a private message (kept for them when offline).
pub(super) async fn send_message(
    State(web): State<Arc<Web>>,
    form: Result<Form<MessageForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("a message needs to and body");
    };
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    match client.send_message(form.to.trim(), &form.body).await {
        Ok(_) => Redirect::to(&conversation_url(form.to.trim())).into_response(),
        Err(e) => server_error(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct WishForm {
    query: String,
    /// A checkbox: present (`on`) when ticked.
    auto_download: Option<String>,
}

/// `POST /wishes` (`query`, optional `auto_download`): a standing search, told of every new
/// match the moment it is listed.
pub(super) async fn add_wish(
    State(web): State<Arc<Web>>,
    form: Result<Form<WishForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("a wish needs the words to look for");
    };
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let request = WishRequest {
        query: form.query.trim().to_owned(),
        ext: None,
        kind: None,
        min_size: None,
        max_size: None,
        auto_download: form.auto_download.is_some(),
    };
    match client.add_wish(&request).await {
        Ok(_) => Redirect::to("/people").into_response(),
        Err(e) => server_error(&e),
    }
}

/// `POST /wishes/{id}/remove`.
pub(super) async fn remove_wish(State(web): State<Arc<Web>>, Path(id): Path<u64>) -> Response {
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    match client.remove_wish(id).await {
        Ok(()) => Redirect::to("/people").into_response(),
        Err(e) => server_error(&e),
    }
}
