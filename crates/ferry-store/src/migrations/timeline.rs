//! A cutover's timeline: when each phase happened, and the phases and downtime derived from it.

use std::time::SystemTime;

use ferry_format::source::Consistency;
use serde::{Deserialize, Serialize};

use crate::tokens::parse_rfc3339;

/// A cutover's phases as they happened (RFC 3339 UTC, the appliance's clock: each is when the
/// appliance heard of it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverTimeline {
    /// The operator asked for it.
    pub requested: String,
    /// The source agent took its cutover task: `pre_cutover` starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_started: Option<String>,
    /// How long `pre_cutover` ran (the source agent's figure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_seconds: Option<f64>,
    /// The source reported its final sync read and sent (or the task's failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_ended: Option<String>,
    /// The final snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// How the final snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_read: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// The standby starts writing the final delta: the point of no return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_ended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_written: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixup_ended: Option<String>,
    /// The fix-up's summary as the standby reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixup: Option<String>,
    /// The standby reboots into the migrated system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebooting: Option<String>,
    /// The operator asked to power the source off once the standby starts writing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub poweroff_source: bool,
    /// When the source was asked to power off (the standby started writing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poweroff_asked: Option<String>,
    /// Why the cutover was aborted (back to syncing) or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
}

/// One phase of a cutover for `migrations show`: its name and seconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
}

/// The phases of a cutover and its downtime, from its timeline and the first-boot beacon's
/// `booted` time (when it reported).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutoverTimes {
    pub phases: Vec<Phase>,
    /// From `pre_cutover`'s start to the beacon (or to the reboot when no beacon reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    /// `"beacon"` or `"reboot"`: where the downtime ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_until: Option<String>,
}

impl CutoverTimeline {
    /// Each phase that both ends of are known, in order, and the downtime.
    pub fn times(&self, booted: Option<&str>) -> CutoverTimes {
        let t = |s: &Option<String>| s.as_deref().and_then(parse_rfc3339);
        let secs = |a: Option<SystemTime>, b: Option<SystemTime>| {
            let (a, b) = (a?, b?);
            Some(b.duration_since(a).map_or(0.0, |d| d.as_secs_f64()))
        };
        let hook_ended = t(&self.hook_started).and_then(|h| {
            let s = self.hook_seconds.filter(|s| s.is_finite() && *s >= 0.0)?;
            Some(h + std::time::Duration::from_secs_f64(s))
        });
        let booted = booted.and_then(parse_rfc3339);
        let steps = [
            (
                "waiting for the source agent",
                t(&Some(self.requested.clone())),
                t(&self.hook_started),
            ),
            ("pre_cutover hook", t(&self.hook_started), hook_ended),
            (
                "final sync (read and send)",
                hook_ended.or(t(&self.hook_started)),
                t(&self.sync_ended),
            ),
            (
                "handing to the standby",
                t(&self.sync_ended),
                t(&self.apply_started),
            ),
            (
                "standby apply",
                t(&self.apply_started),
                t(&self.apply_ended),
            ),
            ("fix-up", t(&self.apply_ended), t(&self.fixup_ended)),
            ("to the reboot", t(&self.fixup_ended), t(&self.rebooting)),
            ("reboot to the beacon", t(&self.rebooting), booted),
        ];
        let phases = steps
            .into_iter()
            .filter_map(|(name, a, b)| {
                secs(a, b).map(|seconds| Phase {
                    name: name.to_string(),
                    seconds,
                })
            })
            .collect();
        let (end, until) = match (booted, t(&self.rebooting)) {
            (Some(b), _) => (Some(b), Some("beacon")),
            (None, Some(r)) => (Some(r), Some("reboot")),
            (None, None) => (None, None),
        };
        let downtime_seconds = secs(t(&self.hook_started), end);
        CutoverTimes {
            phases,
            downtime_seconds,
            downtime_until: downtime_seconds.and(until).map(str::to_string),
        }
    }
}
