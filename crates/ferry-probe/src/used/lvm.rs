//! An LVM2 PV: everything before the first extent, the metadata and bootloader areas, the
//! extents the VG metadata allocates (through an LV's filesystem when the probe read one) and
//! the tail after the last extent. Extents no LV holds are unused.

use ferry_format::layout::{Content, LogicalVolume, LvmPv};

use super::{content, why, Builder, Out, Skip};
use crate::view::View;

const SECTOR: u64 = 512;
/// Segment types whose areas name LVs, never PVs: their space is in some (hidden) LV's
/// "striped" segments, which are counted instead. Any other type makes the PV used in full.
const LV_ONLY_TYPES: &[&str] = &[
    "thin",
    "thin-pool",
    "cache",
    "cache-pool",
    "snapshot",
    "error",
    "zero",
    "vdo",
    "vdo-pool",
    "writecache",
    "integrity",
    "raid0",
    "raid0_meta",
    "raid1",
    "raid10",
    "raid4",
    "raid5",
    "raid5_la",
    "raid5_ls",
    "raid5_ra",
    "raid5_rs",
    "raid5_n",
    "raid6",
    "raid6_zr",
    "raid6_nr",
    "raid6_nc",
    "raid6_n_6",
    "raid6_ls_6",
    "raid6_la_6",
    "raid6_rs_6",
    "raid6_ra_6",
    "mirror",
];

/// Where one LV's stripes lie on this PV: (pv extent, extent count) in LV order.
type Extents = Vec<(u64, u64)>;

pub(super) fn used(
    b: &mut Builder,
    view: &View,
    c: &Content,
    what: &str,
    depth: u32,
) -> Result<(), Skip> {
    let Some(pv) = &c.lvm else {
        return why("no PV header recorded");
    };
    let Some(vg) = &pv.vg else {
        return why("no VG metadata on this PV (an orphan PV, or one without a metadata area)");
    };
    let vg = &vg.summary;
    let Some(me) = vg.physical_volumes.iter().find(|p| p.uuid == pv.pv_uuid) else {
        return why("the VG metadata does not list this PV");
    };
    let extent = vg.extent_size.checked_mul(SECTOR).filter(|&e| e > 0);
    let Some(extent) = extent else {
        return why("extent_size overflows");
    };
    let pe_start = pv.data_area.offset;
    let end = me
        .pe_count
        .checked_mul(extent)
        .and_then(|n| n.checked_add(pe_start));
    let Some(end) = end.filter(|&e| e <= view.len()) else {
        return why(format!(
            "{} extents of {extent} bytes from {pe_start} overflow the PV",
            me.pe_count
        ));
    };
    if let Some(bad) = vg
        .logical_volumes
        .iter()
        .flat_map(|lv| &lv.segments)
        .find(|s| s.segment_type != "striped" && !LV_ONLY_TYPES.contains(&s.segment_type.as_str()))
    {
        return why(format!(
            "segment type {:?} is not understood",
            bad.segment_type
        ));
    }
    let mut placed = Vec::new();
    for lv in &vg.logical_volumes {
        placed.push((lv, extents_here(lv, &me.name, me.pe_count)?));
    }
    let mut out = Out { b: &mut *b, view };
    metadata(&mut out, pv, end);
    for (lv, extents) in placed {
        let ranges: Vec<(u64, u64)> = extents
            .iter()
            .map(|&(first, n)| (pe_start + first * extent, n * extent))
            .collect();
        let probed = lv.content.as_ref().filter(|_| linear_here(lv, &me.name));
        match (probed, view.remap(&ranges)) {
            (Some(lv_content), Some(lv_view)) => {
                let what = format!("{what} LV {}/{}", vg.name, lv.name);
                content(b, &lv_view, lv_content, &what, depth + 1).map_err(Skip::Read)?;
            }
            _ => {
                let mut out = Out { b: &mut *b, view };
                for (offset, len) in ranges {
                    out.used(offset, len);
                }
            }
        }
    }
    Ok(())
}

/// Label, metadata area(s) and alignment before the first extent; listed areas; the tail after
/// the last extent (a second metadata area lives there).
fn metadata(out: &mut Out, pv: &LvmPv, extents_end: u64) {
    out.used(0, pv.data_area.offset);
    for a in pv.metadata_areas.iter().chain(&pv.bootloader_area) {
        out.used(a.offset, a.size);
    }
    out.used(extents_end, u64::MAX);
}

/// The stripes of `lv` on PV `pv_name`, checked to lie inside its `pe_count` extents.
fn extents_here(lv: &LogicalVolume, pv_name: &str, pe_count: u64) -> Result<Extents, Skip> {
    let mut out = Vec::new();
    for s in lv.segments.iter().filter(|s| s.segment_type == "striped") {
        let stripes = s.stripes.len() as u64;
        if stripes == 0 || s.extent_count % stripes != 0 {
            return why(format!(
                "LV {}: {} extents do not split over {stripes} stripes",
                lv.name, s.extent_count
            ));
        }
        let per_stripe = s.extent_count / stripes;
        for st in s.stripes.iter().filter(|st| st.pv == pv_name) {
            if st
                .pv_start_extent
                .checked_add(per_stripe)
                .is_none_or(|e| e > pe_count)
            {
                return why(format!(
                    "LV {}: extents {}+{per_stripe} lie past the PV's {pe_count}",
                    lv.name, st.pv_start_extent
                ));
            }
            out.push((st.pv_start_extent, per_stripe));
        }
    }
    Ok(out)
}

/// All segments are one-stripe segments on this PV, contiguous from extent 0: the extents in
/// order are the LV's bytes in order (as the probe read its content).
fn linear_here(lv: &LogicalVolume, pv_name: &str) -> bool {
    let mut next = 0u64;
    !lv.segments.is_empty()
        && lv.segments.iter().all(|s| {
            let ok = s.segment_type == "striped"
                && s.stripes.len() == 1
                && s.stripes[0].pv == pv_name
                && s.start_extent == next;
            next = next.saturating_add(s.extent_count);
            ok
        })
}
