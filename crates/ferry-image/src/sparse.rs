//! The read path shared by qcow2 and sparse VMDK: both cut the guest disk into fixed-size blocks
//! (clusters, grains) that a two-level table maps to "zero", "stored at host offset X" or
//! "compressed at host offset X". Each format only answers `map(block)`; this module turns guest
//! ranges into block pieces, merges adjacent stored blocks into one pread, and inflates
//! compressed blocks through a one-block cache.

use crate::cache::LastBlock;
use crate::file::{check_guest_range, ImageFile};
use crate::{ImageError, ImageFormat};

/// Where one guest block lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// Reads as zeros: unallocated or explicitly zeroed. `run` (at least 1) is how many blocks
    /// from this one on are known to be zero without another lookup (a missing L2 table or GT
    /// covers many blocks), so range queries over empty regions stay cheap.
    Zero { run: u64 },
    /// Stored verbatim at this host offset (block-aligned in the format's sense, inside the file).
    Data(u64),
    /// Stored compressed; `host` and `len` are the format's own description of the stream.
    Compressed { host: u64, len: u64 },
}

pub(crate) trait BlockMap {
    fn file(&self) -> &ImageFile;
    fn format(&self) -> ImageFormat;
    /// Guest-visible size in bytes.
    fn guest_size(&self) -> u64;
    /// Block size in bytes: a power of two.
    fn block_size(&self) -> u64;
    /// Look up one block; `block * block_size() < guest_size()`.
    fn map(&self, block: u64) -> Result<Mapping, ImageError>;
    /// Decompress one block. The result is exactly `block_size()` bytes.
    fn inflate(&self, block: u64, host: u64, len: u64) -> Result<Vec<u8>, ImageError>;
    fn last_block(&self) -> &LastBlock;
}

/// A run of guest bytes that maps to consecutive host bytes, waiting to be read in one pread.
struct PendingRun {
    buf_start: usize,
    host: u64,
    len: usize,
}

pub(crate) fn read_at(map: &impl BlockMap, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
    check_guest_range(map.file().path(), map.guest_size(), offset, buf.len())?;
    let bs = map.block_size();
    let mut pending: Option<PendingRun> = None;
    let mut done = 0usize;
    while done < buf.len() {
        // `done < buf.len()` and the range check above keep these sums in range.
        let pos = offset + done as u64;
        let block = pos / bs;
        let in_block = pos % bs;
        let piece =
            usize::try_from(bs - in_block).map_or(buf.len() - done, |p| p.min(buf.len() - done));
        let mapping = map.map(block)?;
        let host = match mapping {
            Mapping::Data(h) => Some(h + in_block),
            _ => None,
        };
        // Extend the pending run when this piece continues it on the host, else flush it.
        if let (Some(run), Some(h)) = (pending.as_mut(), host) {
            if run.host + run.len as u64 == h {
                run.len += piece;
                done += piece;
                continue;
            }
        }
        if let Some(run) = pending.take() {
            flush(map.file(), buf, &run)?;
        }
        let out = &mut buf[done..done + piece];
        match mapping {
            Mapping::Zero { .. } => out.fill(0),
            Mapping::Data(_) => {
                pending = host.map(|h| PendingRun {
                    buf_start: done,
                    host: h,
                    len: piece,
                });
            }
            Mapping::Compressed { host, len } => {
                let data = map
                    .last_block()
                    .get_or_load(block, || map.inflate(block, host, len))?;
                let start = in_block as usize;
                let src = data.get(start..start + piece).ok_or_else(|| {
                    map.file().corrupt(
                        map.format(),
                        format!("compressed block {block} inflated short"),
                    )
                })?;
                out.copy_from_slice(src);
            }
        }
        done += piece;
    }
    if let Some(run) = pending {
        flush(map.file(), buf, &run)?;
    }
    Ok(())
}

fn flush(file: &ImageFile, buf: &mut [u8], run: &PendingRun) -> Result<(), ImageError> {
    file.read_zero_padded(&mut buf[run.buf_start..run.buf_start + run.len], run.host)
}

/// True only when every block touching `offset..offset+len` maps to zeros. Lookup errors and
/// out-of-range queries answer `false` ("unknown"); the read path reports the error instead.
pub(crate) fn known_zero(map: &impl BlockMap, offset: u64, len: u64) -> bool {
    let Some(end) = offset.checked_add(len) else {
        return false;
    };
    if end > map.guest_size() {
        return false;
    }
    if len == 0 {
        return true;
    }
    let bs = map.block_size();
    let last = (end - 1) / bs;
    let mut block = offset / bs;
    while block <= last {
        match map.map(block) {
            Ok(Mapping::Zero { run }) => match block.checked_add(run.max(1)) {
                Some(next) => block = next,
                None => return true,
            },
            _ => return false,
        }
    }
    true
}

/// Check a decompressed block: it must fill the block, or at least the part of it inside the
/// guest disk (writers may stop at the disk's end); the rest is zero-filled. A stream that
/// produced more than a block was rejected by the fixed-size output buffer already.
pub(crate) fn finish_block(
    map: &impl BlockMap,
    block: u64,
    mut out: Vec<u8>,
    produced: u64,
) -> Result<Vec<u8>, ImageError> {
    let bs = map.block_size();
    let start = block.saturating_mul(bs);
    let needed = map.guest_size().saturating_sub(start).min(bs);
    if produced < needed {
        return Err(map.file().corrupt(
            map.format(),
            format!(
                "compressed block at guest offset {start} inflates to {produced} bytes, expected {needed}"
            ),
        ));
    }
    let produced = produced as usize;
    if let Some(rest) = out.get_mut(produced..) {
        rest.fill(0);
    }
    Ok(out)
}

/// Inflate `input` into `out`, a zlib (RFC 1950) stream when `zlib`, else raw deflate (RFC 1951).
/// Returns how many bytes it produced. Stops when the stream ends or `out` is full: qcow2's
/// compressed clusters carry sector padding after the stream, and qemu accepts a full buffer.
pub(crate) fn inflate(input: &[u8], zlib: bool, out: &mut [u8]) -> Result<u64, String> {
    let mut d = flate2::Decompress::new(zlib);
    loop {
        let (in_pos, out_pos) = (d.total_in() as usize, d.total_out() as usize);
        let (Some(src), Some(dst)) = (input.get(in_pos..), out.get_mut(out_pos..)) else {
            return Err("decompressor overran its buffers".into());
        };
        if dst.is_empty() {
            return Ok(d.total_out());
        }
        let status = d
            .decompress(src, dst, flate2::FlushDecompress::Finish)
            .map_err(|e| format!("invalid compressed data: {e}"))?;
        let progressed = d.total_in() as usize != in_pos || d.total_out() as usize != out_pos;
        if status == flate2::Status::StreamEnd || !progressed {
            return Ok(d.total_out());
        }
    }
}
