//! Jobs created within one second are handed out in the order they were created (`created`
//! has whole seconds; `seq` orders within one), whatever their random ids.

use std::time::SystemTime;

use ferry_format::agent::{JobFor, Then};
use ferry_store::jobs::NewBackupJob;
use ferry_test_support::store::new_store;

#[test]
fn jobs_of_one_second_keep_their_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _signer) = new_store(dir.path());
    let now = SystemTime::now();
    let created: Vec<String> = (0..12)
        .map(|i| {
            let new = NewBackupJob {
                for_: JobFor::Mac("52:54:00:00:00:01".into()),
                machine: format!("m{i}"),
                disks: vec!["auto".into()],
                then: Then::None,
            };
            store.create_backup_job(new, now).unwrap().id
        })
        .collect();
    let listed: Vec<String> = store
        .list_jobs()
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, created);
    let seqs: Vec<u64> = store.list_jobs().unwrap().iter().map(|j| j.seq).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<u64>>());
}
