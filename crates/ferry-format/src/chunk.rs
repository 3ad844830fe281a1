//! Chunk ids and chunk sizes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::FormatError;

/// Default chunk size: 4 MiB. Chunks are aligned to disk offset 0.
pub const DEFAULT_CHUNK_SIZE: u32 = 4 << 20;
/// Smallest chunk size a snapshot may use (64 KiB).
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
/// Largest chunk size a snapshot may use (64 MiB); also bounds every decompression.
pub const MAX_CHUNK_SIZE: u32 = 64 << 20;

/// Check a chunk size: a power of two between [`MIN_CHUNK_SIZE`] and [`MAX_CHUNK_SIZE`].
pub fn check_chunk_size(size: u32) -> Result<u32, FormatError> {
    if size.is_power_of_two() && (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&size) {
        Ok(size)
    } else {
        Err(FormatError::ChunkSize(size))
    }
}

/// BLAKE3-256 of a chunk's plaintext. Frozen format: never change the hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        ChunkId(*blake3::hash(data).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The two-level fan-out used by the chunk store: `ab/cd/abcd…`.
    pub fn store_prefix(&self) -> String {
        hex::encode(&self.0[..2])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl FromStr for ChunkId {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 {
            return Err(FormatError::ChunkIdText(s.chars().take(80).collect()));
        }
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| FormatError::ChunkIdText(s.chars().take(80).collect()))?;
        Ok(ChunkId(out))
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// True when every byte of `data` is zero (such chunks are never stored).
pub fn is_zero(data: &[u8]) -> bool {
    // OR-fold fixed blocks so the compiler vectorises it: this runs over every byte a backup reads.
    let mut blocks = data.chunks_exact(64);
    blocks
        .by_ref()
        .all(|b| b.iter().fold(0u8, |a, &x| a | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_round_trips_through_text() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_hex().parse::<ChunkId>().unwrap(), id);
        assert!("xyz".parse::<ChunkId>().is_err());
        assert!("g".repeat(64).parse::<ChunkId>().is_err());
    }

    #[test]
    fn chunk_sizes_are_checked() {
        assert!(check_chunk_size(DEFAULT_CHUNK_SIZE).is_ok());
        assert!(check_chunk_size(3 << 20).is_err());
        assert!(check_chunk_size(4096).is_err());
        assert!(check_chunk_size(128 << 20).is_err());
    }

    #[test]
    fn zero_detection_handles_unaligned_tails() {
        let mut v = vec![0u8; 4099];
        assert!(is_zero(&v[1..]));
        v[4098] = 1;
        assert!(!is_zero(&v[1..]));
        v[4098] = 0;
        v[1] = 1;
        assert!(!is_zero(&v[1..]));
    }
}
