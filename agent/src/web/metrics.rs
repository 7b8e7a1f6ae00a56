//! `GET /metrics` of the agent's local endpoint, in the Prometheus text format (PROTOCOL §13.2).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};

use super::Web;
use crate::AgentControls;
use crate::control::Controls;
use crate::transfers::TransferState;
use peerdex_download::Route;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

pub(super) async fn metrics(State(web): State<Arc<Web>>) -> Response {
    let controls = web.controls.clone();
    let encoded = tokio::task::spawn_blocking(move || encode(&controls)).await;
    match encoded {
        Ok(Ok(text)) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "metrics failed\n").into_response(),
    }
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, ConstCounter::new(value));
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    registry.register(name, help, ConstGauge::new(value));
}

/// Every series, read from the agent's state now: nothing is kept between scrapes, the
/// counters are the agent's own (since it started).
fn encode(controls: &AgentControls) -> Result<String, std::fmt::Error> {
    let status = controls.status();
    let mut root = Registry::default();
    let r = root.sub_registry_with_prefix("peerdex_agent");

    let (files, bytes, hashed_files, hashed_bytes) =
        status
            .shares
            .iter()
            .fold((0, 0, 0, 0), |(f, b, hf, hb), share| {
                let c = &share.counts;
                (
                    f + c.files,
                    b + c.bytes,
                    hf + c.hashed_files,
                    hb + c.hashed_bytes,
                )
            });
    gauge(r, "shares", "Shared folders", status.shares.len() as i64);
    gauge(r, "files", "Files found in the shares", files as i64);
    gauge(
        r,
        "shared_files",
        "Files hashed and shared",
        hashed_files as i64,
    );
    r.register_with_unit(
        "file",
        "Bytes of the files found in the shares",
        Unit::Bytes,
        ConstGauge::new(bytes as i64),
    );
    r.register_with_unit(
        "shared_file",
        "Bytes of the files hashed and shared",
        Unit::Bytes,
        ConstGauge::new(hashed_bytes as i64),
    );

    let p = &status.progress;
    gauge(r, "scanning", "1 while a scan runs", i64::from(p.scanning));
    counter(r, "scanned_dirs", "Folders read by scans", p.dirs_scanned);
    counter(r, "scanned_files", "Files seen by scans", p.files_seen);
    counter(r, "hashed_files", "Files hashed", p.files_hashed);
    r.register_with_unit(
        "hashed",
        "Bytes hashed",
        Unit::Bytes,
        ConstCounter::new(p.bytes_hashed),
    );
    gauge(
        r,
        "hash_pending_files",
        "Files waiting for a hash",
        p.hash_files_pending as i64,
    );
    r.register_with_unit(
        "hash_pending",
        "Bytes waiting for a hash",
        Unit::Bytes,
        ConstGauge::new(p.hash_bytes_pending as i64),
    );

    let u = &status.uploads;
    gauge(r, "upload_slots", "Upload slots configured", u.slots as i64);
    gauge(
        r,
        "uploads_active",
        "Uploads running",
        u.active.len() as i64,
    );
    gauge(
        r,
        "uploads_queued",
        "Requests waiting for an upload slot",
        u.queued as i64,
    );
    r.register_with_unit(
        "upload",
        "Content bytes sent to peers",
        Unit::Bytes,
        ConstCounter::new(u.bytes_sent),
    );
    counter(r, "uploads_completed", "Uploads completed", u.completed);
    counter(
        r,
        "uploads_refused",
        "Upload requests refused for lack of a slot",
        u.refused,
    );

    let downloads = Family::<StateLabel, Gauge>::default();
    let views = controls.queue.list(usize::MAX).unwrap_or_default();
    for state in TransferState::ALL {
        downloads
            .get_or_create(&StateLabel {
                state: state.word(),
            })
            .set(views.iter().filter(|v| v.status == state).count() as i64);
    }
    r.register(
        "downloads",
        "Downloads in the transfer list, by state",
        downloads,
    );
    let by_route = Family::<RouteLabel, prometheus_client::metrics::counter::Counter>::default();
    for (route, label) in [
        (Route::Direct, "direct"),
        (Route::Reverse, "reverse"),
        (Route::Relay, "relay"),
    ] {
        by_route
            .get_or_create(&RouteLabel { route: label })
            .inc_by(controls.queue.route_bytes.get(route));
    }
    r.register_with_unit(
        "download",
        "Verified bytes downloaded by the agent's transfer queue, by route",
        Unit::Bytes,
        by_route,
    );

    let link = &status.server;
    gauge(
        r,
        "server_online",
        "1 while registered with the index server",
        i64::from(link.online),
    );
    gauge(
        r,
        "control_channel",
        "1 while the control channel to the index server is open",
        i64::from(link.control_channel),
    );
    gauge(
        r,
        "unsynced_changes",
        "Catalog changes the index server has not confirmed",
        status.unsynced_changes as i64,
    );
    let uploads = Family::<KindLabel, prometheus_client::metrics::counter::Counter>::default();
    uploads
        .get_or_create(&KindLabel { kind: "full" })
        .inc_by(link.full_uploads);
    uploads
        .get_or_create(&KindLabel { kind: "delta" })
        .inc_by(link.delta_uploads);
    r.register(
        "list_uploads",
        "List uploads to the index server, by kind",
        uploads,
    );
    counter(
        r,
        "list_entries_sent",
        "List entries sent to the index server",
        link.entries_sent,
    );

    use peerdex_shared::process;
    root.register_with_unit(
        "process_resident_memory",
        "Resident memory of the agent process",
        Unit::Bytes,
        ConstGauge::new(process::resident_bytes().unwrap_or(0) as i64),
    );
    root.register(
        "process_open_fds",
        "Open file descriptors of the agent process",
        ConstGauge::new(process::open_fds().unwrap_or(0) as i64),
    );
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &root)?;
    Ok(out)
}
