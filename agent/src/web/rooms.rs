//! The rooms pages of the web client: the rooms you may see and join, one room's recent lines
//! with a box to say something, leaving. Rooms live on the index server under the account
//! (PROTOCOL §10.6); new lines arrive over the tab's event stream.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use peerdex_shared::units::ago_since;
use serde::Deserialize;

use super::Web;
use super::pages::{bad_request, encoded, render, server, server_error};

/// Lines shown of a room.
const LINES_SHOWN: u32 = 100;

struct RoomEntry {
    name: String,
    url: String,
    detail: String,
    joined: bool,
}

#[derive(Template)]
#[template(path = "rooms.html")]
struct RoomsPage {
    query: String,
    rooms: Vec<RoomEntry>,
}

fn room_url(name: &str) -> String {
    format!("/rooms/{}", encoded(name))
}

/// `GET /rooms`.
pub(super) async fn rooms(State(web): State<Arc<Web>>) -> Response {
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let rooms = match client.rooms().await {
        Ok(rooms) => rooms,
        Err(e) => return server_error(&e),
    };
    let rooms = rooms
        .iter()
        .map(|r| RoomEntry {
            url: room_url(&r.name),
            detail: format!(
                "{} · {} {}{}",
                r.access,
                r.members,
                if r.members == 1 { "member" } else { "members" },
                match r.role {
                    Some(role) => format!(" · you: {}", format!("{role:?}").to_lowercase()),
                    None => String::new(),
                }
            ),
            joined: r.role.is_some(),
            name: r.name.clone(),
        })
        .collect();
    render(
        StatusCode::OK,
        RoomsPage {
            query: String::new(),
            rooms,
        }
        .render(),
    )
}

struct LineView {
    from: String,
    body: String,
    when: String,
}

#[derive(Template)]
#[template(path = "room.html")]
struct RoomPage {
    query: String,
    name: String,
    actions: String,
    lines: Vec<LineView>,
}

/// `GET /rooms/{name}`: its last lines, oldest first.
pub(super) async fn room(State(web): State<Arc<Web>>, Path(name): Path<String>) -> Response {
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let lines = match client.room_log(&name, Some(LINES_SHOWN)).await {
        Ok(lines) => lines,
        Err(e) => return server_error(&e),
    };
    render(
        StatusCode::OK,
        RoomPage {
            query: String::new(),
            actions: room_url(&name),
            lines: lines
                .iter()
                .map(|l| LineView {
                    from: l.from.clone(),
                    body: l.body.clone(),
                    when: ago_since(l.at),
                })
                .collect(),
            name,
        }
        .render(),
    )
}

#[derive(Deserialize)]
pub(super) struct JoinForm {
    name: String,
    access: Option<String>,
}

/// `POST /rooms` (`name`, optional `access` for a new room): joins (or makes) a room.
pub(super) async fn join(
    State(web): State<Arc<Web>>,
    form: Result<Form<JoinForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("joining needs the room's name");
    };
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    let name = form.name.trim().to_owned();
    let access = form
        .access
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty());
    match client.join_room(&name, access).await {
        Ok(_) => Redirect::to(&room_url(&name)).into_response(),
        Err(e) => server_error(&e),
    }
}

#[derive(Deserialize)]
pub(super) struct SayForm {
    body: String,
}

/// `POST /rooms/{name}/say` (`body`).
pub(super) async fn say(
    State(web): State<Arc<Web>>,
    Path(name): Path<String>,
    form: Result<Form<SayForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("say something");
    };
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    match client.say(&name, &form.body).await {
        Ok(_) => Redirect::to(&room_url(&name)).into_response(),
        Err(e) => server_error(&e),
    }
}

/// `POST /rooms/{name}/leave`.
pub(super) async fn leave(State(web): State<Arc<Web>>, Path(name): Path<String>) -> Response {
    let client = match server(&web) {
        Ok(client) => client,
        Err(page) => return page.into_response(),
    };
    match client.leave_room(&name).await {
        Ok(()) => Redirect::to("/rooms").into_response(),
        Err(e) => server_error(&e),
    }
}
