//! Ferry's formats and wire types, shared by the agents and the appliance. No I/O here.
//!
//! - [`chunk`]: chunk ids (BLAKE3-256 of the plaintext), chunk sizes, and the canonical shape of
//!   a chunk's zstd frame (`check_frame`: what the appliance accepts and stores).
//! - [`index`]: the per-disk index, a frozen binary format.
//! - [`manifest`]: the snapshot manifest (JSON), signed by the appliance ([`signing`]); its
//!   [`consistency`] record says how the disks were read.
//! - [`layout`]: partition tables, LVM and filesystems captured at backup time.
//! - [`api`]: request and response bodies of the HTTPS API.
//! - [`agent`]: inventories, enrollment, restore jobs and their events (unattended restores).
//! - [`site`]: the rescue image's per-site settings file (`site.conf`), written by image-builder
//!   and read by PID 1.
//! - [`network`]: a machine's network configuration (interfaces, addresses, which config
//!   system holds them), recorded at backup time for the fix-up's NIC mapping and re-IP.
//! - [`marker`]: the in-progress marker an unattended restore writes on its targets.
//! - [`units`]: byte counts as people read them (`1.5 GiB`), one formatter for every crate.
//!
//! docs/format.md and docs/protocol.md describe the same formats for a second implementation.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod api;
pub mod chunk;
pub mod consistency;
pub mod index;
pub mod layout;
pub mod manifest;
pub mod marker;
pub mod names;
pub mod network;
pub mod signing;
pub mod site;
pub mod source;
pub mod units;
pub mod urls;

pub use chunk::{ChunkId, DEFAULT_CHUNK_SIZE};
pub use index::{DiskIndex, Entry};
pub use manifest::Manifest;

/// A value that does not follow the format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("chunk size {0} is not a power of two between 64 KiB and 64 MiB")]
    ChunkSize(u32),
    #[error("{0:?} is not a chunk id (64 hex digits)")]
    ChunkIdText(String),
    #[error("invalid disk index: {0}")]
    Index(String),
    #[error("invalid manifest: {0}")]
    Manifest(String),
    #[error("invalid {kind} {name:?}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")]
    Name { kind: &'static str, name: String },
    #[error("{0}")]
    Signature(String),
    #[error("invalid trust bundle: {0}")]
    Trust(String),
}
