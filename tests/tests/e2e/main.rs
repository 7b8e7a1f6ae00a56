//! End-to-end scenarios: real servers and agents over real HTTP on 127.0.0.1.

#![allow(missing_docs, clippy::unwrap_used)]

mod agent;
mod browser;
mod cli;
mod commands;
mod compat;
mod connect_back;
mod download;
mod durability;
mod firewalled;
mod hostile;
mod liars;
mod lists;
mod load;
mod media;
mod metrics;
mod openapi;
mod peer_server;
mod presence;
mod registry;
mod scopes;
mod search;
mod services;
mod social;
mod tls;
mod transfers;
mod web_client;
