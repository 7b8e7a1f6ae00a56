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
