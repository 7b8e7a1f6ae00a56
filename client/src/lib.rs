//! `peerdex`: the command line over the client crates (`peerdex-client`, `peerdex-download`,
//! `peerdex-agent`). The binary calls [`cli::main`]; the library exists so that the tests can run
//! the real `main` as a child process.

pub mod cli;
