//! `/settings` (PROTOCOL §15): what the agent runs with, and the settings people change most
//! (nickname, download folder, downloads at once, upload slots and rate), written to the config
//! file as `peerdex share` writes it. They take effect at the agent's next start; the page says
//! which saved values differ from the running ones until then.

use std::path::PathBuf;
use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::Web;
use super::pages::{bad_request, blocking, page_status, render};
use crate::config::ConfigFile;

/// Largest number of downloads at once and of upload slots the page accepts.
const MOST_AT_ONCE: usize = 64;

/// One setting as shown: what it is, what runs, and what the config file says when that differs.
struct SettingLine {
    label: &'static str,
    running: String,
    saved: Option<String>,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    query: String,
    notice: Option<String>,
    lines: Vec<SettingLine>,
    /// The config file, when the agent has one (not with `--share`).
    config_file: Option<String>,
    nick: String,
    download_dir: String,
    max_active: String,
    slots: String,
    max_rate_kib: String,
}

/// `?saved=1` after a change.
#[derive(Deserialize, Default)]
pub(super) struct SettingsParams {
    saved: Option<u8>,
}

/// The values a setting is shown with, running and saved.
struct Values {
    nick: String,
    download_dir: String,
    max_active: usize,
    slots: usize,
    max_rate: u64,
}

fn rate_text(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "unlimited".to_owned()
    } else {
        format!("{} KiB/s", bytes_per_sec / 1024)
    }
}

/// `GET /settings`.
pub(super) async fn settings(
    State(web): State<Arc<Web>>,
    params: Result<Query<SettingsParams>, QueryRejection>,
) -> Response {
    let params = params.map(|Query(p)| p).unwrap_or_default();
    let config = &web.controls.config;
    let running = Values {
        nick: config.nick.clone().unwrap_or_default(),
        download_dir: config.download_dir.display().to_string(),
        max_active: config
            .download
            .max_active
            .unwrap_or(crate::DEFAULT_MAX_ACTIVE),
        slots: config.upload.slots,
        max_rate: config.upload.max_rate,
    };
    let file = match config.shares_file.clone() {
        Some(path) => match blocking(&web, move |_| ConfigFile::load(&path)).await {
            Ok(Ok(file)) => Some(file),
            Ok(Err(e)) => return bad_request(format!("{e:#}")),
            Err(page) => return page.into_response(),
        },
        None => None,
    };
    let saved = file.as_ref().map(|file| Values {
        nick: file.nick.clone().unwrap_or_default(),
        download_dir: file
            .download
            .dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| running.download_dir.clone()),
        max_active: file
            .download
            .max_active
            .unwrap_or(crate::DEFAULT_MAX_ACTIVE),
        slots: file.upload.slots,
        max_rate: file.upload.max_rate,
    });
    let differs = |run: String, file: Option<String>| file.filter(|f| *f != run);
    let status = match page_status(&web).await {
        Ok(status) => status,
        Err(page) => return page.into_response(),
    };
    let mut lines = vec![
        SettingLine {
            label: "Index server",
            running: config.server.clone(),
            saved: None,
        },
        SettingLine {
            label: "Peer id",
            running: status.peer_id.to_string(),
            saved: None,
        },
        SettingLine {
            label: "Nickname",
            running: if running.nick.is_empty() {
                "(the server's choice)".to_owned()
            } else {
                running.nick.clone()
            },
            saved: differs(running.nick.clone(), saved.as_ref().map(|s| s.nick.clone())),
        },
        SettingLine {
            label: "Download folder",
            running: running.download_dir.clone(),
            saved: differs(
                running.download_dir.clone(),
                saved.as_ref().map(|s| s.download_dir.clone()),
            ),
        },
        SettingLine {
            label: "Downloads at once",
            running: running.max_active.to_string(),
            saved: differs(
                running.max_active.to_string(),
                saved.as_ref().map(|s| s.max_active.to_string()),
            ),
        },
        SettingLine {
            label: "Upload slots",
            running: running.slots.to_string(),
            saved: differs(
                running.slots.to_string(),
                saved.as_ref().map(|s| s.slots.to_string()),
            ),
        },
        SettingLine {
            label: "Upload rate",
            running: rate_text(running.max_rate),
            saved: differs(
                rate_text(running.max_rate),
                saved.as_ref().map(|s| rate_text(s.max_rate)),
            ),
        },
    ];
    lines.push(SettingLine {
        label: "File server",
        running: match status.serving {
            Some(addr) if config.upload.plain_http => format!("{addr} (plain HTTP: debugging)"),
            Some(addr) => format!("{addr} (TLS)"),
            None => "not listening".to_owned(),
        },
        saved: None,
    });
    lines.push(SettingLine {
        label: "State directory",
        running: config.state.display().to_string(),
        saved: None,
    });
    let form = saved.as_ref().unwrap_or(&running);
    let page = SettingsPage {
        query: String::new(),
        notice: params.saved.map(|_| {
            "Saved in the config file. The agent uses the new values from its next start \
             (peerdex agent, or restart the service)."
                .to_owned()
        }),
        lines,
        config_file: config.shares_file.as_ref().map(|p| p.display().to_string()),
        nick: form.nick.clone(),
        download_dir: form.download_dir.clone(),
        max_active: form.max_active.to_string(),
        slots: form.slots.to_string(),
        max_rate_kib: (form.max_rate / 1024).to_string(),
    };
    render(StatusCode::OK, page.render())
}

/// The settings form.
#[derive(Deserialize)]
pub(super) struct SettingsForm {
    nick: String,
    download_dir: String,
    max_active: String,
    slots: String,
    max_rate_kib: String,
}

/// A whole number between `low` and `high`, or what is wrong with `text`.
fn number_between(what: &str, text: &str, low: u64, high: u64) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what} must be a whole number from {low} to {high}, not {text:?}"
        )),
    }
}

/// `POST /settings`: checks every field, then writes them to the config file; 303 back.
pub(super) async fn save_settings(
    State(web): State<Arc<Web>>,
    form: Result<Form<SettingsForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return bad_request("the settings form is incomplete");
    };
    let Some(path) = web.controls.config.shares_file.clone() else {
        return bad_request(
            "this agent was started with --share and has no config file to save settings in",
        );
    };
    let nick = form.nick.trim().to_owned();
    if !nick.is_empty()
        && let Err(e) = peerdex_shared::validate::validate_nickname(&nick)
    {
        return bad_request(format!("nickname {nick:?}: {e}"));
    }
    let dir = PathBuf::from(form.download_dir.trim());
    if !dir.is_absolute() {
        return bad_request(format!(
            "the download folder must be a full path (like /home/you/Downloads), not {:?}",
            form.download_dir
        ));
    }
    let checked = (|| {
        Ok::<_, String>((
            number_between(
                "Downloads at once",
                &form.max_active,
                1,
                MOST_AT_ONCE as u64,
            )?,
            number_between("Upload slots", &form.slots, 1, MOST_AT_ONCE as u64)?,
            number_between("Upload rate", &form.max_rate_kib, 0, u64::MAX / 1024)?,
        ))
    })();
    let (max_active, slots, max_rate_kib) = match checked {
        Ok(values) => values,
        Err(message) => return bad_request(message),
    };
    let saved = blocking(&web, move |_| {
        ConfigFile::edit(&path, |file| {
            file.nick = (!nick.is_empty()).then_some(nick);
            file.download.dir = Some(dir);
            file.download.max_active = Some(max_active as usize);
            file.upload.slots = slots as usize;
            file.upload.per_peer = file.upload.per_peer.min(slots as usize).max(1);
            file.upload.max_rate = max_rate_kib * 1024;
            Ok(())
        })
    })
    .await;
    match saved {
        Ok(Ok(())) => Redirect::to("/settings?saved=1").into_response(),
        Ok(Err(e)) => bad_request(format!("{e:#}")),
        Err(page) => page.into_response(),
    }
}
