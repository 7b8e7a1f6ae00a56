//! The peerdex client: the agent that shares folders and the command line that searches and
//! downloads.
//!
//! - [`agent`]: scan, hash, sync with the index server, serve files to peers.
//! - [`download`]: verified, multi-source, resumable downloads from peers.
//! - [`server_api`]: the typed client of the index server.
//! - [`connect_back`]: the answer to the index server's reachability probe.
//! - [`cli`]: the `peerdex` command line.

pub mod agent;
pub mod cli;
pub mod connect_back;
pub mod download;
pub mod identity;
pub mod server_api;
pub mod units;

pub use identity::Identity;
pub use server_api::ServerClient;
