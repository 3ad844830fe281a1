//! Bounds-checked windows onto a disk: the whole disk, a partition, or an LV's segments.

use ferry_image::DiskSource;

use crate::ProbeError;

/// A byte range of a view mapped onto the disk.
#[derive(Clone, Copy, Debug)]
struct Part {
    /// Offset inside the view.
    start: u64,
    len: u64,
    /// Absolute disk offset of `start`.
    disk_offset: u64,
}

/// A readable window: reads outside it return `None`, never touch the disk.
pub(crate) struct View<'a> {
    disk: &'a dyn DiskSource,
    /// Contiguous, in order, starting at 0.
    parts: Vec<Part>,
    len: u64,
}

impl<'a> View<'a> {
    pub(crate) fn whole(disk: &'a dyn DiskSource) -> View<'a> {
        let len = disk.size();
        View {
            disk,
            parts: vec![Part {
                start: 0,
                len,
                disk_offset: 0,
            }],
            len,
        }
    }

    /// `len` bytes at disk offset `offset`; `None` when that range is not inside the disk.
    pub(crate) fn slice(disk: &'a dyn DiskSource, offset: u64, len: u64) -> Option<View<'a>> {
        (offset.checked_add(len)? <= disk.size()).then(|| View {
            disk,
            parts: vec![Part {
                start: 0,
                len,
                disk_offset: offset,
            }],
            len,
        })
    }

    /// A view made of ranges `(offset, len)` of this view, concatenated in order; `None` when a
    /// range is outside this view or the total overflows.
    pub(crate) fn remap(&self, ranges: &[(u64, u64)]) -> Option<View<'a>> {
        let mut parts = Vec::with_capacity(ranges.len());
        let mut start = 0u64;
        for &(offset, len) in ranges {
            if offset.checked_add(len)? > self.len {
                return None;
            }
            for (piece_offset, piece_len) in self.pieces(offset, len) {
                parts.push(Part {
                    start,
                    len: piece_len,
                    disk_offset: piece_offset,
                });
                start = start.checked_add(piece_len)?;
            }
        }
        Some(View {
            disk: self.disk,
            parts,
            len: start,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The absolute disk offset of view offset `offset` (for error messages); the view's end
    /// maps past its last byte.
    pub(crate) fn disk_offset(&self, offset: u64) -> u64 {
        match self.pieces(offset.min(self.len), 1).next() {
            Some((disk_offset, _)) => disk_offset,
            None => self.parts.last().map_or(0, |p| p.disk_offset + p.len),
        }
    }

    /// Read `len` bytes at `offset`; `Ok(None)` when the range is not inside the view.
    pub(crate) fn read(&self, offset: u64, len: usize) -> Result<Option<Vec<u8>>, ProbeError> {
        let Some(end) = offset.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.len {
            return Ok(None);
        }
        let mut buf = vec![0u8; len];
        let mut at = 0usize;
        for (disk_offset, piece_len) in self.pieces(offset, len as u64) {
            let piece = piece_len as usize; // <= len
            read_disk(self.disk, &mut buf[at..at + piece], disk_offset)?;
            at += piece;
        }
        Ok(Some(buf))
    }

    /// True when the source proves `offset..offset+len` of the view is zeros.
    pub(crate) fn known_zero(&self, offset: u64, len: u64) -> bool {
        offset.checked_add(len).is_some_and(|end| end <= self.len)
            && self
                .pieces(offset, len)
                .all(|(disk_offset, piece)| self.disk.known_zero(disk_offset, piece))
    }

    /// The disk ranges `(disk_offset, len)` covering view range `offset..offset+len`, clipped
    /// to the view.
    pub(crate) fn disk_ranges(
        &self,
        offset: u64,
        len: u64,
    ) -> impl Iterator<Item = (u64, u64)> + '_ {
        let end = offset.saturating_add(len).min(self.len);
        self.pieces(offset.min(end), end - offset.min(end))
    }

    /// The disk ranges `(disk_offset, len)` covering view range `offset..offset+len`, which the
    /// caller has checked is inside the view.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let end = offset.saturating_add(len);
        let first = self.parts.partition_point(|p| p.start + p.len <= offset);
        self.parts[first..]
            .iter()
            .take_while(move |p| p.start < end)
            .map(move |p| {
                let from = offset.max(p.start);
                let to = end.min(p.start + p.len);
                (p.disk_offset + (from - p.start), to - from)
            })
    }
}

/// Read `buf.len()` bytes at absolute `offset`, which the caller has checked is inside the disk.
pub(crate) fn read_disk(
    disk: &dyn DiskSource,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), ProbeError> {
    disk.read_at(buf, offset)
        .map_err(|source| ProbeError::Read {
            offset,
            len: buf.len() as u64,
            source,
        })
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Bytes up to the first NUL, as text (labels are not always UTF-8).
pub(crate) fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}
