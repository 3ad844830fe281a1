//! The snapshot manifest: what a snapshot holds and what restore and fix-up need to know about it.
//!
//! A manifest is JSON. The appliance signs the exact bytes it stores (see [`crate::signing`]) and
//! every disk's index is bound to it by its BLAKE3 digest, so a verified manifest vouches for every
//! index and, through the indexes' chunk ids, for every byte of the snapshot.

use serde::{Deserialize, Serialize};

use crate::chunk::{check_chunk_size, ChunkId};
use crate::layout::DiskLayout;
use crate::names::{check_name, NameKind};
use crate::FormatError;

/// Version of the manifest format. Readers refuse versions they do not know.
pub const MANIFEST_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub version: u32,
    /// Snapshot id, assigned by the appliance at commit.
    pub snapshot: String,
    pub machine: String,
    /// Commit time, RFC 3339 UTC, assigned by the appliance.
    pub created: String,
    pub chunk_size: u32,
    pub disks: Vec<DiskManifest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<OsFacts>,
    /// Version of the backup-agent that read the disks.
    pub agent: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskManifest {
    /// The disk's name within the snapshot (jobs map it to a target).
    pub name: String,
    pub size: u64,
    pub logical_sector_size: u32,
    /// Where backup-agent read it (informational).
    pub source: String,
    /// Container format of the source: raw, block-device, qcow2, vmdk-sparse, vmdk-stream.
    pub source_format: String,
    /// BLAKE3 of the encoded disk index.
    pub index_digest: ChunkId,
    pub chunks: ChunkCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<DiskLayout>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkCounts {
    pub data: u64,
    pub zero: u64,
    pub unused: u64,
}

/// What is known of the operating system on the snapshot's disks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsFacts {
    /// linux, windows or unknown.
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distro: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// bios or uefi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_loader: Option<String>,
}

impl Manifest {
    /// Structural checks every reader runs after parsing (and the appliance before signing).
    pub fn check(&self) -> Result<(), FormatError> {
        if self.version != MANIFEST_VERSION {
            return Err(FormatError::Manifest(format!(
                "manifest version {} is not supported (this build reads version {MANIFEST_VERSION})",
                self.version
            )));
        }
        check_name(NameKind::Machine, &self.machine)?;
        check_chunk_size(self.chunk_size)?;
        if self.disks.is_empty() {
            return Err(FormatError::Manifest("the manifest lists no disks".into()));
        }
        for (i, d) in self.disks.iter().enumerate() {
            check_name(NameKind::Disk, &d.name)?;
            if self.disks[..i].iter().any(|o| o.name == d.name) {
                return Err(FormatError::Manifest(format!(
                    "disk name {:?} appears twice",
                    d.name
                )));
            }
            if !matches!(d.logical_sector_size, 512 | 4096) {
                return Err(FormatError::Manifest(format!(
                    "disk {:?} has logical sector size {}; only 512 and 4096 are supported",
                    d.name, d.logical_sector_size
                )));
            }
        }
        Ok(())
    }

    pub fn disk(&self, name: &str) -> Option<&DiskManifest> {
        self.disks.iter().find(|d| d.name == name)
    }
}
