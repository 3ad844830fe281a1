//! Where a restore reads a snapshot's description: the seam [`super::gather`] reads through.
//! Chunks come through [`crate::pipeline::ChunkStore`].

use ferry_client::Client;
use ferry_format::{DiskIndex, Manifest};

use crate::EngineError;

/// A snapshot's manifest and indexes, verified before they are returned.
pub trait SnapshotSource {
    /// The manifest of `snapshot`, its signature verified and its structure checked.
    fn manifest(&self, snapshot: &str) -> Result<Manifest, EngineError>;
    /// The index of `disk`, checked against the digest the (verified) manifest records.
    fn index(&self, manifest: &Manifest, disk: &str) -> Result<DiskIndex, EngineError>;
}

/// The appliance: [`Client::manifest`] and [`Client::index`] do the verifying.
impl SnapshotSource for Client {
    fn manifest(&self, snapshot: &str) -> Result<Manifest, EngineError> {
        Ok(Client::manifest(self, snapshot)?)
    }
    fn index(&self, manifest: &Manifest, disk: &str) -> Result<DiskIndex, EngineError> {
        Ok(Client::index(self, manifest, disk)?)
    }
}
