//! An LVM2 PV on a grown partition: PV header, metadata text and metadata area header
//! rewritten as `pvresize` + `lvextend` would leave them.
//!
//! On-disk format (ferry-probe's lvm.rs has the reading side; "sector" is 512 bytes):
//! - label sector (sector 0-3 of the PV): `0` "LABELONE", `8` its sector number, `16` LVM CRC
//!   over bytes 20..512, `20` offset of the PV header (32), `24` "LVM2 001"; PV header at 32:
//!   UUID (32 characters), device size (bytes), data area list, metadata area list (each
//!   (offset, size) pairs ended by a zero pair), extension version (2), flags (1 = PV in a VG),
//!   bootloader area list.
//! - metadata area header (first 512 bytes of the area): `0` LVM CRC over 4..512, `4` magic,
//!   `20` version 1, `24` area start, `32` area size, `40` raw locations (offset from the area
//!   start, size, LVM CRC of the text, flags) ended by a zero one.
//! - the metadata text (with a trailing NUL) in the ring from byte 512 of the area to its end.
//!
//! The regenerated label writes extension version 2 with the "in a VG" flag, as LVM 2.02.155
//! and later do; the new text goes at ring offset 512 (where `vgcreate` puts the first one)
//! and the header's single raw location points at it.

use ferry_format::layout::{Area, ContentKind, LogicalVolume, LvmPv, PhysicalVolume, VolumeGroup};
use ferry_probe::lvm_text::{self, Node, Section, Value};

use crate::error::Refusal;
use crate::patch::PatchSet;
use crate::types::{growable, FsGrow, GrowLv, GrowTarget, LvGrow, PvGrow};
use ferry_probe::crc::lvm_crc;

const SECTOR: u64 = 512;
const MDA_HEADER_SIZE: u64 = 512;
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const PV_EXT_VERSION: u32 = 2;
const PV_EXT_USED: u32 = 1;

#[derive(Default)]
pub(crate) struct LvmOutcome {
    pub pv: Option<PvGrow>,
    pub lv: Option<LvGrow>,
    pub fs: Option<FsGrow>,
    pub notes: Vec<String>,
}

/// Grow `pv` (at disk byte `offset`, `old_len` bytes on the source) to `new_len` bytes, and
/// the chosen LV into the new extents.
pub(crate) fn grow(
    pv: &LvmPv,
    (offset, old_len, new_len): (u64, u64, u64),
    choice: &GrowLv,
    patches: &mut PatchSet,
) -> Result<LvmOutcome, Refusal> {
    let mut out = LvmOutcome::default();
    let Some(vg) = &pv.vg else {
        out.notes.push(format!(
            "PV {} is in no volume group: not grown",
            pv.pv_uuid
        ));
        return Ok(out);
    };
    let s = &vg.summary;
    let mut skip = |why: String| {
        out.notes
            .push(format!("volume group {} is not grown: {why}", s.name));
    };
    let [me] = &s.physical_volumes[..] else {
        skip(format!(
            "it has {} PVs; run pvresize on each after boot",
            s.physical_volumes.len()
        ));
        return Ok(out);
    };
    let [area] = pv.metadata_areas[..] else {
        skip(format!(
            "the PV has {} metadata areas; run pvresize after boot",
            pv.metadata_areas.len()
        ));
        return Ok(out);
    };
    let layout_err = |r: String| Refusal::Layout(format!("LVM PV {}: {r}", pv.pv_uuid));
    if me.uuid != pv.pv_uuid || vg.mda_offset != area.offset || area.offset >= pv.data_area.offset {
        return Err(layout_err(
            "the VG metadata does not describe this PV's areas".into(),
        ));
    }
    if me.pe_start.checked_mul(SECTOR) != Some(pv.data_area.offset) {
        return Err(layout_err("pe_start differs from the data area".into()));
    }
    // Everything rewritten lies in the label sectors and the metadata area, before the data.
    let areas_fit = pv.label_sector < 4
        && area.offset >= 4 * SECTOR
        && area
            .offset
            .checked_add(area.size)
            .is_some_and(|end| end <= pv.data_area.offset)
        && pv.data_area.offset < new_len;
    if !areas_fit || s.extent_size == 0 {
        return Err(layout_err(
            "its label, metadata area, data area or extent size is out of place".into(),
        ));
    }
    check_extents(s, me).map_err(layout_err)?;
    check_pv_size(s, me, old_len).map_err(layout_err)?;
    let new_sectors = new_len / SECTOR;
    let new_pe = new_sectors.saturating_sub(me.pe_start) / s.extent_size;
    if new_pe <= me.pe_count {
        skip("the partition gained less than one extent".into());
        return Ok(out);
    }
    let added = new_pe - me.pe_count;
    let lv = choose_lv(s, choice)?;

    let mut tree =
        lvm_text::parse(&vg.text).map_err(|e| layout_err(format!("metadata text {e}")))?;
    let vg_sec =
        top_section(&mut tree, &s.name).ok_or_else(|| layout_err("no VG section".into()))?;
    let seqno = s
        .seqno
        .checked_add(1)
        .ok_or_else(|| layout_err("seqno overflows".into()))?;
    set_int(vg_sec, "seqno", seqno)?;
    let pv_sec = child(vg_sec, "physical_volumes")
        .and_then(|p| child(p, &me.name))
        .ok_or_else(|| layout_err(format!("no section for {}", me.name)))?;
    set_int(pv_sec, "dev_size", new_sectors)?;
    set_int(pv_sec, "pe_count", new_pe)?;
    match lv {
        Ok(lv) => {
            let lv_sec = child(vg_sec, "logical_volumes")
                .and_then(|l| child(l, &lv.name))
                .ok_or_else(|| layout_err(format!("no section for LV {}", lv.name)))?;
            let (old_extents, new_segment) = extend_lv(lv_sec, lv, me, added)?;
            let new_extents = old_extents
                .checked_add(added)
                .ok_or_else(|| layout_err(format!("LV {} has too many extents", lv.name)))?;
            out.lv = Some(LvGrow {
                vg: s.name.clone(),
                lv: lv.name.clone(),
                old_extents,
                new_extents,
                new_segment,
            });
            out.fs = lv_fs(s, lv, new_extents, &mut out.notes);
        }
        Err(why) => out.notes.push(why),
    }

    let text = write_text(&tree);
    write_metadata(pv, offset, area, text.as_bytes(), patches).map_err(|r| Refusal::Grow {
        what: format!("volume group {}", s.name),
        reason: r,
    })?;
    write_label(pv, offset, new_len, patches);
    out.pv = Some(PvGrow {
        vg: s.name.clone(),
        pv_uuid: pv.pv_uuid,
        offset,
        old_size: pv.device_size,
        new_size: new_len,
        old_pe_count: me.pe_count,
        new_pe_count: new_pe,
        seqno,
    });
    Ok(out)
}

/// Every stripe on `me` lies inside its extents (so the new extents are free).
fn check_extents(s: &VolumeGroup, me: &PhysicalVolume) -> Result<(), String> {
    for lv in &s.logical_volumes {
        for seg in &lv.segments {
            let per = seg.extent_count / (seg.stripes.len() as u64).max(1);
            for st in seg.stripes.iter().filter(|st| st.pv == me.name) {
                if st
                    .pv_start_extent
                    .checked_add(per)
                    .is_none_or(|e| e > me.pe_count)
                {
                    return Err(format!(
                        "LV {} uses extents past the PV's {}",
                        lv.name, me.pe_count
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The PV's extents end inside its `dev_size` and inside the region it was on: metadata that
/// claims more would be "grown" from a wrong count (as ferry-probe refuses it).
fn check_pv_size(s: &VolumeGroup, me: &PhysicalVolume, old_len: u64) -> Result<(), String> {
    let claim = format!(
        "{} claims {} extents of {} sectors from sector {}",
        me.name, me.pe_count, s.extent_size, me.pe_start
    );
    let end = me
        .pe_count
        .checked_mul(s.extent_size)
        .and_then(|n| n.checked_add(me.pe_start))
        .and_then(|n| n.checked_mul(SECTOR))
        .ok_or_else(|| format!("{claim}: that overflows"))?;
    // dev_size 0: old metadata without the field.
    if me.dev_size > 0 && end > me.dev_size.saturating_mul(SECTOR) {
        return Err(format!(
            "{claim}, past its own dev_size of {} sectors",
            me.dev_size
        ));
    }
    if end > old_len {
        return Err(format!(
            "{claim}, ending at byte {end}, past the end of the {old_len}-byte region it was on"
        ));
    }
    Ok(())
}

/// The LV to grow: `Ok(Err(note))` when none is grown and why.
fn choose_lv<'a>(
    s: &'a VolumeGroup,
    choice: &GrowLv,
) -> Result<Result<&'a LogicalVolume, String>, Refusal> {
    let linear = |lv: &LogicalVolume| {
        !lv.segments.is_empty()
            && lv
                .segments
                .iter()
                .all(|seg| seg.segment_type == "striped" && !seg.stripes.is_empty())
    };
    match choice {
        GrowLv::Off => Ok(Err(format!("no LV of {} is grown (the job says so); the new extents are free", s.name))),
        GrowLv::Named { vg, lv } if *vg == s.name => {
            let found = s.logical_volumes.iter().find(|l| l.name == *lv).ok_or_else(|| Refusal::Grow {
                what: format!("LV {vg}/{lv}"),
                reason: format!(
                    "volume group {vg} has no such LV (it has: {})",
                    s.logical_volumes.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?;
            if !linear(found) {
                return Err(Refusal::Grow {
                    what: format!("LV {vg}/{lv}"),
                    reason: "it is not a linear or striped LV (thin, RAID, ...); grow it after boot with lvextend".into(),
                });
            }
            Ok(Ok(found))
        }
        GrowLv::Named { vg, lv } => {
            Ok(Err(format!("no LV of {} is grown (the job grows {vg}/{lv}); the new extents are free", s.name)))
        }
        GrowLv::Auto => s
            .logical_volumes
            .iter()
            .rev()
            .find(|lv| {
                linear(lv)
                    && lv.status.iter().any(|f| f == "VISIBLE")
                    && lv.content.as_ref().is_some_and(|c| c.kind != ContentKind::Lvm2Member && growable(c).is_ok())
            })
            .ok_or_else(|| {
                format!(
                    "no LV of {} holds a filesystem that can grow; the new extents are free (name an LV to grow)",
                    s.name
                )
            })
            .map_or_else(|e| Ok(Err(e)), |lv| Ok(Ok(lv))),
    }
}

/// Extend the last segment when it is linear and ends at the old end of `me`, else append a
/// linear segment on `me`. Returns the LV's old extent count and whether a segment was added.
fn extend_lv(
    sec: &mut Section,
    lv: &LogicalVolume,
    me: &PhysicalVolume,
    added: u64,
) -> Result<(u64, bool), Refusal> {
    let err = |r: &str| Refusal::Layout(format!("LV {}: {r}", lv.name));
    let last = lv.segments.last().ok_or_else(|| err("no segments"))?;
    let old = last
        .start_extent
        .checked_add(last.extent_count)
        .ok_or_else(|| err("extent count overflows"))?;
    let in_place = last.stripes.len() == 1
        && last.stripes[0].pv == me.name
        && last.stripes[0]
            .pv_start_extent
            .checked_add(last.extent_count)
            == Some(me.pe_count);
    if in_place {
        let seg = sec
            .items
            .iter_mut()
            .find_map(|(k, n)| match n {
                Node::Section(s)
                    if k.starts_with("segment")
                        && s.int("start_extent") == i64::try_from(last.start_extent).ok() =>
                {
                    Some(s)
                }
                _ => None,
            })
            .ok_or_else(|| err("its last segment is missing from the text"))?;
        set_int(seg, "extent_count", last.extent_count.saturating_add(added))?;
        return Ok((old, false));
    }
    let count = lv.segments.len() as u64 + 1;
    let int = |v: u64| {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| err("number too large"))
    };
    let seg = Section {
        items: vec![
            ("start_extent".into(), Node::Value(int(old)?)),
            ("extent_count".into(), Node::Value(int(added)?)),
            ("type".into(), Node::Value(Value::Str("striped".into()))),
            ("stripe_count".into(), Node::Value(Value::Int(1))),
            (
                "stripes".into(),
                Node::Value(Value::List(vec![
                    Value::Str(me.name.clone()),
                    int(me.pe_count)?,
                ])),
            ),
        ],
    };
    set_int(sec, "segment_count", count)?;
    let name = format!("segment{count}");
    if child(sec, &name).is_some() {
        return Err(err("segment names are not segment1..N"));
    }
    sec.items.push((name, Node::Section(seg)));
    Ok((old, true))
}

fn lv_fs(
    s: &VolumeGroup,
    lv: &LogicalVolume,
    extents: u64,
    notes: &mut Vec<String>,
) -> Option<FsGrow> {
    let c = lv
        .content
        .as_ref()
        .filter(|c| c.kind != ContentKind::Lvm2Member && growable(c).is_ok());
    let Some(c) = c else {
        notes.push(format!(
            "LV {}/{} holds no filesystem the restore grows",
            s.name, lv.name
        ));
        return None;
    };
    Some(FsGrow {
        on: GrowTarget::Lv {
            vg: s.name.clone(),
            lv: lv.name.clone(),
        },
        fs: c.kind,
        uuid: c.uuid.clone(),
        new_size: extents.saturating_mul(s.extent_size).saturating_mul(SECTOR),
    })
}

/// The new text at ring offset 512 and the area header pointing at it.
fn write_metadata(
    pv: &LvmPv,
    offset: u64,
    area: Area,
    text: &[u8],
    patches: &mut PatchSet,
) -> Result<(), String> {
    let mut bytes = text.to_vec();
    bytes.push(0);
    let len = bytes.len() as u64;
    if len > area.size.saturating_sub(MDA_HEADER_SIZE) {
        return Err(format!(
            "the new metadata ({len} bytes) does not fit the PV's metadata area ({} bytes)",
            area.size
        ));
    }
    let mut h = vec![0u8; MDA_HEADER_SIZE as usize];
    h[4..20].copy_from_slice(MDA_MAGIC);
    h[20..24].copy_from_slice(&1u32.to_le_bytes());
    h[24..32].copy_from_slice(&area.offset.to_le_bytes());
    h[32..40].copy_from_slice(&area.size.to_le_bytes());
    h[40..48].copy_from_slice(&MDA_HEADER_SIZE.to_le_bytes());
    h[48..56].copy_from_slice(&len.to_le_bytes());
    h[56..60].copy_from_slice(&lvm_crc(&bytes).to_le_bytes());
    let crc = lvm_crc(&h[4..]);
    h[0..4].copy_from_slice(&crc.to_le_bytes());
    let at = offset + area.offset;
    patches.write(
        at,
        h,
        format!("LVM metadata area header of PV {}", pv.pv_uuid),
    );
    patches.write(
        at + MDA_HEADER_SIZE,
        bytes,
        format!("LVM metadata text of PV {}", pv.pv_uuid),
    );
    Ok(())
}

/// The label sector with the PV header's new device size.
fn write_label(pv: &LvmPv, offset: u64, new_len: u64, patches: &mut PatchSet) {
    let mut s = vec![0u8; SECTOR as usize];
    s[0..8].copy_from_slice(b"LABELONE");
    s[8..16].copy_from_slice(&pv.label_sector.to_le_bytes());
    s[20..24].copy_from_slice(&32u32.to_le_bytes());
    s[24..32].copy_from_slice(b"LVM2 001");
    s[32..64].copy_from_slice(pv.pv_uuid.as_raw());
    s[64..72].copy_from_slice(&new_len.to_le_bytes());
    let mut at = 72;
    let data = Area {
        size: if pv.data_area.size == 0 {
            0
        } else {
            new_len.saturating_sub(pv.data_area.offset)
        },
        ..pv.data_area
    };
    let zero = Area { offset: 0, size: 0 };
    // Callers pass one metadata area at most, so everything fits the sector.
    put_area(&mut s, &mut at, data);
    put_area(&mut s, &mut at, zero);
    for a in &pv.metadata_areas {
        put_area(&mut s, &mut at, *a);
    }
    put_area(&mut s, &mut at, zero);
    // Extension: version, flags (PV in a VG), bootloader areas.
    let flags = if pv.vg.is_some() { PV_EXT_USED } else { 0 };
    s[at..at + 4].copy_from_slice(&PV_EXT_VERSION.to_le_bytes());
    s[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
    at += 8;
    if let Some(ba) = pv.bootloader_area {
        put_area(&mut s, &mut at, ba);
    }
    let crc = lvm_crc(&s[20..]);
    s[16..20].copy_from_slice(&crc.to_le_bytes());
    patches.write(
        offset + pv.label_sector * SECTOR,
        s,
        format!("LVM label of PV {}", pv.pv_uuid),
    );
}

fn put_area(s: &mut [u8], at: &mut usize, a: Area) {
    s[*at..*at + 8].copy_from_slice(&a.offset.to_le_bytes());
    s[*at + 8..*at + 16].copy_from_slice(&a.size.to_le_bytes());
    *at += 16;
}

fn top_section<'a>(tree: &'a mut Section, name: &str) -> Option<&'a mut Section> {
    tree.items.iter_mut().find_map(|(k, n)| match n {
        Node::Section(s) if k == name => Some(s),
        _ => None,
    })
}

fn child<'a>(s: &'a mut Section, key: &str) -> Option<&'a mut Section> {
    top_section(s, key)
}

/// Set the first `key = …` of `s` to `v`, or append it.
fn set_int(s: &mut Section, key: &str, v: u64) -> Result<(), Refusal> {
    let v = Value::Int(
        i64::try_from(v)
            .map_err(|_| Refusal::Layout(format!("LVM metadata {key} {v} is too large")))?,
    );
    match s
        .items
        .iter_mut()
        .find(|(k, n)| k == key && matches!(n, Node::Value(_)))
    {
        Some((_, n)) => *n = Node::Value(v),
        None => s.items.push((key.to_string(), Node::Value(v))),
    }
    Ok(())
}

/// LVM's text format, as LVM writes it into a metadata area (no indentation).
pub(crate) fn write_text(tree: &Section) -> String {
    let mut out = String::new();
    write_section(&mut out, tree);
    out
}

fn write_section(out: &mut String, s: &Section) {
    for (key, node) in &s.items {
        match node {
            Node::Value(v) => {
                out.push_str(key);
                out.push_str(" = ");
                write_value(out, v);
                out.push('\n');
            }
            Node::Section(sub) => {
                out.push_str(key);
                out.push_str(" {\n");
                write_section(out, sub);
                out.push_str("}\n");
            }
        }
    }
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(f),
        Value::Str(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_through_the_parser() {
        let text = "vg0 {\nid = \"a\\\"b\"\nseqno = 3\nstatus = [\"READ\", \"WRITE\"]\nflags = []\nf = 1.5\nsub {\nx = -1\n}\n}\ncontents = \"Text Format Volume Group\"\n";
        let tree = lvm_text::parse(text).unwrap();
        let again = write_text(&tree);
        assert_eq!(again, text);
        assert_eq!(lvm_text::parse(&again).unwrap(), tree);
    }
}
