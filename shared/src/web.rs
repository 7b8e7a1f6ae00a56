//! What the index server's pages and the agent's web client look like: one stylesheet and one
//! icon, embedded in both binaries (nothing is fetched from elsewhere).

/// The stylesheet of every page (`/static/peerdex.css`).
pub const STYLESHEET: &str = include_str!("../static/peerdex.css");

/// The icon of every page (`/static/favicon.svg`).
pub const FAVICON: &str = include_str!("../static/favicon.svg");
