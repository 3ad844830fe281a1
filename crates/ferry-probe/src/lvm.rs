//! LVM2 physical volumes: label, PV header, metadata area, VG metadata text.
//!
//! On-disk format (all little-endian; "sector" here is always 512 bytes):
//! - label header in one of sectors 0-3: `0` "LABELONE", `8` sector number of the label,
//!   `16` CRC (LVM's, over bytes 20..512), `20` offset of the PV header from the label (32),
//!   `24` "LVM2 001".
//! - PV header: `0` PV UUID (32 characters), `32` device size in bytes, then two lists of
//!   (offset u64, size u64) areas each ended by a zero entry: data areas, then metadata areas;
//!   then an extension (`version` u32, `flags` u32, bootloader areas list) when version >= 1.
//! - metadata area header (512 bytes at the area's offset): `0` CRC over bytes 4..512, `4`
//!   magic " LVM2 x[5A%r0N*>", `20` version 1, `24` start (the area's offset), `32` size, `40`
//!   raw locations (offset u64 relative to the area, size u64, checksum u32, flags u32), the
//!   first being the committed metadata. The text lies in a circular buffer from byte 512 of
//!   the area to its end, ends with a NUL and is checksummed with LVM's CRC.

use ferry_format::layout::{
    Area, Content, ContentKind, LogicalVolume, LvSegment, LvmPv, LvmUuid, PhysicalVolume, Stripe,
    VgMetadata, VolumeGroup,
};

use crate::content;
use crate::crc::lvm_crc;
use crate::lvm_text::{self, Section, Value};
use crate::view::{le32, le64, View};
use crate::ProbeError;

const SECTOR: u64 = 512;
const LABEL_SECTORS: u64 = 4;
const MDA_HEADER_SIZE: u64 = 512;
const MDA_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
const RAW_LOCN_IGNORED: u32 = 1;
/// Metadata texts larger than this are refused (LVM's default area is 1 MiB).
const MAX_METADATA_TEXT: u64 = 16 << 20;
/// Metadata areas per PV accepted (LVM writes at most 2).
const MAX_AREAS: usize = 8;

/// The PV on `view`, or `None` when no valid label is there. With `follow` false (inside an
/// LV) a PV is reported without reading its metadata.
pub(crate) fn probe(view: &View, follow: bool) -> Result<Option<Content>, ProbeError> {
    let Some((label_sector, sector)) = find_label(view)? else {
        return Ok(None);
    };
    if !follow {
        return Ok(Some(Content::of(ContentKind::Lvm2Member)));
    }
    let mut pv = pv_header(view, label_sector, &sector)?;
    pv.vg = read_metadata(view, &pv.metadata_areas)?;
    if let Some(vg) = &mut pv.vg {
        probe_lv_contents(
            view,
            &pv.pv_uuid,
            &pv.data_area,
            &mut vg.summary,
            vg.mda_offset,
        )?;
    }
    Ok(Some(Content {
        uuid: Some(pv.pv_uuid.to_string()),
        lvm: Some(pv),
        ..Content::of(ContentKind::Lvm2Member)
    }))
}

fn lvm_error(
    view: &View,
    region: &'static str,
    offset: u64,
    reason: impl Into<String>,
) -> ProbeError {
    ProbeError::Lvm {
        region,
        offset: view.disk_offset(offset),
        reason: reason.into(),
    }
}

/// The first sector of 0-3 holding a label whose sector number, type and CRC are right.
fn find_label(view: &View) -> Result<Option<(u64, Vec<u8>)>, ProbeError> {
    for n in 0..LABEL_SECTORS {
        let Some(s) = view.read(n * SECTOR, SECTOR as usize)? else {
            return Ok(None);
        };
        let valid = &s[..8] == b"LABELONE"
            && le64(&s, 8) == n
            && le32(&s, 16) == lvm_crc(&s[20..])
            && &s[24..32] == b"LVM2 001";
        if valid {
            return Ok(Some((n, s)));
        }
    }
    Ok(None)
}

fn pv_header(view: &View, label_sector: u64, s: &[u8]) -> Result<LvmPv, ProbeError> {
    let at = label_sector * SECTOR;
    let header = le32(s, 20) as usize;
    if !(32..=512 - 40).contains(&header) {
        return Err(lvm_error(
            view,
            "label",
            at,
            format!("PV header offset {header} is not inside the label sector"),
        ));
    }
    let uuid = LvmUuid::from_raw(&s[header..header + 32]).ok_or_else(|| {
        lvm_error(
            view,
            "PV header",
            at,
            "the PV UUID has characters LVM does not use",
        )
    })?;
    let device_size = le64(s, header + 32);
    let mut cursor = header + 40;
    let list = |what: &str, cursor: &mut usize| area_list(view, s, at, cursor, what);
    let data = list("data area", &mut cursor)?;
    let metadata_areas = list("metadata area", &mut cursor)?;
    // Extension (version 2 has bootloader areas); absent in old PVs, so room is optional.
    let bootloader_area = if cursor + 8 <= s.len() && le32(s, cursor) >= 1 {
        cursor += 8;
        list("bootloader area", &mut cursor)?.first().copied()
    } else {
        None
    };
    let [data_area] = data[..] else {
        return Err(lvm_error(
            view,
            "PV header",
            at,
            format!("{} data areas, expected one", data.len()),
        ));
    };
    if data_area.offset >= view.len() {
        return Err(lvm_error(
            view,
            "PV header",
            at,
            format!(
                "data area at {} is past the end of the PV",
                data_area.offset
            ),
        ));
    }
    Ok(LvmPv {
        pv_uuid: uuid,
        label_sector,
        device_size,
        data_area,
        metadata_areas,
        bootloader_area,
        vg: None,
    })
}

/// A zero-terminated list of areas at `*cursor` in the label sector `s` (at view offset `at`).
fn area_list(
    view: &View,
    s: &[u8],
    at: u64,
    cursor: &mut usize,
    what: &str,
) -> Result<Vec<Area>, ProbeError> {
    let mut areas = Vec::new();
    loop {
        if *cursor + 16 > s.len() {
            return Err(lvm_error(
                view,
                "PV header",
                at,
                format!("the {what} list runs past the label sector"),
            ));
        }
        let area = Area {
            offset: le64(s, *cursor),
            size: le64(s, *cursor + 8),
        };
        *cursor += 16;
        if area.offset == 0 {
            return Ok(areas);
        }
        if areas.len() == MAX_AREAS {
            return Err(lvm_error(
                view,
                "PV header",
                at,
                format!("more than {MAX_AREAS} {what}s"),
            ));
        }
        areas.push(area);
    }
}

/// The committed metadata with the highest seqno among the areas. A corrupt area is an error
/// only when no other area holds valid metadata.
fn read_metadata(view: &View, areas: &[Area]) -> Result<Option<VgMetadata>, ProbeError> {
    let mut best: Option<VgMetadata> = None;
    let mut first_error = None;
    for area in areas {
        match read_area(view, area) {
            Ok(Some(vg))
                if best
                    .as_ref()
                    .is_none_or(|b| b.summary.seqno < vg.summary.seqno) =>
            {
                best = Some(vg)
            }
            Ok(_) => {}
            Err(e @ ProbeError::Read { .. }) => return Err(e),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (best, first_error) {
        (Some(vg), _) => Ok(Some(vg)),
        (None, Some(e)) => Err(e),
        (None, None) => Ok(None),
    }
}

fn read_area(view: &View, area: &Area) -> Result<Option<VgMetadata>, ProbeError> {
    let at = area.offset;
    let err = |reason: String| lvm_error(view, "metadata area header", at, reason);
    if area.size <= MDA_HEADER_SIZE {
        return Err(err(format!(
            "area size {} leaves no room for metadata",
            area.size
        )));
    }
    if at.checked_add(area.size).is_none_or(|end| end > view.len()) {
        return Err(err(format!(
            "area of {} bytes is past the end of the PV ({} bytes)",
            area.size,
            view.len()
        )));
    }
    let h = view.read(at, MDA_HEADER_SIZE as usize)?.unwrap_or_default();
    let crc = lvm_crc(&h[4..]);
    if le32(&h, 0) != crc {
        return Err(err(format!(
            "checksum is {crc:#010x}, the header says {:#010x}",
            le32(&h, 0)
        )));
    }
    if &h[4..20] != MDA_MAGIC || le32(&h, 20) != 1 {
        return Err(err("bad magic or version".into()));
    }
    if le64(&h, 24) != at || le64(&h, 32) != area.size {
        return Err(err(format!(
            "header says start {} size {}, the PV header {at} {}",
            le64(&h, 24),
            le64(&h, 32),
            area.size
        )));
    }
    let (offset, size, checksum, flags) = (le64(&h, 40), le64(&h, 48), le32(&h, 56), le32(&h, 60));
    if offset == 0 || flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None); // no VG (an orphan PV) or an area LVM is told to ignore
    }
    let ring = area.size - MDA_HEADER_SIZE;
    if offset < MDA_HEADER_SIZE
        || offset >= area.size
        || size == 0
        || size > ring
        || size > MAX_METADATA_TEXT
    {
        return Err(err(format!(
            "metadata location offset {offset} size {size} is not inside the {ring}-byte ring"
        )));
    }
    // The ring wraps from the area's end back to byte 512.
    let first = size.min(area.size - offset);
    let mut text = view.read(at + offset, first as usize)?.unwrap_or_default();
    text.extend(
        view.read(at + MDA_HEADER_SIZE, (size - first) as usize)?
            .unwrap_or_default(),
    );
    let crc = lvm_crc(&text);
    if crc != checksum {
        let reason =
            format!("metadata text checksum is {crc:#010x}, the header says {checksum:#010x}");
        return Err(lvm_error(view, "metadata text", at + offset, reason));
    }
    while text.last() == Some(&0) {
        text.pop();
    }
    let text_at = view.disk_offset(at + offset);
    let text = String::from_utf8(text).map_err(|_| ProbeError::LvmText {
        offset: text_at,
        line: 0,
        reason: "the text is not UTF-8".into(),
    })?;
    let tree = lvm_text::parse(&text).map_err(|e| ProbeError::LvmText {
        offset: text_at,
        line: e.line,
        reason: e.reason,
    })?;
    let summary = volume_group(&tree).map_err(|reason| ProbeError::LvmText {
        offset: text_at,
        line: 0,
        reason,
    })?;
    Ok(Some(VgMetadata {
        mda_offset: at,
        text,
        summary,
    }))
}

/// The summary of a parsed metadata text: its one top-level section is the VG.
pub(crate) fn volume_group(top: &Section) -> Result<VolumeGroup, String> {
    let mut sections = top.sections();
    let (name, vg) = sections.next().ok_or("no volume group section")?;
    if sections.next().is_some() {
        return Err("more than one top-level section".into());
    }
    let mut physical_volumes = Vec::new();
    for (pv_name, pv) in vg
        .section("physical_volumes")
        .ok_or("no physical_volumes section")?
        .sections()
    {
        let what = format!("physical volume {pv_name}");
        physical_volumes.push(PhysicalVolume {
            name: pv_name.to_string(),
            uuid: uuid(pv, &what)?,
            device_hint: pv.str("device").map(str::to_string),
            dev_size: count(pv, "dev_size", &what).unwrap_or(0),
            pe_start: count(pv, "pe_start", &what)?,
            pe_count: count(pv, "pe_count", &what)?,
        });
    }
    let mut logical_volumes = Vec::new();
    for (lv_name, lv) in vg
        .section("logical_volumes")
        .into_iter()
        .flat_map(Section::sections)
    {
        logical_volumes.push(logical_volume(lv_name, lv)?);
    }
    let what = format!("volume group {name}");
    let extent_size = count(vg, "extent_size", &what)?;
    if extent_size == 0 {
        return Err(format!("{what}: extent_size is 0"));
    }
    Ok(VolumeGroup {
        name: name.to_string(),
        uuid: uuid(vg, &what)?,
        seqno: count(vg, "seqno", &what)?,
        extent_size,
        physical_volumes,
        logical_volumes,
    })
}

fn logical_volume(name: &str, lv: &Section) -> Result<LogicalVolume, String> {
    let what = format!("logical volume {name}");
    let status = match lv.value("status") {
        Some(Value::List(items)) => items
            .iter()
            .map(|v| match v {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(format!("{what}: status holds a non-string")),
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
        Some(_) => return Err(format!("{what}: status is not a list")),
    };
    let mut segments = Vec::new();
    for (seg_name, seg) in lv.sections().filter(|(k, _)| k.starts_with("segment")) {
        let what = format!("{what} {seg_name}");
        let segment_type = seg
            .str("type")
            .ok_or_else(|| format!("{what}: no type"))?
            .to_string();
        let stripes = if segment_type == "striped" {
            stripes(seg, &what)?
        } else {
            Vec::new()
        };
        segments.push(LvSegment {
            start_extent: count(seg, "start_extent", &what)?,
            extent_count: count(seg, "extent_count", &what)?,
            stripe_size: (stripes.len() > 1)
                .then(|| count(seg, "stripe_size", &what))
                .transpose()?,
            segment_type,
            stripes,
        });
    }
    segments.sort_by_key(|s| s.start_extent);
    Ok(LogicalVolume {
        name: name.to_string(),
        uuid: uuid(lv, &what)?,
        status,
        segments,
        content: None,
    })
}

fn stripes(seg: &Section, what: &str) -> Result<Vec<Stripe>, String> {
    let Some(Value::List(items)) = seg.value("stripes") else {
        return Err(format!("{what}: no stripes list"));
    };
    if items.is_empty() || items.len() % 2 != 0 {
        return Err(format!(
            "{what}: stripes is not a list of (pv, extent) pairs"
        ));
    }
    items
        .chunks_exact(2)
        .map(|pair| match pair {
            [Value::Str(pv), Value::Int(e)] if *e >= 0 => Ok(Stripe {
                pv: pv.clone(),
                pv_start_extent: *e as u64,
            }),
            _ => Err(format!(
                "{what}: stripes is not a list of (pv, extent) pairs"
            )),
        })
        .collect()
}

fn uuid(s: &Section, what: &str) -> Result<LvmUuid, String> {
    let id = s.str("id").ok_or_else(|| format!("{what}: no id"))?;
    id.parse().map_err(|e| format!("{what}: {e}"))
}

fn count(s: &Section, key: &str, what: &str) -> Result<u64, String> {
    match s.int(key) {
        Some(n) if n >= 0 => Ok(n as u64),
        Some(n) => Err(format!("{what}: {key} is negative ({n})")),
        None => Err(format!("{what}: no integer {key}")),
    }
}

/// The PV's extents end inside its `dev_size` and inside the device we read, and every stripe
/// on it lies inside its `pe_count`: otherwise an LV would be read from (or restored to) bytes
/// that are not the PV's.
fn check_extents(
    view: &View,
    vg: &VolumeGroup,
    pv_name: &str,
    extent: u64,
    pe_start: u64,
) -> Result<(), String> {
    let Some(pv) = vg.physical_volumes.iter().find(|p| p.name == pv_name) else {
        return Ok(());
    };
    let claim = format!(
        "physical volume {pv_name} claims {} extents of {extent} bytes from byte {pe_start}",
        pv.pe_count
    );
    let Some(end) = pv
        .pe_count
        .checked_mul(extent)
        .and_then(|n| n.checked_add(pe_start))
    else {
        return Err(format!("{claim}: that overflows"));
    };
    // dev_size 0: old metadata without the field.
    let dev_size = pv.dev_size.saturating_mul(SECTOR);
    if pv.dev_size > 0 && end > dev_size {
        return Err(format!(
            "{claim}, ending at byte {end}, past its own dev_size of {dev_size} bytes"
        ));
    }
    if end > view.len() {
        return Err(format!(
            "{claim}, ending at byte {end}, past the end of the device ({} bytes): the disk is \
             smaller than the volume group says (a truncated image or a shrunk partition?)",
            view.len()
        ));
    }
    for lv in &vg.logical_volumes {
        for seg in lv.segments.iter().filter(|s| s.segment_type == "striped") {
            let per_stripe = seg.extent_count / (seg.stripes.len() as u64).max(1);
            for st in seg.stripes.iter().filter(|st| st.pv == pv_name) {
                let last = st.pv_start_extent.checked_add(per_stripe);
                if last.is_none_or(|e| e > pv.pe_count) {
                    return Err(format!(
                        "logical volume {} uses {per_stripe} extents from extent {} of {pv_name}, \
                         past the end of the PV ({} extents)",
                        lv.name, st.pv_start_extent, pv.pe_count
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Probe the contents of each LV whose segments are all linear on this PV.
fn probe_lv_contents(
    view: &View,
    pv_uuid: &LvmUuid,
    data: &Area,
    vg: &mut VolumeGroup,
    mda: u64,
) -> Result<(), ProbeError> {
    let Some(pv) = vg.physical_volumes.iter().find(|p| p.uuid == *pv_uuid) else {
        return Ok(());
    };
    let pv_name = pv.name.clone();
    let err = |reason: String| lvm_error(view, "metadata text", mda, reason);
    let extent = vg
        .extent_size
        .checked_mul(SECTOR)
        .ok_or_else(|| err("extent_size overflows".into()))?;
    let pe_start = pv
        .pe_start
        .checked_mul(SECTOR)
        .ok_or_else(|| err("pe_start overflows".into()))?;
    if pe_start != data.offset {
        let reason = format!(
            "pe_start {pe_start} differs from the PV header's data area at {}",
            data.offset
        );
        return Err(err(reason));
    }
    check_extents(view, vg, pv_name.as_str(), extent, pe_start).map_err(err)?;
    for lv in &mut vg.logical_volumes {
        let mut ranges = Vec::new();
        let mut next_extent = 0u64;
        let linear_here = lv.segments.iter().all(|s| {
            s.segment_type == "striped"
                && s.stripes.len() == 1
                && s.stripes[0].pv == pv_name
                && s.start_extent == next_extent
                && {
                    next_extent = next_extent.saturating_add(s.extent_count);
                    true
                }
        });
        if !linear_here || lv.segments.is_empty() {
            continue;
        }
        for s in &lv.segments {
            let range = s.stripes[0]
                .pv_start_extent
                .checked_mul(extent)
                .and_then(|o| o.checked_add(pe_start))
                .zip(s.extent_count.checked_mul(extent));
            let Some(range) = range else {
                return Err(err(format!(
                    "logical volume {}: segment at extent {} overflows",
                    lv.name, s.start_extent
                )));
            };
            ranges.push(range);
        }
        let Some(lv_view) = view.remap(&ranges) else {
            return Err(err(format!(
                "logical volume {}: a segment lies past the end of the PV",
                lv.name
            )));
        };
        lv.content = Some(content::probe(&lv_view, 1)?);
    }
    Ok(())
}
