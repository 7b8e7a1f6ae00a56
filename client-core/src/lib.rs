//! What every part of the peerdex client needs: the peer's key ([`Identity`]), the typed client
//! of the index server ([`ServerClient`], with the control stream and relay upgrades), the answer
//! to the server's connect-back probe, and byte counts for people.
//!
//! The download engine (`peerdex-download`), the agent (`peerdex-agent`) and the command line
//! (`peerdex`) build on this crate; it knows none of them.

pub mod connect_back;
pub mod identity;
pub mod login;
pub mod server_api;
pub mod tls;
pub use peerdex_shared::units;

pub use identity::Identity;
pub use server_api::ServerClient;
