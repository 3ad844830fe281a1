//! Helpers the integration tests of several crates share, kept in one place so the copies cannot
//! drift. A dev-dependency only (never published, never linked into a binary); panicking on
//! failure is the point here: every helper is test setup.
//!
//! - [`crc`]: CRC-32 and LVM's checksum, for building and re-sealing hostile images.
//! - [`store`]: a ready store with its signing key, chunks of one byte, a disk's index and
//!   commit request, file times in the past.
//! - [`https`]: a client of the appliance's API that pins the store's CA, as the agents do.
//! - [`tools`]: the real disk tools (run, skip when missing) and sparse image files.

#![forbid(unsafe_code)]

pub mod crc;
pub mod https;
pub mod store;
pub mod tools;
