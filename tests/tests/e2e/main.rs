//! End-to-end scenarios: real servers over real HTTP on 127.0.0.1.

#![allow(missing_docs, clippy::unwrap_used)]

mod connect_back;
mod durability;
mod lists;
mod presence;
mod registry;
mod search;
