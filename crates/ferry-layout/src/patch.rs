//! Byte patches: exact bytes at a disk offset, written after the snapshot's data.

use serde::{Serialize, Serializer};

/// Write `bytes` at disk byte `offset`. Patches of one disk never overlap and are sorted by
/// offset, so their order of application does not matter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Patch {
    pub offset: u64,
    /// Lowercase hex in JSON.
    #[serde(serialize_with = "hex")]
    pub bytes: Vec<u8>,
    /// What the bytes are, for the plan's text ("primary GPT header", ...).
    pub why: String,
}

impl Patch {
    /// First byte after the patch.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.bytes.len() as u64)
    }

    /// Copy the part of this patch that falls inside `buf`, which holds the disk's bytes from
    /// `buf_offset` (a chunk held back by the restore engine, say). Returns whether any byte of
    /// `buf` was changed by the patch.
    pub fn apply_to(&self, buf_offset: u64, buf: &mut [u8]) -> bool {
        let buf_end = buf_offset.saturating_add(buf.len() as u64);
        let (start, end) = (self.offset.max(buf_offset), self.end().min(buf_end));
        if start >= end {
            return false;
        }
        let (src, dst) = (
            (start - self.offset) as usize,
            (start - buf_offset) as usize,
        );
        let len = (end - start) as usize;
        buf[dst..dst + len].copy_from_slice(&self.bytes[src..src + len]);
        true
    }
}

fn hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let text: String = bytes
        .iter()
        .flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]])
        .map(char::from)
        .collect();
    s.serialize_str(&text)
}

/// Collects writes; a later write wins where it overlaps an earlier one, and overlapping or
/// touching writes become one patch.
#[derive(Default)]
pub(crate) struct PatchSet {
    patches: Vec<Patch>,
}

impl PatchSet {
    pub(crate) fn write(&mut self, offset: u64, bytes: Vec<u8>, why: impl Into<String>) {
        let mut new = Patch {
            offset,
            bytes,
            why: why.into(),
        };
        let mut i = 0;
        while i < self.patches.len() {
            let old = &self.patches[i];
            if old.offset <= new.end() && new.offset <= old.end() {
                let old = self.patches.remove(i);
                new = merge(old, new);
            } else {
                i += 1;
            }
        }
        self.patches.push(new);
    }

    pub(crate) fn zero(&mut self, offset: u64, len: usize, why: impl Into<String>) {
        self.write(offset, vec![0; len], why);
    }

    pub(crate) fn into_sorted(mut self) -> Vec<Patch> {
        self.patches.sort_by_key(|p| p.offset);
        self.patches
    }
}

/// `old` under `new` (the ranges overlap or touch).
fn merge(old: Patch, new: Patch) -> Patch {
    let offset = old.offset.min(new.offset);
    let end = old.end().max(new.end());
    let mut bytes = vec![0; (end - offset) as usize];
    let at = |p: &Patch| (p.offset - offset) as usize;
    bytes[at(&old)..at(&old) + old.bytes.len()].copy_from_slice(&old.bytes);
    bytes[at(&new)..at(&new) + new.bytes.len()].copy_from_slice(&new.bytes);
    let why = if old.why.split("; ").any(|w| w == new.why) {
        old.why
    } else {
        format!("{}; {}", old.why, new.why)
    };
    Patch { offset, bytes, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_writes_win_and_merge() {
        let mut s = PatchSet::default();
        s.zero(10, 10, "a");
        s.write(15, vec![1; 10], "b");
        s.write(100, vec![2; 2], "c");
        let p = s.into_sorted();
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].offset, p[0].bytes.len(), p[0].why.as_str()),
            (10, 15, "a; b")
        );
        assert_eq!(&p[0].bytes[4..6], &[0, 1]);
        assert_eq!(p[1].offset, 100);
    }

    #[test]
    fn apply_to_clips_to_the_buffer() {
        let p = Patch {
            offset: 6,
            bytes: vec![9; 4],
            why: String::new(),
        };
        let mut buf = [0u8; 8];
        assert!(p.apply_to(0, &mut buf));
        assert_eq!(buf, [0, 0, 0, 0, 0, 0, 9, 9]);
        let mut buf = [0u8; 4];
        assert!(p.apply_to(8, &mut buf));
        assert_eq!(buf, [9, 9, 0, 0]);
        assert!(!p.apply_to(10, &mut buf));
        assert_eq!(
            serde_json::to_string(&Patch {
                offset: 1,
                bytes: vec![0xab, 1],
                why: "x".into()
            })
            .unwrap(),
            r#"{"offset":1,"bytes":"ab01","why":"x"}"#
        );
    }
}
