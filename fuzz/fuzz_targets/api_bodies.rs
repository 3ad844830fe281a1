//! Every JSON body of the HTTP API, as the appliance parses requests (ferry-server
//! `parse_json`) and the agents parse answers, into the ferry-format wire types; then the
//! checks the receiver runs on them. The first byte picks the type. What parses serialises and
//! parses back to the same JSON value.
#![no_main]

use ferry_format::agent::{EnrollReply, EnrollRequest, EventBatch, Job, JobState};
use ferry_format::api::{
    BackupSession, BackupStart, CommitReply, CommitRequest, ErrorBody, Hello, KnownChunksQuery,
    KnownChunksReply, MissingChunks, SignedManifest, SnapshotSummary,
};
use ferry_format::names::{check_name, NameKind};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Parse `body` as `T`; an accepted body round-trips through JSON.
fn parse<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(body).ok()?;
    let json = serde_json::to_value(&v).expect("a parsed body serialises");
    let back: T = serde_json::from_value(json.clone()).expect("a serialised body parses back");
    assert_eq!(serde_json::to_value(&back).expect("serialises again"), json);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 18 {
        0 => {
            if let Some(req) = parse::<EnrollRequest>(body) {
                let _ = req.inventory.check_bounds();
                let _ = req.inventory.macs();
            }
        }
        1 => {
            parse::<EventBatch>(body);
        }
        2 => {
            if let Some(state) = parse::<JobState>(body) {
                let _ = state.name();
                let _ = state.is_final();
                for next in [JobState::Running, JobState::Succeeded] {
                    let _ = state.may_become(&next);
                }
            }
        }
        3 => {
            parse::<Job>(body);
        }
        4 => {
            if let Some(req) = parse::<CommitRequest>(body) {
                for d in &req.disks {
                    let _ = check_name(NameKind::Disk, &d.name);
                }
            }
        }
        5 => {
            if let Some(req) = parse::<BackupStart>(body) {
                let _ = check_name(NameKind::Machine, &req.machine);
                let _ = ferry_format::chunk::check_chunk_size(req.chunk_size);
            }
        }
        6 => {
            parse::<KnownChunksQuery>(body);
        }
        7 => {
            parse::<EnrollReply>(body);
        }
        8 => {
            parse::<KnownChunksReply>(body);
        }
        9 => {
            parse::<MissingChunks>(body);
        }
        10 => {
            parse::<Vec<SnapshotSummary>>(body);
        }
        11 => {
            parse::<SignedManifest>(body);
        }
        12 => {
            parse::<Hello>(body);
        }
        13 => {
            parse::<ErrorBody>(body);
        }
        14 => {
            parse::<BackupSession>(body);
            parse::<CommitReply>(body);
        }
        15 => {
            // The source agent's and the operator's bodies (sources, migrations).
            use ferry_format::source::{
                CutoverRequest, SourceEnrollRequest, StandbyCutover, SyncTask, TaskState,
            };
            if let Some(t) = parse::<SyncTask>(body) {
                let _ = t.limits.check();
                let _ = ferry_format::chunk::check_chunk_size(t.chunk_size);
            }
            if let Some(s) = parse::<TaskState>(body) {
                let _ = s.name();
            }
            if let Some(r) = parse::<SourceEnrollRequest>(body) {
                let _ = check_name(NameKind::Machine, &r.machine);
            }
            parse::<StandbyCutover>(body);
            parse::<CutoverRequest>(body);
        }
        16 => {
            parse::<ferry_format::agent::StandbyReport>(body);
            parse::<ferry_format::agent::StandbyNext>(body);
            // The standby challenge (in EnrollReply) and its answer.
            parse::<ferry_format::agent::StandbyProof>(body);
            parse::<ferry_format::agent::StandbyProven>(body);
            if let Some(c) = parse::<ferry_format::agent::StandbyChallenge>(body) {
                let _ = ferry_format::agent::challenge_key(&c.nonce);
            }
        }
        _ => {
            // Path segments and settings the appliance parses from text.
            let Ok(text) = std::str::from_utf8(body) else {
                return;
            };
            let _ = text.parse::<ferry_format::ChunkId>();
            let _ = text.parse::<ferry_format::agent::Mapping>();
            let _ = text.parse::<ferry_format::layout::Guid>();
            let _ = text.parse::<ferry_format::layout::LvmUuid>();
            let _ = ferry_format::agent::normalize_mac(text);
            let _ = ferry_format::api::parse_duration_secs(text);
            let _ = ferry_format::source::parse_chunk_size(text);
            let _ = ferry_format::source::parse_interval(text);
            let _ = ferry_format::source::parse_rate(text);
            if ferry_format::api::check_machine_pattern(text).is_ok() {
                let _ = ferry_format::api::glob_match(text, "web01");
            }
            for kind in [NameKind::Machine, NameKind::Snapshot, NameKind::Job] {
                let _ = check_name(kind, text);
            }
        }
    }
});
