//! Edits: cell allocation, creating keys, setting values, and the base block on save.
//!
//! Every edit reads and checks what it will touch before it writes a byte. If an edit
//! still fails half-way (a corrupt list found late), the in-memory hive may be partially
//! edited: drop it and write nothing, which is what the fix-up does.

use super::*;

/// Largest value data accepted for writing; real boot fix-up values are tiny.
const MAX_VALUE_DATA: usize = 16 * 1024 * 1024;
/// Longest key name the registry allows (UTF-16 units).
const MAX_KEY_NAME: usize = 255;
/// Longest value name the registry allows (UTF-16 units).
const MAX_VALUE_NAME: usize = 16383;
/// Seconds between 1601-01-01 (FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET: u64 = 11_644_473_600;

/// The current time as a Windows FILETIME (100 ns ticks since 1601).
pub fn filetime_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() + FILETIME_UNIX_OFFSET) * 10_000_000 + u64::from(d.subsec_nanos() / 100)
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The "lh" hash of a name: h = h*37 + c over its upper-cased UTF-16 units.
pub(crate) fn lh_hash(name: &str) -> u32 {
    upcase_units(name)
        .iter()
        .fold(0u32, |h, &u| h.wrapping_mul(37).wrapping_add(u32::from(u)))
}

/// The "lf" hint: the first four characters of the name as bytes, zero-padded.
pub(crate) fn lf_hint(name: &str) -> u32 {
    let mut b = [0u8; 4];
    for (slot, c) in b.iter_mut().zip(name.chars()) {
        *slot = u8::try_from(u32::from(c)).unwrap_or(0);
    }
    u32::from_le_bytes(b)
}

/// Name bytes and whether they are "compressed" (one byte per character).
fn encode_name(name: &str) -> (Vec<u8>, bool) {
    if name.is_ascii() {
        (name.as_bytes().to_vec(), true)
    } else {
        (
            name.encode_utf16().flat_map(u16::to_le_bytes).collect(),
            false,
        )
    }
}

fn entry_hash(kind: ListKind, name: &str) -> u32 {
    match kind {
        ListKind::Lh => lh_hash(name),
        ListKind::Lf => lf_hint(name),
        ListKind::Li | ListKind::Ri => 0,
    }
}

impl Hive {
    fn put_u16(&mut self, pos: usize, v: u16) {
        self.data[pos..pos + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u32(&mut self, pos: usize, v: u32) {
        self.data[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u64(&mut self, pos: usize, v: u64) {
        self.data[pos..pos + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Allocates a cell with room for `len` bytes and returns its offset. Reuses the first
    /// free cell that fits (splitting it), else appends a new hbin of whole 4 KiB pages.
    pub(crate) fn alloc(&mut self, len: usize) -> Result<u32, HiveError> {
        if len > MAX_VALUE_DATA + 0x100 {
            return Err(err(0, format!("refuse to allocate a cell of {len} bytes")));
        }
        self.modified = true;
        let mut size = round_up(len + 4, 8);
        let pos = if let Some(i) = self.free.iter().position(|f| f.size >= size) {
            let f = self.free[i];
            let rest = f.size - size;
            if rest >= 8 {
                self.free[i] = FreeCell {
                    pos: f.pos + size,
                    size: rest,
                };
                self.put_u32(f.pos + size, rest as u32);
            } else {
                self.free.remove(i);
                size = f.size;
            }
            f.pos
        } else {
            self.append_bin(size)?
        };
        self.put_u32(pos, (size as i32).wrapping_neg() as u32);
        self.data[pos + 4..pos + size].fill(0);
        Ok((pos - BASE_BLOCK_LEN) as u32)
    }

    /// Appends an hbin big enough for one cell of `size` bytes; returns the cell position.
    fn append_bin(&mut self, size: usize) -> Result<usize, HiveError> {
        let start = self
            .bins
            .last()
            .map(|b| b.end)
            .ok_or_else(|| err(0, "hive has no hbins"))?;
        let bin_size = round_up(size + HBIN_HEADER_LEN, 0x1000);
        if u32::try_from(start - BASE_BLOCK_LEN + bin_size).is_err() {
            return Err(err(start, "hive would grow past 4 GiB"));
        }
        self.data.truncate(start);
        self.data.resize(start + bin_size, 0);
        self.data[start..start + 4].copy_from_slice(b"hbin");
        self.put_u32(start + 4, (start - BASE_BLOCK_LEN) as u32);
        self.put_u32(start + 8, bin_size as u32);
        self.bins.push(Bin {
            start,
            end: start + bin_size,
        });
        let cell = start + HBIN_HEADER_LEN;
        let rest = bin_size - HBIN_HEADER_LEN - size;
        if rest >= 8 {
            self.put_u32(cell + size, rest as u32);
            self.free.push(FreeCell {
                pos: cell + size,
                size: rest,
            });
        }
        Ok(cell)
    }

    /// Marks an allocated cell free and makes it available for allocation.
    pub(crate) fn free_cell(&mut self, off: u32) -> Result<(), HiveError> {
        let r = self.cell(off)?;
        let pos = r.start - 4;
        let size = r.len() + 4;
        self.put_u32(pos, size as u32);
        self.data[r.start..r.end].fill(0);
        if pos % 8 == 0 && size % 8 == 0 {
            self.free.push(FreeCell { pos, size });
        }
        self.modified = true;
        Ok(())
    }

    /// Creates `name` under `parent` (or returns the existing subkey of that name). The new
    /// key shares the parent's security descriptor, whose reference count goes up by one.
    pub fn create_key(&mut self, parent: KeyId, name: &str) -> Result<KeyId, HiveError> {
        let pnk = self.nk(parent)?;
        let units = name.encode_utf16().count();
        if name.is_empty() || name.contains('\\') || units > MAX_KEY_NAME {
            return Err(err(pnk.pos, format!("invalid key name {name:?}")));
        }
        if let Some(k) = self.subkey(parent, name)? {
            return Ok(k);
        }
        let sk = self.record(pnk.sk, b"sk")?;
        if sk.len() < 0x14 {
            return Err(err(sk.start, "sk record too short"));
        }
        if pnk.n_sub != 0 && pnk.sub_list != NO_CELL {
            self.leaves(pnk.sub_list)?; // check the list before writing anything
        }
        let (bytes, compressed) = encode_name(name);
        let off = self.alloc(0x4C + bytes.len())?;
        let p = BASE_BLOCK_LEN + off as usize + 4;
        self.data[p..p + 2].copy_from_slice(b"nk");
        self.put_u16(p + 2, if compressed { KEY_COMP_NAME } else { 0 });
        self.put_u64(p + 4, filetime_now());
        self.put_u32(p + 0x10, parent.0);
        for field in [0x1C, 0x20, 0x28, 0x30] {
            self.put_u32(p + field, NO_CELL);
        }
        self.put_u32(p + 0x2C, pnk.sk);
        self.put_u16(p + 0x48, bytes.len() as u16);
        self.data[p + 0x4C..p + 0x4C + bytes.len()].copy_from_slice(&bytes);
        let refs = self.u32_at(sk.start + 0x0C)?;
        self.put_u32(sk.start + 0x0C, refs.wrapping_add(1));
        self.insert_subkey(parent, KeyId(off), name)?;
        Ok(KeyId(off))
    }

    /// Creates every missing key along a backslash-separated path from the root.
    pub fn create_path(&mut self, path: &str) -> Result<KeyId, HiveError> {
        let mut key = self.root();
        for part in path.split('\\').filter(|p| !p.is_empty()) {
            key = self.create_key(key, part)?;
        }
        Ok(key)
    }

    /// Adds `child` to the parent's subkey list, keeping it sorted by upper-cased name.
    fn insert_subkey(&mut self, parent: KeyId, child: KeyId, name: &str) -> Result<(), HiveError> {
        let pnk = self.nk(parent)?;
        let want = upcase_units(name);
        // The new count is what the list holds, never the stored count plus one: a hostile
        // count (0xFFFFFFFF) would wrap to 0 and hide every subkey of the parent.
        let count;
        if pnk.n_sub == 0 || pnk.sub_list == NO_CELL {
            count = 1;
            let kind = if self.minor >= 5 {
                ListKind::Lh
            } else {
                ListKind::Lf
            };
            let off = self.alloc(4 + kind.entry_len())?;
            self.write_list(off, kind, &[(child.0, entry_hash(kind, name))]);
            self.put_u32(pnk.pos + 0x1C, off);
        } else {
            let leaves = self.leaves(pnk.sub_list)?;
            // At most u16::MAX lists of u16::MAX entries: fits in a u32.
            count = leaves.iter().map(|l| l.2.len() as u32).sum::<u32>() + 1;
            let is_ri = leaves.first().is_some_and(|l| l.0 != pnk.sub_list);
            let mut pick = leaves.len().saturating_sub(1);
            for (i, (_, _, entries)) in leaves.iter().enumerate() {
                if let Some(&(last, _)) = entries.last() {
                    if upcase_units(&self.nk(KeyId(last))?.name) >= want {
                        pick = i;
                        break;
                    }
                }
            }
            let (leaf, kind, entries) = leaves
                .get(pick)
                .ok_or_else(|| err(pnk.pos, "empty ri list"))?;
            let mut at = entries.len();
            for (i, &(o, _)) in entries.iter().enumerate() {
                if upcase_units(&self.nk(KeyId(o))?.name) > want {
                    at = i;
                    break;
                }
            }
            let mut new = entries.clone();
            new.insert(at, (child.0, entry_hash(*kind, name)));
            if new.len() > usize::from(u16::MAX) {
                return Err(err(pnk.pos, "subkey list is full"));
            }
            let new_leaf = self.rewrite_list(*leaf, *kind, &new)?;
            if !is_ri {
                self.put_u32(pnk.pos + 0x1C, new_leaf);
            } else if new_leaf != *leaf {
                let ri = self.cell(pnk.sub_list)?;
                self.put_u32(ri.start + 4 + 4 * pick, new_leaf);
            }
        }
        self.put_u32(pnk.pos + 0x14, count);
        let max = self.u32_at(pnk.pos + 0x34)?;
        let len = (want.len() * 2) as u32;
        if len > max & 0xFFFF {
            self.put_u32(pnk.pos + 0x34, (max & 0xFFFF_0000) | len);
        }
        self.put_u64(pnk.pos + 4, filetime_now());
        Ok(())
    }

    fn write_list(&mut self, off: u32, kind: ListKind, entries: &[(u32, u32)]) {
        let p = BASE_BLOCK_LEN + off as usize + 4;
        self.data[p..p + 2].copy_from_slice(kind.sig());
        self.put_u16(p + 2, entries.len() as u16);
        for (i, &(o, h)) in entries.iter().enumerate() {
            let e = p + 4 + i * kind.entry_len();
            self.put_u32(e, o);
            if kind.entry_len() == 8 {
                self.put_u32(e + 4, h);
            }
        }
    }

    /// Writes a list in place when its cell has room, else into a new cell (freeing the
    /// old one). Returns the list's offset.
    fn rewrite_list(
        &mut self,
        off: u32,
        kind: ListKind,
        entries: &[(u32, u32)],
    ) -> Result<u32, HiveError> {
        let need = 4 + entries.len() * kind.entry_len();
        if need <= self.cell(off)?.len() {
            self.write_list(off, kind, entries);
            return Ok(off);
        }
        let new = self.alloc(need)?;
        self.write_list(new, kind, entries);
        self.free_cell(off)?;
        Ok(new)
    }

    /// The cells holding a value's data (none when inline).
    fn data_cells(&self, vk: &Vk) -> Result<Vec<u32>, HiveError> {
        let len = (vk.size_field & 0x7FFF_FFFF) as usize;
        if vk.size_field & 0x8000_0000 != 0 || len == 0 {
            return Ok(Vec::new());
        }
        let r = self.cell(vk.data_off)?;
        if len > BIG_DATA_SEGMENT && r.len() < len && &self.data[r.start..r.start + 2] == b"db" {
            let (list, mut segs) = self.db_segments(vk.data_off)?;
            for &s in &segs {
                self.cell(s)?;
            }
            segs.extend([list, vk.data_off]);
            return Ok(segs);
        }
        Ok(vec![vk.data_off])
    }

    /// Stores value data; returns the vk's (size field, data offset).
    fn store_data(&mut self, data: &[u8]) -> Result<(u32, u32), HiveError> {
        if data.len() > MAX_VALUE_DATA {
            return Err(err(
                0,
                format!("refuse to store {} bytes of value data", data.len()),
            ));
        }
        if data.len() <= 4 {
            let mut inline = [0u8; 4];
            inline[..data.len()].copy_from_slice(data);
            return Ok((data.len() as u32 | 0x8000_0000, u32::from_le_bytes(inline)));
        }
        if data.len() > BIG_DATA_SEGMENT && self.minor >= 4 {
            let mut segs = Vec::new();
            for chunk in data.chunks(BIG_DATA_SEGMENT) {
                let s = self.alloc(chunk.len())?;
                let p = BASE_BLOCK_LEN + s as usize + 4;
                self.data[p..p + chunk.len()].copy_from_slice(chunk);
                segs.push(s);
            }
            let list = self.alloc(segs.len() * 4)?;
            for (i, s) in segs.iter().enumerate() {
                self.put_u32(BASE_BLOCK_LEN + list as usize + 4 + 4 * i, *s);
            }
            let db = self.alloc(8)?;
            let p = BASE_BLOCK_LEN + db as usize + 4;
            self.data[p..p + 2].copy_from_slice(b"db");
            self.put_u16(p + 2, segs.len() as u16);
            self.put_u32(p + 4, list);
            return Ok((data.len() as u32, db));
        }
        let off = self.alloc(data.len())?;
        let p = BASE_BLOCK_LEN + off as usize + 4;
        self.data[p..p + data.len()].copy_from_slice(data);
        Ok((data.len() as u32, off))
    }

    /// Sets a value on a key, replacing any value of the same name (case-insensitive;
    /// "" is the key's default value).
    pub fn set_value(&mut self, key: KeyId, name: &str, value: &RegValue) -> Result<(), HiveError> {
        let nk = self.nk(key)?;
        if name.encode_utf16().count() > MAX_VALUE_NAME {
            return Err(err(nk.pos, "value name too long"));
        }
        let want = upcase_units(name);
        let existing = self
            .vks(key)?
            .into_iter()
            .find(|v| upcase_units(&v.name) == want);
        let old_cells = match &existing {
            Some(vk) => self.data_cells(vk)?,
            None => Vec::new(),
        };
        if existing.is_none() && nk.n_val != 0 && nk.val_list != NO_CELL {
            self.cell(nk.val_list)?;
        }
        let data = value.to_bytes();
        let (size_field, data_off) = self.store_data(&data)?;
        let vk_pos = match existing {
            Some(vk) => vk.pos,
            None => self.add_vk(&nk, name)?,
        };
        self.put_u32(vk_pos + 4, size_field);
        self.put_u32(vk_pos + 8, data_off);
        self.put_u32(vk_pos + 0x0C, value.kind());
        for c in old_cells {
            self.free_cell(c)?;
        }
        let name_bytes = (want.len() * 2) as u32;
        if name_bytes > self.u32_at(nk.pos + 0x3C)? {
            self.put_u32(nk.pos + 0x3C, name_bytes);
        }
        if data.len() as u32 > self.u32_at(nk.pos + 0x40)? {
            self.put_u32(nk.pos + 0x40, data.len() as u32);
        }
        self.put_u64(nk.pos + 4, filetime_now());
        self.modified = true;
        Ok(())
    }

    /// Allocates a vk for `name` and appends it to the key's value list.
    fn add_vk(&mut self, nk: &Nk, name: &str) -> Result<usize, HiveError> {
        let (bytes, compressed) = encode_name(name);
        let off = self.alloc(0x14 + bytes.len())?;
        let p = BASE_BLOCK_LEN + off as usize + 4;
        self.data[p..p + 2].copy_from_slice(b"vk");
        self.put_u16(p + 2, bytes.len() as u16);
        self.put_u16(p + 0x10, if compressed { VALUE_COMP_NAME } else { 0 });
        self.data[p + 0x14..p + 0x14 + bytes.len()].copy_from_slice(&bytes);
        let n = if nk.val_list == NO_CELL {
            0
        } else {
            nk.n_val as usize
        };
        if n == 0 {
            let list = self.alloc(4)?;
            self.put_u32(BASE_BLOCK_LEN + list as usize + 4, off);
            self.put_u32(nk.pos + 0x28, list);
        } else {
            let r = self.cell(nk.val_list)?;
            if (n + 1) * 4 <= r.len() {
                self.put_u32(r.start + 4 * n, off);
            } else {
                let old: Vec<u8> = self.data[r.start..r.start + 4 * n].to_vec();
                let list = self.alloc((n + 1) * 4)?;
                let lp = BASE_BLOCK_LEN + list as usize + 4;
                self.data[lp..lp + 4 * n].copy_from_slice(&old);
                self.put_u32(lp + 4 * n, off);
                self.free_cell(nk.val_list)?;
                self.put_u32(nk.pos + 0x28, list);
            }
        }
        self.put_u32(nk.pos + 0x24, (n + 1) as u32);
        Ok(p)
    }

    /// The file bytes. When anything was edited the base block is brought up to date:
    /// both sequence numbers equal and one higher (a clean hive), hbins length, time
    /// stamp and checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut data = self.data.clone();
        if !self.modified {
            return data;
        }
        let end = self.bins.last().map_or(BASE_BLOCK_LEN, |b| b.end);
        data.truncate(end);
        let le = |d: &[u8], p: usize| u32::from_le_bytes([d[p], d[p + 1], d[p + 2], d[p + 3]]);
        let seq = le(&data, 4).max(le(&data, 8)).wrapping_add(1);
        data[4..8].copy_from_slice(&seq.to_le_bytes());
        data[8..12].copy_from_slice(&seq.to_le_bytes());
        data[0x0C..0x14].copy_from_slice(&filetime_now().to_le_bytes());
        data[0x28..0x2C].copy_from_slice(&((end - BASE_BLOCK_LEN) as u32).to_le_bytes());
        let sum = checksum(&data[..BASE_BLOCK_LEN]);
        data[0x1FC..0x200].copy_from_slice(&sum.to_le_bytes());
        data
    }
}
