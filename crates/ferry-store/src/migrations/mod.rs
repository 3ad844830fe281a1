//! `migrations/<id>.json`: migrations, each binding a source machine's syncs to a standby target
//! (an approved rescue-image agent) that applies every newer snapshot as it lands
//! (docs/migration.md, "Standby target"; docs/store.md, "Migrations").
//!
//! - Creating a migration records it and, in the same locked step, a `standby` job for its agent
//!   (`jobs/<job>.json`, kind `standby`): the agent takes it through the ordinary job poll, so
//!   enrollment, approval, mapping resolution, events and the in-progress marker work as for a
//!   restore. The agent may be named by id or by a MAC of an approved agent.
//! - The standby routes hand the agent the newest snapshot of the machine newer than its basis
//!   ([`Store::standby_next`], remembered as `handed`) and record what it applied
//!   ([`Store::standby_report`]): the basis its disks now hold, when, and the bytes written.
//!   The job's snapshot follows the basis, so `appliance prune` keeps it as a job's snapshot.
//! - While a migration is active (syncing, cutting over) the source record pins its standby's
//!   basis, the snapshot handed to it and the machine's newest snapshot (`pinned`, holder
//!   `migration <id>`); a migration that ends releases them and fails its standby job.
//! - States: syncing → cutting-over → cut-over; syncing → cancelled; syncing | cutting-over →
//!   failed; cutting-over → syncing (an aborted cutover). Anything else is a
//!   [`MigrationError::Transition`]. History (applies and state changes) keeps the newest
//!   [`MAX_MIGRATION_HISTORY`] entries.
//!
//! - Cutover ([`Store::request_cutover`]): syncing → cutting-over, and the source record asks its
//!   agent for a `cutover` task (handed before any scheduled sync). The task's end moves the
//!   migration ([`Store::cutover_task_ended`]): failed → back to syncing with the reason;
//!   succeeded → its snapshot is the final one, which `standby_next` hands with `final: true`.
//!   The standby reports its steps ([`Store::standby_cutover`]): `applying` is the point of no
//!   return (refused once the cutover was aborted); a failure before it aborts (syncing), after
//!   it fails the migration; `rebooting` makes it cut-over. [`CutoverTimeline`] keeps each
//!   phase's time for `migrations show`.
//!
//! Every read-modify-write holds `migrations/.lock`. Lock order: jobs, migrations, agents,
//! sources.

mod cutover;
mod error;
mod possession;
mod record;
mod standby;
mod store;
mod timeline;

pub use error::MigrationError;
pub use possession::{PendingChallenge, PendingRange, CHALLENGE_TTL};
pub use record::{
    lag_seconds, Happened, HistoryEntry, MigrationRecord, MigrationState, NewMigration,
    StandbyStatus, MAX_MIGRATION_HISTORY,
};
pub use timeline::{CutoverTimeline, CutoverTimes, Phase};

#[cfg(test)]
mod tests {
    use super::error::check_id;
    use super::*;

    #[test]
    fn only_legal_transitions() {
        use MigrationState::*;
        let failed = || Failed { reason: "x".into() };
        let all = [Syncing, CuttingOver, CutOver, failed(), Cancelled];
        let legal = [
            ("syncing", "cutting-over"),
            ("syncing", "cancelled"),
            ("syncing", "failed"),
            ("cutting-over", "cut-over"),
            ("cutting-over", "syncing"),
            ("cutting-over", "failed"),
        ];
        for from in &all {
            for to in &all {
                let want = legal.contains(&(from.name(), to.name()));
                assert_eq!(
                    from.may_become(to),
                    want,
                    "{} -> {}",
                    from.name(),
                    to.name()
                );
            }
        }
        assert!(Syncing.is_active() && CuttingOver.is_active());
        assert!(!CutOver.is_active() && !failed().is_active() && !Cancelled.is_active());
    }

    #[test]
    fn states_serialize_as_documented() {
        let s = serde_json::to_string(&MigrationState::CuttingOver).unwrap();
        assert_eq!(s, r#""cutting-over""#);
        let f = serde_json::to_string(&MigrationState::Failed {
            reason: "disk".into(),
        })
        .unwrap();
        assert_eq!(f, r#"{"failed":{"reason":"disk"}}"#);
        assert!(serde_json::from_str::<MigrationState>(r#""cutover""#).is_err());
    }

    #[test]
    fn lag_is_newest_minus_basis() {
        assert_eq!(
            lag_seconds("2026-01-01T00:00:00Z", "2026-01-01T01:00:30Z"),
            Some(3630)
        );
        assert_eq!(
            lag_seconds("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            Some(0)
        );
        assert_eq!(lag_seconds("soon", "2026-01-01T00:00:00Z"), None);
    }

    #[test]
    fn ids_are_checked_before_they_become_paths() {
        assert!(check_id("mig-0011aabb").is_ok());
        for bad in ["mig-../../x", "mig-0011aab", "job-0011aabb", ""] {
            assert!(
                matches!(check_id(bad), Err(MigrationError::NotFound(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_says_what_the_standby_holds() {
        let mut s = StandbyStatus::default();
        assert!(s.describe().contains("waiting"), "{}", s.describe());
        s.handed = Some("m-1".into());
        assert_eq!(s.describe(), "applying its first snapshot m-1");
        s.basis = Some("m-1".into());
        s.basis_taken = Some("2026-01-01T00:00:00Z".into());
        assert_eq!(
            s.describe(),
            "in sync with snapshot m-1, taken 2026-01-01T00:00:00Z"
        );
    }
}
