//! Criterion micro-benchmarks of hot inner pieces: name tokenizing (indexing every entry), query
//! building (every search), piece verification (every MiB downloaded), and the TLS handshake
//! of a peer connection (every source a download dials), in memory: its CPU cost alone.
//!
//! `cargo bench -p peerdex-benches --bench micro`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use peerdex_server::query::{QueryLimits, parse};
use peerdex_server::text::tokenize;
use peerdex_shared::FileHash;
use peerdex_shared::pieces::{PIECE_SIZE, build_proof, piece_cv, verify_piece, verify_proof};

fn tokenizing(c: &mut Criterion) {
    let names = [
        "Beatles - Abbey Road (Remastered 2019)/07 Here Comes The Sun.flac",
        "아이유 - 좋은 날 (Good Day) [Live].mp3",
        "Sigur Rós - Ágætis byrjun/03 Starálfur.ogg",
        "千と千尋の神隠し オリジナル・サウンドトラック 01.mp3",
    ];
    let mut group = c.benchmark_group("tokenize");
    for name in names {
        group.throughput(Throughput::Bytes(name.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(name.chars().take(12).collect::<String>()),
            name,
            |b, n| b.iter(|| tokenize(std::hint::black_box(n))),
        );
    }
    group.finish();
}

fn query_building(c: &mut Criterion) {
    let limits = QueryLimits {
        max_query_bytes: 1024,
        max_terms: 16,
    };
    let mut group = c.benchmark_group("query");
    for q in [
        "beatles",
        "beatles \"here comes\" -live",
        "아이유 좋은 날",
        "- * a:(^ ((((",
    ] {
        group.bench_with_input(BenchmarkId::from_parameter(q), q, |b, q| {
            b.iter(|| parse(std::hint::black_box(q), &limits))
        });
    }
    group.finish();
}

fn piece_verification(c: &mut Criterion) {
    let len = 8 * PIECE_SIZE as usize;
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let cvs: Vec<_> = (0..8u64)
        .map(|i| {
            piece_cv(
                i,
                &bytes[i as usize * PIECE_SIZE as usize..(i as usize + 1) * PIECE_SIZE as usize],
            )
        })
        .collect();
    let root = FileHash::from_bytes(*blake3::hash(&bytes).as_bytes());
    let proof = build_proof(&cvs, 0, 8).unwrap();
    let piece = &bytes[..PIECE_SIZE as usize];
    let mut group = c.benchmark_group("pieces");
    group.throughput(Throughput::Bytes(PIECE_SIZE));
    group.bench_function("verify one 1 MiB piece", |b| {
        b.iter(|| {
            verify_piece(
                &root,
                len as u64,
                0,
                Some(&cvs[0]),
                std::hint::black_box(piece),
            )
        })
    });
    group.throughput(Throughput::Elements(8));
    group.bench_function("verify the proof of 8 pieces", |b| {
        b.iter(|| verify_proof(&root, len as u64, 0, 8, std::hint::black_box(&proof)))
    });
    group.finish();
}

/// One TLS 1.3 handshake between a downloader and a source, both ends in this thread: the
/// certificate check pinned to the source's key, X25519, one Ed25519 signature and its check.
fn peer_handshake(c: &mut Criterion) {
    let source = peerdex_client::Identity::generate().unwrap();
    let server_config = source.tls_server_config().unwrap();
    let client_config = peerdex_shared::tls::peer_client_config(source.peer_id());
    let mut group = c.benchmark_group("peer_tls");
    group.bench_function("handshake", |b| {
        b.iter(|| {
            let mut server = rustls::ServerConnection::new(server_config.clone()).unwrap();
            let mut client = rustls::ClientConnection::new(
                client_config.clone(),
                peerdex_shared::tls::peer_server_name(),
            )
            .unwrap();
            while client.is_handshaking() || server.is_handshaking() {
                let mut wire = Vec::new();
                client.write_tls(&mut wire).unwrap();
                server.read_tls(&mut wire.as_slice()).unwrap();
                server.process_new_packets().unwrap();
                wire.clear();
                server.write_tls(&mut wire).unwrap();
                client.read_tls(&mut wire.as_slice()).unwrap();
                client.process_new_packets().unwrap();
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    tokenizing,
    query_building,
    piece_verification,
    peer_handshake
);
criterion_main!(benches);
