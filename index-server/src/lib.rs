//! The peerdex index server.
//!
//! Layers, outermost first: `cli` (flags, config) → `server` (bind, accept loop, shutdown,
//! maintenance) → `http` (routes, errors, list streaming) → `db` (SQLite, source of truth) and
//! `index` (tantivy, derived), with `holders` caching who holds what for results and `search`
//! the service between handlers and store (result pages, sources, and what they say). `text` and `query` turn names and queries into terms; `presence`,
//! `limits` and `probe` guard who is online, how often, and whether an address is really theirs;
//! `events` and `social` carry contacts' presence, messages and other live events to accounts.

pub mod accounts;
pub mod admin;
pub mod cli;
pub mod config;
pub mod db;
pub mod events;
pub mod holders;
pub mod http;
pub mod index;
pub mod limits;
pub mod metrics;
pub mod partials;
pub mod presence;
pub mod probe;
pub mod query;
pub mod schema;
pub mod scope;
pub mod search;
pub mod server;
pub mod social;
pub mod state;
pub mod text;
pub mod tls;
pub mod transfers;
pub mod wishes;

pub use config::Config;
pub use server::Server;
