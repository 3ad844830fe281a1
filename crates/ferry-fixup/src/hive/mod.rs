//! Reader and writer for Windows registry hive files ("regf"), with no C library: the
//! restore-agent is a static musl binary, so libhivex cannot be linked.
//!
//! Everything read from a hive is hostile: every offset and length is checked against the
//! file before it is used, and a corrupt hive gives a [`HiveError`] naming the file offset,
//! never a panic (a proptest over mutated real hives holds us to that).
//!
//! # Byte layout (all integers little-endian)
//!
//! ```text
//! base block (file offset 0, 4096 bytes)
//!   0x000 "regf"            0x004 primary sequence    0x008 secondary sequence
//!   0x00C last written (FILETIME)                     0x014 major (1)  0x018 minor (3..6)
//!   0x01C file type (0 = primary)  0x020 format (1)   0x024 root cell offset
//!   0x028 length of all hbins     0x02C clustering (1) 0x030 file name (UTF-16, 64 bytes)
//!   0x1FC checksum: XOR of the 127 dwords before it (0 -> 1, 0xFFFFFFFF -> 0xFFFFFFFE)
//! hbin (at 0x1000 + n*4096, size a multiple of 4096)
//!   0x00 "hbin"  0x04 offset of this hbin from 0x1000  0x08 size  0x14 timestamp
//!   0x20.. cells
//! cell: i32 size (negative = allocated, positive = free; includes these 4 bytes,
//!       8-byte aligned), then the record. "Cell offsets" are relative to 0x1000.
//! nk key:  0x00 "nk" 0x02 flags (0x20 = ASCII name, 0x04 = root) 0x04 FILETIME
//!          0x10 parent 0x14 #subkeys 0x18 #volatile 0x1C subkey list 0x20 volatile list
//!          0x24 #values 0x28 value list 0x2C sk 0x30 class 0x34 max subkey name bytes
//!          (UTF-16, low 16 bits) 0x38 max class bytes 0x3C max value name bytes
//!          0x40 max value data bytes 0x48 name length 0x4A class length 0x4C name
//! vk value: 0x00 "vk" 0x02 name length 0x04 data size (bit 31: data inline in the
//!          next field, at most 4 bytes) 0x08 data offset 0x0C type 0x10 flags
//!          (1 = ASCII name) 0x14 name
//! value list: a cell of u32 vk offsets
//! subkey lists: "lf" (u32 offset + 4-byte name hint), "lh" (u32 offset + u32 hash:
//!          h = h*37 + upcase(c) over UTF-16 units), "li" (u32 offset), "ri" (u32 offsets
//!          of li/lf/lh lists); u16 count at 0x02, entries from 0x04; sorted by the
//!          upper-cased name
//! sk security: 0x00 "sk" 0x04 flink 0x08 blink 0x0C reference count 0x10 length
//! db big data (minor >= 4, data > 16344 bytes): 0x00 "db" 0x02 #segments
//!          0x04 offset of a cell of u32 segment offsets, each up to 16344 bytes
//! ```
//!
//! Limits: transaction logs (.LOG1/.LOG2) are not replayed; a hive whose sequence numbers
//! differ ("dirty") is read as the primary file says ([`Hive::was_dirty`] tells).

use std::ops::Range;

mod write;

pub use write::filetime_now;

/// Offset of the first hbin; cell offsets are relative to it.
pub const BASE_BLOCK_LEN: usize = 0x1000;
const HBIN_HEADER_LEN: usize = 0x20;
/// "No cell" marker in offset fields.
pub(crate) const NO_CELL: u32 = 0xFFFF_FFFF;
/// Largest data in one cell before a "db" record is used (frozen by the format).
pub(crate) const BIG_DATA_SEGMENT: usize = 16344;
/// nk flag: the name is stored as Latin-1 bytes rather than UTF-16LE.
pub(crate) const KEY_COMP_NAME: u16 = 0x0020;
/// vk flag: the name is stored as Latin-1 bytes rather than UTF-16LE.
pub(crate) const VALUE_COMP_NAME: u16 = 0x0001;

pub const REG_NONE: u32 = 0;
pub const REG_SZ: u32 = 1;
pub const REG_EXPAND_SZ: u32 = 2;
pub const REG_BINARY: u32 = 3;
pub const REG_DWORD: u32 = 4;
pub const REG_MULTI_SZ: u32 = 7;

/// A hive that cannot be read or edited; `offset` is a file offset.
#[derive(Debug, thiserror::Error)]
#[error("read registry hive at file offset {offset:#x}: {what}")]
pub struct HiveError {
    pub offset: u64,
    pub what: String,
}

pub(crate) fn err(offset: usize, what: impl Into<String>) -> HiveError {
    HiveError {
        offset: offset as u64,
        what: what.into(),
    }
}

/// A key, named by its nk cell offset. Only valid for the hive it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub(crate) u32);

/// A value as stored: name, registry type and raw data bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub name: String,
    pub kind: u32,
    pub data: Vec<u8>,
}

impl Value {
    pub fn decoded(&self) -> RegValue {
        RegValue::from_raw(self.kind, &self.data)
    }
}

/// A typed registry value, as written by [`Hive::set_value`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    Sz(String),
    ExpandSz(String),
    Binary(Vec<u8>),
    Dword(u32),
    MultiSz(Vec<String>),
    Other { kind: u32, data: Vec<u8> },
}

impl RegValue {
    pub fn kind(&self) -> u32 {
        match self {
            RegValue::Sz(_) => REG_SZ,
            RegValue::ExpandSz(_) => REG_EXPAND_SZ,
            RegValue::Binary(_) => REG_BINARY,
            RegValue::Dword(_) => REG_DWORD,
            RegValue::MultiSz(_) => REG_MULTI_SZ,
            RegValue::Other { kind, .. } => *kind,
        }
    }

    /// Encoded data: strings as UTF-16LE with a terminating NUL, REG_MULTI_SZ with an
    /// extra NUL after the last string, REG_DWORD little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            RegValue::Sz(s) | RegValue::ExpandSz(s) => utf16z(s),
            RegValue::Binary(b) | RegValue::Other { data: b, .. } => b.clone(),
            RegValue::Dword(d) => d.to_le_bytes().to_vec(),
            RegValue::MultiSz(list) => {
                let mut out: Vec<u8> = list.iter().flat_map(|s| utf16z(s)).collect();
                out.extend_from_slice(&[0, 0]);
                out
            }
        }
    }

    pub fn from_raw(kind: u32, data: &[u8]) -> RegValue {
        match kind {
            REG_SZ => RegValue::Sz(utf16_until_nul(data)),
            REG_EXPAND_SZ => RegValue::ExpandSz(utf16_until_nul(data)),
            REG_BINARY => RegValue::Binary(data.to_vec()),
            REG_DWORD if data.len() == 4 => {
                RegValue::Dword(u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
            }
            REG_MULTI_SZ => {
                let units = utf16_units(data);
                let list = units
                    .split(|&u| u == 0)
                    .take_while(|s| !s.is_empty())
                    .map(String::from_utf16_lossy)
                    .collect();
                RegValue::MultiSz(list)
            }
            _ => RegValue::Other {
                kind,
                data: data.to_vec(),
            },
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            RegValue::Sz(s) | RegValue::ExpandSz(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_dword(&self) -> Option<u32> {
        match self {
            RegValue::Dword(d) => Some(*d),
            _ => None,
        }
    }
}

impl std::fmt::Display for RegValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegValue::Sz(s) => write!(f, "REG_SZ {s:?}"),
            RegValue::ExpandSz(s) => write!(f, "REG_EXPAND_SZ {s:?}"),
            RegValue::Dword(d) => write!(f, "REG_DWORD {d:#x}"),
            RegValue::MultiSz(l) => write!(f, "REG_MULTI_SZ {l:?}"),
            RegValue::Binary(b) => write!(f, "REG_BINARY {}", hex(b)),
            RegValue::Other { kind, data } => write!(f, "type {kind} {}", hex(data)),
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect()
}

fn utf16_units(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn utf16_until_nul(data: &[u8]) -> String {
    let units = utf16_units(data);
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    String::from_utf16_lossy(&units[..end])
}

/// Upper-case UTF-16 units of a name, the order keys are sorted and hashed in.
pub(crate) fn upcase_units(name: &str) -> Vec<u16> {
    name.chars()
        .map(|c| {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(u), None) => u,
                _ => c,
            }
        })
        .collect::<String>()
        .encode_utf16()
        .collect()
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Bin {
    pub start: usize,
    pub end: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FreeCell {
    pub pos: usize,
    pub size: usize,
}

/// A parsed nk record.
#[derive(Debug, Clone)]
pub(crate) struct Nk {
    /// File offset of the record (after the cell size).
    pub pos: usize,
    pub parent: u32,
    pub n_sub: u32,
    pub sub_list: u32,
    pub n_val: u32,
    pub val_list: u32,
    pub sk: u32,
    pub name: String,
}

/// A parsed vk record.
#[derive(Debug, Clone)]
pub(crate) struct Vk {
    pub pos: usize,
    pub name: String,
    pub size_field: u32,
    pub data_off: u32,
    pub kind: u32,
}

/// Kind of subkey list cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    Lf,
    Lh,
    Li,
    Ri,
}

impl ListKind {
    pub fn sig(self) -> &'static [u8; 2] {
        match self {
            ListKind::Lf => b"lf",
            ListKind::Lh => b"lh",
            ListKind::Li => b"li",
            ListKind::Ri => b"ri",
        }
    }
    pub fn entry_len(self) -> usize {
        match self {
            ListKind::Lf | ListKind::Lh => 8,
            ListKind::Li | ListKind::Ri => 4,
        }
    }
}

/// A leaf subkey list: its offset, kind and (offset, hash-or-hint) entries.
pub(crate) type Leaf = (u32, ListKind, Vec<(u32, u32)>);

/// An in-memory hive: the whole file, read once, edited in place, written back whole.
#[derive(Debug, Clone)]
pub struct Hive {
    pub(crate) data: Vec<u8>,
    pub(crate) bins: Vec<Bin>,
    pub(crate) free: Vec<FreeCell>,
    pub(crate) minor: u32,
    pub(crate) root: u32,
    was_dirty: bool,
    pub(crate) modified: bool,
}

pub(crate) fn checksum(base: &[u8]) -> u32 {
    let x = base[..0x1FC].chunks_exact(4).fold(0u32, |acc, c| {
        acc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]])
    });
    match x {
        0 => 1,
        0xFFFF_FFFF => 0xFFFF_FFFE,
        x => x,
    }
}

impl Hive {
    /// Parses the base block and every hbin and cell header of a hive file.
    pub fn from_bytes(data: Vec<u8>) -> Result<Hive, HiveError> {
        if data.len() < BASE_BLOCK_LEN {
            return Err(err(
                0,
                format!("file is {} bytes, shorter than the base block", data.len()),
            ));
        }
        if &data[0..4] != b"regf" {
            return Err(err(0, "missing \"regf\" signature"));
        }
        let le = |p: usize| u32::from_le_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]);
        let stored = le(0x1FC);
        let computed = checksum(&data[..BASE_BLOCK_LEN]);
        if stored != computed {
            return Err(err(
                0x1FC,
                format!("base block checksum {stored:#x}, computed {computed:#x}"),
            ));
        }
        if le(0x14) != 1 {
            return Err(err(0x14, format!("unsupported major version {}", le(0x14))));
        }
        let minor = le(0x18);
        let root = le(0x24);
        let bins_len = le(0x28) as usize;
        let end = BASE_BLOCK_LEN
            .checked_add(bins_len)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                err(
                    0x28,
                    format!("hbins length {bins_len:#x} runs past the end of the file"),
                )
            })?;
        let was_dirty = le(0x04) != le(0x08);
        let mut hive = Hive {
            data,
            bins: Vec::new(),
            free: Vec::new(),
            minor,
            root,
            was_dirty,
            modified: false,
        };
        hive.scan_bins(end)?;
        hive.nk(KeyId(root))?;
        Ok(hive)
    }

    /// Walks the hbins and every cell in them, collecting free cells for allocation.
    fn scan_bins(&mut self, end: usize) -> Result<(), HiveError> {
        let mut pos = BASE_BLOCK_LEN;
        while pos < end {
            if pos + HBIN_HEADER_LEN > end || &self.data[pos..pos + 4] != b"hbin" {
                return Err(err(pos, "missing \"hbin\" signature"));
            }
            let rel = self.u32_at(pos + 4)? as usize;
            if rel != pos - BASE_BLOCK_LEN {
                return Err(err(pos + 4, format!("hbin says it is at {rel:#x}")));
            }
            let size = self.u32_at(pos + 8)? as usize;
            if size < 0x1000 || size % 0x1000 != 0 || size > end - pos {
                return Err(err(pos + 8, format!("hbin size {size:#x} out of range")));
            }
            let bin = Bin {
                start: pos,
                end: pos + size,
            };
            let mut cell = pos + HBIN_HEADER_LEN;
            while cell < bin.end {
                let raw = self.i32_at(cell)?;
                let len = raw.unsigned_abs() as usize;
                if len < 8 || len % 4 != 0 || len > bin.end - cell {
                    return Err(err(cell, format!("cell size {raw} out of range")));
                }
                if raw > 0 && cell % 8 == 0 && len % 8 == 0 {
                    self.free.push(FreeCell {
                        pos: cell,
                        size: len,
                    });
                }
                cell += len;
            }
            self.bins.push(bin);
            pos += size;
        }
        if self.bins.is_empty() {
            return Err(err(0x28, "hive has no hbins"));
        }
        Ok(())
    }

    /// True when the base block's sequence numbers differed: Windows had unflushed
    /// changes in its transaction logs, which this reader does not replay.
    pub fn was_dirty(&self) -> bool {
        self.was_dirty
    }

    pub fn root(&self) -> KeyId {
        KeyId(self.root)
    }

    // ---- bounds-checked primitives -------------------------------------------------

    pub(crate) fn bytes(&self, pos: usize, len: usize) -> Result<&[u8], HiveError> {
        pos.checked_add(len)
            .and_then(|end| self.data.get(pos..end))
            .ok_or_else(|| err(pos, format!("{len} bytes run past the end of the file")))
    }

    pub(crate) fn u16_at(&self, pos: usize) -> Result<u16, HiveError> {
        let b = self.bytes(pos, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32_at(&self, pos: usize) -> Result<u32, HiveError> {
        let b = self.bytes(pos, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i32_at(&self, pos: usize) -> Result<i32, HiveError> {
        self.u32_at(pos).map(|v| v as i32)
    }

    pub(crate) fn bin_of(&self, pos: usize) -> Option<Bin> {
        let i = self.bins.partition_point(|b| b.start <= pos);
        let bin = *self.bins.get(i.checked_sub(1)?)?;
        (pos < bin.end).then_some(bin)
    }

    /// File offset range of an allocated cell's contents (after the size field).
    pub(crate) fn cell(&self, off: u32) -> Result<Range<usize>, HiveError> {
        let pos = BASE_BLOCK_LEN + off as usize;
        if off == NO_CELL || off % 4 != 0 {
            return Err(err(pos, format!("invalid cell offset {off:#x}")));
        }
        let bin = self
            .bin_of(pos)
            .ok_or_else(|| err(pos, format!("cell offset {off:#x} is outside every hbin")))?;
        if pos < bin.start + HBIN_HEADER_LEN {
            return Err(err(
                pos,
                format!("cell offset {off:#x} points into an hbin header"),
            ));
        }
        let raw = self.i32_at(pos)?;
        if raw >= 0 {
            return Err(err(pos, format!("cell {off:#x} is not allocated")));
        }
        let len = raw.unsigned_abs() as usize;
        if len < 8 || len > bin.end - pos {
            return Err(err(pos, format!("cell {off:#x} size {len} out of range")));
        }
        Ok(pos + 4..pos + len)
    }

    /// Cell contents, checked to start with a two-byte signature.
    pub(crate) fn record(&self, off: u32, sig: &[u8; 2]) -> Result<Range<usize>, HiveError> {
        let r = self.cell(off)?;
        if &self.data[r.start..r.start + 2] != sig {
            return Err(err(
                r.start,
                format!("expected a {:?} record", String::from_utf8_lossy(sig)),
            ));
        }
        Ok(r)
    }

    fn name_at(&self, pos: usize, len: usize, compressed: bool) -> Result<String, HiveError> {
        let b = self.bytes(pos, len)?;
        if compressed {
            Ok(b.iter().map(|&c| c as char).collect())
        } else {
            Ok(String::from_utf16_lossy(&utf16_units(b)))
        }
    }

    pub(crate) fn nk(&self, key: KeyId) -> Result<Nk, HiveError> {
        let r = self.record(key.0, b"nk")?;
        let p = r.start;
        if r.len() < 0x4C {
            return Err(err(p, "nk record too short"));
        }
        let flags = self.u16_at(p + 2)?;
        let name_len = self.u16_at(p + 0x48)? as usize;
        if 0x4C + name_len > r.len() {
            return Err(err(
                p + 0x48,
                format!("key name length {name_len} runs past its cell"),
            ));
        }
        Ok(Nk {
            pos: p,
            parent: self.u32_at(p + 0x10)?,
            n_sub: self.u32_at(p + 0x14)?,
            sub_list: self.u32_at(p + 0x1C)?,
            n_val: self.u32_at(p + 0x24)?,
            val_list: self.u32_at(p + 0x28)?,
            sk: self.u32_at(p + 0x2C)?,
            name: self.name_at(p + 0x4C, name_len, flags & KEY_COMP_NAME != 0)?,
        })
    }

    pub(crate) fn vk(&self, off: u32) -> Result<Vk, HiveError> {
        let r = self.record(off, b"vk")?;
        let p = r.start;
        if r.len() < 0x14 {
            return Err(err(p, "vk record too short"));
        }
        let name_len = self.u16_at(p + 2)? as usize;
        if 0x14 + name_len > r.len() {
            return Err(err(
                p + 2,
                format!("value name length {name_len} runs past its cell"),
            ));
        }
        let flags = self.u16_at(p + 0x10)?;
        Ok(Vk {
            pos: p,
            name: self.name_at(p + 0x14, name_len, flags & VALUE_COMP_NAME != 0)?,
            size_field: self.u32_at(p + 4)?,
            data_off: self.u32_at(p + 8)?,
            kind: self.u32_at(p + 0x0C)?,
        })
    }

    /// Kind and entries of one subkey list cell (offset, hash-or-hint).
    pub(crate) fn list(&self, off: u32) -> Result<(ListKind, Vec<(u32, u32)>), HiveError> {
        let r = self.cell(off)?;
        let kind = match &self.data[r.start..r.start + 2] {
            b"lf" => ListKind::Lf,
            b"lh" => ListKind::Lh,
            b"li" => ListKind::Li,
            b"ri" => ListKind::Ri,
            _ => return Err(err(r.start, "expected a subkey list (lf/lh/li/ri)")),
        };
        let count = self.u16_at(r.start + 2)? as usize;
        let el = kind.entry_len();
        if 4 + count * el > r.len() {
            return Err(err(
                r.start + 2,
                format!("subkey list of {count} entries runs past its cell"),
            ));
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let p = r.start + 4 + i * el;
            let second = if el == 8 { self.u32_at(p + 4)? } else { 0 };
            out.push((self.u32_at(p)?, second));
        }
        Ok((kind, out))
    }

    /// The leaf lists of a key's subkey list: itself, or the lists an "ri" points to.
    pub(crate) fn leaves(&self, list: u32) -> Result<Vec<Leaf>, HiveError> {
        let (kind, entries) = self.list(list)?;
        if kind != ListKind::Ri {
            return Ok(vec![(list, kind, entries)]);
        }
        let mut out = Vec::with_capacity(entries.len());
        for (leaf, _) in entries {
            let (k, e) = self.list(leaf)?;
            if k == ListKind::Ri {
                return Err(err(
                    BASE_BLOCK_LEN + leaf as usize,
                    "nested \"ri\" subkey list",
                ));
            }
            out.push((leaf, k, e));
        }
        Ok(out)
    }

    // ---- public read API --------------------------------------------------------------

    pub fn key_name(&self, key: KeyId) -> Result<String, HiveError> {
        Ok(self.nk(key)?.name)
    }

    pub fn parent(&self, key: KeyId) -> Result<Option<KeyId>, HiveError> {
        if key.0 == self.root {
            return Ok(None);
        }
        Ok(Some(KeyId(self.nk(key)?.parent)))
    }

    /// Subkeys in stored (sorted) order.
    pub fn subkeys(&self, key: KeyId) -> Result<Vec<KeyId>, HiveError> {
        let nk = self.nk(key)?;
        if nk.n_sub == 0 || nk.sub_list == NO_CELL {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (_, _, entries) in self.leaves(nk.sub_list)? {
            out.extend(entries.into_iter().map(|(o, _)| KeyId(o)));
        }
        Ok(out)
    }

    /// The subkey with this name (case-insensitive), if any.
    pub fn subkey(&self, key: KeyId, name: &str) -> Result<Option<KeyId>, HiveError> {
        let want = upcase_units(name);
        for k in self.subkeys(key)? {
            if upcase_units(&self.nk(k)?.name) == want {
                return Ok(Some(k));
            }
        }
        Ok(None)
    }

    /// Opens a key by a backslash-separated path from the root, case-insensitively.
    pub fn open(&self, path: &str) -> Result<Option<KeyId>, HiveError> {
        let mut key = self.root();
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            match self.subkey(key, part)? {
                Some(k) => key = k,
                None => return Ok(None),
            }
        }
        Ok(Some(key))
    }

    fn value_offsets(&self, nk: &Nk) -> Result<Vec<u32>, HiveError> {
        if nk.n_val == 0 || nk.val_list == NO_CELL {
            return Ok(Vec::new());
        }
        let r = self.cell(nk.val_list)?;
        let n = nk.n_val as usize;
        if n > r.len() / 4 {
            return Err(err(
                r.start,
                format!("value list of {n} entries runs past its cell"),
            ));
        }
        (0..n).map(|i| self.u32_at(r.start + 4 * i)).collect()
    }

    pub(crate) fn vks(&self, key: KeyId) -> Result<Vec<Vk>, HiveError> {
        let nk = self.nk(key)?;
        self.value_offsets(&nk)?
            .into_iter()
            .map(|o| self.vk(o))
            .collect()
    }

    pub(crate) fn vk_data(&self, vk: &Vk) -> Result<Vec<u8>, HiveError> {
        let len = (vk.size_field & 0x7FFF_FFFF) as usize;
        if vk.size_field & 0x8000_0000 != 0 {
            if len > 4 {
                return Err(err(vk.pos + 4, format!("inline value data of {len} bytes")));
            }
            return Ok(self.bytes(vk.pos + 8, len)?.to_vec());
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        let r = self.cell(vk.data_off)?;
        if len > BIG_DATA_SEGMENT && r.len() < len && &self.data[r.start..r.start + 2] == b"db" {
            return self.big_data(vk.data_off, len);
        }
        if len > r.len() {
            return Err(err(
                r.start,
                format!("value data of {len} bytes runs past its cell"),
            ));
        }
        Ok(self.data[r.start..r.start + len].to_vec())
    }

    /// Segment cell offsets of a "db" record.
    pub(crate) fn db_segments(&self, db: u32) -> Result<(u32, Vec<u32>), HiveError> {
        let r = self.record(db, b"db")?;
        let n = self.u16_at(r.start + 2)? as usize;
        let list = self.u32_at(r.start + 4)?;
        let lr = self.cell(list)?;
        if n * 4 > lr.len() {
            return Err(err(
                lr.start,
                format!("big data list of {n} segments runs past its cell"),
            ));
        }
        let segs = (0..n)
            .map(|i| self.u32_at(lr.start + 4 * i))
            .collect::<Result<_, _>>()?;
        Ok((list, segs))
    }

    fn big_data(&self, db: u32, len: usize) -> Result<Vec<u8>, HiveError> {
        let (_, segs) = self.db_segments(db)?;
        let mut out = Vec::with_capacity(len.min(self.data.len()));
        for seg in segs {
            if out.len() >= len {
                break;
            }
            let r = self.cell(seg)?;
            let take = (len - out.len()).min(BIG_DATA_SEGMENT).min(r.len());
            out.extend_from_slice(&self.data[r.start..r.start + take]);
        }
        if out.len() != len {
            return Err(err(
                BASE_BLOCK_LEN + db as usize,
                format!("big data has {} of {len} bytes", out.len()),
            ));
        }
        Ok(out)
    }

    /// Every value of a key, in stored order.
    pub fn values(&self, key: KeyId) -> Result<Vec<Value>, HiveError> {
        self.vks(key)?
            .into_iter()
            .map(|vk| {
                Ok(Value {
                    data: self.vk_data(&vk)?,
                    name: vk.name,
                    kind: vk.kind,
                })
            })
            .collect()
    }

    /// The value with this name (case-insensitive; "" is the default value), if any.
    pub fn value(&self, key: KeyId, name: &str) -> Result<Option<Value>, HiveError> {
        let want = upcase_units(name);
        for vk in self.vks(key)? {
            if upcase_units(&vk.name) == want {
                let data = self.vk_data(&vk)?;
                return Ok(Some(Value {
                    name: vk.name,
                    kind: vk.kind,
                    data,
                }));
            }
        }
        Ok(None)
    }

    /// Convenience: a value at `path` decoded, if both key and value exist.
    pub fn get(&self, path: &str, name: &str) -> Result<Option<RegValue>, HiveError> {
        match self.open(path)? {
            Some(k) => Ok(self.value(k, name)?.map(|v| v.decoded())),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
