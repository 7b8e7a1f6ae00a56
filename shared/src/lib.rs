//! Wire types and validation shared by the peerdex index server and client.
//!
//! This crate owns what both sides of the protocol must agree on byte for byte: the JSON request and
//! response bodies, the content hash and peer id types, the messages peers sign, the rules that
//! decide whether a share name, path or nickname is acceptable, the index server's routes
//! (`routes`) and the peer wire protocol (`peer`: routes, headers, limits of the file server).
//!
//! Invariant: no I/O, no async runtime. Everything here is pure and cheap to unit test.

pub mod api;
pub mod folder;
pub mod hash;
pub mod identity;
pub mod kind;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod peer;
pub mod pieces;
pub mod process;
pub mod rate;
pub mod routes;
pub mod scope;
pub mod social;
pub mod tls;
pub mod units;
pub mod validate;
pub mod web;

pub use hash::{FileHash, ParseHexError};
pub use identity::{PeerId, PeerSignature};
pub use kind::FileKind;
