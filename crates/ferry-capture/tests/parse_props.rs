//! Property tests: the parsers of /proc, /sys and LVM report text never panic on arbitrary
//! input, and what they accept is what was written.

use ferry_capture::{extents, lvm, mountinfo, topology};
use proptest::prelude::*;

/// The kernel's escaping of a mountinfo path (space, tab, newline, backslash as `\ooo`).
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

proptest! {
    #[test]
    fn mountinfo_never_panics(text in "\\PC{0,400}") {
        let _ = mountinfo::parse(&text);
    }

    #[test]
    fn mountinfo_lines_of_fields_never_panic(
        fields in proptest::collection::vec("[-0-9:/a-z\\\\ ]{0,12}", 0..14)
    ) {
        let _ = mountinfo::parse(&fields.join(" "));
    }

    #[test]
    fn escaped_mount_points_come_back(point in "/[a-z \\t\\n\\\\é]{0,40}", src in "/dev/[a-z0-9 ]{1,12}") {
        let line = format!("7 1 8:3 / {} rw shared:1 - ext4 {} rw", escape(&point), escape(&src));
        let m = mountinfo::parse(&line).unwrap();
        prop_assert_eq!(m.len(), 1);
        prop_assert_eq!(m[0].mount_point.to_str().unwrap(), point.as_str());
        prop_assert_eq!(&m[0].source, &src);
    }

    #[test]
    fn lvm_names_round_trip(
        vg in "[a-z0-9+_.][a-z0-9+_.-]{0,19}",
        lv in "[a-z0-9+_.][a-z0-9+_.-]{0,19}",
    ) {
        // LVM names never start with '-'; inside them device-mapper doubles each '-'.
        let dm = format!("{}-{}", vg.replace('-', "--"), lv.replace('-', "--"));
        prop_assert_eq!(topology::decode_lvm_name(&dm), Some((vg.clone(), lv)));
        let _ = topology::decode_lvm_name(&vg);
    }

    #[test]
    fn lvm_reports_never_panic(text in "\\PC{0,300}") {
        let _ = lvm::parse_lvs(&text);
        let _ = extents::parse_segments(&text);
        let _ = extents::parse_pvs(&text);
        let _ = extents::parse_pe_range(&text);
    }
}
