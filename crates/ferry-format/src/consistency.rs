//! How a snapshot was taken: the `consistency` record of its manifest.
//!
//! `ferry-capture` produces it (`Capture::end`), the backup sends it with the commit, the
//! appliance checks it and signs it with the rest of the manifest. A manifest written before the
//! field existed reads as [`Consistency::Unknown`]: nothing is claimed that was not recorded.
//! docs/consistency.md says what each mode guarantees.
//!
//! ```json
//! {"mode": "live"}
//! {"mode": "point-in-time", "method": "freeze", "frozen": ["/"], "snapshots": [],
//!  "read_only": [], "not_frozen": [{"mount_point": "/boot/efi", "fstype": "vfat"}],
//!  "freeze_ms": 1234, "snapshot_ms": 0}
//! ```

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::FormatError;

/// Most entries in each list of a record (mount points, LVs): a source has far fewer
/// filesystems; the bound keeps a hostile commit small.
pub const MAX_ENTRIES: usize = 256;
/// Longest mount point, LV name or filesystem type recorded (PATH_MAX).
pub const MAX_TEXT: usize = 4096;

/// How a snapshot was taken.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode", deny_unknown_fields)]
pub enum Consistency {
    /// Every filesystem on the source disks as it stood at one instant (except those listed in
    /// `not_frozen`).
    PointInTime {
        method: Method,
        /// Mount points frozen for the read.
        frozen: Vec<PathBuf>,
        /// LVs read from snapshots (`vg/lv`).
        snapshots: Vec<String>,
        /// Read-only filesystems (nothing could change them).
        read_only: Vec<PathBuf>,
        /// Filesystems that could be neither frozen nor snapshotted: read live.
        not_frozen: Vec<NotFrozen>,
        /// How long the filesystems stayed frozen, in milliseconds (0: none was).
        freeze_ms: u64,
        /// How long the LVM snapshots existed, in milliseconds (0: none was taken).
        #[serde(default)]
        snapshot_ms: u64,
    },
    /// Read by the rescue image's agent (a backup job) with the source's OS not running and
    /// none of its filesystems mounted: consistent by construction. The appliance accepts it
    /// only from an agent running a backup job (docs/consistency.md).
    Offline,
    /// Read while the source may have been writing: no guarantee across the disk.
    Live,
    /// Not recorded (a manifest from before the field existed, or an agent that did not say).
    #[default]
    Unknown,
}

/// How point-in-time was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Every writable filesystem frozen (FIFREEZE) for the read.
    Freeze,
    /// Every writable filesystem read from an LVM snapshot.
    LvmSnapshot,
    LvmSnapshotAndFreeze,
    /// Nothing could change during the read: no filesystem on the disks was mounted
    /// read-write, or the source was an image file that did not change while it was read.
    NoneNeeded,
}

/// A filesystem left writable during a point-in-time capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotFrozen {
    pub mount_point: PathBuf,
    pub fstype: String,
}

impl Consistency {
    pub fn is_unknown(&self) -> bool {
        matches!(self, Consistency::Unknown)
    }

    /// `point-in-time`, `offline`, `live` or `unknown`: the mode alone.
    pub fn mode(&self) -> &'static str {
        match self {
            Consistency::PointInTime { .. } => "point-in-time",
            Consistency::Offline => "offline",
            Consistency::Live => "live",
            Consistency::Unknown => "unknown",
        }
    }

    /// How long the source was held still (frozen, or snapshots kept), in seconds.
    pub fn held_seconds(&self) -> f64 {
        match self {
            Consistency::PointInTime {
                freeze_ms,
                snapshot_ms,
                ..
            } => (*freeze_ms).max(*snapshot_ms) as f64 / 1000.0,
            _ => 0.0,
        }
    }

    /// Bounds every reader (and the appliance, before it signs) checks.
    pub fn check(&self) -> Result<(), FormatError> {
        let Consistency::PointInTime {
            frozen,
            snapshots,
            read_only,
            not_frozen,
            ..
        } = self
        else {
            return Ok(());
        };
        let lists = [
            ("frozen", frozen.len()),
            ("snapshots", snapshots.len()),
            ("read_only", read_only.len()),
            ("not_frozen", not_frozen.len()),
        ];
        for (what, n) in lists {
            if n > MAX_ENTRIES {
                return Err(FormatError::Manifest(format!(
                    "consistency lists {n} {what} entries; at most {MAX_ENTRIES} are accepted"
                )));
            }
        }
        let texts = frozen
            .iter()
            .chain(read_only)
            .chain(not_frozen.iter().map(|n| &n.mount_point))
            .map(|p| p.as_os_str().len())
            .chain(snapshots.iter().map(String::len))
            .chain(not_frozen.iter().map(|n| n.fstype.len()));
        for len in texts {
            if len > MAX_TEXT {
                return Err(FormatError::Manifest(format!(
                    "consistency names a {len}-byte path or name; at most {MAX_TEXT} bytes are \
                     accepted"
                )));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Freeze => "freeze",
            Method::LvmSnapshot => "lvm-snapshot",
            Method::LvmSnapshotAndFreeze => "lvm-snapshot+freeze",
            Method::NoneNeeded => "none-needed",
        })
    }
}

/// One short column for people: `point-in-time (freeze 1.2s)`, `live`, `unknown`.
impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::PointInTime {
                method: Method::NoneNeeded,
                ..
            } => f.write_str("point-in-time (none-needed)"),
            Consistency::PointInTime { method, .. } => {
                write!(f, "point-in-time ({method} {:.1}s)", self.held_seconds())
            }
            other => f.write_str(other.mode()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frozen(ms: u64) -> Consistency {
        Consistency::PointInTime {
            method: Method::Freeze,
            frozen: vec!["/".into()],
            snapshots: vec![],
            read_only: vec![],
            not_frozen: vec![NotFrozen {
                mount_point: "/boot/efi".into(),
                fstype: "vfat".into(),
            }],
            freeze_ms: ms,
            snapshot_ms: 0,
        }
    }

    #[test]
    fn each_mode_round_trips_with_its_tag() {
        let cases = [
            (frozen(1234), r#"{"mode":"point-in-time","method":"freeze""#),
            (Consistency::Live, r#"{"mode":"live"}"#),
            (Consistency::Offline, r#"{"mode":"offline"}"#),
            (Consistency::Unknown, r#"{"mode":"unknown"}"#),
        ];
        for (c, prefix) in cases {
            let text = serde_json::to_string(&c).unwrap();
            assert!(text.starts_with(prefix), "{text}");
            assert_eq!(serde_json::from_str::<Consistency>(&text).unwrap(), c);
        }
    }

    /// (serde ignores extra fields next to a unit variant's tag; the appliance re-serializes
    /// what it stores, so they never reach a manifest.)
    #[test]
    fn unknown_modes_methods_and_fields_are_refused() {
        for bad in [
            r#"{"mode":"instant"}"#,
            r#"{"mode":"point-in-time","method":"magic","frozen":[],"snapshots":[],"read_only":[],"not_frozen":[],"freeze_ms":0}"#,
            r#"{"method":"freeze"}"#,
            r#"{"mode":"point-in-time","method":"freeze","frozen":[],"snapshots":[],"read_only":[],"not_frozen":[],"freeze_ms":0,"extra":1}"#,
        ] {
            assert!(serde_json::from_str::<Consistency>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_column_says_mode_method_and_duration() {
        assert_eq!(frozen(1234).to_string(), "point-in-time (freeze 1.2s)");
        assert_eq!(Consistency::Live.to_string(), "live");
        assert_eq!(Consistency::Unknown.to_string(), "unknown");
        let none = Consistency::PointInTime {
            method: Method::NoneNeeded,
            frozen: vec![],
            snapshots: vec![],
            read_only: vec![],
            not_frozen: vec![],
            freeze_ms: 0,
            snapshot_ms: 0,
        };
        assert_eq!(none.to_string(), "point-in-time (none-needed)");
    }

    #[test]
    fn oversized_records_are_refused() {
        let mut c = frozen(1);
        if let Consistency::PointInTime { frozen, .. } = &mut c {
            *frozen = vec!["/x".into(); MAX_ENTRIES + 1];
        }
        assert!(c.check().unwrap_err().to_string().contains("frozen"));
        let mut c = frozen(1);
        if let Consistency::PointInTime { not_frozen, .. } = &mut c {
            not_frozen[0].fstype = "x".repeat(MAX_TEXT + 1);
        }
        assert!(c.check().is_err());
        frozen(1).check().unwrap();
        Consistency::Live.check().unwrap();
    }
}
