//! The peerdex client: the agent that shares folders and the command line that searches and
//! downloads.
//!
//! At this stage it holds the pieces every later part builds on: the peer's persistent identity,
//! the typed client of the index server, and the connect-back answer of the peer HTTP server.

pub mod connect_back;
pub mod identity;
pub mod server_api;

pub use identity::Identity;
pub use server_api::ServerClient;
