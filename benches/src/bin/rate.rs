//! Requests per second of the index server's cheapest authenticated call (a heartbeat) against
//! nginx answering a tiny response, on loopback, alternating, with the same client.
//!
//! `cargo run --release -p peerdex-benches --bin rate -- NGINX_URL [CONNECTIONS] [SECONDS] [ROUNDS]`
//!
//! NGINX_URL is a URL nginx answers with a few bytes (`benches/scripts/rate_vs_nginx.sh` starts
//! one). The index server runs in this process; the client keeps CONNECTIONS HTTP/1.1
//! connections busy with one request at a time each.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use peerdex_tests::{TestPeer, TestServer};

/// Sends `method path` with `headers` on `connections` connections to `addr` for `duration`;
/// returns requests per second (each answered 2xx).
async fn hammer(
    addr: &str,
    method: hyper::Method,
    path: &str,
    headers: Vec<(String, String)>,
    connections: usize,
    duration: Duration,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, path, headers, done) = (
            addr.to_owned(),
            path.to_owned(),
            headers.clone(),
            done.clone(),
        );
        let method = method.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            while Instant::now() < deadline {
                let mut request = hyper::Request::builder()
                    .method(method.clone())
                    .uri(&path)
                    .header(hyper::header::HOST, &addr);
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                let response = sender
                    .send_request(request.body(Empty::<Bytes>::new()).unwrap())
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.into_body().collect().await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let nginx = args
        .next()
        .expect("usage: rate NGINX_URL [CONNECTIONS] [SECONDS] [ROUNDS]");
    let connections: usize = args.next().map_or(32, |a| a.parse().unwrap());
    let seconds: u64 = args.next().map_or(5, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(3, |a| a.parse().unwrap());
    let nginx = nginx.trim_start_matches("http://");
    let (nginx_addr, nginx_path) = nginx
        .split_once('/')
        .map_or((nginx, "/".to_owned()), |(a, p)| (a, format!("/{p}")));

    let server = TestServer::start_with(|c| c.http.max_connections = 4096).await;
    let peer = TestPeer::join_announcing(&server.url, "rate", 0).await;
    let token = peer.client.session_token().unwrap().to_owned();
    let server_addr = server.url.trim_start_matches("http://").to_owned();
    let heartbeat = format!("/api/v1/peers/{}/heartbeat", peer.identity.peer_id());
    let auth = vec![("authorization".to_owned(), format!("Bearer {token}"))];

    let duration = Duration::from_secs(seconds);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        theirs.push(
            hammer(
                nginx_addr,
                hyper::Method::GET,
                &nginx_path,
                vec![],
                connections,
                duration,
            )
            .await,
        );
        ours.push(
            hammer(
                &server_addr,
                hyper::Method::POST,
                &heartbeat,
                auth.clone(),
                connections,
                duration,
            )
            .await,
        );
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!("connections: {connections}, {seconds} s per run, rounds: {rounds} (medians)");
    println!("nginx tiny response (baseline): {theirs:.0} req/s");
    println!(
        "index server heartbeat: {ours:.0} req/s, {:.2}x nginx",
        ours / theirs
    );
}
