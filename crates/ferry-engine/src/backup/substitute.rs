//! A disk source with some byte ranges taken from other devices: how a backup reads an LV's
//! extents from its LVM snapshot instead of the live disk (`ferry_capture::Capture::
//! substitutions`), so the bytes of that LV are the snapshot's instant.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ferry_capture::extents::Substitution;
use ferry_image::{DiskSource, ImageError, ImageFormat};

/// Why substitutions cannot apply to a disk.
#[derive(Debug, thiserror::Error)]
pub enum SubstituteError {
    #[error("snapshot range {device} -> {disk} at {offset}+{len} lies past the end of the disk ({size} bytes); the LV's extent map is wrong, back up live or let it freeze")]
    PastEnd {
        disk: PathBuf,
        device: PathBuf,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("snapshot ranges of {disk} overlap at offset {offset}; the LV's extent map is wrong, back up live or let it freeze")]
    Overlap { disk: PathBuf, offset: u64 },
    #[error("open snapshot device {device}: {source}")]
    Open {
        device: PathBuf,
        source: std::io::Error,
    },
}

/// One range and the open device that holds its bytes.
struct Range {
    disk_offset: u64,
    len: u64,
    device: PathBuf,
    device_offset: u64,
    file: File,
}

/// `inner` with the ranges of `subs` read from their devices.
pub struct Substituted {
    inner: Box<dyn DiskSource>,
    /// Sorted by `disk_offset`, disjoint, inside the disk.
    ranges: Vec<Range>,
}

impl Substituted {
    /// Overlay the substitutions of `disk` (others are ignored) on `inner`; `inner` itself
    /// when there are none.
    pub fn over(
        inner: Box<dyn DiskSource>,
        disk: &Path,
        subs: &[Substitution],
    ) -> Result<Box<dyn DiskSource>, SubstituteError> {
        let mut mine: Vec<&Substitution> = subs
            .iter()
            .filter(|s| s.disk == disk && s.len > 0)
            .collect();
        if mine.is_empty() {
            return Ok(inner);
        }
        mine.sort_by_key(|s| s.disk_offset);
        let size = inner.size();
        let mut ranges: Vec<Range> = Vec::with_capacity(mine.len());
        for s in mine {
            if s.disk_offset
                .checked_add(s.len)
                .is_none_or(|end| end > size)
            {
                return Err(SubstituteError::PastEnd {
                    disk: disk.to_path_buf(),
                    device: s.device.clone(),
                    offset: s.disk_offset,
                    len: s.len,
                    size,
                });
            }
            if let Some(prev) = ranges.last() {
                if prev.disk_offset + prev.len > s.disk_offset {
                    return Err(SubstituteError::Overlap {
                        disk: disk.to_path_buf(),
                        offset: s.disk_offset,
                    });
                }
            }
            let file = File::open(&s.device).map_err(|source| SubstituteError::Open {
                device: s.device.clone(),
                source,
            })?;
            ranges.push(Range {
                disk_offset: s.disk_offset,
                len: s.len,
                device: s.device.clone(),
                device_offset: s.device_offset,
                file,
            });
        }
        Ok(Box::new(Substituted { inner, ranges }))
    }

    /// The first range that ends after `offset`.
    fn first_after(&self, offset: u64) -> usize {
        self.ranges
            .partition_point(|r| r.disk_offset + r.len <= offset)
    }
}

impl DiskSource for Substituted {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn logical_sector_size(&self) -> u32 {
        self.inner.logical_sector_size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), ImageError> {
        let end = offset.saturating_add(buf.len() as u64);
        let mut pos = offset;
        let mut i = self.first_after(offset);
        while pos < end {
            let at = (pos - offset) as usize;
            match self.ranges.get(i) {
                Some(r) if r.disk_offset <= pos => {
                    let stop = end.min(r.disk_offset + r.len);
                    let dev_off = r.device_offset + (pos - r.disk_offset);
                    let part = &mut buf[at..at + (stop - pos) as usize];
                    r.file
                        .read_exact_at(part, dev_off)
                        .map_err(|source| ImageError::Read {
                            path: r.device.clone(),
                            offset: dev_off,
                            source,
                        })?;
                    pos = stop;
                    i += 1;
                }
                next => {
                    let stop = next.map_or(end, |r| end.min(r.disk_offset));
                    self.inner
                        .read_at(&mut buf[at..at + (stop - pos) as usize], pos)?;
                    pos = stop;
                }
            }
        }
        Ok(())
    }

    fn known_zero(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        let overlaps = self
            .ranges
            .get(self.first_after(offset))
            .is_some_and(|r| r.disk_offset < end);
        !overlaps && self.inner.known_zero(offset, len)
    }

    fn format(&self) -> ImageFormat {
        self.inner.format()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files stand in for the disk and two snapshot devices.
    struct Fixture {
        _dir: tempfile::TempDir,
        disk: PathBuf,
        snap_a: PathBuf,
        snap_b: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        let snap_a = dir.path().join("snap-a");
        let snap_b = dir.path().join("snap-b");
        std::fs::write(&disk, vec![b'D'; 64 << 10]).unwrap();
        let a: Vec<u8> = (0..16 << 10).map(|i| (i % 251) as u8).collect();
        std::fs::write(&snap_a, a).unwrap();
        std::fs::write(&snap_b, vec![b'B'; 8 << 10]).unwrap();
        Fixture {
            _dir: dir,
            disk,
            snap_a,
            snap_b,
        }
    }

    fn sub(
        f: &Fixture,
        dev: &Path,
        disk_offset: u64,
        len: u64,
        device_offset: u64,
    ) -> Substitution {
        Substitution {
            disk: f.disk.clone(),
            disk_offset,
            len,
            device: dev.to_path_buf(),
            device_offset,
        }
    }

    /// What the overlay must read: the disk's bytes with each range replaced.
    fn expected(f: &Fixture, subs: &[Substitution]) -> Vec<u8> {
        let mut want = std::fs::read(&f.disk).unwrap();
        for s in subs {
            let dev = std::fs::read(&s.device).unwrap();
            let (d, o, l) = (
                s.disk_offset as usize,
                s.device_offset as usize,
                s.len as usize,
            );
            want[d..d + l].copy_from_slice(&dev[o..o + l]);
        }
        want
    }

    #[test]
    fn reads_take_substituted_ranges_from_their_devices() {
        let f = fixture();
        // Two LVs' extents (the second in two segments), listed out of order.
        let subs = vec![
            sub(&f, &f.snap_b, 40 << 10, 4 << 10, 4 << 10),
            sub(&f, &f.snap_a, 4096, 12 << 10, 1000),
            sub(&f, &f.snap_b, 30 << 10, 2 << 10, 0),
        ];
        let src = Substituted::over(ferry_image::open(&f.disk).unwrap(), &f.disk, &subs).unwrap();
        let want = expected(&f, &subs);
        // Reads inside, across and between the ranges, at odd sizes.
        for (off, len) in [
            (0usize, 64usize << 10),
            (0, 4096),
            (4000, 200),
            (5000, 10 << 10),
            (15 << 10, 20 << 10),
            (31 << 10, 10 << 10),
            (44 << 10, 20 << 10),
            (63 << 10, 1 << 10),
        ] {
            let mut buf = vec![0u8; len];
            src.read_at(&mut buf, off as u64).unwrap();
            assert!(buf == want[off..off + len], "read {off}+{len}");
        }
        assert!(!src.known_zero(0, 8192));
        assert_eq!(src.size(), 64 << 10);
    }

    #[test]
    fn other_disks_substitutions_leave_the_source_alone() {
        let f = fixture();
        let mut other = sub(&f, &f.snap_a, 0, 4096, 0);
        other.disk = "/dev/other".into();
        let src =
            Substituted::over(ferry_image::open(&f.disk).unwrap(), &f.disk, &[other]).unwrap();
        let mut buf = vec![0u8; 4096];
        src.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == b'D'));
    }

    #[test]
    fn bad_maps_are_refused_and_short_devices_fail_the_read() {
        let f = fixture();
        let open = || ferry_image::open(&f.disk).unwrap();
        let past = sub(&f, &f.snap_a, 60 << 10, 8 << 10, 0);
        let e = Substituted::over(open(), &f.disk, &[past]).err().unwrap();
        assert!(matches!(e, SubstituteError::PastEnd { .. }), "{e}");
        let overlap = [
            sub(&f, &f.snap_a, 0, 8192, 0),
            sub(&f, &f.snap_b, 4096, 4096, 0),
        ];
        let e = Substituted::over(open(), &f.disk, &overlap).err().unwrap();
        assert!(matches!(e, SubstituteError::Overlap { .. }), "{e}");
        let missing = sub(&f, Path::new("/nonexistent/ferry-snap"), 0, 4096, 0);
        let e = Substituted::over(open(), &f.disk, &[missing])
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/ferry-snap"), "{e}");
        // The device is shorter than the map says: the read fails naming the device.
        let short = sub(&f, &f.snap_b, 0, 16 << 10, 0);
        let src = Substituted::over(open(), &f.disk, &[short]).unwrap();
        let mut buf = vec![0u8; 16 << 10];
        let e = src.read_at(&mut buf, 0).unwrap_err();
        assert!(e.to_string().contains("snap-b"), "{e}");
    }
}
