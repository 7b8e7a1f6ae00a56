//! Benchmarks and load generators for peerdex. Each program prints its results as a table row for
//! `BENCHMARKS.md`, with the baseline measured in the same run.

pub mod corpus;
