//! The agent's answer to the index server's connect-back probe: proof, signed with the agent's
//! key, that the address the server dialled is really this peer's. The agent's file server
//! answers it on its own port; downloaders answer it on the port reverse connections come to.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use peerdex_shared::api::ConnectBackAnswer;
use peerdex_shared::identity::connect_back_message;
use peerdex_shared::peer::CONNECT_BACK_PATH;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::identity::Identity;

/// Longest nonce accepted in a probe.
const MAX_NONCE_LEN: usize = 128;

/// Answers one request on the peer server.
///
/// The signature covers the `Host` header, which the server sets to the address it dialled: the
/// proof is bound to that address and still holds behind a NAT with a forwarded port.
pub fn answer<B>(identity: &Identity, request: &Request<B>) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: Vec<u8>| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != CONNECT_BACK_PATH {
        return respond(StatusCode::NOT_FOUND, b"not found".to_vec());
    }
    let nonce = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("nonce=")))
        .filter(|n| {
            !n.is_empty()
                && n.len() <= MAX_NONCE_LEN
                && n.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    let Some(nonce) = nonce else {
        return respond(StatusCode::BAD_REQUEST, b"missing or bad nonce".to_vec());
    };
    let Some(host) = request
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return respond(StatusCode::BAD_REQUEST, b"missing host".to_vec());
    };
    let peer_id = identity.peer_id();
    let answer = ConnectBackAnswer {
        peer_id,
        signature: identity.sign(&connect_back_message(nonce, &peer_id, host)),
    };
    respond(
        StatusCode::OK,
        serde_json::to_vec(&answer).unwrap_or_default(),
    )
}

/// Serves the peer endpoint on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, identity: Identity, shutdown: CancellationToken) {
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            () = shutdown.cancelled() => return,
        };
        let identity = identity.clone();
        let service = hyper::service::service_fn(move |request| {
            let response = answer(&identity, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = connection => if let Err(e) = result {
                    debug!(%remote, error = %e, "peer connection ended with an error");
                },
                () = shutdown.cancelled() => {}
            }
        });
    }
}
