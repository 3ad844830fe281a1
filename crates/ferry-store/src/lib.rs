//! The appliance's store: chunks, snapshots, open backup sessions, tokens and keys. No HTTP
//! here; `ferry-server` serves it. Chunks, session indexes and snapshots go through a data
//! backend ([`data`]): the store's own directory (below) or an S3 bucket, as config.json says.
//! Records (tokens, sessions, agents, jobs, beacons, sources, migrations) go through [`meta`]:
//! the files below, or PostgreSQL for several nodes. Everything else stays in the directory.
//! docs/store.md is the byte-exact description of the layout:
//!
//! ```text
//! DIR/config.json                 {"name": ..., "version": 1}
//! DIR/tokens.json                 token hash -> role, created
//! DIR/ca.pem                      trust bundle: CA certificate + manifest signing public key
//! DIR/keys/                       ca.key ca.pem server.key server.pem signing.pk8 (private: 0600)
//! DIR/chunks/.lock                advisory lock between the server and GC
//! DIR/chunks/abcd/<64 hex>        a chunk: the zstd frame exactly as uploaded (and verified)
//! DIR/damaged/<64 hex>            a chunk `verify` found bad, moved out of chunks/
//! DIR/verify.state                checkpoint of an interrupted `verify`
//! DIR/sessions/<session>.json     an open backup session
//! DIR/tmp/<session>/<disk>.index  indexes uploaded by an open session
//! DIR/snapshots/<id>/             manifest.json manifest.sig <disk>.index
//! DIR/trash/                      snapshots being deleted by prune
//! DIR/agents/<agent>.json         an enrolled agent: inventory, state, credential hash
//! DIR/jobs/<job>.json             a restore job; jobs/<job>.events.jsonl its event log
//! DIR/sources/<machine>.json      a source machine: schedule, credential hash, sync tasks, pins
//! DIR/migrations/<id>.json        a migration: machine, standby agent and job, state, standby status
//! ```
//!
//! Invariants:
//! - Every file is written to a temporary name in its directory, fsynced and renamed, so a
//!   reader sees all of it or nothing. A snapshot appears by renaming a complete directory from
//!   `tmp/` into `snapshots/` after all its chunks are durable (syncfs): a crash leaves nothing
//!   half-visible. On S3 ([`data::s3`]) the snapshot's objects are written first and its
//!   `manifest.sig` last: it exists iff that object does.
//! - A stored chunk is one canonical zstd frame that decompresses to data whose BLAKE3 is its
//!   file name (checked on upload; `verify` re-checks and moves damaged ones to `damaged/`).
//! - Garbage collection ([`gc`]) deletes only chunks whose mtime is older than both its own start
//!   and the pin of every live session (its start, at most a day before its last request), minus
//!   a margin; the server touches every chunk a session relies on while holding `chunks/.lock`
//!   shared (again at index upload and commit), GC unlinks while holding it exclusive. So GC may
//!   run in another process while backups are running. On S3 the marks and the lock are the
//!   chunk catalogue's ([`data::catalogue`]): marker files, or a table and advisory locks in
//!   PostgreSQL shared by every node of the store.
//! - Every file the store creates is 0600, every directory 0700, and a record's directory is
//!   fsynced after its rename ([`fsx`]).

// System calls (syncfs, utimensat, flock) go through nix.
#![forbid(unsafe_code)]

pub mod agents;
pub mod beacons;
pub mod chunks;
pub mod config;
pub mod data;
pub mod error;
pub mod fsx;
pub mod gc;
pub mod index_file;
pub mod jobs;
pub mod keys;
pub mod meta;
pub mod migrations;
pub mod prune;
pub mod reads;
pub mod relocate;
pub mod sessions;
pub mod snapshots;
pub mod sources;
pub mod state;
pub mod tokens;
pub mod verify;
pub mod views;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Result, StoreError};

/// Version of the store layout written in config.json.
pub const STORE_VERSION: u32 = 1;

/// A store rooted at a directory, its data where config.json says. Cheap to clone; holds no
/// open files.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
    config: config::StoreConfig,
    data: Arc<dyn data::DataBackend>,
    /// Agents, jobs, sources, migrations, sessions, beacons, tokens ([`meta`]).
    records: Arc<dyn meta::Records>,
}

impl Store {
    /// Open an existing store (one `appliance init` created).
    pub fn open(root: &Path) -> Result<Store> {
        let config = config::StoreConfig::load(root)?;
        let records = meta::open_records(root, &config.records)?;
        let data = data::open_backend(root, &config.storage, records.as_ref())?;
        Ok(Store {
            root: root.to_path_buf(),
            config,
            data,
            records,
        })
    }

    /// Where chunks, session indexes and snapshots live.
    pub fn data(&self) -> &dyn data::DataBackend {
        self.data.as_ref()
    }

    /// Where the records live: the store's directory, or PostgreSQL for several nodes.
    pub fn records(&self) -> &dyn meta::Records {
        self.records.as_ref()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config(&self) -> &config::StoreConfig {
        &self.config
    }

    // The directories of the local layout (docs/store.md); on S3 only `sessions/`, `tmp/`
    // (staging of index uploads) and `keys/` are used.
    pub fn chunks_dir(&self) -> PathBuf {
        self.root.join("chunks")
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn trash_dir(&self) -> PathBuf {
        self.root.join("trash")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }

    pub fn tokens_path(&self) -> PathBuf {
        self.root.join("tokens.json")
    }

    /// The trust bundle agents pin.
    pub fn trust_bundle_path(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn chunk_lock_path(&self) -> PathBuf {
        self.chunks_dir().join(".lock")
    }
}
