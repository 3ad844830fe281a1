//! Helpers the integration tests of several crates share, kept in one place so the copies cannot
//! drift. A dev-dependency only (never published, never linked into a shipped binary; the fuzz
//! workspace uses [`disk`] and [`tools`] too); panicking on failure is the point here: every
//! helper is test setup.
//!
//! - [`cli`]: the check that every flag and subcommand of a binary has help text.
//! - [`crc`]: CRC-32 and LVM's checksum, for building and re-sealing hostile images.
//! - [`disk`]: an in-memory disk; GPT, MBR/EBR and LVM2 PVs built byte by byte; resealing their
//!   checksums after a mutation (the probe tests and the fuzz targets share them).
//! - [`store`]: a ready store with its signing key, chunks of one byte, a disk's index and
//!   commit request, file times in the past.
//! - [`storage`]: the data backend a test store uses, from `FERRY_TEST_STORAGE` (local or an
//!   S3 cluster, a fresh key prefix per store).
//! - [`inventory`]: what an enrolling rescue agent reports (one blank disk, one NIC).
//! - [`pg`]: a throw-away PostgreSQL from scripts/pg.
//! - [`https`]: a client of the appliance's API that pins the store's CA, as the agents do.
//! - [`tools`]: the real disk tools (run, skip when missing) and sparse image files.

#![forbid(unsafe_code)]

pub mod cli;
pub mod crc;
pub mod disk;
pub mod https;
pub mod inventory;
pub mod pg;
pub mod storage;
pub mod store;
pub mod tools;
