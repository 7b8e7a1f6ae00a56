//! Where a download learns who holds a content (iroh-blobs calls it content discovery): the
//! index server in practice, a fixed answer in tests. The engine asks only through
//! [`SourceFinder`], so its scheduling, busy, end-game and re-ask behaviour can be tested
//! against peers on loopback without an index server.

use std::future::Future;
use std::pin::Pin;

use peerdex_client::ServerClient;
use peerdex_client::server_api::ApiError;
use peerdex_shared::FileHash;
use peerdex_shared::api::SourcesResponse;

/// A boxed future of a finder's answer.
pub type Found<'a> = Pin<Box<dyn Future<Output = Result<SourcesResponse, ApiError>> + Send + 'a>>;

/// Who holds a content, and who can ask firewalled holders to connect.
pub trait SourceFinder: Send + Sync + 'static {
    /// Every size online peers claim for `hash`, best evidence first, with their sources; an
    /// answer with the `not_found` code when nobody has it.
    fn find<'a>(&'a self, hash: &'a FileHash) -> Found<'a>;

    /// The index server that can ask a firewalled source to connect (reverse connections and
    /// the relay); `None`: only sources with verified addresses can be reached.
    fn broker(&self) -> Option<&ServerClient>;
}

impl SourceFinder for ServerClient {
    fn find<'a>(&'a self, hash: &'a FileHash) -> Found<'a> {
        Box::pin(self.sources(hash))
    }

    fn broker(&self) -> Option<&ServerClient> {
        Some(self)
    }
}
