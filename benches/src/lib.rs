//! Benchmarks and load generators for peerdex. Each program prints its results as a table row for
//! `BENCHMARKS.md`, with the baseline measured in the same run.

pub mod corpus;

/// Bytes of every file under `dir` (0 for what cannot be read).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// `n` synthetic list entries: eight artists (several scripts), 997 folders, numbered tracks
/// (`Beatles 17/Album 5/03 Track 1234.mp3`), each its own content.
pub fn synthetic(n: u64) -> Vec<peerdex_shared::api::ListEntry> {
    synthetic_from(0, n)
}

/// Like [`synthetic`], numbered from `first` (contents `c{number}`).
pub fn synthetic_from(first: u64, n: u64) -> Vec<peerdex_shared::api::ListEntry> {
    let artists = [
        "Beatles",
        "Beyoncé",
        "아이유",
        "Кино",
        "Sigur Rós",
        "Nirvana",
        "Queen",
        "千と千尋",
    ];
    (first..first + n)
        .map(|i| {
            let artist = artists[(i % 8) as usize];
            peerdex_tests::entry(
                &format!(
                    "{artist} {}/Album {}/{:02} Track {i}.mp3",
                    i % 997,
                    i % 31,
                    i % 20
                ),
                3_000_000 + i,
                &format!("c{i}"),
            )
        })
        .collect()
}
